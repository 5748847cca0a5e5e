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
  t("AMZN", "Amazon.com, Inc.", "Consumer Discretionary", "NASDAQ", ["Amazon", "amazon", "Amazon.com", "amazon.com", "AWS"]),
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

// Matching scans the text's word tokens once, by hand, instead of running one large alternation at every
// position: the content rules call this for every record, so it is on the ingest's hot path.
const isWordChar = (c: number) => (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122)
const isJoiner = (c: number) => c === 46 || c === 38 || c === 45 // . & -
const wordChar = (() => {
  const m = new Uint8Array(128)
  for (let c = 0; c < 128; c++) m[c] = isWordChar(c) ? 1 : 0
  return m
})()
/** end of the token starting at `i`: word characters, joined by . & - between word characters */
const tokenEnd = (s: string, i: number) => {
  let j = i
  for (;;) {
    while (j < s.length && isWordChar(s.charCodeAt(j))) j++
    if (j + 1 < s.length && isJoiner(s.charCodeAt(j)) && isWordChar(s.charCodeAt(j + 1))) j++
    else return j
  }
}
/** FNV-1a of s[start, end): tokens are looked up by hash, so a word that names nothing costs no string */
const hashRange = (s: string, start: number, end: number) => {
  let h = 0x811c9dc5
  for (let i = start; i < end; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193)
  return h >>> 0
}

interface TokenEntry {
  readonly token: string
  /** the symbol when the token is a plain (non-strict) symbol */
  readonly plain: string | undefined
  /** the symbol when the token is any symbol (for cashtags, parentheses, exchange prefixes) */
  readonly symbol: string | undefined
  /** aliases starting with this token, longest first */
  readonly aliases: ReadonlyArray<readonly [string, string]>
}

const tokenTable: ReadonlyMap<number, ReadonlyArray<TokenEntry>> = (() => {
  const entries = new Map<string, { plain?: string; symbol?: string; aliases: Array<readonly [string, string]> }>()
  const entry = (token: string) => {
    let e = entries.get(token)
    if (e === undefined) entries.set(token, (e = { aliases: [] }))
    return e
  }
  for (const x of tickers) {
    const e = entry(x.symbol)
    e.symbol = x.symbol
    if (!x.strict) e.plain = x.symbol
    for (const a of x.aliases) entry(a.slice(0, tokenEnd(a, 0))).aliases.push([a, x.symbol])
  }
  const table = new Map<number, Array<TokenEntry>>()
  for (const [token, e] of entries) {
    e.aliases.sort((a, b) => b[0].length - a[0].length)
    const h = hashRange(token, 0, token.length)
    const list = table.get(h) ?? []
    list.push({ token, plain: e.plain, symbol: e.symbol, aliases: e.aliases })
    table.set(h, list)
  }
  return table
})()
const exchangePrefix = /\b(?:NYSE|NASDAQ|TSX|Nasdaq):\s?$/

// (first character, length) pairs of table tokens: most words are ruled out without hashing them
const shapes = (() => {
  const m = new Uint8Array(128 * 32)
  for (const list of tokenTable.values()) for (const e of list) m[(e.token.charCodeAt(0) & 127) * 32 + Math.min(e.token.length, 31)] = 1
  return m
})()

// the low 16 bits of every table token's hash: most words that pass `shapes` stop here, before the Map
const hashBits = (() => {
  const m = new Uint8Array(1 << 16)
  for (const h of tokenTable.keys()) m[h & 0xffff] = 1
  return m
})()

/**
 * What a table token at text[start, end) names, added to `found`; returns where the scan goes on (past a
 * matched alias, else `end`), or -1 when it names nothing here. Kept out of `scanTickers`' loop, which runs
 * for every word: V8 optimizes that loop alone and this rarer path apart.
 */
const matchToken = (text: string, start: number, end: number, h: number, cashtag: boolean, found: Array<string>): number => {
  const list = tokenTable.get(h >>> 0)
  if (list === undefined) return -1
  let e: TokenEntry | undefined
  for (let k = 0; k < list.length; k++) {
    const x = list[k]!
    if (x.token.length === end - start && text.startsWith(x.token, start)) {
      e = x
      break
    }
  }
  if (e === undefined) return -1
  if (cashtag) {
    if (e.symbol === undefined) return -1
    if (!found.includes(e.symbol)) found.push(e.symbol)
    return end
  }
  const n = text.length
  for (let k = 0; k < e.aliases.length; k++) {
    const alias = e.aliases[k]![0]
    if (!text.startsWith(alias, start)) continue
    const after = start + alias.length
    const next = after < n ? text.charCodeAt(after) : 32
    if (isWordChar(next) || next === 38 || (next === 46 && after + 1 < n && isWordChar(text.charCodeAt(after + 1)))) continue
    const symbol = e.aliases[k]![1]
    if (!found.includes(symbol)) found.push(symbol)
    return after
  }
  if (e.plain !== undefined) {
    if (!found.includes(e.plain)) found.push(e.plain)
    return end
  }
  if (e.symbol !== undefined) {
    const inParens = start > 0 && text.charCodeAt(start - 1) === 40 && end < n && text.charCodeAt(end) === 41
    if (inParens || exchangePrefix.test(text.slice(Math.max(0, start - 9), start))) {
      if (!found.includes(e.symbol)) found.push(e.symbol)
      return end
    }
  }
  return -1
}

/**
 * The ticker symbols named in a text (by symbol, cashtag or alias), each once, in order of first mention.
 * `findTickersInText("Apple vs $MSFT and (F)")` is `["AAPL", "MSFT", "F"]`.
 */
export const findTickersInText = (text: string): ReadonlyArray<string> => scanTickers(text, [], undefined)

const endsWithExchange = /\b(?:NYSE|NASDAQ|TSX|Nasdaq):$/

/**
 * `findTickersInText(\`${first}\n${second}\`)` without building the joined text (the content rules run it on
 * every record's question and answer, and flattening the joined string cost as much as half the scan).
 * Tokens never span the newline; the one way the two parts interact, an exchange prefix ending the first
 * ("NYSE:") before a symbol starting the second, falls back to the joined text. `inSecond`, when the caller
 * has it, is `findTickersInText(second)` (the ingest reads it in the scan that also masks the answer).
 */
export const findTickersInTexts = (first: string, second: string, inSecond?: ReadonlyArray<string>): ReadonlyArray<string> => {
  if (endsWithExchange.test(first)) return findTickersInText(`${first}\n${second}`)
  const a = findTickersInText(first)
  const b = inSecond ?? findTickersInText(second)
  if (b.length === 0) return a
  if (a.length === 0) return b
  const out = [...a]
  for (const x of b) if (!out.includes(x)) out.push(x)
  return out
}

/** Index ETFs quoted as "the market" in overviews. */
export const marketIndexSymbols: ReadonlyArray<string> = ["SPY", "QQQ", "DIA", "IWM"]

/** What `maskTickers` writes for every ticker mention. */
export const tickerMask = "<TICKER>"

// placeholders that stand for a symbol (`<STOCK_1>`, `<SYMBOL>`, `<TICKER>`): masked like the symbols they replace
const symbolPlaceholder = /^(?:STOCK(?:_\d+)?|SYMBOL(?:_\d+)?|TICKER(?:_\d+)?)$/
const isPlaceholderChar = (c: number) => (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 95

/** text[start, end) shaped like a listed symbol: capitals, at most one `.` class suffix (`BRK.B`), 1 to 7 characters */
const symbolShaped = (text: string, start: number, end: number): boolean => {
  if (end - start > 7) return false
  let dots = 0
  for (let k = start; k < end; k++) {
    const c = text.charCodeAt(k)
    if (c === 46) {
      if (++dots > 1) return false
    } else if (c < 65 || c > 90) return false
  }
  return true
}

const ownSymbol = (text: string, start: number, end: number, own: ReadonlyArray<string>): boolean => {
  for (let k = 0; k < own.length; k++) {
    const s = own[k]!
    if (s.length === end - start && text.startsWith(s, start)) return true
  }
  return false
}

/** The mentions a scan masks, as [from, to) pairs of the text in order (`at[2k]`, `at[2k + 1]`); a scan refills it. */
export class MaskedSpans {
  at = new Int32Array(32)
  count = 0
  push(from: number, to: number): void {
    if (this.count * 2 + 2 > this.at.length) {
      const grown = new Int32Array(this.at.length * 2)
      grown.set(this.at)
      this.at = grown
    }
    this.at[this.count * 2] = from
    this.at[this.count * 2 + 1] = to
    this.count++
  }
}

/** the mask scan at a "<" (text[i]): a placeholder is one unit, kept whole or masked when it names a symbol; returns where it goes on */
const maskPlaceholder = (text: string, i: number, own: ReadonlyArray<string>, spans: MaskedSpans): number => {
  const n = text.length
  let j = i + 1
  while (j < n && isPlaceholderChar(text.charCodeAt(j))) j++
  if (j === i + 1 || j >= n || text.charCodeAt(j) !== 62) return i + 1
  const name = text.slice(i + 1, j)
  if (symbolPlaceholder.test(name) || own.includes(`<${name}>`)) spans.push(i, j + 1)
  return j + 1
}

// what the mask scan's table lookups find, dropped (it only asks whether a token names a ticker)
const scratchFound: Array<string> = []

/**
 * Both ticker scans of a text in one pass: returns what `findTickersInText` finds (when `find`), and fills
 * `spans` (when given) with what `maskTickers` masks, `own` being the record's tickers. The two scans move
 * differently (the mask takes a placeholder or a symbol-shaped token as a unit where the finder reads on into
 * an alias: "CN Rail" is one alias to the finder, "CN" plus "Rail" to the mask), so each keeps its own
 * cursor and moves exactly as it would alone; while the cursors agree, which is almost everywhere, a token is
 * read and hashed, and looked up in the table, once for both.
 */
export const scanTickers = (text: string, own: ReadonlyArray<string>, spans: MaskedSpans | undefined, find = true): Array<string> => {
  const found: Array<string> = []
  const n = text.length
  if (spans !== undefined) spans.count = 0
  let fi = find ? 0 : n
  let mi = spans !== undefined ? 0 : n
  for (;;) {
    const i = fi < mi ? fi : mi
    if (i >= n) break
    const atFind = fi === i
    const atMask = mi === i
    const c = text.charCodeAt(i)
    if (c === 60 && atMask) {
      // the finder reads past "<" as past any other separator
      if (atFind) fi = i + 1
      mi = maskPlaceholder(text, i, own, spans!)
      continue
    }
    let start = i
    if (c >= 128 || wordChar[c] === 0) {
      // a cashtag: "$" and a token; anything else that is not a word character is skipped
      const next = c === 36 && i + 1 < n ? text.charCodeAt(i + 1) : 128
      if (next >= 128 || wordChar[next] === 0) {
        if (atFind) fi = i + 1
        if (atMask) mi = i + 1
        continue
      }
      start = i + 1
    }
    // the token's end and its hash in one pass (the same as tokenEnd + hashRange)
    let end = start
    let h = 0x811c9dc5
    for (;;) {
      let d = end < n ? text.charCodeAt(end) : 0
      while (d < 128 && wordChar[d] === 1) {
        h = Math.imul(h ^ d, 0x01000193)
        d = ++end < n ? text.charCodeAt(end) : 0
      }
      if ((d === 46 || d === 38 || d === 45) && end + 1 < n) {
        const after = text.charCodeAt(end + 1)
        if (after < 128 && wordChar[after] === 1) {
          h = Math.imul(h ^ d, 0x01000193)
          end++
          continue
        }
      }
      break
    }
    const cashtag = start !== i
    const before = i > 0 ? text.charCodeAt(i - 1) : 32
    // a token glued to "&" or "." on its left is part of something else ("S&P", "x.AAPL")
    if (!cashtag && (before === 38 || before === 46)) {
      if (atFind) fi = end
      if (atMask) mi = end
      continue
    }
    const listed = shapes[(text.charCodeAt(start) & 127) * 32 + (end - start < 31 ? end - start : 31)] === 1 && hashBits[h & 0xffff] === 1
    let named = -1
    if (atFind) {
      if (listed) named = matchToken(text, start, end, h, cashtag, found)
      fi = named < 0 ? end : named
    }
    if (atMask) {
      let to = -1
      if (symbolShaped(text, start, end) && (cashtag || end - start >= 2 || ownSymbol(text, start, end, own))) to = end
      else if (own.length > 0 && ownSymbol(text, start, end, own)) to = end
      else if (listed) {
        if (atFind) to = named
        else {
          to = matchToken(text, start, end, h, cashtag, scratchFound)
          scratchFound.length = 0
        }
      }
      if (to < 0) mi = end
      else {
        spans!.push(i, to)
        mi = to
      }
    }
  }
  return found
}

const maskScratch = new MaskedSpans()

/**
 * `text` with every ticker mention replaced by `tickerMask`: the templated form two records share when they
 * differ only in the stock they talk about (the split groups records by it, Split.ts). Masked:
 * - what `findTickersInText` finds: symbols, cashtags, company names and aliases, strict symbols in
 *   unmistakable positions;
 * - the record's own `tickers` wherever they stand as a whole token, symbol placeholders (`<STOCK_1>`);
 * - every other upper-case token of two to seven capitals (`FTS`, `TSX`, `EPS`): the table cannot list every
 *   listing (the original app's chat file quotes Fortis as FTS), and masking an acronym with the symbols only
 *   makes the templated form coarser, which for grouping is the safe side.
 * Other placeholders (`<PRICE>`) stay as they are. Returns `text` itself when nothing is masked.
 * (The ingest does not build this string: Split.groupKeys hashes the canonical form from `scanTickers`' spans.)
 */
export const maskTickers = (text: string, own: ReadonlyArray<string> = []): string => {
  scanTickers(text, own, maskScratch, false)
  const { at, count } = maskScratch
  if (count === 0) return text
  let out = ""
  let last = 0
  for (let k = 0; k < count; k++) {
    out += text.slice(last, at[2 * k]) + tickerMask
    last = at[2 * k + 1]!
  }
  return out + text.slice(last)
}
