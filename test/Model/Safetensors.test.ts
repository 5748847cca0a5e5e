import { assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import * as fs from "node:fs"
import { join } from "node:path"
import { bf16ArrayToF32, f16ArrayToF32, f32ArrayToBf16, f32ArrayToF16, f32ArrayToF16Portable, f32ToF16 } from "../../src/Model/Float16.ts"
import { openSafetensors, readSafetensorsHeader, streamSafetensors, writeSafetensors } from "../../src/Model/Safetensors.ts"
import { f16round, fileFailure as failure, seeded, tempDir } from "./WeightFileFixtures.ts"

const dir = tempDir("safetensors-test")

/** Builds a safetensors file by hand from the spec, independent of our writer. */
const handMade = (header: unknown, data: Uint8Array, lengthOverride?: bigint) => {
  const json = Buffer.from(JSON.stringify(header))
  const out = Buffer.alloc(8 + json.length + data.length)
  out.writeBigUInt64LE(lengthOverride ?? BigInt(json.length), 0)
  json.copy(out, 8)
  Buffer.from(data).copy(out, 8 + json.length)
  return out
}

describe("Float16 conversions", () => {
  it("rounds float32 to float16 to nearest even, like Math.f16round", () => {
    const specials = [0, -0, 1, -1, 65504, 65519.99, 65520, 1e9, -1e9, 5.96e-8, 2.98e-8, 2.99e-8, 1e-8, 6.1e-5, 0.1, 1 / 3,
      1.00048828125, 1.00146484375, Infinity, -Infinity]
    const values = Float32Array.from([...specials, ...seeded(20000, 7, 70000), ...seeded(20000, 8, 1e-4)])
    for (const encode of [f32ArrayToF16, f32ArrayToF16Portable]) {
      const decoded = f16ArrayToF32(encode(values))
      for (let i = 0; i < values.length; i++) {
        assert.strictEqual(Object.is(decoded[i], f16round(values[i]!)), true, `value ${values[i]} -> ${decoded[i]}`)
      }
    }
    assert.deepStrictEqual(f32ArrayToF16Portable(Float32Array.of(NaN, -0, 1e-30)), Uint16Array.of(0x7e00, 0x8000, 0))
    assert.strictEqual(f32ToF16(1.00048828125), 0x3c00) // halfway between 1 and next: ties to even (down)
    assert.strictEqual(f32ToF16(1.00146484375), 0x3c02) // halfway, odd below: ties up
    assert.isTrue(Number.isNaN(f16ArrayToF32(f32ArrayToF16(Float32Array.of(NaN)))[0]))
  })

  it("converts bfloat16 with round to nearest even", () => {
    const values = Float32Array.of(1, -2.5, 1.00390625, 1.01171875, 3.140625, -1.00390625, 1.005859375)
    const back = bf16ArrayToF32(f32ArrayToBf16(values))
    assert.deepStrictEqual(Array.from(back), [1, -2.5, 1, 1.015625, 3.140625, -1, 1.0078125])
    assert.isTrue(Number.isNaN(bf16ArrayToF32(f32ArrayToBf16(Float32Array.of(NaN)))[0]))
  })
})

describe("Safetensors", () => {
  it.effect("round-trips F32, F16 and BF16 tensors with metadata", () =>
    Effect.gen(function*() {
      const path = join(dir, "roundtrip.safetensors")
      const a = seeded(6 * 5, 1)
      const b = seeded(7, 2, 100)
      const c = seeded(4 * 3 * 2, 3)
      yield* writeSafetensors(path, [
        { name: "a.weight", shape: [6, 5], data: a },
        { name: "b", shape: [7], dtype: "F16", data: () => b },
        { name: "c", shape: [4, 3, 2], dtype: "BF16", data: c }
      ], { metadata: { format: "pt" } })
      const bytes = fs.readFileSync(path)
      const headerLength = Number(bytes.readBigUInt64LE(0))
      assert.strictEqual(headerLength % 8, 0)
      const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString())
      assert.deepStrictEqual(header.__metadata__, { format: "pt" })
      assert.deepStrictEqual(header["b"], { dtype: "F16", shape: [7], data_offsets: [120, 134] })
      assert.strictEqual(bytes.length, 8 + headerLength + 120 + 14 + 48)

      const read = yield* readSafetensorsHeader(path)
      assert.deepStrictEqual(read.metadata, { format: "pt" })
      assert.deepStrictEqual(read.tensors.map((t) => [t.name, t.dtype, t.shape]), [
        ["a.weight", "F32", [6, 5]], ["b", "F16", [7]], ["c", "BF16", [4, 3, 2]]
      ])
      const tensors = Array.from(yield* Stream.runCollect(streamSafetensors(path)))
      assert.deepStrictEqual(Array.from(tensors[0]!.data), Array.from(a))
      assert.deepStrictEqual(Array.from(tensors[1]!.data), Array.from(b, f16round))
      assert.deepStrictEqual(Array.from(tensors[2]!.data), Array.from(bf16ArrayToF32(f32ArrayToBf16(c))))
      assert.deepStrictEqual(tensors[2]!.shape, [4, 3, 2])
    }))

  it.effect("reads a file made by hand from the spec, one tensor at a time", () =>
    Effect.gen(function*() {
      const path = join(dir, "hand.safetensors")
      const data = new Uint8Array(8 + 4 + 4)
      const view = new DataView(data.buffer)
      view.setFloat32(0, 1.5, true)
      view.setFloat32(4, -2, true)
      view.setUint16(8, 0x3c00, true) // f16 1.0
      view.setUint16(10, 0xc000, true) // f16 -2.0
      view.setUint16(12, 0x4049, true) // bf16 3.140625
      view.setUint16(14, 0x0000, true)
      fs.writeFileSync(path, handMade({
        x: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
        h: { dtype: "F16", shape: [1, 2], data_offsets: [8, 12] },
        g: { dtype: "BF16", shape: [2], data_offsets: [12, 16] }
      }, data))
      const result = yield* Effect.scoped(Effect.gen(function*() {
        const file = yield* openSafetensors(path)
        return [yield* file.readTensor("g"), yield* file.readTensor("x"), yield* file.readTensor("h")]
      }))
      assert.deepStrictEqual(result.map((t) => [t.name, t.shape, Array.from(t.data)]), [
        ["g", [2], [3.140625, 0]], ["x", [2], [1.5, -2]], ["h", [1, 2], [1, -2]]
      ])
    }))

  it.effect("reports malformed files naming the file and the tensor", () =>
    Effect.gen(function*() {
      const good = handMade({ w: { dtype: "F32", shape: [2, 2], data_offsets: [0, 16] } }, new Uint8Array(16))
      const truncated = join(dir, "truncated.safetensors")
      fs.writeFileSync(truncated, good.subarray(0, good.length - 4))
      const e1 = yield* failure(readSafetensorsHeader(truncated))
      assert.strictEqual(e1.file, truncated)
      assert.strictEqual(e1.tensor, "w")
      assert.include(e1.message, "truncated")

      const badOffsets = join(dir, "offsets.safetensors")
      fs.writeFileSync(badOffsets, handMade({ w: { dtype: "F32", shape: [2, 2], data_offsets: [0, 12] } }, new Uint8Array(16)))
      const e2 = yield* failure(readSafetensorsHeader(badOffsets))
      assert.strictEqual(e2.tensor, "w")
      assert.include(e2.message, "data_offsets [0, 12]")

      const badDtype = join(dir, "dtype.safetensors")
      fs.writeFileSync(badDtype, handMade({ q: { dtype: "F8_E4M3", shape: [2], data_offsets: [0, 2] } }, new Uint8Array(2)))
      assert.include((yield* failure(readSafetensorsHeader(badDtype))).message, "q: unsupported dtype F8_E4M3")

      const badLength = join(dir, "length.safetensors")
      fs.writeFileSync(badLength, handMade({}, new Uint8Array(0), 1n << 40n))
      assert.include((yield* failure(readSafetensorsHeader(badLength))).message, "header length")

      const badJson = join(dir, "json.safetensors")
      const json = Buffer.from("{not json")
      const raw = Buffer.alloc(8 + json.length)
      raw.writeBigUInt64LE(BigInt(json.length))
      json.copy(raw, 8)
      fs.writeFileSync(badJson, raw)
      assert.include((yield* failure(readSafetensorsHeader(badJson))).message, "not valid JSON")

      const badShape = join(dir, "shape.safetensors")
      fs.writeFileSync(badShape, handMade({ s: { dtype: "F32", shape: [-1], data_offsets: [0, 4] } }, new Uint8Array(4)))
      const e3 = yield* failure(readSafetensorsHeader(badShape))
      assert.strictEqual(e3.tensor, "s")

      const missing = yield* failure(Effect.scoped(Effect.flatMap(openSafetensors(truncated.replace("truncated", "nope")), () => Effect.void)))
      assert.include(missing.message, "ENOENT")

      const okPath = join(dir, "ok.safetensors")
      fs.writeFileSync(okPath, good)
      const absent = yield* failure(Effect.scoped(Effect.flatMap(openSafetensors(okPath), (f) => f.readTensor("lm_head.weight"))))
      assert.strictEqual(absent.message, `${okPath}: lm_head.weight: no such tensor in the file`)

      const wrongSize = yield* failure(writeSafetensors(join(dir, "w.safetensors"), [{ name: "t", shape: [3], data: new Float32Array(2) }]))
      assert.include(wrongSize.message, "t: has 2 values but shape [3] needs 3")
    }))
})
