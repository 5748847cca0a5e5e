/**
 * The contracts shared by the model core, the weight formats, the trainer and the exporters.
 *
 * Canonical layout inside the project is Hugging Face's: module names as in `transformers`' LlamaForCausalLM,
 * linear weights shaped [out, in] (y = x Wᵀ), and Q/K rows in HF order (rotate-half RoPE). Readers of GGUF files
 * undo llama.cpp's Q/K row permutation when loading; writers of GGUF files apply it (docs/architecture.md §3).
 */
import type * as tf from "@tensorflow/tfjs-core"
import { Schema } from "effect"

/** llama3-style RoPE frequency scaling (Llama 3.1+). */
export const RopeScaling = Schema.Struct({
  type: Schema.Literal("llama3"),
  factor: Schema.Finite,
  lowFreqFactor: Schema.Finite,
  highFreqFactor: Schema.Finite,
  originalMaxPositionEmbeddings: Schema.Int
})
export type RopeScaling = typeof RopeScaling.Type

/** Hyper-parameters of a Llama-family decoder, read from the file (GGUF metadata or config.json), never hard-coded. */
export const LlamaConfig = Schema.Struct({
  vocabSize: Schema.Int,
  hiddenSize: Schema.Int,
  intermediateSize: Schema.Int,
  numLayers: Schema.Int,
  numHeads: Schema.Int,
  numKvHeads: Schema.Int,
  headDim: Schema.Int,
  rmsNormEps: Schema.Finite,
  ropeTheta: Schema.Finite,
  ropeScaling: Schema.optionalKey(RopeScaling),
  maxPositionEmbeddings: Schema.Int,
  /** Mistral's sliding-window attention: a token attends to at most this many previous positions (itself included). */
  slidingWindow: Schema.optionalKey(Schema.Int),
  /** The output projection reuses the token embedding. */
  tieWordEmbeddings: Schema.Boolean
})
export type LlamaConfig = typeof LlamaConfig.Type

/** A weight in canonical (HF) name and numpy-order shape, as float32. */
export interface NamedTensor {
  readonly name: string
  readonly shape: ReadonlyArray<number>
  readonly data: Float32Array
}

/** The linear modules of a decoder block, by their HF short names. */
export const attentionModules = ["q_proj", "k_proj", "v_proj", "o_proj"] as const
export const mlpModules = ["gate_proj", "up_proj", "down_proj"] as const
export type LinearModule = (typeof attentionModules)[number] | (typeof mlpModules)[number]

/** Canonical HF weight names. */
export const weightNames = {
  embedding: "model.embed_tokens.weight",
  finalNorm: "model.norm.weight",
  output: "lm_head.weight",
  inputNorm: (layer: number) => `model.layers.${layer}.input_layernorm.weight`,
  postAttentionNorm: (layer: number) => `model.layers.${layer}.post_attention_layernorm.weight`,
  /** module path without `.weight`, e.g. `model.layers.0.self_attn.q_proj` (PEFT keys are built from it) */
  linear: (layer: number, module: LinearModule) =>
    `model.layers.${layer}.${(attentionModules as ReadonlyArray<string>).includes(module) ? "self_attn" : "mlp"}.${module}`
} as const

/**
 * One linear projection of the model. The model calls `apply` and never looks inside, so the trainer can wrap a
 * base layer with LoRA, or replace a dense base with a 4-bit NF4 one, without the model knowing.
 */
export interface LinearLayer {
  /** canonical module path, e.g. `model.layers.0.self_attn.q_proj` */
  readonly name: string
  readonly inFeatures: number
  readonly outFeatures: number
  /** x: [..., inFeatures] -> [..., outFeatures]; differentiable w.r.t. any tf.Variable the layer closes over */
  apply(x: tf.Tensor): tf.Tensor
  /** frees the tensors this layer owns (not those of a wrapped base layer it does not own) */
  dispose(): void
}

/** Builds a replacement for a base linear layer (e.g. LoRA around it). */
export type LinearTransform = (name: string, base: LinearLayer) => LinearLayer
