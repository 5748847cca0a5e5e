import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { Stage } from "../../src/Shared/Stage.ts"
import { DatasetInputError, StrictModeViolation } from "../../src/Dataset/Errors.ts"
import { makeStageRunner, RunManifest, type StageRunnerOptions } from "../../src/Pipeline/StageRunner.ts"

// The generic runner on toy stages in a real run folder: what it runs, what it reuses, what it records.
const order = ["a", "b", "c"]
const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "stage-runner-"))
const readManifest = (dir: string) => Schema.decodeUnknownSync(Schema.fromJsonString(RunManifest))(fs.readFileSync(path.join(dir, "run.json"), "utf8"))
const optionsFor = (runDir: string, force?: string): StageRunnerOptions => ({
  runDir,
  order,
  force,
  configSha256: "c0ffee",
  versions: { test: "1" },
  keyVersion: "0.0.0-test"
})

interface Toy {
  readonly value: number
  readonly file: string
}
const ToyResult = Schema.Struct({ value: Schema.Int, file: Schema.String })

/** A stage that writes `file` in its work folder and counts its runs (and whether they resumed). */
const toyStage = (name: string, reads: ReadonlyArray<string>, calls: Array<string>) =>
  ({
    name,
    reads,
    settings: (input) => ({ setting: input.setting }),
    inputFiles: (input) => (input.source === undefined ? {} : { source: input.source }),
    workDirs: (input) => [input.dir],
    outputFiles: (r) => [r.file],
    result: ToyResult,
    run: (input, { resume }) =>
      Effect.sync(() => {
        calls.push(`${name}${resume ? " resume" : ""}`)
        fs.mkdirSync(input.dir, { recursive: true })
        const file = path.join(input.dir, "out.txt")
        fs.writeFileSync(file, String(input.setting))
        return { value: input.setting * 10, file }
      })
  }) satisfies Stage<{ readonly setting: number; readonly dir: string; readonly source?: string }, Toy>

const runAll = (runDir: string, calls: Array<string>, settings: { a?: number; b?: number; c?: number } = {}, force?: string, source?: string) =>
  Effect.gen(function*() {
    const runner = yield* makeStageRunner(optionsFor(runDir, force))
    const a = yield* runner.run(toyStage("a", [], calls), { setting: settings.a ?? 1, dir: path.join(runDir, "a"), ...(source === undefined ? {} : { source }) })
    const b = yield* runner.run(toyStage("b", ["a"], calls), { setting: settings.b ?? 2, dir: path.join(runDir, "b") })
    const c = yield* runner.run(toyStage("c", ["b"], calls), { setting: settings.c ?? 3, dir: path.join(runDir, "c") })
    const manifest = yield* runner.finish
    return { a, b, c, manifest }
  })

describe("StageRunner", () => {
  it.effect("runs every stage once, records results and timings, then reuses them from run.json", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const calls: Array<string> = []
      const first = yield* runAll(dir, calls)
      assert.deepStrictEqual(calls, ["a", "b", "c"])
      assert.strictEqual(first.b.value, 20)
      const m = readManifest(dir)
      assert.strictEqual(m.status, "done")
      assert.deepStrictEqual(m.lastInvocation, { a: "ran", b: "ran", c: "ran" })
      for (const s of order) {
        assert.strictEqual(m.stages[s]!.status, "done")
        assert.isAtLeast(m.stages[s]!.seconds!, 0)
        assert.isAtLeast(m.stages[s]!.cpuSeconds!, 0)
      }
      assert.deepStrictEqual(m.stages["c"]!.result, { value: 30, file: path.join(dir, "c", "out.txt") })

      const again = yield* runAll(dir, calls)
      assert.deepStrictEqual(calls, ["a", "b", "c"], "nothing ran again")
      assert.deepStrictEqual(again.c, first.c)
      assert.deepStrictEqual(readManifest(dir).lastInvocation, { a: "cached", b: "cached", c: "cached" })
      assert.strictEqual(readManifest(dir).stages["a"]!.startedAt, m.stages["a"]!.startedAt)
    }).pipe(Effect.provide(NodeServices.layer)))

  it.effect("a changed setting reruns that stage and the stages that read it, not the ones before", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const calls: Array<string> = []
      yield* runAll(dir, calls)
      calls.length = 0
      const changed = yield* runAll(dir, calls, { b: 5 })
      assert.deepStrictEqual(calls, ["b", "c"])
      assert.strictEqual(changed.b.value, 50)
      assert.deepStrictEqual(readManifest(dir).lastInvocation, { a: "cached", b: "ran", c: "ran" })
    }).pipe(Effect.provide(NodeServices.layer)))

  it.effect("an input file's content is part of the key", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const source = path.join(dir, "source.txt")
      fs.writeFileSync(source, "one")
      const calls: Array<string> = []
      yield* runAll(dir, calls, {}, undefined, source)
      yield* runAll(dir, calls, {}, undefined, source)
      assert.deepStrictEqual(calls, ["a", "b", "c"])
      fs.writeFileSync(source, "two")
      yield* runAll(dir, calls, {}, undefined, source)
      assert.deepStrictEqual(calls, ["a", "b", "c", "a", "b", "c"])
    }).pipe(Effect.provide(NodeServices.layer)))

  it.effect("--force STAGE redoes that stage and every later one", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const calls: Array<string> = []
      yield* runAll(dir, calls)
      calls.length = 0
      yield* runAll(dir, calls, {}, "b")
      assert.deepStrictEqual(calls, ["b", "c"])
      assert.deepStrictEqual(readManifest(dir).lastInvocation, { a: "cached", b: "ran", c: "ran" })
    }).pipe(Effect.provide(NodeServices.layer)))

  it.effect("a recorded result that does not decode with the stage's Schema is not trusted: the stage runs again", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const calls: Array<string> = []
      yield* runAll(dir, calls)
      const raw = JSON.parse(fs.readFileSync(path.join(dir, "run.json"), "utf8"))
      raw.stages.b.result.value = "twenty" // still valid run.json, no longer a ToyResult
      fs.writeFileSync(path.join(dir, "run.json"), JSON.stringify(raw))
      calls.length = 0
      const again = yield* runAll(dir, calls)
      assert.deepStrictEqual(calls, ["b"])
      assert.strictEqual(again.b.value, 20)
      assert.strictEqual(readManifest(dir).stages["b"]!.result !== undefined, true)
      assert.deepStrictEqual((readManifest(dir).stages["b"]!.result as Toy).value, 20)
    }).pipe(Effect.provide(NodeServices.layer)))

  it.effect("a missing output file reruns the stage", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const calls: Array<string> = []
      yield* runAll(dir, calls)
      fs.rmSync(path.join(dir, "c", "out.txt"))
      calls.length = 0
      yield* runAll(dir, calls)
      assert.deepStrictEqual(calls, ["c"])
      assert.isTrue(fs.existsSync(path.join(dir, "c", "out.txt")))
    }).pipe(Effect.provide(NodeServices.layer)))

  it.effect("a stage left running resumes with its work folder kept; a fresh run starts from an empty one", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const calls: Array<string> = []
      yield* runAll(dir, calls)
      const raw = JSON.parse(fs.readFileSync(path.join(dir, "run.json"), "utf8"))
      raw.stages.b.status = "running"
      delete raw.stages.b.result
      fs.writeFileSync(path.join(dir, "run.json"), JSON.stringify(raw))
      const leftOver = path.join(dir, "b", "partial.txt")
      fs.writeFileSync(leftOver, "half done")
      calls.length = 0
      yield* runAll(dir, calls)
      assert.deepStrictEqual(calls, ["b resume"])
      assert.isTrue(fs.existsSync(leftOver), "a resumed stage keeps what it left")
      calls.length = 0
      yield* runAll(dir, calls, { b: 7 })
      assert.deepStrictEqual(calls, ["b", "c"])
      assert.isFalse(fs.existsSync(leftOver), "a fresh run removes its work folder first")
    }).pipe(Effect.provide(NodeServices.layer)))

  it.effect("failures end as StageFailed of the error's kind (unclassified: failure), and run.json records the failure", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const failing = (error: unknown): Stage<{ readonly dir: string }, Toy, unknown> => ({
        name: "a",
        reads: [],
        settings: () => ({}),
        inputFiles: () => ({}),
        workDirs: (input) => [input.dir],
        outputFiles: (r) => [r.file],
        result: ToyResult,
        run: () => Effect.fail(error)
      })
      const runner = yield* makeStageRunner(optionsFor(dir))
      const input = yield* Effect.flip(runner.run(failing(new DatasetInputError({ file: "x.jsonl", detail: "broken gzip" })), { dir: path.join(dir, "a") }))
      assert.strictEqual(input._tag, "StageFailed")
      assert.strictEqual(input.stage, "a")
      assert.strictEqual(input.kind, "input")
      assert.strictEqual(input.message, "stage \"a\" failed: x.jsonl: broken gzip")
      const m = readManifest(dir)
      assert.strictEqual(m.status, "failed")
      assert.strictEqual(m.stages["a"]!.status, "failed")
      assert.strictEqual(m.stages["a"]!.error, "x.jsonl: broken gzip")

      const data = yield* Effect.flip(runner.run(failing(new StrictModeViolation({ file: "x.jsonl", line: 3, field: "answer", reason: "empty" })), { dir: path.join(dir, "a") }))
      assert.strictEqual(data.kind, "data")
      assert.strictEqual(data.detail, "x.jsonl:3: answer: empty")

      const broke = yield* Effect.flip(runner.run(failing(new Error("disk on fire")), { dir: path.join(dir, "a") }))
      assert.strictEqual(broke.kind, "failure")
      assert.strictEqual(broke.detail, "disk on fire")
    }).pipe(Effect.provide(NodeServices.layer)))

  it.effect("an input file that does not exist fails the stage as an input error naming the file", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const missing = path.join(dir, "nope.jsonl")
      const runner = yield* makeStageRunner(optionsFor(dir))
      const e = yield* Effect.flip(runner.run(toyStage("a", [], []), { setting: 1, dir: path.join(dir, "a"), source: missing }))
      assert.strictEqual(e.kind, "input")
      assert.strictEqual(e.detail, `${missing}: no such file or folder`)
    }).pipe(Effect.provide(NodeServices.layer)))
})
