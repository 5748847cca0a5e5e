/**
 * `serve --base FOLDER` with a Hugging Face folder: the folder is converted to a temporary GGUF, a PEFT adapter
 * trained against the folder is served over it, and the temporary file is gone when the server stops.
 */
import { Effect } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { buildFinanceVocabulary, hfTokenizerFiles } from "../src/Training/FinanceVocabulary.ts"
import { toHfConfigJson } from "../src/Training/ModelLoader.ts"
import { writeSafetensors } from "../src/Training/Safetensors.ts"
import { canonicalWeights } from "../src/Training/TinyModel.ts"
import { tempDir, tinyConfig, writePeft } from "./ServeFixtures.ts"

const dir = tempDir("serve-hf")
const folder = path.join(dir, "my-llama")
const peft = path.join(dir, "adapter")
const main = path.resolve("src/Main.ts")
let child: ChildProcess | undefined

beforeAll(async () => {
  fs.mkdirSync(folder, { recursive: true })
  const tokenizer = hfTokenizerFiles(buildFinanceVocabulary(tinyConfig.vocabSize))
  fs.writeFileSync(path.join(folder, "config.json"), JSON.stringify(toHfConfigJson(tinyConfig)))
  fs.writeFileSync(path.join(folder, "tokenizer.json"), JSON.stringify(tokenizer.tokenizerJson))
  fs.writeFileSync(path.join(folder, "tokenizer_config.json"), JSON.stringify(tokenizer.tokenizerConfig))
  await Effect.runPromise(writeSafetensors(path.join(folder, "model.safetensors"), canonicalWeights(tinyConfig, { seed: 5 }), { metadata: { format: "pt" } }))
  await writePeft(peft, tinyConfig, { r: 4, alpha: 8 })
})
afterAll(() => {
  if (child !== undefined && child.exitCode === null) child.kill("SIGKILL")
  fs.rmSync(dir, { recursive: true, force: true })
})

describe("serve with a Hugging Face folder base", () => {
  it("converts the folder, serves /infer with the adapter, and removes the temporary GGUF on exit", async () => {
    child = spawn(process.execPath, [main, "serve", "--base", folder, "--adapter", `finance=${peft}`, "--port", "0", "--gpu", "off", "--threads", "1", "--parallel", "1"], { stdio: ["ignore", "pipe", "pipe"] })
    let stderr = ""
    const url = await new Promise<string>((resolve, reject) => {
      child!.stderr!.on("data", (d: Buffer) => {
        stderr += d.toString()
        const m = /serving .* on (http:\/\/[\d.]+:\d+)/.exec(stderr)
        if (m) resolve(m[1]!)
      })
      child!.on("exit", (code) => reject(new Error(`serve exited ${code}: ${stderr}`)))
    })
    const converted = /converting Hugging Face folder .* -> (\S+\.gguf)/.exec(stderr)?.[1]
    expect(converted).toBeDefined()
    expect(fs.statSync(converted!).size).toBeGreaterThan(0)
    expect(stderr).toContain("converting PEFT adapter")

    const response = await fetch(`${url}/infer`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ question: "What is AAPL trading at?", context: "AAPL price: 189.50", max_length: 120, temperature: 0 })
    })
    expect(response.status).toBe(200)
    const body = await response.json() as { answer: string; confidence: number }
    expect(typeof body.answer).toBe("string")
    expect(body.confidence).toBeGreaterThan(0)
    expect(body.confidence).toBeLessThanOrEqual(1)

    const exited = new Promise<void>((resolve) => child!.on("exit", () => resolve()))
    child.kill("SIGTERM")
    await exited
    expect(fs.existsSync(converted!)).toBe(false)
  })
})
