/**
 * AdamW with the update of `torch.optim.AdamW` (decoupled weight decay applied to the parameter before the Adam
 * step, bias corrections folded into the step size and the denominator), and gradient-norm clipping as
 * `torch.nn.utils.clip_grad_norm_`. Only the variables handed in are ever touched: the frozen base has no state.
 */
import * as tf from "@tensorflow/tfjs-core"
import type { NamedTensor } from "../Model/ModelContracts.ts"

export interface AdamWOptions {
  readonly beta1: number
  readonly beta2: number
  readonly eps: number
  readonly weightDecay: number
}

export const defaultAdamW: AdamWOptions = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }

export class AdamW {
  /** number of updates taken */
  step = 0
  private readonly m: Array<tf.Variable>
  private readonly v: Array<tf.Variable>

  readonly params: ReadonlyArray<tf.Variable>
  readonly options: AdamWOptions

  constructor(params: ReadonlyArray<tf.Variable>, options: AdamWOptions = defaultAdamW) {
    this.params = params
    this.options = options
    this.m = tf.tidy(() => params.map((p) => tf.variable(tf.zerosLike(p), false)))
    this.v = tf.tidy(() => params.map((p) => tf.variable(tf.zerosLike(p), false)))
  }

  /** One update with learning rate `lr`; `grads[i]` belongs to `params[i]`. Does not dispose the grads. */
  apply(grads: ReadonlyArray<tf.Tensor>, lr: number): void {
    const { beta1, beta2, eps, weightDecay } = this.options
    this.step += 1
    const stepSize = lr / (1 - beta1 ** this.step)
    const bc2Sqrt = Math.sqrt(1 - beta2 ** this.step)
    tf.tidy(() => {
      this.params.forEach((p, i) => {
        const g = grads[i]!
        const m = tf.add(tf.mul(this.m[i]!, beta1), tf.mul(g, 1 - beta1))
        const v = tf.add(tf.mul(this.v[i]!, beta2), tf.mul(tf.square(g), 1 - beta2))
        const decayed = weightDecay === 0 ? p : tf.mul(p, 1 - lr * weightDecay)
        const denom = tf.add(tf.div(tf.sqrt(v), bc2Sqrt), eps)
        p.assign(tf.sub(decayed, tf.mul(tf.div(m, denom), stepSize)))
        this.m[i]!.assign(m)
        this.v[i]!.assign(v)
      })
    })
  }

  /** Moments as named tensors (`<param name>.exp_avg` / `.exp_avg_sq`), for checkpoints. */
  state(names: ReadonlyArray<string>): Array<NamedTensor> {
    return this.params.flatMap((p, i) => [
      { name: `${names[i]}.exp_avg`, shape: p.shape, data: this.m[i]!.dataSync() as Float32Array },
      { name: `${names[i]}.exp_avg_sq`, shape: p.shape, data: this.v[i]!.dataSync() as Float32Array }
    ])
  }

  loadState(names: ReadonlyArray<string>, tensors: ReadonlyMap<string, NamedTensor>, step: number): void {
    this.step = step
    this.params.forEach((p, i) => {
      for (const [suffix, target] of [["exp_avg", this.m[i]!], ["exp_avg_sq", this.v[i]!]] as const) {
        const t = tensors.get(`${names[i]}.${suffix}`)
        if (t === undefined) throw new Error(`optimizer state lacks ${names[i]}.${suffix}`)
        if (t.data.length !== p.size) throw new Error(`optimizer state ${names[i]}.${suffix} has the wrong size`)
        tf.tidy(() => target.assign(tf.tensor(t.data, p.shape)))
      }
    })
  }

  dispose(): void {
    for (const t of [...this.m, ...this.v]) t.dispose()
  }
}

/**
 * Scales the gradients so their global L2 norm is at most `maxNorm` (coefficient max/(norm+1e-6), capped at 1,
 * as torch does). Returns the norm before clipping and the clipped gradients (new tensors; the inputs are kept).
 */
export const clipGradNorm = (
  grads: ReadonlyArray<tf.Tensor>,
  maxNorm: number
): { readonly norm: number; readonly grads: Array<tf.Tensor> } => {
  const norm = Math.sqrt(
    tf.tidy(() => tf.addN(grads.map((g) => tf.sum(tf.square(g)))).dataSync()[0]!)
  )
  const coef = maxNorm > 0 ? Math.min(1, maxNorm / (norm + 1e-6)) : 1
  return { norm, grads: grads.map((g) => tf.mul(g, coef)) }
}
