/**
 * The in-process Generator for `eval run --model x.gguf [--adapter lora.gguf]`: real llama.cpp through
 * node-llama-cpp, one base model, an optional llama.cpp LoRA adapter GGUF (what `export adapter` writes), and one
 * context sequence per concurrent request.
 *
 * Prompts use the training layout (`formatPrompt` from the Dataset stage, `seed` layout by default), so the model
 * sees exactly what it was fine-tuned on. The answer is the model's own text, placeholders included (no server
 * fills them here), and generation stops at the next `Question:`/`Context:` turn.
 * The llama.cpp runtime is the project's shared one (`LlamaCpp` from the Training stage: prebuilt binaries only).
 */
import { Effect, Layer, Queue } from "effect"
import { LlamaCompletion } from "node-llama-cpp"
import { formatPrompt, type PromptLayout } from "../Dataset/PromptFormat.ts"
import { LlamaCpp } from "../Model/LlamaCpp.ts"
import { type GenerationRequest, GenerationError, Generator } from "./Generator.ts"

export interface LlamaCppOptions {
  readonly model: string
  readonly adapter?: string | undefined
  readonly concurrency?: number | undefined
  readonly contextSize?: number | undefined
  readonly layout?: PromptLayout | undefined
  /** CPU threads per evaluation (default: node-llama-cpp's choice) */
  readonly threads?: number | undefined
}

export const layerLlamaCpp = (options: LlamaCppOptions): Layer.Layer<Generator, GenerationError, LlamaCpp> =>
  Layer.effect(
    Generator,
    Effect.gen(function*() {
      const source = options.adapter === undefined ? `llama:${options.model}` : `llama:${options.model} + ${options.adapter}`
      const fail = (e: unknown) => new GenerationError({ source, detail: e instanceof Error ? e.message : String(e) })
      const slots = Math.max(1, options.concurrency ?? 1)
      const llamaCpp = yield* LlamaCpp
      const model = yield* llamaCpp.loadModel({ modelPath: options.model }).pipe(Effect.mapError((e) => fail(e.message)))
      const context = yield* Effect.acquireRelease(
        Effect.tryPromise({
          try: () =>
            model.createContext({
              contextSize: options.contextSize ?? 2048,
              // on a shared or small machine llama.cpp's spinning threads can slow it 100x: let the user cap them
              ...(options.threads !== undefined ? { threads: options.threads } : {}),
              sequences: slots,
              ...(options.adapter !== undefined ? { lora: { adapters: [{ filePath: options.adapter }] } } : {})
            }),
          catch: fail
        }),
        (c) => Effect.promise(() => c.dispose())
      )
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
        const prompt = formatPrompt({ question: request.question, context: request.context }, options.layout ?? "seed")
        const answer = yield* Effect.acquireUseRelease(
          Queue.take(pool),
          (slot) =>
            Effect.tryPromise({
              try: async (signal) => {
                await slot.sequence.clearHistory()
                return await slot.completion.generateCompletion(prompt, {
                  maxTokens: request.maxTokens,
                  temperature: request.temperature,
                  seed: request.seed,
                  customStopTriggers: ["\nQuestion:", "\nContext:"],
                  signal,
                  stopOnAbortSignal: true
                })
              },
              catch: fail
            }),
          (slot) => Queue.offer(pool, slot)
        )
        const text = answer.trim()
        return { answer: text, rawAnswer: text, modelVersion: source, latencyMs: Date.now() - started }
      })
      return Generator.of({ describe: source, generate })
    })
  )
