import { Schema } from "effect"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { getLlama, LlamaCompletion } from "node-llama-cpp"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { stageNames } from "../../src/Pipeline/Pipeline.ts"
import { RunManifest } from "../../src/Pipeline/StageRunner.ts"
import { exitCodeOf } from "../../src/Shared/Errors.ts"

// The pipeline on a miniature `--model tiny` run (the project's random model, pre-trained first), through the built CLI (npm test builds first): a 200-record synthetic set, a
// one-layer model, a few optimizer steps per training stage, four evaluated samples, one /infer question, and the merged GGUF.
const main = path.resolve("dist/Main.js")
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pipeline-test-"))
const out = path.join(dir, "run")
const configFile = path.join(dir, "mini.yaml")
fs.writeFileSync(configFile, [
  `out: ${JSON.stringify(out)}`,
  "device: wasm",
  "data: { synthCount: 200, seed: 7 }",
  "model: { base: tiny, shape: { hiddenSize: 32, intermediateSize: 64, numLayers: 1, numHeads: 2, numKvHeads: 1, headDim: 16 } }",
  "pretrain: { steps: 3, batchSize: 4, maxSeqLength: 96, warmupSteps: 1 }",
  "train: { maxSteps: 3, batchSize: 2, maxSeqLength: 160, evalEvery: 3, saveEvery: 2, evalGenerationSamples: 2, r: 4, loraAlpha: 8, warmupSteps: 1 }",
  "eval: { samples: 4, maxNewTokens: 12 }",
  "serve: { questions: 1, maxLength: 600 }",
  "export: { merged: true }",
  ""
].join("\n"))

interface Ran {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}
const cli = (...args: Array<string>): Promise<Ran> =>
  new Promise((resolve) => {
    execFile(process.execPath, [main, "pipeline", ...args], { maxBuffer: 64 * 2 ** 20 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr })
    })
  })

const readManifest = () => Schema.decodeUnknownSync(Schema.fromJsonString(RunManifest))(fs.readFileSync(path.join(out, "run.json"), "utf8"))
const readJson = (...parts: Array<string>) => JSON.parse(fs.readFileSync(path.join(out, ...parts), "utf8"))
const jsonl = (file: string) => fs.readFileSync(file, "utf8").split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l))
const startedAt = (m: RunManifest) => Object.fromEntries(stageNames.map((s) => [s, m.stages[s]!.startedAt]))

let first: Ran
let firstManifest: RunManifest

beforeAll(async () => {
  first = await cli("--config", configFile)
  firstManifest = readManifest()
}, 600_000)

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

describe("pipeline on a miniature default", () => {
  it("finishes with exit 0, every stage done, and a summary table", () => {
    expect(first.stderr).not.toMatch(/\n\s+at /) // no stack trace
    expect(first.code).toBe(0)
    expect(firstManifest.status).toBe("done")
    for (const stage of stageNames) {
      expect(firstManifest.stages[stage]?.status, stage).toBe("done")
      expect(firstManifest.lastInvocation[stage], stage).toBe("ran")
      expect(firstManifest.stages[stage]?.seconds).toBeGreaterThanOrEqual(0)
    }
    expect(first.stdout).toContain("held-out metrics")
    for (const label of ["ROUGE-L", "factuality", "placeholder F1", "adapter (GGUF)", "evaluation report"]) expect(first.stdout).toContain(label)
    expect(fs.readFileSync(path.join(out, "config.yaml"), "utf8")).toContain("synthCount: 200")
    expect(readJson("versions.json").node).toBe(process.version)
    const log = fs.readFileSync(path.join(out, "pipeline.log"), "utf8")
    expect(log).toContain("[train] done")
    // the export's per-tensor progress reaches the run's log through the Progress service
    expect(log).toMatch(/\[export\] merged \[#+\] (\d+)\/\1 tensors/)
    expect(fs.statSync(path.join(out, "export", "merged-f16.gguf")).size).toBeGreaterThan(0)
  })

  it("writes the datasets: the split adds up to the summary and train/test share no question", () => {
    const summary = readJson("data", "summary.json")
    const train = jsonl(path.join(out, "data", "train.jsonl"))
    const test = jsonl(path.join(out, "data", "test.jsonl"))
    expect(train.length).toBe(summary.train)
    expect(test.length).toBe(summary.test)
    expect(summary.train + summary.test + summary.rejected + summary.duplicates.exact + summary.duplicates.normalized).toBe(200)
    const fit = jsonl(path.join(out, "data", "fit.jsonl"))
    const validation = jsonl(path.join(out, "data", "validation.jsonl"))
    expect(fit.length + validation.length).toBe(train.length)
    const testQuestions = new Set(test.map((r) => r.question))
    expect(train.filter((r) => testQuestions.has(r.question))).toEqual([])
  })

  it("writes checkpoints, the PEFT adapter and a llama.cpp adapter GGUF that loads and generates over the pre-trained base", async () => {
    const peft = readJson("train", "final-adapter", "adapter_config.json")
    expect(peft.r).toBe(4)
    expect(peft.lora_alpha).toBe(8)
    expect(peft.peft_type).toBe("LORA")
    expect(fs.statSync(path.join(out, "train", "final-adapter", "adapter_model.safetensors")).size).toBeGreaterThan(0)
    expect(fs.readdirSync(path.join(out, "train")).filter((f) => f.startsWith("checkpoint-")).length).toBeGreaterThan(0)
    expect(jsonl(path.join(out, "train", "metrics.jsonl")).some((l) => typeof l.loss === "number")).toBe(true)

    const llama = await getLlama({ gpu: false, build: "never" })
    llama.maxThreads = 1
    try {
      const model = await llama.loadModel({ modelPath: path.join(out, "model", "pretrained.gguf") })
      const context = await model.createContext({ contextSize: 256, lora: { adapters: [{ filePath: path.join(out, "export", "adapter.gguf") }] } })
      const text = await new LlamaCompletion({ contextSequence: context.getSequence() }).generateCompletion("Question: what is AAPL trading at?\nAnswer: ", { maxTokens: 4, temperature: 0 })
      expect(typeof text).toBe("string")
      await context.dispose()
      await model.dispose()
    } finally {
      await llama.dispose()
    }
  })

  it("evaluates base and tuned: metrics are numbers in range, the HTML report has charts, margins are recorded", () => {
    for (const system of ["base", "tuned"]) {
      const agg = readJson("eval", system, "aggregate.json")
      expect(agg.system).toBe(system)
      expect(agg.scored).toBe(4)
      for (const m of ["rougeL", "rouge1", "factuality", "placeholder_f1", "citation_rate"]) {
        expect(agg.metrics[m], `${system} ${m}`).toBeGreaterThanOrEqual(0)
        expect(agg.metrics[m], `${system} ${m}`).toBeLessThanOrEqual(1)
      }
      expect(agg.metrics.bleu).toBeGreaterThanOrEqual(0)
      expect(agg.metrics.bleu).toBeLessThanOrEqual(100)
      expect(jsonl(path.join(out, "eval", system, "samples.jsonl")).length).toBe(4)
    }
    const html = fs.readFileSync(path.join(out, "eval", "compare.html"), "utf8")
    expect(html).toContain("<svg")
    expect(html).toContain("tuned")
    const evaluation = firstManifest.stages["evaluate"]!.result as {
      margins: Array<{ label: string; delta: number; low: number; high: number; pairs: number }>
      sideBySide: Array<{ question: string; base: string; tuned: string; reference: string }>
      maxNewTokens: number
    }
    // the risk-note rate counts advice records only, so it is there when the 4 samples hold one
    expect(evaluation.margins.map((m) => m.label).filter((l) => l !== "risk-note rate"))
      .toEqual(["ROUGE-L", "sentence BLEU", "placeholder F1", "citation rate", "numeric factuality"])
    expect(evaluation.maxNewTokens).toBe(12)
    expect(evaluation.sideBySide).toHaveLength(4)
    for (const q of evaluation.sideBySide) expect(q.reference.length).toBeGreaterThan(0)
    for (const m of evaluation.margins) {
      if (m.label === "risk-note rate") expect(m.pairs).toBeLessThanOrEqual(4)
      else expect(m.pairs).toBe(4)
      expect(m.pairs).toBeGreaterThan(0)
      expect(m.low).toBeLessThanOrEqual(m.delta + 1e-12)
      expect(m.high).toBeGreaterThanOrEqual(m.delta - 1e-12)
    }
    const report = fs.readFileSync(path.join(out, "report.md"), "utf8")
    expect(report).toContain("## Base vs tuned on the held-out split")
    expect(report).toContain("## Why the base was pre-trained")
    expect(report).toContain("settings: tiny defaults")
    expect(report).toContain("## 4 held-out questions side by side")
    expect(first.stdout).toContain("held-out questions side by side")
  })

  it("served the adapter and asked /infer a held-out question", () => {
    const served = readJson("serve", "answers.json")
    expect(served.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
    expect(served.answers).toHaveLength(1)
    const [answer] = served.answers
    expect(typeof answer.answer).toBe("string")
    expect(answer.confidence).toBeGreaterThanOrEqual(0)
    expect(answer.confidence).toBeLessThanOrEqual(1)
    expect(answer.modelVersion).toBe("finetune-finance-lora")
  })

  it("a second run skips every stage; --force train redoes training and what depends on it only", async () => {
    const again = await cli("--config", configFile)
    expect(again.code).toBe(0)
    const cached = readManifest()
    for (const stage of stageNames) expect(cached.lastInvocation[stage], stage).toBe("cached")
    expect(startedAt(cached)).toEqual(startedAt(firstManifest))
    expect(again.stdout).toContain("held-out metrics")

    const forced = await cli("--config", configFile, "--force", "train")
    expect(forced.code).toBe(0)
    const m = readManifest()
    const before = startedAt(firstManifest)
    for (const stage of ["dataset", "base", "pretrain"] as const) {
      expect(m.lastInvocation[stage], stage).toBe("cached")
      expect(m.stages[stage]!.startedAt, stage).toBe(before[stage])
    }
    for (const stage of ["train", "export", "evaluate", "serve", "report"] as const) {
      expect(m.lastInvocation[stage], stage).toBe("ran")
      expect(m.stages[stage]!.startedAt > before[stage]!, stage).toBe(true)
    }
  })

  it("--require-improvement exits as a missed threshold exactly when the tuned model does not beat the base on all three gate metrics", async () => {
    const gated = await cli("--config", configFile, "--require-improvement")
    const evaluation = readManifest().stages["evaluate"]!.result as {
      base: { metrics: Record<string, number> }
      tuned: { metrics: Record<string, number> }
    }
    const better = ["rougeL", "factuality", "placeholder_f1"].every((m) => evaluation.tuned.metrics[m]! > evaluation.base.metrics[m]!)
    expect(gated.code).toBe(better ? 0 : exitCodeOf("threshold"))
    if (!better) expect(gated.stderr).toContain("does not beat the base on")
  })

  it("an interrupted stage (left 'running' in run.json) is run again, the finished ones are not", async () => {
    const manifest = JSON.parse(fs.readFileSync(path.join(out, "run.json"), "utf8"))
    manifest.stages.evaluate.status = "running"
    delete manifest.stages.evaluate.result
    fs.writeFileSync(path.join(out, "run.json"), JSON.stringify(manifest))
    const resumed = await cli("--config", configFile)
    expect(resumed.code).toBe(0)
    const m = readManifest()
    expect(m.lastInvocation["train"]).toBe("cached")
    expect(m.lastInvocation["evaluate"]).toBe("ran")
    expect(m.stages["evaluate"]!.status).toBe("done")
  })

  it("a bad config value exits as bad data, rejected input as a missed reject-rate threshold, each naming the field or stage without a stack trace", async () => {
    const badConfig = path.join(dir, "bad.yaml")
    fs.writeFileSync(badConfig, "train:\n  r: 0\n")
    const bad = await cli("--config", badConfig)
    expect(bad.code).toBe(exitCodeOf("data"))
    expect(bad.stderr).toContain("train.r")
    expect(bad.stderr).not.toMatch(/\n\s+at /)

    const badData = path.join(dir, "bad.jsonl")
    fs.writeFileSync(badData, "{\"question\": 1}\nnot json\n")
    const rejected = await cli("--data", badData, "--out", path.join(dir, "bad-run"))
    expect(rejected.code).toBe(exitCodeOf("threshold"))
    expect(rejected.stderr).toContain("stage \"dataset\" failed")
    expect(rejected.stderr).not.toMatch(/\n\s+at /)
    const m = Schema.decodeUnknownSync(Schema.fromJsonString(RunManifest))(fs.readFileSync(path.join(dir, "bad-run", "run.json"), "utf8"))
    expect(m.status).toBe("failed")
    expect(m.stages["dataset"]!.status).toBe("failed")
  })
})
