/**
 * What `model info` reports about a GGUF file or a Hugging Face folder: architecture, shape, parameter count,
 * tensor types, tokenizer facts. Reads headers only (GGUF header, config.json, safetensors headers, tokenizer files).
 */
import { Effect, Result } from "effect"
import * as fs from "node:fs"
import { join } from "node:path"
import { TokenType } from "./FinanceVocabulary.ts"
import { ggmlTypeName } from "./GgmlQuants.ts"
import { metaArray, metaBool, metaNumber, metaString, readGgufHeader } from "./Gguf.ts"
import type { LlamaConfig } from "./ModelContracts.ts"
import { type ModelFileError, toFileError } from "./ModelFileError.ts"
import { loadModelSource } from "./ModelLoader.ts"
import { readSafetensorsHeader } from "./Safetensors.ts"
import { parameterCount } from "./TinyModel.ts"
import { ggufKeys } from "./GgufKeys.ts"

export interface TokenizerFacts {
  readonly kind: string
  readonly vocabSize: number
  readonly bos?: string
  readonly eos?: string
  readonly eot?: string
  readonly addBos?: boolean
  readonly controlTokens?: number
  readonly userDefinedTokens?: number
  readonly byteTokens?: number
  readonly chatTemplate: boolean
}

export interface ModelInfo {
  readonly path: string
  readonly format: "gguf" | "hf"
  readonly architecture: string
  readonly name?: string
  readonly fileBytes: number
  /** absent when the file is not a Llama-family model this project loads (then `configError` says why) */
  readonly config?: LlamaConfig
  readonly configError?: string
  /** elements of all weight tensors (llama.cpp's rope_freqs factors excluded) */
  readonly parameters: number
  /** tensor type (GGUF ggml type or safetensors dtype) -> number of tensors */
  readonly tensorTypes: Readonly<Record<string, number>>
  readonly tensors: number
  readonly tokenizer?: TokenizerFacts
}

const countBy = (items: ReadonlyArray<string>) => {
  const counts: Record<string, number> = {}
  for (const item of items) counts[item] = (counts[item] ?? 0) + 1
  return counts
}

const ggufInfo = (path: string) =>
  Effect.gen(function*() {
    const header = yield* readGgufHeader(path)
    // describe what is there even when it is not a model we load (another architecture, an adapter)
    const loaded = yield* Effect.result(loadModelSource(path))
    const tokens = metaArray(header, ggufKeys.tokens)?.values as ReadonlyArray<string> | undefined
    const types = metaArray(header, ggufKeys.tokenType)?.values as Int32Array | undefined
    const tokenAt = (key: string) => {
      const id = metaNumber(header, key)
      return id === undefined || tokens === undefined ? undefined : `${JSON.stringify(tokens[id])} (${id})`
    }
    const typeCount = (type: number) => types === undefined ? undefined : types.reduce((n, t) => n + (t === type ? 1 : 0), 0)
    const optional = <K extends string, V>(key: K, value: V | undefined) => value === undefined ? {} : { [key]: value } as { [P in K]: V }
    const tokenizer: TokenizerFacts | undefined = tokens === undefined ? undefined : {
      kind: `gguf ${metaString(header, ggufKeys.tokenizerModel) ?? "?"}`,
      vocabSize: tokens.length,
      ...optional("bos", tokenAt(ggufKeys.bosTokenId)),
      ...optional("eos", tokenAt(ggufKeys.eosTokenId)),
      ...optional("eot", tokenAt(ggufKeys.eotTokenId)),
      ...optional("addBos", metaBool(header, ggufKeys.addBosToken)),
      ...optional("controlTokens", typeCount(TokenType.control)),
      ...optional("userDefinedTokens", typeCount(TokenType.userDefined)),
      ...optional("byteTokens", typeCount(TokenType.byte)),
      chatTemplate: metaString(header, ggufKeys.chatTemplate) !== undefined
    }
    const name = metaString(header, ggufKeys.name)
    const info: ModelInfo = {
      path,
      format: "gguf",
      architecture: metaString(header, ggufKeys.architecture) ?? "?",
      ...(name === undefined ? {} : { name }),
      fileBytes: header.fileSize,
      ...(Result.isSuccess(loaded) ? { config: loaded.success.config } : { configError: loaded.failure.detail }),
      parameters: header.tensors.filter((t) => t.name !== "rope_freqs.weight").reduce((n, t) => n + t.numel, 0),
      tensorTypes: countBy(header.tensors.map((t) => ggmlTypeName(t.type))),
      tensors: header.tensors.length,
      ...(tokenizer === undefined ? {} : { tokenizer })
    }
    return info
  })

const hfTokenizerFacts = (folder: string): TokenizerFacts | undefined => {
  const jsonPath = join(folder, "tokenizer.json")
  if (!fs.existsSync(jsonPath)) return undefined
  const json = JSON.parse(fs.readFileSync(jsonPath, "utf8")) as {
    model?: { type?: string; vocab?: Record<string, number> | Array<unknown> }
    added_tokens?: Array<{ content: string; id: number; special?: boolean }>
  }
  const configPath = join(folder, "tokenizer_config.json")
  const config = fs.existsSync(configPath)
    ? JSON.parse(fs.readFileSync(configPath, "utf8")) as Record<string, unknown>
    : {}
  const vocab = json.model?.vocab
  const added = json.added_tokens ?? []
  const modelSize = vocab === undefined ? 0 : Array.isArray(vocab) ? vocab.length : Object.keys(vocab).length
  const ids = new Set([...(Array.isArray(vocab) || vocab === undefined ? [] : Object.values(vocab)), ...added.map((t) => t.id)])
  const tokenText = (value: unknown) =>
    typeof value === "string" ? value
      : typeof value === "object" && value !== null && "content" in value ? String(value.content) : undefined
  const bos = tokenText(config.bos_token), eos = tokenText(config.eos_token)
  return {
    kind: `huggingface ${json.model?.type ?? "?"}`,
    vocabSize: Math.max(modelSize, ids.size),
    ...(bos === undefined ? {} : { bos: JSON.stringify(bos) }),
    ...(eos === undefined ? {} : { eos: JSON.stringify(eos) }),
    ...(typeof config.add_bos_token === "boolean" ? { addBos: config.add_bos_token } : {}),
    controlTokens: added.filter((t) => t.special === true).length,
    userDefinedTokens: added.filter((t) => t.special !== true).length,
    chatTemplate: config.chat_template !== undefined && config.chat_template !== null
  }
}

const hfInfo = (folder: string) =>
  Effect.gen(function*() {
    const source = yield* loadModelSource(folder)
    const config = yield* Effect.try({
      try: () => JSON.parse(fs.readFileSync(join(folder, "config.json"), "utf8")) as { model_type?: string; architectures?: Array<string> },
      catch: toFileError(join(folder, "config.json"))
    })
    const files = fs.readdirSync(folder).filter((f) => f.endsWith(".safetensors")).map((f) => join(folder, f))
    const dtypes: Array<string> = []
    let bytes = 0
    for (const file of files) {
      const { tensors } = yield* readSafetensorsHeader(file)
      dtypes.push(...tensors.map((t) => t.dtype))
      bytes += fs.statSync(file).size
    }
    const tokenizer = yield* Effect.try({ try: () => hfTokenizerFacts(folder), catch: toFileError(join(folder, "tokenizer.json")) })
    const name = config.architectures?.[0]
    const info: ModelInfo = {
      path: folder,
      format: "hf",
      architecture: config.model_type ?? "?",
      ...(name === undefined ? {} : { name }),
      fileBytes: bytes,
      config: source.config,
      parameters: parameterCount(source.config),
      tensorTypes: countBy(dtypes),
      tensors: dtypes.length,
      ...(tokenizer === undefined ? {} : { tokenizer })
    }
    return info
  })

/** Describes a GGUF file or a Hugging Face folder. */
export const describeModel = (path: string): Effect.Effect<ModelInfo, ModelFileError> =>
  Effect.suspend(() => fs.existsSync(path) && fs.statSync(path).isDirectory() ? hfInfo(path) : ggufInfo(path))

const human = (n: number) =>
  n >= 1e9 ? `${(n / 1e9).toFixed(2)}B` : n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}K` : String(n)
const bytesText = (n: number) =>
  n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`

/** The human-readable report. */
export const formatModelInfo = (info: ModelInfo): string => {
  const c = info.config
  const lines = [
    `${info.path}`,
    `  format:        ${info.format === "gguf" ? "GGUF" : "Hugging Face folder"} (${bytesText(info.fileBytes)})`,
    `  architecture:  ${info.architecture}${info.name === undefined ? "" : ` (${info.name})`}`,
    `  parameters:    ${human(info.parameters)} (${info.parameters})`
  ]
  if (c === undefined) lines.push(`  config:        not loadable as a Llama-family model: ${info.configError ?? "?"}`)
  else lines.push(
    `  layers:        ${c.numLayers}, hidden ${c.hiddenSize}, intermediate ${c.intermediateSize}`,
    `  attention:     ${c.numHeads} heads, ${c.numKvHeads} KV heads, head dim ${c.headDim}` +
    (c.slidingWindow === undefined ? "" : `, sliding window ${c.slidingWindow}`),
    `  rope:          theta ${c.ropeTheta}` + (c.ropeScaling === undefined ? "" :
      `, llama3 scaling x${c.ropeScaling.factor} (low ${c.ropeScaling.lowFreqFactor}, high ${+c.ropeScaling.highFreqFactor.toFixed(4)}, original context ${c.ropeScaling.originalMaxPositionEmbeddings})`),
    `  context:       ${c.maxPositionEmbeddings}`,
    `  vocab:         ${c.vocabSize}, output ${c.tieWordEmbeddings ? "tied to the embedding" : "untied"}`,
    `  rms norm eps:  ${+c.rmsNormEps.toPrecision(6)}`
  )
  lines.push(
    `  tensors:       ${info.tensors} (${Object.entries(info.tensorTypes).sort(([a], [b]) => a < b ? -1 : 1).map(([t, n]) => `${t}: ${n}`).join(", ")})`
  )
  const t = info.tokenizer
  if (t === undefined) lines.push("  tokenizer:     none")
  else {
    lines.push(`  tokenizer:     ${t.kind}, ${t.vocabSize} tokens` +
      [["bos", t.bos], ["eos", t.eos], ["eot", t.eot]].filter(([, v]) => v !== undefined).map(([k, v]) => `, ${k} ${v}`).join("") +
      (t.addBos === undefined ? "" : `, add bos ${t.addBos}`))
    const kinds = [
      t.controlTokens === undefined ? undefined : `${t.controlTokens} control`,
      t.userDefinedTokens === undefined ? undefined : `${t.userDefinedTokens} user-defined`,
      t.byteTokens === undefined ? undefined : `${t.byteTokens} byte`
    ].filter((x) => x !== undefined)
    lines.push(`                 ${kinds.join(", ")}${kinds.length > 0 ? " tokens; " : ""}chat template: ${t.chatTemplate ? "yes" : "no"}`)
  }
  return lines.join("\n")
}
