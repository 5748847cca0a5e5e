/**
 * safetensors reader and writer (https://github.com/huggingface/safetensors): u64 little-endian header length, a JSON
 * header `{name: {dtype, shape, data_offsets}, "__metadata__"?: {string: string}}`, then raw little-endian data.
 * The reader parses the header only and reads one tensor at a time through the file handle; the writer streams
 * tensors into the file one at a time (PEFT's `adapter_model.safetensors` and HF model shards are written with it).
 */
import { Effect, Result, Schema, Scope, Stream } from "effect"
import { bf16ArrayToF32, f16ArrayToF32, f32ArrayToBf16, f32ArrayToF16 } from "./Float16.ts"
import type { NamedTensor } from "./ModelContracts.ts"
import { fileError, type ModelFileError, toFileError } from "./ModelFileError.ts"
import { bytesOf, closeFile, openForRead, readAt, type ReadableFile, SequentialWriter } from "./BinaryFile.ts"
import { describeCause } from "../Shared/Errors.ts"

/** Bytes per element of the dtypes we read into float32. */
const dtypeSizes: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 }

/** The dtypes the writer produces. */
export const SafetensorsWriteDtype = Schema.Literals(["F32", "F16", "BF16"])
export type SafetensorsWriteDtype = typeof SafetensorsWriteDtype.Type

const TensorEntry = Schema.Struct({
  dtype: Schema.String,
  shape: Schema.Array(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))),
  data_offsets: Schema.Tuple([Schema.Int, Schema.Int])
})
const Metadata = Schema.Record(Schema.String, Schema.String)
const decodeEntry = Schema.decodeUnknownResult(TensorEntry)
const decodeMetadata = Schema.decodeUnknownResult(Metadata)

export interface SafetensorsTensorInfo {
  readonly name: string
  readonly dtype: string
  readonly shape: ReadonlyArray<number>
  /** absolute byte offsets in the file */
  readonly start: number
  readonly end: number
}

export interface SafetensorsFile {
  readonly path: string
  readonly metadata: Readonly<Record<string, string>>
  /** in file-data order */
  readonly tensors: ReadonlyArray<SafetensorsTensorInfo>
  readonly info: (name: string) => SafetensorsTensorInfo | undefined
  /** reads one tensor and converts it to float32 */
  readonly readTensor: (name: string) => Effect.Effect<NamedTensor, ModelFileError>
  /** reads one tensor's raw bytes */
  readonly readRaw: (name: string) => Effect.Effect<Uint8Array, ModelFileError>
}

const maxHeaderBytes = 100 * 1024 * 1024

const parseHeader = (file: ReadableFile) => {
  const path = file.path
  if (file.size < 8) throw fileError(path, `not a safetensors file: ${file.size} bytes is shorter than the 8-byte header length`)
  const headerLength = new DataView(readAt(file, 0, 8, "header length").buffer).getBigUint64(0, true)
  if (headerLength > BigInt(Math.min(maxHeaderBytes, file.size - 8))) {
    throw fileError(path, `not a safetensors file: header length ${headerLength} exceeds the file size (${file.size} bytes)`)
  }
  const headerBytes = readAt(file, 8, Number(headerLength), "header")
  let header: unknown
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes))
  } catch (cause) {
    throw fileError(path, `header is not valid JSON: ${describeCause(cause)}`)
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw fileError(path, "header is not a JSON object")
  }
  const dataStart = 8 + Number(headerLength)
  const dataSize = file.size - dataStart
  let metadata: Record<string, string> = {}
  const tensors: Array<SafetensorsTensorInfo> = []
  for (const [name, raw] of Object.entries(header)) {
    if (name === "__metadata__") {
      metadata = Result.getOrThrowWith(decodeMetadata(raw), (e) => fileError(path, `invalid __metadata__: ${e.message}`))
      continue
    }
    const entry = Result.getOrThrowWith(decodeEntry(raw), (e) => fileError(path, `invalid header entry: ${e.message}`, name))
    const [begin, end] = entry.data_offsets
    const elementSize = dtypeSizes[entry.dtype]
    if (elementSize === undefined) throw fileError(path, `unsupported dtype ${entry.dtype}`, name)
    const expected = entry.shape.reduce((a, b) => a * b, 1) * elementSize
    if (begin < 0 || end < begin || end - begin !== expected) {
      throw fileError(path, `data_offsets [${begin}, ${end}] do not hold ${entry.dtype}[${entry.shape.join(", ")}] (${expected} bytes)`, name)
    }
    if (end > dataSize) {
      throw fileError(path, `file is truncated: data ends at ${end} but the data section has ${dataSize} bytes`, name)
    }
    tensors.push({ name, dtype: entry.dtype, shape: entry.shape, start: dataStart + begin, end: dataStart + end })
  }
  tensors.sort((a, b) => a.start - b.start)
  for (let i = 1; i < tensors.length; i++) {
    if (tensors[i]!.start < tensors[i - 1]!.end) {
      throw fileError(path, `data overlaps the data of ${tensors[i - 1]!.name}`, tensors[i]!.name)
    }
  }
  return { metadata, tensors }
}

/** Converts a tensor's little-endian bytes (in a fresh, aligned buffer) to float32. */
export const safetensorsToF32 = (dtype: string, bytes: Uint8Array): Float32Array => {
  const { buffer, byteOffset, byteLength } = bytes
  switch (dtype) {
    case "F32":
      return new Float32Array(buffer, byteOffset, byteLength / 4)
    case "F16":
      return f16ArrayToF32(new Uint16Array(buffer, byteOffset, byteLength / 2))
    case "BF16":
      return bf16ArrayToF32(new Uint16Array(buffer, byteOffset, byteLength / 2))
    case "F64":
      return Float32Array.from(new Float64Array(buffer, byteOffset, byteLength / 8))
    case "I64":
      return Float32Array.from(new BigInt64Array(buffer, byteOffset, byteLength / 8), Number)
    case "I32":
      return Float32Array.from(new Int32Array(buffer, byteOffset, byteLength / 4))
    case "I16":
      return Float32Array.from(new Int16Array(buffer, byteOffset, byteLength / 2))
    case "I8":
      return Float32Array.from(new Int8Array(buffer, byteOffset, byteLength))
    default:
      return Float32Array.from(bytes)
  }
}

/** Opens a safetensors file (header only); the handle closes with the scope. */
export const openSafetensors = (path: string): Effect.Effect<SafetensorsFile, ModelFileError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.try({ try: () => openForRead(path), catch: toFileError(path) }),
    (file) => Effect.sync(() => closeFile(file))
  ).pipe(
    Effect.flatMap((file) =>
      Effect.try({
        try: () => {
          const { metadata, tensors } = parseHeader(file)
          const byName = new Map(tensors.map((t) => [t.name, t]))
          const find = (name: string) => {
            const info = byName.get(name)
            if (info === undefined) throw fileError(path, "no such tensor in the file", name)
            return info
          }
          const readRaw = (name: string) =>
            Effect.try({
              try: () => {
                const info = find(name)
                return readAt(file, info.start, info.end - info.start, `tensor ${name}`)
              },
              catch: toFileError(path)
            })
          return {
            path,
            metadata,
            tensors,
            info: (name: string) => byName.get(name),
            readRaw,
            readTensor: (name: string) =>
              Effect.map(readRaw(name), (bytes): NamedTensor => {
                const info = byName.get(name)!
                return { name, shape: info.shape, data: safetensorsToF32(info.dtype, bytes) }
              })
          } satisfies SafetensorsFile
        },
        catch: toFileError(path)
      })
    )
  )

/** Reads a file's header only: metadata and tensor infos. */
export const readSafetensorsHeader = (path: string) =>
  Effect.scoped(Effect.map(openSafetensors(path), ({ metadata, tensors }) => ({ metadata, tensors })))

/** Every tensor of a file as float32, one at a time, in file order. */
export const streamSafetensors = (path: string): Stream.Stream<NamedTensor, ModelFileError> =>
  Stream.unwrap(
    Effect.map(openSafetensors(path), (file) =>
      Stream.fromIterable(file.tensors).pipe(Stream.mapEffect((info) => file.readTensor(info.name))))
  )

/** A tensor to write; `data` may be a thunk so big tensors are produced only when their turn comes. */
export interface SafetensorsTensorToWrite {
  readonly name: string
  readonly shape: ReadonlyArray<number>
  readonly dtype?: SafetensorsWriteDtype
  readonly data: Float32Array | (() => Float32Array)
}

const writeSizes: Record<SafetensorsWriteDtype, number> = { F32: 4, F16: 2, BF16: 2 }

/**
 * Writes a safetensors file, streaming the tensors in the given order. The header is padded with spaces to a
 * multiple of 8 bytes (as the reference implementation does) so the data section is aligned.
 */
export const writeSafetensors = (
  path: string,
  tensors: ReadonlyArray<SafetensorsTensorToWrite>,
  options: { readonly metadata?: Readonly<Record<string, string>>; readonly dtype?: SafetensorsWriteDtype } = {}
): Effect.Effect<void, ModelFileError> =>
  Effect.try({
    try: () => {
      const header: Record<string, unknown> = {}
      if (options.metadata !== undefined) header.__metadata__ = options.metadata
      let offset = 0
      const seen = new Set<string>()
      for (const t of tensors) {
        if (seen.has(t.name)) throw fileError(path, "the tensor is listed twice", t.name)
        seen.add(t.name)
        const dtype = t.dtype ?? options.dtype ?? "F32"
        const size = t.shape.reduce((a, b) => a * b, 1) * writeSizes[dtype]
        header[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + size] }
        offset += size
      }
      let json = JSON.stringify(header)
      json += " ".repeat((8 - (Buffer.byteLength(json) % 8)) % 8)
      const headerBytes = new TextEncoder().encode(json)
      const lengthBytes = new Uint8Array(8)
      new DataView(lengthBytes.buffer).setBigUint64(0, BigInt(headerBytes.length), true)
      const writer = SequentialWriter.open(path)
      try {
        writer.write(lengthBytes)
        writer.write(headerBytes)
        for (const t of tensors) {
          const data = typeof t.data === "function" ? t.data() : t.data
          const numel = t.shape.reduce((a, b) => a * b, 1)
          if (data.length !== numel) {
            throw fileError(path, `has ${data.length} values but shape [${t.shape.join(", ")}] needs ${numel}`, t.name)
          }
          const dtype = t.dtype ?? options.dtype ?? "F32"
          writer.write(bytesOf(dtype === "F32" ? data : dtype === "F16" ? f32ArrayToF16(data) : f32ArrayToBf16(data)))
        }
      } finally {
        writer.close()
      }
    },
    catch: toFileError(path)
  })
