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
import { SeededRng } from "../../src/Shared/Prng.ts"
import { Device } from "../../src/Model/Device.ts"
import { LlamaCpp } from "../../src/Model/LlamaCpp.ts"
import { LlamaModel } from "../../src/Model/LlamaModel.ts"
import { DropoutContext, loraLinear, type LoraLayer } from "../../src/Model/Lora.ts"
import { loadAdapterInto, readPeftAdapter } from "../../src/Model/PeftAdapter.ts"
import { llamaCppDistributions, ourDistributions, ParityTally } from "../Model/ParityHarness.ts"
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
        const adapter = yield* readPeftAdapter(peft)
        const loras: Array<LoraLayer> = []
        const rng = new SeededRng(1)
        const dropout = new DropoutContext()
        const adapted = ours.withLinears((name, baseLayer) => {
          if (!adapter.modules.has(name)) return baseLayer
          const lora = loraLinear(name, baseLayer, { r: adapter.config.rankOf(name), scaling: adapter.config.scaleOf(name), dropout: 0 }, rng, dropout)
          loras.push(lora)
          return lora
        })
        assert.strictEqual(loras.length, adapter.modules.size)
        yield* loadAdapterInto(adapter, loras, peft)

        // theirs: llama.cpp, base GGUF + exported adapter, exact settings
        const llamaCpp = yield* LlamaCpp
        const theirs = yield* llamaCpp.loadModel({ modelPath: base })
        const context = yield* Effect.promise(() =>
          theirs.createContext({
            contextSize: 128, batchSize: 128, sequences: 1, flashAttention: false, threads: 1,
            experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
            lora: { adapters: [{ filePath: adapterFile }] }
          }))
        const sequence = context.getSequence()
        const tally = new ParityTally()
        for (const text of prompts) {
          const tokens = [Number(theirs.tokens.bos!), ...theirs.tokenize(text, false).map(Number)]
          const expected = yield* Effect.promise(() => llamaCppDistributions(sequence, tokens, tinyConfig.vocabSize))
          tally.add(expected, ourDistributions(adapted, tokens), `"${text}"`, ourDistributions(ours, tokens))
        }
        yield* Effect.promise(() => context.dispose())
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
