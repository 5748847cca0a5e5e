/**
 * Cross-engine agreement: the same base, the same initial adapter (TrainHandover writes the tfjs trainer's own
 * LoRA init), dropout 0 and the same step plan, trained by the tfjs trainer and by the torch engine. The per-step
 * losses must agree within 1e-4 for the first 5 steps and the adapters within 1e-3 relative after 20 steps: either
 * engine's mistake (a loss normalization, an off-by-one in the schedule, a RoPE layout, clipping) shows here.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { agreementConfig, makeWorkspace, readAdapter, relativeDifference, trainTfjs, trainTorch } from "./TorchEngineFixtures.ts"
import type { TrainResult } from "../../src/Training/Trainer.ts"

describe("torch engine agrees with the tfjs trainer", () => {
  let dir = ""
  let tfjs: TrainResult
  let torch: TrainResult
  beforeAll(async () => {
    dir = await makeWorkspace("engine-agree-")
    torch = await trainTorch(agreementConfig(dir, "torch"))
    tfjs = await trainTfjs(agreementConfig(dir, "tfjs"))
  }, 600_000)

  it("per-step losses agree within 1e-4 for the first 5 steps", () => {
    expect(torch.trainLogs.length).toBe(20)
    expect(tfjs.trainLogs.length).toBe(20)
    for (let k = 0; k < 5; k++) {
      expect(torch.trainLogs[k]!.step).toBe(k + 1)
      expect(Math.abs(torch.trainLogs[k]!.loss - tfjs.trainLogs[k]!.loss)).toBeLessThan(1e-4)
      expect(torch.trainLogs[k]!.learningRate).toBeCloseTo(tfjs.trainLogs[k]!.learningRate, 12)
      expect(Math.abs(torch.trainLogs[k]!.gradNorm - tfjs.trainLogs[k]!.gradNorm) / tfjs.trainLogs[k]!.gradNorm).toBeLessThan(1e-3)
    }
    // the run learned something, so agreement is not two engines standing still
    expect(torch.evaluations.map((e) => e.step)).toEqual([10, 20])
    expect(torch.evaluations[1]!.evalLoss!).toBeLessThan(torch.evaluations[0]!.evalLoss! - 0.1)
  })

  it("the adapters agree within 1e-3 relative after 20 steps, with the same config file", async () => {
    const a = await readAdapter(path.join(torch.finalDir, "adapter_model.safetensors"))
    const b = await readAdapter(path.join(tfjs.finalDir, "adapter_model.safetensors"))
    expect([...a.keys()].sort()).toEqual([...b.keys()].sort())
    expect(a.size).toBe(2 * 2 * 4) // 2 layers × q,k,v,o × A,B
    for (const [name, t] of a) {
      expect(relativeDifference(t, b.get(name)!), name).toBeLessThan(1e-3)
    }
    expect(fs.readFileSync(path.join(torch.finalDir, "adapter_config.json"), "utf8")).toBe(
      fs.readFileSync(path.join(tfjs.finalDir, "adapter_config.json"), "utf8")
    )
  })

  it("both write the same run history: metrics.jsonl lines, checkpoints and final.json's best step", () => {
    const lines = (run: string) => fs.readFileSync(path.join(dir, run, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { type: string; step: number })
    expect(lines("torch").map((l) => `${l.type}:${l.step}`)).toEqual(lines("tfjs").map((l) => `${l.type}:${l.step}`))
    const checkpoints = (run: string) => fs.readdirSync(path.join(dir, run)).filter((f) => f.startsWith("checkpoint-")).sort()
    expect(checkpoints("torch")).toEqual(checkpoints("tfjs"))
    expect(torch.bestStep).toBe(tfjs.bestStep)
    const evals = (r: TrainResult) => r.evaluations.map((e) => e.evalLoss!)
    evals(torch).forEach((l, i) => expect(Math.abs(l - evals(tfjs)[i]!)).toBeLessThan(1e-3))
  })

  it("packed rows (block-diagonal attention, positions restarting per example) agree as well", async () => {
    const packed = { packing: true, maxSeqLength: 64, maxSteps: 4, batchSize: 4, evalEvery: 4, saveEvery: 4 }
    const t = await trainTorch(agreementConfig(dir, "torch-packed", packed))
    const j = await trainTfjs(agreementConfig(dir, "tfjs-packed", packed), { onLog: () => {} })
    expect(t.trainLogs.length).toBe(4)
    t.trainLogs.forEach((l, k) => expect(Math.abs(l.loss - j.trainLogs[k]!.loss)).toBeLessThan(1e-4))
  }, 300_000)
})
