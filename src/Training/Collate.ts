/**
 * From formatted examples to model batches: tokenization with an answer-only loss mask, seeded per-epoch
 * shuffling, right padding, and optional packing of several examples into one row (segment ids keep their
 * attention apart and restart positions).
 *
 * Mask choice: the prompt part (text before `answerStart`) is tokenized with BOS, the answer part
 * (`answerStart..answerEnd`) on its own without BOS, and EOS is appended. The labels are exactly the answer
 * tokens plus EOS. Tokenizing the parts separately means no token straddles the boundary (a joint
 * tokenization could merge the last prompt character with the first answer character), and it matches
 * inference, where the prompt is tokenized alone and the model continues it. This is TRL's completion-only
 * loss on prompt/completion data. (With a SentencePiece vocabulary the answer part gets the tokenizer's dummy
 * "▁" prefix; the model learns that continuation, and the detokenized answer may start with a space.)
 *
 * Truncation keeps the answer: an example longer than the maximum loses prompt tokens from the left (after BOS,
 * which stays first), and the answer is cut from its end only when the prompt is down to one token. A row whose
 * first token cannot be a target gets no loss there, so a row needs two tokens for any; rows left without a loss
 * target (`hasAnswerTokens` false) are counted and left out by the trainer instead of averaging an empty set to 0.
 */

import { SeededRng } from "../Shared/Prng.ts"

/** Deterministic permutation of 0..n-1 for an epoch: the same seed and epoch always give the same order. */
export const epochPermutation = (n: number, seed: number, epoch: number): Array<number> => {
  const rng = new SeededRng(Math.imul(seed >>> 0, 31) + Math.imul(epoch + 1, 0x85ebca6b))
  const order = Array.from({ length: n }, (_, i) => i)
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1))
    const t = order[i]!
    order[i] = order[j]!
    order[j] = t
  }
  return order
}

/** One tokenized example: `labels[i]` is true where token i is an answer token (a loss target). */
export interface TokenizedExample {
  readonly ids: ReadonlyArray<number>
  readonly labels: ReadonlyArray<boolean>
}

export interface TokenizerLike {
  readonly bosId: number | undefined
  readonly eosId: number
  encode(text: string): ReadonlyArray<number>
}

export interface FormattedExample {
  readonly text: string
  readonly answerStart: number
  readonly answerEnd: number
  /**
   * chat examples: every assistant turn's span, in order (the last is the answer's); the loss covers each
   * (Dataset/PromptFormat.formatChatExample). Absent: the one span `answerStart..answerEnd`.
   */
  readonly lossSpans?: ReadonlyArray<readonly [number, number]> | undefined
}

/** BOS, unless the text's own tokens already start with it (a chat template that writes `bos_token`). */
const bosFor = (tok: TokenizerLike, first: number | undefined): Array<number> =>
  tok.bosId === undefined || first === tok.bosId ? [] : [tok.bosId]

/** The ids of a prompt text as training saw it: BOS (once) and its tokens. */
export const promptIds = (tok: TokenizerLike, text: string): Array<number> => {
  const body = tok.encode(text)
  return [...bosFor(tok, body[0]), ...body]
}

/**
 * A chat example with several loss spans: the text between the spans and each span are tokenized apart (no token
 * straddles a boundary, as for one span), every span's tokens are targets, EOS follows the last. Too long, it loses
 * tokens from the left (BOS kept), so the latest turns stay.
 */
const tokenizeTurns = (tok: TokenizerLike, ex: FormattedExample, spans: ReadonlyArray<readonly [number, number]>, maxLength: number): TokenizedExample => {
  const ids: Array<number> = []
  const labels: Array<boolean> = []
  let at = 0
  const push = (from: number, to: number, target: boolean) => {
    if (to <= from) return
    for (const id of tok.encode(ex.text.slice(from, to))) {
      ids.push(id)
      labels.push(target)
    }
  }
  for (const [start, end] of spans) {
    push(at, start, false)
    push(start, end, true)
    at = end
  }
  ids.push(tok.eosId)
  labels.push(true)
  const bos = bosFor(tok, ids[0])
  if (bos.length + ids.length <= maxLength) return { ids: [...bos, ...ids], labels: [...bos.map(() => false), ...labels] }
  const keep = Math.max(0, maxLength - bos.length)
  return { ids: [...bos, ...ids.slice(ids.length - keep)], labels: [...bos.map(() => false), ...labels.slice(labels.length - keep)] }
}

/**
 * Tokenizes a formatted example to at most `maxLength` tokens: the prompt is truncated from the left (BOS kept)
 * before the answer is truncated from its end, and at least one prompt token stays so the first answer token is a
 * target.
 */
export const tokenizeExample = (tok: TokenizerLike, ex: FormattedExample, maxLength: number): TokenizedExample => {
  if (ex.lossSpans !== undefined && ex.lossSpans.length > 1) return tokenizeTurns(tok, ex, ex.lossSpans, maxLength)
  const body = tok.encode(ex.text.slice(0, ex.answerStart))
  const bos = bosFor(tok, body[0])
  const fullAnswer = [...tok.encode(ex.text.slice(ex.answerStart, ex.answerEnd)), tok.eosId]
  const promptLength = bos.length + body.length
  if (promptLength + fullAnswer.length <= maxLength) {
    return { ids: [...bos, ...body, ...fullAnswer], labels: [...bos, ...body, ...fullAnswer].map((_, i) => i >= promptLength) }
  }
  const keepPrompt = Math.min(promptLength, Math.max(1, maxLength - fullAnswer.length))
  const prompt = keepPrompt <= bos.length ? bos.slice(0, keepPrompt) : [...bos, ...body.slice(body.length - (keepPrompt - bos.length))]
  const answer = fullAnswer.slice(0, Math.max(0, maxLength - prompt.length))
  return { ids: [...prompt, ...answer], labels: [...prompt, ...answer].map((_, i) => i >= prompt.length) }
}

/** Whether the example has a loss target: an answer token at a position after the first. */
export const hasAnswerTokens = (ex: TokenizedExample): boolean => ex.labels.some((l, i) => l && i > 0)

/** A batch as plain arrays, row-major [rows, length]. */
export interface Batch {
  readonly rows: number
  readonly length: number
  readonly inputIds: Int32Array
  /** 1 for real tokens, 0 for padding */
  readonly attentionMask: Int32Array
  /** segment of each token within its row (packing), 0 for padding; undefined when not packed */
  readonly segmentIds: Int32Array | undefined
  /** 1 where the NEXT-token target of position i (token i+1) is an answer token */
  readonly lossMask: Float32Array
  /** the target token of position i (token i+1, or 0) */
  readonly targets: Int32Array
  /** number of answer tokens that carry loss */
  readonly lossTokens: number
  /** non-padding tokens */
  readonly tokens: number
}

const buildBatch = (rowsOfSegments: ReadonlyArray<ReadonlyArray<TokenizedExample>>, padId: number, packed: boolean): Batch => {
  const lengths = rowsOfSegments.map((segs) => segs.reduce((n, s) => n + s.ids.length, 0))
  const length = Math.max(1, ...lengths)
  const rows = rowsOfSegments.length
  const size = rows * length
  const inputIds = new Int32Array(size).fill(padId)
  const attentionMask = new Int32Array(size)
  const segmentIds = packed ? new Int32Array(size) : undefined
  const lossMask = new Float32Array(size)
  const targets = new Int32Array(size)
  let lossTokens = 0
  let tokens = 0
  rowsOfSegments.forEach((segs, r) => {
    let pos = r * length
    segs.forEach((seg, s) => {
      for (let i = 0; i < seg.ids.length; i++) {
        inputIds[pos + i] = seg.ids[i]!
        attentionMask[pos + i] = 1
        if (segmentIds) segmentIds[pos + i] = s + 1
        // the target of position i is token i+1 of the same segment: never across segments or into padding
        if (i + 1 < seg.ids.length) {
          targets[pos + i] = seg.ids[i + 1]!
          if (seg.labels[i + 1]) {
            lossMask[pos + i] = 1
            lossTokens += 1
          }
        }
      }
      tokens += seg.ids.length
      pos += seg.ids.length
    })
  })
  return { rows, length, inputIds, attentionMask, segmentIds, lossMask, targets, lossTokens, tokens }
}

/** Right-padded batch, one example per row. */
export const padBatch = (examples: ReadonlyArray<TokenizedExample>, padId: number): Batch =>
  buildBatch(examples.map((e) => [e]), padId, false)

/** Greedy first-fit packing of examples (in order) into `rows` rows of at most `maxLength` tokens each. */
export const packBatch = (examples: ReadonlyArray<TokenizedExample>, padId: number, maxLength: number): Batch => {
  const rows: Array<Array<TokenizedExample>> = []
  const used: Array<number> = []
  for (const ex of examples) {
    const r = used.findIndex((u) => u + ex.ids.length <= maxLength)
    if (r >= 0) {
      rows[r]!.push(ex)
      used[r]! += ex.ids.length
    } else {
      rows.push([ex])
      used.push(ex.ids.length)
    }
  }
  return buildBatch(rows, padId, true)
}

/** Splits an epoch's example order into batches of `batchSize` (the last one may be smaller). */
export const batchIndices = (order: ReadonlyArray<number>, batchSize: number): Array<Array<number>> => {
  const out: Array<Array<number>> = []
  for (let i = 0; i < order.length; i += batchSize) out.push(order.slice(i, i + batchSize))
  return out
}
