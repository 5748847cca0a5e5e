import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { exitCodeOf } from "../../src/Shared/Errors.ts"

// A file the configuration names that does not exist: one line naming it, the input-error exit code, nothing left
// behind.
// Through the built CLI (npm test builds first), from a fresh folder as a new user would run it.
const main = path.resolve("dist/Main.js")

interface Ran {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}
const cli = (cwd: string, ...args: Array<string>): Promise<Ran> =>
  new Promise((resolve) => {
    execFile(process.execPath, [main, "pipeline", ...args], { cwd }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr })
    })
  })

const expectOneLine = (ran: Ran, ...mentions: Array<string>) => {
  expect(ran.code, ran.stderr).toBe(exitCodeOf("input"))
  expect(ran.stderr).not.toMatch(/\n\s+at |ENOENT/)
  const lines = ran.stderr.trim().split("\n")
  expect(lines).toHaveLength(1)
  for (const m of mentions) expect(lines[0]).toContain(m)
}

describe("pipeline with input files that do not exist", () => {
  it("--data missing.jsonl names the file and the flag, exits as an input error and creates no run folder", async () => {
    const cwd = fs.mkdtempSync(path.join(os.tmpdir(), "pipeline-inputs-"))
    const ran = await cli(cwd, "--data", "missing.jsonl", "--out", "run")
    expectOneLine(ran, "missing.jsonl", "--data", "no such file")
    expect(fs.existsSync(path.join(cwd, "run"))).toBe(false)
  })

  it("--model missing.gguf names the file and the flag, exits as an input error and creates no run folder", async () => {
    const cwd = fs.mkdtempSync(path.join(os.tmpdir(), "pipeline-inputs-"))
    const ran = await cli(cwd, "--model", "missing.gguf", "--out", "run")
    expectOneLine(ran, "missing.gguf", "--model", "no such file")
    expect(fs.existsSync(path.join(cwd, "run"))).toBe(false)
  })

  it("the README's Llama-3 example config, run where its files are not, names the data file", async () => {
    const readme = fs.readFileSync("README.md", "utf8")
    const at = readme.indexOf("An example config for Llama-3-8B-Instruct")
    expect(at).toBeGreaterThan(0)
    const block = /```yaml\n([\s\S]*?)```/.exec(readme.slice(at))
    expect(block).not.toBeNull()
    const yaml = block![1]!
    expect(yaml).toContain("file: my_qa.jsonl")
    const cwd = fs.mkdtempSync(path.join(os.tmpdir(), "pipeline-inputs-"))
    fs.writeFileSync(path.join(cwd, "my-llama3.yaml"), yaml)
    const ran = await cli(cwd, "--config", "my-llama3.yaml", "--require-improvement")
    expectOneLine(ran, "my_qa.jsonl", "data.file")
    expect(fs.readdirSync(cwd)).toEqual(["my-llama3.yaml"])

    // with the data file there, the model file is the one named
    fs.writeFileSync(path.join(cwd, "my_qa.jsonl"), "")
    const model = await cli(cwd, "--config", "my-llama3.yaml")
    expectOneLine(model, "models/Meta-Llama-3-8B-Instruct.Q8_0.gguf", "model.base")
  })

  it("a --config file that does not exist is named, as an input error", async () => {
    const cwd = fs.mkdtempSync(path.join(os.tmpdir(), "pipeline-inputs-"))
    const ran = await cli(cwd, "--config", "nope.yaml")
    expectOneLine(ran, "nope.yaml", "no such file")
    expect(fs.readdirSync(cwd)).toEqual([])
  })
})
