/**
 * The pipeline's serve stage: the real server (`startServer`) on a free loopback port with the exported adapter, a
 * few held-out questions through `POST /infer` (ApiClient.serveCheck), then shutdown. The answers are kept for the report.
 */
import { Effect, FileSystem, Path, Schema } from "effect"
import type { PromptLayout } from "../Dataset/PromptFormat.ts"
import type { Stage } from "../Shared/Stage.ts"
import { readRecordsFile } from "../Training/Trainer.ts"
import { serveCheck } from "../Api/ApiClient.ts"
import * as Server from "./Server.ts"

export interface ServeStageInput {
  readonly serve: { readonly questions: number; readonly maxLength: number }
  /** the held-out split the questions come from */
  readonly split: string
  /** llama.cpp's base GGUF and the adapter GGUF over it */
  readonly base: string
  readonly adapter: string
  /** the layout training rendered its examples in, which the evaluate stage prompts with too */
  readonly layout: PromptLayout
  /** llama.cpp threads; undefined: the thread policy */
  readonly threads: number | undefined
  readonly dir: string
}

export const ServeAnswer = Schema.Struct({
  question: Schema.String,
  answer: Schema.String,
  confidence: Schema.Number,
  latencyMs: Schema.Number,
  modelVersion: Schema.String
})
export type ServeAnswer = typeof ServeAnswer.Type

export const ServeResult = Schema.Struct({
  ran: Schema.Boolean,
  reason: Schema.optionalKey(Schema.String),
  url: Schema.optionalKey(Schema.String),
  answers: Schema.optionalKey(Schema.Array(ServeAnswer))
})
export type ServeResult = typeof ServeResult.Type

const runServe = Effect.fn("ServeStage.run")(function*(input: ServeStageInput) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  if (input.serve.questions === 0) return { ran: false, reason: "serve.questions is 0" } satisfies ServeResult
  const records = (yield* readRecordsFile(input.split)).slice(0, input.serve.questions)
  const server = yield* Server.startServer({
    port: 0,
    modelVersion: "finetune-finance-lora",
    // /infer in the training layout, as the evaluate stage asks (the adapter records it too; this makes it certain)
    engine: { base: input.base, adapters: [{ name: "tuned", path: input.adapter }], parallel: 1, threads: input.threads, gpu: "off", layout: input.layout }
  })
  yield* Effect.logInfo(`[serve] listening on ${server.url}; asking ${records.length} held-out questions`)
  // through the client derived from the server's contract (Api/ApiClient.ts), as the app would ask
  const answers: ReadonlyArray<ServeAnswer> = yield* serveCheck(server.url, records, {
    maxLength: input.serve.maxLength,
    temperature: 0,
    onAnswer: (answer, i, n) => Effect.logInfo(`[serve] ${i + 1}/${n} answered in ${answer.latencyMs} ms`)
  })
  yield* fs.makeDirectory(input.dir, { recursive: true })
  yield* fs.writeFileString(path.join(input.dir, "answers.json"), JSON.stringify({ url: server.url, answers }, null, 2) + "\n")
  return { ran: true, url: server.url, answers } satisfies ServeResult
}, Effect.scoped)

export const ServeStage: Stage<ServeStageInput, ServeResult, Effect.Error<ReturnType<typeof runServe>>, Effect.Services<ReturnType<typeof runServe>>> = {
  name: "serve",
  reads: ["export", "dataset"],
  settings: ({ serve, layout }) => ({ serve, layout }),
  inputFiles: () => ({}),
  workDirs: ({ dir }) => [dir],
  // a run that asked nothing leaves no answers.json
  outputFiles: (r, { dir }) => (r.ran ? [`${dir}/answers.json`] : []),
  result: ServeResult,
  run: (input) => runServe(input)
}
