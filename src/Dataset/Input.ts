/**
 * Input formats and their mapping to the canonical TrainingRecord. One JSON line is one of:
 *
 * 1. a seed record (`question`, `answer`, …; Record.ts). `rationale`, `tickers` and `citations` may be
 *    missing (then "", the tickers named in the text, []); a missing `context_required` is derived (true
 *    when the normalized answer holds a live placeholder).
 * 2. a chat record `{"messages":[{role, content}…], "category"?}` (the original app's file, TRL's
 *    conversational format): question = the last user turn before the last assistant turn, answer = that
 *    assistant turn, intent = `category`, risk_note = the answer's closing disclaimer paragraph when it
 *    has one ("not financial advice", "educational"…), and `messages` = the whole conversation (system prompt and
 *    every turn), so training can format it in the model's chat template with loss on every assistant turn.
 * 3. a prompt/completion pair `{"prompt", "completion"}`: strings, or TRL's conversational form (arrays of
 *    messages). A prompt already in the seed layout (`Context: …\nQuestion: …\nAnswer:`) is split back
 *    into context and question. The conversational form keeps its whole conversation in `messages`, as chat.
 *
 * A canonical record (the ingest's own output) that carries `messages` beside `question`/`answer` reads as a seed
 * record with its messages.
 *
 * Extra fields rule: keys outside the format's known fields are dropped by default and counted by name in
 * the summary (`extraFields`); with `keepExtra` they are kept, written after the canonical keys in their
 * input order. Known chat keys (`messages`, `category`) and pair keys (`prompt`, `completion`) are consumed
 * by the mapping and are never "extra".
 */
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import { ChatMessage, SeedInput, TrainingRecord } from "./Record.ts"
import { isChatShaped, isSeedInput, seedDecoded, splitExtra, type Decoded, type InputIssue } from "./SeedRecord.ts"
import { findTickersInText } from "./Tickers.ts"

export { isSeedInput, seedKeys, type Decoded, type InputFormat, type InputIssue } from "./SeedRecord.ts"
// the Schema lives beside TrainingRecord, so SeedRecord.ts (worker-side, Schema-free) can name its type
export { SeedInput }

export { ChatMessage }
export const ChatInput = Schema.Struct({
  messages: Schema.Array(ChatMessage),
  category: Schema.optionalKey(Schema.String)
})
export const PairInput = Schema.Struct({
  prompt: Schema.Union([Schema.String, Schema.Array(ChatMessage)]),
  completion: Schema.Union([Schema.String, Schema.Array(ChatMessage)])
})

const chatKeys = new Set(["messages", "category"])
const pairKeys = new Set(["prompt", "completion"])
const formatter = SchemaIssue.makeFormatterStandardSchemaV1()

const typeName = (v: unknown): string =>
  v === null ? "null" : Array.isArray(v) ? "array" : typeof v === "string" ? `string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)}` : typeof v

const valueAt = (root: unknown, path: ReadonlyArray<PropertyKey>): unknown => {
  let cur: unknown = root
  for (const k of path) {
    if (cur === null || typeof cur !== "object") return undefined
    cur = (cur as Record<PropertyKey, unknown>)[k]
  }
  return cur
}

const firstIssue = (error: Schema.SchemaError, input: unknown): InputIssue => {
  const issue = formatter(error.issue).issues[0]
  const path = (issue?.path ?? []).map((p) => (typeof p === "object" && p !== null && "key" in p ? p.key : p)) as Array<PropertyKey>
  const message = issue?.message ?? error.message
  const present = path.length === 0 || valueAt(input, path.slice(0, -1)) !== undefined && path[path.length - 1]! in (valueAt(input, path.slice(0, -1)) as object)
  const got = message === "Missing key" || !present ? "" : `, got ${typeName(valueAt(input, path))}`
  return { field: path.length === 0 ? "<root>" : path.map(String).join("."), reason: `${message}${got}` }
}

const decodeSeedSchema = Schema.decodeUnknownResult(SeedInput)
const decodeSeed = (o: Record<string, unknown>, options: { readonly errors: "first" }) =>
  isSeedInput(o) ? Result.succeed(o) : decodeSeedSchema(o, options)
const decodeChat = Schema.decodeUnknownResult(ChatInput)
const decodePair = Schema.decodeUnknownResult(PairInput)

const disclaimer = /not (?:financial|investment) advice|for educational purposes|educational,? not|do your own research|consult (?:a|with a) (?:licensed |qualified )?financial/i

/** The closing paragraph of a chat answer when it is a disclaimer, else undefined. */
export const closingDisclaimer = (answer: string): string | undefined => {
  const paragraphs = answer.trim().split(/\n\s*\n/)
  const last = paragraphs[paragraphs.length - 1]?.trim()
  return last !== undefined && paragraphs.length > 1 && disclaimer.test(last) ? last : undefined
}

const seedPrompt = /^Context:\s?([\s\S]*?)\nQuestion:\s?([\s\S]*?)(?:\nAnswer:\s*)?$/

const fromConversation = (messages: ReadonlyArray<typeof ChatMessage.Type>): { question?: string; answer?: string } => {
  let a = -1
  for (let i = messages.length - 1; i >= 0; i--) if (messages[i]!.role === "assistant") { a = i; break }
  let q = -1
  for (let i = (a < 0 ? messages.length : a) - 1; i >= 0; i--) if (messages[i]!.role === "user") { q = i; break }
  return {
    ...(q >= 0 ? { question: messages[q]!.content } : {}),
    ...(a >= 0 ? { answer: messages[a]!.content } : {})
  }
}

const blank = (s: string | undefined) => s === undefined || !/\S/.test(s)

/**
 * Maps one parsed JSON value to a canonical record, or says which field is wrong and why.
 * The format is chosen by keys: `messages` -> chat, `prompt`+`completion` -> pair, otherwise seed.
 */
export const decodeInput = (json: unknown, keepExtra: boolean): Result.Result<Decoded, InputIssue> => {
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    return Result.fail({ field: "<root>", reason: `Expected a JSON object, got ${typeName(json)}` })
  }
  const obj = json as Record<string, unknown>
  if (isChatShaped(obj)) {
    const r = decodeChat(obj, { errors: "first" })
    if (Result.isFailure(r)) return Result.fail(firstIssue(r.failure, obj))
    const { question, answer } = fromConversation(r.success.messages)
    if (blank(answer)) return Result.fail({ field: "messages", reason: "Expected an assistant message with non-blank content" })
    if (blank(question)) return Result.fail({ field: "messages", reason: "Expected a user message with non-blank content before the assistant's" })
    const risk = closingDisclaimer(answer!)
    const { extra, extraKeys } = splitExtra(obj, chatKeys, keepExtra)
    return Result.succeed({
      format: "chat",
      record: {
        question: question!.trim(),
        answer: answer!.trim(),
        rationale: "",
        tickers: findTickersInText(`${question} ${answer}`),
        citations: [],
        context_required: false,
        ...(risk !== undefined ? { risk_note: risk } : {}),
        ...(r.success.category !== undefined ? { intent: r.success.category } : {}),
        messages: r.success.messages
      },
      deriveContextRequired: true,
      extra,
      extraKeys
    })
  }
  if ("prompt" in obj && "completion" in obj) {
    const r = decodePair(obj, { errors: "first" })
    if (Result.isFailure(r)) return Result.fail(firstIssue(r.failure, obj))
    const promptText = typeof r.success.prompt === "string" ? r.success.prompt : fromConversation([...r.success.prompt, { role: "assistant", content: "" }]).question
    const answer = typeof r.success.completion === "string" ? r.success.completion : fromConversation(r.success.completion).answer
    if (blank(promptText)) return Result.fail({ field: "prompt", reason: "Expected a non-blank prompt" })
    if (blank(answer)) return Result.fail({ field: "completion", reason: "Expected a non-blank completion" })
    const conversation = typeof r.success.prompt === "string" || typeof r.success.completion === "string"
      ? undefined
      : [...r.success.prompt, ...r.success.completion]
    const m = seedPrompt.exec(promptText!.trim())
    const question = (m ? m[2]! : promptText!).trim()
    if (question === "") return Result.fail({ field: "prompt", reason: "Expected a non-blank question after \"Question:\"" })
    const context = m && m[1]!.trim() !== "" ? m[1]! : undefined
    const { extra, extraKeys } = splitExtra(obj, pairKeys, keepExtra)
    return Result.succeed({
      format: "pair",
      record: {
        question,
        answer: answer!.trim(),
        rationale: "",
        tickers: findTickersInText(`${question} ${answer}`),
        citations: [],
        context_required: false,
        ...(context !== undefined ? { context } : {}),
        ...(conversation !== undefined ? { messages: conversation } : {})
      },
      deriveContextRequired: true,
      extra,
      extraKeys
    })
  }
  const r = decodeSeed(obj, { errors: "first" })
  if (Result.isFailure(r)) return Result.fail(firstIssue(r.failure, obj))
  return Result.succeed(seedDecoded(r.success, obj, keepExtra))
}

/** The canonical schema, re-exported for callers that decode already-canonical files (the Trainer). */
export { TrainingRecord }
