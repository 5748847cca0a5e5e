/**
 * Worker threads for the ingest's pure half (`analyzeBatch`: JSON parse, decode, normalize, rules,
 * fingerprints, encoding — nearly all of its CPU). The main thread keeps reading, deduping, splitting and
 * writing in input order, and analyzes batches itself whenever every worker already has work queued, so
 * on two cores both are busy. Batches go out as the lines' bytes (decoded in the worker) and come back as
 * typed arrays; both ways the memory is transferred, not copied.
 */
import { availableParallelism } from "node:os"
import { Worker } from "node:worker_threads"
import type { AnalyzeConfig, BatchAnalysis, BatchInput } from "./Analyze.ts"

/** A worker's answer: the analysis, and the buffers it is done with: the batch's input, then the spare if it went unused. */
export interface WorkerResult {
  readonly analysis: BatchAnalysis
  readonly spent: ReadonlyArray<ArrayBuffer>
}

/** One worker per core beyond the first, at most 3 (each costs about 20 MB of memory: it loads no `effect`). */
export const defaultIngestWorkers = (): number => Math.max(0, Math.min(3, availableParallelism() - 1))

// the compiled entry next to this file (dist/), or the TypeScript source when run from src/ (tests)
const entry = new URL(import.meta.url.endsWith(".ts") ? "./IngestWorker.ts" : "./IngestWorker.js", import.meta.url)

/**
 * Workers started before the command line is even parsed (`prestartIngestWorkers`), waiting to be adopted
 * by the first pool. Kept on `globalThis` under a registered symbol because the entry point that starts them
 * and the bundled CLI that adopts them each hold their own copy of this module.
 */
interface Prestarted {
  readonly worker: Worker
  booted: boolean
  /** it failed or exited before a pool adopted it (a pool then starts a fresh one) */
  dead: boolean
}
const prestartKey = Symbol.for("finetune-finance/ingest-workers/prestarted")
const prestarted = (): Array<Prestarted> => ((globalThis as Record<symbol, unknown>)[prestartKey] ??= []) as Array<Prestarted>

// a small young generation: the worker's garbage is short-lived strings, and every MB counts twice
const startWorker = () => new Worker(entry, { resourceLimits: { maxYoungGenerationSizeMb: 16 } })

/**
 * Starts `count` workers now, so they load while the command line is parsed and the CLI's modules load
 * (0.1 s of one core, with the other idle) instead of once the data flows. A pool adopts them; any it
 * does not (a small input, `--workers 0`) are unreferenced and end with the process.
 */
export const prestartIngestWorkers = (count: number): void => {
  for (let k = 0; k < count; k++) {
    const p: Prestarted = { worker: startWorker(), booted: false, dead: false }
    p.worker.once("message", () => (p.booted = true))
    // until adopted nobody else listens: an error must not go unhandled (and crash the CLI)
    p.worker.on("error", () => (p.dead = true))
    p.worker.once("exit", () => (p.dead = true))
    p.worker.unref()
    prestarted().push(p)
  }
}

interface Slot {
  readonly worker: Worker
  /** false until the worker has loaded its modules: a batch sent earlier would wait on its start-up */
  ready: boolean
  queued: number
}

export class IngestWorkers {
  private readonly slots: Array<Slot> = []
  private readonly waiting = new Map<number, { readonly slot: Slot; readonly resolve: (r: WorkerResult) => void; readonly reject: (e: Error) => void }>()
  private nextId = 0
  private readonly ready: Array<Promise<void>> = []
  private failure: Error | undefined
  /**
   * batches a worker may have queued before the main thread analyzes the next one itself: 3, because the
   * main thread only learns that a batch is done between its own batches (measured: 3% faster than 2 at
   * 100k records, the same at 1M)
   */
  private readonly depth: number

  constructor(count: number, config: AnalyzeConfig, depth = 3) {
    this.depth = depth
    for (let k = 0; k < count; k++) {
      let pre = prestarted().shift()
      while (pre?.dead === true) pre = prestarted().shift()
      const worker = pre?.worker ?? startWorker()
      worker.ref()
      const slot: Slot = { worker, ready: pre?.booted === true, queued: 0 }
      this.ready.push(slot.ready ? Promise.resolve() : new Promise((resolve) => worker.once("message", () => resolve())))
      // the configuration first: messages arrive in order, so every batch finds it
      worker.postMessage({ config })
      worker.on("message", (msg: { readonly id: number; readonly analysis: BatchAnalysis; readonly spent: ReadonlyArray<ArrayBuffer> } | { readonly ready: true }) => {
        if ("ready" in msg) {
          slot.ready = true
          return
        }
        const w = this.waiting.get(msg.id)
        if (w === undefined) return
        this.waiting.delete(msg.id)
        w.slot.queued--
        w.resolve({ analysis: msg.analysis, spent: msg.spent })
      })
      worker.on("error", (e) => this.fail(e))
      worker.on("exit", (code) => this.fail(new Error(`worker exited with code ${code}`)))
      this.slots.push(slot)
    }
  }

  private fail(e: Error) {
    this.failure ??= e
    for (const w of this.waiting.values()) w.reject(this.failure)
    this.waiting.clear()
  }

  /** the least busy worker with room for another batch, or undefined */
  private free(): Slot | undefined {
    if (this.failure !== undefined) return undefined
    let best: Slot | undefined
    for (const s of this.slots) if (s.ready && s.queued < this.depth && (best === undefined || s.queued < best.queued)) best = s
    return best
  }

  /**
   * Sends a batch to a worker with room, or returns undefined when all are busy (analyze it here). `spare`,
   * a spent output buffer, goes along for the worker to encode the records into.
   */
  analyze(input: BatchInput, spare?: ArrayBuffer): Promise<WorkerResult> | undefined {
    const slot = this.free()
    if (slot === undefined) return undefined
    const id = this.nextId++
    slot.queued++
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { slot, resolve, reject })
      // the input's buffer (its bytes, line ends and skip marks: see batchInput) moves to the worker and back
      const moved = [...new Set([input.bytes.buffer as ArrayBuffer, input.ends.buffer as ArrayBuffer, input.skip.buffer as ArrayBuffer])]
      if (spare !== undefined) moved.push(spare)
      slot.worker.postMessage({ id, input, spare }, moved)
    })
  }

  /** resolves once every worker has started (until then `analyze` sends nothing) */
  whenReady(): Promise<void> {
    return Promise.all(this.ready).then(() => undefined)
  }

  async close(): Promise<void> {
    this.failure ??= new Error("closed")
    for (const s of this.slots) s.worker.removeAllListeners("exit")
    await Promise.all(this.slots.map((s) => s.worker.terminate()))
  }
}
