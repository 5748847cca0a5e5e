/**
 * GGUF v3 writer for whole models and for LoRA adapters. The header (metadata + tensor infos) is computed from the
 * tensor shapes first; then each tensor's data is produced (a thunk may build it lazily), converted or quantized,
 * written and padded to the alignment, one tensor at a time, so a model never has to be in memory as a whole.
 */
import { Effect } from "effect"
import { bytesOf, SequentialWriter } from "./BinaryFile.ts"
import { f32ArrayToBf16, f32ArrayToF16 } from "./Float16.ts"
import { blockLayout, GgmlType, ggmlTypeName, quantizeQ8_0, tensorByteSize } from "./GgmlQuants.ts"
import { type GgufValue, GgufValueTypeId } from "./Gguf.ts"
import { fileError, type ModelFileError, toFileError } from "./ModelFileError.ts"
import { ggufKeys } from "./GgufKeys.ts"

/** The tensor types the writer converts float32 data to. */
export type GgufWriteType = "F32" | "F16" | "BF16" | "Q8_0"

export type GgufTensorToWrite =
  | {
    readonly name: string
    /** numpy order ([out, in] for a linear weight); written to the file reversed, as ggml dims */
    readonly shape: ReadonlyArray<number>
    readonly type: GgufWriteType
    readonly data: Float32Array | (() => Float32Array)
  }
  | {
    readonly name: string
    readonly shape: ReadonlyArray<number>
    /** a ggml type id; the bytes are written as they are (for copying tensors from another file) */
    readonly rawType: number
    readonly raw: Uint8Array | (() => Uint8Array)
  }

export interface GgufWriteOptions {
  /** written in iteration order; `general.alignment` (u32), when present, sets the alignment */
  readonly metadata: Iterable<readonly [string, GgufValue]>
  readonly tensors: ReadonlyArray<GgufTensorToWrite>
  /** called after each tensor is written (for progress on big models) */
  readonly onTensor?: (index: number, total: number, name: string) => void
}

/** Growable little-endian byte buffer for the header. */
class ByteBuilder {
  private bytes = new Uint8Array(1 << 16)
  private view = new DataView(this.bytes.buffer)
  length = 0
  private readonly encoder = new TextEncoder()

  private reserve(n: number) {
    if (this.length + n <= this.bytes.length) return
    let size = this.bytes.length * 2
    while (size < this.length + n) size *= 2
    const grown = new Uint8Array(size)
    grown.set(this.bytes.subarray(0, this.length))
    this.bytes = grown
    this.view = new DataView(grown.buffer)
  }
  u8(v: number) { this.reserve(1); this.view.setUint8(this.length, v); this.length += 1 }
  i8(v: number) { this.reserve(1); this.view.setInt8(this.length, v); this.length += 1 }
  u16(v: number) { this.reserve(2); this.view.setUint16(this.length, v, true); this.length += 2 }
  i16(v: number) { this.reserve(2); this.view.setInt16(this.length, v, true); this.length += 2 }
  u32(v: number) { this.reserve(4); this.view.setUint32(this.length, v, true); this.length += 4 }
  i32(v: number) { this.reserve(4); this.view.setInt32(this.length, v, true); this.length += 4 }
  f32(v: number) { this.reserve(4); this.view.setFloat32(this.length, v, true); this.length += 4 }
  f64(v: number) { this.reserve(8); this.view.setFloat64(this.length, v, true); this.length += 8 }
  u64(v: bigint) { this.reserve(8); this.view.setBigUint64(this.length, v, true); this.length += 8 }
  i64(v: bigint) { this.reserve(8); this.view.setBigInt64(this.length, v, true); this.length += 8 }
  raw(bytes: Uint8Array) { this.reserve(bytes.length); this.bytes.set(bytes, this.length); this.length += bytes.length }
  string(s: string) {
    const encoded = this.encoder.encode(s)
    this.u64(BigInt(encoded.length))
    this.raw(encoded)
  }
  result() { return this.bytes.subarray(0, this.length) }
}

const writeValue = (out: ByteBuilder, value: GgufValue, key: string, path: string): void => {
  switch (value.type) {
    case "u8": return out.u8(value.value)
    case "i8": return out.i8(value.value)
    case "u16": return out.u16(value.value)
    case "i16": return out.i16(value.value)
    case "u32": return out.u32(value.value)
    case "i32": return out.i32(value.value)
    case "f32": return out.f32(value.value)
    case "f64": return out.f64(value.value)
    case "u64": return out.u64(value.value)
    case "i64": return out.i64(value.value)
    case "bool": return out.u8(value.value ? 1 : 0)
    case "string": return out.string(value.value)
    case "array": {
      out.u32(GgufValueTypeId[value.itemType])
      out.u64(BigInt(value.values.length))
      const values = value.values
      if (ArrayBuffer.isView(values)) {
        out.raw(bytesOf(values))
        return
      }
      for (const item of values as ReadonlyArray<unknown>) {
        if (value.itemType === "string" && typeof item === "string") out.string(item)
        else if (value.itemType === "bool" && typeof item === "boolean") out.u8(item ? 1 : 0)
        else if (value.itemType === "array" && typeof item === "object" && item !== null) writeValue(out, item as GgufValue, key, path)
        else throw fileError(path, `array item ${JSON.stringify(item)} is not a ${value.itemType}`, key)
      }
      return
    }
  }
}

const typeIds: Record<GgufWriteType, number> = { F32: GgmlType.F32, F16: GgmlType.F16, BF16: GgmlType.BF16, Q8_0: GgmlType.Q8_0 }

const tensorBytes = (tensor: GgufTensorToWrite, path: string): Uint8Array => {
  const numel = tensor.shape.reduce((a, b) => a * b, 1)
  if ("raw" in tensor) {
    const raw = typeof tensor.raw === "function" ? tensor.raw() : tensor.raw
    const expected = tensorByteSize(tensor.rawType, numel)
    if (expected !== undefined && raw.length !== expected) {
      throw fileError(path, `has ${raw.length} bytes but ${ggmlTypeName(tensor.rawType)}[${tensor.shape.join(", ")}] needs ${expected}`, tensor.name)
    }
    return raw
  }
  const data = typeof tensor.data === "function" ? tensor.data() : tensor.data
  if (data.length !== numel) {
    throw fileError(path, `has ${data.length} values but shape [${tensor.shape.join(", ")}] needs ${numel}`, tensor.name)
  }
  switch (tensor.type) {
    case "F32": return bytesOf(data)
    case "F16": return bytesOf(f32ArrayToF16(data))
    case "BF16": return bytesOf(f32ArrayToBf16(data))
    case "Q8_0": return quantizeQ8_0(data)
  }
}

/** Writes a GGUF v3 file. */
export const writeGguf = (path: string, options: GgufWriteOptions): Effect.Effect<void, ModelFileError> =>
  Effect.try({
    try: () => {
      const metadata = Array.from(options.metadata)
      const alignmentEntry = metadata.find(([key]) => key === ggufKeys.alignment)?.[1]
      const alignment = alignmentEntry === undefined ? 32 : alignmentEntry.type === "u32" ? alignmentEntry.value : -1
      if (!Number.isInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0) {
        throw fileError(path, "general.alignment must be a u32 power of two", ggufKeys.alignment)
      }
      const header = new ByteBuilder()
      header.raw(new TextEncoder().encode("GGUF"))
      header.u32(3)
      header.u64(BigInt(options.tensors.length))
      header.u64(BigInt(metadata.length))
      const keys = new Set<string>()
      for (const [key, value] of metadata) {
        if (keys.has(key)) throw fileError(path, "metadata key is given twice", key)
        keys.add(key)
        header.string(key)
        header.u32(GgufValueTypeId[value.type])
        writeValue(header, value, key, path)
      }
      let offset = 0
      const names = new Set<string>()
      for (const tensor of options.tensors) {
        if (names.has(tensor.name)) throw fileError(path, "the tensor is listed twice", tensor.name)
        names.add(tensor.name)
        const type = "raw" in tensor ? tensor.rawType : typeIds[tensor.type]
        const numel = tensor.shape.reduce((a, b) => a * b, 1)
        const layout = blockLayout(type)
        const rowSize = tensor.shape[tensor.shape.length - 1] ?? 1
        if (layout !== undefined && rowSize % layout[0] !== 0) {
          throw fileError(path, `row size ${rowSize} is not a multiple of the ${ggmlTypeName(type)} block size ${layout[0]}`, tensor.name)
        }
        const size = tensorByteSize(type, numel)
        if (size === undefined) throw fileError(path, `unsupported tensor type ${ggmlTypeName(type)}`, tensor.name)
        header.string(tensor.name)
        header.u32(tensor.shape.length)
        for (let d = tensor.shape.length - 1; d >= 0; d--) header.u64(BigInt(tensor.shape[d]!))
        header.u32(type)
        header.u64(BigInt(offset))
        offset += Math.ceil(size / alignment) * alignment
      }
      const writer = SequentialWriter.open(path)
      try {
        writer.write(header.result())
        writer.pad(alignment)
        options.tensors.forEach((tensor, index) => {
          writer.write(tensorBytes(tensor, path))
          writer.pad(alignment)
          options.onTensor?.(index, options.tensors.length, tensor.name)
        })
      } finally {
        writer.close()
      }
    },
    catch: toFileError(path)
  })
