/**
 * The ticker table shipped with the project: real US and Canadian listings plus the index ETFs the app
 * quotes, with company names, aliases and sector. The Router classifies queries with it, the synthesizer
 * draws records from it, and the content rules check that tickers named in a text appear in `tickers`.
 *
 * Matching rule (`findTickersInText`): everything is case-sensitive and bounded by non-word characters.
 * - Symbols match as upper-case tokens (`AAPL`), or as cashtags (`$AAPL`).
 * - Symbols that are also English words or single letters (`A`, `C`, `F`, `V`, `IT`, `ON`, `ALL`, `NOW`…)
 *   are `strict`: they match only as a cashtag (`$F`), in parentheses (`(F)`), or after an exchange prefix
 *   (`NYSE: F`), because "A stock", "IT spending" and "ALL-time high" are everyday text.
 * - Aliases match exactly as written. An alias is listed in the case it must appear in: "Apple" and
 *   "apple" are separate entries, while "Target" is listed only capitalised, so "price target" is not
 *   Target Corporation.
 */

export interface Ticker {
  readonly symbol: string
  readonly name: string
  readonly aliases: ReadonlyArray<string>
  readonly sector: string
  readonly exchange: "NASDAQ" | "NYSE" | "TSX" | "NYSE Arca"
  /** a symbol that is an English word or a single letter: matched only in unmistakable positions */
  readonly strict?: boolean
  readonly kind?: "stock" | "etf"
}

const t = (
  symbol: string,
  name: string,
  sector: string,
  exchange: Ticker["exchange"],
  aliases: ReadonlyArray<string>,
  extra: { strict?: boolean; kind?: "stock" | "etf" } = {}
): Ticker => ({ symbol, name, sector, exchange, aliases, ...extra })

export const tickers: ReadonlyArray<Ticker> = [
  // US mega caps and technology
  t("AAPL", "Apple Inc.", "Technology", "NASDAQ", ["Apple", "apple", "iPhone", "iphone", "Apple Inc"]),
  t("MSFT", "Microsoft Corporation", "Technology", "NASDAQ", ["Microsoft", "microsoft", "Azure", "Windows"]),
  t("AMZN", "Amazon.com, Inc.", "Consumer Discretionary", "NASDAQ", ["Amazon", "amazon", "Amazon.com", "AWS"]),
  t("NVDA", "NVIDIA Corporation", "Technology", "NASDAQ", ["Nvidia", "NVIDIA", "nvidia", "GeForce"]),
  t("GOOGL", "Alphabet Inc. Class A", "Communication Services", "NASDAQ", ["Alphabet", "Google", "google", "YouTube"]),
  t("META", "Meta Platforms, Inc.", "Communication Services", "NASDAQ", ["Meta Platforms", "Facebook", "facebook", "Instagram", "WhatsApp"]),
  t("TSLA", "Tesla, Inc.", "Consumer Discretionary", "NASDAQ", ["Tesla", "tesla"]),
  t("NFLX", "Netflix, Inc.", "Communication Services", "NASDAQ", ["Netflix", "netflix"]),
  t("AMD", "Advanced Micro Devices, Inc.", "Technology", "NASDAQ", ["Advanced Micro Devices", "Ryzen", "Radeon"]),
  t("INTC", "Intel Corporation", "Technology", "NASDAQ", ["Intel", "intel"]),
  t("AVGO", "Broadcom Inc.", "Technology", "NASDAQ", ["Broadcom", "broadcom"]),
  t("ORCL", "Oracle Corporation", "Technology", "NYSE", ["Oracle", "oracle"]),
  t("CRM", "Salesforce, Inc.", "Technology", "NYSE", ["Salesforce", "salesforce"]),
  t("ADBE", "Adobe Inc.", "Technology", "NASDAQ", ["Adobe", "adobe", "Photoshop"]),
  t("IBM", "International Business Machines", "Technology", "NYSE", ["International Business Machines"]),
  t("QCOM", "Qualcomm Incorporated", "Technology", "NASDAQ", ["Qualcomm", "qualcomm", "Snapdragon"]),
  t("CSCO", "Cisco Systems, Inc.", "Technology", "NASDAQ", ["Cisco", "cisco"]),
  t("MU", "Micron Technology, Inc.", "Technology", "NASDAQ", ["Micron", "micron"]),
  t("PLTR", "Palantir Technologies Inc.", "Technology", "NASDAQ", ["Palantir", "palantir"]),
  t("SNOW", "Snowflake Inc.", "Technology", "NYSE", ["Snowflake"], { strict: true }),
  t("NOW", "ServiceNow, Inc.", "Technology", "NYSE", ["ServiceNow", "servicenow"], { strict: true }),
  t("ON", "ON Semiconductor Corporation", "Technology", "NASDAQ", ["ON Semiconductor", "onsemi"], { strict: true }),
  t("IT", "Gartner, Inc.", "Technology", "NYSE", ["Gartner"], { strict: true }),
  t("A", "Agilent Technologies, Inc.", "Health Care", "NYSE", ["Agilent", "agilent"], { strict: true }),
  t("UBER", "Uber Technologies, Inc.", "Industrials", "NYSE", ["Uber", "uber"]),
  t("ABNB", "Airbnb, Inc.", "Consumer Discretionary", "NASDAQ", ["Airbnb", "airbnb"]),
  t("PYPL", "PayPal Holdings, Inc.", "Financials", "NASDAQ", ["PayPal", "paypal"]),
  t("COIN", "Coinbase Global, Inc.", "Financials", "NASDAQ", ["Coinbase", "coinbase"]),
  t("SHOP", "Shopify Inc.", "Technology", "TSX", ["Shopify", "shopify"], { strict: true }),
  // financials
  t("JPM", "JPMorgan Chase & Co.", "Financials", "NYSE", ["JPMorgan", "JPMorgan Chase", "jpmorgan", "JP Morgan"]),
  t("BAC", "Bank of America Corporation", "Financials", "NYSE", ["Bank of America", "BofA"]),
  t("WFC", "Wells Fargo & Company", "Financials", "NYSE", ["Wells Fargo", "wells fargo"]),
  t("C", "Citigroup Inc.", "Financials", "NYSE", ["Citigroup", "citigroup", "Citi"], { strict: true }),
  t("GS", "The Goldman Sachs Group, Inc.", "Financials", "NYSE", ["Goldman Sachs", "Goldman", "goldman sachs"]),
  t("MS", "Morgan Stanley", "Financials", "NYSE", ["Morgan Stanley", "morgan stanley"], { strict: true }),
  t("V", "Visa Inc.", "Financials", "NYSE", ["Visa Inc"], { strict: true }),
  t("MA", "Mastercard Incorporated", "Financials", "NYSE", ["Mastercard", "mastercard"], { strict: true }),
  t("AXP", "American Express Company", "Financials", "NYSE", ["American Express", "Amex", "amex"]),
  t("BRK.B", "Berkshire Hathaway Inc. Class B", "Financials", "NYSE", ["Berkshire Hathaway", "Berkshire", "berkshire"]),
  t("ALL", "The Allstate Corporation", "Financials", "NYSE", ["Allstate", "allstate"], { strict: true }),
  // health care
  t("UNH", "UnitedHealth Group Incorporated", "Health Care", "NYSE", ["UnitedHealth", "unitedhealth"]),
  t("JNJ", "Johnson & Johnson", "Health Care", "NYSE", ["Johnson & Johnson", "J&J"]),
  t("PFE", "Pfizer Inc.", "Health Care", "NYSE", ["Pfizer", "pfizer"]),
  t("MRK", "Merck & Co., Inc.", "Health Care", "NYSE", ["Merck", "merck"]),
  t("LLY", "Eli Lilly and Company", "Health Care", "NYSE", ["Eli Lilly", "Lilly"]),
  t("ABBV", "AbbVie Inc.", "Health Care", "NYSE", ["AbbVie", "abbvie"]),
  // energy
  t("XOM", "Exxon Mobil Corporation", "Energy", "NYSE", ["Exxon Mobil", "ExxonMobil", "Exxon", "exxon"]),
  t("CVX", "Chevron Corporation", "Energy", "NYSE", ["Chevron", "chevron"]),
  t("OXY", "Occidental Petroleum Corporation", "Energy", "NYSE", ["Occidental Petroleum", "Occidental"]),
  t("BP", "BP p.l.c.", "Energy", "NYSE", ["BP plc"], { strict: true }),
  // industrials and autos
  t("CAT", "Caterpillar Inc.", "Industrials", "NYSE", ["Caterpillar", "caterpillar"], { strict: true }),
  t("BA", "The Boeing Company", "Industrials", "NYSE", ["Boeing", "boeing"], { strict: true }),
  t("LMT", "Lockheed Martin Corporation", "Industrials", "NYSE", ["Lockheed Martin", "Lockheed"]),
  t("RTX", "RTX Corporation", "Industrials", "NYSE", ["Raytheon", "raytheon"]),
  t("GE", "GE Aerospace", "Industrials", "NYSE", ["General Electric", "GE Aerospace"], { strict: true }),
  t("GM", "General Motors Company", "Consumer Discretionary", "NYSE", ["General Motors"], { strict: true }),
  t("F", "Ford Motor Company", "Consumer Discretionary", "NYSE", ["Ford Motor", "Ford"], { strict: true }),
  t("RIVN", "Rivian Automotive, Inc.", "Consumer Discretionary", "NASDAQ", ["Rivian", "rivian"]),
  // consumer
  t("WMT", "Walmart Inc.", "Consumer Staples", "NYSE", ["Walmart", "walmart"]),
  t("COST", "Costco Wholesale Corporation", "Consumer Staples", "NASDAQ", ["Costco", "costco"], { strict: true }),
  t("TGT", "Target Corporation", "Consumer Staples", "NYSE", ["Target Corporation", "Target Corp"]),
  t("KO", "The Coca-Cola Company", "Consumer Staples", "NYSE", ["Coca-Cola", "coca-cola", "Coke"]),
  t("PEP", "PepsiCo, Inc.", "Consumer Staples", "NASDAQ", ["PepsiCo", "pepsico", "Pepsi"]),
  t("PG", "The Procter & Gamble Company", "Consumer Staples", "NYSE", ["Procter & Gamble", "P&G"]),
  t("MCD", "McDonald's Corporation", "Consumer Discretionary", "NYSE", ["McDonald's", "McDonalds", "mcdonalds"]),
  t("NKE", "NIKE, Inc.", "Consumer Discretionary", "NYSE", ["Nike", "nike"]),
  t("SBUX", "Starbucks Corporation", "Consumer Discretionary", "NASDAQ", ["Starbucks", "starbucks"]),
  t("DIS", "The Walt Disney Company", "Communication Services", "NYSE", ["Disney", "disney", "Walt Disney"]),
  t("HD", "The Home Depot, Inc.", "Consumer Discretionary", "NYSE", ["Home Depot", "home depot"]),
  // telecom and utilities
  t("T", "AT&T Inc.", "Communication Services", "NYSE", ["AT&T"], { strict: true }),
  t("VZ", "Verizon Communications Inc.", "Communication Services", "NYSE", ["Verizon", "verizon"]),
  t("NEE", "NextEra Energy, Inc.", "Utilities", "NYSE", ["NextEra Energy", "NextEra"]),
  // Canada (TSX primary listings; most also trade in New York under the same symbol)
  t("RY", "Royal Bank of Canada", "Financials", "TSX", ["Royal Bank of Canada", "Royal Bank", "RBC"]),
  t("TD", "The Toronto-Dominion Bank", "Financials", "TSX", ["Toronto-Dominion", "TD Bank"], { strict: true }),
  t("BNS", "The Bank of Nova Scotia", "Financials", "TSX", ["Bank of Nova Scotia", "Scotiabank"]),
  t("BMO", "Bank of Montreal", "Financials", "TSX", ["Bank of Montreal"]),
  t("ENB", "Enbridge Inc.", "Energy", "TSX", ["Enbridge", "enbridge"]),
  t("CNQ", "Canadian Natural Resources Limited", "Energy", "TSX", ["Canadian Natural Resources", "Canadian Natural"]),
  t("SU", "Suncor Energy Inc.", "Energy", "TSX", ["Suncor", "suncor"], { strict: true }),
  t("CNR", "Canadian National Railway Company", "Industrials", "TSX", ["Canadian National Railway", "CN Rail"]),
  t("CP", "Canadian Pacific Kansas City Limited", "Industrials", "TSX", ["Canadian Pacific", "CPKC"], { strict: true }),
  t("BCE", "BCE Inc.", "Communication Services", "TSX", ["Bell Canada"]),
  t("TRI", "Thomson Reuters Corporation", "Industrials", "TSX", ["Thomson Reuters"]),
  t("ATD", "Alimentation Couche-Tard Inc.", "Consumer Staples", "TSX", ["Couche-Tard", "Circle K"]),
  // index and sector ETFs
  t("SPY", "SPDR S&P 500 ETF Trust", "Index ETF", "NYSE Arca", ["S&P 500", "S&P500", "s&p 500"], { kind: "etf" }),
  t("QQQ", "Invesco QQQ Trust", "Index ETF", "NASDAQ", ["Nasdaq 100", "Nasdaq-100", "NASDAQ-100"], { kind: "etf" }),
  t("DIA", "SPDR Dow Jones Industrial Average ETF", "Index ETF", "NYSE Arca", ["Dow Jones", "the Dow"], { kind: "etf" }),
  t("IWM", "iShares Russell 2000 ETF", "Index ETF", "NYSE Arca", ["Russell 2000"], { kind: "etf" }),
  t("VTI", "Vanguard Total Stock Market ETF", "Index ETF", "NYSE Arca", ["Vanguard Total Stock Market"], { kind: "etf" }),
  t("XLK", "Technology Select Sector SPDR Fund", "Sector ETF", "NYSE Arca", [], { kind: "etf" }),
  t("XLF", "Financial Select Sector SPDR Fund", "Sector ETF", "NYSE Arca", [], { kind: "etf" }),
  t("XLE", "Energy Select Sector SPDR Fund", "Sector ETF", "NYSE Arca", [], { kind: "etf" }),
  t("XIU", "iShares S&P/TSX 60 Index ETF", "Index ETF", "TSX", ["TSX 60", "S&P/TSX 60"], { kind: "etf" })
]

export const tickerBySymbol: ReadonlyMap<string, Ticker> = new Map(tickers.map((x) => [x.symbol, x]))

/** true for a symbol in the table */
export const isKnownTicker = (symbol: string): boolean => tickerBySymbol.has(symbol)

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

// One precompiled alternation, longest first so "Bank of America" wins over a shorter overlap.
// Group 1: cashtag / parenthesised / exchange-prefixed symbol (any symbol); group 2: plain token.
const buildMatcher = () => {
  const anySymbol = [...tickers].map((x) => x.symbol).sort((a, b) => b.length - a.length).map(escapeRegExp)
  const plain = [
    ...tickers.filter((x) => !x.strict).map((x) => x.symbol),
    ...tickers.flatMap((x) => x.aliases)
  ].sort((a, b) => b.length - a.length).map(escapeRegExp)
  const unmistakable = `(?:\\$|\\((?=(?:${anySymbol.join("|")})\\))|\\b(?:NYSE|NASDAQ|TSX|Nasdaq):\\s?)(${anySymbol.join("|")})`
  return new RegExp(`${unmistakable}(?![A-Za-z0-9])|(?<![A-Za-z0-9$&.])(${plain.join("|")})(?![A-Za-z0-9&]|\\.[A-Za-z])`, "g")
}
const matcher = buildMatcher()
const aliasToSymbol: ReadonlyMap<string, string> = new Map([
  ...tickers.flatMap((x) => x.aliases.map((a) => [a, x.symbol] as const)),
  ...tickers.map((x) => [x.symbol, x.symbol] as const)
])

/**
 * The ticker symbols named in a text (by symbol, cashtag or alias), each once, in order of first mention.
 * `findTickersInText("Apple vs $MSFT and (F)")` is `["AAPL", "MSFT", "F"]`.
 */
export const findTickersInText = (text: string): ReadonlyArray<string> => {
  const found: Array<string> = []
  const seen = new Set<string>()
  for (const m of text.matchAll(matcher)) {
    const token = m[1] ?? m[2]
    const symbol = token === undefined ? undefined : aliasToSymbol.get(token)
    if (symbol !== undefined && !seen.has(symbol)) {
      seen.add(symbol)
      found.push(symbol)
    }
  }
  return found
}

/** Index ETFs quoted as "the market" in overviews. */
export const marketIndexSymbols: ReadonlyArray<string> = ["SPY", "QQQ", "DIA", "IWM"]
