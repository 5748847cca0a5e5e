/**
 * The Router for apps that do not use Effect: `createRouter(config)` returns Promise methods that never
 * reject for provider failures (a failure is a value with `ok: false`), backed by a private
 * `ManagedRuntime` (so every router has its own breakers, metrics and health-check fiber).
 */
import { Cause, Effect, Exit, Layer, ManagedRuntime, References, Stream } from "effect"
import { FetchHttpClient } from "effect/http"
import type { BreakerSnapshot } from "./CircuitBreaker.ts"
import type { Attempt } from "./Errors.ts"
import {
  type Explanation,
  ModelRouter,
  type RouteAnswer,
  type RouteContext,
  type RouteOptions,
  type RouteStreamEvent
} from "./ModelRouter.ts"
import { resolveConfig, type RouterConfigInput } from "./RouterConfig.ts"

/** A failure as plain data: the error's tag, its message, and the attempts made (if any). */
export interface RouteFailure {
  readonly _tag: "AllProvidersUnavailable" | "InvalidRouteRequest" | "StreamInterrupted" | "RouterDefect"
  readonly message: string
  readonly requestId?: string
  readonly attempts?: ReadonlyArray<Attempt>
}

export type RouteResult = ({ readonly ok: true } & RouteAnswer) | { readonly ok: false; readonly error: RouteFailure }

export type StreamResultEvent = RouteStreamEvent | { readonly type: "error"; readonly error: RouteFailure }

export interface Router {
  /** Never rejects for provider failures: check `result.ok`. */
  route(query: string, context?: RouteContext, options?: RouteOptions): Promise<RouteResult>
  /** Tokens as they come, then `done` (or one `error` event); never throws for provider failures. */
  stream(query: string, context?: RouteContext, options?: RouteOptions & { readonly signal?: AbortSignal }): AsyncIterable<StreamResultEvent>
  explain(query: string, context?: RouteContext, options?: RouteOptions): Promise<Explanation>
  breakers(): Promise<Readonly<Record<string, BreakerSnapshot>>>
  checkHealth(): Promise<Readonly<Record<string, boolean>>>
  /** Prometheus exposition text */
  metrics(): Promise<string>
  /** Stops health checks and releases connections. */
  close(): Promise<void>
}

const toFailure = (cause: Cause.Cause<unknown>): RouteFailure => {
  const error = Cause.findErrorOption(cause)
  if (error._tag === "Some") {
    const e = error.value as { _tag?: string; message?: string; requestId?: string; attempts?: ReadonlyArray<Attempt> }
    if (e._tag === "AllProvidersUnavailable" || e._tag === "InvalidRouteRequest" || e._tag === "StreamInterrupted") {
      return {
        _tag: e._tag,
        message: e.message ?? e._tag,
        ...(e.requestId !== undefined ? { requestId: e.requestId } : {}),
        ...(e.attempts !== undefined ? { attempts: e.attempts } : {})
      }
    }
  }
  return { _tag: "RouterDefect", message: Cause.pretty(cause).split("\n")[0] ?? "unexpected router failure" }
}

/**
 * Creates a router from explicit config (`"env"` reads the app's environment names). Two routers with
 * different configs can live in one process. Throws `RouterConfigError` (naming the field) on a bad config.
 */
export const createRouter = (config: RouterConfigInput | "env"): Router => {
  // explicit config is validated now: a bad setting throws RouterConfigError naming the field, here
  const routerLayer: Layer.Layer<ModelRouter> = config === "env"
    ? ModelRouter.layer.pipe(Layer.orDie)
    : Layer.effect(ModelRouter, ModelRouter.make(resolveConfig(config))).pipe(Layer.provide(FetchHttpClient.layer))
  const logLevel = config === "env" ? "Info" : config.logLevel ?? "Info"
  const runtime = ManagedRuntime.make(
    // provideMerge: the level reaches the health-check fiber built with the router and every request run here
    routerLayer.pipe(Layer.provideMerge(Layer.succeed(References.MinimumLogLevel, logLevel)))
  )
  const run = <A, E>(f: (router: ModelRouter["Service"]) => Effect.Effect<A, E>) => runtime.runPromise(ModelRouter.use(f))
  return {
    route: (query, context, options) =>
      runtime.runPromiseExit(ModelRouter.use((r) => r.route(query, context, options))).then((exit): RouteResult =>
        Exit.isSuccess(exit) ? { ok: true, ...exit.value } : { ok: false, error: toFailure(exit.cause) }
      ),
    stream: (query, context, options) => {
      const { signal, ...rest } = options ?? {}
      const events = Stream.unwrap(ModelRouter.use((r) => Effect.succeed(r.routeStream(query, context, rest)))).pipe(
        Stream.map((e): StreamResultEvent => e),
        Stream.catchCause((cause) => Stream.succeed<StreamResultEvent>({ type: "error", error: toFailure(cause) }))
      )
      return {
        [Symbol.asyncIterator]: (): AsyncIterator<StreamResultEvent> => {
          let iterator: AsyncIterator<StreamResultEvent> | undefined
          // aborting ends the stream at once, which interrupts the provider request
          signal?.addEventListener("abort", () => void iterator?.return?.(), { once: true })
          const open = async () => {
            const context = await runtime.context()
            iterator ??= Stream.toAsyncIterableWith(events, context)[Symbol.asyncIterator]()
            return iterator
          }
          return {
            next: async () => {
              if (signal?.aborted) {
                await iterator?.return?.()
                return { done: true, value: undefined }
              }
              const it = await open()
              return it.next()
            },
            return: async () => {
              await iterator?.return?.()
              return { done: true, value: undefined }
            }
          }
        }
      }
    },
    explain: (query, context, options) => run((r) => r.explain(query, context, options)),
    breakers: () => run((r) => r.breakers),
    checkHealth: () => run((r) => r.checkHealth),
    metrics: () => run((r) => r.metrics),
    close: () => runtime.dispose()
  }
}
