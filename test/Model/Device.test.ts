import { assert, describe, it } from "@effect/vitest"
import * as tf from "@tensorflow/tfjs-core"
import { Effect, Schema } from "effect"
import * as os from "node:os"
import { Device, DeviceChoice, estimateMemory, parameterCount, wasmHeapMaxBytes } from "../../src/Model/Device.ts"
import type { LlamaConfig } from "../../src/Model/ModelContracts.ts"

const tinyLlama: LlamaConfig = {
  vocabSize: 32000,
  hiddenSize: 2048,
  intermediateSize: 5632,
  numLayers: 22,
  numHeads: 32,
  numKvHeads: 4,
  headDim: 64,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  maxPositionEmbeddings: 2048,
  tieWordEmbeddings: false
}

const tiny: LlamaConfig = { ...tinyLlama, vocabSize: 512, hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16 }

const info = Device.use((d) => Effect.succeed(d.info))

describe("Device", () => {
  it("counts TinyLlama-1.1B's parameters exactly", () => {
    // TinyLlama/TinyLlama-1.1B-Chat-v1.0 has 1,100,048,384 parameters
    assert.strictEqual(parameterCount(tinyLlama), 1_100_048_384)
    assert.strictEqual(parameterCount({ ...tinyLlama, tieWordEmbeddings: true }), 1_100_048_384 - 32000 * 2048)
  })

  it.effect("cpu layer activates the cpu backend and computes with gradients registered", () =>
    Effect.gen(function*() {
      const d = yield* info
      assert.strictEqual(d.kind, "cpu")
      assert.strictEqual(tf.getBackend(), "cpu")
      assert.isFalse(d.isGpu)
      // d/dx sum(x^3) = 3x^2 needs Pow's gradient, which only register_all_gradients provides
      const x = tf.tensor1d([1, 2, 3])
      const g = tf.grad((v: tf.Tensor) => tf.sum(tf.pow(v, 3)))(x)
      assert.deepStrictEqual(Array.from(g.dataSync()), [3, 12, 27])
      tf.dispose([x, g])
    }).pipe(Effect.provide(Device.layerCpu)))

  it.effect("wasm layer finds its .wasm files under Node, runs single-threaded, and has a 4 GiB heap budget", () =>
    Effect.gen(function*() {
      const d = yield* info
      assert.strictEqual(d.kind, "wasm")
      assert.strictEqual(tf.getBackend(), "wasm")
      assert.strictEqual(d.threads, 1)
      assert.strictEqual(d.memoryBytes, Math.min(wasmHeapMaxBytes, os.totalmem()))
      assert.match(d.reason, /wasm \(XNNPACK/)
      const y = tf.matMul(tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[5], [6]]))
      assert.deepStrictEqual(Array.from(y.dataSync()), [17, 39])
    }).pipe(Effect.provide(Device.layerWasm)))

  it.effect("auto picks the first device that initializes and says why it skipped the better ones", () =>
    Effect.gen(function*() {
      const d = yield* info
      const order = ["tensorflow", "webgpu", "wasm", "cpu"]
      assert.include(order, d.kind)
      for (const better of order.slice(0, order.indexOf(d.kind))) assert.include(d.reason, `${better}: `)
      assert.include(d.reason, `using ${d.kind === "tensorflow" ? "@tensorflow/tfjs-node" : d.kind}`)
      assert.strictEqual(tf.getBackend(), d.backend)
      // tfjs-node-gpu is optional and not a dependency of this project
      if (d.kind !== "tensorflow") assert.include(d.reason, "@tensorflow/tfjs-node-gpu not installed")
    }).pipe(Effect.provide(Device.layerAuto)))

  it.effect("gpu either gives a GPU or fails with the reasons of every GPU layer", () =>
    Effect.gen(function*() {
      const result = yield* Effect.result(info.pipe(Effect.provide(Device.layer("gpu"))))
      if (result._tag === "Success") {
        assert.isTrue(result.success.isGpu)
      } else {
        assert.strictEqual(result.failure._tag, "DeviceUnavailable")
        assert.include(result.failure.message, "device gpu is unavailable")
        assert.include(result.failure.reason, "tensorflow: ")
        assert.include(result.failure.reason, "webgpu: ")
      }
    }))

  it.effect("mock GPU plans memory and fails with OutOfMemory naming the need and the budget", () =>
    Effect.gen(function*() {
      const device = yield* Device
      assert.isTrue(device.info.isGpu)
      assert.strictEqual(device.info.kind, "mock-gpu")
      assert.strictEqual(device.info.memoryBytes, 2 ** 30)
      const small = yield* device.planMemory(tiny, 2, 64)
      assert.isBelow(small.totalBytes, small.budgetBytes)
      assert.strictEqual(small.weightsBytes, parameterCount(tiny) * 4)

      const error = yield* Effect.flip(device.planMemory(tinyLlama, 4, 512, { training: true }))
      assert.strictEqual(error._tag, "OutOfMemory")
      assert.strictEqual(error.budgetBytes, 2 ** 30)
      assert.strictEqual(error.neededBytes, estimateMemory(tinyLlama, 4, 512, { training: true }).totalBytes)
      assert.isAbove(error.neededBytes, 4.4e9) // 1.1B float32 weights alone
      assert.match(error.message, /^training at batch 4 x 512 tokens .* needs \d+\.\d\d GiB but mock-gpu has a budget of 1\.00 GiB$/)
      // an NF4 base (about half a byte per weight) shrinks the weights part of the plan eightfold
      const nf4 = estimateMemory(tinyLlama, 1, 128, { weightBytesPerParameter: 0.5 })
      assert.strictEqual(nf4.weightsBytes, parameterCount(tinyLlama) / 2)
    }).pipe(Effect.provide(Device.layerMockGpu({ memoryBytes: 2 ** 30 }))))

  it("the --device value type accepts exactly auto|gpu|wasm|cpu", () => {
    assert.deepStrictEqual(DeviceChoice.literals, ["auto", "gpu", "wasm", "cpu"])
    assert.isTrue(Schema.is(DeviceChoice)("wasm"))
    assert.isFalse(Schema.is(DeviceChoice)("cuda"))
  })
})
