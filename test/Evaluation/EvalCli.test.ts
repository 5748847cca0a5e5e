/** The `eval` command end to end: real flags, a real loopback model server, real files and a real SQLite file. */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Option, Runtime } from "effect"
import { Command } from "effect/cli"
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { evalCommand, parseEvery } from "../../src/Evaluation/Cli.ts"
import { exitCodeOf as codeOf } from "../../src/Shared/Errors.ts"
import { records, startServer } from "../fixtures/eval/fakeModelServer.ts"

const cli = (args: ReadonlyArray<string>) =>
  Command.runWith(evalCommand, { version: "test" })(args).pipe(Effect.provide(NodeServices.layer))

const exitCodeOf = (args: ReadonlyArray<string>) =>
  cli(args).pipe(
    Effect.as(0),
    Effect.catch((e) => Effect.succeed(Runtime.getErrorExitCode(e)))
  )

const setup = () => {
  const dir = mkdtempSync(join(tmpdir(), "eval-cli-"))
  const split = join(dir, "test.jsonl")
  writeFileSync(split, records.map((r) => JSON.stringify(r)).join("\n") + "\n")
  return { dir, split }
}

describe("eval CLI", () => {
  it("parses --every durations", () => {
    assert.strictEqual(Option.getOrThrow(parseEvery("1h")).toString(), Option.getOrThrow(parseEvery("60m")).toString())
    assert.isTrue(Option.isNone(parseEvery("soon")))
    assert.isTrue(Option.isNone(parseEvery("0m")))
  })

  it.live("run, compare, schedule, history and check", () =>
    Effect.gen(function*() {
      const server = yield* Effect.promise(startServer)
      const { dir, split } = setup()
      const run = (out: string, extra: Array<string> = []) =>
        ["run", "--split", split, "--endpoint", server.url, "--out", out, "--concurrency", "2", ...extra]

      yield* cli(run(join(dir, "a"), ["--system", "fake-a"]))
      yield* cli(run(join(dir, "b"), ["--api", "openai", "--system", "fake-b"]))
      for (const f of ["samples.jsonl", "aggregate.json", "report.html", "summary.md", "run.json", "generations.jsonl"]) {
        assert.isTrue(existsSync(join(dir, "a", f)), f)
      }
      assert.strictEqual(JSON.parse(readFileSync(join(dir, "b", "aggregate.json"), "utf8")).system, "fake-b")
      yield* cli(["compare", join(dir, "a"), join(dir, "b"), "--out", join(dir, "cmp")])
      assert.include(readFileSync(join(dir, "cmp", "compare.md"), "utf8"), "| rougeL |")

      const db = join(dir, "history.sqlite")
      const sched = ["schedule", "--split", split, "--endpoint", server.url, "--out", join(dir, "sched"), "--db", db, "--every", "1h", "--max-runs", "1"]
      yield* cli(sched)
      assert.strictEqual(yield* exitCodeOf(["check", "--db", db]), codeOf("threshold")) // only one run: nothing to compare
      yield* cli(sched)
      assert.strictEqual(yield* exitCodeOf(["check", "--db", db]), 0)
      assert.strictEqual(yield* exitCodeOf(["history", "--db", db, "--pin", "1"]), 0)
      assert.strictEqual(yield* exitCodeOf(["check", "--db", db, "--against", "baseline"]), 0)
      yield* Effect.promise(server.close)
    }))

  it.live("bad flags and missing files exit 1, bad contents 2, an unreachable endpoint 3 (the one exit-code table)", () =>
    Effect.gen(function*() {
      const { dir, split } = setup()
      const input = codeOf("input")
      assert.strictEqual(yield* exitCodeOf(["run", "--split", split, "--out", join(dir, "x")]), input)
      assert.strictEqual(yield* exitCodeOf(["run", "--split", split, "--endpoint", "http://x", "--model", "m.gguf", "--out", join(dir, "x")]), input)
      assert.strictEqual(yield* exitCodeOf(["run", "--split", split, "--endpoint", "ftp://x", "--out", join(dir, "x")]), input)
      assert.strictEqual(yield* exitCodeOf(["run", "--split", join(dir, "missing.jsonl"), "--endpoint", "http://127.0.0.1:9", "--out", join(dir, "m")]), input)
      const bad = join(dir, "bad.jsonl")
      writeFileSync(bad, "{not json}\n")
      assert.strictEqual(yield* exitCodeOf(["run", "--split", bad, "--endpoint", "http://127.0.0.1:9", "--out", join(dir, "y")]), codeOf("data"))
      assert.strictEqual(
        yield* exitCodeOf(["schedule", "--split", split, "--endpoint", "http://127.0.0.1:9", "--out", dir, "--cron", "61 * * * *", "--db", join(dir, "h.sqlite")]),
        input
      )
      // port 9 (discard) refuses connections: every generation fails
      assert.strictEqual(yield* exitCodeOf(["run", "--split", split, "--endpoint", "http://127.0.0.1:9", "--out", join(dir, "z"), "--timeout-s", "5"]), codeOf("failure"))
      assert.strictEqual(yield* exitCodeOf(["rubric", "export", "--run", join(dir, "nope"), "--out", join(dir, "r")]), input)
    }))

  it.live("schedule creates the history's folder; check and history never create a history file", () =>
    Effect.gen(function*() {
      const server = yield* Effect.promise(startServer)
      const { dir, split } = setup()
      const missing = join(dir, "nope.db")
      assert.strictEqual(yield* exitCodeOf(["check", "--db", missing]), codeOf("input"))
      assert.strictEqual(yield* exitCodeOf(["history", "--db", missing]), codeOf("input"))
      assert.isFalse(existsSync(missing))
      const db = join(dir, "newdir", "deeper", "h.db")
      yield* cli(["schedule", "--split", split, "--endpoint", server.url, "--out", join(dir, "runs"), "--db", db, "--every", "1h", "--max-runs", "1"])
      assert.isTrue(existsSync(db))
      assert.strictEqual(yield* exitCodeOf(["history", "--db", db]), 0)
      yield* Effect.promise(server.close)
    }))
})
