import { assert, describe, it } from "@effect/vitest"
import fc from "fast-check"
import { LineSplitter, type RawLine } from "../../src/Dataset/LineSplitter.ts"

/** feeds `bytes` in chunks cut at `cuts`, returns the lines */
const split = (bytes: Uint8Array, cuts: ReadonlyArray<number>, max = 1024 * 1024): Array<RawLine> => {
  const s = new LineSplitter(max, 16)
  const out: Array<RawLine> = []
  let last = 0
  for (const c of [...new Set(cuts)].sort((a, b) => a - b)) {
    if (c <= last || c >= bytes.length) continue
    s.push(bytes.subarray(last, c), out)
    last = c
  }
  s.push(bytes.subarray(last), out)
  s.end(out)
  return out
}

describe("LineSplitter", () => {
  it("matches a plain split for any chunking: LF, CRLF, a BOM, a missing last newline, multi-byte characters", () => {
    const lineText = fc.string({ unit: fc.constantFrom("a", "é", "€", "😀", " ", "{", "\"", "\r"), maxLength: 12 })
      .filter((l) => !l.endsWith("\r"))
    fc.assert(fc.property(
      fc.array(fc.tuple(lineText, fc.boolean()), { maxLength: 8 }),
      fc.boolean(),
      fc.boolean(),
      fc.array(fc.nat(200), { maxLength: 10 }),
      (lines, bom, trailingNewline, cuts) => {
        const text = lines.map(([l, crlf]) => l + (crlf ? "\r\n" : "\n")).join("")
        const body = trailingNewline || lines.length === 0 ? text : text.replace(/\r?\n$/, "")
        const bytes = Buffer.from((bom ? "\uFEFF" : "") + body)
        const got = split(bytes, cuts)
        const expected = lines.map(([l]) => l)
        // without a final newline, a trailing empty line has no bytes: there is nothing to emit
        if (!trailingNewline && expected[expected.length - 1] === "") expected.pop()
        // a lone BOM is one (blank) line
        if (bom && expected.length === 0) expected.push("")
        assert.deepStrictEqual(got.map((l) => l.text), expected)
        assert.deepStrictEqual(got.map((l) => l.lineNo), expected.map((_, i) => i + 1))
        assert.isTrue(got.every((l) => l.problem === undefined))
      }
    ), { numRuns: 1500 })
  })

  it("reports over-long lines with a preview and keeps counting lines after them", () => {
    const bytes = Buffer.from(`short\n${"x".repeat(100)}\r\nafter\n${"y".repeat(40)}`)
    for (const cuts of [[], [3, 50, 90, 104, 130], Array.from({ length: 150 }, (_, i) => i)]) {
      const got = split(bytes, cuts, 32)
      assert.deepStrictEqual(got.map((l) => [l.lineNo, l.problem ?? "ok", l.byteLength]), [[1, "ok", 5], [2, "too_long", 100], [3, "ok", 5], [4, "too_long", 40]])
      assert.strictEqual(got[1]!.preview, "x".repeat(16))
      assert.strictEqual(got[2]!.text, "after")
    }
  })

  it("reports invalid UTF-8 per line, even when a valid multi-byte character is cut by a chunk edge", () => {
    const bytes = Buffer.concat([Buffer.from("caf\u00e9\n"), Buffer.from([0x62, 0xff, 0x0a]), Buffer.from("\u20ac")])
    for (let cut = 0; cut <= bytes.length; cut++) {
      const got = split(bytes, [cut])
      assert.deepStrictEqual(got.map((l) => [l.text, l.problem ?? "ok"]), [["café", "ok"], ["", "invalid_utf8"], ["€", "ok"]])
    }
  })
})
