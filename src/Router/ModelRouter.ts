/**
 * The Router: sends finance queries to the local fine-tuned model and everything else to cloud providers,
 * with per-attempt timeouts, an overall deadline, retries with backoff, key rotation, circuit breakers,
 * a fallback chain, optional hedging, streaming, health checks, metrics, logs and spans.
 *
 * Every router owns its state (breakers, key cursors, metric registry, health fiber): two routers with
 * different configs live side by side in one process. The parts live beside it: RouteRequest (preparing a
 * request, building its answer), ProviderBreakers (circuit breakers per provider and key), ProviderDispatch
 * (one provider's attempts, retries and hedging), FallbackChain (walking the chain, streaming) and RouterHealth.
 */
import { Clock, Context, Effect, Layer, Stream } from "effect"
import { FetchHttpClient, HttpClient } from "effect/http"
import type { BreakerSnapshot } from "./CircuitBreaker.ts"
import type { InvalidRouteRequest, RouteError, RouterConfigError, StreamError } from "./Errors.ts"
import { answerFromChain, streamFromChain } from "./FallbackChain.ts"
import { exportClosedBreakers, makeProviderStates, snapshotBreakers } from "./ProviderBreakers.ts"
import { loadConfigFromEnv, type RouterConfig, type RouterConfigInput, resolveConfigEffect } from "./RouterConfig.ts"
import { makeHealthCheck } from "./RouterHealth.ts"
import { RouterMetrics } from "./RouterMetrics.ts"
import { prepare, type RouterCore } from "./RouteRequest.ts"
import type { Explanation, RouteAnswer, RouteContext, RouteOptions, RouteStreamEvent } from "./RouteTypes.ts"

export type { Explanation, RouteAnswer, RouteContext, RouteMetadata, RouteOptions, RouteStreamEvent } from "./RouteTypes.ts"

const makeRouter = Effect.fnUntraced(function*(config: RouterConfig) {
  const core: RouterCore = {
    config,
    metrics: new RouterMetrics(config.name),
    providers: makeProviderStates(config),
    // streaming and health checks go through Effect's HttpClient; answers through plain `fetch` (see Providers.complete)
    fetch: yield* FetchHttpClient.Fetch,
    client: yield* HttpClient.HttpClient
  }
  const { metrics } = core

  // A plain span rather than `Effect.fn("ModelRouter.route")`: the span is the same, but Effect.fn also
  // captures a call-site stack trace per call, which cost ~10 us of the Router's added latency (bench:router).
  const routeWithId = Effect.fnUntraced(
    function*(query: string, context: RouteContext = undefined, options: RouteOptions = {}) {
      const prepared = yield* prepare(core, query, context, options, false).pipe(
        Effect.tapError(() => metrics.request("invalid"))
      )
      const { chain, st } = prepared
      yield* Effect.annotateCurrentSpan({ requestId: st.requestId, chain: chain.map((p) => p.config.name).join(">") })
      const hedgeDelay = options.hedgeDelayMs === false ? undefined : options.hedgeDelayMs ?? config.hedgeDelayMs
      return yield* answerFromChain(core, prepared, hedgeDelay)
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

  const routeStream = (query: string, context: RouteContext = undefined, rawOptions: RouteOptions = {}) => {
    const options = { ...rawOptions, requestId: rawOptions.requestId ?? crypto.randomUUID() }
    return Stream.unwrap(
      Effect.map(prepare(core, query, context, options, true), (prepared) => streamFromChain(core, prepared)).pipe(
        Effect.annotateLogs({ router: config.name, requestId: options.requestId })
      )
    ).pipe(
      Stream.withSpan("ModelRouter.routeStream", { attributes: { requestId: options.requestId } })
    )
  }

  const breakers = Effect.map(Clock.currentTimeMillis, (now) => snapshotBreakers(core.providers, now))

  const explain = Effect.fn("ModelRouter.explain")(function*(query: string, context: RouteContext = undefined, options: RouteOptions = {}) {
    const prepared = yield* prepare(core, query, context, options, false)
    return {
      classification: prepared.classification,
      plan: { chain: prepared.plan.chain.map((p) => p.name), reason: prepared.plan.reason, excluded: prepared.plan.excluded },
      breakers: yield* breakers
    } satisfies Explanation
  })

  const { checkHealth, schedule } = makeHealthCheck(core)
  yield* schedule
  yield* exportClosedBreakers(metrics, core.providers)

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

