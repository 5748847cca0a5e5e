/**
 * One exit-code table for every command (src/Shared/Errors.ts): a missing input file exits with the same code
 * through each real CLI (the built dist/Main.js), with a one-line message that names the file and no stack trace;
 * every --help page shows the table and every default, and numeric defaults belong to numeric flags.
 */
import { execFile } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { exitCodeOf, exitCodesHelp } from "../src/Shared/Errors.ts"

const cli = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  new Promise<{ code: number; stderr: string }>((resolve) => {
    execFile(process.execPath, ["dist/Main.js", ...args], {
      env: { PATH: process.env["PATH"] ?? "", HOME: process.env["HOME"] ?? tmpdir(), LLAMA_CPP_GPU: "cpu", ...env },
      timeout: 120_000
    }, (error, _stdout, stderr) => resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stderr }))
  })

describe("a missing input file", () => {
  const dir = mkdtempSync(join(tmpdir(), "exit-codes-"))
  const data = join(dir, "missing.jsonl")
  const model = join(dir, "missing.gguf")
  const cases: ReadonlyArray<readonly [string, ReadonlyArray<string>, string, Record<string, string>?]> = [
    ["dataset validate", ["dataset", "validate", data], data],
    ["dataset split", ["dataset", "split", data, "-o", join(dir, "ds")], data],
    ["eval run", ["eval", "run", "--split", data, "--endpoint", "http://127.0.0.1:9", "--out", join(dir, "eval")], data],
    ["train", ["train", "--model", model, "--train-file", data, "--output-dir", join(dir, "train"), "--device", "cpu"], model],
    ["serve", ["serve", "--base", model, "--port", "0"], model],
    ["model info", ["model", "info", model], model],
    ["export adapter", ["export", "adapter", "--adapter", join(dir, "missing-adapter"), "--base", model, "--out", join(dir, "a.gguf")], "missing-adapter"],
    ["route --context", ["route", "hello", "--context", join(dir, "missing.json")], "missing.json", { GROQ_API_KEY: "k", GROQ_BASE_URL: "http://127.0.0.1:9" }],
    ["eval check", ["eval", "check", "--db", join(dir, "missing.db")], "missing.db"],
    ["pipeline", ["pipeline", "--data", data, "--out", join(dir, "pipeline")], data]
  ]

  // one process at a time: the machine's cores are shared
  it("exits 1 (input) in every command, naming the file, without a stack trace", async () => {
    const results: Array<string> = []
    for (const [name, args, mentions, env] of cases) {
      const r = await cli(args, env)
      expect(r.code, `${name}: ${r.stderr}`).toBe(exitCodeOf("input"))
      expect(r.stderr, name).toContain(mentions)
      expect(r.stderr, name).not.toMatch(/^\s+at /m)
      results.push(name)
    }
    expect(results).toHaveLength(cases.length)
    // nothing was created for the inputs that were not there
    expect(readdirSync(dir).filter((f) => f.startsWith("missing"))).toEqual([])
  }, 600_000)
})

describe("every command's --help (docs/cli-reference.md, which test/CliReference.test.ts holds to the code)", () => {
  const reference = readFileSync("docs/cli-reference.md", "utf8")
  const pages = reference.split(/^## /m).slice(1)

  it("shows the one exit-code table", () => {
    expect(pages.length).toBeGreaterThan(20)
    for (const page of pages) expect(page, page.split("\n")[0]).toContain(exitCodesHelp)
  })

  it("gives numeric defaults to numeric flags only, and shows serve's host and port defaults", () => {
    const flagLines = reference.split("\n").filter((l) => /^ {2}--[a-z]/.test(l))
    const numericDefault = flagLines.filter((l) => /\(default -?\d+(?:\.\d+)?(?:e[+-]?\d+)?\)/.test(l) && !/^ {2}--(help|version)/.test(l))
    expect(numericDefault.length).toBeGreaterThan(30)
    for (const line of numericDefault) expect(line).toMatch(/^ {2}--[a-z0-9-]+(?:, -[a-z])? (integer|number) /)
    expect(reference).toMatch(/--host string\s+address to listen on \(default 127\.0\.0\.1\)/)
    expect(reference).toMatch(/--port integer\s+port \(0 = any free port\) \(default 8000\)/)
    expect(reference).toMatch(/--r integer\s+LoRA rank \(default 16\)/)
    expect(reference).toMatch(/--learning-rate number\s+peak learning rate \(default 0\.0002\)/)
  })
})

describe("CLI sources", () => {
  // Effect's Flag.withDefault does not show the default in --help; CliHelp.withDefault does
  it("set flag defaults through CliHelp.withDefault", () => {
    const offenders: Array<string> = []
    const walk = (folder: string): void => {
      for (const entry of readdirSync(folder, { withFileTypes: true })) {
        const file = join(folder, entry.name)
        if (entry.isDirectory()) walk(file)
        else if (file.endsWith(".ts") && readFileSync(file, "utf8").includes("Flag.withDefault(")) offenders.push(file)
      }
    }
    walk("src")
    expect(offenders.filter((f) => !f.endsWith(join("Shared", "CliHelp.ts")))).toEqual([])
  })
})
