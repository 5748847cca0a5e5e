/**
 * The pipeline's LoRA / QLoRA training stage: `Trainer.train` on the dataset stage's fit/validation files over the
 * base (or the pre-trained base), with checkpoints, the PEFT adapter and the best checkpoint by ROUGE-L.
 */
import { Effect, Schema } from "effect"
import type { PromptLayout } from "../Dataset/PromptFormat.ts"
import { Device, type DeviceChoice } from "../Model/Device.ts"
import type { Stage } from "../Shared/Stage.ts"
import { defaultTrainConfig, type TrainConfig, validateTrainConfig } from "./TrainConfig.ts"
import { Trainer, type TrainResult } from "./Trainer.ts"
import { loraLogEvery } from "./TrainPresets.ts"

/** What a training run reports to the pipeline (run.json, the report). */
export const TrainStageResult = Schema.Struct({
  mode: Schema.String,
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

/** The LoRA settings the pipeline config exposes (a subset of TrainConfig). */
export type LoraStageSettings = Pick<
  TrainConfig,
  | "r" | "loraAlpha" | "loraDropout" | "useRslora" | "targetModules" | "epochs" | "batchSize" | "gradientAccumulationSteps"
  | "learningRate" | "lrScheduler" | "warmupSteps" | "maxSeqLength" | "evalEvery" | "saveEvery" | "evalGenerationSamples" | "seed"
> & {
  readonly mode: "lora" | "qlora"
  readonly maxSteps?: number | undefined
  readonly promptLayout: PromptLayout
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
  const { maxSteps, ...rest } = input.train
  const trainConfig = yield* stageTrainConfig(input.device, {
    ...rest,
    ...(maxSteps === undefined ? {} : { maxSteps }),
    model: input.base,
    trainFile: input.data.fit,
    validationFile: input.data.validation,
    outputDir: input.dir,
    logEvery: loraLogEvery(maxSteps),
    saveTotalLimit: 2,
    metricForBest: "rouge",
    maxNewTokens: input.maxNewTokens
  })
  const started = performance.now()
  const result = yield* (yield* Trainer).train(trainConfig, { resume })
  return trainSummary(result, (performance.now() - started) / 1000, input.train.mode)
}, (effect, input) => Effect.provide(effect, Device.layer(input.device)))

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
