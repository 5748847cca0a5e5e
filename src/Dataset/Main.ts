#!/usr/bin/env node
/**
 * A dataset-only entry point: `node dist/Dataset/Main.js split …` runs the same `dataset` command as
 * `node dist/Main.js dataset split …` without loading the other stages (tfjs, llama.cpp), so a data-prep
 * box or CI job starts faster and with about 100 MB less memory.
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect } from "effect"
import { Command } from "effect/cli"
import packageJson from "../../package.json" with { type: "json" }
import { datasetCommand } from "./Cli.ts"

datasetCommand.pipe(
  Command.run({ version: packageJson.version }),
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain
)
