/**
 * The project's own Llama-architecture models: seeded random weights in any Llama-family shape (presets for the
 * built-in default base model, Llama-3-like and Mistral-like test shapes, and a 1.1B benchmark shape), with the
 * finance SPM tokenizer and chat template, written as a GGUF that llama.cpp loads. Tensors are generated and written
 * one at a time, so even the 1.1B shape never sits in memory as a whole.
 */
import { Effect, Schema } from "effect"
import * as fs from "node:fs"
import { join } from "node:path"
import { buildFinanceVocabulary, chatTemplate, hfTokenizerFiles, type SpmVocabulary } from "./FinanceVocabulary.ts"
import { gguf, type GgufValue } from "./Gguf.ts"
import { ggufNameOf, llama3RopeFactors, permuteQkForGguf, qkHeadsFor } from "./GgufNames.ts"
import { type GgufTensorToWrite, type GgufWriteType, writeGguf } from "./GgufWriter.ts"
import { attentionModules, type LlamaConfig, mlpModules, weightNames } from "./ModelContracts.ts"
import { fileError, type ModelFileError, toFileError } from "./ModelFileError.ts"
import { toHfConfigJson } from "./ModelLoader.ts"
import { writeSafetensors } from "./Safetensors.ts"
import { describeCause } from "../Shared/Errors.ts"
import { Sfc32 } from "../Shared/Prng.ts"
import { ggufKeys, llamaFileTypes } from "./GgufKeys.ts"

export const TinyPreset = Schema.Literals(["tiny", "small", "llama3-tiny", "mistral-tiny", "bench-1b"])
export type TinyPreset = typeof TinyPreset.Type

export const TinyTensorType = Schema.Literals(["F32", "F16", "BF16", "Q8_0"])
export type TinyTensorType = GgufWriteType

const financeVocabSize = 4096

/**
 * Shapes. `tiny`/`small` are the built-in base models; `llama3-tiny` (GQA, rope_theta 500000, llama3 rope scaling,
 * untied output) and `mistral-tiny` (sliding window, tied output) are parity shapes; `bench-1b` is TinyLlama-1.1B's
 * shape (22 layers, d 2048, GQA 32/4, vocab 32000) for benchmarks.
 */
export const presetConfig = (preset: TinyPreset): LlamaConfig => {
  switch (preset) {
    case "tiny":
      return {
        vocabSize: financeVocabSize, hiddenSize: 192, intermediateSize: 512, numLayers: 4, numHeads: 6, numKvHeads: 2,
        headDim: 32, rmsNormEps: 1e-5, ropeTheta: 10000, maxPositionEmbeddings: 2048, tieWordEmbeddings: false
      }
    case "small":
      return {
        vocabSize: financeVocabSize, hiddenSize: 512, intermediateSize: 1408, numLayers: 8, numHeads: 8, numKvHeads: 4,
        headDim: 64, rmsNormEps: 1e-5, ropeTheta: 10000, maxPositionEmbeddings: 4096, tieWordEmbeddings: false
      }
    case "llama3-tiny":
      return {
        vocabSize: financeVocabSize, hiddenSize: 128, intermediateSize: 384, numLayers: 2, numHeads: 4, numKvHeads: 2,
        headDim: 32, rmsNormEps: 1e-5, ropeTheta: 500000, maxPositionEmbeddings: 8192, tieWordEmbeddings: false,
        ropeScaling: { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 256 }
      }
    case "mistral-tiny":
      return {
        vocabSize: financeVocabSize, hiddenSize: 128, intermediateSize: 352, numLayers: 2, numHeads: 4, numKvHeads: 1,
        headDim: 32, rmsNormEps: 1e-5, ropeTheta: 10000, maxPositionEmbeddings: 1024, slidingWindow: 16,
        tieWordEmbeddings: true
      }
    case "bench-1b":
      return {
        vocabSize: 32000, hiddenSize: 2048, intermediateSize: 5632, numLayers: 22, numHeads: 32, numKvHeads: 4,
        headDim: 64, rmsNormEps: 1e-5, ropeTheta: 10000, maxPositionEmbeddings: 2048, tieWordEmbeddings: false
      }
  }
}

/** Number of parameters of a Llama-family model of this shape (llama3 rope factors are not parameters). */
export const parameterCount = (c: LlamaConfig): number => {
  const attention = c.hiddenSize * c.headDim * (2 * c.numHeads + 2 * c.numKvHeads)
  const mlp = 3 * c.hiddenSize * c.intermediateSize
  const perLayer = attention + mlp + 2 * c.hiddenSize
  return c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2) + c.numLayers * perLayer + c.hiddenSize
}

/** One sfc32 stream (Shared/Prng.ts) per tensor: the weights of every file `model init` writes depend on it. */
const prng = (seed: number, stream: number) => {
  const rng = new Sfc32(seed, stream)
  return () => rng.next()
}

/** FNV-1a of a tensor name: each tensor gets its own random stream, so tensors can be generated in any order. */
const nameHash = (name: string) => {
  let h = 0x811c9dc5
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193)
  return h >>> 0
}

/** `n` values ~ mean + std * N(0, 1) (Marsaglia's polar method: no trigonometry), deterministic in (seed, name). */
const gaussian = (n: number, seed: number, name: string, mean: number, std: number): Float32Array => {
  const random = prng(seed, nameHash(name))
  const out = new Float32Array(n)
  for (let i = 0; i < n; i += 2) {
    let u: number, v: number, s: number
    do {
      u = 2 * random() - 1
      v = 2 * random() - 1
      s = u * u + v * v
    } while (s >= 1 || s === 0)
    const m = Math.sqrt((-2 * Math.log(s)) / s) * std
    out[i] = mean + u * m
    if (i + 1 < n) out[i + 1] = mean + v * m
  }
  return out
}

export interface InitOptions {
  readonly seed: number
  /** std of linear and embedding weights (HF's initializer_range), default 0.02 */
  readonly initStd?: number
  /** norm weights are 1 + normStd * N(0, 1), default 0.1 (not all ones, so a wrong norm shows in parity tests) */
  readonly normStd?: number
}

/** A weight to be generated lazily, in canonical HF name and layout. */
export interface LazyTensor {
  readonly name: string
  readonly shape: ReadonlyArray<number>
  readonly data: () => Float32Array
}

/** The model's weights in canonical HF names and layout, each generated when asked for (deterministic per seed). */
export const canonicalWeights = (config: LlamaConfig, options: InitOptions): ReadonlyArray<LazyTensor> => {
  const std = options.initStd ?? 0.02
  const normStd = options.normStd ?? 0.1
  const d = config.hiddenSize
  const dense = (name: string, shape: ReadonlyArray<number>): LazyTensor =>
    ({ name, shape, data: () => gaussian(shape[0]! * (shape[1] ?? 1), options.seed, name, 0, std) })
  const norm = (name: string): LazyTensor => ({ name, shape: [d], data: () => gaussian(d, options.seed, name, 1, normStd) })
  const outShapes: Record<string, ReadonlyArray<number>> = {
    q_proj: [config.numHeads * config.headDim, d], k_proj: [config.numKvHeads * config.headDim, d],
    v_proj: [config.numKvHeads * config.headDim, d], o_proj: [d, config.numHeads * config.headDim],
    gate_proj: [config.intermediateSize, d], up_proj: [config.intermediateSize, d], down_proj: [d, config.intermediateSize]
  }
  const tensors: Array<LazyTensor> = [dense(weightNames.embedding, [config.vocabSize, d])]
  for (let layer = 0; layer < config.numLayers; layer++) {
    tensors.push(norm(weightNames.inputNorm(layer)))
    for (const module of attentionModules) tensors.push(dense(`${weightNames.linear(layer, module)}.weight`, outShapes[module]!))
    tensors.push(norm(weightNames.postAttentionNorm(layer)))
    for (const module of mlpModules) tensors.push(dense(`${weightNames.linear(layer, module)}.weight`, outShapes[module]!))
  }
  tensors.push(norm(weightNames.finalNorm))
  if (!config.tieWordEmbeddings) tensors.push(dense(weightNames.output, [config.vocabSize, d]))
  return tensors
}

/** The `llama.*` hyper-parameter metadata of a config, as llama.cpp's converter writes it. */
export const llamaMetadata = (config: LlamaConfig): Array<readonly [string, GgufValue]> => {
  const entries: Array<readonly [string, GgufValue]> = [
    [ggufKeys.vocabSize, gguf.u32(config.vocabSize)],
    [ggufKeys.contextLength, gguf.u32(config.maxPositionEmbeddings)],
    [ggufKeys.embeddingLength, gguf.u32(config.hiddenSize)],
    [ggufKeys.blockCount, gguf.u32(config.numLayers)],
    [ggufKeys.feedForwardLength, gguf.u32(config.intermediateSize)],
    [ggufKeys.ropeDimensionCount, gguf.u32(config.headDim)],
    [ggufKeys.headCount, gguf.u32(config.numHeads)],
    [ggufKeys.headCountKv, gguf.u32(config.numKvHeads)],
    [ggufKeys.rmsEpsilon, gguf.f32(config.rmsNormEps)],
    [ggufKeys.ropeFreqBase, gguf.f32(config.ropeTheta)]
  ]
  if (config.headDim * config.numHeads !== config.hiddenSize) {
    entries.push([ggufKeys.keyLength, gguf.u32(config.headDim)])
    entries.push([ggufKeys.valueLength, gguf.u32(config.headDim)])
  }
  if (config.slidingWindow !== undefined) entries.push([ggufKeys.slidingWindow, gguf.u32(config.slidingWindow)])
  return entries
}

/** The tokenizer metadata of an SPM vocabulary. */
export const tokenizerMetadata = (vocab: SpmVocabulary, template: string = chatTemplate): Array<readonly [string, GgufValue]> => [
  [ggufKeys.tokenizerModel, gguf.string("llama")],
  [ggufKeys.tokens, gguf.strings(vocab.tokens)],
  [ggufKeys.scores, gguf.f32s(vocab.scores)],
  [ggufKeys.tokenType, gguf.i32s(vocab.types)],
  [ggufKeys.bosTokenId, gguf.u32(vocab.bosId)],
  [ggufKeys.eosTokenId, gguf.u32(vocab.eosId)],
  [ggufKeys.unknownTokenId, gguf.u32(vocab.unkId)],
  [ggufKeys.eotTokenId, gguf.u32(vocab.eotId)],
  [ggufKeys.addBosToken, gguf.bool(true)],
  [ggufKeys.addEosToken, gguf.bool(false)],
  // no implicit leading space: otherwise llama.cpp also inserts one after every placeholder token ("<PRICE> rose"
  // would become "<PRICE>", "▁", "▁rose")
  [ggufKeys.addSpacePrefix, gguf.bool(false)],
  [ggufKeys.chatTemplate, gguf.string(template)]
]

export interface TinyModelOptions extends InitOptions {
  readonly config: LlamaConfig
  readonly path: string
  /** type of the 2-D weights; norms and rope factors stay F32 as llama.cpp's converter writes them. Default F32. */
  readonly tensorType?: TinyTensorType
  readonly name?: string
  /** called after each tensor is written */
  readonly onTensor?: (index: number, total: number, name: string) => void
}

/**
 * A decoder weight in HF name and layout as the GGUF tensor llama.cpp reads: its GGUF name, Q/K rows permuted,
 * norms (1-D) in F32 and matrices in `type`.
 */
export const ggufTensorOf = (
  t: { readonly name: string; readonly shape: ReadonlyArray<number>; readonly data: Float32Array | (() => Float32Array) },
  config: LlamaConfig,
  type: GgufWriteType
): GgufTensorToWrite => {
  const name = ggufNameOf(t.name)!
  const heads = qkHeadsFor(name, config)
  const data = t.data
  return {
    name,
    shape: t.shape,
    type: t.shape.length === 1 ? "F32" : type,
    data: heads === undefined ? data : () => permuteQkForGguf(typeof data === "function" ? data() : data, t.shape[0]!, heads)
  }
}

/**
 * Writes a seeded random Llama-family model with the finance tokenizer as a GGUF llama.cpp loads. Q and K are
 * generated in HF layout and permuted for llama.cpp, so a reader that undoes the permutation gets
 * `canonicalWeights(config, options)` back exactly (F32).
 */
export const writeTinyModel = (options: TinyModelOptions): Effect.Effect<void, ModelFileError> =>
  Effect.suspend(() => {
    const { config, path } = options
    const type = options.tensorType ?? "F32"
    if (config.numHeads % config.numKvHeads !== 0) {
      return Effect.fail(fileError(path, `numHeads ${config.numHeads} is not a multiple of numKvHeads ${config.numKvHeads}`, "config"))
    }
    let vocab: SpmVocabulary
    try {
      vocab = buildFinanceVocabulary(config.vocabSize)
    } catch (cause) {
      return Effect.fail(fileError(path, describeCause(cause), "config.vocabSize"))
    }
    const metadata: Array<readonly [string, GgufValue]> = [
      [ggufKeys.architecture, gguf.string("llama")],
      [ggufKeys.type, gguf.string("model")],
      [ggufKeys.name, gguf.string(options.name ?? "finetune-finance tiny llama")],
      [ggufKeys.fileType, gguf.u32(llamaFileTypes[type])],
      ...llamaMetadata(config),
      ...tokenizerMetadata(vocab)
    ]
    const tensors: Array<GgufTensorToWrite> = canonicalWeights(config, options).map((t) => ggufTensorOf(t, config, type))
    if (config.ropeScaling !== undefined) {
      const factors = llama3RopeFactors(config.ropeScaling, config.ropeTheta, config.headDim)
      tensors.splice(1, 0, { name: "rope_freqs.weight", shape: [factors.length], type: "F32", data: factors })
    }
    return writeGguf(path, { metadata, tensors, ...(options.onTensor ? { onTensor: options.onTensor } : {}) })
  })

/**
 * The same model as a Hugging Face folder: config.json, model.safetensors (canonical weights, HF layout),
 * tokenizer.json + tokenizer_config.json (the BPE equivalent of the GGUF's SPM vocabulary, token-identical to
 * llama.cpp's). With the same seed it holds exactly the weights `writeTinyModel` writes (F32).
 */
export const writeTinyHfFolder = (options: InitOptions & {
  readonly config: LlamaConfig
  readonly folder: string
  readonly dtype?: "F32" | "F16" | "BF16"
}): Effect.Effect<void, ModelFileError> =>
  Effect.gen(function*() {
    const { config, folder } = options
    const dtype = options.dtype ?? "F32"
    const vocab = yield* Effect.try({
      try: () => buildFinanceVocabulary(config.vocabSize),
      catch: (cause) => fileError(folder, describeCause(cause), "config.vocabSize")
    })
    yield* Effect.try({
      try: () => {
        fs.mkdirSync(folder, { recursive: true })
        const torchDtype = dtype === "F32" ? "float32" : dtype === "F16" ? "float16" : "bfloat16"
        fs.writeFileSync(join(folder, "config.json"), JSON.stringify(toHfConfigJson(config, torchDtype), null, 2))
        const { tokenizerJson, tokenizerConfig } = hfTokenizerFiles(vocab)
        fs.writeFileSync(join(folder, "tokenizer.json"), JSON.stringify(tokenizerJson))
        fs.writeFileSync(join(folder, "tokenizer_config.json"), JSON.stringify(tokenizerConfig, null, 2))
        fs.writeFileSync(join(folder, "generation_config.json"), JSON.stringify({ bos_token_id: vocab.bosId, eos_token_id: [vocab.eosId, vocab.eotId] }, null, 2))
      },
      catch: toFileError(folder)
    })
    yield* writeSafetensors(join(folder, "model.safetensors"), canonicalWeights(config, options), { metadata: { format: "pt" }, dtype })
  })
