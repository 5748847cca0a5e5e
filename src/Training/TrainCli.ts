/**
 * `train [--config file.yaml|json] [--resume] [--<field> value ...]`: LoRA / QLoRA / full fine-tuning.
 * The config file and flags are merged over the seed's defaults, validated, printed and saved in the run folder.
 *
 * Exit codes: 0 trained (or stopped early), 2 bad config or flag, 3 unreadable or invalid model/data files,
 * 4 no usable device, 1 training failed; Ctrl-C saves a checkpoint and exits with 130.
 */
import { Console, Effect, Layer, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { PythonEnv } from "../Python/PythonEnv.ts"
import { Progress } from "../Shared/Progress.ts"
import { configFieldKinds, parseFlagValue, resolveTrainConfig, type TrainConfig } from "./TrainConfig.ts"
import { TrainingEngine } from "./TrainingEngine.ts"
import { failCommand } from "../CommandFailed.ts"

const fail = (message: string, exitCode: number) => failCommand("train", message, exitCode)

const descriptions: Record<keyof TrainConfig, string> = {
  model: "base model: a GGUF file or a Hugging Face folder",
  trainFile: "training records (JSONL: seed records, chat messages or prompt/completion)",
  validationFile: "held-out records (JSONL); default: hold out validation-fraction of the training file",
  validationFraction: "fraction of the training file held out when there is no validation file (default 0.1)",
  outputDir: "run folder: checkpoints, metrics.jsonl, train_config.json, final adapter",
  mode: "lora | qlora (NF4 4-bit base) | full (all weights) (default lora)",
  r: "LoRA rank (default 16)",
  loraAlpha: "LoRA alpha (default 32)",
  loraDropout: "LoRA dropout (default 0.1)",
  useRslora: "rsLoRA scaling alpha/sqrt(r) (default false)",
  targetModules: "comma-separated modules (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj) or all-linear",
  epochs: "epochs (default 3)",
  maxSteps: "stop after this many optimizer steps",
  batchSize: "examples per micro-batch (default 4)",
  gradientAccumulationSteps: "micro-batches per optimizer step (default 4)",
  learningRate: "peak learning rate (default 2e-4)",
  lrScheduler: "linear | cosine | constant, after warmup (default linear)",
  warmupSteps: "linear warmup steps (default 100)",
  weightDecay: "AdamW decoupled weight decay (default 0)",
  adamBeta1: "AdamW beta1 (default 0.9)",
  adamBeta2: "AdamW beta2 (default 0.999)",
  adamEpsilon: "AdamW epsilon (default 1e-8)",
  maxGradNorm: "gradient-norm clipping, 0 disables (default 1)",
  maxSeqLength: "truncate examples to this many tokens (default 512)",
  packing: "pack several examples per row without cross-attention (default false)",
  seed: "seed of data order, dropout and LoRA init (default 42)",
  logEvery: "log every N steps (default 10)",
  saveEvery: "checkpoint every N steps (default 500)",
  evalEvery: "evaluate every N steps (default 500)",
  saveTotalLimit: "keep the newest N checkpoints plus the best",
  metricForBest: "rouge | eval_loss: picks the final adapter (default rouge)",
  earlyStoppingPatience: "stop after N evaluations without improvement",
  evalGenerationSamples: "validation records generated greedily and scored with ROUGE-L at each evaluation (default 16)",
  maxNewTokens: "generation length at evaluation (default 64)",
  promptLayout: "seed | llama3 | mistral (default seed)",
  device: "auto | gpu | wasm | cpu (default auto)",
  engine: "tfjs (in-process, default) | torch (PyTorch + PEFT in Python) | auto (torch when the Python env is usable)",
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

const fieldFlags = Object.fromEntries(
  fields.map((f) => [
    f,
    configFieldKinds[f] === "boolean"
      ? Flag.Boolean(kebab(f)).pipe(Flag.withDescription(descriptions[f]), Flag.optional)
      : Flag.String(kebab(f)).pipe(Flag.withDescription(descriptions[f]), Flag.optional)
  ])
) as Record<keyof TrainConfig, Flag.Flag<Option.Option<string | boolean>>>

export const trainCommand = Command.make(
  "train",
  {
    ...fieldFlags,
    config: Flag.String("config").pipe(Flag.withDescription("config file (JSON or YAML); flags override it"), Flag.optional),
    resume: Flag.Boolean("resume").pipe(
      Flag.withDescription("continue from the newest checkpoint in the run folder"),
      Flag.withDefault(false)
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
      if (Option.isSome(v)) overrides[f] = typeof v.value === "boolean" ? v.value : parseFlagValue(f, v.value)
    }
    const config = yield* resolveTrainConfig(Option.getOrUndefined(flags.config), overrides).pipe(
      Effect.catchTag("TrainConfigError", (e) => fail(e.message, 2))
    )
    yield* Console.log(`resolved config:\n${JSON.stringify(config, null, 2)}`)
    const engine = TrainingEngine.layer(config.engine ?? "tfjs").pipe(
      Layer.provide(PythonEnv.layer({ python: Option.getOrUndefined(flags.python) }))
    )
    const result = yield* TrainingEngine.use((t) => t.train(config, { resume: flags.resume })).pipe(
      Effect.provide(Layer.merge(engine, Progress.layerTerminal)),
      Effect.catchTags({
        TrainError: (e) =>
          fail(
            e.message,
            e.stage === "model" || e.stage === "data" || e.stage === "tokenizer" ? 3 : e.stage === "config" ? 2 : e.stage === "device" || e.stage === "python" ? 4 : 1
          )
      })
    )
    if (result.globalStep < result.totalSteps && !result.stoppedEarly) {
      yield* Console.log(`stopped at step ${result.globalStep} of ${result.totalSteps}; continue with --resume`)
    } else {
      yield* Console.log(
        `done: ${result.globalStep} steps, best step ${result.bestStep}${result.bestMetric === null ? "" : ` (${config.metricForBest} ${result.bestMetric.toFixed(4)})`}, ` +
          `${result.tokensPerSecond.toFixed(0)} tokens/s; final weights in ${result.finalDir}`
      )
    }
  })
).pipe(Command.withDescription("fine-tune a Llama-family model with LoRA, QLoRA (4-bit NF4 base) or all weights, with checkpoints and resume"))
