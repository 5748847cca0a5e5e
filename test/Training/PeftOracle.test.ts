/**
 * Oracle: PEFT 0.21.2 (over transformers 5.24.0's LlamaForCausalLM, float32) and our adapters, both ways.
 * - An adapter our trainer trained (rsLoRA, all linear modules) and wrote in PEFT's layout loads with
 *   `PeftModel.from_pretrained` without a missing- or unexpected-key warning, PEFT gives each module the scale
 *   AdapterConfig.scaleOf gives it, and the adapted logits equal our adapted forward within 1e-4. A copy with one
 *   module's weights removed is the control: PEFT does warn about it, so the warning capture is real.
 * - An adapter PEFT made itself (rank_pattern, alpha_pattern, use_rslora, random non-zero B) gives the same
 *   logits in our forward (readPeftAdapter + loraTransform over its AdapterConfig: the path `eval --engine core`
 *   takes).
 * - PEFT's get_pattern_key and AdapterConfig agree on which pattern entry applies to each module.
 * One Python process answers every case.
 */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import * as tf from "@tensorflow/tfjs-core"
import "@tensorflow/tfjs-backend-cpu"
import { Effect, Schema, Stream } from "effect"
import * as fs from "node:fs"
import { join } from "node:path"
import { beforeAll } from "vitest"
import { decodeAdapterConfig } from "../../src/Model/AdapterConfig.ts"
import { registerGradients } from "../../src/Model/Device.ts"
import { LlamaModel } from "../../src/Model/LlamaModel.ts"
import { DropoutContext, isLoraLayer, loraTransform } from "../../src/Model/Lora.ts"
import { weightNames } from "../../src/Model/ModelContracts.ts"
import { loadModelSource } from "../../src/Model/ModelLoader.ts"
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, loadAdapterInto, readPeftAdapter } from "../../src/Model/PeftAdapter.ts"
import { openSafetensors, writeSafetensors } from "../../src/Model/Safetensors.ts"
import { presetConfig, writeTinyHfFolder } from "../../src/Model/TinyModel.ts"
import { SeededRng } from "../../src/Shared/Prng.ts"
import { runTraining } from "../../src/Training/Trainer.ts"
import { tempDir } from "../Model/WeightFileFixtures.ts"
import { oracleScript, runPythonJson } from "../support/python.ts"
import { baseTrainConfig, byteTokenizer, examples } from "./TrainFixtures.ts"

const Logits = { shape: Schema.Array(Schema.Int), logits: Schema.String }
const OracleAnswer = Schema.Struct({
  versions: Schema.Struct({ torch: Schema.String, transformers: Schema.String, peft: Schema.String }),
  results: Schema.Tuple([
    Schema.Struct({ id: Schema.Literal("ours"), warnings: Schema.Array(Schema.String), scales: Schema.Record(Schema.String, Schema.Finite), ...Logits }),
    Schema.Struct({ id: Schema.Literal("control"), warnings: Schema.Array(Schema.String), scales: Schema.Record(Schema.String, Schema.Finite), ...Logits }),
    Schema.Struct({ id: Schema.Literal("theirs"), ...Logits }),
    Schema.Struct({ id: Schema.Literal("patterns"), keys: Schema.Array(Schema.String) })
  ])
})

const dir = tempDir("peft-oracle")
const folder = join(dir, "base")
const config = presetConfig("llama3-tiny")
const tokens = [
  [256, ...new TextEncoder().encode("Context: \nQuestion: AAPL?\nAnswer: ")].slice(0, 24),
  Array.from({ length: 24 }, (_, i) => (i * 37 + 11) % 256)
]
const patterns = { "model.layers.1.self_attn.q_proj": 2, k_proj: 3, "layers\\.0\\.mlp\\.down_proj": 1 }
const modules = Array.from({ length: config.numLayers }, (_, l) =>
  (["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const).map((m) => weightNames.linear(l, m))).flat()

const run = <A, E>(e: Effect.Effect<A, E, any>) => Effect.runPromise(e.pipe(Effect.provide(NodeServices.layer)) as Effect.Effect<A, E, never>)
const decodeLogits = (b64: string) => {
  const bytes = Buffer.from(b64, "base64")
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)
}
const maxDiff = (a: Float32Array, b: Float32Array) => {
  assert.strictEqual(a.length, b.length)
  let d = 0
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!))
  return d
}

/** Our forward over the base folder, with a PEFT adapter folder loaded into LoRA layers (or none). */
const ourLogits = async (adapterDir: string | undefined): Promise<Float32Array> => {
  const base = await run(LlamaModel.load(folder))
  const before = tf.memory().numTensors
  try {
    if (adapterDir === undefined) return tf.tidy(() => base.logits(tf.tensor2d(tokens, undefined, "int32")).dataSync() as Float32Array)
    const adapter = await run(readPeftAdapter(adapterDir))
    const adapted = base.withLinears(loraTransform(adapter.config, new SeededRng(0), new DropoutContext()))
    await Effect.runPromise(loadAdapterInto(adapter, [...adapted.linears.values()].filter(isLoraLayer), adapterDir))
    const out = tf.tidy(() => adapted.logits(tf.tensor2d(tokens, undefined, "int32")).dataSync() as Float32Array)
    adapted.dispose()
    assert.strictEqual(tf.memory().numTensors, before)
    return out
  } finally {
    base.dispose()
  }
}

let answer: typeof OracleAnswer.Type
let trained: string

beforeAll(async () => {
  await registerGradients()
  await tf.setBackend("cpu")
  await Effect.runPromise(writeTinyHfFolder({ config, seed: 5, folder, initStd: 0.1, normStd: 0.1 }))
  // our trainer: rsLoRA on every linear module, a few steps at a high rate so B is far from zero
  const source = await run(loadModelSource(folder))
  const result = await run(runTraining({
    modelConfig: source.config,
    weights: () => Stream.toAsyncIterable(source.weights),
    tokenizer: byteTokenizer,
    baseModelName: folder,
    train: examples(),
    validation: []
  }, baseTrainConfig(join(dir, "run"), {
    targetModules: "all-linear", r: 4, loraAlpha: 8, useRslora: true, loraDropout: 0, epochs: 2, batchSize: 4,
    learningRate: 5e-2, warmupSteps: 0, logEvery: 1, evalEvery: 100, saveEvery: 100, evalGenerationSamples: 0,
    metricForBest: "eval_loss", maxSeqLength: 64
  }), { onLog: () => {} }))
  trained = result.finalDir
  // the control: the same adapter without down_proj's weights
  const control = join(dir, "control")
  fs.mkdirSync(control)
  fs.copyFileSync(join(trained, ADAPTER_CONFIG), join(control, ADAPTER_CONFIG))
  const kept = await run(Effect.scoped(Effect.gen(function*() {
    const file = yield* openSafetensors(join(trained, ADAPTER_WEIGHTS))
    return yield* Effect.forEach(file.tensors.filter((t) => !t.name.includes("down_proj")), (t) => file.readTensor(t.name))
  })))
  await Effect.runPromise(writeSafetensors(join(control, ADAPTER_WEIGHTS), kept, { metadata: { format: "pt" } }))

  const raw = runPythonJson(oracleScript("llama_forward"), {
    threads: 2,
    cases: [
      { id: "ours", kind: "peftLoad", folder, adapter: trained, tokens },
      { id: "control", kind: "peftLoad", folder, adapter: control, tokens },
      {
        id: "theirs",
        kind: "peftMake",
        folder,
        out: join(dir, "theirs"),
        seed: 3,
        tokens,
        lora: {
          r: 4,
          lora_alpha: 8,
          use_rslora: true,
          target_modules: ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
          rank_pattern: { "model.layers.1.self_attn.q_proj": 2, k_proj: 3 },
          alpha_pattern: { v_proj: 16, "layers\\.0\\.mlp\\.down_proj": 2 }
        }
      },
      { id: "patterns", kind: "patternKeys", folder, tokens: [], patterns, modules }
    ]
  })
  answer = Schema.decodeUnknownSync(OracleAnswer)(raw)
  assert.deepStrictEqual([answer.versions.peft, answer.versions.transformers], ["0.21.2", "5.24.0"])
}, 600_000)

describe("PEFT 0.21.2 / transformers 5.24.0 and our LoRA adapters", () => {
  it("our trainer's adapter loads in PeftModel.from_pretrained with no missing/unexpected-key warning, PEFT's scales, logits within 1e-4", async () => {
    const [ours, control] = answer.results
    const keyWarnings = (w: ReadonlyArray<string>) => w.filter((m) => /missing|unexpected/i.test(m))
    assert.deepStrictEqual(keyWarnings(ours.warnings), [], ours.warnings.join("\n"))
    // the capture sees PEFT's warning when keys are missing
    assert.isNotEmpty(keyWarnings(control.warnings), control.warnings.join("\n"))
    const expected = decodeLogits(ours.logits)
    const actual = await ourLogits(trained)
    assert.isAtMost(maxDiff(actual, expected), 1e-4)
    const adapter = await run(readPeftAdapter(trained))
    const peftScales = Object.entries(ours.scales).map(([name, s]) => [name.replace(/^base_model\.model\./, ""), s] as const)
    assert.strictEqual(peftScales.length, modules.length)
    for (const [module, scale] of peftScales) assert.closeTo(adapter.config.scaleOf(module), scale, 1e-12, module)
    assert.closeTo(adapter.config.scaleOf(modules[0]!), 8 / 2, 1e-12) // rsLoRA: alpha / √r
    // the adapter changes the model, so the comparison tests it
    assert.isAbove(maxDiff(actual, await ourLogits(undefined)), 1e-2)
  })

  it("an adapter PEFT made (rank_pattern, alpha_pattern, use_rslora) gives PEFT's logits in our forward within 1e-4", async () => {
    const theirsDir = join(dir, "theirs")
    const adapter = await run(readPeftAdapter(theirsDir))
    assert.deepStrictEqual(
      [weightNames.linear(1, "q_proj"), weightNames.linear(0, "k_proj"), weightNames.linear(0, "q_proj")].map((m) => adapter.modules.get(m)!.a.shape[0]),
      [2, 3, 4]
    )
    const expected = decodeLogits(answer.results[2].logits)
    const actual = await ourLogits(theirsDir)
    assert.isAtMost(maxDiff(actual, expected), 1e-4)
    assert.closeTo(adapter.config.scaleOf(weightNames.linear(0, "v_proj")), 16 / 2, 1e-12)
    assert.closeTo(adapter.config.scaleOf(weightNames.linear(0, "down_proj")), 2 / 2, 1e-12)
    assert.closeTo(adapter.config.scaleOf(weightNames.linear(1, "down_proj")), 8 / 2, 1e-12)
    assert.isAbove(maxDiff(actual, await ourLogits(undefined)), 1e-2)
  })

  it("PEFT's get_pattern_key and AdapterConfig pick the same pattern entry for every module", () => {
    const config = Effect.runSync(decodeAdapterConfig(JSON.stringify({ peft_type: "LORA", r: 8, lora_alpha: 8, target_modules: ["q_proj"], rank_pattern: patterns })))
    const keys = answer.results[3].keys
    modules.forEach((m, i) => {
      const expected = keys[i]! in patterns ? patterns[keys[i] as keyof typeof patterns] : 8
      assert.strictEqual(config.rankOf(m), expected, m)
    })
    // the patterns are exercised: each entry applies somewhere
    assert.includeMembers([...new Set(keys)], Object.keys(patterns))
  })
})
