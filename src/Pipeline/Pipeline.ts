/**
 * `pipeline`: the whole project end to end, as a list of the stages' own `Stage` values composed in order (nothing
 * here re-implements a stage; src/Pipeline/StageRunner.ts caches, resumes and times them):
 *
 *   dataset ─► base ─► pretrain* ─► train ─► export ─► evaluate ─► serve ─► report
 *
 * - dataset  (Dataset/DatasetStage.ts): the built-in synthetic set or the user's JSONL through the ingest.
 * - base     (Training/BaseStage.ts): a catalog model (default SmolLM2-135M-Instruct, fetched into the cache), the
 *            user's GGUF / HF folder, or `tiny`, the project's own random model (what `model init` writes).
 * - pretrain (Training/PretrainStage.ts; *the project-made base only): full-parameter pre-training of the random base.
 * - train    (Training/TrainStage.ts): LoRA or QLoRA on the TrainingEngine (tfjs | torch | auto).
 * - export   (Serving/ExportStage.ts): the adapter GGUF, optionally the merged GGUF, an HF folder base as GGUF.
 * - evaluate (Evaluation/EvaluateStage.ts): base vs base + adapter on the held-out split, through llama.cpp.
 * - serve    (Serving/ServeStage.ts): the server on a free loopback port, a few held-out questions through `/infer`.
 * - report   (Pipeline/ReportStage.ts): `report.md`; the summary table is printed, `run.json` is the manifest.
 */
import { Effect, FileSystem, Layer, Path, Schema } from "effect"
import packageJson from "../../package.json" with { type: "json" }
import { DatasetPipeline } from "../Dataset/DatasetPipeline.ts"
import { type DatasetResult, DatasetStage } from "../Dataset/DatasetStage.ts"
import { type EvaluateResult, EvaluateStage } from "../Evaluation/EvaluateStage.ts"
import { Evaluator } from "../Evaluation/Evaluator.ts"
import { LlamaCpp } from "../Model/LlamaCpp.ts"
import { Tokenizer } from "../Model/Tokenizer.ts"
import { type ExportResult, ExportStage } from "../Serving/ExportStage.ts"
import { type ServeResult, ServeStage } from "../Serving/ServeStage.ts"
import { type BaseResult, BaseStage } from "../Training/BaseStage.ts"
import { type PretrainResult, PretrainStage } from "../Training/PretrainStage.ts"
import { Trainer } from "../Training/Trainer.ts"
import { TrainStage, type TrainStageResult } from "../Training/TrainStage.ts"
import type { ErrorKind } from "../Shared/Errors.ts"
import { isCatalogName } from "../Model/ModelCatalog.ts"
import { canonicalJson, configToYaml, isProjectModel, type PipelineConfig, settingsProfile, sha256 } from "./PipelineConfig.ts"
import { renderSummary } from "./PipelineReport.ts"
import { ReportStage } from "./ReportStage.ts"
import { makeStageRunner, type RunManifest, type StageRunner, toStageFailed } from "./StageRunner.ts"

/** Every stage in run order (`--force STAGE` redoes that one and every later one). */
export const stageNames = ["dataset", "base", "pretrain", "train", "export", "evaluate", "serve", "report"] as const
export type StageName = (typeof stageNames)[number]
export const StageNameSchema = Schema.Literals(stageNames)

export interface PipelineOptions {
  readonly config: PipelineConfig
  /** redo this stage and every later one */
  readonly force?: StageName | undefined
  /** for run.json: how the run was invoked */
  readonly command?: string | undefined
}

/** Each stage's result, as recorded in run.json. */
export interface PipelineResults {
  readonly dataset: DatasetResult
  readonly base: BaseResult
  readonly pretrain: PretrainResult
  readonly train: TrainStageResult
  readonly exported: ExportResult
  readonly evaluation: EvaluateResult
  readonly serve: ServeResult
}

export interface PipelineOutcome {
  readonly runDir: string
  readonly manifest: RunManifest
  readonly results: PipelineResults
  readonly summary: string
}

/** A file the configuration names does not exist: the user's input error, caught before any stage runs. */
export class PipelineInputError extends Schema.TaggedError<PipelineInputError>()("PipelineInputError", {
  /** the config key and its flag */
  field: Schema.String,
  file: Schema.String,
  detail: Schema.String
}) {
  get kind(): ErrorKind {
    return "input"
  }
  override get message() {
    return `${this.field}: ${this.file}: ${this.detail}`
  }
}

/** The data file and the base model the configuration names must exist. */
export const checkInputFiles = Effect.fn("Pipeline.checkInputFiles")(function*(config: PipelineConfig) {
  const fs = yield* FileSystem.FileSystem
  const base = config.model.base
  const named = [
    ["data.file (--data)", config.data.file],
    // `tiny` is made and a catalog name fetched: neither is a file yet
    ["model.base (--model)", isProjectModel(base) || isCatalogName(base) ? undefined : base]
  ] as const
  for (const [field, file] of named) {
    if (file === undefined) continue
    const found = yield* fs.exists(file).pipe(Effect.orElseSucceed(() => false))
    if (!found) return yield* new PipelineInputError({ field, file, detail: "no such file or folder" })
  }
})

/** Pre-training applies to the project's random base (`pretrain.enabled: auto`), or when asked for (`on`). */
export const pretrainApplies = (config: PipelineConfig) =>
  config.pretrain.enabled === "on" || (config.pretrain.enabled === "auto" && isProjectModel(config.model.base))

/** The stages this configuration runs, in order (pre-training only for the project's random base). */
export const plannedStages = (config: PipelineConfig): ReadonlyArray<StageName> =>
  stageNames.filter((name) => name !== "pretrain" || pretrainApplies(config))

/** The answer budget training's own evaluation generations get when `eval.maxNewTokens` is 0 (auto). */
const trainGenerationTokens = 96

/**
 * llama.cpp's threads for evaluation and serving: `eval.threads`, or (0) undefined, the thread policy of
 * Model/LlamaCpp.ts (from the model's size and the cores other processes leave free, re-measured as it runs).
 */
export const llamaThreadsFor = (config: PipelineConfig, _base: BaseResult): number | undefined =>
  config.eval.threads > 0 ? config.eval.threads : undefined

/** The stages from dataset to serve, each fed from the config and the results before it. */
const runStages = Effect.fn("Pipeline.stages")(function*(runner: StageRunner, config: PipelineConfig, dir: (name: string) => string) {
  const path = yield* Path.Path
  const profile = settingsProfile(config.model.base)
  yield* Effect.logInfo(
    `[pipeline] settings: ${profile.name} (${profile.reason}); train: ${config.train.engine} engine, lr ${config.train.learningRate}, ` +
      `${config.train.maxSteps ?? `${config.train.epochs} epochs`} steps, warmup ${config.train.warmupSteps}, dropout ${config.train.loraDropout}, ` +
      `r ${config.train.r} alpha ${config.train.loraAlpha}, ${config.train.promptLayout} prompts; stages: ${plannedStages(config).join(", ")}`
  )
  const dataset = yield* runner.run(DatasetStage, {
    data: config.data,
    validationRecords: config.train.evalGenerationSamples,
    dir: dir("data")
  })
  const { base: named, ...shape } = config.model
  const model = isProjectModel(named) ? shape : { ...shape, base: isCatalogName(named) ? named : path.resolve(named) }
  const base = yield* runner.run(BaseStage, { model, dir: dir("model"), python: config.train.python })
  const data = { fit: dataset.fit, validation: dataset.validation }
  const { enabled: _, ...pretrainSettings } = config.pretrain
  const pretrain = yield* runner.run(PretrainStage, {
    enabled: pretrainApplies(config),
    reasonOff: config.pretrain.enabled === "off" ? "disabled (pretrain.enabled: off)" : "the base is a trained model",
    settings: pretrainSettings,
    seed: config.train.seed,
    base,
    data,
    device: config.device,
    dir: dir("pretrain"),
    out: path.join(dir("model"), "pretrained.gguf")
  })
  const loraBase = pretrain.loraBase
  const train = yield* runner.run(TrainStage, {
    train: config.train,
    maxNewTokens: config.eval.maxNewTokens > 0 ? config.eval.maxNewTokens : trainGenerationTokens,
    base: loraBase,
    data,
    device: config.device,
    dir: dir("train")
  })
  const exported = yield* runner.run(ExportStage, { export: config.export, adapter: train.finalDir, base: loraBase, dir: dir("export") })
  const threads = llamaThreadsFor(config, base)
  // llama.cpp's base: the GGUF the adapter was trained on, or the HF folder converted by the export stage
  const ggufBase = exported.baseGguf ?? loraBase
  const served = { base: ggufBase, adapter: exported.adapterGguf, split: dataset.test }
  const evaluation = yield* runner.run(EvaluateStage, {
    ...served,
    eval: config.eval,
    layout: config.train.promptLayout,
    threads,
    trainingLog: path.join(train.runDir, "metrics.jsonl"),
    dir: dir("eval")
  })
  const serve = yield* runner.run(ServeStage, { ...served, serve: config.serve, layout: config.train.promptLayout, threads, dir: dir("serve") })
  return { dataset, base, pretrain, train, exported, evaluation, serve } satisfies PipelineResults
})

/** What the summary lists under "artifacts" (and run.json under `artifacts`). */
const artifactsOf = (r: PipelineResults, dir: (name: string) => string): Record<string, string> => ({
  "resolved config": dir("config.yaml"),
  "train split": r.dataset.train,
  "test split": r.dataset.test,
  "base model": r.base.path,
  ...(r.pretrain.ran ? { "pre-trained base": r.pretrain.loraBase } : {}),
  checkpoints: r.train.runDir,
  "adapter (PEFT)": r.train.finalDir,
  "adapter (GGUF)": r.exported.adapterGguf,
  ...(r.exported.merged === undefined ? {} : { "merged GGUF": r.exported.merged }),
  ...(r.evaluation.report === undefined ? {} : { "evaluation report": r.evaluation.report }),
  report: dir("report.md"),
  log: dir("pipeline.log"),
  manifest: dir("run.json")
})

export const runPipeline = Effect.fn("Pipeline.run")(function*(options: PipelineOptions) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const config = options.config
  yield* checkInputFiles(config)
  const runDir = path.resolve(config.out)
  const dir = (name: string) => path.join(runDir, name)
  const versions: Record<string, string> = {
    "finetune-finance": packageJson.version,
    node: process.version,
    effect: packageJson.dependencies.effect,
    "node-llama-cpp": packageJson.dependencies["node-llama-cpp"],
    "@tensorflow/tfjs-core": packageJson.dependencies["@tensorflow/tfjs-core"]
  }
  const runner = yield* makeStageRunner({
    runDir,
    order: stageNames,
    force: options.force,
    configSha256: sha256(canonicalJson(config)),
    versions,
    keyVersion: packageJson.version
  })
  const setup = toStageFailed("setup")
  yield* fs.writeFileString(dir("config.yaml"), configToYaml(config)).pipe(Effect.mapError(setup))
  yield* fs.writeFileString(dir("versions.json"), JSON.stringify(versions, null, 2) + "\n").pipe(Effect.mapError(setup))

  const results = yield* runStages(runner, config, dir)
  runner.setArtifacts(artifactsOf(results, dir))
  yield* runner.run(ReportStage, { report: { config, manifest: runner.manifest(), ...results }, file: dir("report.md") })
  const manifest = yield* runner.finish
  return { runDir, manifest, results, summary: renderSummary({ config, manifest, ...results }) } satisfies PipelineOutcome
}, (effect, options) =>
  effect.pipe(
    // a clean, scriptable record of interruption: the manifest says so and the next run resumes
    Effect.onInterrupt(() => Effect.logWarning(`pipeline interrupted: run it again to resume (${options.config.out})`))
  ))

/** Every service the pipeline's stages need (Device is provided per training stage from the config). */
export const PipelineServices = Layer.mergeAll(DatasetPipeline.layer, Evaluator.layer, Trainer.layer, Tokenizer.layer, LlamaCpp.layer)
