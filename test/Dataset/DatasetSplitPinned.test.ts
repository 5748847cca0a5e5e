/**
 * The split pinned to what it was before the one-pass ticker scan (Tickers.scanTickers): the expected values in
 * test/fixtures/split-pinned/expected.json were produced by running that folder's generate.ts on the code of
 * commit 9aec708, where the content rules' ticker search and the split's masking were two separate scans. The
 * ingest of input.jsonl (three seeds and ratios, grouped by template and by ticker) must give the same files,
 * the same per-line split keys and group ids, and the scans the same results on 700 fuzzed texts.
 */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Buffer } from "node:buffer"
import { createHash } from "node:crypto"
import { mkdtempSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { analyzeBatch, META } from "../../src/Dataset/Analyze.ts"
import { DatasetPipeline } from "../../src/Dataset/DatasetPipeline.ts"
import { batchInput, fullDecoder } from "../../src/Dataset/Ingest.ts"
import { LineSplitter, type RawLine } from "../../src/Dataset/LineSplitter.ts"
import { defaultRuleConfig } from "../../src/Dataset/Rules.ts"
import { canonicalText, groupKeys, splitBasis, templateText } from "../../src/Dataset/Split.ts"
import { findTickersInText, findTickersInTexts, MaskedSpans, maskTickers, scanTickers } from "../../src/Dataset/Tickers.ts"

const fixture = new URL("../fixtures/split-pinned/", import.meta.url).pathname
const input = join(fixture, "input.jsonl")
interface Case {
  readonly question: string
  readonly text: string
  readonly tickers: Array<string>
  readonly found: Array<string>
  readonly foundInBoth: Array<string>
  readonly masked: string
  readonly split: string
  readonly group: string
}
interface Expected {
  readonly perLine: ReadonlyArray<string>
  readonly ingest: ReadonlyArray<{
    readonly config: { readonly seed: number; readonly testRatio: number; readonly groupByTicker?: boolean }
    readonly summary: Record<string, unknown>
    readonly train: string
    readonly test: string
    readonly rejects: string
  }>
  readonly cases: ReadonlyArray<Case>
}
const expected = JSON.parse(readFileSync(join(fixture, "expected.json"), "utf8")) as Expected
const hex = (x: number) => (x >>> 0).toString(16).padStart(8, "0")
const sha = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex")

describe("the split, pinned to the two-scan implementation (commit 9aec708)", () => {
  it.effect("the ingest writes the same train, test and rejects files and summary for three configurations", () =>
    Effect.gen(function*() {
      assert.strictEqual(expected.ingest.length, 3)
      for (const want of expected.ingest) {
        const dir = mkdtempSync(join(tmpdir(), "split-pinned-"))
        const summary = yield* DatasetPipeline.use((p) => p.run({ input, outDir: dir, workers: 0, ...want.config }))
        // the paths of the input and the outputs differ between runs; everything else is pinned
        const { input: _input, outputs: _outputs, ...rest } = summary as unknown as Record<string, unknown>
        assert.deepStrictEqual(JSON.parse(JSON.stringify(rest)), want.summary, JSON.stringify(want.config))
        assert.deepStrictEqual([sha(join(dir, "train.jsonl")), sha(join(dir, "test.jsonl")), sha(join(dir, "rejects.jsonl"))], [want.train, want.test, want.rejects])
      }
    }).pipe(Effect.provide(DatasetPipeline.layer.pipe(Layer.provide(NodeServices.layer)))))

  it("every line keeps its status, split key hash and group id", () => {
    const raw: Array<RawLine> = []
    const splitter = new LineSplitter()
    splitter.push(Buffer.from(readFileSync(input)), raw)
    splitter.end(raw)
    const a = analyzeBatch(batchInput(raw), { seed: 42, groupByTicker: false, rules: defaultRuleConfig, keepExtra: false }, fullDecoder)
    const got = raw.map((_, i) => `${a.meta[i * META]} ${hex(a.meta[i * META + 3]!)} ${hex(a.meta[i * META + 7]!)}`)
    assert.strictEqual(got.length, 306)
    assert.deepStrictEqual(got, expected.perLine)
  })

  it("scanTickers finds and masks what the two scans did, and groupKeys hashes the same template, on 700 fuzzed texts", () => {
    const basis = splitBasis(42)
    const spans = new MaskedSpans()
    assert.strictEqual(expected.cases.length, 700)
    for (const c of expected.cases) {
      const context = JSON.stringify(c.text)
      // one scan, both results
      assert.deepStrictEqual(scanTickers(c.text, c.tickers, spans), c.found, context)
      let masked = ""
      let last = 0
      for (let k = 0; k < spans.count; k++) {
        masked += c.text.slice(last, spans.at[2 * k]) + "<TICKER>"
        last = spans.at[2 * k + 1]!
      }
      assert.strictEqual(masked + c.text.slice(last), c.masked, context)
      const fromScan = groupKeys({ answer: c.text, tickers: c.tickers }, basis, false, spans)
      assert.deepStrictEqual([hex(fromScan.split), hex(fromScan.group)], [c.split, c.group], context)
      // the entry points that scan for one result alone
      assert.deepStrictEqual(findTickersInText(c.text), c.found, context)
      assert.deepStrictEqual(findTickersInTexts(c.question, c.text), c.foundInBoth, context)
      assert.deepStrictEqual(findTickersInTexts(c.question, c.text, c.found), c.foundInBoth, context)
      assert.strictEqual(maskTickers(c.text, c.tickers), c.masked, context)
      assert.strictEqual(templateText(c.text, c.tickers), canonicalText(c.masked), context)
      const alone = groupKeys({ answer: c.text, tickers: c.tickers }, basis)
      assert.deepStrictEqual([hex(alone.split), hex(alone.group)], [c.split, c.group], context)
    }
    // the fixture holds the cases the cursors part on: an alias the mask reads as a symbol and a word, a
    // symbol inside a placeholder, a cashtag
    assert.isTrue(expected.cases.some((c) => c.masked.includes("<TICKER> Rail") && c.found.includes("CNR")))
    assert.isTrue(expected.cases.some((c) => c.text.includes("<AAPL>") && c.found.includes("AAPL")))
    assert.isTrue(expected.cases.some((c) => c.text.includes("$AAPL") && c.masked.includes("<TICKER>")))
  })
})
