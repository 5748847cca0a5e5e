/**
 * Loads a Llama-family model's configuration and weights, in the project's canonical (HF) names and layout, from
 * (a) a GGUF file or (b) a Hugging Face folder (config.json + *.safetensors, sharded or not). Weights come as a
 * Stream, one tensor at a time: the loader holds at most one tensor's file bytes and its float32 copy, so the
 * consumer decides what stays in memory (one float32 copy of the model when it keeps them all).
 */
import { Effect, Result, Schema, Stream } from "effect"
import { firstFieldIssue } from "../Shared/Errors.ts"
import * as fs from "node:fs"
import { join } from "node:path"
import { dequantizableTypeNames, dequantizableTypes } from "./GgmlQuants.ts"
import { type GgufHeader, metaArray, metaNumber, metaString, openGguf, readGgufHeader, requireNumber } from "./Gguf.ts"
import { hfNameOf, llama3ScalingFromFactors, qkHeadsFor, unpermuteQkFromGguf } from "./GgufNames.ts"
import { type LlamaConfig, type NamedTensor, type RopeScaling, weightNames } from "./ModelContracts.ts"
import { fileError, type ModelFileError, toFileError } from "./ModelFileError.ts"
import { openSafetensors, readSafetensorsHeader } from "./Safetensors.ts"
import { ggufKeys } from "./GgufKeys.ts"

/** A model on disk, ready to stream. */
export interface ModelSource {
  readonly format: "gguf" | "hf"
  readonly path: string
  readonly config: LlamaConfig
  /**
   * llama3 RoPE frequency factors exactly as a GGUF stores them (`rope_freqs.weight`); `config.ropeScaling` is
   * derived from them and reproduces them to ~1e-7 relative
   */
  readonly ropeFreqFactors?: Float32Array
  /** canonical names of the weights the stream yields, in stream order */
  readonly tensorNames: ReadonlyArray<string>
  /** every weight, float32, canonical name and HF layout, one at a time; re-runnable */
  readonly weights: Stream.Stream<NamedTensor, ModelFileError>
}

/** The canonical weight names a config needs. */
export const expectedWeightNames = (config: LlamaConfig): Array<string> => {
  const names: Array<string> = [weightNames.embedding]
  for (let layer = 0; layer < config.numLayers; layer++) {
    names.push(weightNames.inputNorm(layer), weightNames.postAttentionNorm(layer))
    for (const m of ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const) {
      names.push(`${weightNames.linear(layer, m)}.weight`)
    }
  }
  names.push(weightNames.finalNorm)
  if (!config.tieWordEmbeddings) names.push(weightNames.output)
  return names
}

/** The numpy-order shape each canonical weight must have. */
export const expectedShape = (config: LlamaConfig, name: string): ReadonlyArray<number> | undefined => {
  const d = config.hiddenSize, q = config.numHeads * config.headDim, kv = config.numKvHeads * config.headDim
  if (name === weightNames.embedding || name === weightNames.output) return [config.vocabSize, d]
  if (name.endsWith("norm.weight")) return [d]
  const module = /\.(\w+_proj)\.weight$/.exec(name)?.[1]
  switch (module) {
    case "q_proj": return [q, d]
    case "k_proj": case "v_proj": return [kv, d]
    case "o_proj": return [d, q]
    case "gate_proj": case "up_proj": return [config.intermediateSize, d]
    case "down_proj": return [d, config.intermediateSize]
  }
  return undefined
}

// ---------------------------------------------------------------------------------------------------------------
// GGUF

/** The Llama config a GGUF describes (llama.* keys; tied output when `output.weight` is absent). */
export const configFromGguf = (header: GgufHeader): LlamaConfig => {
  const path = header.path
  const kind = metaString(header, ggufKeys.type)
  if (kind === "adapter") throw fileError(path, "this GGUF is a LoRA adapter, not a model", ggufKeys.type)
  const arch = metaString(header, ggufKeys.architecture)
  if (arch !== "llama") {
    throw fileError(path, `unsupported architecture ${JSON.stringify(arch ?? null)} (supported: llama, which covers Llama and Mistral)`, ggufKeys.architecture)
  }
  const hiddenSize = requireNumber(header, ggufKeys.embeddingLength)
  const numHeads = requireNumber(header, ggufKeys.headCount)
  const headDim = metaNumber(header, ggufKeys.keyLength) ?? hiddenSize / numHeads
  const rotary = metaNumber(header, ggufKeys.ropeDimensionCount) ?? headDim
  if (rotary !== headDim) throw fileError(path, `partial rotary embeddings (${rotary} of ${headDim}) are not supported`, ggufKeys.ropeDimensionCount)
  const embedding = header.tensors.find((t) => t.name === "token_embd.weight")
  if (embedding === undefined) throw fileError(path, "the model has no token embedding", "token_embd.weight")
  const vocabSize = metaNumber(header, ggufKeys.vocabSize) ?? metaArray(header, ggufKeys.tokens)?.values.length ?? embedding.shape[0]!
  const ropeTheta = metaNumber(header, ggufKeys.ropeFreqBase) ?? 10000
  const scalingType = metaString(header, ggufKeys.ropeScalingType)
  const scalingFactor = metaNumber(header, ggufKeys.ropeScalingFactor)
  if ((scalingType !== undefined && scalingType !== "none") || (scalingFactor !== undefined && scalingFactor !== 1 && scalingFactor !== 0)) {
    throw fileError(path, `unsupported RoPE scaling ${scalingType ?? "linear"} x${scalingFactor ?? 1} (supported: none, llama3)`, ggufKeys.ropeScalingType)
  }
  const slidingWindow = metaNumber(header, ggufKeys.slidingWindow)
  const config: LlamaConfig = {
    vocabSize,
    hiddenSize,
    intermediateSize: requireNumber(header, ggufKeys.feedForwardLength),
    numLayers: requireNumber(header, ggufKeys.blockCount),
    numHeads,
    numKvHeads: metaNumber(header, ggufKeys.headCountKv) ?? numHeads,
    headDim,
    rmsNormEps: metaNumber(header, ggufKeys.rmsEpsilon) ?? 1e-5,
    ropeTheta,
    maxPositionEmbeddings: requireNumber(header, ggufKeys.contextLength),
    tieWordEmbeddings: !header.tensors.some((t) => t.name === "output.weight"),
    ...(slidingWindow !== undefined && slidingWindow > 0 ? { slidingWindow } : {})
  }
  return config
}

const ropeScalingFromGguf = (path: string, config: LlamaConfig) =>
  Effect.scoped(Effect.gen(function*() {
    const file = yield* openGguf(path)
    if (file.info("rope_freqs.weight") === undefined) return undefined
    const factors = (yield* file.readTensor("rope_freqs.weight")).data
    if (factors.length !== config.headDim / 2) {
      return yield* Effect.fail(fileError(path, `has ${factors.length} factors, expected head_dim/2 = ${config.headDim / 2}`, "rope_freqs.weight"))
    }
    const scaling = llama3ScalingFromFactors(factors, config.ropeTheta, config.headDim)
    if (scaling === undefined && !factors.every((f) => f === 1)) {
      return yield* Effect.fail(fileError(path, "rope frequency factors are not of the llama3 form", "rope_freqs.weight"))
    }
    return { scaling, factors }
  }))

const validateGgufTensors = (header: GgufHeader, config: LlamaConfig): Array<string> => {
  const present = new Map<string, string>()
  for (const t of header.tensors) {
    if (t.name === "rope_freqs.weight") continue
    const name = hfNameOf(t.name)
    if (name === undefined) throw fileError(header.path, "unexpected tensor for a llama model", t.name)
    if (!dequantizableTypes.has(t.type)) {
      throw fileError(header.path, `unsupported tensor type ${t.typeName} (supported: ${dequantizableTypeNames()})`, t.name)
    }
    const shape = expectedShape(config, name)
    if (shape !== undefined && shape.join(",") !== t.shape.join(",")) {
      throw fileError(header.path, `shape [${t.shape.join(", ")}] does not match the config's [${shape.join(", ")}]`, t.name)
    }
    present.set(name, t.name)
  }
  for (const name of expectedWeightNames(config)) {
    if (!present.has(name)) throw fileError(header.path, "required tensor is missing", name)
  }
  return header.tensors.filter((t) => t.name !== "rope_freqs.weight").map((t) => hfNameOf(t.name)!)
}

/** Opens a GGUF model: reads its header, validates it, and prepares the weight stream. */
export const loadGguf = (path: string): Effect.Effect<ModelSource, ModelFileError> =>
  Effect.gen(function*() {
    const header = yield* readGgufHeader(path)
    const base = yield* Effect.try({ try: () => configFromGguf(header), catch: toFileError(path) })
    const rope = yield* ropeScalingFromGguf(path, base)
    const config: LlamaConfig = rope?.scaling === undefined ? base : { ...base, ropeScaling: rope.scaling }
    const tensorNames = yield* Effect.try({ try: () => validateGgufTensors(header, config), catch: toFileError(path) })
    const weights = Stream.unwrap(Effect.map(openGguf(path), (file) =>
      Stream.fromIterable(file.tensors.filter((t) => t.name !== "rope_freqs.weight")).pipe(
        Stream.mapEffect((info) =>
          Effect.map(file.readTensor(info.name), (tensor): NamedTensor => {
            // Q/K rows back into HF order (a Q/K weight is far smaller than the embedding, so the copy sets no peak)
            const heads = qkHeadsFor(info.name, config)
            const data = heads === undefined ? tensor.data : unpermuteQkFromGguf(tensor.data, tensor.shape[0]!, heads)
            return { name: hfNameOf(info.name)!, shape: tensor.shape, data }
          }))
      )))
    return {
      format: "gguf",
      path,
      config,
      tensorNames,
      weights,
      ...(rope === undefined ? {} : { ropeFreqFactors: rope.factors })
    } satisfies ModelSource
  })

// ---------------------------------------------------------------------------------------------------------------
// Hugging Face folder

const nullable = <S extends Schema.Top>(s: S) => Schema.optionalKey(Schema.NullOr(s))

/** The fields of a Llama / Mistral config.json we read (others are ignored). */
export const HfConfig = Schema.Struct({
  model_type: Schema.Literals(["llama", "mistral"]),
  vocab_size: Schema.Int,
  hidden_size: Schema.Int,
  intermediate_size: Schema.Int,
  num_hidden_layers: Schema.Int,
  num_attention_heads: Schema.Int,
  num_key_value_heads: nullable(Schema.Int),
  head_dim: nullable(Schema.Int),
  rms_norm_eps: Schema.Finite,
  rope_theta: nullable(Schema.Finite),
  rope_scaling: nullable(Schema.Struct({
    rope_type: Schema.optionalKey(Schema.String),
    type: Schema.optionalKey(Schema.String),
    factor: Schema.optionalKey(Schema.Finite),
    low_freq_factor: Schema.optionalKey(Schema.Finite),
    high_freq_factor: Schema.optionalKey(Schema.Finite),
    original_max_position_embeddings: Schema.optionalKey(Schema.Int)
  })),
  max_position_embeddings: Schema.Int,
  sliding_window: nullable(Schema.Int),
  tie_word_embeddings: Schema.optionalKey(Schema.Boolean)
})
export type HfConfig = typeof HfConfig.Type

const decodeHfConfig = Schema.decodeUnknownResult(Schema.fromJsonString(HfConfig))

/** Reads and validates config.json; errors name the field. */
export const configFromHf = (configPath: string, text: string): LlamaConfig => {
  const hf = Result.getOrThrowWith(decodeHfConfig(text, { errors: "all" }), (error) => {
    const { field, reason } = firstFieldIssue(error)
    return fileError(configPath, reason, field === "" ? undefined : field)
  })
  let ropeScaling: RopeScaling | undefined
  const rs = hf.rope_scaling
  if (rs !== undefined && rs !== null) {
    const kind = rs.rope_type ?? rs.type
    if (kind === "llama3") {
      ropeScaling = {
        type: "llama3",
        factor: rs.factor ?? 8,
        lowFreqFactor: rs.low_freq_factor ?? 1,
        highFreqFactor: rs.high_freq_factor ?? 4,
        originalMaxPositionEmbeddings: rs.original_max_position_embeddings ?? 8192
      }
    } else if (kind !== "default") {
      throw fileError(configPath, `unsupported rope_scaling type ${JSON.stringify(kind)} (supported: llama3)`, "rope_scaling")
    }
  }
  const sliding = hf.sliding_window
  return {
    vocabSize: hf.vocab_size,
    hiddenSize: hf.hidden_size,
    intermediateSize: hf.intermediate_size,
    numLayers: hf.num_hidden_layers,
    numHeads: hf.num_attention_heads,
    numKvHeads: hf.num_key_value_heads ?? hf.num_attention_heads,
    headDim: hf.head_dim ?? hf.hidden_size / hf.num_attention_heads,
    rmsNormEps: hf.rms_norm_eps,
    ropeTheta: hf.rope_theta ?? 10000,
    maxPositionEmbeddings: hf.max_position_embeddings,
    tieWordEmbeddings: hf.tie_word_embeddings ?? false,
    ...(ropeScaling === undefined ? {} : { ropeScaling }),
    ...(sliding !== undefined && sliding !== null && hf.model_type === "mistral" ? { slidingWindow: sliding } : {})
  }
}

/** The config.json transformers writes for a config (LlamaForCausalLM, or MistralForCausalLM with a sliding window). */
export const toHfConfigJson = (config: LlamaConfig, torchDtype: "float32" | "float16" | "bfloat16" = "float32") => {
  const mistral = config.slidingWindow !== undefined
  return {
    architectures: [mistral ? "MistralForCausalLM" : "LlamaForCausalLM"],
    model_type: mistral ? "mistral" : "llama",
    vocab_size: config.vocabSize,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    num_key_value_heads: config.numKvHeads,
    head_dim: config.headDim,
    hidden_act: "silu",
    rms_norm_eps: config.rmsNormEps,
    rope_theta: config.ropeTheta,
    rope_scaling: config.ropeScaling === undefined ? null : {
      rope_type: "llama3",
      factor: config.ropeScaling.factor,
      low_freq_factor: config.ropeScaling.lowFreqFactor,
      high_freq_factor: config.ropeScaling.highFreqFactor,
      original_max_position_embeddings: config.ropeScaling.originalMaxPositionEmbeddings
    },
    max_position_embeddings: config.maxPositionEmbeddings,
    ...(mistral ? { sliding_window: config.slidingWindow } : {}),
    tie_word_embeddings: config.tieWordEmbeddings,
    attention_bias: false,
    mlp_bias: false,
    torch_dtype: torchDtype
  }
}

const WeightIndex = Schema.fromJsonString(Schema.Struct({ weight_map: Schema.Record(Schema.String, Schema.String) }))
const decodeIndex = Schema.decodeUnknownResult(WeightIndex)

/** The safetensors files of a folder: the sharded index's files, or every *.safetensors there. */
const shardFiles = (folder: string): Array<string> => {
  const indexPath = join(folder, "model.safetensors.index.json")
  if (fs.existsSync(indexPath)) {
    const index = Result.getOrThrowWith(decodeIndex(fs.readFileSync(indexPath, "utf8")), (e) => fileError(indexPath, `invalid index: ${e.message}`))
    return Array.from(new Set(Object.values(index.weight_map))).sort().map((f) => join(folder, f))
  }
  const files = fs.readdirSync(folder).filter((f) => f.endsWith(".safetensors") && !f.startsWith("adapter_")).sort()
  if (files.length === 0) throw fileError(folder, "no *.safetensors weights in the folder")
  return files.map((f) => join(folder, f))
}

/** Opens a Hugging Face model folder: config.json, then the safetensors headers (validated), then the weight stream. */
export const loadHfFolder = (folder: string): Effect.Effect<ModelSource, ModelFileError> =>
  Effect.gen(function*() {
    const configPath = join(folder, "config.json")
    const config = yield* Effect.try({
      try: () => configFromHf(configPath, fs.readFileSync(configPath, "utf8")),
      catch: toFileError(configPath)
    })
    const shards = yield* Effect.try({ try: () => shardFiles(folder), catch: toFileError(folder) })
    const expected = new Set(expectedWeightNames(config))
    const plan: Array<{ file: string; names: Array<string> }> = []
    const found = new Set<string>()
    for (const file of shards) {
      const { tensors } = yield* readSafetensorsHeader(file)
      const names: Array<string> = []
      for (const t of tensors) {
        if (!expected.has(t.name)) continue // e.g. rotary_emb.inv_freq, or lm_head of a tied model
        const shape = expectedShape(config, t.name)
        if (shape !== undefined && shape.join(",") !== t.shape.join(",")) {
          return yield* Effect.fail(fileError(file, `shape [${t.shape.join(", ")}] does not match config.json's [${shape.join(", ")}]`, t.name))
        }
        if (!["F32", "F16", "BF16"].includes(t.dtype)) {
          return yield* Effect.fail(fileError(file, `unsupported weight dtype ${t.dtype} (supported: F32, F16, BF16)`, t.name))
        }
        names.push(t.name)
        found.add(t.name)
      }
      plan.push({ file, names })
    }
    for (const name of expected) {
      if (!found.has(name)) return yield* Effect.fail(fileError(folder, "required tensor is missing from the safetensors files", name))
    }
    const weights = Stream.fromIterable(plan).pipe(
      Stream.flatMap(({ file, names }) =>
        Stream.unwrap(Effect.map(openSafetensors(file), (handle) =>
          Stream.fromIterable(names).pipe(Stream.mapEffect((name) => handle.readTensor(name)))))))
    return { format: "hf", path: folder, config, tensorNames: plan.flatMap((p) => p.names), weights } satisfies ModelSource
  })

/** A GGUF file or a Hugging Face folder. */
export const loadModelSource = (path: string): Effect.Effect<ModelSource, ModelFileError> =>
  Effect.suspend(() => {
    let stat: fs.Stats
    try {
      stat = fs.statSync(path)
    } catch (cause) {
      return Effect.fail(toFileError(path)(cause))
    }
    return stat.isDirectory() ? loadHfFolder(path) : loadGguf(path)
  })
