/**
 * QLoRA's 4-bit NormalFloat (NF4) base weights, as bitsandbytes stores them:
 * - weights in blocks of 64, each block scaled by its absmax and every value replaced by the index of the
 *   nearest of 16 NF4 levels (two 4-bit indices per byte, first element in the high nibble);
 * - double quantization: the fp32 absmax scales minus their mean are themselves quantized to 8 bits with
 *   bitsandbytes' signed dynamic code, in blocks of 256 scales, each with one fp32 scale (QLoRA paper §3).
 *
 * The layer dequantizes its weight on the fly in `apply`, and again in the backward pass (a custom gradient
 * that saves only the input), so no dense copy of a frozen base weight outlives one projection and no
 * gradient reaches it.
 */
import * as tf from "@tensorflow/tfjs-core"
import type { LinearLayer } from "./ModelContracts.ts"

/** bitsandbytes' NF4 code book (`get_4bit_type("nf4")`): quantiles of N(0,1) normalized to [-1, 1], exact 0. */
export const NF4_CODE: Float32Array = Float32Array.of(
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
  -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0
)

/** bitsandbytes' `create_dynamic_map(signed=True)`: the 8-bit code used for the double-quantized scales. */
export const createDynamicMap = (): Float32Array => {
  const maxExponentBits = 7
  const nonSignBits = 7
  const data: Array<number> = []
  for (let i = 0; i < maxExponentBits; i++) {
    const fractionItems = 2 ** (i + nonSignBits - maxExponentBits) + 1
    const scale = 10 ** (-(maxExponentBits - 1) + i)
    for (let k = 0; k < fractionItems - 1; k++) {
      // torch.linspace(0.1, 1, n) then midpoints, computed in float32 as torch does
      const lo = Math.fround(0.1 + (0.9 * k) / (fractionItems - 1))
      const hi = Math.fround(0.1 + (0.9 * (k + 1)) / (fractionItems - 1))
      const mean = Math.fround((lo + hi) / 2)
      data.push(scale * mean, -scale * mean)
    }
  }
  data.push(0, 1)
  data.sort((a, b) => a - b)
  return Float32Array.from(data)
}
export const DYNAMIC_8BIT_CODE: Float32Array = createDynamicMap()

/** Index of the nearest entry of a sorted code book (ties to the lower entry). */
const nearest = (code: Float32Array, x: number): number => {
  let lo = 0
  let hi = code.length - 1
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1
    if (code[mid]! <= x) lo = mid
    else hi = mid
  }
  return x - code[lo]! <= code[hi]! - x ? lo : hi
}

export interface Nf4Options {
  readonly blockSize?: number
  readonly doubleQuant?: boolean
  readonly scaleBlockSize?: number
}

/** A weight [out, in] held as NF4. */
export interface Nf4Tensor {
  readonly shape: readonly [number, number]
  readonly blockSize: number
  /** two 4-bit code indices per byte */
  readonly packed: Uint8Array
  /** per block of `blockSize` weights: fp32 absmax, or (double quant) the 8-bit code of absmax - offset */
  readonly absmax: Float32Array | Uint8Array
  /** double quant only: one fp32 scale per `scaleBlockSize` absmax values, and the mean subtracted first */
  readonly scaleBlockSize: number
  readonly scaleAbsmax: Float32Array
  readonly scaleOffset: number
}

export const quantizeNf4 = (
  data: Float32Array,
  shape: readonly [number, number],
  options: Nf4Options = {}
): Nf4Tensor => {
  const blockSize = options.blockSize ?? 64
  const scaleBlockSize = options.scaleBlockSize ?? 256
  const n = data.length
  if (n !== shape[0] * shape[1]) throw new Error(`NF4: ${n} values do not fill shape [${shape.join(", ")}]`)
  const blocks = Math.ceil(n / blockSize)
  const absmax = new Float32Array(blocks)
  const packed = new Uint8Array(Math.ceil(n / 2))
  for (let b = 0; b < blocks; b++) {
    const end = Math.min(n, (b + 1) * blockSize)
    let m = 0
    for (let i = b * blockSize; i < end; i++) m = Math.max(m, Math.abs(data[i]!))
    absmax[b] = m
    const inv = m === 0 ? 0 : 1 / m
    for (let i = b * blockSize; i < end; i++) {
      const q = nearest(NF4_CODE, data[i]! * inv)
      packed[i >> 1] = (i & 1) === 0 ? (q << 4) : (packed[i >> 1]! | q)
    }
  }
  if (options.doubleQuant === false) {
    return { shape, blockSize, packed, absmax, scaleBlockSize, scaleAbsmax: new Float32Array(0), scaleOffset: 0 }
  }
  let sum = 0
  for (let b = 0; b < blocks; b++) sum += absmax[b]!
  const scaleOffset = Math.fround(sum / blocks)
  const scaleBlocks = Math.ceil(blocks / scaleBlockSize)
  const scaleAbsmax = new Float32Array(scaleBlocks)
  const codes = new Uint8Array(blocks)
  for (let s = 0; s < scaleBlocks; s++) {
    const end = Math.min(blocks, (s + 1) * scaleBlockSize)
    let m = 0
    for (let b = s * scaleBlockSize; b < end; b++) m = Math.max(m, Math.abs(absmax[b]! - scaleOffset))
    scaleAbsmax[s] = m
    const inv = m === 0 ? 0 : 1 / m
    for (let b = s * scaleBlockSize; b < end; b++) codes[b] = nearest(DYNAMIC_8BIT_CODE, (absmax[b]! - scaleOffset) * inv)
  }
  return { shape, blockSize, packed, absmax: codes, scaleBlockSize, scaleAbsmax, scaleOffset }
}

/** The per-block fp32 scales, undoing double quantization when it was used. */
const blockScales = (q: Nf4Tensor): Float32Array => {
  if (q.absmax instanceof Float32Array) return q.absmax
  const out = new Float32Array(q.absmax.length)
  for (let b = 0; b < out.length; b++) {
    out[b] = DYNAMIC_8BIT_CODE[q.absmax[b]!]! * q.scaleAbsmax[Math.floor(b / q.scaleBlockSize)]! + q.scaleOffset
  }
  return out
}

/** NF4 levels of the high and low nibble of every byte value, so one lookup decodes a byte without branches. */
const HIGH = Float32Array.from({ length: 256 }, (_, b) => NF4_CODE[b >> 4]!)
const LOW = Float32Array.from({ length: 256 }, (_, b) => NF4_CODE[b & 15]!)

export const dequantizeNf4 = (q: Nf4Tensor, out = new Float32Array(q.shape[0] * q.shape[1])): Float32Array => {
  const scales = blockScales(q)
  const { packed, blockSize } = q
  if (blockSize % 2 !== 0) throw new Error(`NF4: block size ${blockSize} must be even`)
  // hot path (every forward and backward of QLoRA): block by block, one byte = two weights
  const half = blockSize >> 1
  for (let b = 0, j = 0; j < packed.length; b++) {
    const scale = scales[b]!
    const end = Math.min(packed.length, j + half)
    for (; j < end; j++) {
      const byte = packed[j]!
      out[2 * j] = HIGH[byte]! * scale
      out[2 * j + 1] = LOW[byte]! * scale // past the end for an odd count: a typed array ignores it
    }
  }
  return out
}

/** Bytes held by the quantized weight (codes + scales). */
export const nf4Bytes = (q: Nf4Tensor): number =>
  q.packed.byteLength + q.absmax.byteLength + q.scaleAbsmax.byteLength + (q.absmax instanceof Uint8Array ? 4 : 0)

/**
 * x Wᵀ through an explicit transpose: tfjs-backend-wasm's matMul with a transposed operand runs about 10x slower than
 * a transpose plus a plain matMul (bench:train, BENCHMARKS.md), and these frozen products are most of a step.
 */
export const matMulTransposed = (x: tf.Tensor, w: tf.Tensor): tf.Tensor => {
  const wt = tf.transpose(w)
  const y = tf.matMul(x as tf.Tensor2D, wt as tf.Tensor2D)
  wt.dispose()
  return y
}

/**
 * A frozen dense layer y = x Wᵀ (W [out, in], not owned) whose custom gradient gives only dx = dy W, with plain
 * matMuls both ways. LoRA wraps it instead of the model's own dense layer: same values, several times faster backward.
 */
export const frozenLinear = (name: string, weight: tf.Tensor2D): LinearLayer => {
  const [outFeatures, inFeatures] = weight.shape
  const matmul = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const x = args[0] as tf.Tensor
    const y = matMulTransposed(tf.reshape(x, [-1, inFeatures]), weight)
    return {
      value: tf.reshape(y, [...x.shape.slice(0, -1), outFeatures]),
      gradFunc: (dy: tf.Tensor) => tf.reshape(tf.matMul(tf.reshape(dy, [-1, outFeatures]) as tf.Tensor2D, weight), x.shape)
    }
  })
  return { name, inFeatures, outFeatures, apply: (x) => matmul(x), dispose: () => {} }
}

/**
 * A frozen linear layer over an NF4 weight: y = x Wᵀ with W dequantized into a scratch buffer per call.
 * The custom gradient recomputes W for dx = dy W, so only the input is kept for the backward pass.
 */
export const nf4Linear = (name: string, q: Nf4Tensor): LinearLayer => {
  const [outFeatures, inFeatures] = q.shape
  const scratch = new Float32Array(outFeatures * inFeatures)
  const weight = () => tf.tensor2d(dequantizeNf4(q, scratch), [outFeatures, inFeatures])
  const matmul = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const x = args[0] as tf.Tensor
    const save = args[1] as tf.GradSaveFunc
    const x2 = tf.reshape(x, [-1, inFeatures])
    const w = weight()
    const y = matMulTransposed(x2, w)
    w.dispose()
    save([])
    return {
      value: tf.reshape(y, [...x.shape.slice(0, -1), outFeatures]),
      gradFunc: (dy: tf.Tensor) => {
        const w2 = weight()
        const dx = tf.matMul(tf.reshape(dy, [-1, outFeatures]), w2)
        w2.dispose()
        return tf.reshape(dx, x.shape)
      }
    }
  })
  return {
    name,
    inFeatures,
    outFeatures,
    apply: (x) => matmul(x),
    dispose: () => {}
  }
}
