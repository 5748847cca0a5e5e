/**
 * The torch engine's stdout, decoded: python/finetune_finance_py/engine/run.py `emit`s one JSON line per event,
 * read here with `EngineEvent` into the same metrics.jsonl, progress and logs the tfjs trainer gives. At each
 * evaluation the engine sends its greedy generations; they are scored with our ROUGE-L and the score is sent back
 * (`reply`). Anything else on stdout (a library's print) goes to the engine log.
 */
import { Effect, FileSystem, Option, Result, Schema, Stream } from "effect"
import * as nodeFs from "node:fs"
import { createInterface } from "node:readline"
import type { Readable } from "node:stream"
import { rougeL } from "../Metrics/Rouge.ts"
import { Progress } from "../Shared/Progress.ts"
import type { EvalLog, TrainError, TrainLog, TrainOptions } from "./Trainer.ts"

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
export type EngineSummary = Extract<EngineEvent, { event: "done" | "stopped" | "interrupted" }>
export type EngineErrorEvent = Extract<EngineEvent, { event: "error" }>
export type EngineStartEvent = Extract<EngineEvent, { event: "start" }>

const decodeEvent = Schema.decodeUnknownResult(Schema.fromJsonString(EngineEvent))

/** A stdout line as an event, or undefined for anything else (a library's print goes to the log). */
export const parseEngineLine = (line: string): EngineEvent | undefined => {
  if (!line.startsWith("{\"event\"")) return undefined
  const r = decodeEvent(line)
  return Result.isSuccess(r) ? r.success : undefined
}

/** The error kinds' stages (TrainCli maps stages to exit codes: model → 3, device → 4, config → 2). */
export const stageOfKind: Record<EngineErrorEvent["kind"], string> = {
  bad_job: "config",
  bad_base_model: "model",
  no_cuda: "device",
  qlora_needs_cuda: "device",
  missing_package: "python",
  oom: "device",
  internal: "engine"
}

/** What a run's stdout told: its logs, how it ended (summary or error), and its start line. */
export interface EngineOutcome {
  readonly trainLogs: Array<TrainLog>
  readonly evaluations: Array<EvalLog>
  start: EngineStartEvent | undefined
  summary: EngineSummary | undefined
  error: EngineErrorEvent | undefined
}

export interface EngineEventsOptions {
  readonly metricsFile: string
  readonly logFile: string
  readonly totalSteps: number
  readonly onLog: TrainOptions["onLog"]
  /** the generation sample's detokenizer and reference answers, for the ROUGE-L sent back at each evaluation */
  readonly decode: (tokens: ReadonlyArray<number>) => string
  readonly references: ReadonlyArray<string>
  /** a line to the engine's stdin */
  readonly reply: (line: string) => void
  readonly fail: (stage: string, detail: string) => TrainError
}

/** Train lines update the progress bar and eval lines print, as the tfjs trainer's do; `onLog` takes both instead. */
const reporter = (progress: Option.Option<Progress["Service"]>, options: EngineEventsOptions) => (log: TrainLog | EvalLog) =>
  options.onLog !== undefined
    ? Effect.sync(() => options.onLog!(log))
    : Option.match(progress, {
      onNone: () => Effect.void,
      onSome: (p) =>
        log.type === "train"
          ? p.update({
            task: "train",
            done: log.step,
            total: options.totalSteps,
            unit: "steps",
            message: `loss ${log.loss.toFixed(4)} lr ${log.learningRate.toExponential(2)} grad ${log.gradNorm.toFixed(3)} ${log.tokensPerSecond.toFixed(0)} tok/s`
          })
          : p.line(`eval step ${log.step}: loss ${log.evalLoss === null ? "-" : log.evalLoss.toFixed(4)}${log.rougeL === null ? "" : ` rougeL ${log.rougeL.toFixed(4)}`}`)
    })

/** Reads the engine's stdout to its end, acting on each event; the outcome says how the run ended. */
export const readEngineEvents = Effect.fnUntraced(function*(stdout: Readable, options: EngineEventsOptions) {
  const fs = yield* FileSystem.FileSystem
  const report = reporter(yield* Effect.serviceOption(Progress), options)
  const { metricsFile, fail } = options
  const wrapMetrics = (e: { readonly message: string }) => fail(metricsFile, e.message)
  const appendMetrics = (log: TrainLog | EvalLog) =>
    fs.writeFileString(metricsFile, JSON.stringify(log) + "\n", { flag: "a" }).pipe(Effect.mapError(wrapMetrics))
  const outcome: EngineOutcome = { trainLogs: [], evaluations: [], start: undefined, summary: undefined, error: undefined }

  const handle = (event: EngineEvent) =>
    Effect.gen(function*() {
      switch (event.event) {
        case "start":
          outcome.start = event
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
          yield* fs.writeFileString(metricsFile, kept.map((l) => l + "\n").join("")).pipe(Effect.mapError(wrapMetrics))
          yield* Effect.logInfo(`resuming from ${event.dir} (step ${event.step} of ${options.totalSteps})`)
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
          outcome.trainLogs.push(log)
          yield* report(log)
          yield* appendMetrics(log)
          return
        }
        case "eval": {
          const log: EvalLog = { type: "eval", step: event.step, evalLoss: event.evalLoss, rougeL: event.rougeL }
          outcome.evaluations.push(log)
          yield* report(log)
          yield* appendMetrics(log)
          return
        }
        case "generations": {
          let total = 0
          event.outputs.forEach((tokens, i) => {
            total += rougeL(options.decode(tokens), options.references[i] ?? "").fmeasure
          })
          const score = event.outputs.length === 0 ? null : total / event.outputs.length
          options.reply(JSON.stringify({ rougeL: score }) + "\n")
          return
        }
        case "checkpoint":
          return
        case "error":
          outcome.error = event
          return
        default:
          outcome.summary = event
      }
    })

  const lines = createInterface({ input: stdout, crlfDelay: Infinity })
  yield* Stream.fromAsyncIterable(lines, (e) => fail("engine", String(e))).pipe(
    Stream.runForEach((line) => {
      const event = parseEngineLine(line)
      return event === undefined
        ? Effect.sync(() => nodeFs.appendFileSync(options.logFile, `[stdout] ${line}\n`))
        : handle(event)
    })
  )
  return outcome
})
