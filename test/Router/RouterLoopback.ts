/**
 * A real HTTP server on 127.0.0.1 that plays one provider of the Router's: our `/infer` + `/health`,
 * OpenAI-compatible `/chat/completions` (with SSE streaming), Gemini `generateContent` /
 * `streamGenerateContent?alt=sse`, and Ollama `/api/generate` (with NDJSON streaming). What it does per
 * request is scripted: answer, answer slowly, hang, fail with a status (429 + Retry-After, 500, 401),
 * return malformed JSON, or stream some tokens and then drop the connection.
 */
import { Effect } from "effect"
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import type { AddressInfo, Socket } from "node:net"

export type Behaviour =
  | { readonly kind: "ok"; readonly text?: string; readonly delayMs?: number }
  | { readonly kind: "hang" }
  | { readonly kind: "status"; readonly status: number; readonly body?: string; readonly retryAfter?: string }
  | { readonly kind: "malformed" }
  /** stream `tokens` (delayMs apart); with `dropAfter`, destroy the socket after that many tokens */
  | { readonly kind: "stream"; readonly tokens: ReadonlyArray<string>; readonly delayMs?: number; readonly dropAfter?: number }

export interface SeenRequest {
  readonly method: string
  readonly path: string
  readonly headers: IncomingMessage["headers"]
  readonly body: any
}

export interface LoopbackOptions {
  /** when set, requests must carry one of these keys (Bearer or x-goog-api-key), else 401 */
  readonly validKeys?: ReadonlyArray<string>
  /** keys answered with 429 + Retry-After */
  readonly rateLimitedKeys?: ReadonlyArray<string>
  readonly retryAfter?: string
}

export class LoopbackProvider {
  readonly requests: Array<SeenRequest> = []
  /** requests that ended without a response being finished (client went away) */
  aborted = 0
  private queue: Array<Behaviour> = []
  private fallback: Behaviour = { kind: "ok" }
  healthStatus = 200
  private readonly server: Server
  private readonly sockets = new Set<Socket>()
  private readonly options: LoopbackOptions
  url = ""

  readonly name: string

  constructor(name: string, options: LoopbackOptions = {}) {
    this.name = name
    this.options = options
    this.server = createServer((req, res) => void this.handle(req, res))
    this.server.on("connection", (socket) => {
      this.sockets.add(socket)
      socket.on("close", () => this.sockets.delete(socket))
    })
  }

  static async start(name: string, options: LoopbackOptions = {}): Promise<LoopbackProvider> {
    const p = new LoopbackProvider(name, options)
    await new Promise<void>((resolve) => p.server.listen(0, "127.0.0.1", resolve))
    p.url = `http://127.0.0.1:${(p.server.address() as AddressInfo).port}`
    return p
  }

  /** behaviours for the next requests (in order), then `always` */
  next(...behaviours: Array<Behaviour>): this {
    this.queue.push(...behaviours)
    return this
  }

  always(behaviour: Behaviour): this {
    this.fallback = behaviour
    this.queue = []
    return this
  }

  /** requests to the generation endpoints (health checks excluded) */
  get calls(): Array<SeenRequest> {
    return this.requests.filter((r) => r.path !== "/health")
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  private async handle(req: IncomingMessage, res: ServerResponse) {
    const chunks: Array<Buffer> = []
    for await (const c of req) chunks.push(c as Buffer)
    const raw = Buffer.concat(chunks).toString("utf8")
    let body: any = undefined
    try {
      body = raw === "" ? undefined : JSON.parse(raw)
    } catch {
      body = raw
    }
    const url = new URL(req.url ?? "/", "http://x")
    this.requests.push({ method: req.method ?? "", path: url.pathname, headers: req.headers, body })
    res.on("close", () => {
      if (!res.writableFinished) this.aborted++
    })
    if (url.pathname === "/health") {
      res.writeHead(this.healthStatus, { "content-type": "application/json" })
      res.end(JSON.stringify(this.healthStatus < 300 ? { status: "healthy", model_loaded: true } : { detail: "Model not loaded" }))
      return
    }
    const key = (req.headers["authorization"]?.replace(/^Bearer /, "") ?? req.headers["x-goog-api-key"]) as string | undefined
    if (key !== undefined && this.options.rateLimitedKeys?.includes(key)) {
      res.writeHead(429, { "content-type": "application/json", "retry-after": this.options.retryAfter ?? "1" })
      res.end(JSON.stringify({ error: { message: "rate limited" } }))
      return
    }
    if (this.options.validKeys !== undefined && (key === undefined || !this.options.validKeys.includes(key))) {
      res.writeHead(401, { "content-type": "application/json" })
      res.end(JSON.stringify({ error: { message: "invalid api key" } }))
      return
    }
    const behaviour = this.queue.shift() ?? this.fallback
    const question = this.questionOf(url.pathname, body)
    switch (behaviour.kind) {
      case "hang":
        return // never answer; the socket is destroyed by the client or on close()
      case "status": {
        const headers: Record<string, string> = { "content-type": "application/json" }
        if (behaviour.retryAfter !== undefined) headers["retry-after"] = behaviour.retryAfter
        res.writeHead(behaviour.status, headers)
        res.end(behaviour.body ?? JSON.stringify({ error: { message: `status ${behaviour.status}` } }))
        return
      }
      case "malformed":
        res.writeHead(200, { "content-type": "application/json" })
        res.end("{\"choices\": [ {\"mess")
        return
      case "ok": {
        if (behaviour.delayMs !== undefined) await new Promise((r) => setTimeout(r, behaviour.delayMs))
        if (res.destroyed) return
        const text = behaviour.text ?? `${this.name} says: ${question}`
        if (body?.stream === true) return this.stream(url.pathname, res, [text], 0, undefined)
        res.writeHead(200, { "content-type": "application/json" })
        res.end(JSON.stringify(this.reply(url.pathname, text)))
        return
      }
      case "stream":
        return this.stream(url.pathname, res, behaviour.tokens, behaviour.delayMs ?? 0, behaviour.dropAfter)
    }
  }

  private questionOf(path: string, body: any): string {
    if (path === "/infer") return body?.question ?? ""
    if (path.endsWith("/chat/completions")) return body?.messages?.at(-1)?.content ?? ""
    if (path.includes(":generateContent") || path.includes(":streamGenerateContent")) return body?.contents?.[0]?.parts?.[0]?.text ?? ""
    if (path === "/api/generate") return body?.prompt ?? ""
    return ""
  }

  private reply(path: string, text: string): unknown {
    if (path === "/infer") return { answer: text, confidence: 0.87, model_version: `${this.name}-v1`, latency_ms: 3 }
    if (path.endsWith("/chat/completions")) {
      return {
        id: "c1",
        object: "chat.completion",
        model: `${this.name}-model`,
        choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: "stop" }],
        usage: { prompt_tokens: 21, completion_tokens: 7, total_tokens: 28 }
      }
    }
    if (path.includes(":generateContent")) {
      return {
        modelVersion: `${this.name}-gemini`,
        candidates: [{ content: { role: "model", parts: [{ text }] }, finishReason: "STOP" }],
        usageMetadata: { promptTokenCount: 30, candidatesTokenCount: 9, totalTokenCount: 39 }
      }
    }
    if (path === "/api/generate") return { model: `${this.name}-ollama`, response: text, done: true, prompt_eval_count: 12, eval_count: 5 }
    return { error: "unknown path" }
  }

  private async stream(path: string, res: ServerResponse, tokens: ReadonlyArray<string>, delayMs: number, dropAfter: number | undefined) {
    const ndjson = path === "/api/generate"
    res.writeHead(200, { "content-type": ndjson ? "application/x-ndjson" : "text/event-stream" })
    const frame = (token: string, last: boolean): string => {
      if (ndjson) return JSON.stringify({ response: token, done: last }) + "\n"
      if (path.includes(":streamGenerateContent")) return `data: ${JSON.stringify({ candidates: [{ content: { parts: [{ text: token }] } }] })}\n\n`
      return `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: token } }] })}\n\n`
    }
    for (let i = 0; i < tokens.length; i++) {
      if (dropAfter !== undefined && i === dropAfter) {
        // let the tokens already written reach the client before the connection drops
        await new Promise((r) => setTimeout(r, 50))
        res.socket?.destroy()
        return
      }
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs))
      if (res.destroyed) return
      res.write(frame(tokens[i]!, i === tokens.length - 1 && ndjson))
    }
    if (!ndjson && !path.includes(":streamGenerateContent")) res.write("data: [DONE]\n\n")
    res.end()
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Effect helpers for tests

/** A loopback provider that lives as long as the test's scope. */
export const loopback = (name: string, options: LoopbackOptions = {}) =>
  Effect.acquireRelease(
    Effect.promise(() => LoopbackProvider.start(name, options)),
    (p) => Effect.promise(() => p.close())
  )

/** Polls `condition` in real time (also under TestClock) until it holds, or dies after `timeoutMs`. */
export const waitUntil = (what: string, condition: () => boolean, timeoutMs = 5_000) =>
  Effect.gen(function*() {
    const start = Date.now()
    while (!condition()) {
      if (Date.now() - start > timeoutMs) return yield* Effect.die(new Error(`timed out waiting for ${what}`))
      yield* settleLive(5)
    }
  })

/** Lets other fibers and sockets run for `ms` of real time (a timer, so it works under TestClock too). */
export const settleLive = (ms: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, ms)))
