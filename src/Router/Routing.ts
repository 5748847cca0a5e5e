/**
 * The Router's pure decisions, kept apart from I/O so they can be property-tested: which providers to try
 * in which order (and why), how long to back off before a retry, and what to lift out of an answer
 * (citations, risk note).
 */
import type { Classification } from "./Classifier.ts"
import type { ProviderConfig, RetrySettings, RouterConfig } from "./RouterConfig.ts"

export interface PlanOptions {
  readonly preferredModel?: string | undefined
  readonly jsonSchema?: unknown
  readonly stream?: boolean | undefined
}

export interface Plan {
  readonly chain: ReadonlyArray<ProviderConfig>
  /** why this chain: the classification verdict, overrides and filters applied */
  readonly reason: string
  /** providers left out of the chain, with the reason */
  readonly excluded: ReadonlyArray<{ readonly provider: string; readonly reason: string }>
}

export class UnknownProvider extends Error {
  readonly provider: string
  constructor(provider: string, known: ReadonlyArray<string>) {
    super(`unknown provider "${provider}" (configured: ${known.join(", ") || "none"})`)
    this.provider = provider
  }
}

/**
 * Domain queries take `domainChain` (local model first), others `generalChain`; `preferredModel` moves a
 * provider to the front (even one outside the chain); JSON-schema and streaming requests keep only
 * providers that support them. Breaker state is not consulted here: the Router skips open breakers while
 * walking the chain, and records the skip.
 */
// built once per config: planning runs on every request
const providersByName = new WeakMap<RouterConfig, ReadonlyMap<string, ProviderConfig>>()
const byNameOf = (config: RouterConfig): ReadonlyMap<string, ProviderConfig> => {
  let byName = providersByName.get(config)
  if (byName === undefined) {
    byName = new Map(config.providers.map((p) => [p.name, p]))
    providersByName.set(config, byName)
  }
  return byName
}

export const planChain = (config: RouterConfig, classification: Classification, options: PlanOptions): Plan => {
  const byName = byNameOf(config)
  const base = classification.domain ? config.domainChain : config.generalChain
  const reasons: Array<string> = [
    `${classification.domain ? "domain" : "general"} query (${classification.explanation}) -> ${classification.domain ? "domainChain" : "generalChain"}`
  ]
  let names = [...base]
  if (options.preferredModel !== undefined) {
    if (!byName.has(options.preferredModel)) throw new UnknownProvider(options.preferredModel, [...byName.keys()])
    names = [options.preferredModel, ...names.filter((n) => n !== options.preferredModel)]
    reasons.push(`preferredModel=${options.preferredModel} first`)
  }
  const excluded: Array<{ provider: string; reason: string }> = []
  const chain: Array<ProviderConfig> = []
  for (const name of names) {
    const p = byName.get(name)!
    if (options.jsonSchema !== undefined && !p.supportsJsonSchema) {
      excluded.push({ provider: name, reason: "does not support JSON-schema output" })
    } else if (options.stream === true && !p.supportsStreaming) {
      excluded.push({ provider: name, reason: "does not stream" })
    } else {
      chain.push(p)
    }
  }
  if (excluded.length > 0) reasons.push(`excluded ${excluded.map((e) => `${e.provider} (${e.reason})`).join(", ")}`)
  reasons.push(`chain ${chain.map((p) => p.name).join(" > ") || "(empty)"}`)
  return { chain, reason: reasons.join("; "), excluded }
}

/**
 * Delay before retry number `retry` (0-based): exponential `base * 2^retry` capped at `maxDelayMs`, with
 * `jitter` of it drawn at random (`random` in [0, 1)), and never less than the server's Retry-After.
 */
export const backoffDelay = (
  settings: RetrySettings,
  retry: number,
  random: number,
  retryAfterMs: number | undefined
): number => {
  const exp = Math.min(settings.maxDelayMs, settings.baseDelayMs * 2 ** retry)
  const jittered = exp * (1 - settings.jitter) + exp * settings.jitter * random
  return Math.max(retryAfterMs ?? 0, Math.round(jittered))
}

export interface Citation {
  readonly source: string
  readonly timestamp?: string
}

export interface Annotations {
  readonly citations?: ReadonlyArray<Citation>
  readonly riskNote?: string
}

const riskLine = /^\s*(?:\*\*)?(?:risk note|risk|disclaimer)(?:\*\*)?\s*:\s*(?:\*\*)?\s*(.+)$/im
const sourcesLine = /^\s*(?:\*\*)?(?:sources?|citations?)(?:\*\*)?\s*:\s*(?:\*\*)?\s*(.+)$/im
const citationPart = /^(.*?)(?:\s*[([]\s*([0-9]{4}-[0-9]{2}-[0-9]{2}[^)\]]*|<TIMESTAMP>)\s*[)\]])?$/

const fromJson = (text: string): Annotations | undefined => {
  const trimmed = text.trim()
  if (!trimmed.startsWith("{")) return undefined
  try {
    const value = JSON.parse(trimmed) as Record<string, unknown>
    const risk = value["riskNote"] ?? value["risk_note"]
    const cites = Array.isArray(value["citations"]) ? value["citations"] : undefined
    const citations = cites?.flatMap((c): Array<Citation> => {
      if (typeof c === "string") return [{ source: c }]
      if (typeof c === "object" && c !== null && typeof (c as Record<string, unknown>)["source"] === "string") {
        const ts = (c as Record<string, unknown>)["timestamp"]
        return [{ source: (c as { source: string }).source, ...(typeof ts === "string" ? { timestamp: ts } : {}) }]
      }
      return []
    })
    return {
      ...(citations !== undefined && citations.length > 0 ? { citations } : {}),
      ...(typeof risk === "string" && risk !== "" ? { riskNote: risk } : {})
    }
  } catch {
    return undefined
  }
}

/**
 * Citations and a risk note, from a JSON answer (`citations`, `riskNote`/`risk_note`) or from
 * `Sources: a; b (2024-01-02)` and `Risk note: ...` lines of a text answer.
 */
export const extractAnnotations = (text: string): Annotations => {
  const json = fromJson(text)
  if (json !== undefined) return json
  const risk = riskLine.exec(text)?.[1]?.trim()
  const sources = sourcesLine.exec(text)?.[1]
  const citations = sources
    ?.split(/;|\s\|\s/)
    .map((part) => part.trim())
    .filter((part) => part !== "")
    .map((part): Citation => {
      const m = citationPart.exec(part)
      const source = (m?.[1] ?? part).trim()
      return m?.[2] !== undefined ? { source, timestamp: m[2].trim() } : { source }
    })
  return {
    ...(citations !== undefined && citations.length > 0 ? { citations } : {}),
    ...(risk !== undefined && risk !== "" ? { riskNote: risk } : {})
  }
}
