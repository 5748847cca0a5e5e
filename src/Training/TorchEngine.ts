/**
 * The torch layer of TrainingEngine: transformers + PEFT in a Python child process
 * (python/finetune_finance_py/engine), one process or many under torchrun.
 *
 * The TypeScript side does everything that decides *what* is trained, once: it reads and formats the records,
 * tokenizes them with the answer-only labels (Collate.tokenizeExample), plans the steps (Trainer.planSteps), writes
 * the initial adapter, and hands them over (TrainHandover). The engine trains and reports JSON lines on stdout,
 * decoded by TorchEvents.ts into the same metrics.jsonl, progress and TrainResult the tfjs trainer gives; at
 * each evaluation it sends its greedy generations, which are detokenized and scored with our ROUGE-L there and the
 * score is sent back on its stdin. Its stderr (tracebacks included) goes to `<run>/engine.log`, never to the user.
 *
 * Interruption (Ctrl-C): the engine gets SIGINT, finishes the step, checkpoints and exits 130; the scope waits for it.
 */
import { Effect, FileSystem, Path, Schema } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as nodeFs from "node:fs"
import { PromptLayout } from "../Dataset/PromptFormat.ts"
import { parameterCount } from "../Model/Device.ts"
import { loadModelSource } from "../Model/ModelLoader.ts"
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, FINAL_ADAPTER_DIR } from "../Model/PeftAdapter.ts"
import { Tokenizer } from "../Model/Tokenizer.ts"
import { describeRuntime, PythonEnv, type PythonRuntime } from "../Python/PythonEnv.ts"
import { writeAdapterPrompt } from "./AdapterPrompt.ts"
import { checkpointName, finalRecordJson } from "./Checkpoint.ts"
import { hasAnswerTokens, promptIds, tokenizeExample } from "./Collate.ts"
import { type EngineSummary, readEngineEvents, stageOfKind } from "./TorchEvents.ts"
import {
  adapterConfigOf,
  chatFormatOf,
  loadExamples,
  planSteps,
  TrainError,
  type TrainOptions,
  type TrainResult,
  trainTokenizerOf
} from "./Trainer.ts"
import type { TrainConfig } from "./TrainConfig.ts"
import type { TrainingEngineShape } from "./EngineContract.ts"
import { convertGgufToHf, encodeTorchJob, type TorchJob, writeAtomically, writeHandoverData, writeInitialAdapter } from "./TrainHandover.ts"

/** The folder that holds `finetune_finance_py` (python/ of this checkout, from src/Training or dist/). */
export const enginePackageRoot = (runtime: PythonRuntime): string => {
  const candidates = [runtime.packageRoot, new URL("../../python", import.meta.url).pathname, new URL("../python", import.meta.url).pathname]
  return candidates.find((c) => nodeFs.existsSync(`${c}/finetune_finance_py/engine/__main__.py`)) ?? runtime.packageRoot
}

/** The interpreter's arguments: the engine alone, or under torchrun for --nproc-per-node / multi-node runs. */
export const engineCommand = (config: TrainConfig, jobFile: string): Array<string> => {
  const engine = ["-m", "finetune_finance_py.engine", jobFile]
  const nproc = config.nprocPerNode ?? 1
  const nnodes = config.nnodes ?? 1
  if (nproc === 1 && nnodes === 1) return engine
  const rendezvous = nnodes === 1 && config.masterAddr === undefined
    ? ["--standalone"]
    : [
      "--nnodes", String(nnodes),
      "--node-rank", String(config.nodeRank ?? 0),
      "--master-addr", config.masterAddr ?? "127.0.0.1",
      "--master-port", String(config.masterPort ?? 29500)
    ]
  return ["-m", "torch.distributed.run", "--nproc-per-node", String(nproc), ...rendezvous, ...engine]
}

const strategyOf = (config: TrainConfig): TorchJob["distributed"] =>
  config.deepspeed !== undefined
    ? { strategy: "deepspeed", deepspeedConfig: config.deepspeed }
    : { strategy: config.fsdp === true ? "fsdp" : "ddp" }

type Fail = (stage: string, detail: string) => TrainError
const fail: Fail = (stage, detail) => new TrainError({ stage, detail })
/** A file or folder's error as a TrainError of that stage. */
const wrapFile = (stage: string) => (e: { readonly message: string }) => fail(stage, e.message)

/** A config the torch engine takes: adapters only (full fine-tuning is tfjs's). */
type TorchConfig = TrainConfig & { readonly mode: "lora" | "qlora" }

/** What the torch engine refuses before doing any work. */
const checkConfig = Effect.fnUntraced(function*(config: TrainConfig) {
  const { mode } = config
  if (mode === "full") {
    return yield* fail("config", "mode: the torch engine trains lora and qlora adapters; full fine-tuning runs on --engine tfjs")
  }
  if (config.metricForBest === "rouge" && config.evalGenerationSamples === 0) {
    return yield* fail("config", "metricForBest: rouge needs evalGenerationSamples > 0")
  }
  if (config.deepspeed !== undefined && config.fsdp === true) {
    return yield* fail("config", "fsdp and deepspeed: choose one (DeepSpeed's ZeRO config already shards)")
  }
  // the same object, narrowed (train_config.json is written from it, keys in the same order)
  return { ...config, mode } satisfies TorchConfig
})

/** The data, tokenized once, exactly as the tfjs trainer does, and the step plan over it. */
const tokenizeData = Effect.fnUntraced(function*(config: TrainConfig, tokenizers: Tokenizer["Service"]) {
  const layout = yield* Schema.decodeUnknownEffect(PromptLayout)(config.promptLayout).pipe(
    Effect.mapError(() => fail("config", `promptLayout: expected one of ${PromptLayout.literals.join(", ")}, got "${config.promptLayout}"`))
  )
  const modelTokenizer = yield* tokenizers.load(config.model).pipe(Effect.mapError(wrapFile("tokenizer")))
  const examples = yield* loadExamples(config, chatFormatOf(modelTokenizer))
  const tok = yield* trainTokenizerOf(modelTokenizer, layout, examples.chatShaped)
  const tokenize = (ex: (typeof examples.train)[number]) => tokenizeExample(tok, ex, config.maxSeqLength)
  const trainSet = examples.train.map(tokenize).filter(hasAnswerTokens)
  const validationSet = examples.validation.map(tokenize).filter(hasAnswerTokens)
  if (trainSet.length === 0) return yield* fail("data", "no training examples")
  const genSample = examples.validation.slice(0, config.evalGenerationSamples).map((ex) => ({
    prompt: promptIds(tok, ex.text.slice(0, ex.answerStart)),
    reference: ex.text.slice(ex.answerStart, ex.answerEnd)
  }))
  return { layout, tok, trainSet, validationSet, genSample, plan: planSteps(trainSet.length, config) }
})
type TokenizedData = Effect.Success<ReturnType<typeof tokenizeData>>

/** The job file's contents: the config's settings, with the handed-over data and adapter's absolute paths. */
const torchJobOf = (
  config: TorchConfig,
  options: TrainOptions,
  paths: { readonly baseModel: string; readonly initialAdapter: string; readonly dataDir: string; readonly runDir: string },
  data: TokenizedData
): TorchJob => ({
  version: 1,
  baseModel: paths.baseModel,
  baseModelName: config.model,
  mode: config.mode,
  initialAdapter: paths.initialAdapter,
  optimizer: {
    learningRate: config.learningRate,
    beta1: config.adamBeta1,
    beta2: config.adamBeta2,
    epsilon: config.adamEpsilon,
    weightDecay: config.weightDecay,
    maxGradNorm: config.maxGradNorm
  },
  schedule: { type: config.lrScheduler, peak: config.learningRate, warmupSteps: config.warmupSteps, totalSteps: data.plan.length },
  gradientAccumulationSteps: config.gradientAccumulationSteps,
  batchSize: config.batchSize,
  packing: config.packing,
  maxSeqLength: config.maxSeqLength,
  padId: data.tok.eosId,
  logEvery: config.logEvery,
  saveEvery: config.saveEvery,
  evalEvery: config.evalEvery,
  ...(config.saveTotalLimit === undefined ? {} : { saveTotalLimit: config.saveTotalLimit }),
  metricForBest: config.metricForBest,
  ...(config.earlyStoppingPatience === undefined ? {} : { earlyStoppingPatience: config.earlyStoppingPatience }),
  evaluation: { generationSamples: data.genSample.length, maxNewTokens: config.maxNewTokens, stopIds: [...(data.tok.stopIds ?? [data.tok.eosId])] },
  seed: config.seed,
  data: { dir: paths.dataDir, trainCount: data.trainSet.length, validationCount: data.validationSet.length, steps: data.plan.length },
  runDir: paths.runDir,
  resume: options.resume === true,
  device: config.device === "gpu" ? "cuda" : config.device === "auto" ? "auto" : "cpu",
  bf16: "auto",
  gradientCheckpointing: config.gradientCheckpointing === true,
  ...(config.threads === undefined ? {} : { threads: config.threads }),
  ...(options.stopAfterSteps === undefined ? {} : { stopAfterSteps: options.stopAfterSteps }),
  distributed: strategyOf(config)
})

/**
 * Everything the engine reads, written under `<run>/engine`: the base (a transformers folder as it is, a GGUF
 * converted once with our reader and writer), the tokenized data and plan, the initial adapter and job.json.
 */
const prepareJob = Effect.fnUntraced(function*(config: TorchConfig, options: TrainOptions, tokenizers: Tokenizer["Service"]) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const runDir = config.outputDir
  const engineDir = path.join(runDir, "engine")
  const source = yield* loadModelSource(config.model).pipe(Effect.mapError(wrapFile("model")))
  yield* fs.makeDirectory(engineDir, { recursive: true }).pipe(Effect.mapError(wrapFile(runDir)))
  const baseModel = source.format === "hf"
    ? path.resolve(config.model)
    : yield* convertGgufToHf(config.model, path.join(engineDir, "base-hf")).pipe(Effect.mapError(wrapFile("model")))
  const data = yield* tokenizeData(config, tokenizers)

  yield* fs.writeFileString(path.join(runDir, "train_config.json"), JSON.stringify(config, null, 2) + "\n").pipe(Effect.mapError(wrapFile(runDir)))
  const dataDir = path.join(engineDir, "data")
  yield* writeHandoverData(dataDir, {
    train: data.trainSet,
    validation: data.validationSet,
    generation: data.genSample.map((g) => g.prompt),
    plan: data.plan
  }).pipe(Effect.mapError(wrapFile("data")))
  const initialAdapter = path.join(engineDir, "initial-adapter")
  yield* writeInitialAdapter(initialAdapter, source.config, adapterConfigOf(config, config.model), config.seed).pipe(Effect.mapError(wrapFile("model")))
  const job = torchJobOf(
    config,
    options,
    { baseModel, initialAdapter: path.resolve(initialAdapter), dataDir: path.resolve(dataDir), runDir: path.resolve(runDir) },
    data
  )
  const jobFile = path.join(engineDir, "job.json")
  yield* writeAtomically(jobFile, encodeTorchJob(job)).pipe(Effect.mapError(wrapFile(jobFile)))
  return { source, data, jobFile }
})

/**
 * The engine process, its stderr appended to `logFile`. Released (interrupted, or failed here) while it runs:
 * the engine checkpoints on SIGINT and exits; the release waits for it.
 */
const spawnEngine = Effect.fnUntraced(function*(runtime: PythonRuntime, config: TrainConfig, jobFile: string, logFile: string) {
  const path = yield* Path.Path
  const logFd = yield* Effect.acquireRelease(
    Effect.try({ try: () => nodeFs.openSync(logFile, "a"), catch: (e) => fail(logFile, String(e)) }),
    (fd) => Effect.sync(() => nodeFs.closeSync(fd))
  )
  const pythonPath = [enginePackageRoot(runtime), process.env.PYTHONPATH].filter((p) => p !== undefined && p !== "").join(path.sep === "\\" ? ";" : ":")
  return yield* Effect.acquireRelease(
    Effect.sync(() => {
      const c = spawn(runtime.executable, engineCommand(config, path.resolve(jobFile)), {
        stdio: ["pipe", "pipe", logFd],
        env: {
          ...process.env,
          PYTHONPATH: pythonPath,
          PYTHONUNBUFFERED: "1",
          PYTHONIOENCODING: "utf-8",
          TOKENIZERS_PARALLELISM: "false",
          ...(config.threads === undefined ? {} : { OMP_NUM_THREADS: String(config.threads) })
        }
      })
      const exit = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
        c.once("close", (code, signal) => resolve({ code, signal }))
        c.once("error", () => resolve({ code: null, signal: "spawn-error" }))
      })
      c.stdin?.on("error", () => {}) // the engine may exit before reading a reply
      return { process: c, exit }
    }),
    ({ process: c, exit }) => (c.exitCode === null && c.signalCode === null ? stopChild(c, exit) : Effect.void)
  )
})

/** The best checkpoint's adapter copied to `<run>/final-adapter`, and final.json that says which it is. */
const writeFinalAdapter = Effect.fnUntraced(function*(
  config: TrainConfig,
  layout: PromptLayout,
  summary: EngineSummary,
  bestStep: number,
  finalDir: string
) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const runDir = config.outputDir
  const from = path.join(runDir, checkpointName(bestStep))
  yield* fs.remove(finalDir, { recursive: true, force: true }).pipe(Effect.mapError(wrapFile(finalDir)))
  yield* fs.makeDirectory(finalDir, { recursive: true }).pipe(Effect.mapError(wrapFile(finalDir)))
  for (const f of [ADAPTER_CONFIG, ADAPTER_WEIGHTS]) {
    yield* fs.copyFile(path.join(from, f), path.join(finalDir, f)).pipe(Effect.mapError(wrapFile(finalDir)))
  }
  // the layout the TS side rendered the examples in, so export and serve render /infer's prompt the same way
  yield* writeAdapterPrompt(finalDir, layout).pipe(Effect.mapError(wrapFile(finalDir)))
  yield* fs.writeFileString(
    path.join(runDir, "final.json"),
    finalRecordJson({
      bestStep,
      metricForBest: config.metricForBest,
      bestMetric: summary.bestMetric,
      globalStep: summary.globalStep,
      stoppedEarly: summary.stoppedEarly,
      finalDir,
      engine: "torch"
    })
  ).pipe(Effect.mapError(wrapFile(runDir)))
})

/** The torch engine for a resolved Python runtime; `reason` says why it was chosen. */
export const makeTorchEngine = (reason: string) =>
  Effect.gen(function*() {
    const pythonEnv = yield* PythonEnv
    const tokenizers = yield* Tokenizer
    const train = Effect.fn("TorchEngine.train")(function*(requested: TrainConfig, options: TrainOptions = {}) {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      const config = yield* checkConfig(requested)
      const runtime = yield* pythonEnv.ensure.pipe(Effect.mapError((e) => fail("python", e.message)))
      const runDir = config.outputDir
      const logFile = path.join(runDir, "engine.log")
      const metricsFile = path.join(runDir, "metrics.jsonl")
      const { source, data, jobFile } = yield* prepareJob(config, options, tokenizers)
      const totalSteps = data.plan.length
      // on the other nodes of a multi-node run, rank 0's node keeps the run history and the final adapter
      const leader = (config.nodeRank ?? 0) === 0
      if (options.resume !== true && leader) yield* fs.writeFileString(metricsFile, "").pipe(Effect.mapError(wrapFile(metricsFile)))

      // auto's reason (logged by TrainingEngine) already names the interpreter; say it once
      const described = describeRuntime(runtime)
      if (!reason.includes(described)) yield* Effect.logInfo(`torch engine: ${described}`)
      const child = yield* spawnEngine(runtime, config, jobFile, logFile)
      const outcome = yield* readEngineEvents(child.process.stdout!, {
        metricsFile,
        logFile,
        totalSteps,
        onLog: options.onLog,
        decode: (tokens) => data.tok.decode(tokens),
        references: data.genSample.map((g) => g.reference),
        reply: (line) => child.process.stdin?.write(line),
        fail
      })
      const exit = yield* Effect.promise(() => child.exit)
      const seeLog = `details in ${logFile}`
      const { summary, error } = outcome
      if (error !== undefined) return yield* fail(stageOfKind[error.kind], `${error.message} (${seeLog})`)
      if (summary === undefined) {
        return yield* fail(
          "engine",
          exit.signal === "spawn-error"
            ? `cannot start ${runtime.executable}`
            : `the torch engine exited with ${exit.code === null ? `signal ${exit.signal}` : `code ${exit.code}`} before finishing (${seeLog})`
        )
      }

      const bestStep = summary.bestStep ?? summary.globalStep
      const finalDir = path.join(runDir, FINAL_ADAPTER_DIR)
      if (summary.event === "done" && leader) yield* writeFinalAdapter(config, data.layout, summary, bestStep, finalDir)
      const params = parameterCount(source.config)
      const bytesPerWeight = outcome.start?.dtype === "bfloat16" ? 2 : 4
      return {
        runDir,
        finalDir,
        bestStep,
        bestMetric: summary.bestMetric,
        globalStep: summary.globalStep,
        totalSteps,
        trainLogs: outcome.trainLogs,
        evaluations: outcome.evaluations,
        tokensPerSecond: summary.tokensPerSecond,
        baseMemoryBytes: config.mode === "qlora" ? Math.round(params * 0.52) : params * bytesPerWeight,
        trainableParameters: summary.trainableParameters,
        stoppedEarly: summary.stoppedEarly
      } satisfies TrainResult
    }, Effect.scoped)
    return { name: "torch", reason, train } satisfies TrainingEngineShape
  })

/** SIGINT, then up to 2 minutes for the checkpoint, then SIGKILL. */
const stopChild = (c: ChildProcess, exit: Promise<unknown>) =>
  Effect.promise(async () => {
    c.kill("SIGINT")
    const timer = setTimeout(() => c.kill("SIGKILL"), 120_000)
    await exit
    clearTimeout(timer)
  })

/** What `--engine auto` and the CLI say about a runtime: whether torch, transformers and peft import. */
export const probeTorch = (runtime: PythonRuntime) =>
  Effect.promise(() =>
    new Promise<{ readonly ok: boolean; readonly detail: string }>((resolve) => {
      const c = spawn(runtime.executable, ["-c", "import torch, transformers, peft, safetensors, numpy; print(torch.__version__, torch.cuda.is_available())"], {
        stdio: ["ignore", "pipe", "pipe"]
      })
      let out = ""
      let err = ""
      c.stdout.on("data", (d) => (out += String(d)))
      c.stderr.on("data", (d) => (err += String(d)))
      c.once("error", (e) => resolve({ ok: false, detail: e.message }))
      c.once("close", (code) => {
        const [version, cuda] = out.trim().split(" ")
        resolve(
          code === 0
            ? { ok: true, detail: `torch ${version}${cuda === "True" ? " with CUDA" : " on CPU"}` }
            : { ok: false, detail: err.trim().split("\n").at(-1) ?? `exit ${code}` }
        )
      })
    })
  )
