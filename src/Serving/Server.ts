/**
 * The inference server: the contract of `Api/Api.ts` (the app's `/infer` + `/health`, orchestrator probes, Prometheus
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
import { Cause, Context, Effect, Exit, Layer, Redacted, Schema, Scope, Stream } from "effect"
import { HttpRouter, HttpServer, HttpServerRequest, HttpServerResponse } from "effect/http"
import { HttpApiBuilder } from "effect/http-api"
import { createServer } from "node:http"
import * as Api from "../Api/Api.ts"
import type { PlaceholderPolicy } from "../Api/Api.ts"
import { failure, failureResponse } from "./ApiFailure.ts"
import { appHandlers, opsHandlers } from "./AppRoutes.ts"
import { type EngineOptions, InferenceEngine, type ModelInfo } from "./InferenceEngine.ts"
import { ServerMetrics } from "./Metrics.ts"
import { openAiHandlers } from "./OpenAiRoutes.ts"
import { bindWarning, makeRefusal, notFound, routeTable } from "./RequestGuards.ts"
import { makeRequestKit, type RequestKit } from "./RequestKit.ts"
import { describeCause, type ErrorKind } from "../Shared/Errors.ts"

export { ApiFailure } from "./ApiFailure.ts"
export { bearerMatches, bindWarning, isLoopbackHost } from "./RequestGuards.ts"

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

// ---------------------------------------------------------------------------------------------------------------
// The app

type Handled = Effect.Effect<HttpServerResponse.HttpServerResponse, never, HttpServerRequest.HttpServerRequest | Scope.Scope>

/** The contract's routes (AppRoutes, OpenAiRoutes) as one HTTP effect, with the generated `/openapi.json`. */
const makeRouter = (kit: RequestKit, options: ServerOptions) =>
  HttpRouter.toHttpEffect(
    HttpApiBuilder.layer(Api.ServeApi, { openapiPath: Api.paths.openapi }).pipe(
      Layer.provide([appHandlers(kit, options), openAiHandlers(kit), opsHandlers(kit)]),
      Layer.provide(HttpServer.layerServices)
    )
  ).pipe(Effect.provideService(HttpRouter.RouterConfig, { ignoreTrailingSlash: true }))

/** Streamed replies are counted when their last byte is written (or the client leaves). */
const countedStream = (
  response: HttpServerResponse.HttpServerResponse,
  record: (status: number) => Effect.Effect<void>
): HttpServerResponse.HttpServerResponse => {
  const body = response.body
  if (body._tag !== "Stream") return response
  return HttpServerResponse.stream(
    body.stream.pipe(Stream.onExit((exit) => record(Exit.isSuccess(exit) ? response.status : 499))),
    { status: response.status, headers: response.headers, ...(body.contentType === undefined ? {} : { contentType: body.contentType }) }
  )
}

/** The HTTP app: a request in, a response out. Needs the engine and the metrics; its routes live in `scope`. */
export const makeApp = Effect.fnUntraced(function*(options: ServerOptions) {
  const metrics = yield* ServerMetrics
  const kit = yield* makeRequestKit({
    maxBodyBytes: options.maxBodyBytes ?? 1024 * 1024,
    maxPromptBytes: options.maxPromptBytes ?? 2048 * promptBytesPerToken,
    requestTimeoutMs: options.requestTimeoutMs ?? 60_000,
    placeholderPolicy: options.placeholderPolicy ?? "leave"
  })
  const router = yield* makeRouter(kit, options)
  const refusal = makeRefusal(options.host ?? "127.0.0.1", options.apiKey)

  return Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const started = performance.now()
    const pathname = request.url.split("?")[0]!.replace(/\/+$/, "") || "/"
    const refused = refusal(request, pathname)
    const label = routeTable.has(pathname) ? pathname : "unmatched"
    const record = (status: number) => metrics.recordRequest(label, status, (performance.now() - started) / 1000)
    const handled: Handled = refused === undefined
      ? router.pipe(Effect.catchTag("HttpServerError", (e) =>
        // the contract's table and the router agree, so this is only a path the router reads differently
        e.reason._tag === "RouteNotFound" ? Effect.succeed(failureResponse(notFound(request.method, pathname))) : Effect.die(e))) as Handled
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
          ? record(exit.value.status)
          // a disconnect before the reply: nginx's "client closed request"
          : Exit.isFailure(exit) ? record(499) : Effect.void)
    )
    return countedStream(response, record)
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
