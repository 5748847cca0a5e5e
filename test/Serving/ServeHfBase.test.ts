/**
 * `serve --base FOLDER` with a Hugging Face folder: the folder is converted to a temporary GGUF, a PEFT adapter
 * trained against the folder is served over it, and the temporary file is gone when the server stops.
 */
import type { ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { startServe, tempDir, tinyConfig, writeHfBase, writePeft } from "./ServeFixtures.ts"

const dir = tempDir("serve-hf")
const folder = path.join(dir, "my-llama")
const peft = path.join(dir, "adapter")
const main = path.resolve("src/Main.ts")
let child: ChildProcess | undefined

beforeAll(async () => {
  await writeHfBase(folder, tinyConfig, { seed: 5 })
  await writePeft(peft, tinyConfig, { r: 4, alpha: 8 })
})
afterAll(() => {
  if (child !== undefined && child.exitCode === null) child.kill("SIGKILL")
  fs.rmSync(dir, { recursive: true, force: true })
})

describe("serve with a Hugging Face folder base", () => {
  it("converts the folder, serves /infer with the adapter, and removes the temporary GGUF on exit", async () => {
    const started = await startServe(main, ["--base", folder, "--adapter", `finance=${peft}`, "--port", "0", "--gpu", "off", "--threads", "1", "--parallel", "1"])
    child = started.child
    const { url } = started
    const stderr = started.stderr()
    const converted = /converting Hugging Face folder .* -> (\S+\.gguf)/.exec(stderr)?.[1]
    expect(converted).toBeDefined()
    expect(fs.statSync(converted!).size).toBeGreaterThan(0)
    expect(stderr).toContain("converting PEFT adapter")

    const response = await fetch(`${url}/infer`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ question: "What is AAPL trading at?", context: "AAPL price: 189.50", max_length: 120, temperature: 0 })
    })
    expect(response.status).toBe(200)
    const body = await response.json() as { answer: string; confidence: number }
    expect(typeof body.answer).toBe("string")
    expect(body.confidence).toBeGreaterThan(0)
    expect(body.confidence).toBeLessThanOrEqual(1)

    const exited = new Promise<void>((resolve) => child!.on("exit", () => resolve()))
    child.kill("SIGTERM")
    await exited
    expect(fs.existsSync(converted!)).toBe(false)
  })
})
