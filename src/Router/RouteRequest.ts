/**
 * One routed request from start to answer, minus the calls: validating and classifying it, planning its chain,
 * its per-request state (attempts, deadline), and assembling the answer (annotations, fallback metadata) or the
 * `AllProvidersUnavailable` failure.
 */
import { Clock, Effect, Schema } from "effect"
import type { HttpClient } from "effect/http"
import { RagContext, renderRagContext } from "../Dataset/RagContext.ts"
import { type Classification, classify } from "./Classifier.ts"
import { AllProvidersUnavailable, type Attempt, InvalidRouteRequest, type ProviderFailure } from "./Errors.ts"
import type { ProviderState } from "./ProviderBreakers.ts"
import type * as Providers from "./Providers.ts"
import type { RouterConfig } from "./RouterConfig.ts"
import type { RouterMetrics } from "./RouterMetrics.ts"
import type { RouteAnswer, RouteContext, RouteOptions } from "./RouteTypes.ts"
import { extractAnnotations, type Plan, planChain, UnknownProvider } from "./Routing.ts"

/** What every part of one router shares: its config, metrics, breakers and the two HTTP paths. */
export interface RouterCore {
  readonly config: RouterConfig
  readonly metrics: RouterMetrics
  readonly providers: ReadonlyMap<string, ProviderState>
  /** answers go through plain `fetch` (see Providers.complete) */
  readonly fetch: Providers.Fetch
  /** streams and health checks go through Effect's HttpClient */
  readonly client: HttpClient.HttpClient
}

export interface RequestState {
  readonly requestId: string
  readonly attempts: Array<Attempt>
  readonly deadlineAt: number
  readonly attemptTimeoutMs: number
}

export interface Prepared {
  readonly classification: Classification
  readonly plan: Plan
  readonly chain: ReadonlyArray<ProviderState>
  readonly prompt: Providers.ProviderPrompt
  readonly st: RequestState
  readonly start: number
}

export type CallResult = { readonly completion: Providers.Completion; readonly provider: ProviderState }

export const keyLabel = (i: number | undefined) => (i === undefined ? {} : { key: `key#${i + 1}` })

/** The attempt record of a failed call. */
export const failedAttempt = (provider: string, keyIndex: number | undefined, failure: ProviderFailure, durationMs: number): Attempt => ({
  provider,
  ...keyLabel(keyIndex),
  outcome: failure.kind,
  ...(failure.status !== undefined ? { status: failure.status } : {}),
  durationMs,
  detail: failure.detail
})

/** Adds an attempt to the request's list and to the provider's metrics. */
export const recordAttempt = (metrics: RouterMetrics, st: RequestState, attempt: Attempt) =>
  Effect.suspend(() => {
    st.attempts.push(attempt)
    return metrics.attempt(attempt.provider, attempt.outcome, attempt.durationMs)
  })

/** Fails the request with every attempt made so far, counted as `unavailable`. */
export const unavailable = (metrics: RouterMetrics, st: RequestState, reason: string) =>
  Effect.andThen(
    metrics.request("unavailable"),
    Effect.fail(new AllProvidersUnavailable({ requestId: st.requestId, reason, attempts: [...st.attempts] }))
  )

const decodeRagContext = Schema.decodeUnknownResult(RagContext)

const renderContext = (context: unknown): Effect.Effect<string, InvalidRouteRequest> => {
  if (context === undefined || context === null) return Effect.succeed("")
  if (typeof context === "string") return Effect.succeed(context)
  const decoded = decodeRagContext(context, { errors: "first" })
  if (decoded._tag === "Success") return Effect.succeed(renderRagContext(decoded.success))
  const issue = decoded.failure.message.split("\n")
  return Effect.fail(new InvalidRouteRequest({ field: "context", detail: issue.join(" ") }))
}

/** Validates and classifies a query, plans its chain and starts its clock; calls no provider. */
export const prepare = Effect.fnUntraced(function*(
  core: RouterCore,
  query: string,
  context: RouteContext,
  options: RouteOptions,
  stream: boolean
) {
  const { config } = core
  if (query.trim() === "") return yield* new InvalidRouteRequest({ field: "query", detail: "must not be empty" })
  const contextText = yield* renderContext(context)
  const classification = classify({ query, context }, config.classification)
  const plan = yield* Effect.try({
    try: () => planChain(config, classification, { preferredModel: options.preferredModel, jsonSchema: options.jsonSchema, stream }),
    catch: (e) => new InvalidRouteRequest({ field: "preferredModel", detail: e instanceof UnknownProvider ? e.message : String(e) })
  })
  const prompt: Providers.ProviderPrompt = {
    system: options.systemPrompt ?? config.systemPrompt,
    question: query,
    context: contextText,
    jsonSchema: options.jsonSchema,
    maxTokens: options.maxTokens,
    temperature: options.temperature,
    topK: options.topK,
    topP: options.topP
  }
  const now = yield* Clock.currentTimeMillis
  const st: RequestState = {
    requestId: options.requestId ?? crypto.randomUUID(),
    attempts: [],
    deadlineAt: now + (options.deadlineMs ?? config.deadlineMs),
    attemptTimeoutMs: options.attemptTimeoutMs ?? config.attemptTimeoutMs
  }
  const chain = plan.chain.map((p) => core.providers.get(p.name)!)
  return { classification, plan, chain, prompt, st, start: now } satisfies Prepared
})

/** The answer of `winner`, with its annotations and why the chain went past its first provider (if it did). */
export const buildAnswer = (
  config: RouterConfig,
  prepared: Prepared,
  winner: CallResult,
  text: string,
  end: number,
  hedged: boolean
): RouteAnswer => {
  const { classification, plan, chain, st } = prepared
  const first = chain[0]!.config.name
  const provider = winner.provider.config.name
  const fallback = provider !== first
  const firstFailure = st.attempts.find((a) => a.provider === first && a.outcome !== "success")
  const annotations = extractAnnotations(text)
  const riskNote = annotations.riskNote ??
    (classification.intents.includes("should_i_buy") ? config.defaultRiskNote : undefined)
  return {
    answer: text,
    model: provider,
    latency: end - prepared.start,
    ...(annotations.citations !== undefined ? { citations: annotations.citations } : {}),
    ...(riskNote !== undefined ? { riskNote } : {}),
    metadata: {
      requestId: st.requestId,
      provider,
      ...(winner.completion.modelVersion !== undefined ? { modelVersion: winner.completion.modelVersion } : {}),
      ...(winner.completion.confidence !== undefined ? { confidence: winner.completion.confidence } : {}),
      ...(winner.completion.usage !== undefined ? { usage: winner.completion.usage } : {}),
      reason: plan.reason,
      classification,
      chain: chain.map((p) => p.config.name),
      attempts: [...st.attempts],
      fallback,
      ...(fallback ? { originalModel: first } : {}),
      ...(fallback && firstFailure !== undefined
        ? { fallbackReason: `${first}: ${firstFailure.outcome}${firstFailure.detail === undefined ? "" : ` (${firstFailure.detail})`}` }
        : {}),
      hedged
    }
  }
}
