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
import { readConfigFile, TrainConfig } from "../Training/TrainConfig.ts"
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

export const ModelSection = Schema.Struct({
  base: Schema.optionalKey(Schema.NonEmptyString.annotate(doc(
    "Your base model: a GGUF file or a Hugging Face folder (config.json + *.safetensors). Absent: the project's tiny model, made by `model init`."
  ))),
  preset: Schema.Literals(["tiny", "small"]).annotate(doc("Shape of the project-made base model (`model init --preset`).")),
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
  mode: Schema.Literals(["lora", "qlora"]).annotate(doc("`lora` over a float32 base, or `qlora` over a 4-bit NF4 base.")),
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
  warmupSteps: t.warmupSteps.annotate(doc("Warmup steps.")),
  maxSeqLength: t.maxSeqLength.annotate(doc("Tokens per sequence; longer examples are cut.")),
  evalEvery: t.evalEvery.annotate(doc("Validation loss and ROUGE-L every this many steps (and at the end).")),
  saveEvery: t.saveEvery.annotate(doc("A checkpoint every this many steps (and at the end); an interrupted run resumes from the newest.")),
  evalGenerationSamples: t.evalGenerationSamples.annotate(doc("Held-out records whose greedy answers are scored with ROUGE-L at each evaluation (picks the best checkpoint).")),
  promptLayout: PromptLayout.annotate(doc("Prompt layout: `seed` (Context/Question/Answer, what `/infer` serves), `llama3` or `mistral`.")),
  seed: t.seed.annotate(doc("Seed of data order, dropout and LoRA initialization."))
})

export const EvalSection = Schema.Struct({
  samples: PositiveInt.annotate(doc("Held-out records evaluated (a seeded sample when the split is larger).")),
  maxNewTokens: PositiveInt.annotate(doc("Most answer tokens per generation.")),
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
  device: DeviceChoice.annotate(doc("Training device: `auto` picks the best that initializes (tensorflow, webgpu, wasm, cpu).")),
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
 * The built-in default. Sizes measured on the 2-core development machine (BENCHMARKS.md, "Pipeline"): the whole run
 * takes about 8-10 minutes there, leaving headroom under the 15-minute budget.
 */
export const defaultPipelineConfig: PipelineConfig = {
  out: "runs/default",
  device: "auto",
  data: { synthCount: 2000, seed: 42, testRatio: 0.1, maxRejectRate: 0.5 },
  // the tiny preset narrowed to 2 blocks of width 128: on one CPU thread it trains ~3x more tokens per second, which
  // buys more optimizer steps inside the time budget than the wider shape would use well
  model: {
    preset: "tiny",
    seed: 42,
    shape: { hiddenSize: 128, intermediateSize: 256, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 32 }
  },
  pretrain: { enabled: "auto", steps: 180, batchSize: 8, learningRate: 3e-3, warmupSteps: 5, maxSeqLength: 128 },
  train: {
    mode: "lora",
    r: 16,
    loraAlpha: 32,
    loraDropout: 0.05,
    useRslora: false,
    targetModules: ["q_proj", "k_proj", "v_proj", "o_proj"],
    epochs: 3,
    maxSteps: 80,
    batchSize: 8,
    gradientAccumulationSteps: 1,
    // measured: 1e-2 gave a clear held-out ROUGE-L gain where 3e-3 did not, in the same 40 steps
    learningRate: 1e-2,
    lrScheduler: "linear",
    warmupSteps: 4,
    maxSeqLength: 256,
    evalEvery: 40,
    saveEvery: 40,
    evalGenerationSamples: 4,
    promptLayout: "seed",
    seed: 42
  },
  eval: { samples: 30, maxNewTokens: 48, concurrency: 2, threads: 0, seed: 42 },
  export: { merged: false, mergedType: "f16" },
  serve: { questions: 2, maxLength: 1024 }
}

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

/** Resolves defaults ⊕ file ⊕ flags; each layer is validated as the merge so far, so errors name their source. */
export const resolvePipelineConfig = Effect.fn("PipelineConfig.resolve")(function*(
  file: string | undefined,
  flags: Json
) {
  const defaults = defaultPipelineConfig as unknown as Json
  const fromFile = file === undefined ? {} : yield* readPipelineConfigFile(file)
  const withFile = mergeConfig(defaults, fromFile)
  if (file !== undefined) yield* validatePipelineConfig(withFile, file)
  return yield* validatePipelineConfig(mergeConfig(withFile, flags), file === undefined ? "flags" : `${file} + flags`)
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
    "missing keys keep their defaults, CLI flags (`--data`, `--model`, `--out`, `--device`, `--synth-count`, `--pretrain-steps`,",
    "`--train-steps`, `--eval-samples`, `--max-new-tokens`, `--merged`) override the file, and an unknown key or a bad value",
    "stops the run with exit code 2 and a message naming the field. The resolved configuration is saved as",
    "`RUN_DIR/config.yaml`.",
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
