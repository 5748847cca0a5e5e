/**
 * Next-token choice from a logits row: greedy, or seeded sampling with temperature, top-k and top-p applied in
 * transformers' order (temperature, then top-k, then top-p over the renormalized distribution).
 */
import { SplitMix32 } from "../Shared/Prng.ts"

export interface SamplingOptions {
  /** 0 or absent: greedy (argmax, first index on ties) */
  readonly temperature?: number
  /** keep the k most likely tokens (absent or 0: all) */
  readonly topK?: number
  /** keep the smallest set of most likely tokens whose probability reaches p (absent or 1: all) */
  readonly topP?: number
}

/** The sampler's seeded draws in [0, 1) (Shared/Prng.ts's SplitMix32, whose sequence sampled answers pin). */
export const seededRandom = (seed: number): (() => number) => {
  const rng = new SplitMix32(seed)
  return () => rng.next()
}

export const argmax = (values: ArrayLike<number>): number => {
  let best = 0
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i
  return best
}

/** The tokens sampling may pick and their renormalized probabilities, most likely first. */
export const candidates = (
  logits: ArrayLike<number>,
  options: SamplingOptions
): { readonly ids: Array<number>; readonly probs: Array<number> } => {
  const temperature = options.temperature ?? 0
  let ids = Array.from({ length: logits.length }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b)
  if (options.topK !== undefined && options.topK > 0) ids = ids.slice(0, options.topK)
  const max = logits[ids[0]!]!
  let probs = ids.map((i) => Math.exp((logits[i]! - max) / temperature))
  let sum = probs.reduce((a, b) => a + b, 0)
  probs = probs.map((p) => p / sum)
  if (options.topP !== undefined && options.topP < 1) {
    let cumulative = 0
    let keep = 0
    while (keep < probs.length && cumulative < options.topP) cumulative += probs[keep++]!
    ids = ids.slice(0, Math.max(1, keep))
    probs = probs.slice(0, ids.length)
    sum = probs.reduce((a, b) => a + b, 0)
    probs = probs.map((p) => p / sum)
  }
  return { ids, probs }
}

/** Picks the next token; `random` is only drawn from when sampling (temperature > 0). */
export const sampleToken = (logits: ArrayLike<number>, options: SamplingOptions, random: () => number): number => {
  if (options.temperature === undefined || options.temperature <= 0) return argmax(logits)
  const { ids, probs } = candidates(logits, options)
  let r = random()
  for (let i = 0; i < ids.length; i++) {
    r -= probs[i]!
    if (r < 0) return ids[i]!
  }
  return ids[ids.length - 1]!
}
