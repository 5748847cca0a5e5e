/**
 * How many tokens an evaluated answer may take: sized from the references, never a fixed number. A budget shorter
 * than the references cuts answers before their sources line and risk note (which come last, Dataset/PromptFormat
 * `targetAnswer`), and then the citation and risk-flag rates read 0 whatever the model does (48 tokens did that).
 *
 * The budget is the 95th percentile of the references' token lengths, plus a quarter of it and 16 tokens (a model
 * that words an answer a little longer is not cut), at most `cap`. Token lengths come from the model's tokenizer
 * when one is given (`ModelTokenizer` fits), else from an estimate of one token per 3 characters, which over-counts
 * for English BPE vocabularies (about 4 characters a token), so the estimate errs long.
 */

/** What the budget needs of a tokenizer (`ModelTokenizer` from Model/Tokenizer.ts fits). */
export interface BudgetTokenizer {
  readonly tokenize: (text: string, options?: { readonly addBos?: boolean }) => ArrayLike<number>
}

export interface TokenBudget {
  /** the budget: answers may take this many new tokens */
  readonly tokens: number
  readonly references: number
  /** the 95th percentile and the longest reference, in tokens */
  readonly p95: number
  readonly longest: number
  /** true when `cap` lowered the budget */
  readonly capped: boolean
  /** "tokenizer" or "estimate (3 characters a token)" */
  readonly counted: string
}

/** the most an eval answer is given by default: longer references are rare in finance Q&A */
export const defaultBudgetCap = 1024
/** the budget with no references at all */
export const emptyBudget = 64

export const evalTokenBudget = (
  references: ReadonlyArray<string>,
  tokenizer?: BudgetTokenizer,
  cap: number = defaultBudgetCap
): TokenBudget => {
  const counted = tokenizer === undefined ? "estimate (3 characters a token)" : "tokenizer"
  if (references.length === 0) return { tokens: Math.min(emptyBudget, cap), references: 0, p95: 0, longest: 0, capped: emptyBudget > cap, counted }
  const lengths = references
    .map((r) => (tokenizer === undefined ? Math.ceil(r.length / 3) : tokenizer.tokenize(r, { addBos: false }).length))
    .sort((a, b) => a - b)
  const p95 = lengths[Math.min(lengths.length - 1, Math.ceil(0.95 * lengths.length) - 1)]!
  const wanted = Math.ceil(p95 * 1.25) + 16
  return { tokens: Math.min(wanted, cap), references: lengths.length, p95, longest: lengths[lengths.length - 1]!, capped: wanted > cap, counted }
}

/** One line for logs and the CLI: the budget and where it came from. */
export const describeBudget = (b: TokenBudget): string =>
  `${b.tokens} tokens from ${b.references} reference${b.references === 1 ? "" : "s"} (95th percentile ${b.p95}, longest ${b.longest}, ${b.counted}: p95 x 1.25 + 16${b.capped ? `, capped` : ""})`
