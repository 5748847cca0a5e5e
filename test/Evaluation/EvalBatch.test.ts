/**
 * Batch evaluation end to end against real loopback HTTP servers (the app's /infer contract and an
 * OpenAI-compatible /v1/chat/completions), with real files in a temp folder.
 */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, FileSystem, Layer } from "effect"
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { sentenceBleu } from "../../src/Metrics/Bleu.ts"
import { Evaluator } from "../../src/Evaluation/Evaluator.ts"
import { Generator } from "../../src/Evaluation/Generator.ts"
import { rougeScores } from "../../src/Metrics/Rouge.ts"
import { answerFor, records, startServer } from "../fixtures/eval/fakeModelServer.ts"

const TestLayer = Evaluator.layer.pipe(Layer.provideMerge(NodeServices.layer))

const setup = () => {
  const dir = mkdtempSync(join(tmpdir(), "eval-batch-"))
  const split = join(dir, "test.jsonl")
  writeFileSync(split, records.map((r) => JSON.stringify(r)).join("\n") + "\n")
  return { dir, split }
}

const lines = (file: string) => readFileSync(file, "utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l))
const withoutLatency = (rows: Array<any>) => rows.map(({ latencyMs: _l, ...rest }) => rest)

const generatorFrom = (layer: Layer.Layer<Generator>) =>
  Effect.provide(
    Effect.gen(function*() {
      return yield* Generator
    }),
    layer
  )

describe("eval run", () => {
  it.live("scores /infer answers and writes samples, aggregate, HTML report and summary", () =>
    Effect.gen(function*() {
      const server = yield* Effect.promise(startServer)
      const { dir, split } = setup()
      const generator = yield* generatorFrom(Generator.layerHttp({ url: server.url, api: "infer" }))
      const out = join(dir, "run-infer")
      // the trainer's metrics.jsonl: train lines with loss, eval lines with evalLoss
      const trainingLog = join(dir, "metrics.jsonl")
      writeFileSync(trainingLog, [
        { type: "train", step: 10, loss: 2.5 },
        { type: "eval", step: 10, evalLoss: 2.7, rougeL: 0.1 },
        { type: "train", step: 20, loss: 1.9 }
      ].map((l) => JSON.stringify(l)).join("\n") + "\n")
      const result = yield* Evaluator.use((e) => e.run({ generator, split, outDir: out, system: "fake", concurrency: 3, seed: 7, trainingLog }))
      yield* Effect.promise(server.close)

      assert.strictEqual(server.requests.length, 6)
      assert.isTrue(server.requests.every((r) => r.path === "/infer" && r.body.seed === 7 && r.body.temperature === 0))
      const samples = lines(join(out, "samples.jsonl"))
      assert.deepStrictEqual(samples.map((s) => s.index), [0, 1, 2, 3, 4, 5])
      // textual metrics use the raw (placeholder) answer; factuality the filled one
      assert.strictEqual(samples[0].predictionForText, records[0]!.answer)
      assert.strictEqual(samples[0].metrics.rougeL, 1)
      assert.strictEqual(samples[0].metrics.factuality, 1)
      assert.deepStrictEqual(samples[5].metrics.signFlips, ["0.45%"])
      assert.deepStrictEqual(samples[5].metrics.hallucinatedValues, ["$191.00"])
      assert.isTrue(samples[1].metrics.needsDisclaimer)
      assert.isFalse(samples[1].metrics.hasDisclaimer)
      assert.approximately(samples[1].metrics.bleu, sentenceBleu("Yes, buy it at <PRICE>.", [records[1]!.answer]).score, 1e-12)

      const agg = JSON.parse(readFileSync(join(out, "aggregate.json"), "utf8"))
      assert.deepStrictEqual(agg, JSON.parse(JSON.stringify(result.aggregate)))
      assert.strictEqual(agg.scored, 6)
      assert.strictEqual(agg.failed, 0)
      const meanRougeL = records.map((r) => rougeScores(answerFor(r.question).raw, r.answer).rougeL.fmeasure).reduce((a, b) => a + b) / 6
      assert.approximately(agg.metrics.rougeL, meanRougeL, 1e-12)
      assert.strictEqual(agg.metrics.risk_flag_rate, 0)
      assert.strictEqual(agg.counts.signFlips, 1)

      const html = readFileSync(join(out, "report.html"), "utf8")
      // metric bars, distributions, loss curve
      assert.strictEqual(html.split("<svg").length - 1, 3)
      assert.include(html, "Training loss")
      // the sign-flip sample leads the table of samples to look at first
      const worst = html.slice(html.indexOf("samples to look at first"))
      assert.include(worst, "sign flip 0.45%")
      assert.isBelow(worst.indexOf("How did AAPL do today?"), worst.indexOf("What is a P/E ratio?"))
      assert.include(html, "ROUGE-L F")
      const md = readFileSync(join(out, "summary.md"), "utf8")
      assert.include(md, "| ROUGE-L F | " + agg.metrics.rougeL.toFixed(4) + " ± " + agg.stderr.rougeL.toFixed(4))
      const perSample = samples.map((x: any) => x.metrics.rougeL as number)
      const sd = Math.sqrt(perSample.reduce((a: number, x: number) => a + (x - agg.metrics.rougeL) ** 2, 0) / 5)
      assert.approximately(agg.stderr.rougeL, sd / Math.sqrt(6), 1e-12)
      const run = JSON.parse(readFileSync(join(out, "run.json"), "utf8"))
      assert.strictEqual(run.seed, 7)
      assert.match(run.splitSha256, /^[0-9a-f]{64}$/)
    }).pipe(Effect.provide(TestLayer)))

  it.live("talks to OpenAI-compatible chat endpoints; same seed and limit give the same results", () =>
    Effect.gen(function*() {
      const server = yield* Effect.promise(startServer)
      const { dir, split } = setup()
      const generator = yield* generatorFrom(Generator.layerHttp({ url: server.url + "/", api: "openai", model: "finance-lora" }))
      const a = yield* Evaluator.use((e) => e.run({ generator, split, outDir: join(dir, "a"), limit: 4, seed: 3, concurrency: 4 }))
      const b = yield* Evaluator.use((e) => e.run({ generator, split, outDir: join(dir, "b"), limit: 4, seed: 3, concurrency: 1 }))
      yield* Evaluator.use((e) => e.run({ generator, split, outDir: join(dir, "c"), limit: 4, seed: 4 }))
      yield* Effect.promise(server.close)

      assert.strictEqual(server.requests[0]!.path, "/v1/chat/completions")
      assert.strictEqual(server.requests[0]!.body.model, "finance-lora")
      assert.strictEqual(server.requests[0]!.body.messages[0].role, "system")
      assert.deepStrictEqual(withoutLatency(lines(join(dir, "a", "samples.jsonl"))), withoutLatency(lines(join(dir, "b", "samples.jsonl"))))
      assert.deepStrictEqual(a.aggregate.metrics, b.aggregate.metrics)
      assert.strictEqual(a.aggregate.scored, 4)
      const idsA = lines(join(dir, "a", "samples.jsonl")).map((s) => s.id)
      const idsC = lines(join(dir, "c", "samples.jsonl")).map((s) => s.id)
      assert.notDeepEqual(idsA, idsC)
      // without raw_answer, live values are normalized back to placeholders for the textual metrics
      const first = lines(join(dir, "a", "samples.jsonl")).find((s) => s.question === "What is AAPL trading at?")
      if (first) assert.strictEqual(first.predictionForText, "AAPL is trading at <PRICE>, up <CHANGE> today.")
    }).pipe(Effect.provide(TestLayer)))

  it.live("records failed generations, keeps completed ones when interrupted, and --resume skips them", () =>
    Effect.gen(function*() {
      const server = yield* Effect.promise(startServer)
      // 500 three times: the first request and both retries fail, so the sample is recorded as failed
      server.failFirst = new Map([["What is a P/E ratio?", 3], ["Is diversification useful?", 1]])
      const { dir, split } = setup()
      const out = join(dir, "run")
      const generator = yield* generatorFrom(Generator.layerHttp({ url: server.url, api: "infer" }))
      const first = yield* Evaluator.use((e) => e.run({ generator, split, outDir: out }))
      assert.strictEqual(first.aggregate.failed, 1)
      assert.strictEqual(first.aggregate.scored, 5)
      // one 500 was absorbed by a retry
      assert.strictEqual(server.requests.filter((r) => r.body.question === "Is diversification useful?").length, 2)
      const failedLine = lines(join(out, "generations.jsonl")).find((l) => l.error !== undefined)
      assert.include(failedLine.error, "500")

      // a second run into the same folder without --resume is refused
      const refused = yield* Evaluator.use((e) => e.run({ generator, split, outDir: out })).pipe(Effect.flip)
      assert.include(refused.message, "pass --resume")

      server.requests.length = 0
      const resumed = yield* Evaluator.use((e) => e.run({ generator, split, outDir: out, resume: true }))
      assert.deepStrictEqual(server.requests.map((r) => r.body.question), ["What is a P/E ratio?"])
      assert.strictEqual(resumed.aggregate.scored, 6)
      assert.strictEqual(resumed.aggregate.failed, 0)
      yield* Effect.promise(server.close)

      // interruption: one generation never finishes; the others are on disk
      const out2 = join(dir, "interrupted")
      let calls = 0
      const hanging = Generator.layerFunction("hang", (req) => {
        calls++
        return req.question === "Is diversification useful?" ? new Promise<string>(() => {}) : Promise.resolve(answerFor(req.question).answer)
      })
      const hangGen = yield* generatorFrom(hanging)
      const fiber = yield* Evaluator.use((e) => e.run({ generator: hangGen, split, outDir: out2, concurrency: 2 })).pipe(Effect.forkChild)
      const fs = yield* FileSystem.FileSystem
      const genFile = join(out2, "generations.jsonl")
      yield* Effect.gen(function*() {
        while (!existsSync(genFile) || lines(genFile).length < 5) yield* Effect.sleep("10 millis")
      }).pipe(Effect.timeout("10 seconds"))
      yield* Fiber.interrupt(fiber)
      assert.strictEqual(lines(genFile).length, 5)
      assert.isFalse(yield* fs.exists(join(out2, "aggregate.json")))

      calls = 0
      const okGen = yield* generatorFrom(Generator.layerFunction("ok", (req) => Promise.resolve(answerFor(req.question).answer)))
      const done = yield* Evaluator.use((e) => e.run({ generator: okGen, split, outDir: out2, resume: true }))
      assert.strictEqual(calls, 0)
      assert.strictEqual(done.aggregate.scored, 6)
    }).pipe(Effect.provide(TestLayer)))

  it.live("names file, line and field for a bad split, and compares two runs", () =>
    Effect.gen(function*() {
      const { dir, split } = setup()
      const bad = join(dir, "bad.jsonl")
      writeFileSync(bad, JSON.stringify(records[0]) + "\n" + JSON.stringify({ ...records[1], question: "" }) + "\n")
      const generator = yield* generatorFrom(Generator.layerFunction("echo", (req) => Promise.resolve(req.question)))
      const err = yield* Evaluator.use((e) => e.run({ generator, split: bad, outDir: join(dir, "x") })).pipe(Effect.flip)
      assert.include(err.message, `${bad}: line 2: question:`)

      const good = yield* generatorFrom(Generator.layerFunction("reference", (req) => Promise.resolve(records.find((r) => r.question === req.question)!.answer)))
      yield* Evaluator.use((e) => e.run({ generator, split, outDir: join(dir, "echo"), system: "echo" }))
      yield* Evaluator.use((e) => e.run({ generator: good, split, outDir: join(dir, "ref"), system: "reference" }))
      const cmp = yield* Evaluator.use((e) => e.compare(join(dir, "echo"), join(dir, "ref"), join(dir, "cmp")))
      const rougeL = cmp.deltas.find((d) => d.metric === "rougeL")!
      assert.strictEqual(rougeL.b, 1)
      assert.isTrue(rougeL.improved)
      assert.approximately(rougeL.delta, 1 - rougeL.a, 1e-12)
      assert.include(cmp.markdown, "| rougeL |")
      const html = readFileSync(join(dir, "cmp", "compare.html"), "utf8")
      assert.include(html, "echo")
      assert.include(html, "reference")
    }).pipe(Effect.provide(TestLayer)))
})
