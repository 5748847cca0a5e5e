import { NodeServices } from "@effect/platform-node"
import * as tf from "@tensorflow/tfjs-core"
import { Effect, Layer, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { Device } from "../../src/Model/Device.ts"
import { loadModelSource } from "../../src/Model/ModelLoader.ts"
import { openSafetensors } from "../../src/Model/Safetensors.ts"
import { presetConfig, writeTinyModel } from "../../src/Model/TinyModel.ts"
import { Trainer } from "../../src/Training/Trainer.ts"
import { baseTrainConfig, useWasm } from "./TrainFixtures.ts"

describe("full-parameter training", () => {
  it("trains every weight of a GGUF model and writes it back as safetensors + config.json and as a GGUF", async () => {
    await useWasm()
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "train-full-"))
    const modelConfig = { ...presetConfig("tiny"), hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16 }
    const base = path.join(dir, "base.gguf")
    await Effect.runPromise(writeTinyModel({ config: modelConfig, path: base, seed: 5 }))
    const lines = ["AAPL trades at <PRICE> today.", "MSFT has a P/E of <PE_1>.", "SPY is at <SPY_PRICE>.", "QQQ moved <QQQ_CHANGE>."]
    fs.writeFileSync(
      path.join(dir, "train.jsonl"),
      lines.map((a, i) => JSON.stringify({ question: `Q${i}?`, answer: a, rationale: "", tickers: [], citations: [], context_required: false })).join("\n")
    )
    const config = baseTrainConfig(path.join(dir, "run"), {
      model: base,
      trainFile: path.join(dir, "train.jsonl"),
      validationFile: path.join(dir, "train.jsonl"),
      mode: "full",
      epochs: 8,
      batchSize: 4,
      gradientAccumulationSteps: 1,
      learningRate: 1e-2,
      warmupSteps: 1,
      logEvery: 2,
      saveEvery: 4,
      evalEvery: 4,
      evalGenerationSamples: 0,
      metricForBest: "eval_loss",
      device: "wasm"
    })
    const before = tf.memory().numTensors
    const result = await Effect.runPromise(
      Trainer.use((t) => t.train(config, { onLog: () => {} })).pipe(
        Effect.provide(Layer.mergeAll(Trainer.layer, Device.layerWasm, NodeServices.layer))
      )
    )
    expect(tf.memory().numTensors).toBe(before)
    expect(result.trainableParameters).toBe(modelConfig.vocabSize * 64 * 2 + 2 * (4 * 64 * 64 - 2 * 64 * 32 + 3 * 64 * 128 + 128) + 64)
    const losses = result.trainLogs.map((l) => l.loss)
    expect(losses.at(-1)!).toBeLessThan(losses[0]! * 0.7)
    expect(result.evaluations.map((e) => e.step)).toEqual([4, 8])
    expect(result.evaluations[1]!.evalLoss!).toBeLessThan(result.evaluations[0]!.evalLoss!)

    // the GGUF holds exactly the best checkpoint's weights (the loader undoes the Q/K permutation) and the config
    const gguf = await Effect.runPromise(loadModelSource(path.join(result.finalDir, "model.gguf")))
    // GGUF stores the norm epsilon as f32
    expect({ ...gguf.config, rmsNormEps: 0 }).toEqual({ ...modelConfig, rmsNormEps: 0 })
    expect(gguf.config.rmsNormEps).toBeCloseTo(modelConfig.rmsNormEps, 10)
    const fromGguf = await Effect.runPromise(Stream.runCollect(gguf.weights))
    const saved = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const f = yield* openSafetensors(path.join(dir, "run", `checkpoint-${result.bestStep}`, "model.safetensors"))
      return yield* Effect.forEach(f.tensors, (t) => f.readTensor(t.name))
    })))
    const byName = new Map(saved.map((t) => [t.name, t]))
    expect(fromGguf.length).toBe(saved.length)
    expect(fromGguf.map((w) => w.name).filter((n) => !byName.has(n))).toEqual([])
    for (const w of fromGguf) expect(Array.from(w.data)).toEqual(Array.from(byName.get(w.name)!.data))
    // and the weights did change from the base
    const baseWeights = await Effect.runPromise(Effect.flatMap(loadModelSource(base), (s) => Stream.runCollect(s.weights)))
    const q0 = (ws: ReadonlyArray<{ name: string; data: Float32Array }>) => ws.find((w) => w.name === "model.layers.0.self_attn.q_proj.weight")!.data
    expect(Array.from(q0(fromGguf))).not.toEqual(Array.from(q0(baseWeights)))
    // the HF folder form reads back with the same config
    const hf = await Effect.runPromise(loadModelSource(result.finalDir))
    expect(hf.config).toEqual(gguf.config)
  })
})
