/** Shared fixtures of the torch-engine tests: a tiny HF base (model init --hf-folder's writer), records, the engines. */
import { Effect, Layer } from "effect"
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Device } from "../../src/Model/Device.ts"
import { presetConfig, writeTinyHfFolder } from "../../src/Model/TinyModel.ts"
import { PythonEnv } from "../../src/Python/PythonEnv.ts"
import { openSafetensors } from "../../src/Model/Safetensors.ts"
import { TrainingEngine } from "../../src/Training/TrainingEngine.ts"
import type { TrainOptions, TrainResult } from "../../src/Training/Trainer.ts"
import { defaultTrainConfig, type TrainConfig } from "../../src/Training/TrainConfig.ts"
import { testPython } from "../support/python.ts"
import { useWasm } from "./TrainFixtures.ts"

/** d 64, 2 layers, GQA 4/2, the finance vocabulary (4096): small enough for 20 steps of both engines in seconds. */
export const tinyShape = { ...presetConfig("tiny"), hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16 }

const qa = [
  ["What is EBITDA?", "Earnings before interest, taxes, depreciation and amortization."],
  ["What is a bond?", "A debt security that pays interest."],
  ["Define the P/E ratio.", "Price divided by earnings per share."],
  ["What is liquidity?", "How easily an asset becomes cash."],
  ["What is a dividend?", "A distribution of profit to shareholders."],
  ["What is beta?", "The sensitivity of a stock to the market."],
  ["What is an ETF?", "An exchange-traded fund."],
  ["What is inflation?", "A general rise in prices."]
]

const jsonl = (rows: ReadonlyArray<ReadonlyArray<string>>) => rows.map(([question, answer]) => JSON.stringify({ question, answer })).join("\n") + "\n"

/** A temp folder with `base/` (HF folder, random weights with std 0.2 so a few steps visibly learn) and the data. */
export const makeWorkspace = async (prefix: string) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  await Effect.runPromise(writeTinyHfFolder({ config: tinyShape, folder: path.join(dir, "base"), seed: 5, initStd: 0.2 }))
  fs.writeFileSync(path.join(dir, "train.jsonl"), jsonl(qa))
  fs.writeFileSync(path.join(dir, "validation.jsonl"), jsonl(qa.slice(0, 2)))
  return dir
}

/** Dropout 0, no warmup, eval_loss as the best metric: everything both engines must agree on exactly. */
export const agreementConfig = (dir: string, run: string, overrides: Partial<TrainConfig> = {}): TrainConfig => ({
  ...defaultTrainConfig,
  model: path.join(dir, "base"),
  trainFile: path.join(dir, "train.jsonl"),
  validationFile: path.join(dir, "validation.jsonl"),
  outputDir: path.join(dir, run),
  loraDropout: 0,
  r: 4,
  loraAlpha: 8,
  epochs: 10,
  maxSteps: 20,
  batchSize: 2,
  gradientAccumulationSteps: 2,
  learningRate: 3e-3,
  warmupSteps: 0,
  logEvery: 1,
  evalEvery: 10,
  saveEvery: 10,
  metricForBest: "eval_loss",
  evalGenerationSamples: 0,
  threads: 1,
  device: "cpu",
  ...overrides
})

const pythonLayer = () => PythonEnv.layer({ python: testPython() })

export const trainTorch = (config: TrainConfig, options: TrainOptions = {}): Promise<TrainResult> =>
  Effect.runPromise(
    TrainingEngine.use((e) => e.train(config, options)).pipe(
      Effect.provide(Layer.mergeAll(TrainingEngine.layerTorch().pipe(Layer.provide(pythonLayer())), NodeServices.layer)),
      Effect.orDie
    )
  )

export const trainTfjs = async (config: TrainConfig, options: TrainOptions = {}): Promise<TrainResult> => {
  await useWasm()
  return Effect.runPromise(
    TrainingEngine.use((e) => e.train(config, options)).pipe(
      Effect.provide(Layer.mergeAll(TrainingEngine.layerTfjs(), Device.layerWasm, NodeServices.layer)),
      Effect.orDie
    )
  )
}

/** An adapter's tensors by name (float32). */
export const readAdapter = (file: string) =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const f = yield* openSafetensors(file)
    const out = new Map<string, Float32Array>()
    for (const t of f.tensors) out.set(t.name, (yield* f.readTensor(t.name)).data)
    return out
  })))

/** ‖a − b‖ / ‖b‖ over one tensor. */
export const relativeDifference = (a: Float32Array, b: Float32Array) => {
  let d = 0
  let n = 0
  for (let i = 0; i < a.length; i++) {
    d += (a[i]! - b[i]!) ** 2
    n += b[i]! ** 2
  }
  return Math.sqrt(d) / Math.max(1e-30, Math.sqrt(n))
}

export const torchEnvLayer = pythonLayer
