/**
 * The file-level commands besides the ingest: writing a synthetic set, and normalizing a file with its
 * reversible placeholder maps. Both stream: one write per batch, flat memory.
 */
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Path from "effect/Path"
import * as Result from "effect/Result"
import * as Stream from "effect/Stream"
import { DatasetOutputError } from "./Errors.ts"
import { decodeInput } from "./Input.ts"
import { readLineBatches } from "./Lines.ts"
import { normalizeRecord } from "./Normalize.ts"
import { encodeRecord } from "./RecordEncode.ts"
import { synthesize } from "./Synth.ts"

export interface Progress {
  readonly done: number
}
type OnProgress = ((p: Progress) => Effect.Effect<void>) | undefined

/** Opens `output` for writing ("-" is stdout) and returns a writer of whole text batches. */
const openOutput = Effect.fnUntraced(function*(output: string) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const fail = (e: { readonly message: string }) => new DatasetOutputError({ file: output, detail: e.message })
  if (output === "-") {
    return (text: string) =>
      Effect.callback<void, DatasetOutputError>((resume) => {
        process.stdout.write(text, (e) => resume(e ? Effect.fail(fail(e)) : Effect.void))
      })
  }
  yield* fs.makeDirectory(path.dirname(output), { recursive: true }).pipe(Effect.mapError(fail))
  const file = yield* fs.open(output, { flag: "w" }).pipe(Effect.mapError(fail))
  return (text: string) => (text === "" ? Effect.void : file.writeAll(Buffer.from(text)).pipe(Effect.mapError(fail)))
})

/** Writes `count` synthetic records for `seed` to `output` (JSONL; "-" is stdout), in batches. */
export const writeSynthetic = Effect.fn("Dataset.writeSynthetic")(function*(options: {
  readonly count: number
  readonly seed: number
  readonly output: string
  readonly onProgress?: OnProgress
}) {
  const write = yield* openOutput(options.output)
  const records = synthesize(options.seed)
  const batch = 2000
  for (let done = 0; done < options.count;) {
    const n = Math.min(batch, options.count - done)
    let text = ""
    for (let i = 0; i < n; i++) text += encodeRecord(records.next().value!) + "\n"
    yield* write(text)
    done += n
    if (options.onProgress) yield* options.onProgress({ done })
  }
}, Effect.scoped)

/**
 * Normalizes every record of `input` into `output`, adding `placeholder_map` (field -> replacements) so
 * the step can be undone with `rehydrateRecord`. Lines that do not decode are reported, not written.
 */
export const normalizeFile = Effect.fn("Dataset.normalizeFile")(function*(options: {
  readonly input: string
  readonly output: string
  readonly withMap: boolean
  readonly onProgress?: OnProgress
  readonly onError?: (line: number, field: string, reason: string) => Effect.Effect<void>
}) {
  const write = yield* openOutput(options.output)
  let done = 0
  let failed = 0
  let replaced = 0
  yield* readLineBatches(options.input).pipe(
    Stream.runForEach((lines) => Effect.gen(function*() {
      let text = ""
      const errors: Array<[number, string, string]> = []
      for (const raw of lines) {
        if (raw.problem !== undefined) {
          errors.push([raw.lineNo, "<line>", raw.problem === "too_long" ? "line is over the size limit" : "line is not valid UTF-8"])
          continue
        }
        if (/^\s*$/.test(raw.text)) continue
        let json: unknown
        try {
          json = JSON.parse(raw.text)
        } catch (e) {
          errors.push([raw.lineNo, "<root>", `invalid JSON: ${(e as Error).message}`])
          continue
        }
        const d = decodeInput(json, true)
        if (Result.isFailure(d)) {
          errors.push([raw.lineNo, d.failure.field, d.failure.reason])
          continue
        }
        const n = normalizeRecord(d.success.record)
        replaced += n.replaced
        text += encodeRecord(n.record, options.withMap ? { ...d.success.extra, placeholder_map: n.map } : d.success.extra) + "\n"
        done++
      }
      failed += errors.length
      yield* write(text)
      if (options.onError) for (const [line, field, reason] of errors) yield* options.onError(line, field, reason)
      if (options.onProgress) yield* options.onProgress({ done })
    }))
  )
  return { records: done, failed, replaced }
}, Effect.scoped)
