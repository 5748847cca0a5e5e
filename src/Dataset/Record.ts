/**
 * The canonical training record (architecture.md §2, the seed's schema). Every input format (seed
 * records, chat `messages`, prompt/completion pairs) is mapped to this shape by the ingest, and every
 * later stage (Trainer, Evaluation) reads it.
 *
 * Field order is fixed: records are written with the keys in the order below, so outputs are
 * byte-identical for the same input.
 */
import { Schema } from "effect"

/** A string with at least one non-blank character. */
const nonBlank = /\S/
// a plain filter: `isPattern` builds its description on every call, which shows on the ingest's hot path
export const NonBlankString = Schema.String.check(
  Schema.makeFilter((s: string) => (nonBlank.test(s) ? undefined : "Expected a non-blank string"))
)

export const Citation = Schema.Struct({
  source: NonBlankString,
  /** `<TIMESTAMP>` or ISO-8601 (checked by the `citation_timestamp` content rule, not by the schema) */
  timestamp: Schema.String
})
export type Citation = typeof Citation.Type

/** The context: the app's RAG text layout (see RagContext.ts), or a structured object. */
export const RecordContext = Schema.Union([Schema.String, Schema.Record(Schema.String, Schema.Unknown)])

export const TrainingRecord = Schema.Struct({
  question: NonBlankString,
  /** placeholders like `<PRICE>` instead of live values */
  answer: NonBlankString,
  rationale: Schema.String,
  /** upper-case symbols, or symbol placeholders such as `<STOCK_1>` */
  tickers: Schema.Array(Schema.String),
  citations: Schema.Array(Citation),
  context_required: Schema.Boolean,
  /** required for investment-advice answers (the `advice_needs_risk_note` rule) */
  risk_note: Schema.optionalKey(Schema.String),
  context: Schema.optionalKey(RecordContext),
  /** the kind of question (`price`, `valuation`, `should_buy`…; the chat file's `category`), for stats */
  intent: Schema.optionalKey(Schema.String)
})
export type TrainingRecord = typeof TrainingRecord.Type

/** The canonical field names, in output order. */
export const recordFields = [
  "question",
  "answer",
  "rationale",
  "tickers",
  "citations",
  "context_required",
  "risk_note",
  "context",
  "intent"
] as const

/** A record with its keys in canonical order (extra keys, when kept, go after them in input order). */
export const orderRecord = (r: TrainingRecord, extra?: Readonly<Record<string, unknown>>): Record<string, unknown> => {
  const out: Record<string, unknown> = {
    question: r.question,
    answer: r.answer,
    rationale: r.rationale,
    tickers: r.tickers,
    citations: r.citations.map((c) => ({ source: c.source, timestamp: c.timestamp })),
    context_required: r.context_required
  }
  if (r.risk_note !== undefined) out.risk_note = r.risk_note
  if (r.context !== undefined) out.context = r.context
  if (r.intent !== undefined) out.intent = r.intent
  if (extra) for (const [k, v] of Object.entries(extra)) if (!(k in out)) out[k] = v
  return out
}

const str = JSON.stringify
/**
 * The record as one JSON line (no newline), keys in canonical order: the same text as
 * `JSON.stringify(orderRecord(r, extra))`, built field by field because it runs once per output line.
 */
export const encodeRecord = (r: TrainingRecord, extra?: Readonly<Record<string, unknown>>): string => {
  let citations = "["
  for (let i = 0; i < r.citations.length; i++) {
    const c = r.citations[i]!
    citations += `${i > 0 ? "," : ""}{"source":${str(c.source)},"timestamp":${str(c.timestamp)}}`
  }
  let out = `{"question":${str(r.question)},"answer":${str(r.answer)},"rationale":${str(r.rationale)},"tickers":${str(r.tickers)},"citations":${citations}],"context_required":${r.context_required}`
  if (r.risk_note !== undefined) out += `,"risk_note":${str(r.risk_note)}`
  if (r.context !== undefined) out += `,"context":${str(r.context)}`
  if (r.intent !== undefined) out += `,"intent":${str(r.intent)}`
  if (extra) {
    for (const [k, v] of Object.entries(extra)) {
      if (!(recordFields as ReadonlyArray<string>).includes(k) && v !== undefined) out += `,${str(k)}:${str(v)}`
    }
  }
  return out + "}"
}
