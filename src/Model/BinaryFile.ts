/**
 * Positional reads and sequential writes on a file descriptor, for the weight-file formats. Reads go straight into a
 * fresh ArrayBuffer (so typed-array views over it are aligned); nothing ever reads a whole weight file into memory.
 */
import * as fs from "node:fs"
import { fileError } from "./ModelFileError.ts"

const maxChunk = 1 << 30 // readSync/writeSync take at most 2 GiB per call

/** An open file for reading, with its size. */
export interface ReadableFile {
  readonly path: string
  readonly fd: number
  readonly size: number
}

export const openForRead = (path: string): ReadableFile => {
  const fd = fs.openSync(path, "r")
  return { path, fd, size: fs.fstatSync(fd).size }
}

export const closeFile = (file: { readonly fd: number }): void => fs.closeSync(file.fd)

/** Reads exactly `length` bytes at `position` into a new buffer (or `into`); a short read means a truncated file. */
export const readAt = (file: ReadableFile, position: number, length: number, what: string, into?: Uint8Array): Uint8Array => {
  if (position + length > file.size) {
    throw fileError(
      file.path,
      `file is truncated: ${what} needs bytes ${position}..${position + length} but the file has ${file.size} bytes`
    )
  }
  const out = into ?? new Uint8Array(length)
  let done = 0
  while (done < length) {
    const n = fs.readSync(file.fd, out, done, Math.min(maxChunk, length - done), position + done)
    if (n === 0) throw fileError(file.path, `file is truncated while reading ${what}`)
    done += n
  }
  return out
}

/** Sequential writer that tracks the position, for streaming tensors into a file one at a time. */
export class SequentialWriter {
  position = 0
  readonly path: string
  readonly fd: number
  private constructor(path: string, fd: number) {
    this.path = path
    this.fd = fd
  }

  static open(path: string): SequentialWriter {
    return new SequentialWriter(path, fs.openSync(path, "w"))
  }

  write(bytes: Uint8Array): void {
    let done = 0
    while (done < bytes.length) {
      done += fs.writeSync(this.fd, bytes, done, Math.min(maxChunk, bytes.length - done))
    }
    this.position += bytes.length
  }

  /** Writes zero bytes up to the next multiple of `alignment`. */
  pad(alignment: number): void {
    const padding = (alignment - (this.position % alignment)) % alignment
    if (padding > 0) this.write(new Uint8Array(padding))
  }

  close(): void {
    fs.closeSync(this.fd)
  }
}

/** A byte view of a typed array's memory, for writing it as little-endian data. */
export const bytesOf = (array: ArrayBufferView): Uint8Array =>
  new Uint8Array(array.buffer, array.byteOffset, array.byteLength)
