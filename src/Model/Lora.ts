/**
 * LoRA around a frozen linear layer, as PEFT's `lora.Linear` computes it:
 *   y = base(x) + scaling · B(A(dropout(x))),  A: [r, in], B: [out, r],
 *   scaling = AdapterConfig.scaleOf(module) (alpha / r, or alpha / √r with rsLoRA, per-module patterns applied).
 * Initialization is PEFT's `reset_lora_parameters(init_lora_weights=True)`: A with `kaiming_uniform_(a=√5)`,
 * which is U(-1/√in, 1/√in), and B zero, so the adapted model equals the base at step 0.
 * Only A and B are tf.Variables; the base layer closes over plain tensors, so it never receives gradients.
 */
import * as tf from "@tensorflow/tfjs-core"
import type { AdapterConfig } from "./AdapterConfig.ts"
import type { LinearLayer, LinearTransform } from "./ModelContracts.ts"
import { SeededRng } from "../Shared/Prng.ts"
import { projectRows } from "./LlamaModel.ts"

/** What one LoRA layer needs: its rank, PEFT's scale for it (AdapterConfig.scaleOf) and the dropout rate. */
export interface LoraLayerSettings {
  readonly r: number
  readonly scaling: number
  readonly dropout: number
}

/**
 * Where dropout masks come from. Seeds are derived from the training step, micro-batch and call order, so a
 * resumed run draws exactly the masks an uninterrupted one would have; `training = false` turns dropout off.
 */
export class DropoutContext {
  training = false
  private seed = 0
  private calls = 0
  /** start a new forward pass with masks determined by `seed` */
  begin(seed: number, training: boolean): void {
    this.seed = seed
    this.calls = 0
    this.training = training
  }
  next(): number {
    this.calls += 1
    return (Math.imul(this.seed ^ 0x9e3779b9, 2654435761) + Math.imul(this.calls, 40503)) >>> 0
  }
}

export interface LoraLayer extends LinearLayer {
  readonly base: LinearLayer
  readonly loraA: tf.Variable
  readonly loraB: tf.Variable
  readonly scaling: number
}

export const isLoraLayer = (layer: LinearLayer): layer is LoraLayer => "loraA" in layer && "loraB" in layer

let nextSerial = 0

export const loraLinear = (
  name: string,
  base: LinearLayer,
  settings: LoraLayerSettings,
  rng: SeededRng,
  dropout: DropoutContext
): LoraLayer => {
  const { r } = settings
  const bound = 1 / Math.sqrt(base.inFeatures)
  const a = new Float32Array(r * base.inFeatures)
  for (let i = 0; i < a.length; i++) a[i] = (rng.next() * 2 - 1) * bound
  // tfjs variable names are process-global: a serial suffix lets several adapted models coexist
  const serial = nextSerial++
  const loraA = tf.tidy(() => tf.variable(tf.tensor2d(a, [r, base.inFeatures]), true, `${name}.lora_A.weight#${serial}`))
  const loraB = tf.tidy(() => tf.variable(tf.zeros([base.outFeatures, r]), true, `${name}.lora_B.weight#${serial}`))
  const scaling = settings.scaling
  return {
    name,
    inFeatures: base.inFeatures,
    outFeatures: base.outFeatures,
    base,
    loraA,
    loraB,
    scaling,
    apply: (x) => {
      const y = base.apply(x)
      const dropped = dropout.training && settings.dropout > 0
        ? tf.dropout(x, settings.dropout, undefined, dropout.next())
        : x
      const flat = tf.reshape(dropped, [-1, base.inFeatures])
      // x Aᵀ Bᵀ through projectRows: on wasm its gradients are plain products (the transposed ones are ~10x slower)
      const delta = projectRows(projectRows(flat as tf.Tensor2D, loraA as tf.Tensor2D), loraB as tf.Tensor2D)
      return tf.add(y, tf.reshape(tf.mul(delta, scaling), y.shape))
    },
    dispose: () => {
      loraA.dispose()
      loraB.dispose()
    }
  }
}

/**
 * Wraps every module the adapter config targets with LoRA, each with its own rank and scale (in the order the model
 * presents them, so init is seed-determined).
 */
export const loraTransform = (config: AdapterConfig, rng: SeededRng, dropout: DropoutContext): LinearTransform =>
(name, base) =>
  config.targets(name)
    ? loraLinear(name, base, { r: config.rankOf(name), scaling: config.scaleOf(name), dropout: config.dropout }, rng, dropout)
    : base
