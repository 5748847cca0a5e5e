/**
 * Oracle: our tfjs Llama forward = transformers 5.24's LlamaForCausalLM (torch 2.15, float32) on the Hugging Face
 * folders `model init --hf-folder` writes (`writeTinyHfFolder`), for every preset: max |logit difference| <= 1e-4.
 * The GGUF of the same seed (`writeTinyModel`, Q/K rows permuted for llama.cpp) loaded through our GGUF reader must
 * give the same logits, so a wrong Q/K un-permutation fails here too.
 *
 * The sliding window (mistral-tiny: window 16, sequences of 40). llama.cpp serves the GGUF (architecture llama) with
 * full attention, so our model drops the window and trains what is served (LlamaModel.ts). The oracle therefore
 * compares against LlamaForCausalLM, which computes exactly that function, and it also runs MistralForCausalLM
 * (which applies the window) to show what is dropped: equal inside the window, different past it.
 *
 * bench-1b (TinyLlama-1.1B's shape) is too large for a CI test: it runs with its head layout (32 query heads of
 * 64, 4 KV heads, so head_dim x heads != hidden), its 32000-token vocabulary and one layer at hidden size 256.
 * One Python process answers every case.
 */
import { assert, describe, it } from "@effect/vitest"
import * as tf from "@tensorflow/tfjs-core"
import "@tensorflow/tfjs-backend-cpu"
import { Effect, Schema } from "effect"
import { join } from "node:path"
import { beforeAll } from "vitest"
import { LlamaModel } from "../../src/Model/LlamaModel.ts"
import type { LlamaConfig } from "../../src/Model/ModelContracts.ts"
import { presetConfig, type TinyPreset, writeTinyHfFolder, writeTinyModel } from "../../src/Model/TinyModel.ts"
import { oracleScript, runPythonJson } from "../support/python.ts"
import { tempDir } from "./WeightFileFixtures.ts"

const OracleLogits = Schema.Struct({ id: Schema.String, tied: Schema.Boolean, shape: Schema.Array(Schema.Int), logits: Schema.String })
const OracleAnswer = Schema.Struct({
  versions: Schema.Struct({ torch: Schema.String, transformers: Schema.String, peft: Schema.String }),
  results: Schema.Array(OracleLogits)
})

const dir = tempDir("transformers-oracle")
const LENGTH = 40
/** weights large enough that logits spread over several units: a 1e-4 tolerance then means something */
const INIT = { initStd: 0.1, normStd: 0.1 }

const cases: ReadonlyArray<{ readonly id: string; readonly preset: TinyPreset; readonly config: LlamaConfig; readonly rows: number }> = [
  { id: "tiny", preset: "tiny", config: presetConfig("tiny"), rows: 2 },
  { id: "small", preset: "small", config: presetConfig("small"), rows: 1 },
  { id: "llama3-tiny", preset: "llama3-tiny", config: presetConfig("llama3-tiny"), rows: 2 },
  { id: "mistral-tiny", preset: "mistral-tiny", config: presetConfig("mistral-tiny"), rows: 2 },
  { id: "bench-1b", preset: "bench-1b", config: { ...presetConfig("bench-1b"), numLayers: 1, hiddenSize: 256, intermediateSize: 512 }, rows: 1 }
]

/** seeded token rows inside the vocabulary (a fixed LCG: the same rows every run) */
const tokenRows = (vocab: number, rows: number, seed: number): Array<Array<number>> => {
  let s = seed >>> 0
  return Array.from({ length: rows }, () =>
    Array.from({ length: LENGTH }, () => {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0
      return 3 + (s % (vocab - 3))
    }))
}

const decodeLogits = (b64: string) => {
  const bytes = Buffer.from(b64, "base64")
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)
}

const ours = async (source: string, tokens: ReadonlyArray<ReadonlyArray<number>>): Promise<Float32Array> => {
  const model = await Effect.runPromise(LlamaModel.load(source))
  try {
    return tf.tidy(() => model.logits(tf.tensor2d(tokens.map((r) => [...r]), undefined, "int32")).dataSync() as Float32Array)
  } finally {
    model.dispose()
  }
}

/** max |a - b| over positions [from, to) of every row */
const maxDiff = (a: Float32Array, b: Float32Array, vocab: number, from = 0, to = LENGTH) => {
  assert.strictEqual(a.length, b.length)
  let worst = 0
  for (let row = 0; row < a.length / (LENGTH * vocab); row++) {
    for (let i = (row * LENGTH + from) * vocab; i < (row * LENGTH + to) * vocab; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!))
  }
  return worst
}

let answer: typeof OracleAnswer.Type
const tokensOf = new Map<string, Array<Array<number>>>()
const result = (id: string) => answer.results.find((r) => r.id === id)!

beforeAll(async () => {
  tf.setBackend("cpu")
  const requests = []
  for (const c of cases) {
    const folder = join(dir, c.id)
    await Effect.runPromise(writeTinyHfFolder({ config: c.config, seed: 11, folder, ...INIT }))
    await Effect.runPromise(writeTinyModel({ config: c.config, seed: 11, path: join(dir, `${c.id}.gguf`), ...INIT }))
    const tokens = tokenRows(c.config.vocabSize, c.rows, c.id.length * 7919)
    tokensOf.set(c.id, tokens)
    requests.push({ id: c.id, kind: "logits", folder, modelClass: "llama", tokens })
  }
  const mistral = cases.find((c) => c.id === "mistral-tiny")!
  requests.push({ id: "mistral-tiny/MistralForCausalLM", kind: "logits", folder: join(dir, mistral.id), modelClass: "mistral", tokens: tokensOf.get(mistral.id) })
  answer = Schema.decodeUnknownSync(OracleAnswer)(runPythonJson(oracleScript("llama_forward"), { threads: 2, cases: requests }))
  assert.strictEqual(answer.versions.transformers, "5.24.0")
}, 600_000)

describe("tfjs Llama forward = transformers 5.24.0 LlamaForCausalLM (float32, max |logit diff| <= 1e-4)", () => {
  for (const c of cases) {
    it(`${c.id}${c.config.ropeScaling ? " (llama3 rope scaling)" : ""}${c.config.tieWordEmbeddings ? " (tied output)" : ""}${c.config.slidingWindow ? ` (window ${c.config.slidingWindow} declared, sequence ${LENGTH})` : ""}: HF folder and GGUF`, async () => {
      const theirs = result(c.id)
      const tokens = tokensOf.get(c.id)!
      assert.deepStrictEqual(theirs.shape, [c.rows, LENGTH, c.config.vocabSize])
      assert.strictEqual(theirs.tied, c.config.tieWordEmbeddings, "transformers ties the output to the embedding as config.json says")
      const expected = decodeLogits(theirs.logits)
      // the logits spread over units, so 1e-4 is a tight bound and not a trivially small one
      assert.isAbove(expected.reduce((m, v) => Math.max(m, Math.abs(v)), 0), 1)
      const fromFolder = await ours(join(dir, c.id), tokens)
      assert.isAtMost(maxDiff(fromFolder, expected, c.config.vocabSize), 1e-4, "HF folder")
      const fromGguf = await ours(join(dir, `${c.id}.gguf`), tokens)
      assert.isAtMost(maxDiff(fromGguf, expected, c.config.vocabSize), 1e-4, "GGUF (Q/K un-permuted by our reader)")
    })
  }

  it("the sliding window is dropped: MistralForCausalLM (window applied) agrees inside the window and differs past it", async () => {
    const c = cases.find((x) => x.id === "mistral-tiny")!
    const window = c.config.slidingWindow!
    const windowed = decodeLogits(result("mistral-tiny/MistralForCausalLM").logits)
    const full = decodeLogits(result("mistral-tiny").logits)
    const mine = await ours(join(dir, c.id), tokensOf.get(c.id)!)
    assert.isAtMost(maxDiff(mine, windowed, c.config.vocabSize, 0, window), 1e-4)
    assert.isAbove(maxDiff(mine, windowed, c.config.vocabSize, window, LENGTH), 1e-2)
    assert.isAtMost(maxDiff(mine, full, c.config.vocabSize, window, LENGTH), 1e-4)
  })
})
