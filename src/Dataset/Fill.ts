/**
 * Resolving placeholders against a context: which live value each placeholder in an answer stands for.
 * The synthesizer writes answers by these rules, the Serving stage fills generated answers with them, and
 * the tests check that every placeholder of every synthetic answer resolves in its own context.
 *
 * Name rules (`<[PREFIX_]NAME[_n]>`):
 * - `PRICE`, `CHANGE` read `Current Prices`; `CHANGE` is the percent change, shown as `+0.45%`.
 * - Other names read `Fundamentals`, by the key `fundamentalKeyOf(NAME)` (`PE` -> `peRatio`,
 *   `SUPPORT` -> `support`, `EPS_ESTIMATE` -> `epsEstimate`).
 * - An index `_n` picks the n-th symbol of `Current Prices` (1-based): `<PE_2>` is the second symbol's
 *   P/E, read from `Fundamentals` under that symbol (`  MSFT: {"peRatio":31.2}`), `<MOVER_1_CHANGE>` the
 *   first symbol's change, `<AVG_COST_1>` the first holding's average price, `<STOCK_1>` the first symbol.
 * - A symbol prefix reads that symbol: `<SPY_PRICE>` from `Market Indices` or `Current Prices`.
 * - Without index or prefix, the symbol is `Current Symbol` (or the only priced symbol).
 * - `TIMESTAMP` is not in the app's context: it is filled with the time of the answer.
 */
import { placeholderBaseType, placeholderPattern } from "./Placeholders.ts"
import type { RagContext } from "./RagContext.ts"
import { isKnownTicker } from "./Tickers.ts"

const keyAliases: Record<string, string> = {
  PE: "peRatio",
  PB: "pbRatio",
  PS: "psRatio",
  YIELD: "dividendYield",
  DIVIDEND: "dividendPerShare",
  EARNINGS_DATE: "nextEarningsDate",
  WEEK52_HIGH: "week52High",
  WEEK52_LOW: "week52Low",
  AVG_COST: "avgPrice"
}

/** `EPS_ESTIMATE` -> `epsEstimate`, `PE` -> `peRatio` */
export const fundamentalKeyOf = (name: string): string =>
  keyAliases[name] ?? name.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase())

export interface ParsedPlaceholder {
  readonly name: string
  readonly index: number | undefined
  readonly symbol: string | undefined
}

/** Splits `<SPY_PRICE>` into symbol SPY + PRICE, `<MOVER_2_CHANGE>` into index 2 + CHANGE, `<PE_1>` into PE + 1. */
export const parsePlaceholder = (placeholder: string): ParsedPlaceholder => {
  const bare = placeholder.replace(/^<|>$/g, "")
  const parts = bare.split("_")
  let index: number | undefined
  let symbol: string | undefined
  const rest: Array<string> = []
  parts.forEach((p, i) => {
    if (/^\d+$/.test(p) && index === undefined) index = Number(p)
    else if (i === 0 && parts.length > 1 && isKnownTicker(p)) symbol = p
    else rest.push(p)
  })
  // MOVER_2_CHANGE / TOP_MOVER_1: the words before the index only say "the n-th symbol"
  const name = rest.filter((p) => p !== "MOVER" && p !== "TOP").join("_") || "SYMBOL"
  return { name, index, symbol }
}

const symbolsOf = (ctx: RagContext): Array<string> => Object.keys(ctx.prices ?? {})

const fmt2 = (n: number) => n.toFixed(2)
const scaled = (n: number) => {
  const a = Math.abs(n)
  if (a >= 1e12) return `${fmt2(n / 1e12)}T`
  if (a >= 1e9) return `${fmt2(n / 1e9)}B`
  if (a >= 1e6) return `${fmt2(n / 1e6)}M`
  if (a >= 1e3) return `${fmt2(n / 1e3)}K`
  return fmt2(n)
}

/** How a value of a placeholder's base type is shown in text. */
export const displayValue = (placeholder: string, value: unknown): string => {
  if (typeof value !== "number") return String(value)
  switch (placeholderBaseType(placeholder)) {
    case "PRICE":
    case "EPS":
      return `${value < 0 ? "-" : ""}$${fmt2(Math.abs(value))}`
    case "CHANGE":
      return `${value >= 0 ? "+" : ""}${fmt2(value)}%`
    case "PERCENT":
    case "YIELD":
      return `${fmt2(value)}%`
    case "MARKET_CAP":
      return `$${scaled(value)}`
    case "VOLUME":
      return scaled(value)
    case "SCORE":
      return String(Math.round(value))
    default:
      return String(value)
  }
}

/**
 * The raw context value a placeholder stands for (a number, or a string for symbols, dates and text), or
 * undefined when the context does not hold it. `TIMESTAMP` always resolves to undefined here.
 */
export const placeholderValue = (placeholder: string, ctx: RagContext): unknown => {
  const { name, index, symbol: prefixed } = parsePlaceholder(placeholder)
  const symbols = symbolsOf(ctx)
  const symbol = prefixed ?? (index !== undefined ? symbols[index - 1] : (ctx.symbol ?? (symbols.length === 1 ? symbols[0] : undefined)))
  if (name === "SYMBOL" || name === "STOCK" || name === "TICKER") return symbol
  if (name === "AVG_COST" || name === "SHARES") {
    const h = index !== undefined ? ctx.holdings?.[index - 1] : ctx.holdings?.find((x) => x.symbol === symbol)
    return name === "SHARES" ? h?.shares : h?.avgPrice
  }
  if (name === "PRICE" || name === "CHANGE") {
    if (symbol === undefined) return undefined
    const q = ctx.prices?.[symbol]
    const ix = ctx.marketData?.indices[symbol]
    if (name === "PRICE") return q?.price ?? ix?.value
    return q?.changePercent ?? ix?.changePercent
  }
  const key = fundamentalKeyOf(name)
  const f = ctx.fundamentals ?? {}
  const nested = symbol !== undefined ? f[symbol] : undefined
  if (nested !== null && typeof nested === "object" && key in nested) return (nested as Record<string, unknown>)[key]
  if (prefixed === undefined && (index === undefined || index === 1 && symbols.length <= 1)) return f[key]
  return undefined
}

/** Fills every placeholder the context resolves; `<TIMESTAMP>` gets `now` when given; others stay. */
export const fillPlaceholders = (text: string, ctx: RagContext, now?: string): string =>
  text.replace(placeholderPattern, (ph) => {
    if (ph === "<TIMESTAMP>") return now ?? ph
    const v = placeholderValue(ph, ctx)
    return v === undefined || v === null ? ph : displayValue(ph, v)
  })
