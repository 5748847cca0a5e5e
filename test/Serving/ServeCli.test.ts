/**
 * The Serving commands as a user runs them (child processes of the project's Node): `export adapter` exit codes,
 * and `serve` draining an in-flight stream on SIGTERM before it exits.
 */
import { type ChildProcess, execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { promisify } from "node:util"
import { Sse } from "effect/encoding"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { startServe, tempDir, tinyConfig, writeBase, writePeft } from "./ServeFixtures.ts"

const execFileAsync = promisify(execFile)
const dir = tempDir("cli")
const base = path.join(dir, "tiny.gguf")
const peft = path.join(dir, "run", "final")
const main = path.resolve("src/Main.ts")

const cli = (args: ReadonlyArray<string>) =>
  execFileAsync(process.execPath, [main, ...args], { encoding: "utf8" }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr })
  )

beforeAll(async () => {
  await writeBase(base)
  await writePeft(peft, tinyConfig, { r: 4, alpha: 8 })
})
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

describe("export commands", () => {
  it("export adapter writes the GGUF and says what it wrote", async () => {
    const out = path.join(dir, "adapter.gguf")
    const r = await cli(["export", "adapter", "--adapter", peft, "--base", base, "--out", out])
    expect(r.code).toBe(0)
    expect(r.stdout).toContain(`wrote ${out}: 8 adapted modules, 16 tensors, adapter.lora.alpha = 8`)
    expect(fs.statSync(out).size).toBeGreaterThan(0)
  })

  it("exits 2 (invalid data) with the mismatches (and no stack trace) when the adapter belongs to another base", async () => {
    const other = path.join(dir, "other.gguf")
    await writeBase(other, { ...tinyConfig, hiddenSize: 96, numHeads: 3, numKvHeads: 1 })
    const r = await cli(["export", "merged", "--adapter", peft, "--base", other, "--out", path.join(dir, "x.gguf"), "--type", "q8_0"])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain("error: the adapter")
    expect(r.stderr).toContain("likely cause: the adapter was trained on a different base model")
    expect(r.stderr).not.toMatch(/\bat .+\.(ts|js):\d+/)
  })

  it("exits 1 naming the folder when it is not a PEFT adapter", async () => {
    const r = await cli(["export", "adapter", "--adapter", dir, "--base", base, "--out", path.join(dir, "y.gguf")])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`${dir}: not a PEFT adapter folder: adapter_config.json is missing`)
  })
})

describe("serve", () => {
  let child: ChildProcess | undefined
  afterAll(() => {
    if (child !== undefined && child.exitCode === null) child.kill("SIGKILL")
  })

  it("serves a PEFT folder directly, and on SIGTERM finishes the in-flight stream before exiting", async () => {
    const started = await startServe(main, ["--base", base, "--adapter", `finance=${peft}`, "--port", "0", "--gpu", "off", "--threads", "1", "--parallel", "1"])
    child = started.child
    const { url } = started
    expect(started.stderr()).toContain("converting PEFT adapter")
    const exited = new Promise<number | null>((resolve) => child!.on("exit", (code, signal) => resolve(code ?? (signal === null ? null : -1))))
    const response = await fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "finance", prompt: "Once", max_tokens: 300, temperature: 0, stream: true })
    })
    expect(response.status).toBe(200)
    const events: Array<string> = []
    const parser = Sse.makeParser((e) => {
      if (e._tag === "Event") events.push(e.data)
    })
    const decoder = new TextDecoder()
    let signalled = false
    for await (const chunk of response.body!) {
      parser.feed(decoder.decode(chunk as Uint8Array, { stream: true }))
      if (!signalled && events.length > 0) {
        signalled = true
        child.kill("SIGTERM")
      }
    }
    expect(signalled).toBe(true)
    expect(events[events.length - 1]).toBe("[DONE]")
    const final = JSON.parse(events[events.length - 2]!)
    expect(final.usage.completion_tokens).toBeGreaterThan(0)
    expect(final.choices[0].finish_reason === "length").toBe(final.usage.completion_tokens === 300)
    const code = await exited
    expect(code).not.toBe(-1)
    // the listener is gone
    await expect(fetch(`${url}/health`)).rejects.toThrow()
  })

  it("exits 1 (input) when the base file is missing, 2 (data) when it is not a model", async () => {
    const missing = await cli(["serve", "--base", path.join(dir, "missing.gguf"), "--port", "0", "--gpu", "off"])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toContain("missing.gguf")
    const junk = path.join(dir, "junk.gguf")
    fs.writeFileSync(junk, "not a model at all")
    const invalid = await cli(["serve", "--base", junk, "--port", "0", "--gpu", "off"])
    expect(invalid.code, invalid.stderr).toBe(2)
    expect(invalid.stderr).toContain("junk.gguf")
    expect(invalid.stderr).not.toMatch(/^\s+at /m)
  })
})
