/**
 * The Router's local path against the project's own inference server (src/Serving, real llama.cpp through
 * node-llama-cpp) serving a tiny GGUF made here: `/infer` (the app's contract), the OpenAI-compatible
 * `/v1/chat/completions` with SSE streaming, and `/health` feeding the local breaker.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { ModelRouter } from "../../src/Router/ModelRouter.ts"
import { launchServer } from "../../src/Serving/Server.ts"
import type { LlamaConfig } from "../../src/Model/ModelContracts.ts"
import { writeTinyModel } from "../../src/Model/TinyModel.ts"
import { loopback } from "./RouterLoopback.ts"

const config: LlamaConfig = {
  vocabSize: 4096, hiddenSize: 64, intermediateSize: 128, numLayers: 1, numHeads: 2, numKvHeads: 1,
  headDim: 32, rmsNormEps: 1e-5, ropeTheta: 10000, maxPositionEmbeddings: 1024, tieWordEmbeddings: false
}

/** The project's server on a free port with a seeded random tiny model, for the test's scope. */
const projectServer = Effect.acquireRelease(
  Effect.gen(function*() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "router-serving-"))
    const base = path.join(dir, "tiny.gguf")
    yield* writeTinyModel({ config, seed: 3, path: base, initStd: 0.15 })
    const server = yield* Effect.promise(() =>
      launchServer({ port: 0, modelVersion: "tiny-finance", engine: { base, parallel: 1, contextSize: 1024, threads: 1 } })
    )
    return { ...server, dir }
  }),
  (server) =>
    Effect.promise(async () => {
      await server.close()
      fs.rmSync(server.dir, { recursive: true, force: true })
    })
)

describe("Router against the project's own inference server", () => {
  it.live("routes a finance query to /infer, streams through /v1/chat/completions, and health-checks /health", () =>
    Effect.gen(function*() {
      const server = yield* projectServer
      const groq = yield* loopback("groq")
      const routerConfig = {
        providers: [
          { name: "local-pytorch", kind: "local-infer" as const, baseUrl: server.url },
          { name: "local-openai", kind: "openai" as const, baseUrl: `${server.url}/v1`, local: true, maxTokens: 16 },
          { name: "groq-llama", kind: "openai" as const, baseUrl: groq.url, apiKeys: ["k"] }
        ],
        domainChain: ["local-pytorch", "groq-llama"],
        attemptTimeoutMs: 30_000,
        healthCheck: false as const
      }
      yield* ModelRouter.use((router) =>
        Effect.gen(function*() {
          const answer = yield* router.route("Is AAPL overvalued at this P/E?", {
            symbol: "AAPL",
            prices: { AAPL: { price: 189.5, changePercent: 0.45 } }
          }, { maxTokens: 120 })
          assert.strictEqual(answer.model, "local-pytorch", JSON.stringify(answer.metadata.attempts))
          assert.isAbove(answer.answer.length, 0)
          assert.strictEqual(answer.metadata.modelVersion, "tiny-finance")
          assert.isAbove(answer.metadata.confidence ?? 0, 0)
          assert.isAtMost(answer.metadata.confidence ?? 2, 1)
          assert.isAbove(answer.metadata.usage?.promptTokens ?? 0, 0)
          assert.isAtMost((answer.metadata.usage?.promptTokens ?? 0) + (answer.metadata.usage?.completionTokens ?? 0), 120)
          assert.strictEqual(groq.calls.length, 0)

          const events = Array.from(yield* Stream.runCollect(
            router.routeStream("Explain the P/E of MSFT", undefined, { preferredModel: "local-openai", maxTokens: 16 })
          ))
          const done = events.at(-1)!
          assert.strictEqual(done.type, "done")
          if (done.type !== "done") return
          const tokens = events.filter((e) => e.type === "token").map((e) => (e.type === "token" ? e.text : ""))
          assert.isAbove(tokens.length, 0)
          assert.strictEqual(done.answer.answer, tokens.join(""))
          assert.strictEqual(done.answer.model, "local-openai", JSON.stringify(done.answer.metadata.attempts))

          assert.deepStrictEqual(yield* router.checkHealth, { "local-pytorch": true, "local-openai": true })
        })
      ).pipe(Effect.provide(ModelRouter.layerConfig(routerConfig)))
    }))
})
