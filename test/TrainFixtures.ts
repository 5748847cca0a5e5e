/** Shared fixtures of the trainer tests: a tiny random Llama, a byte-level tokenizer, a small Q&A set. */
import { Effect } from "effect"
import { Device, registerGradients } from "../src/Training/Device.ts"
import { formatExample } from "../src/Dataset/PromptFormat.ts"
import { SeededRng } from "../src/Training/Collate.ts"
import { attentionModules, type LlamaConfig, mlpModules, type NamedTensor, weightNames } from "../src/Training/ModelContracts.ts"
import type { TrainExample, TrainTokenizer } from "../src/Training/Trainer.ts"
import type { TrainConfig } from "../src/Training/TrainConfig.ts"
import { defaultTrainConfig } from "../src/Training/TrainConfig.ts"

export const tinyConfig: LlamaConfig = {
  vocabSize: 258,
  hiddenSize: 32,
  intermediateSize: 64,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 8,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  maxPositionEmbeddings: 256,
  tieWordEmbeddings: false
}

/** Random weights with the usual 0.02-std initialization (norms at 1), deterministic in the seed. */
export const randomWeights = (c: LlamaConfig, seed: number): Array<NamedTensor> => {
  const rng = new SeededRng(seed)
  const randn = (shape: ReadonlyArray<number>, std = 0.02) =>
    Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal() * std)
  const ones = (n: number) => new Float32Array(n).fill(1)
  const q = c.numHeads * c.headDim
  const kv = c.numKvHeads * c.headDim
  const shapes: Record<string, [number, number]> = {
    q_proj: [q, c.hiddenSize],
    k_proj: [kv, c.hiddenSize],
    v_proj: [kv, c.hiddenSize],
    o_proj: [c.hiddenSize, q],
    gate_proj: [c.intermediateSize, c.hiddenSize],
    up_proj: [c.intermediateSize, c.hiddenSize],
    down_proj: [c.hiddenSize, c.intermediateSize]
  }
  const out: Array<NamedTensor> = [
    { name: weightNames.embedding, shape: [c.vocabSize, c.hiddenSize], data: randn([c.vocabSize, c.hiddenSize], 0.5) },
    { name: weightNames.finalNorm, shape: [c.hiddenSize], data: ones(c.hiddenSize) }
  ]
  if (!c.tieWordEmbeddings) out.push({ name: weightNames.output, shape: [c.vocabSize, c.hiddenSize], data: randn([c.vocabSize, c.hiddenSize], 0.2) })
  for (let l = 0; l < c.numLayers; l++) {
    out.push({ name: weightNames.inputNorm(l), shape: [c.hiddenSize], data: ones(c.hiddenSize) })
    out.push({ name: weightNames.postAttentionNorm(l), shape: [c.hiddenSize], data: ones(c.hiddenSize) })
    for (const m of [...attentionModules, ...mlpModules]) {
      out.push({ name: `${weightNames.linear(l, m)}.weight`, shape: shapes[m]!, data: randn(shapes[m]!, 0.2) })
    }
  }
  return out
}

/** UTF-8 bytes as ids 0..255, BOS 256, EOS 257. */
export const byteTokenizer: TrainTokenizer = {
  bosId: 256,
  eosId: 257,
  encode: (text) => [...new TextEncoder().encode(text)],
  decode: (ids) => new TextDecoder().decode(Uint8Array.from(ids.filter((i) => i < 256)))
}

export const qa: ReadonlyArray<{ readonly question: string; readonly answer: string }> = [
  { question: "AAPL?", answer: "apple inc" },
  { question: "MSFT?", answer: "microsoft" },
  { question: "TSLA?", answer: "tesla cars" },
  { question: "SPY?", answer: "s&p 500 etf" }
]

export const examples = (rows = qa): Array<TrainExample> => rows.map((r) => formatExample({ question: r.question, answer: r.answer }, "seed"))

export const baseTrainConfig = (outputDir: string, overrides: Partial<TrainConfig> = {}): TrainConfig => ({
  ...defaultTrainConfig,
  model: "tiny-random",
  trainFile: "inline",
  outputDir,
  device: "cpu",
  ...overrides
})

/** The wasm backend through the Device layer (25x faster than cpu for these shapes), with gradients registered. */
export const useWasm = async (): Promise<void> => {
  await registerGradients()
  await Effect.runPromise(Effect.provide(Effect.void, Device.layerWasm))
}
