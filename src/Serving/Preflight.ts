/**
 * Preflight: does an adapter fit a base? Checked before an adapter is exported, merged or served, because
 * llama.cpp's own checks come late (at context creation) and say little, and a merge into the wrong base
 * silently produces garbage.
 *
 * Both sides are read from headers only (GGUF metadata and tensor infos, safetensors headers, config.json): no
 * weights are loaded. Every problem found is listed, with one likely cause in words.
 */
import { Effect, FileSystem, Path, Schema } from "effect"
import { metaNumber, metaString, readGgufHeader } from "../Model/Gguf.ts"
import { hfNameOf } from "../Model/GgufNames.ts"
import { fileError, type ModelFileError, toFileError } from "../Model/ModelFileError.ts"
import { readSafetensorsHeader } from "../Model/Safetensors.ts"
import type { ErrorKind } from "../Shared/Errors.ts"
import { ggufKeys } from "../Model/GgufKeys.ts"
import { type TrainedPrompt, trainedPromptOfGguf } from "../Training/AdapterPrompt.ts"

export class PreflightError extends Schema.TaggedError<PreflightError>()("PreflightError", {
  adapter: Schema.String,
  base: Schema.String,
  problems: Schema.Array(Schema.String),
  likelyCause: Schema.String
}) {
  get kind(): ErrorKind {
    return "data"
  }
  override get message() {
    const shown = this.problems.slice(0, 8).map((p) => `  - ${p}`)
    if (this.problems.length > 8) shown.push(`  - … and ${this.problems.length - 8} more`)
    return `the adapter ${this.adapter} does not fit the base ${this.base}:\n${shown.join("\n")}\nlikely cause: ${this.likelyCause}`
  }
}

/** What preflight needs to know of a base model. */
export interface BaseDescription {
  readonly source: string
  readonly format: "gguf" | "hf"
  readonly architecture: string
  readonly numLayers: number
  readonly numHeads: number
  readonly numKvHeads: number
  readonly hiddenSize: number
  /** canonical HF weight name -> numpy shape ([out, in] for linear weights) */
  readonly shapes: ReadonlyMap<string, ReadonlyArray<number>>
}

/** One adapted module, as an adapter file describes it. */
export interface AdapterModule {
  /** canonical module path, e.g. `model.layers.0.self_attn.q_proj` */
  readonly module: string
  /** A: [r, in] */
  readonly aShape: ReadonlyArray<number>
  /** B: [out, r] */
  readonly bShape: ReadonlyArray<number>
  /** the rank the adapter's config declares for this module, when it declares one */
  readonly declaredRank?: number | undefined
}

export interface AdapterDescription {
  readonly source: string
  readonly format: "peft" | "gguf"
  /** a GGUF adapter's `general.architecture` */
  readonly architecture?: string | undefined
  /** PEFT's `base_model_name_or_path`, for the error message */
  readonly baseModelName?: string | null | undefined
  readonly modules: ReadonlyArray<AdapterModule>
  /** a GGUF adapter's recorded training prompt (`finetune.prompt_layout`), when it has one */
  readonly prompt?: TrainedPrompt | undefined
}

const HfConfig = Schema.Struct({
  model_type: Schema.optionalKey(Schema.String),
  num_hidden_layers: Schema.Int,
  num_attention_heads: Schema.Int,
  num_key_value_heads: Schema.optionalKey(Schema.Int),
  hidden_size: Schema.Int
})

/** Reads a base's architecture and weight shapes: a GGUF file, or a Hugging Face folder (config.json + safetensors). */
export const describeBase = Effect.fn("Preflight.describeBase")(function*(base: string) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const info = yield* fs.stat(base).pipe(Effect.mapError(toFileError(base)))
  if (info.type !== "Directory") {
    const header = yield* readGgufHeader(base)
    return yield* Effect.try({
      try: (): BaseDescription => {
        const architecture = metaString(header, ggufKeys.architecture) ?? "unknown"
        const key = (k: string) => metaNumber(header, `${architecture}.${k}`)
        const numHeads = key("attention.head_count") ?? 0
        const shapes = new Map<string, ReadonlyArray<number>>()
        for (const t of header.tensors) {
          const hf = hfNameOf(t.name)
          if (hf !== undefined) shapes.set(hf, t.shape)
        }
        return {
          source: base,
          format: "gguf",
          architecture,
          numLayers: key("block_count") ?? 0,
          numHeads,
          numKvHeads: key("attention.head_count_kv") ?? numHeads,
          hiddenSize: key("embedding_length") ?? 0,
          shapes
        }
      },
      catch: toFileError(base)
    })
  }
  const configPath = path.join(base, "config.json")
  const configText = yield* fs.readFileString(configPath).pipe(Effect.mapError(toFileError(configPath)))
  const config = yield* Schema.decodeUnknownEffect(Schema.fromJsonString(HfConfig))(configText).pipe(
    Effect.mapError((e) => fileError(configPath, e.message))
  )
  const entries = yield* fs.readDirectory(base).pipe(Effect.mapError(toFileError(base)))
  const files = entries.filter((f) => f.endsWith(".safetensors")).sort()
  if (files.length === 0) return yield* fileError(base, "the folder has no .safetensors weights")
  const shapes = new Map<string, ReadonlyArray<number>>()
  for (const file of files) {
    const header = yield* readSafetensorsHeader(path.join(base, file))
    for (const t of header.tensors) shapes.set(t.name, t.shape)
  }
  return {
    source: base,
    format: "hf",
    // a Llama-family HF model is `llama` in GGUF (Mistral too: docs/architecture.md §3)
    architecture: config.model_type === "mistral" || config.model_type === undefined ? "llama" : config.model_type,
    numLayers: config.num_hidden_layers,
    numHeads: config.num_attention_heads,
    numKvHeads: config.num_key_value_heads ?? config.num_attention_heads,
    hiddenSize: config.hidden_size,
    shapes
  } satisfies BaseDescription
})

/** Reads a llama.cpp LoRA adapter GGUF's header into the same description as a PEFT folder. */
export const describeGgufAdapter = Effect.fn("Preflight.describeGgufAdapter")(function*(adapter: string) {
  const header = yield* readGgufHeader(adapter)
  return yield* Effect.try({
    try: (): AdapterDescription => {
      const type = metaString(header, ggufKeys.type)
      const adapterType = metaString(header, ggufKeys.adapterType)
      if (type !== "adapter" || adapterType !== "lora") {
        throw fileError(adapter, `not a llama.cpp LoRA adapter (${ggufKeys.type} = ${type ?? "missing"}, ${ggufKeys.adapterType} = ${adapterType ?? "missing"})`)
      }
      const halves = new Map<string, { a?: ReadonlyArray<number>; b?: ReadonlyArray<number> }>()
      for (const t of header.tensors) {
        const m = /^(.+\.weight)\.lora_([ab])$/.exec(t.name)
        if (m === null) throw fileError(adapter, "an adapter may only hold .lora_a/.lora_b tensors", t.name)
        const entry = halves.get(m[1]!) ?? {}
        if (m[2] === "a") entry.a = t.shape
        else entry.b = t.shape
        halves.set(m[1]!, entry)
      }
      const modules: Array<AdapterModule> = []
      for (const [weight, { a, b }] of halves) {
        if (a === undefined || b === undefined) throw fileError(adapter, `lora_${a === undefined ? "a" : "b"} is missing`, weight)
        const hf = hfNameOf(weight)
        modules.push({ module: (hf ?? weight).replace(/\.weight$/, ""), aShape: a, bShape: b })
      }
      return { source: adapter, format: "gguf", architecture: metaString(header, ggufKeys.architecture), modules, prompt: trainedPromptOfGguf(header) }
    },
    catch: toFileError(adapter)
  })
})

const layerOf = (module: string) => Number(/\.layers\.(\d+)\./.exec(module)?.[1] ?? -1)

/** Compares an adapter with a base; fails with every problem found and the most likely cause. */
export const checkAdapter = (adapter: AdapterDescription, base: BaseDescription): Effect.Effect<void, PreflightError> => {
  const problems: Array<string> = []
  let foreign = false
  let rankMismatch = false
  let corrupt = false
  if (adapter.architecture !== undefined && adapter.architecture !== base.architecture) {
    problems.push(`the adapter is for a "${adapter.architecture}" model, the base is "${base.architecture}"`)
    foreign = true
  }
  if (adapter.modules.length === 0) {
    problems.push("the adapter adapts no module")
    corrupt = true
  }
  for (const m of adapter.modules) {
    const [r, inA] = m.aShape
    const [out, rB] = m.bShape
    if (m.aShape.length !== 2 || m.bShape.length !== 2 || r !== rB) {
      problems.push(`${m.module}: lora_A [${m.aShape.join(", ")}] and lora_B [${m.bShape.join(", ")}] do not share a rank`)
      corrupt = true
      continue
    }
    if (m.declaredRank !== undefined && m.declaredRank !== r) {
      problems.push(`${m.module}: the config declares rank ${m.declaredRank} but the tensors have rank ${r}`)
      rankMismatch = true
    }
    const weight = base.shapes.get(`${m.module}.weight`)
    if (weight === undefined) {
      const layer = layerOf(m.module)
      problems.push(layer >= base.numLayers
        ? `${m.module}: the base has only ${base.numLayers} layers`
        : `${m.module}: the base has no weight ${m.module}.weight`)
      foreign = true
      continue
    }
    const [wOut, wIn] = weight
    if (inA !== wIn || out !== wOut) {
      problems.push(`${m.module}: the adapter maps [${inA} -> ${out}] but the base weight is [${wOut}, ${wIn}] (${wIn} -> ${wOut})`)
      foreign = true
    }
  }
  if (problems.length === 0) return Effect.void
  const name = adapter.baseModelName ? ` (the adapter names "${adapter.baseModelName}" as its base)` : ""
  const likelyCause = foreign
    ? `the adapter was trained on a different base model${name}: it expects other layer sizes or layer counts than ${base.source} has`
    : rankMismatch
    ? "adapter_config.json does not belong to these adapter weights (its r / rank_pattern disagree with the tensors)"
    : corrupt
    ? "the adapter file is incomplete or corrupt"
    : "unknown"
  return Effect.fail(new PreflightError({ adapter: adapter.source, base: base.source, problems, likelyCause }))
}

/** Preflight of a llama.cpp adapter GGUF against a base, from their headers; the adapter's description when it fits. */
export const preflightGgufAdapter = Effect.fn("Preflight.ggufAdapter")(function*(adapter: string, base: string) {
  const [a, b] = yield* Effect.all([describeGgufAdapter(adapter), describeBase(base)])
  yield* checkAdapter(a, b)
  return a
})

export type PreflightFailure = PreflightError | ModelFileError
