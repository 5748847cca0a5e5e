import { execFile } from "node:child_process"
import { describe, expect, it } from "vitest"
import { isSupportedNode, unsupportedNodeMessage } from "../../src/Shared/NodeVersion.ts"

const run = (args: ReadonlyArray<string>) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, args, { timeout: 60_000 }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr }))
  })

// what an older `node` reports, set before the entry runs (process.versions.node is configurable)
const pretend = (version: string) =>
  `data:text/javascript,Object.defineProperty(process.versions,"node",{value:${JSON.stringify(version)}})`

describe("the Node version check", () => {
  it("accepts 22.19 and later, refuses older", () => {
    expect(["22.19.0", "v22.19.0", "22.20.1", "23.0.0", "24.21.0"].map(isSupportedNode)).toEqual([true, true, true, true, true])
    expect(["22.18.9", "20.20.2", "v18.0.0", "12.22.0"].map(isSupportedNode)).toEqual([false, false, false, false])
  })

  it("makes dist/Main.js print what to run, and exit 1, on an older Node", async () => {
    const r = await run(["--import", pretend("20.20.2"), "dist/Main.js", "--help"])
    expect(r.code).toBe(1)
    expect(r.stderr.trim()).toBe(unsupportedNodeMessage("20.20.2"))
    expect(r.stderr).toContain("finetune-finance needs Node ≥ 22.19 (found 20.20.2): use npm start -- … or ./node_modules/.bin/node dist/Main.js")
    expect(r.stdout).toBe("") // the CLI itself never loaded
  })

  it("loads the CLI on the project's Node", async () => {
    const r = await run(["dist/Main.js", "--help"])
    expect(r.code).toBe(0)
    expect(r.stdout).toContain("finetune-finance <subcommand>")
  })
})
