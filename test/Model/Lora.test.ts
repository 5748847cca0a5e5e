import "@tensorflow/tfjs-backend-cpu"
import * as tf from "@tensorflow/tfjs-core"
import { registerGradients } from "../../src/Model/Device.ts"
import { beforeAll, describe, expect, it } from "vitest"
import { SeededRng } from "../../src/Shared/Prng.ts"
import { AdapterConfig, resolveTargets } from "../../src/Model/AdapterConfig.ts"
import { DropoutContext, loraLinear } from "../../src/Model/Lora.ts"
import type { LinearLayer } from "../../src/Model/ModelContracts.ts"

beforeAll(async () => {
  await registerGradients()
  await tf.setBackend("cpu")
})

const randn = (n: number, seed: number, scale = 1) => {
  const rng = new SeededRng(seed)
  return Float32Array.from({ length: n }, () => rng.normal() * scale)
}

const dense = (name: string, out: number, inF: number, seed: number): LinearLayer => {
  const w = tf.tensor2d(randn(out * inF, seed, 0.3), [out, inF])
  return {
    name,
    inFeatures: inF,
    outFeatures: out,
    apply: (x) => tf.reshape(tf.matMul(tf.reshape(x, [-1, inF]), w, false, true), [...x.shape.slice(0, -1), out]),
    dispose: () => w.dispose()
  }
}

describe("LoRA layer", () => {
  it("starts equal to the base (B = 0) with A ~ U(-1/√in, 1/√in) as PEFT's kaiming_uniform_(a=√5)", () => {
    const base = dense("model.layers.0.self_attn.q_proj", 48, 256, 1)
    const lora = loraLinear(base.name, base, { r: 16, scaling: 2, dropout: 0 }, new SeededRng(3), new DropoutContext())
    expect(lora.loraA.shape).toEqual([16, 256])
    expect(lora.loraB.shape).toEqual([48, 16])
    expect(lora.scaling).toBe(2)
    const a = lora.loraA.dataSync() as Float32Array
    const bound = 1 / 16
    expect(Math.max(...a.map(Math.abs))).toBeLessThanOrEqual(bound)
    // variance of U(-b, b) is b²/3; 4096 draws give a relative standard error of ~2%
    const variance = a.reduce((s, v) => s + v * v, 0) / a.length
    expect(Math.abs(variance / (bound * bound / 3) - 1)).toBeLessThan(0.08)
    expect(Array.from(lora.loraB.dataSync()).every((v) => v === 0)).toBe(true)
    tf.tidy(() => {
      const x = tf.tensor3d(randn(2 * 5 * 256, 9), [2, 5, 256])
      expect(Array.from(lora.apply(x).dataSync())).toEqual(Array.from(base.apply(x).dataSync()))
    })
    lora.dispose()
    base.dispose()
  })

  it("scales by alpha/r, or alpha/√r with rsLoRA", () => {
    const config = (useRslora: boolean) => AdapterConfig.fromSettings({ r: 16, alpha: 32, dropout: 0, useRslora, targetModules: ["q_proj"] }, null)
    expect(config(false).scaleOf("model.layers.0.self_attn.q_proj")).toBe(2)
    expect(config(true).scaleOf("model.layers.0.self_attn.q_proj")).toBe(8)
  })

  it("targets modules by short name, with all-linear meaning all seven", () => {
    const targets = (t: "all-linear" | Array<"q_proj" | "v_proj">) => AdapterConfig.fromSettings({ r: 2, alpha: 2, dropout: 0, useRslora: false, targetModules: t }, null)
    expect(targets(["q_proj", "v_proj"]).targets("model.layers.3.self_attn.q_proj")).toBe(true)
    expect(targets(["q_proj", "v_proj"]).targets("model.layers.3.self_attn.k_proj")).toBe(false)
    expect(targets("all-linear").targets("model.layers.3.mlp.down_proj")).toBe(true)
    expect(targets("all-linear").targets("lm_head")).toBe(false)
    expect(resolveTargets("all-linear")).toEqual(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
  })

  it("computes base + scaling·B·A·x and its A/B gradients match central finite differences", () => {
    const base = dense("model.layers.0.mlp.up_proj", 6, 5, 2)
    const lora = loraLinear(base.name, base, { r: 3, scaling: 2, dropout: 0 }, new SeededRng(4), new DropoutContext())
    lora.loraB.assign(tf.tensor2d(randn(18, 5, 0.5), [6, 3]))
    const x = tf.tensor2d(randn(4 * 5, 6), [4, 5])
    const target = tf.tensor2d(randn(4 * 6, 7), [4, 6])
    const loss = () => tf.mean(tf.square(tf.sub(tf.tanh(lora.apply(x)), target))) as tf.Scalar
    // closed form of the forward pass
    tf.tidy(() => {
      const expected = tf.add(base.apply(x), tf.mul(tf.matMul(tf.matMul(x, lora.loraA, false, true), lora.loraB, false, true), 2))
      const got = lora.apply(x)
      expect(tf.max(tf.abs(tf.sub(got, expected))).dataSync()[0]).toBeLessThan(1e-6)
    })
    const { grads } = tf.variableGrads(loss, [lora.loraA, lora.loraB])
    // Central differences in float32: truncation error ~eps²/6·|f'''| ≈ 2e-5 and rounding error
    // ~ulp(f)/eps ≈ 1e-5 for O(1) values at eps = 1e-2, so a 1% relative tolerance on the whole gradient vector has
    // two orders of margin, while a real bug (missing scaling, a transposed factor) is an O(1) error.
    const eps = 1e-2
    for (const v of [lora.loraA, lora.loraB]) {
      const analytic = grads[v.name]!.dataSync()
      const values = v.dataSync().slice()
      const numeric = new Float32Array(values.length)
      for (let i = 0; i < values.length; i++) {
        const at = (delta: number) => {
          const copy = values.slice()
          copy[i] = values[i]! + delta
          v.assign(tf.tensor(copy, v.shape))
          return tf.tidy(() => loss().dataSync()[0]!)
        }
        numeric[i] = (at(eps) - at(-eps)) / (2 * eps)
      }
      v.assign(tf.tensor(values, v.shape))
      let diff = 0
      let norm = 0
      for (let i = 0; i < values.length; i++) {
        diff += (numeric[i]! - analytic[i]!) ** 2
        norm += analytic[i]! ** 2
      }
      expect(norm).toBeGreaterThan(1e-6)
      expect(Math.sqrt(diff / norm)).toBeLessThan(1e-2)
    }
    // no gradient reaches anything but A and B: the base is closed over as a constant
    expect(Object.keys(grads).sort()).toEqual([lora.loraA.name, lora.loraB.name].sort())
    tf.dispose([x, target, ...Object.values(grads)])
    lora.dispose()
    base.dispose()
  })

  it("draws dropout masks determined by the seed, and none in evaluation", () => {
    const base = dense("model.layers.0.self_attn.v_proj", 8, 8, 3)
    const ctx = new DropoutContext()
    const lora = loraLinear(base.name, base, { r: 2, scaling: 2, dropout: 0.5 }, new SeededRng(5), ctx)
    lora.loraB.assign(tf.ones([8, 2]))
    const x = tf.ones([4, 8])
    const run = (seed: number, training: boolean) => {
      ctx.begin(seed, training)
      return tf.tidy(() => Array.from(lora.apply(x).dataSync()))
    }
    expect(run(1, true)).toEqual(run(1, true))
    expect(run(1, true)).not.toEqual(run(2, true))
    ctx.begin(0, false)
    const evalOut = tf.tidy(() => Array.from(lora.apply(x).dataSync()))
    const noDropout = tf.tidy(() =>
      Array.from(tf.add(base.apply(x), tf.mul(tf.matMul(tf.matMul(x, lora.loraA, false, true), lora.loraB, false, true), 2)).dataSync())
    )
    expect(evalOut).toEqual(noDropout)
    x.dispose()
    lora.dispose()
    base.dispose()
  })
})
