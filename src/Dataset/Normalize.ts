/**
 * Record-level normalization: live values in the question, answer, rationale, risk note and chat turns become typed
 * placeholders (Placeholders.ts), and citation timestamps that are ISO-8601 become `<TIMESTAMP>`. The
 * context is never normalized: it is where the live values live. The map of what each placeholder
 * replaced makes the step reversible (`rehydrateRecord`). Schema-free, as Placeholders.ts (worker threads).
 */
import { normalizeText, rehydrateText, type Replacement } from "./Placeholders.ts"
import type { TrainingRecord } from "./Record.ts"

/** field path (`answer`, `citations.0.timestamp`) -> the replacements made in it, in order (Schema: DatasetSchemas.ts) */
export type PlaceholderMap = Readonly<Record<string, ReadonlyArray<Replacement>>>

const isoTimestamp = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/

/** true for `<TIMESTAMP>` or an ISO-8601 date or date-time */
export const isTimestampValue = (s: string): boolean => s === "<TIMESTAMP>" || isoTimestamp.test(s)

const textFields = ["question", "answer", "rationale", "risk_note"] as const

export interface NormalizedRecord {
  readonly record: TrainingRecord
  readonly map: PlaceholderMap
  /** how many values were replaced, by placeholder */
  readonly replaced: number
}

/** Normalizes one record; idempotent, and `rehydrateRecord` undoes it. */
export const normalizeRecord = (r: TrainingRecord): NormalizedRecord => {
  const map: Record<string, ReadonlyArray<Replacement>> = {}
  let replaced = 0
  let out: TrainingRecord = r
  for (const field of textFields) {
    const value = r[field]
    if (value === undefined) continue
    const n = normalizeText(value)
    if (n.replacements.length > 0) {
      map[field] = n.replacements
      replaced += n.replacements.length
      out = { ...out, [field]: n.text }
    }
  }
  let citations: Array<TrainingRecord["citations"][number]> | undefined
  r.citations.forEach((c, i) => {
    if (c.timestamp !== "<TIMESTAMP>" && isoTimestamp.test(c.timestamp)) {
      citations ??= [...r.citations]
      citations[i] = { source: c.source, timestamp: "<TIMESTAMP>" }
      map[`citations.${i}.timestamp`] = [{ placeholder: "<TIMESTAMP>", value: c.timestamp, at: 0 }]
      replaced++
    }
  })
  if (citations) out = { ...out, citations }
  if (r.messages !== undefined) {
    let messages: Array<NonNullable<TrainingRecord["messages"]>[number]> | undefined
    r.messages.forEach((m, i) => {
      const n = normalizeText(m.content)
      if (n.replacements.length === 0) return
      messages ??= [...r.messages!]
      messages[i] = { role: m.role, content: n.text }
      map[`messages.${i}.content`] = n.replacements
      replaced += n.replacements.length
    })
    if (messages) out = { ...out, messages }
  }
  return { record: out, map, replaced }
}

/** Puts the values of a placeholder map back. */
export const rehydrateRecord = (r: TrainingRecord, map: PlaceholderMap): TrainingRecord => {
  let out: TrainingRecord = r
  for (const field of textFields) {
    const reps = map[field]
    const value = r[field]
    if (reps !== undefined && value !== undefined) out = { ...out, [field]: rehydrateText(value, reps) }
  }
  const citations = r.citations.map((c, i) => {
    const reps = map[`citations.${i}.timestamp`]
    return reps ? { source: c.source, timestamp: rehydrateText(c.timestamp, reps) } : c
  })
  const messages = r.messages?.map((m, i) => {
    const reps = map[`messages.${i}.content`]
    return reps ? { role: m.role, content: rehydrateText(m.content, reps) } : m
  })
  return { ...out, citations, ...(messages !== undefined ? { messages } : {}) }
}

export { canonicalText } from "./Split.ts"
