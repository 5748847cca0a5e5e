import { assert, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import { join } from "node:path"
import { buildFinanceVocabulary, hfTokenizerFiles } from "../../src/Model/FinanceVocabulary.ts"
import { LlamaCpp } from "../../src/Model/LlamaCpp.ts"
import { presetConfig, writeTinyModel } from "../../src/Model/TinyModel.ts"
import { Tokenizer, TokenizerError } from "../../src/Model/Tokenizer.ts"
import { tempDir } from "./WeightFileFixtures.ts"

const dir = tempDir("tokenizer-test")

const corpus = [
  "What is the current price of AAPL?",
  "The price of <SYMBOL> is <PRICE>, a change of <CHANGE> (<PERCENT>) since <DATE>.",
  "SPY at <SPY_PRICE> moved <SPY_CHANGE>; QQQ at <QQQ_PRICE>. Top movers: <TOP_MOVER_1> <MOVER_1_CHANGE>, <TOP_MOVER_2>.",
  "Revenue rose 12.5% to $1,234,567.89 in Q3 2024; EPS was 3.14 vs. 2.71 expected.",
  "Prices: €100, £75.50, ¥10000, ₹500, ₿0.25 and 1e-3 — “quoted” ‘text’…",
  "Ünïcödé: naïve café, Zürich, São Paulo, 東京証券取引所, Москва, 🚀📈 to the moon!",
  "  leading spaces, double  spaces, trailing space ",
  "tabs\tand\nnew lines\n\nand a final line",
  "<PE_1><PE_2><PB_3>glued<RATIO>placeholders<YIELD>",
  "Not a placeholder: <price>, <PRICE, PRICE>, <UNKNOWN_THING>",
  "<|system|>\nYou are a finance assistant.<|end|>\n<|user|>\nIs <STOCK_1> a buy?<|end|>\n<|assistant|>\n",
  "numbers 0 1 22 333 4444 55555 3.14159 -42 +7 1,000,000 10-K 10-Q",
  ""
]

const setup = Effect.gen(function*() {
  const gguf = join(dir, "tiny.gguf")
  yield* writeTinyModel({ config: presetConfig("llama3-tiny"), seed: 1, path: gguf })
  const folder = join(dir, "hf")
  fs.mkdirSync(folder, { recursive: true })
  const { tokenizerJson, tokenizerConfig } = hfTokenizerFiles(buildFinanceVocabulary(presetConfig("llama3-tiny").vocabSize))
  fs.writeFileSync(join(folder, "tokenizer.json"), JSON.stringify(tokenizerJson))
  fs.writeFileSync(join(folder, "tokenizer_config.json"), JSON.stringify(tokenizerConfig))
  return { gguf, folder }
})

layer(Tokenizer.layerNoDeps.pipe(Layer.provide(LlamaCpp.layerCpu)), { timeout: 60_000 })("Tokenizer", (it) => {
  it.effect("llama.cpp (GGUF, vocab-only) and the HF tokenizer.json agree token for token on a mixed corpus", () =>
    Effect.gen(function*() {
      const { gguf, folder } = yield* setup
      const tokenizers = yield* Tokenizer
      const cpp = yield* tokenizers.load(gguf)
      const hf = yield* tokenizers.load(folder)
      assert.strictEqual(cpp.source, "llama.cpp")
      assert.strictEqual(hf.source, "huggingface")
      assert.strictEqual(cpp.vocabSize, 4096)
      assert.strictEqual(hf.vocabSize, 4096)
      assert.deepStrictEqual([cpp.bos, cpp.eos, cpp.eot], [1, 2, buildFinanceVocabulary(4096).eotId])
      assert.deepStrictEqual([hf.bos, hf.eos, hf.eot], [cpp.bos, cpp.eos, cpp.eot])
      assert.deepStrictEqual([cpp.bosText, cpp.eosText], ["<s>", "</s>"])
      for (const text of corpus) {
        const a = cpp.tokenize(text, { special: true })
        const b = hf.tokenize(text)
        assert.deepStrictEqual(a, b, JSON.stringify(text))
        assert.strictEqual(a[0], 1, "BOS first")
        assert.strictEqual(cpp.detokenize(a.slice(1), { special: true }), text)
        assert.strictEqual(hf.detokenize(b.slice(1), { special: true }), text)
      }
      const price = cpp.tokenize("<PRICE>", { addBos: false })
      assert.strictEqual(price.length, 1)
      assert.strictEqual(cpp.tokenText(price[0]!), "<PRICE>")
      assert.deepStrictEqual(hf.tokenize("<PRICE>", { addBos: false }), price)
      // word pieces, not bytes, for finance words
      assert.isAtMost(cpp.tokenize("The stock price", { addBos: false }).length, 3)
      // control tokens are parsed only on request; placeholders always
      const user = cpp.tokenize("<|user|>", { addBos: false, special: true })
      assert.strictEqual(user.length, 1)
      assert.isAbove(cpp.tokenize("<|user|>", { addBos: false }).length, 1)
    }))

  it.effect("renders the chat template identically from the GGUF and from tokenizer_config.json", () =>
    Effect.gen(function*() {
      const { gguf, folder } = yield* setup
      const tokenizers = yield* Tokenizer
      const cpp = yield* tokenizers.load(gguf)
      const hf = yield* tokenizers.load(folder)
      const messages = [
        { role: "system", content: "You are a finance assistant." },
        { role: "user", content: "What moved <SYMBOL> to <PRICE> today?" },
        { role: "assistant", content: "Earnings beat estimates by <PERCENT>." },
        { role: "user", content: "And the outlook?" }
      ]
      const rendered = yield* cpp.applyChatTemplate(messages)
      assert.strictEqual(rendered,
        "<|system|>\nYou are a finance assistant.<|end|>\n<|user|>\nWhat moved <SYMBOL> to <PRICE> today?<|end|>\n" +
        "<|assistant|>\nEarnings beat estimates by <PERCENT>.<|end|>\n<|user|>\nAnd the outlook?<|end|>\n<|assistant|>\n")
      assert.strictEqual(yield* hf.applyChatTemplate(messages), rendered)
      assert.isFalse((yield* cpp.applyChatTemplate(messages, { addGenerationPrompt: false })).endsWith("<|assistant|>\n"))
      const ids = cpp.tokenize(rendered, { special: true })
      assert.deepStrictEqual(hf.tokenize(rendered), ids)
      assert.strictEqual(ids.filter((t) => t === cpp.eot).length, 4)
    }))

  it.effect("fails with the path for a missing or broken model", () =>
    Effect.gen(function*() {
      const tokenizers = yield* Tokenizer
      const missing = yield* Effect.flip(Effect.scoped(tokenizers.load(join(dir, "nope.gguf"))))
      assert.instanceOf(missing, TokenizerError)
      assert.include(missing.message, "nope.gguf")
      const broken = join(dir, "broken.gguf")
      fs.writeFileSync(broken, "GGUF but not really")
      const e = yield* Effect.flip(Effect.scoped(tokenizers.load(broken)))
      assert.strictEqual(e.path, broken)
      const badFolder = join(dir, "badhf")
      fs.mkdirSync(badFolder)
      fs.writeFileSync(join(badFolder, "tokenizer_config.json"), JSON.stringify({ bos_token: 5 }))
      const e2 = yield* Effect.flip(Effect.scoped(tokenizers.load(badFolder)))
      assert.include(e2.path, "tokenizer_config.json")
    }))
})
