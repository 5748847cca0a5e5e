/**
 * The per-line work of the ingest, synchronous and allocation-light: decode -> map to the canonical
 * record -> normalize -> content rules -> dedupe -> split -> encode. `IngestProcessor.process` turns a
 * batch of raw lines into the text to append to each output, so the streaming layer (DatasetPipeline)
 * does one write per output per batch. Every non-blank line ends as exactly one of: train, test,
 * duplicate (exact or normalized) or rejected.
 */
import { Result } from "effect"
import { decodeInput } from "./Input.ts"
import type { RawLine } from "./LineSplitter.ts"
import { normalizeRecord } from "./Normalize.ts"
import { hasLivePlaceholder } from "./Placeholders.ts"
import { encodeRecord } from "./Record.ts"
import { checkRules, type RuleConfig } from "./Rules.ts"
import { canonicalFingerprint, fingerprint, fingerprintBytes, FingerprintSet, sideOf, splitBasis, splitKeyHash } from "./Split.ts"

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
  rejectReasons: Record<string, number>
  warnings: Record<string, number>
  formats: Record<string, number>
  extraFields: Record<string, number>
}

export interface BatchOutput {
  train: string
  test: string
  rejects: string
  /** the rejected lines of this batch (rare, so kept as objects for callers that print them) */
  rejectList: Array<Reject>
  /** set in strict mode at the first rejected line; the outputs hold only the lines before it */
  firstReject: Reject | undefined
}

const bump = (m: Record<string, number>, k: string) => {
  m[k] = (m[k] ?? 0) + 1
}
const blank = /^\s*$/

export class IngestProcessor {
  readonly counts: Counts = {
    linesRead: 0, blankLines: 0, records: 0, train: 0, test: 0, duplicatesExact: 0, duplicatesNormalized: 0,
    rejected: 0, placeholdersReplaced: 0, rejectReasons: {}, warnings: {}, formats: {}, extraFields: {}
  }
  private readonly exact = new FingerprintSet()
  private readonly normalized = new FingerprintSet()
  private readonly config: IngestConfig
  private readonly strict: boolean
  private readonly basis: number
  constructor(config: IngestConfig, strict: boolean) {
    this.config = config
    this.basis = splitBasis(config.seed)
    this.strict = strict
  }

  process(lines: ReadonlyArray<RawLine>): BatchOutput {
    let train = ""
    let test = ""
    let rejects = ""
    const rejectList: Array<Reject> = []
    const c = this.counts
    for (const raw of lines) {
      c.linesRead++
      if (raw.problem === undefined && blank.test(raw.text)) {
        c.blankLines++
        continue
      }
      c.records++
      const outcome = this.one(raw)
      if (typeof outcome === "string") {
        if (outcome === "exact") c.duplicatesExact++
        else if (outcome === "normalized") c.duplicatesNormalized++
        continue
      }
      if ("code" in outcome) {
        c.rejected++
        bump(c.rejectReasons, outcome.code)
        rejectList.push(outcome)
        if (this.strict) return { train, test, rejects: rejects + JSON.stringify(outcome) + "\n", rejectList, firstReject: outcome }
        rejects += JSON.stringify(outcome) + "\n"
        continue
      }
      if (outcome.split === "test") {
        c.test++
        test += outcome.json + "\n"
      } else {
        c.train++
        train += outcome.json + "\n"
      }
    }
    return { train, test, rejects, rejectList, firstReject: undefined }
  }

  private reject(raw: RawLine, code: string, field: string, reason: string): Reject {
    const text = raw.problem !== undefined ? (raw.preview ?? "") : raw.text
    const max = this.config.rejectTextChars
    return { line: raw.lineNo, code, field, reason, text: text.length > max ? text.slice(0, max) + "…" : text }
  }

  private one(raw: RawLine): Reject | "exact" | "normalized" | { split: "train" | "test"; json: string } {
    if (raw.problem === "too_long") {
      return this.reject(raw, "line_too_long", "<line>", `line is ${raw.byteLength} bytes, over the limit`)
    }
    if (raw.problem === "invalid_utf8") return this.reject(raw, "invalid_utf8", "<line>", "line is not valid UTF-8")
    const line = raw.text
    // exact duplicates are checked against accepted lines only, so a repeated bad line is rejected again
    const lineFp = raw.bytes !== undefined ? fingerprintBytes(raw.bytes) : fingerprint(line)
    if (this.exact.has(lineFp)) return "exact"
    let json: unknown
    try {
      json = JSON.parse(line)
    } catch (e) {
      return this.reject(raw, "invalid_json", "<root>", `invalid JSON: ${(e as Error).message}`)
    }
    const decoded = decodeInput(json, this.config.keepExtra)
    if (Result.isFailure(decoded)) return this.reject(raw, "schema", decoded.failure.field, decoded.failure.reason)
    const d = decoded.success
    const c = this.counts
    for (const k of d.extraKeys) bump(c.extraFields, k)
    const n = normalizeRecord(d.record)
    let record = n.record
    if (d.deriveContextRequired && hasLivePlaceholder(record.answer)) record = { ...record, context_required: true }
    const violations = checkRules(record, this.config.rules)
    const fatal = violations.find((v) => this.config.rules[v.rule] === "reject")
    if (fatal) return this.reject(raw, fatal.rule, fatal.field, fatal.reason)
    if (!this.normalized.add(canonicalFingerprint(record.question, record.answer))) {
      this.exact.add(lineFp)
      return "normalized"
    }
    this.exact.add(lineFp)
    for (const v of violations) bump(c.warnings, v.rule)
    bump(c.formats, d.format)
    c.placeholdersReplaced += n.replaced
    const keyHash = splitKeyHash(record.question, this.config.groupByTicker ? record.tickers : undefined, this.basis)
    return { split: sideOf(keyHash, this.config.testRatio), json: encodeRecord(record, d.extra) }
  }
}
