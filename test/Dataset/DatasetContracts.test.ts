import { assert, describe, it } from "@effect/vitest"
import { Result, Schema } from "effect"
import fc from "fast-check"
import { isSeedInput, SeedInput } from "../../src/Dataset/Input.ts"
import { canonicalFingerprint, canonicalHash, canonicalText, fnv1a } from "../../src/Dataset/Split.ts"
import { displayValue, fillPlaceholders, parsePlaceholder, placeholderValue } from "../../src/Dataset/Fill.ts"
import { formatExample, formatPrompt } from "../../src/Dataset/PromptFormat.ts"
import { contextValues, parseRagContext, type RagContext, renderRagContext } from "../../src/Dataset/RagContext.ts"
import { TrainingRecord } from "../../src/Dataset/Record.ts"
import { findTickersInText, tickers } from "../../src/Dataset/Tickers.ts"

describe("ticker table", () => {
  it("ships at least 60 real stocks plus the index ETFs, with names, aliases and sectors", () => {
    const stocks = tickers.filter((t) => t.kind !== "etf")
    assert.isAtLeast(stocks.length, 60)
    for (const etf of ["SPY", "QQQ", "DIA"]) assert.isTrue(tickers.some((t) => t.symbol === etf && t.kind === "etf"))
    assert.isTrue(tickers.some((t) => t.exchange === "TSX"))
    assert.strictEqual(new Set(tickers.map((t) => t.symbol)).size, tickers.length)
    for (const t of tickers) {
      assert.match(t.symbol, /^[A-Z][A-Z.]*$/)
      assert.isAbove(t.name.length, 2)
      assert.isAbove(t.sector.length, 2)
    }
  })

  it("finds symbols, cashtags and aliases at word boundaries", () => {
    assert.deepStrictEqual(findTickersInText("Apple vs $MSFT, then NVDA and BRK.B?"), ["AAPL", "MSFT", "NVDA", "BRK.B"])
    assert.deepStrictEqual(findTickersInText("my iphone and amazon.com, Bank of America"), ["AAPL", "AMZN", "BAC"])
    assert.deepStrictEqual(findTickersInText("The S&P 500 and the Dow; Nasdaq-100"), ["SPY", "DIA", "QQQ"])
    assert.deepStrictEqual(findTickersInText("Apple's margins"), ["AAPL"])
    assert.deepStrictEqual(findTickersInText("xAAPL AAPLx pineapple"), [])
  })

  it("matches ambiguous short symbols only where they cannot be words", () => {
    assert.deepStrictEqual(findTickersInText("A stock with IT spending hit an ALL-time high NOW, ON the way"), [])
    assert.deepStrictEqual(findTickersInText("the price target was cut"), [])
    assert.deepStrictEqual(findTickersInText("Ford (F) and $T, NYSE: C, and ServiceNow"), ["F", "T", "C", "NOW"])
    assert.deepStrictEqual(findTickersInText("Target Corporation"), ["TGT"])
  })
})

const appContext: RagContext = {
  symbol: "AAPL",
  prices: { AAPL: { price: 189.5, changePercent: 0.45 }, MSFT: { price: 410, changePercent: -1.234 } },
  fundamentals: { peRatio: 28.5, sector: "Technology", MSFT: { peRatio: 31.2 } },
  news: [{ headline: "Apple unveils chips", source: "Reuters", summary: "New M-series parts." }, { headline: "Fed holds", source: "CNBC" }],
  holdings: [{ symbol: "AAPL", shares: 10, avgPrice: 150 }]
}

describe("RAG context layout", () => {
  it("renders the app's formatRAGContext text exactly", () => {
    assert.strictEqual(
      renderRagContext(appContext),
      [
        "Current Symbol: AAPL",
        "",
        "Current Prices:",
        "  AAPL: $189.50 (+0.45%)",
        "  MSFT: $410.00 (-1.23%)",
        "",
        "Fundamentals:",
        "  peRatio: 28.5",
        "  sector: \"Technology\"",
        "  MSFT: {\"peRatio\":31.2}",
        "",
        "Recent News:",
        "  1. Apple unveils chips (Reuters)",
        "     New M-series parts.",
        "  2. Fed holds (CNBC)",
        "",
        "Portfolio Holdings:",
        "  AAPL: 10 shares @ $150.00"
      ].join("\n")
    )
    // a section without a symbol starts with the app's leading newline; empty news/holdings are skipped
    assert.strictEqual(renderRagContext({ prices: { SPY: { price: 512, changePercent: 0 } }, news: [], holdings: [] }), "\nCurrent Prices:\n  SPY: $512.00 (+0.00%)")
    assert.strictEqual(renderRagContext({}), "")
  })

  it("renders at most 5 news items, like the app", () => {
    const news = Array.from({ length: 7 }, (_, i) => ({ headline: `h${i}`, source: "s" }))
    assert.strictEqual(renderRagContext({ news }).split("\n").filter((l) => /^ {2}\d+\./.test(l)).length, 5)
  })

  it("parses its own rendering back, and tolerates cut and foreign text", () => {
    const ctx = { ...appContext, prices: { AAPL: { price: 189.5, changePercent: 0.45 }, MSFT: { price: 410, changePercent: -1.23 } }, marketData: { session: "open", indices: { SPY: { value: 512.34, changePercent: 0.3 } } } }
    assert.deepStrictEqual(parseRagContext(renderRagContext(ctx)), ctx)
    const cut = renderRagContext(appContext).slice(0, 70) // ends inside the MSFT line
    assert.deepStrictEqual(parseRagContext(cut), { symbol: "AAPL", prices: { AAPL: { price: 189.5, changePercent: 0.45 } } })
    assert.deepStrictEqual(parseRagContext("hello\nFundamentals:\n  note: not json\n  beta: 1.2"), { fundamentals: { note: "not json", beta: 1.2 } })
  })

  it("lists the live numbers a context holds, typed like placeholders", () => {
    const values = contextValues(appContext).map((v) => `${v.type} ${v.path} ${v.value}`)
    assert.deepStrictEqual(values, [
      "PRICE prices.AAPL.price 189.5",
      "CHANGE prices.AAPL.changePercent 0.45",
      "PRICE prices.MSFT.price 410",
      "CHANGE prices.MSFT.changePercent -1.234",
      "RATIO fundamentals.peRatio 28.5",
      "RATIO fundamentals.MSFT.peRatio 31.2",
      "PRICE holdings.0.avgPrice 150"
    ])
  })
})

describe("placeholder filling", () => {
  it("parses prefixed and indexed names", () => {
    assert.deepStrictEqual(parsePlaceholder("<SPY_PRICE>"), { name: "PRICE", index: undefined, symbol: "SPY" })
    assert.deepStrictEqual(parsePlaceholder("<MOVER_2_CHANGE>"), { name: "CHANGE", index: 2, symbol: undefined })
    assert.deepStrictEqual(parsePlaceholder("<PE_1>"), { name: "PE", index: 1, symbol: undefined })
    assert.deepStrictEqual(parsePlaceholder("<MARKET_CAP>"), { name: "MARKET_CAP", index: undefined, symbol: undefined })
  })

  it("resolves placeholders against the context and fills them in display form", () => {
    assert.strictEqual(placeholderValue("<PRICE>", appContext), 189.5)
    assert.strictEqual(placeholderValue("<PE>", appContext), 28.5)
    assert.strictEqual(placeholderValue("<PE_2>", appContext), 31.2)
    assert.strictEqual(placeholderValue("<CHANGE_2>", appContext), -1.234)
    assert.strictEqual(placeholderValue("<STOCK_2>", appContext), "MSFT")
    assert.strictEqual(placeholderValue("<AVG_COST_1>", appContext), 150)
    assert.strictEqual(placeholderValue("<YIELD>", appContext), undefined)
    assert.strictEqual(displayValue("<MARKET_CAP>", 2.95e12), "$2.95T")
    assert.strictEqual(displayValue("<VOLUME>", 52_300_000), "52.30M")
    assert.strictEqual(
      fillPlaceholders("As of <TIMESTAMP>, AAPL is at <PRICE> (<CHANGE>), MSFT <CHANGE_2>; yield <YIELD>.", appContext, "2026-11-25T15:00:00Z"),
      "As of 2026-11-25T15:00:00Z, AAPL is at $189.50 (+0.45%), MSFT -1.23%; yield <YIELD>."
    )
  })
})

describe("prompt layouts", () => {
  const record = { question: "What is AAPL at?", context: "Current Symbol: AAPL", answer: "AAPL is at <PRICE>." }

  it("formats the seed template with the answer as the loss span", () => {
    const ex = formatExample(record, "seed")
    assert.strictEqual(ex.text, "Context: Current Symbol: AAPL\nQuestion: What is AAPL at?\nAnswer: AAPL is at <PRICE>.")
    assert.strictEqual(ex.text.slice(ex.answerStart, ex.answerEnd), record.answer)
    assert.strictEqual(formatPrompt(record, "seed"), ex.text.slice(0, ex.answerStart))
  })

  it("formats Llama-3 and Mistral chat layouts with the end-of-turn token inside the span", () => {
    const llama = formatExample(record, "llama3", "SYS")
    assert.strictEqual(
      llama.text,
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nSYS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n" +
        "Context: Current Symbol: AAPL\nQuestion: What is AAPL at?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nAAPL is at <PRICE>.<|eot_id|>"
    )
    assert.strictEqual(llama.text.slice(llama.answerStart, llama.answerEnd), "AAPL is at <PRICE>.<|eot_id|>")
    const mistral = formatExample(record, "mistral", "SYS")
    assert.strictEqual(mistral.text, "<s>[INST] SYS\n\nContext: Current Symbol: AAPL\nQuestion: What is AAPL at? [/INST] AAPL is at <PRICE>.</s>")
    assert.strictEqual(mistral.text.slice(mistral.answerStart, mistral.answerEnd), "AAPL is at <PRICE>.</s>")
    assert.strictEqual(formatPrompt(record, "mistral", "SYS"), mistral.text.slice(0, mistral.answerStart))
  })

  it("renders structured app contexts in the app layout and other objects as JSON", () => {
    assert.strictEqual(formatPrompt({ question: "q", context: { symbol: "TSLA" } }), "Context: Current Symbol: TSLA\nQuestion: q\nAnswer: ")
    assert.strictEqual(formatPrompt({ question: "q", context: { foo: [1] } }), "Context: {\"foo\":[1]}\nQuestion: q\nAnswer: ")
    assert.strictEqual(formatPrompt({ question: "q" }), "Context: \nQuestion: q\nAnswer: ")
  })
})

describe("TrainingRecord schema", () => {
  it("accepts the seed's records and names the failing field", () => {
    const decode = Schema.decodeUnknownResult(TrainingRecord)
    const ok = decode({ question: "q", answer: "a", rationale: "", tickers: ["AAPL"], citations: [{ source: "api", timestamp: "<TIMESTAMP>" }], context_required: true })
    assert.isTrue(Result.isSuccess(ok))
    const bad = decode({ question: " ", answer: "a", rationale: "", tickers: [], citations: [], context_required: true })
    assert.isTrue(Result.isFailure(bad))
    if (Result.isFailure(bad)) assert.include(bad.failure.message, "question")
  })
})

describe("canonical text", () => {
  it("lower-cases ASCII, collapses punctuation and spaces, keeps placeholders and other letters", () => {
    assert.strictEqual(canonicalText("  Question NUMBER 3!! "), "question number 3")
    assert.strictEqual(canonicalText("Is AAPL at <PRICE>? Café, déjà-vu"), "is aapl at <price> café déjà vu")
    assert.strictEqual(canonicalText("!!"), "")
  })

  it("canonicalHash is FNV-1a of the canonical text; canonicalFingerprint depends on the canonical texts only", () => {
    const text = fc.string({ unit: fc.constantFrom("a", "B", "z", "7", " ", "!", "<", ">", "_", "é", "\u00c0", "\u00bf", "😀", "-", "\n"), maxLength: 16 })
    // a near-copy: same canonical form (case, punctuation and spacing changed)
    const vary = (s: string) => ` ${s.toUpperCase().replace(/ /g, " ,  ")}?`
    fc.assert(
      fc.property(text, text, fc.integer({ min: 0, max: 0xffffffff }), (q, a, basis) => {
        assert.strictEqual(canonicalHash(q, basis), fnv1a(canonicalText(q), basis))
        const k = canonicalFingerprint(q, a)
        const near = canonicalFingerprint(vary(q), vary(a))
        if (canonicalText(vary(q)) === canonicalText(q) && canonicalText(vary(a)) === canonicalText(a)) {
          assert.deepStrictEqual([near.hi, near.lo], [k.hi, k.lo])
        }
        assert.notStrictEqual(k.hi, 0)
      }),
      { numRuns: 2000 }
    )
    // the boundary between question and answer counts: ("ab", "c") is not ("a", "bc")
    const x = canonicalFingerprint("ab", "c")
    const y = canonicalFingerprint("a", "bc")
    assert.notDeepEqual([x.hi, x.lo], [y.hi, y.lo])
    // long texts (the scratch grows) give the same keys as before growing
    const long = "Word ".repeat(5000)
    assert.deepStrictEqual(canonicalFingerprint(long, long), canonicalFingerprint(long, long))
    assert.strictEqual(canonicalHash(long), fnv1a(canonicalText(long)))
  })
})

describe("the fast seed check", () => {
  it("accepts exactly what the SeedInput schema accepts (fast-check)", () => {
    const decode = Schema.decodeUnknownResult(SeedInput)
    const str = fc.constantFrom("", " ", "AAPL", "\t\n", "q?")
    const value = fc.oneof(str, fc.boolean(), fc.integer(), fc.constant(null), fc.constant([]), fc.constant({}),
      fc.array(str, { maxLength: 2 }), fc.array(fc.oneof(str, fc.integer()), { maxLength: 2 }),
      fc.array(fc.record({ source: str, timestamp: fc.oneof(str, fc.integer()) }, { requiredKeys: [] }), { maxLength: 2 }),
      fc.dictionary(fc.constantFrom("a", "b"), fc.integer(), { maxKeys: 2 }))
    const record = fc.record({
      question: value, answer: value, rationale: value, tickers: value, citations: value,
      context_required: value, risk_note: value, context: value, intent: value, extra: value
    }, { requiredKeys: [] })
    const valid = fc.record({
      question: str, answer: str,
      tickers: fc.array(str, { maxLength: 2 }),
      citations: fc.array(fc.record({ source: str, timestamp: str }), { maxLength: 2 }),
      context_required: fc.boolean(),
      context: fc.oneof(str, fc.dictionary(fc.constantFrom("a", "b"), fc.integer()))
    }, { requiredKeys: [] })
    let accepted = 0
    fc.assert(fc.property(fc.oneof(record, valid), (o) => {
      const ok = isSeedInput(o as Record<string, unknown>)
      if (ok) accepted++
      return ok === Result.isSuccess(decode(o))
    }), { numRuns: 5000 })
    assert.isAbove(accepted, 100)
  })
})
