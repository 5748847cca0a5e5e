/**
 * The bridge between llama.cpp's GGUF conventions and the project's canonical (Hugging Face) layout: tensor names,
 * the Q/K row permutation llama.cpp's converter applies for its RoPE layout, and llama3 RoPE frequency factors
 * (which a GGUF carries as the `rope_freqs.weight` tensor, not as metadata).
 */
import { attentionModules, type LinearModule, type LlamaConfig, mlpModules, type RopeScaling, weightNames } from "./ModelContracts.ts"

const ggufLinear: Record<LinearModule, string> = {
  q_proj: "attn_q", k_proj: "attn_k", v_proj: "attn_v", o_proj: "attn_output",
  gate_proj: "ffn_gate", up_proj: "ffn_up", down_proj: "ffn_down"
}
const hfLinear = new Map(Object.entries(ggufLinear).map(([hf, g]) => [g, hf as LinearModule]))

/** GGUF tensor name of a linear module's weight, e.g. (0, "q_proj") -> `blk.0.attn_q.weight`. */
export const ggufLinearName = (layer: number, module: LinearModule): string => `blk.${layer}.${ggufLinear[module]}.weight`

/** GGUF name -> canonical HF name; undefined for tensors that have no HF counterpart (e.g. `rope_freqs.weight`). */
export const hfNameOf = (ggufName: string): string | undefined => {
  switch (ggufName) {
    case "token_embd.weight": return weightNames.embedding
    case "output_norm.weight": return weightNames.finalNorm
    case "output.weight": return weightNames.output
  }
  const match = /^blk\.(\d+)\.([a-z_]+)\.weight$/.exec(ggufName)
  if (match === null) return undefined
  const layer = Number(match[1])
  if (match[2] === "attn_norm") return weightNames.inputNorm(layer)
  if (match[2] === "ffn_norm") return weightNames.postAttentionNorm(layer)
  const module = hfLinear.get(match[2]!)
  return module === undefined ? undefined : `${weightNames.linear(layer, module)}.weight`
}

/** Canonical HF name -> GGUF name; undefined for names outside the Llama decoder. */
export const ggufNameOf = (hfName: string): string | undefined => {
  switch (hfName) {
    case weightNames.embedding: return "token_embd.weight"
    case weightNames.finalNorm: return "output_norm.weight"
    case weightNames.output: return "output.weight"
  }
  const match = /^model\.layers\.(\d+)\.(self_attn|mlp)\.([a-z_]+)\.weight$/.exec(hfName)
  if (match !== null) {
    const module = match[3] as LinearModule
    const known = match[2] === "self_attn" ? (attentionModules as ReadonlyArray<string>) : (mlpModules as ReadonlyArray<string>)
    return known.includes(module) ? ggufLinearName(Number(match[1]), module) : undefined
  }
  const norm = /^model\.layers\.(\d+)\.(input_layernorm|post_attention_layernorm)\.weight$/.exec(hfName)
  if (norm === null) return undefined
  return `blk.${norm[1]}.${norm[2] === "input_layernorm" ? "attn_norm" : "ffn_norm"}.weight`
}

/** The head count whose permutation applies to a GGUF tensor: Q uses the head count, K the KV head count. */
export const qkHeadsFor = (ggufName: string, config: Pick<LlamaConfig, "numHeads" | "numKvHeads">): number | undefined =>
  /^blk\.\d+\.attn_q\.weight/.test(ggufName) ? config.numHeads
    : /^blk\.\d+\.attn_k\.weight/.test(ggufName) ? config.numKvHeads
    : undefined

/**
 * Reorders the rows of a row-major [rows, cols] matrix. llama.cpp's converter does
 * `w.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2)`: within each head, HF row `two*half + i` (rotate-half
 * order) becomes GGUF row `2*i + two` (interleaved pairs).
 */
const permuteRows = (data: Float32Array, rows: number, nHead: number, toGguf: boolean): Float32Array => {
  if (rows % (2 * nHead) !== 0) throw new Error(`cannot permute ${rows} rows for ${nHead} heads: rows must be a multiple of 2 x heads`)
  const cols = data.length / rows
  if (!Number.isInteger(cols)) throw new Error(`${data.length} values do not form ${rows} rows`)
  const headDim = rows / nHead
  const half = headDim / 2
  const out = new Float32Array(data.length)
  for (let h = 0; h < nHead; h++) {
    for (let two = 0; two < 2; two++) {
      for (let i = 0; i < half; i++) {
        const hfRow = h * headDim + two * half + i
        const ggufRow = h * headDim + 2 * i + two
        const [from, to] = toGguf ? [hfRow, ggufRow] : [ggufRow, hfRow]
        out.set(data.subarray(from * cols, (from + 1) * cols), to * cols)
      }
    }
  }
  return out
}

/**
 * HF layout -> GGUF layout for a Q or K weight [out, in] (nHead = head count for Q, KV head count for K), or for a
 * LoRA B matrix [out, r] of q_proj / k_proj (its rows are output rows too).
 */
export const permuteQkForGguf = (data: Float32Array, rows: number, nHead: number): Float32Array =>
  permuteRows(data, rows, nHead, true)

/** GGUF layout -> HF layout: the inverse of `permuteQkForGguf`. */
export const unpermuteQkFromGguf = (data: Float32Array, rows: number, nHead: number): Float32Array =>
  permuteRows(data, rows, nHead, false)

/**
 * llama3 RoPE frequency factors, one per rotary pair, as llama.cpp's converter computes them for `rope_freqs.weight`
 * (llama.cpp divides each frequency by its factor, which is HF's llama3 `inv_freq` rescaling).
 */
export const llama3RopeFactors = (scaling: RopeScaling, ropeTheta: number, headDim: number): Float32Array => {
  const factors = new Float32Array(headDim / 2)
  const lowWavelen = scaling.originalMaxPositionEmbeddings / scaling.lowFreqFactor
  const highWavelen = scaling.originalMaxPositionEmbeddings / scaling.highFreqFactor
  for (let i = 0; i < factors.length; i++) {
    const freq = 1 / Math.fround(ropeTheta ** Math.fround((2 * i) / headDim))
    const wavelen = (2 * Math.PI) / freq
    if (wavelen < highWavelen) factors[i] = 1
    else if (wavelen > lowWavelen) factors[i] = scaling.factor
    else {
      const smooth = (scaling.originalMaxPositionEmbeddings / wavelen - scaling.lowFreqFactor) /
        (scaling.highFreqFactor - scaling.lowFreqFactor)
      factors[i] = 1 / ((1 - smooth) / scaling.factor + smooth)
    }
  }
  return factors
}

/**
 * Recovers llama3 RoPE scaling parameters from `rope_freqs.weight`. The factors depend only on factor,
 * original_max/low_freq_factor and original_max/high_freq_factor, so low_freq_factor = 1 is assumed (as in every
 * Llama 3.x release) and the rest is solved from the factors; the result reproduces the factors. Returns undefined
 * when the factors are not of the llama3 form.
 */
export const llama3ScalingFromFactors = (factors: Float32Array, ropeTheta: number, headDim: number): RopeScaling | undefined => {
  const factor = Math.max(...factors)
  if (factors.every((f) => f === 1)) return undefined
  const wavelens = Array.from(factors, (_, i) => 2 * Math.PI * Math.fround(ropeTheta ** Math.fround((2 * i) / headDim)))
  const smooth = Array.from(factors.keys()).filter((i) => factors[i] !== 1 && Math.abs(factors[i]! - factor) > 1e-6 * factor)
  let lowWavelen: number, highWavelen: number
  const relative = (i: number) => (1 / factors[i]! - 1 / factor) / (1 - 1 / factor) // the smoothing s of factor i
  if (smooth.length >= 2) {
    // s = (L/w - lf)/(hf - lf) is linear in 1/w: s = a/w + b
    const [i0, i1] = [smooth[0]!, smooth[smooth.length - 1]!]
    const a = (relative(i1) - relative(i0)) / (1 / wavelens[i1]! - 1 / wavelens[i0]!)
    const b = relative(i0) - a / wavelens[i0]!
    lowWavelen = -a / b // s = 0
    highWavelen = a / (1 - b) // s = 1
  } else if (smooth.length === 1) {
    // one point fixes L for the usual high_freq_factor = 4 x low_freq_factor
    const original = wavelens[smooth[0]!]! * (3 * relative(smooth[0]!) + 1)
    lowWavelen = original
    highWavelen = original / 4
  } else {
    // any boundaries between the last factor-1 and the first full-factor wavelength give the same factors
    const highs = wavelens.filter((_, i) => factors[i] === 1)
    const lows = wavelens.filter((_, i) => factors[i] === factor)
    const maxHigh = highs.length === 0 ? 0 : Math.max(...highs)
    const minLow = lows.length === 0 ? Infinity : Math.min(...lows)
    lowWavelen = Number.isFinite(minLow) ? minLow / 1.0001 : Math.max(maxHigh, 1) * 8
    highWavelen = Math.max(maxHigh * 1.0001, Math.min(lowWavelen / 4, minLow))
    if (lowWavelen <= highWavelen) return undefined
  }
  const original = lowWavelen // with low_freq_factor = 1
  const scaling: RopeScaling = {
    type: "llama3",
    factor,
    lowFreqFactor: 1,
    highFreqFactor: original / highWavelen,
    originalMaxPositionEmbeddings: Math.round(original)
  }
  const check = llama3RopeFactors(scaling, ropeTheta, headDim)
  return check.every((f, i) => Math.abs(f - factors[i]!) <= 1e-4 * Math.max(1, factors[i]!)) ? scaling : undefined
}
