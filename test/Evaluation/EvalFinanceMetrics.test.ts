/** The finance metrics on hand-made cases; each case follows one rule of src/Evaluation/FinanceMetrics.ts. */
import { assert, describe, it } from "@effect/vitest"
import {
  aggregateFinance,
  citation,
  factuality,
  financeScores,
  placeholderFidelity,
  riskFlag
} from "../../src/Evaluation/FinanceMetrics.ts"

const context = [
  "Current Symbol: AAPL",
  "",
  "Current Prices:",
  "  AAPL: $189.50 (+0.45%)",
  "  MSFT: $1,234.50 (-1.20%)",
  "",
  "Fundamentals:",
  "  peRatio: 28.5",
  "  marketCap: 3114000000",
  "",
  "Recent News:",
  "  1. Apple unveils new chips (Reuters)"
].join("\n")

describe("factuality", () => {
  it("supports numbers present in the context in other formats", () => {
    const r = factuality("MSFT fell 1.2% to $1,234.5; AAPL's market cap is 3.1B and its P/E of 28.5 is high.", {
      answer: "x",
      context
    })
    assert.deepStrictEqual([r.checked, r.supported, r.score], [4, 4, 1])
  })

  it("uses the answer's written precision as the tolerance", () => {
    assert.strictEqual(factuality("AAPL is trading at $189.5.", { answer: "x", context }).score, 1)
    assert.strictEqual(factuality("AAPL is trading at $190.", { answer: "x", context }).score, 1)
    const off = factuality("AAPL is trading at $190.10.", { answer: "x", context })
    assert.deepStrictEqual(off.hallucinatedValues, ["$190.10"])
    // an explicit relative tolerance widens it
    assert.strictEqual(factuality("AAPL is trading at $190.10.", { answer: "x", context }, { relTolerance: 0.005 }).score, 1)
  })

  it("reports sign flips on changes, from explicit signs and from verbs", () => {
    const verb = factuality("AAPL fell 0.45% today.", { answer: "x", context })
    assert.deepStrictEqual(verb.signFlips, ["0.45%"])
    assert.strictEqual(verb.score, 0)
    const explicit = factuality("MSFT moved +1.20% today.", { answer: "x", context })
    assert.deepStrictEqual(explicit.signFlips, ["+1.20%"])
    assert.strictEqual(factuality("AAPL rose 0.45% today.", { answer: "x", context }).score, 1)
  })

  it("checks placeholders against what the context can fill, and counts dropped required values", () => {
    const r = factuality("AAPL trades at <PRICE>, P/E <PE_1>, yield <DIVIDEND_YIELD>, as of <TIMESTAMP>. <SYMBOL> <REASON_1>", {
      answer: "AAPL trades at <PRICE> (<CHANGE>).",
      context
    })
    // PRICE, RATIO, TIMESTAMP, SYMBOL supported; YIELD not in context; REASON is free text (unchecked)
    assert.deepStrictEqual([r.checked, r.supported], [5, 4])
    assert.deepStrictEqual(r.hallucinatedPlaceholders, ["<DIVIDEND_YIELD>"])
    assert.deepStrictEqual(r.droppedValues, ["CHANGE"])
    assert.strictEqual(r.score, 4 / 6)
  })

  it("without a context every live value is hallucinated; nothing to check scores 1", () => {
    const r = factuality("It rose +3.5% to <PRICE>.", { answer: "x" })
    assert.deepStrictEqual(r.hallucinatedValues, ["+3.5%"])
    assert.deepStrictEqual(r.hallucinatedPlaceholders, ["<PRICE>"])
    assert.strictEqual(r.score, 0)
    assert.strictEqual(factuality("Diversify across 3 sectors.", { answer: "Diversify." }).score, 1)
  })

  it("reads structured contexts too", () => {
    const structured = { symbol: "NVDA", prices: { NVDA: { price: 950.02, changePercent: -2.5 } } }
    assert.strictEqual(factuality("NVDA is trading at $950.02, down 2.5%.", { answer: "x", context: structured }).score, 1)
  })
})

describe("citation", () => {
  it("counts cue words, footnotes and allowed source names", () => {
    assert.deepStrictEqual(citation("According to Reuters, Apple unveiled chips.", { context }), {
      cites: true,
      namedSources: ["Reuters"],
      allowed: true
    })
    assert.deepStrictEqual(citation("Source: Bloomberg", { context, citations: [{ source: "Reuters" }] }), {
      cites: true,
      namedSources: ["Bloomberg"],
      allowed: false
    })
    assert.isTrue(citation("Apple unveiled chips [1].", {}).cites)
    assert.isFalse(citation("Apple unveiled chips [1].", {}).allowed)
    assert.isFalse(citation("Apple unveiled chips.", {}).cites)
    assert.isTrue(citation("Per the Yahoo Finance quote, it is up.", { citations: [{ source: "Yahoo Finance" }] }).allowed)
  })
})

describe("risk flag", () => {
  it("needs a disclaimer for advice questions or records with a risk note", () => {
    assert.deepStrictEqual(riskFlag("Buy it. This is not financial advice.", { question: "Should I buy AAPL?" }), {
      needsDisclaimer: true,
      hasDisclaimer: true
    })
    assert.deepStrictEqual(riskFlag("Buy it.", { question: "Should I buy AAPL?" }), { needsDisclaimer: true, hasDisclaimer: false })
    assert.deepStrictEqual(riskFlag("Hold. Stocks can fall.", { question: "Thoughts on AAPL?", risk_note: "Stocks can fall." }), {
      needsDisclaimer: true,
      hasDisclaimer: true
    })
    assert.deepStrictEqual(riskFlag("It is $5. Past performance is no guide.", { question: "What is AAPL's price?" }), {
      needsDisclaimer: false,
      hasDisclaimer: true
    })
  })
})

describe("placeholder fidelity", () => {
  it("compares base-type multisets", () => {
    assert.deepStrictEqual(placeholderFidelity("At <SPY_PRICE> and <CHANGE>", "At <PRICE> and <CHANGE> and <PE_1>"), {
      precision: 1,
      recall: 2 / 3,
      f1: 0.8,
      exact: false
    })
    assert.deepStrictEqual(placeholderFidelity("no placeholders", "none either"), { precision: 1, recall: 1, f1: 1, exact: true })
    assert.deepStrictEqual(placeholderFidelity("$5", "<PRICE>"), { precision: 0, recall: 0, f1: 0, exact: false })
    assert.isTrue(placeholderFidelity("<PE_1> then <PRICE>", "<PRICE> and <PE_1>").exact)
  })
})

describe("corpus aggregates", () => {
  it("averages scores and computes each rate over its own denominator", () => {
    const advice = { question: "Should I buy AAPL?", answer: "Maybe at <PRICE>.", context }
    const plain = { question: "What is AAPL's price?", answer: "It is <PRICE>.", context, citations: [{ source: "Reuters" }] }
    const agg = aggregateFinance([
      financeScores("Maybe at <PRICE>. Not financial advice.", advice), // factuality 1, flagged
      financeScores("Buy at $200.", advice), // hallucinated value, no flag
      financeScores("It is <PRICE> (source: Reuters).", plain), // cites allowed
      financeScores("It is <PRICE>. Past performance varies.", plain) // unneeded disclaimer
    ])
    assert.strictEqual(agg.riskFlagRate, 0.5)
    assert.strictEqual(agg.unneededDisclaimerRate, 0.5)
    assert.strictEqual(agg.citationRate, 0.25)
    assert.strictEqual(agg.allowedSourceRate, 1)
    assert.strictEqual(agg.hallucinatedValues, 1)
    assert.strictEqual(agg.factuality, (1 + 0 + 1 + 1) / 4)
    assert.strictEqual(agg.placeholderExactRate, 0.75)
    assert.strictEqual(aggregateFinance([]).factuality, 0)
  })
})
