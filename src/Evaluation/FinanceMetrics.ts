/**
 * The finance metrics: factuality, citation rate, risk-flag rate and placeholder fidelity. They have no
 * reference implementation, so this comment is their definition; every rule below is unit-tested on
 * hand-made cases in test/EvalFinanceMetrics.test.ts.
 *
 * Live values and placeholders are found with the Dataset stage's detector (`detectValues`,
 * `placeholdersIn`, `placeholderBaseType` in src/Dataset/Placeholders.ts), and contexts are read with its
 * parser (`parseRagContext`, `contextValues` in src/Dataset/RagContext.ts), so "a number" means the same
 * thing in training data and in evaluation.
 *
 * ## Factuality (per answer, then per corpus)
 * Checked items are the live values the detector finds in the generated answer (prices, changes, percents,
 * ratios, EPS, yields, volumes, market caps, times, dates; list markers, years and counts are not live
 * values) and its placeholders.
 * - The context's numbers are every number written in the context text (thousands separators, `$`, signs,
 *   `%`, K/M/B/T scales normalized by `parseNumber`) plus the typed values of a parsed RAG context.
 * - A number is **supported** when some context number c rounds to it at the precision the answer wrote it
 *   with: |v − c| ≤ half a unit in the answer's last written digit (`$190.1` ±0.05, `0.45%` ±0.005, `3.1B`
 *   ±0.05B, `12,345` ±0.5), widened by the options `absTolerance` (default 0) and `relTolerance` (default 0,
 *   a share of |c|) when they are larger. Times and dates are supported when their text occurs in the context.
 * - A **sign flip** is a change whose magnitude matches a context change but whose sign is the opposite.
 *   The sign comes from an explicit `+`/`-`, or else from the verb before it ("fell 0.45%" is −0.45).
 * - A **hallucinated value** is any other number.
 * - A placeholder is supported when the context can fill it: a live type (`<PRICE>`, `<PE_1>` = RATIO…)
 *   needs a context value of that type; `<SYMBOL>`/`<STOCK_1>` need a symbol in the context; `<TIMESTAMP>`
 *   and `<DATE>` are always fillable (the server fills them from its clock); free-text and score
 *   placeholders (`<REASON_1>`, `<MOMENTUM>`) are not checked. Otherwise it is a **hallucinated placeholder**.
 * - **Dropped required values**: the reference answer's live items by base type (its live placeholders and
 *   literal live values), minus what the answer provides of each type (multiset difference).
 * - Score = supported / (checked + dropped); 1 when there is nothing to check and nothing was dropped.
 *   The corpus score is the mean of answer scores; the micro score sums the counts first.
 *
 * ## Citation rate
 * An answer **cites** when it names a source: a `Source:`/`Sources:` label, `(source: …)`, "according to",
 * "reported by", "citing", a footnote marker like `[1]`, or the name of one of the record's allowed sources.
 * Allowed sources are the record's `citations[].source` plus the sources of the context's news items.
 * The explicitly named sources are the text after those cue words up to punctuation. An answer's sources
 * are **allowed** when it cites, at least one allowed source is named, and every explicitly named source
 * matches an allowed one (case-insensitive, either contains the other).
 * citationRate = citing / answers; allowedSourceRate = allowed / citing answers (0 when none cite).
 *
 * ## Risk-flag rate
 * A record **needs a disclaimer** when it has a `risk_note` (the dataset requires one for investment-advice
 * answers) or its question asks for advice (should I buy/sell/hold, is it a good investment, recommend,
 * allocate…). An answer **carries a disclaimer** when it contains the record's risk note or a standard phrase
 * ("not financial advice", "past performance", "do your own research", "consult a financial advisor",
 * "risk tolerance", "investing involves risk", "you could lose"…).
 * riskFlagRate = advice answers with a disclaimer / advice answers; unneededDisclaimerRate = other answers
 * with a disclaimer / other answers (each 0 when its denominator is 0).
 *
 * ## Placeholder fidelity
 * The multiset of the answer's placeholder base types against the reference's (`<SPY_PRICE>` and `<PRICE>`
 * are both PRICE): precision = common / answer's, recall = common / reference's, F1; all 1 when both have
 * none, 0 when only one side has any. `exact` is true when the multisets of full placeholder names agree.
 */
import { Schema } from "effect"
import {
  type BaseType,
  detectValues,
  isLiveType,
  parseNumber,
  placeholderBaseType,
  placeholdersIn
} from "../Dataset/Placeholders.ts"
import { contextValues, parseRagContext, RagContext, renderRagContext } from "../Dataset/RagContext.ts"

export interface FactualityOptions {
  readonly absTolerance?: number
  readonly relTolerance?: number
}

export interface FactualityResult {
  readonly score: number
  readonly checked: number
  readonly supported: number
  readonly hallucinatedValues: ReadonlyArray<string>
  readonly hallucinatedPlaceholders: ReadonlyArray<string>
  readonly signFlips: ReadonlyArray<string>
  /** base types the reference needed and the answer did not provide, one entry per missing item */
  readonly droppedValues: ReadonlyArray<string>
}

export interface CitationResult {
  readonly cites: boolean
  readonly namedSources: ReadonlyArray<string>
  readonly allowed: boolean
}

export interface RiskResult {
  readonly needsDisclaimer: boolean
  readonly hasDisclaimer: boolean
}

export interface PlaceholderFidelity {
  readonly precision: number
  readonly recall: number
  readonly f1: number
  readonly exact: boolean
}

/** What the finance metrics read from a record (a subset of the Dataset's TrainingRecord). */
export interface RecordView {
  readonly question: string
  readonly answer: string
  readonly context?: string | Readonly<Record<string, unknown>> | undefined
  readonly citations?: ReadonlyArray<{ readonly source: string }> | undefined
  readonly risk_note?: string | undefined
}

export interface FinanceScores {
  readonly factuality: FactualityResult
  readonly citation: CitationResult
  readonly risk: RiskResult
  readonly placeholders: PlaceholderFidelity
}

// ---------------------------------------------------------------------------------------------------------
// Context

const isRagContext = Schema.is(RagContext)

interface ContextFacts {
  readonly text: string
  readonly numbers: ReadonlyArray<number>
  readonly types: ReadonlySet<BaseType>
  readonly hasSymbol: boolean
  readonly newsSources: ReadonlyArray<string>
}

const numberToken = /[+\-\u2212]?(?:US|CA|C)?\$?\d[\d,]*(?:\.\d+)?(?:\s?(?:trillion|billion|million|thousand|bn|mn)\b|[KMBT]\b)?/g

const readContext = (context: RecordView["context"]): ContextFacts => {
  if (context === undefined) return { text: "", numbers: [], types: new Set(), hasSymbol: false, newsSources: [] }
  const text = typeof context === "string"
    ? context
    : isRagContext(context)
    ? renderRagContext(context)
    : JSON.stringify(context)
  const rag = typeof context === "string" ? parseRagContext(context) : isRagContext(context) ? context : {}
  const typed = contextValues(rag)
  const numbers: Array<number> = typed.map((v) => v.value)
  for (const m of text.matchAll(numberToken)) {
    const n = parseNumber(m[0])
    if (Number.isFinite(n)) numbers.push(n)
  }
  const types = new Set<BaseType>(typed.map((v) => v.type))
  for (const v of detectValues(text)) types.add(v.type)
  const hasSymbol = rag.symbol !== undefined || Object.keys(rag.prices ?? {}).length > 0 ||
    (rag.holdings ?? []).length > 0 || /\b[A-Z]{1,5}:\s/.test(text)
  return { text, numbers, types, hasSymbol, newsSources: (rag.news ?? []).map((n) => n.source) }
}

// ---------------------------------------------------------------------------------------------------------
// Factuality

const downVerbs = /\b(?:down|fell|fall(?:s|ing)?|drop(?:ped|s)?|declin(?:ed|es|ing)|los[st]|losing|slip(?:ped|s)?|tumbl(?:ed|es)|sank|lower|decreas(?:ed|es))\b[^.;:\n]{0,12}$/i
const upVerbs = /\b(?:up|rose|ris(?:e|es|ing)|gain(?:ed|s|ing)?|jump(?:ed|s)?|climb(?:ed|s)?|advanc(?:ed|es)|surg(?:ed|es)|rall(?:ied|ies)|higher|increas(?:ed|es))\b[^.;:\n]{0,12}$/i

/** +1 / −1 from an explicit sign or the verb before the value; 0 when unknown. */
const signOf = (text: string, valueText: string, start: number): number => {
  const t = valueText.trimStart()
  if (/^[+]/.test(t) || /\$\+/.test(t)) return 1
  if (/^[-\u2212]/.test(t) || /\$[-\u2212]/.test(t)) return -1
  const before = text.slice(Math.max(0, start - 30), start)
  if (downVerbs.test(before)) return -1
  if (upVerbs.test(before)) return 1
  return 0
}

/** Half a unit in the last written digit, scaled (`3.1B` -> 0.05e9); tiny slack for binary floating point. */
const displayedHalfUnit = (text: string, value: number): number => {
  const m = /(\d[\d,]*)(?:\.(\d+))?/.exec(text)
  if (m === null) return 0
  const base = Number(m[1]!.replace(/,/g, "") + (m[2] ? "." + m[2] : ""))
  const scale = base === 0 ? 1 : Math.abs(value) / base
  return 0.5 * 10 ** -(m[2]?.length ?? 0) * scale * (1 + 1e-9)
}

const within = (a: number, halfUnit: number, c: number, o: Required<FactualityOptions>) =>
  Math.abs(a - c) <= Math.max(halfUnit, o.absTolerance, o.relTolerance * Math.abs(c))

const countByType = (types: ReadonlyArray<string>) => {
  const m = new Map<string, number>()
  for (const t of types) m.set(t, (m.get(t) ?? 0) + 1)
  return m
}

/** The live items (base types) of a text: its live placeholders and its literal live values. */
const liveItems = (text: string): Array<string> => [
  ...placeholdersIn(text).map(placeholderBaseType).filter(isLiveType),
  ...detectValues(text).map((v) => v.type)
]

export const factuality = (
  prediction: string,
  record: Pick<RecordView, "answer" | "context">,
  options: FactualityOptions = {}
): FactualityResult => {
  const o = { absTolerance: options.absTolerance ?? 0, relTolerance: options.relTolerance ?? 0 }
  const ctx = readContext(record.context)
  let supported = 0
  let checked = 0
  const hallucinatedValues: Array<string> = []
  const signFlips: Array<string> = []
  const hallucinatedPlaceholders: Array<string> = []

  for (const v of detectValues(prediction)) {
    checked++
    if (v.type === "TIMESTAMP" || v.type === "DATE") {
      if (ctx.text.includes(v.text.trim())) supported++
      else hallucinatedValues.push(v.text)
      continue
    }
    let value = v.value
    const sign = v.type === "CHANGE" ? signOf(prediction, v.text, v.start) : 0
    if (sign !== 0) value = sign * Math.abs(value)
    const halfUnit = displayedHalfUnit(v.text, v.value)
    if (ctx.numbers.some((c) => within(value, halfUnit, c, o))) {
      supported++
    } else if (
      v.type === "CHANGE" && value !== 0 &&
      ctx.numbers.some((c) => c !== 0 && Math.sign(c) !== Math.sign(value) && within(-value, halfUnit, c, o))
    ) {
      signFlips.push(v.text)
    } else {
      hallucinatedValues.push(v.text)
    }
  }

  for (const p of placeholdersIn(prediction)) {
    const t = placeholderBaseType(p)
    if (t === "TEXT" || t === "SCORE") continue
    checked++
    const fillable = t === "TIMESTAMP" || t === "DATE" ? true : t === "SYMBOL" ? ctx.hasSymbol : ctx.types.has(t)
    if (fillable) supported++
    else hallucinatedPlaceholders.push(p)
  }

  const required = countByType(liveItems(record.answer))
  const provided = countByType(liveItems(prediction))
  const droppedValues: Array<string> = []
  for (const [t, n] of required) for (let i = provided.get(t) ?? 0; i < n; i++) droppedValues.push(t)

  const denominator = checked + droppedValues.length
  return {
    score: denominator === 0 ? 1 : supported / denominator,
    checked,
    supported,
    hallucinatedValues,
    hallucinatedPlaceholders,
    signFlips,
    droppedValues
  }
}

// ---------------------------------------------------------------------------------------------------------
// Citations

const citationCue = /(?:\bsources?\s*:\s*|\baccording to\s+|\breported by\s+|\bciting\s+|\bvia\s+)([^.;,\n()]+)/gi
const footnote = /\[\d+\]/

const sameSource = (a: string, b: string) => {
  const x = a.trim().toLowerCase()
  const y = b.trim().toLowerCase()
  return x.length > 0 && y.length > 0 && (x.includes(y) || y.includes(x))
}

export const citation = (prediction: string, record: Pick<RecordView, "citations" | "context">): CitationResult => {
  const allowedSources = [
    ...(record.citations ?? []).map((c) => c.source),
    ...readContext(record.context).newsSources
  ].filter((s) => s.trim() !== "")
  const named = Array.from(prediction.matchAll(citationCue), (m) => m[1]!.trim()).filter((s) => s !== "")
  const lower = prediction.toLowerCase()
  const mentionsAllowed = allowedSources.some((s) => lower.includes(s.trim().toLowerCase()))
  const cites = named.length > 0 || footnote.test(prediction) || mentionsAllowed
  const allowed = cites && mentionsAllowed && named.every((n) => allowedSources.some((s) => sameSource(n, s)))
  return { cites, namedSources: named, allowed }
}

// ---------------------------------------------------------------------------------------------------------
// Risk flags

const adviceQuestion =
  /\b(?:should (?:i|we) (?:buy|sell|hold|invest|add|trim|short)|(?:is|are) (?:it|\w+) a (?:good|bad) (?:buy|investment|stock)|worth (?:buying|investing|holding)|recommend|good (?:time|idea) to (?:buy|sell|invest)|allocat(?:e|ion)|buy or sell|sell or hold|what (?:stocks?|etfs?) (?:should|to) (?:i )?buy)\b/i
const disclaimer =
  /not (?:financial|investment) advice|not a recommendation|past performance|do your own research|consult (?:a|an|your) (?:licensed |qualified )?(?:financial|investment) (?:advisor|adviser|professional)|risk tolerance|invest(?:ing|ments?) (?:involves?|carr(?:y|ies)) risk|(?:you )?(?:could|may|might) lose|no guarantee|for informational purposes|educational purposes/i

export const riskFlag = (prediction: string, record: Pick<RecordView, "question" | "risk_note">): RiskResult => {
  const note = record.risk_note?.trim() ?? ""
  const needsDisclaimer = note !== "" || adviceQuestion.test(record.question)
  const hasDisclaimer = disclaimer.test(prediction) || (note !== "" && prediction.includes(note))
  return { needsDisclaimer, hasDisclaimer }
}

// ---------------------------------------------------------------------------------------------------------
// Placeholder fidelity

const multisetCommon = (a: ReadonlyArray<string>, b: ReadonlyArray<string>) => {
  const counts = countByType(b)
  let common = 0
  for (const x of a) {
    const n = counts.get(x) ?? 0
    if (n > 0) {
      common++
      counts.set(x, n - 1)
    }
  }
  return common
}

export const placeholderFidelity = (prediction: string, reference: string): PlaceholderFidelity => {
  const predNames = placeholdersIn(prediction)
  const refNames = placeholdersIn(reference)
  const exact = predNames.length === refNames.length && multisetCommon(predNames, refNames) === refNames.length
  if (predNames.length === 0 && refNames.length === 0) return { precision: 1, recall: 1, f1: 1, exact: true }
  if (predNames.length === 0 || refNames.length === 0) return { precision: 0, recall: 0, f1: 0, exact: false }
  const common = multisetCommon(predNames.map(placeholderBaseType), refNames.map(placeholderBaseType))
  const precision = common / predNames.length
  const recall = common / refNames.length
  const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0
  return { precision, recall, f1, exact }
}

// ---------------------------------------------------------------------------------------------------------
// All of them, and corpus aggregates

export const financeScores = (prediction: string, record: RecordView, options: FactualityOptions = {}): FinanceScores => ({
  factuality: factuality(prediction, record, options),
  citation: citation(prediction, record),
  risk: riskFlag(prediction, record),
  placeholders: placeholderFidelity(prediction, record.answer)
})

export interface FinanceAggregate {
  readonly factuality: number
  readonly factualityMicro: number
  readonly hallucinatedValues: number
  readonly hallucinatedPlaceholders: number
  readonly signFlips: number
  readonly droppedValues: number
  readonly citationRate: number
  readonly allowedSourceRate: number
  readonly riskFlagRate: number
  readonly unneededDisclaimerRate: number
  readonly placeholderF1: number
  readonly placeholderExactRate: number
}

const ratio = (num: number, den: number) => (den === 0 ? 0 : num / den)

export const aggregateFinance = (scores: ReadonlyArray<FinanceScores>): FinanceAggregate => {
  let fSum = 0
  let supported = 0
  let denominator = 0
  let hv = 0
  let hp = 0
  let flips = 0
  let dropped = 0
  let citing = 0
  let allowed = 0
  let advice = 0
  let adviceFlagged = 0
  let other = 0
  let otherFlagged = 0
  let pF1 = 0
  let exact = 0
  for (const s of scores) {
    const f = s.factuality
    fSum += f.score
    supported += f.supported
    denominator += f.checked + f.droppedValues.length
    hv += f.hallucinatedValues.length
    hp += f.hallucinatedPlaceholders.length
    flips += f.signFlips.length
    dropped += f.droppedValues.length
    if (s.citation.cites) citing++
    if (s.citation.allowed) allowed++
    if (s.risk.needsDisclaimer) {
      advice++
      if (s.risk.hasDisclaimer) adviceFlagged++
    } else {
      other++
      if (s.risk.hasDisclaimer) otherFlagged++
    }
    pF1 += s.placeholders.f1
    if (s.placeholders.exact) exact++
  }
  const n = scores.length
  return {
    factuality: ratio(fSum, n),
    factualityMicro: denominator === 0 ? (n === 0 ? 0 : 1) : supported / denominator,
    hallucinatedValues: hv,
    hallucinatedPlaceholders: hp,
    signFlips: flips,
    droppedValues: dropped,
    citationRate: ratio(citing, n),
    allowedSourceRate: ratio(allowed, citing),
    riskFlagRate: ratio(adviceFlagged, advice),
    unneededDisclaimerRate: ratio(otherFlagged, other),
    placeholderF1: ratio(pF1, n),
    placeholderExactRate: ratio(exact, n)
  }
}
