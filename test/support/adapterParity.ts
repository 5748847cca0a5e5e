/**
 * The set-up the adapter parity tests share (test/Serving/ExportTfjsParity, test/Serving/ExportMergedHf,
 * test/Training/TorchEngineExport): our tfjs model with a PEFT adapter applied through the trainer's LoRA layers
 * (`withLinears` + `loraLinear` + `loadAdapterInto`, no export or merge code), and llama.cpp's next-token
 * distributions (exact context, optionally with a GGUF LoRA adapter) compared with ours over a few prompts.
 */
import { Effect } from "effect"
import { LlamaCpp } from "../../src/Model/LlamaCpp.ts"
import type { LlamaModel } from "../../src/Model/LlamaModel.ts"
import { DropoutContext, loraLinear, type LoraLayer } from "../../src/Model/Lora.ts"
import { loadAdapterInto, readPeftAdapter } from "../../src/Model/PeftAdapter.ts"
import { SeededRng } from "../../src/Shared/Prng.ts"
import { exactContext, llamaCppDistributions, ourDistributions, ParityTally } from "../Model/ParityHarness.ts"

export interface PeftApplied {
  /** `ours` with every adapted linear wrapped in a LoRA layer holding the PEFT weights (dispose it as well) */
  readonly adapted: LlamaModel
  /** LoRA layers made, and modules the adapter has: equal when every module found its linear */
  readonly layers: number
  readonly modules: number
}

/** Applies the PEFT adapter folder `peft` to `ours` through the trainer's LoRA layers (dropout 0). */
export const applyPeftAdapter = (ours: LlamaModel, peft: string) =>
  Effect.gen(function*() {
    const adapter = yield* readPeftAdapter(peft)
    const loras: Array<LoraLayer> = []
    // the seeded initial A is overwritten by loadAdapterInto; the seed only keeps the run reproducible
    const rng = new SeededRng(1)
    const dropout = new DropoutContext()
    const adapted = ours.withLinears((name, baseLayer) => {
      if (!adapter.modules.has(name)) return baseLayer
      const lora = loraLinear(name, baseLayer, { r: adapter.config.rankOf(name), scaling: adapter.config.scaleOf(name), dropout: 0 }, rng, dropout)
      loras.push(lora)
      return lora
    })
    yield* loadAdapterInto(adapter, loras, peft)
    return { adapted, layers: loras.length, modules: adapter.modules.size } satisfies PeftApplied
  })

export interface LlamaCppComparison {
  /** the GGUF llama.cpp runs */
  readonly modelPath: string
  /** a llama.cpp LoRA adapter GGUF applied on top of it */
  readonly adapterFile?: string
  readonly prompts: ReadonlyArray<string>
  readonly vocabSize: number
  /** our model, as llama.cpp should compute it */
  readonly ours: LlamaModel
  /** our model without the adapter: the tally's `adapterEffect` is how far `ours` is from it */
  readonly plain?: LlamaModel
}

/**
 * llama.cpp's distributions after each token of each prompt (BOS first, llama.cpp's tokenizer) against ours. The
 * model stays loaded for the caller's scope; the context is freed here.
 */
export const tallyAgainstLlamaCpp = (c: LlamaCppComparison) =>
  Effect.gen(function*() {
    const llamaCpp = yield* LlamaCpp
    const theirs = yield* llamaCpp.loadModel({ modelPath: c.modelPath })
    const lora = c.adapterFile === undefined ? {} : { lora: { adapters: [{ filePath: c.adapterFile }] } }
    return yield* Effect.acquireUseRelease(
      Effect.promise(() => exactContext(theirs, 128, lora)),
      (context) =>
        Effect.gen(function*() {
          const sequence = context.getSequence()
          const tally = new ParityTally()
          for (const text of c.prompts) {
            const tokens = [Number(theirs.tokens.bos!), ...theirs.tokenize(text, false).map(Number)]
            const expected = yield* Effect.promise(() => llamaCppDistributions(sequence, tokens, c.vocabSize))
            tally.add(expected, ourDistributions(c.ours, tokens), `"${text}"`, c.plain === undefined ? undefined : ourDistributions(c.plain, tokens))
          }
          return tally
        }),
      (context) => Effect.promise(() => context.dispose())
    )
  })
