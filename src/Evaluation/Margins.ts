/**
 * Base-vs-tuned margins: the mean per-sample difference of two runs over the same held-out records, with a paired
 * bootstrap 95% interval, so a margin can be told apart from noise. Read from the runs' samples.jsonl files.
 */
import { Effect, FileSystem, Schema } from "effect"
import { SeededRng } from "../Shared/Prng.ts"

export const Margin = Schema.Struct({
  metric: Schema.String,
  label: Schema.String,
  base: Schema.Number,
  tuned: Schema.Number,
  delta: Schema.Number,
  /** paired bootstrap 95% interval of the delta */
  low: Schema.Number,
  high: Schema.Number,
  pairs: Schema.Int
})
export type Margin = typeof Margin.Type

/** The per-sample metrics compared (samples.jsonl field -> label). */
export const marginMetrics = [
  ["rougeL", "ROUGE-L"],
  ["factuality", "factuality"],
  ["placeholderF1", "placeholder F1"],
  ["bleu", "sentence BLEU"]
] as const

const SampleLine = Schema.Struct({
  id: Schema.String,
  metrics: Schema.Struct({
    rougeL: Schema.Finite,
    factuality: Schema.Finite,
    placeholderF1: Schema.Finite,
    bleu: Schema.Finite
  })
})
const decodeSample = Schema.decodeUnknownSync(Schema.fromJsonString(SampleLine))

/** Paired bootstrap of mean(tuned − base): 2,000 resamples of the sample pairs, percentile interval. */
export const pairedBootstrap = (
  deltas: ReadonlyArray<number>,
  seed: number,
  resamples = 2000
): { readonly low: number; readonly high: number } => {
  if (deltas.length === 0) return { low: 0, high: 0 }
  const rng = new SeededRng(seed)
  const means = new Float64Array(resamples)
  for (let b = 0; b < resamples; b++) {
    let sum = 0
    for (let i = 0; i < deltas.length; i++) sum += deltas[Math.floor(rng.next() * deltas.length)]!
    means[b] = sum / deltas.length
  }
  means.sort()
  return { low: means[Math.floor(0.025 * (resamples - 1))]!, high: means[Math.ceil(0.975 * (resamples - 1))]! }
}

/** Margins of the tuned run over the base run, from their samples.jsonl files (pairs matched by sample id). */
export const bootstrapMargins = Effect.fn("Margins.bootstrap")(function*(baseSamples: string, tunedSamples: string, seed: number) {
  const fs = yield* FileSystem.FileSystem
  const read = (file: string) =>
    fs.readFileString(file).pipe(Effect.flatMap((text) =>
      Effect.try({
        try: () => new Map(text.split("\n").filter((l) => l.trim() !== "").map((l) => {
          const s = decodeSample(l)
          return [s.id, s.metrics] as const
        })),
        catch: (e) => new Error(`${file}: ${e instanceof Error ? e.message : String(e)}`)
      })
    ))
  const base = yield* read(baseSamples)
  const tuned = yield* read(tunedSamples)
  const ids = [...tuned.keys()].filter((id) => base.has(id))
  const mean = (xs: ReadonlyArray<number>) => (xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length)
  return marginMetrics.map(([metric, label]): Margin => {
    const b = ids.map((id) => base.get(id)![metric])
    const t = ids.map((id) => tuned.get(id)![metric])
    const deltas = t.map((x, i) => x - b[i]!)
    return { metric, label, base: mean(b), tuned: mean(t), delta: mean(deltas), ...pairedBootstrap(deltas, seed), pairs: ids.length }
  })
})
