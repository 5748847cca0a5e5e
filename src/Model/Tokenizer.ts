/**
 * Tokenizers identical to the serving side. A GGUF model is tokenized by llama.cpp itself (node-llama-cpp loads the
 * file vocab-only), so training sees exactly the ids serving will; a Hugging Face folder is tokenized by its
 * tokenizer.json through @huggingface/tokenizers. Chat templates (GGUF `tokenizer.chat_template` or
 * tokenizer_config.json `chat_template`) are rendered by ChatTemplate.ts, the one renderer serving and training use.
 */
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers"
import { Context, Effect, Layer, Schema, Scope } from "effect"
import * as fs from "node:fs"
import { join } from "node:path"
import type { Token } from "node-llama-cpp"
import { type ChatTurn, renderChatTemplate } from "./ChatTemplate.ts"
import { readGgufHeader } from "./Gguf.ts"
import { LlamaCpp } from "./LlamaCpp.ts"
import { causeKind, describeCause, kindField } from "../Shared/Errors.ts"

export class TokenizerError extends Schema.TaggedError<TokenizerError>()("TokenizerError", {
  path: Schema.String,
  detail: Schema.String,
  /** `data` (a broken tokenizer file) unless the file is missing or unreadable (`input`) */
  kind: kindField("data")
}) {
  override get message() {
    return `${this.path}: ${this.detail}`
  }
}

export interface TokenizeOptions {
  /** prepend BOS; default: what the model asks for (GGUF add_bos_token, HF post-processor) */
  readonly addBos?: boolean
  /**
   * parse control tokens written in the text (`<|user|>`, `<s>`), as for a rendered chat template; default false.
   * Placeholder tokens (user-defined, such as `<PRICE>`) are always one token. A Hugging Face tokenizer always
   * parses its added tokens (that is its own behaviour).
   */
  readonly special?: boolean
}

export interface ModelTokenizer {
  readonly source: "llama.cpp" | "huggingface"
  readonly path: string
  readonly vocabSize: number
  readonly bos: number | undefined
  readonly eos: number | undefined
  /** end of turn (e.g. `<|eot_id|>`, `<|end|>`), when the model has one */
  readonly eot: number | undefined
  readonly bosText: string | undefined
  readonly eosText: string | undefined
  readonly chatTemplate: string | undefined
  readonly tokenize: (text: string, options?: TokenizeOptions) => Array<number>
  /** `special`: render control tokens as text (default false: they are dropped) */
  readonly detokenize: (tokens: ReadonlyArray<number>, options?: { readonly special?: boolean }) => string
  /** the text of one token id (control tokens included) */
  readonly tokenText: (token: number) => string
  /** renders the model's chat template (fails when the model has none) */
  readonly applyChatTemplate: (
    messages: ReadonlyArray<ChatTurn>,
    options?: { readonly addGenerationPrompt?: boolean }
  ) => Effect.Effect<string, TokenizerError>
}


/** The model's chat template through the one renderer (ChatTemplate.ts); a failure names the model. */
const renderTemplate = (path: string, template: string | undefined, bos: string | undefined, eos: string | undefined) =>
  (messages: ReadonlyArray<ChatTurn>, options?: { readonly addGenerationPrompt?: boolean }) =>
    Effect.try({
      try: () => {
        if (template === undefined) throw new Error("the model has no chat template")
        return renderChatTemplate(template, messages, { bos: bos ?? "", eos: eos ?? "" }, options?.addGenerationPrompt ?? true)
      },
      catch: (cause) => new TokenizerError({ path, detail: `chat template: ${describeCause(cause)}` })
    })

/** llama.cpp's own tokenizer for a GGUF, through a vocab-only model load (no weights in memory). */
const ggufTokenizer = (llamaCpp: LlamaCpp["Service"], path: string) =>
  Effect.gen(function*() {
    // our own header check first: llama.cpp guesses its way through a corrupt file instead of failing cleanly
    yield* readGgufHeader(path).pipe(Effect.mapError((e) => new TokenizerError({ path, detail: e.detail, kind: e.kind })))
    const model = yield* llamaCpp.loadModel({ modelPath: path, vocabOnly: true }).pipe(
      Effect.mapError((e) => new TokenizerError({ path, detail: e.detail, kind: e.kind }))
    )
    const metadata = model.fileInfo.metadata as { tokenizer?: { chat_template?: string; ggml?: { tokens?: ReadonlyArray<string> } } }
    const vocabSize = metadata.tokenizer?.ggml?.tokens?.length ?? 0
    const tokens = model.tokens
    const bos = tokens.bos ?? undefined
    const chatTemplate = metadata.tokenizer?.chat_template
    const tokenizer: ModelTokenizer = {
      source: "llama.cpp",
      path,
      vocabSize,
      bos: bos === undefined ? undefined : Number(bos),
      eos: tokens.eos === null ? undefined : Number(tokens.eos),
      eot: tokens.eot === null ? undefined : Number(tokens.eot),
      bosText: tokens.bosString ?? undefined,
      eosText: tokens.eosString ?? undefined,
      chatTemplate,
      tokenize: (text, options) => {
        const ids = model.tokenize(text, options?.special ?? false).map(Number)
        const addBos = options?.addBos ?? tokens.shouldPrependBosToken
        return addBos && bos !== undefined ? [Number(bos), ...ids] : ids
      },
      detokenize: (ids, options) => model.detokenize(ids.map((id) => id as Token), options?.special ?? false),
      tokenText: (id) => model.detokenize([id as Token], true),
      applyChatTemplate: renderTemplate(path, chatTemplate, tokens.bosString ?? undefined, tokens.eosString ?? undefined)
    }
    return tokenizer
  })

const TokenValue = Schema.Union([Schema.String, Schema.Struct({ content: Schema.String })])
const HfTokenizerConfig = Schema.Struct({
  bos_token: Schema.optionalKey(Schema.NullOr(TokenValue)),
  eos_token: Schema.optionalKey(Schema.NullOr(TokenValue)),
  chat_template: Schema.optionalKey(Schema.NullOr(Schema.Union([
    Schema.String,
    Schema.Array(Schema.Struct({ name: Schema.String, template: Schema.String }))
  ])))
})
const decodeTokenizerConfig = Schema.decodeUnknownSync(Schema.fromJsonString(HfTokenizerConfig))
const tokenString = (t: typeof TokenValue.Type | null | undefined) =>
  t === null || t === undefined ? undefined : typeof t === "string" ? t : t.content

/** A Hugging Face folder's tokenizer.json (+ tokenizer_config.json) through @huggingface/tokenizers. */
const hfTokenizer = (folder: string) =>
  Effect.try({
    try: (): ModelTokenizer => {
      const jsonPath = join(folder, "tokenizer.json")
      const configPath = join(folder, "tokenizer_config.json")
      const configText = fs.existsSync(configPath) ? fs.readFileSync(configPath, "utf8") : "{}"
      let config: typeof HfTokenizerConfig.Type
      try {
        config = decodeTokenizerConfig(configText)
      } catch (cause) {
        throw new TokenizerError({ path: configPath, detail: describeCause(cause) })
      }
      const configObject = JSON.parse(configText) as object
      const json = JSON.parse(fs.readFileSync(jsonPath, "utf8")) as object
      const tokenizer = new HfTokenizer(json, configObject)
      const bosText = tokenString(config.bos_token)
      const eosText = tokenString(config.eos_token)
      const templates = config.chat_template
      const chatTemplate = templates === null || templates === undefined ? undefined
        : typeof templates === "string" ? templates
        : templates.find((t) => t.name === "default")?.template
      const idOf = (text: string | undefined) => text === undefined ? undefined : tokenizer.token_to_id(text)
      const vocab = tokenizer.get_vocab(true)
      const eot = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>"].map((t) => vocab.get(t)).find((id) => id !== undefined)
      const bos = idOf(bosText)
      return {
        source: "huggingface",
        path: folder,
        vocabSize: vocab.size,
        bos,
        eos: idOf(eosText),
        eot,
        bosText,
        eosText,
        chatTemplate,
        tokenize: (text, options) => {
          const ids = tokenizer.encode(text, { add_special_tokens: options?.addBos ?? true }).ids
          // the post-processor decides about BOS; honour an explicit request for one it does not add
          return options?.addBos === true && bos !== undefined && ids[0] !== bos ? [bos, ...ids] : ids
        },
        detokenize: (ids, options) =>
          ids.length === 0 ? "" : tokenizer.decode([...ids], { skip_special_tokens: !(options?.special ?? false), clean_up_tokenization_spaces: false }),
        tokenText: (id) => tokenizer.decode([id], { skip_special_tokens: false, clean_up_tokenization_spaces: false }),
        applyChatTemplate: renderTemplate(folder, chatTemplate, bosText, eosText)
      }
    },
    catch: (cause) => cause instanceof TokenizerError ? cause : new TokenizerError({ path: folder, detail: describeCause(cause), kind: causeKind(cause) ?? "data" })
  })

export class Tokenizer extends Context.Service<Tokenizer, {
  /** the tokenizer of a GGUF file or a Hugging Face folder; a GGUF's vocab-only model is freed with the scope */
  readonly load: (path: string) => Effect.Effect<ModelTokenizer, TokenizerError, Scope.Scope>
}>()("app/Training/Tokenizer") {
  static readonly layerNoDeps = Layer.effect(
    Tokenizer,
    Effect.gen(function*() {
      const llamaCpp = yield* LlamaCpp
      const load = Effect.fn("Tokenizer.load")(function*(path: string) {
        const isFolder = yield* Effect.try({
          try: () => fs.statSync(path).isDirectory(),
          catch: (cause) => new TokenizerError({ path, detail: describeCause(cause), kind: causeKind(cause) ?? "data" })
        })
        return isFolder ? yield* hfTokenizer(path) : yield* ggufTokenizer(llamaCpp, path)
      })
      return Tokenizer.of({ load })
    })
  )

  static readonly layer = Tokenizer.layerNoDeps.pipe(Layer.provide(LlamaCpp.layer))
}
