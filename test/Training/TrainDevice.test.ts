import { NodeServices } from "@effect/platform-node"
import * as tf from "@tensorflow/tfjs-core"
import { Effect, Exit, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { Device, registerGradients } from "../../src/Model/Device.ts"
import { runTraining, type TrainError } from "../../src/Training/Trainer.ts"
import { baseTrainConfig, byteTokenizer, examples, randomWeights, tinyConfig } from "./TrainFixtures.ts"

const input = {
  modelConfig: tinyConfig,
  weights: () => randomWeights(tinyConfig, 1),
  tokenizer: byteTokenizer,
  baseModelName: "tiny-random",
  train: examples(),
  validation: examples()
}
const config = (dir: string) =>
  baseTrainConfig(dir, { epochs: 1, batchSize: 2, gradientAccumulationSteps: 1, evalGenerationSamples: 0, metricForBest: "eval_loss" as const })

describe("training on the provided Device layer", () => {
  it("trains on the mocked GPU (cpu compute presenting itself as a GPU)", async () => {
    await registerGradients()
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "train-device-"))
    const result = await Effect.runPromise(
      runTraining(input, config(dir), { onLog: () => {} }).pipe(
        Effect.provide(Layer.mergeAll(Device.layerMockGpu({ memoryBytes: 2 ** 30 }), NodeServices.layer))
      )
    )
    expect(tf.getBackend()).toBe("cpu")
    expect(result.globalStep).toBe(2)
    expect(fs.existsSync(path.join(dir, "final-adapter", "adapter_model.safetensors"))).toBe(true)
  })

  it("fails before loading anything when the GPU's memory budget cannot hold the run", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "train-device-"))
    const exit = await Effect.runPromiseExit(
      runTraining(input, config(dir), { onLog: () => {} }).pipe(
        Effect.provide(Layer.mergeAll(Device.layerMockGpu({ memoryBytes: 64 * 1024 }), NodeServices.layer))
      )
    )
    expect(Exit.isFailure(exit)).toBe(true)
    const error = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail") : undefined
    const e = (error as unknown as { error: TrainError }).error
    expect(e.stage).toBe("device")
    expect(e.message).toContain("training at batch 2")
    expect(fs.existsSync(path.join(dir, "checkpoint-1"))).toBe(false)
  })
})
