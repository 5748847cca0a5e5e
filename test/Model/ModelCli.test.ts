import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import { join } from "node:path"
import { promisify } from "node:util"
import { buildFinanceVocabulary, hfTokenizerFiles } from "../../src/Model/FinanceVocabulary.ts"
import { describeModel, formatModelInfo } from "../../src/Model/ModelInfo.ts"
import { gguf } from "../../src/Model/Gguf.ts"
import { writeGguf } from "../../src/Model/GgufWriter.ts"
import { writeSafetensors } from "../../src/Model/Safetensors.ts"
import { canonicalWeights, parameterCount, presetConfig } from "../../src/Model/TinyModel.ts"
import { tempDir } from "./WeightFileFixtures.ts"

const run = promisify(execFile)
const dir = tempDir("model-cli-test")

// the built CLI (npm test builds first)
const cli = (...args: Array<string>) => run(process.execPath, ["dist/Main.js", "model", ...args])

describe("model init / model info (built CLI)", () => {
  it("writes a reproducible GGUF and describes it", async () => {
    const out = join(dir, "sub", "llama3.gguf")
    const { stdout } = await cli("init", "--preset", "llama3-tiny", "--out", out, "--seed", "5", "--type", "Q8_0")
    assert.strictEqual(stdout.trim(), out)
    const again = join(dir, "again.gguf")
    const folder = join(dir, "again-hf")
    await cli("init", "--preset", "llama3-tiny", "--out", again, "--seed", "5", "--type", "Q8_0", "--hf-folder", folder)
    assert.isTrue(fs.readFileSync(out).equals(fs.readFileSync(again)))
    const hf = JSON.parse((await cli("info", folder, "--json")).stdout)
    assert.strictEqual(hf.format, "hf")
    assert.strictEqual(hf.parameters, parameterCount(presetConfig("llama3-tiny")))
    assert.deepStrictEqual(hf.tensorTypes, { F32: 9 * 2 + 3 }) // layers, embedding, final norm, untied lm_head

    const json = JSON.parse((await cli("info", out, "--json")).stdout)
    const config = presetConfig("llama3-tiny")
    assert.strictEqual(json.format, "gguf")
    assert.strictEqual(json.architecture, "llama")
    assert.strictEqual(json.parameters, parameterCount(config))
    assert.deepStrictEqual(json.tensorTypes, { F32: 2 * config.numLayers + 2, Q8_0: 7 * config.numLayers + 2 })
    assert.strictEqual(json.config.numKvHeads, 2)
    assert.strictEqual(json.config.ropeScaling.factor, 8)
    assert.strictEqual(json.tokenizer.vocabSize, 4096)
    assert.strictEqual(json.tokenizer.eot, `"<|end|>" (${buildFinanceVocabulary(4096).eotId})`)
    assert.isTrue(json.tokenizer.chatTemplate)

    const text = (await cli("info", out)).stdout
    assert.include(text, "architecture:  llama")
    assert.include(text, "attention:     4 heads, 2 KV heads, head dim 32")
    assert.include(text, "llama3 scaling x8")
    assert.include(text, "tensors:       22 (F32: 6, Q8_0: 16)")
  })

  it("fails with a message and the table's exit code (1 missing, 2 invalid), without a stack trace", async () => {
    const missing = join(dir, "missing.gguf")
    const error = await cli("info", missing).then(() => undefined, (e: { code: number; stderr: string }) => e)
    assert.strictEqual(error?.code, 1)
    assert.include(error?.stderr, `model: ${missing}: ENOENT`)
    assert.notInclude(error?.stderr, "    at ")
    const bad = join(dir, "bad.gguf")
    fs.writeFileSync(bad, "not a model at all")
    const e2 = await cli("info", bad).then(() => undefined, (e: { code: number; stderr: string }) => e)
    assert.strictEqual(e2?.code, 2)
    assert.include(e2?.stderr, "not a GGUF file: bad magic")
    const e3 = await cli("init", "--preset", "huge", "--out", join(dir, "x.gguf")).then(() => undefined, (e: { code: number; stderr: string }) => e)
    assert.isAbove(e3?.code ?? 0, 0)
  })
})

describe("model info for a Hugging Face folder", () => {
  it.effect("reports config, safetensors dtypes and tokenizer facts", () =>
    Effect.gen(function*() {
      const config = presetConfig("mistral-tiny")
      const folder = join(dir, "hf")
      fs.mkdirSync(folder)
      fs.writeFileSync(join(folder, "config.json"), JSON.stringify({
        architectures: ["MistralForCausalLM"], model_type: "mistral", vocab_size: config.vocabSize, hidden_size: config.hiddenSize,
        intermediate_size: config.intermediateSize, num_hidden_layers: config.numLayers, num_attention_heads: config.numHeads,
        num_key_value_heads: config.numKvHeads, rms_norm_eps: config.rmsNormEps, rope_theta: config.ropeTheta,
        max_position_embeddings: config.maxPositionEmbeddings, sliding_window: 16, tie_word_embeddings: true
      }))
      yield* writeSafetensors(join(folder, "model.safetensors"), canonicalWeights(config, { seed: 1 }), { dtype: "F16" })
      const { tokenizerJson, tokenizerConfig } = hfTokenizerFiles(buildFinanceVocabulary(config.vocabSize))
      fs.writeFileSync(join(folder, "tokenizer.json"), JSON.stringify(tokenizerJson))
      fs.writeFileSync(join(folder, "tokenizer_config.json"), JSON.stringify(tokenizerConfig))
      const info = yield* describeModel(folder)
      assert.strictEqual(info.format, "hf")
      assert.strictEqual(info.architecture, "mistral")
      assert.strictEqual(info.name, "MistralForCausalLM")
      assert.strictEqual(info.config?.slidingWindow, 16)
      assert.deepStrictEqual(info.tensorTypes, { F16: 9 * config.numLayers + 2 })
      assert.strictEqual(info.parameters, parameterCount(config))
      assert.deepStrictEqual(info.tokenizer, {
        kind: "huggingface BPE", vocabSize: 4096, bos: "\"<s>\"", eos: "\"</s>\"", addBos: true,
        controlTokens: 7, userDefinedTokens: 39, chatTemplate: true
      })
      const text = formatModelInfo(info)
      assert.include(text, "sliding window 16")
      assert.include(text, "output tied to the embedding")
    }))
})

describe("model info for GGUFs we do not load as models", () => {
  it.effect("still reports architecture, tensors and why there is no Llama config", () =>
    Effect.gen(function*() {
      const adapter = join(dir, "adapter.gguf")
      yield* writeGguf(adapter, {
        metadata: [["general.architecture", gguf.string("llama")], ["general.type", gguf.string("adapter")], ["adapter.type", gguf.string("lora")], ["adapter.lora.alpha", gguf.f32(16)]],
        tensors: [
          { name: "blk.0.attn_q.weight.lora_a", shape: [8, 128], type: "F32", data: new Float32Array(1024) },
          { name: "blk.0.attn_q.weight.lora_b", shape: [128, 8], type: "F16", data: new Float32Array(1024) }
        ]
      })
      const info = yield* describeModel(adapter)
      assert.isUndefined(info.config)
      assert.strictEqual(info.configError, "this GGUF is a LoRA adapter, not a model")
      assert.strictEqual(info.parameters, 2048)
      assert.deepStrictEqual(info.tensorTypes, { F32: 1, F16: 1 })
      assert.isUndefined(info.tokenizer)
      const text = formatModelInfo(info)
      assert.include(text, "config:        not loadable as a Llama-family model: this GGUF is a LoRA adapter, not a model")
      assert.include(text, "tokenizer:     none")

      const qwen = join(dir, "qwen.gguf")
      yield* writeGguf(qwen, { metadata: [["general.architecture", gguf.string("qwen2")]], tensors: [] })
      const q = yield* describeModel(qwen)
      assert.strictEqual(q.architecture, "qwen2")
      assert.include(q.configError, "unsupported architecture \"qwen2\"")
    }))
})
