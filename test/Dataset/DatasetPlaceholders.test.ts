import { assert, describe, it } from "@effect/vitest"
import fc from "fast-check"
import { normalizeRecord, rehydrateRecord } from "../../src/Dataset/Normalize.ts"
import {
  detectValues,
  hasLivePlaceholder,
  mayHoldValue,
  normalizeText,
  parseNumber,
  placeholderBaseType,
  placeholdersIn,
  rehydrateText,
  scanValues
} from "../../src/Dataset/Placeholders.ts"

const types = (text: string) => detectValues(text).map((v) => `${v.type}:${v.text}`)

describe("detectValues", () => {
  it("types prices, changes, percents and keyword-led values", () => {
    assert.deepStrictEqual(types("AAPL is trading at $189.50 (+0.45%), up 1.2% today."), [
      "PRICE:$189.50",
      "CHANGE:+0.45%",
      "CHANGE:1.2%"
    ])
    assert.deepStrictEqual(types("P/E of 45.2x, EPS of $3.12, dividend yield of 0.5%, volume 52.3M shares, market cap $2.9T."), [
      "RATIO:45.2x",
      "EPS:$3.12",
      "YIELD:0.5%",
      "VOLUME:52.3M shares",
      "MARKET_CAP:$2.9T"
    ])
    assert.deepStrictEqual(types("As of 2024-03-01T14:30:00Z and 10:32 AM ET on Nov 25, 2024 or 11/25/2024"), [
      "TIMESTAMP:2024-03-01T14:30:00Z",
      "TIMESTAMP:10:32 AM ET",
      "DATE:Nov 25, 2024",
      "DATE:11/25/2024"
    ])
    assert.deepStrictEqual(types("a -0.45 move, +$1.20, trades at 25x, 3.1B in sales, 40% of revenue, C$12.50"), [
      "CHANGE:-0.45",
      "CHANGE:+$1.20",
      "RATIO:25x",
      "MARKET_CAP:3.1B",
      "PERCENT:40%",
      "PRICE:C$12.50"
    ])
  })

  it("leaves list markers, counts, form names, years, windows and placeholders alone", () => {
    const text = "1) fundamentals, 2) 3 factors: a 10-K, COVID-19, the 50-day average in 2024, S&P 500, Nasdaq-100. <CHANGE>% <PE_1> <SPY_PRICE> <MOVER_2_CHANGE>"
    assert.deepStrictEqual(detectValues(text), [])
    assert.strictEqual(normalizeText(text).text, text)
  })

  it("parses displayed numbers", () => {
    assert.strictEqual(parseNumber("$1,234.50"), 1234.5)
    assert.strictEqual(parseNumber("1.2%"), 1.2)
    assert.strictEqual(parseNumber("+0.45"), 0.45)
    assert.strictEqual(parseNumber("-$3.10"), -3.1)
    assert.strictEqual(parseNumber("\u22122.5%"), -2.5)
    assert.strictEqual(parseNumber("3.1B"), 3.1e9)
    assert.strictEqual(parseNumber("$2.95 trillion"), 2.95e12)
    assert.strictEqual(parseNumber("52.3M shares"), 52.3e6)
    assert.isTrue(Number.isNaN(parseNumber("no number")))
    const [v] = detectValues("down -2.1 percent")
    assert.strictEqual(v?.value, -2.1)
  })
})

describe("placeholders", () => {
  it("maps indexed and prefixed names to their base type", () => {
    assert.strictEqual(placeholderBaseType("<SPY_PRICE>"), "PRICE")
    assert.strictEqual(placeholderBaseType("<MOVER_2_CHANGE>"), "CHANGE")
    assert.strictEqual(placeholderBaseType("<PE_1>"), "RATIO")
    assert.strictEqual(placeholderBaseType("<PB_3>"), "RATIO")
    assert.strictEqual(placeholderBaseType("<SUPPORT>"), "PRICE")
    assert.strictEqual(placeholderBaseType("<MARKET_CAP_2>"), "MARKET_CAP")
    assert.strictEqual(placeholderBaseType("<EARNINGS_DATE>"), "DATE")
    assert.strictEqual(placeholderBaseType("<EPS_ESTIMATE>"), "EPS")
    assert.strictEqual(placeholderBaseType("<TOP_MOVER_1>"), "SYMBOL")
    assert.strictEqual(placeholderBaseType("<STOCK_2>"), "SYMBOL")
    assert.strictEqual(placeholderBaseType("<MOMENTUM>"), "SCORE")
    assert.strictEqual(placeholderBaseType("<REASON_1>"), "TEXT")
    assert.strictEqual(placeholderBaseType("TIMESTAMP"), "TIMESTAMP")
  })

  it("finds placeholders and tells live ones from text ones", () => {
    assert.deepStrictEqual(placeholdersIn("at <PRICE> (<CHANGE>%) vs <STOCK_1>"), ["<PRICE>", "<CHANGE>", "<STOCK_1>"])
    assert.isTrue(hasLivePlaceholder("P/E <PE_1>"))
    assert.isFalse(hasLivePlaceholder("because <REASON_1> and <STOCK_2>"))
    assert.isFalse(hasLivePlaceholder("no placeholders < here >"))
  })

  it("normalizes with a map that rehydrates exactly", () => {
    const text = "TSLA fell 3.4% to $201.12 at 10:32 AM ET; P/E of 45.2x. Already <CHANGE>%."
    const n = normalizeText(text)
    assert.strictEqual(n.text, "TSLA fell <CHANGE> to <PRICE> at <TIMESTAMP>; P/E of <RATIO>. Already <CHANGE>%.")
    assert.deepStrictEqual(n.replacements.map((r) => [r.placeholder, r.value]), [
      ["<CHANGE>", "3.4%"],
      ["<PRICE>", "$201.12"],
      ["<TIMESTAMP>", "10:32 AM ET"],
      ["<RATIO>", "45.2x"]
    ])
    assert.strictEqual(rehydrateText(n.text, n.replacements), text)
  })

  it("normalizes whole records, citations included, and rehydrates them", () => {
    const record = {
      question: "Is AAPL a buy at $180?",
      answer: "AAPL is at $189.50, up 0.45%.",
      rationale: "Quote from 2024-03-01.",
      tickers: ["AAPL"],
      citations: [{ source: "api", timestamp: "2024-03-01T14:30:00Z" }, { source: "news", timestamp: "<TIMESTAMP>" }],
      context_required: true,
      risk_note: "Prices moved 5% last week."
    }
    const n = normalizeRecord(record)
    assert.strictEqual(n.record.question, "Is AAPL a buy at <PRICE>?")
    assert.strictEqual(n.record.answer, "AAPL is at <PRICE>, up <CHANGE>.")
    assert.strictEqual(n.record.rationale, "Quote from <DATE>.")
    assert.strictEqual(n.record.risk_note, "Prices moved <CHANGE> last week.")
    assert.deepStrictEqual(n.record.citations, [{ source: "api", timestamp: "<TIMESTAMP>" }, { source: "news", timestamp: "<TIMESTAMP>" }])
    assert.strictEqual(n.replaced, 6)
    assert.deepStrictEqual(rehydrateRecord(n.record, n.map), record)
    assert.deepStrictEqual(normalizeRecord(n.record).record, n.record)
  })
})

// Text built from pieces that exercise every detector branch, glued by arbitrary separators.
const piece = fc.oneof(
  fc.constantFrom(
    "$1,234.50", "+0.45%", "-2.1", "3.1B", "52.3M shares", "P/E of 28.5", "EPS: $1.52", "yield of 3.2%",
    "volume 1,234,567", "market cap $2.9T", "trading at 189.50", "10:32 AM ET", "2024-03-01", "Nov 25, 2024",
    "2024-03-01T14:30:00Z", "12/31/2024", "25x", "<PRICE>", "<CHANGE>%", "<PE_1>", "<SPY_PRICE>", "<MOVER_2_CHANGE>",
    "1)", "10-K", "3 factors", "in 2024", "50-day", "up", "fell", "AAPL", "—", "(", ")", "%", "$", "<", ">", "x",
    "PE", "EPS", "P/E", "market cap", "volume", "yield", "<EPS_ESTIMATE>", "<MARKET_CAP_2>", "<Q_2024>", "<T_10>", "Nov", "_", ":"
  ),
  fc.integer({ min: -99999, max: 99999 }).map(String),
  fc.double({ min: -1e6, max: 1e6, noNaN: true }).map((d) => d.toFixed(2)),
  fc.string({ maxLength: 6 })
)
const text = fc.array(fc.tuple(piece, fc.constantFrom("", " ", ", ", "\n", "/", "-", ".", ":")), { maxLength: 14 })
  .map((xs) => xs.map(([p, s]) => p + s).join(""))

describe("normalization properties (fast-check)", () => {
  it("is idempotent", () => {
    fc.assert(fc.property(text, (t) => {
      const once = normalizeText(t).text
      return normalizeText(once).text === once
    }), { numRuns: 3000 })
  })

  it("rehydrate(normalize(x)) restores x", () => {
    fc.assert(fc.property(text, (t) => {
      const n = normalizeText(t)
      return rehydrateText(n.text, n.replacements) === t
    }), { numRuns: 3000 })
  })

  it("holds for arbitrary unicode strings too", () => {
    fc.assert(fc.property(fc.string({ unit: "grapheme", maxLength: 80 }), (t) => {
      const n = normalizeText(t)
      return rehydrateText(n.text, n.replacements) === t && normalizeText(n.text).text === n.text
    }), { numRuns: 2000 })
  })

  it("never leaves a detectable value behind and never touches existing placeholders", () => {
    fc.assert(fc.property(text, (t) => {
      const n = normalizeText(t)
      return detectValues(n.text).length === 0 &&
        placeholdersIn(t).every((p) => n.text.includes(p))
    }), { numRuns: 2000 })
  })
})

describe("mayHoldValue (the detector's cheap gate)", () => {
  it("lets through every text in which the detector finds a value, from any start", () => {
    fc.assert(fc.property(text, fc.nat({ max: 80 }), (t, at) => {
      const from = Math.min(at, t.length)
      return scanValues(t, from).length === 0 || mayHoldValue(t, from)
    }), { numRuns: 5000 })
  })

  it("holds for unicode strings with digits, signs and keywords mixed in", () => {
    const unit = fc.oneof(fc.string({ unit: "grapheme", maxLength: 4 }), fc.constantFrom("7", "$", "-", "\u2212", "%", " ", "P/E ", "EPS: ", "Jan ", "trading at "))
    fc.assert(fc.property(fc.array(unit, { maxLength: 12 }).map((xs) => xs.join("")), (t) =>
      scanValues(t, 0).length === 0 || mayHoldValue(t, 0)), { numRuns: 3000 })
  })

  it("rules out digits that cannot be live values, and keeps the ones that can", () => {
    for (const t of ["Consider: 1) the trend, 2) the risk.", "The S&P 500 (SPY) and the Nasdaq-100 (QQQ)", "You hold 3 positions", "RSI above 70 as <TIMESTAMP>"]) {
      assert.isFalse(mayHoldValue(t, 0), t)
      assert.deepStrictEqual(detectValues(t), [])
    }
    for (const t of ["up -2.1 today", "at $5", "a P/E of 28", "EPS of -1.2", "on Nov 25", "3.1B", "10:30", "52-week", "25x"]) {
      assert.isTrue(mayHoldValue(t, 0), t)
    }
  })
})
