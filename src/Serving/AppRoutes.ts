/**
 * The original app's routes (`POST /infer`, `GET /health`, the orchestrator probes) and the operators' `/metrics`,
 * as HttpApiBuilder groups of the contract in `Api/Api.ts`.
 *
 * `/infer` asks the model with the request as a record (`question`, `context`), rendered by the engine in the layout
 * the served model was trained on (Prompt.servedPromptFor); the reply's metadata names that layout.
 */
import { Effect } from "effect"
import { HttpServerResponse } from "effect/http"
import { HttpApiBuilder } from "effect/http-api"
import * as Api from "../Api/Api.ts"
import { respond } from "./ApiFailure.ts"
import type { RequestKit } from "./RequestKit.ts"
import { contextText } from "../Dataset/PromptFormat.ts"

export interface AppRouteOptions {
  /** reported as `model_version` by `/infer` (default: the model id) */
  readonly modelVersion?: string | undefined
}

const inferWith = (kit: RequestKit, options: AppRouteOptions) =>
  Effect.gen(function*() {
    const started = performance.now()
    const body = yield* kit.readBody(Api.InferRequest)
    // the record's context as training renders it (Dataset/PromptFormat.contextText): text, or the app's JSON
    const context = contextText(body.context)
    yield* kit.checkPromptBytes("question", body.question, context)
    const maxLength = body.max_length ?? Api.inferDefaults.max_length
    const result = yield* kit.run({
      model: body.model,
      prompt: { _tag: "Record", context, question: body.question },
      maxTokens: maxLength,
      maxTotalTokens: { tokens: maxLength, field: "max_length" },
      temperature: body.temperature ?? Api.inferDefaults.temperature,
      topK: body.top_k ?? Api.inferDefaults.top_k,
      topP: body.top_p ?? Api.inferDefaults.top_p,
      seed: body.seed
    })
    const filled = yield* kit.finish(result.text.trim(), body.context, body.placeholders ?? kit.defaultPolicy)
    return {
      answer: filled.text,
      confidence: result.confidence,
      model_version: options.modelVersion ?? result.model,
      latency_ms: Math.round((performance.now() - started) * 100) / 100,
      metadata: {
        model: result.model,
        prompt_tokens: result.promptTokens,
        completion_tokens: result.completionTokens,
        finish_reason: result.finishReason,
        raw_answer: result.text,
        placeholders: filled.report,
        ...(result.layout === undefined ? {} : { prompt_layout: result.layout })
      }
    } satisfies Api.InferResponse
  })

const healthWith = (kit: RequestKit) =>
  Effect.gen(function*() {
    const state = yield* kit.engine.state
    switch (state._tag) {
      case "Ready":
        return { status: "healthy", model_loaded: true } satisfies Api.HealthResponse
      case "Loading":
        return HttpServerResponse.jsonUnsafe({ status: "loading", model_loaded: false, detail: "Model not loaded" } satisfies Api.HealthResponse, { status: 503, headers: { "retry-after": "5" } })
      case "Failed":
        return HttpServerResponse.jsonUnsafe({ status: "failed", model_loaded: false, detail: state.error.message } satisfies Api.HealthResponse, { status: 503 })
    }
  })

const metricsTextWith = (kit: RequestKit) =>
  Effect.gen(function*() {
    const [stats, state] = yield* Effect.all([kit.engine.stats, kit.engine.state])
    const text = yield* kit.metrics.render({
      queued: stats.queued,
      active: stats.active,
      adapters: state._tag === "Ready" ? state.models.filter((m) => m.adapterPath !== undefined).length : 0,
      loaded: state._tag === "Ready"
    })
    // set here, not by the schema's encoder: Prometheus reads the version parameter
    return HttpServerResponse.text(text, { contentType: "text/plain; version=0.0.4; charset=utf-8" })
  })

/**
 * The app group. `/infer` is raw: it reads and validates the body with the contract's schemas itself, so a bad body
 * gets a 400 that names the field (HttpApi's own decoding answers an empty 400).
 */
export const appHandlers = (kit: RequestKit, options: AppRouteOptions) => {
  const infer = inferWith(kit, options)
  const health = healthWith(kit)
  return HttpApiBuilder.group(Api.ServeApi, "app", (h) =>
    h.handleRaw("infer", () => respond(infer))
      .handle("health", () => health)
      .handle("ready", () => health)
      .handle("live", () => Effect.succeed({ status: "alive" as const })))
}

export const opsHandlers = (kit: RequestKit) => {
  const metricsText = metricsTextWith(kit)
  return HttpApiBuilder.group(Api.ServeApi, "ops", (h) => h.handle("metrics", () => metricsText))
}
