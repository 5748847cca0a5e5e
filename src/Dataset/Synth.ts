/**
 * The synthetic training set (`dataset synth`): there is no public `practice_qa_100k.jsonl`, so the project
 * makes one. Records follow the seed's schema; the `context` is the app's RAG text layout (RagContext.ts)
 * holding every live value the placeholdered answer refers to, by the rules of Fill.ts. Answers carry no
 * raw live numbers, only placeholders; each ends with its sources (`Sources: …`) and, for advice, its risk note.
 *
 * Intents: price, daily_move (with news), valuation, comparison, technical, earnings, dividend,
 * market_overview, portfolio, education, should_buy (always with a risk note). Tickers come from the
 * ticker table (Tickers.ts); questions use symbols, company names and lower-case aliases.
 *
 * Deterministic: one SeededRng (Shared/Prng.ts) seeded from `seed`, drawn in record order, so the first N
 * records of any count are the same for a seed. No Effect in the hot loop: `synthesize(seed)` is a plain
 * generator, batched into a Stream by the CLI.
 */
import { targetAnswer } from "./PromptFormat.ts"
import { renderRagContext, type RagContext } from "./RagContext.ts"
import type { TrainingRecord } from "./Record.ts"
import { SeededRng } from "../Shared/Prng.ts"
import { fnv1a } from "./Split.ts"
import { findTickersInText, type Ticker, tickers } from "./Tickers.ts"

/** The project's one PRNG (Shared/Prng.ts) as a function, drawn in record order. */
export const makeRng = (seed: number) => {
  const rng = new SeededRng(seed)
  return () => rng.next()
}
type Rng = ReturnType<typeof makeRng>
const pick = <A>(rng: Rng, xs: ReadonlyArray<A>): A => xs[Math.floor(rng() * xs.length)]!
const between = (rng: Rng, lo: number, hi: number) => lo + (hi - lo) * rng()
const round = (n: number, d = 2) => Math.round(n * 10 ** d) / 10 ** d

const stocks = tickers.filter((t) => t.kind !== "etf")
const indexEtfs = tickers.filter((t) => t.kind === "etf" && t.sector === "Index ETF" && t.exchange !== "TSX")
const dividendPayers = stocks.filter((t) => ["Financials", "Energy", "Consumer Staples", "Utilities", "Health Care", "Communication Services"].includes(t.sector))

/** stable per-ticker anchors, so a ticker's prices look alike across records */
const anchor = (t: Ticker) => {
  const h = fnv1a(t.symbol)
  return {
    price: 15 + (h % 880) + ((h >>> 10) % 100) / 100,
    shares: 0.3e9 + ((h >>> 4) % 15000) * 1e6,
    pe: 9 + ((h >>> 8) % 55),
    pb: 1 + ((h >>> 12) % 180) / 10,
    beta: 0.6 + ((h >>> 16) % 120) / 100
  }
}

/** the company name without its legal suffix: "Apple", "American Express" */
const shortName = (t: Ticker) => t.name.replace(/,? (?:Inc\.|Corporation|Incorporated|Company|Limited|plc|p\.l\.c\.|& Co\.)$/, "").replace(/^The /, "")

/** how a question names a company: its symbol, its name, or one of its aliases */
const nameOf = (rng: Rng, t: Ticker): string => {
  const r = rng()
  // "IT", "ON", "F" alone read as words: such symbols appear as cashtags ("$F") instead
  if (r < 0.55 || t.aliases.length === 0) return t.strict ? `$${t.symbol}` : t.symbol
  if (r < 0.8) return shortName(t)
  return pick(rng, t.aliases)
}

const sources = ["Reuters", "Bloomberg", "CNBC", "MarketWatch", "The Globe and Mail", "Barron's", "The Wall Street Journal", "Yahoo Finance"]
const headlines = [
  (n: string) => `${n} beats quarterly estimates on strong demand`,
  (n: string) => `${n} shares slide after a cautious outlook`,
  (n: string) => `Analysts raise their price targets on ${n}`,
  (n: string) => `${n} announces a new share buyback program`,
  (n: string) => `${n} faces regulatory scrutiny over pricing`,
  (n: string) => `${n} expands its partnership with a major cloud provider`,
  (n: string) => `Investors weigh ${n} guidance ahead of the holiday quarter`,
  (n: string) => `${n} names a new chief financial officer`
]
const drivers = ["Treasury yields", "Federal Reserve commentary", "inflation data", "earnings season", "oil prices", "jobs data", "AI spending", "consumer spending data"]
const riskNotes = [
  "Stock investments carry risk. Past performance does not guarantee future results.",
  "This is educational information, not financial advice. Prices can move quickly and you can lose money.",
  "Markets are volatile; consider your risk tolerance and time horizon, and consult a licensed advisor.",
  "Not investment advice. Concentrated positions can lose value quickly; diversify and size positions carefully.",
  "Valuations and momentum can change fast. Always verify current data before making any decision."
]
const openers = ["", "", "", "Quick question: ", "Hey, ", "Can you tell me ", "I'd like to know "]
const when = ["", " today", " right now", " at the moment", " this session"]

/** lower-cases a leading capitalised word, never a symbol ("What" -> "what", "AAPL" stays) */
const lowerFirst = (q: string) => (/^[A-Z][a-z]/.test(q) ? q.charAt(0).toLowerCase() + q.slice(1) : q)

// Optional closing remarks, at most two per answer: they multiply the number of distinct answers, so a
// large set is not mostly near-duplicates (which the ingest would drop).
const priceAsides = [
  "Intraday quotes can move quickly, so check the timestamp.", "The percent change is measured from the previous close.",
  "Pre-market and after-hours prices can differ from the regular-session quote.", "Volume tells you how much conviction is behind the move.",
  "A single day's move says little about the longer trend."
]
const valuationAsides = [
  "A high multiple means the market expects growth; it is not a verdict on its own.", "Valuation alone does not time the market.",
  "Compare the multiple with the company's own five-year history.", "Earnings-based ratios mislead when earnings are temporarily depressed.",
  "Price-to-book matters most for banks and asset-heavy businesses.", "Forward estimates can change quickly after guidance updates."
]
const comparisonAsides = [
  "A lower multiple is not automatically better: growth, margins and balance sheets matter too.", "Compare companies within the same sector for a fair read.",
  "Market cap differences also change how much each stock moves on news.", "Check both companies' debt levels before drawing conclusions."
]
const technicalAsides = [
  "Levels like these are zones, not exact prices.", "A break above resistance on strong volume would confirm strength.",
  "A close below support would weaken the setup.", "Momentum readings can stay extreme for a while in strong trends.",
  "Check the weekly chart for the bigger picture.", "Technical signals work best combined with a risk plan."
]
const earningsAsides = [
  "Guidance often moves the stock more than the headline number.", "Options usually price in a larger move around the report.",
  "Revenue growth and margins matter as much as the EPS beat or miss.", "Dates can shift; companies confirm them a few weeks ahead.",
  "Compare the estimate with the same quarter last year to judge growth."
]
const dividendAsides = [
  "A very high yield can signal that the market doubts the dividend is sustainable.", "Check the payout ratio to judge how safe the dividend is.",
  "Dividends are not guaranteed and can be cut.", "Yield moves inversely with the share price.",
  "Look at the history of dividend increases, not just today's yield."
]
const aside = (rng: Rng, pool: ReadonlyArray<string>) => {
  const r = rng()
  if (r < 0.3) return ""
  const first = pick(rng, pool)
  if (r < 0.75) return ` ${first}`
  const second = pick(rng, pool)
  return second === first ? ` ${first}` : ` ${first} ${second}`
}

const ask = (rng: Rng, q: string) => {
  const opener = pick(rng, openers)
  if (opener === "Hey, ") return opener + lowerFirst(q)
  if (opener === "Can you tell me " || opener === "I'd like to know ") {
    return `${opener}${lowerFirst(q).replace(/\?$/, "")}.`
  }
  return opener + q
}

interface Draft {
  readonly intent: string
  readonly question: string
  readonly answer: string
  readonly rationale: string
  readonly tickers: ReadonlyArray<string>
  readonly sources: ReadonlyArray<string>
  readonly context?: RagContext
  readonly risk?: boolean
}

const quote = (rng: Rng, t: Ticker) => {
  const a = anchor(t)
  return { price: round(a.price * between(rng, 0.85, 1.15)), changePercent: round((rng() + rng() + rng() - 1.5) * 3) }
}

const fundamentals = (rng: Rng, t: Ticker, price: number) => {
  const a = anchor(t)
  const pe = round(a.pe * between(rng, 0.85, 1.15), 1)
  return {
    peRatio: pe,
    pbRatio: round(a.pb * between(rng, 0.9, 1.1), 1),
    eps: round(price / pe),
    marketCap: Math.round(price * a.shares),
    volume: Math.round(between(rng, 2e6, 95e6)),
    beta: round(a.beta, 2),
    sector: t.sector
  }
}

const mover = (rng: Rng) => pick(rng, ["gaining", "slipping", "moving", "trading"])

const price = (rng: Rng): Draft => {
  const t = pick(rng, stocks)
  const n = nameOf(rng, t)
  const q = quote(rng, t)
  const question = ask(rng, pick(rng, [
    `What is the current price of ${n}?`,
    `How much is ${n} stock${pick(rng, when)}?`,
    `Where is ${n} trading${pick(rng, when)}?`,
    `What's ${n} at${pick(rng, when)}?`,
    `Give me a quote for ${n}.`,
    `How is ${n} doing${pick(rng, when)}?`
  ]))
  const answer = pick(rng, [
    `As of <TIMESTAMP>, ${t.symbol} is trading at <PRICE> per share, a <CHANGE> change from the previous close.`,
    `${shortName(t)} (${t.symbol}) last traded at <PRICE>, ${mover(rng)} <CHANGE> on the day as of <TIMESTAMP>.`,
    `${t.symbol} is at <PRICE> (<CHANGE> today) as of <TIMESTAMP>.${rng() < 0.5 ? ` It is listed on the ${t.exchange} and sits in the ${t.sector} sector.` : ""}`,
    `The latest quote for ${t.symbol} is <PRICE>, which is <CHANGE> versus yesterday's close (as of <TIMESTAMP>).${rng() < 0.5 ? " Intraday quotes can move quickly, so check the timestamp." : ""}`
  ]) + aside(rng, priceAsides)
  return {
    intent: "price", question, answer, tickers: [t.symbol], sources: ["market_data_api"],
    rationale: "Price questions need the live quote: the price and the percent change come from the Current Prices section of the context.",
    context: { symbol: t.symbol, prices: { [t.symbol]: q } }
  }
}

const dailyMove = (rng: Rng): Draft => {
  const t = pick(rng, stocks)
  const n = nameOf(rng, t)
  const q = quote(rng, t)
  const news = [0, 1].map(() => ({ headline: pick(rng, headlines)(shortName(t)), source: pick(rng, sources) }))
  const dir = q.changePercent >= 0 ? pick(rng, ["up", "higher", "rising"]) : pick(rng, ["down", "lower", "falling"])
  const question = ask(rng, pick(rng, [
    `Why is ${n} ${dir}${pick(rng, when)}?`,
    `What's moving ${n}${pick(rng, when)}?`,
    `Why did ${n} move${pick(rng, when)}?`,
    `Explain the move in ${n}${pick(rng, when)}.`
  ]))
  const answer = `${t.symbol} is ${dir} <CHANGE> at <PRICE> as of <TIMESTAMP>. ` + pick(rng, [
    `The main headline is "${news[0]!.headline}" (${news[0]!.source}), and ${pick(rng, drivers)} is weighing on the broader tape.`,
    `Recent news includes "${news[0]!.headline}" from ${news[0]!.source} and "${news[1]!.headline}" from ${news[1]!.source}.`,
    `Traders are reacting to "${news[0]!.headline}" (${news[0]!.source}); single-day moves often fade once the news is priced in.`
  ])
  return {
    intent: "daily_move", question, answer, tickers: [t.symbol], sources: ["market_data_api", "news_feed"],
    rationale: "A move is explained by the live change plus the recent headlines in the context; numbers come only from the context.",
    context: { symbol: t.symbol, prices: { [t.symbol]: q }, news }
  }
}

const valuation = (rng: Rng): Draft => {
  const t = pick(rng, stocks)
  const n = nameOf(rng, t)
  const q = quote(rng, t)
  const f = fundamentals(rng, t, q.price)
  const question = ask(rng, pick(rng, [
    `What is ${n}'s P/E ratio?`,
    `Is ${n} expensive on valuation?`,
    `How is ${n} valued${pick(rng, when)}?`,
    `What are the valuation metrics for ${n}?`,
    `What's the market cap of ${n}?`,
    `Is ${n} overvalued?`
  ]))
  const answer = pick(rng, [
    `${t.symbol} trades at a P/E of <PE> and a price-to-book of <PB>, with trailing EPS of <EPS> and a market cap of <MARKET_CAP>.`,
    `At <PRICE>, ${shortName(t)} is valued at <MARKET_CAP>. Its P/E ratio is <PE> and its P/B is <PB>.`,
    `${t.symbol}: P/E <PE>, P/B <PB>, EPS <EPS>, market cap <MARKET_CAP>. Compare these with ${t.sector} peers rather than the whole market.`
  ]) + aside(rng, valuationAsides)
  return {
    intent: "valuation", question, answer, tickers: [t.symbol], sources: ["fundamental_data"],
    rationale: "Valuation answers quote the live multiples and market cap from the Fundamentals section and put them in sector context.",
    context: { symbol: t.symbol, prices: { [t.symbol]: q }, fundamentals: f }
  }
}

const comparison = (rng: Rng): Draft => {
  const a = pick(rng, stocks)
  let b = pick(rng, stocks.filter((x) => x.sector === a.sector && x.symbol !== a.symbol))
  if (b === undefined) b = pick(rng, stocks.filter((x) => x.symbol !== a.symbol))
  const qa = quote(rng, a)
  const qb = quote(rng, b)
  const fa = fundamentals(rng, a, qa.price)
  const fb = fundamentals(rng, b, qb.price)
  const na = nameOf(rng, a)
  const nb = nameOf(rng, b)
  const question = ask(rng, pick(rng, [
    `Compare ${na} and ${nb}.`,
    `${na} vs ${nb}: which looks cheaper?`,
    `How does ${na} stack up against ${nb}?`,
    `Which has the better valuation, ${na} or ${nb}?`
  ]))
  const answer = pick(rng, [
    `${a.symbol} trades at <PRICE_1> with a P/E of <PE_1>, while ${b.symbol} trades at <PRICE_2> with a P/E of <PE_2>. On price-to-book, ${a.symbol} is at <PB_1> versus <PB_2> for ${b.symbol}.`,
    `On valuation, ${a.symbol} (P/E <PE_1>, P/B <PB_1>) and ${b.symbol} (P/E <PE_2>, P/B <PB_2>) differ; today ${a.symbol} is <CHANGE_1> and ${b.symbol} is <CHANGE_2>.`,
    `${shortName(a)} is valued at <MARKET_CAP_1> and ${shortName(b)} at <MARKET_CAP_2>. Their P/E ratios are <PE_1> and <PE_2>.`
  ]) + aside(rng, comparisonAsides)
  return {
    intent: "comparison", question, answer, tickers: [a.symbol, b.symbol], sources: ["market_data_api", "fundamental_data"],
    rationale: "Comparisons put the same live metrics side by side, read from the context for each symbol in order.",
    context: { prices: { [a.symbol]: qa, [b.symbol]: qb }, fundamentals: { [a.symbol]: fa, [b.symbol]: fb } }
  }
}

const technical = (rng: Rng): Draft => {
  const t = pick(rng, stocks)
  const n = nameOf(rng, t)
  const q = quote(rng, t)
  const trend = pick(rng, ["uptrend", "downtrend", "sideways range"])
  const f = {
    support: round(q.price * between(rng, 0.88, 0.97)),
    resistance: round(q.price * between(rng, 1.03, 1.12)),
    rsi: Math.round(between(rng, 22, 78)),
    trend,
    week52High: round(q.price * between(rng, 1.02, 1.4)),
    week52Low: round(q.price * between(rng, 0.6, 0.95))
  }
  const question = ask(rng, pick(rng, [
    `What are the support and resistance levels for ${n}?`,
    `What do the technicals say about ${n}?`,
    `Is ${n} overbought?`,
    `Give me a technical read on ${n}.`,
    `Where is support for ${n}?`
  ]))
  const answer = pick(rng, [
    `${t.symbol} is in a <TREND> at <PRICE>, with support near <SUPPORT> and resistance near <RESISTANCE>. The RSI is <RSI>.`,
    `For ${t.symbol}, current technicals show: trend <TREND>, support at <SUPPORT>, resistance at <RESISTANCE>, RSI <RSI>. The 52-week range is <WEEK52_LOW> to <WEEK52_HIGH>.`,
    `Support sits around <SUPPORT> and resistance around <RESISTANCE> for ${t.symbol}, which last traded at <PRICE>. An RSI of <RSI> reads above 70 as overbought and below 30 as oversold.`
  ]) + aside(rng, technicalAsides)
  return {
    intent: "technical", question, answer, tickers: [t.symbol], sources: ["chart_data"],
    rationale: "Technical levels come from chart data in the context; the answer applies the standard RSI thresholds to them.",
    context: { symbol: t.symbol, prices: { [t.symbol]: q }, fundamentals: f }
  }
}

const isoDay = (rng: Rng) => {
  const d = new Date(Date.UTC(2026, 0, 1) + Math.floor(rng() * 300) * 86_400_000)
  return d.toISOString().slice(0, 10)
}

const earnings = (rng: Rng): Draft => {
  const t = pick(rng, stocks)
  const n = nameOf(rng, t)
  const q = quote(rng, t)
  const f = fundamentals(rng, t, q.price)
  const fe = { eps: f.eps, epsEstimate: round(f.eps / 4 * between(rng, 0.9, 1.2)), nextEarningsDate: isoDay(rng), peRatio: f.peRatio }
  const question = ask(rng, pick(rng, [
    `When does ${n} report earnings?`,
    `What are analysts expecting from ${n}'s next earnings?`,
    `What's the EPS estimate for ${n}?`,
    `When is ${n}'s next earnings call?`
  ]))
  const answer = pick(rng, [
    `${t.symbol} reports next on <EARNINGS_DATE>. Analysts expect EPS of <EPS_ESTIMATE> for the quarter, against trailing twelve-month EPS of <EPS>.`,
    `${shortName(t)}'s next report is scheduled for <EARNINGS_DATE>, with a consensus EPS estimate of <EPS_ESTIMATE>. The stock trades at <PRICE>, a P/E of <PE>.`
  ]) + aside(rng, earningsAsides)
  return {
    intent: "earnings", question, answer, tickers: [t.symbol], sources: ["earnings_calendar", "fundamental_data"],
    rationale: "Earnings answers use the scheduled date and consensus estimate from the context, never remembered figures.",
    context: { symbol: t.symbol, prices: { [t.symbol]: q }, fundamentals: fe }
  }
}

const dividend = (rng: Rng): Draft => {
  const t = pick(rng, dividendPayers)
  const n = nameOf(rng, t)
  const q = quote(rng, t)
  const y = round(between(rng, 0.6, 6.5))
  const f = { dividendYield: y, dividendPerShare: round(q.price * y / 100), payoutRatio: round(between(rng, 20, 85), 1) }
  const question = ask(rng, pick(rng, [
    `What is ${n}'s dividend yield?`,
    `Does ${n} pay a dividend?`,
    `How much does ${n} pay in dividends?`,
    `Is ${n} a good dividend stock?`
  ]))
  const answer = pick(rng, [
    `${t.symbol} yields <YIELD> at a price of <PRICE>, from an annual dividend of <DIVIDEND> per share. The payout ratio is <PAYOUT_RATIO>.`,
    `Yes. ${shortName(t)} pays <DIVIDEND> per share a year, a dividend yield of <YIELD> at today's price of <PRICE>.`
  ]) + aside(rng, dividendAsides)
  return {
    intent: "dividend", question, answer, tickers: [t.symbol], sources: ["fundamental_data"],
    rationale: "Dividend answers quote the live yield and per-share dividend from the Fundamentals section.",
    context: { symbol: t.symbol, prices: { [t.symbol]: q }, fundamentals: f }
  }
}

const marketOverview = (rng: Rng): Draft => {
  const movers = [pick(rng, stocks), pick(rng, stocks)]
  if (movers[0]!.symbol === movers[1]!.symbol) movers.pop()
  const indices = Object.fromEntries(indexEtfs.map((e) => [e.symbol, { value: quote(rng, e).price, changePercent: round((rng() - 0.5) * 3) }]))
  const prices = Object.fromEntries(movers.map((m) => [m.symbol, quote(rng, m)]))
  const sentiment = pick(rng, ["risk-on", "cautious", "mixed", "defensive"])
  const d = [pick(rng, drivers), pick(rng, drivers)]
  const question = ask(rng, pick(rng, [
    `Explain today's market movement.`,
    `How is the market doing${pick(rng, when)}?`,
    `What's going on in the stock market${pick(rng, when)}?`,
    `Give me a market overview.`,
    `How are the S&P 500 and Nasdaq doing?`
  ]))
  const moverText = movers.map((m, i) => `${m.symbol} (<MOVER_${i + 1}_CHANGE>)`).join(" and ")
  const answer = `Today's market shows ${sentiment} sentiment. The S&P 500 (SPY) is at <SPY_PRICE> (<SPY_CHANGE>), while the Nasdaq-100 (QQQ) is at <QQQ_PRICE> (<QQQ_CHANGE>)` +
    pick(rng, [".", ` and the Dow (DIA) is at <DIA_PRICE> (<DIA_CHANGE>).`]) +
    ` Key drivers include ${d[0]}${d[1] !== d[0] ? ` and ${d[1]}` : ""}. Top movers include ${moverText}.`
  return {
    intent: "market_overview", question, answer, tickers: ["SPY", "QQQ", "DIA", ...movers.map((m) => m.symbol)], sources: ["market_indices", "news_feed"],
    rationale: "Market overviews need current index levels and the top movers from the context; cite specific numbers only from it.",
    context: { prices, marketData: { session: pick(rng, ["open", "closed", "pre-market"]), indices } }
  }
}

const portfolio = (rng: Rng): Draft => {
  const count = 2 + Math.floor(rng() * 3)
  const held: Array<Ticker> = []
  while (held.length < count) {
    const t = pick(rng, stocks)
    if (!held.includes(t)) held.push(t)
  }
  const prices = Object.fromEntries(held.map((t) => [t.symbol, quote(rng, t)]))
  const holdings = held.map((t) => ({ symbol: t.symbol, shares: 1 + Math.floor(rng() * 200), avgPrice: round(prices[t.symbol]!.price * between(rng, 0.6, 1.3)) }))
  const question = ask(rng, pick(rng, [
    `How is my portfolio doing${pick(rng, when)}?`,
    `Which of my holdings is performing best?`,
    `How are my positions doing?`,
    `Give me a summary of my portfolio.`
  ]))
  const lines = held.map((t, i) => `${t.symbol} is at <PRICE_${i + 1}> (<CHANGE_${i + 1}> today) against your average cost of <AVG_COST_${i + 1}>`)
  const answer = `You hold ${held.length} positions. ${lines.join("; ")}.` +
    pick(rng, ["", " Check that no single position dominates your risk.", " Unrealized gains and losses only count once you sell."])
  return {
    intent: "portfolio", question, answer, tickers: held.map((t) => t.symbol), sources: ["portfolio_service", "market_data_api"],
    rationale: "Portfolio answers combine the user's holdings with live prices from the context, position by position.",
    context: { prices, holdings }
  }
}

const lessons: ReadonlyArray<readonly [string, ReadonlyArray<string>, string]> = [
  ["What is a P/E ratio?", ["The price-to-earnings ratio divides a company's share price by its earnings per share. It tells you how much investors pay for each dollar of earnings; compare it within a sector and against the company's own history."], "Definitions need no live data."],
  ["How do I analyze a stock's technical indicators?", ["Start with the trend, then mark support and resistance, then check moving averages for direction and momentum indicators such as RSI and MACD for overbought or oversold conditions. Confirm moves with volume."], "Method explanations need no live data."],
  ["What is market capitalization?", ["Market capitalization is the share price times the number of shares outstanding. It measures the market value of a company's equity and is used to group companies into large, mid and small caps."], "Definitions need no live data."],
  ["What does dividend yield mean?", ["Dividend yield is the annual dividend per share divided by the share price. It rises when the price falls, so a high yield can reflect a falling stock rather than a generous payer."], "Definitions need no live data."],
  ["What is an ETF?", ["An exchange-traded fund holds a basket of assets and trades on an exchange like a stock. Index ETFs such as SPY and QQQ track the S&P 500 and the Nasdaq-100 at low cost."], "Definitions need no live data."],
  ["What is the difference between a stock and a bond?", ["A stock is a share of ownership with a claim on future profits; a bond is a loan to the issuer that pays interest and returns principal at maturity. Stocks usually carry more risk and more expected return."], "Definitions need no live data."],
  ["What is EPS?", ["Earnings per share is net income divided by the number of shares outstanding. Analysts compare reported EPS with the consensus estimate, and the gap often moves the stock on earnings day."], "Definitions need no live data."],
  ["How does diversification reduce risk?", ["Holding assets whose returns do not move together lowers the volatility of the whole portfolio: a loss in one position is partly offset by others. It reduces company-specific risk, not market risk."], "Concepts need no live data."],
  ["What is a stop-loss order?", ["A stop-loss order becomes a market order once the price reaches a level you set, limiting the loss on a position. In fast markets it can fill well below the stop price."], "Concepts need no live data."],
  ["What does RSI measure?", ["The Relative Strength Index compares the size of recent gains and losses on a scale from 0 to 100. Readings above 70 are often read as overbought and below 30 as oversold."], "Definitions need no live data."],
  ["What is a bear market?", ["A bear market is a broad decline of a fifth or more from a recent high, usually with pessimistic sentiment. A bull market is the opposite: a sustained rise."], "Definitions need no live data."]
]
const lessonTails = ["", " This is general education, not a recommendation.", " Use it together with other measures rather than on its own."]

const education = (rng: Rng): Draft => {
  const [q, answers, rationale] = pick(rng, lessons)
  const question = ask(rng, q)
  return {
    intent: "education", question, answer: pick(rng, answers) + pick(rng, lessonTails), tickers: [], sources: [], rationale
  }
}

const shouldBuy = (rng: Rng): Draft => {
  const t = pick(rng, stocks)
  const n = nameOf(rng, t)
  const q = quote(rng, t)
  const f = fundamentals(rng, t, q.price)
  const question = ask(rng, pick(rng, [
    `Should I buy ${n} stock?`,
    `Should I buy ${n}${pick(rng, when)}?`,
    `Is ${n} a good buy${pick(rng, when)}?`,
    `Should I sell my ${n} shares?`,
    `Is it a good time to invest in ${n}?`
  ]))
  const answer = `I cannot provide personalized investment advice. However, I can share that ${t.symbol} is currently trading at <PRICE> with a <CHANGE> change today` +
    pick(rng, [" and a P/E of <PE>.", ", a market cap of <MARKET_CAP> and a P/E of <PE>.", "."]) +
    " Key factors to consider include: 1) the company's fundamentals and financial health, 2) market conditions and " +
    `${t.sector.toLowerCase()} sector trends, 3) your own risk tolerance and investment goals. ` +
    pick(rng, ["Always consult a financial advisor before making investment decisions.", "Consider speaking with a licensed advisor about your situation.", "Decide within a plan you can stick to in a drawdown."])
  return {
    intent: "should_buy", question, answer, tickers: [t.symbol], sources: ["market_data_api", "fundamental_data"], risk: true,
    rationale: "Advice questions get facts from the context and the factors to weigh, never a personal recommendation, plus a risk note.",
    context: { symbol: t.symbol, prices: { [t.symbol]: q }, fundamentals: { peRatio: f.peRatio, marketCap: f.marketCap, sector: f.sector } }
  }
}

/** intent -> weight (per 100 records) */
const intents: ReadonlyArray<readonly [number, (rng: Rng) => Draft]> = [
  [16, price], [10, dailyMove], [11, valuation], [9, comparison], [10, technical], [7, earnings],
  [7, dividend], [8, marketOverview], [7, portfolio], [6, education], [9, shouldBuy]
]
const totalWeight = intents.reduce((s, [w]) => s + w, 0)

export const intentNames = ["price", "daily_move", "valuation", "comparison", "technical", "earnings", "dividend", "market_overview", "portfolio", "education", "should_buy"] as const

/**
 * The record of a draft. Its answer is the reference evaluation compares with and the text training targets, so it
 * carries the record's citations as a closing `Sources: …` line and, for advice, its risk note (`targetAnswer`, as
 * the prompt format renders any seed record): a reference without them scores a citation rate of 0 whatever the
 * model learns. The fields stay as the seed's schema has them.
 */
const draftToRecord = (rng: Rng, d: Draft): TrainingRecord => {
  const citations = d.sources.map((source) => ({ source, timestamp: "<TIMESTAMP>" }))
  const riskNote = d.risk ? pick(rng, riskNotes) : undefined
  const answer = targetAnswer({ answer: d.answer, citations, risk_note: riskNote })
  return {
    question: d.question,
    answer,
    rationale: d.rationale,
    // every ticker the text names is listed (education answers mention SPY and QQQ, for example)
    tickers: [...new Set([...d.tickers, ...findTickersInText(`${d.question}\n${answer}`)])],
    citations,
    context_required: d.context !== undefined,
    ...(riskNote !== undefined ? { risk_note: riskNote } : {}),
    ...(d.context !== undefined ? { context: renderRagContext(d.context) } : {}),
    intent: d.intent
  }
}

/** An endless, deterministic sequence of synthetic records for a seed. */
export function* synthesize(seed: number): Generator<TrainingRecord> {
  const rng = makeRng(seed)
  for (;;) {
    let r = rng() * totalWeight
    let make = intents[0]![1]
    for (const [w, f] of intents) {
      if (r < w) {
        make = f
        break
      }
      r -= w
    }
    yield draftToRecord(rng, make(rng))
  }
}
