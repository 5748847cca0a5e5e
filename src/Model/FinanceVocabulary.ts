/**
 * The SentencePiece-style (llama.cpp "llama" tokenizer) vocabulary of the project's own models: control tokens, the
 * 256 byte-fallback tokens, the dataset's placeholders as user-defined tokens (one token each), chat-role tokens,
 * then word and sub-word pieces learned by frequency from a built-in finance corpus. Deterministic: the same size
 * always gives the same vocabulary.
 */
import { liveTypes } from "../Shared/LiveTypes.ts"

/** llama.cpp token types (enum llama_token_type as stored in `tokenizer.ggml.token_type`) */
export const TokenType = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const

/** Every placeholder the dataset uses (its live types plus the original app's template names), one token each. */
export const placeholderTokens: ReadonlyArray<string> = Array.from(new Set([
  ...liveTypes,
  "SYMBOL", "SENTIMENT", "TREND", "SUPPORT", "RESISTANCE", "MOMENTUM",
  "SPY_PRICE", "SPY_CHANGE", "QQQ_PRICE", "QQQ_CHANGE",
  "STOCK_1", "STOCK_2", "STOCK_3", "PE_1", "PE_2", "PE_3", "PB_1", "PB_2", "PB_3",
  "REASON_1", "REASON_2", "REASON_3", "DRIVER_1", "DRIVER_2", "DRIVER_3",
  "TOP_MOVER_1", "TOP_MOVER_2", "MOVER_1_CHANGE", "MOVER_2_CHANGE"
])).map((name) => `<${name}>`)

/** Chat-role control tokens used by the built-in chat template; `<|end|>` ends a turn (the EOT token). */
export const chatTokens = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"] as const

/** The chat template of the project's models (Jinja, as in HF tokenizer_config.json / GGUF tokenizer.chat_template). */
export const chatTemplate =
  "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"

/** A small finance corpus the word pieces are learned from (plain prose; live values already placeholders). */
export const financeCorpus = `
The stock market closed higher today as investors weighed earnings reports, interest rates and inflation data.
What is the current price of the stock? The price of <SYMBOL> is <PRICE>, a change of <CHANGE> or <PERCENT> since the previous close.
The S&P 500 index, tracked by SPY at <SPY_PRICE>, rose <SPY_CHANGE>, while the Nasdaq 100 fund QQQ traded at <QQQ_PRICE>.
A price to earnings ratio compares the share price with earnings per share; a high ratio can signal growth expectations or overvaluation.
Earnings per share (EPS) is net income divided by the number of shares outstanding. The company reported EPS of <EPS>.
Market capitalization is the share price multiplied by shares outstanding; its market cap is <MARKET_CAP>.
The dividend yield is the annual dividend divided by the price. A yield of <YIELD> may attract income investors.
Trading volume was <VOLUME> shares, above the average daily volume, which suggests strong interest from buyers and sellers.
Support is a price level where buying pressure tends to stop a decline; resistance is a level where selling pressure caps a rally.
The stock is trading between support at <SUPPORT> and resistance at <RESISTANCE>, with momentum of <MOMENTUM> and a <TREND> trend.
Market sentiment is <SENTIMENT>. Analysts cite the drivers <DRIVER_1>, <DRIVER_2> and <DRIVER_3> for the move.
Top movers today were <TOP_MOVER_1> at <MOVER_1_CHANGE> and <TOP_MOVER_2> at <MOVER_2_CHANGE>.
Compare the valuation of <STOCK_1>, <STOCK_2> and <STOCK_3>: their P/E ratios are <PE_1>, <PE_2> and <PE_3>, and their P/B ratios <PB_1>, <PB_2> and <PB_3>.
Diversification spreads risk across asset classes such as stocks, bonds, commodities, real estate and cash.
Bonds pay interest; when interest rates rise, bond prices fall, and the yield to maturity of existing bonds goes up.
The Federal Reserve sets the federal funds rate to manage inflation and employment; rate cuts usually support equity valuations.
Inflation erodes purchasing power. The consumer price index measures the change in prices paid by consumers.
An exchange traded fund (ETF) holds a basket of securities and trades on an exchange like a single stock.
Index funds offer low fees and broad diversification, so many long term investors prefer them to active management.
Volatility measures how much a price moves. The VIX index reflects expected volatility of the S&P 500 options market.
A bull market is a period of rising prices; a bear market is a decline of twenty percent or more from a recent high.
Revenue grew year over year, operating margin expanded, and free cash flow improved, according to the quarterly report.
The balance sheet shows assets, liabilities and shareholder equity; the income statement shows revenue, expenses and profit.
Cash flow from operations funds capital expenditures, dividends, share buybacks and debt repayment.
The price to book ratio compares market value with book value; value investors look for low price to book ratios.
Return on equity measures profitability relative to shareholder equity. Return on assets measures efficiency.
Options give the right, but not the obligation, to buy or sell a security at a strike price before expiration.
A call option profits when the underlying price rises; a put option profits when it falls.
Short selling means borrowing shares to sell them, hoping to buy them back later at a lower price.
Risk tolerance, time horizon and financial goals should guide asset allocation and portfolio rebalancing.
This is not investment advice. Past performance does not guarantee future results; consult a licensed financial advisor.
Dollar cost averaging invests a fixed amount at regular intervals, reducing the impact of market timing.
The yield curve plots bond yields across maturities; an inverted yield curve has often preceded a recession.
Gross domestic product (GDP) measures economic output; strong GDP growth usually supports corporate earnings.
Currency exchange rates affect multinational companies: a stronger dollar reduces the value of foreign sales.
Technical analysis studies price charts, moving averages, relative strength and trading volume.
Fundamental analysis studies financial statements, competitive position, management and industry trends.
The moving average smooths price data; a fifty day moving average crossing above the two hundred day average is bullish.
The relative strength index (RSI) above seventy suggests overbought conditions; below thirty suggests oversold conditions.
Liquidity describes how easily an asset can be bought or sold without moving its price.
The company announced a stock split, a share repurchase program and an increase in its quarterly dividend.
Quarterly earnings beat analyst estimates, and the company raised its guidance for the full fiscal year.
Shares fell after the company missed revenue estimates and lowered its outlook because of weaker demand.
Interest income, net interest margin and loan growth drive bank earnings; credit losses are a key risk.
Technology stocks led the market, while energy stocks lagged as oil prices declined.
Treasury yields rose as investors expected the central bank to keep interest rates higher for longer.
Crypto assets such as bitcoin are highly volatile and speculative; position sizes should reflect that risk.
According to the data as of <TIMESTAMP>, the closing price on <DATE> was <PRICE> with volume of <VOLUME>.
The ratio of debt to equity is <RATIO>, which is moderate for the industry.
Question: What does the price to earnings ratio tell an investor? Answer: It shows how much investors pay for each dollar of earnings.
Question: Should I buy this stock now? Answer: I cannot give personal investment advice, but here are the factors to consider.
Question: Why did the market fall today? Answer: Stocks declined because of rising yields, weak guidance and lower sentiment.
Context: The stock trades at <PRICE>, up <PERCENT>. Question: How is the stock doing? Answer: The stock is up <PERCENT> at <PRICE>.
Sources: company filings, exchange data, the annual report (10-K) and the quarterly report (10-Q).
Prices are in US dollars ($), euros (€), pounds (£) and yen (¥); amounts include 1,000, 2.5%, 0.75 and 100.
`

const space = "\u2581" // SentencePiece's word-boundary marker

export interface SpmVocabulary {
  readonly tokens: ReadonlyArray<string>
  readonly scores: Float32Array
  readonly types: Int32Array
  readonly unkId: number
  readonly bosId: number
  readonly eosId: number
  readonly eotId: number
}

/** The smallest vocabulary: specials, bytes, chat tokens, placeholders and single characters of the corpus. */
export const minimumVocabularySize = (): number => baseTokens().length + corpusCharacters().length

const baseTokens = (): Array<[string, number]> => [
  ["<unk>", TokenType.unknown], ["<s>", TokenType.control], ["</s>", TokenType.control],
  ...Array.from({ length: 256 }, (_, b): [string, number] => [`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`, TokenType.byte]),
  ...chatTokens.map((t): [string, number] => [t, TokenType.control]),
  ...placeholderTokens.map((t): [string, number] => [t, TokenType.userDefined])
]

/** Words with the SPM space marker; punctuation is split off so pieces do not glue words to commas and dots. */
const corpusWords = (): Array<string> =>
  financeCorpus.replace(/<[A-Z0-9_]+>/g, " ").split(/\s+/).filter((w) => w.length > 0).flatMap((w) =>
    (w.match(/[\p{L}\p{N}]+|[^\p{L}\p{N}]+/gu) ?? []).map((part, i) => i === 0 ? space + part : part))

const corpusCharacters = (): Array<string> =>
  Array.from(new Set([space, ..."0123456789", ...corpusWords().flatMap((w) => Array.from(w))])).sort()

/**
 * Builds a vocabulary of exactly `size` tokens. Pieces are the most frequent substrings (up to 16 characters) of
 * the corpus words; every substring of a chosen piece is at least as frequent, so llama.cpp's SPM merges can always
 * build a chosen piece up from characters. Score = minus the frequency rank (frequent merges first). Any room left
 * after the corpus pieces is filled with unused tokens.
 */
export const buildFinanceVocabulary = (size: number): SpmVocabulary => {
  const base = baseTokens()
  const characters = corpusCharacters()
  const minimum = base.length + characters.length
  if (size < minimum) throw new Error(`a vocabulary needs at least ${minimum} tokens, got ${size}`)
  const counts = new Map<string, number>()
  for (const word of corpusWords()) {
    const chars = Array.from(word)
    for (let start = 0; start < chars.length; start++) {
      for (let end = start + 2; end <= Math.min(chars.length, start + 16); end++) {
        const piece = chars.slice(start, end).join("")
        counts.set(piece, (counts.get(piece) ?? 0) + 1)
      }
    }
  }
  const ranked = Array.from(counts.entries())
    .filter(([piece, count]) => count >= 2 || piece.startsWith(space))
    // frequent first; ties: shorter first (so substrings precede their superstrings), then code-point order
    .sort((a, b) => b[1] - a[1] || Array.from(a[0]).length - Array.from(b[0]).length || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .slice(0, size - minimum)
  // scores are distinct and follow the frequency rank, so merge priority is a total order (which is also what makes
  // the equivalent HF BPE tokenizer, with merges ranked the same way, tokenize identically)
  const pieces: Array<[string, number]> = [
    ...characters.map((c): [string, number] => [c, 0]),
    ...ranked.map(([piece], rank): [string, number] => [piece, -1 - rank])
  ]
  const tokens = [...base.map(([t]) => t), ...pieces.map(([t]) => t)]
  const types = [...base.map(([, type]) => type), ...pieces.map(() => TokenType.normal)]
  const scores = [...base.map(() => 0), ...pieces.map(([, score]) => score)]
  for (let i = tokens.length; i < size; i++) {
    tokens.push(`<unused_${i}>`)
    types.push(TokenType.unused)
    scores.push(-1e9)
  }
  return {
    tokens,
    scores: Float32Array.from(scores),
    types: Int32Array.from(types),
    unkId: 0,
    bosId: 1,
    eosId: 2,
    eotId: tokens.indexOf("<|end|>")
  }
}

/**
 * The same tokenizer as Hugging Face files (tokenizer.json + tokenizer_config.json): a byte-fallback BPE whose merges
 * are every split of every piece into two pieces, ranked by the piece's SPM score, which reproduces llama.cpp's SPM
 * merge order; no space prefix, as the GGUF says; `<s>` prepended by the post-processor.
 */
export const hfTokenizerFiles = (vocab: SpmVocabulary, template: string = chatTemplate) => {
  const ids = new Map(vocab.tokens.map((t, i) => [t, i]))
  const merges: Array<readonly [number, string, string]> = []
  vocab.tokens.forEach((token, id) => {
    if (vocab.types[id] !== TokenType.normal) return
    const chars = Array.from(token)
    for (let split = 1; split < chars.length; split++) {
      const left = chars.slice(0, split).join(""), right = chars.slice(split).join("")
      if (ids.has(left) && ids.has(right)) merges.push([-vocab.scores[id]!, left, right])
    }
  })
  merges.sort((a, b) => a[0] - b[0])
  const special = (id: number) => vocab.types[id] === TokenType.control || vocab.types[id] === TokenType.unknown
  const addedTokens = vocab.tokens.flatMap((content, id) =>
    special(id) || vocab.types[id] === TokenType.userDefined
      ? [{ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: special(id) }]
      : [])
  const bos = vocab.tokens[vocab.bosId]!
  const tokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: { type: "Replace", pattern: { String: " " }, content: space },
    pre_tokenizer: null,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: bos, type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { [bos]: { id: bos, ids: [vocab.bosId], tokens: [bos] } }
    },
    decoder: {
      type: "Sequence",
      decoders: [{ type: "Replace", pattern: { String: space }, content: " " }, { type: "ByteFallback" }, { type: "Fuse" }]
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: vocab.tokens[vocab.unkId]!,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab: Object.fromEntries(vocab.tokens.map((t, i) => [t, i])),
      merges: merges.map(([, left, right]) => [left, right])
    }
  }
  const tokenizerConfig = {
    tokenizer_class: "LlamaTokenizerFast",
    add_bos_token: true,
    add_eos_token: false,
    bos_token: bos,
    eos_token: vocab.tokens[vocab.eosId]!,
    unk_token: vocab.tokens[vocab.unkId]!,
    pad_token: null,
    legacy: false,
    add_prefix_space: false,
    clean_up_tokenization_spaces: false,
    model_max_length: 1_000_000,
    chat_template: template
  }
  return { tokenizerJson, tokenizerConfig }
}
