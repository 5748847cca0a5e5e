import { assert, it, layer } from "@effect/vitest"
import * as tf from "@tensorflow/tfjs-core"
import { Effect } from "effect"
import { Device } from "../../src/Model/Device.ts"
import { generate } from "../../src/Model/Generation.ts"
import { LlamaModel } from "../../src/Model/LlamaModel.ts"
import type { LlamaConfig } from "../../src/Model/ModelContracts.ts"
import { argmax, candidates, sampleToken, seededRandom } from "../../src/Model/Sampling.ts"
import { randomWeights } from "./LlamaModelReference.ts"

const config: LlamaConfig = {
  vocabSize: 64,
  hiddenSize: 48,
  intermediateSize: 96,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 12,
  rmsNormEps: 1e-6,
  ropeTheta: 10000,
  maxPositionEmbeddings: 256,
  slidingWindow: 6,
  tieWordEmbeddings: false
}

const letters = (ids: ReadonlyArray<number>) => ids.map((i) => String.fromCharCode(97 + (i % 26))).join("")

/** greedy continuation by full recompute, without the cache */
const greedyByRecompute = (model: LlamaModel, promptIds: ReadonlyArray<number>, n: number) => {
  const ids = [...promptIds]
  for (let i = 0; i < n; i++) {
    const next = tf.tidy(() => {
      const logits = model.logits(tf.tensor2d([ids], undefined, "int32"))
      return argmax(tf.slice(logits, [0, ids.length - 1, 0], [1, 1, config.vocabSize]).dataSync())
    })
    ids.push(next)
  }
  return ids.slice(promptIds.length)
}

const withModel = <A>(f: (model: LlamaModel) => A) =>
  Effect.acquireUseRelease(
    Effect.promise(() => LlamaModel.fromWeights(config, randomWeights(config, 21, 0.3))),
    (model) => Effect.sync(() => f(model)),
    (model) => Effect.sync(() => model.dispose())
  )

layer(Device.layerCpu)("Generation", (it) => {
  it.effect("greedy KV-cache generation equals greedy full recompute, past the sliding window", () =>
    withModel((model) => {
      const prompt = [3, 14, 15, 9, 26]
      const [out] = generate(model, [prompt], { maxNewTokens: 12 })
      assert.deepStrictEqual(out!.tokens, greedyByRecompute(model, prompt, 12))
      assert.strictEqual(out!.finishReason, "length")
      assert.isUndefined(out!.text)
    }))

  it.effect("a batch of prompts of different lengths generates what each prompt generates alone", () =>
    withModel((model) => {
      const prompts = [[1, 2, 3, 4, 5, 6, 7], [8], [9, 10, 11]]
      const batched = generate(model, prompts, { maxNewTokens: 8, padTokenId: 63 })
      prompts.forEach((p, i) => {
        assert.deepStrictEqual(batched[i]!.tokens, generate(model, [p], { maxNewTokens: 8 })[0]!.tokens)
      })
    }))

  it.effect("seeded sampling is reproducible and the seed matters", () =>
    withModel((model) => {
      const options = { maxNewTokens: 16, temperature: 1.5, topK: 40, topP: 0.95 }
      const a = generate(model, [[5, 6, 7]], { ...options, seed: 42 })[0]!.tokens
      const b = generate(model, [[5, 6, 7]], { ...options, seed: 42 })[0]!.tokens
      const c = generate(model, [[5, 6, 7]], { ...options, seed: 43 })[0]!.tokens
      assert.deepStrictEqual(a, b)
      assert.notDeepEqual(a, c)
      assert.notDeepEqual(a, generate(model, [[5, 6, 7]], { maxNewTokens: 16 })[0]!.tokens)
    }))

  it.effect("stops at a stop token (not returned) and at a stop string (text cut before it)", () =>
    withModel((model) => {
      const prompt = [2, 4, 8]
      const free = generate(model, [prompt], { maxNewTokens: 10, detokenize: letters })[0]!
      assert.strictEqual(free.text, letters(free.tokens))
      const stopAt = free.tokens[3]!
      const firstStop = free.tokens.indexOf(stopAt)
      const byToken = generate(model, [prompt], { maxNewTokens: 10, stopTokenIds: [stopAt] })[0]!
      assert.strictEqual(byToken.finishReason, "stop-token")
      assert.deepStrictEqual(byToken.tokens, free.tokens.slice(0, firstStop))

      const needle = free.text!.slice(4, 6)
      const cut = free.text!.indexOf(needle)
      const byString = generate(model, [prompt], { maxNewTokens: 10, stopStrings: [needle], detokenize: letters })[0]!
      assert.strictEqual(byString.finishReason, "stop-string")
      assert.strictEqual(byString.text, free.text!.slice(0, cut))
      assert.deepStrictEqual(byString.tokens, free.tokens.slice(0, cut + 2))
      assert.throws(() => generate(model, [prompt], { maxNewTokens: 2, stopStrings: ["x"] }), /need a detokenize/)
    }))
})

it("top-k and top-p keep the right candidates, renormalized", () => {
  const logits = [Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]
  const all = candidates(logits, { temperature: 1 })
  assert.deepStrictEqual(all.ids, [0, 1, 2, 3])
  all.probs.forEach((p, i) => assert.closeTo(p, [0.5, 0.3, 0.15, 0.05][i]!, 1e-12))
  const k2 = candidates(logits, { temperature: 1, topK: 2 })
  assert.deepStrictEqual(k2.ids, [0, 1])
  assert.closeTo(k2.probs[0]!, 0.5 / 0.8, 1e-12)
  // top-p 0.79: 0.5 + 0.3 reaches it; 0.81 needs the third token
  assert.deepStrictEqual(candidates(logits, { temperature: 1, topP: 0.79 }).ids, [0, 1])
  assert.deepStrictEqual(candidates(logits, { temperature: 1, topP: 0.81 }).ids, [0, 1, 2])
  assert.deepStrictEqual(candidates(logits, { temperature: 1, topP: 0.1 }).ids, [0])
  // temperature 0.5 squares the odds
  const cold = candidates(logits, { temperature: 0.5 })
  assert.closeTo(cold.probs[0]! / cold.probs[1]!, (0.5 / 0.3) ** 2, 1e-9)
})

it("sampled frequencies follow the candidate probabilities; greedy never draws", () => {
  const logits = [0, Math.log(3), Math.log(6)] // probabilities 0.1, 0.3, 0.6
  const random = seededRandom(7)
  const counts = [0, 0, 0]
  const n = 20000
  for (let i = 0; i < n; i++) counts[sampleToken(logits, { temperature: 1 }, random)]!++
  assert.closeTo(counts[0]! / n, 0.1, 0.015)
  assert.closeTo(counts[1]! / n, 0.3, 0.015)
  assert.closeTo(counts[2]! / n, 0.6, 0.015)
  assert.strictEqual(sampleToken(logits, {}, () => assert.fail("greedy must not draw")), 2)
  assert.strictEqual(argmax([1, 3, 3, 2]), 1)
})
