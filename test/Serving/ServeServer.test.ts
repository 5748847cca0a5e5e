/**
 * The inference server over real HTTP on ephemeral ports, with a tiny project-made GGUF and a LoRA adapter exported
 * from a PEFT folder made here. Clients are `fetch` (the app's client uses it) and Effect's SSE parser.
 */
import { NodeServices } from "@effect/platform-node"
import { Deferred, Effect, Redacted } from "effect"
import { Sse } from "effect/encoding"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type * as Api from "../../src/Api/Api.ts"
import { exportAdapter } from "../../src/Serving/Export.ts"
import { launchServer, type RunningServer } from "../../src/Serving/Server.ts"
import { tempDir, tinyConfig, writeBase, writePeft } from "./ServeFixtures.ts"

type Server = RunningServer & { readonly close: () => Promise<void> }
/** this server always sends `metadata` (optional in the contract, which the original server's replies also meet) */
type InferReply = Api.InferResponse & { readonly metadata: Api.InferMetadata }

const dir = tempDir("serve")
const base = path.join(dir, "tiny.gguf")
const adapter = path.join(dir, "finance.gguf")
let server: Server

const appContext = [
  "Current Symbol: AAPL",
  "",
  "Current Prices:",
  "  AAPL: $189.50 (+0.45%)",
  "  MSFT: $402.10 (-1.20%)",
  "",
  "Fundamentals:",
  "  peRatio: 28.5",
  "  sector: \"Technology\""
].join("\n")

const post = (url: string, body: unknown, init: RequestInit = {}) =>
  fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...(init.headers ?? {}) },
    body: typeof body === "string" ? body : JSON.stringify(body),
    ...(init.signal ? { signal: init.signal } : {})
  })

const json = async <A = any>(response: Response) => (await response.json()) as A

/** Reads an SSE response with Effect's SSE parser; returns the `data` fields in order. */
const readSse = async (response: Response, onEvent?: (data: string) => void) => {
  const events: Array<string> = []
  const parser = Sse.makeParser((event) => {
    if (event._tag === "Event") {
      events.push(event.data)
      onEvent?.(event.data)
    }
  })
  const decoder = new TextDecoder()
  for await (const chunk of response.body!) parser.feed(decoder.decode(chunk as Uint8Array, { stream: true }))
  return events
}

const metric = async (url: string, name: string) => {
  const text = await (await fetch(`${url}/metrics`)).text()
  const line = text.split("\n").find((l) => l.startsWith(name))
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1))
}

const waitFor = async (check: () => Promise<boolean>, what: string) => {
  for (let i = 0; i < 400; i++) {
    if (await check()) return
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error(`timed out waiting for ${what}`)
}

beforeAll(async () => {
  await writeBase(base)
  const peft = path.join(dir, "peft")
  await writePeft(peft, tinyConfig, { r: 4, alpha: 16 })
  await Effect.runPromise(exportAdapter({ adapter: peft, base, out: adapter }).pipe(Effect.provide(NodeServices.layer)))
  server = await launchServer({
    port: 0,
    maxBodyBytes: 64 * 1024,
    engine: { base, adapters: [{ name: "finance", path: adapter }], parallel: 2, queueSize: 8, contextSize: 2048, threads: 1 }
  })
})

afterAll(async () => {
  await server?.close()
  fs.rmSync(dir, { recursive: true, force: true })
})

describe("the app's contract", () => {
  it("answers the app's exact /infer request within its 10 s timeout", async () => {
    const response = await post(`${server.url}/infer`, {
      question: "Should I buy AAPL at the current price?",
      context: appContext,
      max_length: 512,
      temperature: 0.2,
      top_k: 50,
      top_p: 0.9
    }, { signal: AbortSignal.timeout(10_000) })
    expect(response.status).toBe(200)
    expect(response.headers.get("content-type")).toContain("application/json")
    const body = await json<InferReply>(response)
    expect(Object.keys(body).sort()).toEqual(["answer", "confidence", "latency_ms", "metadata", "model_version"])
    expect(typeof body.answer).toBe("string")
    expect(body.answer.length).toBeGreaterThan(0)
    expect(body.confidence).toBeGreaterThan(0)
    expect(body.confidence).toBeLessThanOrEqual(1)
    expect(body.model_version).toBe("finance")
    expect(body.latency_ms).toBeGreaterThan(0)
    expect(body.metadata.model).toBe("finance")
    expect(body.metadata.prompt_tokens + body.metadata.completion_tokens).toBeLessThanOrEqual(512)
    // the finance vocabulary has placeholder tokens, so even a random model writes some: filled from the context
    const { filled, unfilled } = body.metadata.placeholders
    for (const [placeholder, value] of Object.entries(filled)) {
      expect(body.metadata.raw_answer).toContain(placeholder)
      expect(body.answer).not.toContain(placeholder)
      expect(body.answer).toContain(value)
    }
    for (const placeholder of unfilled) expect(body.answer).toContain(placeholder)
  })

  it("answers the app's health check within its 2 s timeout", async () => {
    const response = await fetch(`${server.url}/health`, { signal: AbortSignal.timeout(2_000) })
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({ status: "healthy", model_loaded: true })
    expect((await fetch(`${server.url}/ready`)).status).toBe(200)
    expect(await json(await fetch(`${server.url}/live`))).toEqual({ status: "alive" })
  })

  it("bounds prompt + answer by max_length, and refuses a max_length the prompt alone fills", async () => {
    const first = await json<InferReply>(await post(`${server.url}/infer`, { question: "What is the P/E?", context: appContext, max_length: 512, temperature: 0 }))
    const prompt = first.metadata.prompt_tokens
    const tight = await json<InferReply>(await post(`${server.url}/infer`, { question: "What is the P/E?", context: appContext, max_length: prompt + 3, temperature: 0 }))
    expect(tight.metadata.prompt_tokens).toBe(prompt)
    expect(tight.metadata.completion_tokens).toBeLessThanOrEqual(3)
    expect(tight.metadata.finish_reason === "length").toBe(tight.metadata.completion_tokens === 3)
    const refused = await post(`${server.url}/infer`, { question: "What is the P/E?", context: appContext, max_length: prompt })
    expect(refused.status).toBe(400)
    const error = await json<Api.ErrorBody>(refused)
    expect(error.error.param).toBe("max_length")
    expect(error.detail).toContain(`the prompt is ${prompt} tokens`)
  })

  it("derives confidence from the model: the greedy answer's mean token probability differs per question", async () => {
    const ask = (question: string) =>
      post(`${server.url}/infer`, { question, context: appContext, max_length: 160, temperature: 0 }).then((r) => json<InferReply>(r))
    const [a, b, a2] = [await ask("What moved MSFT?"), await ask("Explain the AAPL valuation"), await ask("What moved MSFT?")]
    expect(a.confidence).not.toBe(b.confidence)
    expect(a2.confidence).toBe(a.confidence)
    expect(a2.answer).toBe(a.answer)
  })

  it("accepts a structured JSON context (the app's RAGContext object)", async () => {
    const response = await post(`${server.url}/infer`, {
      question: "What is the price?",
      context: { symbol: "AAPL", prices: { AAPL: { price: 189.5, changePercent: 0.45 } } },
      max_length: 160
    })
    expect(response.status).toBe(200)
    expect((await json<InferReply>(response)).metadata.placeholders.policy).toBe("leave")
  })
})

describe("placeholder policies", () => {
  it("leaves, removes or refuses placeholders the context cannot fill, per request", async () => {
    // the finance vocabulary has placeholder tokens, so the random model writes some; find an answer with one the
    // (empty) context cannot fill
    const ask = (question: string, placeholders: string) =>
      post(`${server.url}/infer`, { question, context: "", max_length: 160, temperature: 0, placeholders })
    let found: { question: string; body: InferReply } | undefined
    for (let i = 0; i < 40 && found === undefined; i++) {
      const question = `What drives the price of stock number ${i}?`
      const body = await json<InferReply>(await ask(question, "leave"))
      if (body.metadata.placeholders.unfilled.length > 0) found = { question, body }
    }
    expect(found).toBeDefined()
    const { question, body } = found!
    for (const p of body.metadata.placeholders.unfilled) expect(body.answer).toContain(p)
    const removed = await json<InferReply>(await ask(question, "remove"))
    expect(removed.metadata.placeholders.unfilled).toEqual(body.metadata.placeholders.unfilled)
    expect(removed.metadata.placeholders.policy).toBe("remove")
    for (const p of body.metadata.placeholders.unfilled) expect(removed.answer).not.toContain(p)
    const refused = await ask(question, "refuse")
    expect(refused.status).toBe(422)
    const error = await json<Api.ErrorBody>(refused)
    expect(error.error.code).toBe("unfilled_placeholders")
    for (const p of body.metadata.placeholders.unfilled) expect(error.detail).toContain(p)
  })
})

describe("OpenAI-compatible endpoints", () => {
  it("lists the base and the adapter as models", async () => {
    const list = await json<Api.ModelList>(await fetch(`${server.url}/v1/models`))
    expect(list.object).toBe("list")
    expect(list.data.map((m) => [m.id, m.parent])).toEqual([["tiny", null], ["finance", "tiny"]])
  })

  it("chat completion: usage adds up, finish_reason follows max_tokens, the model field picks the adapter", async () => {
    const ask = (model: string | undefined) =>
      post(`${server.url}/v1/chat/completions`, {
        ...(model === undefined ? {} : { model }),
        messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "What is a P/E ratio?" }],
        max_tokens: 6,
        temperature: 0
      }).then((r) => json<Api.ChatCompletion>(r))
    const viaAdapter = await ask("finance")
    expect(viaAdapter.object).toBe("chat.completion")
    expect(viaAdapter.model).toBe("finance")
    expect(viaAdapter.choices[0]!.message.role).toBe("assistant")
    expect(viaAdapter.usage.total_tokens).toBe(viaAdapter.usage.prompt_tokens + viaAdapter.usage.completion_tokens)
    expect(viaAdapter.choices[0]!.finish_reason === "length").toBe(viaAdapter.usage.completion_tokens === 6)
    expect((await ask(undefined)).choices[0]!.message.content).toBe(viaAdapter.choices[0]!.message.content)
    const viaBase = await ask("tiny")
    expect(viaBase.model).toBe("tiny")
    expect(viaBase.choices[0]!.message.content).not.toBe(viaAdapter.choices[0]!.message.content)
    const unknown = await post(`${server.url}/v1/chat/completions`, { model: "gpt-4", messages: [{ role: "user", content: "hi" }] })
    expect(unknown.status).toBe(404)
    expect((await json<Api.ErrorBody>(unknown)).error.code).toBe("model_not_found")
  })

  it("streams chat as SSE: role first, content deltas that add up to the answer, usage, then [DONE]", async () => {
    const body = { messages: [{ role: "user", content: "Summarize the market today." }], max_tokens: 12, temperature: 0 }
    const whole = await json<Api.ChatCompletion>(await post(`${server.url}/v1/chat/completions`, body))
    const response = await post(`${server.url}/v1/chat/completions`, { ...body, stream: true, stream_options: { include_usage: true } })
    expect(response.status).toBe(200)
    expect(response.headers.get("content-type")).toContain("text/event-stream")
    const events = await readSse(response)
    expect(events[events.length - 1]).toBe("[DONE]")
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as Api.ChatCompletionChunk)
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1)
    expect(chunks[0]!.choices[0]!.delta).toEqual({ role: "assistant", content: "" })
    const content = chunks.map((c) => c.choices[0]?.delta.content ?? "").join("")
    expect(content).toBe(whole.choices[0]!.message.content)
    const finish = chunks.find((c) => c.choices[0]?.finish_reason != null)!
    expect(finish.choices[0]!.finish_reason).toBe(whole.choices[0]!.finish_reason)
    expect(finish.usage).toEqual(whole.usage)
    const usageOnly = chunks[chunks.length - 1]!
    expect(usageOnly.choices).toEqual([])
    expect(usageOnly.usage).toEqual(whole.usage)
  })

  it("completions: stop strings end the text, seeds make sampling repeatable, streaming matches", async () => {
    const prompt = "The market today"
    const full = await json<Api.Completion>(await post(`${server.url}/v1/completions`, { prompt, max_tokens: 16, temperature: 0 }))
    const text = full.choices[0]!.text
    expect(full.usage!.completion_tokens).toBeGreaterThan(0)
    const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 2)
    const stopped = await json<Api.Completion>(await post(`${server.url}/v1/completions`, { prompt, max_tokens: 16, temperature: 0, stop: [stop] }))
    expect(stopped.choices[0]!.text).toBe(text.slice(0, text.indexOf(stop)))
    expect(stopped.choices[0]!.finish_reason).toBe("stop")
    const sampled = (seed: number) =>
      post(`${server.url}/v1/completions`, { prompt, max_tokens: 12, temperature: 1.2, top_p: 0.95, seed }).then((r) => json<Api.Completion>(r))
    const [s1, s2] = [await sampled(42), await sampled(42)]
    expect(s1.choices[0]!.text).toBe(s2.choices[0]!.text)
    const streamed = await readSse(await post(`${server.url}/v1/completions`, { prompt, max_tokens: 16, temperature: 0, stream: true }))
    expect(streamed[streamed.length - 1]).toBe("[DONE]")
    const parts = streamed.slice(0, -1).map((e) => JSON.parse(e) as Api.Completion)
    expect(parts.map((p) => p.choices[0]!.text).join("")).toBe(text)
    expect(parts[parts.length - 1]!.usage).toEqual(full.usage)
  })
})

describe("bad requests", () => {
  const noStackTrace = (text: string) => expect(text).not.toMatch(/\bat .+\.(ts|js):\d+/)

  it("malformed JSON, wrong types and missing fields get 400 naming the field", async () => {
    const malformed = await post(`${server.url}/infer`, "{\"question\": \"hi\",")
    expect(malformed.status).toBe(400)
    const m = await json<Api.ErrorBody>(malformed)
    expect(m.error.code).toBe("invalid_json")
    noStackTrace(JSON.stringify(m))
    const wrongType = await json<Api.ErrorBody>(await post(`${server.url}/infer`, { question: "hi", context: "", max_length: "long" }))
    expect(wrongType.error.param).toBe("max_length")
    expect(wrongType.detail).toContain("max_length")
    const missing = await post(`${server.url}/infer`, { context: "x" })
    expect(missing.status).toBe(400)
    expect((await json<Api.ErrorBody>(missing)).error.param).toBe("question")
    const badTemperature = await json<Api.ErrorBody>(await post(`${server.url}/v1/chat/completions`, { messages: [{ role: "user", content: "hi" }], temperature: -1 }))
    expect(badTemperature.error.param).toBe("temperature")
    const badRole = await json<Api.ErrorBody>(await post(`${server.url}/v1/chat/completions`, { messages: [{ role: "wizard", content: "hi" }] }))
    expect(badRole.error.param).toBe("messages.0.role")
  })

  it("oversized bodies get 413, unknown routes 404, wrong methods 405", async () => {
    const big = await post(`${server.url}/infer`, { question: "x".repeat(100 * 1024), context: "" })
    expect(big.status).toBe(413)
    expect((await json<Api.ErrorBody>(big)).error.code).toBe("body_too_large")
    const notFound = await fetch(`${server.url}/v2/anything`)
    expect(notFound.status).toBe(404)
    const wrongMethod = await fetch(`${server.url}/infer`)
    expect(wrongMethod.status).toBe(405)
    noStackTrace(await wrongMethod.text())
  })
})

describe("load and cancellation", () => {
  it("50 concurrent requests with 2 slots and a queue of 8: no lost or mixed-up answers, overflow gets 429", async () => {
    const questions = Array.from({ length: 50 }, (_, i) => `Question number ${i}: how did ticker ${i} move?`)
    const ask = (question: string) => post(`${server.url}/infer`, { question, context: appContext, max_length: 140, temperature: 0 })
    const expected = new Map<string, string>()
    for (const q of questions) expected.set(q, (await json<InferReply>(await ask(q))).answer)
    const responses = await Promise.all(questions.map(async (q) => {
      const r = await ask(q)
      return { q, status: r.status, retryAfter: r.headers.get("retry-after"), body: (await r.json()) as any }
    }))
    expect(responses).toHaveLength(50)
    const ok = responses.filter((r) => r.status === 200)
    const refused = responses.filter((r) => r.status !== 200)
    expect(ok.length).toBeGreaterThanOrEqual(10)
    expect(refused.length).toBeGreaterThan(0)
    for (const r of ok) expect(r.body.answer).toBe(expected.get(r.q))
    for (const r of refused) {
      expect(r.status).toBe(429)
      expect(Number(r.retryAfter)).toBeGreaterThanOrEqual(1)
      expect(r.body.error.code).toBe("queue_full")
    }
    expect(await metric(server.url, "inference_queue_depth")).toBe(0)
    expect(await metric(server.url, "inference_active_generations")).toBe(0)
  })

  it("a client that disconnects mid-stream frees its slot and its generation is not completed", async () => {
    const before = await metric(server.url, "inference_generated_tokens_total{model=\"finance\"}") ?? 0
    const controllers = [new AbortController(), new AbortController()]
    await Promise.all(controllers.map(async (controller) => {
      const response = await post(`${server.url}/v1/completions`, { prompt: "Once", max_tokens: 1800, temperature: 0, stream: true }, { signal: controller.signal })
      const reader = response.body!.getReader()
      await reader.read()
      controller.abort()
    }))
    await waitFor(async () => (await metric(server.url, "inference_active_generations")) === 0, "the slots to be freed")
    expect(await metric(server.url, "inference_generated_tokens_total{model=\"finance\"}") ?? 0).toBe(before)
    const text = await (await fetch(`${server.url}/metrics`)).text()
    expect(text).toContain("http_requests_total{route=\"/v1/completions\",status=\"499\"} 2")
    // both slots serve again
    const again = await Promise.all([0, 1].map(() => post(`${server.url}/v1/completions`, { prompt: "Again", max_tokens: 4 })))
    expect(again.map((r) => r.status)).toEqual([200, 200])
  })

  it("exposes Prometheus metrics: requests by route and status, latency histograms, tokens, queue, adapters", async () => {
    const text = await (await fetch(`${server.url}/metrics`)).text()
    expect(text).toMatch(/^http_requests_total\{route="\/infer",status="200"\} \d+$/m)
    expect(text).toMatch(/^http_requests_total\{route="\/infer",status="400"\} \d+$/m)
    expect(text).toMatch(/^http_request_duration_seconds_bucket\{route="\/infer",le="\+Inf"\} \d+$/m)
    expect(text).toMatch(/^inference_tokens_per_second_count\{model="finance"\} \d+$/m)
    expect(text).toContain("inference_loaded_adapters 1")
    expect(text).toContain("inference_model_loaded 1")
    expect(text).toContain("# TYPE http_request_duration_seconds histogram")
  })
})

describe("a busy server: one slot, a model wide enough to keep it busy for seconds", () => {
  let busy: Server | undefined
  const wide = path.join(dir, "wide.gguf")
  // greedy "Hold" on this model runs to max_tokens (no end-of-text), a few seconds of work on one thread
  const holderBody = { prompt: "Hold", max_tokens: 2000, temperature: 0 }
  const tokensTotal = () => metric(busy!.url, "inference_generated_tokens_total{model=\"wide\"}").then((n) => n ?? 0)
  const requests = (route: string, status: number) =>
    metric(busy!.url, `http_requests_total{route="${route}",status="${status}"}`).then((n) => n ?? 0)

  beforeAll(async () => {
    await writeBase(wide, { ...tinyConfig, hiddenSize: 512, intermediateSize: 1024, numLayers: 4, numHeads: 8, numKvHeads: 4, headDim: 64 })
    busy = await launchServer({ port: 0, engine: { base: wide, parallel: 1, queueSize: 2, threads: 1 } })
  })
  afterAll(async () => {
    await busy?.close()
  })

  /** A streamed generation that holds the one slot until aborted; `ended` says whether its stream finished. */
  const startHolder = async () => {
    const controller = new AbortController()
    const response = await post(`${busy!.url}/v1/completions`, { ...holderBody, stream: true }, { signal: controller.signal })
    const reader = response.body!.getReader()
    await reader.read()
    const state = { ended: false }
    const drained = (async () => {
      while (!(await reader.read()).done) { /* keep reading */ }
      state.ended = true
    })().catch(() => {})
    return { state, stop: async () => { controller.abort(); await drained } }
  }

  it("a request that gives up while queued leaves the queue, and never runs", async () => {
    const url = busy!.url
    const tokensBefore = await tokensTotal()
    const holder = await startHolder()
    await waitFor(async () => (await metric(url, "inference_active_generations")) === 1, "the slot to be busy")
    const waiting = new AbortController()
    const queued = post(`${url}/infer`, { question: "queued?", max_length: 160 }, { signal: waiting.signal }).then(() => "answered", () => "aborted")
    await waitFor(async () => (await metric(url, "inference_queue_depth")) === 1, "the request to queue")
    waiting.abort()
    expect(await queued).toBe("aborted")
    await waitFor(async () => (await metric(url, "inference_queue_depth")) === 0, "the queue to empty")
    // the place was given up while the holder still has the slot, not when the slot came free
    expect(await metric(url, "inference_active_generations")).toBe(1)
    expect(holder.state.ended).toBe(false)
    await waitFor(async () => (await requests("/infer", 499)) === 1, "the queued request to be counted as closed by the client")
    await holder.stop()
    await waitFor(async () => (await metric(url, "inference_active_generations")) === 0, "the slot to be freed")
    const third = await post(`${url}/infer`, { question: "after", max_length: 160 })
    expect(third.status).toBe(200)
    const answer = await json<InferReply>(third)
    // only the third request generated: neither the aborted holder nor the request that left the queue
    expect(await tokensTotal() - tokensBefore).toBe(answer.metadata.completion_tokens)
  })

  it("a client that disconnects mid-generation (not streamed) frees the slot and the generation is not completed", async () => {
    const url = busy!.url
    const tokensBefore = await tokensTotal()
    const closedBefore = await requests("/v1/completions", 499)
    const controller = new AbortController()
    const request = post(`${url}/v1/completions`, holderBody, { signal: controller.signal }).then(() => "answered", () => "aborted")
    await waitFor(async () => (await metric(url, "inference_active_generations")) === 1, "the generation to start")
    controller.abort()
    expect(await request).toBe("aborted")
    await waitFor(async () => (await metric(url, "inference_active_generations")) === 0, "the slot to be freed")
    expect(await tokensTotal()).toBe(tokensBefore)
    expect(await requests("/v1/completions", 499)).toBe(closedBefore + 1)
    const next = await post(`${url}/v1/completions`, { prompt: "Again", max_tokens: 4, temperature: 0 })
    expect(next.status).toBe(200)
    expect((await json<Api.Completion>(next)).usage!.completion_tokens).toBeGreaterThan(0)
  })
})

describe("a guarded server: loading, auth, timeouts", () => {
  let guarded: Server | undefined
  const gate = Effect.runSync(Deferred.make<void>())
  let starting: Promise<Server>
  let port = 0

  beforeAll(async () => {
    // a known port, so the test can call the server before launchServer resolves (it waits for the models)
    port = await new Promise<number>((resolve) => {
      const probe = net.createServer().listen(0, "127.0.0.1", () => {
        const p = (probe.address() as net.AddressInfo).port
        probe.close(() => resolve(p))
      })
    })
    starting = launchServer({
      port,
      apiKey: Redacted.make("s3cret"),
      requestTimeoutMs: 250,
      engine: { base, parallel: 1, queueSize: 0, threads: 1, beforeLoad: Deferred.await(gate) }
    })
  })
  afterAll(async () => {
    await guarded?.close()
  })

  it("answers 503 with model_loaded false while loading, then healthy", async () => {
    const url = `http://127.0.0.1:${port}`
    await waitFor(() => fetch(`${url}/live`, { signal: AbortSignal.timeout(1_000) }).then((r) => r.ok, () => false), "the listener")
    const loading = await fetch(`${url}/health`)
    expect(loading.status).toBe(503)
    expect(await loading.json()).toEqual({ status: "loading", model_loaded: false, detail: "Model not loaded" })
    expect((await fetch(`${url}/ready`)).status).toBe(503)
    const early = await post(`${url}/infer`, { question: "hi" }, { headers: { Authorization: "Bearer s3cret" } })
    expect(early.status).toBe(503)
    expect(early.headers.get("retry-after")).toBe("5")
    Effect.runSync(Deferred.succeed(gate, undefined))
    guarded = await starting
    expect(guarded.url).toBe(url)
    expect(guarded.models.map((m) => m.id)).toEqual(["tiny"])
    expect(await json(await fetch(`${url}/health`))).toEqual({ status: "healthy", model_loaded: true })
  })

  it("needs the bearer token everywhere but the probes", async () => {
    const url = guarded!.url
    expect((await fetch(`${url}/health`)).status).toBe(200)
    const none = await post(`${url}/v1/completions`, { prompt: "x", max_tokens: 1 })
    expect(none.status).toBe(401)
    expect(none.headers.get("www-authenticate")).toBe("Bearer")
    expect((await post(`${url}/v1/completions`, { prompt: "x", max_tokens: 1 }, { headers: { Authorization: "Bearer nope" } })).status).toBe(401)
    expect((await fetch(`${url}/v1/models`, { headers: { Authorization: "Bearer s3cret" } })).status).toBe(200)
    expect((await post(`${url}/v1/completions`, { prompt: "x", max_tokens: 1 }, { headers: { Authorization: "Bearer s3cret" } })).status).toBe(200)
  })

  it("times a long generation out with 504 and frees the slot", async () => {
    const url = guarded!.url
    const auth = { headers: { Authorization: "Bearer s3cret" } }
    const slow = await post(`${url}/v1/completions`, { prompt: "Once", max_tokens: 1800, temperature: 0 }, auth)
    expect(slow.status).toBe(504)
    expect((await json<Api.ErrorBody>(slow)).error.code).toBe("timeout")
    expect((await post(`${url}/v1/completions`, { prompt: "x", max_tokens: 1 }, auth)).status).toBe(200)
  })
})
