/**
 * Calling one provider for an answer: a single attempt under its timeout, then everything the provider gets
 * (key rotation, retries with backoff inside the deadline), and hedging two providers against each other.
 * Which provider comes next when one gives up is FallbackChain's business.
 */
import { Clock, Deferred, Effect, Exit, Option, Random } from "effect"
import { isKeyFailure, isRetryable, ProviderFailure } from "./Errors.ts"
import { type Lease, lease, type ProviderState, settle } from "./ProviderBreakers.ts"
import * as Providers from "./Providers.ts"
import { type CallResult, failedAttempt, keyLabel, recordAttempt, type RequestState, type RouterCore } from "./RouteRequest.ts"
import { backoffDelay } from "./Routing.ts"

/** One call on a lease, bounded by the attempt timeout and the overall deadline; settles the lease and records it. */
const attemptOnce = Effect.fnUntraced(function*(core: RouterCore, l: Lease, prompt: Providers.ProviderPrompt, st: RequestState) {
  const { metrics } = core
  const p = l.provider.config
  const start = yield* Clock.currentTimeMillis
  const timeoutMs = Math.max(0, Math.min(p.attemptTimeoutMs ?? st.attemptTimeoutMs, st.deadlineAt - start))
  const key = l.keyIndex === undefined ? undefined : p.apiKeys[l.keyIndex]
  // Giving up on the call (timeout, lost hedge, caller gone) aborts its fetch and returns at once, without
  // waiting for the aborted request to wind down, so a failover starts right after the timeout.
  const exit = yield* Providers.complete(core.fetch, p, key, prompt).pipe(
    Effect.timeoutOrElse({
      duration: timeoutMs,
      orElse: () => Effect.fail(new ProviderFailure({ provider: p.name, kind: "timeout", detail: `no answer within ${timeoutMs} ms` }))
    }),
    Effect.exit,
    Effect.onInterrupt(() =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.andThen(
          settle(metrics, l, "interrupted", now),
          recordAttempt(metrics, st, { provider: p.name, ...keyLabel(l.keyIndex), outcome: "interrupted", durationMs: now - start })
        ))
    )
  )
  const end = yield* Clock.currentTimeMillis
  const durationMs = end - start
  if (Exit.isSuccess(exit)) {
    yield* settle(metrics, l, "success", end)
    yield* recordAttempt(metrics, st, { provider: p.name, ...keyLabel(l.keyIndex), outcome: "success", durationMs })
    return exit.value
  }
  const failure = Option.getOrElse(
    Exit.findErrorOption(exit),
    () => new ProviderFailure({ provider: p.name, kind: "connection", detail: "request died unexpectedly" })
  )
  yield* settle(metrics, l, failure, end)
  yield* recordAttempt(metrics, st, failedAttempt(p.name, l.keyIndex, failure, durationMs))
  yield* Effect.logDebug("provider attempt failed", { provider: p.name, kind: failure.kind, status: failure.status, durationMs })
  return yield* failure
})

/**
 * Everything one provider gets: key rotation on 429/401/403 (no wait), retries with backoff on retryable
 * failures (honoring Retry-After) while the deadline allows.
 */
export const callProvider = Effect.fnUntraced(function*(core: RouterCore, p: ProviderState, prompt: Providers.ProviderPrompt, st: RequestState) {
  const { config, metrics } = core
  let retry = 0
  const triedKeys = new Set<number>()
  while (true) {
    const now = yield* Clock.currentTimeMillis
    if (now >= st.deadlineAt) {
      yield* recordAttempt(metrics, st, { provider: p.config.name, outcome: "deadline", durationMs: 0 })
      return yield* new ProviderFailure({ provider: p.config.name, kind: "deadline", detail: "overall deadline reached" })
    }
    const l = yield* lease(metrics, p, now, triedKeys)
    if (typeof l === "string") {
      yield* recordAttempt(metrics, st, { provider: p.config.name, outcome: "circuit_open", durationMs: 0, detail: l })
      return yield* new ProviderFailure({ provider: p.config.name, kind: "circuit_open", detail: l })
    }
    const result = yield* Effect.result(attemptOnce(core, l, prompt, st))
    if (result._tag === "Success") return { completion: result.success, provider: p } satisfies CallResult
    const failure = result.failure
    if (isKeyFailure(failure.kind) && l.keyIndex !== undefined) {
      triedKeys.add(l.keyIndex)
      p.cursor = (l.keyIndex + 1) % p.keyBreakers.length
      if (triedKeys.size < p.keyBreakers.length) {
        yield* Effect.logInfo("rotating API key", { provider: p.config.name, from: l.keyIndex + 1, reason: failure.kind })
        continue
      }
    }
    if (!isRetryable(failure.kind) || retry >= config.retry.maxRetries) return yield* failure
    const delay = backoffDelay(config.retry, retry, yield* Random.next, failure.retryAfterMs)
    const after = yield* Clock.currentTimeMillis
    if (after + delay >= st.deadlineAt) return yield* failure
    yield* Effect.logDebug("retrying after backoff", { provider: p.config.name, retry: retry + 1, delayMs: delay })
    yield* Effect.sleep(delay)
    retry++
    triedKeys.clear()
  }
})

/** Primary, and the next provider once `delayMs` passed (or the primary failed); the loser is interrupted. */
export const hedge = (
  core: RouterCore,
  a: ProviderState,
  b: ProviderState,
  delayMs: number,
  prompt: Providers.ProviderPrompt,
  st: RequestState,
  started: { hedged: boolean }
) =>
  Effect.gen(function*() {
    const primaryFailed = yield* Deferred.make<void>()
    const primary = callProvider(core, a, prompt, st).pipe(Effect.tapError(() => Deferred.succeed(primaryFailed, undefined)))
    const secondary = Effect.raceFirst(Effect.sleep(delayMs), Deferred.await(primaryFailed)).pipe(
      Effect.andThen(Effect.sync(() => {
        started.hedged = true
      })),
      Effect.andThen(callProvider(core, b, prompt, st))
    )
    return yield* Effect.race(primary, secondary)
  })
