import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer } from "effect"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { gzipSync } from "node:zlib"
import { DatasetPipeline, type PipelineOptions, type Summary } from "../../src/Dataset/DatasetPipeline.ts"
import type { Reject } from "../../src/Dataset/Ingest.ts"
import { canonicalText } from "../../src/Dataset/Normalize.ts"
import { defaultRuleConfig } from "../../src/Dataset/Rules.ts"
import { assignSplit } from "../../src/Dataset/Split.ts"

const TestLayer = DatasetPipeline.layer.pipe(Layer.provide(NodeServices.layer))

const seed = (question: string, extra: Record<string, unknown> = {}) => ({
  question,
  answer: `The answer to "${question}" needs no live data.`,
  rationale: "r",
  tickers: [],
  citations: [],
  context_required: false,
  ...extra
})
const line = (o: unknown) => JSON.stringify(o)

interface Outputs {
  readonly summary: Summary
  readonly train: Array<Record<string, unknown>>
  readonly test: Array<Record<string, unknown>>
  readonly rejects: Array<Reject>
  readonly dir: string
}

const readJsonl = (file: string) => readFileSync(file, "utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l))

/** writes `content` to a temp input file, runs the pipeline, reads every output back */
const ingest = (content: string | Uint8Array, options: Omit<PipelineOptions, "input" | "outDir"> = {}, name = "in.jsonl") =>
  Effect.gen(function*() {
    const dir = mkdtempSync(join(tmpdir(), "dataset-test-"))
    const input = join(dir, name)
    writeFileSync(input, content)
    const outDir = join(dir, "out")
    const summary = yield* DatasetPipeline.use((p) => p.run({ input, outDir, ...options }))
    const out: Outputs = {
      summary,
      train: readJsonl(join(outDir, "train.jsonl")),
      test: readJsonl(join(outDir, "test.jsonl")),
      rejects: readJsonl(join(outDir, "rejects.jsonl")),
      dir: outDir
    }
    return out
  }).pipe(Effect.provide(TestLayer))

const assertCountsAddUp = (s: Summary) => {
  assert.strictEqual(s.train + s.test + s.duplicates.exact + s.duplicates.normalized + s.rejected, s.records)
  assert.strictEqual(s.records + s.blankLines, s.linesRead)
}

describe("ingest: every line accounted for", () => {
  it.effect("handles a BOM, CRLF, blank lines, truncated JSON, wrong types and no trailing newline", () =>
    Effect.gen(function*() {
      const content = "\uFEFF" + [
        line(seed("first question")), // 1 (BOM stripped)
        "", // 2 blank
        "   ", // 3 blank
        "{\"question\": \"cut", // 4 truncated
        line({ ...seed("wrong type"), tickers: "AAPL" }), // 5
        line({ ...seed("missing answer"), answer: undefined }), // 6
        line(seed("crlf question")) + "\r", // 7 CRLF
        "[1,2]", // 8 not an object
        line(seed("last question, no newline")) // 9
      ].join("\n")
      const { summary, train, test, rejects } = yield* ingest(content)
      assertCountsAddUp(summary)
      assert.strictEqual(summary.linesRead, 9)
      assert.strictEqual(summary.blankLines, 2)
      assert.strictEqual(summary.train + summary.test, 3)
      assert.deepStrictEqual(
        [...train, ...test].map((r) => r.question).sort(),
        ["crlf question", "first question", "last question, no newline"]
      )
      assert.deepStrictEqual(rejects.map((r) => [r.line, r.code, r.field]), [
        [4, "invalid_json", "<root>"],
        [5, "schema", "tickers"],
        [6, "schema", "answer"],
        [8, "schema", "<root>"]
      ])
      assert.include(rejects[0]!.reason, "invalid JSON")
      assert.strictEqual(rejects[0]!.text, "{\"question\": \"cut")
      assert.strictEqual(rejects[1]!.reason, "Expected array, got string \"AAPL\"")
      assert.strictEqual(rejects[2]!.reason, "Missing key")
      assert.deepStrictEqual(summary.rejectReasons, { invalid_json: 1, schema: 3 })
    }))

  it.effect("rejects lines over the size limit and invalid UTF-8 without losing the lines around them", () =>
    Effect.gen(function*() {
      const long = line(seed("x".repeat(2 * 1024 * 1024)))
      const badUtf8 = Buffer.concat([Buffer.from("{\"question\":\"caf"), Buffer.from([0xc3, 0x28]), Buffer.from("\"}")])
      const content = Buffer.concat([
        Buffer.from(line(seed("before")) + "\n" + long + "\n"),
        badUtf8,
        Buffer.from("\n" + line(seed("after")) + "\n")
      ])
      const { summary, rejects, train, test } = yield* ingest(content)
      assertCountsAddUp(summary)
      assert.deepStrictEqual(rejects.map((r) => [r.line, r.code]), [[2, "line_too_long"], [3, "invalid_utf8"]])
      assert.isAtMost(rejects[0]!.text.length, 501)
      assert.isTrue(rejects[0]!.text.startsWith("{\"question\":\"xxxx"))
      assert.include(rejects[0]!.reason, `${long.length} bytes`)
      assert.deepStrictEqual([...train, ...test].map((r) => r.question).sort(), ["after", "before"])
    }))

  it.effect("an empty file gives empty outputs and a zero summary", () =>
    Effect.gen(function*() {
      const { summary, train, test, rejects } = yield* ingest("")
      assert.deepStrictEqual([summary.linesRead, summary.records, train.length, test.length, rejects.length], [0, 0, 0, 0, 0])
      assert.strictEqual(summary.rejectRate, 0)
    }))

  it.effect("reads gzip input", () =>
    Effect.gen(function*() {
      const content = Array.from({ length: 50 }, (_, i) => line(seed(`gz question ${i}`))).join("\n") + "\n"
      const { summary } = yield* ingest(gzipSync(content), {}, "in.jsonl.gz")
      assert.strictEqual(summary.train + summary.test, 50)
    }))

  it.effect("drops extra fields by default, keeps them on request, and counts them by name", () =>
    Effect.gen(function*() {
      const content = line(seed("with extras", { id: 7, source_file: "a.csv" })) + "\n"
      const dropped = yield* ingest(content)
      const r1 = [...dropped.train, ...dropped.test][0]!
      assert.isFalse("id" in r1)
      assert.deepStrictEqual(dropped.summary.extraFields, { id: 1, source_file: 1 })
      assert.strictEqual(dropped.summary.extraFieldsRule, "dropped")
      const kept = yield* ingest(content, { keepExtra: true })
      const r2 = [...kept.train, ...kept.test][0]!
      assert.deepStrictEqual(Object.keys(r2), ["question", "answer", "rationale", "tickers", "citations", "context_required", "id", "source_file"])
      assert.strictEqual(r2.id, 7)
    }))
})

describe("ingest: normalization, rules, mapping", () => {
  it.effect("normalizes live values and derives context_required when the input leaves it out", () =>
    Effect.gen(function*() {
      const record = { question: "What is AAPL at?", answer: "AAPL is at $189.50, up 0.45% today.", citations: [{ source: "api", timestamp: "2026-11-25T15:00:00Z" }] }
      const { train, test, summary } = yield* ingest(line(record) + "\n")
      const out = [...train, ...test][0]!
      assert.strictEqual(out.answer, "AAPL is at <PRICE>, up <CHANGE> today.")
      assert.strictEqual(out.context_required, true)
      assert.deepStrictEqual(out.tickers, ["AAPL"])
      assert.deepStrictEqual(out.citations, [{ source: "api", timestamp: "<TIMESTAMP>" }])
      assert.strictEqual(summary.placeholdersReplaced, 3)
    }))

  it.effect("reports each content rule by name, as a reject or a warning by configuration", () =>
    Effect.gen(function*() {
      const lines = [
        seed("Price?", { answer: "It is at <PRICE>.", context_required: false }), // live_values_need_context
        seed("Price now?", { answer: "It is at <PRICE>.", context_required: true }), // context_needs_citation
        seed("Should I buy TSLA?", { tickers: ["TSLA"] }), // advice_needs_risk_note
        seed("When?", { citations: [{ source: "api", timestamp: "yesterday" }] }), // citation_timestamp
        seed("Lower?", { tickers: ["aapl"] }), // tickers_uppercase
        seed("How is Apple doing?") // tickers_in_text (warn by default)
      ].map(line).join("\n")
      const strict = yield* ingest(lines)
      assert.deepStrictEqual(strict.rejects.map((r) => [r.line, r.code, r.field]), [
        [1, "live_values_need_context", "context_required"],
        [2, "context_needs_citation", "citations"],
        [3, "advice_needs_risk_note", "risk_note"],
        [4, "citation_timestamp", "citations.0.timestamp"],
        [5, "tickers_uppercase", "tickers.0"]
      ])
      assert.deepStrictEqual(strict.summary.warnings, { tickers_in_text: 1 })
      const lenient = yield* ingest(lines, {
        rules: { ...defaultRuleConfig, advice_needs_risk_note: "warn", tickers_uppercase: "off", tickers_in_text: "reject" }
      })
      assert.deepStrictEqual(lenient.rejects.map((r) => r.code), ["live_values_need_context", "context_needs_citation", "citation_timestamp", "tickers_in_text"])
      assert.deepStrictEqual(lenient.summary.warnings, { advice_needs_risk_note: 1 })
    }))

  it.effect("maps chat records (keeping one of each repeated conversation) and prompt/completion pairs", () =>
    Effect.gen(function*() {
      const system = { role: "system", content: "You are BullishAI." }
      const chat = (i: number) => ({
        messages: [system, { role: "user", content: `Is question ${i} about TSLA?` }, {
          role: "assistant",
          content: `Answer ${i}: TSLA moves with EV demand.\n\n⚠️ This is for educational purposes only and not financial advice.`
        }],
        category: i % 2 === 0 ? "technical" : "news"
      })
      // 1,000 lines holding 411 distinct conversations, as the original app's file does
      const chats = Array.from({ length: 1000 }, (_, i) => line(chat(i % 411)))
      const pairs = [
        line({ prompt: "Context: Current Symbol: AAPL\nQuestion: What is AAPL at?\nAnswer:", completion: " AAPL is at <PRICE>." }),
        line({ prompt: [{ role: "user", content: "Explain EPS." }], completion: [{ role: "assistant", content: "Earnings per share." }] })
      ]
      const { summary, train, test } = yield* ingest([...chats, ...pairs].join("\n"), { rules: { ...defaultRuleConfig, context_needs_citation: "warn" } })
      assertCountsAddUp(summary)
      assert.strictEqual(summary.duplicates.exact, 589)
      assert.deepStrictEqual(summary.formats, { chat: 411, pair: 2 })
      const all = [...train, ...test]
      const c = all.find((r) => r.question === "Is question 3 about TSLA?")!
      assert.deepStrictEqual(c.tickers, ["TSLA"])
      assert.strictEqual(c.intent, "news")
      assert.strictEqual(c.risk_note, "⚠️ This is for educational purposes only and not financial advice.")
      const p = all.find((r) => r.question === "What is AAPL at?")!
      assert.strictEqual(p.context, "Current Symbol: AAPL")
      assert.strictEqual(p.answer, "AAPL is at <PRICE>.")
      assert.strictEqual(p.context_required, true)
      assert.isTrue(all.some((r) => r.question === "Explain EPS." && r.answer === "Earnings per share."))
    }))
})

describe("ingest: dedupe and split", () => {
  const corpus = Array.from({ length: 600 }, (_, i) => line(seed(`Question number ${i % 500}?`))) // 100 exact repeats
    .concat(Array.from({ length: 50 }, (_, i) => line(seed(`  question NUMBER ${i}!!`)))) // 50 near-copies
    .join("\n")
  // one answer template (up to case, punctuation, spacing and the stock) under different questions: not
  // duplicates, but they must share a side
  const variants = Array.from({ length: 300 }, (_, i) => line({ ...seed(`First question ${i}?`), answer: `Apple (AAPL) answer number ${i}.`, tickers: ["AAPL"] }))
    .concat(Array.from({ length: 300 }, (_, i) => line({ ...seed(`Second question ${i}?`), answer: `  microsoft ($MSFT) Answer  number ${i}!!`, tickers: ["MSFT"] })))
    .join("\n")

  it.effect("drops exact and normalized duplicates", () =>
    Effect.gen(function*() {
      const { summary } = yield* ingest(corpus)
      assertCountsAddUp(summary)
      assert.strictEqual(summary.duplicates.exact, 100)
      // the near-copies quote their question in the answer, so they are duplicates after normalization
      assert.strictEqual(summary.duplicates.normalized, 50)
      assert.strictEqual(summary.train + summary.test, 500)
      const again = yield* ingest(
        [line(seed("Same?")), line({ ...seed("same"), answer: "The answer to \"Same?\" needs  no live data!" })].join("\n")
      )
      assert.strictEqual(again.summary.duplicates.normalized, 1)
    }))

  it.effect("splits about 90/10 with no templated answer on both sides, byte-identical for the same seed", () =>
    Effect.gen(function*() {
      const a = yield* ingest(corpus, { seed: 7 })
      const b = yield* ingest(corpus, { seed: 7 })
      const c = yield* ingest(corpus, { seed: 8, testRatio: 0.3 })
      for (const f of ["train.jsonl", "test.jsonl", "summary.json"]) {
        const x = readFileSync(join(a.dir, f), "utf8").replaceAll(a.dir.replace(/\/out$/, ""), "")
        const y = readFileSync(join(b.dir, f), "utf8").replaceAll(b.dir.replace(/\/out$/, ""), "")
        assert.strictEqual(x, y, f)
      }
      // the exported assignSplit is the rule the ingest applies
      const asRecord = (r: Record<string, unknown>) => ({ answer: String(r.answer), tickers: r.tickers as Array<string> })
      for (const r of a.test) assert.strictEqual(assignSplit(asRecord(r), 7, 0.1), "test")
      for (const r of a.train) assert.strictEqual(assignSplit(asRecord(r), 7, 0.1), "train")
      const ratio = a.summary.test / (a.summary.train + a.summary.test)
      assert.isTrue(ratio > 0.05 && ratio < 0.15, `test ratio ${ratio}`)
      // every answer is its own template here, so the groups are the records
      assert.deepStrictEqual(a.summary.groups, { total: a.summary.train + a.summary.test, train: a.summary.train, test: a.summary.test })
      const trainAnswers = new Set(a.train.map((r) => canonicalText(String(r.answer))))
      assert.isTrue(a.test.every((r) => !trainAnswers.has(canonicalText(String(r.answer)))))
      // "Apple (AAPL) answer number 3." and "  microsoft ($MSFT) Answer  number 3!!" are one templated answer: same side
      const v = yield* ingest(variants, { seed: 7 })
      assert.strictEqual(v.summary.train + v.summary.test, 600)
      assert.strictEqual(v.summary.groups?.total, 300)
      const side = (q: string) => (v.test.some((r) => r.question === q) ? "test" : "train")
      for (let i = 0; i < 300; i++) assert.strictEqual(side(`First question ${i}?`), side(`Second question ${i}?`))
      assert.isAbove(v.summary.test, 0)
      assert.strictEqual(v.summary.groups?.test, v.summary.test / 2)
      assert.notDeepEqual(c.test.map((r) => r.question), a.test.map((r) => r.question))
      assert.isAbove(c.summary.test, a.summary.test)
    }))

  it.effect("keeps every ticker group on one side when grouping by ticker", () =>
    Effect.gen(function*() {
      const symbols = ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "META", "JPM", "XOM", "KO", "PFE", "WMT", "DIS"]
      const lines = Array.from({ length: 360 }, (_, i) => {
        const s = symbols[i % symbols.length]!
        return line(seed(`Note ${i} on ${s}`, { tickers: [s] }))
      }).join("\n")
      const { train, test } = yield* ingest(lines, { groupByTicker: true, testRatio: 0.25 })
      const trainTickers = new Set(train.flatMap((r) => r.tickers as Array<string>))
      const testTickers = new Set(test.flatMap((r) => r.tickers as Array<string>))
      assert.isAbove(testTickers.size, 0)
      for (const t of testTickers) assert.isFalse(trainTickers.has(t), t)
    }))
})

describe("ingest: failure modes", () => {
  it.effect("--strict stops at the first bad line naming file, line, field and reason", () =>
    Effect.gen(function*() {
      const content = [line(seed("ok 1")), line(seed("ok 2")), line({ ...seed("bad"), context_required: "yes" }), line(seed("ok 3"))].join("\n")
      const exit = yield* Effect.exit(ingest(content, { strict: true }))
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        const error = exit.cause.reasons[0]
        assert.strictEqual(error?._tag, "Fail")
        const e = (error as { error: { _tag: string; line: number; field: string; message: string } }).error
        assert.strictEqual(e._tag, "StrictModeViolation")
        assert.strictEqual(e.line, 3)
        assert.strictEqual(e.field, "context_required")
        assert.match(e.message, /in\.jsonl:3: context_required: Expected boolean, got string "yes"$/)
      }
    }))

  it.effect("--max-reject-rate fails after writing every output", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(join(tmpdir(), "dataset-test-"))
      const input = join(dir, "in.jsonl")
      writeFileSync(input, [line(seed("fine")), "not json", "also not json", line(seed("fine too"))].join("\n"))
      const exit = yield* Effect.exit(DatasetPipeline.use((p) => p.run({ input, outDir: join(dir, "out"), maxRejectRate: 0.25 })))
      assert.isTrue(Exit.isFailure(exit))
      assert.include(String(Exit.isFailure(exit) ? exit.cause.reasons[0] && JSON.stringify(exit.cause.reasons[0]) : ""), "RejectRateExceeded")
      const summary = JSON.parse(readFileSync(join(dir, "out", "summary.json"), "utf8"))
      assert.strictEqual(summary.rejected, 2)
      assert.strictEqual(summary.rejectRate, 0.5)
      assert.strictEqual(readJsonl(join(dir, "out", "rejects.jsonl")).length, 2)
    }).pipe(Effect.provide(TestLayer)))

  it.effect("a missing input is a clear error", () =>
    Effect.gen(function*() {
      const e = yield* Effect.flip(DatasetPipeline.use((p) => p.run({ input: "/nonexistent/x.jsonl", outDir: tmpdir() })))
      assert.strictEqual(e._tag, "DatasetInputError")
      assert.strictEqual(e.message, "/nonexistent/x.jsonl: no such file")
    }).pipe(Effect.provide(TestLayer)))
})
