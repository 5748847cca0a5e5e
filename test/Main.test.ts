import { describe, expect, it } from "vitest"
import { execFile } from "node:child_process"
import { promisify } from "node:util"
import packageJson from "../package.json" with { type: "json" }

const run = promisify(execFile)

// The built CLI (npm test builds first) answers --help and --version on the project's Node.
describe("the built CLI", () => {
  it("prints its version", async () => {
    const { stdout } = await run(process.execPath, ["dist/Main.js", "--version"])
    expect(stdout.trim()).toBe(`finetune-finance v${packageJson.version}`)
  })
  it("prints help naming the program", async () => {
    const { stdout } = await run(process.execPath, ["dist/Main.js", "--help"])
    expect(stdout).toContain("USAGE")
    expect(stdout).toContain("finetune-finance")
  })
})
