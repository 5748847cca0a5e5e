/**
 * Time-driven resilience of the Router under TestClock: backoff delays, Retry-After, breaker cool-down,
 * the single half-open probe, the overall deadline and the health-check schedule. Providers are real
 * loopback HTTP servers; only the Router's clock is virtual. The pattern (CONTRIBUTING.md, Tests): fork the
 * request, wait in real time until it has reached its sleep, then `TestClock.adjust`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { CircuitBreaker } from "../../src/Router/CircuitBreaker.ts"
import { ModelRouter } from "../../src/Router/ModelRouter.ts"
import type { RouterConfigInput } from "../../src/Router/RouterConfig.ts"
import { type LoopbackProvider, loopback, settleLive, waitUntil } from "./RouterLoopback.ts"

const single = (p: LoopbackProvider, extra: Partial<RouterConfigInput> = {}): RouterConfigInput => ({
  providers: [{ name: "groq-llama", kind: "openai", baseUrl: p.url, apiKeys: ["k"] }],
  healthCheck: false,
  ...extra
})

/** Waits (real time) until the router has recorded `n` failures on `breaker`, then lets it reach its sleep. */
const failuresRecorded = (router: ModelRouter["Service"], breaker: string, n: number) =>
  Effect.gen(function*() {
    for (let i = 0; i < 1_000; i++) {
      const snapshot = (yield* router.breakers)[breaker]!
      if (snapshot.windowFailures >= n) return yield* settleLive(20)
      yield* settleLive(5)
    }
    return yield* Effect.die(new Error(`${breaker} never recorded ${n} failures`))
  })

describe("Router backoff under TestClock", () => {
  it.effect("waits base * 2^n between retries and at least Retry-After", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq")
      groq.next({ kind: "status", status: 500 }, { kind: "status", status: 429, retryAfter: "7" })
      const config = single(groq, { retry: { maxRetries: 2, baseDelayMs: 1_000, jitter: 0 }, deadlineMs: 60_000 })
      yield* ModelRouter.use((router) =>
        Effect.gen(function*() {
          const fiber = yield* Effect.forkChild(router.route("hello"))
          yield* waitUntil("the first call", () => groq.calls.length === 1)
          yield* failuresRecorded(router, "groq-llama", 1)
          // first backoff: 1000 ms
          yield* TestClock.adjust(999)
          yield* settleLive(50)
          assert.strictEqual(groq.calls.length, 1)
          yield* TestClock.adjust(1)
          yield* waitUntil("the second call", () => groq.calls.length === 2)
          // second failure is a 429 with Retry-After: 7 s, longer than the 2000 ms backoff
          yield* failuresRecorded(router, "groq-llama#key1", 1)
          yield* TestClock.adjust(6_999)
          yield* settleLive(50)
          assert.strictEqual(groq.calls.length, 2)
          yield* TestClock.adjust(1)
          const answer = yield* Fiber.join(fiber)
          assert.strictEqual(groq.calls.length, 3)
          assert.deepStrictEqual(answer.metadata.attempts.map((a) => a.outcome), ["server", "rate_limited", "success"])
          assert.strictEqual(answer.latency, 8_000)
        })
      ).pipe(Effect.provide(ModelRouter.layerConfig(config)))
    }))

  it.effect("gives up retrying when the backoff would overrun the overall deadline", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq")
      groq.always({ kind: "status", status: 429, retryAfter: "30" })
      const config = single(groq, { retry: { maxRetries: 5, baseDelayMs: 10, jitter: 0 }, deadlineMs: 10_000 })
      const error = yield* ModelRouter.use((r) => Effect.flip(r.route("hello"))).pipe(
        Effect.provide(ModelRouter.layerConfig(config))
      )
      assert.strictEqual(error._tag, "AllProvidersUnavailable")
      assert.strictEqual(groq.calls.length, 1)
    }))

  it.effect("a hanging provider is cut at the overall deadline, below the per-attempt timeout", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq")
      groq.always({ kind: "hang" })
      const config = single(groq, { attemptTimeoutMs: 10_000, deadlineMs: 3_000, retry: { maxRetries: 3 } })
      yield* ModelRouter.use((router) =>
        Effect.gen(function*() {
          const fiber = yield* Effect.forkChild(Effect.flip(router.route("hello")))
          yield* waitUntil("the call", () => groq.calls.length === 1)
          yield* settleLive(20)
          yield* TestClock.adjust(3_000)
          const error = yield* Fiber.join(fiber)
          assert.strictEqual(error._tag, "AllProvidersUnavailable")
          if (error._tag !== "AllProvidersUnavailable") return
          assert.strictEqual(error.reason, "overall deadline exceeded")
          assert.deepStrictEqual(error.attempts.map((a) => [a.outcome, a.durationMs]), [["timeout", 3_000]])
          yield* waitUntil("the hung request to be aborted", () => groq.aborted === 1)
        })
      ).pipe(Effect.provide(ModelRouter.layerConfig(config)))
    }))
})

describe("Router circuit breaker under TestClock", () => {
  it.effect("opens after N consecutive failures, rejects during the cool-down, admits one probe, reopens, then closes", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq")
      groq.always({ kind: "status", status: 500 })
      const config = single(groq, {
        retry: { maxRetries: 0 },
        attemptTimeoutMs: 5_000,
        breaker: { consecutiveFailures: 3, cooldownMs: 10_000, failureRate: 1, minimumCalls: 1_000 }
      })
      yield* ModelRouter.use((router) =>
        Effect.gen(function*() {
          for (let i = 0; i < 3; i++) yield* Effect.flip(router.route("hello"))
          assert.strictEqual((yield* router.breakers)["groq-llama"]!.state, "open")
          assert.strictEqual((yield* router.breakers)["groq-llama"]!.retryAtMs, 10_000)
          // open: rejected without a request
          const rejected = yield* Effect.flip(router.route("hello"))
          assert.strictEqual(rejected._tag === "AllProvidersUnavailable" && rejected.attempts[0]!.outcome, "circuit_open")
          yield* TestClock.adjust(9_999)
          yield* Effect.flip(router.route("hello"))
          assert.strictEqual(groq.calls.length, 3)
          // cool-down over: exactly one probe goes through while it is in flight
          yield* TestClock.adjust(1)
          groq.always({ kind: "hang" })
          const probe = yield* Effect.forkChild(Effect.flip(router.route("probe")))
          yield* waitUntil("the probe request", () => groq.calls.length === 4)
          assert.strictEqual((yield* router.breakers)["groq-llama"]!.state, "half_open")
          const second = yield* Effect.flip(router.route("while probing"))
          assert.strictEqual(second._tag === "AllProvidersUnavailable" && second.attempts[0]!.outcome, "circuit_open")
          assert.strictEqual(groq.calls.length, 4)
          // the probe times out: open again, with a fresh cool-down
          yield* settleLive(20)
          yield* TestClock.adjust(5_000)
          const failedProbe = yield* Fiber.join(probe)
          assert.strictEqual(failedProbe._tag === "AllProvidersUnavailable" && failedProbe.attempts[0]!.outcome, "timeout")
          const reopened = (yield* router.breakers)["groq-llama"]!
          assert.strictEqual(reopened.state, "open")
          assert.strictEqual(reopened.retryAtMs, 25_000)
          // after the next cool-down a successful probe closes it
          groq.always({ kind: "ok" })
          yield* TestClock.adjust(10_000)
          const answer = yield* router.route("recovered")
          assert.strictEqual(answer.model, "groq-llama")
          assert.strictEqual((yield* router.breakers)["groq-llama"]!.state, "closed")
          const metrics = yield* router.metrics
          assert.include(metrics, "router_breaker_state{router=\"router\",breaker=\"groq-llama\"} 0")
        })
      ).pipe(Effect.provide(ModelRouter.layerConfig(config)))
    }))

  it.effect("a breaker per key: a revoked key's breaker opens while the provider stays closed", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq", { validKeys: ["good"] })
      const config: RouterConfigInput = {
        providers: [{ name: "groq-llama", kind: "openai", baseUrl: groq.url, apiKeys: ["revoked", "good"] }],
        breaker: { consecutiveFailures: 1, cooldownMs: 60_000 },
        healthCheck: false
      }
      yield* ModelRouter.use((router) =>
        Effect.gen(function*() {
          const first = yield* router.route("one")
          assert.deepStrictEqual(first.metadata.attempts.map((a) => [a.key, a.outcome]), [["key#1", "auth"], ["key#2", "success"]])
          const breakers = yield* router.breakers
          assert.strictEqual(breakers["groq-llama#key1"]!.state, "open")
          assert.strictEqual(breakers["groq-llama#key2"]!.state, "closed")
          assert.strictEqual(breakers["groq-llama"]!.state, "closed")
        })
      ).pipe(Effect.provide(ModelRouter.layerConfig(config)))
    }))

  it.effect("scheduled health checks run every interval and feed the local breaker", () =>
    Effect.gen(function*() {
      const local = yield* loopback("local")
      local.healthStatus = 503
      const config: RouterConfigInput = {
        providers: [{ name: "local-pytorch", kind: "local-infer", baseUrl: local.url }],
        healthCheck: { intervalMs: 10_000, timeoutMs: 1_000 },
        breaker: { consecutiveFailures: 2, cooldownMs: 60_000 }
      }
      const healthChecks = () => local.requests.filter((r) => r.path === "/health").length
      yield* ModelRouter.use((router) =>
        Effect.gen(function*() {
          yield* settleLive(20)
          assert.strictEqual(healthChecks(), 0)
          yield* TestClock.adjust(10_000)
          yield* waitUntil("the first health check", () => healthChecks() === 1)
          yield* failuresRecorded(router, "local-pytorch", 1)
          assert.strictEqual((yield* router.breakers)["local-pytorch"]!.state, "closed")
          yield* TestClock.adjust(10_000)
          yield* waitUntil("the second health check", () => healthChecks() === 2)
          yield* failuresRecorded(router, "local-pytorch", 2)
          assert.strictEqual((yield* router.breakers)["local-pytorch"]!.state, "open")
          local.healthStatus = 200
          yield* TestClock.adjust(10_000)
          yield* waitUntil("the third health check", () => healthChecks() === 3)
          yield* settleLive(20)
          assert.strictEqual((yield* router.breakers)["local-pytorch"]!.state, "closed")
        })
      ).pipe(Effect.provide(ModelRouter.layerConfig(config)))
    }))
})

describe("CircuitBreaker state machine", () => {
  const settings = { consecutiveFailures: 100, failureRate: 0.5, windowMs: 1_000, minimumCalls: 4, cooldownMs: 500 }

  it("opens on the failure rate over the window once it holds the minimum calls", () => {
    const b = new CircuitBreaker("b", settings)
    b.success(0)
    b.failure(1)
    b.success(2)
    assert.strictEqual(b.currentState, "closed")
    b.failure(3)
    assert.strictEqual(b.currentState, "open")
    assert.strictEqual(b.acquire(400), "rejected")
    assert.strictEqual(b.acquire(503), "probe")
    assert.strictEqual(b.acquire(503), "rejected")
    b.release()
    assert.strictEqual(b.acquire(504), "probe")
    b.success(505)
    assert.deepStrictEqual(b.snapshot(505), { state: "closed", consecutiveFailures: 0, windowCalls: 0, windowFailures: 0, openedCount: 1 })
  })

  it("forgets calls older than the window", () => {
    const b = new CircuitBreaker("b", settings)
    b.failure(0)
    b.failure(1)
    b.success(2)
    b.success(1_500) // the two failures are now outside the window
    b.failure(1_600)
    b.success(1_700)
    assert.strictEqual(b.currentState, "closed")
    assert.deepStrictEqual(b.snapshot(1_700).windowCalls, 3)
  })
})
