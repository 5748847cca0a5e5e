import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { join } from "node:path"
import { buildFinanceVocabulary, placeholderTokens, TokenType } from "../../src/Model/FinanceVocabulary.ts"
import { metaArray, metaString, readGgufHeader, requireNumber } from "../../src/Model/Gguf.ts"
import { canonicalWeights, parameterCount, presetConfig, writeTinyModel } from "../../src/Model/TinyModel.ts"
import { sharedLlama, tempDir } from "./WeightFileFixtures.ts"

const dir = tempDir("tiny-model-test")
const llama = sharedLlama()

describe("the finance vocabulary", () => {
  it("has specials, 256 byte tokens, placeholders as user-defined tokens and scored pieces", () => {
    const v = buildFinanceVocabulary(4096)
    assert.strictEqual(v.tokens.length, 4096)
    assert.deepStrictEqual(v.tokens.slice(0, 4), ["<unk>", "<s>", "</s>", "<0x00>"])
    assert.strictEqual(v.tokens[258], "<0xFF>")
    assert.deepStrictEqual([v.types[0], v.types[1], v.types[2], v.types[3]], [TokenType.unknown, TokenType.control, TokenType.control, TokenType.byte])
    for (const p of ["<PRICE>", "<SPY_PRICE>", "<MOVER_2_CHANGE>", "<PE_3>"]) {
      assert.include(placeholderTokens, p)
      assert.strictEqual(v.types[v.tokens.indexOf(p)], TokenType.userDefined, p)
    }
    assert.strictEqual(v.tokens[v.eotId], "<|end|>")
    assert.strictEqual(new Set(v.tokens).size, v.tokens.length)
    const the = v.tokens.indexOf("\u2581the")
    assert.strictEqual(v.types[the], TokenType.normal)
    assert.isBelow(v.scores[the]!, 0)
    // every piece's prefixes are pieces, so SPM merges can always build it
    const pieces = new Set(v.tokens)
    for (let i = 0; i < v.tokens.length; i++) {
      if (v.types[i] !== TokenType.normal || !v.tokens[i]!.startsWith("\u2581")) continue
      const chars = Array.from(v.tokens[i]!)
      for (let n = 1; n < chars.length; n++) assert.isTrue(pieces.has(chars.slice(0, n).join("")), v.tokens[i])
    }
    assert.deepStrictEqual(buildFinanceVocabulary(4096).tokens, v.tokens) // deterministic
    assert.throws(() => buildFinanceVocabulary(300), /at least/)
  })
})

describe("seeded initialization", () => {
  it("draws linear weights ~ N(0, initStd) and norms ~ N(1, normStd), per seed and tensor", () => {
    const stats = (x: Float32Array) => {
      const mean = x.reduce((a, b) => a + b, 0) / x.length
      return [mean, Math.sqrt(x.reduce((a, b) => a + (b - mean) ** 2, 0) / x.length)] as const
    }
    const weights = canonicalWeights(presetConfig("tiny"), { seed: 1, initStd: 0.05, normStd: 0.2 })
    const embedding = weights[0]!.data()
    const [m, s] = stats(embedding)
    assert.approximately(m, 0, 0.002)
    assert.approximately(s, 0.05, 0.001)
    const [nm, ns] = stats(weights.find((t) => t.name === "model.norm.weight")!.data())
    assert.approximately(nm, 1, 0.05)
    assert.approximately(ns, 0.2, 0.04)
    assert.deepStrictEqual(canonicalWeights(presetConfig("tiny"), { seed: 1, initStd: 0.05 })[0]!.data(), embedding)
    assert.notDeepEqual(canonicalWeights(presetConfig("tiny"), { seed: 2, initStd: 0.05 })[0]!.data(), embedding)
    assert.notDeepEqual(weights[2]!.data().subarray(0, 16), weights[3]!.data().subarray(0, 16)) // tensors draw their own streams
  })
})

describe("project-made GGUF models load in llama.cpp", () => {
  for (const [preset, type] of [["tiny", "F32"], ["llama3-tiny", "F16"], ["mistral-tiny", "Q8_0"]] as const) {
    it(`${preset} ${type}`, async () => {
      const path = join(dir, `${preset}-${type}.gguf`)
      const config = presetConfig(preset)
      await Effect.runPromise(writeTinyModel({ config, seed: 7, tensorType: type, path }))
      const header = await Effect.runPromise(readGgufHeader(path))
      assert.strictEqual(metaString(header, "general.architecture"), "llama")
      assert.strictEqual(requireNumber(header, "llama.block_count"), config.numLayers)
      assert.strictEqual(requireNumber(header, "llama.attention.head_count_kv"), config.numKvHeads)
      assert.strictEqual(metaArray(header, "tokenizer.ggml.tokens")!.values.length, config.vocabSize)
      const weights = header.tensors.filter((t) => t.shape.length === 2)
      assert.isTrue(weights.every((t) => t.typeName === type))
      assert.strictEqual(header.tensors.some((t) => t.name === "output.weight"), !config.tieWordEmbeddings)
      assert.strictEqual(header.tensors.some((t) => t.name === "rope_freqs.weight"), config.ropeScaling !== undefined)
      const params = header.tensors.filter((t) => t.name !== "rope_freqs.weight").reduce((n, t) => n + t.numel, 0)
      assert.strictEqual(params, parameterCount(config))

      const model = await llama().loadModel({ modelPath: path })
      try {
        assert.strictEqual(model.fileInsights.totalLayers, config.numLayers + 1)
        assert.strictEqual(model.tokens.bos, 1)
        assert.strictEqual(model.tokens.eos, 2)
        assert.strictEqual(model.tokens.eot, buildFinanceVocabulary(config.vocabSize).eotId)
        const text = "The price of <SYMBOL> rose 2.5% to <PRICE> — €100 ünïcode"
        const tokens = model.tokenize(text)
        assert.strictEqual(model.detokenize(tokens), text)
        const pieces = tokens.map((t) => model.detokenize([t]))
        assert.include(pieces, "<PRICE>")
        assert.include(pieces, "<SYMBOL>")
        assert.include(pieces, " price") // a learned word piece, not bytes
        assert.isAbove(pieces.filter((p) => p === "\ufffd").length, 0) // 'ü' etc. fall back to bytes
        const context = await model.createContext({ contextSize: 64 })
        try {
          const sequence = context.getSequence()
          const [result] = await sequence.controlledEvaluate([[tokens[0]!, { generateNext: { probabilities: true } }]])
          const probabilities = result?.next?.probabilities
          assert.strictEqual(probabilities?.size, config.vocabSize)
          const total = Array.from(probabilities!.values()).reduce((a, b) => a + b, 0)
          assert.approximately(total, 1, 1e-3)
        } finally {
          await context.dispose()
        }
      } finally {
        await model.dispose()
      }
    })
  }
})
