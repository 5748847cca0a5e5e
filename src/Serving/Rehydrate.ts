/**
 * Placeholder rehydration: the model answers with `<PRICE>`, `<CHANGE>`, `<SPY_PRICE>`… (it was trained never to
 * produce a live number), and the server fills them from the request's context.
 *
 * The context is the app's `formatRAGContext` text or the same data as JSON (both read through the Dataset
 * stage's `parseRagContext` / `RagContext` schema); a JSON context may also carry an explicit
 * `placeholders: {NAME: value}` table, which wins over everything derived.
 *
 * Derived values (`current` = `Current Symbol`, else the first priced symbol):
 * - `<SYMBOL>`, `<TICKER>`: current; `<PRICE>`, `<CHANGE>`: current's price (`$189.50`) and change (`+0.45%`)
 * - `<AAPL_PRICE>`, `<SPY_CHANGE>`…: any priced symbol or market index by name
 * - `<STOCK_n>`: the n-th priced symbol; `<TOP_MOVER_n>` / `<MOVER_n>`: symbols by |change|, largest first;
 *   `<MOVER_n_CHANGE>`, `<MOVER_n_PRICE>`, `<STOCK_n_PRICE>`…: their values
 * - a fundamentals key in upper snake case (`peRatio` → `<PE_RATIO>`), or, when exactly one key has the
 *   placeholder's type and name prefix, that key (`<PE>` → `peRatio`)
 * - `<TIMESTAMP>` / `<DATE>`: the time of the answer (ISO-8601 / YYYY-MM-DD)
 *
 * Whatever has no value is reported as unfilled, and by policy left in the text, removed, or refused.
 */
import { Option, Schema } from "effect"
import { placeholderBaseType, placeholderPattern } from "../Dataset/Placeholders.ts"
import { parseRagContext, RagContext } from "../Dataset/RagContext.ts"
import { type PlaceholderPolicy, type PlaceholderReport, type RequestContext } from "../Api/Api.ts"
import type { ErrorKind } from "../Shared/Errors.ts"

export class PlaceholdersUnfilled extends Schema.TaggedError<PlaceholdersUnfilled>()("PlaceholdersUnfilled", {
  unfilled: Schema.Array(Schema.String)
}) {
  get kind(): ErrorKind {
    return "data"
  }
  override get message() {
    return `the answer needs live values the request's context does not hold: ${this.unfilled.join(", ")}`
  }
}

const decodeRagContext = Schema.decodeUnknownOption(RagContext)

const signed = (n: number) => `${n >= 0 ? "+" : ""}${n.toFixed(2)}%`
const dollars = (n: number) => `$${n.toFixed(2)}`
const upperSnake = (key: string) =>
  key.replace(/([a-z])([A-Z0-9])/g, "$1_$2").replace(/([0-9])([A-Za-z])/g, "$1_$2").replace(/[^A-Za-z0-9]+/g, "_").toUpperCase()

const display = (value: unknown): string | undefined =>
  typeof value === "string" ? value : typeof value === "number" && Number.isFinite(value) ? String(value) : undefined

const typedShortNames = ["PE", "PB", "PS", "EPS", "BETA", "YIELD", "VOLUME", "MARKET_CAP", "DIVIDEND"]

/** The placeholder values a context provides, by placeholder name without brackets. */
export const placeholderValues = (context: RequestContext | undefined, now: Date = new Date()): Map<string, string> => {
  const values = new Map<string, string>()
  values.set("TIMESTAMP", now.toISOString())
  values.set("DATE", now.toISOString().slice(0, 10))
  if (context === undefined || (typeof context === "string" && context.trim() === "")) return values
  const ctx: RagContext = typeof context === "string"
    ? parseRagContext(context)
    : Option.getOrElse(decodeRagContext(context), (): RagContext => ({}))

  const quotes: Array<readonly [string, number, number]> = Object.entries(ctx.prices ?? {}).map(([s, q]) => [s, q.price, q.changePercent] as const)
  for (const [sym, x] of Object.entries(ctx.marketData?.indices ?? {})) {
    values.set(`${sym}_PRICE`, dollars(x.value))
    values.set(`${sym}_CHANGE`, signed(x.changePercent))
  }
  for (const [sym, price, change] of quotes) {
    values.set(`${sym}_PRICE`, dollars(price))
    values.set(`${sym}_CHANGE`, signed(change))
  }
  const current = ctx.symbol ?? quotes[0]?.[0]
  if (current !== undefined) {
    values.set("SYMBOL", current)
    values.set("TICKER", current)
    const q = quotes.find(([s]) => s === current)
    if (q !== undefined) {
      values.set("PRICE", dollars(q[1]))
      values.set("CHANGE", signed(q[2]))
    }
  }
  const indexed = (prefix: string, list: ReadonlyArray<readonly [string, number, number]>) =>
    list.forEach(([sym, price, change], i) => {
      values.set(`${prefix}_${i + 1}`, sym)
      values.set(`${prefix}_${i + 1}_PRICE`, dollars(price))
      values.set(`${prefix}_${i + 1}_CHANGE`, signed(change))
    })
  indexed("STOCK", quotes)
  const movers = [...quotes].sort((a, b) => Math.abs(b[2]) - Math.abs(a[2]))
  indexed("MOVER", movers)
  indexed("TOP_MOVER", movers)

  // each shown fundamentals key once, by its placeholder name (the `<PE>` search below looks at all of them)
  const fundamentals: Array<{ readonly name: string; readonly shown: string }> = []
  for (const [key, value] of Object.entries(ctx.fundamentals ?? {})) {
    const shown = display(value)
    if (shown === undefined) continue
    const name = upperSnake(key)
    values.set(name, shown)
    fundamentals.push({ name, shown })
  }
  // `<PE>` for `peRatio`: one fundamentals key of the placeholder's type whose name starts with it
  for (const name of typedShortNames) {
    if (values.has(name)) continue
    const type = placeholderBaseType(name)
    const candidates = fundamentals.filter((f) => f.name.startsWith(`${name}_`) && placeholderBaseType(f.name) === type)
    if (candidates.length === 1) values.set(name, candidates[0]!.shown)
  }
  if (typeof context === "object") {
    const explicit = context["placeholders"]
    if (typeof explicit === "object" && explicit !== null) {
      for (const [key, value] of Object.entries(explicit)) {
        const shown = display(value)
        if (shown !== undefined) values.set(key.replace(/^<|>$/g, ""), shown)
      }
    }
  }
  return values
}

export interface Rehydrated {
  readonly text: string
  readonly report: PlaceholderReport
}

/**
 * Placeholder values, or how to get them: the server passes `placeholderValuesOf(context)` so that the context is
 * only read for an answer that has a placeholder.
 */
export type PlaceholderValues = ReadonlyMap<string, string> | (() => ReadonlyMap<string, string>)

/** `placeholderValues(context)`, computed on first use and then kept. */
export const placeholderValuesOf = (context: RequestContext | undefined): () => ReadonlyMap<string, string> => {
  let values: ReadonlyMap<string, string> | undefined
  return () => (values ??= placeholderValues(context))
}

// a value that carries its own `%` after a placeholder the model followed with one
const undoubledPercent = (text: string) => text.includes("%%") ? text.replace(/(\d%)%/g, "$1") : text

const anyPlaceholder = new RegExp(placeholderPattern.source)
const globalPlaceholder = new RegExp(placeholderPattern.source, "g")

/** Fills every placeholder of `text` it has a value for; the rest follow `policy` (refusal is the caller's). */
export const rehydrate = (text: string, source: PlaceholderValues, policy: PlaceholderPolicy): Rehydrated => {
  if (!anyPlaceholder.test(text)) return { text: undoubledPercent(text), report: { filled: {}, unfilled: [], policy } }
  const values = typeof source === "function" ? source() : source
  const filled: Record<string, string> = {}
  const unfilled: Array<string> = []
  let out = text.replace(globalPlaceholder, (whole: string, name: string) => {
    const value = values.get(name)
    if (value !== undefined) {
      filled[whole] = value
      return value
    }
    if (!unfilled.includes(whole)) unfilled.push(whole)
    return policy === "remove" ? "" : whole
  })
  out = undoubledPercent(out)
  if (policy === "remove" && unfilled.length > 0) out = out.replace(/ {2,}/g, " ").replace(/ ([.,;:!?])/g, "$1")
  return { text: out, report: { filled, unfilled, policy } }
}

/**
 * Rehydration of a streamed answer: text after an unclosed `<` is held until the placeholder closes (or cannot
 * be one any more), so a client never sees half a placeholder.
 */
export class StreamingRehydrator {
  private pending = ""
  private readonly filled: Record<string, string> = {}
  private readonly unfilled: Array<string> = []
  private readonly values: PlaceholderValues
  private readonly policy: PlaceholderPolicy
  constructor(values: PlaceholderValues, policy: PlaceholderPolicy) {
    this.values = values
    this.policy = policy
  }

  /** the text that is final now */
  push(text: string): string {
    this.pending += text
    const open = this.pending.lastIndexOf("<")
    const holdFrom = open >= 0 && this.pending.indexOf(">", open) < 0 && this.pending.length - open <= 40 &&
        /^<[A-Z0-9_]*$/.test(this.pending.slice(open))
      ? open
      : this.pending.length
    const ready = this.pending.slice(0, holdFrom)
    this.pending = this.pending.slice(holdFrom)
    return this.convert(ready)
  }

  flush(): string {
    const rest = this.pending
    this.pending = ""
    return this.convert(rest)
  }

  get report(): PlaceholderReport {
    return { filled: { ...this.filled }, unfilled: [...this.unfilled], policy: this.policy }
  }

  private convert(text: string): string {
    if (text === "") return ""
    const r = rehydrate(text, this.values, this.policy === "refuse" ? "leave" : this.policy)
    Object.assign(this.filled, r.report.filled)
    for (const u of r.report.unfilled) if (!this.unfilled.includes(u)) this.unfilled.push(u)
    return r.text
  }
}
