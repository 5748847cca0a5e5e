/**
 * `export adapter` / `export merged` on a tiny project-made base and PEFT adapters made here: the file layout of
 * docs/architecture.md §3, llama.cpp accepting every file, and the parity that proves the scales and the Q/K
 * permutation right: base + adapter GGUF in llama.cpp gives the same next-token distributions as the merged F32
 * GGUF (merged in HF layout, so it does not share the adapter's permutation code path), while an adapter written
 * without the permutation does not.
 */
import { NodeServices } from "@effect/platform-node"
import { Effect, Exit } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import type { LlamaModel, Token } from "node-llama-cpp"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { adapterGgufTensors, exportAdapter, exportMerged, loadPeftAdapter } from "../../src/Serving/Export.ts"
import { checkAdapter, describeBase, describeGgufAdapter, preflightGgufAdapter } from "../../src/Serving/Preflight.ts"
import { openGguf, metaNumber, metaString, readGgufHeader } from "../../src/Model/Gguf.ts"
import { permuteQkForGguf } from "../../src/Model/GgufNames.ts"
import { writeGguf } from "../../src/Model/GgufWriter.ts"
import { LlamaCpp } from "../../src/Model/LlamaCpp.ts"
import { writeSafetensors } from "../../src/Model/Safetensors.ts"
import { canonicalWeights } from "../../src/Model/TinyModel.ts"
import { tempDir, tinyConfig, writeBase, writePeft } from "./ServeFixtures.ts"

const run = <A, E>(effect: Effect.Effect<A, E, NodeServices.NodeServices>) =>
  Effect.runPromise(effect.pipe(Effect.provide(NodeServices.layer)))
const runExit = <A, E>(effect: Effect.Effect<A, E, NodeServices.NodeServices>) =>
  Effect.runPromiseExit(effect.pipe(Effect.provide(NodeServices.layer)))

const dir = tempDir("export")
const base = path.join(dir, "base.gguf")
const peft = path.join(dir, "peft")
const peftRs = path.join(dir, "peft-rslora")
const peftPattern = path.join(dir, "peft-pattern")

// one llama.cpp runtime for the file (CPU: exact and deterministic)
let llamaCpp: LlamaCpp["Service"]
let closeRuntime: () => Promise<void>
const models: Array<LlamaModel> = []

beforeAll(async () => {
  await writeBase(base)
  await writePeft(peft, tinyConfig, { r: 4, alpha: 8, targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"] })
  await writePeft(peftRs, tinyConfig, { r: 4, alpha: 8, rslora: true, seed: 99 })
  await writePeft(peftPattern, tinyConfig, { r: 4, alpha: 8, alphaPattern: { k_proj: 2, "model.layers.1.self_attn.q_proj": 32 }, seed: 5 })
  const { Scope } = await import("effect")
  const scope = Effect.runSync(Scope.make())
  llamaCpp = await Effect.runPromise(LlamaCpp.make("cpu").pipe(Scope.provide(scope)))
  closeRuntime = () => Effect.runPromise(Scope.close(scope, Exit.void))
})

afterAll(async () => {
  for (const m of models) await m.dispose()
  await closeRuntime()
  fs.rmSync(dir, { recursive: true, force: true })
})

const load = async (file: string) => {
  const model = await llamaCpp.llama.loadModel({ modelPath: file })
  models.push(model)
  return model
}

/** llama.cpp's next-token distribution after each prompt token, exact settings (F32 KV, no flash attention). */
const distributions = async (model: LlamaModel, tokens: ReadonlyArray<Token>, lora?: string) => {
  const context = await model.createContext({
    contextSize: 128,
    batchSize: 128,
    sequences: 1,
    flashAttention: false,
    experimentalKvCacheKeyType: "F32",
    experimentalKvCacheValueType: "F32",
    threads: 1,
    ...(lora === undefined ? {} : { lora: { adapters: [{ filePath: lora }] } })
  })
  try {
    const sequence = context.getSequence()
    const results = await sequence.controlledEvaluate(tokens.map((t) => [t, { generateNext: { probabilities: true } }]))
    return results.map((r) => {
      const p = new Float64Array(tinyConfig.vocabSize)
      for (const [token, value] of r!.next!.probabilities!) p[token] = value
      return p
    })
  } finally {
    await context.dispose()
  }
}

const maxDiff = (a: ReadonlyArray<Float64Array>, b: ReadonlyArray<Float64Array>) => {
  let d = 0
  a.forEach((row, i) => row.forEach((v, j) => (d = Math.max(d, Math.abs(v - b[i]![j]!)))))
  return d
}
/** largest |log p − log q| over tokens the distributions give more than 1e-6: relative, so it means something
 * for the flat distributions of a random model too */
const maxLogDiff = (a: ReadonlyArray<Float64Array>, b: ReadonlyArray<Float64Array>) => {
  let d = 0
  a.forEach((row, i) => row.forEach((v, j) => {
    const w = b[i]![j]!
    if (v > 1e-6 || w > 1e-6) d = Math.max(d, Math.abs(Math.log(Math.max(v, 1e-30)) - Math.log(Math.max(w, 1e-30))))
  }))
  return d
}

const prompt = "Context: Current Symbol: AAPL\nQuestion: What is the price of <SYMBOL> today?\nAnswer: "

describe("export adapter: the llama.cpp LoRA GGUF layout", () => {
  it("writes adapter metadata, lora_a/lora_b pairs in ggml order, and no tokenizer", async () => {
    const out = path.join(dir, "adapter.gguf")
    const report = await run(exportAdapter({ adapter: peft, base, out }))
    expect(report.modules).toBe(2 * 5)
    expect(report.tensors).toBe(2 * 5 * 2)
    expect(report.alpha).toBe(8)
    const header = await run(readGgufHeader(out))
    expect(metaString(header, "general.type")).toBe("adapter")
    expect(metaString(header, "general.architecture")).toBe("llama")
    expect(metaString(header, "adapter.type")).toBe("lora")
    expect(header.metadata.get("adapter.lora.alpha")).toEqual({ type: "f32", value: 8 })
    expect([...header.metadata.keys()].some((k) => k.startsWith("tokenizer."))).toBe(false)
    const q = header.tensors.find((t) => t.name === "blk.0.attn_q.weight.lora_a")!
    const qb = header.tensors.find((t) => t.name === "blk.0.attn_q.weight.lora_b")!
    // PEFT A [r, in] -> ne [in, r]; B [out, r] -> ne [r, out]
    expect(q.dims).toEqual([128, 4])
    expect(qb.dims).toEqual([4, 128])
    expect(header.tensors.find((t) => t.name === "blk.1.attn_k.weight.lora_b")!.dims).toEqual([4, 64])
    expect(header.tensors.find((t) => t.name === "blk.1.ffn_gate.weight.lora_a")!.dims).toEqual([128, 4])
    expect(header.tensors.every((t) => /^blk\.[01]\.(attn_[qkvo]|attn_output|ffn_gate)\.weight\.lora_[ab]$/.test(t.name))).toBe(true)
  })

  it("permutes the rows of q/k lora_b like llama.cpp's converter and leaves the others as PEFT wrote them", async () => {
    const out = path.join(dir, "adapter-rows.gguf")
    await run(exportAdapter({ adapter: peft, base, out }))
    const adapter = await run(loadPeftAdapter(peft))
    const pair = (module: string) => adapter.pairs.find((p) => p.module === module)!
    const written = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const file = yield* openGguf(out)
      return {
        qb: (yield* file.readTensor("blk.0.attn_q.weight.lora_b")).data,
        kb: (yield* file.readTensor("blk.0.attn_k.weight.lora_b")).data,
        vb: (yield* file.readTensor("blk.0.attn_v.weight.lora_b")).data,
        qa: (yield* file.readTensor("blk.0.attn_q.weight.lora_a")).data
      }
    })))
    const q = pair("model.layers.0.self_attn.q_proj")
    const k = pair("model.layers.0.self_attn.k_proj")
    expect(written.qb).toEqual(permuteQkForGguf(q.b.data, 128, tinyConfig.numHeads))
    expect(written.kb).toEqual(permuteQkForGguf(k.b.data, 64, tinyConfig.numKvHeads))
    expect(written.qb).not.toEqual(q.b.data)
    expect(written.vb).toEqual(pair("model.layers.0.self_attn.v_proj").b.data)
    expect(written.qa).toEqual(q.a.data)
    // one GGUF row of Q is HF row 16 of head 0 (rotate-half pairs become interleaved): row 1 <- row 16
    expect(Array.from(written.qb.subarray(4, 8))).toEqual(Array.from(q.b.data.subarray(16 * 4, 17 * 4)))
  })

  it("takes a Hugging Face folder as the base too, and writes the same adapter as for the GGUF base", async () => {
    const hf = path.join(dir, "hf-base")
    fs.mkdirSync(hf, { recursive: true })
    fs.writeFileSync(path.join(hf, "config.json"), JSON.stringify({
      architectures: ["LlamaForCausalLM"], model_type: "llama", hidden_size: 128, intermediate_size: 256, num_hidden_layers: 2,
      num_attention_heads: 4, num_key_value_heads: 2, head_dim: 32, vocab_size: 4096, rms_norm_eps: 1e-5, rope_theta: 10000,
      max_position_embeddings: 2048, tie_word_embeddings: false
    }))
    await Effect.runPromise(writeSafetensors(path.join(hf, "model.safetensors"),
      canonicalWeights(tinyConfig, { seed: 7 }).map((t) => ({ name: t.name, shape: t.shape, data: t.data }))))
    const fromHf = path.join(dir, "adapter-from-hf.gguf")
    const fromGguf = path.join(dir, "adapter-from-gguf.gguf")
    await run(exportAdapter({ adapter: peft, base: hf, out: fromHf, name: "same" }))
    await run(exportAdapter({ adapter: peft, base, out: fromGguf, name: "same" }))
    expect(fs.readFileSync(fromHf).equals(fs.readFileSync(fromGguf))).toBe(true)
  })

  it("writes rsLoRA as alpha·√r and per-module alphas as alpha 0 with the scale baked into B", async () => {
    const rs = await run(loadPeftAdapter(peftRs))
    const pattern = await run(loadPeftAdapter(peftPattern))
    const base_ = await run(describeBase(base))
    expect(adapterGgufTensors(rs, base_).alpha).toBeCloseTo(8 * 2, 6)
    const { alpha, tensors } = adapterGgufTensors(pattern, base_)
    expect(alpha).toBe(0)
    const vB = tensors.find((t) => t.name === "blk.0.attn_v.weight.lora_b")!
    const kB = tensors.find((t) => t.name === "blk.0.attn_k.weight.lora_b")!
    const data = (t: typeof vB) => "data" in t ? (typeof t.data === "function" ? t.data() : t.data) : new Float32Array()
    const v = pattern.pairs.find((p) => p.module === "model.layers.0.self_attn.v_proj")!
    const k = pattern.pairs.find((p) => p.module === "model.layers.0.self_attn.k_proj")!
    expect(data(vB)).toEqual(v.b.data.map((x) => x * 8 / 4))
    expect(data(kB)).toEqual(permuteQkForGguf(k.b.data.map((x) => x * 2 / 4), 64, tinyConfig.numKvHeads))
    expect(pattern.pairs.find((p) => p.module === "model.layers.1.self_attn.q_proj")!.scale).toBe(8)
  })
})

describe("llama.cpp parity: base + adapter GGUF equals the merged model", () => {
  const parity = async (adapterDir: string, name: string) => {
    const adapterFile = path.join(dir, `${name}.gguf`)
    const mergedFile = path.join(dir, `${name}-merged.gguf`)
    await run(exportAdapter({ adapter: adapterDir, base, out: adapterFile }))
    await run(exportMerged({ base, adapter: adapterDir, out: mergedFile, type: "f32" }))
    const baseModel = await load(base)
    const merged = await load(mergedFile)
    const tokens = baseModel.tokenize(prompt, false)
    expect(tokens.length).toBeGreaterThan(10)
    const withAdapter = await distributions(baseModel, tokens, adapterFile)
    const mergedDists = await distributions(merged, tokens)
    const plain = await distributions(baseModel, tokens)
    return { withAdapter, mergedDists, plain, baseModel, tokens }
  }

  it("plain LoRA on attention and MLP modules", async () => {
    const { withAdapter, mergedDists, plain } = await parity(peft, "plain")
    expect(maxDiff(withAdapter, mergedDists)).toBeLessThan(1e-4)
    expect(maxLogDiff(withAdapter, mergedDists)).toBeLessThan(1e-3)
    // the adapter matters: without it the distributions are far apart
    expect(maxDiff(withAdapter, plain)).toBeGreaterThan(1e-2)
  })

  it("rsLoRA and per-module alpha patterns", async () => {
    const rs = await parity(peftRs, "rslora")
    expect(maxDiff(rs.withAdapter, rs.mergedDists)).toBeLessThan(1e-4)
    expect(maxLogDiff(rs.withAdapter, rs.mergedDists)).toBeLessThan(1e-3)
    expect(maxDiff(rs.withAdapter, rs.plain)).toBeGreaterThan(1e-2)
    const pattern = await parity(peftPattern, "pattern")
    expect(maxDiff(pattern.withAdapter, pattern.mergedDists)).toBeLessThan(1e-4)
    expect(maxLogDiff(pattern.withAdapter, pattern.mergedDists)).toBeLessThan(1e-3)
  })

  it("catches a missing Q/K permutation: the same adapter written without it differs from the merged model", async () => {
    const { mergedDists, baseModel, tokens } = await parity(peft, "control")
    const adapter = await run(loadPeftAdapter(peft))
    const wrong = path.join(dir, "unpermuted.gguf")
    // every tensor as PEFT has it, no permutation
    await Effect.runPromise(writeGguf(wrong, {
      metadata: adapter.config.toLlamaCppMetadata({ architecture: "llama", name: "unpermuted", modules: adapter.pairs.map((p) => p.module) }),
      tensors: adapter.pairs.flatMap((p) => {
        const w = p.module.replace(/^model\.layers\.(\d+)\.(?:self_attn|mlp)\./, "blk.$1.")
          .replace("q_proj", "attn_q").replace("k_proj", "attn_k").replace("v_proj", "attn_v").replace("o_proj", "attn_output")
          .replace("gate_proj", "ffn_gate") + ".weight"
        return [
          { name: `${w}.lora_a`, shape: p.a.shape, type: "F32" as const, data: p.a.data },
          { name: `${w}.lora_b`, shape: p.b.shape, type: "F32" as const, data: p.b.data }
        ]
      })
    }))
    const withWrong = await distributions(baseModel, tokens, wrong)
    expect(maxDiff(withWrong, mergedDists)).toBeGreaterThan(1e-2)
  })

  it("merged f16 and q8_0 files load, keep the tokenizer and chat template, and stay close to f32", async () => {
    const f16 = path.join(dir, "merged-f16.gguf")
    const q8 = path.join(dir, "merged-q8.gguf")
    const f32 = path.join(dir, "plain-merged.gguf")
    if (!fs.existsSync(f32)) await run(exportMerged({ base, adapter: peft, out: f32, type: "f32" }))
    await run(exportMerged({ base, adapter: peft, out: f16, type: "f16" }))
    await run(exportMerged({ base, adapter: peft, out: q8, type: "q8_0" }))
    const [baseHeader, q8Header] = await Promise.all([run(readGgufHeader(base)), run(readGgufHeader(q8))])
    expect(metaString(q8Header, "tokenizer.chat_template")).toBe(metaString(baseHeader, "tokenizer.chat_template"))
    expect(q8Header.metadata.get("tokenizer.ggml.tokens")).toEqual(baseHeader.metadata.get("tokenizer.ggml.tokens"))
    expect(metaNumber(q8Header, "general.file_type")).toBe(7)
    expect(q8Header.tensors.find((t) => t.name === "blk.0.attn_q.weight")!.typeName).toBe("Q8_0")
    expect(q8Header.tensors.find((t) => t.name === "blk.0.attn_norm.weight")!.typeName).toBe("F32")
    const reference = await load(f32)
    const tokens = reference.tokenize(prompt, false)
    const exact = await distributions(reference, tokens)
    for (const file of [f16, q8]) {
      const model = await load(file)
      expect(model.tokenize(prompt, false)).toEqual(tokens)
      expect(maxDiff(await distributions(model, tokens), exact)).toBeLessThan(2e-2)
    }
  })
})

describe("preflight", () => {
  const otherConfig = { ...tinyConfig, hiddenSize: 96, numHeads: 3, numKvHeads: 1 }

  it("rejects an adapter trained on a different base, naming the mismatches and the likely cause", async () => {
    const foreign = path.join(dir, "foreign")
    await writePeft(foreign, otherConfig, { r: 4 })
    const exit = await runExit(exportAdapter({ adapter: foreign, base, out: path.join(dir, "never.gguf") }))
    expect(Exit.isFailure(exit)).toBe(true)
    const error = Exit.isFailure(exit) ? exit.cause.reasons[0] : undefined
    const failure = error && "error" in error ? (error.error as { _tag: string; message: string }) : undefined
    expect(failure?._tag).toBe("PreflightError")
    expect(failure?.message).toContain("model.layers.0.self_attn.q_proj: the adapter maps [96 -> 96] but the base weight is [128, 128]")
    expect(failure?.message).toContain("likely cause: the adapter was trained on a different base model (the adapter names \"tiny-test-base\"")
    expect(fs.existsSync(path.join(dir, "never.gguf"))).toBe(false)
  })

  it("rejects layers the base does not have, and a config rank that disagrees with the tensors", async () => {
    const deep = path.join(dir, "deep")
    await writePeft(deep, tinyConfig, { r: 4, layers: 3 })
    const desc = await run(describeBase(base))
    const adapter = await run(loadPeftAdapter(deep))
    const exit = await Effect.runPromiseExit(checkAdapter({
      source: deep, format: "peft", modules: adapter.pairs.map((p) => ({ module: p.module, aShape: p.a.shape, bShape: p.b.shape }))
    }, desc))
    expect(String(Exit.isFailure(exit) && Exit.isFailure(exit) ? exit.cause : "")).toContain("model.layers.2.self_attn.q_proj: the base has only 2 layers")
    const rankExit = await Effect.runPromiseExit(checkAdapter({
      source: "x", format: "peft",
      modules: [{ module: "model.layers.0.self_attn.v_proj", aShape: [4, 128], bShape: [64, 4], declaredRank: 8 }]
    }, desc))
    expect(String(Exit.isFailure(rankExit) ? rankExit.cause : "")).toContain("adapter_config.json does not belong to these adapter weights")
  })

  it("checks a GGUF adapter against a base before serving, from headers only", async () => {
    const out = path.join(dir, "checked.gguf")
    await run(exportAdapter({ adapter: peft, base, out }))
    const described = await run(describeGgufAdapter(out))
    expect(described.modules.map((m) => m.module)).toContain("model.layers.1.mlp.gate_proj")
    await run(preflightGgufAdapter(out, base))
    const otherBase = path.join(dir, "other-base.gguf")
    await writeBase(otherBase, otherConfig)
    const exit = await runExit(preflightGgufAdapter(out, otherBase))
    expect(String(Exit.isFailure(exit) ? exit.cause : "")).toContain("different base model")
  })
})
