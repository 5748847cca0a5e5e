/**
 * The Router's metrics, per provider, through Effect's `Metric`. Each Router keeps them in its own
 * `MetricRegistry` (so two routers in one process never mix their counts) and renders them in the
 * Prometheus text format with `PrometheusMetrics.format`.
 */
import { Context, Effect, Metric } from "effect"
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
  // the context every update runs against: only this router's registry
  private readonly context: Context.Context<never>
  constructor(routerName: string) {
    this.routerName = routerName
    this.context = Context.make(Metric.MetricRegistry, this.registry) as Context.Context<never>
  }

  // Attributed metrics are built once per label set and updated in place: this runs on every request, and
  // building them (or providing the registry as a service) per update cost more than the update itself.
  private readonly attributed = new Map<string, Metric.Metric<number, unknown>>()

  private metric(base: Metric.Metric<number, unknown>, attributes: Readonly<Record<string, string>>): Metric.Metric<number, unknown> {
    const key = `${base.id}\u0000${Object.values(attributes).join("\u0000")}`
    let m = this.attributed.get(key)
    if (m === undefined) {
      m = Metric.withAttributes(base, { router: this.routerName, ...attributes })
      this.attributed.set(key, m)
    }
    return m
  }

  private update(base: Metric.Metric<number, unknown>, attributes: Readonly<Record<string, string>>, value: number): void {
    this.metric(base, attributes).updateUnsafe(value, this.context)
  }

  attempt(provider: string, outcome: string, durationMs: number): Effect.Effect<void> {
    return Effect.sync(() => {
      this.update(requests, { provider, outcome }, 1)
      this.update(latency, { provider }, durationMs)
    })
  }

  breaker(breaker: string, state: BreakerState): Effect.Effect<void> {
    return Effect.sync(() => this.update(breakerState, { breaker }, stateValue[state]))
  }

  fallback(from: string, to: string): Effect.Effect<void> {
    return Effect.sync(() => this.update(fallbacks, { from, to }, 1))
  }

  request(outcome: "answered" | "unavailable" | "invalid"): Effect.Effect<void> {
    return Effect.sync(() => this.update(routed, { outcome }, 1))
  }

  health(provider: string, up: boolean): Effect.Effect<void> {
    return Effect.sync(() => this.update(health, { provider }, up ? 1 : 0))
  }

  /** Prometheus exposition text of this router's metrics. */
  get prometheus(): Effect.Effect<string> {
    return Effect.provideService(PrometheusMetrics.format(), Metric.MetricRegistry, this.registry)
  }

  get snapshot(): Effect.Effect<ReadonlyArray<Metric.Metric.Snapshot>> {
    return Effect.provideService(Metric.snapshot, Metric.MetricRegistry, this.registry)
  }
}
