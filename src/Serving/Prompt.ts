/**
 * How a request becomes the text the model continues.
 *
 * - `/infer` renders the served model's training prompt for the request as a record (question, context), with
 *   `formatPrompt` and the layout the model was trained on, so the prompt is token for token the one training saw
 *   (`servedPromptFor` decides the layout: `--layout`, else the adapter's record, else seed; a base served alone
 *   uses its own record, else the layout its chat template is, else seed). It stops at the layout's end of turn.
 * - Chat requests use the GGUF's own chat template (`tokenizer.chat_template`, rendered with Jinja as
 *   transformers does) when the base has one; a base without one (such as the project's tiny models) gets the
 *   seed prompt built from the conversation: system messages and the request's context become the context, the
 *   last user message the question.
 * - Raw completions are continued as given.
 */
import { renderChatTemplate as renderTemplate } from "../Model/ChatTemplate.ts"
import { Schema } from "effect"
import { defaultSystemPrompt, formatPrompt, layoutTokenization, PromptLayout } from "../Dataset/PromptFormat.ts"
import type { TrainedPrompt } from "../Training/AdapterPrompt.ts"
import type { ChatMessage } from "../Api/Api.ts"

/** What the engine is asked to continue. */
export type PromptInput =
  /** `/infer`: a record as training formats it (`context` is the record's context: text, or the app's JSON) */
  | { readonly _tag: "Record"; readonly context: string | Readonly<Record<string, unknown>>; readonly question: string }
  | { readonly _tag: "Chat"; readonly messages: ReadonlyArray<ChatMessage>; readonly context: string }
  | { readonly _tag: "Raw"; readonly text: string }

/** `serve --layout`: `auto` follows what the adapter (or the base) records, the others force one layout. */
export const LayoutChoice = Schema.Literals(["auto", ...PromptLayout.literals])
export type LayoutChoice = typeof LayoutChoice.Type

/** The layout a served model renders `/infer` in, and why: `--layout`, the adapter's or model's record, its chat
 * template, or the default (seed). */
export interface ServedPrompt extends TrainedPrompt {
  readonly source: "flag" | "recorded" | "template" | "default"
}

/** The prompt text, and whether special-token text in it (e.g. `<|eot_id|>` from a template) is parsed as such. A
 * `Record` prompt also carries the trainer's BOS rule (`prepend` for seed; `none` for chat layouts, which spell
 * theirs), its layout's stops and the layout; other prompts leave BOS to the model's add_bos and have no stops. */
export interface RenderedPrompt {
  readonly text: string
  readonly parseSpecialTokens: boolean
  readonly bos?: "prepend" | "none"
  /** stop strings the layout ends an answer with (besides the model's end-of-generation tokens) */
  readonly stops?: ReadonlyArray<string>
  readonly layout?: PromptLayout
}

/** The seed's prompt up to the answer, exactly as the trainer formats it (generation starts where loss did). */
export const seedPrompt = (context: string, question: string): string => formatPrompt({ context, question }, "seed")

/** A model trained on the seed layout may run on into a next record; these end the answer there. */
export const seedStops: ReadonlyArray<string> = ["\nQuestion:", "\nContext:"]

/**
 * Where an answer in each layout ends: the seed's next record, a chat layout's end-of-turn text (what training put
 * after the answer; for real chat models it is also an end-of-generation token, e.g. SmolLM2's `<|im_end|>` EOS).
 */
export const layoutStops: Record<PromptLayout, ReadonlyArray<string>> = {
  seed: seedStops,
  chatml: ["<|im_end|>"],
  llama3: ["<|eot_id|>"],
  mistral: ["</s>"]
}

/** The prompt layout a Hugging Face chat template renders, when it is one of ours (ChatML, Llama-3, Mistral). */
export const layoutOfChatTemplate = (template: string | undefined): PromptLayout | undefined =>
  template === undefined
    ? undefined
    : template.includes("<|im_start|>")
    ? "chatml"
    : template.includes("<|start_header_id|>")
    ? "llama3"
    : template.includes("[INST]")
    ? "mistral"
    : undefined

/**
 * The layout a served model renders `/infer` in: `--layout` when it names one; else what the model records (an
 * adapter's `finetune.prompt_layout`, or for the base served alone the base GGUF's own, as a merged model has); else
 * seed for an adapter (adapters without a record were trained on it), and for a base the layout of its chat template.
 */
export const servedPromptFor = (
  choice: LayoutChoice,
  model: { readonly recorded: TrainedPrompt | undefined; readonly isAdapter: boolean; readonly chatTemplate: string | undefined }
): ServedPrompt => {
  const systemPrompt = model.recorded?.systemPrompt ?? defaultSystemPrompt
  if (choice !== "auto") return { layout: choice, systemPrompt, source: "flag" }
  if (model.recorded !== undefined) return { ...model.recorded, source: "recorded" }
  const fromTemplate = model.isAdapter ? undefined : layoutOfChatTemplate(model.chatTemplate)
  return fromTemplate === undefined
    ? { layout: "seed", systemPrompt, source: "default" }
    : { layout: fromTemplate, systemPrompt, source: "template" }
}

/** How a served layout reads in a log line: `chatml (recorded)`. */
export const describeServedPrompt = (p: ServedPrompt): string =>
  `${p.layout} (${p.source === "flag" ? "--layout" : p.source === "recorded" ? "as trained" : p.source === "template" ? "the chat template's" : "default"})`

export const messageText = (message: ChatMessage): string =>
  typeof message.content === "string" ? message.content : message.content.map((part) => part.text).join("")

/** A conversation without a chat template, in the seed's layout. */
export const chatAsSeedPrompt = (messages: ReadonlyArray<ChatMessage>, context: string): string => {
  const system = messages.filter((m) => m.role === "system" || m.role === "developer").map(messageText)
  const users = messages.filter((m) => m.role === "user")
  const question = users.length > 0 ? messageText(users[users.length - 1]!) : messageText(messages[messages.length - 1]!)
  return seedPrompt([...system, context].filter((s) => s.trim() !== "").join("\n"), question)
}

export interface TemplateTokens {
  readonly bos: string
  readonly eos: string
}

/**
 * Renders a Hugging Face chat template the way transformers' `apply_chat_template(add_generation_prompt=True)` does:
 * the Model's one renderer, which training uses for chat data too (Dataset/PromptFormat.formatChatExample).
 */
export const renderChatTemplate = (
  template: string,
  messages: ReadonlyArray<ChatMessage>,
  tokens: TemplateTokens
): string =>
  renderTemplate(template, messages.map((m) => ({ role: m.role === "developer" ? "system" : m.role, content: messageText(m) })), tokens, true)

/**
 * The prompt of a request for a served model. A `Record` is rendered exactly as the trainer renders it
 * (Training/Trainer.trainTokenizerOf): `formatPrompt` in the served layout, special tokens parsed in chat layouts,
 * BOS prepended for seed only.
 */
export const renderPrompt = (
  input: PromptInput,
  chatTemplate: string | undefined,
  tokens: TemplateTokens,
  served: Pick<ServedPrompt, "layout" | "systemPrompt"> = { layout: "seed", systemPrompt: defaultSystemPrompt }
): RenderedPrompt => {
  switch (input._tag) {
    case "Record": {
      const { layout, systemPrompt } = served
      return {
        text: formatPrompt({ question: input.question, context: input.context }, layout, systemPrompt),
        parseSpecialTokens: layoutTokenization(layout).special,
        bos: layoutTokenization(layout).addBos ? "prepend" : "none",
        stops: layoutStops[layout],
        layout
      }
    }
    case "Raw":
      return { text: input.text, parseSpecialTokens: true }
    case "Chat": {
      if (chatTemplate === undefined) {
        return { text: chatAsSeedPrompt(input.messages, input.context), parseSpecialTokens: false }
      }
      // the context of a chat request rides along as a system message, where templates expect background
      const messages: ReadonlyArray<ChatMessage> = input.context.trim() === ""
        ? input.messages
        : [{ role: "system", content: `Context: ${input.context}` }, ...input.messages]
      return { text: renderChatTemplate(chatTemplate, messages, tokens), parseSpecialTokens: true }
    }
  }
}
