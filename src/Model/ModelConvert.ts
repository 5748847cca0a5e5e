/**
 * Other forms of a GGUF model with exactly its function: the same file with every tensor dequantized to F32 (what
 * llama.cpp computes on without any quantization, for parity and for quantization-cost figures), and a Hugging
 * Face folder of those F32 weights (for transformers / PEFT, e.g. the PyTorch engine). Both stream one tensor at a
 * time: a tensor is read, dequantized and written when its turn comes.
 */
import { Effect } from "effect"
import * as fs from "node:fs"
import { join } from "node:path"
import { gguf, openGguf } from "./Gguf.ts"
import { ggufKeys, llamaFileTypes } from "./GgufKeys.ts"
import { hfNameOf, qkHeadsFor, unpermuteQkFromGguf } from "./GgufNames.ts"
import { rewriteGguf } from "./GgufRewrite.ts"
import { writeGguf } from "./GgufWriter.ts"
import { configFromGguf, toHfConfigJson } from "./ModelLoader.ts"
import { type ModelFileError, toFileError } from "./ModelFileError.ts"
import { writeSafetensors } from "./Safetensors.ts"

/**
 * The GGUF at `source` with every tensor as F32 (rewriteGguf, every tensor copied as F32): same metadata
 * (tokenizer, chat template, hyper-parameters) except `general.file_type` = all F32, same tensor names, order and
 * ggml layout (a copied tensor keeps its rows where they are: Q/K stay in llama.cpp's order).
 */
export const writeDequantizedGguf = (source: string, target: string): Effect.Effect<void, ModelFileError> =>
  Effect.scoped(Effect.gen(function*() {
    const plan = yield* rewriteGguf(source, {
      metadata: [[ggufKeys.fileType, gguf.u32(llamaFileTypes.F32)]],
      copyType: () => "F32"
    })
    yield* writeGguf(target, plan)
  }))

/**
 * A Hugging Face folder (config.json, model.safetensors as F32) with the GGUF's weights dequantized, under HF names
 * and with the Q/K rows put back into HF order (llama.cpp's converter permuted them). A tied model has no lm_head.
 * No tokenizer files: the GGUF's tokenizer (llama.cpp's) is the reference for ids.
 */
export const writeHfFolderFromGguf = (source: string, folder: string): Effect.Effect<void, ModelFileError> =>
  Effect.scoped(Effect.gen(function*() {
    const file = yield* openGguf(source)
    const config = yield* Effect.try({ try: () => configFromGguf(file), catch: toFileError(source) })
    if (file.info("rope_freqs.weight") !== undefined) {
      return yield* Effect.fail(toFileError(source)(new Error("llama3 rope scaling (rope_freqs.weight) is not written to HF folders here")))
    }
    yield* Effect.try({
      try: () => {
        fs.mkdirSync(folder, { recursive: true })
        fs.writeFileSync(join(folder, "config.json"), JSON.stringify(toHfConfigJson(config, "float32"), null, 2))
      },
      catch: toFileError(folder)
    })
    const tensors = file.tensors.map((info) => ({
      name: hfNameOf(info.name) ?? info.name,
      shape: info.shape,
      data: () => {
        const { data } = Effect.runSync(file.readTensor(info.name))
        const heads = qkHeadsFor(info.name, config)
        return heads === undefined ? data : unpermuteQkFromGguf(data, info.shape[0]!, heads)
      }
    }))
    yield* writeSafetensors(join(folder, "model.safetensors"), tensors, { metadata: { format: "pt" } })
  }))
