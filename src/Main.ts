#!/usr/bin/env node
/**
 * The CLI entry point. It only wires the stages' commands and the Node platform together;
 * every command lives in its stage folder (`src/<Stage>/Cli.ts`).
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect } from "effect"
import { Command } from "effect/cli"
import packageJson from "../package.json" with { type: "json" }
// stage commands (each stage adds exactly one import and one entry below)
import { exportCommand, serveCommand } from "./Serving/Cli.ts"
import { routeCommand } from "./Router/Cli.ts"
import { trainCommand } from "./Training/TrainCli.ts"
import { evalCommand } from "./Evaluation/Cli.ts"
import { datasetCommand } from "./Dataset/Cli.ts"
import { modelCommand } from "./Training/ModelCli.ts"
import { pipelineCommand } from "./Pipeline.ts"

const root = Command.make("finetune-finance").pipe(
  Command.withDescription(
    "Finance Q&A JSONL -> validated dataset -> LoRA/QLoRA fine-tuned Llama-family model -> evaluation -> GGUF + server on :8000 -> router"
  )
)

const stageCommands = [
  exportCommand, serveCommand,
  routeCommand,
  trainCommand,
  evalCommand,
  datasetCommand,
  modelCommand,
  pipelineCommand,
] as const

root.pipe(
  Command.withSubcommands(stageCommands),
  Command.run({ version: packageJson.version }),
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain
)
