/**
 * Just enough of the ZIP format (PKWARE APPNOTE 6.3) to pull one member out of a wheel: the end-of-central-directory
 * record, the central directory entries, the member's local header, then its data stored or deflated (node:zlib's
 * raw inflate). Zip64 archives (members or archives over 4 GiB) are refused with a clear message; wheels of the
 * size we fetch never need it. The member is streamed: nothing holds the whole file in memory.
 */
import { Effect } from "effect"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import { pipeline } from "node:stream/promises"
import { Readable, Transform } from "node:stream"
import * as zlib from "node:zlib"
import { closeFile, openForRead, readAt } from "./BinaryFile.ts"
import { fileError, type ModelFileError, toFileError } from "./ModelFileError.ts"

export interface ZipMember {
  readonly name: string
  /** 0 stored, 8 deflated */
  readonly method: number
  readonly crc32: number
  readonly compressedSize: number
  readonly size: number
  readonly localHeaderOffset: number
}

const eocdSignature = 0x06054b50
const centralSignature = 0x02014b50
const localSignature = 0x04034b50

/** The central directory of a ZIP file. */
export const readZipDirectory = (path: string): Effect.Effect<ReadonlyArray<ZipMember>, ModelFileError> =>
  Effect.try({
    try: () => {
      const file = openForRead(path)
      try {
        // the EOCD record is 22 bytes plus a comment of at most 65535 bytes, at the very end
        const tailLength = Math.min(file.size, 22 + 65535)
        const tail = readAt(file, file.size - tailLength, tailLength, "end of central directory")
        const view = new DataView(tail.buffer, tail.byteOffset, tail.byteLength)
        let at = -1
        for (let i = tail.length - 22; i >= 0; i--) {
          if (view.getUint32(i, true) === eocdSignature) {
            at = i
            break
          }
        }
        if (at < 0) throw fileError(path, "not a ZIP archive (no end-of-central-directory record)")
        const count = view.getUint16(at + 10, true)
        const dirSize = view.getUint32(at + 12, true)
        const dirOffset = view.getUint32(at + 16, true)
        if (count === 0xffff || dirOffset === 0xffffffff) throw fileError(path, "Zip64 archives are not supported")
        if (dirOffset + dirSize > file.size) throw fileError(path, "ZIP central directory lies outside the file (truncated download?)")
        const dir = readAt(file, dirOffset, dirSize, "central directory")
        const d = new DataView(dir.buffer, dir.byteOffset, dir.byteLength)
        const members: Array<ZipMember> = []
        const decoder = new TextDecoder("utf-8")
        for (let p = 0, i = 0; i < count; i++) {
          if (p + 46 > dir.length || d.getUint32(p, true) !== centralSignature) throw fileError(path, `ZIP central directory entry #${i} is corrupt`)
          const nameLength = d.getUint16(p + 28, true)
          const extraLength = d.getUint16(p + 30, true)
          const commentLength = d.getUint16(p + 32, true)
          const member: ZipMember = {
            name: decoder.decode(dir.subarray(p + 46, p + 46 + nameLength)),
            method: d.getUint16(p + 10, true),
            crc32: d.getUint32(p + 16, true),
            compressedSize: d.getUint32(p + 20, true),
            size: d.getUint32(p + 24, true),
            localHeaderOffset: d.getUint32(p + 42, true)
          }
          if (member.size === 0xffffffff || member.compressedSize === 0xffffffff || member.localHeaderOffset === 0xffffffff) {
            throw fileError(path, "Zip64 members are not supported", member.name)
          }
          members.push(member)
          p += 46 + nameLength + extraLength + commentLength
        }
        return members
      } finally {
        closeFile(file)
      }
    },
    catch: toFileError(path)
  })

export interface ExtractedMember {
  readonly sha256: string
  readonly bytes: number
}

/**
 * Streams `member` of the archive at `path` into `target` (created or replaced), hashing it on the way; checks the
 * size and CRC-32 the archive records. `onBytes` sees the running count of bytes written.
 */
export const extractZipMember = (
  path: string,
  member: ZipMember,
  target: string,
  onBytes: (written: number) => void = () => {}
): Effect.Effect<ExtractedMember, ModelFileError> =>
  Effect.tryPromise({
    try: async (signal) => {
      if (member.method !== 0 && member.method !== 8) {
        throw fileError(path, `compression method ${member.method} is not supported (stored or deflate only)`, member.name)
      }
      const file = openForRead(path)
      let dataStart: number
      try {
        const local = readAt(file, member.localHeaderOffset, 30, `local header of ${member.name}`)
        const v = new DataView(local.buffer, local.byteOffset, 30)
        if (v.getUint32(0, true) !== localSignature) throw fileError(path, "ZIP local header is corrupt", member.name)
        dataStart = member.localHeaderOffset + 30 + v.getUint16(26, true) + v.getUint16(28, true)
      } finally {
        closeFile(file)
      }
      if (dataStart + member.compressedSize > fs.statSync(path).size) throw fileError(path, "ZIP member lies outside the file (truncated download?)", member.name)
      const hash = createHash("sha256")
      let written = 0
      let crc = 0
      const tap = new Transform({
        transform(chunk: Buffer, _encoding, done) {
          hash.update(chunk)
          crc = zlib.crc32(chunk, crc)
          written += chunk.length
          onBytes(written)
          done(null, chunk)
        }
      })
      const source = member.compressedSize === 0
        ? Readable.from([])
        : fs.createReadStream(path, { start: dataStart, end: dataStart + member.compressedSize - 1, highWaterMark: 1 << 20 })
      const stages = member.method === 8 ? [source, zlib.createInflateRaw({ chunkSize: 1 << 20 }), tap] : [source, tap]
      await pipeline([...stages, fs.createWriteStream(target)], { signal })
      if (written !== member.size) throw fileError(path, `extracted ${written} bytes, the archive says ${member.size}`, member.name)
      if ((crc >>> 0) !== member.crc32) throw fileError(path, "CRC-32 of the extracted data does not match the archive's (corrupt download?)", member.name)
      return { sha256: hash.digest("hex"), bytes: written }
    },
    catch: toFileError(path)
  })
