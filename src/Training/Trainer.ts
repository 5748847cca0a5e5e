/**
 * Supervised fine-tuning: LoRA, QLoRA (NF4 base) or full-parameter, with the HF Trainer's loop semantics.
 *
 * One optimizer step = `gradientAccumulationSteps` micro-batches; the loss is the token cross-entropy over the
 * answer tokens of the whole accumulation window divided by their count (transformers ≥ 4.46's fixed gradient
 * accumulation), then global-norm clipping, AdamW, the LR schedule. The loop is a Stream of steps: interruption
 * (Ctrl-C) is honoured between steps and saves a checkpoint. Everything random (data order, dropout masks, LoRA init)
 * is a function of the seed and the step, so a resumed run repeats an uninterrupted one bit for bit.
 */
import * as tf from "@tensorflow/tfjs-core"
import { Context, Effect, FileSystem, Layer, Option, Path, Result, Schema, Stream } from "effect"
import { decodeInput } from "../Dataset/Input.ts"
import { type ChatFormat, formatChatExample, formatExample, layoutTokenization, PromptLayout } from "../Dataset/PromptFormat.ts"
import type { TrainingRecord } from "../Dataset/Record.ts"
import { rougeL } from "../Metrics/Rouge.ts"
import {
  adapterTensors,
  ADAPTER_CONFIG,
  ADAPTER_WEIGHTS,
  FINAL_ADAPTER_DIR,
  loadAdapterInto,
  readPeftAdapter,
  writePeftAdapter
} from "../Model/PeftAdapter.ts"
import {
  checkpointName,
  finalRecordJson,
  listCheckpoints,
  loadCheckpoint,
  MODEL_FILE,
  pruneCheckpoints,
  saveCheckpoint,
  type TrainerState
} from "./Checkpoint.ts"
import { writeAdapterPrompt } from "./AdapterPrompt.ts"
import {
  type Batch,
  batchIndices,
  epochPermutation,
  packBatch,
  padBatch,
  type TokenizedExample,
  hasAnswerTokens,
  promptIds,
  tokenizeExample
} from "./Collate.ts"
import { Device, parameterCount } from "../Model/Device.ts"
import { generate } from "../Model/Generation.ts"
import { DenseLinear, droppedWindowWarning, LlamaModel, outputLinearName } from "../Model/LlamaModel.ts"
import { AdapterConfig, type LoraSettings, resolveTargets } from "../Model/AdapterConfig.ts"
import { DropoutContext, isLoraLayer, type LoraLayer, loraTransform } from "../Model/Lora.ts"
import { lrAt, type LrScheduleSpec } from "./LrSchedule.ts"
import { type LinearLayer, type LinearModule, type LlamaConfig, type NamedTensor, weightNames } from "../Model/ModelContracts.ts"
import { frozenLinear, nf4Bytes, nf4Linear, quantizeNf4 } from "../Model/Nf4.ts"
import { AdamW, clipGradNorm } from "./Optimizer.ts"
import { Progress } from "../Shared/Progress.ts"
import { SeededRng } from "../Shared/Prng.ts"
import type { TrainConfig } from "./TrainConfig.ts"
import { gguf } from "../Model/Gguf.ts"
import { ggufKeys } from "../Model/GgufKeys.ts"
import { rewriteGguf } from "../Model/GgufRewrite.ts"
import { renderTokens } from "../Model/TokenText.ts"
import { writeGguf } from "../Model/GgufWriter.ts"
import { expectedShape, loadModelSource } from "../Model/ModelLoader.ts"
import { toFileError } from "../Model/ModelFileError.ts"
import { type ModelTokenizer, Tokenizer } from "../Model/Tokenizer.ts"
import { openSafetensors, writeSafetensors } from "../Model/Safetensors.ts"
import { causeKind, describeCause, ErrorKind } from "../Shared/Errors.ts"

export class TrainError extends Schema.TaggedError<TrainError>()("TrainError", {
  stage: Schema.String,
  detail: Schema.String,
  /** the kind its cause implied (a missing model or data file is `input`), when it implied one */
  origin: Schema.optionalKey(ErrorKind)
}) {
  /** the cause's kind, else by stage: a bad model, data, tokenizer or config is `data`, no device or Python `unavailable` */
  get kind(): ErrorKind {
    return this.origin ?? trainStageKinds[this.stage] ?? "failure"
  }
  override get message() {
    return `${this.stage}: ${this.detail}`
  }
}

const trainStageKinds: Readonly<Record<string, ErrorKind>> = {
  model: "data",
  data: "data",
  tokenizer: "data",
  config: "data",
  device: "unavailable",
  python: "unavailable"
}

const toTrainError = (stage: string) => (e: unknown) => {
  const origin = causeKind(e)
  return new TrainError({ stage, detail: describeCause(e), ...(origin === undefined ? {} : { origin }) })
}

/** A tokenizer as the trainer needs it. */
export interface TrainTokenizer {
  readonly bosId: number | undefined
  readonly eosId: number
  /** generation stops at these (EOS, and EOT for chat models); default [eosId] */
  readonly stopIds?: ReadonlyArray<number>
  encode(text: string): ReadonlyArray<number>
  decode(ids: ReadonlyArray<number>): string
}

/** One example: the text to train on with its answer span, the prompt alone, and the reference answer. */
export interface TrainExample {
  readonly text: string
  readonly answerStart: number
  readonly answerEnd: number
  /** chat examples: every assistant turn's span (Collate trains on each); absent: the answer's span alone */
  readonly lossSpans?: ReadonlyArray<readonly [number, number]> | undefined
}

/** What a run trains on: the base model's weights (streamed), its tokenizer, the data. */
export interface TrainingInput {
  readonly modelConfig: LlamaConfig
  readonly weights: () => Iterable<NamedTensor> | AsyncIterable<NamedTensor>
  readonly tokenizer: TrainTokenizer
  /** recorded as `base_model_name_or_path` in the adapter */
  readonly baseModelName: string
  /** the base model's GGUF file, when it is one: full mode writes the trained model next to it as GGUF */
  readonly baseGguf?: string
  readonly train: ReadonlyArray<TrainExample>
  readonly validation: ReadonlyArray<TrainExample>
}

export interface TrainLog {
  readonly type: "train"
  readonly step: number
  readonly epoch: number
  readonly loss: number
  readonly learningRate: number
  readonly gradNorm: number
  readonly tokensPerSecond: number
  readonly etaSeconds: number
}
export interface EvalLog {
  readonly type: "eval"
  readonly step: number
  /** null when the validation set has no answer token */
  readonly evalLoss: number | null
  readonly rougeL: number | null
}

export interface TrainResult {
  readonly runDir: string
  /** the best checkpoint's weights: a PEFT adapter folder (lora/qlora) or model.safetensors + config (full) */
  readonly finalDir: string
  readonly bestStep: number
  readonly bestMetric: number | null
  readonly globalStep: number
  readonly totalSteps: number
  readonly trainLogs: ReadonlyArray<TrainLog>
  readonly evaluations: ReadonlyArray<EvalLog>
  readonly tokensPerSecond: number
  /** bytes of the frozen base weights as held in memory (NF4 codes + scales for QLoRA) */
  readonly baseMemoryBytes: number
  readonly trainableParameters: number
  readonly stoppedEarly: boolean
}

export interface TrainOptions {
  readonly resume?: boolean
  /** called after each step (progress displays); the default writes a bar on a TTY, log lines otherwise */
  readonly onLog?: (log: TrainLog | EvalLog) => void
  /** stop (and checkpoint) after this many steps of this invocation, as if interrupted (tests of resume) */
  readonly stopAfterSteps?: number
}

// ---------------------------------------------------------------------------------------------------------------------
// the model under training

interface Trainee {
  readonly model: LlamaModel
  readonly base: LlamaModel | undefined
  readonly loraLayers: ReadonlyArray<LoraLayer>
  readonly variables: ReadonlyArray<tf.Variable>
  /** checkpoint names of the variables (optimizer state keys) */
  readonly variableNames: ReadonlyArray<string>
  readonly baseMemoryBytes: number
  readonly dropout: DropoutContext
  dispose(): void
}

export const loraSettingsOf = (c: TrainConfig): LoraSettings => ({
  r: c.r,
  alpha: c.loraAlpha,
  dropout: c.loraDropout,
  useRslora: c.useRslora,
  targetModules: c.targetModules
})

/** The adapter config a LoRA run trains and writes: every module's rank and scale come from it. */
export const adapterConfigOf = (c: TrainConfig, baseModelName: string): AdapterConfig =>
  AdapterConfig.fromSettings(loraSettingsOf(c), baseModelName)

/** A weight's HF name: tfjs variable names are process-global, so the model suffixes them with `#<serial>`. */
const canonicalName = (v: tf.Variable) => v.name.replace(/#\d+$/, "")

/** Builds the model for a mode: LoRA over a dense base, LoRA over an NF4 base, or all weights trainable. */
export const buildTrainee = async (input: TrainingInput, config: TrainConfig): Promise<Trainee> => {
  const dropout = new DropoutContext()
  if (config.mode === "full") {
    const model = await LlamaModel.fromWeights(input.modelConfig, input.weights(), { trainable: true })
    const variables = model.trainableVariables
    return {
      model,
      base: undefined,
      loraLayers: [],
      variables,
      variableNames: variables.map(canonicalName),
      baseMemoryBytes: variables.reduce((n, v) => n + v.size * 4, 0),
      dropout,
      dispose: () => model.dispose()
    }
  }
  const base = await LlamaModel.fromWeights(input.modelConfig, input.weights())
  let baseMemoryBytes = 0
  const counted = new Set<tf.Tensor>()
  const rng = new SeededRng(config.seed)
  const lora = loraTransform(adapterConfigOf(config, input.baseModelName), rng, dropout)
  const model = base.withLinears((name, layer) => {
    let frozen: LinearLayer = layer
    if (config.mode === "qlora" && name !== outputLinearName && layer instanceof DenseLinear) {
      // bitsandbytes quantizes every decoder linear and keeps lm_head (and embeddings, norms) in full precision
      const q = quantizeNf4(layer.weight.dataSync() as Float32Array, [layer.outFeatures, layer.inFeatures])
      layer.dispose() // the dense copy goes; only codes and scales stay
      baseMemoryBytes += nf4Bytes(q)
      frozen = nf4Linear(name, q)
    } else if (layer instanceof DenseLinear) {
      if (!counted.has(layer.weight)) {
        counted.add(layer.weight)
        baseMemoryBytes += layer.weight.size * 4
      }
      frozen = frozenLinear(name, layer.weight)
    }
    return lora(name, frozen)
  })
  const loraLayers = [...model.linears.values()].filter(isLoraLayer)
  if (loraLayers.length === 0) throw new Error("no module of the model matches targetModules")
  // embedding and norms (the tied lm_head shares the embedding tensor)
  const c = input.modelConfig
  const embeddingCounted = [...counted].some((t) => t.shape[0] === c.vocabSize && c.tieWordEmbeddings)
  baseMemoryBytes += (embeddingCounted ? 0 : c.vocabSize * c.hiddenSize * 4) + (2 * c.numLayers + 1) * c.hiddenSize * 4
  return {
    model,
    base,
    loraLayers,
    variables: loraLayers.flatMap((l) => [l.loraA, l.loraB]),
    variableNames: loraLayers.flatMap((l) => [`${l.name}.lora_A.weight`, `${l.name}.lora_B.weight`]),
    baseMemoryBytes,
    dropout,
    dispose: () => {
      model.dispose()
      base.dispose()
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// loss

const hasKernel = (name: string) => tf.getKernel(name, tf.getBackend()) !== undefined

/**
 * Sum of the answer tokens' cross-entropy divided by `denominator`. Only rows of the logits at loss positions go
 * through the log-softmax, so padding and prompt positions cost nothing beyond the forward pass.
 */
export const batchLoss = (model: LlamaModel, batch: Batch, denominator: number): tf.Scalar => {
  // the id tensors live outside the gradient scope: custom gradients (the trainable embedding's) read them in backward
  const inputs = batchTensors(batch)
  try {
    return tf.tidy(() => batchLossOn(model, batch, inputs, denominator))
  } finally {
    tf.dispose([inputs.ids, inputs.mask, ...(inputs.segments === undefined ? [] : [inputs.segments])])
  }
}

interface BatchTensors {
  readonly ids: tf.Tensor2D
  readonly mask: tf.Tensor2D
  readonly segments: tf.Tensor2D | undefined
}

const batchTensors = (batch: Batch): BatchTensors => ({
  ids: tf.tensor2d(batch.inputIds, [batch.rows, batch.length], "int32"),
  mask: tf.tensor2d(batch.attentionMask, [batch.rows, batch.length], "int32"),
  segments: batch.segmentIds === undefined ? undefined : tf.tensor2d(batch.segmentIds, [batch.rows, batch.length], "int32")
})

/** Loss and gradients of the variables for one micro-batch. */
export const batchGrads = (model: LlamaModel, batch: Batch, denominator: number, variables: ReadonlyArray<tf.Variable>) => {
  const inputs = batchTensors(batch)
  try {
    return tf.variableGrads(() => batchLossOn(model, batch, inputs, denominator), [...variables])
  } finally {
    tf.dispose([inputs.ids, inputs.mask, ...(inputs.segments === undefined ? [] : [inputs.segments])])
  }
}

const batchLossOn = (model: LlamaModel, batch: Batch, { ids, mask, segments }: BatchTensors, denominator: number): tf.Scalar => {
  const logits = model.logits(ids, segments === undefined ? { attentionMask: mask } : { attentionMask: mask, segmentIds: segments })
  const positions: Array<number> = []
  const targets: Array<number> = []
  batch.lossMask.forEach((m, i) => {
    if (m === 1) {
      positions.push(i)
      targets.push(batch.targets[i]!)
    }
  })
  const vocab = logits.shape[2]
  if (positions.length === 0) return tf.mul(tf.sum(logits), 0) as tf.Scalar
  const flat = tf.reshape(logits, [batch.rows * batch.length, vocab])
  if (hasKernel("UnsortedSegmentSum")) {
    // gather's gradient scatters with UnsortedSegmentSum: only the answer rows go through the log-softmax
    const logp = tf.logSoftmax(tf.gather(flat, tf.tensor1d(positions, "int32")))
    const picked = tf.sum(tf.mul(logp, tf.oneHot(tf.tensor1d(targets, "int32"), vocab)))
    return tf.div(tf.neg(picked), denominator) as tf.Scalar
  }
  // backends without that kernel (wasm): every row, with the loss mask folded into the one-hot targets
  const weights = tf.mul(
    tf.oneHot(tf.tensor1d(batch.targets, "int32"), vocab),
    tf.reshape(tf.tensor1d(batch.lossMask), [-1, 1])
  )
  return tf.div(tf.neg(tf.sum(tf.mul(tf.logSoftmax(flat), weights))), denominator) as tf.Scalar
}

// ---------------------------------------------------------------------------------------------------------------------
// the step plan

export interface StepPlan {
  readonly epoch: number
  /** fractional epoch reached after this step */
  readonly epochProgress: number
  /** micro-batches of example indices */
  readonly micro: ReadonlyArray<ReadonlyArray<number>>
}

/** The whole run's steps: per epoch a seeded permutation, cut into batches, grouped by gradient accumulation. */
export const planSteps = (n: number, c: Pick<TrainConfig, "epochs" | "batchSize" | "gradientAccumulationSteps" | "seed" | "maxSteps">): Array<StepPlan> => {
  const steps: Array<StepPlan> = []
  for (let e = 0; e < c.epochs; e++) {
    const batches = batchIndices(epochPermutation(n, c.seed, e), c.batchSize)
    const windows = Math.ceil(batches.length / c.gradientAccumulationSteps)
    for (let w = 0; w < windows; w++) {
      steps.push({
        epoch: e,
        epochProgress: e + (w + 1) / windows,
        micro: batches.slice(w * c.gradientAccumulationSteps, (w + 1) * c.gradientAccumulationSteps)
      })
    }
  }
  return c.maxSteps === undefined ? steps : steps.slice(0, c.maxSteps)
}

const mixSeed = (seed: number, step: number, micro: number) =>
  (Math.imul(seed + 1, 0x27d4eb2f) ^ Math.imul(step + 1, 0x165667b1) ^ Math.imul(micro + 1, 0x9e3779b1)) >>> 0

// ---------------------------------------------------------------------------------------------------------------------
// the run

interface RunState {
  trainer: TrainerState
  lastSaved: number
  logs: Array<TrainLog>
  evals: Array<EvalLog>
  stop: boolean
  stoppedEarly: boolean
  windowLoss: number
  windowSteps: number
  windowTokens: number
  windowStart: number
  runStart: number
  runTokens: number
  stepsThisRun: number
}

const isBetter = (metric: TrainConfig["metricForBest"], value: number, best: number | null) =>
  best === null || (metric === "rouge" ? value > best : value < best)

/**
 * Training progress through the Progress service (the CLI's terminal bar, the pipeline's log, a test's record;
 * nothing when no Progress is provided): a step bar for train logs, a line that stays for each evaluation.
 */
const progressReport = (progress: Option.Option<Progress["Service"]>, totalSteps: number) =>
(log: TrainLog | EvalLog): Effect.Effect<void> => {
  if (Option.isNone(progress)) return Effect.void
  if (log.type === "eval") {
    return progress.value.line(
      `eval step ${log.step}: loss ${log.evalLoss === null ? "n/a (no validation answer tokens)" : log.evalLoss.toFixed(4)}${log.rougeL === null ? "" : ` rougeL ${log.rougeL.toFixed(4)}`}`
    )
  }
  return progress.value.update({
    task: "train",
    done: log.step,
    total: totalSteps,
    unit: "steps",
    message: `epoch ${log.epoch.toFixed(2)} loss ${log.loss.toFixed(4)} lr ${log.learningRate.toExponential(2)} grad ${
      log.gradNorm.toFixed(3)
    } ${log.tokensPerSecond.toFixed(0)} tok/s ETA ${formatEta(log.etaSeconds)}`
  })
}

const formatEta = (s: number) => {
  if (!Number.isFinite(s)) return "?"
  const m = Math.floor(s / 60)
  return m > 0 ? `${m}m${Math.round(s % 60)}s` : `${Math.round(s)}s`
}

export const runTraining = Effect.fn("Trainer.run")(function*(
  input: TrainingInput,
  config: TrainConfig,
  options: TrainOptions = {}
) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const runDir = config.outputDir
  const metricsFile = path.join(runDir, "metrics.jsonl")
  if (config.metricForBest === "rouge" && config.evalGenerationSamples === 0) {
    return yield* new TrainError({ stage: "config", detail: "metricForBest: rouge needs evalGenerationSamples > 0" })
  }
  if (input.train.length === 0) return yield* new TrainError({ stage: "data", detail: "no training examples" })
  yield* fs.makeDirectory(runDir, { recursive: true }).pipe(Effect.mapError(toTrainError(runDir)))
  yield* fs.writeFileString(path.join(runDir, "train_config.json"), JSON.stringify(config, null, 2) + "\n").pipe(
    Effect.mapError(toTrainError(runDir))
  )

  // data
  const tok = input.tokenizer
  const tokenize = (ex: TrainExample): TokenizedExample => tokenizeExample(tok, ex, config.maxSeqLength)
  // rows truncation leaves without an answer token carry no loss: left out (and counted), never averaged to 0
  const [train, validation] = [input.train, input.validation].map((examples) => examples.map(tokenize).filter(hasAnswerTokens))
  for (const [what, all, kept] of [["training", input.train, train], ["validation", input.validation, validation]] as const) {
    const dropped = all.length - kept!.length
    if (dropped > 0) {
      yield* Effect.logWarning(
        `${dropped} of ${all.length} ${what} examples have no answer token within maxSeqLength ${config.maxSeqLength}: left out of the loss`
      )
    }
  }
  if (train!.length === 0) {
    return yield* new TrainError({
      stage: "data",
      detail: `no training example has an answer token within maxSeqLength ${config.maxSeqLength} (raise --max-seq-length)`
    })
  }
  const windowWarning = droppedWindowWarning(input.modelConfig, config.maxSeqLength)
  if (windowWarning !== undefined) yield* Effect.logWarning(windowWarning)
  const genSample = input.validation.slice(0, config.evalGenerationSamples).map((ex) => ({
    prompt: promptIds(tok, ex.text.slice(0, ex.answerStart)),
    reference: ex.text.slice(ex.answerStart, ex.answerEnd)
  }))
  const collate = (idx: ReadonlyArray<number>, from: ReadonlyArray<TokenizedExample>) => {
    const examples = idx.map((i) => from[i]!)
    return config.packing ? packBatch(examples, tok.eosId, config.maxSeqLength) : padBatch(examples, tok.eosId)
  }
  const plan = planSteps(train.length, config)
  const totalSteps = plan.length
  const schedule: LrScheduleSpec = {
    type: config.lrScheduler,
    peak: config.learningRate,
    warmupSteps: config.warmupSteps,
    totalSteps
  }

  // fail fast, before loading anything, when the device's memory budget cannot hold this run
  const device = yield* Effect.serviceOption(Device)
  if (device._tag === "Some") {
    const c = input.modelConfig
    const shape = (m: LinearModule) => expectedShape(c, `${weightNames.linear(0, m)}.weight`)!
    const sizes = (modules: ReadonlyArray<LinearModule>, f: (s: ReadonlyArray<number>) => number) =>
      modules.reduce((n, m) => n + c.numLayers * f(shape(m)), 0)
    const linearParams = sizes(resolveTargets("all-linear"), ([o, i]) => o! * i!)
    const params = parameterCount(c)
    const loraParams = sizes(resolveTargets(config.targetModules), ([o, i]) => config.r * (o! + i!))
    // NF4 with double quantization: 0.5 + 1/64 + 4/(64·256) bytes per decoder-linear weight, the rest float32
    const baseBytes = config.mode === "qlora" ? linearParams * (0.5 + 1 / 64 + 4 / 16384) + (params - linearParams) * 4 : params * 4
    const longest = Math.max(...train.map((e) => e.ids.length))
    yield* device.value.planMemory(c, config.batchSize, config.packing ? config.maxSeqLength : longest, {
      training: true,
      weightBytesPerParameter: baseBytes / params,
      trainableParameters: config.mode === "full" ? params : loraParams
    }).pipe(Effect.mapError((e) => new TrainError({ stage: "device", detail: e.message })))
  }

  // model
  const trainee = yield* Effect.acquireRelease(
    Effect.tryPromise({ try: () => buildTrainee(input, config), catch: toTrainError("model") }),
    (t) => Effect.sync(() => t.dispose())
  )
  const optimizer = yield* Effect.acquireRelease(
    Effect.sync(() =>
      new AdamW(trainee.variables, {
        beta1: config.adamBeta1,
        beta2: config.adamBeta2,
        eps: config.adamEpsilon,
        weightDecay: config.weightDecay
      })
    ),
    (o) => Effect.sync(() => o.dispose())
  )
  const adapterConfig = adapterConfigOf(config, input.baseModelName)
  const trainableParameters = trainee.variables.reduce((n, v) => n + v.size, 0)

  const writeWeights = (dir: string) =>
    config.mode === "full"
      ? writeSafetensors(
        path.join(dir, MODEL_FILE),
        trainee.variables.map((v) => ({ name: canonicalName(v), shape: v.shape, data: () => v.dataSync() as Float32Array })),
        { metadata: { format: "pt" } }
      ).pipe(Effect.andThen(
        fs.writeFileString(path.join(dir, "config.json"), JSON.stringify(hfConfigOf(input.modelConfig), null, 2) + "\n").pipe(
          Effect.mapError(toFileError(dir))
        )
      ))
      : writePeftAdapter(dir, trainee.loraLayers, adapterConfig)

  const state: RunState = {
    trainer: {
      globalStep: 0,
      epoch: 0,
      totalSteps,
      metricForBest: config.metricForBest,
      bestMetric: null,
      bestStep: null,
      evaluationsWithoutImprovement: 0,
      evaluations: [],
      tokensSeen: 0
    },
    lastSaved: -1,
    logs: [],
    evals: [],
    stop: false,
    stoppedEarly: false,
    windowLoss: 0,
    windowSteps: 0,
    windowTokens: 0,
    windowStart: performance.now(),
    runStart: performance.now(),
    runTokens: 0,
    stepsThisRun: 0
  }

  // resume: from the newest checkpoint that loads; a corrupt one (torn by a crash) falls back to the one before
  if (options.resume === true) {
    const steps = yield* listCheckpoints(runDir).pipe(Effect.mapError(toTrainError("resume")))
    const restore = Effect.fnUntraced(function*(dir: string) {
      const loaded = yield* loadCheckpoint(dir).pipe(Effect.mapError(toTrainError("resume")))
      if (loaded.scheduler.totalSteps !== totalSteps) {
        return yield* new TrainError({
          stage: "resume",
          detail: `${dir} was made for ${loaded.scheduler.totalSteps} steps but this config gives ${totalSteps}`
        })
      }
      if (config.mode === "full") {
        const tensors = yield* Effect.scoped(Effect.gen(function*() {
          const file = yield* openSafetensors(path.join(dir, MODEL_FILE))
          return yield* Effect.forEach(file.tensors, (t) => file.readTensor(t.name))
        })).pipe(Effect.mapError(toTrainError("resume")))
        const byName = new Map(tensors.map((t) => [t.name, t]))
        for (const v of trainee.variables) {
          const t = byName.get(canonicalName(v))
          if (t === undefined) return yield* new TrainError({ stage: "resume", detail: `${dir}: ${canonicalName(v)} is missing` })
          tf.tidy(() => v.assign(tf.tensor(t.data, v.shape)))
        }
      } else {
        const adapter = yield* readPeftAdapter(dir).pipe(Effect.mapError(toTrainError("resume")))
        yield* loadAdapterInto(adapter, trainee.loraLayers, dir).pipe(Effect.mapError(toTrainError("resume")))
      }
      yield* Effect.try({
        try: () => optimizer.loadState(trainee.variableNames, loaded.optimizer, loaded.optimizerStep),
        catch: toTrainError("resume")
      })
      return loaded
    })
    let resumed: { readonly step: number; readonly loaded: Effect.Success<ReturnType<typeof restore>> } | undefined
    const corrupt: Array<string> = []
    for (const step of [...steps].reverse()) {
      const dir = path.join(runDir, checkpointName(step))
      const attempt = yield* Effect.result(restore(dir))
      if (attempt._tag === "Success") {
        resumed = { step, loaded: attempt.success }
        break
      }
      // a config mismatch is the user's to fix, not a torn file to skip
      if (attempt.failure.detail.includes("steps but this config gives")) return yield* attempt.failure
      corrupt.push(`${checkpointName(step)} (${attempt.failure.detail})`)
      yield* Effect.logWarning(`${dir} cannot be loaded (${attempt.failure.detail}); trying the previous checkpoint`)
    }
    if (resumed === undefined && corrupt.length > 0) {
      return yield* new TrainError({
        stage: "resume",
        detail: `no checkpoint in ${runDir} can be loaded: ${corrupt.join("; ")}. ` +
          "Delete the broken checkpoint folders to start over from the last good one, or run without --resume to start from step 0"
      })
    }
    if (resumed !== undefined) {
      const { step: newest, loaded } = resumed
      const dir = path.join(runDir, checkpointName(newest))
      state.trainer = { ...loaded.trainer }
      state.lastSaved = newest
      state.evals = loaded.trainer.evaluations.map((e) => ({ type: "eval", ...e }))
      // metrics written after this checkpoint by the interrupted run are replayed by this one; a line torn by a
      // crash mid-write (no valid JSON) is dropped
      const old = yield* fs.readFileString(metricsFile).pipe(Effect.orElseSucceed(() => ""))
      const kept = old.split("\n").filter((l) => {
        if (l.trim() === "") return false
        try {
          const step = (JSON.parse(l) as { step?: unknown }).step
          return typeof step === "number" && step <= newest
        } catch {
          return false
        }
      })
      yield* fs.writeFileString(metricsFile, kept.map((l) => l + "\n").join("")).pipe(Effect.mapError(toTrainError(metricsFile)))
      yield* Effect.logInfo(`resuming from ${dir} (step ${newest} of ${totalSteps})`)
    } else {
      yield* Effect.logInfo(`no checkpoint in ${runDir}: starting from step 0`)
    }
  } else {
    yield* fs.writeFileString(metricsFile, "").pipe(Effect.mapError(toTrainError(metricsFile)))
  }

  const progress = yield* Effect.serviceOption(Progress)
  const onLog = options.onLog
  const report = onLog === undefined ? progressReport(progress, totalSteps) : (log: TrainLog | EvalLog) => Effect.sync(() => onLog(log))
  const appendMetrics = (log: TrainLog | EvalLog) =>
    fs.writeFileString(metricsFile, JSON.stringify(log) + "\n", { flag: "a" }).pipe(Effect.mapError(toTrainError(metricsFile)))

  const save = Effect.fnUntraced(function*() {
    const step = state.trainer.globalStep
    if (state.lastSaved === step) return
    yield* saveCheckpoint(runDir, {
      writeWeights,
      optimizer: optimizer.state(trainee.variableNames),
      optimizerStep: optimizer.step,
      scheduler: { ...schedule, lastStep: step },
      rng: { seed: config.seed, globalStep: step },
      trainer: state.trainer
    }).pipe(Effect.mapError(toTrainError("checkpoint")))
    state.lastSaved = step
    yield* pruneCheckpoints(runDir, config.saveTotalLimit, state.trainer.bestStep).pipe(Effect.mapError(toTrainError("checkpoint")))
  })

  const evaluate = Effect.fnUntraced(function*() {
    trainee.dropout.begin(0, false)
    const { sum, count } = (() => {
      let sum = 0
      let count = 0
      for (const idx of batchIndices(validation.map((_, i) => i), config.batchSize)) {
        const batch = collate(idx, validation)
        if (batch.lossTokens === 0) continue
        sum += tf.tidy(() => batchLoss(trainee.model, batch, 1).dataSync()[0]!)
        count += batch.lossTokens
      }
      return { sum, count }
    })()
    let rouge: number | null = null
    if (genSample.length > 0) {
      let total = 0
      for (const idx of batchIndices(genSample.map((_, i) => i), config.batchSize)) {
        const outs = generate(trainee.model, idx.map((i) => genSample[i]!.prompt), {
          maxNewTokens: config.maxNewTokens,
          stopTokenIds: tok.stopIds ?? [tok.eosId],
          padTokenId: tok.eosId
        })
        outs.forEach((o, j) => {
          // rendered as both engines render it (TokenText), so this ROUGE-L is what `eval` would measure
          total += rougeL(renderTokens(tok.decode, o.tokens), genSample[idx[j]!]!.reference).fmeasure
        })
      }
      rouge = total / genSample.length
    }
    // no validation token: no eval loss (null), never a 0 that would win as the best
    const log: EvalLog = { type: "eval", step: state.trainer.globalStep, evalLoss: count === 0 ? null : sum / count, rougeL: rouge }
    const value = config.metricForBest === "rouge" ? rouge : log.evalLoss
    const improved = value !== null && isBetter(config.metricForBest, value, state.trainer.bestMetric)
    state.trainer = {
      ...state.trainer,
      evaluations: [...state.trainer.evaluations, { step: log.step, evalLoss: log.evalLoss, rougeL: log.rougeL }],
      bestMetric: improved ? value : state.trainer.bestMetric,
      bestStep: improved ? log.step : state.trainer.bestStep,
      evaluationsWithoutImprovement: improved ? 0 : state.trainer.evaluationsWithoutImprovement + 1
    }
    state.evals.push(log)
    yield* report(log)
    yield* appendMetrics(log)
    // the best weights must exist on disk to become the final adapter
    if (improved) yield* save()
    if (config.earlyStoppingPatience !== undefined && state.trainer.evaluationsWithoutImprovement >= config.earlyStoppingPatience) {
      state.stop = true
      state.stoppedEarly = true
    }
  })

  const trainStep = Effect.fnUntraced(function*(k: number) {
    if (state.stop) return
    const step = plan[k]!
    const batches = step.micro.map((idx) => collate(idx, train))
    const lossTokens = batches.reduce((n, b) => n + b.lossTokens, 0)
    const tokens = batches.reduce((n, b) => n + b.tokens, 0)
    const { loss, gradNorm, lr } = yield* Effect.try({
      try: () => {
        let loss = 0
        let acc: Array<tf.Tensor> | undefined
        batches.forEach((batch, m) => {
          trainee.dropout.begin(mixSeed(config.seed, k, m), true)
          const { value, grads } = batchGrads(trainee.model, batch, Math.max(1, lossTokens), trainee.variables)
          loss += value.dataSync()[0]!
          value.dispose()
          const ordered = trainee.variables.map((v) => grads[v.name]!)
          if (acc === undefined) acc = ordered
          else {
            const next = acc.map((g, i) => tf.add(g, ordered[i]!))
            tf.dispose([...acc, ...ordered])
            acc = next
          }
        })
        const clipped = clipGradNorm(acc!, config.maxGradNorm)
        const lr = lrAt(schedule, k)
        optimizer.apply(clipped.grads, lr)
        tf.dispose([...acc!, ...clipped.grads])
        return { loss, gradNorm: clipped.norm, lr }
      },
      catch: toTrainError(`step ${k + 1}`)
    })
    if (!Number.isFinite(loss)) return yield* new TrainError({ stage: `step ${k + 1}`, detail: `the loss is ${loss}` })
    state.trainer = {
      ...state.trainer,
      globalStep: k + 1,
      epoch: step.epochProgress,
      tokensSeen: state.trainer.tokensSeen + tokens
    }
    state.windowLoss += loss
    state.windowSteps += 1
    state.windowTokens += tokens
    state.runTokens += tokens
    state.stepsThisRun += 1
    const done = k + 1
    if (done % config.logEvery === 0 || done === totalSteps) {
      const now = performance.now()
      const tokensPerSecond = state.windowTokens / Math.max(1e-9, (now - state.windowStart) / 1000)
      const perStep = (now - state.runStart) / 1000 / state.stepsThisRun
      const log: TrainLog = {
        type: "train",
        step: done,
        epoch: step.epochProgress,
        loss: state.windowLoss / state.windowSteps,
        learningRate: lr,
        gradNorm,
        tokensPerSecond,
        etaSeconds: perStep * (totalSteps - done)
      }
      state.logs.push(log)
      yield* report(log)
      yield* appendMetrics(log)
      state.windowLoss = 0
      state.windowSteps = 0
      state.windowTokens = 0
      state.windowStart = now
    }
    if (done % config.evalEvery === 0 || done === totalSteps) yield* evaluate()
    if (done % config.saveEvery === 0 || done === totalSteps) yield* save()
    if (options.stopAfterSteps !== undefined && state.stepsThisRun >= options.stopAfterSteps) state.stop = true
  })

  const startStep = state.trainer.globalStep
  yield* Effect.logInfo(
    `training ${config.mode} on ${device._tag === "Some" ? device.value.info.kind : tf.getBackend()}: ` +
      `${train.length} examples, ${totalSteps} steps, ${trainableParameters} trainable parameters, ` +
      `base ${(trainee.baseMemoryBytes / 2 ** 20).toFixed(2)} MiB`
  )

  yield* Stream.range(startStep, totalSteps - 1).pipe(
    // one step per pull, so the stop flag (early stopping) is read after the previous step, not per chunk
    Stream.rechunk(1),
    Stream.takeWhile(() => !state.stop),
    // a macrotask between steps lets Node deliver SIGINT, which interrupts this fiber between two steps
    Stream.mapEffect((k) => Effect.andThen(Effect.promise(() => new Promise<void>((r) => setImmediate(r))), trainStep(k))),
    Stream.runDrain,
    Effect.onInterrupt(() =>
      Effect.gen(function*() {
        if (Option.isSome(progress)) yield* progress.value.line(`train: interrupted at step ${state.trainer.globalStep}`)
        yield* Effect.logInfo(`interrupted at step ${state.trainer.globalStep}: saving a checkpoint`)
        yield* save().pipe(Effect.orDie)
      })
    )
  )
  // a line that stays ends the bar, so what is printed next starts on a line of its own
  if (Option.isSome(progress) && onLog === undefined) yield* progress.value.line(`train: step ${state.trainer.globalStep}/${totalSteps}`)

  const finished = state.trainer.globalStep >= totalSteps || state.stoppedEarly
  // with no evaluation that could be compared, the final weights are the last step's
  if (!finished || state.trainer.bestStep === null) yield* save()
  const bestStep = state.trainer.bestStep ?? state.trainer.globalStep
  const finalDir = path.join(runDir, config.mode === "full" ? "final-model" : FINAL_ADAPTER_DIR)
  if (finished) {
    const from = path.join(runDir, checkpointName(bestStep))
    yield* fs.remove(finalDir, { recursive: true, force: true }).pipe(Effect.mapError(toTrainError(finalDir)))
    yield* fs.makeDirectory(finalDir, { recursive: true }).pipe(Effect.mapError(toTrainError(finalDir)))
    for (const f of config.mode === "full" ? [MODEL_FILE, "config.json"] : [ADAPTER_CONFIG, ADAPTER_WEIGHTS]) {
      yield* fs.copyFile(path.join(from, f), path.join(finalDir, f)).pipe(Effect.mapError(toTrainError(finalDir)))
    }
    // the layout the examples were rendered in, so export and serve render /infer's prompt the same way
    if (config.mode !== "full" && Schema.is(PromptLayout)(config.promptLayout)) {
      yield* writeAdapterPrompt(finalDir, config.promptLayout).pipe(Effect.mapError(toTrainError(finalDir)))
    }
    if (config.mode === "full" && input.baseGguf !== undefined) {
      // the served form: the base GGUF's metadata (tokenizer included) with the trained weights
      yield* exportFullModelGguf(input.baseGguf, path.join(finalDir, MODEL_FILE), path.join(finalDir, "model.gguf"), input.modelConfig)
        .pipe(Effect.mapError(toTrainError("export")))
    }
    yield* fs.writeFileString(
      path.join(runDir, "final.json"),
      finalRecordJson({
        bestStep,
        metricForBest: config.metricForBest,
        bestMetric: state.trainer.bestMetric,
        globalStep: state.trainer.globalStep,
        stoppedEarly: state.stoppedEarly,
        finalDir
      })
    ).pipe(Effect.mapError(toTrainError(runDir)))
  }
  const elapsed = (performance.now() - state.runStart) / 1000
  return {
    runDir,
    finalDir,
    bestStep,
    bestMetric: state.trainer.bestMetric,
    globalStep: state.trainer.globalStep,
    totalSteps,
    trainLogs: state.logs,
    evaluations: state.evals,
    tokensPerSecond: state.runTokens / Math.max(1e-9, elapsed),
    baseMemoryBytes: trainee.baseMemoryBytes,
    trainableParameters,
    stoppedEarly: state.stoppedEarly
  } satisfies TrainResult
}, Effect.scoped)


/** Reads a LoRA model's adapter tensors (for tests and exporters). */
export const currentAdapterTensors = (layers: ReadonlyArray<LoraLayer>) => adapterTensors(layers)

// ---------------------------------------------------------------------------------------------------------------------
// full-model outputs

/** transformers' LlamaConfig / MistralConfig fields for a config (what ModelLoader.loadHfFolder reads back). */
export const hfConfigOf = (c: LlamaConfig) => ({
  architectures: [c.slidingWindow === undefined ? "LlamaForCausalLM" : "MistralForCausalLM"],
  model_type: c.slidingWindow === undefined ? "llama" : "mistral",
  vocab_size: c.vocabSize,
  hidden_size: c.hiddenSize,
  intermediate_size: c.intermediateSize,
  num_hidden_layers: c.numLayers,
  num_attention_heads: c.numHeads,
  num_key_value_heads: c.numKvHeads,
  head_dim: c.headDim,
  rms_norm_eps: c.rmsNormEps,
  rope_theta: c.ropeTheta,
  rope_scaling: c.ropeScaling === undefined ? null : {
    rope_type: "llama3",
    factor: c.ropeScaling.factor,
    low_freq_factor: c.ropeScaling.lowFreqFactor,
    high_freq_factor: c.ropeScaling.highFreqFactor,
    original_max_position_embeddings: c.ropeScaling.originalMaxPositionEmbeddings
  },
  max_position_embeddings: c.maxPositionEmbeddings,
  sliding_window: c.slidingWindow ?? null,
  tie_word_embeddings: c.tieWordEmbeddings,
  torch_dtype: "float32"
})

/**
 * Writes a GGUF with the base file's metadata and tensor order (rewriteGguf), each decoder weight replaced by the
 * trained one (F32; the Q/K permutation is rewriteGguf's) and anything else (rope_freqs) copied as it is.
 * `_config` is the trained model's (the head counts come from the base file itself).
 */
export const exportFullModelGguf = (baseGguf: string, weightsFile: string, out: string, _config: LlamaConfig) =>
  Effect.scoped(Effect.gen(function*() {
    const trained = yield* openSafetensors(weightsFile)
    const plan = yield* rewriteGguf(baseGguf, {
      metadata: [[ggufKeys.fileType, gguf.u32(0)]],
      tensor: ({ hfName }) =>
        hfName === undefined || trained.info(hfName) === undefined ? undefined : { data: () => Effect.runSync(trained.readTensor(hfName)).data }
    })
    yield* writeGguf(out, plan)
  }))

// ---------------------------------------------------------------------------------------------------------------------
// data files

/** Reads a JSONL file of records (seed, chat or prompt/completion lines); a bad line fails naming file:line:field. */
export const readRecordsFile = Effect.fn("Trainer.readRecords")(function*(file: string) {
  const fs = yield* FileSystem.FileSystem
  const text = yield* fs.readFileString(file).pipe(
    Effect.mapError((e) => new TrainError({ stage: "data", detail: `${file}: cannot read (${describeCause(e)})`, origin: "input" }))
  )
  const records: Array<TrainingRecord> = []
  const lines = text.split("\n")
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim()
    if (line === "") continue
    let json: unknown
    try {
      json = JSON.parse(line)
    } catch (e) {
      return yield* new TrainError({ stage: "data", detail: `${file}:${i + 1}: not JSON (${(e as Error).message})` })
    }
    const decoded = decodeInput(json, false)
    if (Result.isFailure(decoded)) {
      return yield* new TrainError({ stage: "data", detail: `${file}:${i + 1}: ${decoded.failure.field}: ${decoded.failure.reason}` })
    }
    records.push(decoded.success.record)
  }
  if (records.length === 0) return yield* new TrainError({ stage: "data", detail: `${file}: no records` })
  return records
})

/**
 * The train and validation examples of a config: the validation file when given, else a seeded hold-out of
 * `validationFraction` of the training file (at least one record when the fraction is above 0).
 */
export const loadExamples = Effect.fn("Trainer.loadExamples")(function*(config: TrainConfig, chat?: ChatFormat) {
  const layout = yield* Schema.decodeUnknownEffect(PromptLayout)(config.promptLayout).pipe(
    Effect.mapError(() => new TrainError({ stage: "config", detail: `promptLayout: expected one of ${PromptLayout.literals.join(", ")}, got "${config.promptLayout}"` }))
  )
  const all = yield* readRecordsFile(config.trainFile)
  let train = all
  let validation: Array<TrainingRecord> = []
  if (config.validationFile !== undefined) validation = yield* readRecordsFile(config.validationFile)
  else if (config.validationFraction > 0 && all.length > 1) {
    const order = epochPermutation(all.length, config.seed, -1)
    const held = new Set(order.slice(0, Math.max(1, Math.round(all.length * config.validationFraction))))
    train = all.filter((_, i) => !held.has(i))
    validation = all.filter((_, i) => held.has(i))
  }
  // chat data (records with `messages`) trains in the model's own chat template, loss on every assistant turn
  const chatShaped = chat !== undefined && all.some((r) => r.messages !== undefined)
  const format = (r: TrainingRecord, i: number, file: string): Effect.Effect<TrainExample, TrainError> =>
    chatShaped && r.messages !== undefined
      ? Effect.try({
        try: () => formatChatExample(r.messages!, chat!),
        catch: (cause) => new TrainError({ stage: "data", detail: `${file}: record ${i + 1}: chat template: ${describeCause(cause)}` })
      })
      : Effect.succeed(formatExample(r, layout))
  const formatAll = (rows: ReadonlyArray<TrainingRecord>, file: string) => Effect.forEach(rows, (r, i) => format(r, i, file))
  return {
    train: yield* formatAll(train, config.trainFile),
    validation: yield* formatAll(validation, config.validationFile ?? config.trainFile),
    chatShaped
  }
})

/** The model's chat template as training renders chat data with it; undefined when the model has none. */
export const chatFormatOf = (tok: ModelTokenizer): ChatFormat | undefined =>
  tok.chatTemplate === undefined || tok.chatTemplate === "" ? undefined : { template: tok.chatTemplate, bos: tok.bosText ?? "", eos: tok.eosText ?? "" }

/** The trainer's view of a model tokenizer: BOS is prepended only for layouts whose text does not spell it. */
export const trainTokenizerOf = (
  tok: ModelTokenizer,
  layout: PromptLayout,
  chatTemplate = false
): Effect.Effect<TrainTokenizer, TrainError> => {
  if (tok.eos === undefined) return Effect.fail(new TrainError({ stage: "tokenizer", detail: `${tok.path}: the model has no EOS token` }))
  const eos = tok.eos
  // chat layouts and chat templates write their control tokens (`<|begin_of_text|>`, `<s>`, `<|eot_id|>`) as text:
  // parse them; a chat template's text gets BOS as serving gives it (once, unless the template writes it)
  const rule = layoutTokenization(layout)
  const special = rule.special || chatTemplate
  return Effect.succeed({
    bosId: rule.addBos || chatTemplate ? tok.bos : undefined,
    eosId: eos,
    stopIds: tok.eot === undefined ? [eos] : [eos, tok.eot],
    encode: (text) => tok.tokenize(text, { addBos: false, special }),
    decode: (ids) => tok.detokenize(ids)
  })
}

export class Trainer extends Context.Service<Trainer, {
  /** loads the base model, its tokenizer and the data files named by the config, then trains */
  train(config: TrainConfig, options?: TrainOptions): Effect.Effect<TrainResult, TrainError, FileSystem.FileSystem | Path.Path>
  /** trains on already-loaded inputs (the pipeline and tests) */
  run(input: TrainingInput, config: TrainConfig, options?: TrainOptions): Effect.Effect<TrainResult, TrainError, FileSystem.FileSystem | Path.Path>
}>()("app/Training/Trainer") {
  static readonly layerNoDeps = Layer.effect(
    Trainer,
    Effect.gen(function*() {
      const tokenizers = yield* Tokenizer
      const run = (input: TrainingInput, config: TrainConfig, options?: TrainOptions) => runTraining(input, config, options)
      const train = Effect.fn("Trainer.train")(function*(config: TrainConfig, options?: TrainOptions) {
        const source = yield* loadModelSource(config.model).pipe(Effect.mapError(toTrainError("model")))
        const layout = config.promptLayout as PromptLayout
        const modelTokenizer = yield* tokenizers.load(config.model).pipe(Effect.mapError(toTrainError("tokenizer")))
        const { train, validation, chatShaped } = yield* loadExamples(config, chatFormatOf(modelTokenizer))
        const tokenizer = yield* trainTokenizerOf(modelTokenizer, layout, chatShaped)
        return yield* runTraining({
          modelConfig: source.config,
          weights: () => Stream.toAsyncIterable(source.weights),
          tokenizer,
          baseModelName: config.model,
          ...(source.format === "gguf" ? { baseGguf: source.path } : {}),
          train,
          validation
        }, config, options)
      }, Effect.scoped)
      return Trainer.of({ train, run })
    })
  )
  static readonly layer = Trainer.layerNoDeps.pipe(Layer.provide(Tokenizer.layer))
}
