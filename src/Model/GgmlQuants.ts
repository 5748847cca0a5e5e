/**
 * ggml tensor types: their block layouts, dequantization to float32, and Q8_0 quantization. Layouts follow ggml's
 * `ggml-common.h` / `ggml-quants.c` (block structs, `dequantize_row_*`, `get_scale_min_k4`, `quantize_row_q8_0_ref`).
 * Every kernel works over whole typed arrays with plain loops, one block after another, with no per-element objects.
 */
import { f16ToF32, f32ArrayToF16 } from "./Float16.ts"

/** ggml type ids (enum ggml_type) */
export const GgmlType = {
  F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q5_1: 7, Q8_0: 8, Q8_1: 9,
  Q2_K: 10, Q3_K: 11, Q4_K: 12, Q5_K: 13, Q6_K: 14, Q8_K: 15,
  IQ2_XXS: 16, IQ2_XS: 17, IQ3_XXS: 18, IQ1_S: 19, IQ4_NL: 20, IQ3_S: 21, IQ2_S: 22, IQ4_XS: 23,
  I8: 24, I16: 25, I32: 26, I64: 27, F64: 28, IQ1_M: 29, BF16: 30, TQ1_0: 34, TQ2_0: 35, MXFP4: 39
} as const
export type GgmlTypeName = keyof typeof GgmlType

const typeNames = new Map<number, GgmlTypeName>(
  (Object.entries(GgmlType) as Array<[GgmlTypeName, number]>).map(([name, id]) => [id, name])
)
export const ggmlTypeName = (type: number): string => typeNames.get(type) ?? `type ${type}`

/** elements per block and bytes per block, for the types whose size we know for sure */
const blockLayouts: Partial<Record<GgmlTypeName, readonly [number, number]>> = {
  F32: [1, 4], F16: [1, 2], BF16: [1, 2], F64: [1, 8], I8: [1, 1], I16: [1, 2], I32: [1, 4], I64: [1, 8],
  Q4_0: [32, 18], Q4_1: [32, 20], Q5_0: [32, 22], Q5_1: [32, 24], Q8_0: [32, 34], Q8_1: [32, 36],
  Q2_K: [256, 84], Q3_K: [256, 110], Q4_K: [256, 144], Q5_K: [256, 176], Q6_K: [256, 210], Q8_K: [256, 292]
}

export const blockLayout = (type: number): readonly [number, number] | undefined => {
  const name = typeNames.get(type)
  return name === undefined ? undefined : blockLayouts[name]
}

/** bytes of a tensor of `numel` elements, or undefined for a type whose layout we do not know */
export const tensorByteSize = (type: number, numel: number): number | undefined => {
  const layout = blockLayout(type)
  return layout === undefined ? undefined : (numel / layout[0]) * layout[1]
}

/** The types `dequantize` reads. */
export const dequantizableTypes: ReadonlySet<number> = new Set([
  GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1,
  GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K
])

/** The names of the readable types, for error messages. */
export const dequantizableTypeNames = (): string => Array.from(dequantizableTypes, ggmlTypeName).join(", ")

const f16At = (bytes: Uint8Array, offset: number) => f16ToF32(bytes[offset]! | (bytes[offset + 1]! << 8))

/**
 * Dequantizes `numel` elements from `bytes` (which must start at a 4-byte-aligned address, as a fresh read buffer
 * does). Throws a plain Error for a type we do not read; the caller names the file and tensor.
 */
export const dequantize = (type: number, bytes: Uint8Array, numel: number): Float32Array => {
  const out = new Float32Array(numel)
  switch (type) {
    case GgmlType.F32:
      out.set(new Float32Array(bytes.buffer, bytes.byteOffset, numel))
      return out
    case GgmlType.F16: {
      const bits = new Uint16Array(bytes.buffer, bytes.byteOffset, numel)
      for (let i = 0; i < numel; i++) out[i] = f16ToF32(bits[i]!)
      return out
    }
    case GgmlType.BF16: {
      const bits = new Uint16Array(bytes.buffer, bytes.byteOffset, numel)
      const words = new Uint32Array(out.buffer)
      for (let i = 0; i < numel; i++) words[i] = bits[i]! << 16
      return out
    }
    case GgmlType.Q8_0:
      return dequantizeQ8_0(bytes, out)
    case GgmlType.Q4_0:
      return dequantizeQ4_0(bytes, out)
    case GgmlType.Q4_1:
      return dequantizeQ4_1(bytes, out)
    case GgmlType.Q5_0:
      return dequantizeQ5(bytes, out, false)
    case GgmlType.Q5_1:
      return dequantizeQ5(bytes, out, true)
    case GgmlType.Q4_K:
      return dequantizeQ4K(bytes, out)
    case GgmlType.Q5_K:
      return dequantizeQ5K(bytes, out)
    case GgmlType.Q6_K:
      return dequantizeQ6K(bytes, out)
    default:
      throw new Error(
        `unsupported tensor type ${ggmlTypeName(type)} (supported: ${dequantizableTypeNames()})`
      )
  }
}

/** block_q8_0: f16 d, int8 qs[32]; x = d * q */
const dequantizeQ8_0 = (bytes: Uint8Array, out: Float32Array) => {
  const signed = new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  for (let b = 0, o = 0; o < out.length; b += 34, o += 32) {
    const d = f16At(bytes, b)
    for (let j = 0; j < 32; j++) out[o + j] = d * signed[b + 2 + j]!
  }
  return out
}

/** block_q4_0: f16 d, u8 qs[16]; low nibbles are elements 0..15, high nibbles 16..31; x = d * (q - 8) */
const dequantizeQ4_0 = (bytes: Uint8Array, out: Float32Array) => {
  for (let b = 0, o = 0; o < out.length; b += 18, o += 32) {
    const d = f16At(bytes, b)
    for (let j = 0; j < 16; j++) {
      const q = bytes[b + 2 + j]!
      out[o + j] = d * ((q & 0x0f) - 8)
      out[o + j + 16] = d * ((q >> 4) - 8)
    }
  }
  return out
}

/** block_q4_1: f16 d, f16 m, u8 qs[16]; nibbles as Q4_0; x = d * q + m */
const dequantizeQ4_1 = (bytes: Uint8Array, out: Float32Array) => {
  for (let b = 0, o = 0; o < out.length; b += 20, o += 32) {
    const d = f16At(bytes, b)
    const m = f16At(bytes, b + 2)
    for (let j = 0; j < 16; j++) {
      const q = bytes[b + 4 + j]!
      out[o + j] = d * (q & 0x0f) + m
      out[o + j + 16] = d * (q >> 4) + m
    }
  }
  return out
}

/**
 * block_q5_0 (22 bytes): f16 d, u32 qh, u8 qs[16]; x = d * (q - 16). block_q5_1 (24 bytes): f16 d, f16 m, u32 qh,
 * u8 qs[16]; x = d * q + m. Element j < 16 is the low nibble of qs[j] with fifth bit j of qh; element j + 16 the high
 * nibble with bit j + 16.
 */
const dequantizeQ5 = (bytes: Uint8Array, out: Float32Array, withMin: boolean) => {
  const size = withMin ? 24 : 22
  const qhAt = withMin ? 4 : 2
  for (let b = 0, o = 0; o < out.length; b += size, o += 32) {
    const d = f16At(bytes, b)
    const m = withMin ? f16At(bytes, b + 2) : 0
    const offset = withMin ? 0 : -16
    const qh = (bytes[b + qhAt]! | (bytes[b + qhAt + 1]! << 8) | (bytes[b + qhAt + 2]! << 16) | (bytes[b + qhAt + 3]! << 24)) >>> 0
    for (let j = 0; j < 16; j++) {
      const q = bytes[b + qhAt + 4 + j]!
      const low = (q & 0x0f) | (((qh >>> j) & 1) << 4)
      const high = (q >> 4) | (((qh >>> (j + 16)) & 1) << 4)
      out[o + j] = d * (low + offset) + m
      out[o + j + 16] = d * (high + offset) + m
    }
  }
  return out
}

/** The 6-bit scale and min of sub-block `j` (0..7) packed in the 12 `scales` bytes at `s` (ggml's get_scale_min_k4). */
const scaleMinK4 = (bytes: Uint8Array, s: number, j: number, into: Int32Array) => {
  if (j < 4) {
    into[0] = bytes[s + j]! & 63
    into[1] = bytes[s + j + 4]! & 63
  } else {
    into[0] = (bytes[s + j + 4]! & 0x0f) | ((bytes[s + j - 4]! >> 6) << 4)
    into[1] = (bytes[s + j + 4]! >> 4) | ((bytes[s + j]! >> 6) << 4)
  }
}

/**
 * block_q4_K (144 bytes): f16 d, f16 dmin, u8 scales[12], u8 qs[128]. Each 64 elements use 32 qs bytes: the low
 * nibbles with sub-block scale/min 2i, the high nibbles with 2i+1; x = d*sc*q - dmin*m.
 */
const dequantizeQ4K = (bytes: Uint8Array, out: Float32Array) => {
  const sm = new Int32Array(2)
  for (let b = 0, o = 0; o < out.length; b += 144, o += 256) {
    const d = f16At(bytes, b)
    const dmin = f16At(bytes, b + 2)
    for (let chunk = 0; chunk < 4; chunk++) {
      const q = b + 16 + chunk * 32
      const y = o + chunk * 64
      scaleMinK4(bytes, b + 4, 2 * chunk, sm)
      const d1 = d * sm[0]!, m1 = dmin * sm[1]!
      scaleMinK4(bytes, b + 4, 2 * chunk + 1, sm)
      const d2 = d * sm[0]!, m2 = dmin * sm[1]!
      for (let l = 0; l < 32; l++) {
        out[y + l] = d1 * (bytes[q + l]! & 0x0f) - m1
        out[y + 32 + l] = d2 * (bytes[q + l]! >> 4) - m2
      }
    }
  }
  return out
}

/**
 * block_q5_K (176 bytes): f16 d, f16 dmin, u8 scales[12], u8 qh[32], u8 qs[128]. As Q4_K, plus a fifth bit per
 * element from qh: chunk c uses bit 2c for the low nibbles and bit 2c+1 for the high nibbles.
 */
const dequantizeQ5K = (bytes: Uint8Array, out: Float32Array) => {
  const sm = new Int32Array(2)
  for (let b = 0, o = 0; o < out.length; b += 176, o += 256) {
    const d = f16At(bytes, b)
    const dmin = f16At(bytes, b + 2)
    const qh = b + 16
    for (let chunk = 0; chunk < 4; chunk++) {
      const ql = b + 48 + chunk * 32
      const y = o + chunk * 64
      const u1 = 1 << (2 * chunk), u2 = 2 << (2 * chunk)
      scaleMinK4(bytes, b + 4, 2 * chunk, sm)
      const d1 = d * sm[0]!, m1 = dmin * sm[1]!
      scaleMinK4(bytes, b + 4, 2 * chunk + 1, sm)
      const d2 = d * sm[0]!, m2 = dmin * sm[1]!
      for (let l = 0; l < 32; l++) {
        const h = bytes[qh + l]!
        out[y + l] = d1 * ((bytes[ql + l]! & 0x0f) + (h & u1 ? 16 : 0)) - m1
        out[y + 32 + l] = d2 * ((bytes[ql + l]! >> 4) + (h & u2 ? 16 : 0)) - m2
      }
    }
  }
  return out
}

/**
 * block_q6_K (210 bytes): u8 ql[128], u8 qh[64], int8 scales[16], f16 d. Each half (128 elements) uses 64 ql bytes,
 * 32 qh bytes and 8 scales; element = d * scale[16-element group] * (6-bit q - 32).
 */
const dequantizeQ6K = (bytes: Uint8Array, out: Float32Array) => {
  const signed = new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  for (let b = 0, o = 0; o < out.length; b += 210, o += 256) {
    const d = f16At(bytes, b + 208)
    for (let half = 0; half < 2; half++) {
      const ql = b + half * 64
      const qh = b + 128 + half * 32
      const sc = b + 192 + half * 8
      const y = o + half * 128
      for (let l = 0; l < 32; l++) {
        const is = l >> 4
        const h = bytes[qh + l]!
        const q1 = ((bytes[ql + l]! & 0x0f) | ((h & 3) << 4)) - 32
        const q2 = ((bytes[ql + l + 32]! & 0x0f) | (((h >> 2) & 3) << 4)) - 32
        const q3 = ((bytes[ql + l]! >> 4) | (((h >> 4) & 3) << 4)) - 32
        const q4 = ((bytes[ql + l + 32]! >> 4) | (((h >> 6) & 3) << 4)) - 32
        out[y + l] = d * signed[sc + is]! * q1
        out[y + l + 32] = d * signed[sc + is + 2]! * q2
        out[y + l + 64] = d * signed[sc + is + 4]! * q3
        out[y + l + 96] = d * signed[sc + is + 6]! * q4
      }
    }
  }
  return out
}

const fround = Math.fround

/**
 * Q8_0 quantization exactly as ggml's quantize_row_q8_0_ref: per 32 values, d = amax/127 (float32), q =
 * roundf(x * (1/d)) (round half away from zero), d stored as float16.
 */
export const quantizeQ8_0 = (values: Float32Array): Uint8Array => {
  if (values.length % 32 !== 0) throw new Error(`Q8_0 needs a multiple of 32 values per row, got ${values.length}`)
  const blocks = values.length / 32
  const out = new Uint8Array(blocks * 34)
  const signed = new Int8Array(out.buffer)
  const dBits = new Uint16Array(1)
  const dValue = new Float32Array(1)
  for (let b = 0; b < blocks; b++) {
    const x = b * 32
    let amax = 0
    for (let j = 0; j < 32; j++) {
      const a = Math.abs(values[x + j]!)
      if (a > amax) amax = a
    }
    const d = fround(amax / 127)
    const id = d !== 0 ? fround(1 / d) : 0
    dValue[0] = d
    f32ArrayToF16(dValue, dBits)
    out[b * 34] = dBits[0]! & 0xff
    out[b * 34 + 1] = dBits[0]! >> 8
    for (let j = 0; j < 32; j++) {
      const v = fround(values[x + j]! * id)
      signed[b * 34 + 2 + j] = v < 0 ? -Math.round(-v) : Math.round(v)
    }
  }
  return out
}
