/**
 * The torch layer of TrainingEngine: transformers + PEFT in a Python child process
 * (python/finetune_finance_py/engine), one process or many under torchrun.
 *
 * The TypeScript side does everything that decides *what* is trained, once: it reads and formats the records,
 * tokenizes them with the answer-only labels (Collate.tokenizeExample), plans the steps (Trainer.planSteps), writes
 * the initial adapter, and hands them over (TrainHandover). The engine trains and reports JSON lines on stdout,
 * decoded here with `EngineEvent` into the same metrics.jsonl, progress and TrainResult the tfjs trainer gives; at
 * each evaluation it sends its greedy generations, which are detokenized and scored with our ROUGE-L here and the
 * score is sent back on its stdin. Its stderr (tracebacks included) goes to `<run>/engine.log`, never to the user.
 *
 * Interruption (Ctrl-C): the engine gets SIGINT, finishes the step, checkpoints and exits 130; the scope waits for it.
 */
import { Effect, FileSystem, Option, Path, Result, Schema, Stream } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as nodeFs from "node:fs"
import { createInterface } from "node:readline"
import { PromptLayout } from "../Dataset/PromptFormat.ts"
import { rougeL } from "../Metrics/Rouge.ts"
import { parameterCount } from "../Model/Device.ts"
import { loadModelSource } from "../Model/ModelLoader.ts"
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, FINAL_ADAPTER_DIR } from "../Model/PeftAdapter.ts"
import { Tokenizer } from "../Model/Tokenizer.ts"
import { describeRuntime, PythonEnv, type PythonRuntime } from "../Python/PythonEnv.ts"
import { Progress } from "../Shared/Progress.ts"
import { writeAdapterPrompt } from "./AdapterPrompt.ts"
import { checkpointName } from "./Checkpoint.ts"
import { hasAnswerTokens, promptIds, tokenizeExample } from "./Collate.ts"
import {
  adapterConfigOf,
  type EvalLog,
  chatFormatOf,
  loadExamples,
  planSteps,
  TrainError,
  type TrainLog,
  type TrainOptions,
  type TrainResult,
  trainTokenizerOf
} from "./Trainer.ts"
import type { TrainConfig } from "./TrainConfig.ts"
import { convertGgufToHf, encodeTorchJob, type TorchJob, writeAtomically, writeHandoverData, writeInitialAdapter } from "./TrainHandover.ts"
import type { TrainingEngineShape } from "./TrainingEngine.ts"

const Int = Schema.Int
const Num = Schema.Finite

/** The engine's stdout lines (python/finetune_finance_py/engine/run.py `emit`). */
export const EngineEvent = Schema.Union([
  Schema.Struct({
    event: Schema.Literal("start"),
    totalSteps: Int,
    startStep: Int,
    device: Schema.String,
    dtype: Schema.String,
    worldSize: Int,
    strategy: Schema.String,
    trainableParameters: Int,
    examples: Int,
    threads: Int
  }),
  Schema.Struct({ event: Schema.Literal("resumed"), step: Int, dir: Schema.String }),
  Schema.Struct({
    event: Schema.Literal("train"),
    step: Int,
    epoch: Num,
    loss: Num,
    learningRate: Num,
    gradNorm: Num,
    tokensPerSecond: Num,
    etaSeconds: Num,
    /** the log window's wall and process CPU seconds and tokens (benchmarks read them) */
    windowSeconds: Schema.optionalKey(Num),
    cpuSeconds: Schema.optionalKey(Num),
    tokens: Schema.optionalKey(Int)
  }),
  Schema.Struct({ event: Schema.Literal("eval"), step: Int, evalLoss: Schema.NullOr(Num), rougeL: Schema.NullOr(Num) }),
  Schema.Struct({ event: Schema.Literal("generations"), step: Int, outputs: Schema.Array(Schema.Array(Int)) }),
  Schema.Struct({ event: Schema.Literal("checkpoint"), step: Int, dir: Schema.String }),
  Schema.Struct({
    event: Schema.Literals(["done", "stopped", "interrupted"]),
    globalStep: Int,
    totalSteps: Int,
    bestStep: Schema.NullOr(Int),
    bestMetric: Schema.NullOr(Num),
    stoppedEarly: Schema.Boolean,
    trainableParameters: Int,
    tokensPerSecond: Num,
    seconds: Num
  }),
  Schema.Struct({
    event: Schema.Literal("error"),
    kind: Schema.Literals(["bad_job", "bad_base_model", "no_cuda", "qlora_needs_cuda", "missing_package", "oom", "internal"]),
    message: Schema.String
  })
])
export type EngineEvent = typeof EngineEvent.Type
type Summary = Extract<EngineEvent, { event: "done" | "stopped" | "interrupted" }>

const decodeEvent = Schema.decodeUnknownResult(Schema.fromJsonString(EngineEvent))

/** A stdout line as an event, or undefined for anything else (a library's print goes to the log). */
export const parseEngineLine = (line: string): EngineEvent | undefined => {
  if (!line.startsWith("{\"event\"")) return undefined
  const r = decodeEvent(line)
  return Result.isSuccess(r) ? r.success : undefined
}

/** The error kinds' stages (TrainCli maps stages to exit codes: model → 3, device → 4, config → 2). */
const stageOfKind: Record<Extract<EngineEvent, { event: "error" }>["kind"], string> = {
  bad_job: "config",
  bad_base_model: "model",
  no_cuda: "device",
  qlora_needs_cuda: "device",
  missing_package: "device",
  oom: "device",
  internal: "engine"
}

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

/** The torch engine for a resolved Python runtime; `reason` says why it was chosen. */
export const makeTorchEngine = (reason: string) =>
  Effect.gen(function*() {
    const pythonEnv = yield* PythonEnv
    const tokenizers = yield* Tokenizer
    const train = Effect.fn("TorchEngine.train")(function*(config: TrainConfig, options: TrainOptions = {}) {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      const progress = yield* Effect.serviceOption(Progress)
      const fail = (stage: string, detail: string) => new TrainError({ stage, detail })
      if (config.mode === "full") {
        return yield* fail("config", "mode: the torch engine trains lora and qlora adapters; full fine-tuning runs on --engine tfjs")
      }
      if (config.metricForBest === "rouge" && config.evalGenerationSamples === 0) {
        return yield* fail("config", "metricForBest: rouge needs evalGenerationSamples > 0")
      }
      if (config.deepspeed !== undefined && config.fsdp === true) {
        return yield* fail("config", "fsdp and deepspeed: choose one (DeepSpeed's ZeRO config already shards)")
      }
      const runtime = yield* pythonEnv.ensure.pipe(Effect.mapError((e) => fail("python", e.message)))
      const runDir = config.outputDir
      const engineDir = path.join(runDir, "engine")
      const logFile = path.join(runDir, "engine.log")
      const metricsFile = path.join(runDir, "metrics.jsonl")
      const wrapFile = (stage: string) => (e: { readonly message: string }) => fail(stage, e.message)

      // the base: a transformers folder as it is, a GGUF converted once with our reader and writer
      const source = yield* loadModelSource(config.model).pipe(Effect.mapError(wrapFile("model")))
      yield* fs.makeDirectory(engineDir, { recursive: true }).pipe(Effect.mapError(wrapFile(runDir)))
      const baseModel = source.format === "hf"
        ? path.resolve(config.model)
        : yield* convertGgufToHf(config.model, path.join(engineDir, "base-hf")).pipe(Effect.mapError(wrapFile("model")))

      // the data, tokenized once, exactly as the tfjs trainer does
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
      const plan = planSteps(trainSet.length, config)
      const totalSteps = plan.length

      yield* fs.writeFileString(path.join(runDir, "train_config.json"), JSON.stringify(config, null, 2) + "\n").pipe(Effect.mapError(wrapFile(runDir)))
      const dataDir = path.join(engineDir, "data")
      yield* writeHandoverData(dataDir, { train: trainSet, validation: validationSet, generation: genSample.map((g) => g.prompt), plan }).pipe(
        Effect.mapError(wrapFile("data"))
      )
      const adapterConfig = adapterConfigOf(config, config.model)
      const initialAdapter = path.join(engineDir, "initial-adapter")
      yield* writeInitialAdapter(initialAdapter, source.config, adapterConfig, config.seed).pipe(Effect.mapError(wrapFile("model")))
      const device = config.device === "gpu" ? "cuda" : config.device === "auto" ? "auto" : "cpu"
      const job: TorchJob = {
        version: 1,
        baseModel,
        baseModelName: config.model,
        mode: config.mode,
        initialAdapter: path.resolve(initialAdapter),
        optimizer: {
          learningRate: config.learningRate,
          beta1: config.adamBeta1,
          beta2: config.adamBeta2,
          epsilon: config.adamEpsilon,
          weightDecay: config.weightDecay,
          maxGradNorm: config.maxGradNorm
        },
        schedule: { type: config.lrScheduler, peak: config.learningRate, warmupSteps: config.warmupSteps, totalSteps },
        gradientAccumulationSteps: config.gradientAccumulationSteps,
        batchSize: config.batchSize,
        packing: config.packing,
        maxSeqLength: config.maxSeqLength,
        padId: tok.eosId,
        logEvery: config.logEvery,
        saveEvery: config.saveEvery,
        evalEvery: config.evalEvery,
        ...(config.saveTotalLimit === undefined ? {} : { saveTotalLimit: config.saveTotalLimit }),
        metricForBest: config.metricForBest,
        ...(config.earlyStoppingPatience === undefined ? {} : { earlyStoppingPatience: config.earlyStoppingPatience }),
        evaluation: { generationSamples: genSample.length, maxNewTokens: config.maxNewTokens, stopIds: [...(tok.stopIds ?? [tok.eosId])] },
        seed: config.seed,
        data: { dir: path.resolve(dataDir), trainCount: trainSet.length, validationCount: validationSet.length, steps: totalSteps },
        runDir: path.resolve(runDir),
        resume: options.resume === true,
        device,
        bf16: "auto",
        gradientCheckpointing: config.gradientCheckpointing === true,
        ...(config.threads === undefined ? {} : { threads: config.threads }),
        ...(options.stopAfterSteps === undefined ? {} : { stopAfterSteps: options.stopAfterSteps }),
        distributed: strategyOf(config)
      }
      const jobFile = path.join(engineDir, "job.json")
      yield* writeAtomically(jobFile, encodeTorchJob(job)).pipe(Effect.mapError(wrapFile(jobFile)))
      // on the other nodes of a multi-node run, rank 0's node keeps the run history and the final adapter
      const leader = (config.nodeRank ?? 0) === 0
      if (options.resume !== true && leader) yield* fs.writeFileString(metricsFile, "").pipe(Effect.mapError(wrapFile(metricsFile)))

      // the run
      const trainLogs: Array<TrainLog> = []
      const evaluations: Array<EvalLog> = []
      let summary: Summary | undefined
      let engineError: Extract<EngineEvent, { event: "error" }> | undefined
      let start: Extract<EngineEvent, { event: "start" }> | undefined
      const report = (log: TrainLog | EvalLog) =>
        options.onLog !== undefined
          ? Effect.sync(() => options.onLog!(log))
          : Option.match(progress, {
            onNone: () => Effect.void,
            onSome: (p) =>
              log.type === "train"
                ? p.update({
                  task: "train",
                  done: log.step,
                  total: totalSteps,
                  unit: "steps",
                  message: `loss ${log.loss.toFixed(4)} lr ${log.learningRate.toExponential(2)} grad ${log.gradNorm.toFixed(3)} ${log.tokensPerSecond.toFixed(0)} tok/s`
                })
                : p.line(`eval step ${log.step}: loss ${log.evalLoss === null ? "-" : log.evalLoss.toFixed(4)}${log.rougeL === null ? "" : ` rougeL ${log.rougeL.toFixed(4)}`}`)
          })
      const appendMetrics = (log: TrainLog | EvalLog) =>
        fs.writeFileString(metricsFile, JSON.stringify(log) + "\n", { flag: "a" }).pipe(Effect.mapError(wrapFile(metricsFile)))

      yield* Effect.logInfo(`torch engine: ${reason}; ${describeRuntime(runtime)}`)
      const logFd = yield* Effect.acquireRelease(
        Effect.try({ try: () => nodeFs.openSync(logFile, "a"), catch: (e) => fail(logFile, String(e)) }),
        (fd) => Effect.sync(() => nodeFs.closeSync(fd))
      )
      const pythonPath = [enginePackageRoot(runtime), process.env.PYTHONPATH].filter((p) => p !== undefined && p !== "").join(path.sep === "\\" ? ";" : ":")
      const child = yield* Effect.acquireRelease(
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
        // interrupted (Ctrl-C) or failed here: the engine checkpoints on SIGINT and exits; wait for it
        ({ process: c, exit }) => (c.exitCode === null && c.signalCode === null ? stopChild(c, exit) : Effect.void)
      )

      const handle = (event: EngineEvent) =>
        Effect.gen(function*() {
          switch (event.event) {
            case "start":
              start = event
              yield* Effect.logInfo(
                `torch engine on ${event.device} (${event.dtype}, ${event.worldSize} process${event.worldSize === 1 ? "" : `es, ${event.strategy}`}, ` +
                  `${event.threads} thread${event.threads === 1 ? "" : "s"}): ${event.examples} examples, ${event.totalSteps} steps, ` +
                  `${event.trainableParameters} trainable parameters`
              )
              return
            case "resumed": {
              // metrics written after this checkpoint by the interrupted run are replayed by this one
              const old = yield* fs.readFileString(metricsFile).pipe(Effect.orElseSucceed(() => ""))
              const kept = old.split("\n").filter((l) => l.trim() !== "" && (JSON.parse(l) as { step: number }).step <= event.step)
              yield* fs.writeFileString(metricsFile, kept.map((l) => l + "\n").join("")).pipe(Effect.mapError(wrapFile(metricsFile)))
              yield* Effect.logInfo(`resuming from ${event.dir} (step ${event.step} of ${totalSteps})`)
              return
            }
            case "train": {
              const log: TrainLog = {
                type: "train",
                step: event.step,
                epoch: event.epoch,
                loss: event.loss,
                learningRate: event.learningRate,
                gradNorm: event.gradNorm,
                tokensPerSecond: event.tokensPerSecond,
                etaSeconds: event.etaSeconds
              }
              trainLogs.push(log)
              yield* report(log)
              yield* appendMetrics(log)
              return
            }
            case "eval": {
              const log: EvalLog = { type: "eval", step: event.step, evalLoss: event.evalLoss, rougeL: event.rougeL }
              evaluations.push(log)
              yield* report(log)
              yield* appendMetrics(log)
              return
            }
            case "generations": {
              let total = 0
              event.outputs.forEach((tokens, i) => {
                total += rougeL(tok.decode(tokens), genSample[i]?.reference ?? "").fmeasure
              })
              const score = event.outputs.length === 0 ? null : total / event.outputs.length
              child.process.stdin?.write(JSON.stringify({ rougeL: score }) + "\n")
              return
            }
            case "checkpoint":
              return
            case "error":
              engineError = event
              return
            default:
              summary = event
          }
        })

      const lines = createInterface({ input: child.process.stdout!, crlfDelay: Infinity })
      yield* Stream.fromAsyncIterable(lines, (e) => fail("engine", String(e))).pipe(
        Stream.runForEach((line) => {
          const event = parseEngineLine(line)
          return event === undefined
            ? Effect.sync(() => nodeFs.appendFileSync(logFile, `[stdout] ${line}\n`))
            : handle(event)
        })
      )
      const exit = yield* Effect.promise(() => child.exit)
      const seeLog = `details in ${logFile}`
      if (engineError !== undefined) return yield* fail(stageOfKind[engineError.kind], `${engineError.message} (${seeLog})`)
      if (summary === undefined) {
        return yield* fail(
          "engine",
          exit.signal === "spawn-error"
            ? `cannot start ${runtime.executable}`
            : `the torch engine exited with ${exit.code === null ? `signal ${exit.signal}` : `code ${exit.code}`} before finishing (${seeLog})`
        )
      }

      const finished = summary.event === "done"
      const bestStep = summary.bestStep ?? summary.globalStep
      const finalDir = path.join(runDir, FINAL_ADAPTER_DIR)
      if (finished && leader) {
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
          JSON.stringify(
            {
              bestStep,
              checkpoint: checkpointName(bestStep),
              metricForBest: config.metricForBest,
              bestMetric: summary.bestMetric,
              globalStep: summary.globalStep,
              stoppedEarly: summary.stoppedEarly,
              finalDir,
              engine: "torch"
            },
            null,
            2
          ) + "\n"
        ).pipe(Effect.mapError(wrapFile(runDir)))
      }
      const params = parameterCount(source.config)
      const bytesPerWeight = start?.dtype === "bfloat16" ? 2 : 4
      return {
        runDir,
        finalDir,
        bestStep,
        bestMetric: summary.bestMetric,
        globalStep: summary.globalStep,
        totalSteps,
        trainLogs,
        evaluations,
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
