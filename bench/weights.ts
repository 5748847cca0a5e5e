/**
 * `npm run bench:weights`: the weight formats. Measures, in one run:
 * - dequantization throughput (float32 values out per second) of every type the GGUF reader supports, beside the
 *   baseline of copying float32 values (the floor any loader pays), and the writer's F16 / Q8_0 encoders;
 * - writing TinyLlama-1.1B's shape as a random F16 GGUF tensor by tensor (time, peak RSS);
 * - streaming that file through `loadModelSource` (GGUF -> canonical float32 tensors, Q/K unpermuted), once
 *   dropping each tensor and once keeping them all, each in its own child process so its peak RSS is its own,
 *   against the float32 size of the weights and a naive baseline that reads the whole file into one buffer first.
 *
 *   node bench/weights.ts [--quick]      (--quick: the `small` preset instead of the 1.1B shape)
 *
 * Writes the results into the `## Weights and formats` section of BENCHMARKS.md.
 */
import { Effect, Stream } from "effect"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { closeFile, openForRead, readAt } from "../src/Model/BinaryFile.ts"
import { f32ArrayToF16 } from "../src/Model/Float16.ts"
import { dequantize, GgmlType, quantizeQ8_0 } from "../src/Model/GgmlQuants.ts"
import { readGgufHeader } from "../src/Model/Gguf.ts"
import type { NamedTensor } from "../src/Model/ModelContracts.ts"
import { loadModelSource } from "../src/Model/ModelLoader.ts"
import { parameterCount, presetConfig, writeTinyModel } from "../src/Model/TinyModel.ts"
import { writeBenchmarkSection } from "./BenchmarksFile.ts"

const maxRss = () => process.resourceUsage().maxRSS * 1024
const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`
const self = fileURLToPath(import.meta.url)

// ---- child modes ---------------------------------------------------------------------------------------------
const [mode, file, preset] = [process.argv[2], process.argv[3], process.argv[4]]
if (mode === "write" || mode === "stream" || mode === "keep" || mode === "naive") {
  const before = process.memoryUsage().rss
  const start = performance.now()
  let floats = 0
  if (mode === "write") {
    await Effect.runPromise(writeTinyModel({ config: presetConfig(preset as "bench-1b"), seed: 1, tensorType: "F16", path: file! }))
  } else if (mode === "naive") {
    // baseline: the whole file in one buffer, then every tensor converted from it
    const header = await Effect.runPromise(readGgufHeader(file!))
    const handle = openForRead(file!)
    const whole = readAt(handle, 0, handle.size, "the whole file") // readFileSync stops at 2 GiB
    closeFile(handle)
    const kept: Array<Float32Array> = []
    for (const t of header.tensors) {
      const bytes = new Uint8Array(t.byteSize!)
      bytes.set(whole.subarray(t.start, t.start + t.byteSize!))
      kept.push(dequantize(t.type, bytes, t.numel))
      floats += t.numel
    }
    if (kept.length === 0) throw new Error("nothing read")
  } else {
    const source = await Effect.runPromise(loadModelSource(file!))
    const kept: Array<NamedTensor> = []
    await Effect.runPromise(Stream.runForEach(source.weights, (t) => Effect.sync(() => {
      floats += t.data.length
      if (mode === "keep") kept.push(t)
    })))
    if (mode === "keep" && kept.length === 0) throw new Error("nothing kept")
  }
  const seconds = (performance.now() - start) / 1000
  console.log(JSON.stringify({ seconds, rssBefore: before, peak: maxRss(), floats }))
  process.exit(0)
}

// ---- parent --------------------------------------------------------------------------------------------------
const quick = process.argv.includes("--quick")
const modelPreset = quick ? "small" : "bench-1b"
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bench-weights-"))

// 1. kernels, in-process: 16M values per type, best of 5
const N = 1 << 24
let state = 7
const randomBytes = (n: number) => {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0
    out[i] = state >>> 24
  }
  return out
}
/** blocks with random quants and small, finite float16 scales */
const blocks = (type: number): Uint8Array => {
  const layout: Record<number, readonly [number, number, ReadonlyArray<number>]> = {
    [GgmlType.F16]: [1, 2, []], [GgmlType.BF16]: [1, 2, []], [GgmlType.Q8_0]: [32, 34, [0]], [GgmlType.Q4_0]: [32, 18, [0]],
    [GgmlType.Q4_K]: [256, 144, [0, 2]], [GgmlType.Q5_K]: [256, 176, [0, 2]], [GgmlType.Q6_K]: [256, 210, [208]]
  }
  const [perBlock, size, halves] = layout[type]!
  const bytes = randomBytes((N / perBlock) * size)
  if (type === GgmlType.F16 || type === GgmlType.BF16) {
    for (let i = 1; i < bytes.length; i += 2) bytes[i] = bytes[i]! & 0x3b // keep exponents finite
  }
  for (let b = 0; b < bytes.length; b += size) for (const h of halves) { bytes[b + h] = 0x00; bytes[b + h + 1] = 0x20 }
  return bytes
}
const best = (f: () => void) => {
  f()
  let t = Infinity
  for (let r = 0; r < 5; r++) {
    const s = performance.now()
    f()
    t = Math.min(t, performance.now() - s)
  }
  return t / 1000
}
const source = new Float32Array(N).map((_, i) => Math.sin(i))
const copyTarget = new Float32Array(N)
const baseline = best(() => copyTarget.set(new Float32Array(source))) // allocate + copy, as every kernel allocates its output
const kernels: Array<[string, number]> = [["float32 copy (baseline)", baseline]]
for (const [name, type] of [["F32", GgmlType.F32], ["F16", GgmlType.F16], ["BF16", GgmlType.BF16], ["Q8_0", GgmlType.Q8_0], ["Q4_0", GgmlType.Q4_0], ["Q4_K", GgmlType.Q4_K], ["Q5_K", GgmlType.Q5_K], ["Q6_K", GgmlType.Q6_K]] as const) {
  const bytes = type === GgmlType.F32 ? new Uint8Array(source.buffer) : blocks(type)
  kernels.push([`dequantize ${name}`, best(() => dequantize(type, bytes, N))])
}
kernels.push(["encode F16 (writer)", best(() => f32ArrayToF16(source))])
kernels.push(["quantize Q8_0 (writer)", best(() => quantizeQ8_0(source))])
for (const [name, s] of kernels) console.log(`${name}: ${(N / s / 1e6).toFixed(0)} M values/s`)

// 2. write and load the big model, each in a child process
const child = (...args: Array<string>) => {
  const r = spawnSync(process.execPath, [self, ...args], { encoding: "utf8", maxBuffer: 1 << 20 })
  if (r.status !== 0) throw new Error(`child ${args[0]} failed: ${r.stderr}`)
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as { seconds: number; rssBefore: number; peak: number; floats: number }
}
const modelFile = path.join(dir, `${modelPreset}-f16.gguf`)
const config = presetConfig(modelPreset)
const write = child("write", modelFile, modelPreset)
const fileBytes = fs.statSync(modelFile).size
console.log(`write: ${write.seconds.toFixed(1)} s, peak RSS ${mib(write.peak)}, file ${mib(fileBytes)}`)
const runs = { stream: child("stream", modelFile), keep: child("keep", modelFile), naive: child("naive", modelFile) }
const f32Bytes = runs.keep.floats * 4
for (const [name, r] of Object.entries(runs)) {
  console.log(`${name}: ${r.seconds.toFixed(1)} s, RSS growth ${mib(r.peak - r.rssBefore)} (${((r.peak - r.rssBefore) / f32Bytes).toFixed(2)} x float32 weights)`)
}
fs.rmSync(dir, { recursive: true, force: true })

// 3. BENCHMARKS.md
const cpu = os.cpus()[0]?.model.trim() ?? "unknown CPU"
const load = os.loadavg()[0]!.toFixed(1)
const growth = (r: { peak: number; rssBefore: number }) => r.peak - r.rssBefore
const section = [
  `Command: \`npm run bench:weights\`${quick ? " -- --quick" : ""} (bench/weights.ts). Machine: ${os.cpus().length}-core ${cpu}, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}.`,
  `The machine was shared with other engineers' builds and tests while this ran (1-minute load average ${load} at the end, on ${os.cpus().length} cores), so absolute`,
  "rates are noisy; the ratios to the baseline measured in the same run are the steadier figures.",
  "",
  `Kernels: ${N.toLocaleString("en-US")} values per type (random blocks with finite scales), best of 5 passes after a warm-up, one thread.`,
  "",
  "| kernel | M values/s | time × float32 copy |",
  "| --- | ---: | ---: |",
  ...kernels.map(([name, s]) => `| ${name} | ${(N / s / 1e6).toFixed(0)} | ${(s / baseline).toFixed(1)} |`),
  "",
  `Model: ${modelPreset === "bench-1b" ? "TinyLlama-1.1B shape (`bench-1b`: 22 layers, d 2048, GQA 32/4, vocab 32000)" : "`small` preset"}, ${(parameterCount(config) / 1e9).toFixed(3)}B parameters, random F16 GGUF of ${mib(fileBytes)}; float32 weights = ${mib(f32Bytes)}.`,
  "Each row ran in its own child process; RSS growth = peak RSS (getrusage maxRSS) minus RSS before the work.",
  "",
  "| step | seconds | RSS growth | × float32 weights |",
  "| --- | ---: | ---: | ---: |",
  `| write the GGUF tensor by tensor (\`writeTinyModel\`, F16) | ${write.seconds.toFixed(1)} | ${mib(growth(write))} | ${(growth(write) / f32Bytes).toFixed(2)} |`,
  `| stream every weight (\`loadModelSource\`), dropping each | ${runs.stream.seconds.toFixed(1)} | ${mib(growth(runs.stream))} | ${(growth(runs.stream) / f32Bytes).toFixed(2)} |`,
  `| stream every weight, keeping all (one float32 copy) | ${runs.keep.seconds.toFixed(1)} | ${mib(growth(runs.keep))} | ${(growth(runs.keep) / f32Bytes).toFixed(2)} |`,
  `| baseline: whole file in one buffer, then convert, keeping all | ${runs.naive.seconds.toFixed(1)} | ${mib(growth(runs.naive))} | ${(growth(runs.naive) / f32Bytes).toFixed(2)} |`,
  "",
  "The loader reads one tensor's bytes at a time through the file handle, so keeping every weight costs one float32",
  "copy plus about one tensor; the whole-file baseline also holds the file's bytes. Dropping each tensor, the peak is",
  "the largest tensor (the token embedding: its float32 copy plus its file bytes). The kernel rates are the noisiest",
  "figures here: with the cores oversubscribed, a pass that was descheduled loses its best-of-5.",
  ""
].join("\n")
const header = "## Weights and formats (`npm run bench:weights`)"
writeBenchmarkSection(header, header + "\n\n" + section)
console.log("written to BENCHMARKS.md")
