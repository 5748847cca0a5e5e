/**
 * The Dataset stage as one service: JSONL in (file, `.gz` file, or stdin as "-"), train/test/rejects
 * JSONL and a summary out. The input is an Effect Stream of byte chunks read with backpressure; each pull
 * of chunks (256 KiB reads) is split into lines and analyzed (Analyze.ts) on this thread or, for large
 * inputs, on worker threads (IngestWorkers.ts); the analyzed batches are committed in input order
 * (Ingest.ts: dedupe, split, counts) and appended to the outputs with one write per file. At most a few
 * batches are in flight, so memory stays flat however large the input is. The `pipeline` command calls
 * `run` directly.
 *
 * Outputs in `outDir`: `train.jsonl`, `test.jsonl`, `rejects.jsonl` (one JSON object per rejected line:
 * line, code, field, reason, text cut to `rejectTextChars`), `summary.json` (the Summary below; it holds no
 * timings, so the same input and seed give byte-identical files).
 */
// the module itself, not the package index: the index loads every Node service (HTTP, sockets…), about
// 0.2 s of the dataset-only entry's start-up
import * as NodeStream from "@effect/platform-node/NodeStream"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Layer from "effect/Layer"
import * as Path from "effect/Path"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { createReadStream } from "node:fs"
import { open as openFile } from "node:fs/promises"
import { createGunzip } from "node:zlib"
import { DatasetInputError, DatasetOutputError, RejectRateExceeded, StrictModeViolation } from "./Errors.ts"
import { analysisBuffers, analyzeBatch, type BatchAnalysis, type BatchInput, seedOnlyDecoder } from "./Analyze.ts"
import { BufferPool } from "./BufferPool.ts"
import { batchInputView, fullDecoder, IngestProcessor, type IngestConfig, type PreparedBatch, type Reject } from "./Ingest.ts"
import { defaultIngestWorkers, IngestWorkers } from "./IngestWorkers.ts"
import { LineSplitter, type RawLine } from "./LineSplitter.ts"
import { defaultRuleConfig, type RuleConfig } from "./Rules.ts"
import { describeCause } from "../Shared/Errors.ts"

export interface PipelineOptions {
  /** a JSONL file, a `.gz` JSONL file, or "-" for stdin */
  readonly input: string
  /** where train/test/rejects/summary go; without it nothing is written (`dataset validate`) */
  readonly outDir?: string | undefined
  readonly seed?: number
  /** share of records in test.jsonl (default 0.1) */
  readonly testRatio?: number
  readonly groupByTicker?: boolean
  readonly rules?: RuleConfig
  readonly keepExtra?: boolean
  /** stop at the first bad line with StrictModeViolation */
  readonly strict?: boolean
  /** fail with RejectRateExceeded (after writing everything) when rejected/records is above this */
  readonly maxRejectRate?: number
  /** lines longer than this many bytes are rejected without being held in memory (default 1 MiB) */
  readonly maxLineBytes?: number
  readonly rejectTextChars?: number
  /** called for every rejected line, in order */
  readonly onReject?: (reject: Reject) => Effect.Effect<void>
  /**
   * worker threads for parsing, validation and normalization (default: one per core beyond the first, at
   * most 3); 0 does everything on the main thread. Outputs are byte-identical for any number.
   */
  readonly workers?: number
  /**
   * workers start only once this many lines have been read, so small inputs never pay for them (default 20,000);
   * a file whose size says it holds more (at ~750 bytes a line) starts them before the first line
   */
  readonly workersAfterLines?: number
  /** called once per processed batch (the CLI throttles it into a progress line) */
  readonly onProgress?: (counts: { readonly linesRead: number; readonly bytesRead: number }) => Effect.Effect<void>
}

const Count = Schema.Int
export const Summary = Schema.Struct({
  input: Schema.String,
  linesRead: Count,
  blankLines: Count,
  records: Count,
  train: Count,
  test: Count,
  /**
   * the split's groups: distinct templated answers (or ticker sets with `groupByTicker`) among the kept records;
   * each lies wholly on one side (Split.ts). Optional for summaries written before it existed.
   */
  groups: Schema.optionalKey(Schema.Struct({ total: Count, train: Count, test: Count })),
  duplicates: Schema.Struct({ exact: Count, normalized: Count }),
  rejected: Count,
  rejectRate: Schema.Finite,
  rejectReasons: Schema.Record(Schema.String, Count),
  warnings: Schema.Record(Schema.String, Count),
  formats: Schema.Record(Schema.String, Count),
  extraFields: Schema.Record(Schema.String, Count),
  extraFieldsRule: Schema.Literals(["dropped", "kept"]),
  placeholdersReplaced: Count,
  seed: Schema.Int,
  testRatio: Schema.Finite,
  groupByTicker: Schema.Boolean,
  rules: Schema.Record(Schema.String, Schema.String),
  outputs: Schema.optionalKey(Schema.Struct({ train: Schema.String, test: Schema.String, rejects: Schema.String, summary: Schema.String }))
})
export type Summary = typeof Summary.Type

const sorted = (m: Record<string, number>) => Object.fromEntries(Object.entries(m).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))

/** bytes read from a plain file at a time */
const chunkBytes = 1 << 18

/**
 * Byte chunks of a plain file, read one chunk ahead into buffers from `buffers` (kind "chunk"): the
 * ingest gives each back once the lines it holds are copied into their batch, so reading allocates
 * nothing after the first few chunks (fresh 256 KB buffers per read fragmented the native heap: +10 MB
 * at 1M records).
 */
const fileChunks = (file: string, buffers: BufferPool): Stream.Stream<Uint8Array, DatasetInputError> => {
  const fail = (e: unknown) => new DatasetInputError({ file, detail: describeCause(e) })
  return Stream.unwrap(
    Effect.acquireRelease(
      Effect.tryPromise({ try: () => openFile(file, "r"), catch: fail }),
      (handle) => Effect.promise(() => handle.close())
    ).pipe(Effect.map((handle) => {
      const read = (): Promise<Buffer | undefined> => {
        const memory = buffers.take("chunk") ?? new ArrayBuffer(chunkBytes)
        return handle.read(new Uint8Array(memory), 0, chunkBytes, null).then(({ bytesRead }) => {
          if (bytesRead > 0) return Buffer.from(memory, 0, bytesRead)
          buffers.give("chunk", memory)
          return undefined
        })
      }
      let next = read()
      // a read still in flight when the run stops early (--strict) must not surface as unhandled
      next.catch(() => {})
      return Stream.unfold(0, () =>
        Effect.tryPromise({
          try: async () => {
            const chunk = await next
            if (chunk === undefined) return undefined
            next = read()
            next.catch(() => {})
            return [chunk, 0] as const
          },
          catch: fail
        })
      )
    }))
  )
}

/** true when `inputBytes` reads `input` (a plain file) into pooled chunks, which the caller must give back */
const readsIntoPool = (input: string) => input !== "-" && !input.endsWith(".gz")

/**
 * Byte chunks of the input: a file (gunzipped when it ends in `.gz`) or stdin. With `buffers`, a plain
 * file is read into pooled buffers (see `fileChunks`, `readsIntoPool`).
 */
export const inputBytes = (input: string, buffers?: BufferPool): Stream.Stream<Uint8Array, DatasetInputError> =>
  buffers !== undefined && readsIntoPool(input) ? fileChunks(input, buffers) : NodeStream.fromReadable<Uint8Array, DatasetInputError>({
    evaluate: () => {
      if (input === "-") return process.stdin
      const file = createReadStream(input, { highWaterMark: 1 << 18 })
      if (!input.endsWith(".gz")) return file
      const gunzip = createGunzip({ chunkSize: 1 << 20 })
      file.on("error", (e) => gunzip.destroy(e))
      return file.pipe(gunzip)
    },
    onError: (e) => new DatasetInputError({ file: input, detail: describeCause(e) }),
    closeOnDone: input !== "-"
  })

/** The defaults of the options that decide the outputs. */
const ingestConfigOf = (options: PipelineOptions): IngestConfig => ({
  seed: options.seed ?? 42,
  testRatio: options.testRatio ?? 0.1,
  groupByTicker: options.groupByTicker ?? false,
  rules: options.rules ?? defaultRuleConfig,
  keepExtra: options.keepExtra ?? false,
  rejectTextChars: options.rejectTextChars ?? 500
})

const outError = (file: string) => (e: { readonly message: string }) => new DatasetOutputError({ file, detail: e.message })

interface OutputPaths {
  readonly train: string
  readonly test: string
  readonly rejects: string
  readonly summary: string
}
interface OutputFiles {
  readonly train: FileSystem.File
  readonly test: FileSystem.File
  readonly rejects: FileSystem.File
}

/** The output paths and files, opened for writing; neither without `outDir` (`dataset validate`). */
const openOutputs = Effect.fnUntraced(function*(fs: FileSystem.FileSystem, path: Path.Path, outDir: string | undefined) {
  if (outDir === undefined) return { outputs: undefined, files: undefined }
  const outputs: OutputPaths = {
    train: path.join(outDir, "train.jsonl"),
    test: path.join(outDir, "test.jsonl"),
    rejects: path.join(outDir, "rejects.jsonl"),
    summary: path.join(outDir, "summary.json")
  }
  const open = (file: string) => fs.open(file, { flag: "w" }).pipe(Effect.mapError(outError(file)))
  yield* fs.makeDirectory(outDir, { recursive: true }).pipe(Effect.mapError(outError(outDir)))
  // at once: each open is a trip through libuv's thread pool, slow while the workers start
  const files: OutputFiles = yield* Effect.all({ train: open(outputs.train), test: open(outputs.test), rejects: open(outputs.rejects) }, { concurrency: "unbounded" })
  return { outputs, files }
})

type Writer = (file: FileSystem.File | undefined, name: string | undefined, data: string | Uint8Array) => Effect.Effect<void, DatasetOutputError>

/**
 * Writes through one reused buffer (the writes run one after another): a fresh Buffer per write left tens of MB
 * of dead ArrayBuffers waiting for the GC, and fragmented the native heap.
 */
const makeWriter = (): Writer => {
  let scratch = Buffer.allocUnsafe(1 << 20)
  const encode = (text: string) => {
    if (text.length * 3 > scratch.length) {
      const bytes = Buffer.byteLength(text)
      if (bytes > scratch.length) scratch = Buffer.allocUnsafe(Math.max(bytes, scratch.length * 2))
    }
    return scratch.subarray(0, scratch.write(text))
  }
  return (file, name, data) =>
    data.length === 0 || file === undefined
      ? Effect.void
      : Effect.suspend(() => file.writeAll(typeof data === "string" ? encode(data) : data)).pipe(Effect.mapError(outError(name ?? "")))
}

/** A batch in input order: analyzed here at once, or by a worker later (committed when it is back). */
interface PendingBatch {
  readonly batch: PreparedBatch
  analysis: BatchAnalysis | undefined
  /** the batch's input, back from the worker */
  inputBack?: BatchInput
  readonly promise?: Promise<BatchAnalysis>
}

/** One run's ingest: its reader, processor, buffers, workers and the batches in flight. */
interface Flow {
  readonly input: string
  readonly options: PipelineOptions
  readonly config: IngestConfig
  readonly splitter: LineSplitter
  readonly processor: IngestProcessor
  /** spent batch buffers, reused by the next batches (memory stays flat; see BufferPool.ts) */
  readonly buffers: BufferPool
  readonly write: Writer
  readonly outputs: OutputPaths | undefined
  readonly files: OutputFiles | undefined
  readonly workerCount: number
  readonly workersAfter: number
  readonly startPool: Effect.Effect<IngestWorkers, never, Scope.Scope>
  /** a plain file is read into the pool's chunks; gzip and stdin chunks are the streams' own */
  readonly pooledChunks: boolean
  readonly pending: Array<PendingBatch>
  readonly maxPending: number
  pool: IngestWorkers | undefined
  bytesRead: number
  linesSeen: number
}

type FlowError = DatasetInputError | DatasetOutputError | StrictModeViolation

const giveChunks = (flow: Flow, chunks: ReadonlyArray<Uint8Array>) => {
  if (flow.pooledChunks) for (const chunk of chunks) flow.buffers.give("chunk", chunk.buffer as ArrayBuffer)
}

/** Dedupes and splits an analyzed batch (in input order) and appends its records to the outputs. */
const commit = (flow: Flow, batch: PreparedBatch, analysis: BatchAnalysis, lines: BatchInput) =>
  Effect.gen(function*() {
    const { buffers, files, outputs, options } = flow
    const out = flow.processor.commit(batch, analysis, lines)
    // the records are copied into the outputs: both buffers can take the next batches
    for (const b of analysisBuffers(analysis)) buffers.give("output", b)
    buffers.give("input", lines.bytes.buffer as ArrayBuffer)
    yield* flow.write(files?.train, outputs?.train, out.train)
    yield* flow.write(files?.test, outputs?.test, out.test)
    yield* flow.write(files?.rejects, outputs?.rejects, out.rejects)
    if (options.onReject) for (const r of out.rejectList) yield* options.onReject(r)
    if (out.firstReject !== undefined) {
      const r = out.firstReject
      return yield* new StrictModeViolation({ file: flow.input === "-" ? "<stdin>" : flow.input, line: r.line, field: r.field, reason: r.reason })
    }
    if (options.onProgress) yield* options.onProgress({ linesRead: flow.processor.counts.linesRead, bytesRead: flow.bytesRead })
  })

/** Commits the batches at the head that are analyzed; waits for the head when too many are out (or at the end). */
const drain = (flow: Flow, all: boolean) =>
  Effect.gen(function*() {
    const { pending } = flow
    while (pending.length > 0) {
      const head = pending[0]!
      if (head.analysis === undefined) {
        if (!all && pending.length <= flow.maxPending) return
        head.analysis = yield* Effect.tryPromise({
          try: () => head.promise!,
          catch: (e) => new DatasetInputError({ file: flow.input, detail: `ingest worker failed: ${describeCause(e)}` })
        })
      }
      pending.shift()
      yield* commit(flow, head.batch, head.analysis, head.inputBack ?? head.batch.input)
    }
  })

/** Copies a batch's lines into its input and sends it to a worker or analyzes it here, at once. */
const dispatch = (flow: Flow, lines: ReadonlyArray<RawLine>) => {
  const { buffers, pool } = flow
  const batch = flow.processor.prepare(lines, buffers.take("input"))
  const spare = buffers.take("output")
  const sent = pool?.analyze(batch.input, spare)
  // with workers, this thread decodes as they do (seed records; the rest is deferred to commit, which
  // uses the full decoder): one code path to warm up instead of two
  if (sent === undefined) {
    const analysis = analyzeBatch(batch.input, flow.config, pool === undefined ? fullDecoder : seedOnlyDecoder, spare)
    // a spare too small went unused: back to the pool, as a worker hands it back
    if (spare !== undefined && !analysisBuffers(analysis).includes(spare)) buffers.give("output", spare)
    flow.pending.push({ batch, analysis })
  } else {
    const entry: PendingBatch = {
      batch,
      analysis: undefined,
      promise: sent.then((r) => {
        // the input is kept for the commit (line ends, reject texts, lines left to this thread)
        entry.inputBack = batchInputView(r.spent[0]!, batch.count, batch.size)
        if (r.spent[1] !== undefined) buffers.give("output", r.spent[1])
        return (entry.analysis = r.analysis)
      })
    }
    entry.promise!.catch(() => {}) // awaited in drain; a failure after the run ends is not unhandled
    flow.pending.push(entry)
  }
}

/**
 * One batch of lines: dispatched before anything can wait (the lines, and the chunks they view, are
 * garbage once `prepare` has copied them: holding them while this thread waits on a worker made the
 * GC promote them), then the analyzed batches at the head are committed.
 */
const handleLines = (flow: Flow, lines: ReadonlyArray<RawLine>, chunks: ReadonlyArray<Uint8Array>): Effect.Effect<void, FlowError, Scope.Scope> => {
  const rest = () => {
    dispatch(flow, lines)
    giveChunks(flow, chunks)
    return drain(flow, false)
  }
  flow.linesSeen += lines.length
  // small inputs never pay for starting workers
  if (flow.pool === undefined && flow.workerCount > 0 && flow.linesSeen > flow.workersAfter) {
    return flow.startPool.pipe(Effect.flatMap((p) => {
      flow.pool = p
      return rest()
    }))
  }
  return rest()
}

/** Reads the input to its end, batch by batch, and commits every batch. */
const ingest = (flow: Flow) =>
  Effect.gen(function*() {
    yield* inputBytes(flow.input, flow.pooledChunks ? flow.buffers : undefined).pipe(
      Stream.runForEachArray((chunks) => {
        const lines: Array<RawLine> = []
        for (const chunk of chunks) {
          flow.bytesRead += chunk.byteLength
          flow.splitter.push(chunk, lines)
        }
        // the lines are views into these chunks (a line carried over to the next chunk is a copy) until
        // `prepare` copies their bytes: then the chunks can take the next reads
        if (lines.length === 0) {
          giveChunks(flow, chunks)
          return Effect.void
        }
        return handleLines(flow, lines, chunks)
      })
    )
    const tail: Array<RawLine> = []
    flow.splitter.end(tail)
    if (tail.length > 0) yield* handleLines(flow, tail, [])
    yield* drain(flow, true)
  })

const summaryOf = (input: string, config: IngestConfig, c: IngestProcessor["counts"], outputs: OutputPaths | undefined): Summary => ({
  input: input === "-" ? "<stdin>" : input,
  linesRead: c.linesRead,
  blankLines: c.blankLines,
  records: c.records,
  train: c.train,
  test: c.test,
  groups: { total: c.groupsTrain + c.groupsTest, train: c.groupsTrain, test: c.groupsTest },
  duplicates: { exact: c.duplicatesExact, normalized: c.duplicatesNormalized },
  rejected: c.rejected,
  rejectRate: c.records === 0 ? 0 : c.rejected / c.records,
  rejectReasons: sorted(c.rejectReasons),
  warnings: sorted(c.warnings),
  formats: sorted(c.formats),
  extraFields: sorted(c.extraFields),
  extraFieldsRule: config.keepExtra ? "kept" : "dropped",
  placeholdersReplaced: c.placeholdersReplaced,
  seed: config.seed,
  testRatio: config.testRatio,
  groupByTicker: config.groupByTicker,
  rules: { ...config.rules },
  ...(outputs !== undefined ? { outputs } : {})
})

export class DatasetPipeline extends Context.Service<DatasetPipeline, {
  readonly run: (options: PipelineOptions) => Effect.Effect<
    Summary,
    DatasetInputError | DatasetOutputError | StrictModeViolation | RejectRateExceeded
  >
}>()("app/Dataset/DatasetPipeline") {
  static readonly layer = Layer.effect(
    DatasetPipeline,
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path

      const run = Effect.fn("DatasetPipeline.run")(function*(options: PipelineOptions) {
        const { input } = options
        const config = ingestConfigOf(options)
        // the size also decides below whether the workers start before the first line
        const inputSize = input === "-"
          ? 0
          : Number(yield* fs.stat(input).pipe(Effect.mapError(() => new DatasetInputError({ file: input, detail: "no such file" })), Effect.map((i) => i.size)))
        const { outputs, files } = yield* openOutputs(fs, path, options.outDir)
        const workerCount = options.workers ?? defaultIngestWorkers()
        const flow: Flow = {
          input,
          options,
          config,
          splitter: new LineSplitter(options.maxLineBytes ?? 1024 * 1024),
          // one record per KB of input (a little under what `dataset synth` writes: ~770 bytes a line; a .gz
          // file holds more, and the table grows), so a typical file's dedupe table is allocated once, at about
          // the size it ends at (12 bytes a slot)
          processor: new IngestProcessor(config, options.strict ?? false, Math.floor(inputSize / 1024)),
          buffers: new BufferPool(),
          write: makeWriter(),
          outputs,
          files,
          workerCount,
          workersAfter: options.workersAfterLines ?? 20_000,
          startPool: Effect.acquireRelease(
            Effect.sync(() => new IngestWorkers(workerCount, config)),
            (p) => Effect.promise(() => p.close())
          ),
          pooledChunks: readsIntoPool(input),
          pending: [],
          maxPending: 2 + 4 * workerCount,
          pool: undefined,
          bytesRead: 0,
          linesSeen: 0
        }
        // a file large enough to pass the threshold anyway gets its workers at once: they boot while the main
        // thread reads, instead of the first 20k lines running on one core (about a fifth of a 100k-record run)
        if (workerCount > 0 && inputSize > flow.workersAfter * 750) flow.pool = yield* flow.startPool
        yield* ingest(flow)

        const summary = summaryOf(input, config, flow.processor.counts, outputs)
        if (outputs !== undefined) {
          yield* fs.writeFileString(outputs.summary, JSON.stringify(summary, null, 2) + "\n").pipe(
            Effect.mapError(outError(outputs.summary))
          )
        }
        if (options.maxRejectRate !== undefined && summary.rejectRate > options.maxRejectRate) {
          return yield* new RejectRateExceeded({
            file: summary.input,
            rejected: summary.rejected,
            records: summary.records,
            maxRejectRate: options.maxRejectRate
          })
        }
        return summary
      }, Effect.scoped)

      return DatasetPipeline.of({ run })
    })
  )
}
