/**
 * The process's one llama.cpp runtime (node-llama-cpp's `Llama`), shared by the tokenizer, the parity tests and
 * whoever else needs llama.cpp, so the native backend is initialised once. It uses the prebuilt binaries shipped
 * with node-llama-cpp only: it never downloads or builds llama.cpp.
 *
 * Threads. llama.cpp's CPU threads meet at a spinning barrier after every operation of the graph (ggml_barrier:
 * a busy-wait, no sleep), so a thread that the OS deschedules stalls all the others for a time slice, once per
 * operation: with more threads than free cores, decoding gets 10-1000x slower (measured here: a 13 MB model at
 * 850 tokens/s on 1 thread, 51 on 2 and 0.7 on node-llama-cpp's default of 4, on a 2-core machine with one other
 * busy process). The thread count is the only lever node-llama-cpp 3.21.1 exposes: a context's `threads`
 * (`ideal`/`min`) and the Llama's `maxThreads`, the budget its ThreadsSplitter shares among contexts and reads
 * again before every batch. llama.cpp's threadpool settings (poll level, priority, strict CPU placement) are only
 * reachable through `llama_attach_threadpool`, which the addon never calls: each graph runs in a throwaway pool
 * with the defaults, and no poll level would make the barrier itself yield. So the policy is:
 * - `chooseThreads`, the one function that decides: as many threads as the model's per-token work pays for, and
 *   no more than the cores that other processes leave free;
 * - contexts made through `createContext` without a fixed count get the idle-machine count as their `ideal`, and
 *   a governor measures the CPU that other processes use (every 500 ms, from the kernel's per-CPU counters less
 *   this process's own time) and sets `maxThreads` from `chooseThreads` again, so when a neighbour starts
 *   computing, the next batch runs on fewer threads, and on more when it stops.
 */
import { Config, Context, Duration, Effect, Layer, Schedule, Schema, Scope } from "effect"
import {
  getLlama,
  LlamaLogLevel,
  type Llama,
  type LlamaContext,
  type LlamaContextOptions,
  type LlamaModel,
  type LlamaModelOptions
} from "node-llama-cpp"
import * as os from "node:os"
import { causeKind, describeCause, kindField } from "../Shared/Errors.ts"

export class LlamaCppError extends Schema.TaggedError<LlamaCppError>()("LlamaCppError", {
  /** what was being done, e.g. `load model /path/x.gguf` */
  operation: Schema.String,
  detail: Schema.String,
  /** `failure`, or what the cause says (a missing model file is `input`) */
  kind: kindField("failure")
}) {
  override get message() {
    return `llama.cpp: ${this.operation}: ${this.detail}`
  }
}

const describe = describeCause

/** Where llama.cpp computes: "cpu", or "auto" (a prebuilt GPU backend when one loads, otherwise the CPU). */
export const LlamaCppGpu = Schema.Literals(["cpu", "auto"])
export type LlamaCppGpu = typeof LlamaCppGpu.Type

/**
 * Context options under which llama.cpp computes a model's function in F32 throughout, for parity and fidelity
 * checks: F32 K and V caches (node-llama-cpp's default is F16, which rounds every cached key and value) and the
 * plain attention path (no flash attention). Serving keeps the defaults: F16 caches take half the memory.
 */
export const exactContextOptions = {
  flashAttention: false,
  experimentalKvCacheKeyType: "F32",
  experimentalKvCacheValueType: "F32"
} as const satisfies Partial<LlamaContextOptions>

// ---------------------------------------------------------------------------------------------------------------
// The thread policy

export interface ThreadInputs {
  /** cores llama.cpp may use (os.availableParallelism(), at most llama.cpp's math cores: no SMT siblings) */
  readonly cores: number
  /** cores' worth of CPU that other processes use (measured over the last half second; os.loadavg() at start) */
  readonly busyCores: number
  /** weight bytes computed on the CPU per token: the model's size, less the layers offloaded to a GPU */
  readonly cpuBytes: number
}

export interface ThreadChoice {
  /** threads to decode with now */
  readonly threads: number
  /** the most threads this model's per-token work pays for, on an idle machine */
  readonly ceiling: number
  readonly freeCores: number
}

/**
 * Per-token work that one more thread must have to pay for its share of the synchronisation (a barrier per
 * operation, a thread start per graph): below it, an extra thread gains little on an idle machine and risks a
 * collapse on a busy one. 64 MiB: the project's 13 MB `tiny` and 111 MB `small` models decode on one thread,
 * a 1B model in F16 (2.2 GB) on every free core.
 */
export const bytesPerThread = 64 * 1024 * 1024

/** The thread policy: the one place that decides how many threads llama.cpp computes with. */
export const chooseThreads = (inputs: ThreadInputs): ThreadChoice => {
  const cores = Math.max(1, Math.floor(inputs.cores))
  const ceiling = Math.max(1, Math.min(cores, Math.floor(Math.max(0, inputs.cpuBytes) / bytesPerThread)))
  const freeCores = Math.max(0, cores - Math.max(0, inputs.busyCores))
  // each thread needs a core to itself: a thread on a core shared with a busy neighbour stalls every barrier, so
  // a core counts as free only when less than a quarter of it is in use
  const threads = Math.max(1, Math.min(ceiling, Math.floor(freeCores + 0.25)))
  return { threads, ceiling, freeCores }
}

/**
 * The governor's step from one measurement to the next: down at once to what the policy says (a neighbour that
 * starts computing stalls every barrier), up only when two measurements in a row agree (a short lull is no reason
 * to spread out again).
 */
export const governorStep = (
  state: { readonly threads: number; readonly raiseVotes: number },
  target: number
): { readonly threads: number; readonly raiseVotes: number } =>
  target < state.threads
    ? { threads: target, raiseVotes: 0 }
    : target === state.threads
    ? { threads: state.threads, raiseVotes: 0 }
    : state.raiseVotes + 1 >= 2
    ? { threads: target, raiseVotes: 0 }
    : { threads: state.threads, raiseVotes: state.raiseVotes + 1 }

/** What the runtime computes with now (for /health, startup lines and reports). */
export interface ThreadState {
  /** "auto": the policy and its governor; "fixed": a count the user gave */
  readonly mode: "auto" | "fixed"
  /** the threads a decode gets now (the Llama's budget, shared by the contexts decoding at once) */
  readonly threads: number
  /** auto: the most threads the loaded models pay for (the count on an idle machine) */
  readonly ceiling: number
  readonly cores: number
  /** cores' worth of CPU other processes used in the last measurement */
  readonly busyCores: number
}

export const describeThreads = (t: ThreadState) =>
  t.mode === "fixed"
    ? `${t.threads} thread${t.threads === 1 ? "" : "s"} (--threads)`
    : `${t.threads} thread${t.threads === 1 ? "" : "s"} (auto: up to ${t.ceiling} for the model size, ${t.cores} core${t.cores === 1 ? "" : "s"}, ${t.busyCores.toFixed(1)} busy)`

/** Kernel CPU counters: all CPUs' busy time and this process's own (ms), to tell our load from the neighbours'. */
const cpuSample = () => {
  let busy = 0
  const cpus = os.cpus()
  for (const cpu of cpus) busy += cpu.times.user + cpu.times.nice + cpu.times.sys + cpu.times.irq
  const own = process.cpuUsage()
  return { at: performance.now(), busyMs: busy, ownMs: (own.user + own.system) / 1000, cpus: Math.max(1, cpus.length) }
}
type CpuSample = ReturnType<typeof cpuSample>

/** Cores' worth of CPU that other processes used between two samples, scaled to the cores we may use. */
const busyBetween = (a: CpuSample, b: CpuSample, cores: number) => {
  const elapsed = b.at - a.at
  if (elapsed <= 0) return 0
  const others = Math.max(0, (b.busyMs - a.busyMs) - (b.ownMs - a.ownMs)) / elapsed
  return others * Math.min(1, cores / b.cpus)
}

// ---------------------------------------------------------------------------------------------------------------
// The governor

/**
 * The runtime's thread budget: which contexts follow the policy (and their CPU bytes), which have a fixed count, and
 * the governor's last measurement. Plain fields, read and written synchronously around node-llama-cpp's own calls.
 */
class ThreadGovernor {
  private readonly autoModels = new Map<number, number>() // context id -> cpu bytes
  private readonly fixedCounts = new Map<number, number>() // context id -> threads
  private nextId = 0
  private creating = 0
  private started = false
  private last = cpuSample()
  private busyCores = os.loadavg()[0] ?? 0
  private raiseVotes = 0
  private current = 1

  private readonly llama: Llama
  readonly mathCores: number

  constructor(llama: Llama, mathCores: number) {
    this.llama = llama
    this.mathCores = mathCores
  }

  private choice() {
    return chooseThreads({ cores: this.mathCores, busyCores: this.busyCores, cpuBytes: Math.max(0, ...this.autoModels.values()) })
  }

  state(): ThreadState {
    const { fixedCounts, mathCores: cores, busyCores } = this
    return fixedCounts.size > 0
      ? { mode: "fixed", threads: Math.max(...fixedCounts.values()), ceiling: Math.max(...fixedCounts.values()), cores, busyCores }
      : { mode: "auto", threads: this.current, ceiling: this.choice().ceiling, cores, busyCores }
  }

  private apply() {
    if (this.creating > 0) return // a context being made reads maxThreads as the ceiling of its `ideal`
    this.llama.maxThreads = this.fixedCounts.size > 0 ? Math.max(...this.fixedCounts.values()) : this.current
  }

  /** one measurement, then `governorStep` */
  private measure() {
    const now = cpuSample()
    this.busyCores = busyBetween(this.last, now, this.mathCores)
    this.last = now
    const next = governorStep({ threads: this.current, raiseVotes: this.raiseVotes }, this.choice().threads)
    this.current = next.threads
    this.raiseVotes = next.raiseVotes
    this.apply()
  }

  /** the measurement loop, once, for the runtime's scope */
  start(scope: Scope.Scope): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.started) return Effect.void
      this.started = true
      return Effect.sync(() => this.measure()).pipe(
        Effect.repeat(Schedule.spaced(Duration.millis(500))),
        Effect.forkIn(scope),
        Effect.asVoid
      )
    })
  }

  /** A new context's id and `ideal` thread count: on `fixed` threads, or on the policy for `cpuBytes` of work. */
  register(cpuBytes: number, fixed: number | undefined): { readonly id: number; readonly ideal: number } {
    const id = this.nextId++
    if (fixed === undefined) {
      // the window since the runtime started (model loading included, which is this process's own time)
      if (!this.started && performance.now() - this.last.at >= 100) {
        const now = cpuSample()
        this.busyCores = busyBetween(this.last, now, this.mathCores)
        this.last = now
      }
      this.autoModels.set(id, cpuBytes)
      this.current = this.choice().threads
    } else {
      this.fixedCounts.set(id, fixed)
    }
    return { id, ideal: fixed ?? chooseThreads({ cores: this.mathCores, busyCores: 0, cpuBytes }).ceiling }
  }

  /** Runs node-llama-cpp's context creation with `ideal` threads allowed, then the budget again. */
  async creatingWith<A>(ideal: number, create: () => Promise<A>): Promise<A> {
    this.creating++
    this.llama.maxThreads = Math.max(this.llama.maxThreads, ideal)
    try {
      return await create()
    } finally {
      this.creating--
      this.apply()
    }
  }

  /** A context is gone: `disposed` (it ran, so the auto count may only fall) or never made. */
  unregister(id: number, disposed: boolean) {
    this.autoModels.delete(id)
    this.fixedCounts.delete(id)
    if (disposed) this.current = this.autoModels.size > 0 ? Math.min(this.current, this.choice().threads) : 1
    this.apply()
  }
}

/**
 * llama.cpp's own warnings, as node-llama-cpp prints them, less one note per adapted tensor that a LoRA adapter
 * stays in CPU memory on CPUs with AMX ("cannot use buft 'AMX', fallback to CPU": 240 lines for SmolLM2, nothing wrong).
 */
const llamaLogLine = (level: LlamaLogLevel, message: string): void => {
  if (/cannot use buft '[^']*', fallback to CPU/.test(message)) return
  if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) console.error(message.trimEnd())
  else if (level === LlamaLogLevel.warn) console.warn(message.trimEnd())
}

const startLlama = (gpu: LlamaCppGpu) =>
  Effect.acquireRelease(
    Effect.tryPromise({
      // one thread until a context asks for more: node-llama-cpp's default (at least 4) collapses on small machines
      try: () => getLlama({ gpu: gpu === "cpu" ? false : "auto", build: "never", progressLogs: false, maxThreads: 1, logger: llamaLogLine }),
      catch: (cause) => new LlamaCppError({ operation: "start", detail: describe(cause), kind: "unavailable" })
    }),
    (llama) => Effect.promise(() => llama.dispose())
  )

const loadModelWith = (llama: Llama) =>
  Effect.fn("LlamaCpp.loadModel")(function*(options: LlamaModelOptions) {
    return yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => llama.loadModel(options),
        catch: (cause) => new LlamaCppError({ operation: `load model ${options.modelPath}`, detail: describe(cause), kind: causeKind(cause) ?? "data" })
      }),
      (model) => Effect.promise(() => model.dispose())
    )
  })

const createContextWith = (llama: Llama, governor: ThreadGovernor, scope: Scope.Scope) =>
  Effect.fn("LlamaCpp.createContext")(function*(
    model: LlamaModel,
    options: Omit<LlamaContextOptions, "threads">,
    threads?: number | undefined
  ) {
    const layers = model.fileInsights.totalLayers
    const offloaded = llama.gpu === false || layers <= 0 ? 0 : Math.min(1, model.gpuLayers / layers)
    const fixed = threads !== undefined && threads > 0 ? Math.floor(threads) : undefined
    const { id, ideal } = governor.register(model.size * (1 - offloaded), fixed)
    const context = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => governor.creatingWith(ideal, () => model.createContext({ ...options, threads: { ideal, min: 1 } })),
        catch: (cause) => new LlamaCppError({ operation: `create a context for ${model.filename ?? "the model"}`, detail: describe(cause) })
      }),
      (context) => Effect.promise(() => context.dispose()).pipe(Effect.ensuring(Effect.sync(() => governor.unregister(id, true))))
    ).pipe(Effect.onError(() => Effect.sync(() => governor.unregister(id, false))))
    if (fixed === undefined) yield* governor.start(scope)
    return context
  })

// ---------------------------------------------------------------------------------------------------------------
// The service

export class LlamaCpp extends Context.Service<LlamaCpp, {
  readonly llama: Llama
  /** "cpu" or the GPU backend node-llama-cpp picked (cuda, vulkan, metal) */
  readonly backend: string
  /** loads a model for the scope's lifetime */
  readonly loadModel: (
    options: LlamaModelOptions
  ) => Effect.Effect<LlamaModel, LlamaCppError, Scope.Scope>
  /**
   * A context for the scope's lifetime, on `threads` CPU threads, or (undefined) on the thread policy's count,
   * which follows the machine's load from then on. `options` are node-llama-cpp's as they are: serving keeps its
   * defaults (F16 K/V caches, flash attention "auto"); a parity check passes `exactContextOptions`.
   */
  readonly createContext: (
    model: LlamaModel,
    options: Omit<LlamaContextOptions, "threads">,
    threads?: number | undefined
  ) => Effect.Effect<LlamaContext, LlamaCppError, Scope.Scope>
  readonly threads: Effect.Effect<ThreadState>
}>()("app/Training/LlamaCpp") {
  static readonly make = (gpu: LlamaCppGpu) =>
    Effect.gen(function*() {
      const cores = Math.max(1, os.availableParallelism())
      const llama = yield* startLlama(gpu)
      const mathCores = Math.max(1, Math.min(cores, llama.cpuMathCores > 0 ? llama.cpuMathCores : cores))
      const governor = new ThreadGovernor(llama, mathCores)
      return LlamaCpp.of({
        llama,
        backend: llama.gpu === false ? "cpu" : llama.gpu,
        loadModel: loadModelWith(llama),
        createContext: createContextWith(llama, governor, yield* Effect.scope),
        threads: Effect.sync(() => governor.state())
      })
    })

  /** `LLAMA_CPP_GPU` = cpu | auto (default auto) */
  static readonly layer = Layer.effect(
    LlamaCpp,
    Effect.gen(function*() {
      const gpu = yield* Config.Literals(["cpu", "auto"], "LLAMA_CPP_GPU").pipe(Config.withDefault("auto" as const))
      return yield* LlamaCpp.make(gpu)
    })
  )

  /** CPU only: deterministic, what the parity tests compare against */
  static readonly layerCpu = Layer.effect(LlamaCpp, LlamaCpp.make("cpu"))
}
