import { assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import * as fs from "node:fs"
import { join } from "node:path"
import { f16ToF32, f32ToF16 } from "../../src/Model/Float16.ts"
import { dequantize, GgmlType, quantizeQ8_0 } from "../../src/Model/GgmlQuants.ts"
import { gguf, type GgufValue, openGguf, readGgufHeader, streamGgufTensors } from "../../src/Model/Gguf.ts"
import { type GgufTensorToWrite, writeGguf } from "../../src/Model/GgufWriter.ts"
import { f16round, fileFailure as failure, seeded, tempDir } from "./WeightFileFixtures.ts"

const dir = tempDir("gguf-test")
const bytesOfSeed = (n: number, seed: number) => Uint8Array.from(seeded(n, seed), (x) => Math.floor((x + 1) * 127.99))

const everyType: Array<readonly [string, GgufValue]> = [
  ["general.architecture", gguf.string("llama")],
  ["t.u8", gguf.u8(255)], ["t.i8", gguf.i8(-128)], ["t.u16", gguf.u16(65535)], ["t.i16", gguf.i16(-32768)],
  ["t.u32", gguf.u32(4294967295)], ["t.i32", gguf.i32(-2147483648)], ["t.f32", gguf.f32(Math.fround(0.1))],
  ["t.f64", gguf.f64(0.1)], ["t.u64", gguf.u64(18446744073709551615n)], ["t.i64", gguf.i64(-9223372036854775808n)],
  ["t.bool", gguf.bool(true)], ["t.string", gguf.string("ünïcode € <PRICE>")], ["general.alignment", gguf.u32(64)],
  ["a.u8", { type: "array", itemType: "u8", values: Uint8Array.of(1, 2, 3) }],
  ["a.i16", { type: "array", itemType: "i16", values: Int16Array.of(-1, 2) }],
  ["a.f32", gguf.f32s(Float32Array.of(1.5, -2))], ["a.i32", gguf.i32s(Int32Array.of(1, -6))],
  ["a.u64", { type: "array", itemType: "u64", values: BigUint64Array.of(1n, 2n ** 63n) }],
  ["a.f64", { type: "array", itemType: "f64", values: Float64Array.of(Math.PI) }],
  ["a.bool", { type: "array", itemType: "bool", values: [true, false, true] }],
  ["a.string", gguf.strings(["<s>", "▁the", ""])],
  ["a.empty", gguf.strings([])],
  ["a.nested", { type: "array", itemType: "array", values: [gguf.strings(["x"]), gguf.i32s(Int32Array.of(7))] }]
]

const plain = (v: GgufValue): unknown =>
  v.type === "array"
    ? { itemType: v.itemType, values: Array.from(v.values as ArrayLike<unknown>, (x) => typeof x === "object" && x !== null && "type" in x ? plain(x as GgufValue) : x) }
    : v

describe("GGUF writer and reader", () => {
  it.effect("round-trips metadata of every type, tensors of every written type, and bytes", () =>
    Effect.gen(function*() {
      const path = join(dir, "all.gguf")
      const w = seeded(4 * 64, 1)
      const tensors: Array<GgufTensorToWrite> = [
        { name: "f32", shape: [4, 64], type: "F32", data: w },
        { name: "f16", shape: [4, 64], type: "F16", data: () => w },
        { name: "bf16", shape: [2, 2, 64], type: "BF16", data: w },
        { name: "q8", shape: [4, 64], type: "Q8_0", data: w },
        { name: "vec", shape: [3], type: "F32", data: Float32Array.of(1, 2, 3) }
      ]
      const progress: Array<string> = []
      yield* writeGguf(path, { metadata: everyType, tensors, onTensor: (i, n, name) => progress.push(`${i + 1}/${n} ${name}`) })
      assert.deepStrictEqual(progress, ["1/5 f32", "2/5 f16", "3/5 bf16", "4/5 q8", "5/5 vec"])
      const header = yield* readGgufHeader(path)
      assert.strictEqual(header.version, 3)
      assert.strictEqual(header.alignment, 64)
      assert.strictEqual(header.dataOffset % 64, 0)
      assert.deepStrictEqual(Array.from(header.metadata.keys()), everyType.map(([k]) => k))
      for (const [key, value] of everyType) assert.deepStrictEqual(plain(header.metadata.get(key)!), plain(value), key)
      assert.deepStrictEqual(header.tensors.map((t) => [t.name, t.typeName, t.dims, t.shape, t.offset % 64]), [
        ["f32", "F32", [64, 4], [4, 64], 0], ["f16", "F16", [64, 4], [4, 64], 0], ["bf16", "BF16", [64, 2, 2], [2, 2, 64], 0],
        ["q8", "Q8_0", [64, 4], [4, 64], 0], ["vec", "F32", [3], [3], 0]
      ])
      assert.strictEqual(fs.statSync(path).size % 64, 0)

      const read = new Map(Array.from(yield* Stream.runCollect(streamGgufTensors(path))).map((t) => [t.name, t]))
      assert.deepStrictEqual(Array.from(read.get("f32")!.data), Array.from(w))
      assert.deepStrictEqual(Array.from(read.get("f16")!.data), Array.from(w, f16round))
      const bf16 = read.get("bf16")!.data
      for (let i = 0; i < w.length; i++) assert.isAtMost(Math.abs(bf16[i]! - w[i]!), Math.abs(w[i]!) / 128)
      const q8 = read.get("q8")!.data
      for (let i = 0; i < w.length; i++) assert.isAtMost(Math.abs(q8[i]! - w[i]!), 1 / 127 / 2 + 1e-3)

      // copying every tensor's raw bytes with the metadata read back gives the identical file
      const copy = join(dir, "copy.gguf")
      const raws = yield* Effect.scoped(Effect.gen(function*() {
        const file = yield* openGguf(path)
        return yield* Effect.forEach(file.tensors, (t) => Effect.map(file.readRaw(t.name), (raw) => ({ t, raw })))
      }))
      yield* writeGguf(copy, {
        metadata: header.metadata,
        tensors: raws.map(({ t, raw }) => ({ name: t.name, shape: t.shape, rawType: t.type, raw }))
      })
      assert.isTrue(fs.readFileSync(copy).equals(fs.readFileSync(path)))
    }))

  it("quantizes Q8_0 as ggml's reference: d = amax/127 as f16, round half away from zero", () => {
    const block = new Float32Array(32)
    block[0] = 127
    block[1] = 2.5 // x * (1/d) = 2.5 exactly -> 3
    block[2] = -2.5 // -> -3 (Math.round would give -2)
    block[3] = -127
    block[4] = 0.49
    block[5] = 63.5
    const bytes = quantizeQ8_0(Float32Array.from([...block, ...new Float32Array(32)]))
    assert.strictEqual(bytes.length, 68)
    assert.strictEqual(bytes[0]! | (bytes[1]! << 8), 0x3c00) // d = 1.0
    assert.deepStrictEqual(Array.from(new Int8Array(bytes.buffer, 2, 6)), [127, 3, -3, -127, 0, 64])
    assert.deepStrictEqual(Array.from(bytes.subarray(34, 68)), new Array(34).fill(0)) // all-zero block: d = 0, q = 0
    // d = 0.1/127 is not a float16: stored rounded, q computed with the unrounded 1/d
    const small = quantizeQ8_0(Float32Array.from({ length: 32 }, (_, j) => (j - 16) / 160))
    const d = Math.fround(0.1 / 127)
    assert.strictEqual(small[0]! | (small[1]! << 8), f32ToF16(d))
    const id = Math.fround(1 / d)
    const expected = Array.from({ length: 32 }, (_, j) => {
      const x = Math.fround(Math.fround((j - 16) / 160) * id)
      return Math.sign(x) * Math.floor(Math.abs(x) + 0.5)
    })
    assert.deepStrictEqual(Array.from(new Int8Array(small.buffer, 2, 32)), expected)
    assert.throws(() => quantizeQ8_0(new Float32Array(31)), /multiple of 32/)
  })
})

/** float16 bits of a small value chosen to be exact */
const h = (x: number) => f32ToF16(x)
const put16 = (bytes: Uint8Array, at: number, bits: number) => { bytes[at] = bits & 0xff; bytes[at + 1] = bits >> 8 }

/** Packs eight 6-bit scales and mins into ggml's 12-byte K-quant scale layout (the inverse of get_scale_min_k4). */
const packScales = (scales: ReadonlyArray<number>, mins: ReadonlyArray<number>) => {
  const out = new Uint8Array(12)
  for (let j = 0; j < 4; j++) {
    out[j] = (scales[j]! & 63) | ((scales[j + 4]! >> 4) << 6)
    out[j + 4] = (mins[j]! & 63) | ((mins[j + 4]! >> 4) << 6)
    out[j + 8] = (scales[j + 4]! & 15) | ((mins[j + 4]! & 15) << 4)
  }
  return out
}

describe("dequantization of hand-built blocks", () => {
  it("Q4_0: low nibbles are elements 0-15, high nibbles 16-31, value d*(q-8)", () => {
    const block = new Uint8Array(20) // 18 bytes + room: the buffer must be 4-aligned only at its start
    put16(block, 0, h(0.5))
    const qs = bytesOfSeed(16, 3)
    block.set(qs, 2)
    const out = dequantize(GgmlType.Q4_0, block, 32)
    for (let e = 0; e < 32; e++) {
      const q = e < 16 ? qs[e]! & 15 : qs[e - 16]! >> 4
      assert.strictEqual(out[e], 0.5 * (q - 8), `element ${e}`)
    }
  })

  it("Q4_1: d * q + m; Q5_0: d * (q - 16) and Q5_1: d * q + m with the fifth bit of element j at bit j of qh", () => {
    const qs = bytesOfSeed(16, 5)
    const q41 = new Uint8Array(20)
    put16(q41, 0, h(0.25))
    put16(q41, 2, h(-1.5))
    q41.set(qs, 4)
    const qh = Uint8Array.of(0b10110010, 0x0f, 0xa5, 0x3c)
    const qhBit = (e: number) => (qh[e >> 3]! >> (e & 7)) & 1
    const q50 = new Uint8Array(24)
    put16(q50, 0, h(0.5))
    q50.set(qh, 2)
    q50.set(qs, 6)
    const q51 = new Uint8Array(24)
    put16(q51, 0, h(0.125))
    put16(q51, 2, h(2))
    q51.set(qh, 4)
    q51.set(qs, 8)
    const a = dequantize(GgmlType.Q4_1, q41, 32), b = dequantize(GgmlType.Q5_0, q50, 32), c = dequantize(GgmlType.Q5_1, q51, 32)
    for (let e = 0; e < 32; e++) {
      const nibble = e < 16 ? qs[e]! & 15 : qs[e - 16]! >> 4
      assert.strictEqual(a[e], 0.25 * nibble - 1.5, `Q4_1 element ${e}`)
      assert.strictEqual(b[e], 0.5 * ((nibble | (qhBit(e) << 4)) - 16), `Q5_0 element ${e}`)
      assert.strictEqual(c[e], 0.125 * (nibble | (qhBit(e) << 4)) + 2, `Q5_1 element ${e}`)
    }
  })

  it("Q8_0: d * int8", () => {
    const block = new Uint8Array(36)
    put16(block, 0, h(0.25))
    const qs = Int8Array.from({ length: 32 }, (_, i) => i * 8 - 128)
    block.set(new Uint8Array(qs.buffer), 2)
    assert.deepStrictEqual(Array.from(dequantize(GgmlType.Q8_0, block, 32)), Array.from(qs, (q) => q * 0.25))
  })

  it("Q4_K: sub-block e>>5 with 6-bit scale and min; 32 bytes per 64 elements, low then high nibbles", () => {
    const scales = [1, 63, 17, 40, 5, 33, 62, 48]
    const mins = [0, 63, 9, 21, 50, 3, 17, 36]
    const qs = bytesOfSeed(128, 11)
    const block = new Uint8Array(144)
    put16(block, 0, h(0.125))
    put16(block, 2, h(0.0625))
    block.set(packScales(scales, mins), 4)
    block.set(qs, 16)
    const out = dequantize(GgmlType.Q4_K, block, 256)
    for (let e = 0; e < 256; e++) {
      const sub = e >> 5, byte = qs[(e >> 6) * 32 + (e & 31)]!
      const q = sub % 2 === 0 ? byte & 15 : byte >> 4
      assert.strictEqual(out[e], Math.fround(0.125 * scales[sub]! * q - 0.0625 * mins[sub]!), `element ${e}`)
    }
  })

  it("Q5_K: as Q4_K plus bit (e>>5) of qh[e&31] as the fifth bit", () => {
    const scales = [2, 7, 63, 31, 16, 45, 1, 60]
    const mins = [5, 0, 63, 12, 40, 22, 33, 8]
    const qh = bytesOfSeed(32, 21)
    const qs = bytesOfSeed(128, 22)
    const block = new Uint8Array(176)
    put16(block, 0, h(0.25))
    put16(block, 2, h(0.5))
    block.set(packScales(scales, mins), 4)
    block.set(qh, 16)
    block.set(qs, 48)
    const out = dequantize(GgmlType.Q5_K, block, 256)
    for (let e = 0; e < 256; e++) {
      const sub = e >> 5, byte = qs[(e >> 6) * 32 + (e & 31)]!
      const q = (sub % 2 === 0 ? byte & 15 : byte >> 4) + (((qh[e & 31]! >> sub) & 1) << 4)
      assert.strictEqual(out[e], Math.fround(0.25 * scales[sub]! * q - 0.5 * mins[sub]!), `element ${e}`)
    }
  })

  it("Q6_K: 4 low bits from ql, 2 high bits from qh, signed 8-bit scale per 16 elements, minus 32", () => {
    const ql = bytesOfSeed(128, 31)
    const qh = bytesOfSeed(64, 32)
    const scales = Int8Array.from({ length: 16 }, (_, i) => (i * 37) % 255 - 127)
    const block = new Uint8Array(212)
    block.set(ql, 0)
    block.set(qh, 128)
    block.set(new Uint8Array(scales.buffer), 192)
    put16(block, 208, h(0.0078125))
    const out = dequantize(GgmlType.Q6_K, block, 256)
    for (let e = 0; e < 256; e++) {
      const half = e >> 7, quarter = (e & 127) >> 5, l = e & 31
      const low = ql[half * 64 + (quarter & 1) * 32 + l]!
      const nibble = quarter >= 2 ? low >> 4 : low & 15
      const high = (qh[half * 32 + l]! >> (2 * quarter)) & 3
      const scale = scales[half * 8 + quarter * 2 + (l >> 4)]!
      assert.strictEqual(out[e], Math.fround(0.0078125 * scale * ((nibble | (high << 4)) - 32)), `element ${e}`)
    }
  })

  it("decodes F16 and BF16 bits", () => {
    const buffer = new Uint8Array(8)
    new Uint16Array(buffer.buffer).set([0x3c00, 0xc000, 0x7bff, 0x0001])
    assert.deepStrictEqual(Array.from(dequantize(GgmlType.F16, buffer, 4)), [1, -2, 65504, f16ToF32(1)])
    new Uint16Array(buffer.buffer).set([0x3f80, 0xc049, 0, 0x8000])
    assert.deepStrictEqual(Array.from(dequantize(GgmlType.BF16, buffer, 4)), [1, -3.140625, 0, -0])
  })
})

describe("GGUF errors name the file and the tensor", () => {
  const smallModel = (path: string, tensors?: Array<GgufTensorToWrite>) =>
    writeGguf(path, {
      metadata: [["general.architecture", gguf.string("llama")]],
      tensors: tensors ?? [
        { name: "a", shape: [2, 32], type: "F32", data: seeded(64, 1) },
        { name: "b", shape: [2, 32], type: "F32", data: seeded(64, 2) }
      ]
    })

  it.effect("bad magic, bad version, truncated files, unsupported types", () =>
    Effect.gen(function*() {
      const path = join(dir, "model.gguf")
      yield* smallModel(path)
      const bytes = fs.readFileSync(path)

      const magic = join(dir, "magic.gguf")
      fs.writeFileSync(magic, Buffer.concat([Buffer.from("GGML"), bytes.subarray(4)]))
      assert.strictEqual((yield* failure(readGgufHeader(magic))).message, `${magic}: not a GGUF file: bad magic "GGML" (expected "GGUF")`)

      const version = join(dir, "version.gguf")
      const v = Buffer.from(bytes)
      v.writeUInt32LE(1, 4)
      fs.writeFileSync(version, v)
      assert.include((yield* failure(readGgufHeader(version))).message, "unsupported GGUF version 1")

      const truncated = join(dir, "truncated.gguf")
      fs.writeFileSync(truncated, bytes.subarray(0, bytes.length - 100))
      const e = yield* failure(readGgufHeader(truncated))
      assert.strictEqual(e.file, truncated)
      assert.strictEqual(e.tensor, "b")
      assert.include(e.message, "truncated")

      const header = join(dir, "header.gguf")
      fs.writeFileSync(header, bytes.subarray(0, 30))
      assert.include((yield* failure(readGgufHeader(header))).message, "truncated")

      const q81 = join(dir, "q8_1.gguf")
      yield* smallModel(q81, [{ name: "blk.0.attn_q.weight", shape: [1, 32], rawType: GgmlType.Q8_1, raw: new Uint8Array(36) }])
      const unsupported = yield* failure(Effect.scoped(Effect.flatMap(openGguf(q81), (f) => f.readTensor("blk.0.attn_q.weight"))))
      assert.strictEqual(unsupported.tensor, "blk.0.attn_q.weight")
      assert.include(unsupported.message, `${q81}: blk.0.attn_q.weight: unsupported tensor type Q8_1 (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)`)

      const iq = join(dir, "iq.gguf")
      const raw = Buffer.from(bytes)
      // retype tensor "a" as IQ2_XXS (a layout we do not read): its info says type at a known place
      const typeAt = raw.indexOf(Buffer.from([1, 0, 0, 0, 0, 0, 0, 0, 0x61])) // name length 1 + "a"
      raw.writeUInt32LE(GgmlType.IQ2_XXS, typeAt + 9 + 4 + 16)
      fs.writeFileSync(iq, raw)
      const iqError = yield* failure(Effect.scoped(Effect.flatMap(openGguf(iq), (f) => f.readTensor("a"))))
      assert.strictEqual(iqError.message, `${iq}: a: unsupported tensor type IQ2_XXS`)

      const badRow = yield* failure(writeGguf(join(dir, "row.gguf"), { metadata: [], tensors: [{ name: "w", shape: [2, 20], type: "Q8_0", data: new Float32Array(40) }] }))
      assert.include(badRow.message, "w: row size 20 is not a multiple of the Q8_0 block size 32")
    }))
})
