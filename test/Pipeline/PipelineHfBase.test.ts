import { Effect } from "effect"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { metaString, readGgufHeader } from "../../src/Model/Gguf.ts"
import type { LlamaConfig } from "../../src/Model/ModelContracts.ts"
import { writeHfBase } from "../Serving/ServeFixtures.ts"

// The pipeline with the user's own Hugging Face folder as base (`--model FOLDER`), through the built CLI: training
// reads the folder, the export stage converts it to GGUF beside the adapter, and evaluation and serving run on
// llama.cpp over that GGUF instead of being skipped.
const main = path.resolve("dist/Main.js")
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pipeline-hf-test-"))
const out = path.join(dir, "run")
const folder = path.join(dir, "my-llama")
const configFile = path.join(dir, "mini.yaml")
const config: LlamaConfig = {
  vocabSize: 4096, hiddenSize: 32, intermediateSize: 64, numLayers: 1, numHeads: 2, numKvHeads: 1,
  headDim: 16, rmsNormEps: 1e-5, ropeTheta: 10000, maxPositionEmbeddings: 2048, tieWordEmbeddings: false
}

let ran: { code: number; stdout: string; stderr: string }

beforeAll(async () => {
  await writeHfBase(folder, config, { seed: 3 })
  fs.writeFileSync(configFile, [
    `out: ${JSON.stringify(out)}`,
    "device: wasm",
    "data: { synthCount: 200, seed: 7 }",
    // the in-process engine and the seed layout: this test is about the HF-folder base, not the engine (torch has its own)
    "train: { engine: tfjs, promptLayout: seed, maxSteps: 2, batchSize: 2, maxSeqLength: 160, evalEvery: 2, saveEvery: 2, evalGenerationSamples: 1, r: 4, loraAlpha: 8, warmupSteps: 1 }",
    "eval: { samples: 2, maxNewTokens: 8 }",
    "serve: { questions: 1, maxLength: 600 }",
    ""
  ].join("\n"))
  ran = await new Promise((resolve) => {
    execFile(process.execPath, [main, "pipeline", "--config", configFile, "--model", folder], { maxBuffer: 64 * 2 ** 20 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr })
    })
  })
}, 600_000)

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

describe("pipeline on a Hugging Face folder base", () => {
  it("converts the folder to GGUF in the export stage, with its tokenizer", async () => {
    expect(ran.stderr).not.toMatch(/\n\s+at /)
    expect(ran.code, ran.stderr.slice(-2000)).toBe(0)
    const converted = path.join(out, "export", "base-f16.gguf")
    const header = await Effect.runPromise(readGgufHeader(converted))
    expect(metaString(header, "general.type")).toBe("model")
    expect(metaString(header, "tokenizer.ggml.model")).toBe("llama")
    expect(header.tensors.find((t) => t.name === "blk.0.attn_q.weight")!.typeName).toBe("F16")
    expect(fs.existsSync(path.join(out, "model"))).toBe(false) // no project-made base, no pre-training
  })

  it("evaluates base and tuned through llama.cpp and serves the adapter over the converted base", () => {
    for (const system of ["base", "tuned"]) {
      const aggregate = JSON.parse(fs.readFileSync(path.join(out, "eval", system, "aggregate.json"), "utf8"))
      expect(aggregate.scored).toBe(2)
      expect(aggregate.metrics.rougeL).toBeGreaterThanOrEqual(0)
    }
    const served = JSON.parse(fs.readFileSync(path.join(out, "serve", "answers.json"), "utf8"))
    expect(served.answers).toHaveLength(1)
    expect(typeof served.answers[0].answer).toBe("string")
    expect(served.answers[0].confidence).toBeGreaterThan(0)
  })
})
