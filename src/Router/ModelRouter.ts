/**
 * The Router: sends finance queries to the local fine-tuned model and everything else to cloud providers,
 * with per-attempt timeouts, an overall deadline, retries with backoff, key rotation, circuit breakers,
 * a fallback chain, optional hedging, streaming, health checks, metrics, logs and spans.
 *
 * Every router owns its state (breakers, key cursors, metric registry, health fiber): two routers with
 * different configs live side by side in one process.
 */
import { Clock, Context, Deferred, Effect, Exit, Layer, Option, Random, Schedule, Schema, Stream } from "effect"
import { FetchHttpClient, HttpClient } from "effect/http"
import { RagContext, renderRagContext } from "../Dataset/RagContext.ts"
import { type BreakerSnapshot, CircuitBreaker, type Permit } from "./CircuitBreaker.ts"
import { type Classification, classify } from "./Classifier.ts"
import {
  AllProvidersUnavailable,
  type Attempt,
  InvalidRouteRequest,
  isKeyFailure,
  isProviderFailure,
  isRetryable,
  ProviderFailure,
  type RouteError,
  type RouterConfigError,
  type StreamError,
  StreamInterrupted
} from "./Errors.ts"
import * as Providers from "./Providers.ts"
import {
  loadConfigFromEnv,
  type ProviderConfig,
  type RouterConfig,
  type RouterConfigInput,
  resolveConfigEffect
} from "./RouterConfig.ts"
import { RouterMetrics } from "./RouterMetrics.ts"
import { backoffDelay, type Citation, extractAnnotations, type Plan, planChain, UnknownProvider } from "./Routing.ts"

// ---------------------------------------------------------------------------------------------------------------
// public types

/** The context of a query: the app's structured object (`symbol, prices, fundamentals, news, holdings, …`) or text. */
export type RouteContext = string | RagContext | undefined

export interface RouteOptions {
  readonly systemPrompt?: string
  /** ask for JSON matching this JSON Schema; only providers that support it are tried */
  readonly jsonSchema?: unknown
  /** a provider name tried first (`local-pytorch`, `groq-llama`, `gemini`, ...) */
  readonly preferredModel?: string
  /** echoed in metadata and every log line; generated when absent */
  readonly requestId?: string
  readonly deadlineMs?: number
  readonly attemptTimeoutMs?: number
  /** overrides the config; `false` turns hedging off for this request */
  readonly hedgeDelayMs?: number | false
  readonly maxTokens?: number
  readonly temperature?: number
  readonly topK?: number
  readonly topP?: number
}

export interface RouteMetadata {
  readonly requestId: string
  /** the provider that answered */
  readonly provider: string
  readonly modelVersion?: string
  readonly confidence?: number
  /** token counts reported by the provider (OpenAI `usage`, Gemini `usageMetadata`, Ollama counts, our /infer) */
  readonly usage?: Providers.Usage
  /** why the chain was what it was (classification, overrides, filters) */
  readonly reason: string
  readonly classification: Classification
  readonly chain: ReadonlyArray<string>
  readonly attempts: ReadonlyArray<Attempt>
  readonly fallback: boolean
  /** the first provider of the chain, when another one answered */
  readonly originalModel?: string
  /** why the first provider did not answer, when another one did */
  readonly fallbackReason?: string
  readonly hedged: boolean
}

/** The app's answer shape (`routeAIQuery`), plus full metadata. */
export interface RouteAnswer {
  readonly answer: string
  /** the provider name, e.g. `local-pytorch`, `groq-llama`, `gemini` */
  readonly model: string
  /** milliseconds from the call to the answer */
  readonly latency: number
  readonly citations?: ReadonlyArray<Citation>
  readonly riskNote?: string
  readonly metadata: RouteMetadata
}

export type RouteStreamEvent =
  | { readonly type: "token"; readonly provider: string; readonly text: string }
  | { readonly type: "done"; readonly answer: RouteAnswer }

export interface Explanation {
  readonly classification: Classification
  readonly plan: { readonly chain: ReadonlyArray<string>; readonly reason: string; readonly excluded: Plan["excluded"] }
  readonly breakers: Readonly<Record<string, BreakerSnapshot>>
}

// ---------------------------------------------------------------------------------------------------------------
// internal state

interface ProviderState {
  readonly config: ProviderConfig
  readonly breaker: CircuitBreaker
  readonly keyBreakers: ReadonlyArray<CircuitBreaker>
  /** index of the key to use next; moved on 429/401/403 so later requests start with a working key */
  cursor: number
}

interface RequestState {
  readonly requestId: string
  readonly attempts: Array<Attempt>
  readonly deadlineAt: number
  readonly attemptTimeoutMs: number
}

interface Prepared {
  readonly classification: Classification
  readonly plan: Plan
  readonly chain: ReadonlyArray<ProviderState>
  readonly prompt: Providers.ProviderPrompt
  readonly st: RequestState
  readonly start: number
}

interface Lease {
  readonly provider: ProviderState
  readonly permit: Permit
  readonly keyIndex: number | undefined
  readonly keyPermit: Permit | undefined
}

type CallResult = { readonly completion: Providers.Completion; readonly provider: ProviderState }

const keyLabel = (i: number | undefined) => (i === undefined ? {} : { key: `key#${i + 1}` })

// ---------------------------------------------------------------------------------------------------------------
// the service

const decodeRagContext = Schema.decodeUnknownResult(RagContext)

const renderContext = (context: unknown): Effect.Effect<string, InvalidRouteRequest> => {
  if (context === undefined || context === null) return Effect.succeed("")
  if (typeof context === "string") return Effect.succeed(context)
  const decoded = decodeRagContext(context, { errors: "first" })
  if (decoded._tag === "Success") return Effect.succeed(renderRagContext(decoded.success))
  const issue = decoded.failure.message.split("\n")
  return Effect.fail(new InvalidRouteRequest({ field: "context", detail: issue.join(" ") }))
}

const makeRouter = Effect.fnUntraced(function*(config: RouterConfig) {
  // streaming and health checks go through Effect's HttpClient; answers through plain `fetch` (see Providers.complete)
  const client = yield* HttpClient.HttpClient
  const fetch = yield* FetchHttpClient.Fetch
  const metrics = new RouterMetrics(config.name)
  const providers = new Map<string, ProviderState>(config.providers.map((p) => [p.name, {
    config: p,
    breaker: new CircuitBreaker(p.name, config.breaker),
    keyBreakers: p.apiKeys.map((_, i) => new CircuitBreaker(`${p.name}#key${i + 1}`, config.breaker)),
    cursor: 0
  }]))

  // -- breakers ---------------------------------------------------------------------------------------------------

  /** Runs `f` on a breaker and logs + exports the state when it changed. */
  const touch = (breaker: CircuitBreaker, f: (b: CircuitBreaker) => void): Effect.Effect<void> => {
    const before = breaker.currentState
    f(breaker)
    const after = breaker.currentState
    if (before === after) return Effect.void
    return Effect.andThen(
      metrics.breaker(breaker.name, after),
      Effect.logInfo("circuit breaker state changed", { breaker: breaker.name, from: before, to: after })
    )
  }

  /** Takes a provider permit and a key permit, or says why not. */
  const lease = (p: ProviderState, now: number, skipKeys: ReadonlySet<number>): Effect.Effect<Lease | string> =>
    Effect.suspend((): Effect.Effect<Lease | string> => {
      let permit: Permit = "rejected"
      const providerChange = touch(p.breaker, (b) => {
        permit = b.acquire(now)
      })
      if (permit === "rejected") return Effect.as(providerChange, `circuit open for ${p.config.name}`)
      if (p.keyBreakers.length === 0) {
        return Effect.as(providerChange, { provider: p, permit, keyIndex: undefined, keyPermit: undefined })
      }
      const n = p.keyBreakers.length
      for (let step = 0; step < n; step++) {
        const i = (p.cursor + step) % n
        if (skipKeys.has(i)) continue
        let keyPermit: Permit = "rejected"
        const keyChange = touch(p.keyBreakers[i]!, (b) => {
          keyPermit = b.acquire(now)
        })
        if (keyPermit === "rejected") continue
        return Effect.as(Effect.andThen(providerChange, keyChange), { provider: p, permit, keyIndex: i, keyPermit })
      }
      if (permit === "probe") p.breaker.release()
      return Effect.as(providerChange, `every API key of ${p.config.name} is rate-limited, rejected or circuit-open`)
    })

  /** Settles a lease with the attempt's outcome. */
  const settle = (l: Lease, outcome: "success" | ProviderFailure | "interrupted", now: number): Effect.Effect<void> => {
    const key = l.keyIndex === undefined ? undefined : l.provider.keyBreakers[l.keyIndex]
    if (outcome === "success") {
      return Effect.andThen(
        touch(l.provider.breaker, (b) => b.success(now)),
        key === undefined ? Effect.void : touch(key, (b) => b.success(now))
      )
    }
    if (outcome === "interrupted" || !isProviderFailure(outcome.kind)) {
      if (l.permit === "probe") l.provider.breaker.release()
      if (outcome !== "interrupted" && isKeyFailure(outcome.kind) && key !== undefined) {
        return touch(key, (b) => b.failure(now))
      }
      if (l.keyPermit === "probe") key?.release()
      return Effect.void
    }
    if (l.keyPermit === "probe") key?.release()
    return touch(l.provider.breaker, (b) => b.failure(now))
  }

  // -- one attempt --------------------------------------------------------------------------------------------------

  const record = (st: RequestState, attempt: Attempt, provider: string) =>
    Effect.suspend(() => {
      st.attempts.push(attempt)
      return metrics.attempt(provider, attempt.outcome, attempt.durationMs)
    })

  const attemptOnce = Effect.fnUntraced(function*(l: Lease, prompt: Providers.ProviderPrompt, st: RequestState) {
    const p = l.provider.config
    const start = yield* Clock.currentTimeMillis
    const timeoutMs = Math.max(0, Math.min(p.attemptTimeoutMs ?? st.attemptTimeoutMs, st.deadlineAt - start))
    const key = l.keyIndex === undefined ? undefined : p.apiKeys[l.keyIndex]
    // Giving up on the call (timeout, lost hedge, caller gone) aborts its fetch and returns at once, without
    // waiting for the aborted request to wind down, so a failover starts right after the timeout.
    const exit = yield* Providers.complete(fetch, p, key, prompt).pipe(
      Effect.timeoutOrElse({
        duration: timeoutMs,
        orElse: () => Effect.fail(new ProviderFailure({ provider: p.name, kind: "timeout", detail: `no answer within ${timeoutMs} ms` }))
      }),
      Effect.exit,
      Effect.onInterrupt(() =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.andThen(
            settle(l, "interrupted", now),
            record(st, { provider: p.name, ...keyLabel(l.keyIndex), outcome: "interrupted", durationMs: now - start }, p.name)
          ))
      )
    )
    const end = yield* Clock.currentTimeMillis
    const durationMs = end - start
    if (Exit.isSuccess(exit)) {
      yield* settle(l, "success", end)
      yield* record(st, { provider: p.name, ...keyLabel(l.keyIndex), outcome: "success", durationMs }, p.name)
      return exit.value
    }
    const failure = Option.getOrElse(
      Exit.findErrorOption(exit),
      () => new ProviderFailure({ provider: p.name, kind: "connection", detail: "request died unexpectedly" })
    )
    yield* settle(l, failure, end)
    yield* record(st, {
      provider: p.name,
      ...keyLabel(l.keyIndex),
      outcome: failure.kind,
      ...(failure.status !== undefined ? { status: failure.status } : {}),
      durationMs,
      detail: failure.detail
    }, p.name)
    yield* Effect.logDebug("provider attempt failed", { provider: p.name, kind: failure.kind, status: failure.status, durationMs })
    return yield* failure
  })

  /**
   * Everything one provider gets: key rotation on 429/401/403 (no wait), retries with backoff on retryable
   * failures (honoring Retry-After) while the deadline allows.
   */
  const callProvider = Effect.fnUntraced(function*(p: ProviderState, prompt: Providers.ProviderPrompt, st: RequestState) {
    let retry = 0
    const triedKeys = new Set<number>()
    while (true) {
      const now = yield* Clock.currentTimeMillis
      if (now >= st.deadlineAt) {
        yield* record(st, { provider: p.config.name, outcome: "deadline", durationMs: 0 }, p.config.name)
        return yield* new ProviderFailure({ provider: p.config.name, kind: "deadline", detail: "overall deadline reached" })
      }
      const l = yield* lease(p, now, triedKeys)
      if (typeof l === "string") {
        yield* record(st, { provider: p.config.name, outcome: "circuit_open", durationMs: 0, detail: l }, p.config.name)
        return yield* new ProviderFailure({ provider: p.config.name, kind: "circuit_open", detail: l })
      }
      const result = yield* Effect.result(attemptOnce(l, prompt, st))
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
  const hedge = (a: ProviderState, b: ProviderState, delayMs: number, prompt: Providers.ProviderPrompt, st: RequestState, started: { hedged: boolean }) =>
    Effect.gen(function*() {
      const primaryFailed = yield* Deferred.make<void>()
      const primary = callProvider(a, prompt, st).pipe(Effect.tapError(() => Deferred.succeed(primaryFailed, undefined)))
      const secondary = Effect.raceFirst(Effect.sleep(delayMs), Deferred.await(primaryFailed)).pipe(
        Effect.andThen(Effect.sync(() => {
          started.hedged = true
        })),
        Effect.andThen(callProvider(b, prompt, st))
      )
      return yield* Effect.race(primary, secondary)
    })

  // -- route ---------------------------------------------------------------------------------------------------------

  const prepare = Effect.fnUntraced(function*(query: string, context: RouteContext, options: RouteOptions, stream: boolean) {
    if (query.trim() === "") return yield* new InvalidRouteRequest({ field: "query", detail: "must not be empty" })
    const contextText = yield* renderContext(context)
    const classification = classify({ query, context }, config.classification)
    const plan = yield* Effect.try({
      try: () => planChain(config, classification, { preferredModel: options.preferredModel, jsonSchema: options.jsonSchema, stream }),
      catch: (e) => new InvalidRouteRequest({ field: "preferredModel", detail: e instanceof UnknownProvider ? e.message : String(e) })
    })
    const prompt: Providers.ProviderPrompt = {
      system: options.systemPrompt ?? config.systemPrompt,
      question: query,
      context: contextText,
      jsonSchema: options.jsonSchema,
      maxTokens: options.maxTokens,
      temperature: options.temperature,
      topK: options.topK,
      topP: options.topP
    }
    const now = yield* Clock.currentTimeMillis
    const st: RequestState = {
      requestId: options.requestId ?? crypto.randomUUID(),
      attempts: [],
      deadlineAt: now + (options.deadlineMs ?? config.deadlineMs),
      attemptTimeoutMs: options.attemptTimeoutMs ?? config.attemptTimeoutMs
    }
    const chain = plan.chain.map((p) => providers.get(p.name)!)
    return { classification, plan, chain, prompt, st, start: now } satisfies Prepared
  })

  const buildAnswer = (
    prepared: Prepared,
    winner: CallResult,
    text: string,
    end: number,
    hedged: boolean
  ): RouteAnswer => {
    const { classification, plan, chain, st } = prepared
    const first = chain[0]!.config.name
    const provider = winner.provider.config.name
    const fallback = provider !== first
    const firstFailure = st.attempts.find((a) => a.provider === first && a.outcome !== "success")
    const annotations = extractAnnotations(text)
    const riskNote = annotations.riskNote ??
      (classification.intents.includes("should_i_buy") ? config.defaultRiskNote : undefined)
    return {
      answer: text,
      model: provider,
      latency: end - prepared.start,
      ...(annotations.citations !== undefined ? { citations: annotations.citations } : {}),
      ...(riskNote !== undefined ? { riskNote } : {}),
      metadata: {
        requestId: st.requestId,
        provider,
        ...(winner.completion.modelVersion !== undefined ? { modelVersion: winner.completion.modelVersion } : {}),
        ...(winner.completion.confidence !== undefined ? { confidence: winner.completion.confidence } : {}),
        ...(winner.completion.usage !== undefined ? { usage: winner.completion.usage } : {}),
        reason: plan.reason,
        classification,
        chain: chain.map((p) => p.config.name),
        attempts: [...st.attempts],
        fallback,
        ...(fallback ? { originalModel: first } : {}),
        ...(fallback && firstFailure !== undefined
          ? { fallbackReason: `${first}: ${firstFailure.outcome}${firstFailure.detail === undefined ? "" : ` (${firstFailure.detail})`}` }
          : {}),
        hedged
      }
    }
  }

  const unavailable = (st: RequestState, reason: string) =>
    Effect.andThen(
      metrics.request("unavailable"),
      Effect.fail(new AllProvidersUnavailable({ requestId: st.requestId, reason, attempts: [...st.attempts] }))
    )

  // A plain span rather than `Effect.fn("ModelRouter.route")`: the span is the same, but Effect.fn also
  // captures a call-site stack trace per call, which cost ~10 us of the Router's added latency (bench:router).
  const routeWithId = Effect.fnUntraced(
    function*(query: string, context: RouteContext = undefined, options: RouteOptions = {}) {
      const prepared = yield* prepare(query, context, options, false).pipe(
        Effect.tapError(() => metrics.request("invalid"))
      )
      const { plan, chain, prompt, st } = prepared
      yield* Effect.annotateCurrentSpan({ requestId: st.requestId, chain: chain.map((p) => p.config.name).join(">") })
      if (chain.length === 0) return yield* unavailable(st, `no provider can serve this request (${plan.reason})`)
      const hedgeDelay = options.hedgeDelayMs === false ? undefined : options.hedgeDelayMs ?? config.hedgeDelayMs
      const started = { hedged: false }
      let i = 0
      while (i < chain.length) {
        const current = chain[i]!
        const next = chain[i + 1]
        const useHedge = hedgeDelay !== undefined && next !== undefined
        const result = yield* Effect.result(
          useHedge ? hedge(current, next, hedgeDelay, prompt, st, started) : callProvider(current, prompt, st)
        )
        i += useHedge ? 2 : 1
        if (result._tag === "Success") {
          const end = yield* Clock.currentTimeMillis
          const answer = buildAnswer(prepared, result.success, result.success.completion.text, end, started.hedged)
          yield* metrics.request("answered")
          if (answer.metadata.fallback) {
            yield* metrics.fallback(answer.metadata.originalModel ?? "", answer.model)
            yield* Effect.logInfo("answered after fallback", { from: answer.metadata.originalModel, to: answer.model, reason: answer.metadata.fallbackReason })
          }
          return answer
        }
        const now = yield* Clock.currentTimeMillis
        if (now >= st.deadlineAt) return yield* unavailable(st, "overall deadline exceeded")
      }
      const skippedOnly = st.attempts.every((a) => a.outcome === "circuit_open")
      return yield* unavailable(st, skippedOnly ? "every provider's circuit breaker is open" : "every provider failed")
    },
    (effect, _query, _context, options) =>
      effect.pipe(
        Effect.annotateLogs({ router: config.name, requestId: options?.requestId }),
        Effect.withSpan("ModelRouter.route", undefined, { captureStackTrace: false })
      )
  )
  // every log line of a request carries its id, generated here when the caller gave none
  const route = (query: string, context: RouteContext = undefined, options: RouteOptions = {}) =>
    routeWithId(query, context, { ...options, requestId: options.requestId ?? crypto.randomUUID() })

  // -- streaming -----------------------------------------------------------------------------------------------------

  const routeStream = (query: string, context: RouteContext = undefined, rawOptions: RouteOptions = {}) => {
    const options = { ...rawOptions, requestId: rawOptions.requestId ?? crypto.randomUUID() }
    return Stream.unwrap(Effect.gen(function*() {
      const prepared = yield* prepare(query, context, options, true)
      const { plan, chain, prompt, st } = prepared
      const fromProvider = (i: number): Stream.Stream<RouteStreamEvent, StreamError> =>
        Stream.unwrap(Effect.gen(function*() {
          const p = chain[i]
          if (p === undefined) {
            return yield* unavailable(st, st.attempts.length === 0 ? `no provider can stream this request (${plan.reason})` : "every provider failed before the first token")
          }
          const now = yield* Clock.currentTimeMillis
          if (now >= st.deadlineAt) return yield* unavailable(st, "overall deadline exceeded")
          const l = yield* lease(p, now, new Set())
          if (typeof l === "string") {
            yield* record(st, { provider: p.config.name, outcome: "circuit_open", durationMs: 0, detail: l }, p.config.name)
            return fromProvider(i + 1)
          }
          const timeoutMs = Math.max(0, Math.min(p.config.attemptTimeoutMs ?? st.attemptTimeoutMs, st.deadlineAt - now))
          const key = l.keyIndex === undefined ? undefined : p.config.apiKeys[l.keyIndex]
          let tokens = 0
          let text = ""
          let settled = false
          const finish = (outcome: "success" | ProviderFailure | "interrupted") =>
            Effect.flatMap(Clock.currentTimeMillis, (end) => {
              if (settled) return Effect.succeed(end)
              settled = true
              const attempt: Attempt = outcome === "success" || outcome === "interrupted"
                ? { provider: p.config.name, ...keyLabel(l.keyIndex), outcome, durationMs: end - now }
                : {
                  provider: p.config.name,
                  ...keyLabel(l.keyIndex),
                  outcome: outcome.kind,
                  ...(outcome.status !== undefined ? { status: outcome.status } : {}),
                  durationMs: end - now,
                  detail: outcome.detail
                }
              if (outcome !== "success" && outcome !== "interrupted" && isKeyFailure(outcome.kind) && l.keyIndex !== undefined) {
                p.cursor = (l.keyIndex + 1) % p.keyBreakers.length
              }
              return Effect.as(Effect.andThen(settle(l, outcome, end), record(st, attempt, p.config.name)), end)
            })
          const body = Providers.stream(client, p.config, key, prompt).pipe(
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
            const answer = buildAnswer(prepared, { provider: p, completion: { text } }, text, end, false)
            yield* metrics.request("answered")
            if (answer.metadata.fallback) yield* metrics.fallback(answer.metadata.originalModel ?? "", answer.model)
            return { type: "done", answer } satisfies RouteStreamEvent as RouteStreamEvent
          }))
          return body.pipe(
            Stream.concat(done),
            Stream.catch((failure: ProviderFailure) =>
              Stream.unwrap(Effect.map(finish(failure), () =>
                tokens === 0
                  ? fromProvider(i + 1)
                  : Stream.fail(new StreamInterrupted({ requestId: st.requestId, provider: p.config.name, tokensDelivered: tokens, cause: failure }))))
            ),
            Stream.onExit((exit) => (Exit.hasInterrupts(exit) ? Effect.asVoid(finish("interrupted")) : Effect.void))
          )
        }))
      return fromProvider(0)
    }).pipe(Effect.annotateLogs({ router: config.name, requestId: options.requestId }))).pipe(
      Stream.withSpan("ModelRouter.routeStream", { attributes: { requestId: options.requestId } })
    )
  }

  // -- introspection, health -----------------------------------------------------------------------------------------

  const explain = Effect.fn("ModelRouter.explain")(function*(query: string, context: RouteContext = undefined, options: RouteOptions = {}) {
    const prepared = yield* prepare(query, context, options, false)
    return {
      classification: prepared.classification,
      plan: { chain: prepared.plan.chain.map((p) => p.name), reason: prepared.plan.reason, excluded: prepared.plan.excluded },
      breakers: yield* breakers
    } satisfies Explanation
  })

  const breakers = Effect.map(Clock.currentTimeMillis, (now) => {
    const out: Record<string, BreakerSnapshot> = {}
    for (const p of providers.values()) {
      out[p.config.name] = p.breaker.snapshot(now)
      for (const kb of p.keyBreakers) out[kb.name] = kb.snapshot(now)
    }
    return out
  })

  const healthTargets = [...providers.values()].filter((p) => p.config.local && p.config.healthPath !== undefined)

  const checkOne = (p: ProviderState) =>
    Providers.health(client, p.config).pipe(
      Effect.timeoutOrElse({
        duration: config.healthCheck?.timeoutMs ?? 2_000,
        orElse: () => Effect.fail(new ProviderFailure({ provider: p.config.name, kind: "timeout", detail: "health check timed out" }))
      }),
      Effect.exit,
      Effect.flatMap((exit) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) => {
          const up = Exit.isSuccess(exit)
          return touch(p.breaker, (b) => (up ? b.success(now) : b.failure(now))).pipe(
            Effect.andThen(metrics.health(p.config.name, up)),
            Effect.andThen(up ? Effect.void : Effect.logWarning("health check failed", { provider: p.config.name })),
            Effect.as([p.config.name, up] as const)
          )
        })
      )
    )

  const checkHealth = Effect.map(
    Effect.forEach(healthTargets, checkOne, { concurrency: "unbounded" }),
    (pairs) => Object.fromEntries(pairs)
  ).pipe(Effect.withSpan("ModelRouter.checkHealth"))

  if (config.healthCheck !== undefined && healthTargets.length > 0) {
    yield* checkHealth.pipe(
      Effect.repeat(Schedule.spaced(config.healthCheck.intervalMs)),
      Effect.delay(config.healthCheck.intervalMs),
      Effect.annotateLogs({ router: config.name }),
      Effect.forkScoped
    )
  }

  for (const p of providers.values()) {
    for (const b of [p.breaker, ...p.keyBreakers]) yield* metrics.breaker(b.name, "closed")
  }

  return ModelRouter.of({
    config,
    route,
    routeStream,
    explain,
    breakers,
    checkHealth,
    metrics: metrics.prometheus
  })
})

export class ModelRouter extends Context.Service<ModelRouter, {
  readonly config: RouterConfig
  /** Answer a query; fails with `AllProvidersUnavailable` (fast when every breaker is open) or `InvalidRouteRequest`. */
  route(query: string, context?: RouteContext, options?: RouteOptions): Effect.Effect<RouteAnswer, RouteError>
  /**
   * Stream the answer. Before the first token a failing provider is replaced by the next one for free;
   * after it the stream fails with `StreamInterrupted`. The last event is `done` with the full answer.
   */
  routeStream(query: string, context?: RouteContext, options?: RouteOptions): Stream.Stream<RouteStreamEvent, StreamError>
  /** The decision without calling anyone: classification, chain and breaker states. */
  explain(query: string, context?: RouteContext, options?: RouteOptions): Effect.Effect<Explanation, InvalidRouteRequest>
  /** Every breaker (`provider` and `provider#key-n`) and its state. */
  readonly breakers: Effect.Effect<Readonly<Record<string, BreakerSnapshot>>>
  /** Runs one health check of every local provider now (the schedule does the same). */
  readonly checkHealth: Effect.Effect<Readonly<Record<string, boolean>>>
  /** Prometheus text of this router's metrics. */
  readonly metrics: Effect.Effect<string>
}>()("app/Router/ModelRouter") {
  /**
   * A router for `config`. Answers go through the `fetch` in `FetchHttpClient.Fetch` (the platform's unless
   * provided), streams and health checks through the `HttpClient` it needs. Health checks run in the layer's scope.
   */
  static readonly make = (config: RouterConfig) => makeRouter(config)

  /** A router from explicit config, over `fetch`. */
  static readonly layerConfig = (input: RouterConfigInput): Layer.Layer<ModelRouter, RouterConfigError> =>
    Layer.effect(ModelRouter, Effect.flatMap(resolveConfigEffect(input), makeRouter)).pipe(
      Layer.provide(FetchHttpClient.layer)
    )

  /** A router from the app's environment names (LOCAL_PYTORCH_ENABLED, GROQ_API_KEY, ...), through Effect `Config`. */
  static readonly layer = Layer.effect(ModelRouter, Effect.flatMap(loadConfigFromEnv, makeRouter)).pipe(
    Layer.provide(FetchHttpClient.layer)
  )
}

