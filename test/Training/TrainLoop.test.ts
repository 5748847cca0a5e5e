import { NodeServices } from "@effect/platform-node"
import * as tf from "@tensorflow/tfjs-core"
import { Effect, Exit, Logger } from "effect"
import * as fsSync from "node:fs"
import * as os from "node:os"
import * as nodePath from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { packBatch, padBatch } from "../../src/Training/Collate.ts"
import { ADAPTER_PROMPT } from "../../src/Training/AdapterPrompt.ts"
import { generate } from "../../src/Model/Generation.ts"
import { FINAL_ADAPTER_DIR, loadAdapterInto, readPeftAdapter, writePeftAdapter } from "../../src/Model/PeftAdapter.ts"
import { batchGrads, batchLoss, adapterConfigOf, buildTrainee, runTraining, type TrainingInput } from "../../src/Training/Trainer.ts"
import { baseTrainConfig, byteTokenizer, examples, qa, randomWeights, tinyConfig, useWasm } from "./TrainFixtures.ts"

beforeAll(useWasm)

const tmp = () => fsSync.mkdtempSync(nodePath.join(os.tmpdir(), "train-"))
const input = (seed = 1): TrainingInput => ({
  modelConfig: tinyConfig,
  weights: () => randomWeights(tinyConfig, seed),
  tokenizer: byteTokenizer,
  baseModelName: "tiny-random",
  train: examples(),
  validation: examples()
})
const run = <A, E>(e: Effect.Effect<A, E, any>) =>
  Effect.runPromise(e.pipe(Effect.provide(NodeServices.layer)) as Effect.Effect<A, E, never>)

const learnConfig = (dir: string, mode: "lora" | "qlora") =>
  baseTrainConfig(dir, {
    mode,
    targetModules: "all-linear",
    r: 8,
    loraAlpha: 16,
    loraDropout: 0,
    epochs: 30,
    batchSize: 4,
    gradientAccumulationSteps: 1,
    learningRate: 3e-2,
    warmupSteps: 3,
    logEvery: 3,
    saveEvery: 10,
    evalEvery: 15,
    saveTotalLimit: 1,
    evalGenerationSamples: 4,
    maxNewTokens: 16
  })

const prompt = (question: string) => [byteTokenizer.bosId!, ...byteTokenizer.encode(`Context: \nQuestion: ${question}\nAnswer: `)]

describe("the training loop", () => {
  it("never reports a loss of 0 for an empty mean: long prompts keep their answers, rows with none are left out and warned about", async () => {
    const warnings: Array<string> = []
    const capture = Logger.make((o) => {
      if (o.logLevel === "Warn") warnings.push(String(Array.isArray(o.message) ? o.message[0] : o.message))
    })
    const runLogged = <A, E>(e: Effect.Effect<A, E, any>) =>
      Effect.runPromiseExit(e.pipe(Effect.provide(Logger.layer([capture])), Effect.provide(NodeServices.layer)) as Effect.Effect<A, E, never>)
    const config = (dir: string, maxSeqLength: number) =>
      baseTrainConfig(dir, { maxSeqLength, epochs: 1, batchSize: 2, logEvery: 1, evalEvery: 2, evalGenerationSamples: 0, metricForBest: "eval_loss" })
    // the prompts are ~40 bytes: at 24 tokens the old tail truncation left no answer token (loss 0.0000 grad 0.000)
    const long = await runLogged(runTraining({ ...input(), validation: [] }, config(tmp(), 24), { onLog: () => {} }))
    expect(Exit.isSuccess(long)).toBe(true)
    const result = Exit.isSuccess(long) ? long.value : undefined!
    expect(result.trainLogs.length).toBeGreaterThan(0)
    for (const log of result.trainLogs) {
      expect(log.loss).toBeGreaterThan(1)
      expect(log.gradNorm).toBeGreaterThan(0)
    }
    // no validation set: no eval loss rather than 0, and no "best" picked from it; the final adapter is the last step's
    expect(result.evaluations.map((e) => e.evalLoss)).toEqual([null])
    expect(result.bestMetric).toBeNull()
    expect(fsSync.existsSync(nodePath.join(result.finalDir, "adapter_model.safetensors"))).toBe(true)
    expect(nodePath.basename(result.finalDir)).toBe(FINAL_ADAPTER_DIR) // the folder eval, export and serve are told to take
    // the layout the examples were rendered in, recorded for export and serve (Training/AdapterPrompt.ts)
    expect(JSON.parse(fsSync.readFileSync(nodePath.join(result.finalDir, ADAPTER_PROMPT), "utf8"))).toEqual({ prompt_layout: "seed" })
    expect(warnings).toEqual([])
    // at 1 token no row can have a loss target: the run says so instead of training on nothing
    const none = await runLogged(runTraining(input(), config(tmp(), 1), { onLog: () => {} }))
    expect(Exit.isFailure(none) && String(none.cause)).toContain("no training example has an answer token within maxSeqLength 1")
    expect(warnings).toEqual([
      "4 of 4 training examples have no answer token within maxSeqLength 1: left out of the loss",
      "4 of 4 validation examples have no answer token within maxSeqLength 1: left out of the loss"
    ])
  })

  it("drives the loss down steadily, keeps the best checkpoint, and the final adapter answers greedily", async () => {
    const dir = tmp()
    const baseline = tf.memory().numTensors
    const result = await run(runTraining(input(), learnConfig(dir, "lora"), { onLog: () => {} }))
    // tensors never leak: the run frees its model, optimizer and every step's intermediates
    expect(tf.memory().numTensors).toBe(baseline)

    const losses = result.trainLogs.map((l) => l.loss)
    expect(losses.length).toBe(10)
    expect(losses.at(-1)!).toBeLessThan(losses[0]! / 3)
    // steadily: no logged window is more than 10% above the one before it
    losses.slice(1).forEach((l, i) => expect(l).toBeLessThan(losses[i]! * 1.1))
    expect(result.trainLogs.every((l) => l.tokensPerSecond > 0 && Number.isFinite(l.gradNorm))).toBe(true)

    // eval at 15 and 30; the best by ROUGE-L becomes the final adapter; save_total_limit 1 keeps newest + best
    expect(result.evaluations.map((e) => e.step)).toEqual([15, 30])
    expect(result.evaluations.at(-1)!.rougeL).toBe(1)
    const final = JSON.parse(fsSync.readFileSync(nodePath.join(dir, "final.json"), "utf8"))
    expect(final.bestStep).toBe(result.bestStep)
    const kept = fsSync.readdirSync(dir).filter((n) => n.startsWith("checkpoint-")).sort()
    expect(kept).toEqual([...new Set([`checkpoint-${result.bestStep}`, "checkpoint-30"])].sort())
    const metrics = fsSync.readFileSync(nodePath.join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
    expect(metrics.filter((m) => m.type === "train").length).toBe(10)
    expect(metrics.filter((m) => m.type === "eval").length).toBe(2)

    // the final adapter, loaded into a fresh model, reproduces every training answer greedily
    const config = learnConfig(dir, "lora")
    const trainee = await buildTrainee(input(), { ...config, seed: 999 })
    const adapter = await run(readPeftAdapter(result.finalDir))
    await run(loadAdapterInto(adapter, trainee.loraLayers, result.finalDir))
    const outs = generate(trainee.model, qa.map((r) => prompt(r.question)), { maxNewTokens: 16, stopTokenIds: [byteTokenizer.eosId] })
    expect(outs.map((o) => byteTokenizer.decode(o.tokens))).toEqual(qa.map((r) => r.answer))
    trainee.dispose()
    expect(tf.memory().numTensors).toBe(baseline)
  })

  it("QLoRA on the NF4 base reaches a final loss within 25% of LoRA's and holds the base in less memory", async () => {
    const lora = await run(runTraining(input(), { ...learnConfig(tmp(), "lora"), evalGenerationSamples: 0, metricForBest: "eval_loss" }, { onLog: () => {} }))
    const qlora = await run(runTraining(input(), { ...learnConfig(tmp(), "qlora"), evalGenerationSamples: 0, metricForBest: "eval_loss" }, { onLog: () => {} }))
    const a = lora.trainLogs.at(-1)!.loss
    const b = qlora.trainLogs.at(-1)!.loss
    // NF4 perturbs each base weight by ~10% RMS (the code book's error, Nf4.test.ts); the adapter trains against the
    // perturbed base and compensates, so the two runs end close but not equal. 25% relative leaves room for that
    // while a broken QLoRA path (no gradient, wrong dequantization) ends several times higher.
    expect(Math.abs(b - a) / a).toBeLessThan(0.25)
    expect(qlora.baseMemoryBytes).toBeLessThan(lora.baseMemoryBytes)
  })

  it("writes an adapter that, loaded back, reproduces the in-memory logits exactly", async () => {
    const dir = tmp()
    const config = learnConfig(dir, "lora")
    const a = await buildTrainee(input(), config)
    // give B non-zero values so the adapter matters
    a.loraLayers.forEach((l, i) => tf.tidy(() => l.loraB.assign(tf.randomNormal(l.loraB.shape, 0, 0.1, "float32", i + 1))))
    await run(writePeftAdapter(dir, a.loraLayers, adapterConfigOf(config, "tiny-random")))
    const b = await buildTrainee(input(), { ...config, seed: 7 })
    await run(loadAdapterInto(await run(readPeftAdapter(dir)), b.loraLayers, dir))
    const batch = padBatch(examples().map((e) => ({ ids: [256, ...byteTokenizer.encode(e.text)], labels: [] })), 257)
    tf.tidy(() => {
      const ids = tf.tensor2d(batch.inputIds, [batch.rows, batch.length], "int32")
      const mask = tf.tensor2d(batch.attentionMask, [batch.rows, batch.length], "int32")
      const la = a.model.logits(ids, { attentionMask: mask }).dataSync()
      const lb = b.model.logits(ids, { attentionMask: mask }).dataSync()
      const base = a.base!.logits(ids, { attentionMask: mask }).dataSync()
      expect(Array.from(lb)).toEqual(Array.from(la))
      expect(Array.from(base)).not.toEqual(Array.from(la))
    })
    a.dispose()
    b.dispose()
  })

  it("packs examples without cross-attention: a packed row has the loss of the same examples padded apart", async () => {
    const t = await buildTrainee(input(), { ...learnConfig(tmp(), "lora"), loraDropout: 0 })
    t.loraLayers.forEach((l, i) => tf.tidy(() => l.loraB.assign(tf.randomNormal(l.loraB.shape, 0, 0.3, "float32", i + 3))))
    t.dropout.begin(0, false)
    const tokenized = examples().map((e) => {
      const ids = [256, ...byteTokenizer.encode(e.text)]
      return { ids, labels: ids.map((_, i) => i > e.answerStart) }
    })
    const padded = padBatch(tokenized, 257)
    const packed = packBatch(tokenized, 257, 200)
    expect(packed.rows).toBe(1)
    expect(packed.lossTokens).toBe(padded.lossTokens)
    const lp = tf.tidy(() => batchLoss(t.model, packed, packed.lossTokens).dataSync()[0]!)
    const lq = tf.tidy(() => batchLoss(t.model, padded, padded.lossTokens).dataSync()[0]!)
    // same tokens, positions restarted per segment, attention kept within segments: equal up to float32 summation order
    expect(Math.abs(lp - lq) / lq).toBeLessThan(1e-5)
    t.dispose()
  })

  it("stops early when the metric has not improved for `patience` evaluations", async () => {
    const dir = tmp()
    // a learning rate too small to change greedy outputs: ROUGE-L stays where it starts, so the second evaluation
    // does not improve and patience 1 stops the run there
    const result = await run(runTraining(input(), {
      ...learnConfig(dir, "lora"),
      learningRate: 1e-9,
      evalEvery: 1,
      saveEvery: 100,
      earlyStoppingPatience: 1
    }, { onLog: () => {} }))
    expect(result.stoppedEarly).toBe(true)
    expect(result.globalStep).toBe(2)
    expect(result.bestStep).toBe(1)
    expect(JSON.parse(fsSync.readFileSync(nodePath.join(dir, "final.json"), "utf8"))).toMatchObject({ bestStep: 1, stoppedEarly: true, globalStep: 2 })
  })

  it("computes LoRA gradients that match central finite differences on the tiny model", async () => {
    const config = { ...learnConfig(tmp(), "lora"), targetModules: ["q_proj", "v_proj", "down_proj"] as const }
    const t = await buildTrainee(input(), { ...config, targetModules: [...config.targetModules] })
    t.loraLayers.forEach((l, i) => tf.tidy(() => l.loraB.assign(tf.randomNormal(l.loraB.shape, 0, 0.5, "float32", i + 11))))
    t.dropout.begin(0, false)
    const batch = padBatch(examples().map((e) => {
      const ids = [256, ...byteTokenizer.encode(e.text)]
      return { ids, labels: ids.map((_, i) => i >= e.answerStart + 1) }
    }), 257)
    const loss = () => batchLoss(t.model, batch, batch.lossTokens)
    const { value, grads } = batchGrads(t.model, batch, batch.lossTokens, t.variables)
    value.dispose()
    // Central differences in float32 on a loss of O(1): truncation ~eps²/6·|f'''| and rounding ~ulp(f)/eps ≈ 5e-5
    // at eps = 1e-2. Over 10 sampled coordinates per tensor with gradients of 1e-3..1e-1, a 2% relative error on the
    // sampled gradient vector is ~10x above that noise, and a wrong gradient (missing scaling, transposed factor,
    // gradient leaking into the base) is off by O(100%).
    const eps = 1e-2
    const rng = (() => {
      let s = 12345
      return () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296)
    })()
    let checked = 0
    for (const v of t.variables) {
      const analytic = grads[v.name]!.dataSync()
      const values = (v.dataSync() as Float32Array).slice()
      let diff = 0
      let norm = 0
      for (let s = 0; s < 10; s++) {
        const i = Math.floor(rng() * values.length)
        const at = (delta: number) => {
          const copy = values.slice()
          copy[i] = values[i]! + delta
          tf.tidy(() => v.assign(tf.tensor(copy, v.shape)))
          return tf.tidy(() => loss().dataSync()[0]!)
        }
        const numeric = (at(eps) - at(-eps)) / (2 * eps)
        diff += (numeric - analytic[i]!) ** 2
        norm += analytic[i]! ** 2
      }
      tf.tidy(() => v.assign(tf.tensor(values, v.shape)))
      expect(norm).toBeGreaterThan(1e-10)
      expect(Math.sqrt(diff / norm)).toBeLessThan(2e-2)
      checked++
    }
    expect(checked).toBe(2 * 3 * tinyConfig.numLayers)
    tf.dispose(Object.values(grads))
    t.dispose()
  })
})
