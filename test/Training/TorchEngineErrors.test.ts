/**
 * The torch engine's typed errors: what fails in Python reaches the user as one line naming the cause (a
 * TrainError whose stage the CLI maps to an exit code), never a traceback; the traceback is in <run>/engine.log.
 */
import { Effect, Layer } from "effect"
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { TrainingEngine } from "../../src/Training/TrainingEngine.ts"
import type { TrainConfig } from "../../src/Training/TrainConfig.ts"
import { agreementConfig, makeWorkspace, torchEnvLayer } from "./TorchEngineFixtures.ts"

const failureOf = (config: TrainConfig) =>
  Effect.runPromise(
    TrainingEngine.use((e) => e.train(config)).pipe(
      Effect.flip,
      Effect.provide(Layer.mergeAll(TrainingEngine.layerTorch().pipe(Layer.provide(torchEnvLayer())), NodeServices.layer))
    )
  )

describe("torch engine errors", () => {
  let dir = ""
  beforeAll(async () => {
    dir = await makeWorkspace("engine-errors-")
  }, 120_000)

  it("QLoRA without CUDA: a device error that says what to do instead", async () => {
    const config = agreementConfig(dir, "qlora", { mode: "qlora" })
    const e = await failureOf(config)
    expect(e._tag).toBe("TrainError")
    expect(e.stage).toBe("device")
    expect(e.detail).toMatch(/QLoRA on the torch engine needs a CUDA device/)
    expect(e.detail).toContain("--engine tfjs")
    expect(e.detail).not.toContain("Traceback")
    expect(fs.readFileSync(path.join(config.outputDir, "engine.log"), "utf8")).toContain("Traceback")
  }, 300_000)

  it("--device gpu where torch sees no CUDA device: a device error naming torch's build", async () => {
    const e = await failureOf(agreementConfig(dir, "gpu", { device: "gpu" }))
    expect(e.stage).toBe("device")
    expect(e.detail).toMatch(/device cuda was asked for but torch sees no CUDA device \(torch \d/)
  }, 300_000)

  it("full fine-tuning and a bad base folder fail before Python starts, naming the field or file", async () => {
    const full = await failureOf(agreementConfig(dir, "full", { mode: "full" }))
    expect([full.stage, full.detail]).toEqual(["config", "mode: the torch engine trains lora and qlora adapters; full fine-tuning runs on --engine tfjs"])
    const missing = await failureOf(agreementConfig(dir, "missing", { model: path.join(dir, "no-such-model") }))
    expect(missing.stage).toBe("model")
    expect(missing.detail).toContain("no-such-model")
  }, 300_000)
})
