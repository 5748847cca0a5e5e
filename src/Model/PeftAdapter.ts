/**
 * LoRA adapters in PEFT's folder layout, loadable by `PeftModel.from_pretrained`:
 * `adapter_config.json` and `adapter_model.safetensors` with keys
 * `base_model.model.<module path>.lora_A.weight` [r, in] and `….lora_B.weight` [out, r] (architecture.md §3).
 */
import * as tf from "@tensorflow/tfjs-core"
import { Effect, FileSystem, Path, Schema } from "effect"
import type { LoraLayer, LoraSettings } from "./Lora.ts"
import { resolveTargets, TargetModules } from "./Lora.ts"
import type { NamedTensor } from "./ModelContracts.ts"
import { fileError, type ModelFileError, toFileError } from "./ModelFileError.ts"
import { openSafetensors, writeSafetensors } from "./Safetensors.ts"

export const ADAPTER_CONFIG = "adapter_config.json"
export const ADAPTER_WEIGHTS = "adapter_model.safetensors"

export const peftKey = (module: string, half: "A" | "B") => `base_model.model.${module}.lora_${half}.weight`

/** The fields of PEFT's LoraConfig we write and read (others PEFT writes are given their defaults). */
export const PeftAdapterConfig = Schema.Struct({
  peft_type: Schema.Literal("LORA"),
  task_type: Schema.Literal("CAUSAL_LM"),
  r: Schema.Int,
  lora_alpha: Schema.Finite,
  lora_dropout: Schema.Finite,
  target_modules: Schema.Union([TargetModules, Schema.String]),
  use_rslora: Schema.Boolean,
  base_model_name_or_path: Schema.NullOr(Schema.String),
  bias: Schema.Literal("none")
})
export type PeftAdapterConfig = typeof PeftAdapterConfig.Type

export const peftConfig = (settings: LoraSettings, baseModel: string) => ({
  alpha_pattern: {},
  auto_mapping: null,
  base_model_name_or_path: baseModel,
  bias: "none",
  fan_in_fan_out: false,
  inference_mode: true,
  init_lora_weights: true,
  layers_pattern: null,
  layers_to_transform: null,
  lora_alpha: settings.alpha,
  lora_dropout: settings.dropout,
  modules_to_save: null,
  peft_type: "LORA",
  r: settings.r,
  rank_pattern: {},
  revision: null,
  // PEFT saves the resolved module names when it was given "all-linear"
  target_modules: [...resolveTargets(settings.targetModules)],
  task_type: "CAUSAL_LM",
  use_dora: false,
  use_rslora: settings.useRslora
})

/** The adapter's tensors under PEFT key names, in model order. */
export const adapterTensors = (layers: ReadonlyArray<LoraLayer>): Array<NamedTensor> =>
  layers.flatMap((l) => [
    { name: peftKey(l.name, "A"), shape: l.loraA.shape, data: l.loraA.dataSync() as Float32Array },
    { name: peftKey(l.name, "B"), shape: l.loraB.shape, data: l.loraB.dataSync() as Float32Array }
  ])

/** Writes `adapter_config.json` + `adapter_model.safetensors` into `dir` (created if missing). */
export const writePeftAdapter = Effect.fn("PeftAdapter.write")(function*(
  dir: string,
  layers: ReadonlyArray<LoraLayer>,
  settings: LoraSettings,
  baseModel: string
) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  yield* fs.makeDirectory(dir, { recursive: true }).pipe(Effect.mapError(toFileError(dir)))
  const configPath = path.join(dir, ADAPTER_CONFIG)
  yield* fs.writeFileString(configPath, JSON.stringify(peftConfig(settings, baseModel), null, 2) + "\n").pipe(
    Effect.mapError(toFileError(configPath))
  )
  yield* writeSafetensors(path.join(dir, ADAPTER_WEIGHTS), adapterTensors(layers), { metadata: { format: "pt" } })
})

export interface PeftAdapter {
  readonly config: PeftAdapterConfig
  /** module path -> its A [r, in] and B [out, r] */
  readonly modules: ReadonlyMap<string, { readonly a: NamedTensor; readonly b: NamedTensor }>
}

/** Reads a PEFT adapter folder; every lora_A must have its lora_B with a matching rank. */
export const readPeftAdapter = Effect.fn("PeftAdapter.read")(function*(dir: string) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const configPath = path.join(dir, ADAPTER_CONFIG)
  const text = yield* fs.readFileString(configPath).pipe(Effect.mapError(toFileError(configPath)))
  const config = yield* Schema.decodeUnknownEffect(Schema.fromJsonString(PeftAdapterConfig))(text).pipe(
    Effect.mapError((e) => fileError(configPath, e.message))
  )
  const weightsPath = path.join(dir, ADAPTER_WEIGHTS)
  const tensors = yield* Effect.scoped(Effect.gen(function*() {
    const file = yield* openSafetensors(weightsPath)
    return yield* Effect.forEach(file.tensors, (t) => file.readTensor(t.name))
  }))
  const halves = new Map<string, { a?: NamedTensor; b?: NamedTensor }>()
  for (const t of tensors) {
    const m = /^base_model\.model\.(.+)\.lora_([AB])\.weight$/.exec(t.name)
    if (m === null) return yield* fileError(weightsPath, "not a PEFT LoRA key", t.name)
    const entry = halves.get(m[1]!) ?? {}
    if (m[2] === "A") entry.a = t
    else entry.b = t
    halves.set(m[1]!, entry)
  }
  const modules = new Map<string, { a: NamedTensor; b: NamedTensor }>()
  for (const [module, { a, b }] of halves) {
    if (a === undefined || b === undefined) {
      return yield* fileError(weightsPath, `lora_${a === undefined ? "A" : "B"} is missing`, module)
    }
    if (a.shape.length !== 2 || b.shape.length !== 2 || a.shape[0] !== b.shape[1] || a.shape[0] !== config.r) {
      return yield* fileError(
        weightsPath,
        `shapes A [${a.shape.join(", ")}] and B [${b.shape.join(", ")}] do not form a rank-${config.r} pair`,
        module
      )
    }
    modules.set(module, { a, b })
  }
  return { config, modules } satisfies PeftAdapter
})

/** Copies an adapter's weights into the model's LoRA layers; every layer must be present with matching shapes. */
export const loadAdapterInto = (
  adapter: PeftAdapter,
  layers: ReadonlyArray<LoraLayer>,
  source: string
): Effect.Effect<void, ModelFileError> =>
  Effect.gen(function*() {
    for (const layer of layers) {
      const m = adapter.modules.get(layer.name)
      if (m === undefined) return yield* fileError(source, "the adapter has no weights for this module", layer.name)
      for (const [v, t] of [[layer.loraA, m.a], [layer.loraB, m.b]] as const) {
        if (t.shape.join() !== v.shape.join()) {
          return yield* fileError(source, `shape [${t.shape.join(", ")}] but the model needs [${v.shape.join(", ")}]`, t.name)
        }
      }
      tf.tidy(() => {
        layer.loraA.assign(tf.tensor(m.a.data, [...m.a.shape]))
        layer.loraB.assign(tf.tensor(m.b.data, [...m.b.shape]))
      })
    }
  })
