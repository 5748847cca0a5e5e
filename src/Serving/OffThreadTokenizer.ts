/**
 * Tokenization of long prompts off the event loop (issue 21: eight 1 MB questions, tokenized on the main thread,
 * held `/health` for 4.6 s). A worker thread (`TokenizerThread.ts`) loads the served GGUF's vocabulary only and
 * tokenizes there; short texts, which take microseconds, stay on the calling thread to spare the round trip.
 * llama.cpp's tokenizer is deterministic, so both give the same tokens.
 */
import { Deferred, Effect, Schema } from "effect"
import { Worker } from "node:worker_threads"
import type { ErrorKind } from "../Shared/Errors.ts"

export class TokenizeFailed extends Schema.TaggedError<TokenizeFailed>()("TokenizeFailed", {
  detail: Schema.String
}) {
  get kind(): ErrorKind {
    return "failure"
  }
  override get message() {
    return `tokenizer thread: ${this.detail}`
  }
}

export interface OffThreadTokenizer {
  /** the tokens of `text`, from the worker when it is long, else from `inline` */
  readonly tokenize: (text: string, special: boolean) => Effect.Effect<ReadonlyArray<number>, TokenizeFailed>
}

/** Texts shorter than this (UTF-16 units) are tokenized inline: well under a millisecond (~2 ms per 8 KB measured). */
export const inlineBelow = 4096

// the compiled file next to this one (dist/), or the TypeScript source when run from src/ (tests)
const entry = new URL(import.meta.url.endsWith(".ts") ? "./TokenizerThread.ts" : "./TokenizerThread.js", import.meta.url)

type Reply =
  | { readonly ready: true }
  | { readonly failed: string }
  | { readonly id: number; readonly tokens: Uint32Array }
  | { readonly id: number; readonly error: string }

/**
 * Starts the worker for `modelPath` in the current scope (closing it ends the thread) and waits until its
 * vocabulary is loaded. `inline` tokenizes short texts on the calling thread (the served model's own tokenizer).
 */
export const start = Effect.fn("OffThreadTokenizer.start")(function*(
  modelPath: string,
  inline: (text: string, special: boolean) => ReadonlyArray<number>
) {
  const pending = new Map<number, (reply: Reply) => void>()
  let nextId = 0
  let broken: string | undefined
  const ready = yield* Deferred.make<void, TokenizeFailed>()
  const worker = yield* Effect.acquireRelease(
    Effect.sync(() => new Worker(entry, { workerData: { modelPath } })),
    (w) => Effect.promise(() => w.terminate())
  )
  const fail = (detail: string) => {
    broken ??= detail
    Deferred.doneUnsafe(ready, Effect.fail(new TokenizeFailed({ detail })))
    for (const resolve of pending.values()) resolve({ id: -1, error: detail })
    pending.clear()
  }
  worker.on("message", (reply: Reply) => {
    if ("ready" in reply) Deferred.doneUnsafe(ready, Effect.void)
    else if ("failed" in reply) fail(`could not load the vocabulary of ${modelPath}: ${reply.failed}`)
    else {
      const resolve = pending.get(reply.id)
      pending.delete(reply.id)
      resolve?.(reply)
    }
  })
  worker.on("error", (e) => fail(e.message))
  worker.on("exit", (code) => fail(`the thread exited (code ${code})`))
  // an idle tokenizer thread does not keep the process alive
  worker.unref()
  yield* Deferred.await(ready)

  const viaWorker = (text: string, special: boolean) =>
    Effect.callback<ReadonlyArray<number>, TokenizeFailed>((resume) => {
      if (broken !== undefined) return resume(Effect.fail(new TokenizeFailed({ detail: broken })))
      const id = nextId++
      pending.set(id, (reply) =>
        resume("tokens" in reply ? Effect.succeed(Array.from(reply.tokens)) : Effect.fail(new TokenizeFailed({ detail: "error" in reply ? reply.error : "no reply" }))))
      worker.postMessage({ id, text, special })
      // an interrupted request stops waiting; the thread's answer, when it comes, is dropped
      return Effect.sync(() => pending.delete(id))
    })

  return {
    tokenize: (text: string, special: boolean) => text.length < inlineBelow ? Effect.sync(() => inline(text, special)) : viaWorker(text, special)
  } satisfies OffThreadTokenizer
})

/** Everything on the calling thread (when no worker can be started). */
export const inlineOnly = (inline: (text: string, special: boolean) => ReadonlyArray<number>): OffThreadTokenizer => ({
  tokenize: (text, special) => Effect.sync(() => inline(text, special))
})

