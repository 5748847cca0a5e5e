/**
 * The Router's typed failures. A provider call fails with a `ProviderFailure` whose `kind` (a `FailureKind`, the
 * Router's own vocabulary) decides everything downstream: whether it is retried, whether the key is rotated, which
 * breaker it feeds. It never reaches a command's edge alone (the router wraps it); the errors that do carry an
 * `ErrorKind` (Shared/Errors.ts) like every other stage's.
 */
import { Schema } from "effect"
import type { ErrorKind } from "../Shared/Errors.ts"

/** Why one provider attempt failed. */
export const FailureKind = Schema.Literals([
  "timeout", // the per-attempt timeout fired
  "connection", // refused, reset, DNS: the request never got an HTTP answer
  "rate_limited", // 429
  "auth", // 401 / 403: this key is bad, another key may work
  "server", // 5xx or 408
  "bad_request", // other 4xx: the same request will fail again here
  "malformed", // 2xx with a body that is not the provider's documented shape
  "circuit_open", // skipped: the provider's (or every key's) breaker is open
  "deadline", // the overall deadline left no time for this attempt
  "unsupported" // the provider cannot serve this request (e.g. a JSON schema on /infer)
])
export type FailureKind = typeof FailureKind.Type

/** Failures worth trying again on the same provider (after backoff). */
export const isRetryable = (kind: FailureKind): boolean =>
  kind === "timeout" || kind === "connection" || kind === "rate_limited" || kind === "server"

/** Failures that belong to one API key rather than to the provider: rotate to the next key. */
export const isKeyFailure = (kind: FailureKind): boolean => kind === "rate_limited" || kind === "auth"

/** Failures that say the provider itself is unhealthy (they feed its breaker). */
export const isProviderFailure = (kind: FailureKind): boolean =>
  kind === "timeout" || kind === "connection" || kind === "server" || kind === "malformed"

export class ProviderFailure extends Schema.TaggedError<ProviderFailure>()("ProviderFailure", {
  provider: Schema.String,
  kind: FailureKind,
  status: Schema.optionalKey(Schema.Int),
  /** from a Retry-After header, in milliseconds */
  retryAfterMs: Schema.optionalKey(Schema.Finite),
  detail: Schema.String
}) {
  override get message() {
    return `${this.provider}: ${this.kind}${this.status === undefined ? "" : ` (HTTP ${this.status})`}: ${this.detail}`
  }
}

/** One attempt as recorded in `metadata.attempts` (keys are named by index, never by value). */
export const Attempt = Schema.Struct({
  provider: Schema.String,
  key: Schema.optionalKey(Schema.String),
  outcome: Schema.Union([Schema.Literal("success"), Schema.Literal("interrupted"), FailureKind]),
  status: Schema.optionalKey(Schema.Int),
  durationMs: Schema.Finite,
  detail: Schema.optionalKey(Schema.String)
})
export type Attempt = typeof Attempt.Type

/** Every provider in the chain failed, was skipped, or the deadline ran out. */
export class AllProvidersUnavailable extends Schema.TaggedError<AllProvidersUnavailable>()(
  "AllProvidersUnavailable",
  {
    requestId: Schema.String,
    reason: Schema.String,
    attempts: Schema.Array(Attempt)
  }
) {
  get kind(): ErrorKind {
    return "unavailable"
  }
  override get message() {
    const tried = this.attempts.map((a) => `${a.provider}:${a.outcome}`).join(", ")
    return `all providers unavailable (${this.reason})${tried === "" ? "" : `; attempts: ${tried}`}`
  }
}

/** A stream failed after its first token: the text already delivered cannot be taken back, so no fallback. */
export class StreamInterrupted extends Schema.TaggedError<StreamInterrupted>()("StreamInterrupted", {
  requestId: Schema.String,
  provider: Schema.String,
  tokensDelivered: Schema.Int,
  cause: ProviderFailure
}) {
  get kind(): ErrorKind {
    return "failure"
  }
  override get message() {
    return `stream from ${this.provider} failed after ${this.tokensDelivered} token(s): ${this.cause.message}`
  }
}

/** The caller's request is unusable (empty query, unknown preferred model). */
export class InvalidRouteRequest extends Schema.TaggedError<InvalidRouteRequest>()("InvalidRouteRequest", {
  field: Schema.String,
  detail: Schema.String
}) {
  get kind(): ErrorKind {
    return "input"
  }
  override get message() {
    return `invalid request field "${this.field}": ${this.detail}`
  }
}

export type RouteError = AllProvidersUnavailable | InvalidRouteRequest
export type StreamError = RouteError | StreamInterrupted

/** The router's configuration is unusable; `field` names the offending setting (e.g. `providers[1].baseUrl`). */
export class RouterConfigError extends Schema.TaggedError<RouterConfigError>()("RouterConfigError", {
  field: Schema.String,
  detail: Schema.String
}) {
  get kind(): ErrorKind {
    return "data"
  }
  override get message() {
    return `router config: ${this.field}: ${this.detail}`
  }
}
