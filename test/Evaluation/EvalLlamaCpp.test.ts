/**
 * In-process evaluation with real llama.cpp: a tiny random Llama GGUF written in the test (the Training stage's
 * `writeTinyModel`, finance tokenizer) is loaded through the shared LlamaCpp runtime on the CPU.
 */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Evaluator } from "../../src/Evaluation/Evaluator.ts"
import { Generator } from "../../src/Evaluation/Generator.ts"
import { layerLlamaCpp } from "../../src/Evaluation/LlamaCppGenerator.ts"
import { LlamaCpp } from "../../src/Model/LlamaCpp.ts"
import { presetConfig, writeTinyModel } from "../../src/Model/TinyModel.ts"
import { records } from "../fixtures/eval/fakeModelServer.ts"

describe("eval run with an in-process GGUF model", () => {
  it.live("generates with llama.cpp, deterministically for a seed", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(join(tmpdir(), "eval-llama-"))
      const model = join(dir, "tiny.gguf")
      yield* writeTinyModel({ config: presetConfig("tiny"), seed: 11, path: model })
      const split = join(dir, "test.jsonl")
      writeFileSync(split, records.map((r) => JSON.stringify(r)).join("\n") + "\n")

      const runWith = (out: string) =>
        Effect.gen(function*() {
          const generator = yield* Generator
          assert.include(generator.describe, "tiny.gguf")
          return yield* (yield* Evaluator).run({ generator, split, outDir: join(dir, out), maxTokens: 12, concurrency: 2, seed: 1 })
        }).pipe(Effect.provide(layerLlamaCpp({ model, concurrency: 2, contextSize: 512, threads: 1 }).pipe(Layer.provide(LlamaCpp.layerCpu))))

      const a = yield* runWith("a")
      const b = yield* runWith("b")
      assert.strictEqual(a.aggregate.scored, 6)
      assert.strictEqual(a.aggregate.failed, 0)
      const predictions = (out: string) =>
        readFileSync(join(dir, out, "samples.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).prediction as string)
      assert.deepStrictEqual(predictions("a"), predictions("b"))
      assert.deepStrictEqual(a.aggregate.metrics, b.aggregate.metrics)
      // a random model says something; what it says is scored like any other answer
      assert.isTrue(predictions("a").some((p) => p.length > 0))
    }).pipe(Effect.provide(Evaluator.layer.pipe(Layer.provideMerge(NodeServices.layer)))))
})
