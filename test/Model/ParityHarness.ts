/**
 * Parity helpers: next-token distributions from llama.cpp (node-llama-cpp, CPU, F32 KV cache, no flash attention)
 * and from our tfjs model, for the same GGUF file and the same token ids.
 */
import * as tf from "@tensorflow/tfjs-core"
import type { LlamaContext, LlamaContextOptions, LlamaContextSequence, LlamaModel as LlamaCppModel, Token } from "node-llama-cpp"
import { buildFinanceVocabulary } from "../../src/Model/FinanceVocabulary.ts"
import { gguf } from "../../src/Model/Gguf.ts"
import { exactContextOptions } from "../../src/Model/LlamaCpp.ts"
import { llama3RopeFactors } from "../../src/Model/GgufNames.ts"
import { type GgufTensorToWrite, writeGguf } from "../../src/Model/GgufWriter.ts"
import type { LlamaModel } from "../../src/Model/LlamaModel.ts"
import { type LlamaConfig, weightNames } from "../../src/Model/ModelContracts.ts"
import { argmax, seededRandom } from "../../src/Model/Sampling.ts"
import { ggufTensorOf, llamaMetadata, type TinyTensorType, tokenizerMetadata } from "../../src/Model/TinyModel.ts"
import { randomWeights } from "./LlamaModelReference.ts"

/**
 * A context for exact comparisons (`exactContextOptions`: F32 K and V caches, the plain attention path), with a
 * llama.cpp LoRA adapter when `extra.lora` names one. One thread:
 * on a loaded 2-core machine llama.cpp's spinning worker threads made each tiny evaluation ~500 ms instead of ~1 ms.
 */
export const exactContext = (
  model: LlamaCppModel,
  contextSize = 256,
  extra: Pick<LlamaContextOptions, "lora"> = {}
): Promise<LlamaContext> =>
  model.createContext({ contextSize, batchSize: contextSize, sequences: 1, ...exactContextOptions, threads: 1, ...extra })

/**
 * node-llama-cpp normalizes its probabilities in float32, summing `exp(l - max)` from the largest down, so the
 * tail of a large vocabulary is lost from the sum (SmolLM2's 49,152 tokens: sums up to 1 + 2.3e-4, moving the top
 * probability by 1.9e-4); the ratios between tokens are exact. Dividing by the float64 sum gives softmax(logits) of
 * llama.cpp's forward, which is what the parity tests compare.
 */
const renormalized = (p: Float64Array): Float64Array => {
  let sum = 0
  for (const x of p) sum += x
  for (let i = 0; i < p.length; i++) p[i] = p[i]! / sum
  return p
}

/** llama.cpp's full next-token distribution after each of `tokens` (fresh sequence state), renormalized in float64. */
export const llamaCppDistributions = async (
  sequence: LlamaContextSequence,
  tokens: ReadonlyArray<number>,
  vocabSize: number
): Promise<Array<Float64Array>> => {
  await sequence.clearHistory()
  const results = await sequence.controlledEvaluate(
    tokens.map((t) => [t as Token, { generateNext: { probabilities: true } }])
  )
  return results.map((r, i) => {
    const probabilities = r?.next?.probabilities
    if (probabilities === undefined) throw new Error(`llama.cpp returned no probabilities at position ${i}`)
    const p = new Float64Array(vocabSize)
    for (const [token, value] of probabilities) p[token] = value
    return renormalized(p)
  })
}

/** llama.cpp's greedy continuation: the argmax of its distribution, fed back one token at a time. */
export const llamaCppGreedy = async (
  sequence: LlamaContextSequence,
  prompt: ReadonlyArray<number>,
  count: number,
  vocabSize: number
): Promise<Array<number>> => {
  const dists = await llamaCppDistributions(sequence, prompt, vocabSize)
  const out = [argmax(dists[dists.length - 1]!)]
  while (out.length < count) {
    const [r] = await sequence.controlledEvaluate([[out[out.length - 1]! as Token, { generateNext: { probabilities: true } }]])
    const p = new Float64Array(vocabSize)
    for (const [token, value] of r!.next!.probabilities!) p[token] = value
    out.push(argmax(p))
  }
  return out
}

/** softmax in float64 of one row of float32 logits */
const softmax64 = (logits: ArrayLike<number>): Float64Array => {
  let max = -Infinity
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!)
  const p = new Float64Array(logits.length)
  let sum = 0
  for (let i = 0; i < logits.length; i++) sum += p[i] = Math.exp(logits[i]! - max)
  for (let i = 0; i < p.length; i++) p[i] = p[i]! / sum
  return p
}

/**
 * Our model's next-token distribution after each token: its float32 logits, softmax in float64 (tfjs's float32
 * softmax is itself 4.6e-5 off the exact one on SmolLM2's vocabulary, which would measure the rounding of the
 * normalization, not the forward).
 */
export const ourDistributions = (model: LlamaModel, tokens: ReadonlyArray<number>): Array<Float64Array> => {
  // read the values outside tidy: tidy walks whatever it returns, element by element for a typed array
  const logits = tf.tidy(() => model.logits(tf.tensor2d([[...tokens]], undefined, "int32")))
  const data = logits.dataSync()
  logits.dispose()
  const v = model.config.vocabSize
  return tokens.map((_, i) => softmax64(data.subarray(i * v, (i + 1) * v)))
}

export const topK = (p: ArrayLike<number>, k: number): Array<number> =>
  Array.from({ length: p.length }, (_, i) => i).sort((a, b) => p[b]! - p[a]! || a - b).slice(0, k)

/** KL(p ‖ q) in nats; q is floored at 1e-30 so a zero in ours where llama.cpp has mass shows as a large value. */
export const kl = (p: ArrayLike<number>, q: ArrayLike<number>): number => {
  let sum = 0
  for (let i = 0; i < p.length; i++) if (p[i]! > 0) sum += p[i]! * Math.log(p[i]! / Math.max(q[i]!, 1e-30))
  return sum
}

export const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let d = 0
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!))
  return d
}

/**
 * llama.cpp's distributions against ours over several prompts: the largest |Δp|, the positions whose top-5 differ,
 * and, given the model without its adapter, the largest change the adapter makes (so agreeing is not agreeing on
 * "no change").
 */
export class ParityTally {
  compared = 0
  worst = 0
  adapterEffect = 0
  readonly topKMismatches: Array<string> = []
  add(expected: ReadonlyArray<Float64Array>, actual: ReadonlyArray<Float64Array>, label: string, plain?: ReadonlyArray<Float64Array>): void {
    expected.forEach((p, i) => {
      this.worst = Math.max(this.worst, maxAbsDiff(p, actual[i]!))
      if (plain !== undefined) this.adapterEffect = Math.max(this.adapterEffect, maxAbsDiff(actual[i]!, plain[i]!))
      if (topK(actual[i]!, 5).join() !== topK(p, 5).join()) this.topKMismatches.push(`${label} position ${i}`)
      this.compared++
    })
  }
}

/**
 * Std of the random weights of a parity model: a calm body (random deep nets with large weights are chaotic: any
 * rounding difference, such as llama.cpp quantizing activations to 8 bits in Q8_0 matmuls, is amplified layer by
 * layer, unlike in trained models) and a large output projection, so next-token distributions are peaked.
 */
export interface ParityScales {
  readonly body: number
  readonly output: number
  /**
   * Untied models: the share of each output row taken from the embedding row of another token (a fixed seeded
   * permutation), the rest random. Like a trained model, it then prefers one continuation of each token by a wide
   * margin, so greedy paths do not hinge on near-ties that llama.cpp's 8-bit activations can flip.
   */
  readonly outputFromEmbedding?: number
  /** std multiplier of an untied embedding (a larger one dominates the residual stream, as in trained models) */
  readonly embeddingGain?: number
}

/** A GGUF of `config` with seeded weights at `scales`, written like `writeTinyModel` (same metadata and tokenizer). */
export const writeParityModel = (
  config: LlamaConfig,
  file: string,
  type: TinyTensorType,
  seed: number,
  scales: ParityScales
) => {
  const gain = config.tieWordEmbeddings ? 1 : scales.embeddingGain ?? 1
  const raw = randomWeights(config, seed, scales.body).map((w) =>
    w.name === weightNames.embedding && gain !== 1 ? { ...w, data: w.data.map((v) => v * gain) } : w
  )
  const embedding = raw.find((w) => w.name === weightNames.embedding)!.data
  const mix = scales.outputFromEmbedding ?? 0
  const next = seededRandom(seed + 1)
  const successor = Array.from({ length: config.vocabSize }, (_, i) => i)
  for (let i = successor.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1))
    ;[successor[i], successor[j]] = [successor[j]!, successor[i]!]
  }
  const h = config.hiddenSize
  const weights = raw.map((w) => {
    if (w.name === weightNames.output) {
      const data = w.data.map((v, i) => {
        const row = Math.floor(i / h)
        return ((1 - mix) * v + (mix / gain) * embedding[successor[row]! * h + (i % h)]!) * (scales.output / scales.body)
      })
      return { ...w, data }
    }
    return config.tieWordEmbeddings && w.name === weightNames.embedding
      ? { ...w, data: w.data.map((v) => v * (scales.output / scales.body)) }
      : w
  })
  const tensors: Array<GgufTensorToWrite> = weights.map((t) => ggufTensorOf(t, config, type))
  if (config.ropeScaling !== undefined) {
    const factors = llama3RopeFactors(config.ropeScaling, config.ropeTheta, config.headDim)
    tensors.push({ name: "rope_freqs.weight", shape: [factors.length], type: "F32", data: factors })
  }
  return writeGguf(file, {
    metadata: [
      ["general.architecture", gguf.string("llama")],
      ["general.name", gguf.string("parity test model")],
      ...llamaMetadata(config),
      ...tokenizerMetadata(buildFinanceVocabulary(config.vocabSize))
    ],
    tensors
  })
}
