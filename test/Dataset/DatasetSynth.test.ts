import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { mkdtempSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { DatasetPipeline } from "../../src/Dataset/DatasetPipeline.ts"
import { placeholderValue } from "../../src/Dataset/Fill.ts"
import { writeSynthetic } from "../../src/Dataset/FileOps.ts"
import { detectValues, placeholdersIn } from "../../src/Dataset/Placeholders.ts"
import { parseRagContext, renderRagContext } from "../../src/Dataset/RagContext.ts"
import type { TrainingRecord } from "../../src/Dataset/Record.ts"
import { encodeRecord } from "../../src/Dataset/RecordEncode.ts"
import { isAdvice } from "../../src/Dataset/Rules.ts"
import { computeStats } from "../../src/Dataset/Stats.ts"
import { intentNames, synthesize } from "../../src/Dataset/Synth.ts"
import { findTickersInText, isKnownTicker } from "../../src/Dataset/Tickers.ts"

const take = (seed: number, n: number): Array<TrainingRecord> => {
  const g = synthesize(seed)
  return Array.from({ length: n }, () => g.next().value!)
}

describe("synthetic records", () => {
  const records = take(42, 4000)

  it("are deterministic for a seed, and differ between seeds", () => {
    assert.deepStrictEqual(take(42, 50), records.slice(0, 50))
    assert.notDeepEqual(take(43, 50), records.slice(0, 50))
  })

  it("cover every intent and at least 50 real tickers", () => {
    const intents = new Set(records.map((r) => r.intent))
    assert.deepStrictEqual([...intents].sort(), [...intentNames].sort())
    const symbols = new Set(records.flatMap((r) => r.tickers))
    assert.isAtLeast(symbols.size, 50)
    for (const s of symbols) assert.isTrue(isKnownTicker(s), s)
    assert.isAbove(new Set(records.map((r) => r.question)).size, 2500)
  })

  it("carry only placeholders in answers, each resolved by the record's own app-layout context", () => {
    for (const r of records) {
      assert.deepStrictEqual(detectValues(r.answer), [], r.answer)
      assert.deepStrictEqual(detectValues(r.question), [], r.question)
      if (r.context === undefined) {
        assert.isFalse(r.context_required)
        assert.deepStrictEqual(placeholdersIn(r.answer), [])
        continue
      }
      assert.isTrue(r.context_required)
      assert.isAbove(r.citations.length, 0)
      const text = r.context as string
      const ctx = parseRagContext(text)
      assert.strictEqual(renderRagContext(ctx), text) // the layout round-trips: it is the app's format
      for (const p of placeholdersIn(r.answer)) {
        if (p === "<TIMESTAMP>") continue
        assert.isDefined(placeholderValue(p, ctx), `${p} in ${r.intent}: ${r.answer}\n${text}`)
      }
    }
  })

  it("give every should-I-buy question a risk note and name their tickers", () => {
    const advice = records.filter((r) => r.intent === "should_buy")
    assert.isAbove(advice.length, 100)
    for (const r of advice) {
      assert.isTrue(isAdvice(r))
      assert.isAbove((r.risk_note ?? "").length, 20)
    }
    for (const r of records) {
      if (isAdvice(r)) assert.isDefined(r.risk_note, r.question)
      for (const s of findTickersInText(`${r.question}\n${r.answer}`)) assert.include(r.tickers, s, r.question)
    }
  })
})

const TestLayer = Layer.mergeAll(DatasetPipeline.layer.pipe(Layer.provide(NodeServices.layer)), NodeServices.layer)

describe("synth file", () => {
  it.effect("is written deterministically and passes the project's own ingest without a reject", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(join(tmpdir(), "dataset-synth-"))
      const a = join(dir, "a.jsonl")
      const b = join(dir, "b.jsonl")
      yield* writeSynthetic({ count: 3000, seed: 5, output: a })
      yield* writeSynthetic({ count: 3000, seed: 5, output: b })
      const text = readFileSync(a, "utf8")
      assert.strictEqual(text, readFileSync(b, "utf8"))
      const lines = text.split("\n")
      assert.strictEqual(lines.length, 3001)
      assert.strictEqual(lines[0], encodeRecord(take(5, 1)[0]!))
      const summary = yield* DatasetPipeline.use((p) => p.run({ input: a, outDir: join(dir, "out") }))
      assert.strictEqual(summary.rejected, 0)
      assert.strictEqual(summary.placeholdersReplaced, 0)
      assert.isAbove(summary.train + summary.test, 2700)
      const stats = yield* computeStats(a)
      assert.strictEqual(stats.records, 3000)
      assert.strictEqual(stats.unique, summary.train + summary.test)
      assert.strictEqual(Object.keys(stats.byIntent).length, intentNames.length)
      assert.isAbove(stats.byPlaceholderType.PRICE ?? 0, 1000)
      assert.isAbove(stats.answerChars.p50, 80)
      assert.isAtLeast(stats.answerChars.p99, stats.answerChars.p90)
    }).pipe(Effect.provide(TestLayer)))
})
