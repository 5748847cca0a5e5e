/**
 * The inference server: the app's `/infer` + `/health`, orchestrator probes, Prometheus `/metrics`, and the
 * OpenAI-compatible `/v1/*` endpoints, over the InferenceEngine, on Effect's Node HTTP server.
 *
 * Robustness rules, in the order a request meets them:
 * - bearer auth (when an API key is set) on everything but `/health`, `/ready`, `/live` -> 401;
 * - body size limit -> 413 (`Content-Length` checked before reading, the read itself is bounded too);
 * - JSON parse and Schema validation -> 400 naming the field (`max_length: Expected an integer, got 1.5`);
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
  SchemaIssue,
  Scope,
  Stream
} from "effect"
import { HttpIncomingMessage, HttpServer, HttpServerRequest, HttpServerResponse } from "effect/http"
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

export interface ServerOptions {
  /** default 127.0.0.1 */
  readonly host?: string
  /** default 8000; 0 picks a free port */
  readonly port?: number
  /** when set, every route but the probes needs `Authorization: Bearer <key>` */
  readonly apiKey?: Redacted.Redacted<string> | undefined
  /** default 1 MiB */
  readonly maxBodyBytes?: number
  /** default 60 s */
  readonly requestTimeoutMs?: number
  /** what to do with placeholders the context cannot fill (default "leave") */
  readonly placeholderPolicy?: PlaceholderPolicy
  /** reported as `model_version` by `/infer` (default: the model id) */
  readonly modelVersion?: string
  /** how long SIGTERM waits for in-flight requests (default 20 s) */
  readonly gracefulShutdownMs?: number
}

/** A failure already phrased for the client. */
export class ApiFailure extends Schema.TaggedError<ApiFailure>()("ApiFailure", {
  status: Schema.Int,
  message: Schema.String,
  type: Schema.String,
  param: Schema.NullOr(Schema.String),
  code: Schema.NullOr(Schema.String),
  retryAfterSeconds: Schema.optionalKey(Schema.Int)
}) {}

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

const issueFormatter = SchemaIssue.makeFormatterStandardSchemaV1()
const pathText = (path: ReadonlyArray<unknown> | undefined) =>
  (path ?? []).map((p) => typeof p === "object" && p !== null && "key" in p ? String(p.key) : String(p)).join(".")

/** Parses and validates a JSON body; the error names the field. */
const decodeBody = <S extends Schema.Decoder<unknown>>(schema: S, text: string): Result.Result<S["Type"], ApiFailure> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (e) {
    return Result.fail(failure(400, `the body is not valid JSON: ${(e as Error).message}`, "invalid_request_error", { code: "invalid_json" }))
  }
  return Result.mapError(
    Schema.decodeUnknownResult(schema)(json, { errors: "all" }),
    (error) => {
      const issues = issueFormatter(error.issue).issues
      const first = issues[0]
      const field = pathText(first?.path)
      const message = issues.map((i) => `${pathText(i.path) || "body"}: ${i.message}`).join("; ")
      return failure(400, message, "invalid_request_error", { ...(field === "" ? {} : { param: field }), code: "invalid_body" })
    }
  )
}

const sse = (data: unknown) => new TextEncoder().encode(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`)

const usageOf = (r: GenerationResult): Api.Usage => ({
  prompt_tokens: r.promptTokens,
  completion_tokens: r.completionTokens,
  total_tokens: r.promptTokens + r.completionTokens
})

interface Route {
  readonly method: "GET" | "POST"
  readonly path: string
  readonly open: boolean
  readonly handle: Effect.Effect<HttpServerResponse.HttpServerResponse, ApiFailure, HttpServerRequest.HttpServerRequest | Scope.Scope>
}

/** The HTTP app: a request in, a response out. Needs the engine and the metrics. */
export const makeApp = Effect.fnUntraced(function*(options: ServerOptions) {
  const engine = yield* InferenceEngine
  const metrics = yield* ServerMetrics
  const maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024
  const maxBodySize = ByteSize.bytes(maxBodyBytes)
  const timeoutMs = options.requestTimeoutMs ?? 60_000
  const defaultPolicy = options.placeholderPolicy ?? "leave"
  const apiKey = options.apiKey === undefined ? undefined : Redacted.value(options.apiKey)

  const readBody = <S extends Schema.Decoder<unknown>>(schema: S) =>
    Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const declared = Number(request.headers["content-length"] ?? "0")
      // built only when needed: a Schema error's constructor validates its fields, ~0.05 ms a request
      const tooLarge = () => failure(413, `the body is larger than the limit of ${maxBodyBytes} bytes`, "invalid_request_error", { code: "body_too_large" })
      if (declared > maxBodyBytes) return yield* tooLarge()
      const text = yield* request.text.pipe(
        Effect.provideService(HttpIncomingMessage.MaxBodySize, maxBodySize),
        Effect.mapError((e) =>
          e.reason._tag === "RequestParseError" && e.reason.reason === "BodyTooLarge"
            ? tooLarge()
            : failure(400, "the body could not be read", "invalid_request_error"))
      )
      return yield* Effect.fromResult(decodeBody(schema, text))
    })

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
        return HttpServerResponse.jsonUnsafe({ status: "healthy", model_loaded: true } satisfies Api.HealthResponse)
      case "Loading":
        return HttpServerResponse.jsonUnsafe({ status: "loading", model_loaded: false, detail: "Model not loaded" } satisfies Api.HealthResponse, { status: 503, headers: { "retry-after": "5" } })
      case "Failed":
        return HttpServerResponse.jsonUnsafe({ status: "failed", model_loaded: false, detail: state.error.message } satisfies Api.HealthResponse, { status: 503 })
    }
  })

  const infer = Effect.gen(function*() {
    const started = performance.now()
    const body = yield* readBody(Api.InferRequest)
    const maxLength = body.max_length ?? Api.inferDefaults.max_length
    const result = yield* run({
      model: body.model,
      prompt: { _tag: "Seed", context: contextText(body.context), question: body.question },
      maxTokens: maxLength,
      maxTotalTokens: { tokens: maxLength, field: "max_length" },
      temperature: body.temperature ?? Api.inferDefaults.temperature,
      topK: body.top_k ?? Api.inferDefaults.top_k,
      topP: body.top_p ?? Api.inferDefaults.top_p,
      seed: body.seed,
      stop: seedStops
    })
    const filled = yield* finish(result.text.trim(), body.context, body.placeholders ?? defaultPolicy)
    return HttpServerResponse.jsonUnsafe({
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
    } satisfies Api.InferResponse)
  })

  const chat = Effect.gen(function*() {
    const body = yield* readBody(Api.ChatCompletionRequest)
    const request: GenerateRequest = {
      ...sampling(body, body.max_completion_tokens ?? body.max_tokens ?? Api.openAiDefaults.chatMaxTokens),
      prompt: { _tag: "Chat", messages: body.messages, context: contextText(body.context) }
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
    return HttpServerResponse.jsonUnsafe({
      id,
      object: "chat.completion",
      created,
      model: result.model,
      choices: [{ index: 0, message: { role: "assistant", content: filled.text }, finish_reason: result.finishReason }],
      usage: usageOf(result),
      metadata: { placeholders: filled.report, confidence: result.confidence }
    } satisfies Api.ChatCompletion)
  })

  const completions = Effect.gen(function*() {
    const body = yield* readBody(Api.CompletionRequest)
    const prompt = typeof body.prompt === "string" ? body.prompt : body.prompt[0]
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
    return HttpServerResponse.jsonUnsafe({
      id, object: "text_completion", created, model: result.model,
      choices: [choice(filled.text, result.finishReason)],
      usage: usageOf(result),
      metadata: { placeholders: filled.report, confidence: result.confidence }
    } satisfies Api.Completion)
  })

  const models = Effect.gen(function*() {
    const state = yield* engine.state
    const created = now()
    const data = state._tag === "Ready"
      ? state.models.map((m) => ({ id: m.id, object: "model" as const, created, owned_by: "finetune-finance", parent: m.parent ?? null }))
      : []
    return HttpServerResponse.jsonUnsafe({ object: "list", data } satisfies Api.ModelList)
  })

  const metricsText = Effect.gen(function*() {
    const [stats, state] = yield* Effect.all([engine.stats, engine.state])
    const text = yield* metrics.render({
      queued: stats.queued,
      active: stats.active,
      adapters: state._tag === "Ready" ? state.models.filter((m) => m.adapterPath !== undefined).length : 0,
      loaded: state._tag === "Ready"
    })
    return HttpServerResponse.text(text, { contentType: "text/plain; version=0.0.4; charset=utf-8" })
  })

  const routes: ReadonlyArray<Route> = [
    { method: "POST", path: Api.paths.infer, open: false, handle: infer },
    { method: "GET", path: Api.paths.health, open: true, handle: health },
    { method: "GET", path: Api.paths.ready, open: true, handle: health },
    { method: "GET", path: Api.paths.live, open: true, handle: Effect.succeed(HttpServerResponse.jsonUnsafe({ status: "alive" })) },
    { method: "GET", path: Api.paths.metrics, open: false, handle: metricsText },
    { method: "POST", path: Api.paths.chatCompletions, open: false, handle: chat },
    { method: "POST", path: Api.paths.completions, open: false, handle: completions },
    { method: "GET", path: Api.paths.models, open: false, handle: models }
  ]

  const authorized = (request: HttpServerRequest.HttpServerRequest) => {
    if (apiKey === undefined) return true
    const header = request.headers["authorization"] ?? ""
    return header === `Bearer ${apiKey}`
  }

  return Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const started = performance.now()
    const pathname = request.url.split("?")[0]!.replace(/\/+$/, "") || "/"
    const matching = routes.filter((r) => r.path === pathname)
    const route = matching.find((r) => r.method === request.method || (request.method === "HEAD" && r.method === "GET"))
    const label = matching.length > 0 ? pathname : "unmatched"
    const handled: Effect.Effect<HttpServerResponse.HttpServerResponse, ApiFailure, HttpServerRequest.HttpServerRequest | Scope.Scope> =
      route === undefined
        ? Effect.fail(matching.length > 0
          ? failure(405, `${request.method} is not allowed on ${pathname}; use ${matching.map((r) => r.method).join(", ")}`, "invalid_request_error", { code: "method_not_allowed" })
          : failure(404, `no route ${request.method} ${pathname}`, "invalid_request_error", { code: "not_found" }))
        : !route.open && !authorized(request)
        ? Effect.fail(failure(401, "missing or wrong bearer token", "authentication_error", { code: "invalid_api_key" }))
        : route.handle
    const response = yield* handled.pipe(
      // Effect's HTTP server runs the whole request uninterruptibly (HttpEffect.toHandled) and leaves it to the
      // router to open the handler up, as HttpRouter does; without this a client that disconnects while its
      // request waits for a slot is only noticed when the slot comes free, and the request then runs anyway
      Effect.interruptible,
      Effect.catchTag("ApiFailure", (f) => Effect.succeed(failureResponse(f))),
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

/** The whole server: engine, metrics, Node HTTP listener (the engine and the HttpServer stay visible). */
export const layer = (options: ServeOptions) =>
  serverLayer(options).pipe(
    // the listener opens after the engine is built (its models keep loading in the background), so no request
    // reaches a socket that has no handler yet
    Layer.provideMerge(NodeHttpServer.layer(() => createServer({ requestTimeout: 0 }), {
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
 * `port: 0` picks a free port). Closing the scope drains and stops it.
 */
export const startServer = Effect.fn("Server.start")(function*(options: ServeOptions) {
  const context = yield* Layer.build(layer(options))
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
