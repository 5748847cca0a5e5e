/** The pipeline's last stage: `report.md` in the run folder, from every stage's result (PipelineReport.ts). */
import { Effect, FileSystem, Schema } from "effect"
import type { Stage } from "../Shared/Stage.ts"
import { renderMarkdownReport, type ReportInput } from "./PipelineReport.ts"

export interface ReportStageInput {
  readonly report: ReportInput
  readonly file: string
}

export const ReportResult = Schema.Struct({ file: Schema.String })
export type ReportResult = typeof ReportResult.Type

const writeReport = Effect.fn("ReportStage.run")(function*({ report, file }: ReportStageInput) {
  const fs = yield* FileSystem.FileSystem
  yield* fs.writeFileString(file, renderMarkdownReport(report))
  return { file } satisfies ReportResult
})

export const ReportStage: Stage<
  ReportStageInput,
  ReportResult,
  Effect.Error<ReturnType<typeof writeReport>>,
  Effect.Services<ReturnType<typeof writeReport>>
> = {
  name: "report",
  reads: ["dataset", "base", "pretrain", "train", "export", "evaluate", "serve"],
  settings: ({ report }) => ({ artifacts: report.manifest.artifacts }),
  inputFiles: () => ({}),
  workDirs: () => [],
  outputFiles: (r) => [r.file],
  result: ReportResult,
  run: (input) => writeReport(input)
}
