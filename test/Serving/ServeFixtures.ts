/**
 * Test data for the Serving tests, made inside the tests: a tiny Llama GGUF (GQA, so Q and K permute with
 * different head counts) and PEFT adapter folders with random, non-zero A and B.
 */
import { Effect } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { buildFinanceVocabulary, hfTokenizerFiles } from "../../src/Model/FinanceVocabulary.ts"
import type { LlamaConfig } from "../../src/Model/ModelContracts.ts"
import { toHfConfigJson } from "../../src/Model/ModelLoader.ts"
import { weightNames } from "../../src/Model/ModelContracts.ts"
import { writeSafetensors } from "../../src/Model/Safetensors.ts"
import { canonicalWeights, writeTinyModel } from "../../src/Model/TinyModel.ts"
import { XorShift32 } from "../../src/Shared/Prng.ts"

/** 2 layers, d 128, 4 query heads over 2 KV heads; every row size a multiple of 32 (Q8_0 blocks). */
export const tinyConfig: LlamaConfig = {
  vocabSize: 4096, hiddenSize: 128, intermediateSize: 256, numLayers: 2, numHeads: 4, numKvHeads: 2,
  headDim: 32, rmsNormEps: 1e-5, ropeTheta: 10000, maxPositionEmbeddings: 2048, tieWordEmbeddings: false
}

export const tempDir = (prefix: string) => fs.mkdtempSync(path.join(os.tmpdir(), `ff-${prefix}-`))

/** initStd 0.15 (not HF's 0.02) so the random model's distributions are peaked enough for differences to show */
export const writeBase = (file: string, config: LlamaConfig = tinyConfig, seed = 7) =>
  Effect.runPromise(writeTinyModel({ config, seed, path: file, initStd: 0.15 }))

export interface HfBaseOptions {
  /** tokenizer.json and tokenizer_config.json (default: the project's finance vocabulary, SentencePiece-style) */
  readonly tokenizer?: { readonly tokenizerJson: unknown; readonly tokenizerConfig: unknown }
  /** safetensors files, with a shard index when more than one */
  readonly shards?: number
  readonly seed?: number
  readonly initStd?: number
}

/** A Hugging Face model folder: config.json, tokenizer files and the seeded weights. */
export const writeHfBase = async (folder: string, config: LlamaConfig, options: HfBaseOptions = {}) => {
  const writeJson = (file: string, value: unknown) => fs.writeFileSync(path.join(folder, file), JSON.stringify(value, null, 2))
  const tokenizer = options.tokenizer ?? hfTokenizerFiles(buildFinanceVocabulary(config.vocabSize))
  const shards = options.shards ?? 1
  fs.mkdirSync(folder, { recursive: true })
  writeJson("config.json", toHfConfigJson(config))
  writeJson("tokenizer.json", tokenizer.tokenizerJson)
  writeJson("tokenizer_config.json", tokenizer.tokenizerConfig)
  const weights = canonicalWeights(config, { seed: options.seed ?? 7, ...(options.initStd === undefined ? {} : { initStd: options.initStd }) })
  const per = Math.ceil(weights.length / shards)
  const weightMap: Record<string, string> = {}
  for (let s = 0; s < shards; s++) {
    const file = shards === 1 ? "model.safetensors" : `model-0000${s + 1}-of-0000${shards}.safetensors`
    const part = weights.slice(s * per, (s + 1) * per)
    for (const t of part) weightMap[t.name] = file
    await Effect.runPromise(writeSafetensors(path.join(folder, file), part, { metadata: { format: "pt" } }))
  }
  if (shards > 1) writeJson("model.safetensors.index.json", { metadata: {}, weight_map: weightMap })
}

/** `serve …` as a child process of the project's Node, resolved once it says where it listens. */
export const startServe = (main: string, args: ReadonlyArray<string>): Promise<{ readonly child: ChildProcess; readonly url: string; readonly stderr: () => string }> => {
  const child = spawn(process.execPath, [main, "serve", ...args], { stdio: ["ignore", "pipe", "pipe"] })
  let stderr = ""
  return new Promise((resolve, reject) => {
    child.stderr!.on("data", (d: Buffer) => {
      stderr += d.toString()
      const m = /serving .* on (http:\/\/[\d.]+:\d+)/.exec(stderr)
      if (m) resolve({ child, url: m[1]!, stderr: () => stderr })
    })
    child.on("exit", (code) => reject(new Error(`serve exited ${code}: ${stderr}`)))
  })
}

/** A deterministic normal generator (Box-Muller over Shared/Prng.ts's xorshift), so adapters are the same every run. */
const normals = (n: number, seed: number, std: number) => {
  const rng = new XorShift32(seed)
  const uniform = () => rng.next()
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) out[i] = std * Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform())
  return out
}

const outIn = (config: LlamaConfig, module: string): [number, number] => {
  const d = config.hiddenSize
  const q = config.numHeads * config.headDim
  const kv = config.numKvHeads * config.headDim
  const shapes: Record<string, [number, number]> = {
    q_proj: [q, d], k_proj: [kv, d], v_proj: [kv, d], o_proj: [d, q],
    gate_proj: [config.intermediateSize, d], up_proj: [config.intermediateSize, d], down_proj: [d, config.intermediateSize]
  }
  return shapes[module]!
}

export interface PeftOptions {
  readonly r?: number
  readonly alpha?: number
  readonly rslora?: boolean
  readonly targets?: ReadonlyArray<string>
  readonly alphaPattern?: Readonly<Record<string, number>>
  readonly rankPattern?: Readonly<Record<string, number>>
  readonly seed?: number
  readonly std?: number
  readonly layers?: number
}

/** Writes a PEFT adapter folder as Python PEFT would (config with PEFT's usual keys, safetensors weights). */
export const writePeft = (dir: string, config: LlamaConfig = tinyConfig, options: PeftOptions = {}) => {
  const r = options.r ?? 4
  const targets = options.targets ?? ["q_proj", "k_proj", "v_proj", "o_proj"]
  fs.mkdirSync(dir, { recursive: true })
  fs.writeFileSync(path.join(dir, "adapter_config.json"), JSON.stringify({
    alpha_pattern: options.alphaPattern ?? {},
    base_model_name_or_path: "tiny-test-base",
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    lora_alpha: options.alpha ?? 8,
    lora_dropout: 0.05,
    peft_type: "LORA",
    r,
    rank_pattern: options.rankPattern ?? {},
    target_modules: targets,
    task_type: "CAUSAL_LM",
    use_rslora: options.rslora ?? false
  }, null, 2))
  const tensors = []
  let seed = options.seed ?? 11
  for (let layer = 0; layer < (options.layers ?? config.numLayers); layer++) {
    for (const module of targets) {
      const [out, inn] = outIn(config, module)
      const name = weightNames.linear(layer, module as never)
      const rank = options.rankPattern?.[module] ?? r
      tensors.push({ name: `base_model.model.${name}.lora_A.weight`, shape: [rank, inn], data: normals(rank * inn, seed++, options.std ?? 0.08) })
      tensors.push({ name: `base_model.model.${name}.lora_B.weight`, shape: [out, rank], data: normals(out * rank, seed++, options.std ?? 0.08) })
    }
  }
  return Effect.runPromise(writeSafetensors(path.join(dir, "adapter_model.safetensors"), tensors, { metadata: { format: "pt" } }))
}
