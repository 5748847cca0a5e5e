import { NodeServices } from "@effect/platform-node"
import * as tf from "@tensorflow/tfjs-core"
import { Effect, Exit } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { readSafetensorsHeader, writeSafetensors } from "../../src/Model/Safetensors.ts"
import { readPeftAdapter, writePeftAdapter } from "../../src/Model/PeftAdapter.ts"
import { adapterConfigOf, buildTrainee } from "../../src/Training/Trainer.ts"
import { baseTrainConfig, byteTokenizer, examples, randomWeights, tinyConfig, useWasm } from "./TrainFixtures.ts"

beforeAll(useWasm)

const run = <A, E>(e: Effect.Effect<A, E, any>) =>
  Effect.runPromiseExit(e.pipe(Effect.provide(NodeServices.layer)) as Effect.Effect<A, E, never>)
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "peft-"))

describe("PEFT adapter files", () => {
  it("use PEFT's key names, shapes [r, in] / [out, r] and adapter_config fields", async () => {
    const dir = tmp()
    const config = baseTrainConfig(dir, { targetModules: "all-linear", r: 4, loraAlpha: 8, useRslora: true })
    const baseline = tf.memory().numTensors
    const t = await buildTrainee({
      modelConfig: tinyConfig, weights: () => randomWeights(tinyConfig, 2), tokenizer: byteTokenizer, baseModelName: "b",
      train: examples(), validation: []
    }, config)
    const exit = await run(writePeftAdapter(dir, t.loraLayers, adapterConfigOf(config, "my/base")))
    expect(Exit.isSuccess(exit)).toBe(true)
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, "adapter_config.json"), "utf8"))
    expect(cfg).toMatchObject({
      peft_type: "LORA", task_type: "CAUSAL_LM", r: 4, lora_alpha: 8, lora_dropout: 0.1, use_rslora: true, bias: "none",
      base_model_name_or_path: "my/base",
      target_modules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    })
    const header = await Effect.runPromise(readSafetensorsHeader(path.join(dir, "adapter_model.safetensors")))
    expect(header.tensors.length).toBe(2 * 7 * tinyConfig.numLayers)
    const byName = new Map(header.tensors.map((x) => [x.name, x]))
    expect(byName.get("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")?.shape).toEqual([4, 32])
    expect(byName.get("base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight")?.shape).toEqual([16, 4])
    expect(byName.get("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight")?.shape).toEqual([4, 64])
    expect(byName.get("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight")?.dtype).toBe("F32")
    expect(header.metadata).toEqual({ format: "pt" })
    t.dispose()
    expect(tf.memory().numTensors).toBe(baseline)
  })

  it("rejects an adapter with a missing half or a rank mismatch, naming the module", async () => {
    const dir = tmp()
    fs.writeFileSync(path.join(dir, "adapter_config.json"), JSON.stringify({
      peft_type: "LORA", task_type: "CAUSAL_LM", r: 2, lora_alpha: 4, lora_dropout: 0, target_modules: ["q_proj"],
      use_rslora: false, base_model_name_or_path: null, bias: "none"
    }))
    const key = (half: string) => `base_model.model.model.layers.0.self_attn.q_proj.lora_${half}.weight`
    await Effect.runPromise(writeSafetensors(path.join(dir, "adapter_model.safetensors"), [{ name: key("A"), shape: [2, 4], data: new Float32Array(8) }]))
    const missing = await run(readPeftAdapter(dir))
    expect(Exit.isFailure(missing) && String(missing.cause)).toContain("model.layers.0.self_attn.q_proj: lora_B is missing")
    await Effect.runPromise(writeSafetensors(path.join(dir, "adapter_model.safetensors"), [
      { name: key("A"), shape: [2, 4], data: new Float32Array(8) },
      { name: key("B"), shape: [4, 3], data: new Float32Array(12) }
    ]))
    const mismatch = await run(readPeftAdapter(dir))
    expect(Exit.isFailure(mismatch) && String(mismatch.cause)).toContain("do not form a rank-2 pair")
  })
})
