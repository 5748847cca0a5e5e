/**
 * `/infer` renders the prompt the served adapter was trained on: the layout the trainer records beside the adapter
 * (adapter_prompt.json), carried by `export adapter` into the GGUF (finetune.prompt_layout), picked up by `serve`
 * (auto), overridden by `--layout`, and seed for an adapter without a record. The prompt's tokens are compared with
 * the trainer's own tokenization of the same record (Trainer.trainTokenizerOf + Collate.promptIds), on the project's
 * tiny model and on the real SmolLM2-135M-Instruct (ChatML, whose `<|im_end|>` is the EOS that ends the answer).
 */
import { NodeServices } from "@effect/platform-node"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { HttpServer } from "effect/http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { defaultSystemPrompt, formatPrompt, type PromptLayout } from "../../src/Dataset/PromptFormat.ts"
import { metaString, readGgufHeader } from "../../src/Model/Gguf.ts"
import { ggufKeys } from "../../src/Model/GgufKeys.ts"
import { LlamaCpp } from "../../src/Model/LlamaCpp.ts"
import { loadModelSource } from "../../src/Model/ModelLoader.ts"
import { Tokenizer } from "../../src/Model/Tokenizer.ts"
import { exportAdapter } from "../../src/Serving/Export.ts"
import { InferenceEngine } from "../../src/Serving/InferenceEngine.ts"
import type * as Api from "../../src/Api/Api.ts"
import * as Server from "../../src/Serving/Server.ts"
import { ADAPTER_PROMPT, trainedPromptOfGguf, writeAdapterPrompt } from "../../src/Training/AdapterPrompt.ts"
import { promptIds } from "../../src/Training/Collate.ts"
import { trainTokenizerOf } from "../../src/Training/Trainer.ts"
import { startServe, tempDir, tinyConfig, writeBase, writePeft } from "./ServeFixtures.ts"
import { Command } from "effect/cli"
import { evalCommand } from "../../src/Evaluation/Cli.ts"
import { records as evalRecords } from "../fixtures/eval/fakeModelServer.ts"

const dir = tempDir("layout")
const base = path.join(dir, "tiny.gguf")
const run = <A, E>(e: Effect.Effect<A, E, any>) => Effect.runPromise(e.pipe(Effect.provide(NodeServices.layer)) as Effect.Effect<A, E, never>)

/** the app's JSON context: rendered by contextText for /infer exactly as for a training record */
const record = {
  question: "Should I buy AAPL at the current price?",
  context: { symbol: "AAPL", prices: { AAPL: { price: 189.5, changePercent: 0.45 } }, fundamentals: { peRatio: 28.5 } }
}
const inferBody = { ...record, max_length: 512, temperature: 0, top_k: 50, top_p: 0.9 }

/** The prompt ids the trainer feeds for `record` in `layout` (its BOS rule and special-token parsing included). */
const trainingPromptIds = (model: string, layout: PromptLayout) =>
  run(Effect.gen(function*() {
    const tokenizer = yield* Tokenizer.use((t) => t.load(model))
    const tok = yield* trainTokenizerOf(tokenizer, layout)
    return promptIds(tok, formatPrompt(record, layout))
  }).pipe(Effect.scoped, Effect.provide(Tokenizer.layerNoDeps.pipe(Layer.provide(LlamaCpp.layerCpu)))))

/** A server (in this process) and its engine, for the prompt it feeds; closed with the returned function. */
const serve = async (engine: Server.ServeOptions["engine"]) => {
  const scope = Effect.runSync(Scope.make())
  const built = await Effect.runPromise(Effect.gen(function*() {
    const context = yield* Layer.build(Server.layer({ port: 0, engine }))
    const server = Context.get(context, HttpServer.HttpServer)
    const inference = Context.get(context, InferenceEngine)
    const models = yield* inference.awaitReady
    const address = server.address
    return { url: `http://127.0.0.1:${"port" in address ? address.port : 0}`, engine: inference, models }
  }).pipe(Scope.provide(scope)))
  return { ...built, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

const infer = async (url: string, body: unknown) => {
  const response = await fetch(`${url}/infer`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) })
  expect(response.status).toBe(200)
  return (await response.json()) as Api.InferResponse & { readonly metadata: Api.InferMetadata }
}

const chatPeft = path.join(dir, "chat-peft")
const plainPeft = path.join(dir, "plain-peft")
const chatGguf = path.join(dir, "chat.gguf")
const plainGguf = path.join(dir, "plain.gguf")

beforeAll(async () => {
  await writeBase(base)
  await writePeft(chatPeft, tinyConfig, { r: 4, alpha: 8 })
  await writePeft(plainPeft, tinyConfig, { r: 4, alpha: 8, seed: 23 })
  // what the trainer writes into its final adapter folder (Trainer.runTraining, TorchEngine)
  await run(writeAdapterPrompt(chatPeft, "chatml"))
  await run(exportAdapter({ adapter: chatPeft, base, out: chatGguf }))
  await run(exportAdapter({ adapter: plainPeft, base, out: plainGguf }))
}, 120_000)
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

describe("the trained prompt travels with the adapter", () => {
  it("export writes the PEFT folder's record into the GGUF, and nothing for a folder without one", async () => {
    expect(JSON.parse(fs.readFileSync(path.join(chatPeft, ADAPTER_PROMPT), "utf8"))).toEqual({ prompt_layout: "chatml" })
    const chat = await run(readGgufHeader(chatGguf))
    expect(metaString(chat, ggufKeys.promptLayout)).toBe("chatml")
    expect(metaString(chat, ggufKeys.systemPrompt)).toBeUndefined() // the default system prompt is not repeated
    expect(trainedPromptOfGguf(chat)).toEqual({ layout: "chatml", systemPrompt: defaultSystemPrompt })
    expect(trainedPromptOfGguf(await run(readGgufHeader(plainGguf)))).toBeUndefined()
  })

  it("serves each adapter in its own layout (auto), token for token as training rendered the record", async () => {
    const server = await serve({ base, adapters: [{ name: "chat", path: chatGguf }, { name: "plain", path: plainGguf }], parallel: 1, threads: 1, gpu: "off" })
    try {
      expect(server.models.map((m) => [m.id, m.prompt.layout, m.prompt.source])).toEqual([
        ["tiny", "seed", "default"], // the tiny base has no chat template
        ["chat", "chatml", "recorded"],
        ["plain", "seed", "default"]
      ])
      for (const [model, layout] of [["chat", "chatml"], ["plain", "seed"]] as const) {
        const prepared = await Effect.runPromise(server.engine.prompt({ model, prompt: { _tag: "Record", context: record.context, question: record.question } }))
        expect(prepared.text).toBe(formatPrompt(record, layout))
        expect([...prepared.tokens]).toEqual(await trainingPromptIds(base, layout))
        const reply = await infer(server.url, { ...inferBody, model })
        expect(reply.metadata.prompt_layout).toBe(layout)
        expect(reply.metadata.prompt_tokens).toBe(prepared.tokens.length)
      }
    } finally {
      await server.close()
    }
  }, 120_000)

  it("--layout overrides what the adapter records", async () => {
    const main = path.resolve("src/Main.ts")
    // a PEFT folder is converted on the way in, record included; --layout seed wins over it
    const { child, url, stderr } = await startServe(main, ["--base", base, "--adapter", `chat=${chatPeft}`, "--layout", "seed", "--port", "0", "--gpu", "off", "--threads", "1", "--parallel", "1"])
    try {
      expect(stderr()).toContain("/infer prompt layout: tiny seed (--layout), chat seed (--layout)")
      const reply = await infer(url, inferBody)
      expect(reply.metadata.prompt_layout).toBe("seed")
      expect(reply.metadata.prompt_tokens).toBe((await trainingPromptIds(base, "seed")).length)
    } finally {
      child.kill("SIGTERM")
    }
  }, 120_000)
})

describe("eval run renders the adapter's recorded layout too", () => {
  const split = path.join(dir, "split.jsonl")
  const predictions = async (adapter: string, layout: string) => {
    const out = path.join(dir, `eval-${path.basename(adapter)}-${layout}`)
    await run(Command.runWith(evalCommand, { version: "test" })([
      "run", "--split", split, "--model", base, "--adapter", adapter, "--prompt-layout", layout,
      "--out", out, "--max-tokens", "6", "--concurrency", "1", "--threads", "1"
    ]))
    return fs.readFileSync(path.join(out, "samples.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).prediction as string)
  }

  it("--prompt-layout auto: the GGUF's finetune.prompt_layout, else seed", async () => {
    fs.writeFileSync(split, evalRecords.slice(0, 2).map((r) => JSON.stringify(r)).join("\n") + "\n")
    const [autoChat, chat, seed, autoPlain] = [
      await predictions(chatGguf, "auto"),
      await predictions(chatGguf, "chatml"),
      await predictions(chatGguf, "seed"),
      await predictions(plainGguf, "auto")
    ]
    expect(autoChat).toEqual(chat)
    expect(chat).not.toEqual(seed)
    expect(autoPlain).toEqual(await predictions(plainGguf, "seed"))
  }, 120_000)
})

describe("on the real SmolLM2-135M-Instruct (ChatML)", () => {
  const smol = process.env.FINETUNE_SMOLLM2!

  it("a chatml-trained adapter gets training's exact ChatML prompt, and its answer ends at <|im_end|>", async () => {
    const source = await run(loadModelSource(smol))
    const peft = path.join(dir, "smol-peft")
    const adapter = path.join(dir, "smol-chat.gguf")
    // a near-zero adapter on q_proj: the base's behaviour, served through the adapter path
    await writePeft(peft, source.config, { r: 2, alpha: 2, targets: ["q_proj"], std: 1e-3 })
    await run(writeAdapterPrompt(peft, "chatml"))
    await run(exportAdapter({ adapter: peft, base: smol, out: adapter }))
    const server = await serve({ base: smol, adapters: [{ name: "tuned", path: adapter }], parallel: 1, gpu: "off" })
    try {
      // the base alone is served in the layout of its own chat template
      expect(server.models.map((m) => [m.id, m.prompt.layout, m.prompt.source])).toEqual([
        [path.basename(smol, ".gguf"), "chatml", "template"],
        ["tuned", "chatml", "recorded"]
      ])
      const prepared = await Effect.runPromise(server.engine.prompt({ prompt: { _tag: "Record", context: record.context, question: record.question } }))
      const training = await trainingPromptIds(smol, "chatml")
      expect([...prepared.tokens]).toEqual(training)
      // ChatML's control tokens are single special tokens (<|im_start|> 1, <|im_end|> 2), not their characters
      expect(training[0]).toBe(1)
      expect(training.filter((t) => t === 2).length).toBe(2)
      const reply = await infer(server.url, inferBody)
      expect(reply.metadata.prompt_layout).toBe("chatml")
      expect(reply.metadata.prompt_tokens).toBe(training.length)
      expect(reply.metadata.finish_reason).toBe("stop")
      expect(reply.metadata.completion_tokens).toBeLessThan(512 - training.length)
      expect(reply.answer).not.toContain("<|im_")
    } finally {
      await server.close()
    }
  }, 240_000)
})
