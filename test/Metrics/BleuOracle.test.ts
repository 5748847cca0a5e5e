/**
 * Our BLEU (src/Metrics/Bleu.ts) against sacrebleu itself, run in the test Python on every CI run: 2,000 seeded
 * pairs (test/support/metricPairs.ts), corpus and sentence BLEU, both tokenizers we expose (13a, none), every
 * smoothing method, lowercase and effective order, one and two reference streams. One Python process answers
 * every case of this file.
 */
import { describe, expect, it } from "vitest"
import { type BleuOptions, type BleuScore, corpusBleu, pyRstrip, sentenceBleu, tokenize13a } from "../../src/Metrics/Bleu.ts"
import { generateMetricPairs } from "../support/metricPairs.ts"
import { oracleScript, runPythonJson } from "../support/python.ts"

const pairs = generateMetricPairs(20261203, 2000)
const hypotheses = pairs.map((p) => p.hypothesis)
const references = pairs.map((p) => p.reference)
const references2 = pairs.map((p) => p.reference2)
const TOLERANCE = 1e-9

const smoothings: ReadonlyArray<BleuOptions> = [
  { smoothMethod: "exp" },
  { smoothMethod: "floor" },
  { smoothMethod: "floor", smoothValue: 0.5 },
  { smoothMethod: "add-k" },
  { smoothMethod: "add-k", smoothValue: 2 },
  { smoothMethod: "none" }
]
const tokenizers = ["13a", "none"] as const

interface CorpusCase { readonly label: string; readonly options: BleuOptions; readonly streams: 1 | 2 }
const corpusCases: ReadonlyArray<CorpusCase> = tokenizers.flatMap((tokenize) => [
  ...smoothings.map((s) => ({ label: `${tokenize} ${s.smoothMethod}${s.smoothValue === undefined ? "" : ` ${s.smoothValue}`}`, options: { ...s, tokenize }, streams: 1 as const })),
  { label: `${tokenize} exp, lowercase`, options: { tokenize, lowercase: true }, streams: 1 },
  { label: `${tokenize} exp, effective order`, options: { tokenize, effectiveOrder: true }, streams: 1 },
  { label: `${tokenize} exp, max order 2`, options: { tokenize, maxNgramOrder: 2 }, streams: 1 },
  { label: `${tokenize} exp, 2 reference streams`, options: { tokenize }, streams: 2 },
  { label: `${tokenize} floor, lowercase, 2 reference streams`, options: { tokenize, smoothMethod: "floor", lowercase: true }, streams: 2 }
])

/** Every pair's sentence BLEU under two option sets, rotating through all of them. */
const sentenceOptions: ReadonlyArray<BleuOptions> = tokenizers.flatMap((tokenize) => [
  ...smoothings.map((s) => ({ ...s, tokenize })),
  { tokenize, lowercase: true },
  { tokenize, effectiveOrder: false },
  { tokenize, smoothMethod: "none" as const, effectiveOrder: false }
])
const sentenceCases = pairs.flatMap((pair, i) =>
  [0, 1].map((k) => {
    const options = sentenceOptions[(2 * i + k) % sentenceOptions.length]!
    const twoRefs = (i + k) % 5 === 0
    return { index: i, options, references: twoRefs ? [pair.reference, pair.reference2] : [pair.reference] }
  })
)

interface OracleBleu { score: number; counts: Array<number>; totals: Array<number>; precisions: Array<number>; bp: number; sysLen: number; refLen: number }
const oracle = runPythonJson(oracleScript("bleu"), {
  corpus: corpusCases.map((c) => ({ hypotheses, references: c.streams === 2 ? [references, references2] : [references], options: c.options })),
  sentence: sentenceCases.map((c) => ({ hypothesis: pairs[c.index]!.hypothesis, references: c.references, options: c.options })),
  tokenize13a: pairs.flatMap((p) => [p.hypothesis, p.reference])
}) as { version: string; corpus: Array<OracleBleu>; sentence: Array<OracleBleu>; tokenize13a: Array<string> }
const sacrebleu = `sacrebleu ${oracle.version}`

/** Statistics exactly, score and BP to 1e-9 on the 0-100 scale, each precision too; returns the score's difference. */
const expectBleu = (ours: BleuScore, theirs: OracleBleu, label: string): number => {
  expect([ours.sysLen, ours.refLen, ...ours.counts, ...ours.totals], `${label}: statistics`).toEqual([theirs.sysLen, theirs.refLen, ...theirs.counts, ...theirs.totals])
  expect(Math.abs(ours.bp - theirs.bp), `${label}: bp ${ours.bp} vs ${theirs.bp}`).toBeLessThanOrEqual(TOLERANCE)
  ours.precisions.forEach((p, n) => expect(Math.abs(p - theirs.precisions[n]!), `${label}: p${n + 1}`).toBeLessThanOrEqual(TOLERANCE))
  const difference = Math.abs(ours.score - theirs.score)
  expect(difference, `${label}: score ${ours.score} vs sacrebleu ${theirs.score}`).toBeLessThanOrEqual(TOLERANCE)
  return difference
}

describe(`BLEU = ${sacrebleu}`, () => {
  it("the generated pairs hold the hard cases", () => {
    expect(pairs.length).toBe(2000)
    expect(hypotheses.filter((h) => h === "").length).toBeGreaterThan(20)
    expect(pairs.some((p) => /^[\s\u001c\u0085\ufeff]+$/u.test(p.hypothesis))).toBe(true)
    expect(pairs.some((p) => p.hypothesis.includes("<PRICE>") && /\d,\d{3}/.test(p.reference))).toBe(true)
    expect(pairs.some((p) => /[^\x00-\x7f]/.test(p.hypothesis))).toBe(true)
    expect(pairs.some((p) => p.reference.includes("\n"))).toBe(true)
    expect(Math.max(...pairs.map((p) => p.reference.split(" ").length))).toBeGreaterThan(800)
  })

  it(`13a tokenization equals ${sacrebleu}'s Tokenizer13a on 4,000 texts`, () => {
    const ours = pairs.flatMap((p) => [p.hypothesis, p.reference]).map((text) => tokenize13a(pyRstrip(text)))
    ours.forEach((tokens, i) => expect(tokens, `text ${i}`).toBe(oracle.tokenize13a[i]))
  })

  it(`corpus BLEU equals ${sacrebleu} (13a and none; every smoothing, lowercase, effective order, 2 streams) on 2,000 generated pairs`, () => {
    let worst = 0
    corpusCases.forEach((c, i) => {
      const streams = c.streams === 2 ? [references, references2] : [references]
      worst = Math.max(worst, expectBleu(corpusBleu(hypotheses, streams, c.options), oracle.corpus[i]!, `corpus ${c.label}`))
    })
    expect(oracle.corpus.length).toBe(corpusCases.length)
    expect(worst).toBeLessThanOrEqual(TOLERANCE)
  })

  it(`sentence BLEU equals ${sacrebleu} on 4,000 scores (2,000 generated pairs, rotating options, 1 or 2 references)`, () => {
    let worst = 0
    sentenceCases.forEach((c, i) => {
      const label = `pair ${c.index} ${JSON.stringify(c.options)}`
      worst = Math.max(worst, expectBleu(sentenceBleu(pairs[c.index]!.hypothesis, c.references, c.options), oracle.sentence[i]!, label))
    })
    expect(oracle.sentence.length).toBe(4000)
    // the scores are not all trivial: a spread of partial matches
    const partial = oracle.sentence.filter((s) => s.score > 1 && s.score < 99).length
    expect(partial).toBeGreaterThan(1000)
    expect(worst).toBeLessThanOrEqual(TOLERANCE)
  })
})
