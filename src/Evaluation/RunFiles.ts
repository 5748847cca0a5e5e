/**
 * The files of an evaluation run folder, their schemas, and the scoring that turns generations into them.
 *
 *     <out>/run.json            the run's configuration (generator, split + sha256, seed, versions, times)
 *     <out>/generations.jsonl   one line per finished generation, appended as each finishes (what --resume reads)
 *     <out>/samples.jsonl       per sample: input, reference, prediction and every metric, in split order
 *     <out>/aggregate.json      corpus metrics (the `Aggregate` below)
 *     <out>/report.html         charts (static SVG) + table;  <out>/summary.md  the same as Markdown
 *
 * Scales: BLEU as sacrebleu (0–100); ROUGE F-measures, factuality and rates as 0–1.
 * Textual metrics (BLEU, ROUGE, placeholder fidelity) compare the model's own text with the placeholder-form
 * reference: the server's `raw_answer` when it reports one, else the answer with live values turned back into
 * placeholders (`normalizeText`). Factuality, citations and risk flags read the answer the user sees.
 */
import { Schema } from "effect"
import { normalizeText } from "../Dataset/Placeholders.ts"
import { bleuSignature, corpusBleu, sentenceBleu } from "../Metrics/Bleu.ts"
import { aggregateFinance, financeScores, type RecordView } from "./FinanceMetrics.ts"
import { rougeScores } from "../Metrics/Rouge.ts"

export const GenerationLine = Schema.Struct({
  id: Schema.String,
  index: Schema.Int,
  prediction: Schema.String,
  rawAnswer: Schema.optionalKey(Schema.String),
  modelVersion: Schema.optionalKey(Schema.String),
  latencyMs: Schema.Finite,
  error: Schema.optionalKey(Schema.String)
})
export type GenerationLine = typeof GenerationLine.Type

export const SampleMetrics = Schema.Struct({
  bleu: Schema.Finite,
  rouge1: Schema.Finite,
  rouge2: Schema.Finite,
  rougeL: Schema.Finite,
  rougeLsum: Schema.Finite,
  rougeLStemmed: Schema.Finite,
  factuality: Schema.Finite,
  hallucinatedValues: Schema.Array(Schema.String),
  hallucinatedPlaceholders: Schema.Array(Schema.String),
  signFlips: Schema.Array(Schema.String),
  droppedValues: Schema.Array(Schema.String),
  cites: Schema.Boolean,
  citesAllowedSource: Schema.Boolean,
  needsDisclaimer: Schema.Boolean,
  hasDisclaimer: Schema.Boolean,
  placeholderF1: Schema.Finite,
  placeholderExact: Schema.Boolean
})
export type SampleMetrics = typeof SampleMetrics.Type

export const SampleResult = Schema.Struct({
  id: Schema.String,
  index: Schema.Int,
  question: Schema.String,
  context: Schema.optionalKey(Schema.Union([Schema.String, Schema.Record(Schema.String, Schema.Unknown)])),
  reference: Schema.String,
  prediction: Schema.String,
  predictionForText: Schema.String,
  latencyMs: Schema.Finite,
  metrics: SampleMetrics
})
export type SampleResult = typeof SampleResult.Type

/** The headline metrics, in report order; all "higher is better" except `unneeded_disclaimer_rate`. */
export const headlineMetrics = [
  "bleu",
  "sentence_bleu",
  "rouge1",
  "rouge2",
  "rougeL",
  "rougeLsum",
  "factuality",
  "citation_rate",
  "allowed_source_rate",
  "risk_flag_rate",
  "unneeded_disclaimer_rate",
  "placeholder_f1"
] as const
export const lowerIsBetter: ReadonlySet<string> = new Set(["unneeded_disclaimer_rate"])

export const Aggregate = Schema.Struct({
  system: Schema.String,
  generator: Schema.String,
  split: Schema.String,
  splitSha256: Schema.String,
  seed: Schema.Int,
  samples: Schema.Int,
  scored: Schema.Int,
  failed: Schema.Int,
  metrics: Schema.Record(Schema.String, Schema.Finite),
  rougeStemmed: Schema.Record(Schema.String, Schema.Finite),
  /** standard error of each per-sample mean (sample sd / √n), as lm-evaluation-harness reports `*_stderr` */
  stderr: Schema.Record(Schema.String, Schema.Finite),
  /** how to reproduce the headline text metrics with the reference tools */
  signatures: Schema.Struct({ bleu: Schema.String, sentenceBleu: Schema.String, rouge: Schema.String }),
  counts: Schema.Struct({
    hallucinatedValues: Schema.Int,
    hallucinatedPlaceholders: Schema.Int,
    signFlips: Schema.Int,
    droppedValues: Schema.Int
  }),
  latencyMs: Schema.Struct({ p50: Schema.Finite, p95: Schema.Finite, mean: Schema.Finite })
})
export type Aggregate = typeof Aggregate.Type

export interface EvalRecord extends RecordView {
  readonly id: string
  readonly index: number
}

/** All metrics of one sample. */
export const scoreSample = (record: EvalRecord, generation: GenerationLine): SampleResult => {
  const predictionForText = generation.rawAnswer ?? normalizeText(generation.prediction).text
  const rouge = rougeScores(predictionForText, record.answer)
  const stemmedL = rougeScores(predictionForText, record.answer, { useStemmer: true }).rougeL
  const finance = financeScores(generation.prediction, record)
  return {
    id: record.id,
    index: record.index,
    question: record.question,
    ...(record.context !== undefined ? { context: record.context } : {}),
    reference: record.answer,
    prediction: generation.prediction,
    predictionForText,
    latencyMs: generation.latencyMs,
    metrics: {
      bleu: sentenceBleu(predictionForText, [record.answer]).score,
      rouge1: rouge.rouge1.fmeasure,
      rouge2: rouge.rouge2.fmeasure,
      rougeL: rouge.rougeL.fmeasure,
      rougeLsum: rouge.rougeLsum.fmeasure,
      rougeLStemmed: stemmedL.fmeasure,
      factuality: finance.factuality.score,
      hallucinatedValues: finance.factuality.hallucinatedValues,
      hallucinatedPlaceholders: finance.factuality.hallucinatedPlaceholders,
      signFlips: finance.factuality.signFlips,
      droppedValues: finance.factuality.droppedValues,
      cites: finance.citation.cites,
      citesAllowedSource: finance.citation.allowed,
      needsDisclaimer: finance.risk.needsDisclaimer,
      hasDisclaimer: finance.risk.hasDisclaimer,
      placeholderF1: finance.placeholders.f1,
      placeholderExact: finance.placeholders.exact
    }
  }
}

const mean = (xs: ReadonlyArray<number>) => (xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length)
const stderrOf = (xs: ReadonlyArray<number>) => {
  if (xs.length < 2) return 0
  const m = mean(xs)
  const variance = xs.reduce((a, x) => a + (x - m) ** 2, 0) / (xs.length - 1)
  return Math.sqrt(variance / xs.length)
}
const percentile = (xs: ReadonlyArray<number>, p: number) => {
  if (xs.length === 0) return 0
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}

/** Corpus metrics from per-sample results (which must be in split order for determinism). */
export const aggregate = (
  meta: { system: string; generator: string; split: string; splitSha256: string; seed: number; samples: number; failed: number },
  results: ReadonlyArray<SampleResult>,
  records: ReadonlyMap<string, EvalRecord>
): Aggregate => {
  const finance = aggregateFinance(
    results.map((r) => financeScores(r.prediction, records.get(r.id)!))
  )
  const stemmed = results.map((r) => rougeScores(r.predictionForText, r.reference, { useStemmer: true }))
  const corpus = results.length === 0 ? 0 : corpusBleu(results.map((r) => r.predictionForText), [results.map((r) => r.reference)]).score
  return {
    ...meta,
    scored: results.length,
    metrics: {
      bleu: corpus,
      sentence_bleu: mean(results.map((r) => r.metrics.bleu)),
      rouge1: mean(results.map((r) => r.metrics.rouge1)),
      rouge2: mean(results.map((r) => r.metrics.rouge2)),
      rougeL: mean(results.map((r) => r.metrics.rougeL)),
      rougeLsum: mean(results.map((r) => r.metrics.rougeLsum)),
      factuality: finance.factuality,
      factuality_micro: finance.factualityMicro,
      citation_rate: finance.citationRate,
      allowed_source_rate: finance.allowedSourceRate,
      risk_flag_rate: finance.riskFlagRate,
      unneeded_disclaimer_rate: finance.unneededDisclaimerRate,
      placeholder_f1: finance.placeholderF1,
      placeholder_exact_rate: finance.placeholderExactRate
    },
    stderr: {
      sentence_bleu: stderrOf(results.map((r) => r.metrics.bleu)),
      rouge1: stderrOf(results.map((r) => r.metrics.rouge1)),
      rouge2: stderrOf(results.map((r) => r.metrics.rouge2)),
      rougeL: stderrOf(results.map((r) => r.metrics.rougeL)),
      rougeLsum: stderrOf(results.map((r) => r.metrics.rougeLsum)),
      factuality: stderrOf(results.map((r) => r.metrics.factuality)),
      placeholder_f1: stderrOf(results.map((r) => r.metrics.placeholderF1))
    },
    signatures: {
      bleu: bleuSignature(),
      sentenceBleu: bleuSignature({}, true),
      rouge: "rouge-score RougeScorer(['rouge1','rouge2','rougeL','rougeLsum'], use_stemmer=False), mean F over samples; rougeStemmed: use_stemmer=True"
    },
    rougeStemmed: {
      rouge1: mean(stemmed.map((s) => s.rouge1.fmeasure)),
      rouge2: mean(stemmed.map((s) => s.rouge2.fmeasure)),
      rougeL: mean(stemmed.map((s) => s.rougeL.fmeasure)),
      rougeLsum: mean(stemmed.map((s) => s.rougeLsum.fmeasure))
    },
    counts: {
      hallucinatedValues: finance.hallucinatedValues,
      hallucinatedPlaceholders: finance.hallucinatedPlaceholders,
      signFlips: finance.signFlips,
      droppedValues: finance.droppedValues
    },
    latencyMs: {
      p50: percentile(results.map((r) => r.latencyMs), 50),
      p95: percentile(results.map((r) => r.latencyMs), 95),
      mean: mean(results.map((r) => r.latencyMs))
    }
  }
}

export interface MetricDelta {
  readonly metric: string
  readonly a: number
  readonly b: number
  readonly delta: number
  /** true when B is better than A on this metric */
  readonly improved: boolean
}

/** Per-metric deltas B − A over the metrics both runs have. */
export const compareAggregates = (a: Aggregate, b: Aggregate): Array<MetricDelta> =>
  Object.keys(a.metrics).filter((m) => b.metrics[m] !== undefined).map((metric) => {
    const x = a.metrics[metric]!
    const y = b.metrics[metric]!
    const delta = y - x
    return { metric, a: x, b: y, delta, improved: lowerIsBetter.has(metric) ? delta < 0 : delta > 0 }
  })
