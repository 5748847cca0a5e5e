/**
 * A circuit breaker as a small synchronous state machine. Time is passed in (the Router reads it from
 * Effect's `Clock`, so tests drive it with `TestClock`); nothing here touches global state, so every
 * Router owns its own breakers.
 *
 * closed --(N consecutive failures, or failure rate >= r over the window with >= m calls)--> open
 * open --(cool-down elapsed, next caller)--> half_open (that caller is the single probe)
 * half_open --probe succeeds--> closed;  --probe fails--> open (cool-down restarts)
 */
export type BreakerState = "closed" | "open" | "half_open"

export interface BreakerSettings {
  /** consecutive failures that open the breaker */
  readonly consecutiveFailures: number
  /** failure ratio (0..1] over the window that opens the breaker; 1 or more disables the rule in practice */
  readonly failureRate: number
  readonly windowMs: number
  /** the rate rule only applies once the window holds this many calls */
  readonly minimumCalls: number
  readonly cooldownMs: number
}

export const defaultBreakerSettings: BreakerSettings = {
  consecutiveFailures: 5,
  failureRate: 0.5,
  windowMs: 60_000,
  minimumCalls: 10,
  cooldownMs: 30_000
}

/** What a caller may do now. A "probe" permit must be settled with success/failure/release. */
export type Permit = "allowed" | "probe" | "rejected"

export interface BreakerSnapshot {
  readonly state: BreakerState
  readonly consecutiveFailures: number
  readonly windowCalls: number
  readonly windowFailures: number
  /** when an open breaker lets the next probe through (epoch ms), if open */
  readonly retryAtMs?: number
  readonly openedCount: number
}

export class CircuitBreaker {
  private state: BreakerState = "closed"
  private consecutive = 0
  private openedAt = 0
  private probeInFlight = false
  private openedCount = 0
  // calls in the window as [time, failed]; pruned on every record
  private window: Array<readonly [number, boolean]> = []

  readonly name: string
  readonly settings: BreakerSettings
  private readonly onChange: (name: string, from: BreakerState, to: BreakerState) => void

  constructor(
    name: string,
    settings: BreakerSettings,
    onChange: (name: string, from: BreakerState, to: BreakerState) => void = () => {}
  ) {
    this.name = name
    this.settings = settings
    this.onChange = onChange
  }

  /** Asks to make a call at `now`. Moves open -> half_open once the cool-down has elapsed. */
  acquire(now: number): Permit {
    switch (this.state) {
      case "closed":
        return "allowed"
      case "open":
        if (now - this.openedAt < this.settings.cooldownMs) return "rejected"
        this.transition("half_open")
        this.probeInFlight = true
        return "probe"
      case "half_open":
        if (this.probeInFlight) return "rejected"
        this.probeInFlight = true
        return "probe"
    }
  }

  /** Whether `acquire` would currently let a call through (without taking a permit). */
  isAvailable(now: number): boolean {
    if (this.state === "closed") return true
    if (this.state === "open") return now - this.openedAt >= this.settings.cooldownMs
    return !this.probeInFlight
  }

  success(now: number): void {
    this.record(now, false)
    this.consecutive = 0
    if (this.state !== "closed") {
      this.probeInFlight = false
      this.window = []
      this.transition("closed")
    }
  }

  failure(now: number): void {
    this.record(now, true)
    this.consecutive++
    if (this.state === "half_open") return this.open(now)
    if (this.state === "open") {
      // a failure reported while open (e.g. a health check) restarts the cool-down
      this.openedAt = now
      return
    }
    if (this.consecutive >= this.settings.consecutiveFailures) return this.open(now)
    const calls = this.window.length
    if (calls >= this.settings.minimumCalls) {
      const failures = this.window.reduce((n, [, failed]) => n + (failed ? 1 : 0), 0)
      if (failures / calls >= this.settings.failureRate) this.open(now)
    }
  }

  /** Settles a probe permit without a verdict (the call was interrupted or failed for a reason that is not the provider's). */
  release(): void {
    this.probeInFlight = false
  }

  snapshot(now: number): BreakerSnapshot {
    this.prune(now)
    const windowFailures = this.window.reduce((n, [, failed]) => n + (failed ? 1 : 0), 0)
    return {
      state: this.state,
      consecutiveFailures: this.consecutive,
      windowCalls: this.window.length,
      windowFailures,
      openedCount: this.openedCount,
      ...(this.state === "open" ? { retryAtMs: this.openedAt + this.settings.cooldownMs } : {})
    }
  }

  get currentState(): BreakerState {
    return this.state
  }

  private open(now: number): void {
    this.openedAt = now
    this.probeInFlight = false
    this.openedCount++
    this.transition("open")
  }

  private transition(to: BreakerState): void {
    const from = this.state
    if (from === to) return
    this.state = to
    this.onChange(this.name, from, to)
  }

  private record(now: number, failed: boolean): void {
    this.prune(now)
    this.window.push([now, failed])
  }

  private prune(now: number): void {
    const from = now - this.settings.windowMs
    let drop = 0
    while (drop < this.window.length && this.window[drop]![0] <= from) drop++
    if (drop > 0) this.window.splice(0, drop)
  }
}
