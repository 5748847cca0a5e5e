/**
 * The inference engine: one base GGUF loaded once through node-llama-cpp, any number of llama.cpp LoRA adapters
 * over it, and a bounded pool of generation slots.
 *
 * llama.cpp applies LoRA adapters per context, so each served model (the base, and each adapter) gets its own
 * context over the one loaded base; each context holds `parallel` sequences, which node-llama-cpp evaluates in
 * shared batches. Admission control is global: at most `parallel` generations run at once, at most `queueSize`
 * wait, and anything beyond that is refused at once (`EngineOverloaded`, the server's 429) rather than piling up.
 *
 * A generation is an interruptible Effect: interrupting it (client gone, timeout, shutdown) stops the llama.cpp
 * generator after the token in flight and puts the sequence back in the pool.
 */
import { Context, Deferred, Effect, Fiber, Layer, Queue, Ref, Schema, Semaphore } from "effect"
import type { LlamaContext, LlamaContextSequence, LlamaModel, Token } from "node-llama-cpp"
import { LlamaCpp, type ThreadState } from "../Model/LlamaCpp.ts"
import { NodeServices } from "@effect/platform-node"
import * as Path from "node:path"
import type { FinishReason } from "../Api/Api.ts"
import * as OffThreadTokenizer from "./OffThreadTokenizer.ts"
import { preflightGgufAdapter } from "./Preflight.ts"
import { type ErrorKind, kindField } from "../Shared/Errors.ts"
import { type LayoutChoice, type PromptInput, renderPrompt, type ServedPrompt, servedPromptFor } from "./Prompt.ts"
import { defaultSystemPrompt, PromptLayout } from "../Dataset/PromptFormat.ts"
import type { TrainedPrompt } from "../Training/AdapterPrompt.ts"

// ---------------------------------------------------------------------------------------------------------------
// Errors

export class EngineNotReady extends Schema.TaggedError<EngineNotReady>()("EngineNotReady", {
  state: Schema.Literals(["loading", "failed", "stopped"]),
  detail: Schema.String
}) {
  get kind(): ErrorKind {
    return "unavailable"
  }
  override get message() {
    return this.state === "loading" ? "the model is still loading" : `the model is not available: ${this.detail}`
  }
}

export class EngineOverloaded extends Schema.TaggedError<EngineOverloaded>()("EngineOverloaded", {
  active: Schema.Int,
  queued: Schema.Int,
  retryAfterSeconds: Schema.Int
}) {
  get kind(): ErrorKind {
    return "unavailable"
  }
  override get message() {
    return `server busy: ${this.active} generations running and ${this.queued} queued; retry after ${this.retryAfterSeconds} s`
  }
}

export class UnknownModel extends Schema.TaggedError<UnknownModel>()("UnknownModel", {
  model: Schema.String,
  available: Schema.Array(Schema.String)
}) {
  get kind(): ErrorKind {
    return "input"
  }
  override get message() {
    return `model "${this.model}" is not loaded; available: ${this.available.join(", ")}`
  }
}

export class PromptTooLong extends Schema.TaggedError<PromptTooLong>()("PromptTooLong", {
  /** the request field that sets the limit */
  field: Schema.String,
  promptTokens: Schema.Int,
  limit: Schema.Int
}) {
  get kind(): ErrorKind {
    return "input"
  }
  override get message() {
    return `${this.field}: the prompt is ${this.promptTokens} tokens, which leaves no room to answer within ${this.limit} tokens`
  }
}

export class GenerationFailed extends Schema.TaggedError<GenerationFailed>()("GenerationFailed", {
  detail: Schema.String
}) {
  get kind(): ErrorKind {
    return "failure"
  }
  override get message() {
    return `generation failed: ${this.detail}`
  }
}

export class ModelLoadFailed extends Schema.TaggedError<ModelLoadFailed>()("ModelLoadFailed", {
  path: Schema.String,
  detail: Schema.String,
  /** `unavailable` (llama.cpp could not load it), `input` (a missing file), `data` (an adapter that does not fit) */
  kind: kindField("unavailable")
}) {
  override get message() {
    return `could not load ${this.path}: ${this.detail}`
  }
}

export type GenerateError = EngineNotReady | EngineOverloaded | UnknownModel | PromptTooLong | GenerationFailed

// ---------------------------------------------------------------------------------------------------------------
// Options and values

export interface AdapterSpec {
  /** the name clients use in the OpenAI `model` field */
  readonly name: string
  /** a llama.cpp LoRA adapter GGUF (see Export.ts) */
  readonly path: string
  /** llama.cpp's user scale (default 1) */
  readonly scale?: number
}

export interface EngineOptions {
  /** the base model GGUF */
  readonly base: string
  readonly adapters?: ReadonlyArray<AdapterSpec>
  /** the base's model id (default: its file name without `.gguf`) */
  readonly baseName?: string
  /** the model answering requests that name none (default: the first adapter, else the base) */
  readonly defaultModel?: string
  /** generations that run at once; also the sequences per context (default 4) */
  readonly parallel?: number
  /** requests that may wait for a slot; more are refused (default 32) */
  readonly queueSize?: number
  /** tokens per sequence, prompt and answer together (default: 2048, at most the model's training context) */
  readonly contextSize?: number
  /** llama.cpp CPU threads in all (default: the thread policy, `chooseThreads` in Model/LlamaCpp.ts) */
  readonly threads?: number | undefined
  /** "auto": node-llama-cpp's CUDA/Vulkan/Metal build where a GPU is present; "off": CPU only */
  readonly gpu?: "auto" | "off"
  /** the layout `/infer` renders: `auto` (default) follows each model's record (`Prompt.servedPromptFor`) */
  readonly layout?: LayoutChoice | undefined
  /** runs before loading starts, while the server already answers (e.g. fetching weights; tests hold it) */
  readonly beforeLoad?: Effect.Effect<void>
}

export interface ModelInfo {
  readonly id: string
  /** the adapter file, or undefined for the base */
  readonly adapterPath: string | undefined
  readonly parent: string | undefined
  /** llama.cpp's threads when the models finished loading (they follow the machine's load in auto mode) */
  readonly threads: ThreadState
  /** the layout `/infer` prompts are rendered in for this model, and why */
  readonly prompt: ServedPrompt
}

export interface GenerateRequest {
  readonly model?: string | undefined
  readonly prompt: PromptInput
  /** most answer tokens */
  readonly maxTokens: number
  /** most prompt + answer tokens, with the request field that set it (for `/infer`'s `max_length`) */
  readonly maxTotalTokens?: { readonly tokens: number; readonly field: string } | undefined
  /** 0 = greedy */
  readonly temperature: number
  /** 0 = off */
  readonly topK: number
  /** 1 = off */
  readonly topP: number
  readonly seed?: number | undefined
  /** stop strings besides the prompt layout's own (a `Record` prompt ends at its layout's end of turn) */
  readonly stop?: ReadonlyArray<string> | undefined
  /**
   * the client went away: the request leaves the queue, or its generation stops after the token in flight, and
   * `generate` ends interrupted. Honoured even where the caller runs uninterruptibly (as HTTP handlers do).
   */
  readonly signal?: AbortSignal | undefined
}

export interface GenerationResult {
  readonly model: string
  readonly text: string
  readonly finishReason: FinishReason
  readonly promptTokens: number
  readonly completionTokens: number
  /** mean probability of the chosen tokens, after sampling filters (0..1) */
  readonly confidence: number
  readonly durationMs: number
  /** the layout of a `Record` prompt (`/infer`); undefined for chat and raw prompts */
  readonly layout: PromptLayout | undefined
}

export interface GenerateHooks {
  /** the request passed validation and admission (it may still wait for a slot) */
  readonly onAdmitted?: Effect.Effect<void>
  /** answer text as it becomes final (never text that a stop string may still swallow); called synchronously */
  readonly onText?: (text: string) => void
}

export type EngineState =
  | { readonly _tag: "Loading" }
  | { readonly _tag: "Ready"; readonly models: ReadonlyArray<ModelInfo>; readonly defaultModel: string }
  | { readonly _tag: "Failed"; readonly error: ModelLoadFailed }

export interface EngineStats {
  readonly active: number
  readonly queued: number
  readonly parallel: number
  readonly queueSize: number
  readonly completionTokens: number
  readonly generationSeconds: number
  /** llama.cpp's threads now */
  readonly threads: ThreadState
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding helpers (pure)

/** Length of the longest suffix of `text` that is a prefix of some stop string: text that may not be sent yet. */
export const heldBackLength = (text: string, stops: ReadonlyArray<string>): number => {
  let held = 0
  for (const stop of stops) {
    for (let n = Math.min(stop.length - 1, text.length); n > held; n--) {
      if (text.endsWith(stop.slice(0, n))) {
        held = n
        break
      }
    }
  }
  return held
}

/** The earliest occurrence of any stop string, or -1. */
export const firstStopIndex = (text: string, stops: ReadonlyArray<string>): number => {
  let first = -1
  for (const stop of stops) {
    const at = stop === "" ? -1 : text.indexOf(stop)
    if (at >= 0 && (first < 0 || at < first)) first = at
  }
  return first
}

// ---------------------------------------------------------------------------------------------------------------
// The service

interface Served {
  readonly info: ModelInfo
  readonly context: LlamaContext
  readonly pool: Queue.Queue<LlamaContextSequence>
}

interface Loaded {
  readonly model: LlamaModel
  readonly served: ReadonlyMap<string, Served>
  readonly defaultModel: string
  readonly chatTemplate: string | undefined
  /** long prompts are tokenized on a worker thread, so they never hold the event loop */
  readonly tokenizer: OffThreadTokenizer.OffThreadTokenizer
}

/** A request's prompt as the engine feeds it to a model (`InferenceEngine.prompt`). */
export interface PreparedPrompt {
  readonly model: string
  readonly text: string
  readonly tokens: ReadonlyArray<number>
  /** the layout of a `Record` prompt (undefined for chat and raw prompts) */
  readonly layout: PromptLayout | undefined
  readonly stops: ReadonlyArray<string>
}

export class InferenceEngine extends Context.Service<InferenceEngine, {
  readonly state: Effect.Effect<EngineState>
  /** waits until the models are loaded (or failed to) */
  readonly awaitReady: Effect.Effect<ReadonlyArray<ModelInfo>, ModelLoadFailed>
  readonly stats: Effect.Effect<EngineStats>
  /** Generates one answer; the result carries the whole answer, `hooks` see it as it grows. */
  generate(request: GenerateRequest, hooks?: GenerateHooks): Effect.Effect<GenerationResult, GenerateError>
  /** the prompt `generate` would feed the model: its text and tokens (BOS included), layout and stops */
  prompt(request: Pick<GenerateRequest, "model" | "prompt">): Effect.Effect<PreparedPrompt, EngineNotReady | UnknownModel | GenerationFailed>
  /** tokens of a text, for clients that need prompt accounting */
  countTokens(text: string): Effect.Effect<number, EngineNotReady>
}>()("app/Serving/InferenceEngine") {
  /** Loads in the background: the layer is ready at once, the models when `awaitReady` says so. */
  /** needs the process's LlamaCpp runtime (share one between several engines) */
  static readonly layerNoDeps = (options: EngineOptions) =>
    Layer.effect(InferenceEngine, make(options)).pipe(Layer.provide(NodeServices.layer))
  /** with a LlamaCpp runtime of its own, on the GPU unless `gpu: "off"` */
  static readonly layer = (options: EngineOptions) =>
    InferenceEngine.layerNoDeps(options).pipe(
      Layer.provide(Layer.effect(LlamaCpp, LlamaCpp.make(options.gpu === "off" ? "cpu" : "auto")))
    )
}

const isPromptLayout = Schema.is(PromptLayout)

const modelIdOf = (path: string) => Path.basename(path).replace(/\.gguf$/i, "")

const nonEmpty = (text: unknown) => typeof text === "string" && text !== "" ? text : undefined

/** What node-llama-cpp parsed of the base's metadata that serving reads: its chat template and trained prompt. */
const baseMetadataOf = (model: LlamaModel) => {
  const metadata = model.fileInfo.metadata as { tokenizer?: { chat_template?: unknown }; finetune?: { prompt_layout?: unknown; system_prompt?: unknown } }
  const layout = metadata.finetune?.prompt_layout
  const recorded: TrainedPrompt | undefined = isPromptLayout(layout)
    ? { layout, systemPrompt: nonEmpty(metadata.finetune?.system_prompt) ?? defaultSystemPrompt }
    : undefined
  return { chatTemplate: nonEmpty(metadata.tokenizer?.chat_template), recorded }
}

interface ModelSpec {
  readonly id: string
  readonly adapterPath: string | undefined
  readonly parent: string | undefined
  readonly scale: number
  readonly prompt: ServedPrompt
}

/** Compares every adapter with the base (llama.cpp's own checks come late and say little); their recorded prompts. */
const preflightAdapters = (options: EngineOptions) =>
  Effect.forEach(options.adapters ?? [], (adapter) =>
    preflightGgufAdapter(adapter.path, options.base).pipe(
      Effect.map((described) => described.prompt),
      Effect.mapError((e) => new ModelLoadFailed({ path: adapter.path, detail: e.message, kind: e.kind }))
    ))

/** The base and each adapter as a served model, each with the prompt layout its `/infer` renders. */
const modelSpecs = (options: EngineOptions, base: ReturnType<typeof baseMetadataOf>, adapterPrompts: ReadonlyArray<TrainedPrompt | undefined>) => {
  const choice = options.layout ?? "auto"
  const baseId = options.baseName ?? modelIdOf(options.base)
  const specs: ReadonlyArray<ModelSpec> = [
    {
      id: baseId, adapterPath: undefined, parent: undefined, scale: 1,
      prompt: servedPromptFor(choice, { recorded: base.recorded, isAdapter: false, chatTemplate: base.chatTemplate })
    },
    ...(options.adapters ?? []).map((a, i): ModelSpec => ({
      id: a.name, adapterPath: a.path, parent: baseId, scale: a.scale ?? 1,
      prompt: servedPromptFor(choice, { recorded: adapterPrompts[i], isAdapter: true, chatTemplate: base.chatTemplate })
    }))
  ]
  return specs
}

/** One context per served model over the one loaded base, each with a pool of `parallel` sequences. */
const createContexts = Effect.fnUntraced(function*(
  llamaCpp: LlamaCpp["Service"],
  model: LlamaModel,
  specs: ReadonlyArray<ModelSpec>,
  options: EngineOptions,
  parallel: number
) {
  const contextSize = Math.min(options.contextSize ?? 2048, model.trainContextSize)
  const served = new Map<string, Omit<Served, "info"> & { readonly spec: ModelSpec }>()
  for (const spec of specs) {
    if (served.has(spec.id)) {
      return yield* new ModelLoadFailed({ path: spec.adapterPath ?? options.base, detail: `duplicate model name "${spec.id}"`, kind: "input" })
    }
    const context = yield* llamaCpp.createContext(model, {
      sequences: parallel,
      contextSize: contextSize * parallel,
      ...(spec.adapterPath === undefined ? {} : { lora: { adapters: [{ filePath: spec.adapterPath, scale: spec.scale }] } })
    }, options.threads).pipe(
      Effect.mapError((e) => new ModelLoadFailed({ path: spec.adapterPath ?? options.base, detail: e.detail }))
    )
    const pool = yield* Queue.bounded<LlamaContextSequence>(parallel)
    for (let i = 0; i < parallel; i++) Queue.offerUnsafe(pool, context.getSequence())
    served.set(spec.id, { spec, context, pool })
  }
  const threads = yield* llamaCpp.threads
  return new Map<string, Served>([...served].map(([id, { spec, context, pool }]) => [
    id,
    { info: { id, adapterPath: spec.adapterPath, parent: spec.parent, threads, prompt: spec.prompt }, context, pool }
  ]))
})

/** Loads the base once, the adapters over it, and the off-thread tokenizer. */
const loadModels = Effect.fnUntraced(function*(llamaCpp: LlamaCpp["Service"], options: EngineOptions, parallel: number) {
  if (options.beforeLoad !== undefined) yield* options.beforeLoad
  const adapterPrompts = yield* preflightAdapters(options)
  const model = yield* llamaCpp.loadModel({ modelPath: options.base, ...(options.gpu === "off" ? { gpuLayers: 0 } : {}) }).pipe(
    Effect.mapError((e) => new ModelLoadFailed({ path: options.base, detail: e.detail, kind: e.kind === "failure" ? "unavailable" : e.kind }))
  )
  const base = baseMetadataOf(model)
  const specs = modelSpecs(options, base, adapterPrompts)
  const served = yield* createContexts(llamaCpp, model, specs, options, parallel)
  const defaultModel = options.defaultModel ?? specs[specs.length > 1 ? 1 : 0]!.id
  if (!served.has(defaultModel)) {
    return yield* new ModelLoadFailed({ path: options.base, detail: `default model "${defaultModel}" is not among ${[...served.keys()].join(", ")}`, kind: "input" })
  }
  const inline = (text: string, special: boolean): ReadonlyArray<number> => model.tokenize(text, special)
  const tokenizer = yield* OffThreadTokenizer.start(options.base, inline).pipe(
    Effect.catch((e) =>
      Effect.as(Effect.logWarning(`${e.message}; long prompts are tokenized on the main thread`), OffThreadTokenizer.inlineOnly(inline)))
  )
  return { model, served, defaultModel, chatTemplate: base.chatTemplate, tokenizer } satisfies Loaded
})

/** Plain counters: admission is decided synchronously so that a burst cannot overshoot the queue bound. */
interface Counters {
  active: number
  queued: number
  completionTokens: number
  generationMs: number
}

/**
 * Admission, then a slot: refused at once when the queue is full; otherwise it waits (interruptibly: a timeout
 * or a disconnect while queued gives the place up) for a permit, then takes a sequence, which is always free
 * while a permit is held (each context has `parallel` sequences).
 */
const makeAdmission = (slots: Semaphore.Semaphore, counters: Counters, parallel: number, queueSize: number) =>
<A, E>(
  served: Served,
  onAdmitted: Effect.Effect<void>,
  use: (sequence: LlamaContextSequence) => Effect.Effect<A, E>
): Effect.Effect<A, E | EngineOverloaded> =>
  Effect.suspend((): Effect.Effect<A, E | EngineOverloaded> => {
    if (counters.active + counters.queued >= parallel + queueSize) {
      // a rough wait: the queue ahead at the mean generation time seen so far
      const meanMs = counters.generationMs / Math.max(1, counters.completionTokens) * 64
      return Effect.fail(new EngineOverloaded({
        active: counters.active,
        queued: counters.queued,
        retryAfterSeconds: Math.max(1, Math.ceil(((counters.queued + 1) / parallel) * meanMs / 1000))
      }))
    }
    counters.queued++
    let queued = true
    const leaveQueue = Effect.sync(() => {
      if (queued) {
        queued = false
        counters.queued--
      }
    })
    const running = Effect.suspend(() => {
      counters.active++
      return Effect.acquireUseRelease(Queue.take(served.pool), use, (sequence) => Queue.offer(served.pool, sequence))
    }).pipe(Effect.ensuring(Effect.sync(() => counters.active--)))
    return onAdmitted.pipe(
      Effect.andThen(slots.withPermits(1)(leaveQueue.pipe(Effect.andThen(running)))),
      Effect.ensuring(leaveQueue)
    )
  })

/** A request's prompt for its model: rendered in the model's layout, tokenized (off the main thread), BOS applied. */
const preparePrompt = Effect.fnUntraced(function*(l: Loaded, request: Pick<GenerateRequest, "model" | "prompt">) {
  const id = request.model ?? l.defaultModel
  const served = l.served.get(id)
  if (served === undefined) return yield* new UnknownModel({ model: id, available: [...l.served.keys()] })
  const model = l.model
  const rendered = renderPrompt(request.prompt, l.chatTemplate, {
    bos: model.tokens.bosString ?? "",
    eos: model.tokens.eosString ?? ""
  }, served.info.prompt)
  let tokens = (yield* l.tokenizer.tokenize(rendered.text, rendered.parseSpecialTokens).pipe(
    Effect.mapError((e) => new GenerationFailed({ detail: e.message }))
  )) as Array<Token>
  const bos = model.tokens.bos
  const addBos = rendered.bos === undefined ? model.tokens.shouldPrependBosToken : rendered.bos === "prepend"
  if (addBos && bos !== null && tokens[0] !== bos) tokens = [bos, ...tokens]
  const prepared: PreparedPrompt = { model: id, text: rendered.text, tokens, layout: rendered.layout, stops: rendered.stops ?? [] }
  return { served, prepared }
})

const make = Effect.fnUntraced(function*(options: EngineOptions) {
  const llamaCpp = yield* LlamaCpp
  const parallel = Math.max(1, options.parallel ?? 4)
  const queueSize = Math.max(0, options.queueSize ?? 32)
  const state = yield* Ref.make<EngineState>({ _tag: "Loading" })
  const loaded = yield* Deferred.make<Loaded, ModelLoadFailed>()
  const counters: Counters = { active: 0, queued: 0, completionTokens: 0, generationMs: 0 }
  const withSlot = makeAdmission(yield* Semaphore.make(parallel), counters, parallel, queueSize)

  yield* loadModels(llamaCpp, options, parallel).pipe(
    Effect.tap((l) =>
      Ref.set(state, { _tag: "Ready", models: [...l.served.values()].map((s) => s.info), defaultModel: l.defaultModel })
    ),
    Effect.tapError((error) => Ref.set(state, { _tag: "Failed", error })),
    Effect.exit,
    Effect.flatMap((exit) => Deferred.done(loaded, exit)),
    Effect.forkScoped
  )

  const readyNow = Effect.gen(function*() {
    const s = yield* Ref.get(state)
    if (s._tag === "Loading") return yield* new EngineNotReady({ state: "loading", detail: "loading" })
    if (s._tag === "Failed") return yield* new EngineNotReady({ state: "failed", detail: s.error.message })
    return yield* Deferred.await(loaded).pipe(Effect.orDie)
  })

  const generateNow = Effect.fn("InferenceEngine.generate")(function*(
    request: GenerateRequest,
    hooks: GenerateHooks = {}
  ) {
    const l = yield* readyNow
    const { served, prepared } = yield* preparePrompt(l, request)
    const promptTokens = prepared.tokens as ReadonlyArray<Token>
    const contextLimit = served.context.contextSize / parallel
    const totalLimit = Math.min(request.maxTotalTokens?.tokens ?? Infinity, contextLimit)
    const room = totalLimit - promptTokens.length
    if (room <= 0) {
      return yield* new PromptTooLong({
        field: request.maxTotalTokens !== undefined && request.maxTotalTokens.tokens <= contextLimit ? request.maxTotalTokens.field : "prompt",
        promptTokens: promptTokens.length,
        limit: totalLimit
      })
    }
    const started = Date.now()
    const result = yield* withSlot(served, hooks.onAdmitted ?? Effect.void, (sequence) =>
      decode(l.model, sequence, promptTokens, {
        maxTokens: Math.min(request.maxTokens, room),
        stops: [...(request.stop ?? []), ...prepared.stops].filter((s) => s !== ""),
        temperature: request.temperature,
        topK: request.topK,
        topP: request.topP,
        seed: request.seed ?? Math.floor(Math.random() * 2 ** 31)
      }, hooks.onText ?? (() => {})))
    const durationMs = Date.now() - started
    counters.completionTokens += result.completionTokens
    counters.generationMs += durationMs
    return { model: prepared.model, promptTokens: promptTokens.length, durationMs, layout: prepared.layout, ...result } satisfies GenerationResult
  })

  const generate = (request: GenerateRequest, hooks?: GenerateHooks) =>
    request.signal === undefined ? generateNow(request, hooks) : abortable(generateNow(request, hooks), request.signal)

  return InferenceEngine.of({
    state: Ref.get(state),
    awaitReady: Deferred.await(loaded).pipe(Effect.map((l) => [...l.served.values()].map((s) => s.info))),
    stats: Effect.map(llamaCpp.threads, (threads) => ({
      threads,
      active: counters.active,
      queued: counters.queued,
      parallel,
      queueSize,
      completionTokens: counters.completionTokens,
      generationSeconds: counters.generationMs / 1000
    })),
    generate,
    prompt: (request) => readyNow.pipe(Effect.flatMap((l) => preparePrompt(l, request)), Effect.map((r) => r.prepared)),
    countTokens: (text) => readyNow.pipe(Effect.map((l) => l.model.tokenize(text, false).length))
  })
})
/**
 * Runs `self` in an interruptible fiber of its own that the signal interrupts: an abort frees the queue place or the
 * slot at once, whether or not the caller's fiber can be interrupted; interrupting the caller still works too.
 */
const abortable = <A, E>(self: Effect.Effect<A, E>, signal: AbortSignal): Effect.Effect<A, E> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.gen(function*() {
      if (signal.aborted) return yield* Effect.interrupt
      const fiber = yield* Effect.forkChild(Effect.interruptible(self))
      const onAbort = () => fiber.interruptUnsafe()
      signal.addEventListener("abort", onAbort, { once: true })
      return yield* restore(Fiber.join(fiber)).pipe(
        Effect.onInterrupt(() => Fiber.interrupt(fiber)),
        Effect.ensuring(Effect.sync(() => signal.removeEventListener("abort", onAbort)))
      )
    })
  )

interface DecodeOptions {
  readonly maxTokens: number
  readonly stops: ReadonlyArray<string>
  readonly temperature: number
  readonly topK: number
  readonly topP: number
  readonly seed: number
}

interface DecodeOutcome {
  readonly text: string
  readonly finishReason: FinishReason
  readonly completionTokens: number
  readonly confidence: number
}

/**
 * Runs one generation on a sequence that this fiber owns. The token loop is plain async code (one Effect per
 * generation, not per token: resuming a fiber per token cost ~0.1 ms each on a busy machine); interruption aborts
 * the loop, and the Effect completes only after llama.cpp's generator has stopped, so the sequence is idle before
 * it goes back to the pool.
 */
const decode = (
  model: LlamaModel,
  sequence: LlamaContextSequence,
  promptTokens: ReadonlyArray<Token>,
  options: DecodeOptions,
  onText: (text: string) => void
): Effect.Effect<DecodeOutcome, GenerationFailed> =>
  Effect.callback<DecodeOutcome, GenerationFailed>((resume) => {
    const controller = new AbortController()
    const done = decodeLoop(model, sequence, promptTokens, options, onText, controller.signal)
    done.then(
      (outcome) => resume(Effect.succeed(outcome)),
      (e) => resume(Effect.fail(new GenerationFailed({ detail: String((e as Error)?.message ?? e) })))
    )
    return Effect.promise(() => {
      controller.abort()
      return done.then(() => undefined, () => undefined)
    })
  })

/**
 * Byte-fallback tokens only form valid UTF-8 together, so text is final up to the last complete character; what
 * cannot change any more is passed to `onText`.
 */
const decodeLoop = async (
  model: LlamaModel,
  sequence: LlamaContextSequence,
  promptTokens: ReadonlyArray<Token>,
  options: DecodeOptions,
  onText: (text: string) => void,
  signal: AbortSignal
): Promise<DecodeOutcome> => {
  await sequence.clearHistory()
  const iterator = sequence.evaluateWithMetadata([...promptTokens], { confidence: true }, {
    temperature: options.temperature,
    topK: options.topK,
    topP: options.topP,
    seed: options.seed
  })
  const tokens: Array<Token> = []
  let confidenceSum = 0
  let sent = 0
  let text = ""
  let settledText = ""
  let settledTokens = 0
  let finishReason: FinishReason = "length"
  try {
    while (tokens.length < options.maxTokens && !signal.aborted) {
      const step = await iterator.next()
      if (step.done === true) {
        finishReason = "stop"
        break
      }
      const { token, confidence } = step.value
      if (model.isEogToken(token)) {
        finishReason = "stop"
        if (tokens.length === 0) confidenceSum = confidence
        break
      }
      tokens.push(token)
      confidenceSum += confidence
      // incremental: only the tokens after the last complete character are detokenized (with a little left context)
      const tail = model.detokenize(tokens.slice(settledTokens), false, tokens.slice(Math.max(0, settledTokens - 8), settledTokens))
      if (tail.endsWith("\uFFFD")) {
        text = settledText + tail
      } else {
        settledText += tail
        settledTokens = tokens.length
        text = settledText
      }
      const stopAt = firstStopIndex(text, options.stops)
      if (stopAt >= 0) {
        text = text.slice(0, stopAt)
        finishReason = "stop"
        break
      }
      // an incomplete UTF-8 sequence detokenizes to U+FFFD until its last byte arrives
      const settled = text.endsWith("\uFFFD") ? text.length - 1 : text.length - heldBackLength(text, options.stops)
      if (settled > sent) {
        onText(text.slice(sent, settled))
        sent = settled
      }
    }
  } finally {
    // stops llama.cpp's generator after the token in flight
    await iterator.return()
  }
  if (text.length > sent && !signal.aborted) onText(text.slice(sent))
  return { text, finishReason, completionTokens: tokens.length, confidence: confidenceSum / Math.max(1, tokens.length) }
}
