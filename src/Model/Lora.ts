/**
 * LoRA around a frozen linear layer, as PEFT's `lora.Linear` computes it:
 *   y = base(x) + scaling · B(A(dropout(x))),  A: [r, in], B: [out, r],
 *   scaling = alpha / r, or alpha / √r with rsLoRA.
 * Initialization is PEFT's `reset_lora_parameters(init_lora_weights=True)`: A with `kaiming_uniform_(a=√5)`,
 * which is U(-1/√in, 1/√in), and B zero, so the adapted model equals the base at step 0.
 * Only A and B are tf.Variables; the base layer closes over plain tensors, so it never receives gradients.
 */
import * as tf from "@tensorflow/tfjs-core"
import { Schema } from "effect"
import { attentionModules, type LinearLayer, type LinearModule, type LinearTransform, mlpModules } from "./ModelContracts.ts"
import { SeededRng } from "../Shared/Prng.ts"
import { projectRows } from "./LlamaModel.ts"

export const LinearModuleName = Schema.Literals([...attentionModules, ...mlpModules])

/** `all-linear` (PEFT's spelling) or a list of module short names. */
export const TargetModules = Schema.Union([Schema.Literal("all-linear"), Schema.Array(LinearModuleName)])
export type TargetModules = typeof TargetModules.Type

export interface LoraSettings {
  readonly r: number
  readonly alpha: number
  readonly dropout: number
  readonly useRslora: boolean
  readonly targetModules: TargetModules
}

export const loraScaling = (s: Pick<LoraSettings, "r" | "alpha" | "useRslora">): number =>
  s.useRslora ? s.alpha / Math.sqrt(s.r) : s.alpha / s.r

/** The short module names a setting adapts, in HF order. */
export const resolveTargets = (targets: TargetModules): ReadonlyArray<LinearModule> =>
  targets === "all-linear" ? [...attentionModules, ...mlpModules] : targets

/** Whether the module path `model.layers.N.self_attn.q_proj` is one of the targets. */
export const isTarget = (name: string, targets: TargetModules): boolean => {
  const short = name.slice(name.lastIndexOf(".") + 1)
  return (resolveTargets(targets) as ReadonlyArray<string>).includes(short)
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
  settings: Pick<LoraSettings, "r" | "alpha" | "dropout" | "useRslora">,
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
  const scaling = loraScaling(settings)
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

/** Wraps every targeted module with LoRA (in the order the model presents them, so init is seed-determined). */
export const loraTransform = (settings: LoraSettings, rng: SeededRng, dropout: DropoutContext): LinearTransform =>
(name, base) => isTarget(name, settings.targetModules) ? loraLinear(name, base, settings, rng, dropout) : base
