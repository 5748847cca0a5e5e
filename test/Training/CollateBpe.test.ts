/**
 * Answer-only loss masks on a real GPT-2-style BPE vocabulary (SmolLM2's, through llama.cpp's tokenizer), in
 * ChatML. The prompt and the answer are encoded separately (Collate.tokenizeExample), so a BPE merge can never
 * straddle the boundary: the labelled tokens are exactly the answer's own tokens plus the end-of-turn id, and they
 * decode back to the answer text. Serving encodes the prompt the same way and generates from its end, so training
 * sees the token boundary that inference sees even where a joint encoding would have merged across it.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { LlamaCpp } from "../../src/Model/LlamaCpp.ts"
import { Tokenizer } from "../../src/Model/Tokenizer.ts"
import { tokenizeExample } from "../../src/Training/Collate.ts"

const prompt = "<|im_start|>system\nYou answer finance questions.<|im_end|>\n<|im_start|>user\nWhy did <SYMBOL> fall?<|im_end|>\n<|im_start|>assistant\n"
// answers whose first characters would merge with the prompt's trailing newline or each other in a joint encoding
const answers = ["\n\nShares fell 3.2% after earnings missed.", " <PRICE> is below support.", "It dropped because guidance was cut."]

describe("Collate on SmolLM2's BPE (ChatML)", () => {
  it.effect("labels cover exactly the answer tokens and the end of turn", () =>
    Effect.scoped(Effect.gen(function*() {
      const tokenizer = yield* Tokenizer.use((t) => t.load(process.env.FINETUNE_SMOLLM2!))
      const imEnd = tokenizer.tokenize("<|im_end|>", { special: true, addBos: false })
      assert.deepStrictEqual(imEnd, [2])
      const like = { bosId: undefined, eosId: 2, encode: (t: string) => tokenizer.tokenize(t, { special: true, addBos: false }) }
      let mergedAcross = 0
      for (const answer of answers) {
        const text = prompt + answer
        const ex = tokenizeExample(like, { text, answerStart: prompt.length, answerEnd: text.length }, 512)
        const labelled = ex.ids.filter((_, i) => ex.labels[i])
        const own = [...like.encode(answer), 2]
        assert.deepStrictEqual(labelled, own, JSON.stringify(answer))
        // the labelled positions are one run at the end
        const first = ex.labels.indexOf(true)
        assert.isTrue(ex.labels.slice(first).every((l) => l))
        assert.strictEqual(tokenizer.detokenize(labelled.slice(0, -1), { special: true }), answer)
        const joint = like.encode(text)
        if (joint.join() !== ex.ids.slice(0, -1).join()) mergedAcross++
      }
      // the leading-newline answer does merge with the prompt's "\n" in a joint encoding: the case this guards
      assert.isAtLeast(mergedAcross, 1)
    }).pipe(Effect.provide(Tokenizer.layerNoDeps.pipe(Layer.provide(LlamaCpp.layerCpu))))), 120_000)
})
