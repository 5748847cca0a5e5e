/**
 * `npm run bench:model`: forward (prefill) and decode tokens/s and peak RSS of our tfjs model on each backend
 * available here, beside llama.cpp (node-llama-cpp) on the same GGUF file, in the same run; and peak RSS of loading
 * against the float32 size of the weights.
 *
 * Each measurement runs in its own child process so its peak RSS (VmHWM) is its own. Models: the built-in
 * `tiny` default (F32 GGUF) and TinyLlama-1.1B's shape (random F16 GGUF), both made by `writeTinyModel`.
 *
 *   node bench/model.ts [--quick] [--keep]
 *   --quick: tiny model only, printed, BENCHMARKS.md left alone; --keep: keep the 2.2 GB 1.1B file in the tmp dir
 */
import * as tf from "@tensorflow/tfjs-core"
import { Effect, Layer } from "effect"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { getLlama, LlamaLogLevel, type Token } from "node-llama-cpp"
import { Device, formatBytes, parameterCount } from "../src/Model/Device.ts"
import { generate } from "../src/Model/Generation.ts"
import { LlamaModel } from "../src/Model/LlamaModel.ts"
import type { LlamaConfig } from "../src/Model/ModelContracts.ts"
import { presetConfig, writeTinyModel } from "../src/Model/TinyModel.ts"
import { writeBenchmarkSection } from "./BenchmarksFile.ts"

type ModelName = "tiny" | "1.1b"
type Engine = "wasm" | "cpu" | "llama.cpp-1t" | "llama.cpp-2t"

interface Job {
  readonly model: ModelName
  readonly engine: Engine
  readonly file: string
  readonly fileBytes: number
  readonly promptTokens: number
  readonly decodeTokens: number
  readonly repeats: number
}

interface Result {
  readonly job: Job
  readonly loadSeconds?: number
  /** RSS just before loading the weights (runtime, backend, libraries) */
  readonly rssBeforeLoadBytes?: number
  readonly loadPeakRssBytes?: number
  readonly prefill?: Timing
  readonly decode?: Timing & { readonly tokens: number }
  readonly peakRssBytes?: number
  readonly note?: string
}

const configs: Record<ModelName, LlamaConfig> = { tiny: presetConfig("tiny"), "1.1b": presetConfig("bench-1b") }

/**
 * Peak RSS of this process. Linux keeps getrusage's maxRSS across exec, so a child spawned by a big parent starts
 * with the parent's peak; /proc's VmHWM belongs to the new address space and starts fresh.
 */
const maxRss = (): number => {
  try {
    const hwm = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync("/proc/self/status", "utf8"))
    if (hwm !== null) return Number(hwm[1]) * 1024
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS * 1024
}

/** token ids past the byte and special tokens, from a fixed LCG so both engines see the same prompt */
const promptIds = (config: LlamaConfig, n: number): Array<number> => {
  let x = 12345
  return Array.from({ length: n }, () => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    return 300 + (x % (config.vocabSize - 300))
  })
}

interface Timing {
  readonly wall: number
  /** this process's user + system CPU seconds (all its threads) */
  readonly cpu: number
}
const timed = async (f: () => unknown): Promise<Timing> => {
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  await f()
  const cpu = process.cpuUsage(cpu0)
  return { wall: (performance.now() - t0) / 1000, cpu: (cpu.user + cpu.system) / 1e6 }
}
const best = (times: ReadonlyArray<Timing>): Timing =>
  ({ wall: Math.min(...times.map((t) => t.wall)), cpu: Math.min(...times.map((t) => t.cpu)) })

// ---------------------------------------------------------------------------------------------------------------------
// child: one measurement

interface Measured {
  readonly loadSeconds: number
  readonly rssBeforeLoadBytes: number
  readonly loadPeakRssBytes: number
  readonly times: ReadonlyArray<Timing>
  readonly decode: Result["decode"]
}

const resultOf = (job: Job, m: Measured): Result => ({
  job,
  loadSeconds: m.loadSeconds,
  rssBeforeLoadBytes: m.rssBeforeLoadBytes,
  loadPeakRssBytes: m.loadPeakRssBytes,
  prefill: best(m.times),
  ...(m.decode === undefined ? {} : { decode: m.decode }),
  peakRssBytes: maxRss()
})

const runTfjs = async (job: Job): Promise<Result> => {
  const layer: Layer.Layer<Device, unknown> = job.engine === "wasm" ? Device.layerWasm : Device.layerCpu
  const config = configs[job.model]
  const plan = await Effect.runPromise(
    Effect.result(Device.use((d) => d.planMemory(config, 1, job.promptTokens))).pipe(Effect.provide(layer))
  )
  if (plan._tag === "Failure") return { job, note: `not run: ${plan.failure.message}`, peakRssBytes: maxRss() }
  const rssBeforeLoadBytes = process.memoryUsage().rss
  const t0 = performance.now()
  const model = await Effect.runPromise(LlamaModel.load(job.file))
  const loadSeconds = (performance.now() - t0) / 1000
  const loadPeakRssBytes = maxRss()
  const ids = promptIds(config, job.promptTokens)
  const forward = () => {
    // values are read outside tidy: tidy walks what it returns, a typed array element by element
    const logits = tf.tidy(() => model.logits(tf.tensor2d([ids], undefined, "int32")))
    logits.dataSync()
    logits.dispose()
  }
  if (job.repeats > 1) forward() // warm-up (kernel setup, allocator)
  const times: Array<Timing> = []
  for (let i = 0; i < job.repeats; i++) times.push(await timed(forward))
  let decode: Result["decode"]
  if (job.decodeTokens > 0) {
    let tokens = 0
    const t = await timed(() => {
      tokens = generate(model, [ids.slice(0, 16)], { maxNewTokens: job.decodeTokens })[0]!.tokens.length
    })
    decode = { ...t, tokens }
  }
  model.dispose()
  return resultOf(job, { loadSeconds, rssBeforeLoadBytes, loadPeakRssBytes, times, decode })
}

const runLlamaCpp = async (job: Job): Promise<Result> => {
  const config = configs[job.model]
  const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error })
  const rssBeforeLoadBytes = process.memoryUsage().rss
  const t0 = performance.now()
  const model = await llama.loadModel({ modelPath: job.file })
  const loadSeconds = (performance.now() - t0) / 1000
  const loadPeakRssBytes = maxRss()
  const threads = job.engine === "llama.cpp-1t" ? 1 : 2
  const context = await model.createContext({ contextSize: 512, batchSize: 512, sequences: 1, threads })
  const sequence = context.getSequence()
  const ids = promptIds(config, job.promptTokens) as Array<Token>
  const forward = async () => {
    await sequence.clearHistory()
    return timed(() => sequence.evaluateWithoutGeneratingNewTokens(ids))
  }
  if (job.repeats > 1) await forward()
  const times: Array<Timing> = []
  for (let i = 0; i < job.repeats; i++) times.push(await forward())
  let decode: Result["decode"]
  if (job.decodeTokens > 0) {
    await sequence.clearHistory()
    await sequence.evaluateWithoutGeneratingNewTokens(ids.slice(0, 15))
    let tokens = 0
    const t = await timed(async () => {
      for await (const _ of sequence.evaluate([ids[15]!], { temperature: 0 })) if (++tokens >= job.decodeTokens) break
    })
    decode = { ...t, tokens }
  }
  await context.dispose()
  await model.dispose()
  await llama.dispose()
  return resultOf(job, { loadSeconds, rssBeforeLoadBytes, loadPeakRssBytes, times, decode })
}

// ---------------------------------------------------------------------------------------------------------------------
// parent: make the files, run the children, write BENCHMARKS.md

const self = fileURLToPath(import.meta.url)

const runChild = (job: Job): Result => {
  const child = spawnSync(process.execPath, [self, "--child", JSON.stringify(job)], {
    encoding: "utf8",
    maxBuffer: 1 << 24,
    stdio: ["ignore", "pipe", "pipe"]
  })
  const line = child.stdout.trim().split("\n").findLast((l) => l.startsWith("{"))
  if (child.status !== 0 || line === undefined) {
    const why = child.stderr.trim().split("\n").filter((l) => !/tfjs-node|====|Hi, looks|Vulkan|BackendVk/.test(l)).slice(-3)
    return { job, note: `failed (exit ${child.status ?? child.signal}): ${why.join(" ")}` }
  }
  return JSON.parse(line) as Result
}

const mib = (b: number | undefined) => (b === undefined ? "–" : formatBytes(b))
const num = (v: number | undefined, digits = 1) =>
  v === undefined ? "–" : v.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })

const report = (results: ReadonlyArray<Result>, started: Date, seconds: number): string => {
  const lines: Array<string> = []
  lines.push(
    `Command: \`npm run bench:model\` (bench/model.ts). Machine: ${os.cpus().length}-core ${
      os.cpus()[0]?.model.trim() ?? "CPU"
    }, ${Math.round(os.totalmem() / 2 ** 30)} GiB, no GPU, Node ${process.version}, ${
      started.toISOString().slice(0, 10)
    }; ${Math.round(seconds)} s in all.`,
    "The machine was shared with other engineers' builds and tests while this ran (load average far above 2), so",
    "wall-clock rates are mostly a measure of the load; tokens per CPU-second (user + system time of the measuring",
    "process, all its threads) and the ratios to llama.cpp on the same file, prompt and run are the steadier figures.",
    "The ratio column compares with llama.cpp on one thread, like our wasm backend (tfjs-backend-wasm has no threads",
    "under Node); llama.cpp's second thread mostly spins against the other load here. Each row ran in its own child process. Prefill = one forward pass over the prompt (best of the repeats after a",
    "warm-up); decode = greedy generation with the KV cache, one token per step. Load: RSS growth from just before",
    "loading to the process's peak (VmHWM) while loading, against the float32 size of the weights.",
    ""
  )
  for (const model of ["tiny", "1.1b"] as const) {
    const rows = results.filter((r) => r.job.model === model)
    if (rows.length === 0) continue
    const c = configs[model]
    const f32 = parameterCount(c) * 4
    const job = rows[0]!.job
    lines.push(
      `**${model === "tiny" ? "`tiny` (built-in default)" : "TinyLlama-1.1B shape (`bench-1b`)"}**: ${
        parameterCount(c).toLocaleString("en-US")
      } parameters (float32 ${mib(f32)}), ${c.numLayers} layers, d ${c.hiddenSize}, heads ${c.numHeads}/${c.numKvHeads}, vocab ${c.vocabSize}; ${
        model === "tiny" ? "F32" : "F16"
      } GGUF of ${mib(job.fileBytes)}; prompt ${job.promptTokens} tokens, ${job.repeats} repeat(s), decode ${job.decodeTokens} tokens.`,
      "",
      "| engine | prefill tok/s (wall) | prefill tok/CPU-s | × llama.cpp 1t (CPU) | decode tok/s (wall) | decode tok/CPU-s | × llama.cpp 1t (CPU) | load s | load: RSS growth / float32 weights | peak RSS |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    const base = rows.find((r) => r.job.engine === "llama.cpp-1t")
    const perCpu = (t: Timing | undefined, n: number) => (t === undefined ? undefined : n / t.cpu)
    const perWall = (t: Timing | undefined, n: number) => (t === undefined ? undefined : n / t.wall)
    for (const r of rows) {
      const ratio = (a: number | undefined, b: number | undefined) =>
        a === undefined || b === undefined ? "–" : num(a / b, 3)
      const name = r.job.engine === "wasm"
        ? "ours, tfjs wasm (XNNPACK SIMD, 1 thread)"
        : r.job.engine === "cpu"
        ? "ours, tfjs cpu (plain JS)"
        : `llama.cpp (node-llama-cpp, CPU, ${r.job.engine.endsWith("1t") ? 1 : 2} thread${r.job.engine.endsWith("1t") ? "" : "s"})`
      if (r.note !== undefined) {
        lines.push(`| ${name} | ${r.note} | | | | | | | | ${mib(r.peakRssBytes)} |`)
        continue
      }
      const growth = (r.loadPeakRssBytes ?? 0) - (r.rssBeforeLoadBytes ?? 0)
      const prefillCpu = perCpu(r.prefill, r.job.promptTokens)
      const decodeCpu = perCpu(r.decode, r.decode?.tokens ?? 0)
      lines.push(
        `| ${name} | ${num(perWall(r.prefill, r.job.promptTokens))} | ${num(prefillCpu)} | ${
          ratio(prefillCpu, perCpu(base?.prefill, r.job.promptTokens))
        } | ${num(perWall(r.decode, r.decode?.tokens ?? 0))} | ${num(decodeCpu)} | ${
          ratio(decodeCpu, perCpu(base?.decode, base?.decode?.tokens ?? 0))
        } | ${num(r.loadSeconds, 2)} | ${mib(growth)} / ${mib(f32)} = ${num(growth / f32, 2)}${
          r.job.engine.startsWith("llama") ? " (mmap)" : ""
        } | ${mib(r.peakRssBytes)} |`
      )
    }
    lines.push("")
  }
  lines.push(
    "Notes:",
    "- Backends here: tfjs-node-gpu / tfjs-node are not installed (optional; see src/Model/Device.ts for CUDA 11.2),",
    "  WebGPU finds no adapter (no Vulkan driver), so `--device auto` picks wasm. tfjs-backend-wasm runs one thread",
    "  under Node (its pthreads need Web Workers with Blob URLs), whatever the core count.",
    "- The 1.1B model does not fit the wasm backend: its float32 weights (4.10 GiB) exceed the 32-bit wasm heap",
    "  (4 GiB); `Device.planMemory` says so before loading. On the cpu backend one 16-token forward pass is all it",
    "  takes to measure it (plain JS matmuls, about 0.3-1 GFLOP/s).",
    "- Loading streams one tensor at a time from the GGUF into tfjs: for the 1.1B model the RSS growth while loading",
    "  is about one float32 copy of the weights (plus the runtime); for the tiny model the fixed cost of the runtime",
    "  (V8 heap growth, the wasm heap) dominates. llama.cpp maps the file (F16) instead.",
    "- Decode is slower relative to llama.cpp than prefill: each step is ~40 small tfjs kernels per layer whose",
    "  per-op overhead dominates for tiny shapes.",
    ""
  )
  return lines.join("\n")
}

const writeSection = (body: string) => {
  const header = "## Model forward (`npm run bench:model`)"
  writeBenchmarkSection(header, `${header}\n\n${body.trimEnd()}\n`)
}

const main = async () => {
  const quick = process.argv.includes("--quick")
  const keep = process.argv.includes("--keep")
  const started = new Date()
  const t0 = performance.now()
  const dir = path.join(os.tmpdir(), "finetune-finance-bench-model")
  fs.mkdirSync(dir, { recursive: true })
  const tinyFile = path.join(dir, "tiny-f32.gguf")
  const bigFile = path.join(dir, "bench-1b-f16.gguf")
  console.log("writing the tiny model ...")
  await Effect.runPromise(writeTinyModel({ config: configs.tiny, path: tinyFile, seed: 1, tensorType: "F32" }))
  const jobs: Array<Job> = (["wasm", "cpu", "llama.cpp-1t", "llama.cpp-2t"] as const).map((engine) => ({
    model: "tiny",
    engine,
    file: tinyFile,
    fileBytes: fs.statSync(tinyFile).size,
    promptTokens: 128,
    decodeTokens: 32,
    repeats: 5
  }))
  if (!quick) {
    if (!fs.existsSync(bigFile)) {
      console.log("writing the 1.1B F16 model (2.2 GB) ...")
      let last = 0
      await Effect.runPromise(writeTinyModel({
        config: configs["1.1b"],
        path: bigFile,
        seed: 1,
        tensorType: "F16",
        onTensor: (i, total) => {
          const pct = Math.floor((100 * (i + 1)) / total)
          if (pct >= last + 10) console.log(`  ${(last = pct)}%`)
        }
      }))
    }
    // the cpu backend runs ~1 GFLOP/s: one 16-token forward pass (~35 GFLOP) is already a long wait
    const big = { model: "1.1b", file: bigFile, fileBytes: fs.statSync(bigFile).size, promptTokens: 16 } as const
    jobs.push(
      { ...big, engine: "wasm", decodeTokens: 0, repeats: 1 },
      { ...big, engine: "cpu", decodeTokens: 0, repeats: 1 },
      { ...big, engine: "llama.cpp-1t", decodeTokens: 8, repeats: 2 },
      { ...big, engine: "llama.cpp-2t", decodeTokens: 8, repeats: 2 }
    )
  }
  const results: Array<Result> = []
  for (const job of jobs) {
    console.log(`${job.model} on ${job.engine} ...`)
    const r = runChild(job)
    console.log(`  ${JSON.stringify({ ...r, job: undefined })}`)
    results.push(r)
  }
  if (!keep && fs.existsSync(bigFile)) fs.rmSync(bigFile)
  fs.rmSync(tinyFile, { force: true })
  const body = report(results, started, (performance.now() - t0) / 1000)
  console.log(`\n${body}`)
  if (quick) return
  writeSection(body)
  console.log("written to BENCHMARKS.md")
}

if (process.argv[2] === "--child") {
  const job = JSON.parse(process.argv[3]!) as Job
  const result = job.engine === "wasm" || job.engine === "cpu" ? await runTfjs(job) : await runLlamaCpp(job)
  console.log(JSON.stringify(result))
} else {
  await main()
}
