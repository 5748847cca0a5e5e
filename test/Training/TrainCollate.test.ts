import { describe, expect, it } from "vitest"
import { epochPermutation, hasAnswerTokens, packBatch, padBatch, tokenizeExample } from "../../src/Training/Collate.ts"
import { planSteps } from "../../src/Training/Trainer.ts"

const tok = { bosId: 1, eosId: 2, encode: (s: string) => [...s].map((c) => c.charCodeAt(0)) }

describe("collation", () => {
  it("masks everything but the answer tokens and EOS, tokenizing prompt and answer separately", () => {
    const ex = tokenizeExample(tok, { text: "Q: a?\nA: yes", answerStart: 9, answerEnd: 12 }, 100)
    expect(ex.ids).toEqual([1, ..."Q: a?\nA: ".split("").map((c) => c.charCodeAt(0)), 121, 101, 115, 2])
    expect(ex.labels.filter(Boolean).length).toBe(4)
    expect(ex.labels.slice(0, 10).some(Boolean)).toBe(false)
  })

  it("truncates the prompt from the left (BOS kept) before the answer, and the answer only when the prompt is one token", () => {
    const ex = { text: "Q: why?\nA: ok", answerStart: 11, answerEnd: 13 }
    const codes = (t: string) => [...t].map((c) => c.charCodeAt(0))
    // 1 + 11 prompt tokens + 3 answer tokens (o, k, EOS) = 15; at 8 the prompt keeps BOS and its last 4 tokens
    const cut = tokenizeExample(tok, ex, 8)
    expect(cut.ids).toEqual([1, ...codes("\nA: "), ...codes("ok"), 2])
    expect(cut.labels).toEqual([false, false, false, false, false, true, true, true])
    expect(hasAnswerTokens(cut)).toBe(true)
    // at 3 only BOS is left of the prompt and the answer loses EOS: still two loss targets
    const tight = tokenizeExample(tok, ex, 3)
    expect(tight.ids).toEqual([1, ...codes("ok")])
    expect(tight.labels).toEqual([false, true, true])
    // at 1 nothing can be a target (the first token of a row never is)
    const none = tokenizeExample(tok, ex, 1)
    expect(none.ids).toEqual([1])
    expect(hasAnswerTokens(none)).toBe(false)
    // without BOS, the last prompt token stays
    const noBos = tokenizeExample({ ...tok, bosId: undefined }, ex, 4)
    expect(noBos.ids).toEqual([32, ...codes("ok"), 2])
    expect(noBos.labels).toEqual([false, true, true, true])
  })

  it("pads right, shifts targets by one and ignores padding in the loss", () => {
    const a = { ids: [1, 5, 6, 7], labels: [false, false, true, true] }
    const b = { ids: [1, 8], labels: [false, true] }
    const batch = padBatch([a, b], 0)
    expect([batch.rows, batch.length]).toEqual([2, 4])
    expect(Array.from(batch.inputIds)).toEqual([1, 5, 6, 7, 1, 8, 0, 0])
    expect(Array.from(batch.attentionMask)).toEqual([1, 1, 1, 1, 1, 1, 0, 0])
    // position i predicts token i+1: loss at positions whose next token is an answer token
    expect(Array.from(batch.lossMask)).toEqual([0, 1, 1, 0, 1, 0, 0, 0])
    expect(Array.from(batch.targets)).toEqual([5, 6, 7, 0, 8, 0, 0, 0])
    expect([batch.lossTokens, batch.tokens]).toEqual([3, 6])
    expect(batch.segmentIds).toBeUndefined()
  })

  it("packs examples into rows with segment ids and never predicts across a segment boundary", () => {
    const ex = (n: number, first: number) => ({ ids: Array.from({ length: n }, (_, i) => first + i), labels: Array.from({ length: n }, (_, i) => i > 0) })
    const batch = packBatch([ex(3, 10), ex(2, 20), ex(4, 30)], 0, 5)
    expect(batch.rows).toBe(2)
    expect(Array.from(batch.segmentIds!)).toEqual([1, 1, 1, 2, 2, 1, 1, 1, 1, 0])
    expect(Array.from(batch.inputIds)).toEqual([10, 11, 12, 20, 21, 30, 31, 32, 33, 0])
    // the last token of a segment has no target
    expect(Array.from(batch.lossMask)).toEqual([1, 1, 0, 1, 0, 1, 1, 1, 0, 0])
    expect(batch.lossTokens).toBe(6)
  })

  it("shuffles per epoch reproducibly from the seed", () => {
    const e0 = epochPermutation(10, 42, 0)
    expect([...e0].sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    expect(epochPermutation(10, 42, 0)).toEqual(e0)
    expect(epochPermutation(10, 42, 1)).not.toEqual(e0)
    expect(epochPermutation(10, 43, 0)).not.toEqual(e0)
  })

  it("plans optimizer steps as gradient-accumulation windows of batches", () => {
    const plan = planSteps(10, { epochs: 2, batchSize: 3, gradientAccumulationSteps: 2, seed: 1 })
    // 4 batches per epoch (3,3,3,1) -> 2 steps per epoch
    expect(plan.length).toBe(4)
    expect(plan.map((s) => s.micro.length)).toEqual([2, 2, 2, 2])
    expect(plan.map((s) => s.epochProgress)).toEqual([0.5, 1, 1.5, 2])
    expect(plan.slice(0, 2).flatMap((s) => s.micro.flat()).sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    expect(planSteps(10, { epochs: 2, batchSize: 3, gradientAccumulationSteps: 2, seed: 1, maxSteps: 3 }).length).toBe(3)
  })
})
