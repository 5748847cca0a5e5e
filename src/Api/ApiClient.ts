/**
 * The client of the inference server, derived from the contract (`Api.ServeApi`) with `HttpApiClient`: the one
 * place an `/infer` request is encoded and its reply decoded. The Router's local provider, the Evaluator's
 * endpoint mode and the pipeline's serve check all call the server through it; fields a caller leaves out get
 * the contract's defaults on the server (`Api.inferDefaults`).
 */
import { Effect, Redacted, Schema } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest } from "effect/http"
import { HttpApiClient } from "effect/http-api"
import type { ErrorKind } from "../Shared/Errors.ts"
import * as Api from "./Api.ts"

/** The whole derived client: `client.app.infer({ payload })`, `client.openai.chatCompletions(…)`, … */
export type ServeClient = HttpApiClient.ForApi<typeof Api.ServeApi>

export interface ClientOptions {
  /** sent as `Authorization: Bearer <key>` */
  readonly apiKey?: Redacted.Redacted<string> | undefined
  /** e.g. retries (`HttpClient.retryTransient`) or `HttpClient.filterStatusOk` */
  readonly transformClient?: ((client: HttpClient.HttpClient) => HttpClient.HttpClient) | undefined
}

const withAuth = (options: ClientOptions) => (client: HttpClient.HttpClient) => {
  const key = options.apiKey
  const authed = key === undefined ? client : client.pipe(HttpClient.mapRequest(HttpClientRequest.bearerToken(Redacted.value(key))))
  return options.transformClient === undefined ? authed : options.transformClient(authed)
}

/** The client for the server at `baseUrl` (`http://127.0.0.1:8000`), over the `HttpClient` in context. */
export const make = (baseUrl: string, options: ClientOptions = {}) =>
  HttpApiClient.make(Api.ServeApi, { baseUrl: baseUrl.replace(/\/+$/, ""), transformClient: withAuth(options) })

/** Just `POST /infer` (building it reflects one endpoint, not the whole API). */
export const makeInfer = (baseUrl: string, options: ClientOptions = {}) =>
  Effect.flatMap(HttpClient.HttpClient, (httpClient) =>
    HttpApiClient.endpoint(Api.ServeApi, {
      group: "app",
      endpoint: "infer",
      httpClient: withAuth(options)(httpClient),
      baseUrl: baseUrl.replace(/\/+$/, "")
    }))

/** Decodes a `POST /infer` reply taken with `responseMode: "response-only"` (the Router reads failures itself). */
export const decodeInferResponse = HttpApiClient.decodeResponse(Api.ServeApi, { group: "app", endpoint: "infer" })

// ---------------------------------------------------------------------------------------------------------------
// The pipeline's serve check

export class ServeCheckError extends Schema.TaggedError<ServeCheckError>()("ServeCheckError", {
  url: Schema.String,
  question: Schema.String,
  detail: Schema.String
}) {
  /** the server did not answer the check: it is not serving */
  get kind(): ErrorKind {
    return "unavailable"
  }
  override get message() {
    return `POST ${this.url}/infer failed for ${JSON.stringify(this.question.slice(0, 80))}: ${this.detail}`
  }
}

export interface ServeCheckQuestion {
  readonly question: string
  readonly context?: Api.RequestContext | undefined
}

export interface ServeCheckAnswer {
  readonly question: string
  readonly answer: string
  readonly confidence: number
  readonly modelVersion: string
  /** measured by the client, request to reply */
  readonly latencyMs: number
}

/** What a failed call says: the server's own message for an error it declared, else the client's. */
export const describeFailure = (e: unknown): string => {
  if (Schema.is(Api.ErrorBody)(e)) return e.detail
  if (e instanceof Error) return e.message
  return String(e)
}

/**
 * Asks a running server the questions one after another through `POST /infer` and returns its answers (the
 * pipeline's serve stage). Any failure names the question and what the server said.
 */
export const serveCheck = Effect.fn("ApiClient.serveCheck")(function*(
  url: string,
  questions: ReadonlyArray<ServeCheckQuestion>,
  options: {
    readonly maxLength?: number
    readonly temperature?: number
    readonly apiKey?: Redacted.Redacted<string>
    /** called after each answer (the pipeline logs its progress here) */
    readonly onAnswer?: (answer: ServeCheckAnswer, index: number, total: number) => Effect.Effect<void>
  } = {}
) {
  const infer = yield* makeInfer(url, { apiKey: options.apiKey })
  const answers: Array<ServeCheckAnswer> = []
  for (const q of questions) {
    const started = Date.now()
    const reply = yield* infer({
      payload: {
        question: q.question,
        context: q.context ?? "",
        ...(options.maxLength === undefined ? {} : { max_length: options.maxLength }),
        ...(options.temperature === undefined ? {} : { temperature: options.temperature })
      }
    }).pipe(Effect.mapError((e) => new ServeCheckError({ url, question: q.question, detail: describeFailure(e) })))
    const answer: ServeCheckAnswer = {
      question: q.question,
      answer: reply.answer,
      confidence: reply.confidence,
      modelVersion: reply.model_version,
      latencyMs: Date.now() - started
    }
    answers.push(answer)
    if (options.onAnswer !== undefined) yield* options.onAnswer(answer, answers.length - 1, questions.length)
  }
  return answers
}, Effect.provide(FetchHttpClient.layer))
