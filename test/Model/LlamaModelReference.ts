/**
 * Test helpers: random Llama weights from a seed, and a naive float64 reference forward written straight from
 * transformers' LlamaForCausalLM (rotate-half RoPE, repeat_kv, causal mask; a declared sliding window is not applied,
 * as neither LlamaForCausalLM nor llama.cpp's architecture llama applies it).
 * It shares nothing with src/Model/LlamaModel.ts except the RoPE frequencies, which have their own test.
 */
import { attentionModules, type LlamaConfig, mlpModules, type NamedTensor, weightNames } from "../../src/Model/ModelContracts.ts"
import { expectedShape, expectedWeightNames } from "../../src/Model/ModelLoader.ts"
import { inverseFrequencies } from "../../src/Model/Rope.ts"
import { seededRandom } from "../../src/Model/Sampling.ts"

/** Uniform random weights in canonical names and shapes (norm weights around 1), reproducible from `seed`. */
export const randomWeights = (c: LlamaConfig, seed: number, scale = 0.08): Array<NamedTensor> => {
  const next = seededRandom(seed)
  return expectedWeightNames(c).map((name) => {
    const shape = [...expectedShape(c, name)!]
    const around = shape.length === 1 ? 1 : 0
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1))
    for (let i = 0; i < data.length; i++) data[i] = around + (next() * 2 - 1) * scale * (around === 0 ? 1 : 2)
    return { name, shape, data }
  })
}

/** Float64 reference logits [T][V] for one unpadded sequence. */
export const referenceLogits = (
  c: LlamaConfig,
  weights: ReadonlyArray<NamedTensor>,
  ids: ReadonlyArray<number>
): Array<Float64Array> => {
  const w = new Map(weights.map((t) => [t.name, t.data]))
  const H = c.hiddenSize
  const D = c.headDim
  const linear = (name: string, x: Float64Array, inF: number, outF: number) => {
    const W = w.get(name)!
    const y = new Float64Array(outF)
    for (let o = 0; o < outF; o++) {
      let s = 0
      for (let i = 0; i < inF; i++) s += W[o * inF + i]! * x[i]!
      y[o] = s
    }
    return y
  }
  const norm = (x: Float64Array, name: string) => {
    const g = w.get(name)!
    let ms = 0
    for (const v of x) ms += v * v
    const r = 1 / Math.sqrt(ms / x.length + c.rmsNormEps)
    return x.map((v, i) => v * r * g[i]!)
  }
  const inv = inverseFrequencies(c)
  const rope = (x: Float64Array, heads: number, pos: number) => {
    const out = new Float64Array(x.length)
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < D / 2; i++) {
        const a = pos * inv[i]!
        const x1 = x[h * D + i]!
        const x2 = x[h * D + i + D / 2]!
        out[h * D + i] = x1 * Math.cos(a) - x2 * Math.sin(a)
        out[h * D + i + D / 2] = x2 * Math.cos(a) + x1 * Math.sin(a)
      }
    }
    return out
  }
  const emb = w.get(weightNames.embedding)!
  let hs = ids.map((id) => Float64Array.from(emb.subarray(id * H, (id + 1) * H)))
  const q = c.numHeads * D
  const kv = c.numKvHeads * D
  const groups = c.numHeads / c.numKvHeads
  for (let l = 0; l < c.numLayers; l++) {
    const name = (m: (typeof attentionModules)[number] | (typeof mlpModules)[number]) => `${weightNames.linear(l, m)}.weight`
    const xs = hs.map((h) => norm(h, weightNames.inputNorm(l)))
    const Q = xs.map((x, t) => rope(linear(name("q_proj"), x, H, q), c.numHeads, t))
    const K = xs.map((x, t) => rope(linear(name("k_proj"), x, H, kv), c.numKvHeads, t))
    const V = xs.map((x) => linear(name("v_proj"), x, H, kv))
    hs = hs.map((h, t) => {
      const attn = new Float64Array(q)
      for (let head = 0; head < c.numHeads; head++) {
        const kvh = Math.floor(head / groups)
        const scores: Array<number> = []
        for (let j = 0; j <= t; j++) {
          // full causal attention, as LlamaForCausalLM and llama.cpp (arch llama) compute it: a declared window is
          // not applied
          let s = 0
          for (let d = 0; d < D; d++) s += Q[t]![head * D + d]! * K[j]![kvh * D + d]!
          scores.push(s / Math.sqrt(D))
        }
        const max = Math.max(...scores)
        const e = scores.map((s) => Math.exp(s - max))
        const sum = e.reduce((a, b) => a + b, 0)
        for (let j = 0; j <= t; j++) {
          for (let d = 0; d < D; d++) attn[head * D + d]! += (e[j]! / sum) * V[j]![kvh * D + d]!
        }
      }
      const o = linear(name("o_proj"), attn, q, H)
      return h.map((v, i) => v + o[i]!)
    })
    hs = hs.map((h) => {
      const y = norm(h, weightNames.postAttentionNorm(l))
      const g = linear(name("gate_proj"), y, H, c.intermediateSize)
      const u = linear(name("up_proj"), y, H, c.intermediateSize)
      const act = g.map((v, i) => (v / (1 + Math.exp(-v))) * u[i]!)
      const d = linear(name("down_proj"), act, c.intermediateSize, H)
      return h.map((v, i) => v + d[i]!)
    })
  }
  const out = c.tieWordEmbeddings ? weightNames.embedding : weightNames.output
  return hs.map((h) => linear(out, norm(h, weightNames.finalNorm), H, c.vocabSize))
}

export const softmax = (logits: ArrayLike<number>): Float64Array => {
  let max = Number.NEGATIVE_INFINITY
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!)
  const e = Float64Array.from(logits as ArrayLike<number>, (v) => Math.exp(v - max))
  const sum = e.reduce((a, b) => a + b, 0)
  return e.map((v) => v / sum)
}
