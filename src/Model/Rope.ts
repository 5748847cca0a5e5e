/**
 * Rotary position embeddings in Hugging Face's rotate-half layout: for head dimension D, element i < D/2 pairs with
 * i + D/2 and both rotate by angle `position · invFreq[i]`.
 */
import type { LlamaConfig } from "./ModelContracts.ts"

/**
 * The inverse frequencies θ^(-2i/D), rescaled for "llama3" rope scaling exactly as transformers'
 * `_compute_llama3_parameters` does (and as llama.cpp does through the `rope_freqs` factors its converter writes:
 * long wavelengths divided by `factor`, short ones kept, the band between interpolated smoothly).
 */
export const inverseFrequencies = (config: LlamaConfig): Float64Array => {
  const half = config.headDim / 2
  const inv = new Float64Array(half)
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(config.ropeTheta, (2 * i) / config.headDim)
  const s = config.ropeScaling
  if (s === undefined) return inv
  const lowFreqWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor
  const highFreqWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor
  for (let i = 0; i < half; i++) {
    const wavelen = (2 * Math.PI) / inv[i]!
    if (wavelen < highFreqWavelen) continue
    if (wavelen > lowFreqWavelen) {
      inv[i] = inv[i]! / s.factor
    } else {
      const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor)
      inv[i] = (1 - smooth) * inv[i]! / s.factor + smooth * inv[i]!
    }
  }
  return inv
}

/** cos and sin of position · invFreq for each position: two float32 tables of shape [positions.length, D/2]. */
export const rotaryTables = (
  invFreq: Float64Array,
  positions: ArrayLike<number>
): { readonly cos: Float32Array; readonly sin: Float32Array } => {
  const half = invFreq.length
  const cos = new Float32Array(positions.length * half)
  const sin = new Float32Array(positions.length * half)
  for (let p = 0; p < positions.length; p++) {
    // float32 angle, as both transformers (inv_freq @ position in float32) and llama.cpp compute it
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(positions[p]! * Math.fround(invFreq[i]!))
      cos[p * half + i] = Math.cos(angle)
      sin[p * half + i] = Math.sin(angle)
    }
  }
  return { cos, sin }
}
