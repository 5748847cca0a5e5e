/**
 * The HTTP contract of the inference server, declared once as an Effect `HttpApi`: paths, request and response
 * schemas, the error statuses. `Serving/Server.ts` implements it with `HttpApiBuilder`; `ApiClient.ts` derives
 * the client (`HttpApiClient`) that the Router, the Evaluator and the pipeline call it with; `/openapi.json` is
 * generated from it. It sits between Dataset and Evaluation in the stage order, so Evaluation (upstream of
 * Serving) can import the contract without an arrow pointing back up.
 * No server code lives here, so clients import it without pulling in llama.cpp.
 *
 * Two families of endpoints:
 * - the original app's contract (`POST /infer`, `GET /health`), kept byte-compatible with its client
 *   (docs/architecture.md §5);
 * - an OpenAI-compatible subset (`/v1/chat/completions`, `/v1/completions`, `/v1/models`) as llama-server and
 *   vLLM offer it, where the `model` field names a loaded adapter (or the base).
 */
import { Schema } from "effect"
import { HttpApi, HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "effect/http-api"
import { maxContextDepth, nestingDepth, PromptLayout } from "../Dataset/PromptFormat.ts"

export const paths = {
  infer: "/infer",
  health: "/health",
  ready: "/ready",
  live: "/live",
  metrics: "/metrics",
  chatCompletions: "/v1/chat/completions",
  completions: "/v1/completions",
  models: "/v1/models",
  openapi: "/openapi.json"
} as const

const NonNegative = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0))
const PositiveInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))
const NonNegativeInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
const Probability = Schema.Finite.check(Schema.isBetween({ minimum: 0, maximum: 1 }))

/**
 * The context of a request: the app's `formatRAGContext` text, or the same data as a JSON object
 * (`{symbol, prices, fundamentals, news, holdings, …}`). Both are used to fill placeholders in the answer.
 */
export const RequestContext = Schema.Union([
  Schema.String,
  // counted without recursion, so a body nested 10,000 levels deep is refused (400) and never overflows the stack
  Schema.Record(Schema.String, Schema.Unknown).check(Schema.makeFilter(
    (value) => nestingDepth(value) <= maxContextDepth || `Expected a context nested at most ${maxContextDepth} levels deep`
  ))
])
export type RequestContext = typeof RequestContext.Type

// ---------------------------------------------------------------------------------------------------------------
// The app's contract

/** What to do with placeholders the context cannot fill: leave them, remove them, or refuse the answer (422). */
export const PlaceholderPolicy = Schema.Literals(["leave", "remove", "refuse"])
export type PlaceholderPolicy = typeof PlaceholderPolicy.Type

/**
 * `POST /infer`. `max_length` bounds the whole sequence (prompt + answer tokens), as the original Python server's
 * `generate(max_length=…)` did: the answer gets `max_length - promptTokens` tokens at most.
 */
export const InferRequest = Schema.Struct({
  question: Schema.NonEmptyString,
  context: Schema.optionalKey(RequestContext),
  max_length: Schema.optionalKey(PositiveInt),
  temperature: Schema.optionalKey(NonNegative),
  top_k: Schema.optionalKey(NonNegativeInt),
  top_p: Schema.optionalKey(Probability),
  /** extensions (the app never sends them): a seed for reproducible sampling, an adapter name, and what to do
   * with placeholders the context cannot fill (default: the server's `--placeholders`) */
  seed: Schema.optionalKey(Schema.Int),
  model: Schema.optionalKey(Schema.String),
  placeholders: Schema.optionalKey(PlaceholderPolicy)
})
export type InferRequest = typeof InferRequest.Type

/** The defaults of the app's client and of the original server: a field a request leaves out gets these. */
export const inferDefaults = { context: "", max_length: 512, temperature: 0.2, top_k: 50, top_p: 0.9 } as const

export const FinishReason = Schema.Literals(["stop", "length"])
export type FinishReason = typeof FinishReason.Type

/** What rehydration did with the placeholders in an answer. */
export const PlaceholderReport = Schema.Struct({
  filled: Schema.Record(Schema.String, Schema.String),
  unfilled: Schema.Array(Schema.String),
  policy: PlaceholderPolicy
})
export type PlaceholderReport = typeof PlaceholderReport.Type

/** Our addition to the app's reply (the original server sends none, so clients must not need it). */
export const InferMetadata = Schema.Struct({
  model: Schema.String,
  prompt_tokens: Schema.Int,
  completion_tokens: Schema.Int,
  finish_reason: FinishReason,
  raw_answer: Schema.String,
  placeholders: PlaceholderReport,
  /** the layout the prompt was rendered in: the one the served model was trained on (`serve --layout`) */
  prompt_layout: Schema.optionalKey(PromptLayout)
})
export type InferMetadata = typeof InferMetadata.Type

export const InferResponse = Schema.Struct({
  answer: Schema.String,
  /** mean probability the model gave to the tokens it chose (0..1) */
  confidence: Schema.Finite,
  model_version: Schema.String,
  latency_ms: Schema.Finite,
  /** always sent by this server */
  metadata: Schema.optionalKey(InferMetadata)
})
export type InferResponse = typeof InferResponse.Type

export const HealthResponse = Schema.Struct({
  status: Schema.Literals(["healthy", "loading", "draining", "failed"]),
  model_loaded: Schema.Boolean,
  detail: Schema.optionalKey(Schema.String)
})
export type HealthResponse = typeof HealthResponse.Type

/** Every error the server answers with, in OpenAI's shape (which also carries a plain `detail` like FastAPI). */
export const ErrorBody = Schema.Struct({
  error: Schema.Struct({
    message: Schema.String,
    type: Schema.String,
    param: Schema.NullOr(Schema.String),
    code: Schema.NullOr(Schema.String)
  }),
  detail: Schema.String
})
export type ErrorBody = typeof ErrorBody.Type

// ---------------------------------------------------------------------------------------------------------------
// OpenAI-compatible

const TextPart = Schema.Struct({ type: Schema.Literal("text"), text: Schema.String })
export const ChatMessage = Schema.Struct({
  role: Schema.Literals(["system", "developer", "user", "assistant"]),
  content: Schema.Union([Schema.String, Schema.Array(TextPart)])
})
export type ChatMessage = typeof ChatMessage.Type

const Stop = Schema.NullOr(Schema.Union([Schema.String, Schema.Array(Schema.String).check(Schema.isMaxLength(8))]))

const samplingFields = {
  model: Schema.optionalKey(Schema.String),
  max_tokens: Schema.optionalKey(Schema.NullOr(PositiveInt)),
  temperature: Schema.optionalKey(Schema.NullOr(Schema.Finite.check(Schema.isBetween({ minimum: 0, maximum: 2 })))),
  top_p: Schema.optionalKey(Schema.NullOr(Probability)),
  top_k: Schema.optionalKey(Schema.NullOr(NonNegativeInt)),
  seed: Schema.optionalKey(Schema.NullOr(Schema.Int)),
  stop: Schema.optionalKey(Stop),
  stream: Schema.optionalKey(Schema.NullOr(Schema.Boolean)),
  stream_options: Schema.optionalKey(Schema.NullOr(Schema.Struct({ include_usage: Schema.optionalKey(Schema.Boolean) }))),
  /** only one choice per request is generated */
  n: Schema.optionalKey(Schema.NullOr(Schema.Literal(1))),
  user: Schema.optionalKey(Schema.String),
  /** extension: live data to fill placeholders in the answer with (formatRAGContext text or JSON) */
  context: Schema.optionalKey(RequestContext),
  /** extension: what to do with placeholders the context cannot fill */
  placeholders: Schema.optionalKey(PlaceholderPolicy)
}

export const ChatCompletionRequest = Schema.Struct({
  ...samplingFields,
  messages: Schema.NonEmptyArray(ChatMessage),
  max_completion_tokens: Schema.optionalKey(Schema.NullOr(PositiveInt))
})
export type ChatCompletionRequest = typeof ChatCompletionRequest.Type

export const CompletionRequest = Schema.Struct({
  ...samplingFields,
  prompt: Schema.Union([Schema.String, Schema.Tuple([Schema.String])])
})
export type CompletionRequest = typeof CompletionRequest.Type

/** OpenAI's defaults where the request leaves a field out. */
export const openAiDefaults = { temperature: 1, top_p: 1, top_k: 0, chatMaxTokens: 512, completionMaxTokens: 16 } as const

export const Usage = Schema.Struct({
  prompt_tokens: Schema.Int,
  completion_tokens: Schema.Int,
  total_tokens: Schema.Int
})
export type Usage = typeof Usage.Type

/** Our additions to OpenAI's objects: what rehydration did and the mean token probability. */
export const ReplyExtras = Schema.Struct({
  placeholders: PlaceholderReport,
  confidence: Schema.Finite
})

/** The fields every OpenAI completion object starts with, and the optional tail of streamed ones. */
const objectHead = { id: Schema.String, created: Schema.Int, model: Schema.String }
const streamedTail = { usage: Schema.optionalKey(Schema.NullOr(Usage)), metadata: Schema.optionalKey(ReplyExtras) }

export const ChatCompletion = Schema.Struct({
  ...objectHead,
  object: Schema.Literal("chat.completion"),
  choices: Schema.Array(Schema.Struct({
    index: Schema.Int,
    message: Schema.Struct({ role: Schema.Literal("assistant"), content: Schema.String }),
    finish_reason: FinishReason
  })),
  usage: Usage,
  metadata: ReplyExtras
})
export type ChatCompletion = typeof ChatCompletion.Type

export const ChatCompletionChunk = Schema.Struct({
  ...objectHead,
  object: Schema.Literal("chat.completion.chunk"),
  choices: Schema.Array(Schema.Struct({
    index: Schema.Int,
    delta: Schema.Struct({ role: Schema.optionalKey(Schema.Literal("assistant")), content: Schema.optionalKey(Schema.String) }),
    finish_reason: Schema.NullOr(FinishReason)
  })),
  ...streamedTail
})
export type ChatCompletionChunk = typeof ChatCompletionChunk.Type

export const Completion = Schema.Struct({
  ...objectHead,
  object: Schema.Literal("text_completion"),
  choices: Schema.Array(Schema.Struct({
    index: Schema.Int,
    text: Schema.String,
    finish_reason: Schema.NullOr(FinishReason),
    logprobs: Schema.Null
  })),
  ...streamedTail
})
export type Completion = typeof Completion.Type

export const ModelCard = Schema.Struct({
  id: Schema.String,
  object: Schema.Literal("model"),
  created: Schema.Int,
  owned_by: Schema.String,
  /** the adapter's base, or null for the base itself */
  parent: Schema.NullOr(Schema.String)
})
export const ModelList = Schema.Struct({ object: Schema.Literal("list"), data: Schema.Array(ModelCard) })
export type ModelList = typeof ModelList.Type

/** The terminator of every OpenAI stream. */
export const sseDone = "[DONE]"

// ---------------------------------------------------------------------------------------------------------------
// The endpoints

/**
 * Every error the server sends has the `ErrorBody` shape; the status says which. A request that fails validation
 * gets 400 with the field named in `error.param` and `detail` (`max_length: Expected an integer, got 1.5`), not
 * HttpApi's empty 400.
 */
const errorAt = (status: number, description: string) =>
  ErrorBody.pipe(HttpApiSchema.status(status), Schema.annotate({ description }))

/** The errors every generating endpoint may answer with. */
const generationErrors = [
  errorAt(400, "the body is not JSON, not UTF-8, or fails validation (the field is named); or the prompt does not fit"),
  errorAt(401, "missing or wrong bearer token (when the server has an API key)"),
  errorAt(403, "a server without an API key answers only loopback Host names (DNS rebinding)"),
  errorAt(404, "the `model` names no loaded adapter"),
  errorAt(413, "the body, or a prompt field, is larger than the server takes (the field is named)"),
  errorAt(415, "a POST that is not application/json, from a server without an API key (a browser's cross-site form)"),
  errorAt(422, "placeholders: refuse, and the answer needs values the context does not hold"),
  errorAt(429, "the queue is full (Retry-After)"),
  errorAt(500, "the generation failed"),
  errorAt(503, "the model is still loading or failed to load (Retry-After)"),
  errorAt(504, "the generation did not finish within the request timeout")
]
const authErrors = [errorAt(401, "missing or wrong bearer token (when the server has an API key)")]

/** The app's contract and the orchestrator probes. */
export class AppGroup extends HttpApiGroup.make("app").add(
  HttpApiEndpoint.post("infer", paths.infer, { payload: InferRequest, success: InferResponse, error: generationErrors })
    .annotate(OpenApi.Description, "The app's question + context -> answer (docs/architecture.md §5)"),
  HttpApiEndpoint.get("health", paths.health, {
    success: HealthResponse,
    error: HealthResponse.pipe(HttpApiSchema.status(503))
  }),
  HttpApiEndpoint.get("ready", paths.ready, { success: HealthResponse, error: HealthResponse.pipe(HttpApiSchema.status(503)) }),
  HttpApiEndpoint.get("live", paths.live, { success: Schema.Struct({ status: Schema.Literal("alive") }) })
) {}

/** OpenAI's API as llama-server and vLLM offer it; `stream: true` answers with server-sent events ending `[DONE]`. */
export class OpenAiGroup extends HttpApiGroup.make("openai").add(
  HttpApiEndpoint.post("chatCompletions", paths.chatCompletions, {
    payload: ChatCompletionRequest,
    success: ChatCompletion,
    error: generationErrors
  }).annotate(OpenApi.Description, "with `stream: true`: text/event-stream of ChatCompletionChunk, then `data: [DONE]`"),
  HttpApiEndpoint.post("completions", paths.completions, {
    payload: CompletionRequest,
    success: Completion,
    error: generationErrors
  }).annotate(OpenApi.Description, "with `stream: true`: text/event-stream of Completion chunks, then `data: [DONE]`"),
  HttpApiEndpoint.get("models", paths.models, { success: ModelList, error: authErrors })
) {}

/** Prometheus metrics (text exposition format 0.0.4). */
export class OpsGroup extends HttpApiGroup.make("ops").add(
  HttpApiEndpoint.get("metrics", paths.metrics, {
    success: Schema.String.pipe(HttpApiSchema.asText({ contentType: "text/plain; version=0.0.4; charset=utf-8" })),
    error: authErrors
  })
) {}

export class ServeApi extends HttpApi.make("finetune-finance-serve")
  .add(AppGroup)
  .add(OpenAiGroup)
  .add(OpsGroup)
  .annotateMerge(OpenApi.annotations({
    title: "finetune-finance inference server",
    description: "The app's /infer contract, OpenAI-compatible /v1/*, probes and Prometheus metrics. " +
      "With an API key, everything but /health, /ready and /live needs `Authorization: Bearer <key>`."
  }))
{}

/** The routes that stay open with an API key set (orchestrator probes). */
export const openPaths: ReadonlySet<string> = new Set([paths.health, paths.ready, paths.live])
