/**
 * `model generate`: a prompt, or chat messages rendered with the model's chat template, to generated text over
 * either engine: llama.cpp (a GGUF, optionally with a llama.cpp LoRA adapter GGUF) or the tfjs model core (a GGUF
 * or a Hugging Face folder, optionally with a PEFT adapter folder).
 *
 * Both engines get the same prompt token ids (from the project's Tokenizer) and stop at EOS/EOT; the text is
 * rendered from the generated ids by the one rendering rule (TokenText.renderTokens). Per-token log-probabilities
 * (`logprobs`) are the model's own, log softmax of the logits at temperature 1 (before temperature, top-k or top-p
 * sampling), read by one teacher-forced pass over prompt + generated tokens on the same engine.
 */
import * as tf from "@tensorflow/tfjs-core"
import { Effect, Schema } from "effect"
import { LlamaCompletion, type Token } from "node-llama-cpp"
import { Device } from "./Device.ts"
import { generate } from "./Generation.ts"
import { LlamaCpp } from "./LlamaCpp.ts"
import { droppedWindowWarning, LlamaModel } from "./LlamaModel.ts"
import { DropoutContext, isLoraLayer, loraTransform } from "./Lora.ts"
import { loadAdapterInto, readPeftAdapter } from "./PeftAdapter.ts"
import type { ChatTurn } from "./ChatTemplate.ts"
import { Tokenizer } from "./Tokenizer.ts"
import { renderTokens } from "./TokenText.ts"
import { SeededRng } from "../Shared/Prng.ts"
import { causeKind, describeCause, kindField } from "../Shared/Errors.ts"

export const GenerateEngine = Schema.Literals(["core", "llamacpp"])
export type GenerateEngine = typeof GenerateEngine.Type

export class ModelGenerateError extends Schema.TaggedError<ModelGenerateError>()("ModelGenerateError", {
  source: Schema.String,
  detail: Schema.String,
  /** `failure`, or what the cause says (a missing model is `input`, a bad one `data`) */
  kind: kindField("failure")
}) {
  override get message() {
    return `${this.source}: ${this.detail}`
  }
}

export const ChatMessages = Schema.Array(Schema.Struct({ role: Schema.NonEmptyString, content: Schema.String }))

export interface GenerateTextOptions {
  readonly model: string
  readonly adapter?: string | undefined
  readonly engine: GenerateEngine
  /** a raw prompt (BOS as the model asks) or chat messages (the model's chat template, with the generation prompt) */
  readonly input: { readonly prompt: string } | { readonly messages: ReadonlyArray<ChatTurn> }
  readonly maxTokens: number
  /** 0: greedy */
  readonly temperature: number
  readonly seed: number
  readonly logprobs: boolean
}

export interface GeneratedToken {
  readonly id: number
  /** the token as text (control tokens included) */
  readonly text: string
  readonly logprob?: number
}

export interface GenerateTextResult {
  readonly engine: GenerateEngine
  readonly model: string
  readonly adapter: string | null
  readonly promptTokens: number
  readonly text: string
  readonly tokens: ReadonlyArray<GeneratedToken>
  readonly finishReason: "stop" | "length"
}

const logSoftmaxAt = (logits: ArrayLike<number>, offset: number, size: number, token: number) => {
  let max = -Infinity
  for (let i = 0; i < size; i++) max = Math.max(max, logits[offset + i]!)
  let sum = 0
  for (let i = 0; i < size; i++) sum += Math.exp(logits[offset + i]! - max)
  return logits[offset + token]! - max - Math.log(sum)
}

/** The tfjs core: generate, then one forward over prompt + answer for the log-probabilities. */
const coreGenerate = (options: GenerateTextOptions, prompt: ReadonlyArray<number>, stop: ReadonlyArray<number>) =>
  Effect.gen(function*() {
    yield* Device
    const fail = (e: unknown) => new ModelGenerateError({ source: options.model, detail: describeCause(e), kind: causeKind(e) ?? "failure" })
    const base = yield* Effect.acquireRelease(LlamaModel.load(options.model).pipe(Effect.mapError(fail)), (m) => Effect.sync(() => m.dispose()))
    const warning = droppedWindowWarning(base.config, prompt.length + options.maxTokens)
    if (warning !== undefined) yield* Effect.logWarning(warning)
    let model = base
    if (options.adapter !== undefined) {
      const adapter = yield* readPeftAdapter(options.adapter).pipe(Effect.mapError(fail))
      model = yield* Effect.acquireRelease(
        Effect.sync(() => base.withLinears(loraTransform(adapter.config, new SeededRng(0), new DropoutContext()))),
        (m) => Effect.sync(() => m.dispose())
      )
      yield* loadAdapterInto(adapter, [...model.linears.values()].filter(isLoraLayer), options.adapter).pipe(Effect.mapError(fail))
    }
    const [out] = yield* Effect.try({
      try: () => generate(model, [prompt], { maxNewTokens: options.maxTokens, temperature: options.temperature, seed: options.seed, stopTokenIds: stop }),
      catch: fail
    })
    const tokens = out!.tokens
    let logprobs: Array<number> | undefined
    if (options.logprobs && tokens.length > 0) {
      const all = [...prompt, ...tokens]
      const logits = tf.tidy(() => model.logits(tf.tensor2d([all], undefined, "int32")))
      const data = logits.dataSync()
      logits.dispose()
      const v = model.config.vocabSize
      logprobs = tokens.map((t, i) => logSoftmaxAt(data, (prompt.length - 1 + i) * v, v, t))
    }
    return { tokens, logprobs, finishReason: out!.finishReason === "length" ? "length" as const : "stop" as const }
  })

/** llama.cpp: LlamaCompletion generates, then controlledEvaluate gives the distribution at each answer token. */
const llamaCppGenerate = (options: GenerateTextOptions, prompt: ReadonlyArray<number>, stop: ReadonlyArray<number>) =>
  Effect.gen(function*() {
    const fail = (e: unknown) => new ModelGenerateError({ source: options.model, detail: describeCause(e), kind: causeKind(e) ?? "failure" })
    const llamaCpp = yield* LlamaCpp
    const model = yield* llamaCpp.loadModel({ modelPath: options.model }).pipe(Effect.mapError(fail))
    const contextSize = Math.min(model.trainContextSize, Math.max(64, prompt.length + options.maxTokens + 1))
    const context = yield* llamaCpp.createContext(model, {
      contextSize,
      sequences: 1,
      ...(options.adapter !== undefined ? { lora: { adapters: [{ filePath: options.adapter }] } } : {})
    }).pipe(Effect.mapError(fail))
    return yield* Effect.tryPromise({
      try: async () => {
        const sequence = context.getSequence()
        const generated: Array<number> = []
        const completion = new LlamaCompletion({ contextSequence: sequence })
        const result = await completion.generateCompletionWithMeta(prompt.map((t) => t as Token), {
          maxTokens: options.maxTokens,
          temperature: options.temperature,
          seed: options.seed,
          onToken: (ts) => generated.push(...ts.map(Number))
        })
        const tokens = generated.filter((t) => !stop.includes(t))
        let logprobs: Array<number> | undefined
        if (options.logprobs && tokens.length > 0) {
          await sequence.clearHistory()
          const all = [...prompt, ...tokens.slice(0, -1)]
          const results = await sequence.controlledEvaluate(
            all.map((t, i) => i >= prompt.length - 1 ? [t as Token, { generateNext: { probabilities: true } }] : (t as Token))
          )
          logprobs = tokens.map((t, i) => {
            const p = results[prompt.length - 1 + i]?.next?.probabilities?.get(t as Token)
            return p === undefined || p <= 0 ? -Infinity : Math.log(p)
          })
        }
        return { tokens, logprobs, finishReason: result.metadata.stopReason === "maxTokens" ? "length" as const : "stop" as const }
      },
      catch: fail
    })
  })

type EngineRun<R> = (
  options: GenerateTextOptions,
  prompt: ReadonlyArray<number>,
  stop: ReadonlyArray<number>
) => Effect.Effect<{ readonly tokens: ReadonlyArray<number>; readonly logprobs: ReadonlyArray<number> | undefined; readonly finishReason: "stop" | "length" }, ModelGenerateError, R>

/** The prompt tokens, the engine's run, and the rendering shared by both engines. */
const generateWith = <R>(engine: EngineRun<R>) => (options: GenerateTextOptions) =>
  Effect.scoped(Effect.gen(function*() {
    const fail = (e: unknown) => new ModelGenerateError({ source: options.model, detail: describeCause(e), kind: causeKind(e) ?? "failure" })
    const tok = yield* (yield* Tokenizer).load(options.model).pipe(Effect.mapError(fail))
    const chat = "messages" in options.input
    const text = "messages" in options.input ? yield* tok.applyChatTemplate(options.input.messages).pipe(Effect.mapError(fail)) : options.input.prompt
    // a rendered template spells its own BOS and control tokens; a raw prompt gets BOS as the model asks
    const prompt = tok.tokenize(text, chat ? { addBos: false, special: true } : {})
    if (prompt.length === 0) return yield* fail("the prompt is empty (no tokens)")
    const stop = [tok.eos, tok.eot].filter((t): t is number => t !== undefined)
    const out = yield* engine(options, prompt, stop)
    return {
      engine: options.engine,
      model: options.model,
      adapter: options.adapter ?? null,
      promptTokens: prompt.length,
      text: renderTokens(tok.detokenize, out.tokens),
      tokens: out.tokens.map((id, i) => ({ id, text: tok.tokenText(id), ...(out.logprobs === undefined ? {} : { logprob: out.logprobs[i]! }) })),
      finishReason: out.finishReason
    } satisfies GenerateTextResult
  }))

/** `model generate --engine core`: the tfjs model (needs Device and Tokenizer). */
export const generateCore = generateWith((o, p, s) => Effect.scoped(coreGenerate(o, p, s)))
/** `model generate --engine llamacpp`: llama.cpp (needs LlamaCpp and Tokenizer). */
export const generateLlamaCpp = generateWith((o, p, s) => Effect.scoped(llamaCppGenerate(o, p, s)))
