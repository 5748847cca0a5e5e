import { assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import * as fs from "node:fs"
import { join } from "node:path"
import { bf16ArrayToF32, f32ArrayToBf16 } from "../../src/Model/Float16.ts"
import { GgmlType } from "../../src/Model/GgmlQuants.ts"
import { gguf } from "../../src/Model/Gguf.ts"
import { ggufNameOf, hfNameOf, llama3RopeFactors, llama3ScalingFromFactors, permuteQkForGguf, unpermuteQkFromGguf } from "../../src/Model/GgufNames.ts"
import { writeGguf } from "../../src/Model/GgufWriter.ts"
import { loadModelSource, toHfConfigJson } from "../../src/Model/ModelLoader.ts"
import { writeSafetensors } from "../../src/Model/Safetensors.ts"
import { canonicalWeights, llamaMetadata, presetConfig, writeTinyHfFolder, writeTinyModel } from "../../src/Model/TinyModel.ts"
import { f16round, fileFailure as failure, tempDir } from "./WeightFileFixtures.ts"

const dir = tempDir("model-loader-test")

const collect = (path: string) =>
  Effect.gen(function*() {
    const source = yield* loadModelSource(path)
    const tensors = Array.from(yield* Stream.runCollect(source.weights))
    return { source, tensors }
  })

describe("GGUF <-> HF names and the Q/K permutation", () => {
  it("maps names both ways", () => {
    const pairs = [
      ["token_embd.weight", "model.embed_tokens.weight"], ["output_norm.weight", "model.norm.weight"], ["output.weight", "lm_head.weight"],
      ["blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj.weight"], ["blk.0.attn_output.weight", "model.layers.0.self_attn.o_proj.weight"],
      ["blk.11.ffn_gate.weight", "model.layers.11.mlp.gate_proj.weight"], ["blk.2.ffn_down.weight", "model.layers.2.mlp.down_proj.weight"],
      ["blk.1.attn_norm.weight", "model.layers.1.input_layernorm.weight"], ["blk.1.ffn_norm.weight", "model.layers.1.post_attention_layernorm.weight"]
    ]
    for (const [g, h] of pairs) {
      assert.strictEqual(hfNameOf(g!), h)
      assert.strictEqual(ggufNameOf(h!), g)
    }
    assert.isUndefined(hfNameOf("rope_freqs.weight"))
    assert.isUndefined(ggufNameOf("model.layers.0.self_attn.rotary_emb.inv_freq"))
  })

  it("permutes rows as reshape(n_head, 2, d/n_head/2, ...).swapaxes(1, 2), and back", () => {
    // 2 heads of dim 4, 1 column: HF rows h*4 + [0 1 2 3] -> GGUF order [0 2 1 3] per head
    const rows = Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7])
    assert.deepStrictEqual(Array.from(permuteQkForGguf(rows, 8, 2)), [0, 2, 1, 3, 4, 6, 5, 7])
    // 1 head of dim 8, 2 columns: rows [0..7] -> [0 4 1 5 2 6 3 7]
    const m = Float32Array.from({ length: 16 }, (_, i) => i)
    assert.deepStrictEqual(Array.from(permuteQkForGguf(m, 8, 1)), [0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15])
    const w = Float32Array.from({ length: 96 * 5 }, (_, i) => Math.sin(i))
    assert.deepStrictEqual(Array.from(unpermuteQkFromGguf(permuteQkForGguf(w, 96, 3), 96, 3)), Array.from(w))
    // LoRA: permuting B's rows equals permuting the rows of the product B·A
    const r = 2, out = 8, inF = 3
    const B = Float32Array.from({ length: out * r }, (_, i) => i + 1), A = Float32Array.from({ length: r * inF }, (_, i) => i - 2)
    const product = (b: Float32Array) => Float32Array.from({ length: out * inF }, (_, k) => {
      const o = Math.floor(k / inF), i = k % inF
      let s = 0
      for (let j = 0; j < r; j++) s += b[o * r + j]! * A[j * inF + i]!
      return s
    })
    assert.deepStrictEqual(Array.from(product(permuteQkForGguf(B, out, 2))), Array.from(permuteQkForGguf(product(B), out, 2)))
    assert.throws(() => permuteQkForGguf(new Float32Array(6), 6, 2), /multiple of 2 x heads/)
  })

  it("recovers llama3 RoPE scaling from rope_freqs factors", () => {
    const llama31 = { type: "llama3" as const, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 }
    const factors = llama3RopeFactors(llama31, 500000, 128)
    assert.strictEqual(factors[0], 1)
    assert.strictEqual(factors[63], 8)
    const back = llama3ScalingFromFactors(factors, 500000, 128)!
    assert.strictEqual(back.factor, 8)
    assert.strictEqual(back.originalMaxPositionEmbeddings, 8192)
    assert.approximately(back.highFreqFactor, 4, 1e-6)
    assert.isUndefined(llama3ScalingFromFactors(new Float32Array(64).fill(1), 500000, 128))
  })
})

describe("loading a GGUF model", () => {
  for (const [preset, type] of [["llama3-tiny", "F32"], ["mistral-tiny", "F32"], ["tiny", "F16"]] as const) {
    it.effect(`${preset} ${type}: config from metadata, canonical weights back in HF layout`, () =>
      Effect.gen(function*() {
        const path = join(dir, `${preset}-${type}.gguf`)
        const config = presetConfig(preset)
        yield* writeTinyModel({ config, seed: 3, tensorType: type, path })
        const { source, tensors } = yield* collect(path)
        assert.strictEqual(source.format, "gguf")
        const { ropeScaling, ...rest } = source.config
        const { ropeScaling: expectedScaling, ...expectedRest } = config
        assert.deepStrictEqual({ ...rest, rmsNormEps: Math.fround(config.rmsNormEps) }, { ...expectedRest, rmsNormEps: Math.fround(config.rmsNormEps) })
        assert.approximately(rest.rmsNormEps, config.rmsNormEps, 1e-12)
        if (expectedScaling === undefined) assert.isUndefined(ropeScaling)
        else {
          assert.strictEqual(ropeScaling!.factor, expectedScaling.factor)
          const want = llama3RopeFactors(expectedScaling, config.ropeTheta, config.headDim)
          assert.deepStrictEqual(Array.from(source.ropeFreqFactors!), Array.from(want)) // exactly the file's factors
          const derived = llama3RopeFactors(ropeScaling!, config.ropeTheta, config.headDim)
          want.forEach((f, i) => assert.approximately(derived[i]!, f, 1e-5 * f))
          assert.isAbove(want.filter((f) => f !== 1 && f !== 8).length, 1) // the preset has smoothed frequencies
        }
        const expected = canonicalWeights(config, { seed: 3 })
        assert.deepStrictEqual(tensors.map((t) => t.name), expected.map((t) => t.name))
        assert.deepStrictEqual(source.tensorNames, expected.map((t) => t.name))
        for (let i = 0; i < expected.length; i++) {
          const want = expected[i]!.data()
          assert.deepStrictEqual(tensors[i]!.shape, expected[i]!.shape)
          const got = tensors[i]!.data
          const round = type === "F32" || expected[i]!.shape.length === 1 ? (x: number) => x : f16round
          for (let k = 0; k < want.length; k++) {
            if (got[k] !== Math.fround(round(want[k]!))) assert.fail(`${expected[i]!.name}[${k}]: ${got[k]} != ${want[k]}`)
          }
        }
      }))
  }

  it.effect("rejects other architectures, adapters, unsupported tensor types and missing tensors, naming them", () =>
    Effect.gen(function*() {
      const config = presetConfig("llama3-tiny")
      const meta = (arch: string) => [["general.architecture", gguf.string(arch)] as const, ...llamaMetadata(config)]
      const qwen = join(dir, "qwen.gguf")
      yield* writeGguf(qwen, { metadata: meta("qwen2"), tensors: [] })
      const e1 = yield* failure(loadModelSource(qwen))
      assert.strictEqual(e1.tensor, "general.architecture")
      assert.include(e1.message, `unsupported architecture "qwen2"`)

      const adapter = join(dir, "adapter.gguf")
      yield* writeGguf(adapter, { metadata: [["general.type", gguf.string("adapter")], ...meta("llama")], tensors: [] })
      assert.include((yield* failure(loadModelSource(adapter))).message, "LoRA adapter, not a model")

      const d = config.hiddenSize
      const iq = join(dir, "iq.gguf")
      yield* writeGguf(iq, {
        metadata: meta("llama"),
        tensors: [
          { name: "token_embd.weight", shape: [config.vocabSize, d], type: "F32", data: () => new Float32Array(config.vocabSize * d) },
          { name: "blk.0.attn_q.weight", shape: [d, d], rawType: GgmlType.Q8_1, raw: new Uint8Array((d * d / 32) * 36) }
        ]
      })
      const e3 = yield* failure(loadModelSource(iq))
      assert.strictEqual(e3.tensor, "blk.0.attn_q.weight")
      assert.include(e3.message, "unsupported tensor type Q8_1")

      const missing = join(dir, "missing.gguf")
      yield* writeGguf(missing, {
        metadata: meta("llama"),
        tensors: [{ name: "token_embd.weight", shape: [config.vocabSize, d], type: "F32", data: () => new Float32Array(config.vocabSize * d) }]
      })
      const e4 = yield* failure(loadModelSource(missing))
      assert.strictEqual(e4.tensor, "model.layers.0.input_layernorm.weight")
      assert.include(e4.message, "required tensor is missing")

      assert.include((yield* failure(loadModelSource(join(dir, "nope.gguf")))).message, "ENOENT")
    }))
})

describe("loading a Hugging Face folder", () => {
  it.effect("sharded Llama-3-like folder (index.json, BF16) and single-file Mistral-like folder (tied, sliding window)", () =>
    Effect.gen(function*() {
      const llama = presetConfig("llama3-tiny")
      const folder = join(dir, "hf-llama")
      fs.mkdirSync(folder)
      fs.writeFileSync(join(folder, "config.json"), JSON.stringify(toHfConfigJson(llama, "bfloat16")))
      const weights = canonicalWeights(llama, { seed: 5 })
      const half = Math.floor(weights.length / 2)
      const shards = [weights.slice(0, half), weights.slice(half)]
      const weightMap: Record<string, string> = {}
      for (const [i, shard] of shards.entries()) {
        const file = `model-0000${i + 1}-of-00002.safetensors`
        yield* writeSafetensors(join(folder, file), shard.map((t) => ({ ...t, dtype: "BF16" as const })), { metadata: { format: "pt" } })
        for (const t of shard) weightMap[t.name] = file
      }
      fs.writeFileSync(join(folder, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }))
      const { source, tensors } = yield* collect(folder)
      assert.strictEqual(source.format, "hf")
      assert.deepStrictEqual(source.config, llama)
      assert.deepStrictEqual(tensors.map((t) => t.name).sort(), weights.map((t) => t.name).sort())
      const q = tensors.find((t) => t.name === "model.layers.1.self_attn.q_proj.weight")!
      assert.deepStrictEqual(Array.from(q.data), Array.from(bf16ArrayToF32(f32ArrayToBf16(weights.find((t) => t.name === q.name)!.data()))))

      const mistral = presetConfig("mistral-tiny")
      const folder2 = join(dir, "hf-mistral")
      fs.mkdirSync(folder2)
      const { head_dim: _, ...withoutHeadDim } = toHfConfigJson(mistral)
      fs.writeFileSync(join(folder2, "config.json"), JSON.stringify(withoutHeadDim))
      const mistralWeights = canonicalWeights(mistral, { seed: 6 })
      yield* writeSafetensors(join(folder2, "model.safetensors"), [
        ...mistralWeights,
        { name: "model.layers.0.self_attn.rotary_emb.inv_freq", shape: [16], data: new Float32Array(16) }
      ])
      const loaded = yield* collect(folder2)
      assert.deepStrictEqual(loaded.source.config, mistral)
      assert.strictEqual(loaded.source.config.slidingWindow, 16)
      assert.isTrue(loaded.source.config.tieWordEmbeddings)
      assert.deepStrictEqual(loaded.tensors.map((t) => t.name), mistralWeights.map((t) => t.name))
      assert.deepStrictEqual(Array.from(loaded.tensors[3]!.data), Array.from(mistralWeights[3]!.data()))
    }))

  it.effect("reports a bad config field, a wrong shape and a missing tensor", () =>
    Effect.gen(function*() {
      const config = presetConfig("mistral-tiny")
      const folder = join(dir, "hf-bad")
      fs.mkdirSync(folder)
      fs.writeFileSync(join(folder, "config.json"), JSON.stringify({ ...toHfConfigJson(config), hidden_size: "wide" }))
      const e1 = yield* failure(loadModelSource(folder))
      assert.strictEqual(e1.file, join(folder, "config.json"))
      assert.strictEqual(e1.tensor, "hidden_size")

      fs.writeFileSync(join(folder, "config.json"), JSON.stringify({ ...toHfConfigJson(config), model_type: "qwen2" }))
      assert.strictEqual((yield* failure(loadModelSource(folder))).tensor, "model_type")

      fs.writeFileSync(join(folder, "config.json"), JSON.stringify(toHfConfigJson(config)))
      const weights = canonicalWeights(config, { seed: 1 })
      yield* writeSafetensors(join(folder, "model.safetensors"), weights.slice(0, -1))
      const e2 = yield* failure(loadModelSource(folder))
      assert.strictEqual(e2.tensor, "model.norm.weight")
      assert.include(e2.message, "required tensor is missing")

      yield* writeSafetensors(join(folder, "model.safetensors"), weights.map((t) =>
        t.name === "model.layers.0.mlp.up_proj.weight" ? { name: t.name, shape: [t.shape[1]!, t.shape[0]!], data: t.data } : t))
      const e3 = yield* failure(loadModelSource(folder))
      assert.strictEqual(e3.tensor, "model.layers.0.mlp.up_proj.weight")
      assert.include(e3.message, "does not match config.json's [352, 128]")
    }))
})

describe("llama3 RoPE factors with few smoothed frequencies", () => {
  it("recovers scalings whose factors have one or no smoothed entries", () => {
    for (const original of [64, 100, 256, 1000]) {
      const scaling = { type: "llama3" as const, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: original }
      const factors = llama3RopeFactors(scaling, 500000, 32)
      const back = llama3ScalingFromFactors(factors, 500000, 32)
      assert.isDefined(back, `original ${original}`)
      const derived = llama3RopeFactors(back!, 500000, 32)
      factors.forEach((f, i) => assert.approximately(derived[i]!, f, 1e-5 * f, `original ${original} factor ${i}`))
    }
  })
})

describe("the same project model as GGUF and as a Hugging Face folder", () => {
  it.effect("loads to the same config and identical weights", () =>
    Effect.gen(function*() {
      for (const preset of ["llama3-tiny", "mistral-tiny"] as const) {
        const config = presetConfig(preset)
        const gguf = join(dir, `same-${preset}.gguf`)
        const folder = join(dir, `same-${preset}`)
        yield* writeTinyModel({ config, seed: 11, path: gguf })
        yield* writeTinyHfFolder({ config, seed: 11, folder })
        const a = yield* collect(gguf)
        const b = yield* collect(folder)
        assert.deepStrictEqual(b.source.config, config)
        assert.deepStrictEqual({ ...a.source.config, rmsNormEps: 0, ropeScaling: undefined }, { ...b.source.config, rmsNormEps: 0, ropeScaling: undefined })
        assert.deepStrictEqual(a.tensors.map((t) => t.name), b.tensors.map((t) => t.name))
        for (let i = 0; i < a.tensors.length; i++) {
          assert.deepStrictEqual(a.tensors[i]!.shape, b.tensors[i]!.shape)
          assert.isTrue(Buffer.from(a.tensors[i]!.data.buffer, a.tensors[i]!.data.byteOffset, a.tensors[i]!.data.byteLength)
            .equals(Buffer.from(b.tensors[i]!.data.buffer, b.tensors[i]!.data.byteOffset, b.tensors[i]!.data.byteLength)), a.tensors[i]!.name)
        }
        assert.isTrue(fs.existsSync(join(folder, "tokenizer.json")))
      }
    }))
})
