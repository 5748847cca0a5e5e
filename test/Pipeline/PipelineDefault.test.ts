import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { evalTokenBudget } from "../../src/Evaluation/TokenBudget.ts"
import { bootstrapMargins } from "../../src/Evaluation/Margins.ts"
import { smollm2 } from "../../src/Model/ModelCatalog.ts"
import { plannedStages, pretrainApplies } from "../../src/Pipeline/Pipeline.ts"
import { flagsToConfig } from "../../src/Pipeline/PipelineCli.ts"
import {
  defaultPipelineConfig,
  resolvePipelineConfig,
  settingsProfile,
  TrainSection,
  trainFieldsFromPipeline
} from "../../src/Pipeline/PipelineConfig.ts"
import { PythonEnv } from "../../src/Python/PythonEnv.ts"
import { configFieldKinds } from "../../src/Training/TrainConfig.ts"
import { TrainingEngine } from "../../src/Training/TrainingEngine.ts"

// The default pipeline's resolution for the real model, without its training (the full run is the README's job):
// which base, which stages, which settings, and which engine auto picks and why.
const noFlags = {
  config: Option.none(), data: Option.none(), model: Option.none(), out: Option.none(), force: Option.none(),
  device: Option.none(), engine: Option.none(), python: Option.none(), synthCount: Option.none(), pretrainSteps: Option.none(),
  trainSteps: Option.none(), learningRate: Option.none(), evalSamples: Option.none(), maxNewTokens: Option.none(),
  merged: false, requireImprovement: false
} as const

const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "pipeline-default-"))

describe("the default pipeline: SmolLM2-135M-Instruct", () => {
  it.effect("no flags: the catalog's SmolLM2, no pre-training, the seed's real-model settings, ChatML, engine auto", () =>
    Effect.gen(function*() {
      const config = yield* resolvePipelineConfig(undefined, flagsToConfig(noFlags))
      assert.strictEqual(config.model.base, smollm2.name)
      assert.isFalse(pretrainApplies(config))
      assert.deepStrictEqual(plannedStages(config), ["dataset", "base", "train", "export", "evaluate", "serve", "report"])
      const t = config.train
      assert.deepStrictEqual([t.mode, t.r, t.loraAlpha, t.loraDropout, t.learningRate], ["lora", 16, 32, 0.1, 2e-3])
      assert.deepStrictEqual(t.targetModules, ["q_proj", "k_proj", "v_proj", "o_proj"])
      assert.isAbove(t.warmupSteps, 0)
      assert.strictEqual(t.promptLayout, "chatml")
      assert.strictEqual(t.engine, "auto")
      // 0: the answer budget comes from the reference lengths
      assert.strictEqual(config.eval.maxNewTokens, 0)
      assert.strictEqual(settingsProfile(config.model.base).name, "real-model")
    }).pipe(Effect.provide(NodeServices.layer)))

  it.effect("--model tiny keeps the project's model with pre-training and the toy settings; a user's GGUF never gets them", () =>
    Effect.gen(function*() {
      const tiny = yield* resolvePipelineConfig(undefined, flagsToConfig({ ...noFlags, model: Option.some("tiny") }))
      assert.isTrue(pretrainApplies(tiny))
      assert.include(plannedStages(tiny), "pretrain")
      assert.deepStrictEqual([tiny.train.learningRate, tiny.train.maxSteps, tiny.train.engine, tiny.train.promptLayout], [1e-2, 80, "tfjs", "seed"])
      assert.strictEqual(tiny.model.shape?.numLayers, 2)
      assert.strictEqual(settingsProfile("tiny").name, "tiny")

      const yours = yield* resolvePipelineConfig(undefined, flagsToConfig({ ...noFlags, model: Option.some("models/yours.gguf") }))
      assert.strictEqual(yours.model.base, "models/yours.gguf")
      assert.isFalse(pretrainApplies(yours))
      assert.strictEqual(yours.train.learningRate, 2e-3)
      assert.notStrictEqual(yours.train.maxSteps, 80)
      assert.strictEqual(yours.train.loraDropout, 0.1)
      assert.strictEqual(yours.model.shape, undefined)
      assert.match(settingsProfile(yours.model.base).reason, /yours\.gguf.*lr 2e-3/)

      // `model.base: tiny` in a file picks the toy defaults too, and flags still win over them
      const dir = tmpDir()
      const file = path.join(dir, "p.yaml")
      fs.writeFileSync(file, "model: { base: tiny }\ntrain: { r: 4 }\n")
      const fromFile = yield* resolvePipelineConfig(file, flagsToConfig({ ...noFlags, learningRate: Option.some(5e-3), engine: Option.some("torch") }))
      assert.deepStrictEqual([fromFile.train.learningRate, fromFile.train.r, fromFile.train.maxSteps, fromFile.train.engine], [5e-3, 4, 80, "torch"])

      // shortened steps carry the warmup along (10%) unless the warmup itself is given
      const short = yield* resolvePipelineConfig(undefined, flagsToConfig({ ...noFlags, trainSteps: Option.some(20) }))
      assert.deepStrictEqual([short.train.maxSteps, short.train.warmupSteps], [20, 2])
      const warm = path.join(dir, "w.yaml")
      fs.writeFileSync(warm, "train: { warmupSteps: 5 }\n")
      const given = yield* resolvePipelineConfig(warm, flagsToConfig({ ...noFlags, trainSteps: Option.some(20) }))
      assert.deepStrictEqual([given.train.maxSteps, given.train.warmupSteps], [20, 5])
      fs.rmSync(dir, { recursive: true, force: true })
    }).pipe(Effect.provide(NodeServices.layer)))

  it("the pipeline config covers every train setting: each TrainConfig field is in `train` or filled in by the pipeline", () => {
    const section = new Set(Object.keys(TrainSection.fields))
    const filled = new Set(Object.keys(trainFieldsFromPipeline))
    for (const field of Object.keys(configFieldKinds)) {
      assert.isTrue(section.has(field) !== filled.has(field), `train field ${field}: in the section ${section.has(field)}, filled in ${filled.has(field)}`)
    }
    // nothing in the section that `train` does not know, except the interpreter (`train --python`)
    for (const key of section) if (key !== "python") assert.property(configFieldKinds, key)
    // and the defaults validate every one of them as the trainer would (defaultPipelineConfig is typed by the Schema)
    assert.strictEqual(defaultPipelineConfig.train.metricForBest, "eval_loss")
  })

  it.effect("engine auto reports its choice and why: tfjs when the Python environment is not usable", () =>
    Effect.gen(function*() {
      // (auto's torch leg imports torch, transformers and peft: TorchEngine's own tests cover it)
      const missing = path.join(tmpDir(), "no-such-python")
      const picked = yield* TrainingEngine.use((e) => Effect.succeed({ name: e.name, reason: e.reason })).pipe(
        Effect.provide(TrainingEngine.layer("auto").pipe(Layer.provide(PythonEnv.layer({ python: missing }))))
      )
      assert.strictEqual(picked.name, "tfjs")
      assert.match(picked.reason, /^auto chose tfjs: no usable Python environment \(.*no-such-python/)
    }).pipe(Effect.provide(NodeServices.layer)), 120_000)

  it("the answer budget is the references' 95th-percentile length with a margin, above every reference but outliers", () => {
    // a tokenizer with one token a character, so each reference's length is its token count
    const perChar = { tokenize: (text: string) => Array.from(text, () => 1) }
    const references = Array.from({ length: 100 }, (_, i) => "x".repeat(40 + i)) // 40 .. 139 tokens
    const budget = evalTokenBudget(references, perChar).tokens
    assert.strictEqual(budget, Math.ceil(134 * 1.25) + 16)
    assert.isAbove(budget, 139)
    assert.strictEqual(evalTokenBudget(["x".repeat(10)], perChar).tokens, Math.ceil(10 * 1.25) + 16)
  })

  it.effect("margins cover ROUGE-L, BLEU, placeholder F1, citation, risk-note (advice records only) and factuality", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const line = (id: string, m: Record<string, unknown>) =>
        JSON.stringify({ id, metrics: { rougeL: 0.2, factuality: 1, placeholderF1: 0.5, bleu: 10, ...m } }) + "\n"
      const base = path.join(dir, "base.jsonl")
      const tuned = path.join(dir, "tuned.jsonl")
      fs.writeFileSync(base, ["a", "b", "c", "d"].map((id, i) =>
        line(id, { cites: false, needsDisclaimer: i < 2, hasDisclaimer: false })).join(""))
      fs.writeFileSync(tuned, ["a", "b", "c", "d"].map((id, i) =>
        line(id, { rougeL: 0.6, cites: true, needsDisclaimer: i < 2, hasDisclaimer: i === 0 })).join(""))
      const margins = yield* bootstrapMargins(base, tuned, 3)
      const by = Object.fromEntries(margins.map((m) => [m.metric, m]))
      assert.deepStrictEqual(margins.map((m) => m.metric), ["rougeL", "bleu", "placeholderF1", "citation", "riskNote", "factuality"])
      assert.closeTo(by["rougeL"]!.delta, 0.4, 1e-12)
      assert.closeTo(by["rougeL"]!.low, 0.4, 1e-12)
      assert.strictEqual(by["citation"]!.delta, 1)
      assert.strictEqual(by["riskNote"]!.pairs, 2)
      assert.strictEqual(by["riskNote"]!.tuned, 0.5)
      assert.strictEqual(by["factuality"]!.delta, 0)
      fs.rmSync(dir, { recursive: true, force: true })
    }).pipe(Effect.provide(NodeServices.layer)))
})
