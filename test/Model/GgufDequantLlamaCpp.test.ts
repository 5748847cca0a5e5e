/**
 * Checks our dequantizers against llama.cpp itself: a model whose logits are exactly one column of a quantized
 * `output.weight` (hand-built random blocks), so llama.cpp's next-token log-probabilities reveal how llama.cpp
 * decodes those blocks. The embedding of token t is a one-hot at column k(t); every block's attention and MLP
 * output is zero, so the residual stream stays one-hot; the final RMSNorm (weight (127/128)/16, d = 256) maps it
 * to (127/128) e_k; logits = (127/128) W_out[:, k].
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { join } from "node:path"
import type { Token } from "node-llama-cpp"
import { buildFinanceVocabulary } from "../../src/Model/FinanceVocabulary.ts"
import { f32ToF16 } from "../../src/Model/Float16.ts"
import { dequantize, GgmlType } from "../../src/Model/GgmlQuants.ts"
import { openGguf } from "../../src/Model/Gguf.ts"
import { type GgufTensorToWrite, writeGguf } from "../../src/Model/GgufWriter.ts"
import type { LlamaConfig } from "../../src/Model/ModelContracts.ts"
import { llamaMetadata, tokenizerMetadata } from "../../src/Model/TinyModel.ts"
import { sharedLlama, tempDir } from "./WeightFileFixtures.ts"

const dir = tempDir("dequant-llamacpp-test")
const llama = sharedLlama()

const config: LlamaConfig = {
  vocabSize: 512, hiddenSize: 256, intermediateSize: 32, numLayers: 1, numHeads: 2, numKvHeads: 2, headDim: 128,
  rmsNormEps: 1e-12, ropeTheta: 10000, maxPositionEmbeddings: 64, tieWordEmbeddings: false
}
const column = (token: number) => (token * 37) % 256
// llama.cpp quantizes the activation too (to Q8_0 or Q8_K): 127/128 survives that exactly (its scale 1/128 is a float16)
const activation = 127 / 128
const probeTokens = [10, 300, 450]

let state = 12345
const randomByte = () => {
  state = (Math.imul(state, 1103515245) + 12345) >>> 0
  return state >>> 24
}

/** Random blocks of one type with sane float16 scales at the right places. */
const randomBlocks = (type: number, rows: number): Uint8Array => {
  const layouts: Record<number, { size: number; perRow: number; halves: ReadonlyArray<readonly [number, number]> }> = {
    [GgmlType.Q8_0]: { size: 34, perRow: 8, halves: [[0, 0.02]] },
    [GgmlType.Q4_0]: { size: 18, perRow: 8, halves: [[0, 0.3]] },
    [GgmlType.Q4_1]: { size: 20, perRow: 8, halves: [[0, 0.3], [2, 1]] },
    [GgmlType.Q5_0]: { size: 22, perRow: 8, halves: [[0, 0.15]] },
    [GgmlType.Q5_1]: { size: 24, perRow: 8, halves: [[0, 0.15], [2, 1]] },
    [GgmlType.Q4_K]: { size: 144, perRow: 1, halves: [[0, 0.003], [2, 0.004]] },
    [GgmlType.Q5_K]: { size: 176, perRow: 1, halves: [[0, 0.0015], [2, 0.004]] },
    [GgmlType.Q6_K]: { size: 210, perRow: 1, halves: [[208, 0.0005]] }
  }
  const layout = layouts[type]!
  const blocks = rows * layout.perRow
  const out = new Uint8Array(blocks * layout.size)
  for (let b = 0; b < blocks; b++) {
    const at = b * layout.size
    for (let i = 0; i < layout.size; i++) out[at + i] = randomByte()
    for (const [offset, scale] of layout.halves) {
      const bits = f32ToF16(scale * (0.5 + randomByte() / 255))
      out[at + offset] = bits & 0xff
      out[at + offset + 1] = bits >> 8
    }
  }
  return out
}

const writeProbeModel = (path: string, type: number, outputBytes: Uint8Array) => {
  const d = config.hiddenSize, v = config.vocabSize
  const zeros = (shape: ReadonlyArray<number>): GgufTensorToWrite =>
    ({ name: "", shape, type: "F32", data: () => new Float32Array(shape.reduce((a, b) => a * b, 1)) })
  const embedding = new Float32Array(v * d)
  for (let t = 0; t < v; t++) embedding[t * d + column(t)] = 1
  const tensors: Array<GgufTensorToWrite> = [
    { name: "token_embd.weight", shape: [v, d], type: "F32", data: embedding },
    { name: "blk.0.attn_norm.weight", shape: [d], type: "F32", data: new Float32Array(d).fill(1) },
    ...(["attn_q", "attn_k", "attn_v", "attn_output"] as const).map((n) => ({ ...zeros([d, d]), name: `blk.0.${n}.weight` })),
    { name: "blk.0.ffn_norm.weight", shape: [d], type: "F32", data: new Float32Array(d).fill(1) },
    { ...zeros([config.intermediateSize, d]), name: "blk.0.ffn_gate.weight" },
    { ...zeros([config.intermediateSize, d]), name: "blk.0.ffn_up.weight" },
    { ...zeros([d, config.intermediateSize]), name: "blk.0.ffn_down.weight" },
    { name: "output_norm.weight", shape: [d], type: "F32", data: new Float32Array(d).fill(activation / 16) },
    { name: "output.weight", shape: [v, d], rawType: type, raw: outputBytes }
  ]
  return writeGguf(path, {
    metadata: [["general.architecture", { type: "string", value: "llama" }], ...llamaMetadata(config), ...tokenizerMetadata(buildFinanceVocabulary(v))],
    tensors
  })
}

describe("our dequantization equals llama.cpp's on hand-built quantized tensors", () => {
  for (const [name, type] of [["Q8_0", GgmlType.Q8_0], ["Q4_0", GgmlType.Q4_0], ["Q4_1", GgmlType.Q4_1], ["Q5_0", GgmlType.Q5_0], ["Q5_1", GgmlType.Q5_1], ["Q4_K", GgmlType.Q4_K], ["Q5_K", GgmlType.Q5_K], ["Q6_K", GgmlType.Q6_K]] as const) {
    it(name, async () => {
      const path = join(dir, `${name}.gguf`)
      await Effect.runPromise(writeProbeModel(path, type, randomBlocks(type, config.vocabSize)))
      const ours = await Effect.runPromise(Effect.scoped(Effect.flatMap(openGguf(path), (f) => f.readTensor("output.weight"))))
      assert.deepStrictEqual(ours.data, dequantize(type, await Effect.runPromise(Effect.scoped(Effect.flatMap(openGguf(path), (f) => f.readRaw("output.weight")))), 512 * 256))
      const model = await llama().loadModel({ modelPath: path })
      const context = await model.createContext({ contextSize: 16, flashAttention: false })
      try {
        const sequence = context.getSequence()
        for (const token of probeTokens) {
          await sequence.clearHistory()
          const [result] = await sequence.controlledEvaluate([[token as Token, { generateNext: { probabilities: true } }]])
          const probabilities = result!.next!.probabilities!
          const theirs = Float64Array.from({ length: config.vocabSize }, (_, v) => Math.log(probabilities.get(v as Token)!))
          const expected = Float64Array.from({ length: config.vocabSize }, (_, v) => activation * ours.data[v * 256 + column(token)]!)
          // logits are known up to a constant: compare centred values
          const mean = (xs: Float64Array) => xs.reduce((a, b) => a + b, 0) / xs.length
          const mt = mean(theirs), me = mean(expected)
          let worst = 0
          for (let v = 0; v < config.vocabSize; v++) worst = Math.max(worst, Math.abs(theirs[v]! - mt - (expected[v]! - me)))
          const spread = Math.max(...expected) - Math.min(...expected)
          assert.isAbove(spread, 1, "the column is not trivial")
          assert.isBelow(worst, 1e-5, `${name} token ${token}: max |difference| ${worst}`)
        }
      } finally {
        await context.dispose()
        await model.dispose()
      }
    })
  }
})
