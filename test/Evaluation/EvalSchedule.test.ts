/** Scheduled evaluations under Effect's TestClock, recorded in a real SQLite file (node:sqlite). */
import { assert, describe, it } from "@effect/vitest"
import { Cron, Effect, Fiber, Layer, Option, Ref, Result, Schedule } from "effect"
import { TestClock } from "effect/testing"
import { mkdtempSync } from "node:fs"
import { DatabaseSync } from "node:sqlite"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { EvalScheduler, findRegressions, type JobResult } from "../../src/Evaluation/EvalScheduler.ts"
import { RunHistory } from "../../src/Evaluation/RunHistory.ts"

const dbFile = () => join(mkdtempSync(join(tmpdir(), "eval-history-")), "history.sqlite")
const layerFor = (db: string) => EvalScheduler.layer.pipe(Layer.provideMerge(RunHistory.layer(db)))

/** A job that takes `minutes` of (test) time and then yields the next scripted outcome. */
const scriptedJob = (outcomes: Ref.Ref<Array<number | "fail">>, minutes: number): Effect.Effect<JobResult, string> =>
  Effect.gen(function*() {
    yield* Effect.sleep(`${minutes} minutes`)
    const [next, ...rest] = yield* Ref.get(outcomes)
    yield* Ref.set(outcomes, rest)
    if (next === "fail" || next === undefined) return yield* Effect.fail("generator unreachable")
    return { aggregate: { metrics: { rougeL: next, bleu: next * 100, factuality: 0.9 } }, outDir: `/runs/${next}` }
  })

describe("findRegressions", () => {
  it("flags drops beyond the margin on 0–1 scales (BLEU /100), respecting lower-is-better metrics", () => {
    const r = findRegressions(
      { bleu: 40, rougeL: 0.49, factuality: 0.8, unneeded_disclaimer_rate: 0.2 },
      { bleu: 45, rougeL: 0.5, factuality: 0.9, unneeded_disclaimer_rate: 0.1 },
      { margin: 0.02 }
    )
    assert.deepStrictEqual(r.map((x) => x.metric), ["bleu", "factuality", "unneeded_disclaimer_rate"])
    assert.approximately(r[0]!.drop, 0.05, 1e-12)
  })
})

describe("EvalScheduler", () => {
  it.effect("runs every hour under the TestClock, records failures and flags a regression", () => {
    const db = dbFile()
    return Effect.gen(function*() {
      const outcomes = yield* Ref.make<Array<number | "fail">>([0.5, "fail", 0.45, 0.5])
      const scheduler = yield* EvalScheduler
      const fiber = yield* scheduler.runScheduled(scriptedJob(outcomes, 10), Schedule.fixed("1 hour"), { split: "test.jsonl" }, { margin: 0.02 }).pipe(
        Effect.forkChild
      )
      yield* TestClock.adjust("200 minutes")
      const rows = [...(yield* (yield* RunHistory).list())].reverse()
      yield* Fiber.interrupt(fiber)

      assert.deepStrictEqual(rows.map((r) => r.status), ["succeeded", "failed", "succeeded", "succeeded"])
      // Schedule.fixed keeps an hourly cadence from the end of the first run
      assert.deepStrictEqual(rows.map((r) => r.startedAt / 60_000), [0, 70, 130, 190])
      assert.deepStrictEqual(rows.map((r) => r.finishedAt! / 60_000), [10, 80, 140, 200])
      assert.strictEqual(rows[1]!.error, "Error: generator unreachable")
      assert.deepStrictEqual(rows[2]!.regressions.map((r) => r.metric), ["bleu", "rougeL"])
      assert.strictEqual(rows[2]!.comparedTo, rows[0]!.id)
      assert.deepStrictEqual(rows[3]!.regressions, [])
      assert.strictEqual(rows[3]!.outDir, "/runs/0.5")
      assert.deepStrictEqual(rows[0]!.config, { split: "test.jsonl" })
      assert.strictEqual(rows[0]!.metrics!.rougeL, 0.5)
    }).pipe(Effect.provide(layerFor(db)))
  })

  it.effect("never overlaps runs: a 90-minute run on an hourly schedule delays the next one", () => {
    const db = dbFile()
    return Effect.gen(function*() {
      const outcomes = yield* Ref.make<Array<number | "fail">>([0.5, 0.5, 0.5, 0.5])
      const scheduler = yield* EvalScheduler
      const fiber = yield* scheduler.runScheduled(scriptedJob(outcomes, 90), Schedule.fixed("1 hour"), {}).pipe(Effect.forkChild)
      yield* TestClock.adjust("4 hours")
      // a manual trigger while a scheduled run is active is skipped, not run alongside
      const manual = yield* scheduler.runOnce(scriptedJob(outcomes, 1), {})
      const rows = [...(yield* (yield* RunHistory).list())].reverse()
      yield* Fiber.interrupt(fiber)

      assert.isTrue(Option.isNone(manual))
      // each run starts only after the previous one finished (90 minutes later at the earliest)
      assert.deepStrictEqual(rows.map((r) => r.status), ["succeeded", "succeeded", "running"])
      for (let i = 1; i < rows.length; i++) {
        assert.isAtLeast(rows[i]!.startedAt, rows[i - 1]!.finishedAt!)
        assert.strictEqual(rows[i - 1]!.finishedAt! - rows[i - 1]!.startedAt, 90 * 60_000)
      }
    }).pipe(Effect.provide(layerFor(db)))
  })

  it.effect("follows a cron expression", () => {
    const db = dbFile()
    return Effect.gen(function*() {
      const cron = yield* Effect.fromResult(Cron.parse("0 * * * *", "UTC"))
      const outcomes = yield* Ref.make<Array<number | "fail">>([0.5, 0.5, 0.5, 0.5])
      const scheduler = yield* EvalScheduler
      const fiber = yield* scheduler.runScheduled(scriptedJob(outcomes, 5), Schedule.cron(cron), {}).pipe(Effect.forkChild)
      yield* TestClock.adjust("150 minutes")
      const rows = [...(yield* (yield* RunHistory).list())].reverse()
      yield* Fiber.interrupt(fiber)
      assert.deepStrictEqual(rows.map((r) => r.startedAt / 3_600_000), [0, 1, 2])
      assert.isTrue(Result.isFailure(Cron.parse("not a cron")))
    }).pipe(Effect.provide(layerFor(db)))
  })

  it.effect("check fails on the latest regression, against the previous run or the pinned baseline", () => {
    const db = dbFile()
    return Effect.gen(function*() {
      const outcomes = yield* Ref.make<Array<number | "fail">>([0.6, 0.55, 0.54])
      const scheduler = yield* EvalScheduler
      const history = yield* RunHistory
      const none = yield* scheduler.check().pipe(Effect.flip)
      assert.strictEqual(none._tag, "NothingToCheck")

      const job = scriptedJob(outcomes, 0)
      const first = yield* scheduler.runOnce(job, {})
      yield* history.pinBaseline(Option.getOrThrow(first).id)
      yield* scheduler.runOnce(job, {}, { margin: 0.02 })
      const regressed = yield* scheduler.check({ margin: 0.02 }).pipe(Effect.flip)
      assert.strictEqual(regressed._tag, "RegressionDetected")
      assert.include(regressed.message, "rougeL 0.6000 -> 0.5500")

      // the third run is within the margin of the second, but not of the baseline
      yield* scheduler.runOnce(job, {}, { margin: 0.02 })
      const ok = yield* scheduler.check({ margin: 0.02 })
      assert.deepStrictEqual(ok.regressions, [])
      const vsBaseline = yield* scheduler.check({ margin: 0.02, against: "baseline" }).pipe(Effect.flip)
      assert.strictEqual(vsBaseline._tag, "RegressionDetected")
      const failedPin = yield* history.pinBaseline(999).pipe(Effect.flip)
      assert.include(failedPin.message, "only succeeded runs can be the baseline")
    }).pipe(Effect.provide(layerFor(db)))
  })

  it.effect("marks runs of a dead process as failed when the database is opened", () => {
    const db = dbFile()
    return Effect.gen(function*() {
      yield* Effect.gen(function*() {
        yield* (yield* RunHistory).start({}, {})
      }).pipe(Effect.provide(RunHistory.layer(db)))
      const raw = new DatabaseSync(db)
      raw.prepare("UPDATE eval_runs SET pid = ?").run(2 ** 22 + 12345)
      raw.close()
      const rows = yield* Effect.gen(function*() {
        return yield* (yield* RunHistory).list()
      }).pipe(Effect.provide(RunHistory.layer(db)))
      assert.strictEqual(rows[0]!.status, "failed")
      assert.include(rows[0]!.error!, "interrupted")
    })
  })
})
