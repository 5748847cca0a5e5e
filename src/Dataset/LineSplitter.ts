/**
 * Byte chunks -> numbered text lines, by hand over Buffers because it is the ingest's hottest loop.
 * Handles LF and CRLF, a UTF-8 byte-order mark on the first line, a last line without a newline, lines
 * over `maxLineBytes` (reported, never held whole: only a preview is kept while the rest is skipped), and
 * invalid UTF-8 (reported, with a lossy preview). Memory is one chunk plus at most `maxLineBytes` of a
 * line split across chunks.
 */
import { Buffer, isUtf8 } from "node:buffer"

export type LineProblem = "too_long" | "invalid_utf8"

export interface RawLine {
  /** 1-based line number in the input */
  readonly lineNo: number
  /** the decoded text (no line terminator, no BOM); empty when `problem` is set */
  readonly text: string
  /** the line's bytes (a view into the read chunk) */
  readonly bytes?: Uint8Array
  readonly byteLength: number
  readonly problem?: LineProblem
  /** the first bytes of a problem line, decoded lossily, for the rejects file */
  readonly preview?: string
}

/**
 * A valid line: a range of the chunk it was read in, its text decoded on first use (the ingest hands most
 * lines' bytes to a worker thread, so decoding them here as well would be wasted). It holds no Buffer view
 * of its own until asked (`bytes`): a view costs an object per line, and lines live until their batch is
 * copied into their batch, and a view each would double what the GC has to move. The chunk must stay
 * untouched while the line is in use: the ingest reuses a chunk only once its lines are copied.
 */
export class Line implements RawLine {
  readonly lineNo: number
  readonly chunk: Buffer
  readonly start: number
  readonly end: number
  private decoded: string | undefined
  constructor(lineNo: number, chunk: Buffer, start: number, end: number) {
    this.lineNo = lineNo
    this.chunk = chunk
    this.start = start
    this.end = end
  }
  get bytes(): Buffer {
    return this.chunk.subarray(this.start, this.end)
  }
  get byteLength(): number {
    return this.end - this.start
  }
  get text(): string {
    return (this.decoded ??= this.chunk.toString("utf8", this.start, this.end))
  }
}

const LF = 10
const CR = 13

export class LineSplitter {
  private lineNo = 0
  private parts: Array<Buffer> = []
  private partBytes = 0
  /** bytes of the current line seen so far, including skipped ones */
  private lineBytes = 0
  /** the last byte of the current line so far (a CR before the newline is not part of the line) */
  private lastByte = 0
  private first = true
  private readonly maxLineBytes: number
  private readonly previewBytes: number
  constructor(maxLineBytes: number = 1024 * 1024, previewBytes: number = 512) {
    this.maxLineBytes = maxLineBytes
    this.previewBytes = previewBytes
  }

  /** Splits one chunk, appending complete lines to `out`. */
  push(chunk: Uint8Array, out: Array<RawLine>): void {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    let start = 0
    let nl = buf.indexOf(LF, 0)
    if (nl < 0) return this.keep(buf, 0, buf.length)
    if (this.lineBytes > 0) {
      // finish the line carried over from the previous chunk
      this.keep(buf, 0, nl)
      this.emitCarried(out)
      start = nl + 1
      nl = buf.indexOf(LF, start)
    }
    if (nl >= 0) {
      // one UTF-8 check for all complete lines of this chunk; per-line checks only when it fails
      const lastNl = buf.lastIndexOf(LF)
      const allValid = isUtf8(buf.subarray(start, lastNl))
      while (nl >= 0) {
        this.emit(buf, start, nl, allValid, out)
        start = nl + 1
        nl = buf.indexOf(LF, start)
      }
    }
    if (start < buf.length) this.keep(buf, start, buf.length)
  }

  /** Emits the last line when the input does not end with a newline. */
  end(out: Array<RawLine>): void {
    if (this.lineBytes > 0) this.emitCarried(out)
  }

  get linesSeen(): number {
    return this.lineNo
  }

  private keep(buf: Buffer, s: number, e: number) {
    const n = e - s
    if (n === 0) return
    this.lineBytes += n
    this.lastByte = buf[e - 1]!
    const room = this.maxLineBytes + 2 - this.partBytes // +2: a CR and one byte over the limit
    if (room > 0) {
      const take = Math.min(room, n)
      // copy: the chunk buffer may be reused by the reader
      this.parts.push(Buffer.from(buf.subarray(s, s + take)))
      this.partBytes += take
    }
  }

  private emitCarried(out: Array<RawLine>) {
    const whole = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.partBytes)
    const total = this.lineBytes
    this.parts = []
    this.partBytes = 0
    this.lineBytes = 0
    // a CR before the newline is not part of the line (emit strips it; here it only matters for the size)
    const bytes = this.lastByte === CR ? total - 1 : total
    if (bytes > this.maxLineBytes) {
      this.lineNo++
      this.first = false
      out.push(this.tooLong(whole, bytes))
      return
    }
    this.emit(whole, 0, whole.length, false, out)
  }

  private emit(buf: Buffer, s: number, e: number, known: boolean, out: Array<RawLine>) {
    this.lineNo++
    if (e > s && buf[e - 1] === CR) e--
    if (this.first) {
      this.first = false
      if (e - s >= 3 && buf[s] === 0xef && buf[s + 1] === 0xbb && buf[s + 2] === 0xbf) s += 3
    }
    const bytes = e - s
    if (bytes > this.maxLineBytes) {
      out.push(this.tooLong(buf.subarray(s, e), bytes))
      return
    }
    if (!known && !isUtf8(buf.subarray(s, e))) {
      out.push({
        lineNo: this.lineNo,
        text: "",
        byteLength: bytes,
        problem: "invalid_utf8",
        preview: buf.toString("utf8", s, Math.min(e, s + this.previewBytes))
      })
      return
    }
    out.push(new Line(this.lineNo, buf, s, e))
  }

  private tooLong(head: Buffer, bytes: number): RawLine {
    return {
      lineNo: this.lineNo,
      text: "",
      byteLength: bytes,
      problem: "too_long",
      preview: head.toString("utf8", 0, Math.min(head.length, this.previewBytes))
    }
  }
}
