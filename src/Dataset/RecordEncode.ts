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
  "intent",
  "messages"
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
  if (r.messages !== undefined) out.messages = r.messages.map((m) => ({ role: m.role, content: m.content }))
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
  if (r.messages !== undefined) {
    out += `,"messages":[`
    for (let i = 0; i < r.messages.length; i++) out += `${i > 0 ? "," : ""}{"role":${str(r.messages[i]!.role)},"content":${str(r.messages[i]!.content)}}`
    out += "]"
  }
  if (extra) {
    for (const [k, v] of Object.entries(extra)) {
      if (!(recordFields as ReadonlyArray<string>).includes(k) && v !== undefined) out += `,${str(k)}:${str(v)}`
    }
  }
  return out + "}"
}

// the escapes JSON.stringify writes with two characters; it writes `\u` only for other control characters
// and lone surrogates, which a line may also spell differently (`\u0041`), so any `\u` is not canonical
const shortEscape = (() => {
  const m = new Uint8Array(256)
  for (const c of "\"\\nrtbf") m[c.charCodeAt(0)] = 1
  return m
})()

/**
 * The number of object keys in the JSON text `bytes[from, to)` (colons outside strings) when it is written
 * as JSON.stringify writes it: no whitespace between tokens, and no escapes but \" \\ \n \r \t \b \f;
 * otherwise -1. (Numbers are not looked at: a record line has none outside its strings.)
 */
export const canonicalKeyCount = (bytes: Uint8Array, from: number, to: number): number => {
  let keys = 0
  let i = from
  while (i < to) {
    const c = bytes[i++]!
    if (c === 34) {
      // a string: to its closing quote
      for (;;) {
        if (i >= to) return -1
        const x = bytes[i++]!
        if (x === 34) break
        if (x === 92 && shortEscape[bytes[i++]!] === 0) return -1
      }
    } else if (c === 58) keys++
    else if (c === 32 || c === 9 || c === 10 || c === 13) return -1
  }
  return keys
}

/**
 * True when `encodeRecord(record) + "\n"` would give back the input line as it is, so the ingest copies the
 * line's bytes instead of encoding the record again: the parsed line `json` holds exactly the canonical
 * fields in canonical order (nothing defaulted, added or dropped), each citation exactly `source` then
 * `timestamp`, a string context (an object's numbers and key order could be written differently), and
 * the line is written the way JSON.stringify writes (`canonicalKeyCount`) with one colon per key (a
 * repeated key, which JSON.parse keeps once, fails this). `record` must be the decoded `json`, unchanged.
 */
// question … context_required: the fields encodeRecord always writes
const alwaysWritten = recordFields.indexOf("context_required") + 1

export const encodesAsLine = (json: Readonly<Record<string, unknown>>, bytes: Uint8Array, from: number, to: number): boolean => {
  let k = 0
  let keys = 0
  for (const key in json) {
    while (k < recordFields.length && recordFields[k] !== key) {
      if (k < alwaysWritten) return false
      k++
    }
    if (k === recordFields.length) return false
    k++
    keys++
  }
  if (k < alwaysWritten || (json.context !== undefined && typeof json.context !== "string")) return false
  const citations = json.citations as ReadonlyArray<Readonly<Record<string, unknown>>>
  for (const c of citations) {
    let n = 0
    for (const key in c) {
      if (key !== (n === 0 ? "source" : "timestamp")) return false
      n++
    }
    if (n !== 2) return false
  }
  return canonicalKeyCount(bytes, from, to) === keys + 2 * citations.length
}
