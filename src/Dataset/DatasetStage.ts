/**
 * The pipeline's dataset stage: the built-in synthetic set (`dataset synth`'s writer) or the user's JSONL, through
 * the ingest (`DatasetPipeline.run`: validate, normalize, rules, dedupe, train/test split), then the trainer's own
 * validation slice carved out of train.jsonl (never out of test.jsonl, which evaluation holds out).
 */
import { Effect, FileSystem, Path, Schema } from "effect"
import { Progress } from "../Shared/Progress.ts"
import { type Stage, StageFailed } from "../Shared/Stage.ts"
import { DatasetPipeline, Summary } from "./DatasetPipeline.ts"
import { writeSynthetic } from "./FileOps.ts"

export interface DatasetStageInput {
  readonly data: {
    /** the user's JSONL; absent: the synthetic set */
    readonly file?: string | undefined
    readonly synthCount: number
    readonly seed: number
    readonly testRatio: number
    readonly maxRejectRate: number
  }
  /** the trainer's validation slice: this many training records (at least 4, at most a fifth of them) */
  readonly validationRecords: number
  readonly dir: string
}

export const DatasetResult = Schema.Struct({
  source: Schema.String,
  summary: Summary,
  train: Schema.String,
  test: Schema.String,
  /** the LoRA trainer's own training and validation files (train.jsonl minus a small validation slice) */
  fit: Schema.String,
  validation: Schema.String,
  fitRecords: Schema.Int,
  validationRecords: Schema.Int
})
export type DatasetResult = typeof DatasetResult.Type

/** How many of `trainRecords` the validation slice takes for a requested size. */
export const validationSize = (trainRecords: number, requested: number) => Math.min(Math.max(4, requested), Math.floor(trainRecords / 5))

/** Splits train.jsonl into fit.jsonl and validation.jsonl (the first `validationSize` lines), in `dir`. */
export const splitValidation = Effect.fn("DatasetStage.splitValidation")(function*(trainFile: string, dir: string, requested: number) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const lines = (yield* fs.readFileString(trainFile)).split("\n").filter((l) => l.trim() !== "")
  const k = validationSize(lines.length, requested)
  const fit = path.join(dir, "fit.jsonl")
  const validation = path.join(dir, "validation.jsonl")
  yield* fs.writeFileString(fit, lines.slice(k).join("\n") + "\n")
  yield* fs.writeFileString(validation, lines.slice(0, k).join("\n") + "\n")
  return { fit, validation, fitRecords: lines.length - k, validationRecords: k }
})

const runDataset = Effect.fn("DatasetStage.run")(function*({ data, validationRecords, dir }: DatasetStageInput) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const progress = yield* Progress
  yield* fs.makeDirectory(dir, { recursive: true })
  let input = data.file
  if (input === undefined) {
    input = path.join(dir, "synthetic.jsonl")
    yield* progress.line(`[dataset] writing ${data.synthCount} synthetic records (seed ${data.seed})`)
    yield* writeSynthetic({ count: data.synthCount, seed: data.seed, output: input })
  }
  const ran = yield* (yield* DatasetPipeline).run({
    input,
    outDir: dir,
    seed: data.seed,
    testRatio: data.testRatio,
    maxRejectRate: data.maxRejectRate,
    onProgress: ({ linesRead }) => progress.update({ task: "[dataset]", done: linesRead, unit: "lines read" })
  })
  const summary = {
    ...ran,
    outputs: ran.outputs ?? {
      train: path.join(dir, "train.jsonl"),
      test: path.join(dir, "test.jsonl"),
      rejects: path.join(dir, "rejects.jsonl"),
      summary: path.join(dir, "summary.json")
    }
  }
  if (summary.train === 0 || summary.test === 0) {
    return yield* new StageFailed({
      stage: "dataset",
      detail: `${input}: needs records on both sides of the split (train ${summary.train}, test ${summary.test})`,
      kind: "data"
    })
  }
  const slices = yield* splitValidation(summary.outputs.train, dir, validationRecords)
  yield* progress.line(
    `[dataset] ${summary.linesRead} lines: ${summary.train} train, ${summary.test} test, ` +
      `${summary.rejected} rejected, ${summary.duplicates.exact + summary.duplicates.normalized} duplicates`
  )
  return {
    source: data.file ?? `synthetic (${data.synthCount} records, seed ${data.seed})`,
    summary,
    train: summary.outputs.train,
    test: summary.outputs.test,
    ...slices
  } satisfies DatasetResult
})

export const DatasetStage: Stage<
  DatasetStageInput,
  DatasetResult,
  Effect.Error<ReturnType<typeof runDataset>>,
  Effect.Services<ReturnType<typeof runDataset>>
> = {
  name: "dataset",
  reads: [],
  settings: ({ data, validationRecords }) => ({ data, validation: validationRecords }),
  inputFiles: ({ data }) => (data.file === undefined ? {} : { data: data.file }),
  workDirs: ({ dir }) => [dir],
  outputFiles: (r) => [r.train, r.test, r.fit, r.validation],
  result: DatasetResult,
  run: (input) => runDataset(input)
}
