/**
 * The per-line work of the ingest, in two halves so the first can run on another thread:
 *
 * 1. `analyzeBatch` (Analyze.ts; pure, no state): decode -> map to the canonical record -> normalize -> content rules
 *    -> fingerprints and split hash -> encode, for a batch of lines. Its result is a few typed arrays
 *    and one byte buffer (cheap to transfer between threads), plus notes for the rare lines that need more
 *    (rejects, warnings, extra fields, non-seed formats).
 * 2. `IngestProcessor.commit` (in input order, on the main thread): dedupe, split, counts, and the bytes to
 *    append to each output.
 *
 * The analysis runs the same code here or in a worker (IngestWorkers.ts); lines a worker cannot decode
 * without Schema come back DEFERRED and are analyzed here with the full decoder. So the outputs are
 * byte-identical for any number of workers. Every non-blank line ends as exactly one of:
 * train, test, duplicate (exact or normalized) or rejected.
 */
import { Buffer } from "node:buffer"
import * as Result from "effect/Result"
import { allocBatchBuffer, analyzeBatch, type BatchAnalysis, type BatchInput, DEFERRED, growBuffer, type LineDecoder, META, REJECTED, SKIPPED } from "./Analyze.ts"
import { decodeInput } from "./Input.ts"
import { Line, type RawLine } from "./LineSplitter.ts"
import type { RuleConfig } from "./Rules.ts"
import { DedupeTable, FingerprintSet, sideOf } from "./Split.ts"

/** The main thread's decoder: every input format, with the Schema's error messages. */
export const fullDecoder: LineDecoder = (json, keepExtra) => {
  const r = decodeInput(json, keepExtra)
  return Result.isFailure(r) ? { issue: r.failure } : { decoded: r.success }
}

export interface IngestConfig {
  readonly seed: number
  readonly testRatio: number
  /** split by the record's tickers instead of its question, so no ticker straddles the split */
  readonly groupByTicker: boolean
  readonly rules: RuleConfig
  readonly keepExtra: boolean
  /** characters of the original line kept in rejects.jsonl */
  readonly rejectTextChars: number
}

export interface Reject {
  readonly line: number
  /** `invalid_json`, `invalid_utf8`, `line_too_long`, `schema`, or a content rule's name */
  readonly code: string
  readonly field: string
  readonly reason: string
  readonly text: string
}

/** Running counts; `train + test + duplicates + rejected = records = linesRead - blankLines`. */
export interface Counts {
  linesRead: number
  blankLines: number
  records: number
  train: number
  test: number
  duplicatesExact: number
  duplicatesNormalized: number
  rejected: number
  placeholdersReplaced: number
  /** distinct split groups (templated answers, or ticker sets) among train and test records */
  groupsTrain: number
  groupsTest: number
  rejectReasons: Record<string, number>
  warnings: Record<string, number>
  formats: Record<string, number>
  extraFields: Record<string, number>
}

/**
 * A batch read on the main thread, ready to be analyzed anywhere and committed here. It keeps no object per
 * line: the lines are consecutive, so their numbers follow from the first, and their bytes are the input's
 * (back from the worker at commit). Per-line objects would live until the commit, long enough for the GC
 * to promote them to the old generation (about 60 MB promoted over a 1M-record run).
 */
export interface PreparedBatch {
  /** the number of the batch's first line in the input */
  readonly firstLineNo: number
  readonly count: number
  /** the lines the splitter flagged (too long, invalid UTF-8), by index in the batch; undefined when none */
  readonly problems: ReadonlyArray<RawLine | undefined> | undefined
  /** the bytes of the lines' text (`input.bytes`' length, which a worker's copy no longer tells once moved) */
  readonly size: number
  /** the lines' ends, skip marks and bytes in one buffer of their own (so it can be transferred to a worker) */
  readonly input: BatchInput
}

export interface BatchOutput {
  /** bytes to append to train.jsonl / test.jsonl (valid until the next commit) */
  train: Uint8Array
  test: Uint8Array
  rejects: string
  /** the rejected lines of this batch (rare, so kept as objects for callers that print them) */
  rejectList: Array<Reject>
  /** set in strict mode at the first rejected line; the outputs hold only the lines before it */
  firstReject: Reject | undefined
}

/** where the lines' bytes start in a batch input buffer of `count` lines: after their ends (4 bytes each) and skip marks */
const inputHead = (count: number) => (count * 5 + 7) & ~7

/**
 * The views of a batch input buffer of `count` lines and `size` bytes of text (as `batchInput` lays it out):
 * a buffer a worker gave back reads as the batch it was.
 */
export const batchInputView = (memory: ArrayBuffer, count: number, size: number): BatchInput => ({
  ends: new Uint32Array(memory, 0, count),
  skip: new Uint8Array(memory, count * 4, count),
  bytes: new Uint8Array(memory, inputHead(count), size)
})

/**
 * The lines' bytes copied into one buffer of their own (`reuse`, a spent input buffer, when it is large
 * enough), after the lines' ends and skip marks (problem lines are marked to skip): one buffer, so a batch
 * allocates nothing once the pool has buffers, and moves to a worker and back whole.
 */
export const batchInput = (lines: ReadonlyArray<RawLine>, reuse?: ArrayBuffer): BatchInput => {
  let size = 0
  for (const l of lines) if (l.problem === undefined) size += l instanceof Line ? l.byteLength : l.bytes !== undefined ? l.bytes.length : Buffer.byteLength(l.text)
  const need = inputHead(lines.length) + size
  const view = batchInputView(reuse !== undefined && reuse.byteLength >= need ? reuse : allocBatchBuffer(need).buffer as ArrayBuffer, lines.length, size)
  const bytes = Buffer.from(view.bytes.buffer, view.bytes.byteOffset, size)
  const { ends, skip } = view
  let used = 0
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!
    // every mark is written: a reused buffer holds the previous batch's
    skip[i] = l.problem !== undefined ? 1 : 0
    // a problem line's range is empty; a valid one is most often a range of its read chunk, copied
    // without a view per line
    if (l.problem === undefined) {
      if (l instanceof Line) used += l.chunk.copy(bytes, used, l.start, l.end)
      else if (l.bytes !== undefined) {
        bytes.set(l.bytes, used)
        used += l.bytes.length
      } else used += bytes.write(l.text, used)
    }
    ends[i] = used
  }
  return view
}

const bump = (m: Record<string, number>, k: string) => {
  m[k] = (m[k] ?? 0) + 1
}

export class IngestProcessor {
  readonly counts: Counts = {
    linesRead: 0, blankLines: 0, records: 0, train: 0, test: 0, duplicatesExact: 0, duplicatesNormalized: 0,
    rejected: 0, placeholdersReplaced: 0, groupsTrain: 0, groupsTest: 0, rejectReasons: {}, warnings: {}, formats: {}, extraFields: {}
  }
  private readonly seen: DedupeTable
  /** the split groups met so far (8 bytes a slot: the groups are far fewer than the records on templated data) */
  private readonly groups = new FingerprintSet(1 << 12)
  readonly config: IngestConfig
  private readonly strict: boolean
  // output buffers reused by every commit (the caller writes them before the next one)
  private trainOut: Buffer = Buffer.allocUnsafe(1 << 20)
  private testOut: Buffer = Buffer.allocUnsafe(1 << 18)
  /**
   * `expectedRecords`: how many records the input probably holds (from its size), so the dedupe table
   * starts large enough instead of growing (each growth rehashes it, and holds the old and the new table
   * at once: the peak memory of a large run).
   */
  constructor(config: IngestConfig, strict: boolean, expectedRecords = 0) {
    this.seen = new DedupeTable(expectedRecords)
    this.config = config
    this.strict = strict
  }

  /**
   * Copies a batch's lines (consecutive, as the splitter emits them) into one buffer (a spent one when
   * `reuse` is large enough), so it can be analyzed here or handed to a worker; the lines themselves are
   * not needed afterwards.
   */
  prepare(lines: ReadonlyArray<RawLine>, reuse?: ArrayBuffer): PreparedBatch {
    const input = batchInput(lines, reuse)
    let problems: Array<RawLine | undefined> | undefined
    for (let i = 0; i < lines.length; i++) if (lines[i]!.problem !== undefined) (problems ??= [])[i] = lines[i]
    return { firstLineNo: lines.length === 0 ? 0 : lines[0]!.lineNo, count: lines.length, problems, size: input.bytes.byteLength, input }
  }

  /**
   * Dedupe, split and count one analyzed batch; batches must be committed in input order. `input` is the
   * batch's input (`batch.input`, or the views of the buffer a worker gave back: `batchInputView`).
   */
  commit(batch: PreparedBatch, analysis: BatchAnalysis, input: BatchInput = batch.input): BatchOutput {
    const c = this.counts
    const ends = input.ends
    const bytes = input.bytes
    let trainUsed = 0
    let testUsed = 0
    let rejects = ""
    const rejectList: Array<Reject> = []
    let note = 0
    const ratio = this.config.testRatio
    const done = (firstReject: Reject | undefined): BatchOutput =>
      ({ train: this.trainOut.subarray(0, trainUsed), test: this.testOut.subarray(0, testUsed), rejects, rejectList, firstReject })
    for (let i = 0; i < batch.count; i++) {
      const lineNo = batch.firstLineNo + i
      const problem = batch.problems?.[i]
      const from = i === 0 ? 0 : ends[i - 1]!
      const to = ends[i]!
      c.linesRead++
      let a = analysis
      let m = i * META
      let lineNote = note < a.notes.length && a.notes[note]!.i === i ? a.notes[note++] : undefined
      if (a.meta[m] === DEFERRED) {
        // a line the worker could not decode alone: the full decoder, here, explains it
        a = analyzeBatch({ bytes: bytes.subarray(from, to), ends: Uint32Array.of(to - from), skip: Uint8Array.of(0) }, this.config, fullDecoder)
        m = 0
        lineNote = a.notes[0]
      }
      let reject: Reject | undefined
      if (problem?.problem === "too_long") reject = this.reject(lineNo, problem.preview ?? "", "line_too_long", "<line>", `line is ${problem.byteLength} bytes, over the limit`)
      else if (problem?.problem === "invalid_utf8") reject = this.reject(lineNo, problem.preview ?? "", "invalid_utf8", "<line>", "line is not valid UTF-8")
      else if (a.meta[m] === SKIPPED) {
        c.blankLines++
        continue
      } else if (a.meta[m] === REJECTED) {
        const r = lineNote!.reject!
        reject = this.reject(lineNo, Buffer.from(bytes.buffer, bytes.byteOffset + from, to - from).toString("utf8"), r.code, r.field, r.reason)
      }
      c.records++
      if (reject !== undefined) {
        if (lineNote?.extraKeys !== undefined) for (const k of lineNote.extraKeys) bump(c.extraFields, k)
        c.rejected++
        bump(c.rejectReasons, reject.code)
        rejectList.push(reject)
        rejects += JSON.stringify(reject) + "\n"
        if (this.strict) return done(reject)
        continue
      }
      const seen = this.seen.add(a.meta[m + 1]!, a.meta[m + 2]!, a.meta[m + 5]!, a.meta[m + 6]!)
      if (seen === "exact") {
        c.duplicatesExact++
        continue
      }
      if (lineNote?.extraKeys !== undefined) for (const k of lineNote.extraKeys) bump(c.extraFields, k)
      if (seen === "normalized") {
        c.duplicatesNormalized++
        continue
      }
      if (lineNote?.warnings !== undefined) for (const w of lineNote.warnings) bump(c.warnings, w)
      bump(c.formats, lineNote?.format ?? "seed")
      c.placeholdersReplaced += a.meta[m + 4]!
      const k = m / META
      const record = a.bytes.subarray(k === 0 ? 0 : a.ends[k - 1]!, a.ends[k]!)
      const side = sideOf(a.meta[m + 3]!, ratio)
      if (this.groups.addHash(a.meta[m + 7]!, a.meta[m + 3]!)) {
        if (side === "test") c.groupsTest++
        else c.groupsTrain++
      }
      if (side === "test") {
        c.test++
        if (testUsed + record.length > this.testOut.length) this.testOut = growBuffer(this.testOut, testUsed, testUsed + record.length)
        this.testOut.set(record, testUsed)
        testUsed += record.length
      } else {
        c.train++
        if (trainUsed + record.length > this.trainOut.length) this.trainOut = growBuffer(this.trainOut, trainUsed, trainUsed + record.length)
        this.trainOut.set(record, trainUsed)
        trainUsed += record.length
      }
    }
    return done(undefined)
  }

  private reject(line: number, text: string, code: string, field: string, reason: string): Reject {
    const max = this.config.rejectTextChars
    return { line, code, field, reason, text: text.length > max ? text.slice(0, max) + "…" : text }
  }
}
