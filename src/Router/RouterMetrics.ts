/**
 * The Router's metrics, per provider, through Effect's `Metric`. Each Router keeps them in its own
 * `MetricRegistry` (so two routers in one process never mix their counts) and renders them in the
 * Prometheus text format with `PrometheusMetrics.format`.
 */
import { Effect, Metric } from "effect"
import { PrometheusMetrics } from "effect/observability"
import type { BreakerState } from "./CircuitBreaker.ts"

const requests = Metric.counter("router_provider_requests_total", {
  description: "Provider attempts, by provider and outcome (success or the failure kind)"
})
const latency = Metric.histogram("router_provider_latency_ms", {
  description: "Duration of provider attempts in milliseconds",
  boundaries: Metric.exponentialBoundaries({ start: 1, factor: 2, count: 16 })
})
const breakerState = Metric.gauge("router_breaker_state", {
  description: "Circuit breaker state by breaker (provider or provider#key): 0 closed, 1 half-open, 2 open"
})
const fallbacks = Metric.counter("router_fallbacks_total", {
  description: "Requests answered by a provider other than the first of their chain"
})
const routed = Metric.counter("router_requests_total", {
  description: "Routed requests by outcome (answered or unavailable)"
})
const health = Metric.gauge("router_health_up", {
  description: "Result of the last scheduled health check (1 healthy, 0 unhealthy)"
})

const stateValue: Record<BreakerState, number> = { closed: 0, half_open: 1, open: 2 }

export class RouterMetrics {
  readonly registry: Metric.MetricRegistry = new Map()
  private readonly routerName: string
  constructor(routerName: string) {
    this.routerName = routerName
  }

  // attributed metrics are built once per label set: this runs on every attempt of every request
  private readonly attributed = new Map<string, { readonly count: Metric.Counter<number>; readonly latency: Metric.Histogram<number> }>()

  private run(effect: Effect.Effect<void>): Effect.Effect<void> {
    return Effect.provideService(effect, Metric.MetricRegistry, this.registry)
  }

  attempt(provider: string, outcome: string, durationMs: number): Effect.Effect<void> {
    const key = `${provider}\u0000${outcome}`
    let m = this.attributed.get(key)
    if (m === undefined) {
      const attributes = { router: this.routerName, provider }
      m = {
        count: Metric.withAttributes(requests, { ...attributes, outcome }),
        latency: Metric.withAttributes(latency, attributes)
      }
      this.attributed.set(key, m)
    }
    return this.run(Effect.andThen(Metric.update(m.count, 1), Metric.update(m.latency, durationMs)))
  }

  breaker(breaker: string, state: BreakerState): Effect.Effect<void> {
    return this.run(Metric.update(Metric.withAttributes(breakerState, { router: this.routerName, breaker }), stateValue[state]))
  }

  fallback(from: string, to: string): Effect.Effect<void> {
    return this.run(Metric.update(Metric.withAttributes(fallbacks, { router: this.routerName, from, to }), 1))
  }

  request(outcome: "answered" | "unavailable" | "invalid"): Effect.Effect<void> {
    return this.run(Metric.update(Metric.withAttributes(routed, { router: this.routerName, outcome }), 1))
  }

  health(provider: string, up: boolean): Effect.Effect<void> {
    return this.run(Metric.update(Metric.withAttributes(health, { router: this.routerName, provider }), up ? 1 : 0))
  }

  /** Prometheus exposition text of this router's metrics. */
  get prometheus(): Effect.Effect<string> {
    return Effect.provideService(PrometheusMetrics.format(), Metric.MetricRegistry, this.registry)
  }

  get snapshot(): Effect.Effect<ReadonlyArray<Metric.Metric.Snapshot>> {
    return Effect.provideService(Metric.snapshot, Metric.MetricRegistry, this.registry)
  }
}
