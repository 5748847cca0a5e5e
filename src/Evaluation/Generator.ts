/**
 * Where batch evaluation gets its answers from. One method, `generate`, and two kinds of implementation:
 *
 * - `Generator.layerHttp`: a served endpoint, either the app's contract (`POST /infer`, called through the client
 *   derived from `Api/Api.ts`, so top_k/top_p are the contract's defaults and the reply is decoded with its
 *   schema) or any OpenAI-compatible server (`POST /v1/chat/completions`: this project's server, llama-server,
 *   vLLM), whose reply is decoded leniently (only the fields we read).
 *   Transient failures (429/5xx, honouring Retry-After; dropped connections) are retried twice with backoff.
 * - `Generator.layerFunction`: any in-process function (the model core, a node-llama-cpp session), wrapped so
 *   failures become `GenerationError`s.
 *
 * Every request carries the evaluation seed and temperature, so a server that honours `seed` gives the same
 * answers on a rerun.
 */
import { Cause, Context, Duration, Effect, Layer, Schedule, Schema } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest, HttpClientResponse } from "effect/http"
import { contextText, defaultSystemPrompt } from "../Dataset/PromptFormat.ts"
import * as ApiClient from "../Api/ApiClient.ts"
import { describeCause, kindField } from "../Shared/Errors.ts"

export class GenerationError extends Schema.TaggedError<GenerationError>()("GenerationError", {
  /** which generator: the endpoint URL or the model path */
  source: Schema.String,
  detail: Schema.String,
  /** `failure`, or what the cause says (a missing model file is `input`, a bad one `data`) */
  kind: kindField("failure")
}) {
  override get message() {
    return `${this.source}: ${this.detail}`
  }
}

export interface GenerationRequest {
  readonly question: string
  readonly context?: string | Readonly<Record<string, unknown>> | undefined
  readonly maxTokens: number
  readonly temperature: number
  readonly seed: number
}

export interface Generation {
  /** the answer as a user sees it (placeholders filled by the server, when it does that) */
  readonly answer: string
  /** the model's own text before placeholder filling, when the server reports it */
  readonly rawAnswer?: string | undefined
  readonly modelVersion?: string | undefined
  readonly latencyMs: number
}

export class Generator extends Context.Service<Generator, {
  /** a short description for run records: `http:/infer http://127.0.0.1:8000`, `llama:/models/x.gguf` */
  readonly describe: string
  generate(request: GenerationRequest): Effect.Effect<Generation, GenerationError>
}>()("app/Evaluation/Generator") {
  /** A served endpoint. `api` picks the contract; `model` is sent as OpenAI's `model` (an adapter name). */
  static readonly layerHttp = (options: {
    readonly url: string
    readonly api: "infer" | "openai"
    readonly model?: string | undefined
    readonly timeout?: Duration.Input | undefined
    /** extra attempts after a transient failure (default 2) */
    readonly retries?: number | undefined
  }) =>
    Layer.effect(
      Generator,
      Effect.gen(function*() {
        // a busy or restarting server (429/503 with Retry-After, 5xx, dropped connections) gets two more tries
        const transient = (client: HttpClient.HttpClient) =>
          client.pipe(
            HttpClient.filterStatusOk,
            HttpClient.retryTransient({ times: options.retries ?? 2, schedule: Schedule.exponential("200 millis") })
          )
        const base = options.url.replace(/\/+$/, "")
        const source = options.api === "infer" ? `${base}/infer` : `${base}/v1/chat/completions`
        const timeout = options.timeout ?? Duration.seconds(120)
        const fail = (detail: string) => new GenerationError({ source, detail })
        const timedOut = `no answer within ${Duration.format(Duration.fromInputUnsafe(timeout))}`

        if (options.api === "infer") {
          const infer = yield* ApiClient.makeInfer(base, { transformClient: transient })
          const generate = Effect.fn("Generator.generate")(function*(request: GenerationRequest) {
            const started = Date.now()
            const reply = yield* infer({
              payload: {
                question: request.question,
                context: request.context ?? "",
                // /infer's max_length bounds prompt + answer; give the prompt room as the app's client does
                max_length: request.maxTokens + 512,
                temperature: request.temperature,
                seed: request.seed,
                ...(options.model !== undefined ? { model: options.model } : {})
              }
            }).pipe(
              Effect.timeout(timeout),
              Effect.mapError((e) =>
                fail(
                  Cause.isTimeoutError(e)
                    ? timedOut
                    : Schema.isSchemaError(e)
                    ? `unexpected response: ${e.message}`
                    : ApiClient.describeFailure(e)
                )
              )
            )
            return {
              answer: reply.answer,
              rawAnswer: reply.metadata?.raw_answer,
              modelVersion: reply.model_version,
              latencyMs: Date.now() - started
            }
          })
          return Generator.of({ describe: `http:${options.api} ${base}`, generate })
        }

        const client = transient(yield* HttpClient.HttpClient)
        const generate = Effect.fn("Generator.generate")(function*(request: GenerationRequest) {
          const started = Date.now()
          const body = {
            ...(options.model !== undefined ? { model: options.model } : {}),
            messages: [
              { role: "system", content: defaultSystemPrompt },
              { role: "user", content: `Context: ${contextText(request.context)}\nQuestion: ${request.question}` }
            ],
            max_tokens: request.maxTokens,
            temperature: request.temperature,
            seed: request.seed,
            ...(request.context !== undefined ? { context: request.context } : {})
          }
          const response = yield* client.execute(HttpClientRequest.post(source).pipe(HttpClientRequest.bodyJsonUnsafe(body))).pipe(
            Effect.timeout(timeout),
            Effect.mapError((e) => fail(e._tag === "TimeoutError" ? timedOut : e.message)),
            Effect.scoped
          )
          return yield* HttpClientResponse.schemaBodyJson(ChatReply)(response).pipe(
            Effect.map((r) => ({ answer: r.choices[0].message.content ?? "", rawAnswer: undefined, modelVersion: r.model, latencyMs: Date.now() - started })),
            Effect.mapError((e) => fail(`unexpected response: ${e.message}`))
          )
        })
        return Generator.of({ describe: `http:${options.api} ${base}`, generate })
      })
    ).pipe(Layer.provide(FetchHttpClient.layer))

  /** An in-process generator from a plain async function (the model core, a llama.cpp session, a test double). */
  static readonly layerFunction = (
    describe: string,
    run: (request: GenerationRequest) => Promise<string | { answer: string; rawAnswer?: string; modelVersion?: string }>
  ) =>
    Layer.succeed(
      Generator,
      Generator.of({
        describe,
        generate: Effect.fn("Generator.generate")(function*(request: GenerationRequest) {
          const started = Date.now()
          const out = yield* Effect.tryPromise({
            try: () => run(request),
            catch: (e) => new GenerationError({ source: describe, detail: describeCause(e) })
          })
          const r = typeof out === "string" ? { answer: out } : out
          return { answer: r.answer, rawAnswer: r.rawAnswer, modelVersion: r.modelVersion, latencyMs: Date.now() - started }
        })
      })
    )
}

/** An OpenAI-compatible reply: only the fields we read, so any such server works. */
const ChatReply = Schema.Struct({
  model: Schema.optionalKey(Schema.String),
  choices: Schema.NonEmptyArray(Schema.Struct({ message: Schema.Struct({ content: Schema.NullOr(Schema.String) }) }))
})
