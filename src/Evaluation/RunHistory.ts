/**
 * The record of scheduled (and manual) evaluation runs, in an embedded SQLite database through Node's built-in
 * `node:sqlite` (SQLite itself, shipped with Node 22.5+; no native add-on to build).
 *
 * One row per run: when it started and finished (from Effect's Clock, so tests drive it with TestClock), its
 * status (`running`, `succeeded`, `failed`), the configuration and versions it ran with, its aggregate metrics,
 * where its files are, the error of a failed run, and the regressions found against the previous run or the pinned
 * baseline. A run left `running` by a process that no longer exists is marked failed when the database is opened,
 * so a crash is recorded, not lost.
 */
import { Clock, Context, Effect, Layer, Schema } from "effect"
import { existsSync, mkdirSync } from "node:fs"
import { dirname } from "node:path"
import { DatabaseSync } from "node:sqlite"
import { causeKind, describeCause, kindField } from "../Shared/Errors.ts"

export class HistoryError extends Schema.TaggedError<HistoryError>()("HistoryError", {
  database: Schema.String,
  detail: Schema.String,
  /** `failure` (SQLite failed), `input` (no such history, a run id that cannot be pinned) */
  kind: kindField("failure")
}) {
  override get message() {
    return `${this.database}: ${this.detail}`
  }
}

export type RunStatus = "running" | "succeeded" | "failed"

export interface Regression {
  readonly metric: string
  readonly reference: number
  readonly current: number
  /** the drop on the metric's 0–1 scale (BLEU divided by 100) */
  readonly drop: number
}

export interface RunRow {
  readonly id: number
  readonly startedAt: number
  readonly finishedAt: number | null
  readonly status: RunStatus
  readonly config: Readonly<Record<string, unknown>>
  readonly versions: Readonly<Record<string, unknown>>
  readonly metrics: Readonly<Record<string, number>> | null
  readonly outDir: string | null
  readonly error: string | null
  readonly regressions: ReadonlyArray<Regression>
  readonly comparedTo: number | null
  readonly baseline: boolean
  readonly pid: number
}

const schemaSql = `
CREATE TABLE IF NOT EXISTS eval_runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  started_at INTEGER NOT NULL,
  finished_at INTEGER,
  status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
  config TEXT NOT NULL,
  versions TEXT NOT NULL,
  metrics TEXT,
  out_dir TEXT,
  error TEXT,
  regressions TEXT NOT NULL DEFAULT '[]',
  compared_to INTEGER,
  baseline INTEGER NOT NULL DEFAULT 0,
  pid INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS eval_runs_status ON eval_runs (status);
`

const toRow = (r: Record<string, unknown>): RunRow => ({
  id: Number(r.id),
  startedAt: Number(r.started_at),
  finishedAt: r.finished_at === null ? null : Number(r.finished_at),
  status: r.status as RunStatus,
  config: JSON.parse(String(r.config)),
  versions: JSON.parse(String(r.versions)),
  metrics: r.metrics === null ? null : JSON.parse(String(r.metrics)),
  outDir: (r.out_dir as string | null) ?? null,
  error: (r.error as string | null) ?? null,
  regressions: JSON.parse(String(r.regressions)),
  comparedTo: r.compared_to === null ? null : Number(r.compared_to),
  baseline: Number(r.baseline) === 1,
  pid: Number(r.pid)
})

const processAlive = (pid: number) => {
  if (pid === process.pid) return true
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    // EPERM: it exists but belongs to someone else
    return (e as NodeJS.ErrnoException).code === "EPERM"
  }
}

export class RunHistory extends Context.Service<RunHistory, {
  readonly database: string
  start(config: Record<string, unknown>, versions: Record<string, unknown>): Effect.Effect<number, HistoryError>
  succeed(id: number, result: { metrics: Record<string, number>; outDir: string; regressions: ReadonlyArray<Regression>; comparedTo: number | null }): Effect.Effect<void, HistoryError>
  fail(id: number, error: string): Effect.Effect<void, HistoryError>
  get(id: number): Effect.Effect<RunRow | undefined, HistoryError>
  list(limit?: number): Effect.Effect<ReadonlyArray<RunRow>, HistoryError>
  /** the latest succeeded run before `id` (or the latest overall) */
  previousSucceeded(beforeId?: number): Effect.Effect<RunRow | undefined, HistoryError>
  /** a run in progress by a live process, if any */
  running(): Effect.Effect<RunRow | undefined, HistoryError>
  pinBaseline(id: number): Effect.Effect<void, HistoryError>
  baseline(): Effect.Effect<RunRow | undefined, HistoryError>
}>()("app/Evaluation/RunHistory") {
  /**
   * Opens the history in `database`. `create` (the default, for `eval schedule`) makes the file and its folder when
   * they do not exist; without it (`eval history`, `eval check`) a missing file is an `input` error and no file is
   * left behind.
   */
  static readonly layer = (database: string, options: { readonly create?: boolean } = {}) =>
    Layer.effect(
      RunHistory,
      Effect.gen(function*() {
        const fail = (e: unknown) => new HistoryError({ database, detail: describeCause(e), kind: causeKind(e) ?? "failure" })
        const inMemory = database === ":memory:"
        if (options.create === false && !inMemory && !existsSync(database)) {
          return yield* new HistoryError({ database, detail: "no run history here (eval schedule --db creates it)", kind: "input" })
        }
        const db = yield* Effect.acquireRelease(
          Effect.try({
            try: () => {
              if (!inMemory) mkdirSync(dirname(database), { recursive: true })
              const d = new DatabaseSync(database)
              d.exec("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;")
              d.exec(schemaSql)
              return d
            },
            catch: fail
          }),
          (d) => Effect.sync(() => d.close())
        )
        const sql = <A>(f: () => A) => Effect.try({ try: f, catch: fail })
        const now = Clock.currentTimeMillis

        // runs whose process died mid-run are failures, not eternal "running" rows
        const stale = yield* sql(() => db.prepare("SELECT id, pid FROM eval_runs WHERE status = 'running'").all())
        for (const r of stale) {
          if (!processAlive(Number(r.pid))) {
            const t = yield* now
            yield* sql(() =>
              db.prepare("UPDATE eval_runs SET status = 'failed', finished_at = ?, error = ? WHERE id = ?")
                .run(t, `interrupted: process ${r.pid} ended before the run finished`, Number(r.id))
            )
          }
        }

        const get = (id: number) =>
          sql(() => {
            const r = db.prepare("SELECT * FROM eval_runs WHERE id = ?").get(id)
            return r === undefined ? undefined : toRow(r)
          })

        return RunHistory.of({
          database,
          start: Effect.fn("RunHistory.start")(function*(config, versions) {
            const t = yield* now
            const r = yield* sql(() =>
              db.prepare("INSERT INTO eval_runs (started_at, status, config, versions, pid) VALUES (?, 'running', ?, ?, ?)")
                .run(t, JSON.stringify(config), JSON.stringify(versions), process.pid)
            )
            return Number(r.lastInsertRowid)
          }),
          succeed: Effect.fn("RunHistory.succeed")(function*(id, result) {
            const t = yield* now
            yield* sql(() =>
              db.prepare(
                "UPDATE eval_runs SET status = 'succeeded', finished_at = ?, metrics = ?, out_dir = ?, regressions = ?, compared_to = ? WHERE id = ?"
              ).run(t, JSON.stringify(result.metrics), result.outDir, JSON.stringify(result.regressions), result.comparedTo, id)
            )
          }),
          fail: Effect.fn("RunHistory.fail")(function*(id, error) {
            const t = yield* now
            yield* sql(() => db.prepare("UPDATE eval_runs SET status = 'failed', finished_at = ?, error = ? WHERE id = ?").run(t, error, id))
          }),
          get,
          list: (limit = 50) => sql(() => db.prepare("SELECT * FROM eval_runs ORDER BY id DESC LIMIT ?").all(limit).map(toRow)),
          previousSucceeded: (beforeId) =>
            sql(() => {
              const r = beforeId === undefined
                ? db.prepare("SELECT * FROM eval_runs WHERE status = 'succeeded' ORDER BY id DESC LIMIT 1").get()
                : db.prepare("SELECT * FROM eval_runs WHERE status = 'succeeded' AND id < ? ORDER BY id DESC LIMIT 1").get(beforeId)
              return r === undefined ? undefined : toRow(r)
            }),
          running: () =>
            sql(() =>
              db.prepare("SELECT * FROM eval_runs WHERE status = 'running' ORDER BY id DESC").all().map(toRow).find((r) => processAlive(r.pid))
            ),
          pinBaseline: Effect.fn("RunHistory.pinBaseline")(function*(id) {
            const row = yield* get(id)
            if (row === undefined || row.status !== "succeeded") {
              return yield* new HistoryError({ database, detail: `run ${id} does not exist or did not succeed; only succeeded runs can be the baseline`, kind: "input" })
            }
            yield* sql(() => {
              db.exec("BEGIN")
              db.prepare("UPDATE eval_runs SET baseline = 0 WHERE baseline = 1").run()
              db.prepare("UPDATE eval_runs SET baseline = 1 WHERE id = ?").run(id)
              db.exec("COMMIT")
            })
          }),
          baseline: () =>
            sql(() => {
              const r = db.prepare("SELECT * FROM eval_runs WHERE baseline = 1 LIMIT 1").get()
              return r === undefined ? undefined : toRow(r)
            })
        })
      })
    )
}
