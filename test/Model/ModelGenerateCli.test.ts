/**
 * `model generate` through the built CLI (dist/Main.js), over both engines on one GGUF: the same prompt tokens,
 * the same greedy tokens, the same text, and log-probabilities that are the model's own.
 */
import * as tf from "@tensorflow/tfjs-core"
import "@tensorflow/tfjs-backend-cpu"
import { Effect, Schema } from "effect"
import { spawnSync } from "node:child_process"
import { writeFileSync } from "node:fs"
import { join, resolve } from "node:path"
import { assert, beforeAll, describe, it } from "vitest"
import { LlamaModel } from "../../src/Model/LlamaModel.ts"
import { presetConfig } from "../../src/Model/TinyModel.ts"
import { ourDistributions, writeParityModel } from "./ParityHarness.ts"
import { tempDir } from "./WeightFileFixtures.ts"

const main = resolve(import.meta.dirname, "../../dist/Main.js")
const cli = (args: ReadonlyArray<string>) => {
  const r = spawnSync(process.execPath, [main, ...args], { encoding: "utf8", timeout: 120_000 })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

const Result = Schema.Struct({
  engine: Schema.Literals(["core", "llamacpp"]),
  promptTokens: Schema.Int,
  text: Schema.String,
  tokens: Schema.Array(Schema.Struct({ id: Schema.Int, text: Schema.String, logprob: Schema.Finite })),
  finishReason: Schema.Literals(["stop", "length"])
})
const decode = (stdout: string) => Schema.decodeUnknownSync(Schema.fromJsonString(Result))(stdout)

const dir = tempDir("model-generate")
const gguf = join(dir, "model.gguf")
const config = presetConfig("llama3-tiny")
const prompt = "Context: AAPL closed at <PRICE> after earnings.\nQuestion: Why did the stock rise?\nAnswer:"

beforeAll(async () => {
  // peaked next-token distributions (ParityHarness): greedy paths do not hinge on near-ties between the engines
  await Effect.runPromise(writeParityModel(config, gguf, "F32", 17, { body: 0.05, output: 0.2, outputFromEmbedding: 0.8, embeddingGain: 3 }))
})

describe("model generate", () => {
  it("core and llamacpp: same prompt tokens, same greedy tokens and text, per-token logprobs of the model", async () => {
    const args = ["model", "generate", gguf, "--prompt", prompt, "--max-tokens", "12", "--logprobs", "--device", "cpu"]
    const core = cli([...args, "--engine", "core"])
    assert.strictEqual(core.code, 0, core.stderr)
    const llama = cli([...args, "--engine", "llamacpp"])
    assert.strictEqual(llama.code, 0, llama.stderr)
    const a = decode(core.stdout)
    const b = decode(llama.stdout)
    assert.strictEqual(a.engine, "core")
    assert.strictEqual(b.engine, "llamacpp")
    assert.strictEqual(a.promptTokens, b.promptTokens)
    assert.isAbove(a.tokens.length, 0)
    assert.deepStrictEqual(a.tokens.map((t) => t.id), b.tokens.map((t) => t.id))
    assert.strictEqual(a.text, b.text)
    assert.strictEqual(a.finishReason, b.finishReason)
    a.tokens.forEach((t, i) => assert.closeTo(t.logprob, b.tokens[i]!.logprob, 2e-3, `token ${i}`))
    // the core's logprobs are log softmax of the model's logits at each answer position (temperature 1)
    tf.setBackend("cpu")
    const model = await Effect.runPromise(LlamaModel.load(gguf))
    // the prompt tokens: BOS + the text, as the tokenizer gives them (promptTokens of them)
    const { Tokenizer } = await import("../../src/Model/Tokenizer.ts")
    const { LlamaCpp } = await import("../../src/Model/LlamaCpp.ts")
    const { Layer } = await import("effect")
    const ids = await Effect.runPromise(
      Effect.scoped(Tokenizer.use((t) => Effect.map(t.load(gguf), (tok) => tok.tokenize(prompt)))).pipe(
        Effect.provide(Tokenizer.layerNoDeps.pipe(Layer.provide(LlamaCpp.layerCpu)))
      )
    )
    assert.strictEqual(ids.length, a.promptTokens)
    const dists = ourDistributions(model, [...ids, ...a.tokens.map((t) => t.id)])
    a.tokens.forEach((t, i) => {
      const p = dists[ids.length - 1 + i]!
      assert.closeTo(t.logprob, Math.log(p[t.id]!), 1e-4)
      // greedy: the token is the most likely one
      assert.strictEqual(p[t.id], Math.max(...p))
    })
    model.dispose()
  })

  it("renders chat messages with the model's template; without --json or --logprobs prints the text only", () => {
    const messages = join(dir, "messages.json")
    writeFileSync(messages, JSON.stringify([{ role: "user", content: "Why did the stock rise?" }]))
    const json = cli(["model", "generate", gguf, "--messages", messages, "--max-tokens", "6", "--json"])
    assert.strictEqual(json.code, 0, json.stderr)
    const r = Schema.decodeUnknownSync(Schema.fromJsonString(Schema.Struct({ promptTokens: Schema.Int, text: Schema.String })))(json.stdout)
    const plain = cli(["model", "generate", gguf, "--messages", messages, "--max-tokens", "6"])
    assert.strictEqual(plain.code, 0, plain.stderr)
    assert.strictEqual(plain.stdout, `${r.text}\n`)
    // the template adds the role tokens: more prompt tokens than the bare question
    const bare = decode(cli(["model", "generate", gguf, "--prompt", "Why did the stock rise?", "--max-tokens", "1", "--logprobs"]).stdout)
    assert.isAbove(r.promptTokens, bare.promptTokens)
  })

  it("fails clearly on a bad request, and export adapter's help names the folder train writes", () => {
    const both = cli(["model", "generate", gguf, "--prompt", "x", "--messages", "m.json"])
    assert.strictEqual(both.code, 1)
    assert.include(both.stderr, "give exactly one of --prompt and --messages")
    const badFile = join(dir, "bad.json")
    writeFileSync(badFile, "{not json")
    const bad = cli(["model", "generate", gguf, "--messages", badFile])
    assert.strictEqual(bad.code, 1)
    assert.include(bad.stderr, `--messages ${badFile}`)
    assert.notInclude(bad.stderr, "    at ")
    const help = cli(["export", "adapter", "--help"])
    assert.strictEqual(help.code, 0)
    assert.include(help.stdout, "RUN/final-adapter")
    assert.notMatch(help.stdout, /RUN\/final\b(?!-)/)
  })
})
