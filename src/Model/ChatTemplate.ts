/**
 * The one renderer of a model's chat template (GGUF `tokenizer.chat_template`, tokenizer_config.json
 * `chat_template`), as transformers' `apply_chat_template` renders it with Jinja: `messages` (role, content),
 * `add_generation_prompt`, `bos_token`, `eos_token`. Serving renders `/v1/chat/completions` prompts with it and
 * training renders chat data with it (Dataset/PromptFormat.formatChatExample), so a model is served the layout it
 * was trained on, byte for byte.
 */
import { Template } from "@huggingface/jinja"

export interface ChatTurn {
  readonly role: string
  readonly content: string
}

export interface ChatTemplateTokens {
  /** the model's BOS and EOS token texts ("" when it has none) */
  readonly bos: string
  readonly eos: string
}

// parsing a template costs far more than rendering it, and a run renders one template thousands of times
const parsed = new Map<string, Template>()
const templateOf = (source: string): Template => {
  let t = parsed.get(source)
  if (t === undefined) {
    if (parsed.size >= 16) parsed.clear()
    t = new Template(source)
    parsed.set(source, t)
  }
  return t
}

/** Renders `messages` with the template; throws the template's own error when it fails (a caller names the model). */
export const renderChatTemplate = (
  template: string,
  messages: ReadonlyArray<ChatTurn>,
  tokens: ChatTemplateTokens,
  addGenerationPrompt = true
): string =>
  templateOf(template).render({
    messages: messages.map((m) => ({ role: m.role, content: m.content })),
    add_generation_prompt: addGenerationPrompt,
    bos_token: tokens.bos,
    eos_token: tokens.eos
  })
