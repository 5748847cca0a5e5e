/**
 * Statistics for human ratings: Krippendorff's alpha (nominal, ordinal, interval, ratio; any number of raters,
 * missing ratings allowed), a seeded bootstrap confidence interval for a mean, and the Wilson score interval for a
 * proportion.
 *
 * Alpha follows Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": build the coincidence matrix
 * from every unit rated by at least two raters (each ordered pair of its values weighs 1/(m_u − 1)), then
 * alpha = 1 − D_o / D_e with the level's squared distance. Checked against the published worked examples
 * (the same ones the `krippendorff` Python package tests: nominal 0.691358, interval 0.810845 on Wikipedia's
 * example; ordinal 0.815 and ratio 0.797 on Krippendorff's).
 */

import { prng } from "./Seeded.ts"

export type AlphaLevel = "nominal" | "ordinal" | "interval" | "ratio"

/**
 * `data[rater][unit]`: a number, or null/undefined when that rater did not rate that unit.
 * Returns NaN when no unit has two ratings or all ratings are the same value (alpha is undefined there).
 */
export const krippendorffAlpha = (
  data: ReadonlyArray<ReadonlyArray<number | null | undefined>>,
  level: AlphaLevel
): number => {
  const units = Math.max(0, ...data.map((row) => row.length))
  const domain = [...new Set(data.flatMap((row) => row.filter((v): v is number => v !== null && v !== undefined)))].sort((a, b) => a - b)
  const index = new Map(domain.map((v, i) => [v, i]))
  const V = domain.length
  const o = Array.from({ length: V }, () => new Float64Array(V))
  for (let u = 0; u < units; u++) {
    const values: Array<number> = []
    for (const row of data) {
      const v = row[u]
      if (v !== null && v !== undefined) values.push(index.get(v)!)
    }
    const m = values.length
    if (m < 2) continue
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < m; j++) if (i !== j) o[values[i]!]![values[j]!]! += 1 / (m - 1)
    }
  }
  const nc = o.map((row) => row.reduce((a, b) => a + b, 0))
  const n = nc.reduce((a, b) => a + b, 0)
  if (n === 0 || V < 2) return Number.NaN

  const delta2 = (c: number, k: number): number => {
    if (c === k) return 0
    const vc = domain[c]!
    const vk = domain[k]!
    switch (level) {
      case "nominal":
        return 1
      case "interval":
        return (vc - vk) ** 2
      case "ratio":
        return vc + vk === 0 ? 0 : ((vc - vk) / (vc + vk)) ** 2
      case "ordinal": {
        const [lo, hi] = c < k ? [c, k] : [k, c]
        let s = 0
        for (let g = lo; g <= hi; g++) s += nc[g]!
        return (s - (nc[c]! + nc[k]!) / 2) ** 2
      }
    }
  }

  let observed = 0
  let expected = 0
  for (let c = 0; c < V; c++) {
    for (let k = 0; k < V; k++) {
      const d = delta2(c, k)
      if (d === 0) continue
      observed += o[c]![k]! * d
      expected += nc[c]! * nc[k]! * d
    }
  }
  if (expected === 0) return Number.NaN
  return 1 - ((n - 1) * observed) / expected
}

export interface Interval {
  readonly estimate: number
  readonly low: number
  readonly high: number
  readonly n: number
}

/** Mean with a 95% percentile-bootstrap interval (seeded, so reports are reproducible). */
export const bootstrapMean = (values: ReadonlyArray<number>, options: { resamples?: number; seed?: number } = {}): Interval => {
  const n = values.length
  if (n === 0) return { estimate: Number.NaN, low: Number.NaN, high: Number.NaN, n: 0 }
  const mean = values.reduce((a, b) => a + b, 0) / n
  const resamples = options.resamples ?? 2000
  const rand = prng(options.seed ?? 1)
  const means = new Float64Array(resamples)
  for (let b = 0; b < resamples; b++) {
    let s = 0
    for (let i = 0; i < n; i++) s += values[Math.floor(rand() * n)]!
    means[b] = s / n
  }
  means.sort()
  return { estimate: mean, low: means[Math.floor(0.025 * (resamples - 1))]!, high: means[Math.ceil(0.975 * (resamples - 1))]!, n }
}

/** Wilson score interval (95%) for a proportion. */
export const wilson = (successes: number, n: number, z = 1.959963984540054): Interval => {
  if (n === 0) return { estimate: Number.NaN, low: Number.NaN, high: Number.NaN, n: 0 }
  const p = successes / n
  const denom = 1 + (z * z) / n
  const centre = (p + (z * z) / (2 * n)) / denom
  const half = (z * Math.sqrt((p * (1 - p)) / n + (z * z) / (4 * n * n))) / denom
  return { estimate: p, low: Math.max(0, centre - half), high: Math.min(1, centre + half), n }
}
