/**
 * The server's Prometheus metrics, kept in a registry of their own so that two servers in one process (tests,
 * the pipeline) never mix their counts. Rendering uses Effect's Prometheus formatter.
 */
import { Context, Effect, Layer, Metric } from "effect"
import { PrometheusMetrics } from "effect/observability"

const requests = Metric.counter("http_requests_total", { description: "HTTP requests by route and status", incremental: true })
const latency = Metric.histogram("http_request_duration_seconds", {
  description: "HTTP request latency by route (until the last byte of a streamed reply)",
  boundaries: Metric.exponentialBoundaries({ start: 0.005, factor: 2, count: 14 })
})
const tokens = Metric.counter("inference_generated_tokens_total", { description: "Tokens generated, by model", incremental: true })
const promptTokens = Metric.counter("inference_prompt_tokens_total", { description: "Prompt tokens evaluated, by model", incremental: true })
const tokensPerSecond = Metric.histogram("inference_tokens_per_second", {
  description: "Generation speed of each finished generation, by model (prompt evaluation included)",
  boundaries: Metric.exponentialBoundaries({ start: 1, factor: 2, count: 14 })
})
const queueDepth = Metric.gauge("inference_queue_depth", { description: "Generations waiting for a slot" })
const active = Metric.gauge("inference_active_generations", { description: "Generations running" })
const loadedAdapters = Metric.gauge("inference_loaded_adapters", { description: "LoRA adapters loaded over the base" })
const modelLoaded = Metric.gauge("inference_model_loaded", { description: "1 when the models are loaded" })

/** A cache by label value (routes, statuses and models are few). */
const labelled = <A>(make: (key: string) => A) => {
  const cache = new Map<string, A>()
  return (key: string): A => {
    let value = cache.get(key)
    if (value === undefined) cache.set(key, value = make(key))
    return value
  }
}

export interface GaugeValues {
  readonly queued: number
  readonly active: number
  readonly adapters: number
  readonly loaded: boolean
}

export class ServerMetrics extends Context.Service<ServerMetrics, {
  recordRequest(route: string, status: number, seconds: number): Effect.Effect<void>
  recordGeneration(model: string, prompt: number, completion: number, seconds: number): Effect.Effect<void>
  /** Prometheus text exposition, with the gauges set from `gauges` at scrape time */
  render(gauges: GaugeValues): Effect.Effect<string>
}>()("app/Serving/ServerMetrics") {
  static readonly layer = Layer.sync(ServerMetrics, () => {
    const registry: Metric.MetricRegistry = new Map()
    const inRegistry = <A>(effect: Effect.Effect<A>) => Effect.provideService(effect, Metric.MetricRegistry, registry)
    // one labelled metric per label set, kept: a labelled metric computes its series key once, on first use
    const byRoute = labelled((route: string) => ({ latency: Metric.withAttributes(latency, { route }) }))
    const byRouteStatus = labelled((key: string) => {
      const [route, status] = JSON.parse(key) as [string, string]
      return Metric.withAttributes(requests, { route, status })
    })
    const byModel = labelled((model: string) => ({
      tokens: Metric.withAttributes(tokens, { model }),
      promptTokens: Metric.withAttributes(promptTokens, { model }),
      tokensPerSecond: Metric.withAttributes(tokensPerSecond, { model })
    }))
    return ServerMetrics.of({
      recordRequest: (route, status, seconds) =>
        inRegistry(Effect.all([
          Metric.update(byRouteStatus(JSON.stringify([route, String(status)])), 1),
          Metric.update(byRoute(route).latency, seconds)
        ], { discard: true })),
      recordGeneration: (model, prompt, completion, seconds) => {
        const m = byModel(model)
        return inRegistry(Effect.all([
          Metric.update(m.tokens, completion),
          Metric.update(m.promptTokens, prompt),
          seconds > 0 && completion > 0 ? Metric.update(m.tokensPerSecond, completion / seconds) : Effect.void
        ], { discard: true }))
      },
      render: (g) =>
        inRegistry(Effect.gen(function*() {
          yield* Metric.update(queueDepth, g.queued)
          yield* Metric.update(active, g.active)
          yield* Metric.update(loadedAdapters, g.adapters)
          yield* Metric.update(modelLoaded, g.loaded ? 1 : 0)
          return yield* PrometheusMetrics.format()
        }))
    })
  })
}
