/**
 * Distributed = single: the torch engine under torchrun with 2 gloo processes on CPU (each rank takes every other
 * example of a micro-batch, DDP averages the gradients) trains the same adapter as 1 process on the whole batch.
 * Only rank 0 writes: one set of checkpoints and one final adapter.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { agreementConfig, makeWorkspace, readAdapter, relativeDifference, trainTorch } from "./TorchEngineFixtures.ts"
import type { TrainResult } from "../../src/Training/Trainer.ts"

describe("torch engine: 2 processes (torchrun, gloo) = 1 process", () => {
  let single: TrainResult
  let ddp: TrainResult
  let dir = ""
  beforeAll(async () => {
    dir = await makeWorkspace("engine-ddp-")
    // micro-batches of 3 (rank 0 takes 2 rows, rank 1 one), 2 per step; the last of an epoch has 2 of the 8 examples
    const config = { batchSize: 3, gradientAccumulationSteps: 2, maxSteps: 8, evalEvery: 4, saveEvery: 4 }
    single = await trainTorch(agreementConfig(dir, "single", config))
    ddp = await trainTorch(agreementConfig(dir, "ddp", { ...config, nprocPerNode: 2 }))
  }, 600_000)

  it("gives the same adapter within 1e-5 and the same per-step losses", async () => {
    const a = await readAdapter(path.join(ddp.finalDir, "adapter_model.safetensors"))
    const b = await readAdapter(path.join(single.finalDir, "adapter_model.safetensors"))
    expect(a.size).toBe(b.size)
    for (const [name, t] of a) expect(relativeDifference(t, b.get(name)!), name).toBeLessThan(1e-5)
    expect(ddp.trainLogs.length).toBe(8)
    ddp.trainLogs.forEach((l, i) => expect(Math.abs(l.loss - single.trainLogs[i]!.loss)).toBeLessThan(1e-5))
  })

  it("rank 0 alone writes checkpoints and the final adapter", () => {
    const names = fs.readdirSync(path.join(dir, "ddp")).filter((f) => f.startsWith("checkpoint-")).sort()
    expect(names).toEqual(["checkpoint-4", "checkpoint-8"])
    expect(fs.readdirSync(ddp.finalDir).sort()).toEqual(["adapter_config.json", "adapter_model.safetensors"])
    expect(fs.readFileSync(path.join(dir, "ddp", "engine.log"), "utf8")).not.toMatch(/Traceback/)
  })
})
