/**
 * Stable hashing, duplicate detection and the train/test split.
 *
 * - The split hash is FNV-1a (32-bit) over UTF-16 code units: cheap, dependency-free and fixed forever,
 *   so the same input and seed give the same split on every machine and release.
 * - Duplicates are remembered as 64-bit fingerprints (two multiplicative hashes over 32-bit words: not
 *   for security, but fast enough to run on every line) in an open-addressing table (DedupeTable: 12
 *   bytes a slot, grown at 7/8 load): 1M records cost about 12 MB, where a Set of strings would cost
 *   hundreds. Two different records share a fingerprint with probability about n²/2⁶⁵ (3e-8 at 1M).
 * - The split puts a record in `test` when the hash of (seed, key) falls below `testRatio` of the 32-bit
 *   range. The key is the record's templated answer: its canonical normalized answer with every ticker
 *   masked as one symbol (`maskTickers`; numbers are placeholders already), hashed from the mask scan's
 *   spans without building the masked text. Templated data (the original
 *   app's chat file: 411 distinct records, 36 answer templates that differ only in the stock) would
 *   otherwise put the same answer with another ticker on both sides, so the test set measured recall of
 *   training answers. One template is one group and lands on one side; the ingest reports how many groups
 *   there are. With `--group-by-ticker` the key is the record's sorted tickers instead (records without
 *   tickers keep the template key).
 *   Why the answer and not the question: such generators pair question paraphrases with answer templates
 *   independently, so a question key leaves every answer template on both sides, and the answer is what
 *   the model learns and the metrics compare. Keeping questions apart as well would need the connected
 *   templates of the whole file before the first record is written (the ingest streams).
 */

import { Buffer } from "node:buffer"
import { MaskedSpans, scanTickers, tickerMask } from "./Tickers.ts"

const FNV_PRIME = 0x01000193

/** FNV-1a over UTF-16 code units, 32 bits */
export const fnv1a = (s: string, seed = 0x811c9dc5): number => {
  let h = seed >>> 0
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, FNV_PRIME)
  }
  return h >>> 0
}

// what the canonical form keeps (after lower-casing ASCII): letters, digits, placeholders' < > _, non-ASCII letters
const keep = (c: number) =>
  (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 60 || c === 62 || c === 95 || c >= 0xc0

/**
 * The canonical form two near-copies share: ASCII letters lower-cased, every run of other characters
 * (punctuation, spaces) collapsed to one space, trimmed. Letters beyond ASCII are kept as they are.
 * `canonicalFingerprint` and `groupKeys` hash this form without building it as a string.
 */
export const canonicalText = (s: string): string => unitsText(appendCanonical(s, 0))

/** the first `n` canonical units as a string */
const unitsText = (n: number): string => {
  let out = ""
  for (let i = 0; i < n; i += 8192) out += String.fromCharCode(...canonUnits.subarray(i, Math.min(n, i + 8192)))
  return out
}

/** `fnv1a(canonicalText(s), basis)`, computed without building the canonical text */
export const canonicalHash = (s: string, basis = 0x811c9dc5): number => fnvUnits(appendCanonical(s, 0), basis)

// per ASCII character, what the canonical form keeps of it (lower-cased), or 0 when it separates words
const canonicalAscii = (() => {
  const m = new Uint8Array(128)
  for (let c = 0; c < 128; c++) {
    const lower = c >= 65 && c <= 90 ? c | 32 : c
    m[c] = keep(lower) ? lower : 0
  }
  return m
})()

// the canonical question and answer as UTF-16 code units (question, 0, answer), hashed a word at a time
let canonUnits = new Uint16Array(2048)
let canonWords = new Uint32Array(canonUnits.buffer)

// what the canonical form keeps of `tickerMask` (every character of it: "<ticker>")
const maskUnits = Uint16Array.from(tickerMask, (ch) => canonicalAscii[ch.charCodeAt(0)]!)

/**
 * appends `canonicalText(s)` to canonUnits at `at`, or, with `spans` (a mask scan of `s`), the canonical
 * form of `s` with each span replaced by `tickerMask`, as `canonicalText(maskTickers(s))`; returns the new end
 */
const appendCanonical = (s: string, at: number, spans?: MaskedSpans): number => {
  const masks = spans === undefined ? 0 : spans.count
  const need = at + s.length + masks * maskUnits.length + 2
  if (need > canonUnits.length) {
    const grown = new Uint16Array(need * 2)
    grown.set(canonUnits.subarray(0, at))
    canonUnits = grown
    canonWords = new Uint32Array(grown.buffer)
  }
  const out = canonUnits
  const start = at
  let pending = false
  let i = 0
  // the text between masks, then the mask: all of its characters are kept, so only a pending space comes first
  for (let k = 0; k <= masks; k++) {
    const stop = k < masks ? spans!.at[2 * k]! : s.length
    for (; i < stop; i++) {
      const u = s.charCodeAt(i)
      const c = u < 128 ? canonicalAscii[u]! : u >= 0xc0 ? u : 0
      if (c === 0) pending = true
      else {
        if (pending && at > start) out[at++] = 32
        pending = false
        out[at++] = c
      }
    }
    if (k === masks) break
    if (pending && at > start) out[at++] = 32
    pending = false
    out.set(maskUnits, at)
    at += maskUnits.length
    i = spans!.at[2 * k + 1]!
  }
  return at
}

/** FNV-1a over the first `n` canonical units */
const fnvUnits = (n: number, basis: number): number => {
  const units = canonUnits
  let h = basis >>> 0
  for (let i = 0; i < n; i++) h = Math.imul(h ^ units[i]!, FNV_PRIME)
  return h >>> 0
}

/**
 * The 64-bit fingerprint of the canonical forms of a question and an answer (near-duplicate detection): two
 * independent multiplicative hashes over `canonicalText(question) + "\u0000" + canonicalText(answer)`, two code
 * units at a time, plus the length; `hi` is never 0. It only tells records apart within a run, so it may
 * change between releases. (The split key is the templated answer's: `groupKeys`.)
 */
export const canonicalFingerprint = (question: string, answer: string): Fingerprint => {
  const qEnd = appendCanonical(question, 0)
  canonUnits[qEnd] = 0
  const n = appendCanonical(answer, qEnd + 1)
  canonUnits[n] = 0
  const words = canonWords
  let h1 = 0x811c9dc5 ^ n
  let h2 = 0x9747b28c ^ Math.imul(n, 0x9e3779b1)
  for (let i = 0, w = (n + 1) >>> 1; i < w; i++) {
    const x = words[i]!
    h1 = Math.imul(h1 ^ x, FNV_PRIME)
    h1 ^= h1 >>> 13
    h2 = Math.imul(h2 ^ x, 0x5bd1e995)
    h2 ^= h2 >>> 15
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 0x85ebca6b)
  h2 = Math.imul(h2 ^ (h2 >>> 13), 0xc2b2ae35)
  return { hi: ((h1 ^ (h1 >>> 16)) | 1) >>> 0, lo: (h2 ^ (h2 >>> 16)) >>> 0 }
}

export interface Fingerprint {
  readonly hi: number
  readonly lo: number
}

// an aligned scratch buffer, so bytes are hashed four at a time through a Uint32Array view
let scratch = new Uint8Array(4096)
let scratchWords = new Uint32Array(scratch.buffer)

/**
 * The 64-bit fingerprint of a byte string (exact-duplicate detection): two independent multiplicative
 * hashes over 32-bit words, plus the length. `hi` is never 0 (0 marks an empty slot).
 */
export const fingerprintBytes = (bytes: Uint8Array): Fingerprint => {
  const n = bytes.length
  if (n + 4 > scratch.length) {
    // a Uint32Array view needs a byte length that is a multiple of 4
    scratch = new Uint8Array((((n + 4) * 2 + 3) >>> 2) << 2)
    scratchWords = new Uint32Array(scratch.buffer)
  }
  scratch.set(bytes)
  scratch[n] = scratch[n + 1] = scratch[n + 2] = scratch[n + 3] = 0
  const words = (n + 3) >>> 2
  let h1 = 0x811c9dc5 ^ n
  let h2 = 0x9747b28c ^ Math.imul(n, 0x9e3779b1)
  for (let i = 0; i < words; i++) {
    const w = scratchWords[i]!
    h1 = Math.imul(h1 ^ w, 0x01000193)
    h1 ^= h1 >>> 13
    h2 = Math.imul(h2 ^ w, 0x5bd1e995)
    h2 ^= h2 >>> 15
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 0x85ebca6b)
  h2 = Math.imul(h2 ^ (h2 >>> 13), 0xc2b2ae35)
  return { hi: ((h1 ^ (h1 >>> 16)) | 1) >>> 0, lo: (h2 ^ (h2 >>> 16)) >>> 0 }
}

/** The 64-bit fingerprint of a string (its UTF-8 bytes). */
export const fingerprint = (s: string): Fingerprint => fingerprintBytes(Buffer.from(s))

/** A set of 64-bit string fingerprints with flat, predictable memory. */
export class FingerprintSet {
  private hi: Uint32Array
  private lo: Uint32Array
  private mask: number
  size = 0
  constructor(initialCapacity = 1 << 16) {
    let cap = 1
    while (cap < initialCapacity) cap <<= 1
    this.hi = new Uint32Array(cap)
    this.lo = new Uint32Array(cap)
    this.mask = cap - 1
  }
  /** adds a fingerprint; returns false when it was already there */
  add(fp: Fingerprint): boolean {
    return this.addHash(fp.hi, fp.lo)
  }
  /** true when the fingerprint is in the set */
  has(fp: Fingerprint): boolean {
    let i = (fp.lo ^ fp.hi) & this.mask
    while (this.hi[i] !== 0) {
      if (this.hi[i] === fp.hi && this.lo[i] === fp.lo) return true
      i = (i + 1) & this.mask
    }
    return false
  }
  /** `add` without an object per call (`hi` must not be 0) */
  addHash(hi: number, lo: number): boolean {
    let i = (lo ^ hi) & this.mask
    while (this.hi[i] !== 0) {
      if (this.hi[i] === hi && this.lo[i] === lo) return false
      i = (i + 1) & this.mask
    }
    this.hi[i] = hi
    this.lo[i] = lo
    // grown at 7/8 load, as DedupeTable: near-copies are a fifth of a synthetic set, and at half load this
    // set held 4 MB at 1M records where 2 MB serve
    if (++this.size * 8 > this.mask * 7) this.grow()
    return true
  }
  private grow() {
    const { hi, lo } = this
    this.hi = new Uint32Array(hi.length * 2)
    this.lo = new Uint32Array(lo.length * 2)
    this.mask = this.hi.length - 1
    this.size = 0
    for (let i = 0; i < hi.length; i++) if (hi[i] !== 0) this.addHash(hi[i]!, lo[i]!)
  }
}

export type SplitName = "train" | "test"

/** The hash basis of a split seed. */
export const splitBasis = (seed: number): number => fnv1a(`split:${seed}`)

/** Which side a 32-bit key hash falls on for a test ratio in [0, 1]. */
export const sideOf = (keyHash: number, testRatio: number): SplitName =>
  keyHash / 0x1_0000_0000 < testRatio ? "test" : "train"

/** The group of a record: the split key's hash (seeded) and a second, seed-independent hash of the same key. */
export interface GroupKeys {
  /** which side: `sideOf(split, testRatio)` */
  readonly split: number
  /** with `split`, 63 bits that tell groups apart within a run (never 0) */
  readonly group: number
}

// the spans of the answer groupKeys scans itself, when its caller has not
const ownSpans = new MaskedSpans()

/** the canonical units of the templated answer (see the header) in canonUnits; returns their count */
const templateUnits = (answer: string, tickers: ReadonlyArray<string>, spans?: MaskedSpans): number => {
  if (spans === undefined) {
    scanTickers(answer, tickers, ownSpans, false)
    spans = ownSpans
  }
  return appendCanonical(answer, 0, spans)
}

/** The templated answer (see the header): `canonicalText(maskTickers(answer, tickers))`, the text `groupKeys` hashes. */
export const templateText = (answer: string, tickers: ReadonlyArray<string> = []): string => unitsText(templateUnits(answer, tickers))

/**
 * The group keys of the first `n` canonical units in one pass over them: FNV-1a from `basis` (the split hash) and
 * a second, seed-independent hash apart from it (with it, a 63-bit group id).
 */
const groupUnits = (n: number, basis: number): GroupKeys => {
  const units = canonUnits
  let split = basis >>> 0
  let h = 0x9747b28c ^ n
  for (let i = 0; i < n; i++) {
    const u = units[i]!
    split = Math.imul(split ^ u, FNV_PRIME)
    h = Math.imul(h ^ u, 0x5bd1e995)
    h ^= h >>> 15
  }
  return { split: split >>> 0, group: (Math.imul(h ^ (h >>> 13), 0xc2b2ae35) | 1) >>> 0 }
}

const tickerKey = (tickers: ReadonlyArray<string>) => `tickers:${[...tickers].sort().join(",")}`

/** true when a record's split key is its templated answer (not its tickers), so `groupKeys` needs the answer's mask */
export const keyedByTemplate = (record: { readonly tickers: ReadonlyArray<string> }, groupByTicker: boolean): boolean =>
  !groupByTicker || record.tickers.length === 0

/**
 * The split key of a record: its templated answer, or (`groupByTicker`, when it has tickers) its sorted tickers.
 * Same templated answer, same seed -> same side. `spans`: the answer's mask when the caller has scanned it
 * (`scanTickers(record.answer, record.tickers, spans)`, as the ingest does with the content rules' scan).
 */
export const groupKeys = (
  record: { readonly answer: string; readonly tickers: ReadonlyArray<string> },
  basis: number,
  groupByTicker = false,
  spans?: MaskedSpans
): GroupKeys => {
  if (!keyedByTemplate(record, groupByTicker)) {
    const key = tickerKey(record.tickers)
    return { split: fnv1a(key, basis), group: (fnv1a(key, 0x9747b28c) | 1) >>> 0 }
  }
  return groupUnits(templateUnits(record.answer, record.tickers, spans), basis)
}

/** The 32-bit split key hash of a record (`groupKeys(…).split`). */
export const splitKeyHash = (
  record: { readonly answer: string; readonly tickers: ReadonlyArray<string> },
  basis: number,
  groupByTicker = false
): number => groupKeys(record, basis, groupByTicker).split

/** Which side a record falls on (the rule the ingest applies): by its templated answer, or grouped by its tickers. */
export const assignSplit = (
  record: { readonly answer: string; readonly tickers: ReadonlyArray<string> },
  seed: number,
  testRatio: number,
  groupByTicker = false
): SplitName => sideOf(splitKeyHash(record, splitBasis(seed), groupByTicker), testRatio)

/**
 * The ingest's duplicate memory in one compact table, keyed by the normalized fingerprint (question +
 * answer after normalization). Each slot also keeps 32 bits of the exact-line fingerprint of the first
 * record that claimed it, so an exact copy of that record is told from a near-copy without a second
 * table; the (rarer) near-copies' own line fingerprints go to a small side set, so a later exact copy of
 * a near-copy still counts as exact. A slot is three adjacent 32-bit words (one cache line holds five, so
 * a probe run stays in one or two lines), and the table grows at 7/8 load: about 12 MB at 1M records,
 * where three separate arrays grown at 3/4 took 25 MB (plus the old table while growing).
 */
export class DedupeTable {
  /** per slot: normalized fingerprint hi (0: empty), lo, line fingerprint lo */
  private slots: Uint32Array
  private mask: number
  private size = 0
  private readonly nearLines = new FingerprintSet(1 << 12)
  /** `expected`: records it should hold without growing (at least 2^15 slots) */
  constructor(expected = 0) {
    let cap = 1 << 15
    while (cap * 7 < expected * 8) cap <<= 1
    this.slots = new Uint32Array(cap * 3)
    this.mask = cap - 1
  }
  /**
   * Records one valid line: "new" for the first record with this normalized fingerprint, "exact" for a
   * byte-identical copy of an earlier valid line, "normalized" for a near-copy (remembered as a line).
   */
  add(normHi: number, normLo: number, lineHi: number, lineLo: number): "new" | "exact" | "normalized" {
    normHi >>>= 0
    normLo >>>= 0
    lineLo >>>= 0
    const slots = this.slots
    let i = (normLo ^ normHi) & this.mask
    for (;;) {
      const j = i * 3
      const hi = slots[j]!
      if (hi === 0) {
        slots[j] = normHi
        slots[j + 1] = normLo
        slots[j + 2] = lineLo
        if (++this.size * 8 > this.mask * 7) this.grow()
        return "new"
      }
      if (hi === normHi && slots[j + 1] === normLo) {
        if (slots[j + 2] === lineLo || this.nearLines.has({ hi: lineHi, lo: lineLo })) return "exact"
        this.nearLines.add({ hi: lineHi, lo: lineLo })
        return "normalized"
      }
      i = (i + 1) & this.mask
    }
  }
  /** bytes the table holds (the side set of near-copies aside) */
  get byteSize(): number {
    return this.slots.byteLength
  }
  private grow() {
    const old = this.slots
    const slots = new Uint32Array(old.length * 2)
    const mask = slots.length / 3 - 1
    for (let j = 0; j < old.length; j += 3) {
      if (old[j] === 0) continue
      let i = (old[j + 1]! ^ old[j]!) & mask
      while (slots[i * 3] !== 0) i = (i + 1) & mask
      slots[i * 3] = old[j]!
      slots[i * 3 + 1] = old[j + 1]!
      slots[i * 3 + 2] = old[j + 2]!
    }
    this.slots = slots
    this.mask = mask
  }
}
