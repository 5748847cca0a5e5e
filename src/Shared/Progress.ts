/**
 * Progress: the one place long work reports how far it got. Library code never writes to the terminal;
 * it calls `Progress` and the edge decides: the CLI provides `Progress.layerTerminal` (a bar on a TTY, plain
 * lines otherwise, always on stderr so stdout stays machine-readable), the pipeline and tests provide their own.
 */
import { Context, Effect, Layer, Ref } from "effect"

/** One report: `task` names the work ("train", "python env", "fetch smollm2"), `done`/`total` are in `unit`s. */
export interface ProgressEvent {
  readonly task: string
  readonly done?: number
  readonly total?: number
  readonly unit?: string
  readonly message?: string
}

export class Progress extends Context.Service<Progress, {
  /** A step of long work: overwrites the previous bar line on a terminal. */
  readonly update: (event: ProgressEvent) => Effect.Effect<void>
  /** A line that stays (a finished stage, a warning, a metrics line). */
  readonly line: (text: string) => Effect.Effect<void>
}>()("app/Shared/Progress") {
  /** stderr: a redrawn bar on a TTY, one plain line per update elsewhere. */
  static readonly layerTerminal = Layer.sync(Progress, () => {
    const tty = process.stderr.isTTY === true
    let barShown = false
    const clearBar = () => {
      if (barShown) process.stderr.write("\r\x1b[K")
      barShown = false
    }
    return Progress.of({
      update: (event) =>
        Effect.sync(() => {
          const text = formatProgress(event)
          if (tty) {
            process.stderr.write(`\r\x1b[K${text}`)
            barShown = true
          } else process.stderr.write(`${text}\n`)
        }),
      line: (text) =>
        Effect.sync(() => {
          clearBar()
          process.stderr.write(`${text}\n`)
        })
    })
  })

  /** Discards everything (library callers that want silence). */
  static readonly layerSilent = Layer.succeed(Progress, Progress.of({ update: () => Effect.void, line: () => Effect.void }))

  /** Records every event and line in order, for tests to assert on. */
  static readonly layerTest = (log: Ref.Ref<ReadonlyArray<ProgressEvent | string>>) =>
    Layer.succeed(
      Progress,
      Progress.of({
        update: (event) => Ref.update(log, (all) => [...all, event]),
        line: (text) => Ref.update(log, (all) => [...all, text])
      })
    )
}

/** `task [#####.....] done/total unit message`, or `task: message` without a total. */
export const formatProgress = (event: ProgressEvent): string => {
  const parts: Array<string> = [event.task]
  if (event.total !== undefined && event.total > 0 && event.done !== undefined) {
    const width = 20
    const filled = Math.max(0, Math.min(width, Math.round((event.done / event.total) * width)))
    parts.push(`[${"#".repeat(filled)}${".".repeat(width - filled)}] ${event.done}/${event.total}${event.unit === undefined ? "" : ` ${event.unit}`}`)
  } else if (event.done !== undefined) parts.push(`${event.done}${event.unit === undefined ? "" : ` ${event.unit}`}`)
  if (event.message !== undefined) parts.push(event.message)
  return parts.join(" ")
}
