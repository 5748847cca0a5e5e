/** The project's one seeded PRNG: every seeded choice (weights, shuffles, sampling, synthesis) draws from it. */

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
