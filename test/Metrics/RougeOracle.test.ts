/**
 * Our ROUGE (src/Metrics/Rouge.ts) against Google's rouge-score itself (RougeScorer, with and without the Porter
 * stemmer), and our Porter stemmer against NLTK's in all three modes, run in the test Python on every CI run over
 * the same 2,000 seeded pairs as the BLEU oracle. One Python process answers every case of this file.
 */
import { describe, expect, it } from "vitest"
import { PorterStemmer, type PorterMode } from "../../src/Metrics/Porter.ts"
import { rougeScores, rougeTypes, type RougeScores } from "../../src/Metrics/Rouge.ts"
import { generateMetricPairs } from "../support/metricPairs.ts"
import { oracleScript, runPythonJson } from "../support/python.ts"

const pairs = generateMetricPairs(20261203, 2000)
const TOLERANCE = 1e-9
const modes: ReadonlyArray<PorterMode> = ["NLTK_EXTENSIONS", "MARTIN_EXTENSIONS", "ORIGINAL_ALGORITHM"]

/** Every lower-cased alphanumeric word of the pairs, and the paper's and NLTK's classic examples. */
const vocabulary = [...new Set([
  ...pairs.flatMap((p) => `${p.hypothesis} ${p.reference}`.toLowerCase().split(/[^a-z0-9]+/)),
  ..."caresses ponies ties caress cats feed agreed plastered bled motoring sing conflated troubled sized hopping tanned falling hissing fizzed failing filing happy sky relational conditional rational valenci hesitanci digitizer conformabli radicalli differentli vileli analogousli vietnamization predication operator feudalism decisiveness hopefulness callousness formaliti sensitiviti sensibiliti triplicate formative formalize electriciti electrical hopeful goodness revival allowance inference airliner gyroscopic adjustable defensible irritant replacement adjustment dependent adoption homologou communism activate angulariti homologous effective bowdlerize probate rate cease controll roll generalizations dying flies abbey abed absey investors investing investments"
    .split(" ")
])].filter((w) => w !== "").sort()

const oracle = runPythonJson(oracleScript("rouge"), {
  pairs: pairs.map((p) => [p.hypothesis, p.reference]),
  stemmer: [false, true],
  porter: { words: vocabulary, modes }
}) as { version: string; nltk: string; results: Record<"false" | "true", Array<RougeScores>>; porter: Record<PorterMode, Array<string>> }
const rougeScore = `rouge-score ${oracle.version}`

const compare = (stemmed: boolean) => {
  const theirs = oracle.results[stemmed ? "true" : "false"]
  expect(theirs.length).toBe(pairs.length)
  let worst = 0
  let checked = 0
  pairs.forEach((pair, i) => {
    const ours = rougeScores(pair.hypothesis, pair.reference, { useStemmer: stemmed })
    for (const type of rougeTypes) {
      for (const k of ["precision", "recall", "fmeasure"] as const) {
        const difference = Math.abs(ours[type][k] - theirs[i]![type][k])
        expect(difference, `pair ${i} ${type} ${k} (stemmer ${stemmed}): ${ours[type][k]} vs ${theirs[i]![type][k]}`).toBeLessThanOrEqual(TOLERANCE)
        worst = Math.max(worst, difference)
        checked++
      }
    }
  })
  expect(checked).toBe(2000 * 12)
  return worst
}

describe(`ROUGE = ${rougeScore}`, () => {
  it(`ROUGE-1/2/L/Lsum equal ${rougeScore}'s RougeScorer without the stemmer on 2,000 generated pairs`, () => {
    expect(compare(false)).toBeLessThanOrEqual(TOLERANCE)
  })

  it(`ROUGE-1/2/L/Lsum equal ${rougeScore}'s RougeScorer with the Porter stemmer on 2,000 generated pairs`, () => {
    expect(compare(true)).toBeLessThanOrEqual(TOLERANCE)
    // the stemmer matters on these pairs: some scores differ between the two settings
    const changed = oracle.results.true.filter((s, i) => s.rouge1.fmeasure !== oracle.results.false[i]!.rouge1.fmeasure).length
    expect(changed).toBeGreaterThan(50)
  })

  it(`Lsum's multi-line pairs and the empty sides are among them`, () => {
    expect(pairs.filter((p) => p.hypothesis.includes("\n") && p.reference.includes("\n")).length).toBeGreaterThan(100)
    expect(oracle.results.false.filter((s) => s.rouge1.fmeasure === 0).length).toBeGreaterThan(20)
  })
})

describe(`Porter stemmer = NLTK ${oracle.nltk}`, () => {
  for (const mode of modes) {
    it(`${mode}: every word of the pairs and the classic examples (${vocabulary.length} words) stem as NLTK ${oracle.nltk}'s`, () => {
      const stemmer = new PorterStemmer(mode)
      const theirs = oracle.porter[mode]
      expect(theirs.length).toBe(vocabulary.length)
      vocabulary.forEach((word, i) => expect(stemmer.stem(word), `${mode} ${word}`).toBe(theirs[i]))
    })
  }
})
