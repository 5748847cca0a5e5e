/**
 * The pipeline's pre-training stage. A randomly initialized base cannot show what LoRA adds, so the project-made base
 * is first pre-trained, full-parameter with the same Trainer, on the training split's answer text (no prompts), and
 * written back as a GGUF (`exportFullModelGguf`, the trainer's own full-model writer). LoRA then teaches the task:
 * answering a question from its context. When it does not apply, the stage records why and passes the base on.
 */
import { Effect, FileSystem, Path, Schema, Stream } from "effect"
import type { TrainingRecord } from "../Dataset/Record.ts"
import { Device, type DeviceChoice } from "../Model/Device.ts"
import { loadModelSource } from "../Model/ModelLoader.ts"
import { Tokenizer } from "../Model/Tokenizer.ts"
import { type Stage, StageFailed } from "../Shared/Stage.ts"
import { exportFullModelGguf, readRecordsFile, type TrainExample, Trainer, trainTokenizerOf } from "./Trainer.ts"
import { pretrainPreset, type PretrainSettings } from "./TrainPresets.ts"
import { stageTrainConfig, trainSummary } from "./TrainStage.ts"

export const PretrainResult = Schema.Struct({
  ran: Schema.Boolean,
  reason: Schema.String,
  /** the base the LoRA stage trains on: the pre-trained GGUF, or the base itself when pre-training did not run */
  loraBase: Schema.String,
  mode: Schema.optionalKey(Schema.String),
  runDir: Schema.optionalKey(Schema.String),
  finalDir: Schema.optionalKey(Schema.String),
  steps: Schema.optionalKey(Schema.Int),
  seconds: Schema.optionalKey(Schema.Number),
  tokensPerSecond: Schema.optionalKey(Schema.Number),
  firstLoss: Schema.optionalKey(Schema.NullOr(Schema.Number)),
  lastLoss: Schema.optionalKey(Schema.NullOr(Schema.Number)),
  bestStep: Schema.optionalKey(Schema.Int),
  bestMetric: Schema.optionalKey(Schema.NullOr(Schema.Number)),
  trainableParameters: Schema.optionalKey(Schema.Int)
})
export type PretrainResult = typeof PretrainResult.Type

export interface PretrainStageInput {
  /** decided by the pipeline's config; `reasonOff` says why not */
  readonly enabled: boolean
  readonly reasonOff: string
  readonly settings: Omit<PretrainSettings, "seed">
  readonly seed: number
  readonly base: { readonly path: string; readonly format: "gguf" | "hf" }
  readonly data: { readonly fit: string; readonly validation: string }
  readonly device: DeviceChoice
  /** the trainer's run folder */
  readonly dir: string
  /** the pre-trained GGUF */
  readonly out: string
}

/**
 * The text a base is pre-trained on: a record's answer alone as plain text (then EOS), with no prompt around it.
 * Answers only: with rationales appended (measured) the small base learned to run on past the answer, and greedy
 * generations looped instead of stopping.
 */
export const pretrainText = (r: TrainingRecord): TrainExample => ({ text: r.answer, answerStart: 0, answerEnd: r.answer.length })

const runPretrain = Effect.fn("PretrainStage.run")(function*(input: PretrainStageInput, resume: boolean) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const { base } = input
  const trainConfig = yield* stageTrainConfig(input.device, {
    ...pretrainPreset({ ...input.settings, seed: input.seed }),
    model: base.path,
    trainFile: input.data.fit,
    validationFile: input.data.validation,
    outputDir: input.dir
  })
  const fit = yield* readRecordsFile(input.data.fit)
  const validation = yield* readRecordsFile(input.data.validation)
  const source = yield* loadModelSource(base.path)
  const tokenizer = yield* trainTokenizerOf(yield* (yield* Tokenizer).load(base.path), "seed")
  const started = performance.now()
  const result = yield* (yield* Trainer).run(
    {
      modelConfig: source.config,
      weights: () => Stream.toAsyncIterable(source.weights),
      tokenizer,
      baseModelName: base.path,
      train: fit.map(pretrainText),
      validation: validation.map(pretrainText)
    },
    trainConfig,
    { resume }
  )
  const seconds = (performance.now() - started) / 1000
  // the folder exists only when the base stage made the base (not with --model and pretrain.enabled: on)
  yield* fs.makeDirectory(path.dirname(input.out), { recursive: true })
  yield* exportFullModelGguf(base.path, path.join(result.finalDir, "model.safetensors"), input.out, source.config)
  return {
    ran: true,
    reason:
      "the project-made base has random weights: a short full-parameter pre-training on the training split's answers (no prompts) gives LoRA a language model to adapt",
    loraBase: input.out,
    ...trainSummary(result, seconds, "full")
  } satisfies PretrainResult
}, (effect, input) => effect.pipe(Effect.scoped, Effect.provide(Device.layer(input.device))))

const pretrainOrPass = (input: PretrainStageInput, resume: boolean) => {
  if (!input.enabled) return Effect.succeed<PretrainResult>({ ran: false, reason: input.reasonOff, loraBase: input.base.path })
  if (input.base.format !== "gguf") {
    return Effect.fail(new StageFailed({ stage: "pretrain", detail: "pre-training writes a GGUF and needs a GGUF base", kind: "data" }))
  }
  return runPretrain(input, resume)
}

export const PretrainStage: Stage<
  PretrainStageInput,
  PretrainResult,
  Effect.Error<ReturnType<typeof runPretrain>> | StageFailed,
  Effect.Services<ReturnType<typeof runPretrain>>
> = {
  name: "pretrain",
  reads: ["base", "dataset"],
  settings: ({ enabled, settings, seed }) => ({ pretrain: settings, on: enabled, seed }),
  inputFiles: () => ({}),
  workDirs: ({ dir }) => [dir],
  outputFiles: (r) => [r.loraBase],
  result: PretrainResult,
  run: (input, { resume }) => pretrainOrPass(input, resume)
}
