/**
 * Human evaluation with the seed's rubric: clarity (1–5), correctness (1–5), risk flag present (yes/no),
 * number accuracy (1–5) and a free comment.
 *
 * Export: a seeded sample of items present in every given run, one row per (item, system), with a stable
 * `row_id`, system names replaced by per-item shuffled labels (A, B, …) and the rows shuffled, written as CSV and
 * JSONL for raters, plus a separate key file (row_id -> system) that raters never see.
 *
 * Import: any number of filled sheets (CSV or JSONL; one rater per file unless the `rater` column says otherwise),
 * validated cell by cell (errors name file, row and column), unblinded with the key, aggregated per system
 * (means with seeded bootstrap 95% intervals, risk-flag share with Wilson intervals), and, when two or more raters
 * rated the same rows, inter-rater agreement as Krippendorff's alpha (ordinal for the 1–5 scales, nominal for the
 * flag).
 */
import { Context, Effect, FileSystem, Layer, Path, Result, Schema } from "effect"
import { createHash } from "node:crypto"
import { causeKind, describeCause, kindField } from "../Shared/Errors.ts"
import { bootstrapMean, type Interval, krippendorffAlpha, wilson } from "./Agreement.ts"
import { prng, seededSample, shuffle } from "./Seeded.ts"
import { SampleResult } from "./RunFiles.ts"

export class RubricError extends Schema.TaggedError<RubricError>()("RubricError", {
  path: Schema.String,
  problems: Schema.Array(Schema.String),
  /** `data` (a sheet's contents) unless a file cannot be read or written (`input`) */
  kind: kindField("data")
}) {
  override get message() {
    const shown = this.problems.slice(0, 20)
    const more = this.problems.length > shown.length ? `\n  … and ${this.problems.length - shown.length} more` : ""
    return `${this.path}:\n  ${shown.join("\n  ")}${more}`
  }
}

export const scaleColumns = ["clarity", "correctness", "number_accuracy"] as const
export const sheetColumns = [
  "row_id",
  "item_id",
  "label",
  "question",
  "context",
  "answer",
  "clarity",
  "correctness",
  "risk_flag",
  "number_accuracy",
  "comment",
  "rater"
] as const

export const RubricKey = Schema.Struct({
  seed: Schema.Int,
  createdAt: Schema.String,
  runs: Schema.Array(Schema.String),
  rows: Schema.Record(Schema.String, Schema.Struct({ system: Schema.String, itemId: Schema.String, label: Schema.String }))
})
export type RubricKey = typeof RubricKey.Type

export interface SystemRubricSummary {
  readonly system: string
  readonly ratings: number
  readonly clarity: Interval
  readonly correctness: Interval
  readonly number_accuracy: Interval
  readonly risk_flag: Interval
}

export interface RubricReport {
  readonly raters: ReadonlyArray<string>
  readonly systems: ReadonlyArray<SystemRubricSummary>
  /** Krippendorff's alpha per column; absent when fewer than two raters overlap */
  readonly agreement?: Readonly<Record<"clarity" | "correctness" | "number_accuracy" | "risk_flag", number>> | undefined
}

// ---------------------------------------------------------------------------------------------------------
// CSV (RFC 4180): quoted fields may hold commas, quotes ("") and newlines

const csvField = (s: string) => (/[",\r\n]/.test(s) || s !== s.trim() ? `"${s.replace(/"/g, "\"\"")}"` : s)

export const toCsv = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string =>
  [header, ...rows].map((r) => r.map(csvField).join(",")).join("\r\n") + "\r\n"

/** Parses CSV into rows of fields; returns an error message for an unterminated quote. */
export const parseCsv = (text: string): Result.Result<Array<Array<string>>, string> => {
  const rows: Array<Array<string>> = []
  let row: Array<string> = []
  let field = ""
  let quoted = false
  let i = 0
  const s = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text // spreadsheet BOM
  while (i < s.length) {
    const c = s[i]!
    if (quoted) {
      if (c === "\"") {
        if (s[i + 1] === "\"") {
          field += "\""
          i += 2
          continue
        }
        quoted = false
        i++
        continue
      }
      field += c
      i++
      continue
    }
    if (c === "\"" && field === "") {
      quoted = true
      i++
    } else if (c === ",") {
      row.push(field)
      field = ""
      i++
    } else if (c === "\n" || c === "\r") {
      row.push(field)
      rows.push(row)
      row = []
      field = ""
      i += c === "\r" && s[i + 1] === "\n" ? 2 : 1
    } else {
      field += c
      i++
    }
  }
  if (quoted) return Result.fail(`unterminated quoted field in row ${rows.length + 1}`)
  if (field !== "" || row.length > 0) {
    row.push(field)
    rows.push(row)
  }
  return Result.succeed(rows.filter((r) => !(r.length === 1 && r[0] === "")))
}

// ---------------------------------------------------------------------------------------------------------

const sha = (s: string) => createHash("sha256").update(s).digest("hex")

interface Rating {
  readonly rowId: string
  readonly rater: string
  readonly clarity: number
  readonly correctness: number
  readonly number_accuracy: number
  readonly risk_flag: boolean
  readonly comment: string
}

const parseScale = (v: string | undefined): number | undefined => {
  const t = (v ?? "").trim()
  return /^[1-5]$/.test(t) ? Number(t) : undefined
}
const parseFlag = (v: string | undefined): boolean | undefined => {
  const t = (v ?? "").trim().toLowerCase()
  return t === "yes" || t === "y" ? true : t === "no" || t === "n" ? false : undefined
}

/** Validates one sheet's rows (objects keyed by column). `rowLabel(i)` names a row in messages. */
const validateRows = (
  file: string,
  rows: ReadonlyArray<Readonly<Record<string, string | undefined>>>,
  rowLabel: (i: number) => string,
  key: RubricKey,
  defaultRater: string
): { ratings: Array<Rating>; problems: Array<string> } => {
  const ratings: Array<Rating> = []
  const problems: Array<string> = []
  rows.forEach((r, i) => {
    const where = `${file}: ${rowLabel(i)}`
    const rowId = (r.row_id ?? "").trim()
    if (rowId === "") {
      problems.push(`${where}: column row_id: missing`)
      return
    }
    if (key.rows[rowId] === undefined) {
      problems.push(`${where}: column row_id: unknown id "${rowId}" (not in the key file)`)
      return
    }
    const values: Record<string, number> = {}
    for (const col of scaleColumns) {
      const raw = r[col]
      const v = parseScale(raw)
      if (v === undefined) {
        problems.push(`${where}: column ${col}: ${(raw ?? "").trim() === "" ? "missing" : `expected an integer from 1 to 5, got "${raw}"`}`)
      } else values[col] = v
    }
    const flag = parseFlag(r.risk_flag)
    if (flag === undefined) {
      problems.push(`${where}: column risk_flag: ${(r.risk_flag ?? "").trim() === "" ? "missing" : `expected yes or no, got "${r.risk_flag}"`}`)
    }
    if (Object.keys(values).length === scaleColumns.length && flag !== undefined) {
      ratings.push({
        rowId,
        rater: (r.rater ?? "").trim() || defaultRater,
        clarity: values.clarity!,
        correctness: values.correctness!,
        number_accuracy: values.number_accuracy!,
        risk_flag: flag,
        comment: r.comment ?? ""
      })
    }
  })
  return { ratings, problems }
}

type SheetRow = { row: Record<(typeof sheetColumns)[number], string>; system: string }
type RunSamples = { readonly system: string; readonly samples: ReadonlyArray<typeof SampleResult.Type> }

/**
 * One blank row per (sampled item, system), labelled A, B, … in a per-item shuffled order, then all rows
 * shuffled; one seeded generator draws both, so the same seed gives the same sheet.
 */
const blindRows = (runs: ReadonlyArray<RunSamples>, common: ReadonlyArray<typeof SampleResult.Type>, count: number, seed: number) => {
  const items = seededSample(common, count, seed)
  const rand = prng(seed)
  const rows: Array<SheetRow> = []
  for (const item of items) {
    const order = shuffle(runs, rand)
    order.forEach((run, k) => {
      const s = run.samples.find((x) => x.id === item.id)!
      const label = String.fromCharCode(65 + k)
      rows.push({
        system: run.system,
        row: {
          row_id: sha(`${item.id}|${run.system}|${seed}`).slice(0, 12),
          item_id: item.id,
          label,
          question: s.question,
          context: typeof s.context === "string" ? s.context : s.context === undefined ? "" : JSON.stringify(s.context),
          answer: s.prediction,
          clarity: "",
          correctness: "",
          risk_flag: "",
          number_accuracy: "",
          comment: "",
          rater: ""
        }
      })
    })
  }
  return shuffle(rows, rand)
}

type SheetResult = { ratings: Array<Rating>; problems: Array<string> }

/** A JSONL sheet: one object per line; a line that is not JSON is a problem, the others are validated. */
const jsonlSheet = (file: string, text: string, key: RubricKey, rater: string): SheetResult => {
  const rows: Array<Record<string, string>> = []
  const problems: Array<string> = []
  const lineNos: Array<number> = []
  text.split("\n").forEach((line, i) => {
    if (line.trim() === "") return
    try {
      const o = JSON.parse(line) as Record<string, unknown>
      rows.push(Object.fromEntries(Object.entries(o).map(([k, v]) => [k, v === null || v === undefined ? "" : String(v)])))
      lineNos.push(i + 1)
    } catch {
      problems.push(`${file}: line ${i + 1}: not valid JSON`)
    }
  })
  const v = validateRows(file, rows, (i) => `line ${lineNos[i]}`, key, rater)
  return { ratings: v.ratings, problems: [...problems, ...v.problems] }
}

/** A CSV sheet: a header naming at least the rated columns (any order, any case), then one row per rating. */
const csvSheet = (file: string, text: string, key: RubricKey, rater: string): SheetResult => {
  const parsed = parseCsv(text)
  if (Result.isFailure(parsed)) return { ratings: [], problems: [`${file}: ${parsed.failure}`] }
  const [header, ...body] = parsed.success
  if (header === undefined) return { ratings: [], problems: [`${file}: the sheet is empty`] }
  const cols = header.map((h) => h.trim().toLowerCase())
  const missing = ["row_id", ...scaleColumns, "risk_flag"].filter((c) => !cols.includes(c))
  if (missing.length > 0) return { ratings: [], problems: [`${file}: row 1 (header): missing column${missing.length > 1 ? "s" : ""} ${missing.join(", ")}`] }
  const rows = body.map((fields) => Object.fromEntries(cols.map((c, k) => [c, fields[k]])))
  // spreadsheet numbering: the header is row 1
  return validateRows(file, rows, (i) => `row ${i + 2}`, key, rater)
}

/** A problem for every row a rater rated more than once (over all sheets). */
const duplicateRatings = (all: ReadonlyArray<Rating>): Array<string> => {
  const problems: Array<string> = []
  const seen = new Set<string>()
  for (const r of all) {
    const k = `${r.rater}\u0000${r.rowId}`
    if (seen.has(k)) problems.push(`rater "${r.rater}" rated row ${r.rowId} twice`)
    seen.add(k)
  }
  return problems
}

/** Krippendorff's alpha per column over raters x rows; undefined unless two raters rated a common row. */
const agreementOf = (all: ReadonlyArray<Rating>, raters: ReadonlyArray<string>): RubricReport["agreement"] => {
  const rowIds = [...new Set(all.map((r) => r.rowId))].sort()
  const overlapping = rowIds.some((id) => all.filter((r) => r.rowId === id).length >= 2)
  if (raters.length < 2 || !overlapping) return undefined
  const matrix = (pick: (r: Rating) => number) =>
    raters.map((rater) => rowIds.map((id) => {
      const r = all.find((x) => x.rater === rater && x.rowId === id)
      return r === undefined ? null : pick(r)
    }))
  return {
    clarity: krippendorffAlpha(matrix((r) => r.clarity), "ordinal"),
    correctness: krippendorffAlpha(matrix((r) => r.correctness), "ordinal"),
    number_accuracy: krippendorffAlpha(matrix((r) => r.number_accuracy), "ordinal"),
    risk_flag: krippendorffAlpha(matrix((r) => (r.risk_flag ? 1 : 0)), "nominal")
  }
}

/** Unblinded ratings per system (seeded bootstrap means, Wilson share of the flag) and the raters' agreement. */
const summarize = (all: ReadonlyArray<Rating>, key: RubricKey): RubricReport => {
  const systems = [...new Set(Object.values(key.rows).map((r) => r.system))].sort()
  const summaries: Array<SystemRubricSummary> = systems.map((system, si) => {
    const mine = all.filter((r) => key.rows[r.rowId]!.system === system)
    return {
      system,
      ratings: mine.length,
      clarity: bootstrapMean(mine.map((r) => r.clarity), { seed: key.seed + si }),
      correctness: bootstrapMean(mine.map((r) => r.correctness), { seed: key.seed + si + 101 }),
      number_accuracy: bootstrapMean(mine.map((r) => r.number_accuracy), { seed: key.seed + si + 202 }),
      risk_flag: wilson(mine.filter((r) => r.risk_flag).length, mine.length)
    }
  })
  const raters = [...new Set(all.map((r) => r.rater))].sort()
  return { raters, systems: summaries, agreement: agreementOf(all, raters) }
}

export class Rubric extends Context.Service<Rubric, {
  /** Writes rubric.csv, rubric.jsonl and rubric-key.json into `outDir`; returns the number of rows. */
  exportSheet(options: { runs: ReadonlyArray<string>; outDir: string; items: number; seed?: number }): Effect.Effect<{ rows: number; files: ReadonlyArray<string> }, RubricError>
  /** Validates filled sheets, unblinds them with the key, and aggregates. */
  importSheets(options: { sheets: ReadonlyArray<string>; key: string }): Effect.Effect<RubricReport, RubricError>
}>()("app/Evaluation/Rubric") {
  static readonly layer = Layer.effect(
    Rubric,
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      const fail = (p: string, problems: Array<string>) => new RubricError({ path: p, problems })
      const io = (p: string) => (e: unknown) => new RubricError({ path: p, problems: [describeCause(e)], kind: causeKind(e) ?? "input" })
      const read = (p: string) => fs.readFileString(p).pipe(Effect.mapError(io(p)))
      const write = (p: string, s: string) => fs.writeFileString(p, s).pipe(Effect.mapError(io(p)))
      const decodeSample = Schema.decodeUnknownResult(Schema.fromJsonString(SampleResult))

      const readSamples = Effect.fn("Rubric.readSamples")(function*(runDir: string) {
        const file = path.join(runDir, "samples.jsonl")
        const text = yield* read(file)
        const out: Array<typeof SampleResult.Type> = []
        const problems: Array<string> = []
        text.split("\n").forEach((line, i) => {
          if (line.trim() === "") return
          const r = decodeSample(line)
          if (Result.isSuccess(r)) out.push(r.success)
          else problems.push(`line ${i + 1}: ${r.failure.message}`)
        })
        if (problems.length > 0) return yield* fail(file, problems)
        const system = JSON.parse(yield* read(path.join(runDir, "aggregate.json")).pipe(Effect.orElseSucceed(() => "{}"))).system ?? path.basename(runDir)
        return { system: String(system), samples: out } satisfies RunSamples
      })

      const exportSheet = Effect.fn("Rubric.exportSheet")(function*(options: { runs: ReadonlyArray<string>; outDir: string; items: number; seed?: number }) {
        const seed = options.seed ?? 42
        if (options.runs.length === 0) return yield* fail(options.outDir, ["give at least one run folder"])
        const runs = yield* Effect.forEach(options.runs, readSamples)
        const names = runs.map((r) => r.system)
        if (new Set(names).size !== names.length) return yield* fail(options.outDir, [`two runs have the same system name: ${names.join(", ")}`])
        const common = runs[0]!.samples.filter((s) => runs.every((r) => r.samples.some((x) => x.id === s.id)))
        if (common.length === 0) return yield* fail(options.outDir, ["the runs share no samples (were they made from the same split?)"])
        const shuffled = blindRows(runs, common, options.items, seed)
        yield* fs.makeDirectory(options.outDir, { recursive: true }).pipe(Effect.mapError(io(options.outDir)))
        const csv = path.join(options.outDir, "rubric.csv")
        const jsonl = path.join(options.outDir, "rubric.jsonl")
        const keyFile = path.join(options.outDir, "rubric-key.json")
        yield* write(csv, toCsv(sheetColumns, shuffled.map((r) => sheetColumns.map((c) => r.row[c]))))
        yield* write(jsonl, shuffled.map((r) => JSON.stringify(r.row) + "\n").join(""))
        const key: RubricKey = {
          seed,
          createdAt: new Date().toISOString(),
          runs: [...options.runs],
          rows: Object.fromEntries(shuffled.map((r) => [r.row.row_id, { system: r.system, itemId: r.row.item_id, label: r.row.label }]))
        }
        yield* write(keyFile, JSON.stringify(key, null, 2) + "\n")
        return { rows: shuffled.length, files: [csv, jsonl, keyFile] }
      })

      const readSheet = Effect.fn("Rubric.readSheet")(function*(file: string, key: RubricKey) {
        const text = yield* read(file)
        const rater = path.basename(file).replace(/\.(csv|jsonl)$/i, "")
        return file.toLowerCase().endsWith(".jsonl") ? jsonlSheet(file, text, key, rater) : csvSheet(file, text, key, rater)
      })

      const importSheets = Effect.fn("Rubric.importSheets")(function*(options: { sheets: ReadonlyArray<string>; key: string }) {
        const keyText = yield* read(options.key)
        const key = yield* Effect.fromResult(
          Schema.decodeUnknownResult(Schema.fromJsonString(RubricKey))(keyText).pipe(Result.mapError((e) => fail(options.key, [e.message])))
        )
        const all: Array<Rating> = []
        const problems: Array<string> = []
        for (const sheet of options.sheets) {
          const r = yield* readSheet(sheet, key)
          all.push(...r.ratings)
          problems.push(...r.problems)
        }
        problems.push(...duplicateRatings(all))
        if (problems.length > 0) return yield* fail(options.sheets.join(", "), problems)
        if (all.length === 0) return yield* fail(options.sheets.join(", "), ["no ratings found"])
        return summarize(all, key)
      })

      return Rubric.of({ exportSheet, importSheets })
    })
  )
}

const ci = (x: Interval, digits = 2) =>
  Number.isNaN(x.estimate) ? "–" : `${x.estimate.toFixed(digits)} [${x.low.toFixed(digits)}, ${x.high.toFixed(digits)}]`

/** The import result as Markdown. */
export const rubricMarkdown = (report: RubricReport): string =>
  [
    "# Human evaluation",
    "",
    `Raters: ${report.raters.join(", ")}`,
    "",
    "| system | ratings | clarity | correctness | number accuracy | risk flag present |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
    ...report.systems.map((s) =>
      `| ${s.system} | ${s.ratings} | ${ci(s.clarity)} | ${ci(s.correctness)} | ${ci(s.number_accuracy)} | ${ci(s.risk_flag)} |`
    ),
    "",
    "Means with 95% bootstrap intervals; the risk flag as a share with a 95% Wilson interval.",
    "",
    report.agreement === undefined
      ? "Inter-rater agreement: needs at least two raters on the same rows."
      : `Inter-rater agreement (Krippendorff's alpha): clarity ${report.agreement.clarity.toFixed(3)}, correctness ${report.agreement.correctness.toFixed(3)}, number accuracy ${report.agreement.number_accuracy.toFixed(3)} (ordinal); risk flag ${report.agreement.risk_flag.toFixed(3)} (nominal).`,
    ""
  ].join("\n")
