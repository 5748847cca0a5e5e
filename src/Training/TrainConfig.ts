/**
 * The trainer's typed configuration: defaults (the seed's), overridden by a JSON or YAML file, overridden by CLI
 * flags. Every value is checked by one schema; a bad or unknown value fails with an error naming the field
 * (and the file, when it came from one).
 */
import { Effect, FileSystem, Result, Schema } from "effect"
import * as Yaml from "yaml"
import { describeCause, firstFieldIssue, kindField } from "../Shared/Errors.ts"
import { LrSchedulerType } from "./LrSchedule.ts"
import { TargetModules } from "../Model/AdapterConfig.ts"

const PositiveInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))
const NonNegativeInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
const NonNegative = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0))
const Positive = Schema.Finite.check(Schema.isGreaterThan(0))
const Probability = Schema.Finite.check(Schema.isBetween({ minimum: 0, maximum: 1, exclusiveMaximum: true }))

export const TrainMode = Schema.Literals(["lora", "qlora", "full"])
export type TrainMode = typeof TrainMode.Type

export const BestMetric = Schema.Literals(["rouge", "eval_loss"])
export type BestMetric = typeof BestMetric.Type

export const TrainConfig = Schema.Struct({
  /** base model: a GGUF file or a Hugging Face folder (config.json + safetensors) */
  model: Schema.NonEmptyString,
  /** training records (JSONL) */
  trainFile: Schema.NonEmptyString,
  /** held-out records (JSONL); when absent, `validationFraction` of the training file is held out */
  validationFile: Schema.optionalKey(Schema.NonEmptyString),
  validationFraction: Schema.Finite.check(Schema.isBetween({ minimum: 0, maximum: 0.5 })),
  /** the run folder: checkpoints, metrics.jsonl, the resolved config, the final adapter */
  outputDir: Schema.NonEmptyString,
  mode: TrainMode,
  r: PositiveInt,
  loraAlpha: Positive,
  loraDropout: Probability,
  useRslora: Schema.Boolean,
  targetModules: TargetModules,
  epochs: PositiveInt,
  /** stop after this many optimizer steps (overrides epochs when smaller) */
  maxSteps: Schema.optionalKey(PositiveInt),
  batchSize: PositiveInt,
  gradientAccumulationSteps: PositiveInt,
  learningRate: Positive,
  lrScheduler: LrSchedulerType,
  warmupSteps: NonNegativeInt,
  weightDecay: NonNegative,
  adamBeta1: Probability,
  adamBeta2: Probability,
  adamEpsilon: Positive,
  /** 0 turns clipping off */
  maxGradNorm: NonNegative,
  maxSeqLength: PositiveInt,
  packing: Schema.Boolean,
  seed: NonNegativeInt,
  logEvery: PositiveInt,
  saveEvery: PositiveInt,
  evalEvery: PositiveInt,
  /** keep at most this many newest checkpoints (plus the best); absent keeps all */
  saveTotalLimit: Schema.optionalKey(PositiveInt),
  metricForBest: BestMetric,
  /** stop when the best metric has not improved for this many evaluations; absent disables */
  earlyStoppingPatience: Schema.optionalKey(PositiveInt),
  /** validation records whose greedy generations are scored with ROUGE-L at each evaluation */
  evalGenerationSamples: NonNegativeInt,
  maxNewTokens: PositiveInt,
  /** the prompt layout of the Dataset stage */
  promptLayout: Schema.NonEmptyString,
  device: Schema.Literals(["auto", "gpu", "wasm", "cpu"]),
  /** who trains: the in-process tfjs trainer (default), the PyTorch engine, or torch when Python is usable */
  engine: Schema.optionalKey(Schema.Literals(["tfjs", "torch", "auto"])),
  /** torch engine: processes per node (torchrun); more than 1 runs data-parallel */
  nprocPerNode: Schema.optionalKey(PositiveInt),
  /** torch engine, multi-node: the number of nodes, this node's rank, the rendezvous address and port */
  nnodes: Schema.optionalKey(PositiveInt),
  nodeRank: Schema.optionalKey(NonNegativeInt),
  masterAddr: Schema.optionalKey(Schema.NonEmptyString),
  masterPort: Schema.optionalKey(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 65535 }))),
  /** torch engine: shard the decoder layers with FSDP instead of DDP (bases that do not fit one GPU) */
  fsdp: Schema.optionalKey(Schema.Boolean),
  /** torch engine: a DeepSpeed config file (ZeRO-2/3); needs the deepspeed package */
  deepspeed: Schema.optionalKey(Schema.NonEmptyString),
  /** torch engine: recompute activations in backward (less memory, ~30% more compute) */
  gradientCheckpointing: Schema.optionalKey(Schema.Boolean),
  /** torch engine: intra-op threads per process (default: torch's, all cores) */
  threads: Schema.optionalKey(PositiveInt)
})
export type TrainConfig = typeof TrainConfig.Type

/** The seed's defaults; `model`, `trainFile` and `outputDir` have none. */
export const defaultTrainConfig = {
  validationFraction: 0.1,
  mode: "lora",
  r: 16,
  loraAlpha: 32,
  loraDropout: 0.1,
  useRslora: false,
  targetModules: ["q_proj", "k_proj", "v_proj", "o_proj"],
  epochs: 3,
  batchSize: 4,
  gradientAccumulationSteps: 4,
  learningRate: 2e-4,
  lrScheduler: "linear",
  warmupSteps: 100,
  weightDecay: 0,
  adamBeta1: 0.9,
  adamBeta2: 0.999,
  adamEpsilon: 1e-8,
  maxGradNorm: 1,
  maxSeqLength: 512,
  packing: false,
  seed: 42,
  logEvery: 10,
  saveEvery: 500,
  evalEvery: 500,
  metricForBest: "rouge",
  evalGenerationSamples: 16,
  maxNewTokens: 64,
  promptLayout: "seed",
  device: "auto"
} satisfies Partial<TrainConfig>

export class TrainConfigError extends Schema.TaggedError<TrainConfigError>()("TrainConfigError", {
  source: Schema.String,
  field: Schema.String,
  issue: Schema.String,
  /** `data` (a bad value) unless the config file is missing or unreadable (`input`) */
  kind: kindField("data")
}) {
  override get message() {
    return `${this.source}: ${this.field === "" ? "" : `${this.field}: `}${this.issue}`
  }
}

/** The value kind of each field, for parsing CLI flag strings. */
export const configFieldKinds: Record<keyof TrainConfig, "string" | "int" | "number" | "boolean" | "modules"> = {
  model: "string",
  trainFile: "string",
  validationFile: "string",
  validationFraction: "number",
  outputDir: "string",
  mode: "string",
  r: "int",
  loraAlpha: "number",
  loraDropout: "number",
  useRslora: "boolean",
  targetModules: "modules",
  epochs: "int",
  maxSteps: "int",
  batchSize: "int",
  gradientAccumulationSteps: "int",
  learningRate: "number",
  lrScheduler: "string",
  warmupSteps: "int",
  weightDecay: "number",
  adamBeta1: "number",
  adamBeta2: "number",
  adamEpsilon: "number",
  maxGradNorm: "number",
  maxSeqLength: "int",
  packing: "boolean",
  seed: "int",
  logEvery: "int",
  saveEvery: "int",
  evalEvery: "int",
  saveTotalLimit: "int",
  metricForBest: "string",
  earlyStoppingPatience: "int",
  evalGenerationSamples: "int",
  maxNewTokens: "int",
  promptLayout: "string",
  device: "string",
  engine: "string",
  nprocPerNode: "int",
  nnodes: "int",
  nodeRank: "int",
  masterAddr: "string",
  masterPort: "int",
  fsdp: "boolean",
  deepspeed: "string",
  gradientCheckpointing: "boolean",
  threads: "int"
}

/** Parses a flag's text into the field's kind; numbers that do not parse stay strings so the schema names them. */
export const parseFlagValue = (field: keyof TrainConfig, text: string): unknown => {
  switch (configFieldKinds[field]) {
    case "int":
    case "number": {
      const n = Number(text)
      return text.trim() === "" || Number.isNaN(n) ? text : n
    }
    case "boolean":
      return text === "true" ? true : text === "false" ? false : text
    case "modules":
      return text === "all-linear" ? text : text.split(",").map((s) => s.trim()).filter((s) => s !== "")
    case "string":
      return text
  }
}

const decode = Schema.decodeUnknownResult(TrainConfig)

/** Validates a merged config object; `source` names where the values came from, for the error. */
export const validateTrainConfig = (value: unknown, source: string): Effect.Effect<TrainConfig, TrainConfigError> =>
  Result.match(decode(value, { onExcessProperty: "error", reportInput: true }), {
    onSuccess: Effect.succeed,
    onFailure: (error) => {
      const first = firstFieldIssue(error)
      return Effect.fail(new TrainConfigError({ source, field: first.field, issue: first.reason }))
    }
  })

/** Reads a JSON or YAML config file (YAML is a superset of JSON) into a plain object. */
export const readConfigFile = Effect.fn("TrainConfig.readConfigFile")(function*(path: string) {
  const fs = yield* FileSystem.FileSystem
  const text = yield* fs.readFileString(path).pipe(
    Effect.mapError((e) => new TrainConfigError({ source: path, field: "", issue: `cannot read the file (${describeCause(e)})`, kind: "input" }))
  )
  const doc = Yaml.parseDocument(text, { prettyErrors: true })
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!
    const line = e.linePos?.[0]
    return yield* new TrainConfigError({
      source: line === undefined ? path : `${path}:${line.line}`,
      field: "",
      issue: e.message.split("\n")[0]!
    })
  }
  const value: unknown = doc.toJS()
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return yield* new TrainConfigError({ source: path, field: "", issue: "the config must be a mapping of fields to values" })
  }
  return value as Record<string, unknown>
})

/**
 * defaults ⊕ file ⊕ flags, validated. Unknown keys in the file or flags are errors (a typo must not be ignored).
 */
export const resolveTrainConfig = Effect.fn("TrainConfig.resolve")(function*(
  file: string | undefined,
  overrides: Readonly<Record<string, unknown>>
) {
  const fromFile = file === undefined ? {} : yield* readConfigFile(file)
  // each layer is validated as the merge so far, so errors name the source that introduced them
  if (file !== undefined) {
    const merged = { model: "-", trainFile: "-", outputDir: "-", ...defaultTrainConfig, ...fromFile }
    yield* validateTrainConfig(merged, file)
  }
  return yield* validateTrainConfig({ ...defaultTrainConfig, ...fromFile, ...overrides }, file === undefined ? "flags" : `${file} + flags`)
})
