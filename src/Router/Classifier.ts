/**
 * Domain classification of a query: is it a finance question the local fine-tuned model should answer?
 *
 * The decision is a weighted sum of rules, each of which records why it fired:
 * - `ticker`: a symbol or cashtag from the project's ticker table (src/Dataset/Tickers.ts), `company`: one of
 *   its company names/aliases (weaker: "apple pie" names Apple too);
 * - `intent:<name>`: a finance intent (price, valuation, screening, rationale, explain, technicals, earnings,
 *   portfolio, should_i_buy) matched by a regular expression;
 * - `finance_terms`: general finance vocabulary (stock, dividend, ETF, ...);
 * - `market_data`: the context carries prices, fundamentals, holdings or news.
 * The query is a domain query when the score reaches `threshold`. Everything is configurable, and a custom
 * classifier function gets the built-in result and may replace it.
 */
import { findTickersInText } from "../Dataset/Tickers.ts"

export const intents = [
  "price",
  "valuation",
  "screening",
  "rationale",
  "explain",
  "technicals",
  "earnings",
  "portfolio",
  "should_i_buy"
] as const
export type Intent = (typeof intents)[number]

export interface IntentRule {
  readonly intent: Intent
  readonly pattern: RegExp
  readonly weight: number
  /** rules sharing a group add only their strongest weight (weak cues must not add up on their own) */
  readonly group?: string
}

export interface RuleHit {
  /** `ticker`, `company`, `intent:<name>`, `finance_terms`, `market_data` or `custom` */
  readonly rule: string
  readonly weight: number
  /** the text that made it fire */
  readonly match: string
}

export interface Classification {
  readonly domain: boolean
  readonly score: number
  readonly threshold: number
  readonly intents: ReadonlyArray<Intent>
  readonly tickers: ReadonlyArray<string>
  readonly hasMarketData: boolean
  readonly hits: ReadonlyArray<RuleHit>
  /** one line saying which rules fired and why the decision went the way it did */
  readonly explanation: string
}

export interface ClassifierInput {
  readonly query: string
  /** the context as given by the caller: a string or the app's structured object */
  readonly context: unknown
}

export interface ClassificationSettings {
  readonly intentRules: ReadonlyArray<IntentRule>
  readonly financeTerms: RegExp | undefined
  readonly financeTermsWeight: number
  /** a ticker symbol or cashtag in the query */
  readonly tickerWeight: number
  /** a company name/alias from the ticker table (without its symbol) */
  readonly companyWeight: number
  readonly marketDataWeight: number
  readonly threshold: number
  /** the ticker finder; defaults to the project's ticker table */
  readonly findTickers: (text: string) => ReadonlyArray<string>
  /** may replace the built-in decision (e.g. an embedding model or a list of customers' own symbols) */
  readonly custom: ((input: ClassifierInput, builtIn: Classification) => Classification) | undefined
}

// Weights: a strong intent or a ticker alone is enough (>= 0.5); a weak one (price, explain, rationale) needs a
// second signal, because "the price of milk" and "explain photosynthesis" are not finance questions.
export const defaultIntentRules: ReadonlyArray<IntentRule> = [
  { intent: "should_i_buy", weight: 0.6, pattern: /\b(?:should I (?:buy|sell|hold|invest|short)|is (?:it|now) a good (?:time|idea) to (?:buy|sell|invest)|worth (?:buying|investing)|good investment|buy or sell)\b/i },
  { intent: "screening", weight: 0.6, pattern: /\b(?:screen(?:er|ing)?|which stocks|find (?:me )?stocks|top \d* ?(?:stocks|companies|names)|best (?:stocks|dividend)|stocks (?:with|under|over|that|trading))\b/i },
  { intent: "valuation", weight: 0.6, pattern: /(?:\bP\/?E\b|\bP\/?B\b|\bPEG\b|\bEV\/EBITDA\b|\bvaluation\b|\bover-?valued\b|\bunder-?valued\b|\bmarket cap(?:italization)?\b|\bintrinsic value\b|\bDCF\b|\bprice[- ]to[- ](?:earnings|book|sales)\b|\bfair value\b)/i },
  { intent: "technicals", weight: 0.6, pattern: /\b(?:RSI|MACD|moving averages?|\d+-day (?:MA|SMA|EMA|moving average)|bollinger|overbought|oversold|support (?:and|&) resistance|resistance level|support level|technical (?:analysis|indicators?)|chart pattern|golden cross|death cross)\b/i },
  { intent: "earnings", weight: 0.6, pattern: /\b(?:earnings|EPS|revenue|guidance|quarterly (?:results|report)|Q[1-4] (?:results|earnings|report)|beat (?:the )?estimates|missed (?:the )?estimates|profit margins?)\b/i },
  { intent: "portfolio", weight: 0.6, pattern: /\b(?:my portfolio|portfolio|my holdings|holdings|diversif(?:y|ied|ication)|asset allocation|rebalanc(?:e|ing)|my positions?)\b/i },
  { intent: "rationale", weight: 0.3, group: "weak", pattern: /\b(?:why (?:did|is|are|has|have|was|were)|rationale|reasons? (?:for|behind)|what drove|what's driving|drivers? of)\b/i },
  { intent: "price", weight: 0.3, group: "weak", pattern: /\b(?:price|prices|quote|trading at|how much is|closing at|closed at|share price|stock price)\b/i },
  { intent: "explain", weight: 0.2, group: "weak", pattern: /\b(?:explain|what is|what are|what does|meaning of|define|how does)\b/i }
]

export const defaultFinanceTerms =
  /\b(?:stocks?|shares?|equit(?:y|ies)|ETFs?|dividends?|yields?|bonds?|tickers?|market|markets|NASDAQ|NYSE|TSX|S&P|Dow Jones|index funds?|invest(?:ing|ment|or|ors)?|sectors?|bull(?:ish)?|bear(?:ish)?|brokerage|options? chain|hedge funds?)\b/i

export const defaultClassificationSettings: ClassificationSettings = {
  intentRules: defaultIntentRules,
  financeTerms: defaultFinanceTerms,
  financeTermsWeight: 0.3,
  tickerWeight: 0.5,
  companyWeight: 0.3,
  marketDataWeight: 0.3,
  threshold: 0.5,
  findTickers: findTickersInText,
  custom: undefined
}

const marketDataKeys = ["symbol", "prices", "fundamentals", "news", "holdings", "marketData", "quote", "quotes", "technicals"]

const nonEmpty = (value: unknown): boolean => {
  if (value === undefined || value === null || value === "") return false
  if (Array.isArray(value)) return value.length > 0
  if (typeof value === "object") return Object.keys(value).length > 0
  return true
}

/** Which market-data field the context carries, if any (the `match` of the `market_data` rule). */
export const marketDataIn = (context: unknown): string | undefined => {
  if (typeof context === "string") {
    // the formatRAGContext layout, or any dollar amount / percent move
    const m = /^(?:Current Symbol|Current Prices|Fundamentals|Recent News|Portfolio Holdings):/m.exec(context) ??
      /\$\d[\d,]*(?:\.\d+)?|[+-]\d+(?:\.\d+)?%/.exec(context)
    return m?.[0]
  }
  if (typeof context === "object" && context !== null) {
    const record = context as Record<string, unknown>
    return marketDataKeys.find((key) => nonEmpty(record[key]))
  }
  return undefined
}

const round = (x: number) => Math.round(x * 1000) / 1000

// compiling a RegExp costs more than the rest of a classification: one per symbol, kept (bounded, since a
// custom `findTickers` may return anything)
const symbolPatterns = new Map<string, RegExp>()
const symbolPattern = (symbol: string): RegExp => {
  let pattern = symbolPatterns.get(symbol)
  if (pattern === undefined) {
    if (symbolPatterns.size >= 4096) symbolPatterns.clear()
    pattern = new RegExp(`(?<![A-Za-z0-9])\\$?${symbol.replace(/[.^$*+?()[\]{}|\\]/g, "\\$&")}(?![A-Za-z0-9])`)
    symbolPatterns.set(symbol, pattern)
  }
  return pattern
}

export const classify = (input: ClassifierInput, settings: ClassificationSettings): Classification => {
  const hits: Array<RuleHit> = []
  const tickers = settings.findTickers(input.query)
  // a symbol written out ("AAPL", "$AAPL") is unmistakable; a company alias alone ("apple") is weaker evidence
  const bySymbol = tickers.filter((t) => symbolPattern(t).test(input.query))
  const byAlias = tickers.filter((t) => !bySymbol.includes(t))
  if (bySymbol.length > 0) hits.push({ rule: "ticker", weight: settings.tickerWeight, match: bySymbol.join(",") })
  if (byAlias.length > 0) hits.push({ rule: "company", weight: settings.companyWeight, match: byAlias.join(",") })
  const found: Array<Intent> = []
  const groupBest: Record<string, number> = Object.create(null)
  for (const rule of settings.intentRules) {
    const m = rule.pattern.exec(input.query)
    if (m !== null && !found.includes(rule.intent)) {
      found.push(rule.intent)
      // within a group only the strongest rule counts; the others are listed with the weight they add (0)
      const best = rule.group === undefined ? 0 : groupBest[rule.group] ?? 0
      const weight = Math.max(0, rule.weight - best)
      if (rule.group !== undefined) groupBest[rule.group] = Math.max(best, rule.weight)
      hits.push({ rule: `intent:${rule.intent}`, weight, match: m[0] })
    }
  }
  const terms = settings.financeTerms?.exec(input.query)
  if (terms) hits.push({ rule: "finance_terms", weight: settings.financeTermsWeight, match: terms[0] })
  const data = marketDataIn(input.context)
  if (data !== undefined) hits.push({ rule: "market_data", weight: settings.marketDataWeight, match: data })
  const score = round(hits.reduce((s, h) => s + h.weight, 0))
  const domain = score >= settings.threshold && hits.length > 0
  const fired = hits.length === 0 ? "no rule fired" : hits.map((h) => `${h.rule}(${JSON.stringify(h.match)}) +${h.weight}`).join(", ")
  const builtIn: Classification = {
    domain,
    score,
    threshold: settings.threshold,
    intents: found,
    tickers,
    hasMarketData: data !== undefined,
    hits,
    explanation: `${domain ? "finance" : "general"}: ${fired}; score ${score} ${domain ? ">=" : "<"} threshold ${settings.threshold}`
  }
  return settings.custom === undefined ? builtIn : settings.custom(input, builtIn)
}
