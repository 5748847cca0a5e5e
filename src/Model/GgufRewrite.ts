/**
 * The one "rewrite a GGUF with edits": the base file's metadata and tensors in its order, some metadata keys set,
 * some tensors replaced. Replacements are given in the project's canonical (Hugging Face) layout and read the
 * original in that layout too; the Q/K row permutation of llama.cpp is undone and redone here, once, with the head
 * counts of the base's own metadata. Tensors that are not replaced keep their bytes (or are re-encoded in
 * `copyType`). Used by the trainer's full-model export and by `export merged` (and anything that writes a model
 * GGUF from a base GGUF).
 */
import { Effect, type Scope } from "effect"
import { type GgufFile, type GgufTensorInfo, type GgufValue, metaNumber, openGguf } from "./Gguf.ts"
import { ggufKeys } from "./GgufKeys.ts"
import { hfNameOf, permuteQkForGguf, qkHeadsFor, unpermuteQkFromGguf } from "./GgufNames.ts"
import { GgmlType } from "./GgmlQuants.ts"
import type { GgufTensorToWrite, GgufWriteType } from "./GgufWriter.ts"
import type { ModelFileError } from "./ModelFileError.ts"
import { fileError } from "./ModelFileError.ts"

/** A tensor's new values in HF layout (Q/K rows in HF order), and the type to write them in (default F32). */
export interface GgufTensorEdit {
  readonly data: () => Float32Array
  readonly type?: GgufWriteType
}

export interface GgufEdits {
  /** keys to set: replaced where the base has them, appended otherwise */
  readonly metadata?: ReadonlyArray<readonly [string, GgufValue]>
  /**
   * The replacement of a tensor, or undefined to copy it. `hfName` is its canonical name (undefined for tensors
   * without one, such as `rope_freqs.weight`); `read` gives its current values in HF layout.
   */
  readonly tensor?: (tensor: {
    readonly info: GgufTensorInfo
    readonly hfName: string | undefined
    readonly read: () => Float32Array
  }) => GgufTensorEdit | undefined
  /** the type a copied tensor is written in; undefined (or its own type) keeps its bytes */
  readonly copyType?: (info: GgufTensorInfo) => GgufWriteType | undefined
}

export interface GgufPlan {
  readonly metadata: ReadonlyArray<readonly [string, GgufValue]>
  readonly tensors: ReadonlyArray<GgufTensorToWrite>
}

const ggmlTypeOf: Partial<Record<GgufWriteType, number>> = { F32: GgmlType.F32, F16: GgmlType.F16, Q8_0: GgmlType.Q8_0 }

const planOf = (path: string, file: GgufFile, edits: GgufEdits): GgufPlan => {
  const set = new Map(edits.metadata ?? [])
  const metadata: Array<readonly [string, GgufValue]> = [...file.metadata].map(([k, v]) => [k, set.get(k) ?? v] as const)
  for (const [k, v] of set) if (!file.metadata.has(k)) metadata.push([k, v])
  const heads = { numHeads: metaNumber(file, ggufKeys.headCount), numKvHeads: metaNumber(file, ggufKeys.headCountKv) ?? metaNumber(file, ggufKeys.headCount) }
  const read = (info: GgufTensorInfo) => Effect.runSync(file.readTensor(info.name)).data
  const tensors = file.tensors.map((info): GgufTensorToWrite => {
    const qk = heads.numHeads === undefined ? undefined : qkHeadsFor(info.name, heads as { numHeads: number; numKvHeads: number })
    const edit = edits.tensor?.({
      info,
      hfName: hfNameOf(info.name),
      read: () => qk === undefined ? read(info) : unpermuteQkFromGguf(read(info), info.shape[0]!, qk)
    })
    if (edit !== undefined) {
      return {
        name: info.name,
        shape: info.shape,
        type: edit.type ?? "F32",
        data: () => qk === undefined ? edit.data() : permuteQkForGguf(edit.data(), info.shape[0]!, qk)
      }
    }
    const type = edits.copyType?.(info)
    if (type === undefined || ggmlTypeOf[type] === info.type) {
      return { name: info.name, shape: info.shape, rawType: info.type, raw: () => Effect.runSync(file.readRaw(info.name)) }
    }
    // re-encoded in the ggml layout it has (no permutation: the rows stay where they are)
    return { name: info.name, shape: info.shape, type, data: () => read(info) }
  })
  if (heads.numHeads === undefined && tensors.some((t) => qkHeadsFor(t.name, { numHeads: 1, numKvHeads: 1 }) !== undefined)) {
    throw fileError(path, "has Q/K tensors but no head count", ggufKeys.headCount)
  }
  return { metadata, tensors }
}

/** The plan of a rewritten `base` (its file stays open for the scope, so write the plan inside it). */
export const rewriteGguf = (base: string, edits: GgufEdits): Effect.Effect<GgufPlan, ModelFileError, Scope.Scope> =>
  Effect.flatMap(openGguf(base), (file) =>
    Effect.try({ try: () => planOf(base, file, edits), catch: (e) => (e as { _tag?: string })._tag === "ModelFileError" ? e as ModelFileError : fileError(base, String(e)) }))
