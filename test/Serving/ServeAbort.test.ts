/**
 * Aborted requests give their place up: over a real loopback server with one slot held by a long generation (a
 * model wide enough to keep it busy), a burst of clients that abort while queued leaves the queue empty, none of
 * them generates, and the server answers new requests. The engine takes an AbortSignal too, and honours it even
 * where its caller cannot be interrupted (Effect's HTTP server runs handlers uninterruptibly).
 */
import { Effect, Exit, Fiber, Layer } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { InferenceEngine } from "../../src/Serving/InferenceEngine.ts"
import { launchServer, type RunningServer } from "../../src/Serving/Server.ts"
import { tempDir, tinyConfig, writeBase } from "./ServeFixtures.ts"

const dir = tempDir("serve-abort")
const wide = path.join(dir, "wide.gguf")
// greedy "Hold" on this model runs to max_tokens (no end-of-text): seconds of work on one thread
const holderBody = { prompt: "Hold", max_tokens: 4000, temperature: 0 }
const QUEUE = 6

let server: (RunningServer & { readonly close: () => Promise<void> }) | undefined

const post = (url: string, body: unknown, signal?: AbortSignal) =>
  fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), ...(signal ? { signal } : {}) })

const metric = async (name: string) => {
  const text = await (await fetch(`${server!.url}/metrics`)).text()
  const line = text.split("\n").find((l) => l.startsWith(name))
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(" ") + 1))
}
const queueDepth = () => metric("inference_queue_depth")
const active = () => metric("inference_active_generations")
const tokens = () => metric("inference_generated_tokens_total{model=\"wide\"}")

const waitFor = async (check: () => Promise<boolean>, what: string) => {
  for (let i = 0; i < 400; i++) {
    if (await check()) return
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error(`timed out waiting for ${what}`)
}

/** A streamed generation holding the one slot until stopped. */
const startHolder = async () => {
  const controller = new AbortController()
  const response = await post(`${server!.url}/v1/completions`, { ...holderBody, stream: true }, controller.signal)
  const reader = response.body!.getReader()
  await reader.read()
  const drained = (async () => {
    while (!(await reader.read()).done) { /* keep reading */ }
  })().catch(() => {})
  return async () => {
    controller.abort()
    await drained
  }
}

beforeAll(async () => {
  await writeBase(wide, { ...tinyConfig, hiddenSize: 512, intermediateSize: 1024, numLayers: 4, numHeads: 8, numKvHeads: 4, headDim: 64 })
  server = await launchServer({ port: 0, engine: { base: wide, parallel: 1, queueSize: QUEUE, threads: 1 } })
})

afterAll(async () => {
  await server?.close()
  fs.rmSync(dir, { recursive: true, force: true })
})

describe("a burst of aborted requests", () => {
  it("leaves the queue at depth 0, generates nothing for them, and new requests succeed (twice over)", async () => {
    const url = server!.url
    for (let round = 0; round < 2; round++) {
      const tokensBefore = await tokens()
      const stopHolder = await startHolder()
      await waitFor(async () => (await active()) === 1, "the slot to be busy")
      // a full queue of every kind of request, each with its own client that gives up
      const controllers = Array.from({ length: QUEUE }, () => new AbortController())
      const bodies = [
        [`${url}/infer`, { question: "queued?", max_length: 200 }],
        [`${url}/v1/completions`, { prompt: "queued", max_tokens: 50 }],
        [`${url}/v1/completions`, { prompt: "queued", max_tokens: 50, stream: true }],
        [`${url}/v1/chat/completions`, { messages: [{ role: "user", content: "queued?" }], max_tokens: 50 }],
        [`${url}/v1/chat/completions`, { messages: [{ role: "user", content: "queued?" }], max_tokens: 50, stream: true }],
        [`${url}/infer`, { question: "queued too?", max_length: 200 }]
      ] as const
      const queued = controllers.map((c, i) => post(bodies[i]![0], bodies[i]![1], c.signal)
        // a streamed reply has its headers once admitted (queued): the abort then ends its body
        .then(async (r) => [r.status, await r.text()]).catch(() => "aborted"))
      await waitFor(async () => (await queueDepth()) === QUEUE, "the queue to fill")
      // beyond the queue: refused at once
      expect((await post(`${url}/infer`, { question: "one too many", max_length: 200 })).status).toBe(429)
      for (const c of controllers) c.abort()
      expect(await Promise.all(queued)).toEqual(Array.from({ length: QUEUE }, () => "aborted"))
      await waitFor(async () => (await queueDepth()) === 0, "the queue to empty")
      // they left while the holder still had the slot
      expect(await active()).toBe(1)
      // the places are free again: a new queued request is admitted, not refused
      const next = post(`${url}/v1/completions`, { prompt: "after", max_tokens: 6, temperature: 0 })
      await waitFor(async () => (await queueDepth()) === 1, "the new request to queue")
      await stopHolder()
      const reply = await next
      expect(reply.status).toBe(200)
      const completion = await reply.json() as { usage: { completion_tokens: number } }
      expect(completion.usage.completion_tokens).toBe(6)
      await waitFor(async () => (await active()) === 0 && (await queueDepth()) === 0, "the server to be idle")
      // tokens are counted for finished generations: only the new request finished (not the stopped holder, and
      // none of those that left the queue, which never had the slot: it was the holder's until after they left)
      expect(await tokens() - tokensBefore).toBe(6)
      expect(await metric(`http_requests_total{route="/infer",status="499"}`)).toBe(2 * (round + 1))
    }
  })
})

describe("the engine's AbortSignal", () => {
  it("takes an aborted request out of the queue even when its caller cannot be interrupted", async () => {
    const program = Effect.gen(function*() {
      const engine = yield* InferenceEngine
      yield* engine.awaitReady
      const request = (prompt: string, maxTokens: number, signal?: AbortSignal) => ({
        prompt: { _tag: "Raw" as const, text: prompt },
        maxTokens,
        temperature: 0,
        topK: 0,
        topP: 1,
        ...(signal ? { signal } : {})
      })
      const holder = new AbortController()
      const holding = yield* Effect.forkChild(Effect.uninterruptible(engine.generate(request("Hold", 4000, holder.signal))))
      yield* Effect.promise(() => waitUntil(async () => (await Effect.runPromise(engine.stats)).active === 1))
      const waiting = Array.from({ length: 3 }, () => new AbortController())
      const fibers = yield* Effect.forEach(waiting, (c) => Effect.forkChild(Effect.uninterruptible(engine.generate(request("queued", 8, c.signal)))))
      yield* Effect.promise(() => waitUntil(async () => (await Effect.runPromise(engine.stats)).queued === 3))
      for (const c of waiting) c.abort()
      const exits = yield* Effect.forEach(fibers, Fiber.await)
      const afterAbort = yield* engine.stats
      holder.abort()
      const held = yield* Fiber.await(holding)
      const fresh = yield* engine.generate(request("after", 5))
      return { exits, afterAbort, held, fresh, final: yield* engine.stats }
    })
    const result = await Effect.runPromise(Effect.scoped(program).pipe(
      Effect.provide(InferenceEngine.layer({ base: wide, parallel: 1, queueSize: 4, threads: 1, gpu: "off" }).pipe(Layer.orDie))
    ))
    for (const exit of result.exits) expect(Exit.hasInterrupts(exit)).toBe(true)
    expect(result.afterAbort.queued).toBe(0)
    expect(result.afterAbort.active).toBe(1)
    expect(Exit.hasInterrupts(result.held)).toBe(true)
    expect(result.fresh.completionTokens).toBe(5)
    expect(result.final).toMatchObject({ active: 0, queued: 0 })
  })
})

const waitUntil = async (check: () => Promise<boolean>) => {
  for (let i = 0; i < 400; i++) {
    if (await check()) return
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error("timed out")
}
