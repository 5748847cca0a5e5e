/**
 * `export merged` from a Hugging Face folder base (config.json + safetensors + tokenizer.json): the GGUF must stand
 * alone in llama.cpp with the base's tokenizer and chat template. Two tokenizer kinds, both made here: a Llama-3
 * style byte-level BPE (trained below on the finance corpus, Llama-3's split regex, ignore_merges) over a
 * single-file llama3-rope base, and the SentencePiece-derived byte-fallback BPE of the project's own models over a
 * sharded base. For each: llama.cpp tokenizes a mixed corpus exactly as @huggingface/tokenizers does, renders the
 * same chat template, and the merged model's next-token distributions equal our tfjs model with the PEFT adapter
 * applied through the trainer's LoRA layers (no shared merge code).
 */
import { assert, layer } from "@effect/vitest"
import { NodeServices } from "@effect/platform-node"
import * as tf from "@tensorflow/tfjs-core"
import { Effect, Layer } from "effect"
import { afterAll } from "vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import type { LlamaModel as LlamaCppModel } from "node-llama-cpp"
import { convertHfBase, exportMerged } from "../../src/Serving/Export.ts"
import { ggufVocabularyFromHf } from "../../src/Model/HfVocabulary.ts"
import { Device } from "../../src/Model/Device.ts"
import { buildFinanceVocabulary, chatTemplate, financeCorpus, hfTokenizerFiles } from "../../src/Model/FinanceVocabulary.ts"
import { metaArray, metaNumber, metaString, readGgufHeader } from "../../src/Model/Gguf.ts"
import { LlamaCpp } from "../../src/Model/LlamaCpp.ts"
import { LlamaModel } from "../../src/Model/LlamaModel.ts"
import { presetConfig } from "../../src/Model/TinyModel.ts"
import { Tokenizer } from "../../src/Model/Tokenizer.ts"
import { exactContext, llamaCppDistributions, maxAbsDiff } from "../Model/ParityHarness.ts"
import { applyPeftAdapter, tallyAgainstLlamaCpp } from "../support/adapterParity.ts"
import { tempDir, tinyConfig, writeHfBase, writePeft } from "./ServeFixtures.ts"

const dir = tempDir("merged-hf")
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

// ---------------------------------------------------------------------------------------------------------------
// A Llama-3 style byte-level BPE, trained here

const llama3Regex = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/** GPT-2's byte -> printable character map (every byte a visible character, so tokens are strings). */
const byteChars = (): Array<string> => {
  const printable = [...range(0x21, 0x7e), ...range(0xa1, 0xac), ...range(0xae, 0xff)]
  const map = new Array<string>(256)
  let extra = 0
  for (let b = 0; b < 256; b++) map[b] = String.fromCodePoint(printable.includes(b) ? b : 256 + extra++)
  return map
}
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** Plain BPE training: the most frequent adjacent pair (ties: smaller string) merged, `count` times. */
const trainByteLevelBpe = (corpus: string, count: number) => {
  const chars = byteChars()
  const encoder = new TextEncoder()
  const words = new Map<string, number>()
  for (const piece of corpus.match(new RegExp(llama3Regex, "gu")) ?? []) words.set(piece, (words.get(piece) ?? 0) + 1)
  const split = [...words].map(([w, n]) => ({ symbols: Array.from(encoder.encode(w), (b) => chars[b]!), n }))
  const vocab = new Map(chars.map((c, i) => [c, i]))
  const merges: Array<[string, string]> = []
  while (merges.length < count) {
    const pairs = new Map<string, number>()
    for (const { symbols, n } of split) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = `${symbols[i]}\u0000${symbols[i + 1]}`
        pairs.set(key, (pairs.get(key) ?? 0) + n)
      }
    }
    const best = [...pairs].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0]
    if (best === undefined || best[1] < 2) break
    const [left, right] = best[0].split("\u0000") as [string, string]
    merges.push([left, right])
    if (!vocab.has(left + right)) vocab.set(left + right, vocab.size)
    for (const word of split) {
      const out: Array<string> = []
      for (let i = 0; i < word.symbols.length; i++) {
        if (word.symbols[i] === left && word.symbols[i + 1] === right) {
          out.push(left + right)
          i++
        } else out.push(word.symbols[i]!)
      }
      word.symbols = out
    }
  }
  return { vocab, merges }
}

const llama3Template =
  "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + " +
  "message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}" +
  "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"

/** tokenizer.json + tokenizer_config.json as Meta ships Llama 3 (ids of added tokens leave a gap, as padded vocabs do). */
const llama3TokenizerFiles = (regex = llama3Regex) => {
  const { vocab, merges } = trainByteLevelBpe(financeCorpus, 700)
  const specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
  const placeholders = ["<PRICE>", "<SYMBOL>", "<CHANGE>", "<PERCENT>"]
  const added = [
    ...specials.map((content, i) => ({ id: 3000 + i, content, special: true })),
    ...placeholders.map((content, i) => ({ id: 3100 + i, content, special: false }))
  ].map((t) => ({ ...t, single_word: false, lstrip: false, rstrip: false, normalized: false }))
  const tokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: regex }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false }
      ]
    },
    post_processor: {
      type: "Sequence",
      processors: [
        { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
        {
          type: "TemplateProcessing",
          single: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
          pair: [
            { SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
            { SpecialToken: { id: "<|begin_of_text|>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }
          ],
          special_tokens: { "<|begin_of_text|>": { id: "<|begin_of_text|>", ids: [3000], tokens: ["<|begin_of_text|>"] } }
        }
      ]
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: true,
      vocab: Object.fromEntries(vocab), merges
    }
  }
  const tokenizerConfig = {
    tokenizer_class: "PreTrainedTokenizerFast",
    bos_token: "<|begin_of_text|>",
    eos_token: "<|eot_id|>",
    clean_up_tokenization_spaces: true,
    model_max_length: 131072,
    chat_template: llama3Template
  }
  return { tokenizerJson, tokenizerConfig, bpeSize: vocab.size }
}

// ---------------------------------------------------------------------------------------------------------------
// HF folders

const writeJson = (file: string, value: unknown) => fs.writeFileSync(file, JSON.stringify(value, null, 2))

const llama3Config = presetConfig("llama3-tiny")
const cases = [
  {
    name: "Llama-3 byte-level BPE (llama-bpe), llama3 RoPE, one safetensors file",
    folder: path.join(dir, "llama3"),
    config: llama3Config,
    tokenizer: () => llama3TokenizerFiles(),
    shards: 1,
    model: "gpt2",
    pre: "llama-bpe",
    template: llama3Template
  },
  {
    name: "SentencePiece-style byte-fallback BPE (llama), sharded safetensors",
    folder: path.join(dir, "spm"),
    config: tinyConfig,
    tokenizer: () => hfTokenizerFiles(buildFinanceVocabulary(tinyConfig.vocabSize)),
    shards: 2,
    model: "llama",
    pre: "default",
    template: chatTemplate
  }
] as const

const corpus = [
  "What is the current price of AAPL?",
  "The price of <SYMBOL> is <PRICE>, a change of <CHANGE> (<PERCENT>) since the close.",
  "Revenue rose 12.5% to $1,234,567.89 in Q3 2024; EPS was 3.14 vs. 2.71 expected.",
  "I'M SURE it's fine, they've said we'll see; don't PANIC.",
  "Prices: €100, £75.50, ¥10000 and ₿0.25 — “quoted” ‘text’…",
  "Ünïcödé: naïve café, Zürich, 東京証券取引所, Москва, 🚀📈 to the moon!",
  "  leading spaces, double  spaces, trailing space ",
  "tabs\tand\nnew lines\n\n\nand a final line",
  "<PRICE><CHANGE>glued<PERCENT>placeholders",
  "<|start_header_id|>user<|end_header_id|>\n\nIs <SYMBOL> a buy?<|eot_id|>",
  "<|user|>\nIs it a buy?<|end|>\n<|assistant|>\n",
  "numbers 0 1 22 333 4444 55555 3.14159 -42 +7 1,000,000 10-K 10-Q"
]

/** the mixed corpus and every line of the finance corpus the byte-level tokenizer was trained on */
const texts = [...corpus, ...financeCorpus.split("\n").filter((line) => line.length > 0)]

const prompts = [
  "Context: AAPL closed at <PRICE> (<CHANGE>) after earnings.\nQuestion: Why did the stock rise?\nAnswer: ",
  "<SYMBOL> trades near its support with strong momentum; P/E 23.4x and rates at 5.25%."
]

let fixtures: Promise<void> | undefined
/** Both HF bases and a PEFT adapter per base (all seven modules, so Q and K permutations are exercised). */
const setup = () =>
  Effect.promise(() =>
    fixtures ??= (async () => {
      for (const c of cases) {
        // initStd 0.15: peaked distributions
        await writeHfBase(c.folder, c.config, { tokenizer: c.tokenizer(), shards: c.shards, initStd: 0.15 })
        await writePeft(`${c.folder}-peft`, c.config, { r: 4, alpha: 8, targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] })
      }
    })())

const Services = Layer.mergeAll(
  Device.layerCpu,
  NodeServices.layer,
  Tokenizer.layerNoDeps.pipe(Layer.provideMerge(LlamaCpp.layerCpu))
)

layer(Services, { timeout: 60_000 })("export merged from a Hugging Face folder", (it) => {
  for (const c of cases) {
    it.effect(`${c.name}: llama.cpp tokenizes as @huggingface/tokenizers and keeps the chat template`, () =>
      Effect.gen(function*() {
        yield* setup()
        const out = path.join(dir, `${c.pre}-merged.gguf`)
        const report = yield* exportMerged({ base: c.folder, adapter: `${c.folder}-peft`, out, type: "f32" })
        assert.strictEqual(report.modules, 7 * c.config.numLayers)

        const header = yield* readGgufHeader(out)
        assert.strictEqual(metaString(header, "general.architecture"), "llama")
        assert.strictEqual(metaString(header, "tokenizer.ggml.model"), c.model)
        assert.strictEqual(metaString(header, "tokenizer.ggml.pre"), c.pre)
        assert.strictEqual(metaString(header, "tokenizer.chat_template"), c.template)
        assert.strictEqual(metaArray(header, "tokenizer.ggml.tokens")!.values.length, c.config.vocabSize)
        assert.strictEqual(metaNumber(header, "llama.rope.freq_base"), c.config.ropeTheta)
        assert.strictEqual(header.tensors.some((t) => t.name === "rope_freqs.weight"), c.config.ropeScaling !== undefined)

        const tokenizers = yield* Tokenizer
        const cpp = yield* tokenizers.load(out)
        const hf = yield* tokenizers.load(c.folder)
        assert.strictEqual(cpp.source, "llama.cpp")
        assert.deepStrictEqual([cpp.bos, cpp.eos], [hf.bos, hf.eos])
        assert.isDefined(cpp.bos)
        let tokens = 0
        for (const text of texts) {
          const expected = hf.tokenize(text)
          assert.deepStrictEqual(cpp.tokenize(text, { special: true }), expected, JSON.stringify(text))
          if (corpus.includes(text)) tokens += expected.length
        }
        // not bytes: the merges are in use (the corpus has ~700 characters)
        assert.isBelow(tokens, 520)
        assert.strictEqual(cpp.tokenize("<PRICE>", { addBos: false }).length, 1)
        const messages = [
          { role: "system", content: "You are a finance assistant." },
          { role: "user", content: "What moved <SYMBOL> to <PRICE> today?" }
        ]
        const rendered = yield* cpp.applyChatTemplate(messages)
        assert.strictEqual(rendered, yield* hf.applyChatTemplate(messages))
        assert.deepStrictEqual(cpp.tokenize(rendered, { special: true, addBos: false }), hf.tokenize(rendered, { addBos: false }))
      }).pipe(Effect.scoped))

    it.effect(`${c.name}: the merged GGUF in llama.cpp equals tfjs + the PEFT adapter`, () =>
      Effect.gen(function*() {
        yield* setup()
        const out = path.join(dir, `${c.pre}-parity.gguf`)
        const peft = `${c.folder}-peft`
        yield* exportMerged({ base: c.folder, adapter: peft, out, type: "f32" })
        const tensorsBefore = tf.memory().numTensors

        // ours: the HF folder in tfjs with the trainer's LoRA layers holding the PEFT weights
        const ours = yield* LlamaModel.load(c.folder)
        const { adapted } = yield* applyPeftAdapter(ours, peft)
        const tally = yield* tallyAgainstLlamaCpp({ modelPath: out, prompts, vocabSize: c.config.vocabSize, ours: adapted, plain: ours })
        assert.deepStrictEqual(tally.topKMismatches, [])
        assert.isAbove(tally.compared, 30)
        assert.isBelow(tally.worst, 1e-4)
        // the adapter changes the model a lot, so agreeing within 1e-4 is not agreeing on "no change"
        assert.isAbove(tally.adapterEffect, 1e-2)
        adapted.dispose()
        ours.dispose()
        assert.strictEqual(tf.memory().numTensors, tensorsBefore)
      }).pipe(Effect.scoped))
  }

  // the same vocabularies under the other pre-tokenization / normalization setups the converter supports
  const variants = [
    {
      name: "GPT-2 ByteLevel regex (gpt-2)",
      from: cases[0],
      pre: "gpt-2",
      edit: (json: Record<string, unknown>) => ({
        ...json,
        pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
        model: { ...(json.model as object), ignore_merges: false }
      })
    },
    {
      name: "Qwen2 split regex (qwen2)",
      from: cases[0],
      pre: "qwen2",
      edit: (json: Record<string, unknown>) => ({
        ...json,
        pre_tokenizer: {
          type: "Sequence",
          pretokenizers: [
            { type: "Split", pattern: { Regex: llama3Regex.replace("\\p{N}{1,3}", "\\p{N}") }, behavior: "Isolated", invert: false },
            { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false }
          ]
        }
      })
    },
    {
      name: "Metaspace pre-tokenizer (prepend_scheme always)",
      from: cases[1],
      pre: "default",
      // llama.cpp always puts "▁" first, also after each added token; HF's Metaspace only before a segment that does
      // not start with a space: they agree on text that neither starts with a space nor holds added tokens (a known
      // llama.cpp limitation, documented in HfVocabulary.ts)
      plainTextOnly: true,
      edit: (json: Record<string, unknown>) => ({
        ...json,
        normalizer: null,
        pre_tokenizer: { type: "Metaspace", replacement: "\u2581", prepend_scheme: "always", split: false }
      })
    },
    {
      name: "Llama-2 legacy normalizer (Prepend ▁ + Replace)",
      from: cases[1],
      pre: "default",
      edit: (json: Record<string, unknown>) => ({
        ...json,
        normalizer: { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "\u2581" }, json.normalizer] }
      })
    }
  ] as const
  for (const v of variants) {
    it.effect(`tokenizer variant ${v.name}: llama.cpp tokenizes the merged GGUF as @huggingface/tokenizers does`, () =>
      Effect.gen(function*() {
        yield* setup()
        const folder = path.join(dir, `variant-${variants.indexOf(v)}`)
        fs.cpSync(v.from.folder, folder, { recursive: true })
        const json = JSON.parse(fs.readFileSync(path.join(folder, "tokenizer.json"), "utf8")) as Record<string, unknown>
        writeJson(path.join(folder, "tokenizer.json"), v.edit(json))
        const out = `${folder}.gguf`
        yield* exportMerged({ base: folder, adapter: `${v.from.folder}-peft`, out, type: "f16" })
        const header = yield* readGgufHeader(out)
        assert.strictEqual(metaString(header, "tokenizer.ggml.pre"), v.pre)
        const tokenizers = yield* Tokenizer
        const cpp = yield* tokenizers.load(out)
        const hf = yield* tokenizers.load(folder)
        const compared = "plainTextOnly" in v ? texts.filter((text) => !/<[A-Z|]/.test(text) && !/^\s/.test(text)) : texts
        assert.isAbove(compared.length, 20)
        for (const text of compared) assert.deepStrictEqual(cpp.tokenize(text, { special: true }), hf.tokenize(text), JSON.stringify(text))
        // the variant matters: the original folder's tokenizer splits some text differently
        const original = yield* tokenizers.load(v.from.folder)
        const differ = texts.filter((text) => JSON.stringify(original.tokenize(text)) !== JSON.stringify(hf.tokenize(text)))
        assert.isAbove(differ.length, 0)
      }).pipe(Effect.scoped))
  }

  it.effect("export base: the HF folder alone as GGUF equals the tfjs model of the folder; a GGUF base is refused", () =>
    Effect.gen(function*() {
      yield* setup()
      const c = cases[1]
      const out = path.join(dir, "converted-base.gguf")
      const report = yield* convertHfBase({ base: c.folder, out, type: "f32" })
      assert.strictEqual(report.modules, 0)
      const header = yield* readGgufHeader(out)
      assert.strictEqual(metaString(header, "tokenizer.ggml.model"), "llama")
      assert.strictEqual(metaString(header, "tokenizer.chat_template"), c.template)
      const tensorsBefore = tf.memory().numTensors
      const ours = yield* LlamaModel.load(c.folder)
      const tally = yield* tallyAgainstLlamaCpp({ modelPath: out, prompts, vocabSize: c.config.vocabSize, ours })
      assert.deepStrictEqual(tally.topKMismatches, [])
      assert.isAbove(tally.compared, 30)
      assert.isBelow(tally.worst, 1e-4)
      ours.dispose()
      assert.strictEqual(tf.memory().numTensors, tensorsBefore)

      const refused = yield* Effect.flip(convertHfBase({ base: out, out: path.join(dir, "again.gguf"), type: "f32" }))
      assert.include(refused.message, "is a GGUF already")
      assert.isFalse(fs.existsSync(path.join(dir, "again.gguf")))
    }).pipe(Effect.scoped))

  it.effect("q8_0 from an HF folder: quantized 2-D weights, F32 norms, close to the f32 merge", () =>
    Effect.gen(function*() {
      yield* setup()
      const c = cases[0]
      const f32 = path.join(dir, "q8-reference.gguf")
      const q8 = path.join(dir, "q8.gguf")
      yield* exportMerged({ base: c.folder, adapter: `${c.folder}-peft`, out: f32, type: "f32" })
      yield* exportMerged({ base: c.folder, adapter: `${c.folder}-peft`, out: q8, type: "q8_0" })
      const header = yield* readGgufHeader(q8)
      assert.strictEqual(metaNumber(header, "general.file_type"), 7)
      assert.strictEqual(header.tensors.find((t) => t.name === "blk.0.attn_q.weight")!.typeName, "Q8_0")
      assert.strictEqual(header.tensors.find((t) => t.name === "blk.0.attn_norm.weight")!.typeName, "F32")
      const llamaCpp = yield* LlamaCpp
      const reference = yield* llamaCpp.loadModel({ modelPath: f32 })
      const quantized = yield* llamaCpp.loadModel({ modelPath: q8 })
      const tokens = [Number(reference.tokens.bos!), ...reference.tokenize(prompts[0]!, false).map(Number)]
      const dists = (m: LlamaCppModel) =>
        Effect.acquireUseRelease(
          Effect.promise(() => exactContext(m, 128)),
          (ctx) => Effect.promise(() => llamaCppDistributions(ctx.getSequence(), tokens, c.config.vocabSize)),
          (ctx) => Effect.promise(() => ctx.dispose())
        )
      const [a, b] = [yield* dists(reference), yield* dists(quantized)]
      const worst = Math.max(...a.map((p, i) => maxAbsDiff(p, b[i]!)))
      assert.isBelow(worst, 2e-2)
      assert.isAbove(worst, 0) // it really is quantized
    }).pipe(Effect.scoped))

  it.effect("refuses a tokenizer llama.cpp cannot reproduce, naming the file and field, and writes nothing", () =>
    Effect.gen(function*() {
      yield* setup()
      const c = cases[0]
      const odd = path.join(dir, "odd-regex")
      fs.cpSync(c.folder, odd, { recursive: true })
      writeJson(path.join(odd, "tokenizer.json"), llama3TokenizerFiles("\\p{L}+|\\p{N}+|[^\\p{L}\\p{N}]+").tokenizerJson)
      const out = path.join(dir, "never.gguf")
      const error = yield* Effect.flip(exportMerged({ base: odd, adapter: `${c.folder}-peft`, out, type: "f32" }))
      assert.strictEqual(error._tag, "ModelFileError")
      assert.include(error.message, path.join(odd, "tokenizer.json"))
      assert.include(error.message, "pre_tokenizer")
      assert.include(error.message, "unsupported pre-tokenizer regex")
      assert.include(error.message, "llama-bpe")
      assert.isFalse(fs.existsSync(out))

      fs.rmSync(path.join(odd, "tokenizer.json"))
      const missing = yield* Effect.flip(exportMerged({ base: odd, adapter: `${c.folder}-peft`, out, type: "f32" }))
      assert.include(missing.message, "tokenizer.json: missing")

      const paths = { tokenizer: "t.json", tokenizerConfig: "tc.json", modelConfig: "c.json" }
      const unigram = { model: { type: "Unigram", vocab: { a: 0 } } }
      assert.throws(() => ggufVocabularyFromHf({ tokenizer: unigram, tokenizerConfig: {}, modelConfig: {}, paths }, 4), /t\.json: model\.type: unsupported tokenizer model "Unigram"/)
      const splitting = { model: { type: "BPE", byte_fallback: true, vocab: { a: 0 } }, pre_tokenizer: { type: "Metaspace", replacement: "\u2581", split: true } }
      assert.throws(() => ggufVocabularyFromHf({ tokenizer: splitting, tokenizerConfig: {}, modelConfig: {}, paths }, 4), /pre_tokenizer\.split/)
      const unescaped = { model: { type: "BPE", byte_fallback: true, vocab: { a: 0 } }, normalizer: null, pre_tokenizer: null }
      assert.throws(() => ggufVocabularyFromHf({ tokenizer: unescaped, tokenizerConfig: {}, modelConfig: {}, paths }, 4), /t\.json: normalizer: .*turn spaces into "▁"/)
      const tooBig = { model: { type: "BPE", byte_fallback: true, vocab: { a: 0, b: 9 } }, pre_tokenizer: { type: "Metaspace", replacement: "\u2581" } }
      assert.throws(() => ggufVocabularyFromHf({ tokenizer: tooBig, tokenizerConfig: {}, modelConfig: {}, paths }, 4), /outside the model's 4 embedding rows/)
    }))
})
