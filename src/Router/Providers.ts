/**
 * The wire protocols of the providers the Router calls: our server's `/infer` (the app's contract, through the
 * client derived from `Api/Api.ts`), OpenAI-compatible chat completions (Groq, our server's `/v1`, vLLM, ...), Gemini `generateContent` /
 * `streamGenerateContent`, and Ollama `/api/generate`. Each call maps every way it can go wrong to a
 * `ProviderFailure` with a `kind`; timeouts, retries and breakers are the Router's business, not this file's.
 */
import { Effect, Redacted, Result, Schema, Stream } from "effect"
import { Ndjson, Sse } from "effect/encoding"
import { FetchHttpClient, HttpClient, HttpClientRequest, type HttpClientError, type HttpClientResponse } from "effect/http"
import { InferRequest as ApiInferRequest } from "../Api/Api.ts"
import type * as Api from "../Api/Api.ts"
import * as ApiClient from "../Api/ApiClient.ts"
import { type FailureKind, ProviderFailure } from "./Errors.ts"
import type { ProviderConfig } from "./RouterConfig.ts"
import { describeCause } from "../Shared/Errors.ts"

/** What the Router asks a provider for. */
export interface ProviderPrompt {
  readonly system: string
  readonly question: string
  /** the context rendered as text (formatRAGContext layout for structured contexts) */
  readonly context: string
  readonly jsonSchema: unknown
  /** undefined: the provider's configured default (for /infer this is `max_length`, prompt + answer) */
  readonly maxTokens: number | undefined
  readonly temperature: number | undefined
  readonly topK: number | undefined
  readonly topP: number | undefined
}

/** Token counts, when the provider reports them. */
export interface Usage {
  readonly promptTokens: number
  readonly completionTokens: number
}

export interface Completion {
  readonly text: string
  readonly confidence?: number
  readonly modelVersion?: string
  readonly usage?: Usage
}

// ---------------------------------------------------------------------------------------------------------------
// response shapes (only the fields we read; providers add many more)

const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
const OpenAiReply = Schema.Struct({
  model: Schema.optionalKey(Schema.String),
  usage: Schema.optionalKey(Schema.NullOr(Schema.Struct({ prompt_tokens: Count, completion_tokens: Count }))),
  choices: Schema.NonEmptyArray(Schema.Struct({ message: Schema.Struct({ content: Schema.NullOr(Schema.String) }) }))
})
const OpenAiChunk = Schema.Struct({
  choices: Schema.Array(Schema.Struct({
    delta: Schema.optionalKey(Schema.Struct({ content: Schema.optionalKey(Schema.NullOr(Schema.String)) }))
  }))
})
const GeminiReply = Schema.Struct({
  modelVersion: Schema.optionalKey(Schema.String),
  usageMetadata: Schema.optionalKey(Schema.Struct({
    promptTokenCount: Schema.optionalKey(Count),
    candidatesTokenCount: Schema.optionalKey(Count)
  })),
  candidates: Schema.NonEmptyArray(Schema.Struct({
    content: Schema.Struct({ parts: Schema.Array(Schema.Struct({ text: Schema.optionalKey(Schema.String) })) })
  }))
})
const OllamaReply = Schema.Struct({
  model: Schema.optionalKey(Schema.String),
  response: Schema.String,
  done: Schema.optionalKey(Schema.Boolean),
  prompt_eval_count: Schema.optionalKey(Count),
  eval_count: Schema.optionalKey(Count)
})

const usage = (promptTokens: number | undefined, completionTokens: number | undefined) =>
  promptTokens === undefined || completionTokens === undefined ? {} : { usage: { promptTokens, completionTokens } }

const decoder = <S extends Schema.Decoder<unknown>>(schema: S) => {
  const decode = Schema.decodeUnknownResult(Schema.fromJsonString(schema))
  return (provider: string, text: string): Result.Result<S["Type"], ProviderFailure> =>
    Result.mapError(decode(text), (e) =>
      new ProviderFailure({ provider, kind: "malformed", detail: `unexpected response body: ${truncate(e.message, 300)}` }))
}
const decodeOpenAi = decoder(OpenAiReply)
const decodeOpenAiChunk = decoder(OpenAiChunk)
const decodeGemini = decoder(GeminiReply)
const decodeOllama = decoder(OllamaReply)

// ---------------------------------------------------------------------------------------------------------------
// errors

const truncate = (s: string, n: number) => (s.length > n ? `${s.slice(0, n)}…` : s)

/** Retry-After is either delta-seconds or an HTTP date. */
export const parseRetryAfter = (value: string | undefined, nowMs: number): number | undefined => {
  if (value === undefined || value.trim() === "") return undefined
  const seconds = Number(value)
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000)
  const at = Date.parse(value)
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs)
}

export const kindOfStatus = (status: number): FailureKind =>
  status === 429
    ? "rate_limited"
    : status === 401 || status === 403
    ? "auth"
    : status >= 500 || status === 408
    ? "server"
    : "bad_request"

const transportFailure = (provider: string) => (e: HttpClientError.HttpClientError) =>
  new ProviderFailure({
    provider,
    kind: e.reason._tag === "TransportError" ? "connection" : "malformed",
    detail: truncate(e.reason.message || e.message, 300)
  })

/** A non-2xx reply as a ProviderFailure (`body` gives the detail). */
const failureOfStatus = (provider: string, status: number, retryAfter: string | undefined, body: string) => {
  const retryAfterMs = parseRetryAfter(retryAfter, Date.now())
  return new ProviderFailure({
    provider,
    kind: kindOfStatus(status),
    status,
    ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
    detail: truncate(body.trim() || `HTTP ${status}`, 300)
  })
}

/** Turns a non-2xx `HttpClient` response into a ProviderFailure (reading its body for the detail). */
const statusFailure = (provider: string, response: HttpClientResponse.HttpClientResponse) =>
  response.text.pipe(
    Effect.orElseSucceed(() => ""),
    Effect.map((body) => failureOfStatus(provider, response.status, response.headers["retry-after"], body))
  )

// ---------------------------------------------------------------------------------------------------------------
// requests

const userContent = (prompt: ProviderPrompt) =>
  prompt.context.trim() === "" ? prompt.question : `Context:\n${prompt.context}\n\nQuestion: ${prompt.question}`

const openAiBody = (p: ProviderConfig, prompt: ProviderPrompt, stream: boolean) => ({
  ...(p.model !== "" ? { model: p.model } : {}),
  messages: [
    { role: "system", content: prompt.system },
    { role: "user", content: userContent(prompt) }
  ],
  temperature: prompt.temperature ?? p.temperature,
  max_tokens: prompt.maxTokens ?? p.maxTokens,
  ...(prompt.topP !== undefined ? { top_p: prompt.topP } : {}),
  ...(prompt.jsonSchema !== undefined
    ? { response_format: { type: "json_schema", json_schema: { name: "answer", schema: prompt.jsonSchema } } }
    : {}),
  ...(stream ? { stream: true } : {})
})

const geminiBody = (p: ProviderConfig, prompt: ProviderPrompt) => ({
  systemInstruction: { parts: [{ text: prompt.system }] },
  contents: [{ role: "user", parts: [{ text: userContent(prompt) }] }],
  generationConfig: {
    temperature: prompt.temperature ?? p.temperature,
    maxOutputTokens: prompt.maxTokens ?? p.maxTokens,
    ...(prompt.topK !== undefined ? { topK: prompt.topK } : {}),
    ...(prompt.topP !== undefined ? { topP: prompt.topP } : {}),
    ...(prompt.jsonSchema !== undefined ? { responseMimeType: "application/json", responseSchema: prompt.jsonSchema } : {})
  }
})

const ollamaBody = (p: ProviderConfig, prompt: ProviderPrompt, stream: boolean) => ({
  model: p.model,
  system: prompt.system,
  prompt: userContent(prompt),
  stream,
  ...(prompt.jsonSchema !== undefined ? { format: prompt.jsonSchema } : {}),
  options: {
    temperature: prompt.temperature ?? p.temperature,
    num_predict: prompt.maxTokens ?? p.maxTokens,
    ...(prompt.topK !== undefined ? { top_k: prompt.topK } : {}),
    ...(prompt.topP !== undefined ? { top_p: prompt.topP } : {})
  }
})

/** A provider other than our own server (whose `/infer` goes through the contract's client). */
export type RemoteProvider = ProviderConfig & { readonly kind: Exclude<ProviderConfig["kind"], "local-infer"> }

/** One HTTP call as plain data: what `complete` hands to `fetch` and `stream` to Effect's `HttpClient`. */
export interface ProviderCall {
  readonly url: string
  readonly headers: Readonly<Record<string, string>>
  /** the JSON body, already serialized */
  readonly body: string
}

const json = { "content-type": "application/json" }

/** The HTTP call for one attempt (`key` is the API key for this attempt, if the provider uses keys). */
export const buildCall = (
  p: RemoteProvider,
  key: Redacted.Redacted<string> | undefined,
  prompt: ProviderPrompt,
  stream: boolean
): ProviderCall => {
  switch (p.kind) {
    case "openai":
      return {
        url: `${p.baseUrl}/chat/completions`,
        headers: key === undefined ? json : { ...json, authorization: `Bearer ${Redacted.value(key)}` },
        body: JSON.stringify(openAiBody(p, prompt, stream))
      }
    case "gemini": {
      const method = stream ? "streamGenerateContent?alt=sse" : "generateContent"
      return {
        url: `${p.baseUrl}/models/${encodeURIComponent(p.model)}:${method}`,
        headers: key === undefined ? json : { ...json, "x-goog-api-key": Redacted.value(key) },
        body: JSON.stringify(geminiBody(p, prompt))
      }
    }
    case "ollama":
      return { url: `${p.baseUrl}/api/generate`, headers: json, body: JSON.stringify(ollamaBody(p, prompt, stream)) }
  }
}

/** The same call as an Effect `HttpClientRequest` (the streaming path reads its body as an Effect `Stream`). */
export const buildRequest = (
  p: RemoteProvider,
  key: Redacted.Redacted<string> | undefined,
  prompt: ProviderPrompt,
  stream: boolean
): HttpClientRequest.HttpClientRequest => {
  const call = buildCall(p, key, prompt, stream)
  return HttpClientRequest.post(call.url).pipe(
    HttpClientRequest.setHeaders(call.headers),
    HttpClientRequest.bodyText(call.body, "application/json")
  )
}

const geminiText = (reply: typeof GeminiReply.Type) =>
  reply.candidates[0].content.parts.map((part) => part.text ?? "").join("")

/** The `fetch` a router calls providers with (the platform's by default: undici's keep-alive pool in Node). */
export type Fetch = (input: string, init: RequestInit) => Promise<Response>

/** What a transport error says, with its cause's code (`fetch failed (ECONNREFUSED)`). */
const describeFetchError = (e: unknown): string => {
  if (!(e instanceof Error)) return describeCause(e)
  const cause = e.cause as { code?: unknown; message?: unknown } | undefined
  const code = typeof cause?.code === "string" ? cause.code : typeof cause?.message === "string" ? cause.message : undefined
  return code === undefined || e.message.includes(code) ? e.message : `${e.message} (${code})`
}

const fromReply = (
  p: RemoteProvider,
  body: string
): Result.Result<Completion, ProviderFailure> => {
  switch (p.kind) {
    case "openai":
      return Result.map(decodeOpenAi(p.name, body), (r) => ({
        text: r.choices[0].message.content ?? "",
        ...(r.model !== undefined ? { modelVersion: r.model } : {}),
        ...usage(r.usage?.prompt_tokens, r.usage?.completion_tokens)
      }))
    case "gemini":
      return Result.map(decodeGemini(p.name, body), (r) => ({
        text: geminiText(r),
        ...(r.modelVersion !== undefined ? { modelVersion: r.modelVersion } : {}),
        ...usage(r.usageMetadata?.promptTokenCount, r.usageMetadata?.candidatesTokenCount)
      }))
    case "ollama":
      return Result.map(decodeOllama(p.name, body), (r) => ({
        text: r.response,
        ...(r.model !== undefined ? { modelVersion: r.model } : {}),
        ...usage(r.prompt_eval_count, r.eval_count)
      }))
  }
}

/**
 * One non-streaming call, straight through `fetch`: the request path a latency-sensitive router wants
 * (no client middleware, spans or response wrappers per request; the Router's own span covers the call).
 * Interrupting it aborts the request at once, without waiting for the connection to wind down.
 */
export const complete = (
  fetch: Fetch,
  p: ProviderConfig,
  key: Redacted.Redacted<string> | undefined,
  prompt: ProviderPrompt
): Effect.Effect<Completion, ProviderFailure> => {
  if (p.kind === "local-infer") return completeInfer(fetch, p, prompt)
  const remote: RemoteProvider = { ...p, kind: p.kind }
  const call = buildCall(remote, key, prompt, false)
  return Effect.flatMap(
    Effect.tryPromise({
      try: async (signal) => {
        const response = await fetch(call.url, { method: "POST", headers: call.headers, body: call.body, signal })
        const stage = { response, body: "" }
        try {
          stage.body = await response.text()
        } catch (e) {
          // headers came but the body broke off: a lost connection, whatever the status said
          throw new ProviderFailure({ provider: p.name, kind: "connection", detail: `response body broke off: ${truncate(describeFetchError(e), 200)}` })
        }
        return stage
      },
      catch: (e) =>
        e instanceof ProviderFailure ? e : new ProviderFailure({ provider: p.name, kind: "connection", detail: truncate(describeFetchError(e), 300) })
    }),
    ({ response, body }) => {
      if (response.status < 300) return Effect.fromResult(fromReply(remote, body))
      return Effect.fail(failureOfStatus(p.name, response.status, response.headers.get("retry-after") ?? undefined, body))
    }
  )
}

// ---------------------------------------------------------------------------------------------------------------
// our server's /infer, through the contract's client

/** One derived `/infer` client per server (building it walks the contract once). */
const inferClients = new Map<string, Effect.Success<ReturnType<typeof ApiClient.makeInfer>>>()
const inferClientFor = (baseUrl: string) => {
  let client = inferClients.get(baseUrl)
  if (client === undefined) {
    client = Effect.runSync(ApiClient.makeInfer(baseUrl).pipe(Effect.provide(FetchHttpClient.layer)))
    inferClients.set(baseUrl, client)
  }
  return client
}

/** The `/infer` body for a prompt; fields the prompt and the provider leave open get the contract's defaults. */
const inferPayload = (p: ProviderConfig, prompt: ProviderPrompt): Api.InferRequest => ({
  question: prompt.question,
  context: prompt.context,
  max_length: prompt.maxTokens ?? p.maxTokens,
  temperature: prompt.temperature ?? p.temperature,
  ...(prompt.topK !== undefined ? { top_k: prompt.topK } : {}),
  ...(prompt.topP !== undefined ? { top_p: prompt.topP } : {})
})

const validInfer = Schema.decodeUnknownResult(ApiInferRequest)

/** What went wrong in a call through the derived client, as a ProviderFailure. */
const clientFailure = (provider: string) => (e: HttpClientError.HttpClientError | Schema.SchemaError): ProviderFailure => {
  if (Schema.isSchemaError(e)) {
    return new ProviderFailure({ provider, kind: "malformed", detail: `unexpected response body: ${truncate(e.message, 300)}` })
  }
  switch (e.reason._tag) {
    case "TransportError":
      return new ProviderFailure({ provider, kind: "connection", detail: truncate(describeFetchError(e.reason.cause) || e.reason.message, 300) })
    case "EncodeError":
    case "InvalidUrlError":
      return new ProviderFailure({ provider, kind: "bad_request", detail: truncate(e.reason.message, 300) })
    default:
      return new ProviderFailure({ provider, kind: "malformed", detail: `unexpected response body: ${truncate(e.reason.message, 300)}` })
  }
}

/**
 * `POST /infer` through the client derived from the contract, on the Router's `fetch`. The head comes back raw
 * (`response-only`), so a non-2xx keeps its status and Retry-After for the Router; a 2xx is decoded with the
 * contract's schema.
 */
const completeInfer = (fetch: Fetch, p: ProviderConfig, prompt: ProviderPrompt): Effect.Effect<Completion, ProviderFailure> =>
  Effect.gen(function*() {
    // checked here, so a request the contract refuses is a bad request and not a malformed reply
    const payload = yield* Effect.fromResult(validInfer(inferPayload(p, prompt))).pipe(
      Effect.mapError((e) => new ProviderFailure({ provider: p.name, kind: "bad_request", detail: truncate(e.message, 300) }))
    )
    const response = yield* inferClientFor(p.baseUrl)({ payload, responseMode: "response-only" }).pipe(
      Effect.mapError(clientFailure(p.name))
    )
    if (response.status >= 300) return yield* Effect.flatMap(statusFailure(p.name, response), Effect.fail)
    const reply = yield* ApiClient.decodeInferResponse(response).pipe(
      Effect.mapError((e) => Schema.isSchemaError(e) || "reason" in e ? clientFailure(p.name)(e) : new ProviderFailure({ provider: p.name, kind: "malformed", detail: e.detail }))
    )
    const completion: Completion = {
      text: reply.answer,
      confidence: reply.confidence,
      modelVersion: reply.model_version,
      ...usage(reply.metadata?.prompt_tokens, reply.metadata?.completion_tokens)
    }
    return completion
  }).pipe(Effect.provideService(FetchHttpClient.Fetch, fetch as typeof globalThis.fetch))

const sseData = (provider: string) => (self: Stream.Stream<Uint8Array, ProviderFailure>) =>
  self.pipe(
    Stream.decodeText(),
    Stream.pipeThroughChannel(Sse.decode()),
    Stream.mapError((e) =>
      e instanceof ProviderFailure ? e : new ProviderFailure({ provider, kind: "malformed", detail: `bad event stream: ${e._tag === "Retry" ? "unexpected retry directive" : e.message}` })
    ),
    Stream.map((event) => event.data)
  )

/**
 * One streaming call: text deltas as they arrive. The HTTP status is checked before the first element,
 * so a 429/500 fails the stream before any token (the Router can still fall back then).
 */
export const stream = (
  client: HttpClient.HttpClient,
  p: ProviderConfig,
  key: Redacted.Redacted<string> | undefined,
  prompt: ProviderPrompt
): Stream.Stream<string, ProviderFailure> => {
  if (!p.supportsStreaming || p.kind === "local-infer") {
    return Stream.fail(new ProviderFailure({ provider: p.name, kind: "unsupported", detail: "provider does not stream" }))
  }
  return Stream.unwrap(
    client.execute(buildRequest({ ...p, kind: p.kind }, key, prompt, true)).pipe(
      Effect.mapError(transportFailure(p.name)),
      Effect.flatMap((response) =>
        response.status >= 300 ? Effect.flatMap(statusFailure(p.name, response), Effect.fail) : Effect.succeed(response)
      ),
      Effect.map((response): Stream.Stream<string, ProviderFailure> => {
        // a body that breaks off mid-stream is a lost connection, whatever the client calls it
        const body = response.stream.pipe(Stream.mapError((e) =>
          new ProviderFailure({ provider: p.name, kind: "connection", detail: `response body broke off: ${truncate(e.message, 200)}` })
        ))
        switch (p.kind) {
          case "openai":
            return body.pipe(
              sseData(p.name),
              Stream.takeWhile((data) => data.trim() !== "[DONE]"),
              Stream.mapEffect((data) => Effect.fromResult(decodeOpenAiChunk(p.name, data))),
              Stream.map((chunk) => chunk.choices.map((c) => c.delta?.content ?? "").join(""))
            )
          case "gemini":
            return body.pipe(
              sseData(p.name),
              Stream.mapEffect((data) => Effect.fromResult(decodeGemini(p.name, data))),
              Stream.map(geminiText)
            )
          default:
            return body.pipe(
              Stream.pipeThroughChannel(Ndjson.decode({ ignoreEmptyLines: true })),
              Stream.mapError((e) =>
                e instanceof ProviderFailure ? e : new ProviderFailure({ provider: p.name, kind: "malformed", detail: `bad NDJSON: ${e.message}` })
              ),
              Stream.mapEffect((line) => Effect.fromResult(decodeOllama(p.name, JSON.stringify(line)))),
              Stream.takeUntil((r) => r.done === true),
              Stream.map((r) => r.response)
            )
        }
      })
    )
  ).pipe(Stream.filter((text) => text !== ""))
}

/** `GET {baseUrl without /v1}{healthPath}`: any 2xx is healthy. */
export const health = (client: HttpClient.HttpClient, p: ProviderConfig): Effect.Effect<void, ProviderFailure> => {
  const root = p.kind === "openai" ? p.baseUrl.replace(/\/v1$/, "") : p.baseUrl
  return client.execute(HttpClientRequest.get(`${root}${p.healthPath ?? "/health"}`)).pipe(
    Effect.mapError(transportFailure(p.name)),
    Effect.flatMap((response) =>
      response.status >= 300 ? Effect.flatMap(statusFailure(p.name, response), Effect.fail) : Effect.void
    )
  )
}
