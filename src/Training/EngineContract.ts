/**
 * What a training engine is: the shape both engines (TfjsEngine.ts, TorchEngine.ts) build and the
 * `TrainingEngine` service (TrainingEngine.ts) carries. In its own file so the engines need not import the
 * service that imports them.
 */
import type { Effect, FileSystem, Path } from "effect"
import type { TrainError, TrainOptions, TrainResult } from "./Trainer.ts"
import type { TrainConfig } from "./TrainConfig.ts"

export interface TrainingEngineShape {
  readonly name: "tfjs" | "torch"
  /** why this engine runs the job (the flag, or what auto found) */
  readonly reason: string
  readonly train: (config: TrainConfig, options?: TrainOptions) => Effect.Effect<TrainResult, TrainError, FileSystem.FileSystem | Path.Path>
}
