/**
 * Live values and their placeholders: the seed's first principle is that a fine-tuned model must never
 * memorise a price, so every live value in training text becomes a typed placeholder (`<PRICE>`), and the
 * serving side fills placeholders from the request's context.
 *
 * This module is the one place that knows how live values look:
 * - `detectValues(text)` finds live values with their type and parsed number (the Evaluation stage's
 *   factuality metric reuses it),
 * - `normalizeText` / `rehydrateText` replace them by placeholders and back (reversible, idempotent),
 * - `placeholderPattern` and `placeholderBaseType` read existing placeholders, including indexed and
 *   prefixed ones (`<PE_1>`, `<SPY_PRICE>`, `<MOVER_2_CHANGE>`), which always pass through unchanged.
 *
 * Numbers that are not live data are left alone: list markers ("1)"), counts ("3 factors"), form names
 * ("10-K"), years ("in 2024"), windows ("50-day"), and anything right after a placeholder (`<CHANGE>%`).
 *
 * No Schema here (the Schemas are in DatasetSchemas.ts): this module runs in the ingest's worker threads,
 * where loading `effect` would cost about 25 MB each.
 */

import { liveTypes, type LiveType } from "../Shared/LiveTypes.ts"

// The live types themselves live in the core (Model's vocabulary needs them); re-exported for the Dataset stage.
export { liveTypes, type LiveType }

/** What an existing placeholder stands for: a live value, a score, a symbol, or free text (`<REASON_1>`). */
export type BaseType = LiveType | "SCORE" | "SYMBOL" | "TEXT"

/** Any placeholder: `<` upper-case name with optional `_`-separated parts `>`. Global: reset `lastIndex`. */
export const placeholderPattern = /<([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)>/g
const placeholderExact = /^<([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)>$/

/** true when the string is exactly one placeholder such as `<STOCK_1>` */
export const isPlaceholder = (s: string): boolean => placeholderExact.test(s)

const segmentTypes: Record<string, BaseType> = {
  PRICE: "PRICE", SUPPORT: "PRICE", RESISTANCE: "PRICE", CLOSE: "PRICE", OPEN: "PRICE", HIGH: "PRICE",
  LOW: "PRICE", TARGET: "PRICE", LEVEL: "PRICE", DIVIDEND: "PRICE", COST: "PRICE", VALUE: "PRICE",
  CHANGE: "CHANGE", MOVE: "CHANGE", RETURN: "CHANGE", GAIN: "CHANGE",
  PERCENT: "PERCENT", PCT: "PERCENT", WEIGHT: "PERCENT", MARGIN: "PERCENT", GROWTH: "PERCENT",
  TIMESTAMP: "TIMESTAMP", TIME: "TIMESTAMP",
  DATE: "DATE",
  VOLUME: "VOLUME", VOL: "VOLUME", SHARES: "VOLUME",
  MCAP: "MARKET_CAP", CAP: "MARKET_CAP", REVENUE: "MARKET_CAP",
  RATIO: "RATIO", PE: "RATIO", PB: "RATIO", PS: "RATIO", PEG: "RATIO", BETA: "RATIO",
  EPS: "EPS",
  YIELD: "YIELD",
  MOMENTUM: "SCORE", RSI: "SCORE", SCORE: "SCORE",
  SYMBOL: "SYMBOL", STOCK: "SYMBOL", TICKER: "SYMBOL", MOVER: "SYMBOL", COMPANY: "SYMBOL"
}

/**
 * The base type of a placeholder name, with or without the angle brackets: `<SPY_PRICE>` -> PRICE,
 * `<MOVER_2_CHANGE>` -> CHANGE, `<PE_1>` -> RATIO, `<TOP_MOVER_1>` -> SYMBOL, `<REASON_2>` -> TEXT.
 * The right-most meaningful part decides ("SPY_PRICE" is a price, not a symbol).
 */
export const placeholderBaseType = (name: string): BaseType => {
  const bare = name.startsWith("<") && name.endsWith(">") ? name.slice(1, -1) : name
  const parts = bare.split("_").filter((p) => !/^\d+$/.test(p))
  const joined = parts.join("_")
  if (joined.endsWith("MARKET_CAP")) return "MARKET_CAP"
  if (joined.endsWith("DIVIDEND_YIELD")) return "YIELD"
  for (let i = parts.length - 1; i >= 0; i--) {
    const t = segmentTypes[parts[i]!]
    if (t !== undefined) return t
  }
  return "TEXT"
}

/** true for base types that hold a live number the model must not invent */
export const isLiveType = (t: BaseType): t is LiveType => (liveTypes as ReadonlyArray<string>).includes(t)

// ---------------------------------------------------------------------------------------------------------
// The detector: one precompiled regex, alternatives tried left to right at each position. Keyword-led
// alternatives start at the keyword, so "P/E of 28.1" is a RATIO before "28.1" could be anything else.

const NUM = String.raw`(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?`
const SCALE = String.raw`(?:\s?(?:trillion|billion|million|thousand)\b|(?:[KMBT]|bn|mn)\b)`
const SEP = String.raw`(?:\s*[:=]\s*|\s+(?:(?:of|is|at|was|near|around|came in at|stands at|sits at|hit|reached|to)\s+)?)(?:about\s+|roughly\s+|~\s?)?`
const CUR = String.raw`(?:US|CA|C)?\$`
const SIGN = "[+\\-\u2212]"
const MONTH = String.raw`(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?`

// The group names double as the value type (after the `k`/`v` prefix split below). No alternative can
// start inside a placeholder: numbers need a non-word character on their left ("_1" in <PE_1> has "_"),
// and keywords need a space or ":" after them, so placeholders are never split (the property tests
// check this) and cost no match objects.
// the keywords that lead the keyed alternatives (shared by the detector and `mayHoldValue` below)
const RATIO_KEY = String.raw`(?:(?:forward |trailing )?P/E|P/B|P/S|PEG|[Pp]rice[- ]to[- ](?:earnings|book|sales)|PE|PB)(?:\s+ratio)?`
const EPS_KEY = String.raw`(?:EPS|[Ee]arnings per share)`
const YIELD_KEY = String.raw`(?:[Dd]ividend )?[Yy]ield(?:s|ing)?`
const VOLUME_KEY = String.raw`[Vv]olume`
const MARKET_CAP_KEY = String.raw`[Mm]arket (?:cap|capitalization|value)`
const PRICE_KEY = String.raw`(?:trading at|trades at|traded at|closed at|opened at|priced at|[Pp]rice (?:of|is|at)|[Ss]upport (?:at|near|around)|[Rr]esistance (?:at|near|around))\s+(?:about\s+|~\s?)?`

const detector = new RegExp(
  [
    String.raw`(?<TIMESTAMP>(?<![\d>])\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+\-]\d{2}:?\d{2})?(?![\d<])|(?<![\d:.>])\d{1,2}:\d{2}(?::\d{2})?(?:\s?[AaPp]\.?[Mm]\.?)?(?:\s(?:ET|EST|EDT|PT|UTC|GMT)\b)?(?![\d:<]))`,
    String.raw`(?<DATE>(?<![\d>/-])(?:\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4})(?![\d<])|\b${MONTH}\s\d{1,2}(?:st|nd|rd|th)?(?:,?\s\d{4})?(?![\d<]))`,
    String.raw`(?<kRATIO>\b${RATIO_KEY}${SEP})(?<vRATIO>${NUM}x?)(?![\d<])`,
    String.raw`(?<kEPS>\b${EPS_KEY}${SEP})(?<vEPS>${SIGN}?${CUR}?${NUM}|${CUR}${SIGN}?${NUM})(?![\d<])`,
    String.raw`(?<kYIELD>\b${YIELD_KEY}${SEP})(?<vYIELD>${NUM}\s?%)`,
    String.raw`(?<kVOLUME>\b${VOLUME_KEY}${SEP})(?<vVOLUME>${NUM}${SCALE}?(?:\s+shares\b)?)(?![\d<])`,
    String.raw`(?<kMARKET_CAP>\b${MARKET_CAP_KEY}${SEP})(?<vMARKET_CAP>${CUR}?${NUM}${SCALE}?)(?![\d<])`,
    String.raw`(?<kPRICE>\b${PRICE_KEY})(?<vPRICE>${CUR}?${NUM})(?![\d<%]|x\b|\s?(?:%|percent\b|${SCALE}))`,
    String.raw`(?<money>(?<![\w>])${SIGN}?${CUR}${SIGN}?${NUM}${SCALE}?)(?![\d<])`,
    String.raw`(?<pct>(?<![\w.>])${SIGN}?${NUM}\s?(?:%|percent\b))`,
    String.raw`(?<signed>(?<![\w.,/>\-\u2212+])${SIGN}${NUM}(?![\d.,%<\w]|\s?(?:percent\b|${SCALE})))`,
    String.raw`(?<scaled>(?<![\w.,>])${NUM}${SCALE}(?:\s+shares\b)?(?![\d<]))`,
    String.raw`(?<mult>(?<![\w.,>])${NUM}x\b)`
  ].join("|"),
  "g"
)

// ---------------------------------------------------------------------------------------------------------
// A cheap necessary condition for the detector, checked at each run of digits. Every detector match holds a
// number, and the number's first digit run never starts right after a digit. Around that run the match
// must show one of: after a run, a separator or unit (`-` `/` `:` `x` `%`, "percent", a scale: dates,
// times, percentages, multiples, scaled values); before it, a currency sign or a sign that is not glued to
// a word (money, signed changes); or, ending right before it, a month and a space (dates) or a keyword and
// its separator (the keyed values). Most texts that hold a digit ("1) the", "the S&P 500 (SPY)", "you hold
// 3 positions") show none, and skip the detector, the costliest step of normalization. A property test
// holds this to the detector: whenever the detector finds a value, some run passes.
const digitRun = /\d+/g
const valueSuffix = new RegExp(String.raw`[\-/:x%]|\s?(?:%|percent|trillion|billion|million|thousand)|[KMBT]|bn|mn`, "y")
const valuePrefix = new RegExp(
  String.raw`(?<=${MONTH}\s|(?:${RATIO_KEY}|${EPS_KEY}|${YIELD_KEY}|${VOLUME_KEY}|${MARKET_CAP_KEY})${SEP}|${PRICE_KEY})`,
  "y"
)
const isSignCode = (c: number) => c === 43 || c === 45 || c === 0x2212
const isWordCode = (c: number) => (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95

/** false when no detector match can start at or after `from` (true does not mean one does) */
export const mayHoldValue = (text: string, from: number): boolean => {
  digitRun.lastIndex = from
  let run: RegExpExecArray | null
  while ((run = digitRun.exec(text)) !== null) {
    const a = run.index
    const b = a + run[0].length
    const before = a > 0 ? text.charCodeAt(a - 1) : 32
    if (before === 36) return true
    if (isSignCode(before)) {
      // "$-5", or a sign that starts a value ("-2.1%", "(+3)") rather than joins words ("Nasdaq-100")
      const c = a > 1 ? text.charCodeAt(a - 2) : 32
      if (c === 36 || !(isWordCode(c) || c === 46 || c === 44 || c === 47 || c === 62 || isSignCode(c))) return true
    }
    valueSuffix.lastIndex = b
    if (valueSuffix.test(text)) return true
    valuePrefix.lastIndex = a
    if (valuePrefix.test(text)) return true
  }
  return false
}

const changeVerbs = /\b(?:up|down|rose|rise|rising|fell|fall|falling|gain(?:ed|ing|s)?|los[st]|losing|drop(?:ped|s)?|jump(?:ed|s)?|climb(?:ed|s)?|slip(?:ped|s)?|declin(?:ed|es|ing)|advanc(?:ed|es)|moved?|chang(?:e|ed|es)|surg(?:ed|es)|tumbl(?:ed|es)|sank|rall(?:ied|ies)|higher|lower)\b[^.;:\n]{0,12}$/i
const yieldWord = /\byield/i
const bigScale = /(?:trillion|billion|[TB]|bn)$/

/** One live value found in a text. `start`/`end` are UTF-16 offsets of the value itself. */
export interface DetectedValue {
  readonly type: LiveType
  readonly text: string
  readonly start: number
  readonly end: number
  /** the parsed number (`$1,234.50` -> 1234.5, `3.1B` -> 3.1e9, `-0.45%` -> -0.45); NaN for times/dates */
  readonly value: number
}

const scaleFactor: Record<string, number> = {
  k: 1e3, thousand: 1e3, m: 1e6, mn: 1e6, million: 1e6, b: 1e9, bn: 1e9, billion: 1e9, t: 1e12, trillion: 1e12
}

/**
 * Parses a displayed number: currency prefixes, thousands separators, signs (also U+2212), `%`/"percent",
 * `x` multiples and K/M/B/T or word scales. `parseNumber("$1,234.50")` is 1234.5, `parseNumber("3.1B")`
 * is 3.1e9. Returns NaN when the text holds no number.
 */
export const parseNumber = (text: string): number => {
  const m = /([+\-\u2212])?\s*(?:US|CA|C)?\$?\s*([+\-\u2212])?(\d[\d,]*(?:\.\d+)?|\.\d+)\s?(trillion|billion|million|thousand|bn|mn|[KMBTkmbt](?![a-z]))?/.exec(text)
  if (m === null) return Number.NaN
  const negative = m[1] === "-" || m[1] === "\u2212" || m[2] === "-" || m[2] === "\u2212"
  const base = Number(m[3]!.replace(/,/g, ""))
  const scale = m[4] === undefined ? 1 : (scaleFactor[m[4].toLowerCase()] ?? 1)
  return (negative ? -1 : 1) * base * scale
}

const classify = (groups: Record<string, string | undefined>, text: string, start: number): LiveType | undefined => {
  if (groups.TIMESTAMP !== undefined) return "TIMESTAMP"
  if (groups.DATE !== undefined) return "DATE"
  if (groups.money !== undefined) {
    const m = groups.money
    if (/^[+\-\u2212]|\$[+\-\u2212]/.test(m)) return "CHANGE"
    return bigScale.test(m.trimEnd()) ? "MARKET_CAP" : "PRICE"
  }
  if (groups.pct !== undefined) {
    if (/^[+\-\u2212]/.test(groups.pct)) return "CHANGE"
    const before = text.slice(Math.max(0, start - 40), start)
    if (yieldWord.test(before.slice(-20))) return "YIELD"
    return changeVerbs.test(before) ? "CHANGE" : "PERCENT"
  }
  if (groups.signed !== undefined) return "CHANGE"
  if (groups.scaled !== undefined) return groups.scaled.endsWith("shares") ? "VOLUME" : "MARKET_CAP"
  if (groups.mult !== undefined) return "RATIO"
  return undefined
}

const keyed = ["RATIO", "EPS", "YIELD", "VOLUME", "MARKET_CAP", "PRICE"] as const
// a digit outside any placeholder (`<PE_1>` holds one): the cheap gate before the detector runs
const hasLiveDigit = /\d(?![A-Z0-9_]*>)/

/** Every live value in `text`, in order. Existing placeholders are never matched or split. */
export const detectValues = (text: string): Array<DetectedValue> => {
  const out: Array<DetectedValue> = []
  const first = hasLiveDigit.exec(text)
  if (first === null) return out
  // every value holds a digit, and its keyword ("price-to-earnings ratio of about ") starts at most a
  // few dozen characters before it: the scan starts there (lookbehinds still see the whole text)
  const from = Math.max(0, first.index - 64)
  if (!mayHoldValue(text, from)) return out
  return scanValues(text, from, out)
}

/** The detector's matches from `from` on, appended to `out` (detectValues without its two cheap gates). */
export const scanValues = (text: string, from: number, out: Array<DetectedValue> = []): Array<DetectedValue> => {
  detector.lastIndex = from
  let m: RegExpExecArray | null
  while ((m = detector.exec(text)) !== null) {
    const g = m.groups!
    let type: LiveType | undefined
    let valueText = m[0]
    let start = m.index
    for (const k of keyed) {
      const v = g[`v${k}`]
      if (v !== undefined) {
        type = k
        valueText = v
        start = m.index + g[`k${k}`]!.length
        break
      }
    }
    if (type === undefined) type = classify(g, text, m.index)
    if (type === undefined) continue
    out.push({
      type,
      text: valueText,
      start,
      end: start + valueText.length,
      value: type === "TIMESTAMP" || type === "DATE" ? Number.NaN : parseNumber(valueText)
    })
  }
  return out
}

// ---------------------------------------------------------------------------------------------------------
// Normalization, reversible

/** What one placeholder replaced: `at` is the placeholder's offset in the normalized text (Schema: DatasetSchemas.ts). */
export interface Replacement {
  readonly placeholder: string
  readonly value: string
  readonly at: number
}

export interface NormalizedText {
  readonly text: string
  readonly replacements: ReadonlyArray<Replacement>
}

/**
 * Replaces live values by typed placeholders. Idempotent (`normalizeText(normalizeText(x).text).text` is
 * `normalizeText(x).text`) and reversible (`rehydrateText(n.text, n.replacements)` is the input).
 */
export const normalizeText = (text: string): NormalizedText => {
  let current = text
  let replacements: Array<Replacement> = []
  // A replacement can change what its neighbours look like ("0Nov 25" -> "<PRICE>Nov 25" gains a word
  // boundary), so passes repeat until nothing more is found: idempotent by construction. Later passes
  // only ever replace original text (placeholders are skipped whole), so the map stays exact.
  for (let pass = 0; pass < 8; pass++) {
    const found = detectValues(current)
    if (found.length === 0) break
    let out = ""
    let last = 0
    let shift = 0
    let k = 0
    const next: Array<Replacement> = []
    for (const v of found) {
      // carry earlier replacements that sit before this value, moved by what this pass changed so far
      while (k < replacements.length && replacements[k]!.at < v.start) next.push({ ...replacements[k]!, at: replacements[k++]!.at + shift })
      out += current.slice(last, v.start)
      const placeholder = `<${v.type}>`
      next.push({ placeholder, value: v.text, at: out.length })
      out += placeholder
      shift += placeholder.length - (v.end - v.start)
      last = v.end
    }
    while (k < replacements.length) next.push({ ...replacements[k]!, at: replacements[k++]!.at + shift })
    current = out + current.slice(last)
    replacements = next
  }
  return { text: current, replacements }
}

/** Puts the replaced values back (the inverse of `normalizeText`). */
export const rehydrateText = (text: string, replacements: ReadonlyArray<Replacement>): string => {
  if (replacements.length === 0) return text
  let out = ""
  let last = 0
  for (const r of replacements) {
    out += text.slice(last, r.at) + r.value
    last = r.at + r.placeholder.length
  }
  return out + text.slice(last)
}

/** The placeholders in a text, in order (`["<PRICE>", "<PE_1>"]`). */
export const placeholdersIn = (text: string): Array<string> => {
  if (text.indexOf("<") < 0) return []
  return Array.from(text.matchAll(placeholderPattern), (m) => m[0])
}

/** true when the text holds a placeholder for live data (a live base type, not `<REASON_1>` or `<STOCK_1>`) */
export const hasLivePlaceholder = (text: string): boolean => {
  if (text.indexOf("<") < 0) return false
  for (const p of placeholdersIn(text)) if (isLiveType(placeholderBaseType(p))) return true
  return false
}
