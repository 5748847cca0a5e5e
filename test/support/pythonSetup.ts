/**
 * vitest globalSetup: makes (or finds) the Python environment ONCE for the whole run, through the same
 * PythonEnv the CLI uses, and exports FINETUNE_PYTHON so every test file's fork inherits it (forks start after
 * this runs, with this process's environment). If the environment cannot be made the run fails here with
 * PythonEnv's message: no oracle test is ever skipped for want of Python.
 *
 * Resolution is PythonEnv's: FINETUNE_PYTHON when the caller set it (a GPU machine's own env), otherwise the
 * managed .venv at the repository root, created from python/requirements.lock on first use.
 */
import { Effect } from "effect"
import type { TestProject } from "vitest/node"
import { describeRuntime, PythonEnv } from "../../src/Python/PythonEnv.ts"
import { Progress } from "../../src/Shared/Progress.ts"
import { projectRoot } from "./python.ts"

declare module "vitest" {
  export interface ProvidedContext {
    /** what the globalSetup resolved, for tests that check the hand-over to the forks */
    readonly pythonRuntime: { readonly executable: string; readonly source: string; readonly pythonVersion: string }
  }
}

export default async function setup(project: TestProject): Promise<void> {
  const result = await Effect.runPromise(
    PythonEnv.use((env) => env.ensure).pipe(
      Effect.provide(PythonEnv.layer({ projectRoot })),
      Effect.provide(Progress.layerTerminal),
      Effect.result
    )
  )
  if (result._tag === "Failure") {
    const error = new Error(`the Python environment for the oracle tests could not be made (${result.failure.reason}): ${result.failure.message}`)
    error.stack = error.message // the reason is the news; a stack into the setup would only bury it
    throw error
  }
  const runtime = result.success
  process.env.FINETUNE_PYTHON = runtime.executable
  process.stderr.write(`python for tests: ${describeRuntime(runtime)}\n`)
  for (const line of runtime.outOfRange) process.stderr.write(`python for tests: warning: ${line}\n`)
  project.provide("pythonRuntime", { executable: runtime.executable, source: runtime.source, pythonVersion: runtime.pythonVersion })
}
