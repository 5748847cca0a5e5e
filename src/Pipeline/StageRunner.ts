/**
 * The generic stage runner: one per run folder. It owns `run.json` (the manifest), the caching, `--force`, resume,
 * per-stage timings and the uniform StageFailed error, so a stage only says what it is (src/Shared/Stage.ts).
 *
 * Caching: a stage's key is the SHA-256 of its name, the release, its settings, its input files' identity and the
 * keys of the stages it reads. `run.json` records each finished stage with its key and its result, encoded with the
 * stage's Schema. A later run skips a stage whose key matches, whose recorded result decodes with that Schema and
 * whose output files exist; anything else runs again. `--force STAGE` redoes that stage and every later one. A stage
 * interrupted (Ctrl-C, kill) is still `running` in `run.json` and resumes on the next run of the same key.
 */
import { Cause, Effect, FileSystem, Option, Path, Schema } from "effect"
import * as nodeFs from "node:fs"
import * as os from "node:os"
import { causeKind, describeCause } from "../Shared/Errors.ts"
import { type Stage, StageFailed } from "../Shared/Stage.ts"
import { canonicalJson, sha256 } from "./PipelineConfig.ts"

export { StageFailed }

export const StageRecord = Schema.Struct({
  status: Schema.Literals(["running", "done", "failed", "skipped"]),
  key: Schema.String,
  startedAt: Schema.String,
  finishedAt: Schema.optionalKey(Schema.String),
  seconds: Schema.optionalKey(Schema.Finite),
  /** CPU time of the process during the stage (all threads): comparable across runs on a shared machine */
  cpuSeconds: Schema.optionalKey(Schema.Finite),
  error: Schema.optionalKey(Schema.String),
  /** the stage's result, encoded with its Schema (decoded with it again before it is reused) */
  result: Schema.optionalKey(Schema.Unknown)
})
export type StageRecord = typeof StageRecord.Type

export const Invocation = Schema.Literals(["ran", "cached", "not-applicable"])
export type Invocation = typeof Invocation.Type

export const RunManifest = Schema.Struct({
  manifestVersion: Schema.Literal(1),
  status: Schema.Literals(["running", "done", "failed", "interrupted"]),
  startedAt: Schema.String,
  finishedAt: Schema.optionalKey(Schema.String),
  configSha256: Schema.String,
  versions: Schema.Record(Schema.String, Schema.String),
  machine: Schema.Record(Schema.String, Schema.Unknown),
  stages: Schema.Record(Schema.String, StageRecord),
  /** what this invocation did per stage: ran, or skipped (cached) */
  lastInvocation: Schema.Record(Schema.String, Invocation),
  artifacts: Schema.Record(Schema.String, Schema.String)
})
export type RunManifest = typeof RunManifest.Type

/** Any failure of stage `stage` as the uniform StageFailed, of the original error's kind (unclassified: failure). */
export const toStageFailed = (stage: string) => (error: unknown): StageFailed =>
  error instanceof StageFailed ? error : new StageFailed({ stage, detail: describeCause(error), kind: causeKind(error) ?? "failure" })

/**
 * A file's identity for a cache key: small files by content; a user's model (many GiB) by size and mtime; a folder
 * (an HF model) by its entries' sizes and mtimes. A file that cannot be read is the user's input error.
 */
export const fileIdentity = (stage: string, file: string): Effect.Effect<Record<string, unknown>, StageFailed> =>
  Effect.try({
    try: () => {
      const stat = nodeFs.statSync(file)
      if (stat.isDirectory()) {
        return Object.fromEntries(nodeFs.readdirSync(file).sort().map((f) => {
          const s = nodeFs.statSync(`${file}/${f}`)
          return [f, `${s.size}:${s.mtimeMs}`]
        }))
      }
      return stat.size < 256 * 2 ** 20 ? { sha256: sha256(nodeFs.readFileSync(file)) } : { size: stat.size, mtimeMs: stat.mtimeMs }
    },
    catch: (e) => {
      // a Node errno error's message repeats the path and the syscall: its code says it in words
      const code = typeof e === "object" && e !== null && "code" in e && typeof e.code === "string" ? e.code : undefined
      return new StageFailed({ stage, detail: `${file}: ${describeCause(code === undefined ? e : { code })}`, kind: causeKind(e) ?? "input" })
    }
  })

export interface StageRunnerOptions {
  readonly runDir: string
  /** every stage name in run order: `force` redoes that stage and every later one */
  readonly order: ReadonlyArray<string>
  readonly force?: string | undefined
  readonly configSha256: string
  /** recorded in run.json; `keyVersion` (the release) also enters every key, so a new release recomputes */
  readonly versions: Readonly<Record<string, string>>
  readonly keyVersion: string
}

export interface StageRunner {
  /** The stage's result: recorded and still valid, or produced now (and recorded). */
  readonly run: <In, A, E, R>(stage: Stage<In, A, E, R>, input: In) => Effect.Effect<A, StageFailed, R>
  /** Records the run's artifacts (before the stage that reports them) */
  readonly setArtifacts: (artifacts: Readonly<Record<string, string>>) => void
  /** Marks the run done and writes run.json a last time. */
  readonly finish: Effect.Effect<RunManifest, StageFailed>
  /** The manifest as it stands. */
  readonly manifest: () => RunManifest
  readonly keyOf: (stage: string) => string | undefined
}

const now = () => new Date().toISOString()

/** run.json: the earlier run's stages (when it decodes), and an atomic save of the manifest as it stands. */
const openManifest = Effect.fn("StageRunner.openManifest")(function*(options: StageRunnerOptions) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const manifestPath = path.join(options.runDir, "run.json")
  yield* fs.makeDirectory(options.runDir, { recursive: true }).pipe(Effect.mapError(toStageFailed("setup")))
  // a corrupt or older manifest is ignored: every stage reruns
  const previous = yield* fs.readFileString(manifestPath).pipe(
    Effect.flatMap((text) => Schema.decodeUnknownEffect(Schema.fromJsonString(RunManifest))(text)),
    Effect.option
  )
  const manifest = {
    manifestVersion: 1 as const,
    status: "running" as RunManifest["status"],
    startedAt: now(),
    configSha256: options.configSha256,
    versions: { ...options.versions },
    machine: { platform: process.platform, arch: process.arch, cpus: os.cpus().length, memoryBytes: os.totalmem() },
    stages: { ...(Option.isSome(previous) ? previous.value.stages : {}) } as Record<string, StageRecord>,
    lastInvocation: {} as Record<string, Invocation>,
    artifacts: {} as Record<string, string>
  }
  let finishedAt: string | undefined
  const snapshot = (): RunManifest => ({ ...manifest, ...(finishedAt === undefined ? {} : { finishedAt }) })
  const save = Effect.suspend(() =>
    fs.writeFileString(`${manifestPath}.tmp`, JSON.stringify(snapshot(), null, 2) + "\n").pipe(
      Effect.andThen(fs.rename(`${manifestPath}.tmp`, manifestPath)),
      Effect.mapError(toStageFailed("manifest"))
    )
  )
  const finish = Effect.suspend(() => {
    manifest.status = "done"
    finishedAt = now()
    return save.pipe(Effect.as(snapshot()))
  })
  yield* save
  return { manifest, snapshot, save, finish }
})

export const makeStageRunner = Effect.fn("StageRunner.make")(function*(options: StageRunnerOptions) {
  const fs = yield* FileSystem.FileSystem
  const { manifest, snapshot, save, finish } = yield* openManifest(options)

  const keys = new Map<string, string>()
  const forceFrom = options.force === undefined ? options.order.length : options.order.indexOf(options.force)
  const isForced = (name: string) => {
    const at = options.order.indexOf(name)
    return at >= 0 && at >= forceFrom
  }

  const keyOf = <In, A, E, R>(stage: Stage<In, A, E, R>, input: In) =>
    Effect.gen(function*() {
      const files: Record<string, unknown> = {}
      for (const [label, file] of Object.entries(stage.inputFiles(input))) files[label] = yield* fileIdentity(stage.name, file)
      const reads = Object.fromEntries(stage.reads.map((name) => [name, keys.get(name) ?? null]))
      return sha256(canonicalJson({ stage: stage.name, version: options.keyVersion, inputs: { settings: stage.settings(input), files, reads } }))
    })

  /** the recorded result when it is still valid: same key, decodes with the stage's Schema, outputs present */
  const cached = <In, A, E, R>(stage: Stage<In, A, E, R>, input: In, key: string) =>
    Effect.gen(function*() {
      const prior = manifest.stages[stage.name]
      if (isForced(stage.name) || prior?.status !== "done" || prior.key !== key || prior.result === undefined) return Option.none<A>()
      const decoded = yield* Schema.decodeUnknownEffect(stage.result)(prior.result).pipe(Effect.option)
      if (Option.isNone(decoded)) {
        yield* Effect.logInfo(`[${stage.name}] the recorded result does not match this version's schema: running again`)
        return decoded
      }
      const missing: Array<string> = []
      for (const file of stage.outputFiles(decoded.value, input)) if (!(yield* fs.exists(file).pipe(Effect.orElseSucceed(() => false)))) missing.push(file)
      if (missing.length > 0) {
        yield* Effect.logInfo(`[${stage.name}] outputs missing (${missing[0]}): running again`)
        return Option.none<A>()
      }
      return decoded
    })

  const run = <In, A, E, R>(stage: Stage<In, A, E, R>, input: In): Effect.Effect<A, StageFailed, R> =>
    Effect.gen(function*() {
      const name = stage.name
      const key = yield* keyOf(stage, input)
      keys.set(name, key)
      const hit = yield* cached(stage, input, key)
      if (Option.isSome(hit)) {
        manifest.lastInvocation[name] = "cached"
        yield* Effect.logInfo(`[${name}] up to date (cached): skipped`)
        return hit.value
      }
      // an interrupted or failed run of the same key may resume from what it left; anything else starts clean
      const prior = manifest.stages[name]
      const resume = !isForced(name) && prior !== undefined && prior.key === key && prior.status !== "done"
      if (!resume) {
        for (const dir of stage.workDirs(input)) yield* fs.remove(dir, { recursive: true, force: true }).pipe(Effect.mapError(toStageFailed(name)))
      }
      const startedAt = now()
      const started = performance.now()
      const cpuStart = process.cpuUsage()
      manifest.stages[name] = { status: "running", key, startedAt }
      manifest.lastInvocation[name] = "ran"
      yield* save
      yield* Effect.logInfo(`[${name}] ${resume ? "resuming" : "running"}`)
      const result = yield* stage.run(input, { resume }).pipe(
        Effect.catchCause((cause): Effect.Effect<never, StageFailed> =>
          // interruption is not a failure: it propagates, and run.json keeps the stage "running" so it resumes
          Cause.hasInterruptsOnly(cause) ? Effect.failCause(cause as Cause.Cause<never>) : Effect.fail(toStageFailed(name)(Cause.squash(cause)))
        ),
        Effect.onInterrupt(() => {
          manifest.status = "interrupted"
          return save.pipe(Effect.ignore)
        }),
        Effect.tapError((e: StageFailed) => {
          manifest.stages[name] = { status: "failed", key, startedAt, finishedAt: now(), error: e.detail }
          manifest.status = "failed"
          return save.pipe(Effect.ignore)
        })
      )
      const encoded = yield* Schema.encodeUnknownEffect(stage.result)(result).pipe(Effect.mapError(toStageFailed(name)))
      const seconds = (performance.now() - started) / 1000
      const cpu = process.cpuUsage(cpuStart)
      manifest.stages[name] = { status: "done", key, startedAt, finishedAt: now(), seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, result: encoded }
      yield* save
      yield* Effect.logInfo(`[${name}] done in ${seconds.toFixed(1)} s`)
      return result
    })

  return {
    run,
    setArtifacts: (artifacts) => {
      manifest.artifacts = { ...artifacts }
    },
    finish,
    manifest: snapshot,
    keyOf: (name) => keys.get(name)
  } satisfies StageRunner
})
