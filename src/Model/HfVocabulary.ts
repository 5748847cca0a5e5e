/**
 * A Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) as GGUF tokenizer metadata, so a model merged
 * from an HF folder is a standalone GGUF that llama.cpp tokenizes as `@huggingface/tokenizers` does. Follows
 * llama.cpp's `convert_hf_to_gguf.py` (`get_vocab_base`, `_set_vocab_gpt2`, `_set_vocab_llama_hf`) and gguf-py's
 * `SpecialVocab`, with two deliberate differences, both for token-for-token parity:
 *
 * - SentencePiece-derived BPE (byte_fallback, "▁"): llama.cpp's SPM tokenizer merges by token score, and
 *   `LlamaHfVocab` writes -1000 for every score (so llama.cpp merges left to right, not as HF does). Here each token
 *   scores minus the rank of the first merge that builds it, which is the SentencePiece score order the HF merges
 *   were generated from. Added tokens inside the base vocabulary keep their added type (user-defined / control)
 *   instead of becoming normal, so placeholders stay one token.
 * - Byte-level BPE: the pre-tokenizer (llama-bpe, qwen2 or gpt-2) is recognised by its regex (llama.cpp hashes a tokenization instead, which needs
 *   Python transformers); an unknown regex is refused rather than tokenized with the wrong one.
 *
 * Everything explicit (add_bos/add_eos, add_space_prefix), so llama.cpp's per-type defaults never decide.
 *
 * Known limit (llama.cpp's, not fixable in metadata): its SentencePiece tokenizer always puts the "▁" prefix first,
 * and again after every added token, as SentencePiece and HF's `Prepend` normalizer (Llama 2, Mistral, TinyLlama)
 * do; HF's `Metaspace` pre-tokenizer (legacy = false conversions) skips it before text that starts with a space, and
 * with `prepend_scheme: "first"` after added tokens, so there the two differ on such text.
 */
import { Effect, FileSystem, Path, Schema } from "effect"
import { TokenType } from "./FinanceVocabulary.ts"
import { gguf, type GgufValue } from "./Gguf.ts"
import { fileError, toFileError } from "./ModelFileError.ts"
import { describeCause } from "../Shared/Errors.ts"
import { ggufKeys, namedChatTemplateKey } from "./GgufKeys.ts"

/** The pre-tokenizer regexes llama.cpp knows, by the `tokenizer.ggml.pre` name it knows them by. */
const knownPreTokenizers: ReadonlyArray<{ readonly pre: string; readonly regex: string }> = [
  {
    pre: "llama-bpe",
    regex: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
  },
  {
    pre: "qwen2",
    regex: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
  },
  // what a ByteLevel pre-tokenizer with use_regex applies
  { pre: "gpt-2", regex: "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+" }
]

const AddedToken = Schema.Struct({
  id: Schema.Int,
  content: Schema.String,
  special: Schema.optionalKey(Schema.Boolean)
})

/** A normalizer / pre-tokenizer / post-processor node: its type and the fields we inspect. */
interface Component {
  readonly type?: string
  readonly [field: string]: unknown
}
const ComponentSchema = Schema.NullOr(Schema.Record(Schema.String, Schema.Unknown))

const TokenizerJson = Schema.Struct({
  added_tokens: Schema.optionalKey(Schema.NullOr(Schema.Array(AddedToken))),
  normalizer: Schema.optionalKey(ComponentSchema),
  pre_tokenizer: Schema.optionalKey(ComponentSchema),
  post_processor: Schema.optionalKey(ComponentSchema),
  model: Schema.Struct({
    type: Schema.optionalKey(Schema.String),
    vocab: Schema.Record(Schema.String, Schema.Int),
    merges: Schema.optionalKey(Schema.Union([Schema.Array(Schema.String), Schema.Array(Schema.Tuple([Schema.String, Schema.String]))])),
    byte_fallback: Schema.optionalKey(Schema.NullOr(Schema.Boolean)),
    unk_token: Schema.optionalKey(Schema.NullOr(Schema.String))
  })
})
type TokenizerJson = typeof TokenizerJson.Type

const TokenValue = Schema.NullOr(Schema.Union([Schema.String, Schema.Struct({ content: Schema.String })]))
const NamedTemplate = Schema.Struct({ name: Schema.String, template: Schema.String })
const TokenizerConfig = Schema.Struct({
  add_bos_token: Schema.optionalKey(Schema.NullOr(Schema.Boolean)),
  add_eos_token: Schema.optionalKey(Schema.NullOr(Schema.Boolean)),
  bos_token: Schema.optionalKey(TokenValue),
  eos_token: Schema.optionalKey(TokenValue),
  unk_token: Schema.optionalKey(TokenValue),
  pad_token: Schema.optionalKey(TokenValue),
  chat_template: Schema.optionalKey(Schema.NullOr(Schema.Union([Schema.String, Schema.Array(NamedTemplate)])))
})
type TokenizerConfig = typeof TokenizerConfig.Type

/** config.json's special token ids (the fallback when tokenizer_config.json names none). */
const ModelConfigIds = Schema.Struct({
  bos_token_id: Schema.optionalKey(Schema.Unknown),
  eos_token_id: Schema.optionalKey(Schema.Unknown),
  unk_token_id: Schema.optionalKey(Schema.Unknown),
  pad_token_id: Schema.optionalKey(Schema.Unknown)
})
type ModelConfigIds = typeof ModelConfigIds.Type

/** The files of an HF tokenizer, parsed; `paths` are for error messages. */
export interface HfTokenizerFiles {
  readonly tokenizer: unknown
  readonly tokenizerConfig: unknown
  readonly modelConfig: unknown
  /** chat_template.jinja, when the folder has one (newer transformers write the template there) */
  readonly chatTemplateJinja?: string | undefined
  readonly paths: { readonly tokenizer: string; readonly tokenizerConfig: string; readonly modelConfig: string }
}

export interface GgufVocabulary {
  /** "gpt2" (byte-level BPE) or "llama" (SentencePiece-derived) */
  readonly model: "gpt2" | "llama"
  readonly pre: string
  readonly tokens: ReadonlyArray<string>
  readonly types: Int32Array
  readonly metadata: ReadonlyArray<readonly [string, GgufValue]>
}

const tokenText = (t: typeof TokenValue.Type | undefined): string | undefined =>
  t === null || t === undefined ? undefined : typeof t === "string" ? t : t.content

const isComponent = (value: unknown): value is Component => typeof value === "object" && value !== null && !Array.isArray(value)

/** A node and, for a `Sequence`, its children (normalizers / pretokenizers / processors). */
const flatten = (node: unknown, key: string): Array<Component> => {
  if (!isComponent(node)) return []
  const children = node[key]
  return node.type === "Sequence" && Array.isArray(children) ? children.flatMap((c) => flatten(c, key)) : [node]
}

const stringPattern = (node: Component): string | undefined => {
  const pattern = node.pattern
  return isComponent(pattern) && typeof pattern.String === "string" ? pattern.String : undefined
}

const space = "\u2581"

/** SentencePiece-derived BPE: llama.cpp's "llama" tokenizer adds the "▁" prefix itself and replaces spaces. */
const spmSpacePrefix = (json: TokenizerJson, file: string): boolean => {
  let prefix = false
  let escapesSpaces = false
  for (const n of flatten(json.normalizer, "normalizers")) {
    if (n.type === "Prepend" && n.prepend === space) prefix = true
    else if (n.type === "Replace" && stringPattern(n) === " " && n.content === space) escapesSpaces = true
    else throw fileError(file, `unsupported normalizer ${JSON.stringify(n.type)} for a SentencePiece-style tokenizer (supported: Prepend "▁", Replace " " -> "▁")`, "normalizer")
  }
  for (const p of flatten(json.pre_tokenizer, "pretokenizers")) {
    if (p.type !== "Metaspace" || (p.replacement !== undefined && p.replacement !== space)) {
      throw fileError(file, `unsupported pre_tokenizer ${JSON.stringify(p.type)} for a SentencePiece-style tokenizer (supported: none, or Metaspace "▁")`, "pre_tokenizer")
    }
    if (p.split === true) throw fileError(file, "a Metaspace pre-tokenizer that splits on spaces has no llama.cpp equivalent", "pre_tokenizer.split")
    const scheme = typeof p.prepend_scheme === "string" ? p.prepend_scheme : p.add_prefix_space === false ? "never" : "always"
    if (scheme !== "never") prefix = true
    escapesSpaces = true
  }
  // llama.cpp's SentencePiece tokenizer always writes spaces as "▁"
  if (!escapesSpaces) {
    throw fileError(file, "a SentencePiece-style tokenizer must turn spaces into \"▁\" (a Replace normalizer or a Metaspace pre-tokenizer), as llama.cpp's does", "normalizer")
  }
  return prefix
}

/** Byte-level BPE: the `tokenizer.ggml.pre` name of its split regex. */
const byteLevelPre = (json: TokenizerJson, file: string): string => {
  if (flatten(json.normalizer, "normalizers").length > 0) {
    throw fileError(file, "a byte-level BPE tokenizer with a normalizer has no llama.cpp equivalent", "normalizer")
  }
  const steps = flatten(json.pre_tokenizer, "pretokenizers")
  const byteLevel = steps.filter((s) => s.type === "ByteLevel")
  if (byteLevel.length !== 1) throw fileError(file, "a byte-level BPE tokenizer needs one ByteLevel pre-tokenizer", "pre_tokenizer")
  if (byteLevel[0]!.add_prefix_space === true) throw fileError(file, "ByteLevel add_prefix_space has no llama.cpp equivalent", "pre_tokenizer.add_prefix_space")
  const regexes = steps.filter((s) => s.type === "Split").map((s) => {
    const pattern = s.pattern
    const regex = isComponent(pattern) && typeof pattern.Regex === "string" ? pattern.Regex : undefined
    if (regex === undefined || (s.behavior !== undefined && s.behavior !== "Isolated") || s.invert === true) {
      throw fileError(file, "only Split pre-tokenizers with an isolated Regex pattern are supported", "pre_tokenizer")
    }
    return regex
  })
  const others = steps.filter((s) => s.type !== "ByteLevel" && s.type !== "Split")
  if (others.length > 0) throw fileError(file, `unsupported pre-tokenizer ${JSON.stringify(others[0]!.type)}`, "pre_tokenizer")
  if (byteLevel[0]!.use_regex !== false) regexes.push(knownPreTokenizers.find((k) => k.pre === "gpt-2")!.regex)
  if (regexes.length !== 1) throw fileError(file, `expected one split regex, found ${regexes.length}`, "pre_tokenizer")
  const known = knownPreTokenizers.find((k) => k.regex === regexes[0])
  if (known === undefined) {
    throw fileError(file, `unsupported pre-tokenizer regex ${JSON.stringify(regexes[0])} (llama.cpp knows: ${knownPreTokenizers.map((k) => k.pre).join(", ")})`, "pre_tokenizer")
  }
  return known.pre
}

/** BOS / EOS added by a TemplateProcessing post-processor (gguf-py's crude parse: first and last special token). */
const templateAdds = (json: TokenizerJson, bos: string | undefined, eos: string | undefined) => {
  const result: { bos?: boolean; eos?: boolean } = {}
  for (const p of flatten(json.post_processor, "processors")) {
    if (p.type !== "TemplateProcessing" || !Array.isArray(p.single) || p.single.length < 2) continue
    const special = (item: unknown) => {
      const s = isComponent(item) ? item.SpecialToken : undefined
      return isComponent(s) && typeof s.id === "string" ? s.id : undefined
    }
    const first = special(p.single[0]), last = special(p.single[p.single.length - 1])
    if (first !== undefined) result.bos = first === bos
    if (last !== undefined) result.eos = last === eos
  }
  return result
}

/** llama.cpp treats `<|...|>` tokens as control tokens whatever their special flag (convert's does_token_look_special). */
const looksSpecial = (text: string) => /^<\|.*\|>$/.test(text)

const decodeTokenizerJson = Schema.decodeUnknownSync(TokenizerJson)
const decodeTokenizerConfig = Schema.decodeUnknownSync(TokenizerConfig)
const decodeModelConfigIds = Schema.decodeUnknownSync(ModelConfigIds)

/** Runs a decoder; its failure becomes an error naming the file. */
const decodeOrFail = <A>(decode: (value: unknown) => A, value: unknown, file: string): A => {
  try {
    return decode(value)
  } catch (cause) {
    throw fileError(file, describeCause(cause))
  }
}

/**
 * The GGUF tokenizer of an HF tokenizer, padded to `vocabSize` (the model's embedding rows) with unused
 * `[PADn]` tokens as llama.cpp's converter does. Throws `ModelFileError` naming the file and field.
 */
export const ggufVocabularyFromHf = (files: HfTokenizerFiles, vocabSize: number): GgufVocabulary => {
  const file = files.paths.tokenizer
  const json = decodeOrFail(decodeTokenizerJson, files.tokenizer, file)
  const config: TokenizerConfig = decodeOrFail(decodeTokenizerConfig, files.tokenizerConfig ?? {}, files.paths.tokenizerConfig)
  const modelIds: ModelConfigIds = decodeOrFail(decodeModelConfigIds, files.modelConfig ?? {}, files.paths.modelConfig)
  if (json.model.type !== undefined && json.model.type !== "BPE") {
    throw fileError(file, `unsupported tokenizer model ${JSON.stringify(json.model.type)} (supported: BPE, byte-level or SentencePiece-style)`, "model.type")
  }
  const spm = json.model.byte_fallback === true
  const pre = spm ? "default" : byteLevelPre(json, file)
  const addSpacePrefix = spm ? spmSpacePrefix(json, file) : false

  const tokens: Array<string | undefined> = new Array(vocabSize)
  const types = new Int32Array(vocabSize).fill(TokenType.normal)
  const place = (text: string, id: number, field: string) => {
    if (id < 0 || id >= vocabSize) {
      throw fileError(file, `token ${JSON.stringify(text)} has id ${id}, outside the model's ${vocabSize} embedding rows (config.json vocab_size)`, field)
    }
    tokens[id] = text
  }
  for (const [text, id] of Object.entries(json.model.vocab)) place(text, id, "model.vocab")
  const added = json.added_tokens ?? []
  for (const t of added) {
    place(t.content, t.id, "added_tokens")
    types[t.id] = t.special === true || looksSpecial(t.content) ? TokenType.control : TokenType.userDefined
  }
  const unk = json.model.unk_token ?? undefined
  for (let id = 0; id < vocabSize; id++) {
    const text = tokens[id]
    if (text === undefined) {
      tokens[id] = `[PAD${id}]`
      types[id] = TokenType.unused
    } else if (spm && /^<0x[0-9A-Fa-f]{2}>$/.test(text)) {
      types[id] = TokenType.byte
    } else if (spm && text === unk) {
      types[id] = TokenType.unknown
    }
  }
  const texts = tokens as Array<string>

  const merges = (json.model.merges ?? []).map((m): readonly [string, string] => {
    if (typeof m !== "string") return m
    const cut = m.indexOf(" ", 1)
    return [m.slice(0, cut), m.slice(cut + 1)]
  })
  const metadata: Array<readonly [string, GgufValue]> = [
    [ggufKeys.tokenizerModel, gguf.string(spm ? "llama" : "gpt2")],
    [ggufKeys.tokenizerPre, gguf.string(pre)],
    [ggufKeys.tokens, gguf.strings(texts)]
  ]
  if (spm) {
    // SentencePiece merges by score: a token scores minus the rank of the first HF merge that builds it
    const ids = new Map(texts.map((t, i) => [t, i]))
    const scores = new Float32Array(vocabSize)
    const built = new Uint8Array(vocabSize)
    merges.forEach(([left, right], rank) => {
      const id = ids.get(left + right)
      if (id !== undefined && built[id] === 0) {
        scores[id] = -1 - rank
        built[id] = 1
      }
    })
    // a multi-character normal token no merge builds is unreachable in HF; last in llama.cpp's order too
    texts.forEach((t, id) => {
      if (built[id] === 0 && types[id] === TokenType.normal && Array.from(t).length > 1) scores[id] = -1 - merges.length
      if (types[id] === TokenType.unused) scores[id] = -1e9
    })
    metadata.push([ggufKeys.scores, gguf.f32s(scores)])
  }
  metadata.push([ggufKeys.tokenType, gguf.i32s(types)])
  // gguf-py writes merges with a space inside a part as U+0120 (byte-level's space)
  if (!spm) metadata.push([ggufKeys.merges, gguf.strings(merges.map(([l, r]) => `${l.replaceAll(" ", "\u0120")} ${r.replaceAll(" ", "\u0120")}`))])

  // special ids: tokenizer_config.json's tokens (as added tokens), then config.json's ids, as SpecialVocab does
  const idOfText = (text: string | undefined) => text === undefined ? undefined : added.find((t) => t.content === text)?.id ?? json.model.vocab[text]
  const validId = (v: unknown) => typeof v === "number" && Number.isInteger(v) && v >= 0 && v < vocabSize ? v : undefined
  const bosText = tokenText(config.bos_token), eosText = tokenText(config.eos_token)
  const specials: Array<readonly [string, number | undefined]> = [
    [ggufKeys.bosTokenId, validId(idOfText(bosText)) ?? validId(modelIds.bos_token_id)],
    [ggufKeys.eosTokenId, validId(idOfText(eosText)) ?? validId(Array.isArray(modelIds.eos_token_id) ? modelIds.eos_token_id[0] : modelIds.eos_token_id)],
    [ggufKeys.unknownTokenId, validId(idOfText(tokenText(config.unk_token) ?? unk)) ?? validId(modelIds.unk_token_id)],
    [ggufKeys.paddingTokenId, validId(idOfText(tokenText(config.pad_token))) ?? validId(modelIds.pad_token_id)]
  ]
  for (const [key, id] of specials) if (id !== undefined) metadata.push([key, gguf.u32(id)])
  const template = templateAdds(json, bosText, eosText)
  metadata.push([ggufKeys.addBosToken, gguf.bool(config.add_bos_token ?? template.bos ?? false)])
  metadata.push([ggufKeys.addEosToken, gguf.bool(config.add_eos_token ?? template.eos ?? false)])
  if (spm) metadata.push([ggufKeys.addSpacePrefix, gguf.bool(addSpacePrefix)])

  const chat = config.chat_template ?? files.chatTemplateJinja
  if (typeof chat === "string") metadata.push([ggufKeys.chatTemplate, gguf.string(chat)])
  else if (chat !== undefined && chat !== null) {
    for (const { name, template: text } of chat) {
      metadata.push([name === "default" ? ggufKeys.chatTemplate : namedChatTemplateKey(name), gguf.string(text)])
    }
  }
  return { model: spm ? "llama" : "gpt2", pre, tokens: texts, types, metadata }
}

/** Reads a folder's tokenizer files (tokenizer.json required) and converts them. */
export const readHfVocabulary = Effect.fn("HfVocabulary.read")(function*(folder: string, vocabSize: number) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const paths = {
    tokenizer: path.join(folder, "tokenizer.json"),
    tokenizerConfig: path.join(folder, "tokenizer_config.json"),
    modelConfig: path.join(folder, "config.json")
  }
  const readJson = (file: string, required: boolean) =>
    Effect.gen(function*() {
      const exists = yield* fs.exists(file).pipe(Effect.orElseSucceed(() => false))
      if (!exists) {
        return required
          ? yield* fileError(file, "missing: an HF base needs its tokenizer.json (the merged GGUF carries the base's tokenizer)")
          : undefined
      }
      const text = yield* fs.readFileString(file).pipe(Effect.mapError(toFileError(file)))
      return yield* Effect.try({ try: () => JSON.parse(text) as unknown, catch: toFileError(file) })
    })
  const jinjaPath = path.join(folder, "chat_template.jinja")
  const chatTemplateJinja = (yield* fs.exists(jinjaPath).pipe(Effect.orElseSucceed(() => false)))
    ? yield* fs.readFileString(jinjaPath).pipe(Effect.mapError(toFileError(jinjaPath)))
    : undefined
  const files: HfTokenizerFiles = {
    tokenizer: yield* readJson(paths.tokenizer, true),
    tokenizerConfig: yield* readJson(paths.tokenizerConfig, false),
    modelConfig: yield* readJson(paths.modelConfig, false),
    chatTemplateJinja,
    paths
  }
  return yield* Effect.try({ try: () => ggufVocabularyFromHf(files, vocabSize), catch: toFileError(paths.tokenizer) })
})
