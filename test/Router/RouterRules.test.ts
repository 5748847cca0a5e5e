/**
 * The Router's pure rules: classification examples, and fast-check properties of classification,
 * chain planning, backoff and the breaker.
 */
import { assert, describe, it } from "@effect/vitest"
import fc from "fast-check"
import { CircuitBreaker } from "../../src/Router/CircuitBreaker.ts"
import { type Classification, classify, defaultClassificationSettings } from "../../src/Router/Classifier.ts"
import { RouterConfigError } from "../../src/Router/Errors.ts"
import { createRouter } from "../../src/Router/Facade.ts"
import { resolveConfig } from "../../src/Router/RouterConfig.ts"
import { backoffDelay, extractAnnotations, planChain } from "../../src/Router/Routing.ts"

const settings = defaultClassificationSettings
const isDomain = (query: string, context?: unknown) => classify({ query, context }, settings).domain

describe("classification examples", () => {
  it("finance questions are domain queries, with the rules that fired", () => {
    const c = classify({ query: "Is AAPL overvalued at a P/E of 30?", context: undefined }, settings)
    assert.isTrue(c.domain)
    assert.deepStrictEqual(c.tickers, ["AAPL"])
    assert.deepStrictEqual(c.intents, ["valuation"])
    assert.deepStrictEqual(c.hits.map((h) => [h.rule, h.match]), [["ticker", "AAPL"], ["intent:valuation", "overvalued"]])
    assert.strictEqual(c.score, 1.1)
    assert.strictEqual(c.explanation, "finance: ticker(\"AAPL\") +0.5, intent:valuation(\"overvalued\") +0.6; score 1.1 >= threshold 0.5")
    assert.isTrue(isDomain("Which stocks have a dividend yield over 4%?"))
    assert.isTrue(isDomain("Should I buy Tesla?"))
    assert.isTrue(isDomain("Why did $NVDA drop today?"))
    assert.isTrue(isDomain("What's the RSI telling us about momentum?"))
    assert.isTrue(isDomain("When are Microsoft's earnings?"))
    assert.isTrue(isDomain("Rebalance my portfolio toward bonds"))
  })

  it("everyday questions are not, even with a weak finance word or a company alias", () => {
    assert.isFalse(isDomain("Write a haiku about autumn"))
    assert.isFalse(isDomain("What is the price of milk?"))
    assert.isFalse(isDomain("Explain photosynthesis"))
    assert.isFalse(isDomain("How do I bake an apple pie?"))
    assert.isFalse(isDomain("Why is the price of eggs rising?"))
  })

  it("market data in the context tips a weak query over the threshold", () => {
    assert.isFalse(isDomain("What is the price?"))
    assert.isTrue(isDomain("What is the price?", { prices: { AAPL: { price: 1, changePercent: 0 } } }))
    assert.isTrue(isDomain("What is the price?", "Current Symbol: AAPL\n\nCurrent Prices:\n  AAPL: $1.00 (+0.00%)"))
  })

  it("thresholds, weights and a custom classifier are configurable", () => {
    const strict = { ...settings, threshold: 2 }
    assert.isFalse(classify({ query: "Is AAPL overvalued?", context: undefined }, strict).domain)
    const custom = {
      ...settings,
      custom: (input: { query: string }, builtIn: Classification): Classification =>
        input.query.includes("ACME")
          ? { ...builtIn, domain: true, hits: [...builtIn.hits, { rule: "custom", weight: 1, match: "ACME" }], explanation: "custom: ACME" }
          : builtIn
    }
    const c = classify({ query: "news about ACME", context: undefined }, custom)
    assert.isTrue(c.domain)
    assert.strictEqual(c.explanation, "custom: ACME")
  })
})

// ---------------------------------------------------------------------------------------------------------------
// properties

const words = fc.constantFrom("the", "weather", "today", "please", "tell", "me", "about", "a", "story", "cats", "recipe", "how", "to", "cook")
const plainText = fc.array(words, { minLength: 0, maxLength: 12 }).map((ws) => ws.join(" "))
const financeAddition = fc.constantFrom(" $AAPL", " Should I buy it?", " What is its P/E?", " Which stocks beat estimates?", " RSI and MACD", " my portfolio")
const anyQuery = fc.oneof(plainText, fc.string({ maxLength: 80 }), fc.tuple(plainText, financeAddition).map(([a, b]) => a + b))
const marketContext = fc.constantFrom<unknown>(
  { symbol: "MSFT" },
  { prices: { MSFT: { price: 400, changePercent: 1.2 } } },
  "Current Prices:\n  MSFT: $400.00 (+1.20%)"
)

describe("classification properties", () => {
  it("the score is the sum of the fired rules' weights, and domain iff score >= threshold", () => {
    fc.assert(fc.property(anyQuery, fc.option(marketContext, { nil: undefined }), (query, context) => {
      const c = classify({ query, context }, settings)
      const sum = Math.round(c.hits.reduce((s, h) => s + h.weight, 0) * 1000) / 1000
      return c.score === sum && c.domain === (c.score >= c.threshold)
    }))
  })

  it("adding finance signal (a ticker, an intent, market data) never turns a domain query into a general one", () => {
    fc.assert(fc.property(plainText, financeAddition, marketContext, (query, addition, context) => {
      const before = classify({ query, context: undefined }, settings)
      const more = classify({ query: query + addition, context: undefined }, settings)
      const withData = classify({ query, context }, settings)
      return more.score >= before.score && withData.score >= before.score && (!before.domain || more.domain)
    }))
  })

  it("a cashtag always makes a domain query with the default weights", () => {
    fc.assert(fc.property(plainText, fc.constantFrom("AAPL", "MSFT", "NVDA", "F", "IT"), (query, symbol) =>
      isDomain(`${query} $${symbol}`)))
  })
})

const providerNames = ["local-pytorch", "groq-llama", "gemini", "ollama"] as const
const configArb = fc.record({
  enabled: fc.subarray([...providerNames], { minLength: 1 }),
  jsonLocal: fc.boolean()
}).map(({ enabled, jsonLocal }) =>
  resolveConfig({
    providers: enabled.map((name) =>
      name === "local-pytorch"
        ? { name, kind: "local-infer" as const, baseUrl: "http://127.0.0.1:1", supportsJsonSchema: jsonLocal }
        : { name, kind: name === "gemini" ? "gemini" as const : name === "ollama" ? "ollama" as const : "openai" as const, baseUrl: "http://127.0.0.1:1" })
  })
)

describe("chain planning properties", () => {
  it("chains hold configured providers once each; domain queries start at the local model, general ones never use it", () => {
    fc.assert(fc.property(configArb, anyQuery, (config, query) => {
      const c = classify({ query, context: undefined }, settings)
      const plan = planChain(config, c, {})
      const names = plan.chain.map((p) => p.name)
      const unique = new Set(names).size === names.length
      const known = names.every((n) => config.providers.some((p) => p.name === n))
      const hasLocal = config.providers.some((p) => p.local)
      const localRule = c.domain ? (!hasLocal || names[0] === "local-pytorch") : !names.includes("local-pytorch")
      return unique && known && localRule
    }))
  })

  it("preferredModel goes first; JSON-schema and streaming chains only hold capable providers", () => {
    fc.assert(fc.property(configArb, anyQuery, fc.nat(), fc.boolean(), fc.boolean(), (config, query, pick, json, stream) => {
      const preferred = config.providers[pick % config.providers.length]!
      const c = classify({ query, context: undefined }, settings)
      const plan = planChain(config, c, { preferredModel: preferred.name, ...(json ? { jsonSchema: { type: "object" } } : {}), stream })
      const capable = (p: (typeof config.providers)[number]) => (!json || p.supportsJsonSchema) && (!stream || p.supportsStreaming)
      const first = capable(preferred) ? plan.chain[0]?.name === preferred.name : !plan.chain.some((p) => p.name === preferred.name)
      const excludedReasons = plan.excluded.every((e) => !plan.chain.some((p) => p.name === e.provider))
      return first && plan.chain.every(capable) && excludedReasons
    }))
  })
})

describe("backoff and breaker properties", () => {
  const retry = fc.record({
    maxRetries: fc.constant(5),
    baseDelayMs: fc.integer({ min: 1, max: 2_000 }),
    maxDelayMs: fc.integer({ min: 1, max: 60_000 }),
    jitter: fc.double({ min: 0, max: 1, noNaN: true })
  })

  it("the delay is the capped exponential minus at most its jitter share, and never below Retry-After", () => {
    fc.assert(fc.property(retry, fc.integer({ min: 0, max: 20 }), fc.double({ min: 0, max: 0.999, noNaN: true }), fc.option(fc.integer({ min: 0, max: 100_000 }), { nil: undefined }), (s, n, random, retryAfter) => {
      const d = backoffDelay(s, n, random, retryAfter)
      const exp = Math.min(s.maxDelayMs, s.baseDelayMs * 2 ** n)
      return d >= Math.round(exp * (1 - s.jitter)) - 1 && (d <= exp + 1 || d === retryAfter) && d >= (retryAfter ?? 0)
    }))
  })

  it("without jitter the delay doubles until the cap", () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 1_000 }), fc.integer({ min: 0, max: 10 }), (base, n) => {
      const s = { maxRetries: 5, baseDelayMs: base, maxDelayMs: 10_000_000, jitter: 0 }
      return backoffDelay(s, n + 1, 0.5, undefined) === 2 * backoffDelay(s, n, 0.5, undefined)
    }))
  })

  type Event = { kind: "success" } | { kind: "failure" } | { kind: "advance"; ms: number } | { kind: "acquire" }
  const event: fc.Arbitrary<Event> = fc.oneof(
    fc.constant<Event>({ kind: "success" }),
    fc.constant<Event>({ kind: "failure" }),
    fc.constant<Event>({ kind: "acquire" }),
    fc.integer({ min: 1, max: 2_000 }).map((ms): Event => ({ kind: "advance", ms }))
  )

  it("never grants two probes at once, never lets a call through while open before the cool-down, and N failures open it", () => {
    fc.assert(fc.property(fc.array(event, { maxLength: 60 }), fc.integer({ min: 1, max: 5 }), (events, n) => {
      const b = new CircuitBreaker("p", { consecutiveFailures: n, failureRate: 1.1, windowMs: 10_000, minimumCalls: 1_000, cooldownMs: 1_000 })
      let now = 0
      let probes = 0
      let consecutive = 0
      for (const e of events) {
        if (e.kind === "advance") now += e.ms
        else if (e.kind === "acquire") {
          const wasOpen = b.currentState === "open"
          const openUntil = wasOpen ? b.snapshot(now).retryAtMs! : 0
          const permit = b.acquire(now)
          if (wasOpen && now < openUntil && permit !== "rejected") return false
          if (permit === "probe") probes++
          if (probes > 1) return false
        } else if (e.kind === "success") {
          b.success(now)
          probes = 0
          consecutive = 0
        } else {
          const wasHalfOpen = b.currentState === "half_open"
          b.failure(now)
          probes = 0
          consecutive++
          const state = b.snapshot(now).state
          if (wasHalfOpen && state !== "open") return false
          if (consecutive >= n && state !== "open") return false
        }
      }
      return true
    }))
  })
})

describe("config validation", () => {
  const fieldOf = (f: () => unknown) => {
    try {
      f()
      return "accepted"
    } catch (e) {
      return e instanceof RouterConfigError ? e.message : `other error: ${String(e)}`
    }
  }

  it("names the offending field", () => {
    const ok = { name: "g", kind: "openai" as const, baseUrl: "http://127.0.0.1:1" }
    assert.strictEqual(fieldOf(() => resolveConfig({ providers: [ok, { ...ok, name: "h", baseUrl: "localhost:8000" }] })), "router config: providers[1].baseUrl: not an http(s) URL: \"localhost:8000\"")
    assert.strictEqual(fieldOf(() => resolveConfig({ providers: [ok, ok] })), "router config: providers: duplicate provider name(s): g")
    assert.strictEqual(fieldOf(() => resolveConfig({ providers: [ok], domainChain: ["g", "local-pytorch"] })), "router config: domainChain: unknown provider(s): local-pytorch")
    assert.strictEqual(fieldOf(() => resolveConfig({ providers: [ok], retry: { jitter: 2 } })), "router config: retry.jitter: must be between 0 and 1, got 2")
    assert.strictEqual(fieldOf(() => createRouter({ providers: [ok], attemptTimeoutMs: -1 })), "router config: attemptTimeoutMs: must be a number > 0, got -1")
    assert.strictEqual(fieldOf(() => resolveConfig({ providers: [ok] })), "accepted")
  })
})

describe("answer annotations", () => {
  it("lifts any one-line risk note and ;-separated sources", () => {
    // ";" and " | " separate sources, "(" / "[" open a timestamp and "**" is markdown bold the parser strips:
    // a generated line holds none of them
    const line = fc.string({ minLength: 1, maxLength: 40 }).filter((s) => !/[\n\r;|*([]/.test(s) && s.trim() !== "")
    fc.assert(fc.property(line, fc.array(line, { minLength: 1, maxLength: 4 }), (risk, sources) => {
      const a = extractAnnotations(`Answer text.\nSources: ${sources.join("; ")}\nRisk note: ${risk}`)
      return a.riskNote === risk.trim() && JSON.stringify(a.citations) === JSON.stringify(sources.map((s) => ({ source: s.trim() })))
    }))
  })

  it("reads citations and risk_note from a JSON answer", () => {
    const a = extractAnnotations(JSON.stringify({ answer: "x", citations: [{ source: "SEC", timestamp: "<TIMESTAMP>" }, "Reuters"], risk_note: "Volatile." }))
    assert.deepStrictEqual(a, { citations: [{ source: "SEC", timestamp: "<TIMESTAMP>" }, { source: "Reuters" }], riskNote: "Volatile." })
  })
})
