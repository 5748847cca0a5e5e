/**
 * The torch engine's resume and Ctrl-C through the CLI: `train --engine torch` killed with SIGKILL mid-run (node and
 * the Python engine, the whole process group), then `--resume`, gives the same adapter bytes as an uninterrupted
 * run (dropout on: the per-step reseeding is checked too); SIGINT saves a checkpoint and exits 130.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { agreementConfig, makeWorkspace, trainTorch } from "./TorchEngineFixtures.ts"
import { testPython } from "../support/python.ts"
import type { TrainConfig } from "../../src/Training/TrainConfig.ts"

const main = path.resolve("src/Main.ts")

const resumeConfig = (dir: string, run: string) =>
  agreementConfig(dir, run, { loraDropout: 0.1, maxSteps: 120, epochs: 60, saveEvery: 10, evalEvery: 40, logEvery: 10 })

const cliArgs = (c: TrainConfig) => [
  main, "train", "--engine", "torch", "--python", testPython(),
  "--model", c.model, "--train-file", c.trainFile, "--validation-file", c.validationFile!, "--output-dir", c.outputDir,
  "--lora-dropout", String(c.loraDropout), "--r", String(c.r), "--lora-alpha", String(c.loraAlpha), "--epochs", String(c.epochs),
  "--max-steps", String(c.maxSteps), "--batch-size", String(c.batchSize), "--gradient-accumulation-steps", String(c.gradientAccumulationSteps),
  "--learning-rate", String(c.learningRate), "--warmup-steps", String(c.warmupSteps), "--log-every", String(c.logEvery),
  "--eval-every", String(c.evalEvery), "--save-every", String(c.saveEvery), "--metric-for-best", c.metricForBest,
  "--eval-generation-samples", "0", "--threads", "1", "--device", "cpu"
]

// its own process group, so a signal reaches node and the Python engine together, as a terminal's Ctrl-C does
const start = (c: TrainConfig) => spawn(process.execPath, cliArgs(c), { detached: true, stdio: ["ignore", "pipe", "pipe"] })

const exited = (child: ChildProcess) =>
  new Promise<number | null>((resolve) => child.once("close", (code, signal) => resolve(code ?? (signal === null ? null : -1))))

const waitForCheckpoint = async (runDir: string, child: ChildProcess) => {
  for (;;) {
    if (child.exitCode !== null) throw new Error(`train exited (${child.exitCode}) before a checkpoint appeared`)
    if (fs.existsSync(runDir) && fs.readdirSync(runDir).some((f) => /^checkpoint-\d+$/.test(f))) return
    await new Promise((r) => setTimeout(r, 20))
  }
}

const stepsIn = (runDir: string) => fs.readdirSync(runDir).flatMap((f) => /^checkpoint-(\d+)$/.exec(f)?.[1] ?? []).map(Number).sort((a, b) => a - b)

describe("torch engine: resume and Ctrl-C", () => {
  let dir = ""
  beforeAll(async () => {
    dir = await makeWorkspace("engine-resume-")
  }, 120_000)

  it("kill -9 mid-run, then --resume: the same adapter bytes as an uninterrupted run", async () => {
    const whole = await trainTorch(resumeConfig(dir, "whole"))
    expect(whole.globalStep).toBe(120)

    const killed = resumeConfig(dir, "killed")
    const child = start(killed)
    await waitForCheckpoint(killed.outputDir, child)
    process.kill(-child.pid!, "SIGKILL")
    await exited(child)
    const left = stepsIn(killed.outputDir)
    expect(left.length).toBeGreaterThan(0)
    expect(left.at(-1)!).toBeLessThan(120) // killed mid-run, not after the end

    const resumed = await trainTorch(killed, { resume: true })
    expect(resumed.globalStep).toBe(120)
    expect(resumed.bestStep).toBe(whole.bestStep)
    for (const f of ["adapter_model.safetensors", "adapter_config.json"]) {
      expect(fs.readFileSync(path.join(resumed.finalDir, f)).equals(fs.readFileSync(path.join(whole.finalDir, f))), f).toBe(true)
    }
    // the replayed history: each logged step once, as in the uninterrupted run
    const steps = (run: string) => fs.readFileSync(path.join(dir, run, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => (JSON.parse(l) as { type: string; step: number }))
      .map((l) => `${l.type}:${l.step}`)
    expect(steps("killed")).toEqual(steps("whole"))
  }, 600_000)

  it("SIGINT saves a checkpoint at the step reached and exits 130; the traceback-free log is in the run folder", async () => {
    const config = resumeConfig(dir, "ctrl-c")
    const child = start(config)
    let stderr = ""
    child.stderr!.on("data", (d) => (stderr += String(d)))
    await waitForCheckpoint(config.outputDir, child)
    process.kill(-child.pid!, "SIGINT")
    expect(await exited(child)).toBe(130)
    const steps = stepsIn(config.outputDir)
    const state = JSON.parse(fs.readFileSync(path.join(config.outputDir, `checkpoint-${steps.at(-1)}`, "trainer_state.json"), "utf8")) as { globalStep: number }
    expect(state.globalStep).toBe(steps.at(-1))
    expect(state.globalStep).toBeLessThan(120)
    expect(fs.existsSync(path.join(config.outputDir, "final-adapter"))).toBe(false)
    expect(stderr).not.toContain("Traceback")
    expect(fs.existsSync(path.join(config.outputDir, "engine.log"))).toBe(true)
  }, 300_000)
})
