/**
 * How a request becomes the text the model continues.
 *
 * - `/infer` always uses the seed's training prompt (`Context: …\nQuestion: …\nAnswer:`), because that is the
 *   layout the adapter was trained on.
 * - Chat requests use the GGUF's own chat template (`tokenizer.chat_template`, rendered with Jinja as
 *   transformers does) when the base has one; a base without one (such as the project's tiny models) gets the
 *   seed prompt built from the conversation: system messages and the request's context become the context, the
 *   last user message the question.
 * - Raw completions are continued as given.
 */
import { renderChatTemplate as renderTemplate } from "../Model/ChatTemplate.ts"
import { formatPrompt } from "../Dataset/PromptFormat.ts"
import type { ChatMessage } from "./Api.ts"

/** What the engine is asked to continue. */
export type PromptInput =
  | { readonly _tag: "Seed"; readonly context: string; readonly question: string }
  | { readonly _tag: "Chat"; readonly messages: ReadonlyArray<ChatMessage>; readonly context: string }
  | { readonly _tag: "Raw"; readonly text: string }

/** The prompt text, and whether special-token text in it (e.g. `<|eot_id|>` from a template) is parsed as such. */
export interface RenderedPrompt {
  readonly text: string
  readonly parseSpecialTokens: boolean
}

/** The seed's prompt up to the answer, exactly as the trainer formats it (generation starts where loss did). */
export const seedPrompt = (context: string, question: string): string => formatPrompt({ context, question }, "seed")

/** A model trained on the seed layout may run on into a next record; these end the answer there. */
export const seedStops: ReadonlyArray<string> = ["\nQuestion:", "\nContext:"]

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

export const renderPrompt = (
  input: PromptInput,
  chatTemplate: string | undefined,
  tokens: TemplateTokens
): RenderedPrompt => {
  switch (input._tag) {
    case "Seed":
      return { text: seedPrompt(input.context, input.question), parseSpecialTokens: false }
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
