import { Effect, Exit, FileSystem, Result, Runtime, Schema } from "effect"
import { NodeServices } from "@effect/platform-node"
import { describe, expect, it } from "vitest"
import {
  causeKind,
  CommandFailed,
  describeCause,
  exitCodeOf,
  exitCodes,
  fieldIssues,
  issueField,
  kindOf,
  reportErrors
} from "../../src/Shared/Errors.ts"

describe("exitCodeOf", () => {
  it("is one table for every kind", () => {
    expect([exitCodeOf("input"), exitCodeOf("data"), exitCodeOf("failure"), exitCodeOf("threshold"), exitCodeOf("unavailable"), exitCodeOf("interrupted")])
      .toEqual([1, 2, 3, 3, 4, 130])
    expect(exitCodes.ok).toBe(0)
  })
})

describe("kindOf", () => {
  it("reads an error's kind and calls anything else a failure", () => {
    expect(kindOf({ kind: "data" })).toBe("data")
    expect(kindOf({ kind: "timeout" })).toBe("failure") // a Router FailureKind is not an ErrorKind
    expect(kindOf(new Error("x"))).toBe("failure")
    expect(kindOf(undefined)).toBe("failure")
  })
})

describe("describeCause", () => {
  it("gives one line for errors, strings and Effect's PlatformError", async () => {
    expect(describeCause(new Error("boom"))).toBe("boom")
    expect(describeCause("plain")).toBe("plain")
    expect(describeCause(42)).toBe("42")
    expect(describeCause({})).toBe("unknown error")
    expect(describeCause(Object.assign(new Error(""), { code: "EADDRINUSE" }))).toBe("address already in use")
    expect(describeCause(new Error("", { cause: new Error("inner") }))).toBe("inner")
    const missing = await Effect.runPromise(
      FileSystem.FileSystem.use((fs) => fs.stat("/nonexistent/finetune-finance/x.gguf")).pipe(Effect.flip, Effect.provide(NodeServices.layer))
    )
    expect(describeCause(missing)).toBe("no such file or folder (/nonexistent/finetune-finance/x.gguf)")
    expect(causeKind(missing)).toBe("input")
    expect(causeKind(Object.assign(new Error("listen"), { code: "EADDRINUSE" }))).toBe("unavailable")
    expect(causeKind(new Error("other"))).toBeUndefined()
  })
})

describe("issueField", () => {
  const Config = Schema.Struct({ train: Schema.Struct({ steps: Schema.Int }), name: Schema.String })
  it("names the field path of a Schema issue", () => {
    const r = Schema.decodeUnknownResult(Config)({ train: { steps: 1.5 }, name: 3 }, { errors: "all" })
    if (!Result.isFailure(r)) throw new Error("expected a failure")
    const issues = fieldIssues(r.failure)
    expect(issues.map((i) => i.field)).toEqual(["train.steps", "name"])
    expect(issueField(r.failure)).toMatch(/^train\.steps: .*integer/i)
    expect(issueField({ field: "", reason: "Expected object" }, "body")).toBe("body: Expected object")
  })
})

describe("reportErrors", () => {
  it("ends with the kind's exit code and keeps CommandFailed as is", async () => {
    class Missing extends Schema.TaggedError<Missing>()("Missing", { file: Schema.String }) {
      get kind() {
        return "input" as const
      }
      override get message() {
        return `${this.file}: no such file`
      }
    }
    const exit = await Effect.runPromiseExit(Effect.fail(new Missing({ file: "a.jsonl" })).pipe(reportErrors("test")))
    expect(Exit.isFailure(exit)).toBe(true)
    const error = Exit.isFailure(exit) ? exit.cause.reasons[0] : undefined
    const failed = error !== undefined && error._tag === "Fail" ? error.error : undefined
    expect(failed).toBeInstanceOf(CommandFailed)
    expect(failed?.message).toBe("a.jsonl: no such file")
    expect(failed?.[Runtime.errorExitCode]).toBe(1)
  })
})
