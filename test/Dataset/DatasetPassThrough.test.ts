/**
 * The ingest copies a line's bytes instead of encoding its record again when `encodesAsLine` says the
 * encoding would give the same bytes. These properties hold that promise to the encoder itself: every
 * line the shortcut takes is exactly `encodeRecord` of its record, and lines written the way we write
 * them do take it.
 */
import { assert, describe, it } from "@effect/vitest"
import fc from "fast-check"
import { Buffer } from "node:buffer"
import { canonicalKeyCount, encodeRecord, encodesAsLine, orderRecord } from "../../src/Dataset/RecordEncode.ts"
import { isSeedInput, seedDecoded } from "../../src/Dataset/SeedRecord.ts"

// strings with what JSON escapes: quotes, backslashes, control characters, non-ASCII, U+2028, emoji
const text = fc.string({ unit: fc.oneof(fc.constantFrom("\"", "\\", "\n", "\t", "\u0001", "\u007f", "é", "\u2028", "😀", "/", " ", ":"), fc.string({ unit: "binary", minLength: 1, maxLength: 1 })), maxLength: 12 })
const nonBlank = text.map((s) => `${s}x`)
const citation = fc.record({ source: nonBlank, timestamp: text })
const record = fc.record(
  {
    question: nonBlank,
    answer: nonBlank,
    rationale: text,
    tickers: fc.array(fc.constantFrom("AAPL", "MSFT", "BRK.B"), { maxLength: 2 }),
    citations: fc.array(citation, { maxLength: 2 }),
    context_required: fc.boolean(),
    risk_note: text,
    context: fc.oneof(text, fc.dictionary(fc.constantFrom("price", "1", "pe"), fc.oneof(fc.double(), fc.integer(), text), { maxKeys: 2 })),
    intent: text
  },
  { requiredKeys: ["question", "answer", "rationale", "tickers", "citations", "context_required"] }
)

/** ways to write the same value that JSON.stringify never writes */
const rewrite = fc.constantFrom(
  (s: string) => s.replace(/,/g, ", "),
  (s: string) => s.replace(/:/, ": "),
  (s: string) => ` ${s}`,
  (s: string) => s.replace(/x/, "\\u0078"),
  (s: string) => s.replace(/\//, "\\/"),
  (s: string) => s.replace(/^\{/, "{\"question\":\"dup\","),
  (s: string) => s.replace(/\}$/, ",\"extra\":1}"),
  (s: string) => s.replace(/"source":/, "\"kind\":\"x\",\"source\":"),
  (s: string) => s
)

/** the check as the ingest runs it: on the line's bytes, for a valid seed object */
const takesShortcut = (line: string): boolean => {
  const bytes = Buffer.from(line)
  const json = JSON.parse(line) as Record<string, unknown>
  return isSeedInput(json) && encodesAsLine(json, bytes, 0, bytes.length)
}

describe("copying lines instead of encoding them", () => {
  it("every line that takes the shortcut is exactly the encoding of its record", () => {
    let taken = 0
    let refused = 0
    fc.assert(
      fc.property(record, fc.array(rewrite, { maxLength: 3 }), (r, rewrites) => {
        let line = JSON.stringify(r)
        for (const f of rewrites) line = f(line)
        let json: unknown
        try {
          json = JSON.parse(line)
        } catch {
          return
        }
        if (!takesShortcut(line)) {
          refused++
          return
        }
        taken++
        const o = json as Record<string, unknown>
        assert.isTrue(isSeedInput(o))
        assert.strictEqual(encodeRecord(seedDecoded(o as never, o, false).record), line)
      }),
      { numRuns: 3000 }
    )
    // both branches are exercised, not just the refusals
    assert.isAbove(taken, 50)
    assert.isAbove(refused, 300)
  })

  it("lines written the way we write them take it (unless the context is an object or a string needs a \\u escape)", () => {
    // a \u escape: a backslash that is not itself escaped, then u
    const uEscape = /(^|[^\\])(\\\\)*\\u/
    fc.assert(
      fc.property(record, (r) => {
        const decoded = seedDecoded(r as never, r, false).record
        const line = encodeRecord(decoded)
        assert.strictEqual(line, JSON.stringify(orderRecord(decoded)))
        assert.strictEqual(takesShortcut(line), typeof r.context !== "object" && !uEscape.test(line))
      }),
      { numRuns: 2000 }
    )
  })

  it("counts keys outside strings, and refuses whitespace between tokens and escapes JSON.stringify does not write", () => {
    const count = (s: string) => {
      const b = Buffer.from(s)
      return canonicalKeyCount(b, 0, b.length)
    }
    assert.strictEqual(count(`{"a":"x:y","b":[{"c":"\\"}:"}]}`), 3)
    assert.strictEqual(count(`{"a":"tab\\tnew\\nquote\\"slash\\\\"}`), 1)
    assert.strictEqual(count(`{"a": "x"}`), -1)
    assert.strictEqual(count(`{"a":"x"}\r`), -1)
    assert.strictEqual(count(`{"a":"\\u0041"}`), -1)
    assert.strictEqual(count(`{"a":"\\/"}`), -1)
    assert.strictEqual(count(`{"a":"open`), -1)
    // in a line, a key written twice is one key to JSON.parse: the shortcut is not taken
    const r = { question: "q", answer: "a", rationale: "", tickers: [], citations: [], context_required: false }
    assert.isTrue(takesShortcut(JSON.stringify(r)))
    assert.isFalse(takesShortcut(JSON.stringify(r).replace(`"answer"`, `"question":"q0","answer"`)))
    // a field left out (and so defaulted) or in another order is written differently
    assert.isFalse(takesShortcut(JSON.stringify({ ...r, rationale: undefined })))
    const { answer, ...rest } = r
    assert.isFalse(takesShortcut(JSON.stringify({ answer, ...rest })))
  })
})
