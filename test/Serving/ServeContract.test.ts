/**
 * The server against its contract and against hostile clients (issues 18 and 21), over real loopback HTTP with
 * the tiny project-made GGUF: the generated OpenAPI document, the derived client (the pipeline's serve check, the
 * Evaluator's endpoint mode), stalled headers, huge prompts, deep contexts, bad UTF-8, auth, Host and CSRF.
 */
import { Effect, Redacted } from "effect"
import { getLlama } from "node-llama-cpp"
import * as http from "node:http"
import * as net from "node:net"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Generator } from "../../src/Evaluation/Generator.ts"
import type * as Api from "../../src/Api/Api.ts"
import { serveCheck } from "../../src/Api/ApiClient.ts"
import * as OffThreadTokenizer from "../../src/Serving/OffThreadTokenizer.ts"
import { bearerMatches, bindWarning, launchServer, type RunningServer } from "../../src/Serving/Server.ts"
import { tempDir, writeBase } from "./ServeFixtures.ts"

type Server = RunningServer & { readonly close: () => Promise<void> }

const dir = tempDir("contract")
const base = path.join(dir, "tiny.gguf")
let open: Server
let keyed: Server

beforeAll(async () => {
  await writeBase(base)
  // a small prompt limit and a large body limit, so prompts reach the prompt check and not the body check
  open = await launchServer({
    port: 0,
    maxBodyBytes: 16 * 1024 * 1024,
    headersTimeoutMs: 300,
    engine: { base, parallel: 1, queueSize: 16, contextSize: 256, threads: 1 }
  })
  keyed = await launchServer({ port: 0, apiKey: Redacted.make("s3cret"), engine: { base, parallel: 1, threads: 1 } })
})

afterAll(async () => {
  await open?.close()
  await keyed?.close()
  fs.rmSync(dir, { recursive: true, force: true })
})

const post = (url: string, body: string | Uint8Array, headers: Record<string, string> = { "content-type": "application/json" }) =>
  fetch(url, { method: "POST", headers, body })

/** A raw request, for headers `fetch` will not send as given (Host). */
const rawRequest = (url: string, options: { method: string; path: string; headers: Record<string, string>; body?: string }) =>
  new Promise<{ status: number; body: string }>((resolve, reject) => {
    const u = new URL(url)
    const req = http.request({ host: u.hostname, port: u.port, method: options.method, path: options.path, headers: options.headers }, (res) => {
      let body = ""
      res.on("data", (c) => (body += c))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on("error", reject)
    req.end(options.body)
  })

describe("the contract", () => {
  it("serves the OpenAPI document generated from it, with /infer and its request schema", async () => {
    const response = await fetch(`${open.url}/openapi.json`)
    expect(response.status).toBe(200)
    const doc = await response.json() as any
    expect(doc.openapi).toMatch(/^3\./)
    const infer = doc.paths["/infer"].post
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(["/infer", "/health", "/v1/chat/completions", "/v1/completions", "/v1/models", "/metrics"]))
    // the request schema, resolved through $ref where the generator put it in components
    let schema = infer.requestBody.content["application/json"].schema
    if (schema.$ref !== undefined) schema = doc.components.schemas[schema.$ref.split("/").pop()]
    expect(schema.required).toEqual(["question"])
    expect(Object.keys(schema.properties)).toEqual(expect.arrayContaining(["question", "context", "max_length", "temperature", "top_k", "top_p"]))
    // the declared error statuses, 400 included (HttpApi's default is an empty 400)
    expect(Object.keys(infer.responses)).toEqual(expect.arrayContaining(["200", "400", "413", "429", "503", "504"]))
  })

  it("routes as the hand-written table did: a trailing slash, HEAD on GET routes, 404 and 405 with error bodies", async () => {
    expect(await (await fetch(`${open.url}/health/`)).json()).toEqual({ status: "healthy", model_loaded: true })
    const head = await fetch(`${open.url}/health`, { method: "HEAD" })
    expect(head.status).toBe(200)
    expect(await head.text()).toBe("")
    const wrong = await fetch(`${open.url}/v1/models`, { method: "DELETE" })
    expect(wrong.status).toBe(405)
    expect(((await wrong.json()) as Api.ErrorBody).detail).toBe("DELETE is not allowed on /v1/models; use GET")
    const missing = await fetch(`${open.url}/nothing/here`)
    expect(missing.status).toBe(404)
    expect(((await missing.json()) as Api.ErrorBody).error.code).toBe("not_found")
  })

  it("the pipeline's serve check asks through the derived client and gets the contract's reply", async () => {
    const progress: Array<string> = []
    const answers = await Effect.runPromise(serveCheck(open.url, [
      { question: "What is AAPL trading at?", context: "Current Symbol: AAPL" },
      { question: "What is a P/E ratio?" }
    ], { maxLength: 96, temperature: 0, onAnswer: (a, i, n) => Effect.sync(() => progress.push(`${i + 1}/${n} ${a.question}`)) }))
    expect(answers.map((a) => a.question)).toEqual(["What is AAPL trading at?", "What is a P/E ratio?"])
    expect(progress).toEqual(["1/2 What is AAPL trading at?", "2/2 What is a P/E ratio?"])
    for (const a of answers) {
      expect(a.modelVersion).toBe("tiny")
      expect(a.confidence).toBeGreaterThan(0)
      expect(a.confidence).toBeLessThanOrEqual(1)
    }
    // a failure names the question and carries the server's own message
    const failed = await Effect.runPromise(Effect.flip(serveCheck(open.url, [{ question: "hi" }], { maxLength: 1 })))
    expect(failed._tag).toBe("ServeCheckError")
    expect(failed.message).toContain("\"hi\"")
    expect(failed.detail).toContain("max_length")
  })

  it("the Evaluator's endpoint mode sends the contract's body and leaves top_k/top_p to the contract's defaults", async () => {
    const seen: Array<any> = []
    const capture = http.createServer((req, res) => {
      let body = ""
      req.on("data", (c) => (body += c))
      req.on("end", () => {
        seen.push({ path: req.url, type: req.headers["content-type"], body: JSON.parse(body) })
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ answer: "A", confidence: 0.5, model_version: "m", latency_ms: 1 }))
      })
    })
    await new Promise<void>((r) => capture.listen(0, "127.0.0.1", r))
    const url = `http://127.0.0.1:${(capture.address() as net.AddressInfo).port}`
    try {
      const generation = await Effect.runPromise(Effect.gen(function*() {
        const generator = yield* Generator
        return yield* generator.generate({ question: "Q?", context: "C", maxTokens: 64, temperature: 0, seed: 3 })
      }).pipe(Effect.provide(Generator.layerHttp({ url, api: "infer" }))))
      expect(generation.answer).toBe("A")
      expect(generation.modelVersion).toBe("m")
      expect(seen).toHaveLength(1)
      expect(seen[0].path).toBe("/infer")
      expect(seen[0].type).toContain("application/json")
      expect(seen[0].body).toEqual({ question: "Q?", context: "C", max_length: 576, temperature: 0, seed: 3 })
      // and against the real server the same call answers
      const real = await Effect.runPromise(Effect.gen(function*() {
        return yield* (yield* Generator).generate({ question: "What is AAPL trading at?", maxTokens: 8, temperature: 0, seed: 1 })
      }).pipe(Effect.provide(Generator.layerHttp({ url: open.url, api: "infer" }))))
      expect(real.modelVersion).toBe("tiny")
      expect(typeof real.rawAnswer).toBe("string")
    } finally {
      await new Promise((r) => capture.close(r))
    }
  })
})

describe("hostile clients (issue 21)", () => {
  it("a stalled header gets 408 and the socket is closed", async () => {
    const port = new URL(open.url).port
    const reply = await new Promise<{ data: string; closed: boolean }>((resolve, reject) => {
      const socket = net.connect(Number(port), "127.0.0.1", () => socket.write("POST /infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-"))
      let data = ""
      socket.on("data", (d) => (data += d.toString()))
      socket.on("close", () => resolve({ data, closed: true }))
      socket.on("error", reject)
      // far beyond headersTimeoutMs 300 + the 300 ms check interval: without the fix the socket just stays open
      setTimeout(() => resolve({ data, closed: socket.destroyed }), 8_000).unref()
    })
    expect(reply.data).toMatch(/^HTTP\/1\.1 408/)
    expect(reply.closed).toBe(true)
  })

  it("huge prompts get 413 naming the field before tokenizing, while /health keeps answering", async () => {
    const huge = "How did AAPL move? ".repeat(55_000) // ~1 MB each
    const before = await (await fetch(`${open.url}/metrics`)).text()
    const order: Array<string> = []
    const prompts = Array.from({ length: 8 }, (_, i) =>
      post(`${open.url}/infer`, JSON.stringify({ question: huge, context: "" })).then(async (r) => {
        order.push(`prompt${i}`)
        return { status: r.status, body: await r.json() as Api.ErrorBody }
      }))
    const health = fetch(`${open.url}/health`).then(async (r) => {
      order.push("health")
      return r.status
    })
    const [results, healthStatus] = await Promise.all([Promise.all(prompts), health])
    expect(healthStatus).toBe(200)
    expect(order).toHaveLength(9)
    for (const r of results) {
      expect(r.status).toBe(413)
      expect(r.body.error.param).toBe("question")
      expect(r.body.error.code).toBe("prompt_too_large")
      expect(r.body.detail).toMatch(/^question: the prompt is \d+ bytes; this server takes at most 8192/)
    }
    // nothing was tokenized or generated for them
    const promptTokens = (text: string) => text.split("\n").filter((l) => l.startsWith("inference_prompt_tokens_total")).join("\n")
    expect(promptTokens(await (await fetch(`${open.url}/metrics`)).text())).toBe(promptTokens(before))
    // an OpenAI prompt is measured the same way
    const chat = await post(`${open.url}/v1/chat/completions`, JSON.stringify({ messages: [{ role: "user", content: huge.slice(0, 9000) }] }))
    expect(chat.status).toBe(413)
    expect(((await chat.json()) as Api.ErrorBody).error.param).toBe("messages")
  })

  it("a context nested 10,000 levels deep gets 400 naming context, not a stack overflow", async () => {
    const deep = "{\"a\":".repeat(10_000) + "1" + "}".repeat(10_000)
    const response = await post(`${open.url}/infer`, `{"question":"hi","context":${deep}}`)
    expect(response.status).toBe(400)
    const body = await response.json() as Api.ErrorBody
    expect(body.error.param).toBe("context")
    expect(body.detail).toContain("32 levels")
    // a shallow JSON context still works
    expect((await post(`${open.url}/infer`, JSON.stringify({ question: "hi", context: { a: { b: [1, 2] } }, max_length: 80 }))).status).toBe(200)
  })

  it("a body that is not valid UTF-8 gets 400", async () => {
    const bytes = Buffer.concat([Buffer.from("{\"question\":\"caf"), Buffer.from([0xff, 0xfe]), Buffer.from("\"}")])
    const response = await post(`${open.url}/infer`, bytes)
    expect(response.status).toBe(400)
    expect(((await response.json()) as Api.ErrorBody).error.code).toBe("invalid_utf8")
  })

  it("without a key: only loopback Host names, and POSTs must be JSON (DNS rebinding, CSRF)", async () => {
    const port = new URL(open.url).port
    const rebound = await rawRequest(open.url, { method: "GET", path: "/health", headers: { host: `evil.example:${port}` } })
    expect(rebound.status).toBe(403)
    expect(JSON.parse(rebound.body).error.code).toBe("host_not_allowed")
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, "LocalHost"]) {
      expect((await rawRequest(open.url, { method: "GET", path: "/health", headers: { host } })).status).toBe(200)
    }
    const body = JSON.stringify({ question: "hi", max_length: 80 })
    for (const type of ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]) {
      const r = await post(`${open.url}/infer`, body, { "content-type": type })
      expect(r.status, type).toBe(415)
      expect(((await r.json()) as Api.ErrorBody).error.code).toBe("unsupported_media_type")
    }
    expect((await post(`${open.url}/infer`, body, { "content-type": "application/json; charset=utf-8" })).status).toBe(200)
  })

  it("with a key: the bearer scheme in any case, the key compared exactly", async () => {
    const models = (authorization?: string) =>
      fetch(`${keyed.url}/v1/models`, authorization === undefined ? {} : { headers: { authorization } }).then((r) => r.status)
    expect(await models("Bearer s3cret")).toBe(200)
    expect(await models("bearer s3cret")).toBe(200)
    expect(await models("BEARER  s3cret")).toBe(200)
    expect(await models("Bearer s3cre")).toBe(401)
    expect(await models("Bearer s3cret2")).toBe(401)
    expect(await models("Basic s3cret")).toBe(401)
    expect(await models()).toBe(401)
    expect((await fetch(`${keyed.url}/health`)).status).toBe(200)
    const key = Redacted.make("k")
    expect(bearerMatches("bearer k", key)).toBe(true)
    expect(bearerMatches("Bearer", key)).toBe(false)
    expect(bearerMatches(undefined, key)).toBe(false)
  })

  it("warns about a non-loopback bind without a key", () => {
    expect(bindWarning("0.0.0.0", undefined)).toContain("without an API key")
    expect(bindWarning("192.168.1.5", undefined)).toContain("192.168.1.5")
    expect(bindWarning("0.0.0.0", Redacted.make("k"))).toBeUndefined()
    expect(bindWarning("127.0.0.1", undefined)).toBeUndefined()
    expect(bindWarning("::1", undefined)).toBeUndefined()
    expect(bindWarning("localhost", undefined)).toBeUndefined()
  })
})

describe("long prompts are tokenized off the event loop (issue 21)", () => {
  it("the worker gives llama.cpp's own tokens for long texts, and short ones stay inline", async () => {
    const llama = await getLlama({ gpu: false, build: "never", progressLogs: false })
    const model = await llama.loadModel({ modelPath: base })
    try {
      const long = "AAPL rose 1.2% to $189.50 after earnings; MSFT fell. ".repeat(2_000)
      const inlineCalls: Array<number> = []
      const inline = (text: string, special: boolean) => {
        inlineCalls.push(text.length)
        return model.tokenize(text, special)
      }
      const tokens = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
        const tokenizer = yield* OffThreadTokenizer.start(base, inline)
        const fromWorker = yield* tokenizer.tokenize(long, false)
        const short = yield* tokenizer.tokenize("What is AAPL trading at?", false)
        return { fromWorker, short }
      })))
      expect(tokens.fromWorker).toEqual(Array.from(model.tokenize(long, false)))
      expect(tokens.fromWorker.length).toBeGreaterThan(10_000)
      expect(tokens.short).toEqual(Array.from(model.tokenize("What is AAPL trading at?", false)))
      // only the short text was tokenized on this thread
      expect(inlineCalls).toEqual(["What is AAPL trading at?".length])
    } finally {
      await model.dispose()
      await llama.dispose()
    }
  })

  it("/health answers while 1 MB prompts are being tokenized", async () => {
    // no prompt byte limit to speak of: these prompts reach the tokenizer (and then do not fit the context)
    const server = await launchServer({
      port: 0,
      maxBodyBytes: 16 * 1024 * 1024,
      maxPromptBytes: 16 * 1024 * 1024,
      engine: { base, parallel: 1, contextSize: 256, threads: 1 }
    })
    try {
      const huge = "How did AAPL move? ".repeat(55_000)
      const order: Array<string> = []
      const prompts = Array.from({ length: 4 }, () =>
        post(`${server.url}/infer`, JSON.stringify({ question: huge, context: "" })).then(async (r) => {
          order.push("prompt")
          return { status: r.status, body: await r.json() as Api.ErrorBody }
        }))
      // setup, not a measurement: let the uploads (4 MB over loopback) reach the server first
      await new Promise((r) => setTimeout(r, 300))
      const health = fetch(`${server.url}/health`).then((r) => {
        order.push("health")
        return r.status
      })
      const [results, status] = await Promise.all([Promise.all(prompts), health])
      expect(status).toBe(200)
      // ~0.6 s of tokenizing each; on the main thread /health would wait behind at least the first
      expect(order[0]).toBe("health")
      for (const r of results) {
        expect(r.status).toBe(400)
        expect(r.body.error.code).toBe("context_length_exceeded")
      }
    } finally {
      await server.close()
    }
  })
})
