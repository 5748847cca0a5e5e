/**
 * The canonical training record (docs/architecture.md §2, the seed's schema). Every input format (seed
 * records, chat `messages`, prompt/completion pairs) is mapped to this shape by the ingest, and every
 * later stage (Trainer, Evaluation) reads it.
 *
 * Field order is fixed: records are written with the keys in the order below, so outputs are
 * byte-identical for the same input.
 */
import * as Schema from "effect/Schema"

/** A string with at least one non-blank character. */
const nonBlank = /\S/
// a plain filter: `isPattern` builds its description on every call, which shows on the ingest's hot path
export const NonBlankString = Schema.String.check(
  Schema.makeFilter((s: string) => (nonBlank.test(s) ? undefined : "Expected a non-blank string"))
)

export const Citation = Schema.Struct({
  source: NonBlankString,
  /** `<TIMESTAMP>` or ISO-8601 (checked by the `citation_timestamp` content rule, not by the schema) */
  timestamp: Schema.String
})
export type Citation = typeof Citation.Type

/** One turn of a conversation (TRL's conversational format, the original app's chat file). */
export const ChatMessage = Schema.Struct({
  role: Schema.Literals(["system", "user", "assistant"]),
  content: Schema.String
})
export type ChatMessage = typeof ChatMessage.Type

/** The context: the app's RAG text layout (see RagContext.ts), or a structured object. */
export const RecordContext = Schema.Union([Schema.String, Schema.Record(Schema.String, Schema.Unknown)])

export const TrainingRecord = Schema.Struct({
  question: NonBlankString,
  /** placeholders like `<PRICE>` instead of live values */
  answer: NonBlankString,
  rationale: Schema.String,
  /** upper-case symbols, or symbol placeholders such as `<STOCK_1>` */
  tickers: Schema.Array(Schema.String),
  citations: Schema.Array(Citation),
  context_required: Schema.Boolean,
  /** required for investment-advice answers (the `advice_needs_risk_note` rule) */
  risk_note: Schema.optionalKey(Schema.String),
  context: Schema.optionalKey(RecordContext),
  /** the kind of question (`price`, `valuation`, `should_buy`…; the chat file's `category`), for stats */
  intent: Schema.optionalKey(Schema.String),
  /**
   * chat data only: the whole conversation, system prompt and every turn, live values normalized as in
   * `question`/`answer` (which are its last user turn and the assistant turn after it). Training formats such
   * a record in the model's chat template with loss on every assistant turn (PromptFormat.formatChatExample).
   */
  messages: Schema.optionalKey(Schema.Array(ChatMessage))
})
export type TrainingRecord = typeof TrainingRecord.Type

/** The seed record as read: the lenient input form of TrainingRecord. */
export const SeedInput = Schema.Struct({
  question: NonBlankString,
  answer: NonBlankString,
  rationale: Schema.optionalKey(Schema.String),
  tickers: Schema.optionalKey(Schema.Array(Schema.String)),
  citations: Schema.optionalKey(Schema.Array(Citation)),
  context_required: Schema.optionalKey(Schema.Boolean),
  risk_note: Schema.optionalKey(Schema.String),
  context: Schema.optionalKey(RecordContext),
  intent: Schema.optionalKey(Schema.String),
  messages: Schema.optionalKey(Schema.Array(ChatMessage))
})
