/**
 * The `pipeline` command: flags over the config file over the defaults (PipelineConfig.ts), the run (Pipeline.ts),
 * the summary on stdout, and the exit code.
 *
 * Exit codes: the project's one table (Shared/Errors.ts), from the kind of what went wrong: a missing data, model
 * or config file is `input`, a bad config value or rejected data `data`, a broken stage `failure`,
 * `--require-improvement` not met `threshold`, a device that will not start `unavailable`.
 */
import { Console, Effect, FileSystem, Layer, Logger, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { DeviceChoice } from "../Model/Device.ts"
import { EngineChoice } from "../Training/TrainingEngine.ts"
import type { EvaluateResult } from "../Evaluation/EvaluateStage.ts"
import { describeCommand, withDefault } from "../Shared/CliHelp.ts"
import { failCommand } from "../Shared/Errors.ts"
import { layerPipelineLog } from "./PipelineProgress.ts"
import { checkInputFiles, PipelineServices, runPipeline, stageNames } from "./Pipeline.ts"
import { resolvePipelineConfig } from "./PipelineConfig.ts"

const positive = (name: string, description: string) => Flag.Int(name).pipe(Flag.withDescription(description), Flag.optional)

const flags = {
  config: Flag.String("config").pipe(Flag.withDescription("pipeline config file (YAML or JSON); see docs/config-reference.md"), Flag.optional),
  data: Flag.String("data").pipe(Flag.withDescription("your JSONL data (default: the built-in synthetic finance Q&A set)"), Flag.optional),
  model: Flag.String("model").pipe(
    Flag.withDescription(
      "the base model: a catalog name (see `models`), a GGUF file, a Hugging Face folder, or `tiny` (the project's own random model, with pre-training and the toy settings) (default smollm2-135m-instruct)"
    ),
    Flag.optional
  ),
  out: Flag.String("out").pipe(Flag.withDescription("the run folder (default runs/default)"), Flag.optional),
  force: Flag.Literals("force", stageNames).pipe(Flag.withDescription("redo this stage and every later one"), Flag.optional),
  device: Flag.Literals("device", DeviceChoice.literals).pipe(Flag.withDescription("tfjs engine's training device (default auto)"), Flag.optional),
  engine: Flag.Literals("engine", EngineChoice.literals).pipe(
    Flag.withDescription("who trains: tfjs, torch (PyTorch + PEFT) or auto (torch when the Python env is usable) (default auto; tfjs for --model tiny)"),
    Flag.optional
  ),
  python: Flag.String("python").pipe(
    Flag.withDescription("the Python interpreter for the torch engine and the model fetch (default: FINETUNE_PYTHON, else the managed .venv)"),
    Flag.optional
  ),
  synthCount: positive("synth-count", "records of the synthetic set"),
  pretrainSteps: positive("pretrain-steps", "optimizer steps of the default's pre-training"),
  trainSteps: positive("train-steps", "optimizer steps of the LoRA training"),
  learningRate: Flag.Finite("learning-rate").pipe(Flag.withDescription("peak learning rate of the LoRA training"), Flag.optional),
  evalSamples: positive("eval-samples", "held-out records evaluated"),
  maxNewTokens: positive("max-new-tokens", "most answer tokens per evaluated generation (default: from the reference lengths)"),
  merged: Flag.Boolean("merged").pipe(Flag.withDescription("also export the merged GGUF"), withDefault(false)),
  requireImprovement: Flag.Boolean("require-improvement").pipe(
    Flag.withDescription("exit 3 (threshold) unless the tuned model beats the base on ROUGE-L, factuality and placeholder F1"),
    withDefault(false)
  )
}

type Flags = {
  readonly [K in keyof typeof flags]: (typeof flags)[K] extends Flag.Flag<infer A> ? A : never
}

const some = <A>(o: Option.Option<A>): A | undefined => (Option.isSome(o) ? o.value : undefined)

/** CLI flags as a partial config (absent flags leave the file's or the default's value). */
export const flagsToConfig = (f: Flags): Record<string, unknown> => {
  const section = (entries: Record<string, unknown>) => {
    const kept = Object.fromEntries(Object.entries(entries).filter(([, v]) => v !== undefined))
    return Object.keys(kept).length === 0 ? undefined : kept
  }
  return {
    out: some(f.out),
    device: some(f.device),
    data: section({ file: some(f.data), synthCount: some(f.synthCount) }),
    model: section({ base: some(f.model) }),
    pretrain: section({ steps: some(f.pretrainSteps) }),
    train: section({ maxSteps: some(f.trainSteps), learningRate: some(f.learningRate), engine: some(f.engine), python: some(f.python) }),
    eval: section({ samples: some(f.evalSamples), maxNewTokens: some(f.maxNewTokens) }),
    export: f.merged ? { merged: true } : undefined
  }
}

/** The headline metrics the tuned model must beat the base on. */
export const gateMetrics = ["rougeL", "factuality", "placeholder_f1"] as const

/** The gate metrics the tuned model does not beat the base on (all of them when evaluation did not run). */
export const metricsNotBetter = (evaluation: EvaluateResult) =>
  gateMetrics.filter((m) =>
    evaluation.base === undefined || evaluation.tuned === undefined || !(evaluation.tuned.metrics[m]! > evaluation.base.metrics[m]!)
  )

export const pipelineCommand = Command.make("pipeline", flags, (f) =>
  Effect.gen(function*() {
    const config = yield* resolvePipelineConfig(some(f.config), flagsToConfig(f))
    // before the run folder and its log exist: a wrong path leaves nothing behind
    yield* checkInputFiles(config)
    const fs = yield* FileSystem.FileSystem
    yield* fs.makeDirectory(config.out, { recursive: true }).pipe(Effect.orDie)
    const fileLogger = yield* Logger.toFile(Logger.formatLogFmt, `${config.out}/pipeline.log`, { flag: "a" }).pipe(Effect.orDie)
    const outcome = yield* runPipeline({ config, force: some(f.force), command: process.argv.slice(2).join(" ") }).pipe(
      Effect.provide(Layer.mergeAll(layerPipelineLog(), Logger.layer([Logger.consolePretty(), fileLogger])))
    )
    yield* Console.log(outcome.summary)
    if (f.requireImprovement) {
      const notBetter = metricsNotBetter(outcome.results.evaluation)
      if (notBetter.length > 0) return yield* failCommand("pipeline", `the tuned model does not beat the base on ${notBetter.join(", ")}`, "threshold")
    }
  }).pipe(
    Effect.scoped,
    Effect.provide(PipelineServices),
    Effect.catchTags({
      PipelineConfigError: (e) => failCommand("pipeline", `bad configuration: ${e.message}`, e.kind),
      PipelineInputError: (e) => failCommand("pipeline", e.message, e.kind),
      StageFailed: (e) => failCommand("pipeline", e.message, e.kind)
    })
  )).pipe(
    describeCommand(
      "Run the whole project end to end: dataset -> base model (default SmolLM2-135M-Instruct, fetched into the cache) -> " +
        "(pre-training, for --model tiny only) -> LoRA (tfjs or torch engine) -> " +
        "export GGUF -> evaluate base vs tuned -> serve and ask /infer -> report. Stages are cached in the run folder; " +
        "re-running skips finished stages, --force STAGE redoes one and everything after it; " +
        "--require-improvement not met exits as a threshold missed."
    )
  )
