/**
 * `eval run --model` as a user runs it (dist/Main.js in a child process, a project-made GGUF): Ctrl-C mid-run
 * exits 130 with one line and no stack trace, keeps the finished samples, and `--resume` skips them; the run says
 * which llama.cpp threads it computes with (the thread policy's, or `--threads`).
 */
import { Effect } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { presetConfig, writeTinyModel } from "../../src/Model/TinyModel.ts"

const main = path.resolve("dist/Main.js")
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ff-eval-interrupt-"))
const model = path.join(dir, "tiny.gguf")
const split = path.join(dir, "test.jsonl")
const SAMPLES = 30

const records = Array.from({ length: SAMPLES }, (_, i) => ({
  question: `What is the P/E ratio of AAPL in scenario ${i}?`,
  answer: "The P/E ratio is 28.5. This is not financial advice.",
  rationale: "r",
  tickers: ["AAPL"],
  citations: [],
  context_required: false
}))

const evalRun = (args: ReadonlyArray<string>) => {
  const child = spawn(process.execPath, [main, "eval", "run", "--split", split, "--model", model, "--concurrency", "1", "--max-tokens", "96", ...args], {
    stdio: ["ignore", "pipe", "pipe"]
  })
  let stderr = ""
  let stdout = ""
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()))
  child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
  return { child, exited, stderr: () => stderr, stdout: () => stdout }
}

const lines = (file: string) => fs.existsSync(file) ? fs.readFileSync(file, "utf8").split("\n").filter((l) => l !== "") : []

const waitFor = async (check: () => boolean, what: string) => {
  for (let i = 0; i < 1200; i++) {
    if (check()) return
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error(`timed out waiting for ${what}`)
}

const children: Array<ChildProcess> = []

beforeAll(async () => {
  await Effect.runPromise(writeTinyModel({ config: presetConfig("tiny"), seed: 5, path: model, initStd: 0.1 }))
  fs.writeFileSync(split, records.map((r) => JSON.stringify(r)).join("\n") + "\n")
})

afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL")
  fs.rmSync(dir, { recursive: true, force: true })
})

describe("eval run interrupted", () => {
  it("Ctrl-C exits 130 with one line, keeps the finished samples, and --resume skips them", async () => {
    const out = path.join(dir, "run")
    const generations = path.join(out, "generations.jsonl")
    const run = evalRun(["--out", out])
    children.push(run.child)
    await waitFor(() => lines(generations).length >= 2, "two samples to finish")
    run.child.kill("SIGINT")
    const code = await run.exited
    const stderr = run.stderr()
    expect(code).toBe(130)
    expect(stderr).not.toMatch(/\bat .+\.(ts|js):\d+/)
    expect(stderr).not.toContain("DisposedError")
    const kept = lines(generations)
    expect(kept.length).toBeGreaterThanOrEqual(2)
    expect(kept.length).toBeLessThan(SAMPLES)
    for (const line of kept) expect(JSON.parse(line).error).toBeUndefined()
    const interrupted = stderr.split("\n").filter((l) => l.startsWith("eval: interrupted"))
    expect(interrupted).toEqual([`eval: interrupted; ${kept.length} finished samples kept in ${generations}; rerun with --resume to continue`])
    // the thread policy's count for a 13 MB model: one thread
    expect(stderr).toMatch(/llama\.cpp: 1 thread \(auto: up to 1 for the model size, \d+ cores?, [\d.]+ busy\)/)

    // resuming skips what was kept and finishes the rest, here on a given thread count
    const resumed = evalRun(["--out", out, "--resume", "--threads", "1"])
    children.push(resumed.child)
    expect(await resumed.exited).toBe(0)
    expect(resumed.stderr()).toContain(`evaluating ${SAMPLES} samples (${kept.length} already done)`)
    expect(resumed.stderr()).toContain("llama.cpp: 1 thread (--threads)")
    expect(resumed.stdout()).toContain(`${SAMPLES}/${SAMPLES} scored (0 failed)`)
    expect(lines(generations).length).toBe(SAMPLES)
  }, 180_000)
})
