/**
 * The Router's configuration: explicit values (`RouterConfigInput`, everything optional) resolved against
 * defaults, or read from the app's environment names through Effect `Config`
 * (LOCAL_PYTORCH_ENABLED, LOCAL_PYTORCH_URL, GROQ_API_KEY[_SECONDARY|_THIRD|_FOURTH], GEMINI_API_KEY, ...).
 */
import { Config, Effect, Option, Redacted } from "effect"
import { type BreakerSettings, defaultBreakerSettings } from "./CircuitBreaker.ts"
import { type ClassificationSettings, defaultClassificationSettings } from "./Classifier.ts"
import { RouterConfigError } from "./Errors.ts"

/** How a provider is spoken to. */
export type ProviderKind =
  | "local-infer" // our server's POST /infer (the app's contract)
  | "openai" // any OpenAI-compatible POST {baseUrl}/chat/completions (Groq, our server's /v1, vLLM, ...)
  | "gemini" // POST {baseUrl}/models/{model}:generateContent
  | "ollama" // POST {baseUrl}/api/generate

export interface ProviderConfig {
  /** the name reported as `answer.model` and used in chains, metrics and `preferredModel` */
  readonly name: string
  readonly kind: ProviderKind
  readonly baseUrl: string
  /** "" sends no model name (the server's default; local OpenAI-compatible servers) */
  readonly model: string
  /** rotated on 429/401/403; empty for keyless providers (local, Ollama) */
  readonly apiKeys: ReadonlyArray<Redacted.Redacted<string>>
  /** true for the local fine-tuned model: domain queries go here first */
  readonly local: boolean
  /** the `GET {healthUrl}` probed by scheduled health checks (local model only by default) */
  readonly healthPath?: string
  readonly supportsJsonSchema: boolean
  readonly supportsStreaming: boolean
  /** overrides the router-wide per-attempt timeout */
  readonly attemptTimeoutMs?: number
  readonly temperature: number
  readonly maxTokens: number
}

export interface RetrySettings {
  /** retries on the same provider after the first attempt (retryable failures only) */
  readonly maxRetries: number
  readonly baseDelayMs: number
  readonly maxDelayMs: number
  /** 0 = no jitter; 1 = delay drawn uniformly from [0, backoff] */
  readonly jitter: number
}

export interface HealthCheckSettings {
  readonly intervalMs: number
  readonly timeoutMs: number
}

export interface RouterConfig {
  /** distinguishes routers in one process (logs, the `router` metric attribute) */
  readonly name: string
  readonly providers: ReadonlyArray<ProviderConfig>
  /** order tried for domain (finance) queries */
  readonly domainChain: ReadonlyArray<string>
  /** order tried for everything else */
  readonly generalChain: ReadonlyArray<string>
  readonly attemptTimeoutMs: number
  readonly deadlineMs: number
  readonly retry: RetrySettings
  readonly breaker: BreakerSettings
  readonly classification: ClassificationSettings
  /** scheduled `GET /health` of local providers; `undefined` turns it off */
  readonly healthCheck: HealthCheckSettings | undefined
  /** start the next provider if the first has not answered after this long; `undefined` = no hedging */
  readonly hedgeDelayMs: number | undefined
  readonly systemPrompt: string
  /** added to should-I-buy answers that came back without a risk note */
  readonly defaultRiskNote: string | undefined
}

export interface ProviderInput {
  readonly name: string
  readonly kind: ProviderKind
  readonly baseUrl: string
  readonly model?: string
  readonly apiKeys?: ReadonlyArray<string | Redacted.Redacted<string>>
  readonly local?: boolean
  readonly healthPath?: string
  readonly supportsJsonSchema?: boolean
  readonly supportsStreaming?: boolean
  readonly attemptTimeoutMs?: number
  readonly temperature?: number
  readonly maxTokens?: number
}

export interface RouterConfigInput {
  readonly name?: string
  readonly providers: ReadonlyArray<ProviderInput>
  readonly domainChain?: ReadonlyArray<string>
  readonly generalChain?: ReadonlyArray<string>
  readonly attemptTimeoutMs?: number
  readonly deadlineMs?: number
  readonly retry?: Partial<RetrySettings>
  readonly breaker?: Partial<BreakerSettings>
  readonly classification?: Partial<ClassificationSettings>
  readonly healthCheck?: Partial<HealthCheckSettings> | false
  readonly hedgeDelayMs?: number
  readonly systemPrompt?: string
  readonly defaultRiskNote?: string | false
  /**
   * Only for `createRouter` (the Promise facade), whose logs go to the console: the minimum level printed
   * (default "Info"). An Effect app controls the Router's logs with its own logger and log level.
   */
  readonly logLevel?: "All" | "Trace" | "Debug" | "Info" | "Warn" | "Error" | "Fatal" | "None"
}

export const defaultModels: Record<ProviderKind, string> = {
  "local-infer": "finance-lora",
  openai: "llama-3.3-70b-versatile",
  gemini: "gemini-2.0-flash",
  ollama: "llama3.1"
}

export const defaultSystemPrompt =
  "You are a careful financial analysis assistant. Answer from the provided context when it is given, " +
  "say when data is missing, and add a short risk note to anything that could be read as investment advice."

export const defaultRiskNote = "This is not investment advice; prices move and past performance does not predict returns."

const redact = (key: string | Redacted.Redacted<string>) => (typeof key === "string" ? Redacted.make(key) : key)

export const resolveProvider = (p: ProviderInput): ProviderConfig => ({
  name: p.name,
  kind: p.kind,
  baseUrl: p.baseUrl.replace(/\/+$/, ""),
  // a local OpenAI-compatible server answers with its default model when the request names none
  model: p.model ?? ((p.local ?? false) && p.kind === "openai" ? "" : defaultModels[p.kind]),
  apiKeys: (p.apiKeys ?? []).filter((k) => (typeof k === "string" ? k !== "" : true)).map(redact),
  local: p.local ?? p.kind === "local-infer",
  ...(p.healthPath !== undefined ? { healthPath: p.healthPath } : (p.local ?? p.kind === "local-infer") ? { healthPath: "/health" } : {}),
  supportsJsonSchema: p.supportsJsonSchema ?? p.kind !== "local-infer",
  supportsStreaming: p.supportsStreaming ?? p.kind !== "local-infer",
  ...(p.attemptTimeoutMs !== undefined ? { attemptTimeoutMs: p.attemptTimeoutMs } : {}),
  temperature: p.temperature ?? 0.2,
  maxTokens: p.maxTokens ?? (p.kind === "local-infer" ? 512 : 750)
})

const check = (ok: boolean, field: string, detail: string) => {
  if (!ok) throw new RouterConfigError({ field, detail })
}
const nonNegative = (value: number | undefined, field: string) =>
  check(value === undefined || (Number.isFinite(value) && value >= 0), field, `must be a number >= 0, got ${value}`)
const positive = (value: number | undefined, field: string) =>
  check(value === undefined || (Number.isFinite(value) && value > 0), field, `must be a number > 0, got ${value}`)

const kinds: ReadonlyArray<ProviderKind> = ["local-infer", "openai", "gemini", "ollama"]

/**
 * Fills defaults and validates; chains default to local -> other providers in declaration order (domain) and
 * the non-local ones (general). Throws `RouterConfigError` naming the field.
 */
export const resolveConfig = (input: RouterConfigInput): RouterConfig => {
  input.providers.forEach((p, i) => {
    const at = `providers[${i}]`
    check(typeof p.name === "string" && p.name !== "", `${at}.name`, "must be a non-empty string")
    check(kinds.includes(p.kind), `${at}.kind`, `must be one of ${kinds.join(", ")}, got ${JSON.stringify(p.kind)}`)
    let url: URL | undefined
    try {
      url = new URL(p.baseUrl)
    } catch {
      url = undefined
    }
    check(url !== undefined && (url.protocol === "http:" || url.protocol === "https:"), `${at}.baseUrl`, `not an http(s) URL: ${JSON.stringify(p.baseUrl)}`)
    positive(p.attemptTimeoutMs, `${at}.attemptTimeoutMs`)
    positive(p.maxTokens, `${at}.maxTokens`)
    nonNegative(p.temperature, `${at}.temperature`)
  })
  positive(input.attemptTimeoutMs, "attemptTimeoutMs")
  positive(input.deadlineMs, "deadlineMs")
  nonNegative(input.hedgeDelayMs, "hedgeDelayMs")
  nonNegative(input.retry?.maxRetries, "retry.maxRetries")
  nonNegative(input.retry?.baseDelayMs, "retry.baseDelayMs")
  nonNegative(input.retry?.maxDelayMs, "retry.maxDelayMs")
  check(input.retry?.jitter === undefined || (input.retry.jitter >= 0 && input.retry.jitter <= 1), "retry.jitter", `must be between 0 and 1, got ${input.retry?.jitter}`)
  positive(input.breaker?.consecutiveFailures, "breaker.consecutiveFailures")
  positive(input.breaker?.failureRate, "breaker.failureRate")
  positive(input.breaker?.windowMs, "breaker.windowMs")
  positive(input.breaker?.minimumCalls, "breaker.minimumCalls")
  nonNegative(input.breaker?.cooldownMs, "breaker.cooldownMs")
  if (input.healthCheck !== false) {
    positive(input.healthCheck?.intervalMs, "healthCheck.intervalMs")
    positive(input.healthCheck?.timeoutMs, "healthCheck.timeoutMs")
  }
  const providers = input.providers.map(resolveProvider)
  const names = providers.map((p) => p.name)
  const duplicates = names.filter((n, i) => names.indexOf(n) !== i)
  check(duplicates.length === 0, "providers", `duplicate provider name(s): ${duplicates.join(", ")}`)
  const locals = providers.filter((p) => p.local).map((p) => p.name)
  const remotes = providers.filter((p) => !p.local).map((p) => p.name)
  const checkChain = (field: string, chain: ReadonlyArray<string>) => {
    const unknown = chain.filter((n) => !names.includes(n))
    check(unknown.length === 0, field, `unknown provider(s): ${unknown.join(", ")}`)
    return chain
  }
  const health = input.healthCheck
  return {
    name: input.name ?? "router",
    providers,
    domainChain: checkChain("domainChain", input.domainChain ?? [...locals, ...remotes]),
    generalChain: checkChain("generalChain", input.generalChain ?? remotes),
    attemptTimeoutMs: input.attemptTimeoutMs ?? 12_000,
    deadlineMs: input.deadlineMs ?? 30_000,
    retry: { maxRetries: 2, baseDelayMs: 250, maxDelayMs: 4_000, jitter: 0.5, ...input.retry },
    breaker: { ...defaultBreakerSettings, ...input.breaker },
    classification: { ...defaultClassificationSettings, ...input.classification },
    healthCheck: health === false ? undefined : { intervalMs: 15_000, timeoutMs: 2_000, ...health },
    hedgeDelayMs: input.hedgeDelayMs,
    systemPrompt: input.systemPrompt ?? defaultSystemPrompt,
    defaultRiskNote: input.defaultRiskNote === false ? undefined : input.defaultRiskNote ?? defaultRiskNote
  }
}

/** `resolveConfig` as an Effect that fails with `RouterConfigError`. */
export const resolveConfigEffect = (input: RouterConfigInput): Effect.Effect<RouterConfig, RouterConfigError> =>
  Effect.try({
    try: () => resolveConfig(input),
    catch: (e) => (e instanceof RouterConfigError ? e : new RouterConfigError({ field: "<config>", detail: String(e) }))
  })

const optionalString = (name: string) => Config.String(name).pipe(Config.option)
const optionalKey = (name: string) => Config.Redacted(name).pipe(Config.option)

/**
 * The app's environment names (docs/architecture.md §6) plus a few of ours for base URLs, read through Effect
 * `Config` (so a `ConfigProvider` can replace `process.env`).
 *
 * - LOCAL_PYTORCH_ENABLED ("true" enables the local model), LOCAL_PYTORCH_URL (default http://localhost:8000),
 *   LOCAL_PYTORCH_API ("infer" default, or "openai" for our server's /v1/chat/completions, which streams),
 *   LOCAL_PYTORCH_MODEL (with "openai": the adapter name to ask for; default: the server's default model)
 * - GROQ_API_KEY, GROQ_API_KEY_SECONDARY, GROQ_API_KEY_THIRD, GROQ_API_KEY_FOURTH; GROQ_BASE_URL, GROQ_MODEL
 * - GEMINI_API_KEY; GEMINI_BASE_URL, GEMINI_MODEL
 * - OLLAMA_URL (enables Ollama), OLLAMA_MODEL
 * - ROUTER_ATTEMPT_TIMEOUT_MS, ROUTER_DEADLINE_MS, ROUTER_HEDGE_DELAY_MS
 */
export const configFromEnv = Config.all({
  localEnabled: Config.Boolean("LOCAL_PYTORCH_ENABLED").pipe(Config.withDefault(false)),
  localUrl: Config.String("LOCAL_PYTORCH_URL").pipe(Config.withDefault("http://localhost:8000")),
  localApi: Config.Literals(["infer", "openai"], "LOCAL_PYTORCH_API").pipe(Config.withDefault("infer" as const)),
  localModel: optionalString("LOCAL_PYTORCH_MODEL"),
  groqKeys: Config.all([
    optionalKey("GROQ_API_KEY"),
    optionalKey("GROQ_API_KEY_SECONDARY"),
    optionalKey("GROQ_API_KEY_THIRD"),
    optionalKey("GROQ_API_KEY_FOURTH")
  ]),
  groqUrl: Config.String("GROQ_BASE_URL").pipe(Config.withDefault("https://api.groq.com/openai/v1")),
  groqModel: Config.String("GROQ_MODEL").pipe(Config.withDefault(defaultModels.openai)),
  geminiKey: optionalKey("GEMINI_API_KEY"),
  geminiUrl: Config.String("GEMINI_BASE_URL").pipe(
    Config.withDefault("https://generativelanguage.googleapis.com/v1beta")
  ),
  geminiModel: Config.String("GEMINI_MODEL").pipe(Config.withDefault(defaultModels.gemini)),
  ollamaUrl: optionalString("OLLAMA_URL"),
  ollamaModel: Config.String("OLLAMA_MODEL").pipe(Config.withDefault(defaultModels.ollama)),
  attemptTimeoutMs: Config.Int("ROUTER_ATTEMPT_TIMEOUT_MS").pipe(Config.option),
  deadlineMs: Config.Int("ROUTER_DEADLINE_MS").pipe(Config.option),
  hedgeDelayMs: Config.Int("ROUTER_HEDGE_DELAY_MS").pipe(Config.option)
}).pipe(
  Config.map((env): RouterConfigInput => {
    const providers: Array<ProviderInput> = []
    if (env.localEnabled) {
      providers.push(
        env.localApi === "infer"
          ? { name: "local-pytorch", kind: "local-infer", baseUrl: env.localUrl, local: true }
          : {
            name: "local-pytorch",
            kind: "openai",
            baseUrl: `${env.localUrl.replace(/\/+$/, "")}/v1`,
            local: true,
            healthPath: "/health",
            ...(Option.isSome(env.localModel) ? { model: env.localModel.value } : {})
          }
      )
    }
    const groqKeys = env.groqKeys.flatMap((k) => (Option.isSome(k) ? [k.value] : []))
    if (groqKeys.length > 0) {
      providers.push({ name: "groq-llama", kind: "openai", baseUrl: env.groqUrl, model: env.groqModel, apiKeys: groqKeys })
    }
    if (Option.isSome(env.geminiKey)) {
      providers.push({ name: "gemini", kind: "gemini", baseUrl: env.geminiUrl, model: env.geminiModel, apiKeys: [env.geminiKey.value] })
    }
    if (Option.isSome(env.ollamaUrl)) {
      providers.push({ name: "ollama", kind: "ollama", baseUrl: env.ollamaUrl.value, model: env.ollamaModel })
    }
    return {
      providers,
      ...(Option.isSome(env.attemptTimeoutMs) ? { attemptTimeoutMs: env.attemptTimeoutMs.value } : {}),
      ...(Option.isSome(env.deadlineMs) ? { deadlineMs: env.deadlineMs.value } : {}),
      ...(Option.isSome(env.hedgeDelayMs) ? { hedgeDelayMs: env.hedgeDelayMs.value } : {})
    }
  })
)

/** Reads `configFromEnv` and resolves it. */
export const loadConfigFromEnv = Effect.flatMap(configFromEnv, resolveConfigEffect)
