import { assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import { join } from "node:path"
import { gguf, metaString, openGguf, readGgufHeader } from "../../src/Model/Gguf.ts"
import { ggufKeys } from "../../src/Model/GgufKeys.ts"
import { rewriteGguf } from "../../src/Model/GgufRewrite.ts"
import { writeGguf } from "../../src/Model/GgufWriter.ts"
import { weightNames } from "../../src/Model/ModelContracts.ts"
import { loadModelSource } from "../../src/Model/ModelLoader.ts"
import { canonicalWeights, presetConfig, writeTinyModel } from "../../src/Model/TinyModel.ts"
import { tempDir } from "./WeightFileFixtures.ts"

const dir = tempDir("gguf-rewrite")
const config = presetConfig("llama3-tiny")
const q0 = `${weightNames.linear(0, "q_proj")}.weight`
const k1 = `${weightNames.linear(1, "k_proj")}.weight`

describe("rewriteGguf", () => {
  it.effect("sets metadata, replaces tensors given in HF layout (Q/K permuted once, here), copies the rest byte for byte", () =>
    Effect.gen(function*() {
      const base = join(dir, "base.gguf")
      yield* writeTinyModel({ config, seed: 3, path: base })
      const canonical = new Map(canonicalWeights(config, { seed: 3 }).map((w) => [w.name, w.data()]))
      const out = join(dir, "out.gguf")
      const reads: Array<string> = []
      yield* Effect.scoped(Effect.gen(function*() {
        const plan = yield* rewriteGguf(base, {
          metadata: [[ggufKeys.name, gguf.string("rewritten")], ["finetune.note", gguf.string("appended")]],
          tensor: ({ hfName, read }) => {
            if (hfName !== q0 && hfName !== k1) return undefined
            // `read` gives the current values in HF layout: the canonical weights the file was written from
            const current = read()
            assert.deepStrictEqual(Array.from(current), Array.from(canonical.get(hfName)!), hfName)
            reads.push(hfName)
            return { data: () => current.map((v, i) => v + i * 1e-3) }
          }
        })
        yield* writeGguf(out, plan)
      }))
      assert.deepStrictEqual(reads.sort(), [q0, k1].sort())
      const header = yield* readGgufHeader(out)
      assert.strictEqual(metaString(header, ggufKeys.name), "rewritten")
      assert.strictEqual(metaString(header, "finetune.note"), "appended")
      assert.strictEqual(metaString(header, ggufKeys.chatTemplate), metaString(yield* readGgufHeader(base), ggufKeys.chatTemplate))
      // the reader un-permutes Q/K: the edited weights come back exactly as given in HF layout
      const source = yield* loadModelSource(out)
      const weights = new Map((yield* Stream.runCollect(source.weights)).map((w) => [w.name, w.data]))
      for (const name of [q0, k1]) {
        const expected = canonical.get(name)!.map((v, i) => v + i * 1e-3)
        assert.deepStrictEqual(Array.from(weights.get(name)!), Array.from(expected), name)
      }
      // everything else (rope_freqs included) is the base's bytes
      yield* Effect.scoped(Effect.gen(function*() {
        const [a, b] = [yield* openGguf(base), yield* openGguf(out)]
        assert.deepStrictEqual(b.tensors.map((t) => t.name), a.tensors.map((t) => t.name))
        for (const t of a.tensors) {
          if (t.name === "blk.0.attn_q.weight" || t.name === "blk.1.attn_k.weight") continue
          assert.deepStrictEqual(yield* b.readRaw(t.name), yield* a.readRaw(t.name), t.name)
        }
        assert.isDefined(b.info("rope_freqs.weight"))
      }))
    }))

  it.effect("re-encodes copied tensors in copyType and keeps their ggml row order", () =>
    Effect.gen(function*() {
      const base = join(dir, "base16.gguf")
      yield* writeTinyModel({ config, seed: 4, path: base })
      const out = join(dir, "f16.gguf")
      yield* Effect.scoped(Effect.flatMap(
        rewriteGguf(base, { copyType: (info) => info.shape.length < 2 ? undefined : "F16" }),
        (plan) => writeGguf(out, plan)
      ))
      const header = yield* readGgufHeader(out)
      assert.strictEqual(header.tensors.find((t) => t.name === "blk.0.attn_q.weight")!.typeName, "F16")
      assert.strictEqual(header.tensors.find((t) => t.name === "blk.0.attn_norm.weight")!.typeName, "F32")
      const [a, b] = yield* Effect.all([loadModelSource(base), loadModelSource(out)])
      const wa = new Map((yield* Stream.runCollect(a.weights)).map((w) => [w.name, w.data]))
      const wb = new Map((yield* Stream.runCollect(b.weights)).map((w) => [w.name, w.data]))
      const qa = wa.get(q0)!, qb = wb.get(q0)!
      let worst = 0
      for (let i = 0; i < qa.length; i++) worst = Math.max(worst, Math.abs(qa[i]! - qb[i]!))
      assert.isBelow(worst, 1e-4) // F16 rounding only: no row moved
    }))
})
