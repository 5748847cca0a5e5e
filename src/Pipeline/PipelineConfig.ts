/**
 * The `pipeline` command's typed configuration: built-in defaults (sized so the whole default run finishes in well
 * under 15 minutes on a 2-core machine), overridden by a YAML/JSON file, overridden by CLI flags. One Schema checks
 * the merged result; an unknown or bad value fails naming the field and where it came from. The same Schema renders
 * docs/config-reference.md (scripts/config-reference.ts), so the reference cannot drift from the code.
 *
 * Stage settings reuse the stages' own schemas (TrainConfig fields, DeviceChoice, MergedType, PromptLayout), so a
 * value the pipeline accepts is one the stage accepts.
 */
import { Effect, FileSystem, Result, Schema, SchemaIssue } from "effect"
import { createHash } from "node:crypto"
import * as Yaml from "yaml"
import { PromptLayout } from "../Dataset/PromptFormat.ts"
import { MergedType } from "../Serving/Export.ts"
import { DeviceChoice } from "../Model/Device.ts"
import { smollm2 } from "../Model/ModelCatalog.ts"
import { readConfigFile, TrainConfig } from "../Training/TrainConfig.ts"
import { EngineChoice } from "../Training/TrainingEngine.ts"
import { kindField } from "../Shared/Errors.ts"

const PositiveInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))
const NonNegativeInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
const doc = (description: string) => ({ description })
const t = TrainConfig.fields

export const DataSection = Schema.Struct({
  file: Schema.optionalKey(Schema.NonEmptyString.annotate(doc(
    "Your JSONL file (seed records, chat `messages` records or prompt/completion pairs; `.gz` allowed). Absent: the built-in synthetic set."
  ))),
  synthCount: PositiveInt.annotate(doc("Records of the built-in synthetic set (`dataset synth`), before dedupe and split.")),
  seed: NonNegativeInt.annotate(doc("Seed of the synthetic set and of the train/test split.")),
  testRatio: Schema.Finite.check(Schema.isBetween({ minimum: 0.01, maximum: 0.5 })).annotate(
    doc("Share of records held out for evaluation (split by a stable hash of the normalized question).")
  ),
  maxRejectRate: Schema.Finite.check(Schema.isBetween({ minimum: 0, maximum: 1 })).annotate(
    doc("The run stops when more than this share of the input lines is rejected (after writing rejects.jsonl).")
  )
})

/** `model.base` naming the project's own seeded random model (made by `model init`, pre-trained before LoRA). */
export const projectModelName = "tiny"

export const ModelSection = Schema.Struct({
  base: Schema.NonEmptyString.annotate(doc(
    "The base model: a catalog name (`model models`; fetched into the cache on first use), a GGUF file, a Hugging Face folder (config.json + *.safetensors), or `tiny`: the project's own seeded random model (made by `model init`, pre-trained first; for tests). The project model runs with the toy settings (`tinyModelSettings`), every other base with the real-model defaults."
  )),
  preset: Schema.Literals(["tiny", "small"]).annotate(doc("Shape of the project-made base model (`model init --preset`; only with `base: tiny`).")),
  seed: NonNegativeInt.annotate(doc("Seed of the project-made base model's random weights.")),
  shape: Schema.optionalKey(Schema.Struct({
    vocabSize: Schema.optionalKey(PositiveInt.annotate(doc("Tokens in the finance SPM vocabulary."))),
    hiddenSize: Schema.optionalKey(PositiveInt.annotate(doc("Model width."))),
    intermediateSize: Schema.optionalKey(PositiveInt.annotate(doc("SwiGLU MLP width."))),
    numLayers: Schema.optionalKey(PositiveInt.annotate(doc("Decoder blocks."))),
    numHeads: Schema.optionalKey(PositiveInt.annotate(doc("Attention heads."))),
    numKvHeads: Schema.optionalKey(PositiveInt.annotate(doc("Key/value heads (grouped-query attention; divides `numHeads`)."))),
    headDim: Schema.optionalKey(PositiveInt.annotate(doc("Width of one head.")))
  }).annotate(doc("Overrides of the preset's shape (e.g. a smaller model for quick tests); `headDim` x `numHeads` need not equal `hiddenSize`.")))
})

export const PretrainSection = Schema.Struct({
  enabled: Schema.Literals(["auto", "on", "off"]).annotate(doc(
    "Full-parameter pre-training of the base on the training split's text before LoRA. `auto`: only for the project-made random base (a random base cannot show what LoRA adds)."
  )),
  steps: PositiveInt.annotate(doc("Optimizer steps of the pre-training.")),
  batchSize: t.batchSize.annotate(doc("Sequences per optimizer step.")),
  learningRate: t.learningRate.annotate(doc("Peak learning rate (linear warmup, then linear decay).")),
  warmupSteps: t.warmupSteps.annotate(doc("Warmup steps.")),
  maxSeqLength: t.maxSeqLength.annotate(doc("Tokens per sequence; longer texts are cut."))
})

export const TrainSection = Schema.Struct({
  engine: EngineChoice.annotate(doc(
    "Who trains: `tfjs` (in-process), `torch` (PyTorch + PEFT in the project's Python), or `auto` (torch when the Python environment is usable; the log says which it chose and why)."
  )),
  python: Schema.optionalKey(Schema.NonEmptyString.annotate(doc(
    "torch engine: the Python interpreter to use as it is (like `train --python`; absent: FINETUNE_PYTHON, else the managed .venv)."
  ))),
  mode: Schema.Literals(["lora", "qlora"]).annotate(doc("`lora` over a float32 base, or `qlora` over a 4-bit NF4 base (the pipeline exports an adapter, so `train --mode full` is not a pipeline mode).")),
  r: t.r.annotate(doc("LoRA rank.")),
  loraAlpha: t.loraAlpha.annotate(doc("LoRA alpha (scale alpha/r, or alpha/sqrt(r) with rsLoRA).")),
  loraDropout: t.loraDropout.annotate(doc("Dropout on the LoRA input.")),
  useRslora: t.useRslora.annotate(doc("rsLoRA scaling alpha/sqrt(r).")),
  targetModules: t.targetModules.annotate(doc("Adapted modules: a list of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, or `all-linear`.")),
  epochs: t.epochs.annotate(doc("Passes over the training split (`maxSteps` stops earlier).")),
  maxSteps: Schema.optionalKey(t.maxSteps.annotate(doc("Stop after this many optimizer steps (absent: `epochs` decide)."))),
  batchSize: t.batchSize.annotate(doc("Sequences per micro-batch.")),
  gradientAccumulationSteps: t.gradientAccumulationSteps.annotate(doc("Micro-batches per optimizer step.")),
  learningRate: t.learningRate.annotate(doc("Peak learning rate.")),
  lrScheduler: t.lrScheduler.annotate(doc("Decay after warmup: linear, cosine or constant.")),
  warmupSteps: t.warmupSteps.annotate(doc("Warmup steps. When `maxSteps` is set (file or `--train-steps`) and this is not, it becomes 10% of `maxSteps` (at least 1).")),
  maxSeqLength: t.maxSeqLength.annotate(doc("Tokens per sequence; longer examples are cut.")),
  evalEvery: t.evalEvery.annotate(doc("Validation loss and ROUGE-L every this many steps (and at the end).")),
  saveEvery: t.saveEvery.annotate(doc("A checkpoint every this many steps (and at the end); an interrupted run resumes from the newest.")),
  evalGenerationSamples: t.evalGenerationSamples.annotate(doc("Held-out records whose greedy answers are scored with ROUGE-L at each evaluation (picks the best checkpoint).")),
  promptLayout: PromptLayout.annotate(doc("Prompt layout of training, evaluation and `/infer` (recorded with the adapter): `seed` (Context/Question/Answer, the original app's), `chatml` (SmolLM2/Qwen instruct models), `llama3` or `mistral`.")),
  seed: t.seed.annotate(doc("Seed of data order, dropout and LoRA initialization.")),
  weightDecay: t.weightDecay.annotate(doc("AdamW decoupled weight decay.")),
  adamBeta1: t.adamBeta1.annotate(doc("AdamW beta1.")),
  adamBeta2: t.adamBeta2.annotate(doc("AdamW beta2.")),
  adamEpsilon: t.adamEpsilon.annotate(doc("AdamW epsilon.")),
  maxGradNorm: t.maxGradNorm.annotate(doc("Gradient-norm clipping; 0 turns it off.")),
  packing: t.packing.annotate(doc("Pack several examples per row without cross-sample attention.")),
  logEvery: Schema.optionalKey(t.logEvery.annotate(doc("Log every this many steps (absent: about 20 lines per run)."))),
  saveTotalLimit: t.saveTotalLimit.annotate(doc("Keep the newest this many checkpoints (plus the best).")),
  metricForBest: t.metricForBest.annotate(doc("Picks the final adapter: `rouge` (needs `evalGenerationSamples` > 0) or `eval_loss`.")),
  earlyStoppingPatience: Schema.optionalKey(t.earlyStoppingPatience.annotate(doc("Stop after this many evaluations without improvement (absent: never)."))),
  nprocPerNode: Schema.optionalKey(t.nprocPerNode.annotate(doc("torch engine: processes per node under torchrun (data-parallel)."))),
  nnodes: Schema.optionalKey(t.nnodes.annotate(doc("torch engine: number of nodes (multi-node torchrun)."))),
  nodeRank: Schema.optionalKey(t.nodeRank.annotate(doc("torch engine: this node's rank, 0 .. nnodes-1."))),
  masterAddr: Schema.optionalKey(t.masterAddr.annotate(doc("torch engine: rendezvous address (node 0's host) for multi-node runs."))),
  masterPort: Schema.optionalKey(t.masterPort.annotate(doc("torch engine: rendezvous port."))),
  fsdp: Schema.optionalKey(t.fsdp.annotate(doc("torch engine: FSDP (shard decoder layers) instead of DDP."))),
  deepspeed: Schema.optionalKey(t.deepspeed.annotate(doc("torch engine: a DeepSpeed config file (ZeRO-2/3; needs the deepspeed package)."))),
  gradientCheckpointing: Schema.optionalKey(t.gradientCheckpointing.annotate(doc("torch engine: recompute activations in backward (less memory)."))),
  threads: Schema.optionalKey(t.threads.annotate(doc("torch engine: intra-op threads per process (absent: torch's own, every core).")))
})

/**
 * The `train` settings the pipeline does not take from its `train` section, and where each comes from instead
 * (test/Pipeline/PipelineConfig.test.ts holds every TrainConfig field to one of the two).
 */
export const trainFieldsFromPipeline = {
  model: "model.base (or the pre-trained project model)",
  trainFile: "the dataset stage's training split",
  validationFile: "the dataset stage's validation slice",
  validationFraction: "the dataset stage (train.evalGenerationSamples records, at least 4 and at most a fifth, are held out of the training split)",
  outputDir: "RUN_DIR/train",
  maxNewTokens: "eval.maxNewTokens (the resolved evaluation budget)",
  device: "the top-level `device`"
} as const

export const EvalSection = Schema.Struct({
  samples: PositiveInt.annotate(doc("Held-out records evaluated (a seeded sample when the split is larger).")),
  maxNewTokens: NonNegativeInt.annotate(doc(
    "Most answer tokens per generation. 0: from the references, the 95th percentile of their token lengths plus a margin, so answers are not cut before their citations and risk notes."
  )),
  concurrency: PositiveInt.annotate(doc("Generations in flight at once.")),
  threads: NonNegativeInt.annotate(doc(
    "llama.cpp CPU threads for evaluation and serving. 0: auto, from the model's size and the cores other processes leave free (re-measured as it runs)."
  )),
  seed: NonNegativeInt.annotate(doc("Seed of the sample and of generation."))
})

export const ExportSection = Schema.Struct({
  merged: Schema.Boolean.annotate(doc("Also write the base with the adapter merged in, as one standalone GGUF.")),
  mergedType: MergedType.annotate(doc("Tensor type of the merged GGUF, and of an HF folder base converted to GGUF for llama.cpp."))
})

export const ServeSection = Schema.Struct({
  questions: NonNegativeInt.annotate(doc("Held-out questions asked of the served model through `POST /infer` (0 skips the check).")),
  maxLength: PositiveInt.annotate(doc("`max_length` of those requests (prompt + answer tokens, as the app's client sends it)."))
})

export const PipelineConfig = Schema.Struct({
  out: Schema.NonEmptyString.annotate(doc("The run folder: every stage's files, `run.json`, logs and the report.")),
  device: DeviceChoice.annotate(doc("Training device of the tfjs engine: `auto` picks the best that initializes (tensorflow, webgpu, wasm, cpu).")),
  data: DataSection,
  model: ModelSection,
  pretrain: PretrainSection,
  train: TrainSection,
  eval: EvalSection,
  export: ExportSection,
  serve: ServeSection
})
export type PipelineConfig = typeof PipelineConfig.Type

/**
 * The built-in default: SmolLM2-135M-Instruct from the catalog, LoRA r16 α32 on q,k,v,o with the seed's real-model
 * settings (lr 2e-3 for the short budget, warmup, dropout 0.1), ChatML prompts, no pre-training. Sized on the 2-core development machine
 * so the whole run stays under 15 minutes (BENCHMARKS.md, "Pipeline on SmolLM2-135M-Instruct").
 */
export const defaultPipelineConfig: PipelineConfig = {
  out: "runs/default",
  device: "auto",
  data: { synthCount: 2000, seed: 42, testRatio: 0.1, maxRejectRate: 0.5 },
  model: { base: smollm2.name, preset: "tiny", seed: 42 },
  pretrain: { enabled: "auto", steps: 180, batchSize: 8, learningRate: 3e-3, warmupSteps: 5, maxSeqLength: 128 },
  train: {
    engine: "auto",
    mode: "lora",
    r: 16,
    loraAlpha: 32,
    loraDropout: 0.1,
    useRslora: false,
    targetModules: ["q_proj", "k_proj", "v_proj", "o_proj"],
    epochs: 1,
    maxSteps: 60,
    batchSize: 4,
    gradientAccumulationSteps: 1,
    // 10x the seed's 2e-4: the seed's rate is for ~3 epochs, this budget is 60 steps (14% of one). Measured on the
    // same 30 held-out records: 2e-4 reached eval loss 2.58 and ROUGE-L 0.128, 2e-3 eval loss 0.93 and ROUGE-L 0.368
    learningRate: 2e-3,
    lrScheduler: "linear",
    warmupSteps: 6,
    maxSeqLength: 320,
    evalEvery: 60,
    saveEvery: 30,
    evalGenerationSamples: 0,
    promptLayout: "chatml",
    seed: 42,
    weightDecay: 0,
    adamBeta1: 0.9,
    adamBeta2: 0.999,
    adamEpsilon: 1e-8,
    maxGradNorm: 1,
    packing: false,
    saveTotalLimit: 2,
    metricForBest: "eval_loss"
  },
  eval: { samples: 30, maxNewTokens: 0, concurrency: 2, threads: 0, seed: 42 },
  export: { merged: false, mergedType: "f16" },
  serve: { questions: 3, maxLength: 1024 }
}

/**
 * The toy settings of the project's own random model (`model.base: tiny`), over the defaults: a narrow 2-block
 * shape, pre-training, and a high learning rate (measured: 1e-2 gave a clear held-out ROUGE-L gain where 3e-3 did
 * not, in the same 40 steps). Never applied to a real base.
 */
export const tinyModelSettings = {
  model: {
    base: projectModelName,
    // on one CPU thread the narrow shape trains ~3x more tokens per second than the preset's
    shape: { hiddenSize: 128, intermediateSize: 256, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 32 }
  },
  train: {
    engine: "tfjs",
    loraDropout: 0.05,
    epochs: 3,
    maxSteps: 80,
    batchSize: 8,
    learningRate: 1e-2,
    warmupSteps: 4,
    maxSeqLength: 256,
    evalEvery: 40,
    saveEvery: 40,
    evalGenerationSamples: 4,
    promptLayout: "seed",
    metricForBest: "rouge"
  },
  eval: { maxNewTokens: 48 },
  serve: { questions: 2 }
} as const

/** true when `model.base` names the project's own random model */
export const isProjectModel = (base: string): boolean => base === projectModelName

/** Which set of defaults a base gets, and why (the log and the report say it). */
export const settingsProfile = (base: string): { readonly name: "tiny" | "real-model"; readonly reason: string } =>
  isProjectModel(base)
    ? { name: "tiny", reason: "model.base is `tiny`, the project's random model: pre-training, lr 1e-2, 80 steps, tfjs" }
    : { name: "real-model", reason: `model.base is ${base}, a trained model: the real-model defaults (lr 2e-3, warmup, dropout 0.1, no pre-training)` }

/** The defaults for a base: the real-model defaults, or those with the toy settings over them for `tiny`. */
export const defaultsFor = (base: string): PipelineConfig =>
  (isProjectModel(base) ? mergeConfig(defaultPipelineConfig as unknown as Json, tinyModelSettings as unknown as Json) : defaultPipelineConfig) as PipelineConfig

/** A config file that cannot be read (`input`) or a value that does not validate (`data`). */
export class PipelineConfigError extends Schema.TaggedError<PipelineConfigError>()("PipelineConfigError", {
  /** the file (and line) or "flags" */
  source: Schema.String,
  field: Schema.String,
  issue: Schema.String,
  kind: kindField("data")
}) {
  override get message() {
    return `${this.source}: ${this.field === "" ? "" : `${this.field}: `}${this.issue}`
  }
}

type Json = Record<string, unknown>
const isObject = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)

/** defaults ⊕ override, section by section (one level deep: sections are flat). */
export const mergeConfig = (base: Json, override: Json): Json => {
  const out: Json = { ...base }
  for (const [k, v] of Object.entries(override)) {
    if (v === undefined) continue
    out[k] = isObject(v) && isObject(base[k]) ? { ...(base[k] as Json), ...v } : v
  }
  return out
}

const formatter = SchemaIssue.makeFormatterStandardSchemaV1()
const decode = Schema.decodeUnknownResult(PipelineConfig)

export const validatePipelineConfig = (value: unknown, source: string): Effect.Effect<PipelineConfig, PipelineConfigError> =>
  Result.match(decode(value, { onExcessProperty: "error", reportInput: true }), {
    onSuccess: Effect.succeed,
    onFailure: (error) => {
      const first = formatter(error.issue).issues[0]
      const field = (first?.path ?? []).map((p) => typeof p === "object" ? String(p.key) : String(p)).join(".")
      return Effect.fail(new PipelineConfigError({ source, field, issue: first?.message ?? error.message }))
    }
  })

/** Reads a YAML (or JSON) config file into a plain object with the Training stage's reader; errors name file:line. */
export const readPipelineConfigFile = (file: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    if (!(yield* fs.exists(file).pipe(Effect.orElseSucceed(() => false)))) {
      return yield* new PipelineConfigError({ source: file, field: "", issue: "no such file or folder", kind: "input" })
    }
    return yield* readConfigFile(file).pipe(
      Effect.mapError((e) => new PipelineConfigError({ source: e.source, field: e.field, issue: e.issue }))
    )
  })

/**
 * The default warmup is 10% of the default steps: when the steps are changed (file or flag) and the warmup is not,
 * the warmup follows them (10%, at least 1), so a shortened run still reaches its peak learning rate.
 */
const scaleWarmup = (merged: Json, layers: ReadonlyArray<Json>): Json => {
  const said = (key: string) => layers.some((l) => isObject(l["train"]) && l["train"][key] !== undefined)
  const train = merged["train"]
  if (!isObject(train) || !said("maxSteps") || said("warmupSteps") || typeof train["maxSteps"] !== "number") return merged
  return { ...merged, train: { ...train, warmupSteps: Math.max(1, Math.round(Number(train["maxSteps"]) / 10)) } }
}

/** Resolves defaults ⊕ file ⊕ flags; each layer is validated as the merge so far, so errors name their source. */
export const resolvePipelineConfig = Effect.fn("PipelineConfig.resolve")(function*(
  file: string | undefined,
  flags: Json
) {
  const fromFile = file === undefined ? {} : yield* readPipelineConfigFile(file)
  // the base decides the defaults (a real model never gets the toy model's settings)
  const baseOf = (j: Json) => (isObject(j["model"]) && typeof j["model"]["base"] === "string" ? j["model"]["base"] : undefined)
  const defaults = defaultsFor(baseOf(flags) ?? baseOf(fromFile) ?? defaultPipelineConfig.model.base) as unknown as Json
  const withFile = mergeConfig(defaults, fromFile)
  if (file !== undefined) yield* validatePipelineConfig(withFile, file)
  const merged = mergeConfig(withFile, flags)
  return yield* validatePipelineConfig(scaleWarmup(merged, [fromFile, flags]), file === undefined ? "flags" : `${file} + flags`)
})

/** JSON with object keys sorted, so equal values always hash equally. */
export const canonicalJson = (value: unknown): string =>
  JSON.stringify(value, (_k, v: unknown) =>
    isObject(v) ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]])) : v)

export const sha256 = (text: string | Uint8Array): string => createHash("sha256").update(text).digest("hex")

export const configToYaml = (config: PipelineConfig): string => Yaml.stringify(config)

// ---------------------------------------------------------------------------------------------------------------------
// the generated reference (docs/config-reference.md, written by scripts/config-reference.ts)

interface JsonSchemaNode {
  readonly type?: string
  readonly enum?: ReadonlyArray<unknown>
  readonly const?: unknown
  readonly description?: string
  readonly minimum?: number
  readonly maximum?: number
  readonly exclusiveMinimum?: number
  readonly exclusiveMaximum?: number
  readonly minLength?: number
  readonly properties?: Readonly<Record<string, JsonSchemaNode>>
  readonly items?: JsonSchemaNode
  readonly anyOf?: ReadonlyArray<JsonSchemaNode>
}

const typeText = (node: JsonSchemaNode): string => {
  if (node.anyOf !== undefined) return node.anyOf.map(typeText).join(" or ")
  if (node.enum !== undefined) return node.enum.map((v) => `\`${JSON.stringify(v)}\``).join(" \\| ")
  if (node.const !== undefined) return `\`${JSON.stringify(node.const)}\``
  if (node.type === "array") return `list of ${node.items === undefined ? "values" : typeText(node.items)}`
  const bounds: Array<string> = []
  // 2^53 - 1 is the Int schema's own upper bound, not a setting's limit
  if (node.minimum !== undefined) bounds.push(`≥ ${node.minimum}`)
  if (node.exclusiveMinimum !== undefined) bounds.push(`> ${node.exclusiveMinimum}`)
  if (node.maximum !== undefined && node.maximum < Number.MAX_SAFE_INTEGER) bounds.push(`≤ ${node.maximum}`)
  if (node.exclusiveMaximum !== undefined) bounds.push(`< ${node.exclusiveMaximum}`)
  const base = node.type === "integer" ? "integer" : node.type === "number" ? "number" : node.type ?? "value"
  return bounds.length === 0 ? base : `${base} ${bounds.join(", ")}`
}

const defaultAt = (path: ReadonlyArray<string>): string => {
  let v: unknown = defaultPipelineConfig
  for (const k of path) v = isObject(v) ? v[k] : undefined
  return v === undefined ? "—" : `\`${JSON.stringify(v)}\``
}

const rows = (node: JsonSchemaNode, path: ReadonlyArray<string>, out: Array<string>) => {
  for (const [key, child] of Object.entries(node.properties ?? {})) {
    const at = [...path, key]
    if (child.properties !== undefined) {
      out.push(`| \`${at.join(".")}\` | mapping | ${defaultAt(at)} | ${child.description ?? ""} |`)
      rows(child, at, out)
    } else {
      out.push(`| \`${at.join(".")}\` | ${typeText(child)} | ${defaultAt(at)} | ${(child.description ?? "").replace(/\|/g, "\\|")} |`)
    }
  }
}

/** docs/config-reference.md, generated from the PipelineConfig Schema (descriptions, types, bounds) and the defaults. */
export const renderConfigReference = (): string => {
  const root = Schema.toJsonSchemaDocument(PipelineConfig).schema as JsonSchemaNode
  const out: Array<string> = [
    "# `pipeline` configuration reference",
    "",
    "<!-- generated by `node scripts/config-reference.ts` from src/Pipeline/PipelineConfig.ts; do not edit by hand (a test fails when it drifts) -->",
    "",
    "`node dist/Main.js pipeline --config pipeline.yaml` reads a YAML (or JSON) file with any subset of the keys below;",
    "missing keys keep their defaults, CLI flags (`--data`, `--model`, `--out`, `--device`, `--engine`, `--python`, `--synth-count`,",
    "`--pretrain-steps`, `--train-steps`, `--learning-rate`, `--eval-samples`, `--max-new-tokens`, `--merged`) override the file, and an",
    "unknown key or a bad value stops the run with exit code 2 and a message naming the field. The resolved configuration",
    "is saved as `RUN_DIR/config.yaml`.",
    "",
    "The defaults depend on the base: every base gets the real-model defaults below, except `model.base: tiny` (the",
    "project's own random model, for tests), which gets these toy settings over them:",
    "",
    "```yaml",
    configToYaml(tinyModelSettings as unknown as PipelineConfig).trimEnd(),
    "```",
    "",
    "The `train` settings the pipeline fills in itself:",
    "",
    "| `train` field | comes from |",
    "| --- | --- |",
    ...Object.entries(trainFieldsFromPipeline).map(([k, v]) => `| \`${k}\` | ${v} |`),
    ""
  ]
  for (const [key, section] of Object.entries(root.properties ?? {})) {
    if (section.properties === undefined) continue
    out.push(`## \`${key}\``, "", "| key | type | default | description |", "| --- | --- | --- | --- |")
    rows(section, [key], out)
    out.push("")
  }
  out.push("## Top-level keys", "", "| key | type | default | description |", "| --- | --- | --- | --- |")
  for (const [key, node] of Object.entries(root.properties ?? {})) {
    if (node.properties !== undefined) continue
    out.push(`| \`${key}\` | ${typeText(node)} | ${defaultAt([key])} | ${node.description ?? ""} |`)
  }
  out.push("", "## Example", "", "```yaml", configToYaml(defaultPipelineConfig).trimEnd(), "```", "")
  return out.join("\n")
}
