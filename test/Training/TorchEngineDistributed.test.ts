/**
 * Distributed = single: the torch engine under torchrun with 2 gloo processes on CPU (each rank takes every other
 * example of a micro-batch, DDP averages the gradients; with --fsdp, FSDP2's fully_shard shards every decoder layer
 * and reduce-scatters the gradients) trains the same adapter as 1 process on the whole batch. Only rank 0 writes:
 * one set of checkpoints and one final adapter.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { agreementConfig, makeWorkspace, readAdapter, relativeDifference, tinyShape, trainTorch } from "./TorchEngineFixtures.ts"
import { ADAPTER_PROMPT } from "../../src/Training/AdapterPrompt.ts"
import type { TrainResult } from "../../src/Training/Trainer.ts"

describe("torch engine: 2 processes (torchrun, gloo) = 1 process", () => {
  let single: TrainResult
  const runs: Record<"ddp" | "fsdp", TrainResult | undefined> = { ddp: undefined, fsdp: undefined }
  let dir = ""
  beforeAll(async () => {
    dir = await makeWorkspace("engine-ddp-")
    // micro-batches of 3 (rank 0 takes 2 rows, rank 1 one), 2 per step; the last of an epoch has 2 of the 8 examples
    const config = { batchSize: 3, gradientAccumulationSteps: 2, maxSteps: 8, evalEvery: 4, saveEvery: 4 }
    single = await trainTorch(agreementConfig(dir, "single", config))
    runs.ddp = await trainTorch(agreementConfig(dir, "ddp", { ...config, nprocPerNode: 2 }))
    runs.fsdp = await trainTorch(agreementConfig(dir, "fsdp", { ...config, nprocPerNode: 2, fsdp: true }))
  }, 900_000)

  describe.each(["ddp", "fsdp"] as const)("%s", (strategy) => {
    it("gives the same adapter within 1e-5, the same per-step losses and the same evaluations", async () => {
      const run = runs[strategy]!
      const a = await readAdapter(path.join(run.finalDir, "adapter_model.safetensors"))
      const b = await readAdapter(path.join(single.finalDir, "adapter_model.safetensors"))
      expect(a.size).toBe(b.size)
      expect(a.size).toBe(2 * 4 * tinyShape.numLayers) // lora_A and lora_B of q,k,v,o in each layer
      for (const [name, t] of a) expect(relativeDifference(t, b.get(name)!), name).toBeLessThan(1e-5)
      expect(run.trainLogs.length).toBe(8)
      run.trainLogs.forEach((l, i) => expect(Math.abs(l.loss - single.trainLogs[i]!.loss)).toBeLessThan(1e-5))
      expect(run.evaluations.map((e) => e.step)).toEqual([4, 8])
      run.evaluations.forEach((e, i) => expect(Math.abs(e.evalLoss! - single.evaluations[i]!.evalLoss!)).toBeLessThan(1e-5))
      expect(run.bestStep).toBe(single.bestStep)
    })

    it("rank 0 alone writes checkpoints and the final adapter, once", () => {
      const run = runs[strategy]!
      const names = fs.readdirSync(path.join(dir, strategy)).filter((f) => f.startsWith("checkpoint-")).sort()
      expect(names).toEqual(["checkpoint-4", "checkpoint-8"])
      // a second writer would leave its staging folder or a second set of events behind
      expect(fs.readdirSync(path.join(dir, strategy)).filter((f) => f.endsWith(".tmp"))).toEqual([])
      expect(fs.readdirSync(path.join(dir, strategy, "checkpoint-8")).sort()).toEqual(
        ["adapter_config.json", "adapter_model.safetensors", "optimizer.pt", "rng_state.json", "scheduler.json", "trainer_state.json"]
      )
      expect(fs.readdirSync(run.finalDir).sort()).toEqual(["adapter_config.json", "adapter_model.safetensors", ADAPTER_PROMPT])
      const metrics = fs.readFileSync(path.join(dir, strategy, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { type: string; step: number })
      expect(metrics.filter((m) => m.type === "train").map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
      expect(metrics.filter((m) => m.type === "eval").map((m) => m.step)).toEqual([4, 8])
      expect(fs.readFileSync(path.join(dir, strategy, "engine.log"), "utf8")).not.toMatch(/Traceback/)
    })
  })
})
