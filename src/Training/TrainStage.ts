/**
 * The pipeline's LoRA / QLoRA training stage: the TrainingEngine (tfjs, torch, or auto's choice) on the dataset
 * stage's fit/validation files over the base (or the pre-trained base), with checkpoints, the PEFT adapter and the
 * best checkpoint by the configured metric. The engine it ran on, and why, is part of the result.
 */
import { Effect, Layer, Schema } from "effect"
import type { PromptLayout } from "../Dataset/PromptFormat.ts"
import type { DeviceChoice } from "../Model/Device.ts"
import { PythonEnv } from "../Python/PythonEnv.ts"
import type { Stage } from "../Shared/Stage.ts"
import { defaultTrainConfig, type TrainConfig, validateTrainConfig } from "./TrainConfig.ts"
import type { TrainResult } from "./Trainer.ts"
import { type EngineChoice, TrainingEngine } from "./TrainingEngine.ts"
import { loraLogEvery } from "./TrainPresets.ts"

/** What a training run reports to the pipeline (run.json, the report). */
export const TrainStageResult = Schema.Struct({
  mode: Schema.String,
  /** the engine that trained, and why it was chosen */
  engine: Schema.optionalKey(Schema.String),
  engineReason: Schema.optionalKey(Schema.String),
  runDir: Schema.String,
  finalDir: Schema.String,
  steps: Schema.Int,
  seconds: Schema.Number,
  tokensPerSecond: Schema.Number,
  firstLoss: Schema.NullOr(Schema.Number),
  lastLoss: Schema.NullOr(Schema.Number),
  bestStep: Schema.Int,
  bestMetric: Schema.NullOr(Schema.Number),
  trainableParameters: Schema.Int
})
export type TrainStageResult = typeof TrainStageResult.Type

export const trainSummary = (r: TrainResult, seconds: number, mode: string): TrainStageResult => ({
  mode,
  runDir: r.runDir,
  finalDir: r.finalDir,
  steps: r.globalStep,
  seconds,
  tokensPerSecond: r.tokensPerSecond,
  firstLoss: r.trainLogs[0]?.loss ?? null,
  lastLoss: r.trainLogs.at(-1)?.loss ?? null,
  bestStep: r.bestStep,
  bestMetric: r.bestMetric,
  trainableParameters: r.trainableParameters
})

/** The trainer's settings for a pipeline run: the trainer's defaults, the device, then the stage's own. */
export const stageTrainConfig = (device: DeviceChoice, settings: Record<string, unknown>) =>
  validateTrainConfig({ ...defaultTrainConfig, device, ...settings }, "pipeline config")

/** The training settings the pipeline config exposes: every TrainConfig field but those the pipeline fills in. */
export type LoraStageSettings =
  & Omit<
    TrainConfig,
    "model" | "trainFile" | "validationFile" | "validationFraction" | "outputDir" | "maxNewTokens" | "device" | "mode" | "promptLayout" | "engine" | "logEvery"
  >
  & {
    /** absent: about 20 lines per run */
    readonly logEvery?: number | undefined
    readonly mode: "lora" | "qlora"
    readonly promptLayout: PromptLayout
    readonly engine: EngineChoice
    /** the torch engine's interpreter (`train --python`) */
    readonly python?: string | undefined
  }

export interface TrainStageInput {
  readonly train: LoraStageSettings
  /** most tokens of the greedy answers scored at each evaluation */
  readonly maxNewTokens: number
  /** the model LoRA adapts: a GGUF or an HF folder */
  readonly base: string
  readonly data: { readonly fit: string; readonly validation: string }
  readonly device: DeviceChoice
  readonly dir: string
}

const runTrain = Effect.fn("TrainStage.run")(function*(input: TrainStageInput, resume: boolean) {
  const { python: _, logEvery, ...settings } = input.train
  const trainConfig = yield* stageTrainConfig(input.device, {
    ...settings,
    logEvery: logEvery ?? loraLogEvery(settings.maxSteps),
    model: input.base,
    trainFile: input.data.fit,
    validationFile: input.data.validation,
    outputDir: input.dir,
    maxNewTokens: input.maxNewTokens
  })
  const engine = yield* TrainingEngine
  const started = performance.now()
  const result = yield* engine.train(trainConfig, { resume })
  return { ...trainSummary(result, (performance.now() - started) / 1000, input.train.mode), engine: engine.name, engineReason: engine.reason }
}, (effect, input) =>
  Effect.provide(
    effect,
    TrainingEngine.layer(input.train.engine).pipe(Layer.provide(PythonEnv.layer({ python: input.train.python })))
  ))

export const TrainStage: Stage<TrainStageInput, TrainStageResult, Effect.Error<ReturnType<typeof runTrain>>, Effect.Services<ReturnType<typeof runTrain>>> = {
  name: "train",
  // the base's key too: it decides the model when no pre-training runs
  reads: ["base", "pretrain", "dataset"],
  settings: ({ train, maxNewTokens }) => ({ train, maxNewTokens }),
  inputFiles: () => ({}),
  workDirs: ({ dir }) => [dir],
  outputFiles: (r) => [r.finalDir],
  result: TrainStageResult,
  run: (input, { resume }) => runTrain(input, resume)
}
