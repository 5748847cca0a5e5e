/**
 * Seeded hypothesis/reference pairs for the metric oracles (BLEU vs sacrebleu, ROUGE vs rouge-score): finance
 * sentences with random edits, and the hard cases mixed in at fixed rates: empty and whitespace-only texts,
 * placeholders (<PRICE>, <PE_1>), numbers with separators, decimals and signs, unicode (accents, CJK, emoji,
 * Turkish/Greek/German case pairs), the whitespace only Python counts as whitespace (U+001C, U+0085), U+FEFF, NBSP,
 * multi-line texts (ROUGE-Lsum), 13a's special inputs (`-\n`, `&amp;`, `<skipped>`), other forms of the same
 * word (what the Porter stemmer folds), and very long lines.
 */
import { SeededRng } from "../../src/Shared/Prng.ts"

export interface MetricPair {
  readonly hypothesis: string
  readonly reference: string
  /** a second, independent reference (BLEU's second reference stream) */
  readonly reference2: string
}

const words = [
  "the", "company", "reported", "revenue", "of", "<PRICE>", "in", "Q3", "2024", "net", "income", "rose", "fell", "by",
  "1.2%", "$1,234.50", "-3.5%", "EBITDA", "margin", "guidance", "raised", "lowered", "shares", "investors", "investing",
  "investments", "dividend", "yield", "<PE_1>", "<DATE>", "<TICKER>", "bonds", "rates", "Fed", "inflation", "CPI",
  "year-over-year", "quarter", "analysts", "expected", "€2.1bn", "¥150", "10,000", "0.25", "basis", "points", "and",
  "a", "to", "on", "with", "its", "was", "were", "is", "are", "running", "runs", "ran", "higher", "lower", "(Q4)",
  "S&P", "500", "AT&amp;T", "Dow", "Jones", "liquidity", "leverage", "cash-flow", "free", "capex", "per", "share",
  "Çalışkan", "İstanbul", "Straße", "ΣΤΟΧΟΣ", "στόχος", "日本銀行", "金利", "📈", "😀", "naïve", "café", "São", "Paulo",
  ",", ".", ";", ":", "?", "!", "\"", "'", "-", "--", "/", "%", "$", "#", "…", "’s"
]
const oddSpaces = [" ", "  ", "\t", "\u00a0", "\u001c", "\u0085", "\u2003", "\u3000", "\ufeff", " \n"]
const specials = [
  "", " ", "\n", "\t \u00a0", "<skipped>", "&quot;quoted&quot;", "&lt;b&gt;", "break-\nline", "1,000,000.00",
  "(-1.5%)", "3-4", "2024-01-31", "1e-3", "--", "....", "...", "!!!", "$", "€", "<PRICE><PRICE>", "İI ıi", "ǅ"
]

const pick = <A>(rng: SeededRng, items: ReadonlyArray<A>): A => items[Math.floor(rng.next() * items.length)]!

const sentence = (rng: SeededRng, length: number): Array<string> => Array.from({ length }, () => pick(rng, words))

/** Another form of the same word (what the Porter stemmer folds back): plural, -ing, -ed, or the bare stem. */
const inflect = (rng: SeededRng, word: string): string => {
  const bare = word.replace(/(ing|ed|s)$/, "")
  const r = rng.next()
  return r < 0.3 ? `${bare}s` : r < 0.55 ? `${bare}ing` : r < 0.8 ? `${bare}ed` : bare
}

/** Deletions, inflections, insertions, substitutions, swaps, case changes and odd whitespace, at random. */
const edit = (rng: SeededRng, tokens: ReadonlyArray<string>): Array<string> => {
  const out: Array<string> = []
  for (const token of tokens) {
    const r = rng.next()
    if (r < 0.1) continue
    if (r < 0.18) out.push(pick(rng, words))
    else if (r < 0.24) out.push(token.toUpperCase())
    else if (r < 0.28) out.push(token.toLowerCase())
    else if (r < 0.36 && /^[a-z]{4,}$/.test(token)) out.push(inflect(rng, token))
    else out.push(token)
    if (rng.next() < 0.06) out.push(pick(rng, words))
  }
  for (let i = 0; i + 1 < out.length; i++) {
    if (rng.next() < 0.05) [out[i], out[i + 1]] = [out[i + 1]!, out[i]!]
  }
  return out
}

const join = (rng: SeededRng, tokens: ReadonlyArray<string>, lines: number): string => {
  let text = ""
  tokens.forEach((token, i) => {
    if (i > 0) {
      const lineBreak = lines > 1 && i % Math.max(1, Math.floor(tokens.length / lines)) === 0
      text += lineBreak ? "\n" : rng.next() < 0.08 ? pick(rng, oddSpaces) : " "
    }
    text += token
  })
  return rng.next() < 0.05 ? `${pick(rng, oddSpaces)}${text}${pick(rng, oddSpaces)}` : text
}

/** `count` pairs from `seed`; the same arguments always give the same pairs. */
export const generateMetricPairs = (seed: number, count: number): ReadonlyArray<MetricPair> => {
  const rng = new SeededRng(seed)
  const pairs: Array<MetricPair> = []
  for (let i = 0; i < count; i++) {
    const kind = rng.next()
    // a few very long lines (ROUGE-L's LCS is quadratic in them, in rouge-score's pure Python too)
    const long = i % 400 === 7
    const length = long ? 800 + Math.floor(rng.next() * 400) : 1 + Math.floor(rng.next() * 40)
    const lines = rng.next() < 0.2 ? 2 + Math.floor(rng.next() * 3) : 1
    const base = sentence(rng, length)
    let hypothesis = join(rng, edit(rng, base), lines)
    let reference = join(rng, base, lines)
    const reference2 = join(rng, edit(rng, base), 1)
    if (kind < 0.04) hypothesis = ""
    else if (kind < 0.06) hypothesis = pick(rng, oddSpaces)
    else if (kind < 0.12) hypothesis = `${hypothesis} ${pick(rng, specials)}`
    else if (kind < 0.16) reference = `${pick(rng, specials)} ${reference}`
    else if (kind < 0.18) hypothesis = reference
    // a few empty references: sacrebleu 2.6 scores them as length 0, rouge-score as no tokens
    else if (kind < 0.2) reference = ""
    pairs.push({ hypothesis, reference, reference2 })
  }
  return pairs
}
