/**
 * The dataset-only CLI (see Main.ts, which restarts the process with its memory settings, then loads
 * this). `npm run build` bundles this file with everything it imports into one (scripts/bundle-dataset.ts):
 * Node's ESM loader pays per module, and this graph is about 200 modules of `effect` and
 * `@effect/platform-node`.
 *
 * Single modules, never a package index: `@effect/platform-node` loads every Node service, and `effect`
 * and `effect/cli` every module of the library, so the whole dataset stage imports `effect/Effect`,
 * `effect/Schema`… (unbundled, the indexes cost 0.2 s and 60 ms of start-up; bundled, they would keep
 * code that is never run).
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as Command from "effect/cli/Command"
import * as Effect from "effect/Effect"
import packageJson from "../../package.json" with { type: "json" }
import { datasetCommand } from "./Cli.ts"

datasetCommand.pipe(
  Command.run({ version: packageJson.version }),
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain
)
