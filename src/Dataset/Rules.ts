/**
 * The seed's content rules. Each rule has a name, and a severity set by configuration: `reject` (the
 * line goes to rejects.jsonl with the rule's name), `warn` (kept, counted in the summary), or `off`.
 * Rules run on the normalized record.
 */
import { hasLivePlaceholder, isPlaceholder } from "./Placeholders.ts"
import { isTimestampValue } from "./Normalize.ts"
import type { TrainingRecord } from "./Record.ts"
import { findTickersInTexts } from "./Tickers.ts"

export const ruleNames = [
  /** answers with live-data placeholders must have `context_required: true` */
  "live_values_need_context",
  /** records with `context_required` must cite at least one source */
  "context_needs_citation",
  /** investment-advice answers (buy/sell/hold, "should I") need a `risk_note` */
  "advice_needs_risk_note",
  /** citation timestamps are `<TIMESTAMP>` or ISO-8601 */
  "citation_timestamp",
  /** tickers are upper-case symbols (or symbol placeholders like `<STOCK_1>`) */
  "tickers_uppercase",
  /** tickers named in the question or answer appear in `tickers` */
  "tickers_in_text"
] as const
// Schema-free, as Placeholders.ts (worker threads); the Schemas are in DatasetSchemas.ts
export type RuleName = (typeof ruleNames)[number]
export const severities = ["reject", "warn", "off"] as const
export type Severity = (typeof severities)[number]
export type RuleConfig = Readonly<Record<RuleName, Severity>>

export const defaultRuleConfig: RuleConfig = {
  live_values_need_context: "reject",
  context_needs_citation: "reject",
  advice_needs_risk_note: "reject",
  citation_timestamp: "reject",
  tickers_uppercase: "reject",
  tickers_in_text: "warn"
}

/** Parses `name=severity,name=severity` (the CLI's `--rules`) over the defaults. */
export const parseRuleConfig = (spec: string, base: RuleConfig = defaultRuleConfig): RuleConfig | string => {
  const out: Record<string, Severity> = { ...base }
  for (const part of spec.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
    const [name, severity] = part.split("=").map((s) => s.trim())
    if (!(ruleNames as ReadonlyArray<string>).includes(name ?? "")) {
      return `unknown rule "${name}" (rules: ${ruleNames.join(", ")})`
    }
    if (severity !== "reject" && severity !== "warn" && severity !== "off") {
      return `rule ${name}: severity must be reject, warn or off, got "${severity ?? ""}"`
    }
    out[name!] = severity
  }
  return out as RuleConfig
}

export interface Violation {
  readonly rule: RuleName
  readonly field: string
  readonly reason: string
}

const adviceQuestion = /\b(?:should (?:i|we)|is it (?:a )?(?:good|smart|bad) (?:time|idea) to|worth (?:buying|investing)|(?:buy|sell|hold)(?:ing)?)\b/i
const adviceAnswer = /\b(?:strong buy|buy rating|sell rating|(?:i (?:would )?(?:recommend|suggest)|good (?:time|idea) to|you (?:should|could) (?:consider )?)\s*(?:buying|selling|holding|buy|sell|hold)\b)/i
// every match of adviceAnswer holds one of these words: a cheap test first, since most answers hold none
const adviceWord = /buy|sell|hold/i
const symbolPattern = /^[A-Z][A-Z0-9]{0,5}(?:[.-][A-Z0-9]{1,3})?$/

/** true for investment-advice questions/answers ("Should I buy TSLA?") */
export const isAdvice = (r: Pick<TrainingRecord, "question" | "answer">): boolean =>
  adviceQuestion.test(r.question) || (adviceWord.test(r.answer) && adviceAnswer.test(r.answer))

/**
 * Every rule the record breaks whose severity is not `off`. `answerTickers`, when the caller has it, is
 * `findTickersInText(r.answer)` (the ingest reads it in the scan that also masks the answer for the split).
 */
export const checkRules = (r: TrainingRecord, config: RuleConfig, answerTickers?: ReadonlyArray<string>): Array<Violation> => {
  const out: Array<Violation> = []
  if (config.live_values_need_context !== "off" && !r.context_required && hasLivePlaceholder(r.answer)) {
    out.push({ rule: "live_values_need_context", field: "context_required", reason: "answer holds live-data placeholders but context_required is false" })
  }
  if (config.context_needs_citation !== "off" && r.context_required && r.citations.length === 0) {
    out.push({ rule: "context_needs_citation", field: "citations", reason: "context_required is true but no source is cited" })
  }
  if (config.advice_needs_risk_note !== "off" && (r.risk_note === undefined || !/\S/.test(r.risk_note)) && isAdvice(r)) {
    out.push({ rule: "advice_needs_risk_note", field: "risk_note", reason: "investment-advice answer without a risk_note" })
  }
  if (config.citation_timestamp !== "off") {
    r.citations.forEach((c, i) => {
      if (!isTimestampValue(c.timestamp)) {
        out.push({ rule: "citation_timestamp", field: `citations.${i}.timestamp`, reason: `timestamp must be <TIMESTAMP> or ISO-8601, got ${JSON.stringify(c.timestamp)}` })
      }
    })
  }
  if (config.tickers_uppercase !== "off") {
    r.tickers.forEach((t, i) => {
      if (!symbolPattern.test(t) && !isPlaceholder(t)) {
        out.push({ rule: "tickers_uppercase", field: `tickers.${i}`, reason: `ticker must be an upper-case symbol, got ${JSON.stringify(t)}` })
      }
    })
  }
  if (config.tickers_in_text !== "off") {
    const missing = findTickersInTexts(r.question, r.answer, answerTickers).filter((s) => !r.tickers.includes(s))
    if (missing.length > 0) {
      out.push({ rule: "tickers_in_text", field: "tickers", reason: `tickers named in the text are missing from tickers: ${missing.join(", ")}` })
    }
  }
  return out
}
