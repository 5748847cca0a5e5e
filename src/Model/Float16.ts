/**
 * Half-precision conversions over whole typed arrays (no per-element allocation): IEEE binary16 and bfloat16 to and
 * from float32. float32 -> float16 rounds to nearest even, as numpy's `astype(float16)` and x86 F16C (ggml's
 * GGML_FP32_TO_FP16) do, so what we write matches what llama.cpp's converter writes.
 */

const f16Table: Float32Array = (() => {
  const table = new Float32Array(65536)
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1
    const exponent = (h >> 10) & 0x1f
    const mantissa = h & 0x3ff
    table[h] = exponent === 0
      ? sign * mantissa * 2 ** -24
      : exponent === 31
      ? (mantissa === 0 ? sign * Infinity : NaN)
      : sign * (1 + mantissa / 1024) * 2 ** (exponent - 15)
  }
  return table
})()

/** float16 bits -> float32 value */
export const f16ToF32 = (bits: number): number => f16Table[bits & 0xffff]!

/** Decodes float16 bits into `out` (allocated when not given). */
export const f16ArrayToF32 = (bits: Uint16Array, out: Float32Array = new Float32Array(bits.length)): Float32Array => {
  const table = f16Table
  for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]!]!
  return out
}

/** Decodes bfloat16 bits into `out`: a bfloat16 is the top half of a float32. */
export const bf16ArrayToF32 = (bits: Uint16Array, out: Float32Array = new Float32Array(bits.length)): Float32Array => {
  const words = new Uint32Array(out.buffer, out.byteOffset, out.length)
  for (let i = 0; i < bits.length; i++) words[i] = bits[i]! << 16
  return out
}

const scratchF32 = new Float32Array(1)
const scratchU32 = new Uint32Array(scratchF32.buffer)

/** float32 -> float16 bits, round to nearest even; overflow gives ±Inf, NaN stays NaN. */
export const f32ToF16 = (value: number): number => {
  scratchF32[0] = value
  return f32BitsToF16(scratchU32[0]!)
}

const f32BitsToF16 = (u: number): number => {
  const sign = (u >>> 16) & 0x8000
  const exponent = (u >>> 23) & 0xff
  let mantissa = u & 0x7fffff
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa !== 0 ? 0x200 : 0)
  const e = exponent - 112 // rebias 127 -> 15
  if (e >= 31) return sign | 0x7c00
  if (e <= 0) {
    if (e < -10) return sign
    mantissa |= 0x800000
    const shift = 14 - e
    let half = mantissa >>> shift
    const rest = mantissa & ((1 << shift) - 1)
    const halfway = 1 << (shift - 1)
    if (rest > halfway || (rest === halfway && (half & 1) === 1)) half++
    return sign | half
  }
  let half = (e << 10) | (mantissa >>> 13)
  const rest = mantissa & 0x1fff
  if (rest > 0x1000 || (rest === 0x1000 && (half & 1) === 1)) half++ // a carry into the exponent is right (up to Inf)
  return sign | half
}

/** Encodes float32 values as float16 bits into `out`, in plain JS (any Node). */
export const f32ArrayToF16Portable = (values: Float32Array, out: Uint16Array = new Uint16Array(values.length)): Uint16Array => {
  const words = new Uint32Array(values.buffer, values.byteOffset, values.length)
  for (let i = 0; i < values.length; i++) out[i] = f32BitsToF16(words[i]!)
  return out
}

// Node 24's native Float16Array converts with the same rounding, about 2.5x faster; Node 22 lacks it
const NativeFloat16Array = (globalThis as { Float16Array?: new(buffer: ArrayBufferLike, offset: number, length: number) => { set(values: ArrayLike<number>): void } }).Float16Array

/** Encodes float32 values as float16 bits into `out` (round to nearest even). */
export const f32ArrayToF16 = (values: Float32Array, out: Uint16Array = new Uint16Array(values.length)): Uint16Array => {
  if (NativeFloat16Array === undefined) return f32ArrayToF16Portable(values, out)
  new NativeFloat16Array(out.buffer, out.byteOffset, out.length).set(values)
  return out
}

/** Encodes float32 values as bfloat16 bits (round to nearest even, NaN kept quiet) into `out`. */
export const f32ArrayToBf16 = (values: Float32Array, out: Uint16Array = new Uint16Array(values.length)): Uint16Array => {
  const words = new Uint32Array(values.buffer, values.byteOffset, values.length)
  for (let i = 0; i < values.length; i++) {
    const u = words[i]!
    out[i] = (u & 0x7fffffff) > 0x7f800000 ? ((u >>> 16) | 0x40) : ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff
  }
  return out
}
