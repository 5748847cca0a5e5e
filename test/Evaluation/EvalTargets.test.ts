/**
 * Metrics that can move (issue 19): the answer part synthetic records train and are evaluated on carries their
 * sources and risk notes, so the citation and risk-flag rates of a perfect answer are 1, and the eval token budget,
 * sized from the references, leaves room for them.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { formatExample, targetAnswer } from "../../src/Dataset/PromptFormat.ts"
import type { TrainingRecord } from "../../src/Dataset/Record.ts"
import { synthesize } from "../../src/Dataset/Synth.ts"
import { aggregateFinance, citation, financeScores, riskFlag } from "../../src/Evaluation/FinanceMetrics.ts"
import { evalTokenBudget } from "../../src/Evaluation/TokenBudget.ts"
import { LlamaCpp } from "../../src/Model/LlamaCpp.ts"
import { presetConfig, writeTinyModel } from "../../src/Model/TinyModel.ts"
import { Tokenizer } from "../../src/Model/Tokenizer.ts"

const records = (n: number): Array<TrainingRecord> => {
  const out: Array<TrainingRecord> = []
  for (const r of synthesize(7)) {
    out.push(r)
    if (out.length === n) break
  }
  return out
}

describe("synthetic references carry their sources and risk notes", () => {
  const rs = records(600)

  it("score citation and risk-flag rates of 1 against themselves where the record has citations or needs a disclaimer", () => {
    const cited = rs.filter((r) => r.citations.length > 0)
    const advice = rs.filter((r) => riskFlag("", r).needsDisclaimer)
    assert.isAbove(cited.length, 400)
    assert.isAbove(advice.length, 20)
    // the reference is the answer field (what evaluation compares with) and it is the training target as it is
    for (const r of rs) assert.strictEqual(targetAnswer(r), r.answer)
    for (const r of cited) {
      const c = citation(r.answer, r)
      assert.isTrue(c.cites && c.allowed, `${r.intent}: ${r.answer}`)
    }
    for (const r of advice) assert.isTrue(riskFlag(r.answer, r).hasDisclaimer, r.answer)
    const onCited = aggregateFinance(cited.map((r) => financeScores(r.answer, r)))
    assert.strictEqual(onCited.citationRate, 1)
    assert.strictEqual(onCited.allowedSourceRate, 1)
    const onAdvice = aggregateFinance(advice.map((r) => financeScores(r.answer, r)))
    assert.strictEqual(onAdvice.riskFlagRate, 1)
    const all = aggregateFinance(rs.map((r) => financeScores(r.answer, r)))
    assert.isAbove(all.citationRate, 0.8)
    // what the answers were before: the draft text alone names no source for market-data answers
    const price = rs.find((r) => r.intent === "price")!
    const draft = price.answer.slice(0, price.answer.indexOf("\n\nSources: "))
    assert.isFalse(citation(draft, price).cites)
    assert.isTrue(citation(price.answer, price).cites)
  })

  it("any seed record's training text carries its sources and risk note in the loss span", () => {
    const r = { question: "Should I buy AAPL?", answer: "AAPL trades at <PRICE>.", context: "Current Symbol: AAPL", citations: [{ source: "market_data_api" }, { source: "fundamental_data" }, { source: "market_data_api" }], risk_note: "Stock investments carry risk." }
    const ex = formatExample(r, "seed")
    const part = ex.text.slice(ex.answerStart, ex.answerEnd)
    assert.strictEqual(part, targetAnswer(r))
    assert.strictEqual(part, "AAPL trades at <PRICE>.\n\nSources: market_data_api, fundamental_data.\n\nStock investments carry risk.")
    assert.isTrue(citation(part, r).allowed)
    assert.isTrue(riskFlag(part, r).hasDisclaimer)
    // an answer that names its sources and holds its note already is left as it is
    const done = { answer: "AAPL is at <PRICE>. Sources: market_data_api. Not financial advice.", citations: [{ source: "market_data_api" }], risk_note: "Not financial advice." }
    assert.strictEqual(targetAnswer(done), done.answer)
    assert.strictEqual(targetAnswer({ answer: "Plain." }), "Plain.")
  })

  it("the token budget without a tokenizer covers the references (an over-estimate) and respects its cap", () => {
    const refs = rs.map((r) => r.answer)
    const b = evalTokenBudget(refs)
    assert.strictEqual(b.references, refs.length)
    assert.isAtLeast(b.tokens, b.p95)
    assert.isAbove(b.tokens, 48)
    assert.strictEqual(evalTokenBudget(refs, undefined, 40).tokens, 40)
    assert.isTrue(evalTokenBudget(refs, undefined, 40).capped)
    assert.strictEqual(evalTokenBudget([]).tokens, 64)
  })
})

layer(Tokenizer.layerNoDeps.pipe(Layer.provideMerge(LlamaCpp.layerCpu)), { timeout: 60_000 })("token budget in the model's tokenizer", (it) => {
  it.effect("covers at least 95% of the references, each with its sources line and risk note", () =>
    Effect.gen(function*() {
      const gguf = join(mkdtempSync(join(tmpdir(), "eval-budget-")), "tiny.gguf")
      yield* writeTinyModel({ config: presetConfig("tiny"), seed: 1, path: gguf })
      const tok = yield* (yield* Tokenizer).load(gguf)
      const refs = records(300).map((r) => r.answer)
      const b = evalTokenBudget(refs, tok)
      assert.strictEqual(b.counted, "tokenizer")
      const lengths = refs.map((r) => tok.tokenize(r, { addBos: false }).length)
      const covered = lengths.filter((n) => n <= b.tokens).length
      assert.isAtLeast(covered / lengths.length, 0.95)
      assert.strictEqual(b.longest, Math.max(...lengths))
      // the fixed 48 the pipeline used cut most references
      assert.isAbove(lengths.filter((n) => n > 48).length, lengths.length / 2)
    }))
})
