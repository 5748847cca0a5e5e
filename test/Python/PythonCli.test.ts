/**
 * `finetune-finance python check` as a user runs it (the built CLI, dist/Main.js): the report for a given
 * interpreter, and the one-line error with exit code 1 for a --python that is not Python.
 */
import { spawnSync } from "node:child_process"
import { describe, expect, it } from "vitest"
import { formatCheck } from "../../src/Python/Cli.ts"
import { PythonRuntime } from "../../src/Python/PythonEnv.ts"
import { projectRoot, testPython } from "../support/python.ts"

const cli = (...args: Array<string>) =>
  spawnSync(process.execPath, ["dist/Main.js", "python", "check", ...args], { cwd: projectRoot, encoding: "utf8", timeout: 300_000 })

interface CheckJson {
  readonly executable: string
  readonly source: string
  readonly pythonVersion: string
  readonly packages: ReadonlyArray<{ name: string; version: string | null; range: string; inRange: boolean }>
  readonly outOfRange: ReadonlyArray<string>
  readonly torch: { torch?: string; cudaAvailable?: boolean; devices?: ReadonlyArray<unknown>; error?: string }
}

describe("python check", () => {
  it("reports the interpreter, every declared package against its range, and what torch sees (--json, --require-cuda)", () => {
    // one run (torch's import is the slow part): --require-cuda's exit code must agree with the report
    const run = cli("--python", testPython(), "--json", "--require-cuda")
    const report = JSON.parse(run.stdout) as CheckJson
    expect(report.executable).toBe(testPython())
    expect(report.source).toBe("flag")
    const torch = report.packages.find((p) => p.name === "torch")!
    expect(torch.range).toBe(">=2.5,<3")
    expect(report.packages.every((p) => p.inRange)).toBe(true)
    expect(report.packages.map((p) => p.name)).toContain("sacrebleu")
    // torch's own version string (a CUDA wheel carries +cuXXX, which the metadata version may not)
    expect(report.torch.error).toBeUndefined()
    expect(report.torch.torch!.split("+")[0]).toBe(torch.version!.split("+")[0])
    expect(typeof report.torch.cudaAvailable).toBe("boolean")
    expect(report.torch.devices!.length > 0).toBe(report.torch.cudaAvailable)

    // exit 4 (unavailable) on a machine without a CUDA device, 0 with one
    if (report.torch.cudaAvailable === true) {
      expect(run.stderr).toBe("")
      expect(run.status).toBe(0)
    } else {
      expect(run.stderr).toMatch(/^python check: torch \S+ in \S+ sees no CUDA device \(--require-cuda\)\n$/)
      expect(run.status).toBe(4)
    }
  })

  it("formats the same facts as a table", () => {
    const runtime = new PythonRuntime({
      executable: "/opt/py/bin/python", source: "flag", pythonVersion: "3.12.1", packages: { torch: "2.3.0" },
      outOfRange: ["torch 2.3.0 is outside >=2.5,<3"], packageRoot: "/x/python", action: "external"
    })
    const text = formatCheck(runtime, [{ name: "torch", version: "2.3.0", range: ">=2.5,<3", inRange: false }], {
      torch: "2.3.0+cu121", cudaBuild: "12.1", cudaAvailable: true, devices: [{ index: 0, name: "NVIDIA H200", memoryGiB: 139.8 }], mpsAvailable: false
    })
    expect(text.split("\n")).toEqual([
      "interpreter   /opt/py/bin/python",
      "source        --python",
      "python        3.12.1",
      "",
      "package  version  declared range  ok",
      "torch    2.3.0    >=2.5,<3        NO",
      "",
      "outside the declared ranges (the run continues; results may differ):",
      "  torch 2.3.0 is outside >=2.5,<3",
      "",
      "torch         2.3.0+cu121 (CUDA build: 12.1)",
      "cuda          available, 1 device(s)",
      "  cuda:0      NVIDIA H200, 139.8 GiB",
      "mps           not available"
    ])
  })

  it("a --python that is not Python: one line on stderr, no stack trace, exit 1", () => {
    const run = cli("--python", "/bin/echo")
    expect(run.status).toBe(1)
    expect(run.stdout).toBe("")
    expect(run.stderr).toBe(
      "python check: --python /bin/echo is not a Python interpreter: it did not answer a Python probe (exit 0); give the path of a Python 3.10+ interpreter\n"
    )
  })
})
