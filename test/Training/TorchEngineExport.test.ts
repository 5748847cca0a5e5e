/**
 * The torch engine's adapter in the rest of the pipeline: trained on a GGUF base (which goes through the GGUF -> HF
 * conversion, Q/K rows un-permuted), it goes through `export adapter` unchanged, and llama.cpp running the base GGUF
 * with the exported adapter computes what our tfjs model computes with the torch-trained PEFT adapter, within the
 * tolerance the tfjs-trained adapters meet (test/Serving/ExportTfjsParity.test.ts): 1e-4.
 */
import { assert, layer } from "@effect/vitest"
import { NodeServices } from "@effect/platform-node"
import * as tf from "@tensorflow/tfjs-core"
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { Device } from "../../src/Model/Device.ts"
import { LlamaCpp } from "../../src/Model/LlamaCpp.ts"
import { LlamaModel } from "../../src/Model/LlamaModel.ts"
import { exportAdapter } from "../../src/Serving/Export.ts"
import { defaultSystemPrompt } from "../../src/Dataset/PromptFormat.ts"
import { readGgufHeader } from "../../src/Model/Gguf.ts"
import { trainedPromptOfGguf } from "../../src/Training/AdapterPrompt.ts"
import { tempDir, tinyConfig, writeBase } from "../Serving/ServeFixtures.ts"
import { applyPeftAdapter, tallyAgainstLlamaCpp } from "../support/adapterParity.ts"
import { agreementConfig, trainTorch } from "./TorchEngineFixtures.ts"

const prompts = [
  "Context: AAPL closed at <PRICE> (<CHANGE>) after earnings.\nQuestion: Why did the stock rise?\nAnswer: ",
  "What is EBITDA?\nAnswer: Earnings before interest"
]

layer(Layer.mergeAll(Device.layerCpu, LlamaCpp.layerCpu, NodeServices.layer))("torch-trained adapter through export and llama.cpp", (it) => {
  it.effect("trains on a GGUF base, exports, and llama.cpp + adapter equals tfjs + PEFT adapter", () =>
    Effect.gen(function*() {
      const dir = tempDir("torch-export")
      const base = path.join(dir, "base.gguf")
      yield* Effect.promise(() => writeBase(base))
      fs.writeFileSync(
        path.join(dir, "train.jsonl"),
        [["What is EBITDA?", "Earnings before interest, taxes, depreciation and amortization."], ["What is a bond?", "A debt security."]]
          .map(([question, answer]) => JSON.stringify({ question, answer })).join("\n") + "\n"
      )
      fs.copyFileSync(path.join(dir, "train.jsonl"), path.join(dir, "validation.jsonl"))
      // all seven modules, a high rate: the adapter must move the model far from the base
      const result = yield* Effect.promise(() =>
        trainTorch({
          ...agreementConfig(dir, "run", { maxSteps: 6, evalEvery: 6, saveEvery: 6, learningRate: 2e-2, batchSize: 2, gradientAccumulationSteps: 1 }),
          model: base,
          targetModules: "all-linear"
        })
      )
      assert.isTrue(fs.existsSync(path.join(dir, "run", "engine", "base-hf", "model.safetensors")))
      const adapterFile = path.join(dir, "adapter.gguf")
      yield* exportAdapter({ adapter: result.finalDir, base, out: adapterFile })
      // the torch engine's final folder records the layout too, and export carries it into the GGUF
      assert.deepStrictEqual(trainedPromptOfGguf(yield* readGgufHeader(adapterFile)), { layout: "seed", systemPrompt: defaultSystemPrompt })
      const tensorsBefore = tf.memory().numTensors

      const ours = yield* LlamaModel.load(base)
      const { adapted, modules } = yield* applyPeftAdapter(ours, result.finalDir)
      assert.strictEqual(modules, tinyConfig.numLayers * 7)
      const tally = yield* tallyAgainstLlamaCpp({ modelPath: base, adapterFile, prompts, vocabSize: tinyConfig.vocabSize, ours: adapted, plain: ours })
      assert.deepStrictEqual(tally.topKMismatches, [])
      assert.isAbove(tally.compared, 20)
      assert.isBelow(tally.worst, 1e-4)
      assert.isAbove(tally.adapterEffect, 1e-2)
      adapted.dispose()
      ours.dispose()
      assert.strictEqual(tf.memory().numTensors, tensorsBefore)
      fs.rmSync(dir, { recursive: true, force: true })
    }).pipe(Effect.scoped), 600_000)
})
