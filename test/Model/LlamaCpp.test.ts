import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import { join } from "node:path"
import type { LlamaModel } from "node-llama-cpp"
import { LlamaCpp, LlamaCppError } from "../../src/Model/LlamaCpp.ts"
import { presetConfig, writeTinyModel } from "../../src/Model/TinyModel.ts"
import { tempDir } from "./WeightFileFixtures.ts"

const dir = tempDir("llamacpp-test")

layer(LlamaCpp.layerCpu, { timeout: 60_000 })("LlamaCpp", (it) => {
  it.effect("owns one CPU runtime; models live as long as their scope", () =>
    Effect.gen(function*() {
      const llamaCpp = yield* LlamaCpp
      assert.strictEqual(llamaCpp.backend, "cpu")
      assert.strictEqual(llamaCpp.llama.gpu, false)
      const path = join(dir, "tiny.gguf")
      yield* writeTinyModel({ config: presetConfig("mistral-tiny"), seed: 2, path })
      let kept: LlamaModel | undefined
      const vocabSize = yield* Effect.scoped(Effect.gen(function*() {
        const model = yield* llamaCpp.loadModel({ modelPath: path, vocabOnly: true })
        kept = model
        assert.isFalse(model.disposed)
        return model.fileInfo.metadata.tokenizer.ggml.tokens.length
      }))
      assert.strictEqual(vocabSize, 4096)
      assert.isTrue(kept!.disposed)
      assert.strictEqual(yield* LlamaCpp.use((l) => Effect.succeed(l.llama)), llamaCpp.llama) // one shared instance
    }))

  it.effect("a model that cannot load fails with LlamaCppError naming the file", () =>
    Effect.gen(function*() {
      const llamaCpp = yield* LlamaCpp
      const missing = join(dir, "missing.gguf")
      const error = yield* Effect.flip(Effect.scoped(llamaCpp.loadModel({ modelPath: missing })))
      assert.instanceOf(error, LlamaCppError)
      assert.strictEqual(error.operation, `load model ${missing}`)
      assert.include(error.message, `llama.cpp: load model ${missing}: `)
    }))
})
