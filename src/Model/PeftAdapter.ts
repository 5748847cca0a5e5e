/**
 * LoRA adapters in PEFT's folder layout, loadable by `PeftModel.from_pretrained`:
 * `adapter_config.json` and `adapter_model.safetensors` with keys
 * `base_model.model.<module path>.lora_A.weight` [r, in] and `….lora_B.weight` [out, r] (docs/architecture.md §3).
 */
import * as tf from "@tensorflow/tfjs-core"
import { Effect, FileSystem, Path } from "effect"
import { type AdapterConfig, decodeAdapterConfig } from "./AdapterConfig.ts"
import type { LoraLayer } from "./Lora.ts"
import type { NamedTensor } from "./ModelContracts.ts"
import { fileError, type ModelFileError, toFileError } from "./ModelFileError.ts"
import { openSafetensors, writeSafetensors } from "./Safetensors.ts"

export const ADAPTER_CONFIG = "adapter_config.json"
export const ADAPTER_WEIGHTS = "adapter_model.safetensors"
/** The folder of a training run that holds its best adapter (what `eval`, `export` and `serve` take). */
export const FINAL_ADAPTER_DIR = "final-adapter"

export const peftKey = (module: string, half: "A" | "B") => `base_model.model.${module}.lora_${half}.weight`

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
  config: AdapterConfig
) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  yield* fs.makeDirectory(dir, { recursive: true }).pipe(Effect.mapError(toFileError(dir)))
  const configPath = path.join(dir, ADAPTER_CONFIG)
  yield* fs.writeFileString(configPath, JSON.stringify(config.toPeftJson(), null, 2) + "\n").pipe(
    Effect.mapError(toFileError(configPath))
  )
  yield* writeSafetensors(path.join(dir, ADAPTER_WEIGHTS), adapterTensors(layers), { metadata: { format: "pt" } })
})

export interface PeftAdapter {
  readonly config: AdapterConfig
  /** module path -> its A [r, in] and B [out, r], in model order (layer, then q k v o gate up down) */
  readonly modules: ReadonlyMap<string, { readonly a: NamedTensor; readonly b: NamedTensor }>
}

/**
 * Reads a PEFT adapter folder: every lora_A has its lora_B, each pair has the rank the config gives its module
 * (rank_pattern applied), and every module is one the config targets.
 */
export const readPeftAdapter = Effect.fn("PeftAdapter.read")(function*(dir: string) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const configPath = path.join(dir, ADAPTER_CONFIG)
  const text = yield* fs.readFileString(configPath).pipe(Effect.mapError(toFileError(configPath)))
  const config = yield* decodeAdapterConfig(text).pipe(
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
  for (const [module, { a, b }] of [...halves].sort(([x], [y]) => moduleOrder(x) - moduleOrder(y))) {
    if (a === undefined || b === undefined) {
      return yield* fileError(weightsPath, `lora_${a === undefined ? "A" : "B"} is missing`, module)
    }
    const rank = config.rankOf(module)
    if (a.shape.length !== 2 || b.shape.length !== 2 || a.shape[0] !== b.shape[1] || a.shape[0] !== rank) {
      return yield* fileError(
        weightsPath,
        `shapes A [${a.shape.join(", ")}] and B [${b.shape.join(", ")}] do not form a rank-${rank} pair (${ADAPTER_CONFIG} gives this module rank ${rank})`,
        module
      )
    }
    if (!config.targets(module)) {
      return yield* fileError(weightsPath, `holds weights for a module the target_modules of ${ADAPTER_CONFIG} do not name`, module)
    }
    modules.set(module, { a, b })
  }
  return { config, modules } satisfies PeftAdapter
})

/**
 * Copies an adapter's weights into the model's LoRA layers: every layer must have weights of its shape, and every
 * module of the adapter must be a LoRA layer of the model (nothing is silently left out).
 */
export const loadAdapterInto = (
  adapter: PeftAdapter,
  layers: ReadonlyArray<LoraLayer>,
  source: string
): Effect.Effect<void, ModelFileError> =>
  Effect.gen(function*() {
    const names = new Set(layers.map((l) => l.name))
    for (const module of adapter.modules.keys()) {
      if (!names.has(module)) return yield* fileError(source, "the adapter has weights for a module the model has no LoRA layer for", module)
    }
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

const moduleRank = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
/** Model order of a module path: layer index, then the HF order of the linear modules. */
export const moduleOrder = (module: string) => {
  const layer = Number(/\.layers\.(\d+)\./.exec(module)?.[1] ?? 0)
  return layer * 16 + moduleRank.indexOf(module.slice(module.lastIndexOf(".") + 1))
}
