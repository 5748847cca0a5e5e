/**
 * Where batch evaluation gets its answers from. One method, `generate`, and two kinds of implementation:
 *
 * - `Generator.layerHttp`: a served endpoint, either the app's contract (`POST /infer` with
 *   `{question, context, max_length, temperature, top_k, top_p}`, architecture.md §5) or any
 *   OpenAI-compatible server (`POST /v1/chat/completions`: this project's server, llama-server, vLLM).
 *   Responses are decoded leniently (only the fields we read), so other servers of the same contract work.
 *   Transient failures (429/5xx, honouring Retry-After; dropped connections) are retried twice with backoff.
 * - `Generator.layerFunction`: any in-process function (the model core, a node-llama-cpp session), wrapped so
 *   failures become `GenerationError`s.
 *
 * Every request carries the evaluation seed and temperature, so a server that honours `seed` gives the same
 * answers on a rerun.
 */
import { Context, Duration, Effect, Layer, Schedule, Schema } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest, HttpClientResponse } from "effect/http"
import { contextText, defaultSystemPrompt } from "../Dataset/PromptFormat.ts"

export class GenerationError extends Schema.TaggedError<GenerationError>()("GenerationError", {
  /** which generator: the endpoint URL or the model path */
  source: Schema.String,
  detail: Schema.String
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
        const client = (yield* HttpClient.HttpClient).pipe(
          HttpClient.filterStatusOk,
          HttpClient.retryTransient({ times: options.retries ?? 2, schedule: Schedule.exponential("200 millis") })
        )
        const base = options.url.replace(/\/+$/, "")
        const source = options.api === "infer" ? `${base}/infer` : `${base}/v1/chat/completions`
        const timeout = options.timeout ?? Duration.seconds(120)
        const fail = (detail: string) => new GenerationError({ source, detail })

        const generate = Effect.fn("Generator.generate")(function*(request: GenerationRequest) {
          const started = Date.now()
          const body = options.api === "infer"
            ? {
              question: request.question,
              context: request.context ?? "",
              // /infer's max_length bounds prompt + answer; give the prompt room as the app's client does
              max_length: request.maxTokens + 512,
              temperature: request.temperature,
              top_k: 50,
              top_p: 0.9,
              seed: request.seed,
              ...(options.model !== undefined ? { model: options.model } : {})
            }
            : {
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
            Effect.mapError((e) => fail(e._tag === "TimeoutError" ? `no answer within ${Duration.format(Duration.fromInputUnsafe(timeout))}` : e.message)),
            Effect.scoped
          )
          return yield* decodeReply(response, options.api).pipe(
            Effect.map((r) => ({ ...r, latencyMs: Date.now() - started })),
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
            catch: (e) => new GenerationError({ source: describe, detail: e instanceof Error ? e.message : String(e) })
          })
          const r = typeof out === "string" ? { answer: out } : out
          return { answer: r.answer, rawAnswer: r.rawAnswer, modelVersion: r.modelVersion, latencyMs: Date.now() - started }
        })
      })
    )
}

const InferReply = Schema.Struct({
  answer: Schema.String,
  model_version: Schema.optionalKey(Schema.String),
  metadata: Schema.optionalKey(Schema.Struct({ raw_answer: Schema.optionalKey(Schema.String) }))
})
const ChatReply = Schema.Struct({
  model: Schema.optionalKey(Schema.String),
  choices: Schema.NonEmptyArray(Schema.Struct({ message: Schema.Struct({ content: Schema.NullOr(Schema.String) }) }))
})

const decodeReply = (response: HttpClientResponse.HttpClientResponse, api: "infer" | "openai") =>
  api === "infer"
    ? HttpClientResponse.schemaBodyJson(InferReply)(response).pipe(
      Effect.map((r) => ({ answer: r.answer, rawAnswer: r.metadata?.raw_answer, modelVersion: r.model_version }))
    )
    : HttpClientResponse.schemaBodyJson(ChatReply)(response).pipe(
      Effect.map((r) => ({ answer: r.choices[0].message.content ?? "", rawAnswer: undefined, modelVersion: r.model }))
    )
