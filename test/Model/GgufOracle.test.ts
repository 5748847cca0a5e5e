/**
 * Every kind of GGUF the project writes, read back by gguf-py (llama.cpp's own Python package) in the test Python
 * on every CI run: `model init` (three presets, F32 and Q8_0 weights), `export adapter` (f32, f16) and
 * `export merged` (f32, q8_0), the first of each command through the built CLI. gguf-py must see the same metadata keys in the same
 * order, with the same types and values as our reader, every type must be the one llama.cpp's own GGUFWriter
 * gives that key, and the tensors must have the same names, ggml types, dims, offsets and bytes (sha256).
 * One Python process reads every file.
 */
import { NodeServices } from "@effect/platform-node"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type GgufHeader, type GgufValue, openGguf, readGgufHeader } from "../../src/Model/Gguf.ts"
import { presetConfig, type TinyPreset, type TinyTensorType, writeTinyModel } from "../../src/Model/TinyModel.ts"
import { exportAdapter, exportMerged } from "../../src/Serving/Export.ts"
import { writePeft } from "../Serving/ServeFixtures.ts"
import { oracleScript, projectRoot, runPythonJson } from "../support/python.ts"

const run = promisify(execFile)
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gguf-oracle-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

const cli = (...args: Array<string>) => run(process.execPath, ["dist/Main.js", ...args], { cwd: projectRoot, maxBuffer: 1 << 24 })

/** What each file is, for the test names and messages. */
const files: Record<string, string> = {
  "model init tiny F32": "init-tiny-f32.gguf",
  "model init tiny Q8_0": "init-tiny-q8.gguf",
  "model init llama3-tiny F32 (llama3 rope scaling)": "init-llama3.gguf",
  "model init mistral-tiny F32 (sliding window, tied output)": "init-mistral.gguf",
  "export adapter f32": "adapter-f32.gguf",
  "export adapter f16": "adapter-f16.gguf",
  "export merged f32": "merged-f32.gguf",
  "export merged q8_0": "merged-q8.gguf"
}
const file = (label: string) => path.join(dir, files[label]!)

interface PyEntry { key: string; types: Array<string>; value: unknown; canonical: Array<string> | null }
interface PyTensor { name: string; type: string; typeId: number; dims: Array<number>; nBytes: number; offset: number; sha256: string }
interface PyFile { path: string; ggufVersion: number; alignment: number; metadata: Array<PyEntry>; tensors: Array<PyTensor> }
let oracle: { version: string; files: Array<PyFile> }

beforeAll(async () => {
  const peft = path.join(dir, "peft")
  const base = file("model init tiny F32")
  // `model init` and `export adapter` once each through the built CLI; the other files through the same functions
  // in this process (each CLI start loads tfjs and llama.cpp's bindings, seconds on 2 cores)
  const init = (label: string, preset: TinyPreset, tensorType: TinyTensorType = "F32") =>
    Effect.runPromise(writeTinyModel({ config: presetConfig(preset), seed: 3, tensorType, path: file(label) }))
  const services = <A, E>(effect: Effect.Effect<A, E, NodeServices.NodeServices>) => Effect.runPromise(effect.pipe(Effect.provide(NodeServices.layer)))
  await Promise.all([
    cli("model", "init", "--preset", "tiny", "--out", base),
    init("model init tiny Q8_0", "tiny", "Q8_0"),
    init("model init llama3-tiny F32 (llama3 rope scaling)", "llama3-tiny"),
    init("model init mistral-tiny F32 (sliding window, tied output)", "mistral-tiny"),
    writePeft(peft, presetConfig("tiny"), { r: 4, alpha: 8, targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"] })
  ])
  await Promise.all([
    cli("export", "adapter", "--adapter", peft, "--base", base, "--out", file("export adapter f32")),
    services(exportAdapter({ adapter: peft, base, out: file("export adapter f16"), type: "F16" })),
    services(exportMerged({ adapter: peft, base, out: file("export merged f32"), type: "f32" })),
    services(exportMerged({ adapter: peft, base, out: file("export merged q8_0"), type: "q8_0" }))
  ])
  oracle = runPythonJson(oracleScript("gguf_dump"), { files: Object.keys(files).map(file) }) as typeof oracle
}, 600_000)

const typeName: Record<string, string> = {
  u8: "UINT8", i8: "INT8", u16: "UINT16", i16: "INT16", u32: "UINT32", i32: "INT32", f32: "FLOAT32", f64: "FLOAT64",
  u64: "UINT64", i64: "INT64", bool: "BOOL", string: "STRING", array: "ARRAY"
}

/** Our reader's view of an entry in gguf_dump.py's terms: type names, 64-bit integers as decimal strings. */
const ourTypes = (value: GgufValue): Array<string> =>
  value.type === "array" ? ["ARRAY", typeName[value.itemType]!] : [typeName[value.type]!]
const ourValue = (value: GgufValue): unknown => {
  if (value.type === "array") return Array.from(value.values as ArrayLike<unknown>, (v) => (typeof v === "bigint" ? String(v) : v))
  return typeof value.value === "bigint" ? String(value.value) : value.value
}

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")

const ours = async (label: string): Promise<{ header: GgufHeader; hashes: Map<string, string> }> =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const header = yield* readGgufHeader(file(label))
    const opened = yield* openGguf(file(label))
    const hashes = new Map<string, string>()
    for (const t of header.tensors) hashes.set(t.name, sha256(yield* opened.readRaw(t.name)))
    return { header, hashes }
  })))

const theirs = (label: string): PyFile => oracle.files[Object.keys(files).indexOf(label)]!

describe("GGUF files read back in gguf-py", () => {
  for (const label of Object.keys(files)) {
    it(`${label}: gguf-py (llama.cpp's gguf package) reads the same metadata keys, types and values`, async () => {
      const py = theirs(label)
      const { header } = await ours(label)
      expect(oracle.version).toMatch(/^0\.\d+\.\d+$/)
      expect(py.ggufVersion).toBe(header.version)
      expect(py.alignment).toBe(header.alignment)
      expect(py.metadata.map((e) => e.key)).toEqual([...header.metadata.keys()])
      for (const entry of py.metadata) {
        const value = header.metadata.get(entry.key)!
        expect(entry.types, `${label} ${entry.key}: types`).toEqual(ourTypes(value))
        expect(entry.value, `${label} ${entry.key}: value`).toEqual(ourValue(value))
      }
    })

    it(`${label}: every metadata type is the one gguf-py's GGUFWriter gives that key`, () => {
      const py = theirs(label)
      const unknown = py.metadata.filter((e) => e.canonical === null).map((e) => e.key)
      expect(unknown, `${label}: keys GGUFWriter has no typed method for`).toEqual([])
      for (const entry of py.metadata) expect(entry.types, `${label} ${entry.key}`).toEqual(entry.canonical)
    })

    it(`${label}: gguf-py sees the same tensor names, ggml types, dims, offsets and bytes`, async () => {
      const py = theirs(label)
      const { header, hashes } = await ours(label)
      expect(py.tensors.map((t) => t.name)).toEqual(header.tensors.map((t) => t.name))
      py.tensors.forEach((t, i) => {
        const mine = header.tensors[i]!
        expect([t.typeId, t.type, t.dims, t.nBytes, t.offset], t.name).toEqual([mine.type, mine.typeName, [...mine.dims], mine.byteSize, mine.offset])
        expect(t.sha256, `${label} ${t.name}: bytes`).toBe(hashes.get(t.name))
      })
      expect(py.tensors.length).toBeGreaterThan(0)
    })
  }

  it("the files cover F32, F16 and Q8_0 tensors, adapter and model metadata, llama3's rope factors and the sliding window", () => {
    const all = oracle.files.flatMap((f) => f.tensors.map((t) => t.type))
    expect(new Set(all)).toEqual(new Set(["F32", "F16", "Q8_0"]))
    const keys = new Set(oracle.files.flatMap((f) => f.metadata.map((e) => e.key)))
    for (const key of ["adapter.type", "adapter.lora.alpha", "llama.attention.sliding_window", "tokenizer.ggml.tokens"]) {
      expect(keys.has(key), key).toBe(true)
    }
    // llama3 rope scaling is a tensor of per-dimension factors in GGUF (as llama.cpp's converter writes it)
    expect(theirs("model init llama3-tiny F32 (llama3 rope scaling)").tensors.map((t) => t.name)).toContain("rope_freqs.weight")
    // the tied output: no output.weight in the mistral-tiny file
    expect(theirs("model init mistral-tiny F32 (sliding window, tied output)").tensors.map((t) => t.name)).not.toContain("output.weight")
  })
})
