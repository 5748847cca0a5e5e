/**
 * The seeded PRNGs of Shared/Prng.ts replaced five private copies. Each must give exactly the sequence its copy
 * gave (model files, synthetic data, sampled answers and fixtures depend on it): the copies are kept here, as
 * they were, as the reference.
 */
import { describe, expect, it } from "vitest"
import { SeededRng, Sfc32, SplitMix32, XorShift32 } from "../../src/Shared/Prng.ts"
import { makeRng } from "../../src/Dataset/Synth.ts"
import { prng } from "../../src/Evaluation/Seeded.ts"
import { seededRandom } from "../../src/Model/Sampling.ts"

// Evaluation/Seeded.ts's copy (signed state)
const oldEvalPrng = (seed: number) => {
  let state = seed | 0
  return () => {
    let t = (state = (state + 0x6d2b79f5) | 0)
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
// Dataset/Synth.ts's copy (unsigned state)
const oldSynthRng = (seed: number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
// bench/router.ts's copy
const oldBenchPrng = (seed: number) => () => {
  seed = (seed + 0x6D2B79F5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
// Model/TinyModel.ts's sfc32
const oldSfc32 = (seed: number, stream: number) => {
  let a = seed >>> 0, b = stream >>> 0, c = 0x9e3779b9, d = 1
  const next = () => {
    const t = (((a + b) | 0) + d) | 0
    d = (d + 1) | 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) | 0
    c = (c << 21) | (c >>> 11)
    c = (c + t) | 0
    return (t >>> 0) / 4294967296
  }
  for (let i = 0; i < 12; i++) next()
  return next
}
// Model/Sampling.ts's SplitMix32
const oldSplitMix = (seed: number) => {
  let state = seed >>> 0
  return () => {
    state = (state + 0x9e3779b9) >>> 0
    let z = state
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    return ((z ^ (z >>> 16)) >>> 0) / 4294967296
  }
}
// test/Serving/ServeFixtures.ts's xorshift
const oldXorShift = (seed: number) => {
  let s = (seed * 2654435761) >>> 0 || 1
  return () => {
    s ^= s << 13
    s >>>= 0
    s ^= s >>> 17
    s ^= s << 5
    s >>>= 0
    return (s + 0.5) / 4294967296
  }
}

const draws = (next: () => number, n = 2000) => Array.from({ length: n }, next)
const seeds = [0, 1, 42, 123456789, 0x7fffffff, 0xffffffff, -5]

describe("Shared/Prng", () => {
  it("SeededRng is the mulberry32 of the evaluation, synthesis and benchmark copies", () => {
    for (const seed of seeds) {
      const rng = new SeededRng(seed)
      const ours = draws(() => rng.next())
      expect(ours).toEqual(draws(oldEvalPrng(seed)))
      expect(ours).toEqual(draws(oldSynthRng(seed)))
      expect(ours).toEqual(draws(oldBenchPrng(seed)))
      expect(draws(prng(seed))).toEqual(ours)
      expect(draws(makeRng(seed))).toEqual(ours)
    }
  })

  it("Sfc32, SplitMix32 and XorShift32 give their copies' sequences", () => {
    for (const seed of seeds) {
      for (const stream of [0, 7, 0x811c9dc5]) {
        const rng = new Sfc32(seed, stream)
        expect(draws(() => rng.next())).toEqual(draws(oldSfc32(seed, stream)))
      }
      const split = new SplitMix32(seed)
      expect(draws(() => split.next())).toEqual(draws(oldSplitMix(seed)))
      expect(draws(seededRandom(seed))).toEqual(draws(oldSplitMix(seed)))
      const xor = new XorShift32(seed)
      expect(draws(() => xor.next())).toEqual(draws(oldXorShift(seed)))
    }
  })

  it("draws uniform numbers in [0, 1)", () => {
    const rng = new SeededRng(9)
    const xs = draws(() => rng.next(), 20000)
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0)
    expect(Math.max(...xs)).toBeLessThan(1)
    expect(Math.abs(xs.reduce((a, b) => a + b, 0) / xs.length - 0.5)).toBeLessThan(0.01)
  })
})
