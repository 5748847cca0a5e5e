/**
 * A stage of the end-to-end run, as data: what decides its result (its settings, the files it reads, the stages it
 * reads from), where it works, what it leaves behind, the Schema of its result and how to produce it. Each stage
 * folder exports its `Stage` values (Dataset/DatasetStage.ts, Training/TrainStage.ts, …); the generic runner in
 * src/Pipeline/StageRunner.ts does the rest (run.json, caching, `--force`, resume, timings, StageFailed).
 *
 * This file sits in the core, not in src/Pipeline, so the stage folders describe their stages without importing the
 * pipeline that composes them (data flows one way).
 */
import type { Effect } from "effect"
import { Schema } from "effect"
import { ErrorKind } from "./Errors.ts"

export interface StageContext {
  /** an earlier run of the same key was interrupted or failed: the stage may continue from what it left */
  readonly resume: boolean
}

export interface Stage<In, A, E = never, R = never> {
  readonly name: string
  /** the stages whose results this one reads: their cache keys enter this one's */
  readonly reads: ReadonlyArray<string>
  /** the settings that decide the result (hashed into the cache key) */
  readonly settings: (input: In) => unknown
  /** files it reads that no earlier stage made: identified by content (large ones by size and mtime) in the key */
  readonly inputFiles: (input: In) => Readonly<Record<string, string>>
  /** the stage's own folders: removed before a fresh run, kept when an interrupted run of the same key resumes */
  readonly workDirs: (input: In) => ReadonlyArray<string>
  /** the files a cached result stands for: when one is missing, the stage runs again */
  readonly outputFiles: (result: A, input: In) => ReadonlyArray<string>
  /** the result as run.json records it; a recorded result that does not decode is not trusted (the stage runs again) */
  readonly result: Schema.Codec<A, unknown>
  readonly run: (input: In, context: StageContext) => Effect.Effect<A, E, R>
}

/**
 * The one error a stage run ends with: the stage, what went wrong, and its kind (Shared/Errors.ts: a missing
 * file is `input`, bad data or settings `data`, a broken stage `failure`, …), which decides the exit code. A stage
 * fails with it directly when it has no typed error of its own; the runner turns every other failure into one,
 * keeping the original error's kind.
 */
export class StageFailed extends Schema.TaggedError<StageFailed>()("StageFailed", {
  stage: Schema.String,
  detail: Schema.String,
  kind: ErrorKind
}) {
  override get message() {
    return `stage "${this.stage}" failed: ${this.detail}`
  }
}
