/**
 * `train [--config file.yaml|json] [--resume] [--<field> value ...]`: LoRA / QLoRA / full fine-tuning.
 * The config file and flags are merged over the seed's defaults, validated, printed and saved in the run folder.
 *
 * Exit codes are the project's one table (`exitCodeOf` in Shared/Errors.ts): 1 a bad flag or a missing file,
 * 2 an invalid config, model or data file, 3 training failed, 4 no usable device or Python; Ctrl-C saves a
 * checkpoint and exits with 130.
 */
import { Console, Effect, Layer, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { PythonEnv } from "../Python/PythonEnv.ts"
import { Progress } from "../Shared/Progress.ts"
import { describeCommand, withDefault } from "../Shared/CliHelp.ts"
import { reportErrors } from "../Shared/Errors.ts"
import { LrSchedulerType } from "./LrSchedule.ts"
import { BestMetric, configFieldKinds, defaultTrainConfig, parseFlagValue, resolveTrainConfig, TrainConfig, TrainMode } from "./TrainConfig.ts"
import { resolveModelArgument } from "../Model/ModelFetch.ts"
import { TrainingEngine } from "./TrainingEngine.ts"

const descriptions: Record<keyof TrainConfig, string> = {
  model: "base model: a GGUF file or a Hugging Face folder",
  trainFile: "training records (JSONL: seed records, chat messages or prompt/completion)",
  validationFile: "held-out records (JSONL); default: hold out validation-fraction of the training file",
  validationFraction: "fraction of the training file held out when there is no validation file",
  outputDir: "run folder: checkpoints, metrics.jsonl, train_config.json, final adapter",
  mode: "lora, qlora (NF4 4-bit base) or full (all weights)",
  r: "LoRA rank",
  loraAlpha: "LoRA alpha",
  loraDropout: "LoRA dropout",
  useRslora: "rsLoRA scaling alpha/sqrt(r)",
  targetModules: "comma-separated modules (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj) or all-linear",
  epochs: "epochs",
  maxSteps: "stop after this many optimizer steps",
  batchSize: "examples per micro-batch",
  gradientAccumulationSteps: "micro-batches per optimizer step",
  learningRate: "peak learning rate",
  lrScheduler: "learning-rate schedule after warmup",
  warmupSteps: "linear warmup steps",
  weightDecay: "AdamW decoupled weight decay",
  adamBeta1: "AdamW beta1",
  adamBeta2: "AdamW beta2",
  adamEpsilon: "AdamW epsilon",
  maxGradNorm: "gradient-norm clipping, 0 disables",
  maxSeqLength: "truncate examples to this many tokens",
  packing: "pack several examples per row without cross-attention",
  seed: "seed of data order, dropout and LoRA init",
  logEvery: "log every N steps",
  saveEvery: "checkpoint every N steps",
  evalEvery: "evaluate every N steps",
  saveTotalLimit: "keep the newest N checkpoints plus the best",
  metricForBest: "picks the final adapter",
  earlyStoppingPatience: "stop after N evaluations without improvement",
  evalGenerationSamples: "validation records generated greedily and scored with ROUGE-L at each evaluation",
  maxNewTokens: "generation length at evaluation",
  promptLayout: "seed | chatml | llama3 | mistral (chat layouts put the answer in the model's assistant turn)",
  device: "the tfjs backend (tfjs engine)",
  engine: "tfjs (in-process), torch (PyTorch + PEFT in Python) or auto (torch when the Python env is usable) (default tfjs)",
  nprocPerNode: "torch engine: processes per node under torchrun (data-parallel; default 1)",
  nnodes: "torch engine: number of nodes (multi-node torchrun; default 1)",
  nodeRank: "torch engine: this node's rank, 0 .. nnodes-1",
  masterAddr: "torch engine: rendezvous address (node 0's host) for multi-node runs",
  masterPort: "torch engine: rendezvous port (default 29500)",
  fsdp: "torch engine: FSDP (shard decoder layers) instead of DDP",
  deepspeed: "torch engine: DeepSpeed config file (ZeRO-2/3; needs the deepspeed package)",
  gradientCheckpointing: "torch engine: gradient checkpointing (less activation memory)",
  threads: "torch engine: intra-op threads per process"
}

const kebab = (s: string) => s.replace(/[A-Z]/g, (m) => `-${m.toLowerCase()}`)
const fields = Object.keys(configFieldKinds) as Array<keyof TrainConfig>

/** Fields whose values are a fixed set: their flags list the choices. */
const choices: Partial<Record<keyof TrainConfig, ReadonlyArray<string>>> = {
  mode: TrainMode.literals,
  lrScheduler: LrSchedulerType.literals,
  metricForBest: BestMetric.literals,
  device: TrainConfig.fields.device.literals,
  engine: TrainConfig.fields.engine.schema.literals
}

/** The seed's default, as help shows it (the flags stay unset so a config file's value wins over the default). */
const defaultText = (field: keyof TrainConfig): string | undefined => {
  const value: unknown = (defaultTrainConfig as Partial<Record<keyof TrainConfig, unknown>>)[field]
  return value === undefined ? undefined : Array.isArray(value) ? value.join(",") : String(value)
}

const describeField = (field: keyof TrainConfig): string => {
  const shown = defaultText(field)
  return shown === undefined ? descriptions[field] : `${descriptions[field]} (default ${shown})`
}

const fieldFlag = (field: keyof TrainConfig): Flag.Flag<Option.Option<string | number | boolean>> => {
  const name = kebab(field)
  const kind = configFieldKinds[field]
  const listed = choices[field]
  const flag: Flag.Flag<string | number | boolean> = kind === "boolean"
    ? Flag.Boolean(name)
    : kind === "int"
    ? Flag.Int(name)
    : kind === "number"
    ? Flag.Finite(name)
    : listed !== undefined
    ? Flag.Literals(name, listed)
    : Flag.String(name)
  return flag.pipe(Flag.withDescription(describeField(field)), Flag.optional)
}

const fieldFlags = Object.fromEntries(fields.map((f) => [f, fieldFlag(f)])) as Record<
  keyof TrainConfig,
  Flag.Flag<Option.Option<string | number | boolean>>
>

export const trainCommand = Command.make(
  "train",
  {
    ...fieldFlags,
    config: Flag.String("config").pipe(Flag.withDescription("config file (JSON or YAML); flags override it"), Flag.optional),
    resume: Flag.Boolean("resume").pipe(
      Flag.withDescription("continue from the newest checkpoint in the run folder"),
      withDefault(false)
    ),
    python: Flag.String("python").pipe(
      Flag.withDescription("torch engine: the Python interpreter to use as it is (default: FINETUNE_PYTHON, else the managed .venv)"),
      Flag.optional
    )
  },
  Effect.fn("train")(function*(flags) {
    const overrides: Record<string, unknown> = {}
    for (const f of fields) {
      const v = flags[f]
      if (Option.isSome(v)) overrides[f] = typeof v.value === "string" ? parseFlagValue(f, v.value) : v.value
    }
    const resolved = yield* resolveTrainConfig(Option.getOrUndefined(flags.config), overrides)
    // a catalog name (`--model smollm2-135m-instruct`) becomes the cached file's path, fetched on first use
    const config = { ...resolved, model: yield* resolveModelArgument(resolved.model) }
    yield* Console.log(`resolved config:\n${JSON.stringify(config, null, 2)}`)
    const engine = TrainingEngine.layer(config.engine ?? "tfjs").pipe(
      Layer.provide(PythonEnv.layer({ python: Option.getOrUndefined(flags.python) }))
    )
    const result = yield* TrainingEngine.use((t) => t.train(config, { resume: flags.resume })).pipe(
      Effect.provide(Layer.merge(engine, Progress.layerTerminal))
    )
    if (result.globalStep < result.totalSteps && !result.stoppedEarly) {
      yield* Console.log(`stopped at step ${result.globalStep} of ${result.totalSteps}; continue with --resume`)
    } else {
      yield* Console.log(
        `done: ${result.globalStep} steps, best step ${result.bestStep}${result.bestMetric === null ? "" : ` (${config.metricForBest} ${result.bestMetric.toFixed(4)})`}, ` +
          `${result.tokensPerSecond.toFixed(0)} tokens/s; final weights in ${result.finalDir}`
      )
    }
  }, reportErrors("train"))
).pipe(describeCommand("fine-tune a Llama-family model with LoRA, QLoRA (4-bit NF4 base) or all weights, with checkpoints and resume"))
