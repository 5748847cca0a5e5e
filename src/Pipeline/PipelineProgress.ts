/**
 * The pipeline's own Progress layer: every progress line becomes a log line, so it reaches both the terminal and
 * `RUN_DIR/pipeline.log` through the pipeline's loggers. Updates of long work (lines read, tensors written) are
 * thinned to one every two seconds per task, plus the last one.
 */
import { Effect, Layer } from "effect"
import { formatProgress, Progress } from "../Shared/Progress.ts"

export const layerPipelineLog = (everyMs = 2000): Layer.Layer<Progress> =>
  Layer.sync(Progress, () => {
    const lastShown = new Map<string, number>()
    return Progress.of({
      update: (event) =>
        Effect.suspend(() => {
          const finished = event.total !== undefined && event.done !== undefined && event.done >= event.total
          const now = Date.now()
          if (!finished && now - (lastShown.get(event.task) ?? -Infinity) < everyMs) return Effect.void
          lastShown.set(event.task, now)
          return Effect.logInfo(formatProgress(event))
        }),
      line: (text) => Effect.logInfo(text)
    })
  })
