/**
 * The pure half of the ingest's per-line work (see Ingest.ts): decode -> canonical record -> normalize ->
 * content rules -> fingerprints and split hash -> encode, for a batch of lines. It holds no state,
 * so it runs the same on the main thread or in a worker (IngestWorker.ts), and imports nothing from
 * `effect` (through Placeholders, Normalize, Rules, SeedRecord, RecordEncode, Split, Tickers), so a worker
 * stays small. The result is a few typed arrays and one byte buffer (transferred between threads, not
 * copied), plus notes for the rare lines that need more (rejects, warnings, extra fields, other formats).
 */
import { Buffer } from "node:buffer"
import type { Decoded, InputFormat, InputIssue } from "./SeedRecord.ts"
import { isChatShaped, isSeedInput, seedDecoded } from "./SeedRecord.ts"
import { normalizeRecord } from "./Normalize.ts"
import { hasLivePlaceholder } from "./Placeholders.ts"
import { encodeRecord, encodesAsLine } from "./RecordEncode.ts"
import { checkRules, type RuleConfig } from "./Rules.ts"
import { canonicalFingerprint, fingerprintBytes, groupKeys, keyedByTemplate, splitBasis } from "./Split.ts"
import { MaskedSpans, scanTickers } from "./Tickers.ts"

/** The rare per-line facts that do not fit the typed arrays of a BatchAnalysis. */
export interface LineNote {
  /** index of the line in its batch */
  readonly i: number
  readonly reject?: { readonly code: string; readonly field: string; readonly reason: string }
  /** rules broken at severity `warn`, one entry per violation */
  readonly warnings?: ReadonlyArray<string>
  readonly extraKeys?: ReadonlyArray<string>
  /** set when not "seed" */
  readonly format?: InputFormat
}

/**
 * What `analyzeBatch` found in a batch of lines: typed arrays plus a few notes. The arrays are views of one
 * buffer (`meta`, then `ends`, then the records), unless the records outgrew it; `analysisBuffers` lists
 * the distinct ones, to transfer between threads and give back to the pool.
 */
export interface BatchAnalysis {
  /**
   * per line, `META` words: status, normalized fingerprint (hi, lo), split key hash, values replaced, line
   * fingerprint (hi, lo), group id (with the split key hash, the record's template group: Split.groupKeys)
   */
  readonly meta: Uint32Array
  /** the encoded records of the valid lines, each ending in "\n" (UTF-8) */
  readonly bytes: Uint8Array
  /** per line, the end of its record in `bytes` (the start is the previous line's end) */
  readonly ends: Uint32Array
  readonly notes: Array<LineNote>
}

/** the distinct buffers a BatchAnalysis's arrays view (one, unless its records outgrew the first) */
export const analysisBuffers = (a: BatchAnalysis): Array<ArrayBuffer> => {
  const first = a.meta.buffer as ArrayBuffer
  const records = a.bytes.buffer as ArrayBuffer
  return records === first ? [first] : [first, records]
}

/** A batch of lines as bytes (one transferable buffer, decoded where it is analyzed). */
export interface BatchInput {
  /** the lines' bytes, one after another (no terminators) */
  readonly bytes: Uint8Array
  /** per line, its end in `bytes`; the start is the previous line's end */
  readonly ends: Uint32Array
  /** per line, 1 for a line the main thread handles itself (a problem line; its range is empty) */
  readonly skip: Uint8Array
}

export const META = 8
export const OK = 0
export const REJECTED = 1
/** a blank or problem line: the main thread counts it */
export const SKIPPED = 2
/** a line the worker's decoder left to the main thread (not a valid seed record) */
export const DEFERRED = 3

/** What the analysis needs of the configuration (sent to workers once). */
export interface AnalyzeConfig {
  readonly seed: number
  readonly groupByTicker: boolean
  readonly rules: RuleConfig
  readonly keepExtra: boolean
}

/** JSON value -> canonical record, a decode issue, or undefined to leave the line to the main thread */
export type LineDecoder = (json: unknown, keepExtra: boolean) => { readonly decoded: Decoded } | { readonly issue: InputIssue } | undefined

/** The worker's decoder: seed records that pass the hand-written check; everything else is deferred. */
export const seedOnlyDecoder: LineDecoder = (json, keepExtra) => {
  if (json === null || typeof json !== "object" || Array.isArray(json)) return undefined
  const o = json as Record<string, unknown>
  if (isChatShaped(o) || ("prompt" in o && "completion" in o) || !isSeedInput(o)) return undefined
  return { decoded: seedDecoded(o, o, keepExtra) }
}

const blank = /^\s*$/
// the answer's mask, from the scan that also finds its tickers for the content rules
const answerSpans = new MaskedSpans()

/** every turn of a conversation but its last assistant turn, one after another (its near-duplicate key) */
const conversationBefore = (messages: ReadonlyArray<{ readonly role: string; readonly content: string }>): string => {
  let last = messages.length - 1
  while (last >= 0 && messages[last]!.role !== "assistant") last--
  let out = ""
  for (let i = 0; i < last; i++) out += `${messages[i]!.role}: ${messages[i]!.content}\n`
  return out
}

/**
 * A fresh batch buffer of at least `bytes` bytes, rounded up to a multiple of 64 KiB, never from Buffer's
 * shared pool (it may move to another thread). Batches differ by a few bytes around the read size: buffers
 * of the exact size were often a little small for the next batch, so new ones kept being allocated and the
 * spent ones dropped by the full BufferPool (about a hundred of 300 KB at 1M records, freed only by a later GC).
 */
export const allocBatchBuffer = (bytes: number): Buffer => Buffer.allocUnsafeSlow(Math.ceil(Math.max(bytes, 1) / 65536) * 65536)

/** a larger copy of the first `used` bytes */
export const growBuffer = (bytes: Buffer, used: number, need: number): Buffer => {
  const grown = allocBatchBuffer(Math.max(need, bytes.length * 2))
  bytes.copy(grown, 0, 0, used)
  return grown
}

/**
 * Analyzes a batch of lines (blank lines and the ones marked `skip` come back SKIPPED). Pure: the same
 * bytes and configuration give the same result on any thread. `reuse`, a spent output buffer of an
 * earlier batch, holds the encoded records when it is large enough (see BufferPool).
 */
export const analyzeBatch = (input: BatchInput, config: AnalyzeConfig, decode: LineDecoder, reuse?: ArrayBuffer): BatchAnalysis => {
  const n = input.ends.length
  const src = Buffer.from(input.bytes.buffer, input.bytes.byteOffset, input.bytes.byteLength)
  const size = src.length
  // one buffer for the per-line words and the records: per-batch typed arrays of their own were a dozen
  // KB of native memory each, freed only when the GC got to them; never from Buffer's shared pool, since
  // a worker transfers this memory to the main thread
  const head = n * (META + 1) * 4
  const want = head + Math.max(1024, size + (size >>> 2))
  const memory = reuse !== undefined && reuse.byteLength >= want ? reuse : allocBatchBuffer(want).buffer as ArrayBuffer
  const meta = new Uint32Array(memory, 0, n * META).fill(0)
  const ends = new Uint32Array(memory, n * META * 4, n)
  const notes: Array<LineNote> = []
  let bytes: Buffer = Buffer.from(memory, head, memory.byteLength - head)
  let used = 0
  const basis = splitBasis(config.seed)
  const rules = config.rules
  for (let i = 0; i < n; i++) {
    const m = i * META
    ends[i] = used
    const from = i === 0 ? 0 : input.ends[i - 1]!
    const to = input.ends[i]!
    const line = input.skip[i] === 1 ? "" : src.toString("utf8", from, to)
    if (blank.test(line)) {
      meta[m] = SKIPPED
      continue
    }
    let json: unknown
    try {
      json = JSON.parse(line)
    } catch (e) {
      meta[m] = REJECTED
      notes.push({ i, reject: { code: "invalid_json", field: "<root>", reason: `invalid JSON: ${(e as Error).message}` } })
      continue
    }
    const decoded = decode(json, config.keepExtra)
    if (decoded === undefined) {
      meta[m] = DEFERRED
      continue
    }
    if ("issue" in decoded) {
      meta[m] = REJECTED
      notes.push({ i, reject: { code: "schema", field: decoded.issue.field, reason: decoded.issue.reason } })
      continue
    }
    const d = decoded.decoded
    const nr = normalizeRecord(d.record)
    let record = nr.record
    if (d.deriveContextRequired && hasLivePlaceholder(record.answer)) record = { ...record, context_required: true }
    // the answer's tickers, for the rules, and its mask, for the split key, in one scan of it
    const masked = keyedByTemplate(record, config.groupByTicker)
    const findAnswer = rules.tickers_in_text !== "off"
    const answerTickers = masked || findAnswer ? scanTickers(record.answer, record.tickers, masked ? answerSpans : undefined, findAnswer) : undefined
    const violations = checkRules(record, rules, findAnswer ? answerTickers : undefined)
    let fatal: (typeof violations)[number] | undefined
    for (const v of violations) if (rules[v.rule] === "reject") { fatal = v; break }
    if (fatal !== undefined) {
      meta[m] = REJECTED
      // extra fields are counted for every decoded line that is not an exact copy, rejected or not
      notes.push({ i, reject: { code: fatal.rule, field: fatal.field, reason: fatal.reason }, ...(d.extraKeys.length > 0 ? { extraKeys: d.extraKeys } : {}) })
      continue
    }
    // a conversation's earlier turns are part of what makes it distinct (two chats may end in the same pair)
    const keys = canonicalFingerprint(record.messages !== undefined && record.messages.length > 2 ? conversationBefore(record.messages) : record.question, record.answer)
    meta[m] = OK
    meta[m + 1] = keys.hi
    meta[m + 2] = keys.lo
    const group = groupKeys(record, basis, config.groupByTicker, masked ? answerSpans : undefined)
    meta[m + 3] = group.split
    meta[m + 4] = nr.replaced
    const lineFp = fingerprintBytes(src.subarray(from, to))
    meta[m + 5] = lineFp.hi
    meta[m + 6] = lineFp.lo
    meta[m + 7] = group.group
    if (violations.length > 0 || d.extraKeys.length > 0 || d.format !== "seed") {
      notes.push({
        i,
        ...(violations.length > 0 ? { warnings: violations.map((v) => v.rule) } : {}),
        ...(d.extraKeys.length > 0 ? { extraKeys: d.extraKeys } : {}),
        ...(d.format !== "seed" ? { format: d.format } : {})
      })
    }
    // most lines are written as we would write them: their bytes are the output (no encoding, no garbage)
    if (record === d.record && d.format === "seed" && d.extraKeys.length === 0 && encodesAsLine(json as Record<string, unknown>, src, from, to)) {
      const need = used + (to - from) + 1
      if (need > bytes.length) bytes = growBuffer(bytes, used, need)
      src.copy(bytes, used, from, to)
      used += to - from
      bytes[used++] = 10
    } else {
      const text = encodeRecord(record, d.extra) + "\n"
      if (used + text.length * 3 > bytes.length) {
        const need = used + Buffer.byteLength(text)
        if (need > bytes.length) bytes = growBuffer(bytes, used, need)
      }
      used += bytes.write(text, used)
    }
    ends[i] = used
  }
  return { meta, bytes: bytes.subarray(0, used), ends, notes }
}

