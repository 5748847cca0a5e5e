import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer } from "effect"
import fc from "fast-check"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { analyzeBatch, DEFERRED, META, seedOnlyDecoder, SKIPPED } from "../../src/Dataset/Analyze.ts"
import { DatasetPipeline, type PipelineOptions } from "../../src/Dataset/DatasetPipeline.ts"
import { batchInput, batchInputView, fullDecoder } from "../../src/Dataset/Ingest.ts"
import { IngestWorkers, prestartIngestWorkers } from "../../src/Dataset/IngestWorkers.ts"
import { SeedInput } from "../../src/Dataset/Input.ts"
import { defaultRuleConfig } from "../../src/Dataset/Rules.ts"
import { seedKeys } from "../../src/Dataset/SeedRecord.ts"
import { DedupeTable } from "../../src/Dataset/Split.ts"
import { BufferPool } from "../../src/Dataset/BufferPool.ts"
import { findTickersInText, findTickersInTexts } from "../../src/Dataset/Tickers.ts"

const TestLayer = DatasetPipeline.layer.pipe(Layer.provide(NodeServices.layer))
const line = (o: unknown) => JSON.stringify(o)

const seedRecord = (i: number) => ({
  question: `What is ${["AAPL", "MSFT", "NVDA"][i % 3]} trading at (question ${i})?`,
  answer: `It is trading at $${100 + (i % 50)}.25, up 1.${i % 10}% today as of 10:30 ET.`,
  rationale: "Price questions need the live quote.",
  tickers: [["AAPL", "MSFT", "NVDA"][i % 3]],
  citations: [{ source: "market_data_api", timestamp: "2026-11-25T10:30:00Z" }],
  context_required: true
})

/** every kind of line the ingest tells apart, repeated so it spans many read batches */
const mixedInput = (): string => {
  const out: Array<string> = []
  for (let i = 0; i < 2500; i++) {
    const r = seedRecord(i)
    out.push(line(r))
    if (i % 7 === 0) out.push(line(r)) // exact copy
    if (i % 11 === 0) {
      const near = { ...r, answer: r.answer.replace("It is", "it is ") }
      out.push(line(near)) // near-copy
      out.push(line(near)) // exact copy of the near-copy: still exact
    }
    if (i % 13 === 0) out.push("")
    if (i % 17 === 0) out.push(`{"question": "truncated ${i}`)
    if (i % 19 === 0) out.push(line({ ...r, tickers: "AAPL" }))
    if (i % 23 === 0) out.push(line({ ...r, context_required: false })) // rule reject
    if (i % 29 === 0) out.push(line({ ...r, question: `${r.question} Also TSLA?`, source_id: i })) // warning + extra field
    if (i % 31 === 0) out.push(line({ messages: [{ role: "user", content: `Chat question ${i}?` }, { role: "assistant", content: "An answer without live data." }], category: "education" }))
    if (i % 37 === 0) out.push(line({ prompt: `Pair question ${i}?`, completion: "A completion." }))
    if (i % 41 === 0) out.push(line({ messages: "not an array" }))
  }
  return out.join("\r\n") + "\r\n" + line(seedRecord(99999))
}

const runWith = (input: string, options: Omit<PipelineOptions, "input" | "outDir">) =>
  Effect.gen(function*() {
    const outDir = mkdtempSync(join(tmpdir(), "dataset-parallel-"))
    const summary = yield* DatasetPipeline.use((p) => p.run({ input, outDir, ...options }))
    const files = Object.fromEntries(["train.jsonl", "test.jsonl", "rejects.jsonl", "summary.json"].map((f) => [f, readFileSync(join(outDir, f))]))
    return { summary, files }
  }).pipe(Effect.provide(TestLayer))

describe("ingest on worker threads", () => {
  it.effect("writes byte-identical outputs with 0, 1 and 2 workers", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(join(tmpdir(), "dataset-parallel-in-"))
      const input = join(dir, "in.jsonl")
      writeFileSync(input, Buffer.concat([Buffer.from(mixedInput()), Buffer.from("\n{\"question\":\"bad \xff\"}\n", "latin1")]))
      const rules = { ...defaultRuleConfig, tickers_in_text: "warn" as const }
      const single = yield* runWith(input, { workers: 0, rules })
      const s = single.summary
      // the input really holds every case
      assert.isAbove(s.duplicates.exact, 400)
      assert.isAbove(s.duplicates.normalized, 200)
      assert.isAbove(s.blankLines, 100)
      assert.deepStrictEqual(Object.keys(s.rejectReasons).sort(), ["invalid_json", "invalid_utf8", "live_values_need_context", "schema"])
      assert.isAbove(s.warnings.tickers_in_text ?? 0, 50)
      assert.deepStrictEqual(Object.keys(s.formats).sort(), ["chat", "pair", "seed"])
      assert.isAbove(s.extraFields.source_id ?? 0, 50)
      assert.isAbove(s.placeholdersReplaced, 5000)
      assert.strictEqual(s.train + s.test + s.duplicates.exact + s.duplicates.normalized + s.rejected, s.records)
      assert.strictEqual(s.records + s.blankLines, s.linesRead)
      for (const workers of [1, 2]) {
        const parallel = yield* runWith(input, { workers, workersAfterLines: 0, rules })
        assert.deepStrictEqual({ ...parallel.summary, outputs: undefined }, { ...single.summary, outputs: undefined })
        for (const f of Object.keys(single.files)) {
          const a = single.files[f]!.toString("utf8").replaceAll(/dataset-parallel-[^/"]*/g, "")
          const b = parallel.files[f]!.toString("utf8").replaceAll(/dataset-parallel-[^/"]*/g, "")
          assert.isTrue(a === b, `${f} differs with ${workers} workers`)
        }
      }
    }))

  it.effect("--strict stops at the same line with workers", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(join(tmpdir(), "dataset-parallel-in-"))
      const input = join(dir, "in.jsonl")
      const lines = Array.from({ length: 30_000 }, (_, i) => line(seedRecord(i)))
      lines[21_000] = "{not json"
      writeFileSync(input, lines.join("\n"))
      const exit = yield* Effect.exit(runWith(input, { workers: 1, workersAfterLines: 0, strict: true }))
      assert.isTrue(Exit.isFailure(exit))
      assert.include(String(Exit.isFailure(exit) ? exit.cause : ""), `${input}:21001: <root>`)
    }))

  it("a worker analyzes a batch exactly as the main thread does, and defers what it cannot decode alone", async () => {
    const texts = [line(seedRecord(1)), " \t", line({ messages: [{ role: "user", content: "Q?" }, { role: "assistant", content: "A." }] }), line(seedRecord(2)), line({ question: 3 })]
    const config = { seed: 42, groupByTicker: false, rules: defaultRuleConfig, keepExtra: false }
    const pool = new IngestWorkers(1, config)
    try {
      // a worker still starting takes no batch: the caller analyzes it on its own thread
      assert.strictEqual(pool.analyze(batchInput([{ lineNo: 1, text: texts[0]!, byteLength: Buffer.byteLength(texts[0]!) }])), undefined)
      await pool.whenReady()
      const input = () => batchInput(texts.map((text, i) => ({ lineNo: i + 1, text, byteLength: Buffer.byteLength(text) })))
      const here = analyzeBatch(input(), config, seedOnlyDecoder)
      const sent = input()
      const inputBytes = sent.bytes.byteLength
      const sentText = Buffer.from(sent.bytes).toString()
      const sentEnds = [...sent.ends]
      const { analysis: fromWorker, spent } = (await pool.analyze(sent))!
      // the input's one buffer (bytes, line ends, skip marks) comes back for the commit and the next batch
      assert.strictEqual(spent.length, 1)
      assert.strictEqual(sent.bytes.byteLength, 0) // moved, not copied
      const back = batchInputView(spent[0]!, texts.length, inputBytes)
      assert.strictEqual(Buffer.from(back.bytes).toString(), sentText)
      assert.deepStrictEqual([...back.ends], sentEnds)
      assert.deepStrictEqual([...fromWorker.meta], [...here.meta])
      assert.deepStrictEqual(Buffer.from(fromWorker.bytes).toString(), Buffer.from(here.bytes).toString())
      assert.deepStrictEqual(fromWorker.notes, here.notes)
      assert.strictEqual(fromWorker.meta[2 * META], DEFERRED)
      assert.strictEqual(fromWorker.meta[4 * META], DEFERRED)
      // the main thread's decoder handles both, the bad one with the Schema's message
      const full = analyzeBatch(input(), config, fullDecoder)
      assert.strictEqual(full.meta[1 * META], SKIPPED)
      assert.strictEqual(full.notes.find((n) => n.i === 4)?.reject?.field, "question")
      assert.strictEqual(full.notes.find((n) => n.i === 2)?.format, "chat")
      // the seed records' analysis is the same by either decoder
      assert.deepStrictEqual([...full.meta.subarray(0, META)], [...here.meta.subarray(0, META)])
      // a spare output buffer large enough holds the records (the same bytes); a small one comes back unused
      const spare = new ArrayBuffer(1 << 16)
      const withSpare = (await pool.analyze(input(), spare))!
      assert.strictEqual(withSpare.analysis.bytes.buffer.byteLength, 1 << 16)
      assert.strictEqual(Buffer.from(withSpare.analysis.bytes).toString(), Buffer.from(here.bytes).toString())
      assert.strictEqual(withSpare.spent.length, 1)
      const small = (await pool.analyze(input(), new ArrayBuffer(16)))!
      assert.deepStrictEqual(small.spent.map((b) => b.byteLength), [spent[0]!.byteLength, 16])
      assert.strictEqual(Buffer.from(small.analysis.bytes).toString(), Buffer.from(here.bytes).toString())
      // on this thread too: a reused buffer gives the same analysis, and batchInput refills a spent input buffer
      const reused = analyzeBatch(batchInput(texts.map((text, i) => ({ lineNo: i + 1, text, byteLength: Buffer.byteLength(text) })), spent[0]), config, seedOnlyDecoder, new ArrayBuffer(1 << 16))
      assert.strictEqual(reused.bytes.buffer.byteLength, 1 << 16)
      assert.deepStrictEqual([...reused.meta], [...here.meta])
      assert.strictEqual(Buffer.from(reused.bytes).toString(), Buffer.from(here.bytes).toString())
    } finally {
      await pool.close()
    }
  })

  it("a pool adopts workers started before it (prestartIngestWorkers) and hands them its configuration", async () => {
    const registry = () => (globalThis as Record<symbol, unknown>)[Symbol.for("finetune-finance/ingest-workers/prestarted")] as Array<unknown>
    prestartIngestWorkers(1)
    assert.strictEqual(registry().length, 1)
    const config = { seed: 7, groupByTicker: false, rules: defaultRuleConfig, keepExtra: false }
    const pool = new IngestWorkers(1, config)
    try {
      assert.strictEqual(registry().length, 0)
      await pool.whenReady()
      const text = line(seedRecord(3))
      const input = () => batchInput([{ lineNo: 1, text, byteLength: Buffer.byteLength(text) }])
      const { analysis } = (await pool.analyze(input()))!
      // the worker analyzed with this pool's seed: the same split hash as this thread with that seed
      assert.deepStrictEqual([...analysis.meta], [...analyzeBatch(input(), config, seedOnlyDecoder).meta])
      assert.notDeepEqual([...analysis.meta], [...analyzeBatch(input(), { ...config, seed: 8 }, seedOnlyDecoder).meta])
    } finally {
      await pool.close()
    }
  })

  it("a prestarted worker that died before its pool is replaced by a fresh one", async () => {
    prestartIngestWorkers(1)
    const registry = (globalThis as Record<symbol, unknown>)[Symbol.for("finetune-finance/ingest-workers/prestarted")] as Array<{ worker: { terminate: () => Promise<number> }; dead: boolean }>
    await registry[0]!.worker.terminate()
    assert.isTrue(registry[0]!.dead)
    const config = { seed: 7, groupByTicker: false, rules: defaultRuleConfig, keepExtra: false }
    const pool = new IngestWorkers(1, config)
    try {
      assert.strictEqual(registry.length, 0)
      await pool.whenReady()
      const text = line(seedRecord(3))
      const result = await pool.analyze(batchInput([{ lineNo: 1, text, byteLength: Buffer.byteLength(text) }]))
      assert.isDefined(result)
      assert.deepStrictEqual([...result!.analysis.meta].slice(0, 1), [0])
    } finally {
      await pool.close()
    }
  })

  it("BufferPool keeps spent buffers, largest handed out first, bounded, never a detached or empty one", () => {
    const pool = new BufferPool(2)
    pool.give("input", new ArrayBuffer(10))
    pool.give("input", new ArrayBuffer(30))
    pool.give("input", new ArrayBuffer(20)) // over the bound: dropped
    pool.give("output", new ArrayBuffer(0))
    const moved = new ArrayBuffer(8)
    structuredClone(moved, { transfer: [moved] })
    pool.give("output", moved)
    assert.deepStrictEqual(pool.sizes, { input: 2, output: 0, chunk: 0 })
    assert.strictEqual(pool.take("input")?.byteLength, 30)
    assert.strictEqual(pool.take("input")?.byteLength, 10)
    assert.strictEqual(pool.take("input"), undefined)
    assert.strictEqual(pool.take("output"), undefined)
  })
})

describe("DedupeTable", () => {
  it("tells exact copies from near-copies, also for copies of a near-copy, across growth", () => {
    const t = new DedupeTable(16)
    assert.strictEqual(t.add(1, 2, 10, 20), "new")
    assert.strictEqual(t.add(1, 2, 10, 20), "exact")
    assert.strictEqual(t.add(1, 2, 11, 21), "normalized")
    assert.strictEqual(t.add(1, 2, 11, 21), "exact")
    assert.strictEqual(t.add(3, 2, 10, 20), "new")
    // 100k distinct keys: all new, then all exact, with the early ones still found after many doublings
    for (let i = 0; i < 100_000; i++) assert.strictEqual(t.add((i * 2654435761) | 1, i, i, i + 7), "new")
    for (let i = 0; i < 100_000; i += 997) assert.strictEqual(t.add((i * 2654435761) | 1, i, i, i + 7), "exact")
    assert.strictEqual(t.add(1, 2, 11, 21), "exact")
    assert.strictEqual(t.add(1, 2, 12, 22), "normalized")
  })

  it("holds 900k records in 2^20 slots of 12 bytes (grows at 7/8 load, not 3/4)", () => {
    const t = new DedupeTable()
    for (let i = 0; i < 900_000; i++) t.add((Math.imul(i, 2654435761) >>> 0) | 1, Math.imul(i, 40503) >>> 0, i, i)
    assert.strictEqual(t.byteSize, (1 << 20) * 12)
    assert.strictEqual(t.add((Math.imul(123_456, 2654435761) >>> 0) | 1, Math.imul(123_456, 40503) >>> 0, 123_456, 123_456), "exact")
    t.add(7, 7, 7, 7) // 900,001 of 917,504: still no growth
    assert.strictEqual(t.byteSize, (1 << 20) * 12)
    // sized for what it should hold: at once, not by growing
    assert.strictEqual(new DedupeTable(900_000).byteSize, (1 << 20) * 12)
    assert.strictEqual(new DedupeTable(917_505).byteSize, (1 << 21) * 12)
    assert.strictEqual(new DedupeTable(10).byteSize, (1 << 15) * 12)
  })

  it("the worker's seed keys are the Schema's", () => {
    assert.deepStrictEqual([...seedKeys].sort(), Object.keys(SeedInput.fields).sort())
  })
})

describe("findTickersInTexts", () => {
  it("finds what findTickersInText finds in the two texts joined by a newline", () => {
    const bits = ["NYSE:", "NYSE: ", "NASDAQ:", "F", "$F", "(F)", "(", ")", "AAPL", "Apple", "apple", " ", "\n", "S&P", "&", ".", "-", "T", "AT&T", "Home", "Depot", "Home Depot", "x", "MSFT", "Coca-Cola", "BRK.B", "IT"]
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...bits), { maxLength: 6 }), fc.array(fc.constantFrom(...bits), { maxLength: 6 }), (a, b) => {
        const first = a.join("")
        const second = b.join("")
        assert.deepStrictEqual(findTickersInTexts(first, second), findTickersInText(`${first}\n${second}`))
      }),
      { numRuns: 5000 }
    )
    assert.deepStrictEqual(findTickersInTexts("Listed as NYSE:", "F and AAPL"), ["F", "AAPL"])
    assert.deepStrictEqual(findTickersInTexts("Apple or MSFT?", "MSFT, then $TSLA"), ["AAPL", "MSFT", "TSLA"])
  })
})
