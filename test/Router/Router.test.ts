/**
 * The Router against real HTTP servers on loopback playing every provider (our /infer server, Groq /
 * OpenAI-compatible, Gemini, Ollama): routing, fallback, retries, key rotation, hedging, streaming,
 * health checks, metrics, config from env, and the Promise facade.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Fiber, Layer, Logger, References, Stream, Tracer } from "effect"
import { FetchHttpClient } from "effect/http"
import { createRouter } from "../../src/Router/Facade.ts"
import { ModelRouter, type RouteStreamEvent } from "../../src/Router/ModelRouter.ts"
import type { RouterConfigInput } from "../../src/Router/RouterConfig.ts"
import { type LoopbackProvider, loopback, settleLive, waitUntil } from "./RouterLoopback.ts"

const ragContext = {
  symbol: "AAPL",
  prices: { AAPL: { price: 189.5, changePercent: 0.45 } },
  fundamentals: { peRatio: 28.5 },
  news: [{ headline: "Apple unveils new chips", source: "Reuters" }],
  holdings: [{ symbol: "AAPL", shares: 10, avgPrice: 150 }]
}

const threeProviders = (local: LoopbackProvider, groq: LoopbackProvider, gemini: LoopbackProvider, extra: Partial<RouterConfigInput> = {}): RouterConfigInput => ({
  providers: [
    { name: "local-pytorch", kind: "local-infer", baseUrl: local.url },
    { name: "groq-llama", kind: "openai", baseUrl: groq.url, apiKeys: ["groq-1", "groq-2"] },
    { name: "gemini", kind: "gemini", baseUrl: `${gemini.url}/v1beta`, apiKeys: ["gem-1"] }
  ],
  attemptTimeoutMs: 400,
  retry: { maxRetries: 1, baseDelayMs: 5, jitter: 0 },
  healthCheck: false,
  ...extra
})

const withRouter = <A, E>(config: RouterConfigInput, f: (router: ModelRouter["Service"]) => Effect.Effect<A, E>) =>
  ModelRouter.use(f).pipe(Effect.provide(ModelRouter.layerConfig(config)))

const collect = (stream: Stream.Stream<RouteStreamEvent, unknown>) =>
  stream.pipe(Stream.runCollect, Effect.map((chunk) => Array.from(chunk)))

describe("Router routing on loopback providers", () => {
  it.live("sends a finance query with structured context to the local /infer model, rendered as formatRAGContext", () =>
    Effect.gen(function*() {
      const local = yield* loopback("local")
      const groq = yield* loopback("groq")
      const gemini = yield* loopback("gemini")
      const answer = yield* withRouter(threeProviders(local, groq, gemini), (r) =>
        r.route("Is AAPL overvalued at this P/E?", ragContext))
      assert.strictEqual(answer.model, "local-pytorch")
      assert.strictEqual(answer.answer, "local says: Is AAPL overvalued at this P/E?")
      assert.strictEqual(answer.metadata.confidence, 0.87)
      assert.strictEqual(answer.metadata.modelVersion, "local-v1")
      assert.isFalse(answer.metadata.fallback)
      assert.deepStrictEqual(answer.metadata.chain, ["local-pytorch", "groq-llama", "gemini"])
      assert.deepStrictEqual(answer.metadata.classification.tickers, ["AAPL"])
      assert.include(answer.metadata.reason, "domain query")
      assert.strictEqual(local.calls.length, 1)
      assert.strictEqual(groq.calls.length, 0)
      const body = local.calls[0]!.body
      assert.strictEqual(body.question, "Is AAPL overvalued at this P/E?")
      assert.strictEqual(
        body.context,
        "Current Symbol: AAPL\n\nCurrent Prices:\n  AAPL: $189.50 (+0.45%)\n\nFundamentals:\n  peRatio: 28.5\n\n" +
          "Recent News:\n  1. Apple unveils new chips (Reuters)\n\nPortfolio Holdings:\n  AAPL: 10 shares @ $150.00"
      )
      assert.strictEqual(body.max_length, 512)
      assert.strictEqual(body.temperature, 0.2)
    }))

  it.live("sends a general query to Groq (OpenAI-compatible) with the key as a bearer token; a string context passes through", () =>
    Effect.gen(function*() {
      const local = yield* loopback("local")
      const groq = yield* loopback("groq")
      const gemini = yield* loopback("gemini")
      const answer = yield* withRouter(threeProviders(local, groq, gemini), (r) =>
        r.route("Write a haiku about autumn leaves", "plain context text"))
      assert.strictEqual(answer.model, "groq-llama")
      assert.strictEqual(local.calls.length, 0)
      const call = groq.calls[0]!
      assert.strictEqual(call.path, "/chat/completions")
      assert.strictEqual(call.headers.authorization, "Bearer groq-1")
      assert.strictEqual(call.body.model, "llama-3.3-70b-versatile")
      assert.strictEqual(call.body.max_tokens, 750)
      assert.strictEqual(call.body.messages[1].content, "Context:\nplain context text\n\nQuestion: Write a haiku about autumn leaves")
      assert.deepStrictEqual(answer.metadata.usage, { promptTokens: 21, completionTokens: 7 })
    }))

  it.live("falls back local -> Groq when the local model hangs, recording every attempt and the reason", () =>
    Effect.gen(function*() {
      const local = yield* loopback("local")
      const groq = yield* loopback("groq")
      const gemini = yield* loopback("gemini")
      local.always({ kind: "hang" })
      const answer = yield* withRouter(threeProviders(local, groq, gemini, { retry: { maxRetries: 0 } }), (r) =>
        r.route("Should I buy NVDA now?"))
      assert.strictEqual(answer.model, "groq-llama")
      assert.isTrue(answer.metadata.fallback)
      assert.strictEqual(answer.metadata.originalModel, "local-pytorch")
      assert.strictEqual(answer.metadata.fallbackReason, "local-pytorch: timeout (no answer within 400 ms)")
      assert.deepStrictEqual(answer.metadata.attempts.map((a) => [a.provider, a.outcome]), [
        ["local-pytorch", "timeout"],
        ["groq-llama", "success"]
      ])
      assert.isAtLeast(answer.metadata.attempts[0]!.durationMs, 400)
      // should-I-buy answers always carry a risk note
      assert.include(answer.riskNote ?? "", "not investment advice")
      // the hung request was aborted, not left running
      yield* waitUntil("the hung request to be aborted", () => local.aborted === 1)
    }))

  it.live("retries a 500 with backoff, then falls back; malformed JSON falls back without retry", () =>
    Effect.gen(function*() {
      const local = yield* loopback("local")
      const groq = yield* loopback("groq")
      const gemini = yield* loopback("gemini")
      local.always({ kind: "status", status: 500 })
      groq.always({ kind: "malformed" })
      const answer = yield* withRouter(threeProviders(local, groq, gemini), (r) => r.route("Explain the RSI of TSLA"))
      assert.strictEqual(answer.model, "gemini")
      assert.deepStrictEqual(answer.metadata.attempts.map((a) => [a.provider, a.outcome, a.status]), [
        ["local-pytorch", "server", 500],
        ["local-pytorch", "server", 500],
        ["groq-llama", "malformed", undefined],
        ["gemini", "success", undefined]
      ])
      const call = gemini.calls[0]!
      assert.strictEqual(call.path, "/v1beta/models/gemini-2.0-flash:generateContent")
      assert.strictEqual(call.headers["x-goog-api-key"], "gem-1")
      // each provider gets its own default output budget (the /infer model's 512 is prompt + answer)
      assert.strictEqual(call.body.generationConfig.maxOutputTokens, 750)
      assert.strictEqual(answer.metadata.modelVersion, "gemini-gemini")
      assert.deepStrictEqual(answer.metadata.usage, { promptTokens: 30, completionTokens: 9 })
    }))

  it.live("does not retry a 400 on the same provider", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq")
      const gemini = yield* loopback("gemini")
      groq.always({ kind: "status", status: 400, body: "{\"error\":{\"message\":\"context too long\"}}" })
      const answer = yield* withRouter({
        providers: [
          { name: "groq-llama", kind: "openai", baseUrl: groq.url, apiKeys: ["k"] },
          { name: "gemini", kind: "gemini", baseUrl: gemini.url, apiKeys: ["g"] }
        ],
        retry: { maxRetries: 3, baseDelayMs: 1 },
        healthCheck: false
      }, (r) => r.route("hello there"))
      assert.strictEqual(groq.calls.length, 1)
      assert.strictEqual(answer.model, "gemini")
      assert.strictEqual(answer.metadata.attempts[0]!.detail, "{\"error\":{\"message\":\"context too long\"}}")
    }))

  it.live("rotates API keys on 401 and on 429, and later requests start from the working key", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq", { validKeys: ["good"], rateLimitedKeys: ["limited"] })
      const config: RouterConfigInput = {
        providers: [{ name: "groq-llama", kind: "openai", baseUrl: groq.url, apiKeys: ["revoked", "limited", "good"] }],
        retry: { maxRetries: 0 },
        healthCheck: false
      }
      const [first, second] = yield* withRouter(config, (r) =>
        Effect.all([r.route("first question"), r.route("second question")]))
      assert.deepStrictEqual(first.metadata.attempts.map((a) => [a.key, a.outcome, a.status]), [
        ["key#1", "auth", 401],
        ["key#2", "rate_limited", 429],
        ["key#3", "success", undefined]
      ])
      assert.deepStrictEqual(second.metadata.attempts.map((a) => [a.key, a.outcome]), [["key#3", "success"]])
      assert.deepStrictEqual(groq.calls.map((c) => c.headers.authorization), [
        "Bearer revoked",
        "Bearer limited",
        "Bearer good",
        "Bearer good"
      ])
    }))

  it.live("fails fast with a typed AllProvidersUnavailable when every provider is down", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq")
      const gemini = yield* loopback("gemini")
      groq.always({ kind: "status", status: 503 })
      gemini.always({ kind: "status", status: 500 })
      const config: RouterConfigInput = {
        providers: [
          { name: "groq-llama", kind: "openai", baseUrl: groq.url, apiKeys: ["k"] },
          { name: "gemini", kind: "gemini", baseUrl: gemini.url, apiKeys: ["g"] }
        ],
        retry: { maxRetries: 0 },
        breaker: { consecutiveFailures: 1, cooldownMs: 60_000 },
        healthCheck: false
      }
      const [first, second] = yield* withRouter(config, (r) =>
        Effect.all([Effect.flip(r.route("one")), Effect.flip(r.route("two"))]))
      assert.strictEqual(first._tag, "AllProvidersUnavailable")
      assert.strictEqual(second._tag, "AllProvidersUnavailable")
      if (second._tag !== "AllProvidersUnavailable") return
      assert.strictEqual(second.reason, "every provider's circuit breaker is open")
      assert.deepStrictEqual(second.attempts.map((a) => [a.provider, a.outcome]), [
        ["groq-llama", "circuit_open"],
        ["gemini", "circuit_open"]
      ])
      // the second request never reached the servers
      assert.strictEqual(groq.calls.length, 1)
      assert.strictEqual(gemini.calls.length, 1)
    }))

  it.live("an unreachable provider (connection refused) falls back", () =>
    Effect.gen(function*() {
      const gemini = yield* loopback("gemini")
      const answer = yield* withRouter({
        providers: [
          { name: "groq-llama", kind: "openai", baseUrl: "http://127.0.0.1:1", apiKeys: ["k"] },
          { name: "gemini", kind: "gemini", baseUrl: gemini.url, apiKeys: ["g"] }
        ],
        retry: { maxRetries: 0 },
        healthCheck: false
      }, (r) => r.route("hi"))
      assert.strictEqual(answer.model, "gemini")
      assert.strictEqual(answer.metadata.attempts[0]!.outcome, "connection")
    }))

  it.live("preferredModel goes first; JSON-schema requests skip the /infer model; Ollama speaks /api/generate", () =>
    Effect.gen(function*() {
      const local = yield* loopback("local")
      const ollama = yield* loopback("ollama")
      const config: RouterConfigInput = {
        providers: [
          { name: "local-pytorch", kind: "local-infer", baseUrl: local.url },
          { name: "ollama", kind: "ollama", baseUrl: ollama.url, model: "llama3.1:8b" }
        ],
        healthCheck: false
      }
      const schema = { type: "object", properties: { answer: { type: "string" } } }
      const [preferred, json, unknown] = yield* withRouter(config, (r) =>
        Effect.all([
          r.route("What is the P/E of MSFT?", undefined, { preferredModel: "ollama" }),
          r.route("What is the P/E of MSFT?", undefined, { jsonSchema: schema }),
          Effect.flip(r.route("x", undefined, { preferredModel: "nope" }))
        ]))
      assert.strictEqual(preferred.model, "ollama")
      assert.include(preferred.metadata.reason, "preferredModel=ollama first")
      assert.strictEqual(json.model, "ollama")
      assert.deepStrictEqual(json.metadata.chain, ["ollama"])
      assert.include(json.metadata.reason, "excluded local-pytorch (does not support JSON-schema output)")
      assert.strictEqual(local.calls.length, 0)
      assert.strictEqual(ollama.calls[1]!.path, "/api/generate")
      assert.deepStrictEqual(ollama.calls[1]!.body.format, schema)
      assert.strictEqual(ollama.calls[1]!.body.model, "llama3.1:8b")
      assert.strictEqual(ollama.calls[1]!.body.stream, false)
      assert.deepStrictEqual(json.metadata.usage, { promptTokens: 12, completionTokens: 5 })
      assert.strictEqual(unknown._tag, "InvalidRouteRequest")
      assert.include(unknown.message, "unknown provider \"nope\"")
    }))

  it.live("rejects a bad structured context naming the field", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq")
      const error = yield* withRouter({ providers: [{ name: "g", kind: "openai", baseUrl: groq.url }], healthCheck: false }, (r) =>
        Effect.flip(r.route("AAPL price?", { prices: { AAPL: { price: "high" } } } as never)))
      assert.strictEqual(error._tag, "InvalidRouteRequest")
      assert.include(error.message, "context")
      assert.include(error.message, "prices")
      assert.strictEqual(groq.calls.length, 0)
    }))

  it.live("lifts citations and a risk note out of the answer", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq")
      groq.always({ kind: "ok", text: "Revenue grew.\nSources: Reuters (2024-05-02); 10-Q filing\nRisk note: Earnings can disappoint." })
      const answer = yield* withRouter({ providers: [{ name: "g", kind: "openai", baseUrl: groq.url }], healthCheck: false }, (r) =>
        r.route("hello"))
      assert.deepStrictEqual(answer.citations, [{ source: "Reuters", timestamp: "2024-05-02" }, { source: "10-Q filing" }])
      assert.strictEqual(answer.riskNote, "Earnings can disappoint.")
    }))
})

describe("Router hedging", () => {
  it.live("starts the second provider after the hedge delay and interrupts the slower one", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq")
      const gemini = yield* loopback("gemini")
      groq.always({ kind: "ok", delayMs: 3_000 })
      const answer = yield* withRouter({
        providers: [
          { name: "groq-llama", kind: "openai", baseUrl: groq.url, apiKeys: ["k"] },
          { name: "gemini", kind: "gemini", baseUrl: gemini.url, apiKeys: ["g"] }
        ],
        hedgeDelayMs: 50,
        attemptTimeoutMs: 10_000,
        healthCheck: false
      }, (r) => r.route("hello"))
      assert.strictEqual(answer.model, "gemini")
      assert.isTrue(answer.metadata.hedged)
      assert.isTrue(answer.metadata.fallback)
      assert.isBelow(answer.latency, 2_000)
      assert.deepStrictEqual(
        answer.metadata.attempts.map((a) => [a.provider, a.outcome]).sort(),
        [["gemini", "success"], ["groq-llama", "interrupted"]]
      )
      // the loser's HTTP request was aborted: no request keeps running after the answer
      yield* waitUntil("the losing request to be aborted", () => groq.aborted === 1)
    }))

  it.live("a caller that gives up (interrupts) aborts the provider request and records the attempt as interrupted", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq")
      groq.always({ kind: "hang" })
      yield* withRouter({ providers: [{ name: "groq-llama", kind: "openai", baseUrl: groq.url }], attemptTimeoutMs: 60_000, healthCheck: false }, (r) =>
        Effect.gen(function*() {
          const fiber = yield* Effect.forkChild(r.route("hello"))
          yield* waitUntil("the request to arrive", () => groq.calls.length === 1)
          yield* Fiber.interrupt(fiber)
          yield* waitUntil("the provider request to be aborted", () => groq.aborted === 1)
          const text = yield* r.metrics
          assert.include(text, "router_provider_requests_total{router=\"router\",provider=\"groq-llama\",outcome=\"interrupted\"} 1")
        }))
    }))

  it.live("a fast primary wins without starting the hedge", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq")
      const gemini = yield* loopback("gemini")
      const answer = yield* withRouter({
        providers: [
          { name: "groq-llama", kind: "openai", baseUrl: groq.url, apiKeys: ["k"] },
          { name: "gemini", kind: "gemini", baseUrl: gemini.url, apiKeys: ["g"] }
        ],
        hedgeDelayMs: 2_000,
        healthCheck: false
      }, (r) => r.route("hello"))
      assert.strictEqual(answer.model, "groq-llama")
      assert.isFalse(answer.metadata.hedged)
      assert.strictEqual(gemini.calls.length, 0)
    }))
})

describe("Router streaming", () => {
  const streamConfig = (groq: LoopbackProvider, gemini: LoopbackProvider, ollama: LoopbackProvider): RouterConfigInput => ({
    providers: [
      { name: "groq-llama", kind: "openai", baseUrl: groq.url, apiKeys: ["k"] },
      { name: "gemini", kind: "gemini", baseUrl: gemini.url, apiKeys: ["g"] },
      { name: "ollama", kind: "ollama", baseUrl: ollama.url }
    ],
    attemptTimeoutMs: 400,
    healthCheck: false
  })

  it.live("streams OpenAI SSE tokens and ends with the full answer", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq")
      const gemini = yield* loopback("gemini")
      const ollama = yield* loopback("ollama")
      groq.always({ kind: "stream", tokens: ["The ", "market ", "rose."] })
      const events = yield* withRouter(streamConfig(groq, gemini, ollama), (r) => collect(r.routeStream("hello")))
      assert.deepStrictEqual(events.filter((e) => e.type === "token").map((e) => e.type === "token" && e.text), ["The ", "market ", "rose."])
      const done = events.at(-1)!
      assert.strictEqual(done.type, "done")
      if (done.type !== "done") return
      assert.strictEqual(done.answer.answer, "The market rose.")
      assert.strictEqual(done.answer.model, "groq-llama")
      assert.strictEqual(groq.calls[0]!.body.stream, true)
    }))

  it.live("falls back for free before the first token (500, then a hang), to Gemini's SSE and Ollama's NDJSON", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq")
      const gemini = yield* loopback("gemini")
      const ollama = yield* loopback("ollama")
      groq.always({ kind: "status", status: 500 })
      gemini.always({ kind: "stream", tokens: ["Gem", "ini"] })
      ollama.always({ kind: "stream", tokens: ["Oll", "ama"] })
      const config = streamConfig(groq, gemini, ollama)
      const [viaGemini, viaOllama] = yield* withRouter(config, (r) =>
        Effect.gen(function*() {
          const a = yield* collect(r.routeStream("hello"))
          gemini.always({ kind: "hang" })
          const b = yield* collect(r.routeStream("hello again"))
          return [a, b] as const
        }))
      const doneA = viaGemini.at(-1)!
      assert.isTrue(doneA.type === "done" && doneA.answer.answer === "Gemini" && doneA.answer.metadata.fallback)
      assert.strictEqual(gemini.calls[0]!.path, "/models/gemini-2.0-flash:streamGenerateContent")
      const doneB = viaOllama.at(-1)!
      assert.strictEqual(doneB.type, "done")
      if (doneB.type !== "done") return
      assert.strictEqual(doneB.answer.answer, "Ollama")
      assert.deepStrictEqual(doneB.answer.metadata.attempts.map((a) => [a.provider, a.outcome]), [
        ["groq-llama", "server"],
        ["gemini", "timeout"],
        ["ollama", "success"]
      ])
    }))

  it.live("after the first token a failure ends the stream with a typed StreamInterrupted (no fallback)", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq")
      const gemini = yield* loopback("gemini")
      const ollama = yield* loopback("ollama")
      groq.always({ kind: "stream", tokens: ["one ", "two ", "three"], dropAfter: 2 })
      const tokens: Array<string> = []
      const error = yield* withRouter(streamConfig(groq, gemini, ollama), (r) =>
        r.routeStream("hello").pipe(
          Stream.runForEach((e) => Effect.sync(() => e.type === "token" && tokens.push(e.text))),
          Effect.flip
        ))
      assert.deepStrictEqual(tokens, ["one ", "two "])
      assert.strictEqual(error._tag, "StreamInterrupted")
      if (error._tag !== "StreamInterrupted") return
      assert.strictEqual(error.provider, "groq-llama")
      assert.strictEqual(error.tokensDelivered, 2)
      assert.strictEqual(gemini.calls.length, 0)
    }))
})

describe("Router health checks, metrics, config", () => {
  it.live("scheduled health checks open the local breaker and close it again; domain queries skip an open local model", () =>
    Effect.gen(function*() {
      const local = yield* loopback("local")
      const groq = yield* loopback("groq")
      const gemini = yield* loopback("gemini")
      local.healthStatus = 503
      const config = threeProviders(local, groq, gemini, {
        healthCheck: { intervalMs: 30, timeoutMs: 200 },
        breaker: { consecutiveFailures: 2, cooldownMs: 60_000 }
      })
      yield* withRouter(config, (r) =>
        Effect.gen(function*() {
          yield* waitUntil("two failed health checks", () => local.requests.filter((x) => x.path === "/health").length >= 2)
          yield* settleLive(20)
          const open = yield* r.breakers
          assert.strictEqual(open["local-pytorch"]!.state, "open")
          const answer = yield* r.route("What is AAPL trading at?")
          assert.strictEqual(answer.model, "groq-llama")
          assert.deepStrictEqual(answer.metadata.attempts[0]!.outcome, "circuit_open")
          assert.strictEqual(local.calls.length, 0)
          local.healthStatus = 200
          const seen = local.requests.length
          yield* waitUntil("a healthy check", () => local.requests.length > seen + 1)
          const closed = yield* r.breakers
          assert.strictEqual(closed["local-pytorch"]!.state, "closed")
          assert.strictEqual((yield* r.route("What is AAPL trading at?")).model, "local-pytorch")
          assert.deepStrictEqual(yield* r.checkHealth, { "local-pytorch": true })
        }))
    }))

  it.live("two routers in one process keep separate breakers and metrics; Prometheus text per provider", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq")
      groq.always({ kind: "status", status: 500 })
      const base = { retry: { maxRetries: 0 }, breaker: { consecutiveFailures: 1 }, healthCheck: false as const }
      const a = yield* Layer.build(ModelRouter.layerConfig({ name: "a", providers: [{ name: "g", kind: "openai", baseUrl: groq.url }], ...base }))
      const b = yield* Layer.build(ModelRouter.layerConfig({ name: "b", providers: [{ name: "g", kind: "openai", baseUrl: groq.url }], ...base }))
      const ra = Context.get(a, ModelRouter)
      const rb = Context.get(b, ModelRouter)
      yield* Effect.flip(ra.route("hi"))
      assert.strictEqual((yield* ra.breakers)["g"]!.state, "open")
      assert.strictEqual((yield* rb.breakers)["g"]!.state, "closed")
      const text = yield* ra.metrics
      assert.include(text, "router_provider_requests_total{router=\"a\",provider=\"g\",outcome=\"server\"} 1")
      assert.include(text, "router_breaker_state{router=\"a\",breaker=\"g\"} 2")
      assert.include(text, "router_requests_total{router=\"a\",outcome=\"unavailable\"} 1")
      assert.notInclude(yield* rb.metrics, "outcome=\"server\"")
    }))

  it.live("reads the app's env names through Effect Config (LOCAL_PYTORCH_*, GROQ_API_KEY + siblings, GEMINI_API_KEY)", () =>
    Effect.gen(function*() {
      const local = yield* loopback("local")
      const groq = yield* loopback("groq", { validKeys: ["fourth"] })
      const env = {
        LOCAL_PYTORCH_ENABLED: "true",
        LOCAL_PYTORCH_URL: local.url,
        GROQ_API_KEY: "first",
        GROQ_API_KEY_SECONDARY: "second",
        GROQ_API_KEY_FOURTH: "fourth",
        GROQ_BASE_URL: groq.url,
        GEMINI_API_KEY: "gem",
        GEMINI_BASE_URL: "http://127.0.0.1:1",
        ROUTER_DEADLINE_MS: "5000"
      }
      const layer = ModelRouter.layer.pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env }))))
      const [explained, general, config] = yield* ModelRouter.use((r) =>
        Effect.all([r.explain("AAPL P/E?"), r.route("tell me a joke"), Effect.succeed(r.config)])
      ).pipe(Effect.provide(layer))
      assert.deepStrictEqual(explained.plan.chain, ["local-pytorch", "groq-llama", "gemini"])
      assert.deepStrictEqual(config.providers.map((p) => [p.name, p.apiKeys.length]), [
        ["local-pytorch", 0],
        ["groq-llama", 3],
        ["gemini", 1]
      ])
      assert.strictEqual(config.deadlineMs, 5000)
      assert.strictEqual(general.model, "groq-llama")
      assert.deepStrictEqual(general.metadata.attempts.map((a) => a.key), ["key#1", "key#2", "key#3"])
    }))
})

describe("Router logs", () => {
  it.live("every log line of a request carries the router name and the request id", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq")
      const gemini = yield* loopback("gemini")
      groq.always({ kind: "status", status: 500 })
      const lines: Array<{ message: unknown; annotations: Record<string, unknown> }> = []
      const capture = Logger.make((o) => {
        lines.push({ message: o.message, annotations: { ...o.fiber.getRef(References.CurrentLogAnnotations) } })
      })
      const answer = yield* withRouter({
        name: "app-router",
        providers: [
          { name: "groq-llama", kind: "openai", baseUrl: groq.url, apiKeys: ["k"] },
          { name: "gemini", kind: "gemini", baseUrl: gemini.url, apiKeys: ["g"] }
        ],
        retry: { maxRetries: 0 },
        healthCheck: false
      }, (r) => r.route("hello", undefined, { requestId: "req-42" })).pipe(Effect.provide(Logger.layer([capture])))
      assert.strictEqual(answer.metadata.requestId, "req-42")
      const fallback = lines.find((l) => Array.isArray(l.message) && l.message[0] === "answered after fallback")
      assert.isDefined(fallback)
      assert.deepStrictEqual(fallback!.annotations, { router: "app-router", requestId: "req-42" })
    }))
})

describe("Router spans", () => {
  it.live("each request is a ModelRouter.route span carrying its request id and chain, under the caller's span", () =>
    Effect.gen(function*() {
      const local = yield* loopback("infer")
      const spans: Array<Tracer.NativeSpan> = []
      const tracer = Tracer.make({
        span(options) {
          const span = new Tracer.NativeSpan(options)
          spans.push(span)
          return span
        }
      })
      const answer = yield* withRouter(
        { providers: [{ name: "local-pytorch", kind: "local-infer", baseUrl: local.url }], healthCheck: false },
        (r) => r.route("What is the P/E of AAPL?", undefined, { requestId: "req-7" }).pipe(Effect.withSpan("app.handler"))
      ).pipe(Effect.provideService(Tracer.Tracer, tracer))
      assert.strictEqual(answer.model, "local-pytorch")
      const route = spans.filter((s) => s.name === "ModelRouter.route")
      assert.strictEqual(route.length, 1)
      assert.strictEqual(route[0]!.attributes.get("requestId"), "req-7")
      assert.strictEqual(route[0]!.attributes.get("chain"), "local-pytorch")
      assert.strictEqual(route[0]!.status._tag, "Ended")
      const parent = route[0]!.parent
      assert.strictEqual(parent._tag === "Some" ? (parent.value as Tracer.NativeSpan).name : undefined, "app.handler")
    }))
})

describe("Router transport", () => {
  it.live("answers go through the fetch in FetchHttpClient.Fetch (one call per attempt, the request body as sent)", () =>
    Effect.gen(function*() {
      const local = yield* loopback("infer")
      const seen: Array<{ url: string; body: unknown }> = []
      const counting: typeof globalThis.fetch = (input, init) => {
        seen.push({ url: String(input), body: JSON.parse(String(init?.body)) })
        return globalThis.fetch(input, init)
      }
      const answer = yield* ModelRouter.use((r) => r.route("What is the P/E of AAPL?", "Current Symbol: AAPL")).pipe(
        Effect.provide(ModelRouter.layerConfig({ providers: [{ name: "local-pytorch", kind: "local-infer", baseUrl: local.url }], healthCheck: false })),
        Effect.provideService(FetchHttpClient.Fetch, counting)
      )
      assert.strictEqual(answer.model, "local-pytorch")
      assert.deepStrictEqual(seen.map((s) => s.url), [`${local.url}/infer`])
      assert.deepStrictEqual(seen[0]!.body, { question: "What is the P/E of AAPL?", context: "Current Symbol: AAPL", max_length: 512, temperature: 0.2 })
    }))
})

describe("Router Promise facade", () => {
  it.live("never rejects for provider failures and returns typed results", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq")
      const router = createRouter({ providers: [{ name: "groq-llama", kind: "openai", baseUrl: groq.url }], retry: { maxRetries: 0 }, healthCheck: false })
      const ok = yield* Effect.promise(() => router.route("hello"))
      groq.always({ kind: "status", status: 502 })
      const failed = yield* Effect.promise(() => router.route("hello"))
      const invalid = yield* Effect.promise(() => router.route("   "))
      const events: Array<string> = []
      yield* Effect.promise(async () => {
        for await (const e of router.stream("hello")) events.push(e.type)
      })
      yield* Effect.promise(() => router.close())
      assert.isTrue(ok.ok)
      if (ok.ok) assert.strictEqual(ok.answer, "groq says: hello")
      assert.isFalse(failed.ok)
      if (!failed.ok) {
        assert.strictEqual(failed.error._tag, "AllProvidersUnavailable")
        assert.deepStrictEqual(failed.error.attempts?.map((a) => a.status), [502])
      }
      assert.isFalse(invalid.ok)
      if (!invalid.ok) assert.strictEqual(invalid.error._tag, "InvalidRouteRequest")
      assert.deepStrictEqual(events, ["error"])
    }))

  it.live("stream interruption by the consumer aborts the provider request", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq")
      groq.always({ kind: "stream", tokens: ["a", "b", "c", "d", "e", "f"], delayMs: 100 })
      const router = createRouter({ providers: [{ name: "groq-llama", kind: "openai", baseUrl: groq.url }], healthCheck: false })
      const fiber = yield* Effect.forkChild(Effect.promise(async () => {
        const seen: Array<string> = []
        for await (const e of router.stream("hello")) {
          if (e.type === "token") seen.push(e.text)
          if (seen.length === 2) break
        }
        return seen
      }))
      const seen = yield* Fiber.join(fiber)
      assert.deepStrictEqual(seen, ["a", "b"])
      yield* waitUntil("the provider stream to be aborted", () => groq.aborted === 1)
      // the same through an AbortSignal fired while the consumer waits for the next token
      const controller = new AbortController()
      const viaSignal = yield* Effect.promise(async () => {
        const got: Array<string> = []
        for await (const e of router.stream("hello", undefined, { signal: controller.signal })) {
          if (e.type === "token") got.push(e.text)
          if (got.length === 1) setTimeout(() => controller.abort(), 10)
        }
        return got
      })
      assert.deepStrictEqual(viaSignal, ["a"])
      yield* waitUntil("the second provider stream to be aborted", () => groq.aborted === 2)
      yield* Effect.promise(() => router.close())
    }))
})
