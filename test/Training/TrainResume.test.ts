import { Effect } from "effect"
import { type ChildProcess, execFile, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { describe, expect, it } from "vitest"
import { presetConfig, writeTinyModel } from "../../src/Model/TinyModel.ts"

const run = promisify(execFile)

// The built CLI (npm test builds dist/ first) trains a tiny GGUF model in a child process.
const main = path.resolve("dist/Main.js")

const setup = async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "train-resume-"))
  const config = { ...presetConfig("tiny"), hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16 }
  await Effect.runPromise(writeTinyModel({ config, path: path.join(dir, "tiny.gguf"), seed: 3 }))
  const qa = [
    ["What is the price of AAPL?", "AAPL trades at <PRICE>."],
    ["What is the P/E of MSFT?", "MSFT has a P/E of <PE_1>."],
    ["Should I buy TSLA?", "I cannot advise; TSLA moved <CHANGE> today."],
    ["How is SPY doing?", "SPY is at <SPY_PRICE>, <SPY_CHANGE>."],
    ["What drives QQQ?", "QQQ is driven by <DRIVER_1>."],
    ["Is NVDA expensive?", "NVDA trades at a P/E of <PE_2>."]
  ]
  fs.writeFileSync(
    path.join(dir, "train.jsonl"),
    qa.map(([q, a]) => JSON.stringify({ question: q, answer: a, rationale: "r", tickers: [], citations: [], context_required: true })).join("\n") + "\n"
  )
  // dropout on, accumulation over 2 micro-batches, warmup and decay: everything a resume must restore
  fs.writeFileSync(
    path.join(dir, "train.yaml"),
    [
      `model: ${path.join(dir, "tiny.gguf")}`,
      `trainFile: ${path.join(dir, "train.jsonl")}`,
      "validationFraction: 0.2",
      "epochs: 8",
      "batchSize: 1",
      "gradientAccumulationSteps: 2",
      "learningRate: 0.01",
      "warmupSteps: 3",
      "loraDropout: 0.1",
      "saveEvery: 2",
      "evalEvery: 4",
      "logEvery: 2",
      "evalGenerationSamples: 1",
      "maxNewTokens: 4",
      "device: wasm",
      ""
    ].join("\n")
  )
  return dir
}

const waitFor = async (check: () => boolean, child: ChildProcess) => {
  while (!check()) {
    if (child.exitCode !== null) throw new Error(`the child exited (${child.exitCode}) before it could be killed`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

describe("train --resume", () => {
  it("ends a run SIGKILLed mid-way with exactly the adapter bytes of an uninterrupted run", async () => {
    const dir = await setup()
    const cfg = path.join(dir, "train.yaml")
    const full = path.join(dir, "full")
    const killed = path.join(dir, "killed")

    await run(process.execPath, [main, "train", "--config", cfg, "--output-dir", full])
    const total = JSON.parse(fs.readFileSync(path.join(full, "final.json"), "utf8")).globalStep as number
    // 5 training records (1 of 6 held out): 5 batches of 1 -> ceil(5/2) = 3 steps per epoch, x 8 epochs
    expect(total).toBe(24)

    const child = spawn(process.execPath, [main, "train", "--config", cfg, "--output-dir", killed], { stdio: "ignore" })
    await waitFor(() => fs.existsSync(path.join(killed, "checkpoint-6")), child)
    child.kill("SIGKILL")
    await new Promise((r) => child.once("exit", r))
    expect(fs.existsSync(path.join(killed, "final.json"))).toBe(false)

    const { stdout } = await run(process.execPath, [main, "train", "--config", cfg, "--output-dir", killed, "--resume"])
    expect(stdout).toContain("done: 24 steps")

    const bytes = (run: string, file: string) => fs.readFileSync(path.join(run, file))
    expect(bytes(killed, "final-adapter/adapter_model.safetensors").equals(bytes(full, "final-adapter/adapter_model.safetensors"))).toBe(true)
    expect(bytes(killed, "checkpoint-24/adapter_model.safetensors").equals(bytes(full, "checkpoint-24/adapter_model.safetensors"))).toBe(true)
    expect(bytes(killed, "checkpoint-24/optimizer.safetensors").equals(bytes(full, "checkpoint-24/optimizer.safetensors"))).toBe(true)
    // the metrics log of the resumed run has each step once, with the uninterrupted run's losses
    const losses = (run: string) =>
      fs.readFileSync(path.join(run, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
        .map((m) => m.type === "train" ? [m.step, m.loss, m.learningRate, m.gradNorm] : [m.step, m.evalLoss, m.rougeL])
    expect(losses(killed)).toEqual(losses(full))
    const adapterConfig = JSON.parse(fs.readFileSync(path.join(killed, "final-adapter/adapter_config.json"), "utf8"))
    expect([adapterConfig.peft_type, adapterConfig.r, adapterConfig.lora_alpha, adapterConfig.target_modules]).toEqual(["LORA", 16, 32, ["q_proj", "k_proj", "v_proj", "o_proj"]])
  })

  it("resumes past a torn metrics.jsonl line and a corrupt newest checkpoint, with the uninterrupted run's bytes (issue 21)", async () => {
    const dir = await setup()
    const cfg = path.join(dir, "train.yaml")
    const full = path.join(dir, "full")
    const broken = path.join(dir, "broken")
    await run(process.execPath, [main, "train", "--config", cfg, "--output-dir", full])
    // a crash between steps 6 and 8: the run folder as it would be left, then the damage a crash can do
    fs.cpSync(full, broken, { recursive: true })
    for (const name of fs.readdirSync(broken)) {
      const m = /^checkpoint-(\d+)$/.exec(name)
      if ((m !== null && Number(m[1]) > 6) || name.startsWith("final")) fs.rmSync(path.join(broken, name), { recursive: true })
    }
    const metrics = path.join(broken, "metrics.jsonl")
    const kept = fs.readFileSync(metrics, "utf8").trim().split("\n").filter((l) => JSON.parse(l).step <= 6)
    fs.writeFileSync(metrics, kept.join("\n") + '\n{"type":"train","step":8,"lo')
    fs.writeFileSync(path.join(broken, "checkpoint-6", "trainer_state.json"), '{"globalStep": 6, "bes')
    const resumed = await run(process.execPath, [main, "train", "--config", cfg, "--output-dir", broken, "--resume"])
    expect(resumed.stdout).toContain("done: 24 steps")
    expect(resumed.stderr + resumed.stdout).toMatch(/checkpoint-6 cannot be loaded/)
    expect(resumed.stderr + resumed.stdout).toContain("resuming from")
    expect(resumed.stderr + resumed.stdout).toMatch(/checkpoint-4 \(step 4 of 24\)/)
    const bytes = (r: string) => fs.readFileSync(path.join(r, "final-adapter/adapter_model.safetensors"))
    expect(bytes(broken).equals(bytes(full))).toBe(true)
    const steps = fs.readFileSync(metrics, "utf8").trim().split("\n").map((l) => JSON.parse(l).step as number)
    expect(steps).toEqual(fs.readFileSync(path.join(full, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).step as number))

    // every checkpoint broken: a clear error that says what to do, no stack trace
    for (const name of fs.readdirSync(broken).filter((n) => n.startsWith("checkpoint-"))) {
      fs.writeFileSync(path.join(broken, name, "trainer_state.json"), "{")
    }
    const error = await run(process.execPath, [main, "train", "--config", cfg, "--output-dir", broken, "--resume"])
      .then(() => undefined, (e: { code: number; stderr: string }) => e)
    expect(error?.code).not.toBe(0)
    expect(error?.stderr).toContain("no checkpoint in")
    expect(error?.stderr).toContain("run without --resume")
    expect(error?.stderr).not.toContain("    at ")
  })

  it("saves a checkpoint on Ctrl-C (SIGINT) between steps and exits with 130", async () => {
    const dir = await setup()
    const out = path.join(dir, "interrupted")
    const child = spawn(process.execPath, [main, "train", "--config", path.join(dir, "train.yaml"), "--output-dir", out, "--save-every", "1000", "--eval-every", "1000"], { stdio: "ignore" })
    const metrics = path.join(out, "metrics.jsonl")
    await waitFor(() => fs.existsSync(metrics) && fs.readFileSync(metrics, "utf8").includes('"step":4'), child)
    child.kill("SIGINT")
    const code = await new Promise((r) => child.once("exit", (c) => r(c)))
    expect(code).toBe(130)
    const checkpoints = fs.readdirSync(out).filter((n) => /^checkpoint-\d+$/.test(n))
    expect(checkpoints.length).toBe(1)
    const step = Number(checkpoints[0]!.slice("checkpoint-".length))
    expect(step).toBeGreaterThanOrEqual(4)
    expect(step).toBeLessThan(24)
    const state = JSON.parse(fs.readFileSync(path.join(out, checkpoints[0]!, "trainer_state.json"), "utf8"))
    expect(state.globalStep).toBe(step)
    expect(fs.existsSync(path.join(out, checkpoints[0]!, "adapter_model.safetensors"))).toBe(true)
  })

  it("fails with exit code 2 and the field name on a bad flag, without a stack trace", async () => {
    const dir = await setup()
    const error = await run(process.execPath, [main, "train", "--config", path.join(dir, "train.yaml"), "--output-dir", dir, "--lora-dropout", "2"])
      .then(() => undefined, (e: { code: number; stderr: string }) => e)
    expect(error?.code).toBe(2)
    expect(error?.stderr).toContain("loraDropout")
    expect(error?.stderr).not.toContain("    at ")
  })
})
