/**
 * The split on templated data (issue 19): a chat file made like the original app's (a system prompt, question
 * paraphrases, answer templates that differ only in the stock, each conversation repeated) must put every
 * answer template on one side, and the ingest reports the number of groups.
 */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { DatasetPipeline } from "../../src/Dataset/DatasetPipeline.ts"
import { canonicalText } from "../../src/Dataset/Split.ts"
import { maskTickers } from "../../src/Dataset/Tickers.ts"

const system = "You are a market analyst for a trading simulator. Answer in plain English and add a short educational disclaimer."
// FTS is not in the project's ticker table (the app's file quotes symbols the table lacks); answers name the
// stock by symbol, as the app's do
const stocks = ["AAPL", "MSFT", "JPM", "XOM", "RY", "FTS", "ENB", "KO"] as const
const questions = [
  (s: string) => `Which stock looks strongest right now? I like ${s}.`,
  (s: string) => `Give me a strong idea for today, maybe ${s}?`,
  (s: string) => `Is ${s} in an uptrend or a downtrend?`,
  (s: string) => `What should I watch when ${s} reports earnings?`,
  (s: string) => `Explain how news affects ${s} in simple terms.`
]
const answers = Array.from({ length: 24 }, (_, k) => (s: string) =>
  `Quick Summary:\n${s} is a name many traders keep on the radar, pattern ${k}.\n\nKey Numbers & Drivers:\n- Watch whether ${s} holds support.\n- Compare ${s} with SPY.\n\nThis is for educational purposes only and not financial advice.`)

/** 24 answer templates x 8 stocks, each with one of 5 question paraphrases, every conversation twice */
const chatFile = () => {
  const lines: Array<string> = []
  for (let k = 0; k < answers.length; k++) {
    for (let j = 0; j < stocks.length; j++) {
      const symbol = stocks[j]!
      const record = {
        messages: [
          { role: "system", content: system },
          { role: "user", content: questions[(k + j) % questions.length]!(symbol) },
          { role: "assistant", content: answers[k]!(symbol) }
        ],
        category: "us_best"
      }
      lines.push(JSON.stringify(record), JSON.stringify(record))
    }
  }
  return lines.join("\n") + "\n"
}

/** the test's own masking, independent of maskTickers: the generator's symbols as whole words */
const maskOwn = (text: string) => text.replace(new RegExp(`\\b(?:${stocks.join("|")})\\b`, "g"), "<T>")

const readJsonl = (file: string) => readFileSync(file, "utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as { answer: string; tickers: Array<string> })

describe("split on templated chat data", () => {
  it.effect("puts each answer template on one side and reports the groups", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(join(tmpdir(), "dataset-template-"))
      const input = join(dir, "chat.jsonl")
      writeFileSync(input, chatFile())
      const out = join(dir, "out")
      const summary = yield* DatasetPipeline.use((p) => p.run({ input, outDir: out, seed: 42, testRatio: 0.2 }))
      const train = readJsonl(join(out, "train.jsonl"))
      const test = readJsonl(join(out, "test.jsonl"))
      // every distinct conversation is kept once
      assert.strictEqual(summary.train + summary.test, answers.length * stocks.length)
      assert.strictEqual(summary.duplicates.exact, answers.length * stocks.length)
      assert.isAbove(test.length, 0)
      // the leak the old question-keyed split had: after masking the stock, 0 test answers equal a training one
      const trainAnswers = new Set(train.map((r) => maskOwn(r.answer)))
      const leaked = test.filter((r) => trainAnswers.has(maskOwn(r.answer)))
      assert.strictEqual(leaked.length, 0, `${leaked.length} of ${test.length} test answers equal a training answer`)
      // one group per answer template, split between the sides as the records are
      assert.deepStrictEqual(summary.groups, {
        total: answers.length,
        train: new Set(train.map((r) => maskOwn(r.answer))).size,
        test: new Set(test.map((r) => maskOwn(r.answer))).size
      })
      assert.isAbove(summary.groups!.test, 0)
      assert.strictEqual(summary.groups!.total, summary.groups!.train + summary.groups!.test)
      // the ingest's masking agrees: one templated form per template (FTS masked though not in the table)
      const templates = new Set([...train, ...test].map((r) => canonicalText(maskTickers(r.answer, r.tickers))))
      assert.strictEqual(templates.size, answers.length)
    }).pipe(Effect.provide(DatasetPipeline.layer.pipe(Layer.provide(NodeServices.layer)))))

  it("maskTickers masks symbols, cashtags, aliases and symbol placeholders, and keeps other placeholders", () => {
    assert.strictEqual(maskTickers("Apple (AAPL) vs $msft at <PRICE>, <STOCK_2> and BRK.B"), "<TICKER> (<TICKER>) vs $msft at <PRICE>, <TICKER> and <TICKER>")
    assert.strictEqual(maskTickers("$F and (F) and F and A stock", []), "<TICKER> and (<TICKER>) and F and A stock")
    assert.strictEqual(maskTickers("F rose", ["F"]), "<TICKER> rose")
    assert.strictEqual(maskTickers("FTS holds support; ALL-time highs"), "<TICKER> holds support; ALL-time highs")
    const plain = "no stocks here, just words."
    assert.strictEqual(maskTickers(plain), plain)
  })
})
