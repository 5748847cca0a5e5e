/**
 * Text generation with the tfjs model and its KV cache: prompts are left-padded into one batch, prefilled once, then
 * extended one token per step. Stops per row at a stop token (EOS/EOT), a stop string, or `maxNewTokens`.
 */
import * as tf from "@tensorflow/tfjs-core"
import { disposeKvCache, type KvCache, type LlamaModel } from "./LlamaModel.ts"
import { sampleToken, type SamplingOptions, seededRandom } from "./Sampling.ts"

export interface GenerateOptions extends SamplingOptions {
  readonly maxNewTokens: number
  /** seed of the sampling PRNG (default 0); the same seed, prompts and model give the same tokens */
  readonly seed?: number
  /** EOS / EOT ids: generation of a row ends when it picks one (it is not included in `tokens`) */
  readonly stopTokenIds?: ReadonlyArray<number>
  /** generation of a row ends once its text contains one of these (needs `detokenize`) */
  readonly stopStrings?: ReadonlyArray<string>
  readonly detokenize?: (ids: ReadonlyArray<number>) => string
  /** id put in the left padding (masked out; any valid id) */
  readonly padTokenId?: number
  /** called after each step with the row and its new token (progress, streaming) */
  readonly onToken?: (row: number, token: number) => void
}

export type FinishReason = "stop-token" | "stop-string" | "length"

export interface Generated {
  /** the new tokens (without the stop token) */
  readonly tokens: ReadonlyArray<number>
  /** the detokenized new tokens, cut before a stop string; present when `detokenize` is given */
  readonly text?: string
  readonly finishReason: FinishReason
}

export const generate = (
  model: LlamaModel,
  prompts: ReadonlyArray<ReadonlyArray<number>>,
  options: GenerateOptions
): Array<Generated> => {
  if (prompts.some((p) => p.length === 0)) throw new Error("generate: every prompt needs at least one token")
  if ((options.stopStrings?.length ?? 0) > 0 && options.detokenize === undefined) {
    throw new Error("generate: stopStrings need a detokenize function")
  }
  const random = seededRandom(options.seed ?? 0)
  const stopIds = new Set(options.stopTokenIds ?? [])
  const batch = prompts.length
  const width = Math.max(...prompts.map((p) => p.length))
  const ids = new Int32Array(batch * width).fill(options.padTokenId ?? 0)
  const mask = new Int32Array(batch * width)
  prompts.forEach((p, b) => {
    ids.set(p, b * width + width - p.length)
    mask.fill(1, b * width + width - p.length, (b + 1) * width)
  })
  const out = prompts.map(() => ({ tokens: [] as Array<number>, text: undefined as string | undefined, done: undefined as FinishReason | undefined }))

  let cache: KvCache | undefined
  let input = tf.tensor2d(ids, [batch, width], "int32")
  let inputMask: tf.Tensor2D | undefined = tf.tensor2d(mask, [batch, width], "int32")
  try {
    for (let step = 0; step < options.maxNewTokens && out.some((r) => r.done === undefined); step++) {
      const result = model.forwardCached(input, cache, {
        ...(inputMask === undefined ? {} : { attentionMask: inputMask }),
        lastOnly: true
      })
      if (cache !== undefined) disposeKvCache(cache)
      cache = result.cache
      const logits = result.logits.dataSync()
      result.logits.dispose()
      const vocab = logits.length / batch
      const next = new Int32Array(batch)
      for (let b = 0; b < batch; b++) {
        const row = out[b]!
        if (row.done !== undefined) continue
        const token = sampleToken(logits.subarray(b * vocab, (b + 1) * vocab), options, random)
        next[b] = token
        options.onToken?.(b, token)
        if (stopIds.has(token)) {
          row.done = "stop-token"
          continue
        }
        row.tokens.push(token)
        if (options.detokenize !== undefined && (options.stopStrings?.length ?? 0) > 0) {
          const text = options.detokenize(row.tokens)
          const cut = Math.min(...options.stopStrings!.map((s) => text.indexOf(s)).filter((i) => i >= 0))
          if (Number.isFinite(cut)) {
            row.text = text.slice(0, cut)
            row.done = "stop-string"
            continue
          }
        }
        if (row.tokens.length >= options.maxNewTokens) row.done = "length"
      }
      input.dispose()
      inputMask?.dispose()
      inputMask = undefined
      input = tf.tensor2d(next, [batch, 1], "int32")
    }
  } finally {
    input.dispose()
    inputMask?.dispose()
    if (cache !== undefined) disposeKvCache(cache)
  }
  return out.map((r) => ({
    tokens: r.tokens,
    finishReason: r.done ?? "length",
    ...(options.detokenize === undefined ? {} : { text: r.text ?? options.detokenize(r.tokens) })
  }))
}
