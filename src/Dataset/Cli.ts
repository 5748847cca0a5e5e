/**
 * `dataset`: the Dataset stage's commands.
 *
 *     dataset synth     --count 100000 --seed 42 -o data/synth.jsonl
 *     dataset validate  INPUT [--strict] [--max-reject-rate 0.05] [--rules name=warn,…] [--max-errors 20]
 *     dataset normalize INPUT -o normalized.jsonl [--no-map]
 *     dataset split     INPUT -o data/dataset [--seed 42] [--test-ratio 0.1] [--group-by-ticker] [--strict] …
 *     dataset stats     INPUT [--json]
 *
 * INPUT is a JSONL file, a `.gz` JSONL file, or `-` for stdin. Exit codes are the project's one table
 * (`exitCodeOf` in Shared/Errors.ts): 1 the input or an output cannot be read or written, or a flag is invalid;
 * 2 `--strict` met a bad line (the message names file, line, field and reason); 3 the reject rate is over
 * `--max-reject-rate` (outputs are still written).
 */
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Argument from "effect/cli/Argument"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import { statSync } from "node:fs"
import { DatasetPipeline, type PipelineOptions, type Summary } from "./DatasetPipeline.ts"
import { normalizeFile, writeSynthetic } from "./FileOps.ts"
import type { Reject } from "./Ingest.ts"
import { defaultRuleConfig, parseRuleConfig, ruleNames, type RuleConfig } from "./Rules.ts"
import { computeStats, renderStats } from "./Stats.ts"
import { describeCommand, withDefault } from "../Shared/CliHelp.ts"
import { failCommand, reportErrors } from "../Shared/Errors.ts"

/** A bad flag value is an `input` error. */
const fail = (message: string) => failCommand("dataset", message, "input")

/** Prints a stage error without a stack trace and exits with its kind's code. */
const report = reportErrors("dataset")

/**
 * `1234567` as "1,234,567". Not `toLocaleString`: its first call loads ICU's locale data, about 5 MB of
 * memory that a long ingest would take on only when its first progress line is printed, mid-run.
 */
export const groupDigits = (n: number): string => {
  const s = String(Math.trunc(Math.abs(n)))
  let out = ""
  for (let i = 0; i < s.length; i++) out += (i > 0 && (s.length - i) % 3 === 0 ? "," : "") + s[i]
  return n < 0 ? "-" + out : out
}

/**
 * Progress on stderr: on a terminal, a bar (when the total is known) with the rate, redrawn at most 5
 * times a second; otherwise a plain log line every 5 seconds.
 */
export const progressReporter = (label: string, unit: string) => {
  const tty = process.stderr.isTTY === true
  const started = Date.now()
  let last = started
  const line = (done: number, fraction?: number) => {
    const secs = (Date.now() - started) / 1000
    const rate = secs > 0 ? Math.round(done / secs) : 0
    const bar = fraction === undefined || !tty ? "" : (() => {
      const f = Math.max(0, Math.min(1, fraction))
      const filled = Math.round(f * 20)
      return `[${"#".repeat(filled)}${".".repeat(20 - filled)}] ${(f * 100).toFixed(0).padStart(3)}% `
    })()
    return `${label}: ${bar}${groupDigits(done)} ${unit}, ${groupDigits(rate)} ${unit}/s, ${secs.toFixed(1)} s`
  }
  return {
    /** `fraction`: the share done (0..1) when the total is known */
    update: (done: number, fraction?: number) =>
      Effect.sync(() => {
        const now = Date.now()
        if (now - last < (tty ? 200 : 5000)) return
        last = now
        if (tty) process.stderr.write(`\r${line(done, fraction)}\x1b[K`)
        else process.stderr.write(`${new Date(now).toISOString()} ${line(done, fraction)}\n`)
      }),
    done: (done: number) => Effect.sync(() => process.stderr.write(`${tty ? "\r" : ""}${line(done, tty ? 1 : undefined)}${tty ? "\x1b[K" : ""}\n`))
  }
}

/** the size of a plain input file, for the progress bar (stdin and gzip have no known total) */
const inputSize = (input: string): number | undefined => {
  if (input === "-" || input.endsWith(".gz")) return undefined
  try {
    return statSync(input).size
  } catch {
    return undefined
  }
}

const inputArg = Argument.String("input").pipe(
  Argument.withDescription("JSONL input: a file, a .gz file, or - for stdin (seed records, chat messages or prompt/completion)")
)
const rulesFlag = Flag.String("rules").pipe(
  Flag.withDescription(`content rule severities, e.g. advice_needs_risk_note=warn,tickers_in_text=off (rules: ${ruleNames.join(", ")}; severities: reject, warn, off)`),
  withDefault("", "tickers_in_text=warn, every other rule reject")
)
const ingestFlags = {
  strict: Flag.Boolean("strict").pipe(Flag.withDescription("stop at the first bad line with exit code 2"), withDefault(false)),
  maxRejectRate: Flag.Finite("max-reject-rate").pipe(
    Flag.withDescription("exit 3 (after writing everything) when rejected/records is above this, e.g. 0.05"),
    Flag.optional
  ),
  rules: rulesFlag,
  keepExtra: Flag.Boolean("keep-extra").pipe(
    Flag.withDescription("keep unknown top-level fields (written after the canonical ones); default: drop and count them"),
    withDefault(false)
  ),
  maxLineBytes: Flag.Int("max-line-bytes").pipe(Flag.withDescription("reject lines longer than this many bytes"), withDefault(1024 * 1024, "1048576 (1 MiB)")),
  workers: Flag.Int("workers").pipe(
    Flag.withDescription("worker threads for parsing and normalization on large inputs (default: one per core beyond the first, at most 3; 0: main thread only); outputs are the same for any number"),
    Flag.optional
  )
}

const parseRules = (spec: string) => {
  if (spec === "") return Effect.succeed<RuleConfig>(defaultRuleConfig)
  const parsed = parseRuleConfig(spec)
  return typeof parsed === "string" ? fail(`--rules: ${parsed}`) : Effect.succeed(parsed)
}

const printSummary = (s: Summary) =>
  Console.error(
    `${s.input}: ${s.linesRead} lines (${s.blankLines} blank) -> train ${s.train}, test ${s.test}` +
      (s.groups !== undefined ? ` (${s.groups.total} groups: ${s.groups.train} train, ${s.groups.test} test)` : "") + ", " +
      `duplicates ${s.duplicates.exact} exact + ${s.duplicates.normalized} normalized, rejected ${s.rejected}` +
      (Object.keys(s.rejectReasons).length > 0 ? ` (${Object.entries(s.rejectReasons).map(([k, v]) => `${k} ${v}`).join(", ")})` : "") +
      (Object.keys(s.warnings).length > 0 ? `; warnings: ${Object.entries(s.warnings).map(([k, v]) => `${k} ${v}`).join(", ")}` : "") +
      (Object.keys(s.extraFields).length > 0 ? `; extra fields ${s.extraFieldsRule}: ${Object.keys(s.extraFields).join(", ")}` : "")
  )

const runIngest = (input: string, options: Omit<PipelineOptions, "input" | "onProgress">, label: string) =>
  Effect.gen(function*() {
    if (options.workers !== undefined && options.workers < 0) return yield* fail("--workers must be 0 or more")
    const pipeline = yield* DatasetPipeline
    const progress = progressReporter(label, "lines")
    const total = inputSize(input)
    const summary = yield* pipeline.run({
      ...options,
      input,
      onProgress: (c) => progress.update(c.linesRead, total === undefined || total === 0 ? undefined : c.bytesRead / total)
    }).pipe(
      Effect.tapError(() => Effect.sync(() => process.stderr.isTTY && process.stderr.write("\n")))
    )
    yield* progress.done(summary.linesRead)
    return summary
  }).pipe(Effect.provide(DatasetPipeline.layer))

const synth = Command.make("synth", {
  count: Flag.Int("count").pipe(Flag.withDescription("how many records"), withDefault(100_000)),
  seed: Flag.Int("seed").pipe(Flag.withDescription("random seed: same seed and count, same file"), withDefault(42)),
  output: Flag.String("output").pipe(Flag.withAlias("o"), Flag.withDescription("output JSONL file, or - for stdout"), withDefault("-", "- (stdout)"))
}, ({ count, seed, output }) =>
  Effect.gen(function*() {
    if (count < 0) return yield* fail("--count must be 0 or more")
    const progress = progressReporter("synth", "records")
    yield* writeSynthetic({ count, seed, output, onProgress: (p) => progress.update(p.done, count === 0 ? undefined : p.done / count) })
    yield* progress.done(count)
  }).pipe(report)).pipe(
  describeCommand("Write realistic synthetic finance Q&A records (seed schema, placeholdered answers, app-layout context); deterministic for a seed")
)

const validate = Command.make("validate", {
  input: inputArg,
  ...ingestFlags,
  maxErrors: Flag.Int("max-errors").pipe(Flag.withDescription("how many bad lines to print"), withDefault(20)),
  json: Flag.Boolean("json").pipe(Flag.withDescription("print the summary as JSON on stdout"), withDefault(false))
}, (f) =>
  Effect.gen(function*() {
    const rules = yield* parseRules(f.rules)
    let printed = 0
    const name = f.input === "-" ? "<stdin>" : f.input
    const onReject = (r: Reject) =>
      printed++ < f.maxErrors ? Console.error(`${name}:${r.line}: ${r.field}: ${r.reason} [${r.code}]`) : Effect.void
    const summary = yield* runIngest(f.input, {
      strict: f.strict, rules, keepExtra: f.keepExtra, maxLineBytes: f.maxLineBytes, ...(Option.isSome(f.workers) ? { workers: f.workers.value } : {}), onReject,
      ...(Option.isSome(f.maxRejectRate) ? { maxRejectRate: f.maxRejectRate.value } : {})
    }, "validate")
    yield* printSummary(summary)
    if (f.json) yield* Console.log(JSON.stringify(summary, null, 2))
  }).pipe(report)).pipe(
  describeCommand("Check a JSONL file (decode, normalize, content rules, duplicates) without writing outputs; lists bad lines with line, field and reason")
)

const normalize = Command.make("normalize", {
  input: inputArg,
  output: Flag.String("output").pipe(Flag.withAlias("o"), Flag.withDescription("output JSONL file, or - for stdout"), withDefault("-", "- (stdout)")),
  noMap: Flag.Boolean("no-map").pipe(Flag.withDescription("leave out placeholder_map (the values each placeholder replaced)"), withDefault(false))
}, ({ input, output, noMap }) =>
  Effect.gen(function*() {
    const progress = progressReporter("normalize", "records")
    const name = input === "-" ? "<stdin>" : input
    const r = yield* normalizeFile({
      input, output, withMap: !noMap,
      onProgress: (p) => progress.update(p.done),
      onError: (line, field, reason) => Console.error(`${name}:${line}: ${field}: ${reason}`)
    })
    yield* progress.done(r.records)
    yield* Console.error(`${name}: ${r.records} records normalized (${r.replaced} values replaced), ${r.failed} lines skipped`)
  }).pipe(report)).pipe(
  describeCommand("Replace live values (prices, changes, ratios, dates…) by typed placeholders, with a reversible per-record placeholder_map")
)

const split = Command.make("split", {
  input: inputArg,
  outDir: Flag.String("out-dir").pipe(Flag.withAlias("o"), Flag.withDescription("folder for train.jsonl, test.jsonl, rejects.jsonl, summary.json"), withDefault("data/dataset")),
  seed: Flag.Int("seed").pipe(Flag.withDescription("split seed"), withDefault(42)),
  testRatio: Flag.Finite("test-ratio").pipe(Flag.withDescription("share of records in test.jsonl"), withDefault(0.1)),
  groupByTicker: Flag.Boolean("group-by-ticker").pipe(Flag.withDescription("keep all records of a ticker set on one side of the split"), withDefault(false)),
  ...ingestFlags
}, (f) =>
  Effect.gen(function*() {
    if (!(f.testRatio >= 0 && f.testRatio <= 1)) return yield* fail("--test-ratio must be between 0 and 1")
    const rules = yield* parseRules(f.rules)
    const summary = yield* runIngest(f.input, {
      outDir: f.outDir, seed: f.seed, testRatio: f.testRatio, groupByTicker: f.groupByTicker,
      strict: f.strict, rules, keepExtra: f.keepExtra, maxLineBytes: f.maxLineBytes, ...(Option.isSome(f.workers) ? { workers: f.workers.value } : {}),
      ...(Option.isSome(f.maxRejectRate) ? { maxRejectRate: f.maxRejectRate.value } : {})
    }, "split")
    yield* printSummary(summary)
  }).pipe(report)).pipe(
  describeCommand("The full ingest: decode, normalize, content rules, dedupe, leak-free train/test split; writes train/test/rejects JSONL and summary.json")
)

const stats = Command.make("stats", {
  input: inputArg,
  rules: rulesFlag,
  json: Flag.Boolean("json").pipe(Flag.withDescription("print JSON instead of tables"), withDefault(false))
}, ({ input, rules, json }) =>
  Effect.gen(function*() {
    const config = yield* parseRules(rules)
    const s = yield* computeStats(input, config)
    yield* Console.log(json ? JSON.stringify(s, null, 2) : renderStats(s))
  }).pipe(report)).pipe(
  describeCommand("Counts by intent, ticker and placeholder type, length percentiles, and reject reasons")
)

export const datasetCommand = Command.make("dataset").pipe(
  describeCommand("Finance Q&A datasets: synthesize, validate, normalize, split and describe JSONL"),
  Command.withSubcommands([synth, validate, normalize, split, stats])
)
