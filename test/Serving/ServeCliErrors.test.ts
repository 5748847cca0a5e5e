/**
 * `serve` failing the way a user should read it (issue 19), through the built CLI (`dist/Main.js`): one line on
 * stderr, no stack trace, the exit code of the error's kind; and the warning for an open bind without a key
 * (issue 21).
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { startServe, tempDir, writeBase } from "./ServeFixtures.ts"

const execFileAsync = promisify(execFile)
const dir = tempDir("serve-cli-errors")
const base = path.join(dir, "tiny.gguf")
const main = path.resolve("dist/Main.js")

const serve = (args: ReadonlyArray<string>) =>
  execFileAsync(process.execPath, [main, "serve", "--base", base, "--gpu", "off", "--threads", "1", ...args], { encoding: "utf8", timeout: 60_000 }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr })
  )

const noStackTrace = (text: string) => {
  expect(text).not.toMatch(/\n\s+at .+:\d+/)
  expect(text).not.toMatch(/RangeError|NotFound: FileSystem/)
}

let blocker: net.Server
let busyPort = 0

beforeAll(async () => {
  await writeBase(base)
  blocker = net.createServer()
  await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve))
  busyPort = (blocker.address() as net.AddressInfo).port
})
afterAll(async () => {
  await new Promise((r) => blocker.close(r))
  fs.rmSync(dir, { recursive: true, force: true })
})

describe("serve errors", () => {
  it("a port out of range: one line, exit 1 (bad input)", async () => {
    const r = await serve(["--port", "99999"])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain("error: port 99999 is out of range: use 0-65535")
    noStackTrace(r.stderr)
  })

  it("a port in use: says which and why, exit 4 (unavailable)", async () => {
    const r = await serve(["--port", String(busyPort)])
    expect(r.code).toBe(4)
    expect(r.stderr).toContain(`error: port ${busyPort} is in use (EADDRINUSE)`)
    noStackTrace(r.stderr)
  })

  it("a missing adapter file: names it, exit 1 (bad input)", async () => {
    const missing = path.join(dir, "missing.gguf")
    const r = await serve(["--adapter", missing, "--port", "0"])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`error: adapter file not found: ${missing}`)
    noStackTrace(r.stderr)
  })

  it("warns when it listens beyond loopback without an API key", async () => {
    const started = await startServe(main, ["--base", base, "--host", "0.0.0.0", "--port", "0", "--gpu", "off", "--threads", "1", "--parallel", "1"])
    try {
      expect(started.stderr()).toContain("listening on 0.0.0.0 without an API key")
      expect((await fetch(`${started.url}/health`)).status).toBe(200)
    } finally {
      started.child.kill("SIGKILL")
    }
  })
})
