/** Human rubric: agreement statistics on published examples, CSV, export (blinding) and import (validation). */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Result } from "effect"
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { bootstrapMean, krippendorffAlpha, wilson } from "../../src/Evaluation/Agreement.ts"
import { parseCsv, Rubric, rubricMarkdown, toCsv } from "../../src/Evaluation/Rubric.ts"
import { scoreSample } from "../../src/Evaluation/RunFiles.ts"

const N = null

describe("Krippendorff's alpha on published examples", () => {
  // Wikipedia's computational example (also fast-krippendorff's tests)
  const wiki = [
    [N, N, N, N, N, 3, 4, 1, 2, 1, 1, 3, 3, N, 3],
    [1, N, 2, 1, 3, 3, 4, 3, N, N, N, N, N, N, N],
    [N, N, 2, 1, 3, 4, 4, N, 2, 1, 1, 3, 3, N, 4]
  ]
  // Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", 4 observers x 12 units
  const k2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
    [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N]
  ]
  it("nominal and interval (Wikipedia)", () => {
    assert.strictEqual(Number(krippendorffAlpha(wiki, "nominal").toFixed(6)), 0.691358)
    assert.strictEqual(Number(krippendorffAlpha(wiki, "interval").toFixed(6)), 0.810845)
  })
  it("nominal, ordinal, interval and ratio (Krippendorff 2011)", () => {
    assert.strictEqual(Number(krippendorffAlpha(k2011, "nominal").toFixed(3)), 0.743)
    assert.strictEqual(Number(krippendorffAlpha(k2011, "ordinal").toFixed(3)), 0.815)
    assert.strictEqual(Number(krippendorffAlpha(k2011, "interval").toFixed(3)), 0.849)
    assert.strictEqual(Number(krippendorffAlpha(k2011, "ratio").toFixed(3)), 0.797)
  })
  it("perfect agreement is 1; no pairable unit is NaN", () => {
    assert.strictEqual(krippendorffAlpha([[1, 2, 3], [1, 2, 3]], "ordinal"), 1)
    assert.isNaN(krippendorffAlpha([[1, N], [N, 2]], "nominal"))
  })
  it("Wilson interval and a reproducible bootstrap", () => {
    const w = wilson(8, 10)
    assert.strictEqual(w.low.toFixed(4), "0.4902")
    assert.strictEqual(w.high.toFixed(4), "0.9433")
    const a = bootstrapMean([1, 2, 3, 4, 5], { seed: 9 })
    assert.deepStrictEqual(a, bootstrapMean([1, 2, 3, 4, 5], { seed: 9 }))
    assert.strictEqual(a.estimate, 3)
    assert.isTrue(a.low < 3 && a.high > 3 && a.low >= 1 && a.high <= 5)
  })
})

describe("CSV", () => {
  it("round-trips quotes, commas and newlines", () => {
    const rows = [["a,b", "say \"hi\"", "line1\nline2"], ["", " padded ", "x"]]
    const parsed = parseCsv(toCsv(["c1", "c2", "c3"], rows))
    assert.deepStrictEqual(Result.getOrThrow(parsed), [["c1", "c2", "c3"], ...rows])
    assert.isTrue(Result.isFailure(parseCsv("a,\"unterminated\n")))
  })
})

const makeRun = (dir: string, system: string, answers: (q: string) => string) => {
  mkdirSync(dir, { recursive: true })
  const records = [0, 1, 2, 3, 4].map((i) => ({
    id: `item${i}`,
    index: i,
    question: `Question ${i}, with a comma?`,
    answer: `Answer ${i} at <PRICE>.`,
    context: `Current Symbol: T${i}\nline "two"`
  }))
  const samples = records.map((r) => scoreSample(r, { id: r.id, index: r.index, prediction: answers(r.question), latencyMs: 1 }))
  writeFileSync(join(dir, "samples.jsonl"), samples.map((s) => JSON.stringify(s)).join("\n") + "\n")
  writeFileSync(join(dir, "aggregate.json"), JSON.stringify({ system }))
}

const TestLayer = Rubric.layer.pipe(Layer.provideMerge(NodeServices.layer))

describe("rubric export and import", () => {
  it.effect("exports a blinded, shuffled, reproducible sheet and imports filled sheets with agreement", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(join(tmpdir(), "rubric-"))
      makeRun(join(dir, "base"), "base-model", (q) => `base says ${q}`)
      makeRun(join(dir, "lora"), "lora-model", (q) => `lora says ${q}`)
      const rubric = yield* Rubric
      const out = join(dir, "sheet")
      const exported = yield* rubric.exportSheet({ runs: [join(dir, "base"), join(dir, "lora")], outDir: out, items: 4, seed: 5 })
      assert.strictEqual(exported.rows, 8)
      const csv = readFileSync(join(out, "rubric.csv"), "utf8")
      assert.notInclude(csv, "base-model")
      assert.notInclude(csv, "lora-model")
      const rows = Result.getOrThrow(parseCsv(csv))
      assert.deepStrictEqual(rows[0], ["row_id", "item_id", "label", "question", "context", "answer", "clarity", "correctness", "risk_flag", "number_accuracy", "comment", "rater"])
      const body = rows.slice(1)
      const byItem = new Map<string, Array<string>>()
      for (const r of body) byItem.set(r[1]!, [...(byItem.get(r[1]!) ?? []), r[2]!])
      assert.strictEqual(byItem.size, 4)
      for (const labels of byItem.values()) assert.deepStrictEqual([...labels].sort(), ["A", "B"])
      assert.strictEqual(readFileSync(join(out, "rubric.jsonl"), "utf8").trim().split("\n").length, 8)
      const key = JSON.parse(readFileSync(join(out, "rubric-key.json"), "utf8"))
      assert.strictEqual(Object.keys(key.rows).length, 8)

      // same seed -> same sheet (stable ids, same shuffle)
      yield* rubric.exportSheet({ runs: [join(dir, "base"), join(dir, "lora")], outDir: join(dir, "sheet2"), items: 4, seed: 5 })
      assert.strictEqual(readFileSync(join(dir, "sheet2", "rubric.csv"), "utf8"), csv)

      // two raters fill it: lora gets 5s, base 3s; rater2 disagrees on clarity for one row
      const header = rows[0]!
      const fill = (rater: string, tweak: boolean) =>
        toCsv(header, body.map((r, i) => {
          const system = key.rows[r[0]!].system
          const score = system === "lora-model" ? "5" : "3"
          return [...r.slice(0, 6), tweak && i === 0 ? "1" : score, score, system === "lora-model" ? "yes" : "no", score, "ok", rater]
        }))
      writeFileSync(join(dir, "r1.csv"), fill("ann", false))
      writeFileSync(join(dir, "r2.csv"), fill("bob", true))
      const report = yield* rubric.importSheets({ sheets: [join(dir, "r1.csv"), join(dir, "r2.csv")], key: join(out, "rubric-key.json") })
      assert.deepStrictEqual(report.raters, ["ann", "bob"])
      const lora = report.systems.find((s) => s.system === "lora-model")!
      const base = report.systems.find((s) => s.system === "base-model")!
      assert.strictEqual(lora.correctness.estimate, 5)
      assert.strictEqual(base.correctness.estimate, 3)
      assert.strictEqual(lora.risk_flag.estimate, 1)
      assert.strictEqual(base.risk_flag.estimate, 0)
      assert.strictEqual(lora.ratings + base.ratings, 16)
      assert.strictEqual(report.agreement!.correctness, 1)
      assert.isBelow(report.agreement!.clarity, 1)
      assert.include(rubricMarkdown(report), "| lora-model | 8 |")

      // a JSONL sheet (the rater column names the rater) imports the same way
      const jsonlRows = readFileSync(join(out, "rubric.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
      writeFileSync(join(dir, "cy.jsonl"), jsonlRows.map((r) => JSON.stringify({
        ...r, clarity: 4, correctness: 4, number_accuracy: 4, risk_flag: "yes", rater: "cy"
      })).join("\n") + "\n")
      const three = yield* rubric.importSheets({ sheets: [join(dir, "r1.csv"), join(dir, "r2.csv"), join(dir, "cy.jsonl")], key: join(out, "rubric-key.json") })
      assert.deepStrictEqual(three.raters, ["ann", "bob", "cy"])
      assert.strictEqual(three.systems.find((s) => s.system === "lora-model")!.correctness.estimate, 14 / 3)
    }).pipe(Effect.provide(TestLayer)))

  it.effect("rejects bad sheets naming file, row and column", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(join(tmpdir(), "rubric-bad-"))
      makeRun(join(dir, "base"), "base-model", (q) => q)
      const rubric = yield* Rubric
      yield* rubric.exportSheet({ runs: [join(dir, "base")], outDir: join(dir, "s"), items: 3 })
      const rows = Result.getOrThrow(parseCsv(readFileSync(join(dir, "s", "rubric.csv"), "utf8")))
      const [header, ...body] = rows
      const bad = join(dir, "bad.csv")
      writeFileSync(bad, toCsv(header!, [
        [...body[0]!.slice(0, 6), "4", "4", "yes", "4", "", ""],
        [...body[1]!.slice(0, 6), "7", "4", "maybe", "", "", ""],
        ["nope", ...body[2]!.slice(1, 6), "4", "4", "no", "4", "", ""]
      ]))
      const err = yield* rubric.importSheets({ sheets: [bad], key: join(dir, "s", "rubric-key.json") }).pipe(Effect.flip)
      assert.include(err.message, `${bad}: row 3: column clarity: expected an integer from 1 to 5, got "7"`)
      assert.include(err.message, `${bad}: row 3: column risk_flag: expected yes or no, got "maybe"`)
      assert.include(err.message, `${bad}: row 3: column number_accuracy: missing`)
      assert.include(err.message, `${bad}: row 4: column row_id: unknown id "nope"`)

      const noCol = join(dir, "nocol.csv")
      writeFileSync(noCol, "row_id,clarity\nx,1\n")
      const err2 = yield* rubric.importSheets({ sheets: [noCol], key: join(dir, "s", "rubric-key.json") }).pipe(Effect.flip)
      assert.include(err2.message, "row 1 (header): missing columns correctness, number_accuracy, risk_flag")
    }).pipe(Effect.provide(TestLayer)))
})
