/**
 * Scheduled batch evaluations: run an evaluation job on a schedule (`Schedule.cron` or `Schedule.fixed`), record
 * every run in the RunHistory database, and flag regressions.
 *
 * - Never overlapping: runs are sequential by construction (`Effect.repeat` waits for each run), a second trigger
 *   in the same process while one runs is skipped, and a run still `running` in the database under a live
 *   process (another scheduler on the same database) makes this tick skip too. Skips are logged.
 * - A failed run (error or defect) is recorded as failed with its message, and the schedule goes on.
 * - Regression: a headline metric dropping by more than `margin` (on 0–1 scales; BLEU is divided by 100) against
 *   the previous succeeded run, or against the pinned baseline, is logged as a warning and stored with the run.
 *   `check` (the `eval check` command) reports the latest run's regressions so a script can fail on them.
 */
import { Cause, Context, Effect, Layer, Option, Schema, Semaphore } from "effect"
import type * as Schedule from "effect/Schedule"
import packageJson from "../../package.json" with { type: "json" }
import { type Regression, RunHistory, type RunRow } from "./RunHistory.ts"
import type { ErrorKind } from "../Shared/Errors.ts"
import { headlineMetrics, lowerIsBetter } from "./RunFiles.ts"

export class RegressionDetected extends Schema.TaggedError<RegressionDetected>()("RegressionDetected", {
  runId: Schema.Int,
  comparedTo: Schema.Int,
  regressions: Schema.Array(Schema.Struct({ metric: Schema.String, reference: Schema.Finite, current: Schema.Finite, drop: Schema.Finite }))
}) {
  get kind(): ErrorKind {
    return "threshold"
  }
  override get message() {
    return `run ${this.runId} regressed against run ${this.comparedTo}: ` +
      this.regressions.map((r) => `${r.metric} ${r.reference.toFixed(4)} -> ${r.current.toFixed(4)} (drop ${r.drop.toFixed(4)})`).join("; ")
  }
}

/** `eval check` cannot pass without a run to check: the gate is not met. */
export class NothingToCheck extends Schema.TaggedError<NothingToCheck>()("NothingToCheck", { detail: Schema.String }) {
  get kind(): ErrorKind {
    return "threshold"
  }
  override get message() {
    return this.detail
  }
}

export type RegressionReference = "previous" | "baseline"

export interface RegressionOptions {
  /** largest tolerated drop on a 0–1 scale (default 0.02) */
  readonly margin?: number | undefined
  readonly against?: RegressionReference | undefined
  /** metrics to watch (default: all headline metrics both runs have) */
  readonly metrics?: ReadonlyArray<string> | undefined
}

/** What a job returns: the run's metrics and where its files are (Evaluator.run's result fits). */
export interface JobResult {
  readonly aggregate: { readonly metrics: Readonly<Record<string, number>> }
  readonly outDir: string
}

const unitScale = (metric: string, x: number) => (metric === "bleu" || metric === "sentence_bleu" ? x / 100 : x)

/** Metrics that dropped by more than `margin` from `reference` to `current`. */
export const findRegressions = (
  current: Readonly<Record<string, number>>,
  reference: Readonly<Record<string, number>>,
  options: RegressionOptions = {}
): Array<Regression> => {
  const margin = options.margin ?? 0.02
  const watched = options.metrics ?? headlineMetrics
  const out: Array<Regression> = []
  for (const metric of watched) {
    const cur = current[metric]
    const ref = reference[metric]
    if (cur === undefined || ref === undefined) continue
    const change = unitScale(metric, cur) - unitScale(metric, ref)
    const drop = lowerIsBetter.has(metric) ? change : -change
    if (drop > margin + 1e-12) out.push({ metric, reference: ref, current: cur, drop })
  }
  return out
}

export class EvalScheduler extends Context.Service<EvalScheduler, {
  /** One recorded run. Returns the run's row (failed runs too); skips (returns None) while another run is active. */
  runOnce<E, R>(
    job: Effect.Effect<JobResult, E, R>,
    config: Record<string, unknown>,
    options?: RegressionOptions
  ): Effect.Effect<Option.Option<RunRow>, never, R>
  /** `runOnce` on a schedule, forever (or until the schedule ends). */
  runScheduled<E, R, SE, SR>(
    job: Effect.Effect<JobResult, E, R>,
    schedule: Schedule.Schedule<unknown, unknown, SE, SR>,
    config: Record<string, unknown>,
    options?: RegressionOptions
  ): Effect.Effect<void, SE, R | SR>
  /** The latest succeeded run against its reference; fails with RegressionDetected when it regressed. */
  check(options?: RegressionOptions): Effect.Effect<{ run: RunRow; reference: RunRow; regressions: ReadonlyArray<Regression> }, RegressionDetected | NothingToCheck>
}>()("app/Evaluation/EvalScheduler") {
  static readonly layer = Layer.effect(
    EvalScheduler,
    Effect.gen(function*() {
      const history = yield* RunHistory
      const guard = yield* Semaphore.make(1)
      // history errors are environment failures (disk, locked DB): they end the schedule loudly as defects
      const h = <A>(e: Effect.Effect<A, unknown>) => Effect.orDie(e)

      const reference = (options: RegressionOptions, beforeId: number) =>
        options.against === "baseline" ? history.baseline() : history.previousSucceeded(beforeId)

      const runOnce = <E, R>(job: Effect.Effect<JobResult, E, R>, config: Record<string, unknown>, options: RegressionOptions = {}) =>
        Effect.gen(function*() {
          const other = yield* h(history.running())
          if (other !== undefined) {
            yield* Effect.logWarning(`skipping this tick: run ${other.id} (pid ${other.pid}) is still running`)
            return Option.none<RunRow>()
          }
          const id = yield* h(history.start(config, { package: packageJson.version, node: process.version }))
          yield* Effect.logInfo(`evaluation run ${id} started`)
          const exit = yield* Effect.exit(job)
          if (exit._tag === "Failure") {
            const reason = Cause.pretty(exit.cause).split("\n")[0] ?? "failed"
            yield* h(history.fail(id, reason))
            yield* Effect.logError(`evaluation run ${id} failed: ${reason}`)
            return Option.some((yield* h(history.get(id)))!)
          }
          const ref = yield* h(reference(options, id))
          const regressions = ref?.metrics ? findRegressions(exit.value.aggregate.metrics, ref.metrics, options) : []
          yield* h(history.succeed(id, {
            metrics: { ...exit.value.aggregate.metrics },
            outDir: exit.value.outDir,
            regressions,
            comparedTo: ref?.id ?? null
          }))
          if (regressions.length > 0) {
            yield* Effect.logWarning(new RegressionDetected({ runId: id, comparedTo: ref!.id, regressions }).message)
          } else yield* Effect.logInfo(`evaluation run ${id} succeeded${ref ? ` (no regression against run ${ref.id})` : ""}`)
          return Option.some((yield* h(history.get(id)))!)
        }).pipe(
          guard.withPermitsIfAvailable(1),
          Effect.flatMap((o) =>
            Option.isSome(o)
              ? Effect.succeed(o.value)
              : Effect.logWarning("skipping this tick: the previous evaluation is still running").pipe(Effect.as(Option.none<RunRow>()))
          )
        )

      const runScheduled = <E, R, SE, SR>(
        job: Effect.Effect<JobResult, E, R>,
        schedule: Schedule.Schedule<unknown, unknown, SE, SR>,
        config: Record<string, unknown>,
        options: RegressionOptions = {}
      ) => runOnce(job, config, options).pipe(Effect.repeat(schedule), Effect.asVoid)

      const check = Effect.fn("EvalScheduler.check")(function*(options: RegressionOptions = {}) {
        const run = yield* h(history.previousSucceeded())
        if (run === undefined) return yield* new NothingToCheck({ detail: `no succeeded run in ${history.database}` })
        const ref = yield* h(reference(options, run.id))
        if (ref === undefined || ref.id === run.id) {
          return yield* new NothingToCheck({
            detail: options.against === "baseline"
              ? "no baseline is pinned (eval history --pin <id>), or the latest run is the baseline"
              : `run ${run.id} is the only succeeded run; nothing to compare it with`
          })
        }
        const regressions = findRegressions(run.metrics ?? {}, ref.metrics ?? {}, options)
        if (regressions.length > 0) return yield* new RegressionDetected({ runId: run.id, comparedTo: ref.id, regressions })
        return { run, reference: ref, regressions }
      })

      return EvalScheduler.of({ runOnce, runScheduled, check })
    })
  )
}
