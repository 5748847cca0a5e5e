import { NodeServices } from "@effect/platform-node"
import * as tf from "@tensorflow/tfjs-core"
import "@tensorflow/tfjs-backend-cpu"
import { Effect, Exit } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { AdapterConfig, decodeAdapterConfig } from "../../src/Model/AdapterConfig.ts"
import { DropoutContext, isLoraLayer, loraTransform } from "../../src/Model/Lora.ts"
import { weightNames } from "../../src/Model/ModelContracts.ts"
import { loadAdapterInto, readPeftAdapter, writePeftAdapter } from "../../src/Model/PeftAdapter.ts"
import { SeededRng } from "../../src/Shared/Prng.ts"
import { loadPeftAdapter } from "../../src/Serving/Export.ts"

const decode = (json: unknown) => Effect.runSync(decodeAdapterConfig(JSON.stringify(json)))
const decodeExit = (json: unknown) => Effect.runSyncExit(decodeAdapterConfig(JSON.stringify(json)))
const base = { peft_type: "LORA", r: 8, lora_alpha: 16, target_modules: ["q_proj", "v_proj", "down_proj"] }
const q = (layer: number) => weightNames.linear(layer, "q_proj")
const v = (layer: number) => weightNames.linear(layer, "v_proj")
const down = (layer: number) => weightNames.linear(layer, "down_proj")

describe("AdapterConfig", () => {
  it("gives each module PEFT's rank, alpha and scale: first matching pattern key, anchored at a dot", () => {
    const c = decode({
      ...base,
      rank_pattern: { "model.layers.1.self_attn.q_proj": 4, v_proj: 2 },
      alpha_pattern: { "layers\\.0\\..*q_proj": 3, q_proj: 5 }
    })
    expect([c.rankOf(q(0)), c.rankOf(q(1)), c.rankOf(v(0)), c.rankOf(down(0))]).toEqual([8, 4, 2, 8])
    // "layers\.0\..*q_proj" matches after "model." ; the plain key matches the others' last component
    expect([c.alphaOf(q(0)), c.alphaOf(q(1)), c.alphaOf(v(1))]).toEqual([3, 5, 16])
    expect(c.scaleOf(q(1))).toBe(5 / 4)
    expect(c.scaleOf(v(0))).toBe(16 / 2)
    // a key must end at the module's end and start at a dot: "proj" is not "v_proj", "_proj" does not match either
    const partial = decode({ ...base, rank_pattern: { proj: 1, "_proj": 1 } })
    expect(partial.rankOf(v(0))).toBe(8)
    const rs = decode({ ...base, use_rslora: true, rank_pattern: { v_proj: 4 } })
    expect(rs.scaleOf(q(0))).toBeCloseTo(16 / Math.sqrt(8), 12)
    expect(rs.scaleOf(v(0))).toBe(8)
  })

  it("targets as PEFT does: list entries by full key or last components, a string as a full regex, layers_to_transform", () => {
    const list = decode({ ...base, target_modules: ["self_attn.q_proj", "mlp.down_proj"] })
    expect([list.targets(q(0)), list.targets(down(3)), list.targets(v(0))]).toEqual([true, true, false])
    const regex = decode({ ...base, target_modules: String.raw`.*layers\.1\..*(q|v)_proj` })
    expect([regex.targets(q(0)), regex.targets(q(1)), regex.targets(v(1)), regex.targets(down(1))]).toEqual([false, true, true, false])
    const layers = decode({ ...base, layers_to_transform: [1] })
    expect([layers.targets(q(0)), layers.targets(q(1))]).toEqual([false, true])
    const excluded = decode({ ...base, exclude_modules: ["model.layers.0.self_attn.q_proj"] })
    expect([excluded.targets(q(0)), excluded.targets(q(1))]).toEqual([false, true])
  })

  it("writes llama.cpp one alpha when the modules are uniform (rsLoRA's alpha/√r as alpha·√r), else bakes scales into B", () => {
    const modules = [q(0), v(0)]
    expect(decode(base).llamaCppScaling(modules).alpha).toBe(16)
    const rs = decode({ ...base, use_rslora: true, r: 4 }).llamaCppScaling(modules)
    expect(rs.alpha).toBe(32)
    expect(rs.bFactor(q(0))).toBe(1)
    const patterned = decode({ ...base, alpha_pattern: { v_proj: 4 } })
    const s = patterned.llamaCppScaling(modules)
    expect(s.alpha).toBe(0)
    expect([s.bFactor(q(0)), s.bFactor(v(0))]).toEqual([2, 0.5])
    // a pattern that matches none of the modules keeps them uniform
    expect(decode({ ...base, alpha_pattern: { up_proj: 4 } }).llamaCppScaling(modules).alpha).toBe(16)
    const metadata = new Map(patterned.toLlamaCppMetadata({ architecture: "llama", name: "x", modules }))
    expect(metadata.get("adapter.lora.alpha")).toEqual({ type: "f32", value: 0 })
    expect(metadata.get("general.type")).toEqual({ type: "string", value: "adapter" })
  })

  it("refuses what it would silently get wrong: DoRA, LoRA bias, fan_in_fan_out, modules_to_save", () => {
    for (const extra of [{ use_dora: true }, { lora_bias: true }, { fan_in_fan_out: true }, { modules_to_save: ["lm_head"] }]) {
      const exit = decodeExit({ ...base, ...extra })
      expect(Exit.isFailure(exit), JSON.stringify(extra)).toBe(true)
      expect(String(Exit.isFailure(exit) ? exit.cause : ""), JSON.stringify(extra)).toContain(Object.keys(extra)[0])
    }
    // PEFT's other fields are accepted and ignored
    expect(decode({ ...base, use_dora: false, megatron_config: null, eva_config: null, revision: null }).r).toBe(8)
  })

  it("round-trips a rank_pattern adapter: the reader checks each module's rank, and LoRA layers get per-module shapes", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "adapter-config-"))
    const config = new AdapterConfig({ ...decode({ ...base, rank_pattern: { v_proj: 2 }, alpha_pattern: { q_proj: 4 } }) })
    const linear = (name: string, out: number, inF: number) => {
      const w = tf.randomNormal([out, inF], 0, 0.1, "float32", 3)
      return { name, inFeatures: inF, outFeatures: out, apply: (x: tf.Tensor) => tf.matMul(x as tf.Tensor2D, w, false, true), dispose: () => w.dispose() }
    }
    const before = tf.memory().numTensors
    const transform = loraTransform(config, new SeededRng(1), new DropoutContext())
    const bases = [linear(q(0), 8, 6), linear(v(0), 4, 6), linear(weightNames.linear(0, "k_proj"), 4, 6)]
    const layers = bases.map((b) => transform(b.name, b)).filter(isLoraLayer)
    expect(layers.map((l) => [l.name, l.loraA.shape[0], l.scaling])).toEqual([[q(0), 8, 0.5], [v(0), 2, 8]])
    for (const l of layers) tf.tidy(() => l.loraB.assign(tf.randomNormal(l.loraB.shape, 0, 1, "float32", 2)))
    await Effect.runPromise(writePeftAdapter(dir, layers, config).pipe(Effect.provide(NodeServices.layer)))
    const read = await Effect.runPromise(readPeftAdapter(dir).pipe(Effect.provide(NodeServices.layer)))
    expect([...read.modules.keys()]).toEqual([q(0), v(0)])
    expect(read.config.rankOf(v(0))).toBe(2)
    const exported = await Effect.runPromise(loadPeftAdapter(dir).pipe(Effect.provide(NodeServices.layer)))
    expect(exported.pairs.map((p) => [p.module, p.rank, p.scale])).toEqual([[q(0), 8, 0.5], [v(0), 2, 8]])
    // an adapter module the model has no LoRA layer for is an error, not silently dropped
    const missing = await Effect.runPromiseExit(loadAdapterInto(read, layers.slice(0, 1), dir))
    expect(Exit.isFailure(missing) && String(missing.cause)).toContain(v(0))
    // a wrong rank in the weights names the module and the rank the config gives it
    fs.writeFileSync(path.join(dir, "adapter_config.json"), JSON.stringify({ ...base, rank_pattern: { v_proj: 3 } }))
    const wrong = await Effect.runPromiseExit(readPeftAdapter(dir).pipe(Effect.provide(NodeServices.layer)))
    expect(Exit.isFailure(wrong) && String(wrong.cause)).toContain("rank 3")
    for (const l of layers) l.dispose()
    for (const b of bases) b.dispose()
    expect(tf.memory().numTensors).toBe(before)
  })
})
