/**
 * The CLI: it only wires the stages' commands and the Node platform together; every command lives in its stage
 * folder (`src/Main.ts`, the entry, checks the Node version first and then loads this file). A stage's module
 * graph (tfjs, llama.cpp, …) is imported only when that stage's command
 * is asked for, so `dataset split` does not pay for the trainer's memory; with no or an unknown command word,
 * every stage is loaded so the root help lists them all.
 */
import type { NodeServices } from "@effect/platform-node"
import type { Command as CommandModule } from "effect/cli"
import { enableCompileCache } from "node:module"
import { semiSpaceReexec } from "./Dataset/Reexec.ts"

const requested = process.argv.slice(2).find((arg) => !arg.startsWith("-"))
// The streaming ingest wants a small young generation, which V8 only takes at start-up: re-exec before loading more.
if (requested === "dataset") semiSpaceReexec()
// V8's on-disk code cache (in the temp folder): compiling the modules is a third of the CLI's start-up
enableCompileCache()

const { NodeRuntime, NodeServices: NodeServicesModule } = await import("@effect/platform-node")
const { Effect, Logger } = await import("effect")
const { Command } = await import("effect/cli")
const { describeCommand } = await import("./Shared/CliHelp.ts")
const { describeCause, failCommand } = await import("./Shared/Errors.ts")
const { default: packageJson } = await import("../package.json", { with: { type: "json" } })

/** A stage's commands need at most the Node platform's services (each provides its own stage layers). */
type StageCommand = CommandModule.Command<any, any, any, unknown, NodeServices.NodeServices>
type StageCommands = () => Promise<ReadonlyArray<StageCommand>>

/** Command word → the stage module that defines it, grouped as the root help shows them. */
const stages: ReadonlyArray<{ readonly group: string; readonly words: Record<string, StageCommands> }> = [
  { group: "Dataset", words: { dataset: () => import("./Dataset/Cli.ts").then((m) => [m.datasetCommand]) } },
  {
    group: "Training",
    words: {
      model: () => import("./Model/ModelCli.ts").then((m) => [m.modelCommand]),
      models: () => import("./Model/ModelCli.ts").then((m) => [m.modelsCommand]),
      train: () => import("./Training/TrainCli.ts").then((m) => [m.trainCommand])
    }
  },
  { group: "Evaluation", words: { eval: () => import("./Evaluation/Cli.ts").then((m) => [m.evalCommand]) } },
  {
    group: "Serving",
    words: {
      export: () => import("./Serving/Cli.ts").then((m) => [m.exportCommand]),
      serve: () => import("./Serving/Cli.ts").then((m) => [m.serveCommand])
    }
  },
  { group: "Router", words: { route: () => import("./Router/Cli.ts").then((m) => [m.routeCommand]) } },
  { group: "Python", words: { python: () => import("./Python/Cli.ts").then((m) => [m.pythonCommand]) } },
  { group: "End to end", words: { pipeline: () => import("./Pipeline/PipelineCli.ts").then((m) => [m.pipelineCommand]) } }
]

const groups = (await Promise.all(
  stages.map(async ({ group, words }) => {
    const wanted = Object.entries(words).filter(([word]) =>
      requested === undefined || !stages.some((s) => requested in s.words) || word === requested
    )
    const commands = (await Promise.all(wanted.map(([, load]) => load()))).flat()
    return { group, commands }
  })
)).flatMap(({ group, commands }) => {
  const [first, ...rest] = commands
  return first === undefined ? [] : [{ group, commands: [first, ...rest] as const }]
})

Command.make("finetune-finance").pipe(
  describeCommand(
    "Finance Q&A JSONL -> validated dataset -> LoRA/QLoRA fine-tuned Llama-family model -> evaluation -> GGUF + server on :8000 -> router"
  ),
  Command.withSubcommands(groups),
  Command.run({ version: packageJson.version }),
  // a bug is still one line for the user, never a stack trace (`--log-level debug` shows where it came from)
  Effect.catchDefect((defect) =>
    Effect.andThen(
      Effect.logDebug("internal error", defect),
      failCommand("finetune-finance", `internal error: ${describeCause(defect)} (please report it)`, "failure")
    )
  ),
  Effect.provide(NodeServicesModule.layer),
  // stdout is for command output (JSON, answers, tables); every log line goes to stderr
  Effect.provideService(Logger.LogToStderr, true),
  NodeRuntime.runMain
)
