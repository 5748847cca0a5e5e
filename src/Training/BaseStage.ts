/**
 * The pipeline's base-model stage: the user's GGUF or Hugging Face folder (read, not copied), or the project's own
 * seeded random model, written as `model init` writes it.
 */
import { Effect, FileSystem, Path, Schema } from "effect"
import type { LlamaConfig } from "../Model/ModelContracts.ts"
import { loadModelSource } from "../Model/ModelLoader.ts"
import { parameterCount, presetConfig, type TinyPreset, writeTinyModel } from "../Model/TinyModel.ts"
import type { Stage } from "../Shared/Stage.ts"

export interface BaseStageInput {
  readonly model: {
    /** the user's model; absent: the project makes one */
    readonly base?: string | undefined
    readonly preset: TinyPreset
    readonly seed: number
    readonly shape?: Partial<LlamaConfig> | undefined
  }
  /** where the project-made model is written */
  readonly dir: string
}

export const BaseResult = Schema.Struct({
  path: Schema.String,
  format: Schema.Literals(["gguf", "hf"]),
  /** the project's random model (pre-training applies to it), not a trained one */
  madeByProject: Schema.Boolean,
  parameters: Schema.Int,
  shape: Schema.String
})
export type BaseResult = typeof BaseResult.Type

const shapeText = (c: LlamaConfig) => `${c.numLayers} layers, d ${c.hiddenSize}, vocab ${c.vocabSize}`

const runBase = Effect.fn("BaseStage.run")(function*({ model, dir }: BaseStageInput) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  if (model.base !== undefined) {
    const source = yield* loadModelSource(path.resolve(model.base))
    return {
      path: source.path,
      format: source.format,
      madeByProject: false,
      parameters: parameterCount(source.config),
      shape: shapeText(source.config)
    } satisfies BaseResult
  }
  const shape = { ...presetConfig(model.preset), ...model.shape }
  const out = path.join(dir, "base.gguf")
  yield* fs.makeDirectory(dir, { recursive: true })
  yield* writeTinyModel({ config: shape, path: out, seed: model.seed, name: `finetune-finance ${model.preset}` })
  return { path: out, format: "gguf", madeByProject: true, parameters: parameterCount(shape), shape: shapeText(shape) } satisfies BaseResult
})

export const BaseStage: Stage<BaseStageInput, BaseResult, Effect.Error<ReturnType<typeof runBase>>, Effect.Services<ReturnType<typeof runBase>>> = {
  name: "base",
  reads: [],
  settings: ({ model }) =>
    model.base === undefined ? { preset: model.preset, shape: model.shape ?? null, seed: model.seed } : { path: model.base },
  inputFiles: ({ model }) => (model.base === undefined ? {} : { model: model.base }),
  workDirs: ({ model, dir }) => (model.base === undefined ? [dir] : []),
  outputFiles: (r) => [r.path],
  result: BaseResult,
  run: (input) => runBase(input)
}
