/**
 * The `route` command as users run it: a child process of the real CLI entry, configured through the
 * app's environment names, against loopback providers.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { loopback } from "./RouterLoopback.ts"

const main = join(import.meta.dirname, "..", "..", "src", "Main.ts")

const runCli = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  Effect.callback<{ code: number; stdout: string; stderr: string }>((resume) => {
    const child = execFile(process.execPath, [main, ...args], { env: { PATH: process.env["PATH"] ?? "", ...env }, timeout: 60_000 }, (error, stdout, stderr) => {
      resume(Effect.succeed({ code: error === null ? 0 : typeof error.code === "number" ? error.code : 1, stdout, stderr }))
    })
    return Effect.sync(() => child.kill())
  })

const tempDir = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "router-cli-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

describe("route command", () => {
  it.live("answers from the local model with a JSON context file and explains the decision; streams with --stream", () =>
    Effect.gen(function*() {
      const local = yield* loopback("local")
      const groq = yield* loopback("groq")
      const dir = yield* tempDir
      const contextFile = join(dir, "context.json")
      writeFileSync(contextFile, JSON.stringify({ symbol: "MSFT", prices: { MSFT: { price: 410.25, changePercent: -1.5 } } }))
      const env = { LOCAL_PYTORCH_ENABLED: "true", LOCAL_PYTORCH_URL: local.url, GROQ_API_KEY: "k", GROQ_BASE_URL: groq.url }
      const result = yield* runCli(["route", "Is MSFT a buy at this valuation?", "--context", contextFile, "--explain"], env)
      assert.strictEqual(result.code, 0, result.stderr)
      assert.strictEqual(result.stdout.trim(), "local says: Is MSFT a buy at this valuation?")
      assert.include(result.stderr, "model: local-pytorch")
      assert.include(result.stderr, "classification: finance: ticker(\"MSFT\") +0.5")
      assert.include(result.stderr, "chain local-pytorch > groq-llama")
      assert.include(result.stderr, "local-pytorch: success")
      assert.strictEqual(local.calls[0]!.body.context, "Current Symbol: MSFT\n\nCurrent Prices:\n  MSFT: $410.25 (-1.50%)")
      groq.always({ kind: "stream", tokens: ["Markets ", "were ", "calm."] })
      const streamed = yield* runCli(["route", "How were markets today?", "--stream", "--model", "groq-llama"], env)
      assert.strictEqual(streamed.code, 0, streamed.stderr)
      assert.strictEqual(streamed.stdout, "Markets were calm.\n")
      assert.include(streamed.stderr, "model: groq-llama")
    }))

  it.live("exits 4 (unavailable) with a one-line message when every provider is down, and 2 on a bad context file", () =>
    Effect.gen(function*() {
      const groq = yield* loopback("groq")
      groq.always({ kind: "status", status: 503 })
      const dir = yield* tempDir
      const bad = join(dir, "bad.json")
      writeFileSync(bad, "{\"symbol\": \"MSFT\",")
      const env = { GROQ_API_KEY: "k", GROQ_BASE_URL: groq.url, ROUTER_ATTEMPT_TIMEOUT_MS: "2000" }
      const down = yield* runCli(["route", "tell me a joke"], env)
      assert.strictEqual(down.code, 4) // unavailable
      assert.match(down.stderr, /^route: all providers unavailable \(every provider failed\); attempts: groq-llama:server/m)
      assert.notInclude(down.stderr, "    at ")
      const badContext = yield* runCli(["route", "tell me a joke", "--context", bad], env)
      assert.strictEqual(badContext.code, 2) // invalid data
      assert.include(badContext.stderr, `route: context file ${bad}: invalid JSON`)
      assert.notInclude(badContext.stderr, "    at ")
    }))

  it.live("--json prints only the JSON answer on stdout; log lines (a fallback here) go to stderr (issue 21)", () =>
    Effect.gen(function*() {
      const local = yield* loopback("local")
      const groq = yield* loopback("groq")
      local.always({ kind: "status", status: 503 })
      const env = { LOCAL_PYTORCH_ENABLED: "true", LOCAL_PYTORCH_URL: local.url, GROQ_API_KEY: "k", GROQ_BASE_URL: groq.url }
      const result = yield* runCli(["route", "Is MSFT a buy at this valuation?", "--json"], env)
      assert.strictEqual(result.code, 0, result.stderr)
      const answer = JSON.parse(result.stdout)
      assert.strictEqual(answer.model, "groq-llama")
      assert.strictEqual(answer.metadata.fallback, true)
      assert.include(result.stderr, "answered after fallback")
    }))
})
