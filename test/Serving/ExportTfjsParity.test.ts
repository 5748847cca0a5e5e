/**
 * The strongest check of `export adapter`: llama.cpp running the base GGUF with the exported adapter computes the
 * same next-token distributions as our tfjs model with the same PEFT adapter applied through the trainer's LoRA
 * layers (`withLinears` + `loraLinear` + `loadAdapterInto`). The two sides share no adapter code: tfjs applies
 * PEFT's A and B in HF layout, llama.cpp applies what the exporter wrote (names, ggml order, scale, Q/K rows).
 */
import { assert, layer } from "@effect/vitest"
import { NodeServices } from "@effect/platform-node"
import * as tf from "@tensorflow/tfjs-core"
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { exportAdapter } from "../../src/Serving/Export.ts"
import { Device } from "../../src/Model/Device.ts"
import { LlamaModel } from "../../src/Model/LlamaModel.ts"
import { LlamaCpp } from "../../src/Model/LlamaCpp.ts"
import { applyPeftAdapter, tallyAgainstLlamaCpp } from "../support/adapterParity.ts"
import { tempDir, tinyConfig, writeBase, writePeft } from "./ServeFixtures.ts"

const prompts = [
  "Context: AAPL closed at <PRICE> (<CHANGE>) after earnings.\nQuestion: Why did the stock rise?\nAnswer: ",
  "<SYMBOL> trades near <SUPPORT> with <MOMENTUM> momentum; P/E 23.4x and rates at 5.25%."
]

const cases = [
  { name: "LoRA r4 alpha 8 on all linear modules", options: { r: 4, alpha: 8, targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] } },
  { name: "rsLoRA r8 alpha 4 on q/k/v/o", options: { r: 8, alpha: 4, rslora: true, seed: 3 } }
] as const

layer(Layer.mergeAll(Device.layerCpu, LlamaCpp.layerCpu, NodeServices.layer))("tfjs + PEFT adapter equals llama.cpp + exported adapter", (it) => {
  for (const c of cases) {
    it.effect(c.name, () =>
      Effect.gen(function*() {
        const dir = tempDir("tfjs-parity")
        const base = path.join(dir, "base.gguf")
        const peft = path.join(dir, "peft")
        const adapterFile = path.join(dir, "adapter.gguf")
        yield* Effect.promise(() => writeBase(base))
        yield* Effect.promise(() => writePeft(peft, tinyConfig, c.options))
        yield* exportAdapter({ adapter: peft, base, out: adapterFile })
        const tensorsBefore = tf.memory().numTensors

        // ours: the base in tfjs, wrapped with the trainer's LoRA layers holding the PEFT weights
        const ours = yield* LlamaModel.load(base)
        const { adapted, layers, modules } = yield* applyPeftAdapter(ours, peft)
        assert.strictEqual(layers, modules)

        // theirs: llama.cpp, base GGUF + exported adapter, exact settings
        const tally = yield* tallyAgainstLlamaCpp({ modelPath: base, adapterFile, prompts, vocabSize: tinyConfig.vocabSize, ours: adapted, plain: ours })
        assert.deepStrictEqual(tally.topKMismatches, [])
        assert.isAbove(tally.compared, 40)
        assert.isBelow(tally.worst, 1e-4)
        // the adapter changes the model a lot, so agreeing within 1e-4 is not agreeing on "no change"
        assert.isAbove(tally.adapterEffect, 1e-2)

        adapted.dispose()
        ours.dispose()
        assert.strictEqual(tf.memory().numTensors, tensorsBefore)
        fs.rmSync(dir, { recursive: true, force: true })
      }).pipe(Effect.scoped))
  }
})
