/**
 * Batch evaluation: generate answers for a held-out split with bounded concurrency, score them, and write the
 * run folder (see RunFiles.ts for its files).
 *
 * - Deterministic for a seed: records keep split order, `limit` picks a seeded sample, every request carries the
 *   seed, and all outputs are written in split order whatever order generations finish in.
 * - Interruptible: each generation is appended to `generations.jsonl` the moment it finishes, so an interrupted
 *   run keeps its completed samples; `resume` skips them (failed generations are retried). Resuming against a
 *   changed split file is refused.
 * - A failed generation is recorded with its error and left out of the metrics (counted in `failed`).
 */
import { Context, Effect, FileSystem, Layer, Path, Ref, Result, Schema, Semaphore } from "effect"
import { createHash } from "node:crypto"
import packageJson from "../../package.json" with { type: "json" }
import { causeKind, describeCause, issueField, kindField } from "../Shared/Errors.ts"
import { TrainingRecord } from "../Dataset/Record.ts"
import type { Generator } from "./Generator.ts"
import { seededSample } from "./Seeded.ts"
import { type LossPoint, renderReport } from "./Report.ts"
import {
  Aggregate,
  aggregate,
  compareAggregates,
  type EvalRecord,
  GenerationLine,
  type MetricDelta,
  SampleResult,
  scoreSample
} from "./RunFiles.ts"

export class EvalError extends Schema.TaggedError<EvalError>()("EvalError", {
  /** the file or folder concerned */
  path: Schema.String,
  detail: Schema.String,
  /** `failure` (the run failed) unless a file or folder is missing or unreadable (`input`) */
  kind: kindField("failure")
}) {
  override get message() {
    return `${this.path}: ${this.detail}`
  }
}

/** The input is wrong (split file contents, run folder state): the user must change something. */
export class EvalInputError extends Schema.TaggedError<EvalInputError>()("EvalInputError", {
  path: Schema.String,
  detail: Schema.String,
  /** `data` (the split's contents) unless the file is missing or unreadable, or a flag is wrong (`input`) */
  kind: kindField("data")
}) {
  override get message() {
    return `${this.path}: ${this.detail}`
  }
}

export interface RunOptions {
  readonly generator: Generator["Service"]
  /** held-out split, canonical TrainingRecord JSONL */
  readonly split: string
  readonly outDir: string
  /** name shown in reports; defaults to the generator's description */
  readonly system?: string | undefined
  readonly concurrency?: number | undefined
  readonly seed?: number | undefined
  readonly maxTokens?: number | undefined
  readonly temperature?: number | undefined
  /** evaluate a seeded sample of this many records */
  readonly limit?: number | undefined
  readonly resume?: boolean | undefined
  /** training metrics JSONL (`{step, loss}` lines) for the loss chart */
  readonly trainingLog?: string | undefined
}

/**
 * One predictions line for `score`: the answer, optionally the model's placeholder-form text (`rawAnswer`), the
 * split index it answers (`index`: a run's generations.jsonl has it) and its latency. Lines without `index` are
 * matched to the split's records in order.
 */
export const PredictionLine = Schema.Struct({
  prediction: Schema.String,
  index: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))),
  rawAnswer: Schema.optionalKey(Schema.String),
  latencyMs: Schema.optionalKey(Schema.Finite)
})
export type PredictionLine = typeof PredictionLine.Type

export interface ScoreOptions {
  /** predictions JSONL (PredictionLine per line) */
  readonly predictions: string
  /** the references: a split in TrainingRecord JSONL */
  readonly split: string
  /** also write samples.jsonl and aggregate.json here */
  readonly outDir?: string | undefined
  readonly system?: string | undefined
}

export interface ScoreResult {
  readonly aggregate: Aggregate
  readonly samples: ReadonlyArray<SampleResult>
}

export interface RunResult {
  readonly aggregate: Aggregate
  readonly outDir: string
  readonly files: { readonly samples: string; readonly aggregate: string; readonly report: string; readonly summary: string }
}

const decodeRecordLine = Schema.decodeUnknownResult(Schema.fromJsonString(TrainingRecord))
const decodeGenerationLine = Schema.decodeUnknownResult(Schema.fromJsonString(GenerationLine))
const decodePredictionLine = Schema.decodeUnknownResult(Schema.fromJsonString(PredictionLine))
const decodeSampleLine = Schema.decodeUnknownResult(Schema.fromJsonString(SampleResult))
const decodeAggregate = Schema.decodeUnknownResult(Schema.fromJsonString(Aggregate))
const encodeJson = (x: unknown) => JSON.stringify(x)

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex")

/** Parses a JSONL file with a line decoder; errors name file, line and field. */
const parseLines = <A>(
  file: string,
  text: string,
  decode: (line: string) => Result.Result<A, Schema.SchemaError>
): Result.Result<Array<{ line: number; value: A }>, EvalInputError> => {
  const out: Array<{ line: number; value: A }> = []
  const errors: Array<string> = []
  text.split("\n").forEach((raw, i) => {
    if (raw.trim() === "") return
    const r = decode(raw)
    if (Result.isSuccess(r)) out.push({ line: i + 1, value: r.success })
    else if (errors.length < 10) {
      errors.push(`line ${i + 1}: ${issueField(r.failure)}`)
    }
  })
  return errors.length === 0 ? Result.succeed(out) : Result.fail(new EvalInputError({ path: file, detail: errors.join("; ") }))
}

/** The file system as the Evaluator uses it: every failure an EvalError that names the file or folder. */
const makeFiles = (fs: FileSystem.FileSystem, path: Path.Path) => {
  const io = (p: string) => (e: unknown) => new EvalError({ path: p, detail: describeCause(e), kind: causeKind(e) ?? "failure" })
  return {
    fs,
    path,
    io,
    readText: (p: string) => fs.readFileString(p).pipe(Effect.mapError(io(p))),
    writeText: (p: string, s: string) => fs.writeFileString(p, s).pipe(Effect.mapError(io(p))),
    makeDirectory: (dir: string) => fs.makeDirectory(dir, { recursive: true }).pipe(Effect.mapError(io(dir)))
  }
}
type Files = ReturnType<typeof makeFiles>

const readSplit = Effect.fn("Evaluator.readSplit")(function*(files: Files, split: string) {
  // an unreadable split is the user's input to fix, like a malformed one
  const text = yield* files.fs.readFileString(split).pipe(
    Effect.mapError((e) => new EvalInputError({ path: split, detail: describeCause(e), kind: causeKind(e) ?? "input" }))
  )
  const lines = yield* Effect.fromResult(parseLines(split, text, (l) => decodeRecordLine(l, { errors: "first" })))
  if (lines.length === 0) return yield* new EvalInputError({ path: split, detail: "the split has no records" })
  const seen = new Map<string, number>()
  const records: Array<EvalRecord> = lines.map(({ line, value }, index) => {
    const base = sha256(`${value.question}\n${JSON.stringify(value.context ?? "")}\n${value.answer}`).slice(0, 12)
    const dup = seen.get(base) ?? 0
    seen.set(base, dup + 1)
    const id = dup === 0 ? base : `${base}-${dup}`
    return { ...value, id, index, line } as EvalRecord
  })
  return { records, sha: sha256(text) }
})

const readTrainingLog = Effect.fn("Evaluator.readTrainingLog")(function*(files: Files, file: string) {
  const text = yield* files.readText(file)
  const points: Array<LossPoint> = []
  for (const raw of text.split("\n")) {
    if (raw.trim() === "") continue
    try {
      const o = JSON.parse(raw) as Record<string, unknown>
      const loss = typeof o.loss === "number" ? o.loss : typeof o.train_loss === "number" ? o.train_loss : undefined
      // the trainer's metrics.jsonl writes {type: "eval", evalLoss}; HF's trainer_state uses eval_loss
      const evalLoss = typeof o.evalLoss === "number" ? o.evalLoss : typeof o.eval_loss === "number" ? o.eval_loss : undefined
      if (typeof o.step === "number" && loss !== undefined) points.push({ step: o.step, loss, split: "train" })
      if (typeof o.step === "number" && evalLoss !== undefined) points.push({ step: o.step, loss: evalLoss, split: "eval" })
    } catch {
      // a training log may hold non-JSON lines (e.g. a header); they carry no points
    }
  }
  return points
})

/**
 * The generations an interrupted run completed (none for a fresh folder); `generations.jsonl` is rewritten with
 * them alone. A folder that holds a run needs `resume`, and the split it ran on.
 */
const resumeCompleted = Effect.fnUntraced(function*(
  files: Files,
  options: RunOptions,
  sha: string,
  byId: ReadonlyMap<string, EvalRecord>
) {
  const genPath = files.path.join(options.outDir, "generations.jsonl")
  const runPath = files.path.join(options.outDir, "run.json")
  const completed = new Map<string, GenerationLine>()
  if (!(yield* files.fs.exists(genPath).pipe(Effect.mapError(files.io(genPath))))) return completed
  if (!options.resume) {
    return yield* new EvalInputError({ path: options.outDir, detail: "already holds a run; pass --resume to continue it or choose another --out", kind: "input" })
  }
  const previous = yield* Effect.fromResult(Schema.decodeUnknownResult(Schema.fromJsonString(Schema.Struct({ splitSha256: Schema.String })))(
    yield* files.readText(runPath)
  ).pipe(Result.mapError((e) => new EvalError({ path: runPath, detail: e.message }))))
  if (previous.splitSha256 !== sha) {
    return yield* new EvalInputError({ path: options.split, detail: "the split changed since the interrupted run; start a new run folder" })
  }
  // a torn last line (the process died mid-write) is dropped, not fatal
  const text = yield* files.readText(genPath)
  for (const raw of text.split("\n")) {
    const r = decodeGenerationLine(raw)
    if (Result.isSuccess(r) && r.success.error === undefined && byId.has(r.success.id)) completed.set(r.success.id, r.success)
  }
  // rewrite without failed/torn lines so the file stays a clean record of successes
  yield* files.writeText(genPath, [...completed.values()].map((g) => encodeJson(g) + "\n").join(""))
  return completed
})

/**
 * Generates the records not yet in `completed`, `concurrency` at a time, appending each line to generations.jsonl
 * as it finishes; successes go into `completed`, and the failures are returned.
 */
const generateAll = Effect.fnUntraced(function*(
  files: Files,
  options: RunOptions,
  run: { readonly records: ReadonlyArray<EvalRecord>; readonly completed: Map<string, GenerationLine>; readonly seed: number; readonly concurrency: number; readonly system: string }
) {
  const { records, completed, seed } = run
  const genPath = files.path.join(options.outDir, "generations.jsonl")
  const todo = records.filter((r) => !completed.has(r.id))
  const lock = yield* Semaphore.make(1)
  const done = yield* Ref.make(completed.size)
  const failures = new Map<string, GenerationLine>()
  yield* Effect.logInfo(`evaluating ${records.length} samples (${completed.size} already done) with ${run.system}`)
  yield* Effect.forEach(todo, (record) =>
    options.generator.generate({
      question: record.question,
      context: record.context,
      maxTokens: options.maxTokens ?? 256,
      temperature: options.temperature ?? 0,
      seed
    }).pipe(
      Effect.map((g): GenerationLine => ({
        id: record.id,
        index: record.index,
        prediction: g.answer,
        ...(g.rawAnswer !== undefined ? { rawAnswer: g.rawAnswer } : {}),
        ...(g.modelVersion !== undefined ? { modelVersion: g.modelVersion } : {}),
        latencyMs: g.latencyMs
      })),
      Effect.catchTag("GenerationError", (e) =>
        Effect.succeed<GenerationLine>({ id: record.id, index: record.index, prediction: "", latencyMs: 0, error: e.message })),
      Effect.flatMap((line) =>
        lock.withPermits(1)(
          files.fs.writeFileString(genPath, encodeJson(line) + "\n", { flag: "a" }).pipe(Effect.mapError(files.io(genPath)))
        ).pipe(Effect.as(line))),
      Effect.flatMap((line) =>
        Effect.gen(function*() {
          if (line.error === undefined) completed.set(line.id, line)
          else failures.set(line.id, line)
          const n = yield* Ref.updateAndGet(done, (x) => x + 1)
          if (n % 10 === 0 || n === records.length) yield* Effect.logInfo(`generated ${n}/${records.length}`)
        }))
    ), { concurrency: run.concurrency, discard: true })
  return failures
})

/** samples.jsonl, aggregate.json, report.html and summary.md of a finished run. */
const writeRunFiles = Effect.fnUntraced(function*(
  files: Files,
  options: RunOptions,
  system: string,
  agg: Aggregate,
  results: ReadonlyArray<SampleResult>
) {
  const out = {
    samples: files.path.join(options.outDir, "samples.jsonl"),
    aggregate: files.path.join(options.outDir, "aggregate.json"),
    report: files.path.join(options.outDir, "report.html"),
    summary: files.path.join(options.outDir, "summary.md")
  }
  yield* files.writeText(out.samples, results.map((r) => encodeJson(r) + "\n").join(""))
  yield* files.writeText(out.aggregate, JSON.stringify(agg, null, 2) + "\n")
  const trainingLog = options.trainingLog !== undefined ? yield* readTrainingLog(files, options.trainingLog) : undefined
  const report = yield* renderReport({
    title: `Evaluation: ${system}`,
    aggregates: [agg],
    samples: new Map([[system, results]]),
    trainingLog
  }).pipe(Effect.mapError((e) => new EvalError({ path: out.report, detail: e.message })))
  yield* files.writeText(out.report, report.html)
  yield* files.writeText(out.summary, report.markdown)
  yield* Effect.logInfo(`wrote ${out.report}`)
  return out
})

const run = Effect.fn("Evaluator.run")(function*(files: Files, options: RunOptions) {
  const seed = options.seed ?? 42
  const concurrency = Math.max(1, options.concurrency ?? 4)
  const system = options.system ?? options.generator.describe
  const { records: all, sha } = yield* readSplit(files, options.split)
  const records = options.limit !== undefined ? seededSample(all, options.limit, seed) : all
  const byId = new Map(records.map((r) => [r.id, r]))

  yield* files.makeDirectory(options.outDir)
  const completed = yield* resumeCompleted(files, options, sha, byId)
  const startedAt = new Date().toISOString()
  yield* files.writeText(files.path.join(options.outDir, "run.json"), JSON.stringify({
    system,
    generator: options.generator.describe,
    split: options.split,
    splitSha256: sha,
    seed,
    concurrency,
    maxTokens: options.maxTokens ?? 256,
    temperature: options.temperature ?? 0,
    limit: options.limit ?? null,
    startedAt,
    versions: { package: packageJson.version, node: process.version }
  }, null, 2))

  const failures = yield* generateAll(files, options, { records, completed, seed, concurrency, system })
  if (completed.size === 0) {
    const firstError = [...failures.values()][0]?.error ?? "no generations"
    return yield* new EvalError({ path: options.outDir, detail: `every generation failed (first error: ${firstError})` })
  }

  const results = records.filter((r) => completed.has(r.id)).map((r) => scoreSample(r, completed.get(r.id)!))
  const agg = aggregate(
    { system, generator: options.generator.describe, split: options.split, splitSha256: sha, seed, samples: records.length, failed: failures.size },
    results,
    byId
  )
  const written = yield* writeRunFiles(files, options, system, agg, results)
  return { aggregate: agg, outDir: options.outDir, files: written }
})

const loadAggregate = Effect.fn("Evaluator.loadAggregate")(function*(files: Files, runDir: string) {
  const file = files.path.join(runDir, "aggregate.json")
  const text = yield* files.readText(file)
  return yield* Effect.fromResult(decodeAggregate(text).pipe(Result.mapError((e) => new EvalError({ path: file, detail: e.message }))))
})

const loadSamples = Effect.fn("Evaluator.loadSamples")(function*(files: Files, runDir: string) {
  const file = files.path.join(runDir, "samples.jsonl")
  const text = yield* files.readText(file)
  return (yield* Effect.fromResult(parseLines(file, text, (l) => decodeSampleLine(l)))).map((x) => x.value)
})

const compare = Effect.fn("Evaluator.compare")(function*(files: Files, runA: string, runB: string, outDir?: string) {
  const a = yield* loadAggregate(files, runA)
  const b0 = yield* loadAggregate(files, runB)
  // two runs of the same system still need distinct labels in the charts
  const b = b0.system === a.system ? { ...b0, system: `${b0.system} (B)` } : b0
  const deltas = compareAggregates(a, b)
  const markdown = [
    `# ${a.system} vs ${b.system}`,
    "",
    `| metric | A: ${a.system} | B: ${b.system} | B − A |`,
    "| --- | ---: | ---: | ---: |",
    ...deltas.map((d) => `| ${d.metric} | ${d.a.toFixed(4)} | ${d.b.toFixed(4)} | ${d.delta >= 0 ? "+" : ""}${d.delta.toFixed(4)}${d.delta === 0 ? "" : d.improved ? " ▲" : " ▼"} |`),
    ""
  ].join("\n")
  if (outDir !== undefined) {
    const samplesA = yield* loadSamples(files, runA)
    const samplesB = yield* loadSamples(files, runB)
    const report = yield* renderReport({
      title: `Comparison: ${a.system} vs ${b.system}`,
      aggregates: [a, b],
      samples: new Map([[a.system, samplesA], [b.system, samplesB]])
    }).pipe(Effect.mapError((e) => new EvalError({ path: outDir, detail: e.message })))
    yield* files.makeDirectory(outDir)
    yield* files.writeText(files.path.join(outDir, "compare.html"), report.html)
    yield* files.writeText(files.path.join(outDir, "compare.md"), markdown)
  }
  return { deltas, markdown }
})

/** Each prediction's split index (its `index`, or its position when no line has one), checked against the split. */
const matchPredictions = Effect.fnUntraced(function*(
  options: ScoreOptions,
  lines: ReadonlyArray<{ line: number; value: PredictionLine }>,
  recordCount: number
) {
  const indexed = lines.every((l) => l.value.index !== undefined)
  if (!indexed && lines.some((l) => l.value.index !== undefined)) {
    return yield* new EvalInputError({ path: options.predictions, detail: "either every line has an index or none does (then line i answers record i)" })
  }
  if (!indexed && lines.length !== recordCount) {
    return yield* new EvalInputError({
      path: options.predictions,
      detail: `${lines.length} predictions for ${recordCount} records of ${options.split}: without an index field, there must be one per record`
    })
  }
  const byIndex = new Map<number, { line: number; value: PredictionLine }>()
  for (const [i, l] of lines.entries()) {
    const index = l.value.index ?? i
    if (index >= recordCount) {
      return yield* new EvalInputError({ path: options.predictions, detail: `line ${l.line}: index ${index}, but ${options.split} has ${recordCount} records` })
    }
    if (byIndex.has(index)) return yield* new EvalInputError({ path: options.predictions, detail: `line ${l.line}: a second prediction for index ${index}` })
    byIndex.set(index, l)
  }
  return byIndex
})

const score = Effect.fn("Evaluator.score")(function*(files: Files, options: ScoreOptions) {
  const { records, sha } = yield* readSplit(files, options.split)
  const text = yield* files.fs.readFileString(options.predictions).pipe(
    Effect.mapError((e) => new EvalInputError({ path: options.predictions, detail: describeCause(e), kind: causeKind(e) ?? "input" }))
  )
  const lines = yield* Effect.fromResult(parseLines(options.predictions, text, (l) => decodePredictionLine(l, { errors: "first" })))
  if (lines.length === 0) return yield* new EvalInputError({ path: options.predictions, detail: "no predictions" })
  const byIndex = yield* matchPredictions(options, lines, records.length)
  const scored = records.filter((r) => byIndex.has(r.index))
  const samples = scored.map((r) => {
    const p = byIndex.get(r.index)!.value
    return scoreSample(r, {
      id: r.id,
      index: r.index,
      prediction: p.prediction,
      ...(p.rawAnswer !== undefined ? { rawAnswer: p.rawAnswer } : {}),
      latencyMs: p.latencyMs ?? 0
    })
  })
  const agg = aggregate(
    {
      system: options.system ?? files.path.basename(options.predictions),
      generator: `predictions:${options.predictions}`,
      split: options.split,
      splitSha256: sha,
      seed: 0,
      samples: records.length,
      failed: 0
    },
    samples,
    new Map(records.map((r) => [r.id, r]))
  )
  if (options.outDir !== undefined) {
    yield* files.makeDirectory(options.outDir)
    yield* files.writeText(files.path.join(options.outDir, "samples.jsonl"), samples.map((r) => encodeJson(r) + "\n").join(""))
    yield* files.writeText(files.path.join(options.outDir, "aggregate.json"), JSON.stringify(agg, null, 2) + "\n")
  }
  return { aggregate: agg, samples } satisfies ScoreResult
})

export class Evaluator extends Context.Service<Evaluator, {
  run(options: RunOptions): Effect.Effect<RunResult, EvalError | EvalInputError>
  /** Reads `aggregate.json` of a run folder. */
  loadAggregate(runDir: string): Effect.Effect<Aggregate, EvalError>
  /** Scores a predictions JSONL against a split's references: every metric of `run`, with no generation. */
  score(options: ScoreOptions): Effect.Effect<ScoreResult, EvalError | EvalInputError>
  /** Side-by-side comparison of two run folders; writes compare.html/compare.md into `outDir` when given. */
  compare(runA: string, runB: string, outDir?: string): Effect.Effect<{ deltas: ReadonlyArray<MetricDelta>; markdown: string }, EvalError | EvalInputError>
}>()("app/Evaluation/Evaluator") {
  static readonly layer = Layer.effect(
    Evaluator,
    Effect.gen(function*() {
      const files = makeFiles(yield* FileSystem.FileSystem, yield* Path.Path)
      return Evaluator.of({
        run: (options) => run(files, options),
        loadAggregate: (runDir) => loadAggregate(files, runDir),
        compare: (runA, runB, outDir) => compare(files, runA, runB, outDir),
        score: (options) => score(files, options)
      })
    })
  )
}
