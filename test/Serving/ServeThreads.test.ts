/**
 * `serve` passes the llama.cpp thread policy through (dist/Main.js in a child process): without `--threads` the
 * startup line shows the policy's count for the model and the machine, with it the given count.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { startServe, tempDir, writeBase } from "./ServeFixtures.ts"

const main = path.resolve("dist/Main.js")
const dir = tempDir("serve-threads")
const base = path.join(dir, "tiny.gguf")

beforeAll(() => writeBase(base))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

const serveOnce = async (args: ReadonlyArray<string>) => {
  const served = await startServe(main, ["--base", base, "--port", "0", "--gpu", "off", ...args])
  try {
    const infer = await fetch(`${served.url}/infer`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ question: "What is AAPL at?", max_length: 120, temperature: 0 })
    })
    expect(infer.status).toBe(200)
    return served.stderr().split("\n").find((l) => l.startsWith("serving "))!
  } finally {
    const exited = new Promise((resolve) => served.child.on("exit", resolve))
    served.child.kill("SIGTERM")
    await exited
  }
}

describe("serve threads", () => {
  it("the startup line shows the policy's count by default and --threads when given", async () => {
    // a 2-layer d-128 model: one thread on any machine, counted against at most the cores this process may use
    const line = await serveOnce([])
    const m = new RegExp(
      `^serving tiny on http://127\\.0\\.0\\.1:\\d+ \\(no auth, llama\\.cpp 1 thread \\(auto: up to 1 for the model size, (\\d+) cores?, [\\d.]+ busy\\)\\)`
    ).exec(line)
    expect(m, line).not.toBeNull()
    expect(Number(m![1])).toBeLessThanOrEqual(os.availableParallelism())
    expect(await serveOnce(["--threads", "1"])).toContain("llama.cpp 1 thread (--threads)")
  }, 120_000)
})
