/**
 * The Router's public request and answer shapes, apart from the service so that the modules that build them
 * (RouteRequest, FallbackChain) need not import the service. ModelRouter re-exports them.
 */
import type { RagContext } from "../Dataset/RagContext.ts"
import type { BreakerSnapshot } from "./CircuitBreaker.ts"
import type { Classification } from "./Classifier.ts"
import type { Attempt } from "./Errors.ts"
import type * as Providers from "./Providers.ts"
import type { Citation, Plan } from "./Routing.ts"

/** The context of a query: the app's structured object (`symbol, prices, fundamentals, news, holdings, …`) or text. */
export type RouteContext = string | RagContext | undefined

export interface RouteOptions {
  readonly systemPrompt?: string
  /** ask for JSON matching this JSON Schema; only providers that support it are tried */
  readonly jsonSchema?: unknown
  /** a provider name tried first (`local-pytorch`, `groq-llama`, `gemini`, ...) */
  readonly preferredModel?: string
  /** echoed in metadata and every log line; generated when absent */
  readonly requestId?: string
  readonly deadlineMs?: number
  readonly attemptTimeoutMs?: number
  /** overrides the config; `false` turns hedging off for this request */
  readonly hedgeDelayMs?: number | false
  readonly maxTokens?: number
  readonly temperature?: number
  readonly topK?: number
  readonly topP?: number
}

export interface RouteMetadata {
  readonly requestId: string
  /** the provider that answered */
  readonly provider: string
  readonly modelVersion?: string
  readonly confidence?: number
  /** token counts reported by the provider (OpenAI `usage`, Gemini `usageMetadata`, Ollama counts, our /infer) */
  readonly usage?: Providers.Usage
  /** why the chain was what it was (classification, overrides, filters) */
  readonly reason: string
  readonly classification: Classification
  readonly chain: ReadonlyArray<string>
  readonly attempts: ReadonlyArray<Attempt>
  readonly fallback: boolean
  /** the first provider of the chain, when another one answered */
  readonly originalModel?: string
  /** why the first provider did not answer, when another one did */
  readonly fallbackReason?: string
  readonly hedged: boolean
}

/** The app's answer shape (`routeAIQuery`), plus full metadata. */
export interface RouteAnswer {
  readonly answer: string
  /** the provider name, e.g. `local-pytorch`, `groq-llama`, `gemini` */
  readonly model: string
  /** milliseconds from the call to the answer */
  readonly latency: number
  readonly citations?: ReadonlyArray<Citation>
  readonly riskNote?: string
  readonly metadata: RouteMetadata
}

export type RouteStreamEvent =
  | { readonly type: "token"; readonly provider: string; readonly text: string }
  | { readonly type: "done"; readonly answer: RouteAnswer }

export interface Explanation {
  readonly classification: Classification
  readonly plan: { readonly chain: ReadonlyArray<string>; readonly reason: string; readonly excluded: Plan["excluded"] }
  readonly breakers: Readonly<Record<string, BreakerSnapshot>>
}
