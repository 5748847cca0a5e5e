/**
 * Writing a TrainingRecord (Record.ts) as JSON with its keys in canonical order, so outputs are
 * byte-identical for the same input. Schema-free: it runs in the ingest's worker threads.
 */
import type { TrainingRecord } from "./Record.ts"

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
