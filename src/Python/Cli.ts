/**
 * `python check`: which interpreter the Python side would use (--python PATH, FINETUNE_PYTHON or the managed
 * .venv, made on first use), its package versions against python/pyproject.toml's ranges, and what torch sees
 * (CUDA build, devices, MPS). On a GPU machine with its own PyTorch this is the one command to run first:
 * `finetune-finance python check --python /opt/conda/bin/python --require-cuda`.
 */
import { NodeServices } from "@effect/platform-node"
import { Console, Effect, Layer, Option, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { ChildProcess, ChildProcessSpawner } from "effect/process"
import { describeCommand, withDefault } from "../Shared/CliHelp.ts"
import { failCommand, reportErrors } from "../Shared/Errors.ts"
import { Progress } from "../Shared/Progress.ts"
import { describeRuntime, parsePyprojectDependencies, PythonEnv, type PythonRuntime, satisfies } from "./PythonEnv.ts"
import * as fs from "node:fs"
import { join } from "node:path"

/** What torch reports about itself; `error` when it cannot be imported. */
export const TorchReport = Schema.Struct({
  torch: Schema.optionalKey(Schema.String),
  cudaBuild: Schema.optionalKey(Schema.NullOr(Schema.String)),
  cudaAvailable: Schema.optionalKey(Schema.Boolean),
  devices: Schema.optionalKey(Schema.Array(Schema.Struct({ index: Schema.Int, name: Schema.String, memoryGiB: Schema.Finite }))),
  mpsAvailable: Schema.optionalKey(Schema.Boolean),
  error: Schema.optionalKey(Schema.String)
})
export type TorchReport = typeof TorchReport.Type

const torchScript = [
  "import json, sys",
  "try:",
  "    import torch",
  "except Exception as error:",
  "    print(json.dumps({'error': '%s: %s' % (type(error).__name__, error)})); sys.exit(0)",
  "devices = []",
  "available = torch.cuda.is_available()",
  "if available:",
  "    for i in range(torch.cuda.device_count()):",
  "        p = torch.cuda.get_device_properties(i)",
  "        devices.append({'index': i, 'name': p.name, 'memoryGiB': round(p.total_memory / 2**30, 1)})",
  "mps = getattr(torch.backends, 'mps', None)",
  "print(json.dumps({'torch': torch.__version__, 'cudaBuild': torch.version.cuda, 'cudaAvailable': available,",
  "                  'devices': devices, 'mpsAvailable': bool(mps is not None and mps.is_available())}))"
].join("\n")

/** Imports torch in the interpreter and asks it about CUDA and MPS. */
export const checkTorch = Effect.fn("PythonCheck.torch")(function*(runtime: PythonRuntime) {
  const spawner = yield* ChildProcessSpawner.ChildProcessSpawner
  const output = yield* spawner.string(ChildProcess.make(runtime.executable, ["-c", torchScript], { stdin: "ignore" })).pipe(
    Effect.timeout("5 minutes"),
    Effect.catch((error) => Effect.succeed(JSON.stringify({ error: `could not run ${runtime.executable}: ${String(error)}` })))
  )
  const line = output.trim().split("\n").at(-1) ?? ""
  return Option.getOrElse(
    Schema.decodeUnknownOption(Schema.fromJsonString(TorchReport))(line),
    (): TorchReport => ({ error: `torch check printed no report: ${line.slice(0, 200)}` })
  )
})

export interface PackageRow {
  readonly name: string
  readonly version: string | null
  readonly range: string
  readonly inRange: boolean
}

export const packageRows = (runtime: PythonRuntime): ReadonlyArray<PackageRow> => {
  const pyproject = fs.readFileSync(join(runtime.packageRoot, "pyproject.toml"), "utf8")
  return parsePyprojectDependencies(pyproject).map((r) => {
    const version = runtime.packages[r.name] ?? null
    return { name: r.name, version, range: r.spec, inRange: version !== null && satisfies(version, r) }
  })
}

const table = (rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)))
  return rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c]!)).join("  ").trimEnd()).join("\n")
}

export const formatCheck = (runtime: PythonRuntime, rows: ReadonlyArray<PackageRow>, torch: TorchReport): string => {
  const devices = torch.devices ?? []
  const torchLines = torch.error !== undefined
    ? [`torch         cannot be imported: ${torch.error}`]
    : [
      `torch         ${torch.torch} (CUDA build: ${torch.cudaBuild ?? "none, CPU only"})`,
      `cuda          ${torch.cudaAvailable === true ? `available, ${devices.length} device(s)` : "not available"}`,
      ...devices.map((d) => `  cuda:${d.index}      ${d.name}, ${d.memoryGiB} GiB`),
      `mps           ${torch.mpsAvailable === true ? "available" : "not available"}`
    ]
  return [
    `interpreter   ${runtime.executable}`,
    `source        ${describeRuntime(runtime).replace(/^Python \S+ at \S+ \(([^)]*)\).*$/, "$1")}`,
    `python        ${runtime.pythonVersion}`,
    "",
    table([["package", "version", "declared range", "ok"], ...rows.map((r) => [r.name, r.version ?? "missing", r.range, r.inRange ? "yes" : "NO"])]),
    ...(runtime.outOfRange.length === 0 ? [] : ["", "outside the declared ranges (the run continues; results may differ):", ...runtime.outOfRange.map((l) => `  ${l}`)]),
    "",
    ...torchLines
  ].join("\n")
}

const check = Command.make("check", {
  python: Flag.String("python").pipe(
    Flag.withDescription("use this interpreter (a user's own env; any versions, judged against the declared ranges) instead of FINETUNE_PYTHON or the managed .venv"),
    Flag.optional
  ),
  json: Flag.Boolean("json").pipe(Flag.withDescription("print the report as JSON"), withDefault(false)),
  requireCuda: Flag.Boolean("require-cuda").pipe(Flag.withDescription("exit 4 unless torch sees at least one CUDA device"), withDefault(false))
}, Effect.fn("python.check")(function*({ python, json, requireCuda }) {
  const runtime = yield* PythonEnv.use((env) => env.ensure).pipe(
    Effect.provide(PythonEnv.layer({ python: Option.getOrUndefined(python) }).pipe(Layer.provide(Progress.layerTerminal)))
  )
  const rows = packageRows(runtime)
  const torch = yield* checkTorch(runtime)
  yield* Console.log(json ? JSON.stringify({ ...runtime, packages: rows, torch }, null, 2) : formatCheck(runtime, rows, torch))
  if (torch.error !== undefined) return yield* failCommand("python check", `torch cannot be imported in ${runtime.executable}: ${torch.error}`, "input")
  if (requireCuda && (torch.devices ?? []).length === 0) {
    return yield* failCommand("python check", `torch ${torch.torch} in ${runtime.executable} sees no CUDA device (--require-cuda)`, "unavailable")
  }
}, (self) => self.pipe(Effect.provide(NodeServices.layer), reportErrors("python check")))).pipe(describeCommand(
  "Show the Python the project uses (--python PATH, FINETUNE_PYTHON, or the managed .venv made from python/requirements.lock on first use), its package versions against the declared ranges, and torch's CUDA/MPS devices"
))

export const pythonCommand = Command.make("python").pipe(
  describeCommand("The Python side (PyTorch, Hugging Face, the metric and GGUF oracles): check the environment"),
  Command.withSubcommands([check])
)
