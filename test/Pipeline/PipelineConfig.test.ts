import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import {
  canonicalJson,
  defaultPipelineConfig,
  mergeConfig,
  renderConfigReference,
  resolvePipelineConfig,
  validatePipelineConfig
} from "../../src/Pipeline/PipelineConfig.ts"
import { flagsToConfig } from "../../src/Pipeline/PipelineCli.ts"
import { pairedBootstrap } from "../../src/Evaluation/Margins.ts"
import { Option } from "effect"

const tmpFile = (name: string, text: string) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pipeline-config-"))
  const file = path.join(dir, name)
  fs.writeFileSync(file, text)
  return file
}

const noFlags = {
  config: Option.none(), data: Option.none(), model: Option.none(), out: Option.none(), force: Option.none(),
  device: Option.none(), engine: Option.none(), python: Option.none(), synthCount: Option.none(), pretrainSteps: Option.none(),
  trainSteps: Option.none(), learningRate: Option.none(),
  evalSamples: Option.none(), maxNewTokens: Option.none(), merged: false, requireImprovement: false
} as const

describe("pipeline config", () => {
  it.effect("the defaults validate, and a file overrides them section by section", () =>
    Effect.gen(function*() {
      const ok = yield* validatePipelineConfig(defaultPipelineConfig, "defaults")
      assert.deepStrictEqual(ok, defaultPipelineConfig)
      const file = tmpFile("p.yaml", "out: runs/mine\ntrain:\n  r: 8\n  targetModules: all-linear\neval:\n  samples: 5\n")
      const config = yield* resolvePipelineConfig(file, {})
      assert.strictEqual(config.out, "runs/mine")
      assert.strictEqual(config.train.r, 8)
      assert.strictEqual(config.train.targetModules, "all-linear")
      // untouched keys of a touched section keep their defaults
      assert.strictEqual(config.train.loraAlpha, defaultPipelineConfig.train.loraAlpha)
      assert.strictEqual(config.eval.samples, 5)
      assert.strictEqual(config.eval.maxNewTokens, defaultPipelineConfig.eval.maxNewTokens)
    }).pipe(Effect.provide(NodeServices.layer)))

  it.effect("flags override the file", () =>
    Effect.gen(function*() {
      const file = tmpFile("p.yaml", "data:\n  synthCount: 300\neval:\n  samples: 5\n")
      const config = yield* resolvePipelineConfig(file, flagsToConfig({
        ...noFlags,
        synthCount: Option.some(77),
        trainSteps: Option.some(9),
        data: Option.some("mine.jsonl"),
        merged: true
      }))
      assert.strictEqual(config.data.synthCount, 77)
      assert.strictEqual(config.data.file, "mine.jsonl")
      assert.strictEqual(config.train.maxSteps, 9)
      assert.strictEqual(config.eval.samples, 5)
      assert.strictEqual(config.export.merged, true)
    }).pipe(Effect.provide(NodeServices.layer)))

  it.effect("a bad value, an unknown key and a YAML syntax error each name the field or line", () =>
    Effect.gen(function*() {
      const bad = tmpFile("bad.yaml", "train:\n  r: -3\n")
      const e1 = yield* Effect.flip(resolvePipelineConfig(bad, {}))
      assert.strictEqual(e1.field, "train.r")
      assert.strictEqual(e1.source, bad)
      const unknown = tmpFile("unknown.yaml", "eval:\n  sampels: 3\n")
      const e2 = yield* Effect.flip(resolvePipelineConfig(unknown, {}))
      assert.strictEqual(e2.field, "eval.sampels")
      const syntax = tmpFile("syntax.yaml", "out: runs/x\ndata: {synthCount: 3\n")
      const e3 = yield* Effect.flip(resolvePipelineConfig(syntax, {}))
      assert.match(e3.source, /syntax\.yaml:\d+$/)
      const e4 = yield* Effect.flip(resolvePipelineConfig(undefined, { device: "tpu" }))
      assert.strictEqual(e4.field, "device")
      assert.strictEqual(e4.source, "flags")
    }).pipe(Effect.provide(NodeServices.layer)))

  it("merges one level deep and hashes independently of key order", () => {
    const merged = mergeConfig({ a: { x: 1, y: 2 }, b: 1 }, { a: { y: 3 }, c: undefined })
    assert.deepStrictEqual(merged, { a: { x: 1, y: 3 }, b: 1 })
    assert.strictEqual(canonicalJson({ b: 1, a: { d: 2, c: [1, { f: 1, e: 2 }] } }), canonicalJson({ a: { c: [1, { e: 2, f: 1 }], d: 2 }, b: 1 }))
    assert.notStrictEqual(canonicalJson({ a: 1 }), canonicalJson({ a: 2 }))
  })

  it("the paired bootstrap interval brackets the mean delta and is degenerate for constant deltas", () => {
    const constant = pairedBootstrap([0.2, 0.2, 0.2, 0.2], 1)
    assert.closeTo(constant.low, 0.2, 1e-12)
    assert.closeTo(constant.high, 0.2, 1e-12)
    const deltas = [0.1, 0.3, -0.1, 0.5, 0.2, 0.0, 0.4, 0.1]
    const mean = deltas.reduce((a, b) => a + b, 0) / deltas.length
    const ci = pairedBootstrap(deltas, 7)
    assert.isTrue(ci.low < mean && mean < ci.high)
    assert.isTrue(ci.low >= -0.1 && ci.high <= 0.5)
    // seeded: the same inputs give the same interval
    assert.deepStrictEqual(pairedBootstrap(deltas, 7), ci)
  })

  it("docs/config-reference.md is what scripts/config-reference.ts generates from the Schema", () => {
    const committed = fs.readFileSync(new URL("../../docs/config-reference.md", import.meta.url), "utf8")
    assert.strictEqual(committed, renderConfigReference(), "docs/config-reference.md drifted: run ./node_modules/.bin/node scripts/config-reference.ts")
    // every section and every leaf key of the defaults is documented
    for (const [section, value] of Object.entries(defaultPipelineConfig)) {
      if (typeof value !== "object") assert.include(committed, `| \`${section}\` |`)
      else for (const key of Object.keys(value)) assert.include(committed, `| \`${section}.${key}\` |`)
    }
  })
})
