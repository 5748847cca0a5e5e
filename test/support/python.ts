/**
 * The test side of the Python environment. test/support/pythonSetup.ts (vitest's globalSetup) ensures the env
 * once per run through PythonEnv and exports FINETUNE_PYTHON, which every test file's fork inherits; these
 * helpers only read it, so a test never creates an environment itself.
 *
 *   const out = runPythonJson(oracleScript("bleu"), { pairs })   // one process per test file: batch the calls
 */
import { spawnSync } from "node:child_process"
import { delimiter, join, resolve } from "node:path"

/** The repository root (test/support is two folders down). */
export const projectRoot = resolve(import.meta.dirname, "..", "..")
/** The Python package `finetune_finance_py` lives here; it goes on PYTHONPATH for every spawned script. */
export const pythonPackageRoot = join(projectRoot, "python")

/** The interpreter the globalSetup resolved (managed .venv, --python's FINETUNE_PYTHON, …). */
export const testPython = (): string => {
  const python = process.env.FINETUNE_PYTHON
  if (python === undefined || python === "") {
    throw new Error(
      "FINETUNE_PYTHON is not set: test/support/pythonSetup.ts (the globalSetup in vitest.config.ts) sets it once per run; run the tests through vitest with that config"
    )
  }
  return python
}

/** Path of one of the package's oracle scripts: python/finetune_finance_py/oracles/<name>.py */
export const oracleScript = (name: string): string => join(pythonPackageRoot, "finetune_finance_py", "oracles", `${name}.py`)

export interface RunPythonOptions {
  /** default 10 minutes: the oracles import torch or transformers, which takes a few seconds on 2 cores */
  readonly timeoutMs?: number
  readonly env?: Record<string, string>
  readonly cwd?: string
}

/**
 * Runs `script` with the test Python, sends `input` as JSON on stdin, parses stdout as JSON. `script` is a path
 * ending in `.py` or inline code (run with `-c`). On a non-zero exit, a signal, a timeout or output that is not
 * JSON it throws with the exit and the script's stderr.
 */
export const runPythonJson = (script: string, input: unknown, options: RunPythonOptions = {}): unknown => {
  const python = testPython()
  const args = script.endsWith(".py") && !script.includes("\n") ? [script] : ["-c", script]
  const pythonPath = [pythonPackageRoot, process.env.PYTHONPATH].filter((p) => p !== undefined && p !== "").join(delimiter)
  const result = spawnSync(python, args, {
    input: JSON.stringify(input),
    encoding: "utf8",
    maxBuffer: 1024 * 1024 * 1024,
    timeout: options.timeoutMs ?? 600_000,
    cwd: options.cwd ?? projectRoot,
    env: { ...process.env, PYTHONPATH: pythonPath, PYTHONIOENCODING: "utf-8", ...options.env }
  })
  const label = args[0] === "-c" ? "inline script" : script
  if (result.error !== undefined) throw new Error(`${python} ${label}: ${result.error.message}\n${result.stderr ?? ""}`)
  if (result.status !== 0) {
    throw new Error(`${python} ${label} exited ${result.status ?? `on ${result.signal}`}:\n${result.stderr}`)
  }
  try {
    return JSON.parse(result.stdout)
  } catch {
    throw new Error(`${python} ${label} printed no JSON (stdout starts ${JSON.stringify(result.stdout.slice(0, 200))}):\n${result.stderr}`)
  }
}
