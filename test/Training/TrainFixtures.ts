/** Shared fixtures of the trainer tests: a tiny random Llama, a byte-level tokenizer, a small Q&A set. */
import { Effect } from "effect"
import { Device, registerGradients } from "../../src/Model/Device.ts"
import { formatExample } from "../../src/Dataset/PromptFormat.ts"
import type { LlamaConfig, NamedTensor } from "../../src/Model/ModelContracts.ts"
import { canonicalWeights } from "../../src/Model/TinyModel.ts"
import type { TrainExample, TrainTokenizer } from "../../src/Training/Trainer.ts"
import type { TrainConfig } from "../../src/Training/TrainConfig.ts"
import { defaultTrainConfig } from "../../src/Training/TrainConfig.ts"

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

/** Seeded random weights (TinyModel's generator), larger than HF's 0.02 init so a few steps visibly learn. */
export const randomWeights = (c: LlamaConfig, seed: number): Array<NamedTensor> =>
  canonicalWeights(c, { seed, initStd: 0.2, normStd: 0 }).map((w) => ({ name: w.name, shape: w.shape, data: w.data() }))

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
