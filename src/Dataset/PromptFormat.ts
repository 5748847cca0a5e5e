/**
 * Prompt layouts for training and generation. Each layout turns a record into one text plus the character
 * span of the part that carries loss (the answer, and for chat layouts the end-of-turn token after it, so
 * the model learns to stop). The Trainer builds its loss mask from `answerStart`/`answerEnd`; Evaluation
 * and Serving build prompts with `formatPrompt`, which is exactly the text before `answerStart`.
 *
 * - `seed`: the seed's `Context: {context}\nQuestion: {question}\nAnswer: {answer}`.
 * - `llama3`: the Llama-3 instruct layout with its literal special-token strings (`<|begin_of_text|>`,
 *   `<|start_header_id|>`, `<|eot_id|>`); a tokenizer must map these strings to their special ids.
 * - `mistral`: `<s>[INST] {system}\n\n{user} [/INST] {answer}</s>` (Mistral has no system role, so the
 *   system prompt is prepended to the user turn, as its chat template does).
 * - `chatml`: `<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n
 *   {answer}<|im_end|>`, what SmolLM2/Qwen-style instruct models' `tokenizer.chat_template` renders (no BOS).
 *
 * With a GGUF model, the serving side should prefer the model's own chat template (node-llama-cpp reads it
 * from the file); these strings are for training text and for models without a template.
 *
 * Chat data (records with `messages`) is formatted in the model's own chat template instead (`formatChatExample`),
 * with loss on every assistant turn, so `/v1/chat/completions`, which renders the same template, serves the layout
 * the model was trained on.
 */
import { Schema } from "effect"
import { type ChatTemplateTokens, type ChatTurn, renderChatTemplate } from "../Model/ChatTemplate.ts"
import { RagContext, renderRagContext } from "./RagContext.ts"

export const PromptLayout = Schema.Literals(["seed", "llama3", "mistral", "chatml"])
export type PromptLayout = typeof PromptLayout.Type

/**
 * How a layout's text becomes tokens, one rule for training, evaluation and serving: the chat layouts spell their
 * control tokens (BOS included, where the layout has one) as text and are parsed with them; the seed layout is plain
 * text after the tokenizer's BOS.
 */
export const layoutTokenization = (layout: PromptLayout): { readonly special: boolean; readonly addBos: boolean } =>
  layout === "seed" ? { special: false, addBos: true } : { special: true, addBos: false }

/** The system prompt of the chat layouts: the app's rule that numbers come only from the context. */
export const defaultSystemPrompt =
  "You are a financial analysis assistant. Use only the provided context for numbers and facts; never guess a number. " +
  "If a number is not in the context, say you do not have that information. Add a one-line risk note to investment questions."

export interface PromptInput {
  readonly question: string
  readonly context?: string | Readonly<Record<string, unknown>> | undefined
}

export interface FormattedExample {
  readonly text: string
  /** the answer (loss-carrying part) is `text.slice(answerStart, answerEnd)` */
  readonly answerStart: number
  readonly answerEnd: number
}

const isRagShape = Schema.is(RagContext)
const ragKeys = new Set(Object.keys(RagContext.fields))
/** an object shaped like the app's context: only its keys (at least one), each well-typed */
const isRagContext = (o: Readonly<Record<string, unknown>>): o is RagContext => {
  const keys = Object.keys(o)
  return keys.length > 0 && keys.every((k) => ragKeys.has(k)) && isRagShape(o)
}

/** The deepest nesting a JSON context may have; the server refuses deeper ones (400) before rendering them. */
export const maxContextDepth = 32

/**
 * How deeply `value` nests (a scalar 0, `{}` 1, `{"a": []}` 2), counted without recursion and giving up once past
 * `limit` (so a body nested 10,000 levels deep costs `limit` steps per branch and never the call stack).
 */
export const nestingDepth = (value: unknown, limit: number = maxContextDepth): number => {
  let deepest = 0
  const pending: Array<readonly [unknown, number]> = [[value, 0]]
  while (pending.length > 0) {
    const [v, depth] = pending.pop()!
    if (typeof v !== "object" || v === null) continue
    const here = depth + 1
    if (here > deepest) deepest = here
    if (here > limit) return here
    for (const child of Array.isArray(v) ? v : Object.values(v)) pending.push([child, here])
  }
  return deepest
}

/**
 * The context as prompt text: strings as they are, app-shaped objects in the app's layout, others as JSON.
 * A context nested deeper than `maxContextDepth` is refused with a RangeError that says so (never a stack overflow
 * in the renderers); the server checks the depth at its boundary first.
 */
export const contextText = (context: PromptInput["context"]): string => {
  if (context === undefined) return ""
  if (typeof context === "string") return context
  if (nestingDepth(context) > maxContextDepth) throw new RangeError(`the context nests more than ${maxContextDepth} levels deep`)
  return isRagContext(context) ? renderRagContext(context) : JSON.stringify(context)
}

const userTurn = (r: PromptInput) => `Context: ${contextText(r.context)}\nQuestion: ${r.question}`

const endOfAnswer: Record<PromptLayout, string> = { seed: "", llama3: "<|eot_id|>", mistral: "</s>", chatml: "<|im_end|>" }

/** The prompt for generation: everything before the answer. */
export const formatPrompt = (
  record: PromptInput,
  layout: PromptLayout = "seed",
  systemPrompt: string = defaultSystemPrompt
): string => {
  switch (layout) {
    case "seed":
      return `${userTurn(record)}\nAnswer: `
    case "llama3":
      return "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + systemPrompt +
        "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n" + userTurn(record) +
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    case "mistral":
      return `<s>[INST] ${systemPrompt}\n\n${userTurn(record)} [/INST] `
    case "chatml":
      return `<|im_start|>system\n${systemPrompt}<|im_end|>\n<|im_start|>user\n${userTurn(record)}<|im_end|>\n<|im_start|>assistant\n`
  }
}

/** What the answer part is rendered from: the seed's answer, citations and risk note. */
export interface AnswerFields {
  readonly answer: string
  readonly citations?: ReadonlyArray<{ readonly source: string }> | undefined
  readonly risk_note?: string | undefined
}

// an answer that already names its sources (FinanceMetrics' `Source:` cue) is not given a second line
const sourcesCue = /\bsources?\s*:/i

/**
 * The answer part a record trains and is evaluated on: its answer, then a `Sources: a, b.` line naming its
 * citations' sources (once each, in order), then its risk note, each only when the record has it and the answer
 * does not carry it already. The seed's schema keeps citations and the risk note as fields beside the answer; rendered
 * into the loss-carrying text, the model learns to cite and to add the note, and Evaluation's citation and risk-flag
 * rates (FinanceMetrics `citation`, `riskFlag`) can see them. Chat answers keep their closing disclaimer in the answer
 * (it is their risk note) and have no citations, so they are unchanged.
 */
export const targetAnswer = (r: AnswerFields): string => {
  let out = r.answer
  const sources = [...new Set((r.citations ?? []).map((c) => c.source.trim()).filter((s) => s !== ""))]
  if (sources.length > 0 && !sourcesCue.test(out)) out += `\n\nSources: ${sources.join(", ")}.`
  const note = r.risk_note?.trim() ?? ""
  if (note !== "" && !r.answer.includes(note)) out += `\n\n${note}`
  return out
}

/**
 * A training example: the prompt, the answer part (`targetAnswer`: the answer with its sources and risk note), and
 * its span (end-of-turn token included).
 */
export const formatExample = (
  record: PromptInput & AnswerFields,
  layout: PromptLayout = "seed",
  systemPrompt: string = defaultSystemPrompt
): FormattedExample => {
  const prompt = formatPrompt(record, layout, systemPrompt)
  const text = prompt + targetAnswer(record) + endOfAnswer[layout]
  return { text, answerStart: prompt.length, answerEnd: text.length }
}

// ---------------------------------------------------------------------------------------------------------
// Chat data in the model's own chat template

/** A model's chat template and its BOS/EOS texts (`ModelTokenizer.chatTemplate`, `bosText`, `eosText`). */
export interface ChatFormat extends ChatTemplateTokens {
  readonly template: string
}

/** A chat training example: loss on every assistant turn. */
export interface ChatExample extends FormattedExample {
  /** each assistant turn's span (its content and end-of-turn text), in order; the last is `[answerStart, answerEnd)` */
  readonly lossSpans: ReadonlyArray<readonly [number, number]>
}

const lastAssistant = (messages: ReadonlyArray<ChatTurn>) => {
  let last = messages.length - 1
  while (last >= 0 && messages[last]!.role !== "assistant") last--
  return last
}

/**
 * A conversation (system prompt and every turn, `TrainingRecord.messages`) as one text in the model's chat template,
 * rendered by the one renderer serving uses (Model/ChatTemplate.ts), with the span of every assistant turn. A turn's
 * span is what rendering it adds after the prompt that asks for it (`add_generation_prompt`): its content and the
 * template's end-of-turn text, without the whitespace a template writes after that. Turns after the last assistant
 * turn are left out (nothing would learn from them). Throws when the conversation has no assistant turn, or when the
 * template does not render a conversation's beginning as the beginning of the whole (then no span can be found).
 */
export const formatChatExample = (messages: ReadonlyArray<ChatTurn>, chat: ChatFormat): ChatExample => {
  const last = lastAssistant(messages)
  if (last < 0) throw new Error("the conversation has no assistant turn")
  const turns = messages.slice(0, last + 1)
  const text = renderChatTemplate(chat.template, turns, chat, false)
  const lossSpans: Array<readonly [number, number]> = []
  for (let i = 0; i <= last; i++) {
    if (turns[i]!.role !== "assistant") continue
    const before = renderChatTemplate(chat.template, turns.slice(0, i), chat, true)
    const through = i === last ? text : renderChatTemplate(chat.template, turns.slice(0, i + 1), chat, false)
    if (!through.startsWith(before) || !text.startsWith(through)) {
      throw new Error(`the chat template does not render turn ${i + 1} after the turns before it, so its loss span cannot be found`)
    }
    let end = through.length
    // the newline a template writes after its end-of-turn token is the next turn's layout, not the answer
    while (end > before.length + turns[i]!.content.trimEnd().length && /\s/.test(through.charAt(end - 1))) end--
    lossSpans.push([before.length, end])
  }
  const [answerStart, answerEnd] = lossSpans[lossSpans.length - 1]!
  return { text, answerStart, answerEnd, lossSpans }
}

/** The prompt that asks for a conversation's last assistant turn (what evaluation continues): the turns before it. */
export const formatChatPrompt = (messages: ReadonlyArray<ChatTurn>, chat: ChatFormat): string => {
  const last = lastAssistant(messages)
  return renderChatTemplate(chat.template, last < 0 ? messages : messages.slice(0, last), chat, true)
}
