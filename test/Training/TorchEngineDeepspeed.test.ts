/**
 * `train --engine torch --deepspeed cfg.json` where the Python environment has no deepspeed package (the lock leaves
 * it out: it does not build without CUDA): through the CLI, under torchrun with 2 processes, the user gets one line
 * that names the package, the interpreter and what to do instead, exit 4 (unavailable), and no traceback; the
 * traceback is in engine.log, and the check runs before any model is loaded.
 */
import { execFile, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { promisify } from "node:util"
import { beforeAll, describe, expect, it } from "vitest"
import { agreementConfig, makeWorkspace } from "./TorchEngineFixtures.ts"
import { testPython } from "../support/python.ts"

const run = promisify(execFile)
const main = path.resolve("src/Main.ts")

describe("torch engine: --deepspeed without the deepspeed package", () => {
  let dir = ""
  beforeAll(async () => {
    dir = await makeWorkspace("engine-deepspeed-")
  }, 120_000)

  it("fails with a typed one-line error naming the package and what to do, before loading the model", async () => {
    // the precondition: this environment really lacks deepspeed (python/requirements.lock does not list it)
    expect(spawnSync(testPython(), ["-c", "import deepspeed"]).status).not.toBe(0)
    const c = agreementConfig(dir, "ds")
    const cfg = path.join(dir, "zero2.json")
    fs.writeFileSync(cfg, JSON.stringify({ zero_optimization: { stage: 2 } }))
    const failure = await run(process.execPath, [
      main, "train", "--engine", "torch", "--python", testPython(), "--deepspeed", cfg, "--nproc-per-node", "2",
      "--model", c.model, "--train-file", c.trainFile, "--validation-file", c.validationFile!, "--output-dir", c.outputDir,
      "--max-steps", "2", "--eval-generation-samples", "0", "--metric-for-best", "eval_loss", "--threads", "1", "--device", "cpu"
    ], { encoding: "utf8" }).then(
      () => undefined,
      (e: { code: number; stderr: string; stdout: string }) => e
    )
    expect(failure).toBeDefined()
    expect(failure!.code).toBe(4)
    const said = failure!.stderr + failure!.stdout
    expect(said).toContain(`train: python: --deepspeed ${cfg} needs the deepspeed package, which ${testPython()} cannot import`)
    expect(said).toContain("pip install deepspeed")
    expect(said).toContain("--fsdp")
    expect(said).toContain(path.join(c.outputDir, "engine.log"))
    expect(said).not.toMatch(/Traceback|File ".*\.py", line \d+/)
    const log = fs.readFileSync(path.join(c.outputDir, "engine.log"), "utf8")
    expect(log).toContain("Traceback")
    expect(log).toContain("No module named 'deepspeed'")
    // transformers prints "Loading weights" when it loads a model: the check came first
    expect(log).not.toContain("Loading weights")
    expect(fs.readdirSync(c.outputDir).filter((f) => f.startsWith("checkpoint-"))).toEqual([])
  }, 600_000)
})
