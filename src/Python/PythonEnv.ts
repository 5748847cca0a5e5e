/**
 * PythonEnv: the interpreter the Python side (oracle tests, later the PyTorch engine) runs on.
 *
 * Resolution: `--python PATH` (the layer's `python` option), then `FINETUNE_PYTHON`, then the managed `.venv`
 * at the project root, made from `python/requirements.lock` when absent or stale. A user's own interpreter is
 * accepted with any versions and judged against the ranges in `python/pyproject.toml` (lines, not failures);
 * the managed one must match its lock exactly. Every failure is a `PythonEnvError` whose message says what to
 * do; nothing here prints (progress goes through `Progress` when the caller provides one).
 *
 * Managed creation: uv (pinned, hash-checked, from PyPI) is installed once into `.cache/python-tools/` with the
 * base interpreter's pip, then `uv venv .venv` and `uv pip sync --require-hashes python/requirements.lock`.
 * The local package `python/` goes on the venv's path with a `.pth` file (what an editable install does,
 * without fetching a build backend that the hashed lock does not cover). A stamp in `.venv` holds the hash of
 * the lock and pyproject it was made from, so a changed lock is re-synced on the next `ensure`.
 */
import { NodeServices } from "@effect/platform-node"
import { Context, Duration, Effect, FileSystem, Layer, Option, Schema, Stream } from "effect"
import { ChildProcess, ChildProcessSpawner } from "effect/process"
import { createHash } from "node:crypto"
import { existsSync } from "node:fs"
import { delimiter, dirname, isAbsolute, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import type { ErrorKind } from "../Shared/Errors.ts"
import { Progress } from "../Shared/Progress.ts"

export class PythonRuntime extends Schema.Class<PythonRuntime>("PythonRuntime")({
  /** absolute path of the interpreter to spawn */
  executable: Schema.String,
  /** .venv made from the lock | --python PATH | FINETUNE_PYTHON */
  source: Schema.Literals(["managed", "flag", "env"]),
  pythonVersion: Schema.String,
  /** name -> version found, for the packages pyproject.toml declares */
  packages: Schema.Record(Schema.String, Schema.String),
  /** human lines: "torch 2.3.0 is outside >=2.5,<3" */
  outOfRange: Schema.Array(Schema.String),
  /** the project's python/ folder: put it on PYTHONPATH to import finetune_finance_py from any interpreter */
  packageRoot: Schema.String,
  /** what ensure did: reused a ready env, or created / re-synced the managed one */
  action: Schema.Literals(["reused", "created", "resynced", "external"])
}) {}

export class PythonEnvError extends Schema.TaggedError<PythonEnvError>()("PythonEnvError", {
  reason: Schema.Literals(["NoPython", "TooOld", "NoRegistry", "LockMismatch", "NotPython", "InstallFailed"]),
  message: Schema.String
}) {
  /** Every set-up problem the user fixes (Python, network, lock, --python) exits 1; a failed install is a failure (3). */
  get kind(): ErrorKind {
    return this.reason === "InstallFailed" ? "failure" : "input"
  }
}

/** The uv that makes the managed env; python/uv-requirements.txt pins it with hashes. */
export const uvVersion = "0.13.9"
export const minimumPython: readonly [number, number] = [3, 10]

/** The project root: two folders up from this file, in src/Python and in dist/Python alike. */
export const defaultProjectRoot = (): string => resolve(dirname(fileURLToPath(import.meta.url)), "..", "..")

export const managedPaths = (projectRoot: string) => ({
  venv: join(projectRoot, ".venv"),
  python: join(projectRoot, ".venv", "bin", "python"),
  stamp: join(projectRoot, ".venv", "finetune-finance-stamp.json"),
  tools: join(projectRoot, ".cache", "python-tools", `uv-${uvVersion}`),
  uv: join(projectRoot, ".cache", "python-tools", `uv-${uvVersion}`, "bin", "uv"),
  packageRoot: join(projectRoot, "python"),
  pyproject: join(projectRoot, "python", "pyproject.toml"),
  lock: join(projectRoot, "python", "requirements.lock"),
  uvRequirements: join(projectRoot, "python", "uv-requirements.txt")
})

// ---------------------------------------------------------------------------------------------------------------
// Versions and ranges (the subset of PEP 440 that our ranges and PyPI's release numbers use)

/** A requirement line of pyproject.toml: `torch>=2.5,<3` → name "torch", specifiers [[">=","2.5"],["<","3"]]. */
export interface Requirement {
  readonly name: string
  readonly spec: string
  readonly specifiers: ReadonlyArray<readonly [string, string]>
}

/** PEP 503 name normalization: `Rouge_Score` and `rouge-score` are one package. */
export const normalizeName = (name: string): string => name.toLowerCase().replace(/[-_.]+/g, "-")

export const parseRequirement = (line: string): Requirement | undefined => {
  const match = /^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*((?:[<>=!~]=?\s*[^,\s]+\s*,?\s*)*)$/.exec(line)
  if (match === null) return undefined
  const spec = (match[2] ?? "").replace(/\s+/g, "")
  const specifiers = spec === ""
    ? []
    : spec.split(",").map((part) => {
      const op = /^(~=|==|!=|<=|>=|<|>)/.exec(part)?.[1] ?? "=="
      return [op, part.slice(op.length)] as const
    })
  return { name: normalizeName(match[1]!), spec, specifiers }
}

/** The `dependencies = [...]` of pyproject.toml (one quoted requirement per entry). */
export const parsePyprojectDependencies = (text: string): ReadonlyArray<Requirement> => {
  const block = /^dependencies\s*=\s*\[([\s\S]*?)\]/m.exec(text)?.[1] ?? ""
  return [...block.matchAll(/"([^"]+)"/g)].flatMap((m) => {
    const requirement = parseRequirement(m[1]!)
    return requirement === undefined ? [] : [requirement]
  })
}

/** `name==version` entries of a uv/pip requirements file (a name may appear once per environment marker). */
export const parseLockPins = (text: string): ReadonlyArray<{ readonly name: string; readonly version: string; readonly marker: string }> =>
  [...text.matchAll(/^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\\n]*?))?\s*\\?$/gm)].map((m) => ({
    name: normalizeName(m[1]!),
    version: m[2]!,
    marker: (m[3] ?? "").trim()
  }))

/** Release numbers of a version; a local label (`+cu132`) is ignored, a pre-release sorts before its release. */
const versionKey = (version: string): { release: Array<number>; pre: boolean } => {
  const publicPart = version.split("+")[0]!.trim()
  const release = /^v?(\d+(?:\.\d+)*)/.exec(publicPart)?.[1] ?? "0"
  return { release: release.split(".").map(Number), pre: /(a|b|rc|dev|alpha|beta|c)\d*/i.test(publicPart.slice(release.length)) }
}

export const compareVersions = (a: string, b: string): number => {
  const ka = versionKey(a)
  const kb = versionKey(b)
  for (let i = 0; i < Math.max(ka.release.length, kb.release.length); i++) {
    const d = (ka.release[i] ?? 0) - (kb.release[i] ?? 0)
    if (d !== 0) return Math.sign(d)
  }
  return ka.pre === kb.pre ? 0 : ka.pre ? -1 : 1
}

export const satisfies = (version: string, requirement: Requirement): boolean =>
  requirement.specifiers.every(([op, bound]) => {
    const c = compareVersions(version, bound)
    switch (op) {
      case ">=":
        return c >= 0
      case ">":
        return c > 0
      case "<=":
        return c <= 0
      case "<":
        return c < 0
      case "!=":
        return c !== 0
      case "~=": {
        const parts = bound.split(".")
        const upper = [...parts.slice(0, -2), String(Number(parts[parts.length - 2] ?? "0") + 1)].join(".")
        return c >= 0 && compareVersions(version, upper) < 0
      }
      default:
        return c === 0
    }
  })

/** The out-of-range lines for what an interpreter has: missing packages and versions outside the declared ranges. */
export const judgeVersions = (
  requirements: ReadonlyArray<Requirement>,
  packages: Readonly<Record<string, string>>
): ReadonlyArray<string> =>
  requirements.flatMap((r) => {
    const found = packages[r.name]
    if (found === undefined) return [`${r.name} is not installed (wanted ${r.spec})`]
    return satisfies(found, r) ? [] : [`${r.name} ${found} is outside ${r.spec}`]
  })

/** Lock entries that fall outside pyproject's ranges, or declared packages the lock does not pin. */
export const lockMismatches = (requirements: ReadonlyArray<Requirement>, lockText: string): ReadonlyArray<string> => {
  const pins = parseLockPins(lockText)
  return requirements.flatMap((r) => {
    const mine = pins.filter((p) => p.name === r.name)
    if (mine.length === 0) return [`${r.name} (${r.spec}) is not pinned in the lock`]
    return mine.filter((p) => !satisfies(p.version, r)).map((p) =>
      `the lock pins ${r.name}==${p.version}${p.marker === "" ? "" : ` (${p.marker})`}, outside ${r.spec}`
    )
  })
}

// ---------------------------------------------------------------------------------------------------------------
// Probing an interpreter

/** Runs on any Python (2.7 syntax too), so a too-old or odd interpreter still answers instead of crashing. */
const probeScript = [
  "import sys, json",
  "info = {'version': list(sys.version_info[:3]), 'executable': sys.executable, 'packages': {}}",
  "if sys.version_info >= (3, 8):",
  "    from importlib import metadata",
  "    for name in sys.argv[1:]:",
  "        try:",
  "            info['packages'][name] = metadata.version(name)",
  "        except Exception:",
  "            pass",
  "sys.stdout.write('FINETUNE_PROBE ' + json.dumps(info) + '\\n')"
].join("\n")

const ProbeResult = Schema.Struct({
  version: Schema.Array(Schema.Int),
  executable: Schema.String,
  packages: Schema.Record(Schema.String, Schema.String)
})
type ProbeResult = typeof ProbeResult.Type

export const versionText = (probe: ProbeResult): string => probe.version.join(".")

const isAtLeast = (version: ReadonlyArray<number>, minimum: readonly [number, number]) =>
  (version[0] ?? 0) > minimum[0] || ((version[0] ?? 0) === minimum[0] && (version[1] ?? 0) >= minimum[1])

/** The output of one child process (stdout whole; stderr lines also fed to `onLine` as they come). */
interface RunResult {
  readonly exitCode: number
  readonly stdout: string
  readonly stderr: string
}

const makeRunner = (spawner: ChildProcessSpawner.ChildProcessSpawner["Service"]) =>
  Effect.fnUntraced(function*(
    command: string,
    args: ReadonlyArray<string>,
    options: {
      readonly env?: Record<string, string | undefined>
      readonly timeout: Duration.Input
      readonly onLine?: (line: string) => Effect.Effect<void>
    }
  ) {
    const run = Effect.gen(function*() {
      const handle = yield* spawner.spawn(
        ChildProcess.make(command, [...args], { env: options.env ?? {}, extendEnv: true, stdin: "ignore" })
      )
      const lines = (stream: Stream.Stream<Uint8Array, unknown>, onLine?: (line: string) => Effect.Effect<void>) =>
        stream.pipe(
          Stream.decodeText(),
          Stream.splitLines,
          onLine === undefined ? (s) => s : Stream.tap(onLine),
          Stream.runCollect,
          Effect.map((all) => [...all].join("\n"))
        )
      const [stdout, stderr] = yield* Effect.all([lines(handle.stdout), lines(handle.stderr, options.onLine)], { concurrency: 2 })
      const exitCode = yield* handle.exitCode
      return { exitCode: Number(exitCode), stdout, stderr } satisfies RunResult
    }).pipe(
      Effect.scoped,
      // a spawn failure's message repeats the whole command line; its first word (NotFound, PermissionDenied) is the news
      Effect.mapError((cause) => {
        const text = String((cause as { message?: unknown }).message ?? cause)
        const kind = /^(\w+): ChildProcess\.spawn/.exec(text)?.[1]
        return { message: kind === "NotFound" ? "no such file" : kind === "PermissionDenied" ? "not executable" : kind ?? text.split("\n")[0]! }
      })
    )
    return yield* run.pipe(
      Effect.timeoutOption(options.timeout),
      Effect.map(Option.getOrElse((): RunResult => ({ exitCode: 124, stdout: "", stderr: `timed out after ${Duration.format(Duration.fromInputUnsafe(options.timeout))}` })))
    )
  })

/** Signs in uv's or pip's stderr that the package registry could not be reached (DNS, refused, timeout, proxy). */
const networkFailure =
  /dns error|failed to lookup address|name resolution|connection refused|network is unreachable|timed out|tcp connect error|error sending request|NewConnectionError|Max retries exceeded|ProxyError|ConnectTimeout|No matching distribution found|Could not find a version that satisfies/i

const lastLines = (text: string, n: number) =>
  text.split("\n").map((l) => l.trim()).filter((l) => l !== "").slice(-n).join(" | ")

// ---------------------------------------------------------------------------------------------------------------

export interface PythonEnvOptions {
  /** `--python PATH`: the interpreter to use as it is (a user's own environment) */
  readonly python?: string | undefined
  /** where python/ and .venv live; defaults to this checkout's root */
  readonly projectRoot?: string
  /** FINETUNE_PYTHON; defaults to process.env (an option so tests can resolve without touching the process) */
  readonly envPython?: string | undefined
  /** where to look for a base interpreter to make the managed env with; defaults to process.env.PATH */
  readonly searchPath?: string | undefined
  /** extra environment for every child process (an index URL, a uv cache folder); on top of process.env */
  readonly env?: Readonly<Record<string, string>>
  /** the oldest Python accepted; defaults to 3.10 (an option so the too-old path is testable on any machine) */
  readonly minimumPython?: readonly [number, number]
}

type Runner = ReturnType<typeof makeRunner>

/** What the steps of `ensure` share: the options, the managed env's paths, progress, a child-process runner. */
interface EnvTools {
  readonly options: PythonEnvOptions
  readonly progress: Progress["Service"]
  readonly fs: FileSystem.FileSystem
  readonly runProcess: Runner
  readonly minimum: readonly [number, number]
  readonly paths: ReturnType<typeof managedPaths>
  readonly task: string
  readonly readText: (path: string, what: string) => Effect.Effect<string, PythonEnvError>
  /** pyproject.toml's text and its dependencies (read each time: the checkout is the truth) */
  readonly requirements: Effect.Effect<{ readonly text: string; readonly parsed: ReadonlyArray<Requirement> }, PythonEnvError>
}

const makeTools = Effect.fnUntraced(function*(options: PythonEnvOptions) {
  const progress = Option.getOrElse(yield* Effect.serviceOption(Progress), () => Progress.of({ update: () => Effect.void, line: () => Effect.void }))
  const spawner = yield* ChildProcessSpawner.ChildProcessSpawner
  const fs = yield* FileSystem.FileSystem
  const spawn = makeRunner(spawner)
  const runProcess: Runner = (command, args, runOptions) => spawn(command, args, { ...runOptions, env: { ...options.env, ...runOptions.env } })
  const paths = managedPaths(options.projectRoot ?? defaultProjectRoot())

  const readText = (path: string, what: string) =>
    fs.readFileString(path).pipe(
      Effect.mapError(() =>
        new PythonEnvError({ reason: "LockMismatch", message: `cannot read ${what} at ${path}: the python/ folder of the checkout is incomplete` })
      )
    )

  const requirements = Effect.gen(function*() {
    const text = yield* readText(paths.pyproject, "the package's pyproject.toml")
    const parsed = parsePyprojectDependencies(text)
    if (parsed.length === 0) {
      return yield* new PythonEnvError({ reason: "LockMismatch", message: `${paths.pyproject} declares no dependencies = [...]` })
    }
    return { text, parsed }
  })
  return {
    options,
    progress,
    fs,
    runProcess,
    minimum: options.minimumPython ?? minimumPython,
    paths,
    task: "python env",
    readText,
    requirements
  } satisfies EnvTools
})

/** Spawns the interpreter with the probe; NotPython when it cannot run or answers with something else. */
const probe = Effect.fnUntraced(function*(t: EnvTools, executable: string, what: string) {
  const names = (yield* t.requirements).parsed.map((r) => r.name)
  const result = yield* t.runProcess(executable, ["-c", probeScript, ...names], { timeout: "60 seconds" }).pipe(
    Effect.catch((error) =>
      Effect.fail(
        new PythonEnvError({
          reason: "NotPython",
          message: `${what} ${executable} could not be started (${error.message}); give the path of a Python 3.10+ interpreter`
        })
      )
    )
  )
  const line = result.stdout.split("\n").find((l) => l.startsWith("FINETUNE_PROBE "))
  const decoded = line === undefined
    ? undefined
    : Schema.decodeUnknownOption(Schema.fromJsonString(ProbeResult))(line.slice("FINETUNE_PROBE ".length))
  if (decoded === undefined || Option.isNone(decoded)) {
    return yield* new PythonEnvError({
      reason: "NotPython",
      message: `${what} ${executable} is not a Python interpreter: it did not answer a Python probe (exit ${result.exitCode}${
        result.stderr.trim() === "" ? "" : `: ${lastLines(result.stderr, 2)}`
      }); give the path of a Python 3.10+ interpreter`
    })
  }
  const found = decoded.value
  if (!isAtLeast(found.version, t.minimum)) {
    return yield* new PythonEnvError({
      reason: "TooOld",
      message: `${what} ${executable} is Python ${versionText(found)}; the Python side needs ${t.minimum.join(".")} or newer`
    })
  }
  const packages = Object.fromEntries(Object.entries(found.packages).map(([k, v]) => [normalizeName(k), v]))
  return { ...found, packages }
})

/** A user's own interpreter (`--python`, FINETUNE_PYTHON), used as it is: versions outside the ranges are warnings. */
const external = Effect.fnUntraced(function*(t: EnvTools, executable: string, source: "flag" | "env") {
  const what = source === "flag" ? "--python" : "FINETUNE_PYTHON"
  if (executable.trim() === "") {
    return yield* new PythonEnvError({ reason: "NotPython", message: `${what} is empty; give the path of a Python 3.10+ interpreter` })
  }
  const absolute = isAbsolute(executable) || !executable.includes("/") ? executable : resolve(executable)
  const found = yield* probe(t, absolute, what)
  const outOfRange = judgeVersions((yield* t.requirements).parsed, found.packages)
  for (const line of outOfRange) yield* t.progress.line(`warning: ${what} ${found.executable}: ${line}`)
  return new PythonRuntime({
    executable: found.executable === "" ? absolute : found.executable,
    source,
    pythonVersion: versionText(found),
    packages: found.packages,
    outOfRange,
    packageRoot: t.paths.packageRoot,
    action: "external"
  })
})

/** A base interpreter to make the venv with: python3 first (what the machine calls Python), then 3.13…3.10. */
const findBasePython = Effect.fnUntraced(function*(t: EnvTools) {
  const dirs = (t.options.searchPath ?? process.env.PATH ?? "").split(delimiter).filter((d) => d !== "")
  const names = ["python3", "python3.13", "python3.12", "python3.11", "python3.10", "python"]
  const candidates = names.flatMap((name) => dirs.map((d) => join(d, name))).filter((p) => existsSync(p))
  const tooOld: Array<string> = []
  for (const candidate of candidates) {
    const found = yield* probe(t, candidate, "base interpreter").pipe(
      Effect.catch((error) => {
        if (error.reason === "TooOld") tooOld.push(error.message)
        return Effect.succeed(undefined)
      })
    )
    // the interpreter itself, not a launcher in front of it (a pyenv shim), so the venv does not depend on it
    if (found !== undefined) return { executable: found.executable === "" ? candidate : found.executable, version: versionText(found) }
  }
  return yield* new PythonEnvError({
    reason: tooOld.length > 0 ? "TooOld" : "NoPython",
    message: tooOld.length > 0
      ? `no Python ${t.minimum.join(".")}+ found on PATH (${tooOld.join("; ")}); install python3.10 or newer, or pass --python PATH / set FINETUNE_PYTHON to an environment that has torch`
      : `no Python interpreter found on PATH (looked for ${names.join(", ")}); install Python 3.10+ (e.g. apt-get install python3 python3-pip), or pass --python PATH / set FINETUNE_PYTHON`
  })
})

const registryOrInstallError = (step: string, result: RunResult) =>
  networkFailure.test(result.stderr)
    ? new PythonEnvError({
      reason: "NoRegistry",
      message: `${step}: the package registry (PyPI) could not be reached (${lastLines(result.stderr, 2)}). Check the network or proxy (UV_INDEX_URL / PIP_INDEX_URL), or use an existing environment with --python PATH / FINETUNE_PYTHON`
    })
    : new PythonEnvError({ reason: "InstallFailed", message: `${step} failed (exit ${result.exitCode}): ${lastLines(result.stderr, 4)}` })

/** uv from PyPI, hash-checked, installed with the base interpreter's pip into .cache/python-tools. */
const ensureUv = Effect.fnUntraced(function*(t: EnvTools, base: { readonly executable: string }) {
  const { paths } = t
  if (existsSync(paths.uv)) return paths.uv
  const pip = yield* t.runProcess(base.executable, ["-m", "pip", "--version"], { timeout: "60 seconds" }).pipe(Effect.orElseSucceed(() => undefined))
  if (pip === undefined || pip.exitCode !== 0) {
    return yield* new PythonEnvError({
      reason: "NoPython",
      message: `${base.executable} has no pip to install uv ${uvVersion} with; install pip (e.g. apt-get install python3-pip), or pass --python PATH / set FINETUNE_PYTHON`
    })
  }
  yield* t.progress.update({ task: t.task, message: `installing uv ${uvVersion} (hash-checked) into ${paths.tools}` })
  const result = yield* t.runProcess(base.executable, [
    "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--no-warn-script-location",
    "--timeout", "15", "--retries", "1", "--require-hashes", "--only-binary", ":all:", "--target", paths.tools,
    "-r", paths.uvRequirements
  ], { timeout: "10 minutes" }).pipe(Effect.mapError((e) => new PythonEnvError({ reason: "InstallFailed", message: `pip install uv: ${e.message}` })))
  if (result.exitCode !== 0 || !existsSync(paths.uv)) return yield* registryOrInstallError(`installing uv ${uvVersion}`, result)
  return paths.uv
})

const uvEnvOf = (t: EnvTools) => ({ UV_PYTHON_DOWNLOADS: "never", UV_HTTP_TIMEOUT: "30", UV_NO_PROGRESS: "1", VIRTUAL_ENV: undefined, ...t.options.env })

/** The hash of the lock and pyproject a managed env is made from (its stamp), once the lock is known to match. */
const lockHash = Effect.fnUntraced(function*(t: EnvTools) {
  const lock = yield* t.readText(t.paths.lock, "the lock file")
  const { text, parsed } = yield* t.requirements
  const mismatches = lockMismatches(parsed, lock)
  if (mismatches.length > 0) {
    return yield* new PythonEnvError({
      reason: "LockMismatch",
      message: `python/requirements.lock does not match python/pyproject.toml: ${mismatches.join("; ")}. Re-compile it: uv pip compile python/pyproject.toml --universal --python-version 3.10 --generate-hashes -o python/requirements.lock`
    })
  }
  return { hash: createHash("sha256").update(lock).update("\0").update(text).digest("hex"), pins: parseLockPins(lock) }
})

/** `bytecode`: the sync compiled every module (an env made before that is re-synced once to get it) */
const Stamp = Schema.Struct({ lockHash: Schema.String, uv: Schema.String, python: Schema.String, bytecode: Schema.optionalKey(Schema.Boolean) })
const readStamp = (t: EnvTools) =>
  t.fs.readFileString(t.paths.stamp).pipe(
    Effect.map((text) => Option.getOrUndefined(Schema.decodeUnknownOption(Schema.fromJsonString(Stamp))(text))),
    Effect.orElseSucceed(() => undefined)
  )

/** The installed versions must be the lock's pins (for this interpreter's markers: one of a name's pins). */
const pinDrift = (pins: ReadonlyArray<{ name: string; version: string }>, packages: Readonly<Record<string, string>>, names: ReadonlyArray<string>) =>
  names.flatMap((name) => {
    const wanted = pins.filter((p) => p.name === name).map((p) => p.version)
    const found = packages[name]
    return found !== undefined && wanted.some((w) => compareVersions(w, found) === 0 && w.split("+")[0] === found.split("+")[0])
      ? []
      : [`${name} ${found ?? "missing"} (lock: ${wanted.join(" or ")})`]
  })

interface LockState {
  readonly hash: string
  readonly pins: ReadonlyArray<{ readonly name: string; readonly version: string }>
  /** the packages pyproject declares */
  readonly names: ReadonlyArray<string>
}

const managedRuntime = (t: EnvTools, found: ProbeResult, action: PythonRuntime["action"]) =>
  new PythonRuntime({
    executable: t.paths.python,
    source: "managed",
    pythonVersion: versionText(found),
    packages: found.packages,
    outOfRange: [],
    packageRoot: t.paths.packageRoot,
    action
  })

/** `uv venv` (when there is no .venv) and `uv pip sync` of the lock, with uv installed first when needed. */
const syncVenv = Effect.fnUntraced(function*(t: EnvTools, fresh: boolean) {
  const { paths, progress, task } = t
  const uvEnv = uvEnvOf(t)
  const base = yield* findBasePython(t)
  const uv = yield* ensureUv(t, base)
  if (fresh) {
    yield* progress.update({ task, message: `uv venv with ${base.executable} (Python ${base.version})` })
    const venv = yield* t.runProcess(uv, ["venv", "--clear", "--python", base.executable, paths.venv], { env: uvEnv, timeout: "5 minutes" }).pipe(
      Effect.mapError((e) => new PythonEnvError({ reason: "InstallFailed", message: `uv venv: ${e.message}` }))
    )
    if (venv.exitCode !== 0) return yield* registryOrInstallError("uv venv", venv)
  }
  yield* progress.update({ task, message: "uv pip sync --require-hashes --compile-bytecode python/requirements.lock" })
  // bytecode now, once: where PYTHONDONTWRITEBYTECODE is set (this project's CI machines) Python never caches it, and
  // every engine or oracle start recompiled torch + transformers (measured: import 12.0 s -> 5.6 s; the sync +15 s)
  const sync = yield* t.runProcess(uv, ["pip", "sync", "--require-hashes", "--compile-bytecode", "--python", paths.python, paths.lock], {
    env: uvEnv,
    timeout: "60 minutes",
    onLine: (line) => line.trim() === "" ? Effect.void : progress.update({ task, message: line.trim() })
  }).pipe(Effect.mapError((e) => new PythonEnvError({ reason: "InstallFailed", message: `uv pip sync: ${e.message}` })))
  if (sync.exitCode !== 0) return yield* registryOrInstallError("uv pip sync python/requirements.lock", sync)
})

/** After a sync: python/ on the venv's path, the versions checked against the lock, and the stamp written. */
const finishVenv = Effect.fnUntraced(function*(t: EnvTools, lock: LockState, fresh: boolean) {
  const { paths } = t
  const found = yield* probe(t, paths.python, "the managed .venv's")
  const sitePackages = join(paths.venv, "lib", `python${found.version[0]}.${found.version[1]}`, "site-packages")
  yield* t.fs.writeFileString(join(sitePackages, "finetune_finance_py.pth"), `${paths.packageRoot}\n`).pipe(
    Effect.mapError((e) => new PythonEnvError({ reason: "InstallFailed", message: `cannot put python/ on the venv's path (${sitePackages}): ${e.message}` }))
  )
  const drift = pinDrift(lock.pins, found.packages, lock.names)
  if (drift.length > 0) {
    return yield* new PythonEnvError({
      reason: "LockMismatch",
      message: `after uv pip sync, ${paths.venv} still differs from python/requirements.lock: ${drift.join("; ")}. Delete .venv and run again`
    })
  }
  yield* t.fs.writeFileString(paths.stamp, JSON.stringify({ lockHash: lock.hash, uv: uvVersion, python: versionText(found), bytecode: true }) + "\n").pipe(
    Effect.mapError((e) => new PythonEnvError({ reason: "InstallFailed", message: `cannot write ${paths.stamp}: ${e.message}` }))
  )
  yield* t.progress.line(`python env: ready (${paths.python}, Python ${versionText(found)}, torch ${found.packages["torch"] ?? "?"})`)
  return managedRuntime(t, found, fresh ? "created" : "resynced")
})

/** The managed .venv: reused when its stamp and versions match the lock, else created or re-synced from it. */
const managed = Effect.fnUntraced(function*(t: EnvTools) {
  const { paths } = t
  const { hash, pins } = yield* lockHash(t)
  const lock: LockState = { hash, pins, names: (yield* t.requirements).parsed.map((r) => r.name) }
  const stamp = yield* readStamp(t)
  const ready = existsSync(paths.python) && stamp !== undefined && stamp.lockHash === hash && stamp.bytecode === true
  if (ready) {
    const found = yield* probe(t, paths.python, "the managed .venv's").pipe(Effect.orElseSucceed(() => undefined))
    if (found !== undefined && pinDrift(pins, found.packages, lock.names).length === 0) return managedRuntime(t, found, "reused")
  }
  const fresh = !existsSync(paths.python)
  yield* t.progress.line(
    fresh
      ? `python env: creating ${paths.venv} from python/requirements.lock (first run; torch and its CUDA libraries are several GB)`
      : stamp?.lockHash === hash
      ? `python env: ${paths.venv} was made without bytecode; re-syncing once to compile it`
      : `python env: ${paths.venv} does not match python/requirements.lock; re-syncing`
  )
  yield* syncVenv(t, fresh)
  return yield* finishVenv(t, lock, fresh)
})

export class PythonEnv extends Context.Service<PythonEnv, {
  /** find or create the interpreter, memoized: the first call does the work, later calls get the same runtime */
  readonly ensure: Effect.Effect<PythonRuntime, PythonEnvError>
}>()("app/Python/PythonEnv") {
  /**
   * Needs nothing; when the caller provides `Progress` (the CLI's terminal, a test's log) installation steps
   * are reported there, otherwise they are silent.
   */
  static readonly layer = (options: PythonEnvOptions = {}): Layer.Layer<PythonEnv> =>
    Layer.effect(
      PythonEnv,
      Effect.gen(function*() {
        const tools = yield* makeTools(options)
        const envPython = "envPython" in options ? options.envPython : process.env.FINETUNE_PYTHON
        const resolveRuntime = options.python !== undefined
          ? external(tools, options.python, "flag")
          : envPython !== undefined
          ? external(tools, envPython, "env")
          : managed(tools)

        const ensure = yield* Effect.cached(resolveRuntime.pipe(Effect.withSpan("PythonEnv.ensure")))
        return PythonEnv.of({ ensure })
      })
    ).pipe(Layer.provide(NodeServices.layer))
}

/** One line that says where the interpreter came from, for the pipeline's and the test run's logs. */
export const describeRuntime = (runtime: PythonRuntime): string => {
  const from = runtime.source === "flag"
    ? "--python"
    : runtime.source === "env"
    ? "FINETUNE_PYTHON"
    : `managed .venv from python/requirements.lock, ${runtime.action}`
  const torch = runtime.packages["torch"]
  return `Python ${runtime.pythonVersion} at ${runtime.executable} (${from})${torch === undefined ? "" : `, torch ${torch}`}${
    runtime.outOfRange.length === 0 ? "" : `; ${runtime.outOfRange.length} package(s) outside the declared ranges`
  }`
}
