import { NodeServices } from "@effect/platform-node"
import { Effect, Exit } from "effect"
import * as fsSync from "node:fs"
import * as os from "node:os"
import * as nodePath from "node:path"
import { describe, expect, it } from "vitest"
import { parseFlagValue, resolveTrainConfig, type TrainConfigError } from "../../src/Training/TrainConfig.ts"

const tmpFile = (name: string, text: string) => {
  const dir = fsSync.mkdtempSync(nodePath.join(os.tmpdir(), "train-config-"))
  const file = nodePath.join(dir, name)
  fsSync.writeFileSync(file, text)
  return file
}
const resolve = (file: string | undefined, overrides: Record<string, unknown>) =>
  Effect.runPromiseExit(resolveTrainConfig(file, overrides).pipe(Effect.provide(NodeServices.layer)))
const failure = async (file: string | undefined, overrides: Record<string, unknown>) => {
  const exit = await resolve(file, overrides)
  if (Exit.isSuccess(exit)) throw new Error("expected a failure")
  const error = exit.cause.reasons.find((r) => r._tag === "Fail")
  return (error as unknown as { error: TrainConfigError }).error
}

describe("train config", () => {
  it("has the seed's defaults and lets a YAML file then flags override them", async () => {
    const file = tmpFile("cfg.yaml", "model: base.gguf\ntrainFile: train.jsonl\noutputDir: runs/a\nr: 8\nlearningRate: 1.0e-3\ntargetModules: all-linear\n")
    const exit = await resolve(file, { r: parseFlagValue("r", "4"), packing: parseFlagValue("packing", "true") })
    if (!Exit.isSuccess(exit)) throw new Error(String(exit.cause))
    const c = exit.value
    expect([c.r, c.learningRate, c.targetModules, c.packing]).toEqual([4, 1e-3, "all-linear", true])
    expect([c.epochs, c.batchSize, c.gradientAccumulationSteps, c.warmupSteps, c.logEvery, c.saveEvery, c.evalEvery]).toEqual([3, 4, 4, 100, 10, 500, 500])
    expect([c.loraAlpha, c.loraDropout, c.metricForBest, c.mode]).toEqual([32, 0.1, "rouge", "lora"])
  })

  it("reads JSON files too and parses module lists from flags", async () => {
    const file = tmpFile("cfg.json", JSON.stringify({ model: "m", trainFile: "t", outputDir: "o" }))
    const exit = await resolve(file, { targetModules: parseFlagValue("targetModules", "q_proj, v_proj") })
    if (!Exit.isSuccess(exit)) throw new Error(String(exit.cause))
    expect(exit.value.targetModules).toEqual(["q_proj", "v_proj"])
  })

  it("names the field and the file of a bad value", async () => {
    const file = tmpFile("bad.yaml", "model: m\ntrainFile: t\noutputDir: o\nloraDropout: 1.5\n")
    const e = await failure(file, {})
    expect(e.field).toBe("loraDropout")
    expect(e.message).toContain("bad.yaml")
    expect(e.message).toContain("loraDropout")
  })

  it("rejects unknown fields, bad flag values and unknown modules by name", async () => {
    const file = tmpFile("typo.yaml", "model: m\ntrainFile: t\noutputDir: o\nlearning_rate: 0.1\n")
    expect((await failure(file, {})).field).toBe("learning_rate")
    expect((await failure(undefined, { model: "m", trainFile: "t", outputDir: "o", batchSize: parseFlagValue("batchSize", "four") })).field).toBe("batchSize")
    expect((await failure(undefined, { model: "m", trainFile: "t", outputDir: "o", targetModules: ["q_proj", "qkv"] })).field).toBe("targetModules.1")
    expect((await failure(undefined, { trainFile: "t", outputDir: "o" })).field).toBe("model")
  })

  it("reports YAML syntax errors with the line", async () => {
    const file = tmpFile("broken.yaml", "model: m\ntrainFile: [t\n")
    const e = await failure(file, {})
    expect(e.source).toMatch(/broken\.yaml:\d+/)
  })
})
