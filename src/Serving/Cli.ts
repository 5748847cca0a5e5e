/**
 * The Serving stage's commands: `export adapter`, `export merged`, `export base` and `serve`.
 *
 * Exit codes are the project's one table (`exitCodeOf` in Shared/Errors.ts): 1 a flag or a file that is missing or
 * cannot be read or written (the message names it); 2 the adapter does not fit the base (every mismatch is listed,
 * with the likely cause) or a model file is invalid; 4 the server could not load its models or bind its port.
 * Messages go to stderr without stack traces.
 */
import { Config, Console, Effect, FileSystem, Option, Path, Schema } from "effect"
import type { PlatformError } from "effect/PlatformError"
import { Command, Flag } from "effect/cli"
import * as os from "node:os"
import { ggufKeys } from "../Model/GgufKeys.ts"
import { describeThreads } from "../Model/LlamaCpp.ts"
import { PlaceholderPolicy } from "../Api/Api.ts"
import { describeServedPrompt, LayoutChoice } from "./Prompt.ts"
import { convertHfBase, exportAdapter, exportMerged, MergedType } from "./Export.ts"
import type { AdapterSpec } from "./InferenceEngine.ts"
import * as Server from "./Server.ts"
import { resolveModelArgument } from "../Model/ModelFetch.ts"
import { describeCommand, withDefault } from "../Shared/CliHelp.ts"
import { describeCause, type ErrorKind, exitCodeOf, kindOf } from "../Shared/Errors.ts"

/** Prints a failure the way a user should read it, and sets the documented exit code. */
const reportFailure = (error: { readonly _tag?: string; readonly message: string }) =>
  Console.error(`error: ${error.message}`).pipe(
    Effect.andThen(Effect.sync(() => {
      process.exitCode = exitCodeOf(kindOf(error))
    }))
  )

const progressLine = (index: number, total: number, name: string) => {
  if (index === total - 1 || index % 16 === 0) process.stderr.write(`  tensor ${index + 1}/${total} ${name}\n`)
}

const adapterCommand = Command.make("adapter", {
  adapter: Flag.String("adapter").pipe(Flag.withDescription("PEFT adapter folder (adapter_config.json + adapter_model.safetensors), e.g. RUN/final-adapter")),
  base: Flag.String("base").pipe(Flag.withDescription("the base model it was trained on: a GGUF file or a Hugging Face folder")),
  out: Flag.String("out").pipe(Flag.withDescription("the llama.cpp LoRA adapter GGUF to write")),
  type: Flag.Literals("type", ["f32", "f16"]).pipe(Flag.withDescription("tensor type of lora_a/lora_b"), withDefault("f32" as const)),
  name: Flag.String("name").pipe(Flag.optional, Flag.withDescription(`${ggufKeys.name} (default: the adapter folder's name)`))
}, (flags) =>
  Effect.flatMap(resolveModelArgument(flags.base), (base) => exportAdapter({
    adapter: flags.adapter,
    base,
    out: flags.out,
    type: flags.type === "f16" ? "F16" : "F32",
    ...(Option.isSome(flags.name) ? { name: flags.name.value } : {})
  })).pipe(
    Effect.flatMap((r) => Console.log(`wrote ${r.out}: ${r.modules} adapted modules, ${r.tensors} tensors, ${ggufKeys.adapterLoraAlpha} = ${r.alpha}, ${r.bytes} bytes`)),
    Effect.catch(reportFailure)
  )).pipe(describeCommand(
    "Convert a PEFT LoRA adapter (ours or Python PEFT's) to a llama.cpp LoRA GGUF, after checking it against the base"
  ))

const mergedCommand = Command.make("merged", {
  base: Flag.String("base").pipe(Flag.withDescription("the base model: a GGUF file, or a Hugging Face folder (config.json, safetensors, tokenizer.json); its tokenizer and chat template are kept")),
  adapter: Flag.String("adapter").pipe(Flag.withDescription("PEFT adapter folder")),
  out: Flag.String("out").pipe(Flag.withDescription("the merged model GGUF to write")),
  type: Flag.Literals("type", MergedType.literals).pipe(Flag.withDescription("tensor type of the 2-D weights"), withDefault("f16" as const))
}, (flags) =>
  Console.error(`merging ${flags.adapter} into ${flags.base} (${flags.type})`).pipe(
    Effect.andThen(exportMerged({ ...flags, onTensor: progressLine })),
    Effect.flatMap((r) => Console.log(`wrote ${r.out}: ${r.tensors} tensors, ${r.modules} modules merged, ${r.bytes} bytes`)),
    Effect.catch(reportFailure)
  )).pipe(describeCommand("Merge a PEFT LoRA adapter into its base and write a standalone GGUF (f32, f16 or q8_0)"))

const baseCommand = Command.make("base", {
  base: Flag.String("base").pipe(Flag.withDescription("a Hugging Face model folder (config.json, safetensors, tokenizer.json)")),
  out: Flag.String("out").pipe(Flag.withDescription("the GGUF to write")),
  type: Flag.Literals("type", MergedType.literals).pipe(Flag.withDescription("tensor type of the 2-D weights"), withDefault("f16" as const))
}, (flags) =>
  Console.error(`converting ${flags.base} to GGUF (${flags.type})`).pipe(
    Effect.andThen(convertHfBase({ ...flags, onTensor: progressLine })),
    Effect.flatMap((r) => Console.log(`wrote ${r.out}: ${r.tensors} tensors, ${r.bytes} bytes`)),
    Effect.catch(reportFailure)
  )).pipe(describeCommand(
    "Convert a Hugging Face base folder to a GGUF with its tokenizer and chat template, so llama.cpp can serve it with adapters exported against the folder"
  ))

export const exportCommand = Command.make("export").pipe(
  describeCommand("Export trained adapters as GGUF for llama.cpp / node-llama-cpp"),
  Command.withSubcommands([adapterCommand, mergedCommand, baseCommand])
)

/** `--adapter` names a file or folder that is not there (or cannot be read). */
class AdapterNotFound extends Schema.TaggedError<AdapterNotFound>()("AdapterNotFound", { path: Schema.String, message: Schema.String }) {
  get kind(): ErrorKind {
    return "input"
  }
  static of(path: string, cause: PlatformError) {
    const message = cause.reason._tag === "NotFound" ? `adapter file not found: ${path}` : `cannot read adapter ${path}: ${describeCause(cause)}`
    return new AdapterNotFound({ path, message })
  }
}

/**
 * `--adapter name=path` or `--adapter path` (name = file name). A PEFT folder is converted to a GGUF adapter in
 * the temp folder first, so a training run's output can be served directly.
 */
const resolveAdapters = Effect.fn("Cli.resolveAdapters")(function*(specs: ReadonlyArray<string>, base: string) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const out: Array<AdapterSpec> = []
  for (const spec of specs) {
    const eq = spec.indexOf("=")
    const file = eq > 0 ? spec.slice(eq + 1) : spec
    const name = eq > 0 ? spec.slice(0, eq) : path.basename(file).replace(/\.gguf$/i, "")
    const info = yield* fs.stat(file).pipe(Effect.mapError((e) => AdapterNotFound.of(file, e)))
    if (info.type === "Directory") {
      const converted = path.join(os.tmpdir(), `finetune-finance-${process.pid}-${name}.gguf`)
      yield* Console.error(`converting PEFT adapter ${file} -> ${converted}`)
      yield* exportAdapter({ adapter: file, base, out: converted })
      out.push({ name, path: converted })
    } else {
      out.push({ name, path: file })
    }
  }
  return out
})

/**
 * llama.cpp needs a GGUF: a Hugging Face folder base is converted (f16) into the temp folder for this run, and the
 * file removed when the server stops (it is as large as the model).
 */
const servableBase = Effect.fn("Cli.servableBase")(function*(base: string) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  // anything but a folder (a missing file included) goes to the engine, which reports what it cannot load
  const info = yield* fs.stat(base).pipe(Effect.option)
  if (Option.isNone(info) || info.value.type !== "Directory") return base
  const converted = path.join(os.tmpdir(), `finetune-finance-${process.pid}-base.gguf`)
  yield* Console.error(`converting Hugging Face folder ${base} -> ${converted} (f16; \`export base\` does it once for good)`)
  yield* Effect.addFinalizer(() => fs.remove(converted, { force: true }).pipe(Effect.ignore))
  yield* convertHfBase({ base, out: converted, type: "f16", onTensor: progressLine })
  return converted
})

export const serveCommand = Command.make("serve", {
  base: Flag.String("base").pipe(Flag.withDescription("the base model: a GGUF (or a merged model), or a Hugging Face folder (converted to a temporary GGUF first)")),
  adapters: Flag.atLeast(Flag.String("adapter"), 0).pipe(Flag.withDescription(
    "a LoRA adapter to serve over the base, as name=path or path (a GGUF adapter or a PEFT folder); repeatable. The OpenAI `model` field picks one"
  )),
  host: Flag.String("host").pipe(Flag.withDescription("address to listen on"), withDefault("127.0.0.1")),
  port: Flag.Int("port").pipe(Flag.withDescription("port (0 = any free port)"), withDefault(8000)),
  parallel: Flag.Int("parallel").pipe(Flag.withDescription("generations that run at once (sequences per context)"), withDefault(4)),
  queue: Flag.Int("queue").pipe(Flag.withDescription("requests that may wait for a slot; beyond it: 429 with Retry-After"), withDefault(32)),
  contextSize: Flag.Int("context-size").pipe(Flag.withDescription("tokens per request, prompt and answer together"), withDefault(2048)),
  threads: Flag.Int("threads").pipe(Flag.optional, Flag.withDescription(
    "llama.cpp CPU threads (default: auto, from the model's size and the cores other processes leave free, re-measured every 0.5 s)"
  )),
  gpu: Flag.Literals("gpu", ["auto", "off"]).pipe(Flag.withDescription("auto: CUDA/Vulkan/Metal where present; off: CPU"), withDefault("auto" as const)),
  defaultModel: Flag.String("default-model").pipe(Flag.optional, Flag.withDescription("model for requests that name none (default: the first adapter)")),
  modelVersion: Flag.String("model-version").pipe(Flag.optional, Flag.withDescription("model_version reported by /infer")),
  apiKey: Flag.Redacted("api-key").pipe(
    Flag.withFallbackConfig(Config.Redacted("SERVE_API_KEY")),
    Flag.optional,
    Flag.withDescription("require `Authorization: Bearer <key>` (also from SERVE_API_KEY); probes stay open")
  ),
  maxBodyBytes: Flag.Int("max-body-bytes").pipe(Flag.withDescription("larger bodies get 413"), withDefault(1024 * 1024)),
  requestTimeout: Flag.Int("request-timeout-ms").pipe(Flag.withDescription("per-request generation timeout (504)"), withDefault(60_000)),
  placeholders: Flag.Literals("placeholders", PlaceholderPolicy.literals).pipe(
    Flag.withDescription("placeholders the context cannot fill: leave them, remove them, or refuse the answer (422)"), withDefault("leave" as const)
  ),
  layout: Flag.Literals("layout", LayoutChoice.literals).pipe(
    Flag.withDescription(
      "the prompt layout of POST /infer. auto: the one each adapter was trained on (recorded by train and export; seed for an adapter without a record); the base alone: its own record, else its chat template's layout (ChatML, Llama-3, Mistral), else seed"
    ),
    withDefault("auto" as const)
  )
}, (flags) =>
  Effect.gen(function*() {
    // a catalog name (`--base smollm2-135m-instruct`) is the cached file, fetched on first use
    const named = yield* resolveModelArgument(flags.base)
    const adapters = yield* resolveAdapters(flags.adapters, named)
    const base = yield* servableBase(named)
    const options: Server.ServeOptions = {
      host: flags.host,
      port: flags.port,
      apiKey: Option.getOrUndefined(flags.apiKey),
      maxBodyBytes: flags.maxBodyBytes,
      requestTimeoutMs: flags.requestTimeout,
      placeholderPolicy: flags.placeholders,
      ...(Option.isSome(flags.modelVersion) ? { modelVersion: flags.modelVersion.value } : {}),
      engine: {
        base,
        adapters,
        parallel: flags.parallel,
        queueSize: flags.queue,
        contextSize: flags.contextSize,
        gpu: flags.gpu,
        layout: flags.layout,
        ...(Option.isSome(flags.threads) ? { threads: flags.threads.value } : {}),
        ...(Option.isSome(flags.defaultModel) ? { defaultModel: flags.defaultModel.value } : {})
      }
    }
    yield* Console.error(`loading ${flags.base}${adapters.length > 0 ? ` with ${adapters.map((a) => a.name).join(", ")}` : ""} …`)
    // the listener is up while the models load (/health answers 503 until then)
    const running = yield* Server.startServer(options)
    const threads = running.models[0] === undefined ? "" : `, llama.cpp ${describeThreads(running.models[0].threads)}`
    yield* Console.error(`/infer prompt layout: ${running.models.map((m) => `${m.id} ${describeServedPrompt(m.prompt)}`).join(", ")}`)
    yield* Console.error(`serving ${running.models.map((m) => m.id).join(", ")} on ${running.url} (${options.apiKey === undefined ? "no auth" : "bearer auth"}${threads}); POST /infer, /v1/chat/completions, /v1/completions`)
    return yield* Effect.never
  }).pipe(
    Effect.scoped,
    Effect.catch(reportFailure)
  )).pipe(describeCommand(
    "Serve a GGUF base (+ LoRA adapters) over HTTP: the app's POST /infer and GET /health, OpenAI-compatible /v1/*, /metrics"
  ))
