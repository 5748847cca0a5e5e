/**
 * PythonEnv: resolution (--python, FINETUNE_PYTHON, managed .venv), the range and lock checks, and each set-up
 * failure's reason and message, on real interpreters. The managed env itself was made (or reused) by the
 * globalSetup before this file ran; here the failure paths use throw-away project roots, so the real .venv is
 * never touched.
 */
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, inject, it } from "vitest"
import {
  compareVersions,
  judgeVersions,
  lockMismatches,
  parseLockPins,
  parsePyprojectDependencies,
  PythonEnv,
  type PythonEnvOptions,
  satisfies
} from "../../src/Python/PythonEnv.ts"
import { projectRoot, pythonPackageRoot, runPythonJson, testPython } from "../support/python.ts"

const pyproject = fs.readFileSync(path.join(pythonPackageRoot, "pyproject.toml"), "utf8")
const lock = fs.readFileSync(path.join(pythonPackageRoot, "requirements.lock"), "utf8")
const requirements = parsePyprojectDependencies(pyproject)

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "python-env-"))
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }))

/** A project root with a copy of python/'s pyproject, lock and uv pin (and whatever `edit` changes). */
const fakeRoot = (name: string, edit: (files: Record<string, string>) => void = () => {}) => {
  const root = path.join(scratch, name)
  fs.mkdirSync(path.join(root, "python"), { recursive: true })
  const files: Record<string, string> = {
    "pyproject.toml": pyproject,
    "requirements.lock": lock,
    "uv-requirements.txt": fs.readFileSync(path.join(pythonPackageRoot, "uv-requirements.txt"), "utf8")
  }
  edit(files)
  for (const [file, text] of Object.entries(files)) fs.writeFileSync(path.join(root, "python", file), text)
  return root
}

const ensure = (options: PythonEnvOptions) =>
  Effect.runPromise(PythonEnv.use((env) => env.ensure).pipe(Effect.provide(PythonEnv.layer(options)), Effect.result))

const failure = async (options: PythonEnvOptions) => {
  const result = await ensure(options)
  if (result._tag === "Success") throw new Error(`expected a PythonEnvError, got ${result.success.executable}`)
  return result.failure
}

/** The real base interpreter behind the test Python (a venv's python is a link to it). */
const basePython = (runPythonJson("import json, sys, os; print(json.dumps(os.path.join(sys.base_prefix, 'bin')))", null) as string)

describe("the globalSetup's hand-over", () => {
  it("every fork sees FINETUNE_PYTHON as the setup resolved it, and it imports the project's package", () => {
    const resolved = inject("pythonRuntime")
    expect(process.env.FINETUNE_PYTHON).toBe(resolved.executable)
    expect(testPython()).toBe(resolved.executable)
    const seen = runPythonJson(
      "import json, sys, finetune_finance_py; print(json.dumps({'exe': sys.executable, 'pkg': finetune_finance_py.__file__, 'v': list(sys.version_info[:2])}))",
      null
    ) as { exe: string; pkg: string; v: [number, number] }
    expect(seen.exe).toBe(resolved.executable)
    expect(seen.pkg).toBe(path.join(pythonPackageRoot, "finetune_finance_py", "__init__.py"))
    expect(`${seen.v[0]}.${seen.v[1]}`).toBe(resolved.pythonVersion.split(".").slice(0, 2).join("."))
  })

  it("a managed env holds its libraries' bytecode (uv --compile-bytecode), so no engine start recompiles torch", () => {
    const resolved = inject("pythonRuntime")
    // a FINETUNE_PYTHON the caller brings (a GPU machine's own env) is taken as it is
    if (resolved.source !== "managed") return
    const cached = runPythonJson(
      "import importlib.util, json, os, torch; print(json.dumps(os.path.exists(importlib.util.cache_from_source(torch.__file__))))",
      null
    )
    expect(cached).toBe(true)
  })

  it("the project's own pytest suite (python/tests) passes on that interpreter", () => {
    const result = runPythonJson(
      [
        "import json, subprocess, sys",
        "done = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'tests'], cwd='python', capture_output=True, text=True)",
        "print(json.dumps({'code': done.returncode, 'out': done.stdout[-2000:] + done.stderr[-2000:]}))"
      ].join("\n"),
      null
    ) as { code: number; out: string }
    // at least the oracle contract's 6 (other parts of the package add their own)
    expect(Number(/\b(\d+) passed\b/.exec(result.out)?.[1] ?? 0), result.out).toBeGreaterThanOrEqual(6)
    expect(result.out).not.toMatch(/\b\d+ (failed|errors?)\b/)
    expect(result.code).toBe(0)
  })
})

describe("versions, ranges and the lock", () => {
  it("reads pyproject's ranges and finds every declared package pinned inside them in the lock", () => {
    expect(requirements.map((r) => r.name)).toEqual([
      "torch", "transformers", "peft", "trl", "accelerate", "safetensors", "sacrebleu", "rouge-score", "gguf", "numpy", "pytest"
    ])
    expect(lockMismatches(requirements, lock)).toEqual([])
    expect(parseLockPins(lock).filter((p) => p.name === "sacrebleu")).toEqual([{ name: "sacrebleu", version: "2.6.0", marker: "" }])
  })

  it("compares versions as PEP 440 does for release numbers, local labels and pre-releases", () => {
    const torch = requirements.find((r) => r.name === "torch")!
    expect(satisfies("2.15.0+cu132", torch)).toBe(true)
    expect(satisfies("2.4.1", torch)).toBe(false)
    expect(satisfies("3.0.0", torch)).toBe(false)
    expect(compareVersions("3.0.0rc1", "3")).toBe(-1)
    expect(compareVersions("2.10", "2.9")).toBe(1)
    expect(judgeVersions(requirements.slice(0, 2), { torch: "2.3.0" })).toEqual([
      "torch 2.3.0 is outside >=2.5,<3",
      "transformers is not installed (wanted >=4.46,<6)"
    ])
  })
})

describe("resolution", () => {
  it("--python takes the interpreter as it is and records the versions it has", async () => {
    const result = await ensure({ python: testPython(), projectRoot })
    if (result._tag === "Failure") throw new Error(result.failure.message)
    const runtime = result.success
    expect(runtime.source).toBe("flag")
    expect(runtime.action).toBe("external")
    expect(Object.keys(runtime.packages).sort()).toEqual(requirements.map((r) => r.name).sort())
    expect(runtime.packages["sacrebleu"]).toBe("2.6.0")
    expect(runtime.outOfRange).toEqual([])
  })

  it("FINETUNE_PYTHON is used when no --python is given; --python wins over it", async () => {
    const fromEnv = await ensure({ envPython: testPython(), projectRoot })
    expect(fromEnv._tag === "Success" && fromEnv.success.source).toBe("env")
    const flagWins = await failure({ python: "/definitely/not/here/python", envPython: testPython(), projectRoot })
    expect(flagWins.message).toContain("--python /definitely/not/here/python")
  })

  it("an interpreter outside the ranges is accepted with one line per package (a user's own env)", async () => {
    const root = fakeRoot("narrow", (files) => {
      files["pyproject.toml"] = files["pyproject.toml"]!.replace('"torch>=2.5,<3"', '"torch>=9,<10"').replace('"gguf>=0.17,<1"', '"gguf>=0.17,<1", "not-a-real-package-xyz>=1"')
    })
    const result = await ensure({ python: testPython(), projectRoot: root })
    if (result._tag === "Failure") throw new Error(result.failure.message)
    expect(result.success.outOfRange).toEqual([
      `torch ${result.success.packages["torch"]} is outside >=9,<10`,
      "not-a-real-package-xyz is not installed (wanted >=1)"
    ])
  })
})

describe("set-up failures name the reason and what to do", () => {
  it("NotPython: a missing path, a file that is not executable, a program that is not Python", async () => {
    const missing = await failure({ python: path.join(scratch, "nope", "python"), projectRoot })
    expect(missing.reason).toBe("NotPython")
    expect(missing.message).toMatch(/could not be started \(no such file\); give the path of a Python 3\.10\+ interpreter$/)
    const text = path.join(scratch, "notes.txt")
    fs.writeFileSync(text, "hello\n")
    const notExecutable = await failure({ python: text, projectRoot })
    expect(notExecutable.message).toContain("(not executable)")
    const echo = await failure({ python: "/bin/echo", projectRoot })
    expect(echo.reason).toBe("NotPython")
    expect(echo.message).toContain("--python /bin/echo is not a Python interpreter")
  })

  it("TooOld: an interpreter below the minimum", async () => {
    const error = await failure({ python: testPython(), projectRoot, minimumPython: [3, 99] })
    expect(error.reason).toBe("TooOld")
    expect(error.message).toMatch(/is Python 3\.\d+\.\d+; the Python side needs 3\.99 or newer$/)
  })

  it("NoPython: no interpreter on the search path for the managed env", async () => {
    const empty = fs.mkdtempSync(path.join(scratch, "empty-path-"))
    const error = await failure({ envPython: undefined, projectRoot: fakeRoot("nopython"), searchPath: empty })
    expect(error.reason).toBe("NoPython")
    expect(error.message).toContain("no Python interpreter found on PATH")
    expect(fs.existsSync(path.join(scratch, "nopython", ".venv"))).toBe(false)
  })

  it("LockMismatch: a lock whose pins fall outside pyproject's ranges is refused before anything is installed", async () => {
    const root = fakeRoot("stale-lock", (files) => {
      files["requirements.lock"] = files["requirements.lock"]!.replace(/^sacrebleu==2\.6\.0/m, "sacrebleu==2.5.1")
    })
    const error = await failure({ envPython: undefined, projectRoot: root, searchPath: basePython })
    expect(error.reason).toBe("LockMismatch")
    expect(error.message).toContain("the lock pins sacrebleu==2.5.1, outside >=2.6,<2.7")
    expect(error.message).toContain("uv pip compile python/pyproject.toml")
    expect(fs.existsSync(path.join(root, ".venv"))).toBe(false)
  })

  it("NoRegistry: pip cannot reach the index to install uv (a closed loopback port stands in for PyPI)", async () => {
    const error = await failure({
      envPython: undefined,
      projectRoot: fakeRoot("no-registry-pip"),
      searchPath: basePython,
      env: { PIP_INDEX_URL: "http://127.0.0.1:9/simple", PIP_NO_CACHE_DIR: "1", PIP_CONFIG_FILE: "/dev/null" }
    })
    expect(error.reason).toBe("NoRegistry")
    expect(error.message).toMatch(/^installing uv 0\.13\.9: the package registry \(PyPI\) could not be reached/)
  })

  it("NoRegistry: uv cannot reach the index to sync the lock", async () => {
    const root = fakeRoot("no-registry-uv")
    // the uv the managed env already installed, so this reaches the sync step
    const tools = path.join(projectRoot, ".cache", "python-tools")
    if (fs.existsSync(tools)) fs.cpSync(tools, path.join(root, ".cache", "python-tools"), { recursive: true })
    const error = await failure({
      envPython: undefined,
      projectRoot: root,
      searchPath: basePython,
      env: { UV_INDEX_URL: "http://127.0.0.1:9/simple", UV_CACHE_DIR: path.join(root, "uv-cache"), UV_HTTP_RETRIES: "0" }
    })
    expect(error.reason).toBe("NoRegistry")
    expect(error.message).toMatch(/^uv pip sync python\/requirements\.lock: the package registry \(PyPI\) could not be reached/)
  })
})
