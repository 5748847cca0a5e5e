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
 *
 * With a GGUF model, the serving side should prefer the model's own chat template (node-llama-cpp reads it
 * from the file); these strings are for training text and for models without a template.
 */
import { Schema } from "effect"
import { RagContext, renderRagContext } from "./RagContext.ts"

export const PromptLayout = Schema.Literals(["seed", "llama3", "mistral"])
export type PromptLayout = typeof PromptLayout.Type

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

const endOfAnswer: Record<PromptLayout, string> = { seed: "", llama3: "<|eot_id|>", mistral: "</s>" }

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
  }
}

/** A training example: the prompt, the answer, and the answer's span (end-of-turn token included). */
export const formatExample = (
  record: PromptInput & { readonly answer: string },
  layout: PromptLayout = "seed",
  systemPrompt: string = defaultSystemPrompt
): FormattedExample => {
  const prompt = formatPrompt(record, layout, systemPrompt)
  const text = prompt + record.answer + endOfAnswer[layout]
  return { text, answerStart: prompt.length, answerEnd: text.length }
}
