/**
 * GGUF reader (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): magic `GGUF`, version (2 or 3), u64 tensor
 * count, u64 metadata count, typed key/values, tensor infos (name, dims in ggml order, type, offset), then the data
 * section at the next multiple of `general.alignment` (default 32). Only the header is parsed when a file is opened;
 * tensor data is read one tensor at a time through the file handle and dequantized to float32.
 */
import { Effect, Scope, Stream } from "effect"
import { closeFile, openForRead, readAt, type ReadableFile } from "./BinaryFile.ts"
import { blockLayout, dequantize, GgmlType, ggmlTypeName, tensorByteSize } from "./GgmlQuants.ts"
import type { NamedTensor } from "./ModelContracts.ts"
import { fileError, type ModelFileError, toFileError } from "./ModelFileError.ts"
import { describeCause } from "../Shared/Errors.ts"
import { ggufKeys } from "./GgufKeys.ts"

/** GGUF metadata value types, by their on-disk ids (enum gguf_type) */
export const GgufValueTypeId = {
  u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12
} as const
export type GgufValueType = keyof typeof GgufValueTypeId
export type GgufNumberType = "u8" | "i8" | "u16" | "i16" | "u32" | "i32" | "f32" | "f64"

export type GgufArrayValues =
  | Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Int32Array | Float32Array | Float64Array
  | BigUint64Array | BigInt64Array | ReadonlyArray<boolean> | ReadonlyArray<string> | ReadonlyArray<GgufValue>

/** A metadata value with its GGUF type, so a file read and written back keeps every type. */
export type GgufValue =
  | { readonly type: GgufNumberType; readonly value: number }
  | { readonly type: "u64" | "i64"; readonly value: bigint }
  | { readonly type: "bool"; readonly value: boolean }
  | { readonly type: "string"; readonly value: string }
  | { readonly type: "array"; readonly itemType: GgufValueType; readonly values: GgufArrayValues }

/** Constructors for metadata values. */
export const gguf = {
  u8: (value: number): GgufValue => ({ type: "u8", value }),
  i8: (value: number): GgufValue => ({ type: "i8", value }),
  u16: (value: number): GgufValue => ({ type: "u16", value }),
  i16: (value: number): GgufValue => ({ type: "i16", value }),
  u32: (value: number): GgufValue => ({ type: "u32", value }),
  i32: (value: number): GgufValue => ({ type: "i32", value }),
  f32: (value: number): GgufValue => ({ type: "f32", value }),
  f64: (value: number): GgufValue => ({ type: "f64", value }),
  u64: (value: bigint): GgufValue => ({ type: "u64", value }),
  i64: (value: bigint): GgufValue => ({ type: "i64", value }),
  bool: (value: boolean): GgufValue => ({ type: "bool", value }),
  string: (value: string): GgufValue => ({ type: "string", value }),
  strings: (values: ReadonlyArray<string>): GgufValue => ({ type: "array", itemType: "string", values }),
  f32s: (values: Float32Array): GgufValue => ({ type: "array", itemType: "f32", values }),
  i32s: (values: Int32Array): GgufValue => ({ type: "array", itemType: "i32", values }),
  u32s: (values: Uint32Array): GgufValue => ({ type: "array", itemType: "u32", values })
} as const

export interface GgufTensorInfo {
  readonly name: string
  /** ggml order: dims[0] is the innermost (contiguous) dimension */
  readonly dims: ReadonlyArray<number>
  /** numpy order (reverse of dims) */
  readonly shape: ReadonlyArray<number>
  readonly type: number
  readonly typeName: string
  /** offset relative to the data section */
  readonly offset: number
  /** absolute offset in the file */
  readonly start: number
  /** bytes of data, or undefined for a type whose layout we do not know */
  readonly byteSize: number | undefined
  readonly numel: number
}

export interface GgufHeader {
  readonly path: string
  readonly version: number
  /** in file order */
  readonly metadata: ReadonlyMap<string, GgufValue>
  readonly tensors: ReadonlyArray<GgufTensorInfo>
  readonly alignment: number
  readonly dataOffset: number
  readonly fileSize: number
}

export interface GgufFile extends GgufHeader {
  readonly info: (name: string) => GgufTensorInfo | undefined
  /** raw bytes of one tensor */
  readonly readRaw: (name: string) => Effect.Effect<Uint8Array, ModelFileError>
  /** one tensor dequantized to float32, under its GGUF name, numpy-order shape */
  readonly readTensor: (name: string) => Effect.Effect<NamedTensor, ModelFileError>
}

const typeIds = new Map<number, GgufValueType>(
  (Object.entries(GgufValueTypeId) as Array<[GgufValueType, number]>).map(([name, id]) => [id, name])
)
const numberSizes: Record<string, number> = { u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, u64: 8, i64: 8, f64: 8, bool: 1 }

/** Buffered sequential reader over the header part of the file. */
class HeaderCursor {
  private buffer: Uint8Array = new Uint8Array(0)
  private view = new DataView(this.buffer.buffer)
  private bufferStart = 0
  position = 0
  private readonly file: ReadableFile
  private readonly decoder = new TextDecoder("utf-8")
  constructor(file: ReadableFile) {
    this.file = file
  }

  /** makes `n` bytes at `position` available and returns their index in the buffer */
  private take(n: number, what: string): number {
    const end = this.position + n
    if (end > this.file.size) {
      throw fileError(this.file.path, `file is truncated: reading ${what} at byte ${this.position} needs ${n} bytes but the file has ${this.file.size}`)
    }
    if (this.position < this.bufferStart || end > this.bufferStart + this.buffer.length) {
      const length = Math.min(Math.max(n, 1 << 20), this.file.size - this.position)
      this.buffer = readAt(this.file, this.position, length, what)
      this.view = new DataView(this.buffer.buffer)
      this.bufferStart = this.position
    }
    const at = this.position - this.bufferStart
    this.position = end
    return at
  }

  /** `take` may replace the buffer and its view, so the view is read only after it */
  private read<A>(n: number, what: string, f: (view: DataView, at: number) => A): A {
    const at = this.take(n, what)
    return f(this.view, at)
  }
  u32(what: string) {
    return this.read(4, what, (v, at) => v.getUint32(at, true))
  }
  u64(what: string): number {
    const value = this.read(8, what, (v, at) => v.getBigUint64(at, true))
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw fileError(this.file.path, `${what} is too large (${value})`)
    return Number(value)
  }
  string(what: string): string {
    const length = this.u64(`${what} length`)
    if (length > this.file.size) throw fileError(this.file.path, `file is truncated or corrupt: ${what} claims ${length} bytes`)
    const at = this.take(length, what)
    return this.decoder.decode(this.buffer.subarray(at, at + length))
  }
  bytes(n: number, what: string): Uint8Array {
    const at = this.take(n, what)
    return this.buffer.slice(at, at + n) // a copy, aligned at 0, for typed-array views
  }
  scalar(type: GgufValueType, what: string): GgufValue {
    switch (type) {
      case "u8": return { type, value: this.read(1, what, (v, at) => v.getUint8(at)) }
      case "i8": return { type, value: this.read(1, what, (v, at) => v.getInt8(at)) }
      case "u16": return { type, value: this.read(2, what, (v, at) => v.getUint16(at, true)) }
      case "i16": return { type, value: this.read(2, what, (v, at) => v.getInt16(at, true)) }
      case "u32": return { type, value: this.read(4, what, (v, at) => v.getUint32(at, true)) }
      case "i32": return { type, value: this.read(4, what, (v, at) => v.getInt32(at, true)) }
      case "f32": return { type, value: this.read(4, what, (v, at) => v.getFloat32(at, true)) }
      case "f64": return { type, value: this.read(8, what, (v, at) => v.getFloat64(at, true)) }
      case "u64": return { type, value: this.read(8, what, (v, at) => v.getBigUint64(at, true)) }
      case "i64": return { type, value: this.read(8, what, (v, at) => v.getBigInt64(at, true)) }
      case "bool": return { type, value: this.read(1, what, (v, at) => v.getUint8(at)) !== 0 }
      case "string": return { type, value: this.string(what) }
      case "array": return this.array(what)
    }
  }
  valueType(what: string): GgufValueType {
    const id = this.u32(what)
    const type = typeIds.get(id)
    if (type === undefined) throw fileError(this.file.path, `unknown metadata value type ${id}`, what)
    return type
  }
  array(what: string): GgufValue {
    const itemType = this.valueType(what)
    const count = this.u64(`${what} count`)
    const size = numberSizes[itemType]
    if (size !== undefined) {
      if (count * size > this.file.size) throw fileError(this.file.path, `file is truncated or corrupt: array of ${count} items`, what)
      const bytes = this.bytes(count * size, what)
      const b = bytes.buffer
      const values: GgufArrayValues = itemType === "u8" ? bytes
        : itemType === "i8" ? new Int8Array(b)
        : itemType === "u16" ? new Uint16Array(b)
        : itemType === "i16" ? new Int16Array(b)
        : itemType === "u32" ? new Uint32Array(b)
        : itemType === "i32" ? new Int32Array(b)
        : itemType === "f32" ? new Float32Array(b)
        : itemType === "f64" ? new Float64Array(b)
        : itemType === "u64" ? new BigUint64Array(b)
        : itemType === "i64" ? new BigInt64Array(b)
        : Array.from(bytes, (x) => x !== 0)
      return { type: "array", itemType, values }
    }
    if (count > this.file.size) throw fileError(this.file.path, `file is truncated or corrupt: array of ${count} items`, what)
    if (itemType === "string") {
      const values: Array<string> = new Array(count)
      for (let i = 0; i < count; i++) values[i] = this.string(what)
      return { type: "array", itemType, values }
    }
    const values: Array<GgufValue> = new Array(count)
    for (let i = 0; i < count; i++) values[i] = this.array(what)
    return { type: "array", itemType, values }
  }
}

const parseHeader = (file: ReadableFile): GgufHeader => {
  const path = file.path
  const cursor = new HeaderCursor(file)
  if (file.size < 4) throw fileError(path, `not a GGUF file: only ${file.size} bytes`)
  const magic = readAt(file, 0, 4, "magic")
  if (magic[0] !== 0x47 || magic[1] !== 0x47 || magic[2] !== 0x55 || magic[3] !== 0x46) {
    throw fileError(path, `not a GGUF file: bad magic ${JSON.stringify(Buffer.from(magic).toString("latin1"))} (expected "GGUF")`)
  }
  cursor.position = 4
  const version = cursor.u32("version")
  if (version !== 2 && version !== 3) throw fileError(path, `unsupported GGUF version ${version} (supported: 2, 3)`)
  const tensorCount = cursor.u64("tensor count")
  const kvCount = cursor.u64("metadata count")
  if (tensorCount > file.size || kvCount > file.size) throw fileError(path, "file is truncated or corrupt: impossible counts")
  const metadata = new Map<string, GgufValue>()
  for (let i = 0; i < kvCount; i++) {
    const key = cursor.string(`metadata key #${i}`)
    const type = cursor.valueType(key)
    metadata.set(key, cursor.scalar(type, key))
  }
  const alignmentValue = metadata.get(ggufKeys.alignment)
  const alignment = alignmentValue === undefined ? 32 : Number(alignmentValue.type === "array" ? 0 : alignmentValue.value)
  if (!Number.isInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0) {
    throw fileError(path, `general.alignment must be a power of two, got ${alignment}`, ggufKeys.alignment)
  }
  const raw: Array<{ name: string; dims: Array<number>; type: number; offset: number }> = []
  for (let i = 0; i < tensorCount; i++) {
    const name = cursor.string(`tensor info #${i} name`)
    const nDims = cursor.u32(`${name} dimension count`)
    if (nDims > 4) throw fileError(path, `${nDims} dimensions (ggml allows at most 4)`, name)
    const dims: Array<number> = []
    for (let d = 0; d < nDims; d++) dims.push(cursor.u64(`${name} dimension ${d}`))
    const type = cursor.u32(`${name} type`)
    const offset = cursor.u64(`${name} offset`)
    raw.push({ name, dims, type, offset })
  }
  const dataOffset = Math.ceil(cursor.position / alignment) * alignment
  const tensors = raw.map(({ name, dims, type, offset }): GgufTensorInfo => {
    const numel = dims.reduce((a, b) => a * b, 1)
    const layout = blockLayout(type)
    if (layout !== undefined && dims.length > 0 && dims[0]! % layout[0] !== 0) {
      throw fileError(path, `row size ${dims[0]} is not a multiple of the ${ggmlTypeName(type)} block size ${layout[0]}`, name)
    }
    if (offset % alignment !== 0) throw fileError(path, `data offset ${offset} is not aligned to ${alignment}`, name)
    const byteSize = tensorByteSize(type, numel)
    const start = dataOffset + offset
    if (byteSize !== undefined && start + byteSize > file.size) {
      throw fileError(path, `file is truncated: the tensor's data needs bytes ${start}..${start + byteSize} but the file has ${file.size}`, name)
    }
    return { name, dims, shape: [...dims].reverse(), type, typeName: ggmlTypeName(type), offset, start, byteSize, numel }
  })
  return { path, version, metadata, tensors, alignment, dataOffset, fileSize: file.size }
}

/** Opens a GGUF file (header only); the handle closes with the scope. */
export const openGguf = (path: string): Effect.Effect<GgufFile, ModelFileError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.try({ try: () => openForRead(path), catch: toFileError(path) }),
    (file) => Effect.sync(() => closeFile(file))
  ).pipe(Effect.flatMap((file) =>
    Effect.try({
      try: (): GgufFile => {
        const header = parseHeader(file)
        const byName = new Map(header.tensors.map((t) => [t.name, t]))
        const find = (name: string) => {
          const info = byName.get(name)
          if (info === undefined) throw fileError(path, "no such tensor in the file", name)
          if (info.byteSize === undefined) throw fileError(path, `unsupported tensor type ${info.typeName}`, name)
          return info
        }
        const readRaw = (name: string) =>
          Effect.try({
            try: () => {
              const info = find(name)
              return readAt(file, info.start, info.byteSize!, `tensor ${name}`)
            },
            catch: toFileError(path)
          })
        return {
          ...header,
          info: (name) => byName.get(name),
          readRaw,
          readTensor: (name) =>
            Effect.flatMap(readRaw(name), (bytes) =>
              Effect.try({
                try: (): NamedTensor => {
                  const info = byName.get(name)!
                  // F32: the fresh read buffer already is the float32 data, no second copy
                  const data = info.type === GgmlType.F32
                    ? new Float32Array(bytes.buffer, bytes.byteOffset, info.numel)
                    : dequantize(info.type, bytes, info.numel)
                  return { name, shape: info.shape, data }
                },
                catch: (cause) => fileError(path, describeCause(cause), name)
              }))
        }
      },
      catch: toFileError(path)
    })
  ))

/** Reads only the header: version, metadata, tensor infos. */
export const readGgufHeader = (path: string): Effect.Effect<GgufHeader, ModelFileError> =>
  Effect.scoped(Effect.map(openGguf(path), ({ info: _i, readRaw: _r, readTensor: _t, ...header }) => header))

/** Every tensor of a GGUF as float32 under its GGUF name, one at a time, in file order. */
export const streamGgufTensors = (path: string): Stream.Stream<NamedTensor, ModelFileError> =>
  Stream.unwrap(Effect.map(openGguf(path), (file) =>
    Stream.fromIterable(file.tensors).pipe(Stream.mapEffect((info) => file.readTensor(info.name)))))

/** Metadata accessors that fail naming the file and key. */
const describe = (value: GgufValue) => value.type === "array" ? `array of ${value.itemType}` : value.type

export const metaNumber = (header: GgufHeader, key: string): number | undefined => {
  const value = header.metadata.get(key)
  if (value === undefined) return undefined
  if (value.type === "array" || value.type === "string" || value.type === "bool") {
    throw fileError(header.path, `expected a number, got ${describe(value)}`, key)
  }
  return Number(value.value)
}
export const requireNumber = (header: GgufHeader, key: string): number => {
  const value = metaNumber(header, key)
  if (value === undefined) throw fileError(header.path, "required metadata key is missing", key)
  return value
}
export const metaString = (header: GgufHeader, key: string): string | undefined => {
  const value = header.metadata.get(key)
  if (value === undefined) return undefined
  if (value.type !== "string") throw fileError(header.path, `expected a string, got ${describe(value)}`, key)
  return value.value
}
export const metaBool = (header: GgufHeader, key: string): boolean | undefined => {
  const value = header.metadata.get(key)
  if (value === undefined) return undefined
  if (value.type !== "bool") throw fileError(header.path, `expected a bool, got ${describe(value)}`, key)
  return value.value
}
export const metaArray = (header: GgufHeader, key: string): Extract<GgufValue, { type: "array" }> | undefined => {
  const value = header.metadata.get(key)
  if (value === undefined) return undefined
  if (value.type !== "array") throw fileError(header.path, `expected an array, got ${describe(value)}`, key)
  return value
}
