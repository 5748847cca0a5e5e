/**
 * What every generating route does with a request, once: read and validate the body (413, 400 naming the field),
 * refuse a prompt too long to fit before tokenizing it (413), run the generation under the request timeout (504,
 * the slot freed), fill placeholders (422 under `refuse`), and stream SSE frames from a generation that runs in the
 * request's scope (so a disconnect interrupts it after the headers went out too).
 */
import { ByteSize, Cause, Deferred, Effect, Queue, Schema, Stream } from "effect"
import { HttpIncomingMessage, HttpServerRequest, HttpServerResponse } from "effect/http"
import * as Api from "../Api/Api.ts"
import type { PlaceholderPolicy } from "../Api/Api.ts"
import { type ApiFailure, decodeBody, errorBody, failure, fromEngineError } from "./ApiFailure.ts"
import { type GenerateHooks, type GenerateRequest, type GenerationResult, InferenceEngine } from "./InferenceEngine.ts"
import { ServerMetrics } from "./Metrics.ts"
import { placeholderValuesOf, rehydrate, StreamingRehydrator } from "./Rehydrate.ts"

export interface RequestKitOptions {
  readonly maxBodyBytes: number
  readonly maxPromptBytes: number
  readonly requestTimeoutMs: number
  readonly placeholderPolicy: PlaceholderPolicy
}

/** The SSE frames of one streamed reply: before the first text, per piece of text, and at the end. */
export interface StreamFrames {
  readonly start: () => ReadonlyArray<unknown>
  readonly delta: (text: string) => unknown
  readonly end: (result: GenerationResult, report: Api.PlaceholderReport) => ReadonlyArray<unknown>
}

const utf8 = new TextDecoder("utf-8", { fatal: true })

export const sse = (data: unknown) => new TextEncoder().encode(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`)

export const usageOf = (r: GenerationResult): Api.Usage => ({
  prompt_tokens: r.promptTokens,
  completion_tokens: r.completionTokens,
  total_tokens: r.promptTokens + r.completionTokens
})

/** Reads the request body within the size limit, as UTF-8 JSON validated by `schema`. */
const readBodyWith = (maxBodyBytes: number) => {
  const maxBodySize = ByteSize.bytes(maxBodyBytes)
  return <S extends Schema.Decoder<unknown>>(schema: S) =>
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
}

/** Refuses a prompt field too long to fit the context, before it is tokenized or admitted. */
const checkPromptBytesWith = (maxPromptBytes: number) => (field: string, ...texts: ReadonlyArray<string>) => {
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

const unfilled = (names: ReadonlyArray<string>) =>
  failure(422, `the answer needs live values the request's context does not hold: ${names.join(", ")}`, "invalid_request_error", { code: "unfilled_placeholders" })

/** Fills the answer's placeholders from the request's context; under `refuse`, one it cannot fill is a 422. */
export const finish = (text: string, context: Api.RequestContext | undefined, policy: PlaceholderPolicy) => {
  const r = rehydrate(text, placeholderValuesOf(context), policy)
  return policy === "refuse" && r.report.unfilled.length > 0 ? Effect.fail(unfilled(r.report.unfilled)) : Effect.succeed(r)
}

type Run = (request: GenerateRequest, hooks?: GenerateHooks) => Effect.Effect<GenerationResult, ApiFailure>

/**
 * A streamed generation: the engine runs in a fiber of the request's scope, feeding SSE frames to a queue.
 * Headers go out only once the request is admitted, so admission errors keep their status codes.
 */
const streamedWith = (run: Run) => (
  request: GenerateRequest,
  context: Api.RequestContext | undefined,
  policy: PlaceholderPolicy,
  frames: StreamFrames
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
    const ended = (result: GenerationResult) =>
      Effect.gen(function*() {
        yield* send(rehydrator.flush())
        const report = rehydrator.report
        const last = policy === "refuse" && report.unfilled.length > 0 ? [errorBody(unfilled(report.unfilled))] : frames.end(result, report)
        for (const frame of last) yield* Queue.offer(queue, sse(frame))
      })
    yield* run(request, {
      onAdmitted: Effect.gen(function*() {
        for (const frame of frames.start()) yield* Queue.offer(queue, sse(frame))
        yield* Deferred.succeed(admitted, undefined)
      }),
      onText: sendNow
    }).pipe(
      Effect.matchEffect({
        onSuccess: ended,
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

/** The request toolkit of one server: needs the engine and the metrics. */
export const makeRequestKit = Effect.fnUntraced(function*(options: RequestKitOptions) {
  const engine = yield* InferenceEngine
  const metrics = yield* ServerMetrics
  const timeoutMs = options.requestTimeoutMs
  /** Runs a generation with the request timeout; interruption (timeout, disconnect) frees the slot. */
  const run: Run = (request, hooks) =>
    engine.generate(request, hooks).pipe(
      Effect.mapError(fromEngineError),
      Effect.timeoutOrElse({
        duration: timeoutMs,
        orElse: () => Effect.fail(failure(504, `the generation did not finish within the request timeout of ${timeoutMs} ms`, "timeout", { code: "timeout" }))
      }),
      Effect.tap((r) => metrics.recordGeneration(r.model, r.promptTokens, r.completionTokens, r.durationMs / 1000))
    )
  return {
    engine,
    metrics,
    defaultPolicy: options.placeholderPolicy,
    readBody: readBodyWith(options.maxBodyBytes),
    checkPromptBytes: checkPromptBytesWith(options.maxPromptBytes),
    run,
    finish,
    streamed: streamedWith(run)
  }
})

export type RequestKit = Effect.Success<ReturnType<typeof makeRequestKit>>
