/**
 * The in-process Generator over the project's own model core: the Training stage's tfjs `LlamaModel` (a GGUF file
 * or a Hugging Face folder), its tokenizer, its KV-cached `generate`, and optionally a PEFT LoRA adapter folder
 * (what `train` writes as its final adapter) loaded into LoRA layers over the frozen base: the same code path the
 * trainer's eval-every-N-steps generation uses, so numbers here match what training reported.
 *
 * Prompts use the training layout (`formatPrompt`, `seed` by default). Generation is greedy at temperature 0 and
 * seeded otherwise; it runs one request at a time (tfjs kernels are synchronous), whatever the evaluator's
 * concurrency. Every tensor is released with the layer.
 */
import { Effect, Layer } from "effect"
import { formatPrompt, layoutTokenization, type PromptLayout } from "../Dataset/PromptFormat.ts"
import { SeededRng } from "../Shared/Prng.ts"
import { Device } from "../Model/Device.ts"
import { generate } from "../Model/Generation.ts"
import { droppedWindowWarning, LlamaModel } from "../Model/LlamaModel.ts"
import { DropoutContext, isLoraLayer, loraTransform } from "../Model/Lora.ts"
import { loadAdapterInto, readPeftAdapter } from "../Model/PeftAdapter.ts"
import { Tokenizer } from "../Model/Tokenizer.ts"
import { finishedText, renderTokens } from "../Model/TokenText.ts"
import { type GenerationRequest, GenerationError, Generator } from "./Generator.ts"
import { causeKind, describeCause } from "../Shared/Errors.ts"

export interface ModelCoreOptions {
  /** base model: GGUF file or Hugging Face folder */
  readonly model: string
  /** PEFT adapter folder (adapter_config.json + adapter_model.safetensors) */
  readonly adapter?: string | undefined
  readonly layout?: PromptLayout | undefined
}

export const layerModelCore = (options: ModelCoreOptions) =>
  Layer.effect(
    Generator,
    Effect.gen(function*() {
      yield* Device // the tfjs backend is chosen and initialised by the Device layer
      const source = options.adapter === undefined ? `core:${options.model}` : `core:${options.model} + ${options.adapter}`
      const fail = (e: unknown) => new GenerationError({ source, detail: describeCause(e), kind: causeKind(e) ?? "failure" })
      const layout = options.layout ?? "seed"
      const tok = yield* (yield* Tokenizer).load(options.model).pipe(Effect.mapError(fail))
      if (tok.eos === undefined) return yield* fail(`${options.model}: the model has no EOS token`)
      const eos = tok.eos

      const base = yield* Effect.acquireRelease(LlamaModel.load(options.model).pipe(Effect.mapError(fail)), (m) => Effect.sync(() => m.dispose()))
      const windowWarning = droppedWindowWarning(base.config, base.config.maxPositionEmbeddings)
      if (windowWarning !== undefined) yield* Effect.logWarning(`${options.model}: ${windowWarning}`)
      let model = base
      if (options.adapter !== undefined) {
        const adapter = yield* readPeftAdapter(options.adapter).pipe(Effect.mapError(fail))
        // each module's rank and scale from the adapter's own config (patterns and rsLoRA as PEFT applies them); the
        // dropout context stays off, and the random init is overwritten by the adapter's weights
        const lora = loraTransform(adapter.config, new SeededRng(0), new DropoutContext())
        model = yield* Effect.acquireRelease(
          Effect.sync(() => base.withLinears((name, layer) => lora(name, layer))),
          (m) => Effect.sync(() => m.dispose()) // the LoRA layers it created; the base is released on its own
        )
        const layers = [...model.linears.values()].filter(isLoraLayer)
        if (layers.length === 0) return yield* fail(`${options.adapter}: its target_modules match no module of the model`)
        yield* loadAdapterInto(adapter, layers, options.adapter).pipe(Effect.mapError(fail))
      }
      const stopTokenIds = tok.eot === undefined ? [eos] : [eos, tok.eot]
      const { special, addBos } = layoutTokenization(layout)

      const run = Effect.fn("Generator.generate")(function*(request: GenerationRequest) {
        const started = Date.now()
        const text = formatPrompt({ question: request.question, context: request.context }, layout)
        const prompt = [...(addBos && tok.bos !== undefined ? [tok.bos] : []), ...tok.tokenize(text, { addBos: false, special })]
        const [out] = yield* Effect.try({
          try: () =>
            generate(model, [prompt], {
              maxNewTokens: request.maxTokens,
              temperature: request.temperature,
              seed: request.seed,
              stopTokenIds,
              padTokenId: eos,
              stopStrings: ["\nQuestion:", "\nContext:"],
              detokenize: (ids) => tok.detokenize(ids)
            }),
          catch: fail
        })
        // rendered as llama.cpp renders it (an unfinished UTF-8 character at the end is dropped)
        const answer = (out?.text === undefined ? renderTokens(tok.detokenize, out?.tokens ?? []) : finishedText(out.text)).trim()
        return { answer, rawAnswer: answer, modelVersion: source, latencyMs: Date.now() - started }
      })
      return Generator.of({ describe: source, generate: run })
    })
  )
