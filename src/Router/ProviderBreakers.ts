/**
 * The Router's circuit-breaker bookkeeping: one breaker per provider and one per API key. An attempt leases a
 * provider permit and a key permit first and settles both with its outcome; every state change is logged and
 * exported as a metric. The breakers themselves (CircuitBreaker) know nothing of providers, keys or metrics.
 */
import { Effect } from "effect"
import { type BreakerSnapshot, CircuitBreaker, type Permit } from "./CircuitBreaker.ts"
import { isKeyFailure, isProviderFailure, type ProviderFailure } from "./Errors.ts"
import type { ProviderConfig, RouterConfig } from "./RouterConfig.ts"
import type { RouterMetrics } from "./RouterMetrics.ts"

export interface ProviderState {
  readonly config: ProviderConfig
  readonly breaker: CircuitBreaker
  readonly keyBreakers: ReadonlyArray<CircuitBreaker>
  /** index of the key to use next; moved on 429/401/403 so later requests start with a working key */
  cursor: number
}

export interface Lease {
  readonly provider: ProviderState
  readonly permit: Permit
  readonly keyIndex: number | undefined
  readonly keyPermit: Permit | undefined
}

/** How an attempt ended, as far as the breakers care. */
export type AttemptOutcome = "success" | ProviderFailure | "interrupted"

/** Fresh (closed) breakers for every provider of `config` and each of its keys. */
export const makeProviderStates = (config: RouterConfig): Map<string, ProviderState> =>
  new Map(config.providers.map((p) => [p.name, {
    config: p,
    breaker: new CircuitBreaker(p.name, config.breaker),
    keyBreakers: p.apiKeys.map((_, i) => new CircuitBreaker(`${p.name}#key${i + 1}`, config.breaker)),
    cursor: 0
  }]))

/** Runs `f` on a breaker and logs + exports the state when it changed. */
export const touch = (metrics: RouterMetrics, breaker: CircuitBreaker, f: (b: CircuitBreaker) => void): Effect.Effect<void> => {
  const before = breaker.currentState
  f(breaker)
  const after = breaker.currentState
  if (before === after) return Effect.void
  return Effect.andThen(
    metrics.breaker(breaker.name, after),
    Effect.logInfo("circuit breaker state changed", { breaker: breaker.name, from: before, to: after })
  )
}

/** Takes a provider permit and a key permit (from the cursor on, skipping `skipKeys`), or says why not. */
export const lease = (
  metrics: RouterMetrics,
  p: ProviderState,
  now: number,
  skipKeys: ReadonlySet<number>
): Effect.Effect<Lease | string> =>
  Effect.suspend((): Effect.Effect<Lease | string> => {
    let permit: Permit = "rejected"
    const providerChange = touch(metrics, p.breaker, (b) => {
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
      const keyChange = touch(metrics, p.keyBreakers[i]!, (b) => {
        keyPermit = b.acquire(now)
      })
      if (keyPermit === "rejected") continue
      return Effect.as(Effect.andThen(providerChange, keyChange), { provider: p, permit, keyIndex: i, keyPermit })
    }
    if (permit === "probe") p.breaker.release()
    return Effect.as(providerChange, `every API key of ${p.config.name} is rate-limited, rejected or circuit-open`)
  })

/**
 * Settles a lease with the attempt's outcome: a provider failure counts against the provider, a key failure
 * (429/401/403) against the key only, and anything else (interrupted, a bad request) against neither.
 */
export const settle = (metrics: RouterMetrics, l: Lease, outcome: AttemptOutcome, now: number): Effect.Effect<void> => {
  const key = l.keyIndex === undefined ? undefined : l.provider.keyBreakers[l.keyIndex]
  if (outcome === "success") {
    return Effect.andThen(
      touch(metrics, l.provider.breaker, (b) => b.success(now)),
      key === undefined ? Effect.void : touch(metrics, key, (b) => b.success(now))
    )
  }
  if (outcome === "interrupted" || !isProviderFailure(outcome.kind)) {
    if (l.permit === "probe") l.provider.breaker.release()
    if (outcome !== "interrupted" && isKeyFailure(outcome.kind) && key !== undefined) {
      return touch(metrics, key, (b) => b.failure(now))
    }
    if (l.keyPermit === "probe") key?.release()
    return Effect.void
  }
  if (l.keyPermit === "probe") key?.release()
  return touch(metrics, l.provider.breaker, (b) => b.failure(now))
}

/** Every breaker (`provider` and `provider#key-n`) and its state at `now`. */
export const snapshotBreakers = (providers: ReadonlyMap<string, ProviderState>, now: number): Record<string, BreakerSnapshot> => {
  const out: Record<string, BreakerSnapshot> = {}
  for (const p of providers.values()) {
    out[p.config.name] = p.breaker.snapshot(now)
    for (const kb of p.keyBreakers) out[kb.name] = kb.snapshot(now)
  }
  return out
}

/** Exports every breaker as closed, so the gauges exist before the first state change. */
export const exportClosedBreakers = Effect.fnUntraced(function*(metrics: RouterMetrics, providers: ReadonlyMap<string, ProviderState>) {
  for (const p of providers.values()) {
    for (const b of [p.breaker, ...p.keyBreakers]) yield* metrics.breaker(b.name, "closed")
  }
})
