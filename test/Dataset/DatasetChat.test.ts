/**
 * Chat data kept whole (issue 19): a conversation's system prompt and every turn survive the ingest, training
 * formats it in the model's chat template (the renderer serving uses) with loss on every assistant turn, and the
 * prompt that asks for the last turn is the one `/v1/chat/completions` renders.
 */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { DatasetPipeline } from "../../src/Dataset/DatasetPipeline.ts"
import { formatChatExample, formatChatPrompt } from "../../src/Dataset/PromptFormat.ts"
import type { TrainingRecord } from "../../src/Dataset/Record.ts"
import { chatTemplate } from "../../src/Model/FinanceVocabulary.ts"
import { renderPrompt } from "../../src/Serving/Prompt.ts"
import { tokenizeExample } from "../../src/Training/Collate.ts"
import { defaultTrainConfig, type TrainConfig } from "../../src/Training/TrainConfig.ts"
import { loadExamples, readRecordsFile } from "../../src/Training/Trainer.ts"

const system = "You are BullishAI Market Analyst. Answer in plain English and end with a short disclaimer."
const conversation = [
  { role: "system", content: system },
  { role: "user", content: "What is a P/E ratio?" },
  { role: "assistant", content: "The price-to-earnings ratio divides the share price by earnings per share." },
  { role: "user", content: "And is a high one bad?" },
  { role: "assistant", content: "Not by itself: a high multiple often means the market expects growth." },
  { role: "user", content: "How should I use it for AAPL?" },
  { role: "assistant", content: "Compare AAPL's multiple with its own history and its sector.\n\nThis is for educational purposes only and not financial advice." }
] as const
const assistantTurns = conversation.filter((m) => m.role === "assistant").map((m) => m.content)

/** a Llama-3-style template: BOS written by the template, trimmed contents, `<|eot_id|>` ending each turn */
const llama3Template =
  "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"

const layer = Layer.merge(DatasetPipeline.layer.pipe(Layer.provide(NodeServices.layer)), NodeServices.layer)

describe("chat data kept whole", () => {
  it.effect("a 3-turn chat record with a system prompt round-trips through the ingest with every turn", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(join(tmpdir(), "dataset-chat-"))
      const input = join(dir, "chat.jsonl")
      writeFileSync(input, JSON.stringify({ messages: conversation, category: "education" }) + "\n")
      const out = join(dir, "out")
      // test ratio 0: the one record is in train.jsonl
      const summary = yield* DatasetPipeline.use((p) => p.run({ input, outDir: out, testRatio: 0 }))
      assert.strictEqual(summary.train, 1)
      assert.deepStrictEqual(summary.formats, { chat: 1 })
      const written = JSON.parse(readFileSync(join(out, "train.jsonl"), "utf8").trim()) as TrainingRecord
      assert.deepStrictEqual(written.messages, conversation)
      // the seed's fields as before: the last user turn and the answer to it
      assert.strictEqual(written.question, "How should I use it for AAPL?")
      assert.strictEqual(written.answer, assistantTurns[2])
      assert.strictEqual(written.risk_note, "This is for educational purposes only and not financial advice.")
      assert.strictEqual(written.intent, "education")
      assert.deepStrictEqual(written.tickers, ["AAPL"])
      // the trainer reads the canonical record back with its messages (it is not re-read as a raw chat line)
      const [again] = yield* readRecordsFile(join(out, "train.jsonl"))
      assert.deepStrictEqual(again, written)
      // and the ingest of its own output keeps it byte for byte
      const out2 = join(dir, "out2")
      yield* DatasetPipeline.use((p) => p.run({ input: join(out, "train.jsonl"), outDir: out2, testRatio: 0 }))
      assert.strictEqual(readFileSync(join(out2, "train.jsonl"), "utf8"), readFileSync(join(out, "train.jsonl"), "utf8"))
    }).pipe(Effect.provide(layer)))

  it("formats the conversation in the model's chat template with a loss span on every assistant turn", () => {
    const chat = { template: chatTemplate, bos: "<s>", eos: "</s>" }
    const ex = formatChatExample(conversation, chat)
    const expected = conversation.map((m) => `<|${m.role}|>\n${m.content}<|end|>\n`).join("")
    assert.strictEqual(ex.text, expected)
    assert.isTrue(ex.text.includes(system))
    // the spans are exactly each assistant turn's content and the end-of-turn token
    assert.deepStrictEqual(ex.lossSpans.map(([s, e]) => ex.text.slice(s, e)), assistantTurns.map((a) => `${a}<|end|>`))
    assert.deepStrictEqual([ex.answerStart, ex.answerEnd], ex.lossSpans[2])
    // evaluation's prompt is the text before the last answer, as serving renders the first five turns
    const prompt = formatChatPrompt(conversation, chat)
    assert.strictEqual(prompt, ex.text.slice(0, ex.answerStart))
    const served = renderPrompt({ _tag: "Chat", messages: conversation.slice(0, 6), context: "" }, chatTemplate, { bos: "<s>", eos: "</s>" })
    assert.deepStrictEqual(served, { text: prompt, parseSpecialTokens: true })

    const llama = formatChatExample(conversation, { template: llama3Template, bos: "<|begin_of_text|>", eos: "<|end_of_text|>" })
    assert.isTrue(llama.text.startsWith(`<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n${system}<|eot_id|>`))
    assert.deepStrictEqual(llama.lossSpans.map(([s, e]) => llama.text.slice(s, e)), assistantTurns.map((a) => `${a}<|eot_id|>`))
  })

  it("the loss mask covers exactly the assistant turns and the final EOS", () => {
    const chat = { template: chatTemplate, bos: "<s>", eos: "</s>" }
    const ex = formatChatExample(conversation, chat)
    // one token per character (ids are char codes), BOS 1, EOS 2
    const tok = { bosId: 1, eosId: 2, encode: (t: string) => Array.from(t, (c) => c.codePointAt(0)! + 10) }
    const t = tokenizeExample(tok, ex, 10_000)
    assert.strictEqual(t.ids[0], 1)
    assert.strictEqual(t.ids.at(-1), 2)
    const targeted = t.ids.map((id, i) => (t.labels[i] ? (id === 2 ? "<EOS>" : String.fromCodePoint(id - 10)) : "\u0000")).join("")
    const pieces = targeted.split("\u0000").filter((p) => p !== "")
    assert.deepStrictEqual(pieces, [`${assistantTurns[0]}<|end|>`, `${assistantTurns[1]}<|end|>`, `${assistantTurns[2]}<|end|><EOS>`])
    // too long: the oldest tokens go, BOS and the last turn stay
    const short = tokenizeExample(tok, ex, 150)
    assert.strictEqual(short.ids.length, 150)
    assert.strictEqual(short.ids[0], 1)
    assert.deepStrictEqual(short.ids.slice(-20), t.ids.slice(-20))
  })

  it.effect("the trainer formats chat-shaped data in the chat template, and other data in its layout", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(join(tmpdir(), "train-chat-"))
      const file = join(dir, "train.jsonl")
      const seedLine = { question: "What is EPS?", answer: "Net income per share.", rationale: "", tickers: [], citations: [], context_required: false }
      writeFileSync(file, [JSON.stringify({ messages: conversation }), JSON.stringify(seedLine)].join("\n") + "\n")
      const config = { ...defaultTrainConfig, model: "unused", trainFile: file, outputDir: dir, validationFraction: 0 } as unknown as TrainConfig
      const chat = { template: chatTemplate, bos: "<s>", eos: "</s>" }
      const withTemplate = yield* loadExamples(config, chat)
      assert.isTrue(withTemplate.chatShaped)
      assert.strictEqual(withTemplate.train[0]!.text, formatChatExample(conversation, chat).text)
      assert.strictEqual(withTemplate.train[0]!.lossSpans?.length, 3)
      assert.strictEqual(withTemplate.train[1]!.text, "Context: \nQuestion: What is EPS?\nAnswer: Net income per share.")
      // no template: the seed layout of the last pair
      const without = yield* loadExamples(config)
      assert.isFalse(without.chatShaped)
      assert.isTrue(without.train[0]!.text.startsWith("Context: \nQuestion: How should I use it for AAPL?\nAnswer: "))
    }).pipe(Effect.provide(NodeServices.layer)))
})
