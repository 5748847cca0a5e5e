/**
 * The project's seeded PRNGs, in one place. `SeededRng` (mulberry32) is the one to use: shuffles, dropout, LoRA
 * init, synthesis, evaluation samples and bootstrap draws. The others are kept because files and tests pin their
 * exact outputs: `Sfc32` (initial model weights), `SplitMix32` (token sampling), `XorShift32` (test fixtures).
 */

/** A small, fast, seedable PRNG (mulberry32) whose whole state is one 32-bit integer, so it checkpoints exactly. */
export class SeededRng {
  state: number
  constructor(state: number) {
    this.state = state >>> 0
  }
  /** uniform in [0, 1) */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0
    let t = this.state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  /** standard normal (Box-Muller) */
  normal(): number {
    const u = 1 - this.next()
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next())
  }
}

/**
 * sfc32 (Chris Doty-Humphrey's small fast counter), one independent stream per `stream` value: the model's initial
 * weights (TinyModel), where each tensor draws its own stream so tensors can be generated in any order. Its
 * outputs are pinned by every file `model init` writes (same seed, preset and type: the same bytes).
 */
export class Sfc32 {
  private a: number
  private b: number
  private c = 0x9e3779b9
  private d = 1
  constructor(seed: number, stream: number) {
    this.a = seed >>> 0
    this.b = stream >>> 0
    for (let i = 0; i < 12; i++) this.next()
  }
  /** uniform in [0, 1) */
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0
    this.d = (this.d + 1) | 0
    this.a = this.b ^ (this.b >>> 9)
    this.b = (this.c + (this.c << 3)) | 0
    this.c = (this.c << 21) | (this.c >>> 11)
    this.c = (this.c + t) | 0
    return (t >>> 0) / 4294967296
  }
}

/**
 * SplitMix32's state step with a murmur3-style finalizer: the sampler's seeded draws (Model/Sampling), one draw
 * per generated token, so `--seed` reproduces a sampled answer exactly.
 */
export class SplitMix32 {
  private state: number
  constructor(seed: number) {
    this.state = seed >>> 0
  }
  /** uniform in [0, 1) */
  next(): number {
    this.state = (this.state + 0x9e3779b9) >>> 0
    let z = this.state
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    return ((z ^ (z >>> 16)) >>> 0) / 4294967296
  }
}

/** Marsaglia's xorshift32 (never 0): the test fixtures' adapter weights. Uniform in (0, 1). */
export class XorShift32 {
  private s: number
  constructor(seed: number) {
    this.s = (seed * 2654435761) >>> 0 || 1
  }
  next(): number {
    this.s ^= this.s << 13
    this.s >>>= 0
    this.s ^= this.s >>> 17
    this.s ^= this.s << 5
    this.s >>>= 0
    return (this.s + 0.5) / 4294967296
  }
}
