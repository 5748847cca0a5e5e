/**
 * The input side shared by every dataset command: a file, a `.gz` file or stdin ("-") as a Stream of
 * numbered line batches (one batch per pull of byte chunks), with the trailing line flushed at the end.
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import type { DatasetInputError } from "./Errors.ts"
import { inputBytes } from "./DatasetPipeline.ts"
import { LineSplitter, type RawLine } from "./LineSplitter.ts"

export const readLineBatches = (
  input: string,
  maxLineBytes = 1024 * 1024
): Stream.Stream<ReadonlyArray<RawLine>, DatasetInputError> =>
  Stream.suspend(() => {
    const splitter = new LineSplitter(maxLineBytes)
    return inputBytes(input).pipe(
      Stream.mapArray((chunks) => {
        const lines: Array<RawLine> = []
        for (const chunk of chunks) splitter.push(chunk, lines)
        return [lines]
      }),
      Stream.concat(Stream.fromEffect(Effect.sync(() => {
        const tail: Array<RawLine> = []
        splitter.end(tail)
        return tail
      }))),
      Stream.filter((lines) => lines.length > 0)
    )
  })
