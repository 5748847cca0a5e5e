/**
 * The inference server: the contract of `Api.ts` (the app's `/infer` + `/health`, orchestrator probes, Prometheus
 * `/metrics`, the OpenAI-compatible `/v1/*`, and the generated `/openapi.json`) implemented with `HttpApiBuilder`
 * over the InferenceEngine, on Effect's Node HTTP server.
 *
 * Robustness rules, in the order a request meets them:
 * - the socket: a request whose headers have not all arrived within `headersTimeoutMs` (default 20 s), or whose
 *   body has not within `bodyTimeoutMs` (60 s), gets 408 and the connection is closed (Node's own timeouts);
 * - without an API key: the Host header must name loopback (localhost, 127.0.0.1, [::1]) or the bound address
 *   (DNS rebinding) -> 403, and a POST must be `application/json` (a browser's cross-site form) -> 415;
 * - with an API key: `Authorization: Bearer <key>` (scheme in any case, key compared in constant time) on
 *   everything but `/health`, `/ready`, `/live` -> 401;
 * - unknown paths -> 404, wrong methods -> 405;
 * - body size limit -> 413 (`Content-Length` checked before reading, the read itself is bounded too);
 * - UTF-8, JSON parse and Schema validation (the contract's schemas) -> 400 naming the field
 *   (`max_length: Expected an integer, got 1.5`); HttpApi's own payload decoding is not used because it answers
 *   an empty 400;
 * - prompt byte length -> 413 naming the field, before anything is tokenized or admitted;
 * - engine admission: loading -> 503, queue full -> 429, each with `Retry-After`;
 * - per-request timeout -> 504; the generation is interrupted and its slot freed;
 * - a client that disconnects interrupts its request fiber, which interrupts the generation (a streamed
 *   generation runs in the request's scope, so the same holds after the headers went out);
 * - failures never carry stack traces: clients get a message, the log gets the cause.
 * SIGTERM (through `NodeRuntime.runMain`) closes the listener and lets in-flight requests finish
 * (`gracefulShutdownMs`) before the engine unloads.
 */
import { NodeHttpServer } from "@effect/platform-node"
import {
  ByteSize,
  Cause,
  Context,
  Deferred,
  Effect,
  Exit,
  Layer,
  Queue,
  Redacted,
  Result,
  Schema,
  Scope,
  Stream
} from "effect"
import { HttpIncomingMessage, HttpRouter, HttpServer, HttpServerRequest, HttpServerResponse } from "effect/http"
import { HttpApi, HttpApiBuilder } from "effect/http-api"
import { createHash, timingSafeEqual } from "node:crypto"
import { createServer } from "node:http"
import * as Api from "./Api.ts"
import type { PlaceholderPolicy } from "./Api.ts"
import {
  type EngineOptions,
  type GenerateError,
  type GenerateRequest,
  type GenerationResult,
  InferenceEngine,
  type ModelInfo
} from "./InferenceEngine.ts"
import { ServerMetrics } from "./Metrics.ts"
import { seedStops } from "./Prompt.ts"
import { contextText } from "../Dataset/PromptFormat.ts"
import { placeholderValuesOf, rehydrate, StreamingRehydrator } from "./Rehydrate.ts"
import { describeCause, type ErrorKind, fieldIssues, issueField } from "../Shared/Errors.ts"

export interface ServerOptions {
  /** default 127.0.0.1 */
  readonly host?: string
  /** default 8000; 0 picks a free port */
  readonly port?: number
  /** when set, every route but the probes needs `Authorization: Bearer <key>` */
  readonly apiKey?: Redacted.Redacted<string> | undefined
  /** default 1 MiB */
  readonly maxBodyBytes?: number
  /**
   * the most UTF-8 bytes a prompt field (question + context, messages, prompt) may have; checked before the prompt
   * is tokenized (default: `promptBytesPerToken` per token of the engine's context)
   */
  readonly maxPromptBytes?: number
  /** default 60 s */
  readonly requestTimeoutMs?: number
  /** a request's headers must all arrive within this, else 408 and the socket is closed (default 20 s) */
  readonly headersTimeoutMs?: number
  /** the whole request (headers and body) must arrive within this, else 408 (default 60 s) */
  readonly bodyTimeoutMs?: number
  /** what to do with placeholders the context cannot fill (default "leave") */
  readonly placeholderPolicy?: PlaceholderPolicy
  /** reported as `model_version` by `/infer` (default: the model id) */
  readonly modelVersion?: string
  /** how long SIGTERM waits for in-flight requests (default 20 s) */
  readonly gracefulShutdownMs?: number
}

/**
 * A prompt whose UTF-8 text is longer than this many bytes per context token cannot fit the context (real text
 * averages about 4 bytes a token), so it is refused without tokenizing it.
 */
export const promptBytesPerToken = 32

/** The listener could not start: a port out of range (input), or a port in use / an address not here (unavailable). */
export class ListenError extends Schema.TaggedError<ListenError>()("ListenError", {
  host: Schema.String,
  port: Schema.Number,
  reason: Schema.Literals(["PortOutOfRange", "PortInUse", "Other"]),
  message: Schema.String
}) {
  get kind(): ErrorKind {
    return this.reason === "PortOutOfRange" ? "input" : "unavailable"
  }
}

/** One line for what stopped the listener (Node's listen error sits in the ServeError's cause). */
const listenError = (host: string, port: number, cause: unknown): ListenError => {
  const code = typeof cause === "object" && cause !== null && "code" in cause ? String(cause.code) : undefined
  return code === "EADDRINUSE"
    ? new ListenError({ host, port, reason: "PortInUse", message: `port ${port} is in use (EADDRINUSE): stop what listens there or pick another --port` })
    : new ListenError({ host, port, reason: "Other", message: `could not listen on ${host}:${port}: ${describeCause(cause)}${code === undefined || describeCause(cause).includes(code) ? "" : ` (${code})`}` })
}

/** A failure already phrased for the client. */
export class ApiFailure extends Schema.TaggedError<ApiFailure>()("ApiFailure", {
  status: Schema.Int,
  message: Schema.String,
  type: Schema.String,
  param: Schema.NullOr(Schema.String),
  code: Schema.NullOr(Schema.String),
  retryAfterSeconds: Schema.optionalKey(Schema.Int)
}) {
  /** 4xx: the request is wrong; 503/429: try later; other 5xx: the server failed */
  get kind(): ErrorKind {
    return this.status === 503 || this.status === 429 ? "unavailable" : this.status < 500 ? "input" : "failure"
  }
}

const failure = (status: number, message: string, type: string, extra: { param?: string; code?: string; retryAfterSeconds?: number } = {}) =>
  new ApiFailure({
    status,
    message,
    type,
    param: extra.param ?? null,
    code: extra.code ?? null,
    ...(extra.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: extra.retryAfterSeconds })
  })

const fromEngineError = (error: GenerateError): ApiFailure => {
  switch (error._tag) {
    case "EngineNotReady":
      return failure(503, error.message, "unavailable", { code: error.state === "loading" ? "model_loading" : "model_unavailable", retryAfterSeconds: 5 })
    case "EngineOverloaded":
      return failure(429, error.message, "rate_limit", { code: "queue_full", retryAfterSeconds: error.retryAfterSeconds })
    case "UnknownModel":
      return failure(404, error.message, "invalid_request_error", { param: "model", code: "model_not_found" })
    case "PromptTooLong":
      return failure(400, error.message, "invalid_request_error", { param: error.field, code: "context_length_exceeded" })
    case "GenerationFailed":
      return failure(500, "generation failed", "server_error")
  }
}

const errorBody = (f: ApiFailure): Api.ErrorBody => ({
  error: { message: f.message, type: f.type, param: f.param, code: f.code },
  detail: f.message
})

const failureResponse = (f: ApiFailure) =>
  HttpServerResponse.jsonUnsafe(errorBody(f), {
    status: f.status,
    headers: {
      ...(f.retryAfterSeconds === undefined ? {} : { "retry-after": String(f.retryAfterSeconds) }),
      ...(f.status === 401 ? { "www-authenticate": "Bearer" } : {})
    }
  })

/** Parses and validates a JSON body; the error names the field. */
const decodeBody = <S extends Schema.Decoder<unknown>>(schema: S, text: string): Result.Result<S["Type"], ApiFailure> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (e) {
    // V8 says "Maximum call stack size exceeded" for JSON nested past its parser's stack: still the client's body
    const reason = e instanceof RangeError ? "it nests too deeply" : (e as Error).message
    return Result.fail(failure(400, `the body is not valid JSON: ${reason}`, "invalid_request_error", { code: "invalid_json" }))
  }
  return Result.mapError(
    Schema.decodeUnknownResult(schema)(json, { errors: "all" }),
    (error) => {
      const issues = fieldIssues(error)
      const field = issues[0]!.field
      const message = issues.map((i) => issueField(i, "body")).join("; ")
      return failure(400, message, "invalid_request_error", { ...(field === "" ? {} : { param: field }), code: "invalid_body" })
    }
  )
}

const utf8 = new TextDecoder("utf-8", { fatal: true })

const sse = (data: unknown) => new TextEncoder().encode(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`)

const usageOf = (r: GenerationResult): Api.Usage => ({
  prompt_tokens: r.promptTokens,
  completion_tokens: r.completionTokens,
  total_tokens: r.promptTokens + r.completionTokens
})

// ---------------------------------------------------------------------------------------------------------------
// Auth and request guards

const digest = (text: string) => createHash("sha256").update(text, "utf8").digest()

/**
 * `Authorization: Bearer <key>` with the scheme in any case (RFC 9110 §11.1). The keys are compared as SHA-256
 * digests with `timingSafeEqual`, so neither the key's length nor its first wrong byte shows in the timing.
 */
export const bearerMatches = (header: string | undefined, key: Redacted.Redacted<string>): boolean => {
  const match = /^\s*bearer\s+(\S+)\s*$/i.exec(header ?? "")
  return timingSafeEqual(digest(match?.[1] ?? ""), digest(Redacted.value(key))) && match !== null
}

const wildcardHosts: ReadonlySet<string> = new Set(["0.0.0.0", "::", "[::]", ""])
const loopbackHosts: ReadonlySet<string> = new Set(["localhost", "127.0.0.1", "::1", "[::1]"])

/** Whether `host` (a bind address) is reachable from this machine only. */
export const isLoopbackHost = (host: string): boolean => loopbackHosts.has(host.toLowerCase()) || /^127\./.test(host)

/** The warning for a server that anyone on the network can use, or undefined. */
export const bindWarning = (host: string, apiKey: Redacted.Redacted<string> | undefined): string | undefined =>
  apiKey !== undefined || isLoopbackHost(host)
    ? undefined
    : `listening on ${host} without an API key: anyone who can reach this address can use the server; set --api-key (or SERVE_API_KEY)`

/** The host name of a Host header: `[::1]:8000` -> `[::1]`, `LocalHost:80` -> `localhost`. */
const hostName = (header: string): string => {
  const h = header.trim().toLowerCase()
  if (h.startsWith("[")) return h.slice(0, h.indexOf("]") + 1)
  const colon = h.indexOf(":")
  return colon < 0 ? h : h.slice(0, colon)
}

/**
 * The Host names a server without an API key answers (DNS rebinding: a page on evil.example that resolves its
 * name to 127.0.0.1 sends `Host: evil.example`): loopback, and the bound address when it is a specific one.
 * Undefined (no check) for a wildcard bind, which `bindWarning` already reports.
 */
const allowedHostsOf = (host: string): ReadonlySet<string> | undefined => {
  const bound = host.toLowerCase()
  if (wildcardHosts.has(bound)) return undefined
  return new Set([...loopbackHosts, bound.includes(":") && !bound.startsWith("[") ? `[${bound}]` : bound])
}

const mediaType = (header: string | undefined) => (header ?? "").split(";")[0]!.trim().toLowerCase()
const isJsonMediaType = (type: string) => type === "application/json" || /^application\/[\w.+-]*\+json$/.test(type)

/** The method + path table of the contract, for 404 and 405 (with the methods a path takes). */
const routeTable = (() => {
  const table = new Map<string, Array<string>>()
  HttpApi.reflect(Api.ServeApi, {
    onGroup() {},
    onEndpoint({ endpoint }) {
      table.set(endpoint.path, [...(table.get(endpoint.path) ?? []), endpoint.method])
    }
  })
  table.set(Api.paths.openapi, ["GET"])
  return table
})()

// ---------------------------------------------------------------------------------------------------------------
// The app

type Handled = Effect.Effect<HttpServerResponse.HttpServerResponse, never, HttpServerRequest.HttpServerRequest | Scope.Scope>

/** Turns a handler's `ApiFailure` into its response (status, `Retry-After`, `WWW-Authenticate`). */
const respond = <A, R>(effect: Effect.Effect<A, ApiFailure, R>): Effect.Effect<A | HttpServerResponse.HttpServerResponse, never, R> =>
  Effect.catchTag(effect, "ApiFailure", (f) => Effect.succeed(failureResponse(f)))

/** The HTTP app: a request in, a response out. Needs the engine and the metrics; its routes live in `scope`. */
export const makeApp = Effect.fnUntraced(function*(options: ServerOptions) {
  const engine = yield* InferenceEngine
  const metrics = yield* ServerMetrics
  const maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024
  const maxBodySize = ByteSize.bytes(maxBodyBytes)
  const maxPromptBytes = options.maxPromptBytes ?? 2048 * promptBytesPerToken
  const timeoutMs = options.requestTimeoutMs ?? 60_000
  const defaultPolicy = options.placeholderPolicy ?? "leave"
  const apiKey = options.apiKey
  const allowedHosts = apiKey === undefined ? allowedHostsOf(options.host ?? "127.0.0.1") : undefined

  const readBody = <S extends Schema.Decoder<unknown>>(schema: S) =>
    Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const declared = Number(request.headers["content-length"] ?? "0")
      // built only when needed: a Schema error's constructor validates its fields, ~0.05 ms a request
      const tooLarge = () => failure(413, `the body is larger than the limit of ${maxBodyBytes} bytes`, "invalid_request_error", { code: "body_too_large" })
      if (declared > maxBodyBytes) return yield* tooLarge()
      const bytes = yield* request.arrayBuffer.pipe(
        Effect.provideService(HttpIncomingMessage.MaxBodySize, maxBodySize),
        Effect.mapError((e) =>
          e.reason._tag === "RequestParseError" && e.reason.reason === "BodyTooLarge"
            ? tooLarge()
            : failure(400, "the body could not be read", "invalid_request_error"))
      )
      let text: string
      try {
        text = utf8.decode(bytes)
      } catch {
        return yield* failure(400, "the body is not valid UTF-8", "invalid_request_error", { code: "invalid_utf8" })
      }
      return yield* Effect.fromResult(decodeBody(schema, text))
    })

  /** Refuses a prompt field too long to fit the context, before it is tokenized or admitted. */
  const checkPromptBytes = (field: string, ...texts: ReadonlyArray<string>) => {
    let bytes = 0
    for (const text of texts) bytes += Buffer.byteLength(text, "utf8")
    return bytes <= maxPromptBytes
      ? Effect.void
      : Effect.fail(failure(
        413,
        `${field}: the prompt is ${bytes} bytes; this server takes at most ${maxPromptBytes} (it could not fit the context)`,
        "invalid_request_error",
        { param: field, code: "prompt_too_large" }
      ))
  }

  /** Runs a generation with the request timeout; interruption (timeout, disconnect) frees the slot. */
  const run = (request: GenerateRequest, hooks?: Parameters<typeof engine.generate>[1]) =>
    engine.generate(request, hooks).pipe(
      Effect.mapError(fromEngineError),
      Effect.timeoutOrElse({
        duration: timeoutMs,
        orElse: () => Effect.fail(failure(504, `the generation did not finish within the request timeout of ${timeoutMs} ms`, "timeout", { code: "timeout" }))
      }),
      Effect.tap((r) => metrics.recordGeneration(r.model, r.promptTokens, r.completionTokens, r.durationMs / 1000))
    )

  const finish = (text: string, context: Api.RequestContext | undefined, policy: PlaceholderPolicy) => {
    const r = rehydrate(text, placeholderValuesOf(context), policy)
    if (policy === "refuse" && r.report.unfilled.length > 0) {
      return Effect.fail(failure(422, `the answer needs live values the request's context does not hold: ${r.report.unfilled.join(", ")}`, "invalid_request_error", { code: "unfilled_placeholders" }))
    }
    return Effect.succeed(r)
  }

  /**
   * A streamed generation: the engine runs in a fiber of the request's scope, feeding SSE frames to a queue.
   * Headers go out only once the request is admitted, so admission errors keep their status codes.
   */
  const streamed = (
    request: GenerateRequest,
    context: Api.RequestContext | undefined,
    policy: PlaceholderPolicy,
    frames: {
      readonly start: () => ReadonlyArray<unknown>
      readonly delta: (text: string) => unknown
      readonly end: (result: GenerationResult, report: Api.PlaceholderReport) => ReadonlyArray<unknown>
    }
  ) =>
    Effect.gen(function*() {
      const queue = yield* Queue.unbounded<Uint8Array, Cause.Done>()
      const admitted = yield* Deferred.make<void, ApiFailure>()
      const rehydrator = new StreamingRehydrator(placeholderValuesOf(context), policy)
      const send = (text: string) => text === "" ? Effect.void : Queue.offer(queue, sse(frames.delta(text))).pipe(Effect.asVoid)
      // called by the decode loop for each final piece of text (the queue is unbounded, so offering never waits)
      const sendNow = (text: string) => {
        const filled = rehydrator.push(text)
        if (filled !== "") Queue.offerUnsafe(queue, sse(frames.delta(filled)))
      }
      yield* run(request, {
        onAdmitted: Effect.gen(function*() {
          for (const frame of frames.start()) yield* Queue.offer(queue, sse(frame))
          yield* Deferred.succeed(admitted, undefined)
        }),
        onText: sendNow
      }).pipe(
        Effect.matchEffect({
          onSuccess: (result) =>
            Effect.gen(function*() {
              yield* send(rehydrator.flush())
              const report = rehydrator.report
              if (policy === "refuse" && report.unfilled.length > 0) {
                yield* Queue.offer(queue, sse(errorBody(failure(422, `the answer needs live values the request's context does not hold: ${report.unfilled.join(", ")}`, "invalid_request_error", { code: "unfilled_placeholders" }))))
              } else {
                for (const frame of frames.end(result, report)) yield* Queue.offer(queue, sse(frame))
              }
            }),
          onFailure: (f) =>
            Deferred.fail(admitted, f).pipe(
              // after the headers, an error can only be an event in the stream
              Effect.flatMap((first) => first ? Effect.void : Queue.offer(queue, sse(errorBody(f))).pipe(Effect.asVoid))
            )
        }),
        Effect.andThen(Queue.offer(queue, sse(Api.sseDone))),
        Effect.ensuring(Queue.end(queue)),
        Effect.forkScoped
      )
      yield* Deferred.await(admitted)
      return HttpServerResponse.stream(Stream.fromQueue(queue), {
        contentType: "text/event-stream",
        headers: { "cache-control": "no-cache", "x-accel-buffering": "no" }
      })
    })

  const sampling = (body: Api.ChatCompletionRequest | Api.CompletionRequest, maxTokens: number) => ({
    model: body.model,
    maxTokens,
    temperature: body.temperature ?? Api.openAiDefaults.temperature,
    topK: body.top_k ?? Api.openAiDefaults.top_k,
    topP: body.top_p ?? Api.openAiDefaults.top_p,
    seed: body.seed ?? undefined,
    stop: body.stop === undefined || body.stop === null ? [] : typeof body.stop === "string" ? [body.stop] : body.stop
  })

  const now = () => Math.floor(Date.now() / 1000)
  let counter = 0
  const newId = (prefix: string) => `${prefix}-${Date.now().toString(36)}${(counter++).toString(36)}`

  const health = Effect.gen(function*() {
    const state = yield* engine.state
    switch (state._tag) {
      case "Ready":
        return { status: "healthy", model_loaded: true } satisfies Api.HealthResponse
      case "Loading":
        return HttpServerResponse.jsonUnsafe({ status: "loading", model_loaded: false, detail: "Model not loaded" } satisfies Api.HealthResponse, { status: 503, headers: { "retry-after": "5" } })
      case "Failed":
        return HttpServerResponse.jsonUnsafe({ status: "failed", model_loaded: false, detail: state.error.message } satisfies Api.HealthResponse, { status: 503 })
    }
  })

  const infer = Effect.gen(function*() {
    const started = performance.now()
    const body = yield* readBody(Api.InferRequest)
    const context = contextText(body.context)
    yield* checkPromptBytes("question", body.question, context)
    const maxLength = body.max_length ?? Api.inferDefaults.max_length
    const result = yield* run({
      model: body.model,
      prompt: { _tag: "Seed", context, question: body.question },
      maxTokens: maxLength,
      maxTotalTokens: { tokens: maxLength, field: "max_length" },
      temperature: body.temperature ?? Api.inferDefaults.temperature,
      topK: body.top_k ?? Api.inferDefaults.top_k,
      topP: body.top_p ?? Api.inferDefaults.top_p,
      seed: body.seed,
      stop: seedStops
    })
    const filled = yield* finish(result.text.trim(), body.context, body.placeholders ?? defaultPolicy)
    return {
      answer: filled.text,
      confidence: result.confidence,
      model_version: options.modelVersion ?? result.model,
      latency_ms: Math.round((performance.now() - started) * 100) / 100,
      metadata: {
        model: result.model,
        prompt_tokens: result.promptTokens,
        completion_tokens: result.completionTokens,
        finish_reason: result.finishReason,
        raw_answer: result.text,
        placeholders: filled.report
      }
    } satisfies Api.InferResponse
  })

  const messageText = (m: Api.ChatMessage) => typeof m.content === "string" ? m.content : m.content.map((p) => p.text).join("")

  const chat = Effect.gen(function*() {
    const body = yield* readBody(Api.ChatCompletionRequest)
    const context = contextText(body.context)
    yield* checkPromptBytes("messages", context, ...body.messages.map(messageText))
    const request: GenerateRequest = {
      ...sampling(body, body.max_completion_tokens ?? body.max_tokens ?? Api.openAiDefaults.chatMaxTokens),
      prompt: { _tag: "Chat", messages: body.messages, context }
    }
    const id = newId("chatcmpl")
    const created = now()
    const modelName = (r: GenerationResult | undefined) => r?.model ?? body.model ?? ""
    if (body.stream === true) {
      const includeUsage = body.stream_options?.include_usage === true
      const chunk = (delta: Api.ChatCompletionChunk["choices"][number]["delta"], finish: Api.FinishReason | null, model: string): Api.ChatCompletionChunk =>
        ({ id, object: "chat.completion.chunk", created, model, choices: [{ index: 0, delta, finish_reason: finish }] })
      return yield* streamed(request, body.context, body.placeholders ?? defaultPolicy, {
        start: () => [chunk({ role: "assistant", content: "" }, null, modelName(undefined))],
        delta: (text) => chunk({ content: text }, null, modelName(undefined)),
        end: (r, report) => [
          { ...chunk({}, r.finishReason, r.model), usage: usageOf(r), metadata: { placeholders: report, confidence: r.confidence } },
          ...(includeUsage ? [{ id, object: "chat.completion.chunk", created, model: r.model, choices: [], usage: usageOf(r) }] : [])
        ]
      })
    }
    const result = yield* run(request)
    const filled = yield* finish(result.text, body.context, body.placeholders ?? defaultPolicy)
    return {
      id,
      object: "chat.completion",
      created,
      model: result.model,
      choices: [{ index: 0, message: { role: "assistant", content: filled.text }, finish_reason: result.finishReason }],
      usage: usageOf(result),
      metadata: { placeholders: filled.report, confidence: result.confidence }
    } satisfies Api.ChatCompletion
  })

  const completions = Effect.gen(function*() {
    const body = yield* readBody(Api.CompletionRequest)
    const prompt = typeof body.prompt === "string" ? body.prompt : body.prompt[0]
    yield* checkPromptBytes("prompt", prompt)
    const request: GenerateRequest = {
      ...sampling(body, body.max_tokens ?? Api.openAiDefaults.completionMaxTokens),
      prompt: { _tag: "Raw", text: prompt }
    }
    const id = newId("cmpl")
    const created = now()
    const choice = (text: string, finish: Api.FinishReason | null) => ({ index: 0, text, finish_reason: finish, logprobs: null })
    if (body.stream === true) {
      return yield* streamed(request, body.context, body.placeholders ?? defaultPolicy, {
        start: () => [],
        delta: (text): Api.Completion => ({ id, object: "text_completion", created, model: body.model ?? "", choices: [choice(text, null)] }),
        end: (r, report): ReadonlyArray<Api.Completion> => [{
          id, object: "text_completion", created, model: r.model, choices: [choice("", r.finishReason)],
          usage: usageOf(r), metadata: { placeholders: report, confidence: r.confidence }
        }]
      })
    }
    const result = yield* run(request)
    const filled = yield* finish(result.text, body.context, body.placeholders ?? defaultPolicy)
    return {
      id, object: "text_completion", created, model: result.model,
      choices: [choice(filled.text, result.finishReason)],
      usage: usageOf(result),
      metadata: { placeholders: filled.report, confidence: result.confidence }
    } satisfies Api.Completion
  })

  const models = Effect.gen(function*() {
    const state = yield* engine.state
    const created = now()
    const data = state._tag === "Ready"
      ? state.models.map((m) => ({ id: m.id, object: "model" as const, created, owned_by: "finetune-finance", parent: m.parent ?? null }))
      : []
    return { object: "list", data } satisfies Api.ModelList
  })

  const metricsText = Effect.gen(function*() {
    const [stats, state] = yield* Effect.all([engine.stats, engine.state])
    const text = yield* metrics.render({
      queued: stats.queued,
      active: stats.active,
      adapters: state._tag === "Ready" ? state.models.filter((m) => m.adapterPath !== undefined).length : 0,
      loaded: state._tag === "Ready"
    })
    // set here, not by the schema's encoder: Prometheus reads the version parameter
    return HttpServerResponse.text(text, { contentType: "text/plain; version=0.0.4; charset=utf-8" })
  })

  // The POST handlers are raw: they read and validate the body with the contract's schemas themselves, so a bad
  // body gets a 400 that names the field (HttpApi's own decoding answers an empty 400).
  const appHandlers = HttpApiBuilder.group(Api.ServeApi, "app", (h) =>
    h.handleRaw("infer", () => respond(infer))
      .handle("health", () => health)
      .handle("ready", () => health)
      .handle("live", () => Effect.succeed({ status: "alive" as const })))
  const openAiHandlers = HttpApiBuilder.group(Api.ServeApi, "openai", (h) =>
    h.handleRaw("chatCompletions", () => respond(chat))
      .handleRaw("completions", () => respond(completions))
      .handle("models", () => models))
  const opsHandlers = HttpApiBuilder.group(Api.ServeApi, "ops", (h) => h.handle("metrics", () => metricsText))

  const router = yield* HttpRouter.toHttpEffect(
    HttpApiBuilder.layer(Api.ServeApi, { openapiPath: Api.paths.openapi }).pipe(
      Layer.provide([appHandlers, openAiHandlers, opsHandlers]),
      Layer.provide(HttpServer.layerServices)
    )
  ).pipe(Effect.provideService(HttpRouter.RouterConfig, { ignoreTrailingSlash: true }))

  /** What a request fails before it reaches its handler, if anything. */
  const refusal = (request: HttpServerRequest.HttpServerRequest, pathname: string): ApiFailure | undefined => {
    const methods = routeTable.get(pathname)
    if (methods === undefined) return failure(404, `no route ${request.method} ${pathname}`, "invalid_request_error", { code: "not_found" })
    if (!methods.includes(request.method) && !(request.method === "HEAD" && methods.includes("GET"))) {
      return failure(405, `${request.method} is not allowed on ${pathname}; use ${methods.join(", ")}`, "invalid_request_error", { code: "method_not_allowed" })
    }
    if (apiKey !== undefined) {
      return Api.openPaths.has(pathname) || bearerMatches(request.headers["authorization"], apiKey)
        ? undefined
        : failure(401, "missing or wrong bearer token", "authentication_error", { code: "invalid_api_key" })
    }
    const host = request.headers["host"]
    if (allowedHosts !== undefined && host !== undefined && !allowedHosts.has(hostName(host))) {
      return failure(403, `Host ${JSON.stringify(host)} is not served: without an API key this server answers only ${[...allowedHosts].join(", ")} (set --api-key to serve other names)`, "permission_error", { code: "host_not_allowed" })
    }
    if (request.method === "POST" && !isJsonMediaType(mediaType(request.headers["content-type"]))) {
      return failure(415, `a POST body must be sent as application/json (got ${JSON.stringify(request.headers["content-type"] ?? "no Content-Type")})`, "invalid_request_error", { code: "unsupported_media_type" })
    }
    return undefined
  }

  return Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const started = performance.now()
    const pathname = request.url.split("?")[0]!.replace(/\/+$/, "") || "/"
    const refused = refusal(request, pathname)
    const label = routeTable.has(pathname) ? pathname : "unmatched"
    const handled: Handled = refused === undefined
      ? router.pipe(Effect.catchTag("HttpServerError", (e) =>
        // the contract's table and the router agree, so this is only a path the router reads differently
        e.reason._tag === "RouteNotFound"
          ? Effect.succeed(failureResponse(failure(404, `no route ${request.method} ${pathname}`, "invalid_request_error", { code: "not_found" })))
          : Effect.die(e))) as Handled
      : Effect.succeed(failureResponse(refused))
    const response = yield* handled.pipe(
      // Effect's HTTP server runs the whole request uninterruptibly (HttpEffect.toHandled) and leaves it to the
      // router to open the handler up; opened here too, so the guards and the metrics see a disconnect as well
      Effect.interruptible,
      // a defect is logged with its cause; the client only learns that it happened
      Effect.catchCause((cause) =>
        Cause.hasInterruptsOnly(cause)
          ? Effect.failCause(cause)
          : Effect.logError("request failed", cause).pipe(
            Effect.as(failureResponse(failure(500, "internal server error", "server_error")))
          )),
      Effect.onExit((exit) =>
        Exit.isSuccess(exit) && exit.value.body._tag !== "Stream"
          ? metrics.recordRequest(label, exit.value.status, (performance.now() - started) / 1000)
          // a disconnect before the reply: nginx's "client closed request"
          : Exit.isFailure(exit) ? metrics.recordRequest(label, 499, (performance.now() - started) / 1000) : Effect.void)
    )
    if (response.body._tag !== "Stream") return response
    // streamed replies are counted when their last byte is written (or the client leaves)
    const body = response.body
    return HttpServerResponse.stream(
      body.stream.pipe(Stream.onExit((exit) =>
        metrics.recordRequest(label, Exit.isSuccess(exit) ? response.status : 499, (performance.now() - started) / 1000))),
      { status: response.status, headers: response.headers, ...(body.contentType === undefined ? {} : { contentType: body.contentType }) }
    )
  })
})

/** Serving as a layer: the HTTP server on `host:port` with the engine and metrics it needs. */
export const serverLayer = (options: ServerOptions) =>
  Layer.unwrap(Effect.gen(function*() {
    const app = yield* makeApp(options)
    return HttpServer.serve(app)
  }))

export interface ServeOptions extends ServerOptions {
  readonly engine: EngineOptions
}

/**
 * Node's listener. `requestTimeout: 0` would also turn `headersTimeout` off, so a client that sends half a header
 * and stalls would hold its socket forever: both are set, and checked every second (Node's default is 30 s).
 * They bound receiving the request only; a long generation or stream is bounded by `requestTimeoutMs`.
 */
const nodeServer = (options: ServerOptions) => () => {
  const headersTimeout = options.headersTimeoutMs ?? 20_000
  return createServer({
    headersTimeout,
    requestTimeout: Math.max(options.bodyTimeoutMs ?? 60_000, headersTimeout),
    connectionsCheckingInterval: Math.min(1_000, headersTimeout)
  })
}

/** The whole server: engine, metrics, Node HTTP listener (the engine and the HttpServer stay visible). */
export const layer = (options: ServeOptions) =>
  serverLayer({
    ...options,
    maxPromptBytes: options.maxPromptBytes ?? (options.engine.contextSize ?? 2048) * promptBytesPerToken
  }).pipe(
    // the listener opens after the engine is built (its models keep loading in the background), so no request
    // reaches a socket that has no handler yet
    Layer.provideMerge(NodeHttpServer.layer(nodeServer(options), {
      host: options.host ?? "127.0.0.1",
      port: options.port ?? 8000,
      gracefulShutdownTimeout: options.gracefulShutdownMs ?? 20_000
    })),
    Layer.provideMerge(Layer.mergeAll(InferenceEngine.layer(options.engine), ServerMetrics.layer))
  )

export interface RunningServer {
  /** e.g. `http://127.0.0.1:8000` */
  readonly url: string
  readonly port: number
  readonly models: ReadonlyArray<ModelInfo>
}

/**
 * Starts the server in the current scope and waits until its models are loaded (the pipeline's entry point:
 * `port: 0` picks a free port). Closing the scope drains and stops it. A non-loopback bind without an API key is
 * logged as a warning.
 */
export const startServer = Effect.fn("Server.start")(function*(options: ServeOptions) {
  const bindHost = options.host ?? "127.0.0.1"
  const bindPort = options.port ?? 8000
  // Node throws a RangeError from listen() for these; say it as one line instead
  if (!Number.isInteger(bindPort) || bindPort < 0 || bindPort > 65535) {
    return yield* new ListenError({ host: bindHost, port: bindPort, reason: "PortOutOfRange", message: `port ${bindPort} is out of range: use 0-65535 (0 picks a free port)` })
  }
  const warning = bindWarning(bindHost, options.apiKey)
  if (warning !== undefined) yield* Effect.logWarning(warning)
  const context = yield* Layer.build(layer(options)).pipe(
    Effect.catchTag("ServeError", (e) => Effect.fail(listenError(bindHost, bindPort, e.cause)))
  )
  const server = Context.get(context, HttpServer.HttpServer)
  const models = yield* Context.get(context, InferenceEngine).awaitReady
  const address = server.address
  const port = "port" in address ? address.port : 0
  // a wildcard listener is reached through loopback
  const host = options.host === undefined || options.host === "0.0.0.0" || options.host === "::" ? "127.0.0.1" : options.host
  return { url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`, port, models } satisfies RunningServer
})

/** The same for Promise code: resolves once the models are loaded; `close()` drains and stops. */
export const launchServer = async (options: ServeOptions): Promise<RunningServer & { readonly close: () => Promise<void> }> => {
  const scope = Effect.runSync(Scope.make())
  const exit = await Effect.runPromiseExit(startServer(options).pipe(Scope.provide(scope)))
  if (Exit.isFailure(exit)) {
    await Effect.runPromise(Scope.close(scope, exit))
    throw new Error(Cause.pretty(exit.cause))
  }
  return { ...exit.value, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}
