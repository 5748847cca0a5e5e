/**
 * ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum exactly as Google's rouge-score computes them (`rouge_scorer.py`,
 * `tokenize.py`, `tokenizers.py`), checked to 1e-6 against rouge-score's output in
 * test/fixtures/eval/reference.json, with and without stemming.
 *
 * - Tokens: lower-case, every run of characters outside [a-z0-9] becomes a space (so non-ASCII text is dropped),
 *   split on whitespace; with `useStemmer`, tokens longer than 3 characters go through NLTK's Porter stemmer in its
 *   default mode (rouge-score builds `porter.PorterStemmer()`, i.e. NLTK_EXTENSIONS).
 * - ROUGE-N: clipped n-gram overlap; precision over the prediction's n-grams, recall over the reference's.
 * - ROUGE-L: longest common subsequence of the whole token lists.
 * - ROUGE-Lsum: sentences are the non-empty lines; union-LCS per reference line, counted without double counting.
 * - An empty side gives 0 for all three numbers (rouge-score's convention).
 * - Corpus figures are arithmetic means over samples (`aggregateRouge`); rouge-score's bootstrap "mid" is random.
 */
import { PorterStemmer } from "./Porter.ts"

export interface RougeScore {
  readonly precision: number
  readonly recall: number
  readonly fmeasure: number
}
export type RougeType = "rouge1" | "rouge2" | "rougeL" | "rougeLsum"
export type RougeScores = Readonly<Record<RougeType, RougeScore>>
export const rougeTypes: ReadonlyArray<RougeType> = ["rouge1", "rouge2", "rougeL", "rougeLsum"]

export interface RougeOptions {
  readonly useStemmer?: boolean
}

const stemmer = new PorterStemmer("NLTK_EXTENSIONS")
const nonAlphanumeric = /[^a-z0-9]+/g
const whitespace = /\s+/

/** rouge-score's `tokenize.tokenize(text, stemmer)`. */
export const rougeTokenize = (text: string, useStemmer = false): Array<string> => {
  const parts = text.toLowerCase().replace(nonAlphanumeric, " ").split(whitespace)
  const tokens: Array<string> = []
  for (const part of parts) {
    if (part === "") continue
    tokens.push(useStemmer && part.length > 3 ? stemmer.stem(part) : part)
  }
  return tokens
}

const fmeasure = (precision: number, recall: number) =>
  precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0
const zero: RougeScore = { precision: 0, recall: 0, fmeasure: 0 }

const ngramCounts = (tokens: ReadonlyArray<string>, n: number): Map<string, number> => {
  const counts = new Map<string, number>()
  for (let i = 0; i + n <= tokens.length; i++) {
    const key = n === 1 ? tokens[i]! : tokens.slice(i, i + n).join(" ")
    counts.set(key, (counts.get(key) ?? 0) + 1)
  }
  return counts
}

const scoreNgrams = (reference: ReadonlyArray<string>, prediction: ReadonlyArray<string>, n: number): RougeScore => {
  const ref = ngramCounts(reference, n)
  const pred = ngramCounts(prediction, n)
  let overlap = 0
  for (const [ngram, count] of ref) overlap += Math.min(count, pred.get(ngram) ?? 0)
  const precision = overlap / Math.max(prediction.length - n + 1, 1)
  const recall = overlap / Math.max(reference.length - n + 1, 1)
  return { precision, recall, fmeasure: fmeasure(precision, recall) }
}

/** The full (rows+1)×(cols+1) LCS table, flat; kept because Lsum backtracks through it. */
const lcsTable = (ref: ReadonlyArray<string>, can: ReadonlyArray<string>): Int32Array => {
  const cols = can.length + 1
  const table = new Int32Array((ref.length + 1) * cols)
  for (let i = 1; i <= ref.length; i++) {
    const r = ref[i - 1]
    const row = i * cols
    const prev = row - cols
    for (let j = 1; j <= can.length; j++) {
      table[row + j] = r === can[j - 1]
        ? table[prev + j - 1]! + 1
        : Math.max(table[prev + j]!, table[row + j - 1]!)
    }
  }
  return table
}

/** LCS length with two rolling rows (ROUGE-L needs no backtracking). */
const lcsLength = (a: ReadonlyArray<string>, b: ReadonlyArray<string>): number => {
  let prev = new Int32Array(b.length + 1)
  let cur = new Int32Array(b.length + 1)
  for (let i = 1; i <= a.length; i++) {
    const x = a[i - 1]
    for (let j = 1; j <= b.length; j++) {
      cur[j] = x === b[j - 1] ? prev[j - 1]! + 1 : Math.max(prev[j]!, cur[j - 1]!)
    }
    const t = prev
    prev = cur
    cur = t
  }
  return prev[b.length]!
}

const scoreLcs = (reference: ReadonlyArray<string>, prediction: ReadonlyArray<string>): RougeScore => {
  if (reference.length === 0 || prediction.length === 0) return zero
  const lcs = lcsLength(reference, prediction)
  const precision = lcs / prediction.length
  const recall = lcs / reference.length
  return { precision, recall, fmeasure: fmeasure(precision, recall) }
}

/** Indices into `ref` of one LCS, chosen exactly like rouge-score's `_backtrack_norec`. */
const lcsIndices = (ref: ReadonlyArray<string>, can: ReadonlyArray<string>): Array<number> => {
  const t = lcsTable(ref, can)
  const cols = can.length + 1
  let i = ref.length
  let j = can.length
  const out: Array<number> = []
  while (i > 0 && j > 0) {
    if (ref[i - 1] === can[j - 1]) {
      out.push(i - 1)
      i--
      j--
    } else if (t[i * cols + j - 1]! > t[(i - 1) * cols + j]!) j--
    else i--
  }
  return out.reverse()
}

const summaryLevelLcs = (refSents: ReadonlyArray<Array<string>>, canSents: ReadonlyArray<Array<string>>): RougeScore => {
  if (refSents.length === 0 || canSents.length === 0) return zero
  let m = 0
  let n = 0
  const refCounts = new Map<string, number>()
  const canCounts = new Map<string, number>()
  for (const s of refSents) {
    m += s.length
    for (const t of s) refCounts.set(t, (refCounts.get(t) ?? 0) + 1)
  }
  for (const s of canSents) {
    n += s.length
    for (const t of s) canCounts.set(t, (canCounts.get(t) ?? 0) + 1)
  }
  if (m === 0 || n === 0) return zero
  let hits = 0
  for (const r of refSents) {
    const union = new Set<number>()
    for (const c of canSents) for (const idx of lcsIndices(r, c)) union.add(idx)
    const sorted = [...union].sort((a, b) => a - b)
    for (const idx of sorted) {
      const token = r[idx]!
      const cc = canCounts.get(token) ?? 0
      const rc = refCounts.get(token) ?? 0
      if (cc > 0 && rc > 0) {
        hits++
        canCounts.set(token, cc - 1)
        refCounts.set(token, rc - 1)
      }
    }
  }
  const precision = hits / n
  const recall = hits / m
  return { precision, recall, fmeasure: fmeasure(precision, recall) }
}

const sentences = (text: string, useStemmer: boolean) =>
  text.split("\n").filter((line) => line.length > 0).map((line) => rougeTokenize(line, useStemmer))

/** All four ROUGE variants of one prediction against one reference. */
export const rougeScores = (prediction: string, reference: string, options: RougeOptions = {}): RougeScores => {
  const stem = options.useStemmer ?? false
  const ref = rougeTokenize(reference, stem)
  const pred = rougeTokenize(prediction, stem)
  return {
    rouge1: scoreNgrams(ref, pred, 1),
    rouge2: scoreNgrams(ref, pred, 2),
    rougeL: scoreLcs(ref, pred),
    rougeLsum: summaryLevelLcs(sentences(reference, stem), sentences(prediction, stem))
  }
}

/** ROUGE-L of one pair (what the trainer logs every N steps). */
export const rougeL = (prediction: string, reference: string, options: RougeOptions = {}): RougeScore => {
  const stem = options.useStemmer ?? false
  return scoreLcs(rougeTokenize(reference, stem), rougeTokenize(prediction, stem))
}

/** Arithmetic mean of each number over samples; all zeros for an empty list. */
export const aggregateRouge = (scores: ReadonlyArray<RougeScores>): RougeScores => {
  const mean = (type: RougeType): RougeScore => {
    if (scores.length === 0) return zero
    let p = 0
    let r = 0
    let f = 0
    for (const s of scores) {
      p += s[type].precision
      r += s[type].recall
      f += s[type].fmeasure
    }
    return { precision: p / scores.length, recall: r / scores.length, fmeasure: f / scores.length }
  }
  return { rouge1: mean("rouge1"), rouge2: mean("rouge2"), rougeL: mean("rougeL"), rougeLsum: mean("rougeLsum") }
}

/** Corpus ROUGE of aligned lists: per-pair scores and their means. */
export const corpusRouge = (
  predictions: ReadonlyArray<string>,
  references: ReadonlyArray<string>,
  options: RougeOptions = {}
): RougeScores => aggregateRouge(predictions.map((p, i) => rougeScores(p, references[i] ?? "", options)))
