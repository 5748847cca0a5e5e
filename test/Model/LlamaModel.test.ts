import { assert, describe, it, layer } from "@effect/vitest"
import * as tf from "@tensorflow/tfjs-core"
import { Effect, Stream } from "effect"
import { Device, missingKernels } from "../../src/Model/Device.ts"
import { generate } from "../../src/Model/Generation.ts"
import { disposeKvCache, droppedWindowWarning, LlamaModel, ModelWeightsError, outputLinearName } from "../../src/Model/LlamaModel.ts"
import { type LinearLayer, type LlamaConfig, weightNames } from "../../src/Model/ModelContracts.ts"
import { inverseFrequencies } from "../../src/Model/Rope.ts"
import { randomWeights, referenceLogits } from "./LlamaModelReference.ts"

const llama3Like: LlamaConfig = {
  vocabSize: 96,
  hiddenSize: 64,
  intermediateSize: 160,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 16,
  rmsNormEps: 1e-5,
  ropeTheta: 500000,
  ropeScaling: { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 },
  maxPositionEmbeddings: 512,
  tieWordEmbeddings: false
}
const mistralLike: LlamaConfig = {
  ...llama3Like,
  numKvHeads: 1,
  ropeTheta: 10000,
  ropeScaling: undefined as never,
  slidingWindow: 4,
  tieWordEmbeddings: true
}
delete (mistralLike as { ropeScaling?: unknown }).ropeScaling

const ids2d = (rows: ReadonlyArray<ReadonlyArray<number>>) => tf.tensor2d(rows.map((r) => [...r]), undefined, "int32")
const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  assert.strictEqual(a.length, b.length)
  let d = 0
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!))
  return d
}
/** logits [T][V] of row `b`, positions `from..to` */
const rowLogits = (logits: tf.Tensor3D, b: number, from: number, to: number) => {
  const slice = tf.slice(logits, [b, from, 0], [1, to - from, logits.shape[2]])
  const data = slice.dataSync()
  slice.dispose()
  return data
}

const prompt = [1, 5, 9, 33, 2, 7, 80, 11, 3, 4, 5, 6, 90, 17]

layer(Device.layerCpu)("LlamaModel", (it) => {
  it.effect("RoPE llama3 scaling keeps short wavelengths, divides long ones by factor and blends the band between", () =>
    Effect.sync(() => {
      const plain = inverseFrequencies({ ...llama3Like, ropeScaling: undefined as never })
      const scaled = inverseFrequencies(llama3Like)
      // head_dim 16, theta 5e5: wavelengths 6.3, 32.5, 168, ...; band edges 64/4 = 16 and 64/1 = 64
      assert.strictEqual(scaled[0], plain[0])
      for (let i = 2; i < 8; i++) assert.closeTo(scaled[i]!, plain[i]! / 8, 1e-18)
      const smooth = (64 / ((2 * Math.PI) / plain[1]!) - 1) / (4 - 1)
      assert.closeTo(scaled[1]!, (1 - smooth) * plain[1]! / 8 + smooth * plain[1]!, 1e-15)
      assert.isTrue(scaled[1]! < plain[1]! && scaled[1]! > plain[1]! / 8)
    }))

  it.effect("a declared sliding window is not applied (llama.cpp serves arch llama with full attention) and is warned about", () =>
    Effect.gen(function*() {
      const { slidingWindow: _, ...noWindow } = mistralLike
      const weights = randomWeights(mistralLike, 3, 0.3)
      const windowed = yield* Effect.promise(() => LlamaModel.fromWeights(mistralLike, weights))
      const full = yield* Effect.promise(() => LlamaModel.fromWeights(noWindow, weights))
      const input = ids2d([prompt])
      const [a, b] = [windowed.logits(input), full.logits(input)]
      // the prompt is 14 tokens, the window 4: a windowed mask would change every position from 4 on
      assert.isAbove(prompt.length, 2 * mistralLike.slidingWindow!)
      assert.deepStrictEqual(Array.from(a.dataSync()), Array.from(b.dataSync()))
      tf.dispose([a, b, input])
      windowed.dispose()
      full.dispose()
      assert.match(droppedWindowWarning(mistralLike, 512)!, /sliding window of 4 tokens, shorter than the context of 512.*full attention/)
      assert.isUndefined(droppedWindowWarning(mistralLike, 4))
      assert.isUndefined(droppedWindowWarning(noWindow, 512))
    }))

  for (const [label, config] of [["Llama-3-like (GQA, llama3 RoPE, untied)", llama3Like], [
    "Mistral-like (sliding window 4 declared, not applied; MQA, tied)",
    mistralLike
  ]] as const) {
    it.effect(`${label}: logits equal a float64 transformers-style reference`, () =>
      Effect.gen(function*() {
        const weights = randomWeights(config, 7, 0.15)
        const model = yield* Effect.promise(() => LlamaModel.fromWeights(config, weights))
        const input = ids2d([prompt])
        const logits = model.logits(input)
        assert.deepStrictEqual(logits.shape, [1, prompt.length, config.vocabSize])
        const ref = referenceLogits(config, weights, prompt)
        const flat = new Float64Array(ref.flatMap((r) => [...r]))
        assert.isBelow(maxAbsDiff(logits.dataSync(), flat), 2e-5)
        tf.dispose([logits, input])
        model.dispose()
      }))

    it.effect(`${label}: KV-cache decoding equals full recompute, also with left padding`, () =>
      Effect.gen(function*() {
        const model = yield* Effect.promise(() => LlamaModel.fromWeights(config, randomWeights(config, 3, 0.15)))
        const before = tf.memory().numTensors
        const full = model.logits(ids2d([prompt]))
        // row 0: prompt prefilled in 5 tokens then one at a time; row 1: 3 pads + the first 2 tokens then the same
        const prefill = 5
        const pre = ids2d([prompt.slice(0, prefill), [0, 0, 0, ...prompt.slice(0, 2)]])
        const preMask = tf.tensor2d([[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]], undefined, "int32")
        let step = model.forwardCached(pre, undefined, { attentionMask: preMask })
        assert.isBelow(maxAbsDiff(rowLogits(step.logits, 0, 0, prefill), rowLogits(full, 0, 0, prefill)), 1e-5)
        assert.isBelow(maxAbsDiff(rowLogits(step.logits, 1, 3, 5), rowLogits(full, 0, 0, 2)), 1e-5)
        tf.dispose([pre, preMask, step.logits])
        for (let t = prefill; t < prompt.length; t++) {
          const next = ids2d([[prompt[t]!], [prompt[t - 3]!]])
          const s = model.forwardCached(next, step.cache)
          disposeKvCache(step.cache)
          step = s
          assert.isBelow(maxAbsDiff(rowLogits(s.logits, 0, 0, 1), rowLogits(full, 0, t, t + 1)), 1e-5)
          assert.isBelow(maxAbsDiff(rowLogits(s.logits, 1, 0, 1), rowLogits(full, 0, t - 3, t - 2)), 1e-5)
          tf.dispose([next, s.logits])
        }
        assert.strictEqual(step.cache.length, prompt.length)
        disposeKvCache(step.cache)
        full.dispose()
        assert.strictEqual(tf.memory().numTensors, before + 1) // the `full` ids tensor made inline above
        model.dispose()
      }))
  }

  it.effect("padded batches (left and right) and packed segments give each sequence's own logits", () =>
    Effect.gen(function*() {
      const config = mistralLike
      const model = yield* Effect.promise(() => LlamaModel.fromWeights(config, randomWeights(config, 11, 0.15)))
      const a = prompt.slice(0, 9)
      const b = prompt.slice(4, 10)
      const alone = (seq: ReadonlyArray<number>) => {
        const input = ids2d([seq])
        const l = model.logits(input)
        const v = l.dataSync().slice()
        tf.dispose([input, l])
        return v
      }
      const la = alone(a)
      const lb = alone(b)
      // row 0: a; row 1: b right-padded; row 2: b left-padded
      const input = ids2d([a, [...b, 0, 0, 0], [0, 0, 0, ...b]])
      const mask = tf.tensor2d([a.map(() => 1), [1, 1, 1, 1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1, 1, 1]], undefined, "int32")
      const logits = model.logits(input, { attentionMask: mask })
      assert.isBelow(maxAbsDiff(rowLogits(logits, 0, 0, 9), la), 1e-5)
      assert.isBelow(maxAbsDiff(rowLogits(logits, 1, 0, 6), lb), 1e-5)
      assert.isBelow(maxAbsDiff(rowLogits(logits, 2, 3, 9), lb), 1e-5)
      for (const v of logits.dataSync()) assert.isTrue(Number.isFinite(v))
      // a and b packed into one row of 15 tokens
      const packed = ids2d([[...a, ...b]])
      const segments = tf.tensor2d([[...a.map(() => 1), ...b.map(() => 2)]], undefined, "int32")
      const packedLogits = model.logits(packed, { segmentIds: segments })
      assert.isBelow(maxAbsDiff(rowLogits(packedLogits, 0, 0, 9), la), 1e-5)
      assert.isBelow(maxAbsDiff(rowLogits(packedLogits, 0, 9, 15), lb), 1e-5)
      // without segments the second sequence would see the first
      const unpacked = model.logits(packed)
      assert.isAbove(maxAbsDiff(rowLogits(unpacked, 0, 9, 15), lb), 1e-3)
      tf.dispose([input, mask, logits, packed, segments, packedLogits, unpacked])
      model.dispose()
    }))

  it.effect("withLinears swaps projections (the LoRA seam) and shares the other weights", () =>
    Effect.gen(function*() {
      const config = llama3Like
      const model = yield* Effect.promise(() => LlamaModel.fromWeights(config, randomWeights(config, 5, 0.15)))
      assert.strictEqual(model.linears.size, config.numLayers * 7 + 1)
      const q0 = weightNames.linear(0, "q_proj")
      assert.deepStrictEqual([model.linears.get(q0)!.inFeatures, model.linears.get(q0)!.outFeatures], [64, 64])
      const input = ids2d([prompt])
      const base = model.logits(input)
      const identity = model.withLinears((_, layer) => layer)
      const same = identity.logits(input)
      assert.strictEqual(maxAbsDiff(same.dataSync(), base.dataSync()), 0)
      // doubling the output projection doubles the logits
      const seen: Array<string> = []
      const doubled = model.withLinears((name, layer): LinearLayer => {
        seen.push(name)
        if (name !== outputLinearName) return layer
        const scale = tf.scalar(2)
        return { ...layer, name, apply: (x) => tf.mul(layer.apply(x), scale), dispose: () => scale.dispose() }
      })
      assert.deepStrictEqual(seen, [...model.linears.keys()])
      const twice = doubled.logits(input)
      assert.isBelow(maxAbsDiff(twice.dataSync(), base.dataSync().map((v) => 2 * v)), 1e-5)
      const live = tf.memory().numTensors
      doubled.dispose() // frees only its own scalar
      identity.dispose()
      assert.strictEqual(tf.memory().numTensors, live - 1)
      const again = model.logits(input)
      assert.strictEqual(maxAbsDiff(again.dataSync(), base.dataSync()), 0)
      tf.dispose([input, base, same, twice, again])
      model.dispose()
    }))

  it.effect("rejects weights that do not fit the configuration, naming the weight", () =>
    Effect.gen(function*() {
      const config = llama3Like
      const weights = randomWeights(config, 1)
      const before = tf.memory().numTensors
      const missing = yield* Effect.flip(Effect.tryPromise({
        try: () => LlamaModel.fromWeights(config, weights.filter((w) => w.name !== weightNames.finalNorm)),
        catch: (e) => e as ModelWeightsError
      }))
      assert.strictEqual(missing.message, "weight model.norm.weight: is missing")
      const wrongShape = weights.map((w) =>
        w.name === `${weightNames.linear(1, "k_proj")}.weight` ? { ...w, shape: [16, 128] } : w
      )
      const shapeError = yield* Effect.flip(Effect.tryPromise({
        try: () => LlamaModel.fromWeights(config, wrongShape),
        catch: (e) => e as ModelWeightsError
      }))
      assert.strictEqual(shapeError.message, "weight model.layers.1.self_attn.k_proj.weight: has shape [16, 128], expected [32, 64]")
      const badConfig = yield* Effect.flip(Effect.tryPromise({
        try: () => LlamaModel.fromWeights({ ...config, numKvHeads: 3 }, weights),
        catch: (e) => e as ModelWeightsError
      }))
      assert.strictEqual(badConfig.message, "weight config.numKvHeads: 3 must divide numHeads 4")
      assert.strictEqual(tf.memory().numTensors, before) // nothing leaked by the failed loads
    }))

  it.effect("fromStream loads from a Stream and fails with a typed error, freeing what it built", () =>
    Effect.gen(function*() {
      const config = mistralLike
      const weights = randomWeights(config, 8, 0.15)
      const before = tf.memory().numTensors
      const model = yield* LlamaModel.fromStream(config, Stream.fromIterable(weights))
      assert.strictEqual(tf.memory().numTensors, before + weights.length)
      model.dispose()
      const bad = [...weights.slice(0, 5), { name: "model.layers.0.mlp.fc1.weight", shape: [1], data: new Float32Array(1) }]
      const error = yield* Effect.flip(LlamaModel.fromStream(config, Stream.fromIterable(bad)))
      assert.strictEqual(error._tag, "ModelWeightsError")
      assert.strictEqual(error.message, "weight model.layers.0.mlp.fc1.weight: is not a weight of this Llama configuration")
      const badConfig = yield* Effect.flip(LlamaModel.fromStream({ ...config, headDim: 15 }, Stream.fromIterable(weights)))
      assert.strictEqual(badConfig.message, "weight config.headDim: 15 must be even for RoPE")
      const missing = yield* Effect.flip(LlamaModel.load("/nonexistent/model.gguf"))
      assert.include(missing.message, "/nonexistent/model.gguf")
      assert.strictEqual(tf.memory().numTensors, before)
    }))

  it.effect("a trainable model's gradients match finite differences and training steps leak no tensors", () =>
    Effect.gen(function*() {
      const config = { ...mistralLike, numLayers: 1 }
      const model = yield* Effect.promise(() => LlamaModel.fromWeights(config, randomWeights(config, 9, 0.15), { trainable: true }))
      assert.strictEqual(model.trainableVariables.length, 1 + 1 + 2 + 7) // tied: no lm_head
      const input = ids2d([prompt.slice(0, 8)])
      const targets = tf.oneHot(tf.tensor1d(prompt.slice(1, 9), "int32"), config.vocabSize)
      const loss = () =>
        tf.tidy(() => tf.losses.softmaxCrossEntropy(targets, tf.reshape(model.logits(input), [8, config.vocabSize]))) as tf.Scalar
      const baseline = tf.memory().numTensors
      const { value, grads } = tf.variableGrads(loss)
      const gate = model.trainableVariables.find((v) => v.name.includes("gate_proj"))!
      const g = grads[gate.name]!.dataSync()
      // central difference on one element of gate_proj
      const index = 37
      const eps = 1e-2
      const original = gate.dataSync().slice()
      const at = (delta: number) => {
        const copy = original.slice()
        copy[index]! += delta
        const perturbed = tf.tensor(copy, gate.shape)
        gate.assign(perturbed)
        perturbed.dispose()
        const l = loss()
        const v = l.dataSync()[0]!
        l.dispose()
        return v
      }
      const numeric = (at(eps) - at(-eps)) / (2 * eps)
      const restored = tf.tensor(original, gate.shape)
      gate.assign(restored)
      restored.dispose()
      assert.closeTo(g[index]!, numeric, 1e-3 + 0.02 * Math.abs(numeric))
      assert.isAbove(Math.abs(g[index]!), 1e-6)
      tf.dispose([value, ...Object.values(grads)])
      assert.strictEqual(tf.memory().numTensors, baseline)
      tf.dispose([input, targets])
      model.dispose()
    }))

  it.effect("tensor count returns to its baseline after many forward passes and generations", () =>
    Effect.gen(function*() {
      const config = llama3Like
      const empty = tf.memory().numTensors
      const model = yield* Effect.promise(() => LlamaModel.fromWeights(config, randomWeights(config, 2, 0.15)))
      const baseline = tf.memory().numTensors
      for (let i = 0; i < 30; i++) {
        const input = ids2d([prompt.slice(0, 4 + (i % 7)), prompt.slice(1, 5 + (i % 7))])
        const mask = tf.onesLike(input) as tf.Tensor2D
        tf.dispose([model.logits(input, { attentionMask: mask }), input, mask])
      }
      for (let i = 0; i < 5; i++) {
        generate(model, [prompt.slice(0, 3), prompt.slice(0, 6)], { maxNewTokens: 6, temperature: 0.8, topK: 20, seed: i })
      }
      assert.strictEqual(tf.memory().numTensors, baseline)
      model.dispose()
      assert.strictEqual(tf.memory().numTensors, empty)
    }))
})

describe("LlamaModel on the wasm backend", () => {
  it.effect("computes the same logits and gradients as cpu, using only kernels wasm has", () =>
    Effect.gen(function*() {
      const config = llama3Like
      const weights = randomWeights(config, 4, 0.15)
      const input = [prompt.slice(0, 10)]
      const onCpu = yield* Effect.promise(async () => {
        const model = await LlamaModel.fromWeights(config, weights, { trainable: true })
        const ids = ids2d(input)
        // tf.profile returns the engine's one profile object, which the next profile overwrites: copy the names
        const forward = await tf.profile(() => model.logits(ids))
        const forwardKernels = [...forward.kernelNames]
        tf.dispose(forward.result as tf.Tensor)
        const logits = model.logits(ids).dataSync().slice()
        const backward = await tf.profile(() => {
          const { value, grads } = tf.variableGrads(() => tf.sum(tf.square(model.logits(ids))) as tf.Scalar)
          return [value, ...Object.values(grads)]
        })
        const names = [...model.trainableWeights.keys()]
        const gradients = new Map(names.map((name, i) => [name, (backward.result as Array<tf.Tensor>)[1 + i]!.dataSync().slice()]))
        const embeddingGrad = gradients.get(weightNames.embedding)!
        tf.dispose(backward.result as Array<tf.Tensor>)
        model.dispose()
        ids.dispose()
        return { logits, embeddingGrad, gradients, forward: forwardKernels, all: [...forwardKernels, ...backward.kernelNames] }
      }).pipe(Effect.provide(Device.layerCpu))
      yield* Effect.gen(function*() {
        assert.strictEqual(tf.getBackend(), "wasm")
        assert.deepStrictEqual(missingKernels("wasm", onCpu.forward), [])
        // tfjs's own gradient of gather would need UnsortedSegmentSum, which tfjs-backend-wasm 4.22.0 lacks; the
        // model's embedding lookup brings its own gradient, so forward and backward need nothing wasm does not have
        assert.isFalse(onCpu.all.includes("UnsortedSegmentSum"))
        assert.deepStrictEqual(missingKernels("wasm", ["UnsortedSegmentSum"]), ["UnsortedSegmentSum"])
        assert.deepStrictEqual(missingKernels("wasm", onCpu.all), [])
        const model = yield* Effect.promise(() => LlamaModel.fromWeights(config, weights, { trainable: true }))
        const ids = ids2d(input)
        const logits = model.logits(ids)
        assert.isBelow(maxAbsDiff(logits.dataSync(), onCpu.logits), 1e-4)
        const { value, grads } = tf.variableGrads(() => tf.sum(tf.square(model.logits(ids))) as tf.Scalar)
        const embeddingGrad = grads[model.trainableWeights.get(weightNames.embedding)!.name]!.dataSync()
        assert.isBelow(maxAbsDiff(embeddingGrad, onCpu.embeddingGrad), 1e-3)
        // rows of tokens not in the input get no gradient
        assert.strictEqual(embeddingGrad[95 * config.hiddenSize], 0)
        // every weight: wasm's projections carry their own gradient (plain products only), so check them all
        for (const [name, variable] of model.trainableWeights) {
          const expected = onCpu.gradients.get(name)!
          const scale = Math.max(...expected.map(Math.abs))
          assert.isAbove(scale, 0, name)
          assert.isBelow(maxAbsDiff(grads[variable.name]!.dataSync(), expected) / scale, 1e-4, name)
        }
        tf.dispose([ids, logits, value, ...Object.values(grads)])
        model.dispose()
      }).pipe(Effect.provide(Device.layerWasm))
    }))
})
