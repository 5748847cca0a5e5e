/**
 * The pipeline's export stage: the trained PEFT adapter as a llama.cpp LoRA GGUF (`exportAdapter`), optionally the
 * merged GGUF (`exportMerged`), and an HF folder base converted to GGUF (`convertHfBase`) so llama.cpp can evaluate
 * and serve it with the adapter.
 */
import { Effect, FileSystem, Path, Schema } from "effect"
import { Progress } from "../Shared/Progress.ts"
import type { Stage } from "../Shared/Stage.ts"
import { convertHfBase, exportAdapter, exportMerged, type MergedType } from "./Export.ts"

export interface ExportStageInput {
  readonly export: { readonly merged: boolean; readonly mergedType: MergedType }
  /** the PEFT adapter folder the training stage wrote */
  readonly adapter: string
  /** the model it was trained on: a GGUF or an HF folder */
  readonly base: string
  readonly dir: string
}

export const ExportResult = Schema.Struct({
  adapterGguf: Schema.String,
  adapterBytes: Schema.Int,
  tensors: Schema.Int,
  merged: Schema.optionalKey(Schema.String),
  /** an HF folder base converted to GGUF, so llama.cpp can evaluate and serve it with the adapter */
  baseGguf: Schema.optionalKey(Schema.String)
})
export type ExportResult = typeof ExportResult.Type

const runExport = Effect.fn("ExportStage.run")(function*(input: ExportStageInput) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const progress = yield* Progress
  // writers call back per tensor, outside Effect: run the (synchronous) Progress update with this fiber's
  // context, so it reaches the loggers the caller provided
  const context = yield* Effect.context<never>()
  const onTensor = (task: string) => (i: number, n: number) => {
    if (i === n - 1 || i % 32 === 0) Effect.runSyncWith(context)(progress.update({ task, done: i + 1, total: n, unit: "tensors" }))
  }
  yield* fs.makeDirectory(input.dir, { recursive: true })
  const adapterGguf = path.join(input.dir, "adapter.gguf")
  const report = yield* exportAdapter({ adapter: input.adapter, base: input.base, out: adapterGguf, name: "finetune-finance-lora" })
  let merged: string | undefined
  if (input.export.merged) {
    merged = path.join(input.dir, `merged-${input.export.mergedType}.gguf`)
    yield* exportMerged({ base: input.base, adapter: input.adapter, out: merged, type: input.export.mergedType, onTensor: onTensor("[export] merged") })
  }
  let baseGguf: string | undefined
  if ((yield* fs.stat(input.base)).type === "Directory") {
    baseGguf = path.join(input.dir, `base-${input.export.mergedType}.gguf`)
    yield* convertHfBase({ base: input.base, out: baseGguf, type: input.export.mergedType, onTensor: onTensor("[export] base") })
  }
  return {
    adapterGguf,
    adapterBytes: report.bytes,
    tensors: report.tensors,
    ...(merged === undefined ? {} : { merged }),
    ...(baseGguf === undefined ? {} : { baseGguf })
  } satisfies ExportResult
})

export const ExportStage: Stage<ExportStageInput, ExportResult, Effect.Error<ReturnType<typeof runExport>>, Effect.Services<ReturnType<typeof runExport>>> = {
  name: "export",
  reads: ["train"],
  settings: (input) => ({ export: input.export }),
  inputFiles: () => ({}),
  workDirs: ({ dir }) => [dir],
  outputFiles: (r) => [r.adapterGguf, ...(r.merged === undefined ? [] : [r.merged]), ...(r.baseGguf === undefined ? [] : [r.baseGguf])],
  result: ExportResult,
  run: (input) => runExport(input)
}
