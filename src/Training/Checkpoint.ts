/**
 * Checkpoints `checkpoint-<step>/` in a run folder, as the HF Trainer lays them out:
 * the adapter (PEFT files) or, in full mode, `model.safetensors`; `optimizer.safetensors` (AdamW moments);
 * `scheduler.json`; `rng_state.json`; `trainer_state.json` (step, epoch, best metric so far, evaluation history).
 *
 * A checkpoint is written into `checkpoint-<step>.tmp/` and renamed when complete, so a run killed while saving
 * never leaves a half checkpoint that `--resume` would pick up.
 */
import { Effect, FileSystem, Path, Schema } from "effect"
import type { NamedTensor } from "../Model/ModelContracts.ts"
import { fileError, type ModelFileError, toFileError } from "../Model/ModelFileError.ts"
import { openSafetensors, writeSafetensors } from "../Model/Safetensors.ts"
import { LrSchedulerType } from "./LrSchedule.ts"

export const OPTIMIZER_FILE = "optimizer.safetensors"
export const MODEL_FILE = "model.safetensors"

export const EvalRecord = Schema.Struct({
  step: Schema.Int,
  // null: the validation set had no answer token (no mean to report)
  evalLoss: Schema.NullOr(Schema.Finite),
  rougeL: Schema.NullOr(Schema.Finite)
})
export type EvalRecord = typeof EvalRecord.Type

export const TrainerState = Schema.Struct({
  globalStep: Schema.Int,
  /** fractional epochs done */
  epoch: Schema.Finite,
  totalSteps: Schema.Int,
  metricForBest: Schema.Literals(["rouge", "eval_loss"]),
  bestMetric: Schema.NullOr(Schema.Finite),
  bestStep: Schema.NullOr(Schema.Int),
  evaluationsWithoutImprovement: Schema.Int,
  evaluations: Schema.Array(EvalRecord),
  /** tokens trained on so far */
  tokensSeen: Schema.Int
})
export type TrainerState = typeof TrainerState.Type

export const SchedulerState = Schema.Struct({
  type: LrSchedulerType,
  peak: Schema.Finite,
  warmupSteps: Schema.Int,
  totalSteps: Schema.Int,
  lastStep: Schema.Int
})
export type SchedulerState = typeof SchedulerState.Type

/**
 * Every random draw of a run (data order, dropout masks, LoRA init) is a pure function of the seed and the
 * position in the run, so this is all the state there is to restore.
 */
export const RngState = Schema.Struct({ seed: Schema.Int, globalStep: Schema.Int })
export type RngState = typeof RngState.Type

export const checkpointName = (step: number) => `checkpoint-${step}`

/** What a finished run's `final.json` says: which checkpoint became the final adapter, and why (both engines). */
export interface FinalRecord {
  readonly bestStep: number
  readonly metricForBest: string
  readonly bestMetric: number | null | undefined
  readonly globalStep: number
  readonly stoppedEarly: boolean
  readonly finalDir: string
  readonly engine?: string
}

/** `final.json`'s text, its fields in one order for every engine. */
export const finalRecordJson = (r: FinalRecord): string =>
  JSON.stringify(
    {
      bestStep: r.bestStep,
      checkpoint: checkpointName(r.bestStep),
      metricForBest: r.metricForBest,
      bestMetric: r.bestMetric,
      globalStep: r.globalStep,
      stoppedEarly: r.stoppedEarly,
      finalDir: r.finalDir,
      ...(r.engine === undefined ? {} : { engine: r.engine })
    },
    null,
    2
  ) + "\n"

export interface CheckpointContents {
  /** writes the trained weights (PEFT adapter files, or model.safetensors) into the folder */
  readonly writeWeights: (dir: string) => Effect.Effect<void, ModelFileError, FileSystem.FileSystem | Path.Path>
  readonly optimizer: ReadonlyArray<NamedTensor>
  readonly optimizerStep: number
  readonly scheduler: SchedulerState
  readonly rng: RngState
  readonly trainer: TrainerState
}

const writeJson = (fs: FileSystem.FileSystem, file: string, value: unknown) =>
  fs.writeFileString(file, JSON.stringify(value, null, 2) + "\n").pipe(Effect.mapError(toFileError(file)))

/** Writes `checkpoint-<step>/` atomically (tmp folder + rename); replaces one of the same step. */
export const saveCheckpoint = Effect.fn("Checkpoint.save")(function*(runDir: string, contents: CheckpointContents) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const final = path.join(runDir, checkpointName(contents.trainer.globalStep))
  const tmp = `${final}.tmp`
  yield* fs.remove(tmp, { recursive: true, force: true }).pipe(Effect.mapError(toFileError(tmp)))
  yield* fs.makeDirectory(tmp, { recursive: true }).pipe(Effect.mapError(toFileError(tmp)))
  yield* contents.writeWeights(tmp)
  yield* writeSafetensors(path.join(tmp, OPTIMIZER_FILE), contents.optimizer, {
    metadata: { step: String(contents.optimizerStep) }
  })
  yield* writeJson(fs, path.join(tmp, "scheduler.json"), contents.scheduler)
  yield* writeJson(fs, path.join(tmp, "rng_state.json"), contents.rng)
  yield* writeJson(fs, path.join(tmp, "trainer_state.json"), contents.trainer)
  yield* fs.remove(final, { recursive: true, force: true }).pipe(Effect.mapError(toFileError(final)))
  yield* fs.rename(tmp, final).pipe(Effect.mapError(toFileError(final)))
  return final
})

/** Steps of the complete checkpoints in a run folder, ascending. */
export const listCheckpoints = Effect.fn("Checkpoint.list")(function*(runDir: string) {
  const fs = yield* FileSystem.FileSystem
  if (!(yield* fs.exists(runDir).pipe(Effect.orElseSucceed(() => false)))) return []
  const names = yield* fs.readDirectory(runDir).pipe(Effect.mapError(toFileError(runDir)))
  return names.flatMap((n) => {
    const m = /^checkpoint-(\d+)$/.exec(n)
    return m === null ? [] : [Number(m[1])]
  }).sort((a, b) => a - b)
})

const readJson = <S extends Schema.Decoder<unknown>>(fs: FileSystem.FileSystem, file: string, schema: S) =>
  fs.readFileString(file).pipe(
    Effect.mapError(toFileError(file)),
    Effect.flatMap((text) =>
      Schema.decodeUnknownEffect(Schema.fromJsonString(schema))(text).pipe(
        Effect.mapError((e) => fileError(file, e.message))
      )
    )
  )

export interface LoadedCheckpoint {
  readonly dir: string
  readonly optimizer: ReadonlyMap<string, NamedTensor>
  readonly optimizerStep: number
  readonly scheduler: SchedulerState
  readonly rng: RngState
  readonly trainer: TrainerState
}

/** Reads everything but the weights (the caller loads those with the PEFT or safetensors reader). */
export const loadCheckpoint = Effect.fn("Checkpoint.load")(function*(dir: string) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const optimizerPath = path.join(dir, OPTIMIZER_FILE)
  const { tensors, step } = yield* Effect.scoped(Effect.gen(function*() {
    const file = yield* openSafetensors(optimizerPath)
    const tensors = yield* Effect.forEach(file.tensors, (t) => file.readTensor(t.name))
    return { tensors, step: Number(file.metadata.step) }
  }))
  if (!Number.isInteger(step)) return yield* fileError(optimizerPath, "metadata lacks the optimizer step")
  return {
    dir,
    optimizer: new Map(tensors.map((t) => [t.name, t])),
    optimizerStep: step,
    scheduler: yield* readJson(fs, path.join(dir, "scheduler.json"), SchedulerState),
    rng: yield* readJson(fs, path.join(dir, "rng_state.json"), RngState),
    trainer: yield* readJson(fs, path.join(dir, "trainer_state.json"), TrainerState)
  } satisfies LoadedCheckpoint
})

/** Deletes all but the newest `limit` checkpoints, always keeping `keep` (the best). Returns the deleted steps. */
export const pruneCheckpoints = Effect.fn("Checkpoint.prune")(function*(
  runDir: string,
  limit: number | undefined,
  keep: number | null
) {
  if (limit === undefined) return []
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const steps = yield* listCheckpoints(runDir)
  const newest = new Set(steps.slice(-limit))
  const doomed = steps.filter((s) => !newest.has(s) && s !== keep)
  for (const s of doomed) {
    const dir = path.join(runDir, checkpointName(s))
    yield* fs.remove(dir, { recursive: true }).pipe(Effect.mapError(toFileError(dir)))
  }
  return doomed
})
