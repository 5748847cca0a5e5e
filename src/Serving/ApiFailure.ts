/**
 * The server's failures as clients see them: `ApiFailure` (status, OpenAI-shaped body, `Retry-After`), the mapping
 * of the engine's errors onto it, and body decoding whose 400 names the field. No stack trace ever reaches a client.
 */
import { Effect, Result, Schema } from "effect"
import { HttpServerResponse } from "effect/http"
import type * as Api from "../Api/Api.ts"
import type { GenerateError } from "./InferenceEngine.ts"
import { type ErrorKind, fieldIssues, issueField } from "../Shared/Errors.ts"

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

export const failure = (status: number, message: string, type: string, extra: { param?: string; code?: string; retryAfterSeconds?: number } = {}) =>
  new ApiFailure({
    status,
    message,
    type,
    param: extra.param ?? null,
    code: extra.code ?? null,
    ...(extra.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: extra.retryAfterSeconds })
  })

export const fromEngineError = (error: GenerateError): ApiFailure => {
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

export const errorBody = (f: ApiFailure): Api.ErrorBody => ({
  error: { message: f.message, type: f.type, param: f.param, code: f.code },
  detail: f.message
})

export const failureResponse = (f: ApiFailure) =>
  HttpServerResponse.jsonUnsafe(errorBody(f), {
    status: f.status,
    headers: {
      ...(f.retryAfterSeconds === undefined ? {} : { "retry-after": String(f.retryAfterSeconds) }),
      ...(f.status === 401 ? { "www-authenticate": "Bearer" } : {})
    }
  })

/** Turns a handler's `ApiFailure` into its response (status, `Retry-After`, `WWW-Authenticate`). */
export const respond = <A, R>(effect: Effect.Effect<A, ApiFailure, R>): Effect.Effect<A | HttpServerResponse.HttpServerResponse, never, R> =>
  Effect.catchTag(effect, "ApiFailure", (f) => Effect.succeed(failureResponse(f)))

/** Parses and validates a JSON body; the error names the field. */
export const decodeBody = <S extends Schema.Decoder<unknown>>(schema: S, text: string): Result.Result<S["Type"], ApiFailure> => {
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
