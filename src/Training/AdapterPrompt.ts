/**
 * The prompt an adapter was fine-tuned on, recorded with the adapter so that serving renders exactly that prompt
 * (an adapter asked in a layout it never saw rambles on to its token limit).
 *
 * - In a PEFT folder: `adapter_prompt.json` beside `adapter_config.json`, written by the trainer (both engines) into
 *   the final adapter folder: `{"prompt_layout": "chatml"}`, plus `"system_prompt"` when training used another than
 *   `defaultSystemPrompt`. PEFT ignores files it does not know.
 * - In a GGUF (an exported adapter, or a merged model): `finetune.prompt_layout` and `finetune.system_prompt`
 *   (`ggufKeys`), written by `export`; llama.cpp ignores keys it does not know.
 *
 * An adapter without a record (Python PEFT's, or one trained before the record existed) is served as before.
 */
import { Effect, FileSystem, Option, Path, Schema } from "effect"
import { gguf, type GgufHeader, type GgufValue, metaString } from "../Model/Gguf.ts"
import { ggufKeys } from "../Model/GgufKeys.ts"
import { fileError, type ModelFileError, toFileError } from "../Model/ModelFileError.ts"
import { defaultSystemPrompt, PromptLayout } from "../Dataset/PromptFormat.ts"

export const ADAPTER_PROMPT = "adapter_prompt.json"

/** The sidecar's JSON; `system_prompt` only when it is not `defaultSystemPrompt`. */
export const AdapterPromptJson = Schema.Struct({
  prompt_layout: PromptLayout,
  system_prompt: Schema.optionalKey(Schema.String)
})

/** The layout (and system prompt) an adapter was trained on. */
export interface TrainedPrompt {
  readonly layout: PromptLayout
  readonly systemPrompt: string
}

const decodeSidecar = Schema.decodeUnknownEffect(Schema.fromJsonString(AdapterPromptJson))
const isLayout = Schema.is(PromptLayout)

const trainedPrompt = (layout: PromptLayout, systemPrompt: string | undefined): TrainedPrompt => ({
  layout,
  systemPrompt: systemPrompt ?? defaultSystemPrompt
})

/** Writes `adapter_prompt.json` into an adapter folder. */
export const writeAdapterPrompt = Effect.fn("AdapterPrompt.write")(function*(
  dir: string,
  layout: PromptLayout,
  systemPrompt: string = defaultSystemPrompt
) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const file = path.join(dir, ADAPTER_PROMPT)
  const json = { prompt_layout: layout, ...(systemPrompt === defaultSystemPrompt ? {} : { system_prompt: systemPrompt }) }
  yield* fs.writeFileString(file, JSON.stringify(json, null, 2) + "\n").pipe(Effect.mapError(toFileError(file)))
})

/** The record of an adapter folder; none when the folder has no `adapter_prompt.json`; an invalid one fails naming it. */
export const readAdapterPrompt = Effect.fn("AdapterPrompt.read")(function*(dir: string) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const file = path.join(dir, ADAPTER_PROMPT)
  if (!(yield* fs.exists(file).pipe(Effect.orElseSucceed(() => false)))) return Option.none<TrainedPrompt>()
  const text = yield* fs.readFileString(file).pipe(Effect.mapError(toFileError(file)))
  const json = yield* decodeSidecar(text).pipe(Effect.mapError((e): ModelFileError => fileError(file, e.message)))
  return Option.some(trainedPrompt(json.prompt_layout, json.system_prompt))
})

/** The GGUF metadata that records a trained prompt. */
export const trainedPromptMetadata = (prompt: TrainedPrompt): ReadonlyArray<readonly [string, GgufValue]> => [
  [ggufKeys.promptLayout, gguf.string(prompt.layout)],
  ...(prompt.systemPrompt === defaultSystemPrompt ? [] : [[ggufKeys.systemPrompt, gguf.string(prompt.systemPrompt)] as const])
]

/**
 * The trained prompt a GGUF records, from its header; undefined when it records none. Throws a ModelFileError naming
 * the key for a layout this project does not know.
 */
export const trainedPromptOfGguf = (header: GgufHeader): TrainedPrompt | undefined => {
  const layout = metaString(header, ggufKeys.promptLayout)
  if (layout === undefined) return undefined
  if (!isLayout(layout)) {
    throw fileError(header.path, `unknown prompt layout "${layout}" (expected one of ${PromptLayout.literals.join(", ")})`, ggufKeys.promptLayout)
  }
  return trainedPrompt(layout, metaString(header, ggufKeys.systemPrompt))
}
