/**
 * Walking a request's chain: the next provider is tried when one fails (or hedged against it), until one
 * answers, the deadline passes or the chain ends. A stream falls back for free before its first token and
 * fails with `StreamInterrupted` after it, since delivered text cannot be taken back.
 */
import { Clock, Effect, Exit, Stream } from "effect"
import { type Attempt, isKeyFailure, ProviderFailure, type StreamError, StreamInterrupted } from "./Errors.ts"
import { type AttemptOutcome, type Lease, lease, settle } from "./ProviderBreakers.ts"
import { callProvider, hedge } from "./ProviderDispatch.ts"
import * as Providers from "./Providers.ts"
import { buildAnswer, failedAttempt, keyLabel, type Prepared, recordAttempt, type RouterCore, unavailable } from "./RouteRequest.ts"
import type { RouteStreamEvent } from "./RouteTypes.ts"

/** The first answer along the chain; `hedgeDelay` (when set) pairs each provider with the next. */
export const answerFromChain = Effect.fnUntraced(function*(core: RouterCore, prepared: Prepared, hedgeDelay: number | undefined) {
  const { metrics } = core
  const { plan, chain, prompt, st } = prepared
  if (chain.length === 0) return yield* unavailable(metrics, st, `no provider can serve this request (${plan.reason})`)
  const started = { hedged: false }
  let i = 0
  while (i < chain.length) {
    const current = chain[i]!
    const next = chain[i + 1]
    const useHedge = hedgeDelay !== undefined && next !== undefined
    const result = yield* Effect.result(
      useHedge ? hedge(core, current, next, hedgeDelay, prompt, st, started) : callProvider(core, current, prompt, st)
    )
    i += useHedge ? 2 : 1
    if (result._tag === "Success") {
      const end = yield* Clock.currentTimeMillis
      const answer = buildAnswer(core.config, prepared, result.success, result.success.completion.text, end, started.hedged)
      yield* metrics.request("answered")
      if (answer.metadata.fallback) {
        yield* metrics.fallback(answer.metadata.originalModel ?? "", answer.model)
        yield* Effect.logInfo("answered after fallback", { from: answer.metadata.originalModel, to: answer.model, reason: answer.metadata.fallbackReason })
      }
      return answer
    }
    const now = yield* Clock.currentTimeMillis
    if (now >= st.deadlineAt) return yield* unavailable(metrics, st, "overall deadline exceeded")
  }
  const skippedOnly = st.attempts.every((a) => a.outcome === "circuit_open")
  return yield* unavailable(metrics, st, skippedOnly ? "every provider's circuit breaker is open" : "every provider failed")
})

/** The stream of the chain's first provider that delivers a token, ending with `done`. */
export const streamFromChain = (core: RouterCore, prepared: Prepared): Stream.Stream<RouteStreamEvent, StreamError> =>
  streamFrom(core, prepared, 0)

const streamFrom = (core: RouterCore, prepared: Prepared, i: number): Stream.Stream<RouteStreamEvent, StreamError> =>
  Stream.unwrap(Effect.gen(function*() {
    const { metrics } = core
    const { plan, chain, st } = prepared
    const p = chain[i]
    if (p === undefined) {
      return yield* unavailable(metrics, st, st.attempts.length === 0 ? `no provider can stream this request (${plan.reason})` : "every provider failed before the first token")
    }
    const now = yield* Clock.currentTimeMillis
    if (now >= st.deadlineAt) return yield* unavailable(metrics, st, "overall deadline exceeded")
    const l = yield* lease(metrics, p, now, new Set())
    if (typeof l === "string") {
      yield* recordAttempt(metrics, st, { provider: p.config.name, outcome: "circuit_open", durationMs: 0, detail: l })
      return streamFrom(core, prepared, i + 1)
    }
    return streamAttempt(core, prepared, l, now, () => streamFrom(core, prepared, i + 1))
  }))

/**
 * One provider's stream on a lease, started at `now`: an idle timeout per token, the lease settled once (done,
 * failed or interrupted), and `next` taken over when it fails before its first token.
 */
const streamAttempt = (
  core: RouterCore,
  prepared: Prepared,
  l: Lease,
  now: number,
  next: () => Stream.Stream<RouteStreamEvent, StreamError>
): Stream.Stream<RouteStreamEvent, StreamError> => {
  const { metrics } = core
  const { prompt, st } = prepared
  const p = l.provider
  const timeoutMs = Math.max(0, Math.min(p.config.attemptTimeoutMs ?? st.attemptTimeoutMs, st.deadlineAt - now))
  const key = l.keyIndex === undefined ? undefined : p.config.apiKeys[l.keyIndex]
  let tokens = 0
  let text = ""
  let settled = false
  const finish = (outcome: AttemptOutcome) =>
    Effect.flatMap(Clock.currentTimeMillis, (end) => {
      if (settled) return Effect.succeed(end)
      settled = true
      const attempt: Attempt = outcome === "success" || outcome === "interrupted"
        ? { provider: p.config.name, ...keyLabel(l.keyIndex), outcome, durationMs: end - now }
        : failedAttempt(p.config.name, l.keyIndex, outcome, end - now)
      if (outcome !== "success" && outcome !== "interrupted" && isKeyFailure(outcome.kind) && l.keyIndex !== undefined) {
        p.cursor = (l.keyIndex + 1) % p.keyBreakers.length
      }
      return Effect.as(Effect.andThen(settle(metrics, l, outcome, end), recordAttempt(metrics, st, attempt)), end)
    })
  const body = Providers.stream(core.client, p.config, key, prompt).pipe(
    // an idle timeout per pull: before the first token it triggers the free fallback
    Stream.timeoutOrElse({
      duration: timeoutMs,
      orElse: () => Stream.fail(new ProviderFailure({ provider: p.config.name, kind: "timeout", detail: `no token within ${timeoutMs} ms` }))
    }),
    Stream.map((t): RouteStreamEvent => {
      tokens++
      text += t
      return { type: "token", provider: p.config.name, text: t }
    })
  )
  const done = Stream.fromEffect(Effect.gen(function*() {
    const end = yield* finish("success")
    const answer = buildAnswer(core.config, prepared, { provider: p, completion: { text } }, text, end, false)
    yield* metrics.request("answered")
    if (answer.metadata.fallback) yield* metrics.fallback(answer.metadata.originalModel ?? "", answer.model)
    return { type: "done", answer } satisfies RouteStreamEvent as RouteStreamEvent
  }))
  return body.pipe(
    Stream.concat(done),
    Stream.catch((failure: ProviderFailure) =>
      Stream.unwrap(Effect.map(finish(failure), () =>
        tokens === 0
          ? next()
          : Stream.fail(new StreamInterrupted({ requestId: st.requestId, provider: p.config.name, tokensDelivered: tokens, cause: failure }))))
    ),
    Stream.onExit((exit) => (Exit.hasInterrupts(exit) ? Effect.asVoid(finish("interrupted")) : Effect.void))
  )
}
