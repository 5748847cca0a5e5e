import "@tensorflow/tfjs-backend-cpu"
import * as tf from "@tensorflow/tfjs-core"
import { registerGradients } from "../../src/Model/Device.ts"
import { beforeAll, describe, expect, it } from "vitest"
import { SeededRng } from "../../src/Shared/Prng.ts"
import { DYNAMIC_8BIT_CODE, dequantizeNf4, frozenLinear, NF4_CODE, nf4Bytes, nf4Linear, quantizeNf4 } from "../../src/Model/Nf4.ts"

beforeAll(async () => {
  await registerGradients()
  await tf.setBackend("cpu")
})

const gaussian = (n: number, seed: number): Float32Array => {
  const rng = new SeededRng(seed)
  return Float32Array.from({ length: n }, () => rng.normal())
}

// Standard normal density and CDF (erf via a series accurate to ~1e-15 over the range used, |x| <= 8).
const phi = (x: number) => Math.exp(-x * x / 2) / Math.sqrt(2 * Math.PI)
const bigPhi = (x: number) => {
  // Φ(x) = 1/2 + φ(x)·Σ x^(2k+1)/(1·3·…·(2k+1)) (Marsaglia 2004), exact to double precision for |x| < 8
  let sum = x
  let term = x
  for (let k = 1; k < 200; k++) {
    term *= x * x / (2 * k + 1)
    sum += term
    if (Math.abs(term) < 1e-17 * Math.abs(sum)) break
  }
  return 0.5 + phi(x) * sum
}
const nearestCode = (u: number) => NF4_CODE.reduce((best, c) => Math.abs(c - u) < Math.abs(best - u) ? c : best, NF4_CODE[0]!)

/**
 * Expected squared error per weight of blockwise NF4 on iid N(0,1) weights with blocks of 64:
 * the block's absmax M has density 64·2φ(m)·(2Φ(m)-1)^63; given M = m, the maximal element is coded
 * exactly (±1·m) and each of the other 63 is N(0,1) truncated to |w| < m, coded as m·Q(w/m). So
 *   E = (63/64) ∫ 64·2φ(m)(2Φ(m)-1)^62 · ∫_{-m}^{m} (w - m Q(w/m))² φ(w) dw dm.
 */
const expectedNf4Mse = (blockSize: number): number => {
  const dm = 0.004
  const nu = 2000
  let outer = 0
  for (let m = dm / 2; m < 8; m += dm) {
    const p = 2 * bigPhi(m) - 1
    const weight = blockSize * 2 * phi(m) * p ** (blockSize - 2)
    if (weight < 1e-300) continue
    let inner = 0
    const du = 2 / nu
    for (let k = 0; k < nu; k++) {
      const u = -1 + (k + 0.5) * du
      const e = m * (u - nearestCode(u))
      inner += e * e * phi(m * u) * m * du
    }
    outer += weight * inner * dm
  }
  return ((blockSize - 1) / blockSize) * outer
}

describe("NF4 quantization", () => {
  it("uses bitsandbytes' code books", () => {
    expect(NF4_CODE.length).toBe(16)
    expect(NF4_CODE[0]).toBe(-1)
    expect(NF4_CODE[7]).toBe(0)
    expect(NF4_CODE[15]).toBe(1)
    expect(DYNAMIC_8BIT_CODE.length).toBe(256)
    expect([...DYNAMIC_8BIT_CODE].every((v, i) => i === 0 || v >= DYNAMIC_8BIT_CODE[i - 1]!)).toBe(true)
    expect(DYNAMIC_8BIT_CODE[255]).toBe(1)
    expect(DYNAMIC_8BIT_CODE.filter((v) => v === 0).length).toBe(1)
    // the smallest magnitude is 10^-6 · 0.55 (first decade, one midpoint of linspace(0.1, 1, 2))
    expect(Math.min(...[...DYNAMIC_8BIT_CODE].filter((v) => v > 0))).toBeCloseTo(0.55e-6, 12)
  })

  it("round-trips code book values exactly and packs two codes per byte", () => {
    const data = Float32Array.from({ length: 64 }, (_, i) => NF4_CODE[i % 16]! * 2.5)
    const q = quantizeNf4(data, [4, 16], { doubleQuant: false })
    expect(q.packed.length).toBe(32)
    expect(q.packed[0]).toBe((0 << 4) | 1)
    expect(Array.from(dequantizeNf4(q))).toEqual(Array.from(data))
  })

  it("matches the code book's expected error on Gaussian weights", () => {
    const blockSize = 64
    const blocks = 8192
    const w = gaussian(blockSize * blocks, 7)
    const plain = dequantizeNf4(quantizeNf4(w, [blocks, blockSize], { doubleQuant: false }))
    const blockMse = new Float64Array(blocks)
    for (let i = 0; i < w.length; i++) blockMse[Math.floor(i / blockSize)]! += (w[i]! - plain[i]!) ** 2 / blockSize
    const mean = blockMse.reduce((a, b) => a + b, 0) / blocks
    const sd = Math.sqrt(blockMse.reduce((a, b) => a + (b - mean) ** 2, 0) / (blocks - 1))
    const se = sd / Math.sqrt(blocks)
    const expected = expectedNf4Mse(blockSize)
    // Blocks are independent, so the empirical mean is within 4 standard errors of the expectation unless the
    // quantizer is wrong (a false alarm has probability ~6e-5; the integration error is < 1e-4 relative).
    expect(expected).toBeGreaterThan(0.005)
    expect(expected).toBeLessThan(0.02)
    expect(Math.abs(mean - expected)).toBeLessThan(4 * se)
    expect(se / expected).toBeLessThan(0.01) // the check is sharp: 4 SE is under 4% of the error itself

    // Double quantization perturbs each block scale by < 0.5% here, which changes the error by far less than 1%.
    const dq = dequantizeNf4(quantizeNf4(w, [blocks, blockSize]))
    let dqMse = 0
    for (let i = 0; i < w.length; i++) dqMse += (w[i]! - dq[i]!) ** 2
    dqMse /= w.length
    expect(Math.abs(dqMse - mean) / mean).toBeLessThan(0.01)
  })

  it("holds a weight in about 4.13 bits per value with double quantization", () => {
    const w = gaussian(256 * 1024, 3)
    const dq = quantizeNf4(w, [256, 1024])
    const single = quantizeNf4(w, [256, 1024], { doubleQuant: false })
    // 0.5 byte per weight + 1 byte per 64 weights + 4 bytes per 256 scales + the 4-byte offset
    expect(nf4Bytes(dq)).toBe(131072 + 4096 + 16 * 4 + 4)
    // without double quantization the scales are fp32: 4 bytes per 64 weights
    expect(nf4Bytes(single)).toBe(131072 + 4096 * 4)
  })

  it("computes x Wᵀ and its input gradient from the dequantized weight, and leaks no tensors", () => {
    const [out, inF] = [24, 128]
    const q = quantizeNf4(gaussian(out * inF, 11), [out, inF])
    const dense = dequantizeNf4(q)
    const layer = nf4Linear("model.layers.0.self_attn.q_proj", q)
    const before = tf.memory().numTensors
    tf.tidy(() => {
      const x = tf.tensor3d(gaussian(2 * 3 * inF, 5), [2, 3, inF])
      const w = tf.tensor2d(dense, [out, inF])
      const f = (z: tf.Tensor) => tf.sum(tf.square(layer.apply(z)))
      const fRef = (z: tf.Tensor) => tf.sum(tf.square(tf.matMul(tf.reshape(z, [6, inF]), w, false, true)))
      expect(layer.apply(x).shape).toEqual([2, 3, out])
      const y = tf.reshape(layer.apply(x), [6, out]).arraySync()
      const yRef = tf.matMul(tf.reshape(x, [6, inF]), w, false, true).arraySync()
      expect(y).toEqual(yRef)
      const g = tf.grad(f)(x).dataSync()
      const gRef = tf.grad(fRef)(x).dataSync()
      expect(Array.from(g)).toEqual(Array.from(gRef))
    })
    expect(tf.memory().numTensors).toBe(before)
  })

  it("the frozen dense base computes x Wᵀ and dx = dy W through plain matMuls", () => {
    const [out, inF] = [20, 36]
    const before = tf.memory().numTensors
    tf.tidy(() => {
      const w = tf.tensor2d(gaussian(out * inF, 21), [out, inF])
      const layer = frozenLinear("model.layers.0.mlp.up_proj", w)
      const x = tf.tensor3d(gaussian(2 * 3 * inF, 22), [2, 3, inF])
      const ref = (z: tf.Tensor) => tf.reshape(tf.matMul(tf.reshape(z, [6, inF]), w, false, true), [2, 3, out])
      // transpose-then-multiply may sum in another order than the transposed kernel: equal to float32 rounding
      expect(tf.max(tf.abs(tf.sub(layer.apply(x), ref(x)))).dataSync()[0]).toBeLessThan(1e-5)
      const g = tf.grad((z: tf.Tensor) => tf.sum(tf.square(layer.apply(z))))(x)
      const gRef = tf.grad((z: tf.Tensor) => tf.sum(tf.square(ref(z))))(x)
      expect(tf.max(tf.abs(tf.sub(g, gRef))).dataSync()[0]).toBeLessThan(1e-4)
      expect(tf.max(tf.abs(gRef)).dataSync()[0]).toBeGreaterThan(0.1)
    })
    expect(tf.memory().numTensors).toBe(before)
  })
})
