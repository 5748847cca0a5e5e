/**
 * Both engines render generated tokens alike: an unfinished UTF-8 character at the end (byte-fallback tokens that
 * split a multi-byte character) is dropped, as llama.cpp's completion drops it.
 */
import { assert, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { join } from "node:path"
import { LlamaCompletion, type Token, TokenBias } from "node-llama-cpp"
import { LlamaCpp } from "../../src/Model/LlamaCpp.ts"
import { presetConfig, writeTinyModel } from "../../src/Model/TinyModel.ts"
import { Tokenizer } from "../../src/Model/Tokenizer.ts"
import { finishedText, renderTokens } from "../../src/Model/TokenText.ts"
import { tempDir } from "./WeightFileFixtures.ts"

const dir = tempDir("token-text-")

layer(Tokenizer.layerNoDeps.pipe(Layer.provideMerge(LlamaCpp.layerCpu)), { timeout: 60_000 })(
  "Token rendering",
  (it) => {
    it.effect("byte tokens of a split 4-byte character: nothing until it is whole, on the core and on llama.cpp", () =>
      Effect.gen(function*() {
        const gguf = join(dir, "tiny.gguf")
        yield* writeTinyModel({ config: presetConfig("llama3-tiny"), seed: 1, path: gguf })
        const tok = yield* (yield* Tokenizer).load(gguf)
        // U+1D11E is outside the finance vocabulary: byte fallback gives its four UTF-8 bytes as four tokens
        const clef = tok.tokenize("\u{1D11E}", { addBos: false })
        const a = tok.tokenize("a", { addBos: false })
        const detok = (ids: ReadonlyArray<number>) => tok.detokenize(ids)
        assert.strictEqual(clef.length, 4)
        assert.isTrue(clef.every((id) => detok([id]) === "\uFFFD"))
        // the raw decoding shows U+FFFD for the unfinished character; the rendering drops it
        assert.include(detok([...a, ...clef.slice(0, 2)]), "\uFFFD")
        assert.strictEqual(renderTokens(detok, [...a, ...clef.slice(0, 2)]), "a")
        assert.strictEqual(renderTokens(detok, clef.slice(0, 3)), "")
        assert.strictEqual(renderTokens(detok, [...a, ...clef]), "a\u{1D11E}")
        // an invalid sequence followed by more text stays visible (on llama.cpp too: only the end is held back)
        assert.strictEqual(renderTokens(detok, [...clef.slice(0, 2), ...a]), "\uFFFDa")

        // llama.cpp's own completion, forced onto the first byte token: it generates only partial characters
        const llamaCpp = yield* LlamaCpp
        const model = yield* llamaCpp.loadModel({ modelPath: gguf })
        const generated = yield* Effect.promise(async () => {
          const context = await model.createContext({ contextSize: 64, threads: 1 })
          try {
            const tokens: Array<number> = []
            const completion = new LlamaCompletion({ contextSequence: context.getSequence() })
            const response = await completion.generateCompletion("Answer:", {
              maxTokens: 3,
              temperature: 0,
              tokenBias: new TokenBias(model.tokenizer).set(clef[0]! as Token, { logit: 1000 }),
              onToken: (ts) => tokens.push(...ts.map(Number))
            })
            return { response, tokens }
          } finally {
            await context.dispose()
          }
        })
        // the raw text of what it generated has U+FFFD; llama.cpp shows none of it, and neither does the rendering
        assert.isAtMost(generated.tokens.length, 3)
        assert.strictEqual(generated.response, "")
        const forced = [clef[0]!, clef[0]!, clef[0]!]
        assert.include(detok(forced), "\uFFFD")
        assert.strictEqual(renderTokens(detok, forced), generated.response)
        assert.strictEqual(finishedText(generated.response), generated.response)
      }))
  }
)
