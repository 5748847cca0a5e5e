/**
 * The context text the original app sends with every question (its `formatRAGContext` in
 * `lib/ai-router.ts`), as a Schema plus a renderer and a tolerant parser. The synthetic dataset's
 * `context` field is this layout, so the model is trained on exactly what the app sends at inference.
 *
 * Layout (sections are joined with "\n"; every section after the first starts with an empty line):
 *
 *     Current Symbol: AAPL
 *
 *     Current Prices:
 *       AAPL: $189.50 (+0.45%)
 *
 *     Fundamentals:
 *       peRatio: 28.5
 *       sector: "Technology"
 *
 *     Recent News:
 *       1. Apple unveils new chips (Reuters)
 *          optional summary line
 *
 *     Portfolio Holdings:
 *       AAPL: 10 shares @ $150.00
 *
 * The app renders at most 5 news items and skips empty news/holdings. `marketData` is not rendered by the
 * app's router; we add it as a `Market Indices:` section (only when present) so overview questions can
 * carry index levels: `  SPY: 512.34 (+0.45%)`, after an optional `Market Session: open` line.
 */
import * as Schema from "effect/Schema"
import { isLiveType, type LiveType, placeholderBaseType } from "./Placeholders.ts"

export const Quote = Schema.Struct({
  price: Schema.Finite,
  changePercent: Schema.Finite,
  change: Schema.optionalKey(Schema.Finite),
  timestamp: Schema.optionalKey(Schema.Finite)
})
export const NewsItem = Schema.Struct({
  headline: Schema.String,
  source: Schema.String,
  summary: Schema.optionalKey(Schema.String)
})
export const Holding = Schema.Struct({ symbol: Schema.String, shares: Schema.Finite, avgPrice: Schema.Finite })
export const IndexLevel = Schema.Struct({ value: Schema.Finite, changePercent: Schema.Finite })

/** The structured context (the app's `RAGContext` interface). */
export const RagContext = Schema.Struct({
  symbol: Schema.optionalKey(Schema.String),
  prices: Schema.optionalKey(Schema.Record(Schema.String, Quote)),
  fundamentals: Schema.optionalKey(Schema.Record(Schema.String, Schema.Unknown)),
  news: Schema.optionalKey(Schema.Array(NewsItem)),
  holdings: Schema.optionalKey(Schema.Array(Holding)),
  marketData: Schema.optionalKey(Schema.Struct({
    session: Schema.optionalKey(Schema.String),
    indices: Schema.Record(Schema.String, IndexLevel)
  }))
})
export type RagContext = typeof RagContext.Type

const signed = (n: number) => `${n >= 0 ? "+" : ""}${n.toFixed(2)}`

/** Renders the app's text layout byte for byte (see the module comment). */
export const renderRagContext = (ctx: RagContext): string => {
  const parts: Array<string> = []
  if (ctx.symbol) parts.push(`Current Symbol: ${ctx.symbol}`)
  if (ctx.prices) {
    parts.push("\nCurrent Prices:")
    for (const [sym, q] of Object.entries(ctx.prices)) {
      parts.push(`  ${sym}: $${q.price.toFixed(2)} (${signed(q.changePercent)}%)`)
    }
  }
  if (ctx.fundamentals) {
    parts.push("\nFundamentals:")
    for (const [key, value] of Object.entries(ctx.fundamentals)) parts.push(`  ${key}: ${JSON.stringify(value)}`)
  }
  if (ctx.news && ctx.news.length > 0) {
    parts.push("\nRecent News:")
    ctx.news.slice(0, 5).forEach((item, i) => {
      parts.push(`  ${i + 1}. ${item.headline} (${item.source})`)
      if (item.summary) parts.push(`     ${item.summary}`)
    })
  }
  if (ctx.holdings && ctx.holdings.length > 0) {
    parts.push("\nPortfolio Holdings:")
    for (const h of ctx.holdings) parts.push(`  ${h.symbol}: ${h.shares} shares @ $${h.avgPrice.toFixed(2)}`)
  }
  if (ctx.marketData) {
    if (ctx.marketData.session) parts.push(`\nMarket Session: ${ctx.marketData.session}`)
    parts.push("\nMarket Indices:")
    for (const [sym, x] of Object.entries(ctx.marketData.indices)) {
      parts.push(`  ${sym}: ${x.value.toFixed(2)} (${signed(x.changePercent)}%)`)
    }
  }
  return parts.join("\n")
}

type Section = "none" | "prices" | "fundamentals" | "news" | "holdings" | "indices"
const headers: Record<string, Section> = {
  "Current Prices:": "prices",
  "Fundamentals:": "fundamentals",
  "Recent News:": "news",
  "Portfolio Holdings:": "holdings",
  "Market Indices:": "indices"
}
const priceLine = /^\s+([^\s:]+):\s+\$(-?[\d,]*\.?\d+)\s+\(([+-]?[\d,]*\.?\d+)%\)\s*$/
const indexLine = /^\s+([^\s:]+):\s+\$?(-?[\d,]*\.?\d+)\s+\(([+-]?[\d,]*\.?\d+)%\)\s*$/
const keyLine = /^\s+([^:]+?):\s(.*)$/
const newsLine = /^\s+\d+\.\s(.*)\s\(([^()]*)\)\s*$/
const holdingLine = /^\s+([^\s:]+):\s+(-?[\d.]+)\s+shares\s+@\s+\$(-?[\d,]*\.?\d+)\s*$/
const num = (s: string) => Number(s.replace(/,/g, ""))

/**
 * Reads the layout back into structured values. Tolerant: unknown lines and sections are skipped, a text
 * cut anywhere yields whatever complete lines it holds, and a fundamentals value that is not JSON is kept
 * as its raw string. `parseRagContext(renderRagContext(x))` equals `x` for values that render exactly
 * (prices with two decimals, at most 5 news items).
 */
export const parseRagContext = (text: string): RagContext => {
  let symbol: string | undefined
  let session: string | undefined
  const prices: Record<string, typeof Quote.Type> = {}
  const fundamentals: Record<string, unknown> = {}
  const news: Array<{ headline: string; source: string; summary?: string }> = []
  const holdings: Array<typeof Holding.Type> = []
  const indices: Record<string, typeof IndexLevel.Type> = {}
  let section: Section = "none"
  let seen = { prices: false, fundamentals: false, news: false, holdings: false, indices: false }
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trimEnd()
    if (line === "") continue
    const trimmed = line.trim()
    if (line.startsWith("Current Symbol:")) {
      symbol = line.slice("Current Symbol:".length).trim()
      section = "none"
      continue
    }
    if (line.startsWith("Market Session:")) {
      session = line.slice("Market Session:".length).trim()
      section = "none"
      continue
    }
    const header = headers[trimmed]
    if (header !== undefined && !/^\s/.test(line)) {
      section = header
      seen = { ...seen, [header]: true }
      continue
    }
    switch (section) {
      case "prices": {
        const m = priceLine.exec(line)
        if (m) prices[m[1]!] = { price: num(m[2]!), changePercent: num(m[3]!) }
        break
      }
      case "fundamentals": {
        const m = keyLine.exec(line)
        if (m) {
          try {
            fundamentals[m[1]!] = JSON.parse(m[2]!)
          } catch {
            fundamentals[m[1]!] = m[2]!
          }
        }
        break
      }
      case "news": {
        const m = newsLine.exec(line)
        if (m) news.push({ headline: m[1]!, source: m[2]! })
        else if (/^ {5}\S/.test(line) && news.length > 0) news[news.length - 1] = { ...news[news.length - 1]!, summary: trimmed }
        break
      }
      case "holdings": {
        const m = holdingLine.exec(line)
        if (m) holdings.push({ symbol: m[1]!, shares: num(m[2]!), avgPrice: num(m[3]!) })
        break
      }
      case "indices": {
        const m = indexLine.exec(line)
        if (m) indices[m[1]!] = { value: num(m[2]!), changePercent: num(m[3]!) }
        break
      }
      case "none":
        break
    }
  }
  return {
    ...(symbol !== undefined ? { symbol } : {}),
    ...(seen.prices ? { prices } : {}),
    ...(seen.fundamentals ? { fundamentals } : {}),
    ...(news.length > 0 ? { news } : {}),
    ...(holdings.length > 0 ? { holdings } : {}),
    ...(seen.indices || session !== undefined
      ? { marketData: { ...(session !== undefined ? { session } : {}), indices } }
      : {})
  }
}

/** `peRatio` -> `PE_RATIO`, `week52High` -> `WEEK_52_HIGH` */
const toUpperSnake = (key: string) =>
  key.replace(/([a-z])([A-Z0-9])/g, "$1_$2").replace(/([0-9])([A-Za-z])/g, "$1_$2").replace(/[^A-Za-z0-9]+/g, "_").toUpperCase()

/** The live type of a fundamentals key, by the same naming rule as placeholders (`dividendYield` -> YIELD). */
export const fundamentalType = (key: string): LiveType | undefined => {
  const t = placeholderBaseType(toUpperSnake(key))
  return isLiveType(t) ? t : undefined
}

/** One live number held by a context, with the placeholder type it would fill. */
export interface ContextValue {
  readonly type: LiveType
  readonly value: number
  /** where it came from: `prices.AAPL.price`, `fundamentals.peRatio`, `holdings.0.avgPrice`, `indices.SPY.value` */
  readonly path: string
  readonly symbol?: string
}

/** Every live number in a context: the values an answer's placeholders may be filled from or checked against. */
export const contextValues = (ctx: RagContext): Array<ContextValue> => {
  const out: Array<ContextValue> = []
  for (const [sym, q] of Object.entries(ctx.prices ?? {})) {
    out.push({ type: "PRICE", value: q.price, path: `prices.${sym}.price`, symbol: sym })
    out.push({ type: "CHANGE", value: q.changePercent, path: `prices.${sym}.changePercent`, symbol: sym })
  }
  for (const [key, v] of Object.entries(ctx.fundamentals ?? {})) {
    const type = fundamentalType(key)
    if (type !== undefined && typeof v === "number") {
      out.push({ type, value: v, path: `fundamentals.${key}`, ...(ctx.symbol ? { symbol: ctx.symbol } : {}) })
    } else if (v !== null && typeof v === "object" && !Array.isArray(v)) {
      // per-symbol fundamentals, as comparisons send them: `  MSFT: {"peRatio":31.2}`
      for (const [inner, x] of Object.entries(v)) {
        const t = fundamentalType(inner)
        if (t !== undefined && typeof x === "number") out.push({ type: t, value: x, path: `fundamentals.${key}.${inner}`, symbol: key })
      }
    }
  }
  ;(ctx.holdings ?? []).forEach((h, i) => {
    out.push({ type: "PRICE", value: h.avgPrice, path: `holdings.${i}.avgPrice`, symbol: h.symbol })
  })
  for (const [sym, x] of Object.entries(ctx.marketData?.indices ?? {})) {
    out.push({ type: "PRICE", value: x.value, path: `indices.${sym}.value`, symbol: sym })
    out.push({ type: "CHANGE", value: x.changePercent, path: `indices.${sym}.changePercent`, symbol: sym })
  }
  return out
}
