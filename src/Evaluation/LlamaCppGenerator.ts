/**
 * The in-process Generator for `eval run --model x.gguf [--adapter lora.gguf]`: real llama.cpp through
 * node-llama-cpp, one base model, an optional llama.cpp LoRA adapter GGUF (what `export adapter` writes), and one
 * context sequence per concurrent request.
 *
 * Prompts use the training layout (`formatPrompt` from the Dataset stage, `seed` layout by default), so the model
 * sees exactly what it was fine-tuned on. The answer is the model's own text, placeholders included (no server
 * fills them here), and generation stops at the next `Question:`/`Context:` turn.
 * The llama.cpp runtime is the project's shared one (`LlamaCpp` from Model: prebuilt binaries only), and so is
 * its thread policy: without `threads`, the count follows the model's size and the machine's free cores.
 *
 * Interruption (Ctrl-C, a timeout) stops llama.cpp after the token in flight and waits for it: the context is
 * disposed only once no generation runs on it (disposing it under a running one made node-llama-cpp throw an
 * uncaught DisposedError from its batch loop).
 */
import { Effect, Layer, Queue } from "effect"
import { LlamaCompletion } from "node-llama-cpp"
import { describeThreads } from "../Model/LlamaCpp.ts"
import { formatPrompt, layoutTokenization, type PromptLayout } from "../Dataset/PromptFormat.ts"
import { LlamaCpp } from "../Model/LlamaCpp.ts"
import { finishedText } from "../Model/TokenText.ts"
import { type GenerationRequest, GenerationError, Generator } from "./Generator.ts"
import { causeKind, describeCause } from "../Shared/Errors.ts"

export interface LlamaCppOptions {
  readonly model: string
  readonly adapter?: string | undefined
  readonly concurrency?: number | undefined
  readonly contextSize?: number | undefined
  readonly layout?: PromptLayout | undefined
  /** llama.cpp CPU threads (default: the thread policy, `chooseThreads` in Model/LlamaCpp.ts) */
  readonly threads?: number | undefined
}

export const layerLlamaCpp = (options: LlamaCppOptions): Layer.Layer<Generator, GenerationError, LlamaCpp> =>
  Layer.effect(
    Generator,
    Effect.gen(function*() {
      const source = options.adapter === undefined ? `llama:${options.model}` : `llama:${options.model} + ${options.adapter}`
      const fail = (e: unknown) => new GenerationError({ source, detail: describeCause(e), kind: causeKind(e) ?? "failure" })
      const slots = Math.max(1, options.concurrency ?? 1)
      const llamaCpp = yield* LlamaCpp
      const model = yield* llamaCpp.loadModel({ modelPath: options.model }).pipe(Effect.mapError((e) => new GenerationError({ source, detail: e.message, kind: e.kind })))
      const context = yield* llamaCpp.createContext(model, {
        contextSize: options.contextSize ?? 2048,
        sequences: slots,
        ...(options.adapter !== undefined ? { lora: { adapters: [{ filePath: options.adapter }] } } : {})
      }, options.threads).pipe(Effect.mapError((e) => fail(e.detail)))
      yield* Effect.logInfo(`llama.cpp: ${describeThreads(yield* llamaCpp.threads)}`)
      const loaded = {
        completions: Array.from({ length: slots }, () => {
          const sequence = context.getSequence()
          return { sequence, completion: new LlamaCompletion({ contextSequence: sequence }) }
        })
      }
      // a pool of sequences: a request takes one and gives it back, so at most `slots` run at once
      const pool = yield* Queue.unbounded<(typeof loaded.completions)[number]>()
      yield* Queue.offerAll(pool, loaded.completions)

      const generate = Effect.fn("Generator.generate")(function*(request: GenerationRequest) {
        const started = Date.now()
        const layout = options.layout ?? "seed"
        const promptText = formatPrompt({ question: request.question, context: request.context }, layout)
        // the trainer's tokens (PromptFormat.layoutTokenization): BOS from the tokenizer only where the layout asks
        const { special, addBos } = layoutTokenization(layout)
        const bos = model.tokens.bos
        const trained = model.tokenize(promptText, special)
        const withBos = addBos && bos !== null && trained[0] !== bos ? [bos, ...trained] : trained
        // LlamaCompletion itself puts BOS first when the model's add_bos asks for it: leave that one to it (a chat
        // text that does not begin with BOS on such a model gets one that training did not see; /infer has no such gap)
        const prompt = model.tokens.shouldPrependBosToken && withBos[0] === bos ? withBos.slice(1) : withBos
        const answer = yield* Effect.acquireUseRelease(
          Queue.take(pool),
          (slot) =>
            Effect.callback<string, ReturnType<typeof fail>>((resume) => {
              const controller = new AbortController()
              const done = (async () => {
                await slot.sequence.clearHistory()
                return await slot.completion.generateCompletion(prompt, {
                  maxTokens: request.maxTokens,
                  temperature: request.temperature,
                  seed: request.seed,
                  customStopTriggers: ["\nQuestion:", "\nContext:"],
                  signal: controller.signal,
                  stopOnAbortSignal: true
                })
              })()
              done.then((text) => resume(Effect.succeed(text)), (e) => resume(Effect.fail(fail(e))))
              // on interruption: stop after the token in flight, and finish only once llama.cpp has
              return Effect.promise(() => {
                controller.abort()
                return done.then(() => undefined, () => undefined)
              })
            }),
          (slot) => Queue.offer(pool, slot)
        )
        // the one rendering rule of both engines (llama.cpp already holds back an unfinished character)
        const text = finishedText(answer).trim()
        return { answer: text, rawAnswer: text, modelVersion: source, latencyMs: Date.now() - started }
      })
      return Generator.of({ describe: source, generate })
    })
  )
