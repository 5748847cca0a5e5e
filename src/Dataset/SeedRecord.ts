/**
 * The seed-record half of Input.ts without Schema: the hand-written check that accepts exactly what
 * `SeedInput` accepts, and the mapping of a valid seed object to the canonical record. The ingest's worker
 * threads decode seed lines with these alone (loading `effect` there would cost about 25 MB a worker)
 * and leave every other line to the main thread, where the Schema explains what is wrong.
 */
import type { SeedInput, TrainingRecord } from "./Record.ts"
import { findTickersInText } from "./Tickers.ts"

export type InputFormat = "seed" | "chat" | "pair"

/** A line that could not become a record: the field path (`tickers.0`, `<root>`) and why. */
export interface InputIssue {
  readonly field: string
  readonly reason: string
}

export interface Decoded {
  readonly format: InputFormat
  readonly record: TrainingRecord
  /** present only when true: `context_required` was absent and must be derived after normalization */
  readonly deriveContextRequired: boolean
  readonly extra: Readonly<Record<string, unknown>> | undefined
  readonly extraKeys: ReadonlyArray<string>
}

/** the seed format's known keys (`Object.keys(SeedInput.fields)`; a test checks they agree) */
export const seedKeys: ReadonlySet<string> = new Set(["question", "answer", "rationale", "tickers", "citations", "context_required", "risk_note", "context", "intent", "messages"])

const nonBlank = /\S/
const isStringArray = (v: unknown) => Array.isArray(v) && v.every((x) => typeof x === "string")
const isMessages = (v: unknown) =>
  Array.isArray(v) && v.every((m) =>
    m !== null && typeof m === "object" && !Array.isArray(m) &&
    (m.role === "system" || m.role === "user" || m.role === "assistant") && typeof m.content === "string")
const isCitations = (v: unknown) =>
  Array.isArray(v) && v.every((c) =>
    c !== null && typeof c === "object" && !Array.isArray(c) &&
    typeof c.source === "string" && nonBlank.test(c.source) && typeof c.timestamp === "string")

/**
 * A hand-written check that accepts exactly what SeedInput accepts (a test compares the two on random
 * values). The ingest decodes most lines through it, because it allocates nothing; the Schema decodes
 * the rest and explains what is wrong.
 */
/** A canonical chat record (an ingest output) carries `messages` beside its seed fields: it reads as a seed record. */
export const isChatShaped = (o: Record<string, unknown>): boolean => "messages" in o && !("answer" in o)

export const isSeedInput = (o: Record<string, unknown>): o is typeof SeedInput.Type =>
  typeof o.question === "string" && nonBlank.test(o.question) &&
  typeof o.answer === "string" && nonBlank.test(o.answer) &&
  (o.rationale === undefined ? !("rationale" in o) : typeof o.rationale === "string") &&
  (o.tickers === undefined ? !("tickers" in o) : isStringArray(o.tickers)) &&
  (o.citations === undefined ? !("citations" in o) : isCitations(o.citations)) &&
  (o.context_required === undefined ? !("context_required" in o) : typeof o.context_required === "boolean") &&
  (o.risk_note === undefined ? !("risk_note" in o) : typeof o.risk_note === "string") &&
  (o.context === undefined ? !("context" in o) : typeof o.context === "string" || (o.context !== null && typeof o.context === "object" && !Array.isArray(o.context))) &&
  (o.intent === undefined ? !("intent" in o) : typeof o.intent === "string") &&
  (o.messages === undefined ? !("messages" in o) : isMessages(o.messages))

export const splitExtra = (obj: Record<string, unknown>, known: ReadonlySet<string>, keepExtra: boolean) => {
  let extraKeys: Array<string> | undefined
  let extra: Record<string, unknown> | undefined
  for (const k in obj) {
    if (known.has(k)) continue
    ;(extraKeys ??= []).push(k)
    if (keepExtra) (extra ??= {})[k] = obj[k]
  }
  return { extra, extraKeys: extraKeys ?? [] }
}

/** The canonical record of a valid seed object (`isSeedInput` or SeedInput decoded). */
export const seedDecoded = (s: typeof SeedInput.Type, obj: Record<string, unknown>, keepExtra: boolean): Decoded => {
  const { extra, extraKeys } = splitExtra(obj, seedKeys, keepExtra)
  return {
    format: "seed",
    record: {
      question: s.question,
      answer: s.answer,
      rationale: s.rationale ?? "",
      tickers: s.tickers ?? findTickersInText(`${s.question} ${s.answer}`),
      citations: s.citations ?? [],
      context_required: s.context_required ?? false,
      ...(s.risk_note !== undefined ? { risk_note: s.risk_note } : {}),
      ...(s.context !== undefined ? { context: s.context } : {}),
      ...(s.intent !== undefined ? { intent: s.intent } : {}),
      ...(s.messages !== undefined ? { messages: s.messages } : {})
    },
    deriveContextRequired: s.context_required === undefined,
    extra,
    extraKeys
  }
}
