/** `eval score` through the built CLI (dist/Main.js): a predictions JSONL against a split's references. */
import { spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { assert, describe, it } from "vitest"
import { corpusBleu } from "../../src/Metrics/Bleu.ts"
import { rougeScores } from "../../src/Metrics/Rouge.ts"
import { records } from "../fixtures/eval/fakeModelServer.ts"

const main = resolve(import.meta.dirname, "../../dist/Main.js")
const cli = (args: ReadonlyArray<string>) => {
  const r = spawnSync(process.execPath, [main, ...args], { encoding: "utf8", timeout: 60_000 })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

const setup = () => {
  const dir = mkdtempSync(join(tmpdir(), "eval-score-"))
  const split = join(dir, "test.jsonl")
  writeFileSync(split, records.map((r) => JSON.stringify(r)).join("\n") + "\n")
  const write = (name: string, lines: ReadonlyArray<unknown>) => {
    const file = join(dir, name)
    writeFileSync(file, lines.map((l) => JSON.stringify(l)).join("\n") + "\n")
    return file
  }
  return { dir, split, write }
}

// two wrong answers (the others are the references themselves)
const predictionsOf = () => records.map((r, i) => ({ prediction: i === 3 ? "A ratio of price and earnings." : i === 4 ? "" : r.answer }))

describe("eval score", () => {
  it("scores predictions in split order: every metric as JSON, equal to BLEU/ROUGE over the same pairs", () => {
    const { dir, split, write } = setup()
    const predictions = write("preds.jsonl", predictionsOf())
    const out = join(dir, "scored")
    const r = cli(["eval", "score", "--split", split, "--predictions", predictions, "--json", "--out", out])
    assert.strictEqual(r.code, 0, r.stderr)
    const agg = JSON.parse(r.stdout)
    assert.strictEqual(agg.scored, records.length)
    assert.strictEqual(agg.samples, records.length)
    const hyps = predictionsOf().map((p) => p.prediction)
    const refs = records.map((x) => x.answer)
    assert.closeTo(agg.metrics.bleu, corpusBleu(hyps, [refs]).score, 1e-9)
    const rougeL = hyps.reduce((s, h, i) => s + rougeScores(h, refs[i]!).rougeL.fmeasure, 0) / hyps.length
    assert.closeTo(agg.metrics.rougeL, rougeL, 1e-12)
    assert.isBelow(agg.metrics.rougeL, 1)
    assert.isAbove(agg.metrics.rougeL, 0.6)
    for (const m of ["factuality", "citation_rate", "risk_flag_rate", "placeholder_f1", "rouge1", "rouge2", "rougeLsum", "sentence_bleu"]) {
      assert.isNumber(agg.metrics[m], m)
    }
    // the files: one sample line per record, the same aggregate
    assert.strictEqual(readFileSync(join(out, "samples.jsonl"), "utf8").trim().split("\n").length, records.length)
    assert.deepStrictEqual(JSON.parse(readFileSync(join(out, "aggregate.json"), "utf8")), agg)
  })

  it("matches by index when lines carry one (a run's generations.jsonl), and prints a table by default", () => {
    const { split, write } = setup()
    const predictions = write("gen.jsonl", [{ index: 4, prediction: records[4]!.answer, latencyMs: 12 }, { index: 0, prediction: records[0]!.answer, latencyMs: 8 }])
    const r = cli(["eval", "score", "--split", split, "--predictions", predictions])
    assert.strictEqual(r.code, 0, r.stderr)
    assert.match(r.stdout, new RegExp(`: 2 of ${records.length} records scored`))
    assert.match(r.stdout, /^\s+rougeL\s+1\.0000\s+± 0\.0000$/m)
    assert.match(r.stdout, /^\s+bleu\s+100\.0000$/m)
  })

  it("refuses predictions that do not line up with the split, naming the file", () => {
    const { split, write } = setup()
    const short = write("short.jsonl", predictionsOf().slice(0, 2))
    const r = cli(["eval", "score", "--split", split, "--predictions", short])
    assert.notStrictEqual(r.code, 0)
    assert.include(r.stderr, `${short}: 2 predictions for ${records.length} records`)
    assert.notInclude(r.stderr, "    at ")
    const bad = write("bad.jsonl", [{ answer: "no prediction field" }])
    const b = cli(["eval", "score", "--split", split, "--predictions", bad])
    assert.notStrictEqual(b.code, 0)
    assert.include(b.stderr, "line 1: prediction")
  })
})
