/**
 * GGUF export: a PEFT LoRA adapter (ours or one made by Python PEFT) as a llama.cpp LoRA adapter, or merged into
 * its base as a standalone model.
 *
 * Adapter GGUF (docs/architecture.md §3, read off llama.cpp's `llama-adapter.cpp` and `convert_lora_to_gguf.py`):
 * - metadata `general.architecture` (the base's), `general.type = "adapter"`, `adapter.type = "lora"`,
 *   `adapter.lora.alpha` (f32); nothing else a loader could mistake for model data, except our
 *   `finetune.prompt_layout` (+ `finetune.system_prompt`) when the PEFT folder records the prompt it was trained on
 *   (Training/AdapterPrompt.ts; llama.cpp ignores them, `serve` renders `/infer`'s prompt in that layout);
 * - per adapted weight `W`: `W.lora_a` from PEFT's A [r, in] (ggml ne [in, r]) and `W.lora_b` from B [out, r]
 *   (ne [r, out]), stored as they are;
 * - llama.cpp computes `scale = user_scale · alpha / r`; PEFT's rsLoRA scale `alpha / √r` is therefore written as
 *   `alpha · √r`; per-module alpha or rank (`alpha_pattern` / `rank_pattern`) cannot be one alpha, so each module's
 *   scale is baked into its B and alpha is written as 0 (llama.cpp then uses the user scale alone);
 * - the trap: a GGUF base has the rows of its Q and K weights permuted for llama.cpp's RoPE layout, while PEFT's B
 *   rows are in Hugging Face order, so `lora_b` of q_proj / k_proj gets the same row permutation (K with the KV
 *   head count).
 *
 * Merged GGUF: every base tensor is copied; each adapted weight is brought to HF layout, `W + scale · B · A` is
 * added in float32, and the result is permuted back and written in the requested type. Metadata (tokenizer, chat
 * template, hyper-parameters) is the base's, so the merged file is a drop-in for the base. From a Hugging Face
 * folder base, the hyper-parameters come from config.json and the tokenizer is converted from tokenizer.json
 * (HfVocabulary.ts), as llama.cpp's convert_hf_to_gguf.py does.
 */
import { Effect, FileSystem, Option, Path, Schema } from "effect"
import { gguf, type GgufValue } from "../Model/Gguf.ts"
import { ggufKeys, llamaFileTypes } from "../Model/GgufKeys.ts"
import { rewriteGguf } from "../Model/GgufRewrite.ts"
import { ggufNameOf, hfNameOf, llama3RopeFactors, permuteQkForGguf, qkHeadsFor } from "../Model/GgufNames.ts"
import { type GgufTensorToWrite, type GgufWriteType, writeGguf } from "../Model/GgufWriter.ts"
import { fileError, ModelFileError, toFileError } from "../Model/ModelFileError.ts"
import { loadHfFolder } from "../Model/ModelLoader.ts"
import type { AdapterConfig } from "../Model/AdapterConfig.ts"
import { ADAPTER_CONFIG, FINAL_ADAPTER_DIR, readPeftAdapter } from "../Model/PeftAdapter.ts"
import { openSafetensors, type SafetensorsFile } from "../Model/Safetensors.ts"
import { llamaMetadata } from "../Model/TinyModel.ts"
import { readHfVocabulary } from "../Model/HfVocabulary.ts"
import { type AdapterDescription, type BaseDescription, checkAdapter, describeBase } from "./Preflight.ts"
import { readAdapterPrompt, type TrainedPrompt, trainedPromptMetadata } from "../Training/AdapterPrompt.ts"

/** One module of an adapter, ready to write: A [r, in], B [out, r] in HF row order, and PEFT's scale. */
export interface AdapterPair {
  readonly module: string
  readonly rank: number
  readonly a: { readonly shape: ReadonlyArray<number>; readonly data: Float32Array }
  readonly b: { readonly shape: ReadonlyArray<number>; readonly data: Float32Array }
  /** the factor PEFT applies to B·A (AdapterConfig.scaleOf) */
  readonly scale: number
}

export interface LoadedAdapter {
  readonly source: string
  readonly config: AdapterConfig
  readonly pairs: ReadonlyArray<AdapterPair>
  /** the prompt it was trained on (`adapter_prompt.json`), when the folder records it */
  readonly prompt: TrainedPrompt | undefined
}

/** Reads a PEFT adapter folder with each module's scale resolved by its AdapterConfig. */
export const loadPeftAdapter = Effect.fn("Export.loadPeftAdapter")(function*(dir: string) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  if (!(yield* fs.exists(path.join(dir, ADAPTER_CONFIG)).pipe(Effect.orElseSucceed(() => false)))) {
    // the path given is not the adapter: an input error (exit 1), like a missing file
    return yield* new ModelFileError({
      file: dir,
      detail: `not a PEFT adapter folder: ${ADAPTER_CONFIG} is missing (pass the folder that holds it, e.g. RUN/${FINAL_ADAPTER_DIR})`,
      kind: "input"
    })
  }
  const peft = yield* readPeftAdapter(dir)
  const prompt = Option.getOrUndefined(yield* readAdapterPrompt(dir))
  const pairs: Array<AdapterPair> = [...peft.modules].map(([module, { a, b }]) => ({
    module,
    rank: a.shape[0]!,
    a,
    b,
    scale: peft.config.scaleOf(module)
  }))
  return { source: dir, config: peft.config, pairs, prompt } satisfies LoadedAdapter
})

const describePeft = (adapter: LoadedAdapter): AdapterDescription => ({
  source: adapter.source,
  format: "peft",
  baseModelName: adapter.config.base_model_name_or_path ?? null,
  modules: adapter.pairs.map((p) => ({
    module: p.module,
    aShape: p.a.shape,
    bShape: p.b.shape,
    declaredRank: adapter.config.rankOf(p.module)
  }))
})

/** The trained prompt's GGUF keys, so the served adapter is asked in its own layout (none when unrecorded). */
const promptMetadataOf = (adapter: LoadedAdapter) => adapter.prompt === undefined ? [] : trainedPromptMetadata(adapter.prompt)

const scaled = (data: Float32Array, factor: number) => factor === 1 ? data : data.map((v) => v * factor)

export interface ExportAdapterOptions {
  /** PEFT adapter folder (adapter_config.json + adapter_model.safetensors) */
  readonly adapter: string
  /** the base it was trained on: GGUF file or HF folder */
  readonly base: string
  readonly out: string
  /** tensor type of A and B (default F32) */
  readonly type?: "F32" | "F16"
  readonly name?: string
}

export interface ExportReport {
  readonly out: string
  readonly tensors: number
  readonly modules: number
  readonly alpha: number
  readonly bytes: number
}

/** The adapter's tensors for llama.cpp: names, shapes, scales and the Q/K permutation applied. */
export const adapterGgufTensors = (
  adapter: LoadedAdapter,
  base: Pick<BaseDescription, "numHeads" | "numKvHeads">,
  type: GgufWriteType = "F32"
): { readonly alpha: number; readonly tensors: ReadonlyArray<GgufTensorToWrite> } => {
  const { alpha, bFactor } = adapter.config.llamaCppScaling(adapter.pairs.map((p) => p.module))
  const tensors = adapter.pairs.flatMap((p): Array<GgufTensorToWrite> => {
    const weight = ggufNameOf(`${p.module}.weight`)!
    const heads = qkHeadsFor(weight, base)
    const out = p.b.shape[0]!
    return [
      { name: `${weight}.lora_a`, shape: p.a.shape, type, data: p.a.data },
      {
        name: `${weight}.lora_b`,
        shape: p.b.shape,
        type,
        data: () => {
          const b = scaled(p.b.data, bFactor(p.module))
          return heads === undefined ? b : permuteQkForGguf(b, out, heads)
        }
      }
    ]
  })
  return { alpha, tensors }
}

/** `export adapter`: PEFT folder -> llama.cpp LoRA GGUF, after preflight against the base. */
export const exportAdapter = Effect.fn("Export.adapter")(function*(options: ExportAdapterOptions) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const [adapter, base] = yield* Effect.all([loadPeftAdapter(options.adapter), describeBase(options.base)])
  yield* checkAdapter(describePeft(adapter), base)
  const { alpha, tensors } = adapterGgufTensors(adapter, base, options.type ?? "F32")
  const name = options.name ?? path.basename(path.resolve(options.adapter))
  const metadata = [
    ...adapter.config.toLlamaCppMetadata({ architecture: base.architecture, name, modules: adapter.pairs.map((p) => p.module) }),
    ...promptMetadataOf(adapter)
  ]
  yield* writeGguf(options.out, { metadata, tensors })
  const stat = yield* fs.stat(options.out).pipe(Effect.mapError(toFileError(options.out)))
  return { out: options.out, tensors: tensors.length, modules: adapter.pairs.length, alpha, bytes: Number(stat.size) } satisfies ExportReport
})

export const MergedType = Schema.Literals(["f32", "f16", "q8_0"])
export type MergedType = typeof MergedType.Type

export interface ExportMergedOptions {
  /** the base model: a GGUF file, or a Hugging Face folder (config.json, safetensors, tokenizer.json) */
  readonly base: string
  /** PEFT adapter folder */
  readonly adapter: string
  readonly out: string
  readonly type: MergedType
  /** called after each tensor (progress) */
  readonly onTensor?: (index: number, total: number, name: string) => void
}

const writeTypes: Record<MergedType, GgufWriteType> = { f32: "F32", f16: "F16", q8_0: "Q8_0" }

/** W[out, in] += scale · B[out, r] · A[r, in], in place. */
export const addLowRank = (w: Float32Array, b: Float32Array, a: Float32Array, out: number, rank: number, cols: number, scale: number) => {
  const row = new Float32Array(cols)
  for (let o = 0; o < out; o++) {
    row.fill(0)
    for (let k = 0; k < rank; k++) {
      const coef = b[o * rank + k]! * scale
      if (coef === 0) continue
      const aRow = k * cols
      for (let i = 0; i < cols; i++) row[i]! += coef * a[aRow + i]!
    }
    const wRow = o * cols
    for (let i = 0; i < cols; i++) w[wRow + i]! += row[i]!
  }
}

/** The type a merged tensor is written in: vectors stay F32 (as llama.cpp's converter keeps norms), and Q8_0 falls
 * back to F16 for rows that are not whole 32-value blocks. */
const mergedTensorType = (shape: ReadonlyArray<number>, target: GgufWriteType): GgufWriteType =>
  shape.length < 2 ? "F32" : target === "Q8_0" && shape[shape.length - 1]! % 32 !== 0 ? "F16" : target

/** `W + scale · B · A` in HF layout, then permuted for llama.cpp when W is Q or K. */
const mergeInHfLayout = (w: Float32Array, shape: ReadonlyArray<number>, pair: AdapterPair | undefined, heads: number | undefined) => {
  const [out, cols] = shape as [number, number]
  if (pair !== undefined) addLowRank(w, pair.b.data, pair.a.data, out, pair.rank, cols, pair.scale)
  return heads === undefined ? w : permuteQkForGguf(w, out, heads)
}

interface MergedPlan {
  readonly metadata: ReadonlyArray<readonly [string, GgufValue]>
  readonly tensors: ReadonlyArray<GgufTensorToWrite>
}

/** A GGUF base (rewriteGguf): every metadata key copied (file type updated), every tensor copied or merged. */
const mergedFromGguf = (options: ExportMergedOptions, byWeight: ReadonlyMap<string, AdapterPair>) => {
  const target = writeTypes[options.type]
  return rewriteGguf(options.base, {
    metadata: [[ggufKeys.fileType, gguf.u32(llamaFileTypes[writeTypes[options.type]])]],
    copyType: (info) => mergedTensorType(info.shape, target),
    // merged in HF layout, as PEFT does; rewriteGguf puts Q/K back into llama.cpp's row order
    tensor: ({ info, read }) => {
      const pair = byWeight.get(info.name)
      return pair === undefined ? undefined : { type: mergedTensorType(info.shape, target), data: () => mergeInHfLayout(read(), info.shape, pair, undefined) }
    }
  })
}

const decodeShardIndex = Schema.decodeUnknownEffect(Schema.fromJsonString(Schema.Struct({ weight_map: Schema.Record(Schema.String, Schema.String) })))

/** The weight files of an HF folder: the shard index's files, else every *.safetensors but an adapter's. */
const hfWeightFiles = Effect.fn("Export.hfWeightFiles")(function*(folder: string) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const indexPath = path.join(folder, "model.safetensors.index.json")
  if (yield* fs.exists(indexPath).pipe(Effect.orElseSucceed(() => false))) {
    const text = yield* fs.readFileString(indexPath).pipe(Effect.mapError(toFileError(indexPath)))
    const index = yield* decodeShardIndex(text).pipe(Effect.mapError((e) => fileError(indexPath, e.message)))
    return [...new Set(Object.values(index.weight_map))].sort()
  }
  const entries = yield* fs.readDirectory(folder).pipe(Effect.mapError(toFileError(folder)))
  return entries.filter((f) => f.endsWith(".safetensors") && !f.startsWith("adapter_")).sort()
})

/** The safetensors handle holding each named weight of an HF folder (open for the scope). */
const openHfWeights = Effect.fn("Export.openHfWeights")(function*(folder: string, names: ReadonlyArray<string>) {
  const path = yield* Path.Path
  const files = yield* hfWeightFiles(folder)
  const handles = new Map<string, SafetensorsFile>()
  for (const f of files) {
    const handle = yield* openSafetensors(path.join(folder, f))
    for (const name of names) if (!handles.has(name) && handle.info(name) !== undefined) handles.set(name, handle)
  }
  return handles
})

/**
 * An HF folder base: config.json's hyper-parameters as llama.cpp's converter writes them, the tokenizer converted
 * from tokenizer.json (HfVocabulary), weights merged in their own (HF) layout and Q/K permuted for llama.cpp.
 */
const mergedFromHf = Effect.fn("Export.mergedFromHf")(function*(
  options: { readonly base: string; readonly type: MergedType },
  byWeight: ReadonlyMap<string, AdapterPair>
) {
  const path = yield* Path.Path
  const source = yield* loadHfFolder(options.base)
  const config = source.config
  const vocabulary = yield* readHfVocabulary(options.base, config.vocabSize)
  const handles = yield* openHfWeights(options.base, source.tensorNames)
  const target = writeTypes[options.type]
  const metadata: Array<readonly [string, GgufValue]> = [
    [ggufKeys.architecture, gguf.string("llama")],
    [ggufKeys.type, gguf.string("model")],
    [ggufKeys.name, gguf.string(path.basename(path.resolve(options.base)))],
    [ggufKeys.fileType, gguf.u32(llamaFileTypes[writeTypes[options.type]])],
    ...llamaMetadata(config),
    ...vocabulary.metadata
  ]
  const tensors = source.tensorNames.map((hfName): GgufTensorToWrite => {
    const name = ggufNameOf(hfName)!
    const handle = handles.get(hfName)!
    const shape = handle.info(hfName)!.shape
    const heads = qkHeadsFor(name, config)
    const data = () => mergeInHfLayout(Effect.runSync(handle.readTensor(hfName)).data, shape, byWeight.get(name), heads)
    return { name, shape, type: mergedTensorType(shape, target), data }
  })
  if (config.ropeScaling !== undefined) {
    tensors.unshift({ name: "rope_freqs.weight", shape: [config.headDim / 2], type: "F32", data: llama3RopeFactors(config.ropeScaling, config.ropeTheta, config.headDim) })
  }
  return { metadata, tensors } satisfies MergedPlan
})

/**
 * `export merged`: base (GGUF file or HF folder) + PEFT adapter -> one standalone GGUF with the base's tokenizer and
 * chat template.
 */
export const exportMerged = Effect.fn("Export.merged")(function*(options: ExportMergedOptions) {
  const [adapter, base] = yield* Effect.all([loadPeftAdapter(options.adapter), describeBase(options.base)])
  yield* checkAdapter(describePeft(adapter), base)
  const byWeight = new Map(adapter.pairs.map((p) => [ggufNameOf(`${p.module}.weight`)!, p]))
  const plan = base.format === "gguf" ? mergedFromGguf(options, byWeight) : mergedFromHf(options, byWeight)
  // the merged model records the adapter's trained prompt, so serving it alone renders that prompt too
  return yield* writePlan(options, Effect.map(plan, (p) => withMetadata(p, promptMetadataOf(adapter))), adapter.pairs.length)
})

/** A plan with some metadata keys set (replaced where the base has them, else appended). */
const withMetadata = (plan: MergedPlan, edits: ReadonlyArray<readonly [string, GgufValue]>): MergedPlan => {
  const keys = new Set(edits.map(([k]) => k))
  return { ...plan, metadata: [...plan.metadata.filter(([k]) => !keys.has(k)), ...edits] }
}

/** Writes a model plan (its weight files stay open for the write only) and reports what was written. */
const writePlan = Effect.fn("Export.writePlan")(function*<E, R>(
  options: { readonly out: string; readonly onTensor?: (index: number, total: number, name: string) => void },
  plan: Effect.Effect<MergedPlan, E, R>,
  modules: number
) {
  const fs = yield* FileSystem.FileSystem
  const written = yield* Effect.scoped(Effect.gen(function*() {
    const { metadata, tensors } = yield* plan
    yield* writeGguf(options.out, { metadata, tensors, ...(options.onTensor === undefined ? {} : { onTensor: options.onTensor }) })
    return tensors.length
  }))
  const stat = yield* fs.stat(options.out).pipe(Effect.mapError(toFileError(options.out)))
  return { out: options.out, tensors: written, modules, alpha: 0, bytes: Number(stat.size) } satisfies ExportReport
})

/** For tests and tools: the HF weight name an adapter GGUF tensor belongs to. */
export const adapterTensorBase = (name: string): string | undefined => hfNameOf(name.replace(/\.lora_[ab]$/, ""))

export interface ConvertBaseOptions {
  /** a Hugging Face folder (config.json, safetensors, tokenizer.json) */
  readonly base: string
  readonly out: string
  readonly type: MergedType
  readonly onTensor?: (index: number, total: number, name: string) => void
}

/**
 * `export base`: a Hugging Face folder as a GGUF llama.cpp loads (what llama.cpp's convert_hf_to_gguf.py does for
 * Llama-family models): the merge of `export merged` with no adapter. Adapters exported against the folder (`export
 * adapter --base FOLDER`) apply to it, so an HF base can be evaluated and served with its adapters.
 */
export const convertHfBase = Effect.fn("Export.convertHfBase")(function*(options: ConvertBaseOptions) {
  const base = yield* describeBase(options.base)
  if (base.format === "gguf") return yield* fileError(options.base, "is a GGUF already; `export base` converts a Hugging Face folder")
  return yield* writePlan(options, mergedFromHf(options, new Map()), 0)
})
