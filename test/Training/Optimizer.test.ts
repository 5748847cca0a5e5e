import "@tensorflow/tfjs-backend-cpu"
import * as tf from "@tensorflow/tfjs-core"
import { beforeAll, describe, expect, it } from "vitest"
import { lrAt } from "../../src/Training/LrSchedule.ts"
import { AdamW, clipGradNorm } from "../../src/Training/Optimizer.ts"

beforeAll(async () => {
  await tf.setBackend("cpu")
})

/** torch.optim.AdamW's update for one scalar, in float64, as its documentation writes it. */
const referenceAdamW = (p0: number, grads: ReadonlyArray<number>, lrs: ReadonlyArray<number>, o = { b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0.01 }) => {
  let [p, m, v] = [p0, 0, 0]
  grads.forEach((g, k) => {
    const t = k + 1
    const lr = lrs[k]!
    p = p * (1 - lr * o.wd)
    m = o.b1 * m + (1 - o.b1) * g
    v = o.b2 * v + (1 - o.b2) * g * g
    const mHat = m / (1 - o.b1 ** t)
    const vHat = v / (1 - o.b2 ** t)
    p = p - lr * mHat / (Math.sqrt(vHat) + o.eps)
  })
  return p
}

describe("AdamW", () => {
  it("follows torch.optim.AdamW step by step (decoupled weight decay, bias correction)", () => {
    const p0 = [0.5, -1.25, 2, 0.001]
    const grads = [[0.3, -0.1, 0.02, 5], [-0.2, -0.1, 0.5, 4], [0.05, 0.3, -0.7, -3]]
    const lrs = [1e-2, 5e-3, 2e-3]
    const param = tf.variable(tf.tensor1d(p0))
    const opt = new AdamW([param], { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 })
    grads.forEach((g, k) => {
      const gt = tf.tensor1d(g)
      opt.apply([gt], lrs[k]!)
      gt.dispose()
    })
    const got = param.dataSync()
    p0.forEach((p, i) => {
      expect(got[i]).toBeCloseTo(referenceAdamW(p, grads.map((g) => g[i]!), lrs), 5)
    })
    expect(opt.step).toBe(3)
    opt.dispose()
    param.dispose()
  })

  it("only decays weights when gradients are zero, and round-trips its state", () => {
    const param = tf.variable(tf.tensor1d([2, -4]))
    const opt = new AdamW([param], { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 })
    const zero = tf.zeros([2])
    opt.apply([zero], 0.5)
    expect(Array.from(param.dataSync())).toEqual([Math.fround(2 * 0.95), Math.fround(-4 * 0.95)])
    const g = tf.tensor1d([1, 2])
    opt.apply([g], 0.5)
    const state = new Map(opt.state(["w"]).map((t) => [t.name, t]))
    expect([...state.keys()]).toEqual(["w.exp_avg", "w.exp_avg_sq"])
    const param2 = tf.variable(tf.tensor1d(param.dataSync()))
    const opt2 = new AdamW([param2], opt.options)
    opt2.loadState(["w"], state, opt.step)
    opt.apply([g], 0.5)
    opt2.apply([g], 0.5)
    expect(Array.from(param2.dataSync())).toEqual(Array.from(param.dataSync()))
    for (const t of [zero, g, param, param2]) t.dispose()
    opt.dispose()
    opt2.dispose()
  })

  it("clips the global gradient norm like clip_grad_norm_", () => {
    const before = tf.memory().numTensors
    const a = tf.tensor1d([3, 0])
    const b = tf.tensor1d([0, 4])
    const clipped = clipGradNorm([a, b], 1)
    expect(clipped.norm).toBeCloseTo(5, 6)
    const n = Math.hypot(...clipped.grads.flatMap((t) => Array.from(t.dataSync())))
    expect(n).toBeCloseTo(5 / (5 + 1e-6), 6)
    const loose = clipGradNorm([a, b], 10)
    expect(Array.from(loose.grads[1]!.dataSync())).toEqual([0, 4])
    tf.dispose([a, b, ...clipped.grads, ...loose.grads])
    expect(tf.memory().numTensors).toBe(before)
  })
})

describe("learning-rate schedules (transformers' definitions)", () => {
  it("warms up linearly then decays linearly to zero", () => {
    const spec = { type: "linear", peak: 2e-4, warmupSteps: 10, totalSteps: 110 } as const
    expect(lrAt(spec, 0)).toBe(0)
    expect(lrAt(spec, 5)).toBeCloseTo(1e-4, 12)
    expect(lrAt(spec, 10)).toBeCloseTo(2e-4, 12)
    expect(lrAt(spec, 60)).toBeCloseTo(1e-4, 12)
    expect(lrAt(spec, 110)).toBe(0)
    expect(lrAt(spec, 200)).toBe(0)
  })
  it("decays along a half cosine", () => {
    const spec = { type: "cosine", peak: 1, warmupSteps: 0, totalSteps: 100 } as const
    expect(lrAt(spec, 0)).toBe(1)
    expect(lrAt(spec, 50)).toBeCloseTo(0.5, 12)
    expect(lrAt(spec, 25)).toBeCloseTo(0.5 * (1 + Math.cos(Math.PI / 4)), 12)
    expect(lrAt(spec, 100)).toBeCloseTo(0, 12)
  })
})
