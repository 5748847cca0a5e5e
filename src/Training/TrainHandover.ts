/**
 * What the TypeScript side hands the torch engine: the job (JSON, `TorchJob`) and the data, tokenized once.
 *
 * The data are numpy `.npy` files (little-endian, C order, 64-byte-aligned headers) that `np.load(mmap_mode="r")`
 * maps without copying: per split the examples' token ids and answer labels stored flat with an offsets array
 * (`train_ids`, `train_labels`, `train_offsets`; `validation_*`; `generation_*` for the prompts generated at each
 * evaluation), and the step plan (`plan_examples` cut by `plan_micro_offsets` into micro-batches, which
 * `plan_step_offsets` group into optimizer steps; `plan_epoch` the fractional epoch after each step). The plan is
 * Trainer.planSteps', so both engines visit the same examples in the same order and group them the same way.
 *
 * The initial adapter (PEFT layout) is the tfjs trainer's own LoRA initialization for the seed: both engines start
 * from identical weights, and its `adapter_config.json` is the one every checkpoint of either engine carries.
 *
 * A GGUF base goes through `convertGgufToHf` (ModelConvert.writeHfFolderFromGguf: our GGUF reader, llama.cpp's Q/K
 * row permutation undone, and our safetensors writer make a transformers folder of float32 weights).
 */
import { Effect, FileSystem, Path, Schema } from "effect"
import * as nodeFs from "node:fs"
import type { AdapterConfig } from "../Model/AdapterConfig.ts"
import { LrSchedulerType } from "./LrSchedule.ts"
import { attentionModules, type LlamaConfig, mlpModules, weightNames } from "../Model/ModelContracts.ts"
import { toFileError } from "../Model/ModelFileError.ts"
import { writeHfFolderFromGguf } from "../Model/ModelConvert.ts"
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, peftKey } from "../Model/PeftAdapter.ts"
import { writeSafetensors } from "../Model/Safetensors.ts"
import { SeededRng } from "../Shared/Prng.ts"
import { type TokenizedExample } from "./Collate.ts"
import type { StepPlan } from "./Trainer.ts"

const PositiveInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))
const NonNegativeInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

/** How the torch engine spreads over processes: DDP (default), FSDP (shards the decoder layers), DeepSpeed. */
export const DistributedStrategy = Schema.Literals(["ddp", "fsdp", "deepspeed"])
export type DistributedStrategy = typeof DistributedStrategy.Type

/** The job file the torch engine reads (python/finetune_finance_py/engine/run.py). */
export const TorchJob = Schema.Struct({
  version: Schema.Literal(1),
  /** a transformers folder (a GGUF base has been converted) */
  baseModel: Schema.String,
  /** what the adapter records as base_model_name_or_path */
  baseModelName: Schema.String,
  mode: Schema.Literals(["lora", "qlora"]),
  /** PEFT folder: adapter_config.json (targets, ranks, alphas, rsLoRA, dropout) + the initial weights */
  initialAdapter: Schema.String,
  optimizer: Schema.Struct({
    learningRate: Schema.Finite,
    beta1: Schema.Finite,
    beta2: Schema.Finite,
    epsilon: Schema.Finite,
    weightDecay: Schema.Finite,
    /** 0 turns clipping off */
    maxGradNorm: Schema.Finite
  }),
  schedule: Schema.Struct({ type: LrSchedulerType, peak: Schema.Finite, warmupSteps: NonNegativeInt, totalSteps: NonNegativeInt }),
  gradientAccumulationSteps: PositiveInt,
  /** examples per micro-batch (the evaluation batches too) */
  batchSize: PositiveInt,
  packing: Schema.Boolean,
  maxSeqLength: PositiveInt,
  padId: NonNegativeInt,
  logEvery: PositiveInt,
  saveEvery: PositiveInt,
  evalEvery: PositiveInt,
  saveTotalLimit: Schema.optionalKey(PositiveInt),
  metricForBest: Schema.Literals(["rouge", "eval_loss"]),
  earlyStoppingPatience: Schema.optionalKey(PositiveInt),
  evaluation: Schema.Struct({
    generationSamples: NonNegativeInt,
    maxNewTokens: PositiveInt,
    stopIds: Schema.Array(NonNegativeInt)
  }),
  seed: NonNegativeInt,
  data: Schema.Struct({ dir: Schema.String, trainCount: NonNegativeInt, validationCount: NonNegativeInt, steps: NonNegativeInt }),
  /** checkpoints go here (checkpoint-<step>/, as the tfjs trainer lays them out) */
  runDir: Schema.String,
  resume: Schema.Boolean,
  device: Schema.Literals(["auto", "cuda", "cpu"]),
  /** bf16 on CUDA where the device supports it (auto), always (on: an error elsewhere), never (off) */
  bf16: Schema.Literals(["auto", "on", "off"]),
  gradientCheckpointing: Schema.Boolean,
  /** torch intra-op threads per process; absent leaves torch's default */
  threads: Schema.optionalKey(PositiveInt),
  /** stop (and checkpoint) after this many steps of this invocation, as if interrupted (tests of resume) */
  stopAfterSteps: Schema.optionalKey(PositiveInt),
  distributed: Schema.Struct({ strategy: DistributedStrategy, deepspeedConfig: Schema.optionalKey(Schema.String) })
})
export type TorchJob = typeof TorchJob.Type

// ---------------------------------------------------------------------------------------------------------------------
// .npy

type NpyArray = Int32Array | Uint8Array | Float64Array

const descrOf = (a: NpyArray) => (a instanceof Int32Array ? "<i4" : a instanceof Uint8Array ? "|u1" : "<f8")

/** numpy format 1.0: magic, header length, a Python-dict header padded with spaces to 64 bytes, then the data. */
export const npyBytes = (data: NpyArray): Buffer => {
  let header = `{'descr': '${descrOf(data)}', 'fortran_order': False, 'shape': (${data.length},), }`
  const total = 10 + header.length + 1
  header += " ".repeat((64 - (total % 64)) % 64) + "\n"
  const head = Buffer.alloc(10)
  Buffer.from([0x93, ...Buffer.from("NUMPY"), 1, 0]).copy(head)
  head.writeUInt16LE(header.length, 8)
  return Buffer.concat([head, Buffer.from(header, "latin1"), Buffer.from(data.buffer, data.byteOffset, data.byteLength)])
}

/** Examples stored flat: `<prefix>_ids` (int32), `<prefix>_labels` (uint8, 1 = answer token), `<prefix>_offsets`. */
export const flatExamples = (examples: ReadonlyArray<TokenizedExample>) => {
  const total = examples.reduce((n, e) => n + e.ids.length, 0)
  const ids = new Int32Array(total)
  const labels = new Uint8Array(total)
  const offsets = new Int32Array(examples.length + 1)
  let at = 0
  examples.forEach((e, i) => {
    ids.set(e.ids, at)
    e.labels.forEach((l, j) => {
      labels[at + j] = l ? 1 : 0
    })
    at += e.ids.length
    offsets[i + 1] = at
  })
  return { ids, labels, offsets }
}

/** The plan as three offset-cut int32 arrays and the epoch after each step. */
export const flatPlan = (plan: ReadonlyArray<StepPlan>) => {
  const micro = plan.flatMap((s) => s.micro)
  const examples = new Int32Array(micro.reduce((n, m) => n + m.length, 0))
  const microOffsets = new Int32Array(micro.length + 1)
  const stepOffsets = new Int32Array(plan.length + 1)
  let at = 0
  micro.forEach((m, i) => {
    examples.set(m, at)
    at += m.length
    microOffsets[i + 1] = at
  })
  plan.forEach((s, i) => {
    stepOffsets[i + 1] = stepOffsets[i]! + s.micro.length
  })
  return { examples, microOffsets, stepOffsets, epoch: Float64Array.from(plan.map((s) => s.epochProgress)) }
}

export interface HandoverData {
  readonly train: ReadonlyArray<TokenizedExample>
  readonly validation: ReadonlyArray<TokenizedExample>
  /** prompts (ids only) generated greedily at each evaluation */
  readonly generation: ReadonlyArray<ReadonlyArray<number>>
  readonly plan: ReadonlyArray<StepPlan>
}

/**
 * Writes through a temporary file and a rename: on a shared filesystem every node of a multi-node run writes the
 * same (deterministic) handover, and a reader must never see a file another node is rewriting.
 */
export const writeAtomically = Effect.fnUntraced(function*(file: string, data: Uint8Array | string) {
  const fs = yield* FileSystem.FileSystem
  const tmp = `${file}.${process.pid}.tmp`
  yield* (typeof data === "string" ? fs.writeFileString(tmp, data) : fs.writeFile(tmp, data)).pipe(Effect.mapError(toFileError(tmp)))
  yield* fs.rename(tmp, file).pipe(Effect.mapError(toFileError(file)))
})

/** Writes the data files into `dir` (created). */
export const writeHandoverData = Effect.fn("TrainHandover.writeData")(function*(dir: string, data: HandoverData) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  yield* fs.makeDirectory(dir, { recursive: true }).pipe(Effect.mapError(toFileError(dir)))
  const files: Array<[string, NpyArray]> = []
  const split = (prefix: string, examples: ReadonlyArray<TokenizedExample>) => {
    const f = flatExamples(examples)
    files.push([`${prefix}_ids`, f.ids], [`${prefix}_labels`, f.labels], [`${prefix}_offsets`, f.offsets])
  }
  split("train", data.train)
  split("validation", data.validation)
  split("generation", data.generation.map((ids) => ({ ids, labels: ids.map(() => false) })))
  const p = flatPlan(data.plan)
  files.push(["plan_examples", p.examples], ["plan_micro_offsets", p.microOffsets], ["plan_step_offsets", p.stepOffsets], ["plan_epoch", p.epoch])
  for (const [name, array] of files) yield* writeAtomically(path.join(dir, `${name}.npy`), npyBytes(array))
})

// ---------------------------------------------------------------------------------------------------------------------
// the initial adapter

/**
 * The LoRA weights the tfjs trainer starts from for this seed (Trainer.buildTrainee → Lora.loraTransform): the
 * targeted modules in model order, each A drawn U(-1/√in, 1/√in) from one SeededRng(seed), B zero.
 */
export const initialLoraTensors = (model: LlamaConfig, adapter: AdapterConfig, seed: number) => {
  const rng = new SeededRng(seed)
  const d = model.hiddenSize, q = model.numHeads * model.headDim, kv = model.numKvHeads * model.headDim
  const dims: Record<string, readonly [number, number]> = {
    q_proj: [d, q], k_proj: [d, kv], v_proj: [d, kv], o_proj: [q, d],
    gate_proj: [d, model.intermediateSize], up_proj: [d, model.intermediateSize], down_proj: [model.intermediateSize, d]
  }
  const out: Array<{ name: string; shape: ReadonlyArray<number>; data: Float32Array }> = []
  for (let layer = 0; layer < model.numLayers; layer++) {
    for (const m of [...attentionModules, ...mlpModules]) {
      const name = weightNames.linear(layer, m)
      if (!adapter.targets(name)) continue
      const [inF, outF] = dims[m]!
      const r = adapter.rankOf(name)
      const bound = 1 / Math.sqrt(inF)
      const a = new Float32Array(r * inF)
      for (let i = 0; i < a.length; i++) a[i] = (rng.next() * 2 - 1) * bound
      out.push({ name: peftKey(name, "A"), shape: [r, inF], data: a }, { name: peftKey(name, "B"), shape: [outF, r], data: new Float32Array(outF * r) })
    }
  }
  return out
}

/** Writes the initial adapter folder (adapter_config.json as the tfjs trainer writes it, and the weights). */
export const writeInitialAdapter = Effect.fn("TrainHandover.writeInitialAdapter")(function*(
  dir: string,
  model: LlamaConfig,
  adapter: AdapterConfig,
  seed: number
) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  yield* fs.makeDirectory(dir, { recursive: true }).pipe(Effect.mapError(toFileError(dir)))
  const configPath = path.join(dir, ADAPTER_CONFIG)
  yield* writeAtomically(configPath, JSON.stringify(adapter.toPeftJson(), null, 2) + "\n")
  const tensors = initialLoraTensors(model, adapter, seed)
  const weights = path.join(dir, ADAPTER_WEIGHTS)
  yield* writeSafetensors(`${weights}.${process.pid}.tmp`, tensors, { metadata: { format: "pt" } })
  yield* fs.rename(`${weights}.${process.pid}.tmp`, weights).pipe(Effect.mapError(toFileError(weights)))
  return tensors.length / 2
})

// ---------------------------------------------------------------------------------------------------------------------
// GGUF base -> transformers folder

/**
 * A transformers folder for a GGUF base, in `dir` (ModelConvert.writeHfFolderFromGguf). Reused when `dir` already holds a conversion of the same file
 * (same size and modification time, recorded in source.json).
 */
export const convertGgufToHf = Effect.fn("TrainHandover.convertGgufToHf")(function*(gguf: string, dir: string) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const stat = yield* Effect.try({ try: () => nodeFs.statSync(gguf), catch: toFileError(gguf) })
  const stamp = JSON.stringify({ source: path.resolve(gguf), size: stat.size, mtimeMs: stat.mtimeMs })
  const stampFile = path.join(dir, "source.json")
  const previous = yield* fs.readFileString(stampFile).pipe(Effect.orElseSucceed(() => ""))
  if (previous === stamp && (yield* fs.exists(path.join(dir, "model.safetensors")).pipe(Effect.orElseSucceed(() => false)))) return dir
  yield* fs.remove(dir, { recursive: true, force: true }).pipe(Effect.mapError(toFileError(dir)))
  yield* writeHfFolderFromGguf(gguf, dir)
  yield* fs.writeFileString(stampFile, stamp).pipe(Effect.mapError(toFileError(stampFile)))
  return dir
})

/** The job file, encoded by the schema (a value the schema rejects is a bug here, so it dies). */
export const encodeTorchJob = (job: TorchJob): string => JSON.stringify(Schema.encodeSync(TorchJob)(job), null, 2) + "\n"
