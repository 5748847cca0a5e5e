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

/** The per-sample metrics of a samples.jsonl line that the margins read. */
const SampleMetrics = Schema.Struct({
  rougeL: Schema.Finite,
  factuality: Schema.Finite,
  placeholderF1: Schema.Finite,
  bleu: Schema.Finite,
  cites: Schema.optionalKey(Schema.Boolean),
  needsDisclaimer: Schema.optionalKey(Schema.Boolean),
  hasDisclaimer: Schema.optionalKey(Schema.Boolean)
})
type SampleMetrics = typeof SampleMetrics.Type

interface MarginMetric {
  readonly metric: string
  readonly label: string
  /** the sample's value; undefined leaves the pair out (a rate over a subset, e.g. advice answers only) */
  readonly value: (m: SampleMetrics) => number | undefined
  /** whether a pair counts: both systems saw the same record, so the base's flags decide */
  readonly applies?: (m: SampleMetrics) => boolean
}

const flag = (b: boolean | undefined) => (b === undefined ? undefined : b ? 1 : 0)

/** The per-sample metrics compared, in report order. */
export const marginMetrics: ReadonlyArray<MarginMetric> = [
  { metric: "rougeL", label: "ROUGE-L", value: (m) => m.rougeL },
  { metric: "bleu", label: "sentence BLEU", value: (m) => m.bleu },
  { metric: "placeholderF1", label: "placeholder F1", value: (m) => m.placeholderF1 },
  { metric: "citation", label: "citation rate", value: (m) => flag(m.cites) },
  // the risk-flag rate counts advice answers only (records with a risk note), as the aggregate does
  { metric: "riskNote", label: "risk-note rate", value: (m) => flag(m.hasDisclaimer), applies: (m) => m.needsDisclaimer === true },
  { metric: "factuality", label: "numeric factuality", value: (m) => m.factuality }
]

const SampleLine = Schema.Struct({ id: Schema.String, metrics: SampleMetrics })
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
  return marginMetrics.flatMap((m): ReadonlyArray<Margin> => {
    const pairs = ids.flatMap((id) => {
      const bm = base.get(id)!
      const tm = tuned.get(id)!
      if (m.applies !== undefined && !m.applies(bm)) return []
      const b = m.value(bm)
      const t = m.value(tm)
      return b === undefined || t === undefined ? [] : [[b, t] as const]
    })
    // a metric with no pairs (no advice records, or samples written before the flags existed) is left out
    if (pairs.length === 0) return []
    const deltas = pairs.map(([b, t]) => t - b)
    return [{
      metric: m.metric,
      label: m.label,
      base: mean(pairs.map(([b]) => b)),
      tuned: mean(pairs.map(([, t]) => t)),
      delta: mean(deltas),
      ...pairedBootstrap(deltas, seed),
      pairs: pairs.length
    }]
  })
})
