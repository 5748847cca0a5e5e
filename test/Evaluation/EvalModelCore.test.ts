/**
 * In-process evaluation over the project's own model core (tfjs LlamaModel + Generation + PEFT adapter), on a tiny
 * random GGUF written in the test; cross-checked against llama.cpp's greedy generation of the same file.
 */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import * as tf from "@tensorflow/tfjs-core"
import { Effect, Layer } from "effect"
import { Command } from "effect/cli"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { evalCommand } from "../../src/Evaluation/Cli.ts"
import { Generator, type GenerationRequest } from "../../src/Evaluation/Generator.ts"
import { layerLlamaCpp } from "../../src/Evaluation/LlamaCppGenerator.ts"
import { layerModelCore } from "../../src/Evaluation/ModelCoreGenerator.ts"
import { SeededRng } from "../../src/Shared/Prng.ts"
import { Device } from "../../src/Model/Device.ts"
import { LlamaCpp } from "../../src/Model/LlamaCpp.ts"
import { LlamaModel } from "../../src/Model/LlamaModel.ts"
import { AdapterConfig } from "../../src/Model/AdapterConfig.ts"
import { DropoutContext, isLoraLayer, loraTransform } from "../../src/Model/Lora.ts"
import { writePeftAdapter } from "../../src/Model/PeftAdapter.ts"
import { presetConfig, writeTinyModel } from "../../src/Model/TinyModel.ts"
import { Tokenizer } from "../../src/Model/Tokenizer.ts"
import { records } from "../fixtures/eval/fakeModelServer.ts"

const request: GenerationRequest = {
  question: "What is AAPL trading at?",
  context: "Current Symbol: AAPL\n\nCurrent Prices:\n  AAPL: $189.50 (+0.45%)",
  maxTokens: 8,
  temperature: 0,
  seed: 3
}

const answers = (layer: Layer.Layer<Generator, unknown>) =>
  Effect.gen(function*() {
    const g = yield* Generator
    const a = yield* g.generate(request)
    const b = yield* g.generate(request)
    return [a.answer, b.answer, g.describe] as const
  }).pipe(Effect.provide(layer))

describe("eval with the in-process model core", () => {
  it.live("generates deterministically, like llama.cpp, and applies a PEFT adapter; no tensor leaks", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(join(tmpdir(), "eval-core-"))
      const model = join(dir, "tiny.gguf")
      yield* writeTinyModel({ config: presetConfig("tiny"), seed: 11, path: model })
      const support = Layer.mergeAll(Tokenizer.layerNoDeps.pipe(Layer.provide(LlamaCpp.layerCpu)), Device.layerCpu, NodeServices.layer)
      const before = tf.memory().numTensors

      const [a, b, describe] = yield* answers(layerModelCore({ model }).pipe(Layer.provide(support)))
      assert.strictEqual(a, b)
      assert.include(describe, "core:")
      assert.strictEqual(tf.memory().numTensors, before)

      const [viaLlamaCpp] = yield* answers(layerLlamaCpp({ model, threads: 1, contextSize: 512 }).pipe(Layer.provide(LlamaCpp.layerCpu)))
      assert.strictEqual(a, viaLlamaCpp)

      // an adapter with non-zero B changes what the model says
      const settings = AdapterConfig.fromSettings({ r: 4, alpha: 8, dropout: 0, useRslora: false, targetModules: ["q_proj", "v_proj"] }, model)
      const adapterDir = join(dir, "adapter")
      yield* Effect.acquireUseRelease(
        LlamaModel.load(model),
        (base) =>
          Effect.gen(function*() {
            const lora = base.withLinears(loraTransform(settings, new SeededRng(5), new DropoutContext()))
            const layers = [...lora.linears.values()].filter(isLoraLayer)
            for (const l of layers) tf.tidy(() => l.loraB.assign(tf.randomNormal(l.loraB.shape, 0, 0.5, "float32", 7)))
            yield* writePeftAdapter(adapterDir, layers, settings)
            lora.dispose()
          }),
        (base) => Effect.sync(() => base.dispose())
      )
      const [withAdapter, again] = yield* answers(layerModelCore({ model, adapter: adapterDir }).pipe(Layer.provide(support)))
      assert.strictEqual(withAdapter, again)
      assert.notStrictEqual(withAdapter, a)
      assert.strictEqual(tf.memory().numTensors, before)

      // the same through the CLI: an adapter folder selects the model core
      const split = join(dir, "test.jsonl")
      writeFileSync(split, records.map((r) => JSON.stringify(r)).join("\n") + "\n")
      yield* Command.runWith(evalCommand, { version: "test" })([
        "run", "--split", split, "--model", model, "--adapter", adapterDir, "--device", "cpu",
        "--out", join(dir, "run"), "--limit", "2", "--max-tokens", "4", "--concurrency", "1"
      ])
      const agg = JSON.parse(readFileSync(join(dir, "run", "aggregate.json"), "utf8"))
      assert.strictEqual(agg.scored, 2)
      assert.include(agg.generator, "core:")
    }).pipe(Effect.provide(NodeServices.layer)))

  // SmolLM2's GGUF does not ask for BOS (add_bos false), yet the trainer puts it first in every layout: llama.cpp's
  // eval prompt must carry it too, or the tuned model is scored on tokens it never saw (it used to lack it on seed)
  it.live("on the real SmolLM2, llama.cpp's eval prompt is the trainer's: its greedy answers equal the model core's, seed and ChatML", () =>
    Effect.gen(function*() {
      const model = process.env.FINETUNE_SMOLLM2!
      const support = Layer.mergeAll(Tokenizer.layerNoDeps.pipe(Layer.provide(LlamaCpp.layerCpu)), Device.layerCpu, NodeServices.layer)
      for (const layout of ["seed", "chatml"] as const) {
        const [core] = yield* answers(layerModelCore({ model, layout }).pipe(Layer.provide(support)))
        const [viaLlamaCpp] = yield* answers(layerLlamaCpp({ model, layout, threads: 1, contextSize: 512 }).pipe(Layer.provide(LlamaCpp.layerCpu)))
        assert.isAbove(core.length, 0)
        assert.strictEqual(viaLlamaCpp, core, layout)
      }
    }), 240_000)
})
