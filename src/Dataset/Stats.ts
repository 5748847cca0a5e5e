/**
 * `dataset stats`: counts by intent, ticker and placeholder type, length percentiles, and the reasons
 * lines would be rejected (decode errors and content rules at their configured severity). Streams the file;
 * memory is the counters plus 8 bytes per record for the length percentiles.
 */
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { decodeInput } from "./Input.ts"
import { readLineBatches } from "./Lines.ts"
import { normalizeRecord } from "./Normalize.ts"
import { hasLivePlaceholder, placeholderBaseType, placeholdersIn } from "./Placeholders.ts"
import { checkRules, defaultRuleConfig, type RuleConfig } from "./Rules.ts"
import { canonicalFingerprint, FingerprintSet } from "./Split.ts"

const Counts = Schema.Record(Schema.String, Schema.Int)
const Percentiles = Schema.Struct({ p50: Schema.Int, p90: Schema.Int, p99: Schema.Int, max: Schema.Int, mean: Schema.Finite })
export const DatasetStats = Schema.Struct({
  input: Schema.String,
  lines: Schema.Int,
  blankLines: Schema.Int,
  records: Schema.Int,
  /** records that are not duplicates of an earlier one after normalization */
  unique: Schema.Int,
  rejected: Schema.Int,
  byIntent: Counts,
  byTicker: Counts,
  byPlaceholderType: Counts,
  byPlaceholder: Counts,
  contextRequired: Schema.Int,
  withRiskNote: Schema.Int,
  questionChars: Percentiles,
  answerChars: Percentiles,
  rejectReasons: Counts
})
export type DatasetStats = typeof DatasetStats.Type

class Lengths {
  private data = new Uint32Array(1024)
  size = 0
  push(n: number) {
    if (this.size === this.data.length) {
      const next = new Uint32Array(this.data.length * 2)
      next.set(this.data)
      this.data = next
    }
    this.data[this.size++] = n
  }
  percentiles() {
    const xs = this.data.slice(0, this.size).sort()
    const at = (p: number) => (xs.length === 0 ? 0 : xs[Math.min(xs.length - 1, Math.floor(p * xs.length))]!)
    let sum = 0
    for (const x of xs) sum += x
    return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: xs.length === 0 ? 0 : xs[xs.length - 1]!, mean: xs.length === 0 ? 0 : Math.round((sum / xs.length) * 10) / 10 }
  }
}

const bump = (m: Record<string, number>, k: string, by = 1) => {
  m[k] = (m[k] ?? 0) + by
}
const sortedDesc = (m: Record<string, number>) => Object.fromEntries(Object.entries(m).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)))

/** Statistics of a JSONL file in any accepted input format (normalized the way the ingest does). */
export const computeStats = Effect.fn("Dataset.computeStats")(function*(input: string, rules: RuleConfig = defaultRuleConfig) {
  const s = {
    lines: 0, blankLines: 0, records: 0, rejected: 0, contextRequired: 0, withRiskNote: 0,
    byIntent: {} as Record<string, number>, byTicker: {} as Record<string, number>,
    byPlaceholderType: {} as Record<string, number>, byPlaceholder: {} as Record<string, number>,
    rejectReasons: {} as Record<string, number>
  }
  const q = new Lengths()
  const a = new Lengths()
  const seen = new FingerprintSet()
  let unique = 0
  yield* readLineBatches(input).pipe(Stream.runForEach((lines) => Effect.sync(() => {
    for (const raw of lines) {
      s.lines++
      if (raw.problem !== undefined) {
        s.rejected++
        bump(s.rejectReasons, raw.problem === "too_long" ? "line_too_long" : "invalid_utf8")
        continue
      }
      if (/^\s*$/.test(raw.text)) {
        s.blankLines++
        continue
      }
      let json: unknown
      try {
        json = JSON.parse(raw.text)
      } catch {
        s.rejected++
        bump(s.rejectReasons, "invalid_json")
        continue
      }
      const d = decodeInput(json, false)
      if (Result.isFailure(d)) {
        s.rejected++
        bump(s.rejectReasons, "schema")
        continue
      }
      let r = normalizeRecord(d.success.record).record
      if (d.success.deriveContextRequired && hasLivePlaceholder(r.answer)) r = { ...r, context_required: true }
      const fatal = checkRules(r, rules).find((v) => rules[v.rule] === "reject")
      if (fatal) {
        s.rejected++
        bump(s.rejectReasons, fatal.rule)
        continue
      }
      s.records++
      if (seen.add(canonicalFingerprint(r.question, r.answer))) unique++
      bump(s.byIntent, r.intent ?? "unknown")
      for (const t of r.tickers) bump(s.byTicker, t)
      for (const p of placeholdersIn(r.answer)) {
        bump(s.byPlaceholder, p)
        bump(s.byPlaceholderType, placeholderBaseType(p))
      }
      if (r.context_required) s.contextRequired++
      if (r.risk_note !== undefined) s.withRiskNote++
      q.push(r.question.length)
      a.push(r.answer.length)
    }
  })))
  const stats: DatasetStats = {
    input: input === "-" ? "<stdin>" : input,
    lines: s.lines,
    blankLines: s.blankLines,
    records: s.records,
    unique,
    rejected: s.rejected,
    byIntent: sortedDesc(s.byIntent),
    byTicker: sortedDesc(s.byTicker),
    byPlaceholderType: sortedDesc(s.byPlaceholderType),
    byPlaceholder: sortedDesc(s.byPlaceholder),
    contextRequired: s.contextRequired,
    withRiskNote: s.withRiskNote,
    questionChars: q.percentiles(),
    answerChars: a.percentiles(),
    rejectReasons: sortedDesc(s.rejectReasons)
  }
  return stats
})

const table = (title: string, m: Record<string, number>, limit: number) => {
  const rows = Object.entries(m).slice(0, limit)
  const more = Object.keys(m).length - rows.length
  return [`${title}:`, ...rows.map(([k, v]) => `  ${k.padEnd(22)} ${String(v).padStart(9)}`), ...(more > 0 ? [`  … ${more} more`] : [])].join("\n")
}

/** The human-readable report. */
export const renderStats = (s: DatasetStats): string => {
  const pct = (p: typeof s.questionChars) => `p50 ${p.p50}  p90 ${p.p90}  p99 ${p.p99}  max ${p.max}  mean ${p.mean}`
  return [
    `${s.input}: ${s.lines} lines, ${s.records} records (${s.unique} unique after normalization), ${s.blankLines} blank, ${s.rejected} rejected`,
    `context_required: ${s.contextRequired}   with risk_note: ${s.withRiskNote}`,
    `question chars: ${pct(s.questionChars)}`,
    `answer chars:   ${pct(s.answerChars)}`,
    table("by intent", s.byIntent, 50),
    table("by ticker (top 25)", s.byTicker, 25),
    table("by placeholder type", s.byPlaceholderType, 50),
    table("reject reasons", s.rejectReasons, 50)
  ].join("\n")
}
