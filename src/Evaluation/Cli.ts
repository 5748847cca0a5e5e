/**
 * `eval`: batch evaluation, comparison, human rubrics and scheduled runs.
 *
 *     eval run      --split test.jsonl (--endpoint URL [--api infer|openai] | --model base.gguf [--adapter lora.gguf]) --out DIR
 *     eval compare  RUN_A RUN_B [--out DIR]
 *     eval score    --split test.jsonl --predictions preds.jsonl [--json] [--out DIR]
 *     eval rubric export --run A --run B --out DIR [--items 50]
 *     eval rubric import --sheet ann.csv --sheet bob.csv --key DIR/rubric-key.json [--out DIR]
 *     eval schedule (--cron "0 * * * *" | --every 1h) --db history.sqlite + the run flags
 *     eval history  --db history.sqlite [--pin ID]
 *     eval check    --db history.sqlite [--margin 0.02] [--against previous|baseline]
 *
 * Exit codes are the project's one table (`exitCodeOf` in Shared/Errors.ts): 1 a bad flag or a missing file;
 * 2 bad split or sheet contents; 3 the run failed (every generation failed), or `eval check` found a regression
 * (or nothing to check); 4 the model or device is unavailable.
 */
import { Console, Cron, Duration, Effect, FileSystem, Layer, Option, Path, Result, Schedule } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import { type Aggregate } from "./RunFiles.ts"
import { EvalScheduler, type RegressionReference } from "./EvalScheduler.ts"
import { Evaluator } from "./Evaluator.ts"
import { Generator } from "./Generator.ts"
import { existsSync, readFileSync, statSync } from "node:fs"
import { join } from "node:path"
import { Device } from "../Model/Device.ts"
import { LlamaCpp } from "../Model/LlamaCpp.ts"
import { Tokenizer } from "../Model/Tokenizer.ts"
import { PromptLayout } from "../Dataset/PromptFormat.ts"
import { layerModelCore } from "./ModelCoreGenerator.ts"
import { layerLlamaCpp } from "./LlamaCppGenerator.ts"
import { Rubric, rubricMarkdown } from "./Rubric.ts"
import { RunHistory, type RunRow } from "./RunHistory.ts"
import { describeBudget, evalTokenBudget } from "./TokenBudget.ts"
import { describeCommand, withDefault } from "../Shared/CliHelp.ts"
import { describeCause, failCommand, reportErrors } from "../Shared/Errors.ts"
import { readAdapterPrompt, trainedPromptOfGguf } from "../Training/AdapterPrompt.ts"
import { readGgufHeader } from "../Model/Gguf.ts"
import { resolveModelArgument } from "../Model/ModelFetch.ts"

/** A bad flag or flag combination is an `input` error. */
const fail = (message: string) => failCommand("eval", message, "input")

/** Prints a stage error without a stack trace; the exit code is its kind's. */
const report = reportErrors("eval")

/** `90s`, `30m`, `1h`, `2 hours`, `1d` -> Duration */
export const parseEvery = (text: string): Option.Option<Duration.Duration> => {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hr|hrs|hours?|d|days?)\s*$/i.exec(text)
  if (m === null) return Option.none()
  const n = Number(m[1])
  const unit = m[2]!.toLowerCase()
  const ms = unit.startsWith("s") ? n * 1e3 : unit.startsWith("m") ? n * 60e3 : unit.startsWith("h") ? n * 3600e3 : n * 86400e3
  return ms > 0 ? Option.some(Duration.millis(ms)) : Option.none()
}

// ---------------------------------------------------------------------------------------------------------
// shared run flags

const runFlags = {
  split: Flag.String("split").pipe(Flag.withDescription("held-out split (canonical TrainingRecord JSONL, e.g. data/test.jsonl)")),
  endpoint: Flag.String("endpoint").pipe(Flag.optional, Flag.withDescription("a served model's base URL, e.g. http://127.0.0.1:8000")),
  api: Flag.Literals("api", ["infer", "openai"]).pipe(
    Flag.withDescription("with --endpoint: the app's POST /infer, or OpenAI-compatible POST /v1/chat/completions"), withDefault("infer" as const)
  ),
  modelName: Flag.String("model-name").pipe(Flag.optional, Flag.withDescription("with --endpoint: the model/adapter name to request")),
  model: Flag.String("model").pipe(Flag.optional, Flag.withDescription("in-process: a base model GGUF run with llama.cpp")),
  adapter: Flag.String("adapter").pipe(Flag.optional, Flag.withDescription("with --model: a llama.cpp LoRA adapter GGUF (eval of the fine-tuned model)")),
  engine: Flag.Literals("engine", ["auto", "llama.cpp", "core"]).pipe(
    Flag.withDescription("with --model: llama.cpp (GGUF model + GGUF LoRA), or the project's tfjs model core (GGUF or HF folder + PEFT adapter folder); auto picks core when the model or adapter is a folder"), withDefault("auto" as const)
  ),
  device: Flag.Literals("device", ["auto", "gpu", "wasm", "cpu"]).pipe(Flag.withDescription("with --engine core: the tfjs backend"), withDefault("auto" as const)),
  threads: Flag.Int("threads").pipe(Flag.optional, Flag.withDescription("with --model: llama.cpp CPU threads (default: auto, from the model's size and the cores other processes leave free)")),
  promptLayout: Flag.Literals("prompt-layout", ["auto", ...PromptLayout.literals]).pipe(
    Flag.withDescription("with --model: the prompt layout to render (train --prompt-layout); auto: the one the adapter recorded (adapter_prompt.json, or the GGUF's finetune.prompt_layout), else seed"), withDefault("auto" as const)
  ),
  system: Flag.String("system").pipe(Flag.optional, Flag.withDescription("system name in reports (default: the generator's description)")),
  concurrency: Flag.Int("concurrency").pipe(Flag.withDescription("generations in flight at once"), withDefault(4)),
  seed: Flag.Int("seed").pipe(Flag.withDescription("sent with every request; also picks the --limit sample"), withDefault(42)),
  maxTokens: Flag.Int("max-tokens").pipe(
    Flag.withDescription("answer length limit in tokens (/infer bounds prompt + answer, so it gets max_length = this + 512); default: from the split's references, their 95th-percentile length x 1.25 + 16, at most 1024 (in --model's tokenizer, else 3 characters a token)"),
    Flag.optional
  ),
  temperature: Flag.Finite("temperature").pipe(Flag.withDescription("sampling temperature (0 = greedy)"), withDefault(0)),
  limit: Flag.Int("limit").pipe(Flag.optional, Flag.withDescription("evaluate a seeded sample of this many records")),
  timeout: Flag.Int("timeout-s").pipe(Flag.withDescription("per-request timeout for --endpoint"), withDefault(120)),
  trainingLog: Flag.String("training-log").pipe(Flag.optional, Flag.withDescription("training metrics JSONL ({step, loss} lines) for the loss chart"))
} as const

type RunFlags = {
  readonly [K in keyof typeof runFlags]: (typeof runFlags)[K] extends Flag.Flag<infer A> ? A : never
}

/** `--prompt-layout auto`: what the adapter recorded at training (a folder's sidecar or a GGUF's metadata), else seed. */
const resolveLayout = (f: RunFlags) =>
  Effect.gen(function*() {
    if (f.promptLayout !== "auto") return f.promptLayout
    const adapter = Option.getOrUndefined(f.adapter)
    if (adapter === undefined || !existsSync(adapter)) return "seed" as const
    const recorded = statSync(adapter).isDirectory()
      ? Option.getOrUndefined(yield* readAdapterPrompt(adapter))
      : yield* Effect.flatMap(readGgufHeader(adapter), (header) => Effect.try({ try: () => trainedPromptOfGguf(header), catch: (e) => e }))
    return recorded?.layout ?? "seed"
  }).pipe(Effect.catch((e) => fail(describeCause(e))))

/** The Generator the flags ask for; exactly one of --endpoint / --model. */
const generatorLayer = (f: RunFlags, layout: PromptLayout) => {
  if (Option.isSome(f.endpoint) === Option.isSome(f.model)) {
    return fail("give exactly one of --endpoint URL (a served model) or --model FILE.gguf (in-process)")
  }
  if (Option.isSome(f.endpoint)) {
    if (!/^https?:\/\//.test(f.endpoint.value)) return fail(`--endpoint: expected an http(s) URL, got "${f.endpoint.value}"`)
    return Effect.succeed(Generator.layerHttp({
      url: f.endpoint.value,
      api: f.api,
      model: Option.getOrUndefined(f.modelName),
      timeout: Duration.seconds(f.timeout)
    }))
  }
  const model = Option.getOrThrow(f.model)
  const adapter = Option.getOrUndefined(f.adapter)
  const isFolder = (p: string | undefined) => p !== undefined && existsSync(p) && statSync(p).isDirectory()
  const engine = f.engine !== "auto" ? f.engine : isFolder(model) || isFolder(adapter) ? "core" : "llama.cpp"
  type AnyLayer = Layer.Layer<Generator, { readonly _tag: string; readonly message: string }, FileSystem.FileSystem | Path.Path>
  if (engine === "core") {
    return Effect.succeed(layerModelCore({ model, adapter, layout }).pipe(
      Layer.provide(Layer.mergeAll(Tokenizer.layer, Device.layer(f.device)))
    ) satisfies AnyLayer)
  }
  return Effect.succeed(layerLlamaCpp({
    model,
    adapter,
    layout,
    concurrency: f.concurrency,
    threads: Option.getOrUndefined(f.threads)
  }).pipe(Layer.provide(LlamaCpp.layer)) satisfies AnyLayer)
}

const checkRunFlags = (f: RunFlags) =>
  Effect.gen(function*() {
    if (f.concurrency < 1) return yield* fail("--concurrency: must be at least 1")
    if (Option.isSome(f.maxTokens) && f.maxTokens.value < 1) return yield* fail("--max-tokens: must be at least 1")
    if (Option.isSome(f.limit) && f.limit.value < 1) return yield* fail("--limit: must be at least 1")
    if (Option.isSome(f.adapter) && Option.isNone(f.model)) return yield* fail("--adapter needs --model (the base GGUF it adapts)")
  })

/**
 * The answer budget when `--max-tokens` is not given: sized from the split's references (TokenBudget.ts), in the
 * model's tokenizer with an in-process GGUF `--model`, else estimated; a split that cannot be read is left to the
 * evaluator, which names the file and line.
 */
const referenceBudget = (f: RunFlags) =>
  Effect.gen(function*() {
    const text = existsSync(f.split) ? readFileSync(f.split, "utf8") : ""
    const references: Array<string> = []
    for (const line of text.split("\n")) {
      if (line.trim() === "") continue
      try {
        const o = JSON.parse(line) as { answer?: unknown }
        if (typeof o.answer === "string") references.push(o.answer)
      } catch {
        // the evaluator reports the line
      }
    }
    const model = Option.getOrUndefined(f.model)
    const usableModel = model !== undefined && !(existsSync(model) && statSync(model).isDirectory()) && existsSync(model)
    // the budget is counted while the tokenizer's scope is open: a llama.cpp tokenizer is disposed when it closes
    const budget = usableModel
      ? yield* Tokenizer.use((t) => Effect.map(t.load(model), (tokenizer) => evalTokenBudget(references, tokenizer))).pipe(
        Effect.provide(Tokenizer.layer),
        Effect.scoped,
        Effect.orElseSucceed(() => evalTokenBudget(references, undefined))
      )
      : evalTokenBudget(references, undefined)
    yield* Console.error(`eval: answer budget ${describeBudget(budget)}; --max-tokens sets it`)
    return budget.tokens
  })

/** One evaluation into `outDir`, with the generator built (and released) around it. */
const evaluateOnce = (f: RunFlags, outDir: string, resume: boolean) =>
  Effect.gen(function*() {
    // a catalog name (`--model smollm2-135m-instruct`) is the cached file, fetched on first use
    const layout = yield* resolveLayout(f)
    if (Option.isSome(f.model)) yield* Console.error(`eval: ${layout} prompts${f.promptLayout === "auto" ? " (auto: the adapter's record, else seed)" : ""}`)
    const layer = yield* generatorLayer(Option.isSome(f.model) ? { ...f, model: Option.some(yield* resolveModelArgument(f.model.value)) } : f, layout)
    const evaluator = yield* Evaluator
    const maxTokens = Option.isSome(f.maxTokens) ? f.maxTokens.value : yield* referenceBudget(f)
    return yield* Effect.gen(function*() {
      const generator = yield* Generator
      return yield* evaluator.run({
        generator,
        split: f.split,
        outDir,
        system: Option.getOrUndefined(f.system),
        concurrency: f.concurrency,
        seed: f.seed,
        maxTokens,
        temperature: f.temperature,
        limit: Option.getOrUndefined(f.limit),
        resume,
        trainingLog: Option.getOrUndefined(f.trainingLog)
      })
    }).pipe(Effect.provide(layer), Effect.mapError((e) => e as { readonly _tag: string; readonly message: string }))
  })

const summaryLine = (a: Aggregate) =>
  `${a.system}: ${a.scored}/${a.samples} scored (${a.failed} failed) | BLEU ${a.metrics.bleu!.toFixed(2)} | ROUGE-L ${a.metrics.rougeL!.toFixed(4)} | factuality ${a.metrics.factuality!.toFixed(4)} | citation ${a.metrics.citation_rate!.toFixed(3)} | risk flags ${a.metrics.risk_flag_rate!.toFixed(3)}`

// ---------------------------------------------------------------------------------------------------------

/** Ctrl-C: one line saying what was kept (the runtime then exits 130); the generator has stopped by now. */
const interruptedLine = (out: string) =>
  Effect.suspend(() => {
    const file = join(out, "generations.jsonl")
    const kept = existsSync(file) ? readFileSync(file, "utf8").split("\n").filter((l) => l.trim() !== "" && !l.includes('"error":')).length : 0
    return Console.error(`eval: interrupted; ${kept} finished sample${kept === 1 ? "" : "s"} kept in ${file}; rerun with --resume to continue`)
  })

const runCommand = Command.make("run", {
  ...runFlags,
  out: Flag.String("out").pipe(Flag.withDescription("run folder to write (samples.jsonl, aggregate.json, report.html, summary.md)")),
  resume: Flag.Boolean("resume").pipe(Flag.withDescription("continue an interrupted run in --out, skipping finished samples"), withDefault(false))
}, (f) =>
  Effect.gen(function*() {
    yield* checkRunFlags(f)
    const result = yield* report(evaluateOnce(f, f.out, f.resume)).pipe(Effect.onInterrupt(() => interruptedLine(f.out)))
    yield* Console.log(summaryLine(result.aggregate))
    yield* Console.log(`report: ${result.files.report}`)
  }).pipe(Effect.provide(Evaluator.layer))).pipe(
  describeCommand("Generate answers for a held-out split (served endpoint or in-process GGUF) and score them: BLEU, ROUGE, factuality, citations, risk flags")
)

const compareCommand = Command.make("compare", {
  a: Argument.String("run-a").pipe(Argument.withDescription("first run folder (the reference)")),
  b: Argument.String("run-b").pipe(Argument.withDescription("second run folder")),
  out: Flag.String("out").pipe(Flag.optional, Flag.withDescription("also write compare.html and compare.md here"))
}, ({ a, b, out }) =>
  Effect.gen(function*() {
    const evaluator = yield* Evaluator
    const result = yield* report(evaluator.compare(a, b, Option.getOrUndefined(out)))
    yield* Console.log(result.markdown)
  }).pipe(Effect.provide(Evaluator.layer))).pipe(describeCommand("Put two evaluation runs side by side with per-metric deltas (B − A)"))

const rubricExport = Command.make("export", {
  runs: Flag.atLeast(Flag.String("run"), 1).pipe(Flag.withDescription("run folders to rate (repeat --run for each system)")),
  out: Flag.String("out").pipe(Flag.withDescription("folder for rubric.csv, rubric.jsonl and rubric-key.json (keep the key from raters)")),
  items: Flag.Int("items").pipe(Flag.withDescription("how many items to sample"), withDefault(50)),
  seed: Flag.Int("seed").pipe(Flag.withDescription("sampling and blinding seed"), withDefault(42))
}, ({ runs, out, items, seed }) =>
  Effect.gen(function*() {
    if (items < 1) return yield* fail("--items: must be at least 1")
    const rubric = yield* Rubric
    const r = yield* report(rubric.exportSheet({ runs, outDir: out, items, seed }))
    yield* Console.log(`wrote ${r.rows} rows: ${r.files.join(", ")}`)
  }).pipe(Effect.provide(Rubric.layer))).pipe(
  describeCommand("Write a blinded rating sheet (CSV + JSONL): clarity 1–5, correctness 1–5, risk flag yes/no, number accuracy 1–5, comment")
)

const rubricImport = Command.make("import", {
  sheets: Flag.atLeast(Flag.String("sheet"), 1).pipe(Flag.withDescription("filled sheets, CSV or JSONL (one rater per file unless the rater column is set)")),
  key: Flag.String("key").pipe(Flag.withDescription("the rubric-key.json written by export")),
  out: Flag.String("out").pipe(Flag.optional, Flag.withDescription("write human-eval.json and human-eval.md here"))
}, ({ sheets, key, out }) =>
  Effect.gen(function*() {
    const rubric = yield* Rubric
    const result = yield* report(rubric.importSheets({ sheets, key }))
    const md = rubricMarkdown(result)
    if (Option.isSome(out)) {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      yield* report(fs.makeDirectory(out.value, { recursive: true }).pipe(
        Effect.andThen(fs.writeFileString(path.join(out.value, "human-eval.json"), JSON.stringify(result, null, 2) + "\n")),
        Effect.andThen(fs.writeFileString(path.join(out.value, "human-eval.md"), md))
      ))
    }
    yield* Console.log(md)
  }).pipe(Effect.provide(Rubric.layer))).pipe(
  describeCommand("Validate filled rating sheets, unblind them, and report per-system means with confidence intervals and inter-rater agreement")
)

const rubricCommand = Command.make("rubric").pipe(
  describeCommand("Human evaluation with the seed's rubric"),
  Command.withSubcommands([rubricExport, rubricImport])
)

const dbFlag = Flag.String("db").pipe(Flag.withDescription("SQLite file with the run history"), withDefault("eval-history.sqlite"))
const regressionFlags = {
  margin: Flag.Finite("margin").pipe(Flag.withDescription("largest tolerated drop on 0–1 scales (BLEU /100)"), withDefault(0.02)),
  against: Flag.Literals("against", ["previous", "baseline"]).pipe(
    Flag.withDescription("compare with the previous succeeded run or the pinned baseline"), withDefault("previous" as RegressionReference)
  )
} as const

const historyLayer = (db: string, options?: { readonly create?: boolean }) =>
  EvalScheduler.layer.pipe(Layer.provideMerge(RunHistory.layer(db, options)))

const scheduleCommand = Command.make("schedule", {
  ...runFlags,
  ...regressionFlags,
  db: dbFlag,
  cron: Flag.String("cron").pipe(Flag.optional, Flag.withDescription("cron expression, e.g. \"0 3 * * *\" (UTC)")),
  every: Flag.String("every").pipe(
    Flag.optional,
    Flag.withDescription("fixed interval, e.g. 30m, 1h, 1d (cadence counted from the end of the first run; a long run delays the next, never overlaps it)")
  ),
  out: Flag.String("out").pipe(Flag.withDescription("parent folder; each run writes <out>/run-<time>")),
  maxRuns: Flag.Int("max-runs").pipe(Flag.optional, Flag.withDescription("stop after this many runs (default: run until stopped)"))
}, (f) =>
  Effect.gen(function*() {
    yield* checkRunFlags(f)
    if (Option.isSome(f.cron) === Option.isSome(f.every)) return yield* fail("give exactly one of --cron EXPR or --every INTERVAL")
    let schedule: Schedule.Schedule<unknown, unknown, Cron.CronParseError>
    if (Option.isSome(f.cron)) {
      const parsed = Cron.parse(f.cron.value, "UTC")
      if (Result.isFailure(parsed)) return yield* fail(`--cron: ${parsed.failure.message}`)
      schedule = Schedule.cron(parsed.success)
    } else {
      const every = parseEvery(Option.getOrThrow(f.every))
      if (Option.isNone(every)) return yield* fail(`--every: expected a duration like 30m, 1h or 1d, got "${Option.getOrThrow(f.every)}"`)
      schedule = Schedule.fixed(every.value)
    }
    if (Option.isSome(f.maxRuns)) schedule = schedule.pipe(Schedule.upTo({ times: Math.max(0, f.maxRuns.value - 1) }))
    const path = yield* Path.Path
    const scheduler = yield* EvalScheduler
    const job = Effect.gen(function*() {
      const stamp = new Date().toISOString().replace(/[:.]/g, "-")
      return yield* evaluateOnce(f, path.join(f.out, `run-${stamp}`), false)
    }).pipe(Effect.provide(Evaluator.layer))
    const config = {
      split: f.split,
      endpoint: Option.getOrNull(f.endpoint),
      api: f.api,
      model: Option.getOrNull(f.model),
      adapter: Option.getOrNull(f.adapter),
      seed: f.seed,
      // null: sized from the references at each run
      maxTokens: Option.getOrNull(f.maxTokens),
      temperature: f.temperature,
      limit: Option.getOrNull(f.limit),
      schedule: Option.getOrNull(f.cron) ?? `every ${Option.getOrNull(f.every)}`
    }
    yield* scheduler.runScheduled(job, schedule, config, { margin: f.margin, against: f.against })
  }).pipe(Effect.provide(historyLayer(f.db)), report)).pipe(
  describeCommand("Run batch evaluations on a schedule, record each run in SQLite and flag regressions (never overlapping)")
)

const rowLine = (r: RunRow) =>
  [
    `#${r.id}${r.baseline ? " (baseline)" : ""}`,
    new Date(r.startedAt).toISOString(),
    r.status,
    r.metrics ? `BLEU ${(r.metrics.bleu ?? 0).toFixed(2)} ROUGE-L ${(r.metrics.rougeL ?? 0).toFixed(4)} factuality ${(r.metrics.factuality ?? 0).toFixed(4)}` : "",
    r.regressions.length > 0 ? `REGRESSION vs #${r.comparedTo}: ${r.regressions.map((x) => x.metric).join(", ")}` : "",
    r.error ?? "",
    r.outDir ?? ""
  ].filter((s) => s !== "").join(" | ")

const historyCommand = Command.make("history", {
  db: dbFlag,
  limit: Flag.Int("limit").pipe(Flag.withDescription("how many recent runs to list"), withDefault(20)),
  pin: Flag.Int("pin").pipe(Flag.optional, Flag.withDescription("pin this succeeded run as the regression baseline")),
  json: Flag.Boolean("json").pipe(Flag.withDescription("print the rows as JSON"), withDefault(false))
}, ({ db, limit, pin, json }) =>
  Effect.gen(function*() {
    const history = yield* RunHistory
    if (Option.isSome(pin)) {
      yield* history.pinBaseline(pin.value)
      yield* Console.log(`run ${pin.value} is now the baseline`)
    }
    const rows = yield* history.list(limit)
    yield* Console.log(json ? JSON.stringify(rows, null, 2) : rows.length === 0 ? `no runs in ${db}` : rows.map(rowLine).join("\n"))
  }).pipe(Effect.provide(RunHistory.layer(db, { create: false })), report)).pipe(
  describeCommand("List recorded evaluation runs (status, metrics, regressions, files); --pin sets the baseline")
)

const checkCommand = Command.make("check", { db: dbFlag, ...regressionFlags }, ({ db, margin, against }) =>
  Effect.gen(function*() {
    const scheduler = yield* EvalScheduler
    const r = yield* report(scheduler.check({ margin, against }))
    yield* Console.log(`run ${r.run.id}: no regression against run ${r.reference.id} (margin ${margin})`)
  }).pipe(Effect.provide(historyLayer(db, { create: false })), report)).pipe(
  describeCommand("Exit 3 when the latest recorded run regressed against the previous run or the baseline (or there is none)")
)

/** Every metric of an aggregate as a table: metric, value, standard error (where the metric has one). */
export const scoreTable = (a: Aggregate): string => {
  const rows: Array<readonly [string, string, string]> = [
    ...Object.entries(a.metrics).map(([m, v]) => [m, v.toFixed(4), a.stderr[m] === undefined ? "" : `± ${a.stderr[m]!.toFixed(4)}`] as const),
    ...Object.entries(a.rougeStemmed).map(([m, v]) => [`${m} (stemmed)`, v.toFixed(4), ""] as const),
    ...Object.entries(a.counts).map(([m, v]) => [m, String(v), ""] as const)
  ]
  const width = Math.max(...rows.map((r) => r[0].length))
  return [
    `${a.system}: ${a.scored} of ${a.samples} records scored`,
    ...rows.map(([m, v, e]) => `  ${m.padEnd(width)}  ${v.padStart(10)}  ${e}`.trimEnd())
  ].join("\n")
}

const scoreCommand = Command.make("score", {
  split: Flag.String("split").pipe(Flag.withDescription("the references: held-out records (canonical TrainingRecord JSONL)")),
  predictions: Flag.String("predictions").pipe(Flag.withDescription(
    "predictions JSONL: {\"prediction\": ...} per line, in the split's order, or with \"index\" (a run's generations.jsonl works); optional rawAnswer, latencyMs"
  )),
  json: Flag.Boolean("json").pipe(Flag.withDescription("print the aggregate (every metric) as JSON instead of a table"), withDefault(false)),
  out: Flag.String("out").pipe(Flag.optional, Flag.withDescription("also write samples.jsonl and aggregate.json here"))
}, ({ split, predictions, json, out }) =>
  Effect.gen(function*() {
    const evaluator = yield* Evaluator
    const result = yield* report(evaluator.score({ split, predictions, outDir: Option.getOrUndefined(out) }))
    yield* Console.log(json ? JSON.stringify(result.aggregate, null, 2) : scoreTable(result.aggregate))
  }).pipe(Effect.provide(Evaluator.layer))).pipe(
  describeCommand("Score a predictions JSONL against a split's references: BLEU, ROUGE, factuality, citations, risk flags, placeholders")
)

export const evalCommand = Command.make("eval").pipe(
  describeCommand("Evaluate models: BLEU/ROUGE equal to sacrebleu/rouge-score, finance metrics, reports, human rubrics, schedules"),
  Command.withSubcommands([runCommand, compareCommand, scoreCommand, rubricCommand, scheduleCommand, historyCommand, checkCommand])
)
