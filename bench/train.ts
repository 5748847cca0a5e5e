/**
 * `npm run bench:train`: training throughput of the trainer's step (forward + backward + clipping + AdamW) against
 * forward-only throughput and the backend's matmul rate, measured in the same child process, per backend (wasm, cpu),
 * shape (the built-in `tiny` model and a ~100M-parameter one) and mode (LoRA, QLoRA). Each case runs in its own
 * process so its peak RSS is its own. Results go into BENCHMARKS.md under `## Training`.
 *
 *   node bench/train.ts            all cases, writes BENCHMARKS.md
 *   node bench/train.ts --case wasm:tiny:lora   one case, prints JSON
 *   node bench/train.ts --engines-only [tiny 100m smollm2] [--rounds N]   the torch engine against plain PyTorch only
 *                                                          (those shapes; N alternating rounds per row, default 3)
 *
 * The torch rows (section `## Training engines`) put the torch engine (python/finetune_finance_py/engine) beside a
 * plain PyTorch + PEFT loop on the same shapes, 1 and 2 threads; they need FINETUNE_PYTHON or the managed .venv.
 */
import { execFileSync } from "node:child_process"
import * as os from "node:os"
import { writeBenchmarkSection } from "./BenchmarksFile.ts"

const args = process.argv.slice(2)

interface CaseResult {
  readonly backend: string
  readonly shape: string
  readonly mode: string
  readonly params: number
  readonly loraParams: number
  readonly batch: number
  readonly seq: number
  readonly trainTokensPerSecond: number
  /** trained tokens per second of process CPU time (all threads) */
  readonly trainTokensPerCpuSecond: number
  readonly forwardTokensPerSecond: number
  readonly matmulGflops: number
  readonly trainGflops: number
  readonly mfu: number
  readonly baseMemoryBytes: number
  readonly peakRssBytes: number
}

const shapes = {
  tiny: { preset: "tiny" as const },
  // ~112M parameters: d 768, 10 layers, GQA 12/4, SwiGLU 2048, vocab 32000 untied
  "100m": {
    config: {
      vocabSize: 32000, hiddenSize: 768, intermediateSize: 2048, numLayers: 10, numHeads: 12, numKvHeads: 4, headDim: 64,
      rmsNormEps: 1e-5, ropeTheta: 10000, maxPositionEmbeddings: 2048, tieWordEmbeddings: false
    }
  },
  // SmolLM2-135M's shape (random weights): 30 layers, d 576, 9 heads over 3 KV heads, SwiGLU 1536, vocab 49152 tied
  smollm2: {
    config: {
      vocabSize: 49152, hiddenSize: 576, intermediateSize: 1536, numLayers: 30, numHeads: 9, numKvHeads: 3, headDim: 64,
      rmsNormEps: 1e-5, ropeTheta: 100000, maxPositionEmbeddings: 8192, tieWordEmbeddings: true
    }
  }
}

const runCase = async (spec: string): Promise<CaseResult> => {
  const [backend, shapeName, mode] = spec.split(":") as ["wasm" | "cpu", keyof typeof shapes, "lora" | "qlora"]
  const tf = await import("@tensorflow/tfjs-core")
  const { Effect } = await import("effect")
  const { Device, registerGradients } = await import("../src/Model/Device.ts")
  const { canonicalWeights, presetConfig, parameterCount } = await import("../src/Model/TinyModel.ts")
  const { batchGrads, batchLoss, buildTrainee } = await import("../src/Training/Trainer.ts")
  const { padBatch } = await import("../src/Training/Collate.ts")
  const { AdamW, clipGradNorm } = await import("../src/Training/Optimizer.ts")
  const { defaultTrainConfig } = await import("../src/Training/TrainConfig.ts")
  await registerGradients()
  await Effect.runPromise(Effect.provide(Effect.void, backend === "wasm" ? Device.layerWasm : Device.layerCpu))

  const shape = shapes[shapeName]
  const config = "preset" in shape ? presetConfig(shape.preset) : shape.config
  const big = shapeName !== "tiny"
  // tfjs-backend-cpu's generic gradient kernels make a 4 × 128 tiny step take ~100 s: one row keeps the run short
  const batch = big || backend === "cpu" ? 1 : 4
  const seq = big ? (backend === "cpu" ? 32 : 128) : 128
  const steps = big ? (backend === "cpu" ? 1 : 2) : (backend === "cpu" ? 2 : 5)

  // The reference rate for MFU: the best square matMul this backend manages in this process, measured before and
  // after the steps (the machine may be shared). The block returns nothing on purpose: tf.tidy walks a returned
  // value looking for tensors, and walking a 1M-element Float32Array costs more than the matMul itself.
  const sizes = backend === "cpu" ? [256, 384] : [256, 512, 1024]
  const measureMatmul = () =>
    Math.max(...sizes.map((n) => {
      const a = tf.randomNormal([n, n])
      const b = tf.randomNormal([n, n])
      const once = () => tf.tidy(() => void tf.matMul(a, b).dataSync())
      once()
      let reps = 0
      const t = performance.now()
      while (reps < 2 || performance.now() - t < 500) {
        once()
        reps++
      }
      tf.dispose([a, b])
      return (2 * n ** 3 * reps) / ((performance.now() - t) / 1000) / 1e9
    }))
  const matmulBefore = measureMatmul()
  let t0 = 0

  const weights = canonicalWeights(config, { seed: 1 })
  const trainConfig = {
    ...defaultTrainConfig,
    model: "bench",
    trainFile: "bench",
    outputDir: "bench",
    mode,
    loraDropout: 0.1
  } as const
  const trainee = await buildTrainee({
    modelConfig: config,
    weights: () => weights.map((w) => ({ name: w.name, shape: w.shape, data: w.data() })),
    tokenizer: { bosId: 1, eosId: 2, encode: () => [], decode: () => "" },
    baseModelName: "bench",
    train: [],
    validation: []
  }, trainConfig)
  const optimizer = new AdamW(trainee.variables)
  const ids = Array.from({ length: batch }, (_, r) =>
    ({ ids: Array.from({ length: seq }, (_, i) => 3 + ((r * 7919 + i * 104729) % (config.vocabSize - 3))), labels: Array.from({ length: seq }, (_, i) => i >= seq / 4) }))
  const data = padBatch(ids, 2)
  const step = (k: number) => {
    trainee.dropout.begin(k, true)
    const { value, grads } = batchGrads(trainee.model, data, data.lossTokens, trainee.variables)
    value.dataSync()
    const ordered = trainee.variables.map((v) => grads[v.name]!)
    const clipped = clipGradNorm(ordered, 1)
    optimizer.apply(clipped.grads, 1e-4)
    tf.dispose([value, ...ordered, ...clipped.grads])
  }
  const forward = () => {
    trainee.dropout.begin(0, false)
    tf.tidy(() => void batchLoss(trainee.model, data, data.lossTokens).dataSync())
  }
  step(0) // warm-up (kernel compilation, JIT)
  forward()
  // train steps and forward passes alternate, so load from other processes on this shared machine hits both alike
  let trainSeconds = 0
  let trainCpuSeconds = 0
  let forwardSeconds = 0
  for (let k = 1; k <= steps; k++) {
    t0 = performance.now()
    const cpu0 = process.cpuUsage()
    step(k)
    trainSeconds += (performance.now() - t0) / 1000
    const cpu = process.cpuUsage(cpu0)
    trainCpuSeconds += (cpu.user + cpu.system) / 1e6
    t0 = performance.now()
    forward()
    forwardSeconds += (performance.now() - t0) / 1000
  }

  const matmulGflops = Math.max(matmulBefore, measureMatmul())
  const params = parameterCount(config)
  // the embedding is a lookup, not a matmul: it does not count towards N in the FLOP estimate
  const matmulParams = params - config.vocabSize * config.hiddenSize
  const loraParams = trainee.variables.reduce((s, v) => s + v.size, 0)
  const tokens = batch * seq
  // docs/architecture.md §8: FLOPs per trained token with a frozen base = 4N + 6N_lora + 12·L·d·T
  const flopsPerToken = 4 * matmulParams + 6 * loraParams + 12 * config.numLayers * config.hiddenSize * seq
  const trainTokensPerSecond = (tokens * steps) / trainSeconds
  const trainGflops = (trainTokensPerSecond * flopsPerToken) / 1e9
  const result: CaseResult = {
    backend,
    shape: shapeName,
    mode,
    params,
    loraParams,
    batch,
    seq,
    trainTokensPerSecond,
    trainTokensPerCpuSecond: (tokens * steps) / trainCpuSeconds,
    forwardTokensPerSecond: (tokens * steps) / forwardSeconds,
    matmulGflops,
    trainGflops,
    mfu: trainGflops / matmulGflops,
    baseMemoryBytes: trainee.baseMemoryBytes,
    peakRssBytes: process.resourceUsage().maxRSS * 1024
  }
  optimizer.dispose()
  trainee.dispose()
  return result
}

const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`

const main = async () => {
  const cases = [
    ...["wasm", "cpu"].flatMap((backend) =>
      (["tiny", "100m"] as const).flatMap((shape) => ["lora", "qlora"].map((mode) => `${backend}:${shape}:${mode}`))
    ),
    "wasm:smollm2:lora"
  ]
  const results: Array<CaseResult> = []
  const loadBefore = os.loadavg()[0]!
  for (const c of cases) {
    process.stderr.write(`bench:train ${c} ... `)
    const t0 = Date.now()
    const out = execFileSync(process.execPath, [new URL(import.meta.url).pathname, "--case", c], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "inherit"],
      maxBuffer: 1 << 20
    })
    const r = JSON.parse(out.trim().split("\n").at(-1)!) as CaseResult
    results.push(r)
    process.stderr.write(`${r.trainTokensPerSecond.toFixed(1)} tok/s (${((Date.now() - t0) / 1000).toFixed(0)} s)\n`)
  }
  const row = (r: CaseResult) =>
    `| ${r.backend} | ${r.shape} (${(r.params / 1e6).toFixed(1)}M) | ${r.mode} | ${r.batch} × ${r.seq} | ${r.trainTokensPerSecond.toFixed(1)} | ${
      r.forwardTokensPerSecond.toFixed(1)
    } | ${(r.trainTokensPerSecond / r.forwardTokensPerSecond).toFixed(2)} | ${r.matmulGflops.toFixed(2)} | ${(100 * r.mfu).toFixed(1)}% | ${
      mib(r.baseMemoryBytes)
    } | ${mib(r.peakRssBytes)} |`
  const saved = (backend: string, shape: string) => {
    const l = results.find((r) => r.backend === backend && r.shape === shape && r.mode === "lora")!
    const q = results.find((r) => r.backend === backend && r.shape === shape && r.mode === "qlora")!
    return `| ${backend} | ${shape} | ${mib(l.baseMemoryBytes)} | ${mib(q.baseMemoryBytes)} | ${(l.baseMemoryBytes / q.baseMemoryBytes).toFixed(2)}× | ${
      mib(l.peakRssBytes)
    } | ${mib(q.peakRssBytes)} | ${(q.trainTokensPerSecond / l.trainTokensPerSecond).toFixed(2)} |`
  }
  const date = new Date().toISOString().slice(0, 10)
  const load = `${loadBefore.toFixed(2)} at the start and ${os.loadavg()[0]!.toFixed(2)} at the end`
  const section = [
    "## Training (`npm run bench:train`)",
    "",
    `Command: \`npm run bench:train\` (bench/train.ts). Machine: ${os.cpus().length}-core ${os.cpus()[0]?.model ?? "CPU"}, ${
      (os.totalmem() / 2 ** 30).toFixed(0)
    } GiB, Node ${process.version}, ${date}; 1-minute load average ${load}. The ratios (train/forward, QLoRA/LoRA,`,
    "MFU) are measured in the same process back to back and are the figures to compare. tfjs-backend-wasm runs",
    "XNNPACK on one thread under Node (its pthreads need Web Workers), so wasm uses one of the cores. No GPU here, so",
    "no WebGPU figures.",
    "",
    "One trainer step = forward + backward + global-norm clipping + AdamW on LoRA r 16 / α 32 on q,k,v,o (dropout 0.1),",
    "the answer-only cross-entropy over the last ¾ of each row. Forward-only = the same loss without gradients. Each",
    "case runs in its own process (peak RSS is the process's maxRSS, weights generation included); its train steps and",
    "forward passes alternate, so load from other processes hits both alike. MFU = achieved",
    "FLOP/s (4·N + 6·N_lora + 12·L·d·T per token, docs/architecture.md §8, N without the embedding lookup) / the best",
    "square-matMul rate of the same backend in the same process (256³, 512³, 1024³ on wasm; 256³, 384³ on cpu), measured",
    "before and after the steps: the fraction of what this backend can do on one core, not of a hardware peak.",
    "",
    "| backend | shape | mode | batch × seq | train tok/s | forward tok/s | train/forward | matmul GFLOP/s | MFU | base weights | peak RSS |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ...results.map(row),
    "",
    "Memory of the frozen base (embedding, norms and lm_head stay float32; decoder linears are NF4 with double-quantized",
    "scales in QLoRA, 4.13 bits per weight):",
    "",
    "| backend | shape | LoRA base | QLoRA base | saved | LoRA peak RSS | QLoRA peak RSS | QLoRA/LoRA speed |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ...["wasm", "cpu"].flatMap((b) => ["tiny", "100m"].map((s) => saved(b, s))),
    "",
    "Reading the figures: the ideal train/forward ratio with a frozen base is about 1/2 (backward costs about one",
    "forward). QLoRA dequantizes every NF4 weight in JS in each forward and again in each backward; peak RSS includes",
    "the float32 weights held while loading, before quantization. (Interpretation of a given run: see below it.)",
    "",
    ""
  ].join("\n")
  writeBenchmarkSection("## Training", section.trimEnd() + "\n")
  console.log(section)
  const engines = await benchEngines(results)
  writeBenchmarkSection("## Training engines", engines.trimEnd() + "\n")
  console.log(engines)
}

// ---------------------------------------------------------------------------------------------------------------------
// the torch engine against a plain PyTorch loop (and beside the tfjs rows above)

interface Rate {
  /** medians over every timed step of every round: a step that another process preempted does not set the figure */
  readonly tokensPerSecond: number
  readonly tokensPerCpuSecond: number
}

interface TorchRow {
  readonly shape: string
  readonly threads: number
  readonly batch: number
  readonly seq: number
  readonly rounds: number
  /** 1-minute load average when the row started */
  readonly load: number
  readonly engine: Rate
  readonly reference: Rate
}

interface StepTime {
  readonly seconds: number
  readonly cpuSeconds: number
  readonly tokens: number
}

const median = (xs: ReadonlyArray<number>) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

const rateOf = (steps: ReadonlyArray<StepTime>): Rate => ({
  tokensPerSecond: median(steps.map((s) => s.tokens / s.seconds)),
  tokensPerCpuSecond: median(steps.map((s) => s.tokens / s.cpuSeconds))
})

/** `--rounds N`: engine and reference processes alternate N times per row (E R, R E, ...), so drifting load hits both. */
const roundsArg = () => {
  const i = args.indexOf("--rounds")
  return i < 0 ? 3 : Math.max(1, Number(args[i + 1]))
}

const torchCases = [
  { shape: "tiny" as const, batch: 4, seq: 128, steps: 12 },
  { shape: "100m" as const, batch: 1, seq: 128, steps: 4 },
  { shape: "smollm2" as const, batch: 1, seq: 128, steps: 4 }
]

const benchEngines = async (tfjsResults: ReadonlyArray<CaseResult>, only: ReadonlyArray<string> = []): Promise<string> => {
  const { Effect } = await import("effect")
  const { NodeServices } = await import("@effect/platform-node")
  const { AdapterConfig } = await import("../src/Model/AdapterConfig.ts")
  const { presetConfig } = await import("../src/Model/TinyModel.ts")
  const { toHfConfigJson } = await import("../src/Model/ModelLoader.ts")
  const { encodeTorchJob, writeHandoverData, writeInitialAdapter } = await import("../src/Training/TrainHandover.ts")
  const { parseEngineLine } = await import("../src/Training/TorchEvents.ts")
  const fs = await import("node:fs")
  const path = await import("node:path")
  const python = process.env.FINETUNE_PYTHON ?? new URL("../.venv/bin/python", import.meta.url).pathname
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "bench-torch-"))
  const pythonPath = new URL("../python", import.meta.url).pathname
  const env = (threads: number) => ({ ...process.env, PYTHONPATH: pythonPath, OMP_NUM_THREADS: String(threads), PYTHONUNBUFFERED: "1" })
  const rows: Array<TorchRow> = []
  for (const c of torchCases.filter((t) => only.length === 0 || only.includes(t.shape))) {
    const shape = shapes[c.shape]
    const config = "preset" in shape ? presetConfig(shape.preset) : shape.config
    const dir = path.join(root, c.shape)
    const base = path.join(dir, "base")
    fs.mkdirSync(dir, { recursive: true })
    const hf = toHfConfigJson(config)
    const keys = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "max_position_embeddings", "tie_word_embeddings"] as const
    fs.writeFileSync(path.join(dir, "shape.json"), JSON.stringify(Object.fromEntries(keys.map((k) => [k, hf[k]]))))
    execFileSync(python, ["-m", "finetune_finance_py.engine.bench", "make-base", path.join(dir, "shape.json"), base], { env: env(2), stdio: ["ignore", "ignore", "inherit"] })
    // the rows of the tfjs bench: token i of row r is 3 + (r·7919 + i·104729) mod (vocab − 3), loss on the last ¾
    const train = Array.from({ length: c.batch }, (_, r) => ({
      ids: Array.from({ length: c.seq }, (_, i) => 3 + ((r * 7919 + i * 104729) % (config.vocabSize - 3))),
      labels: Array.from({ length: c.seq }, (_, i) => i >= c.seq / 4)
    }))
    const plan = Array.from({ length: c.steps + 1 }, (_, k) => ({ epoch: 0, epochProgress: (k + 1) / (c.steps + 1), micro: [train.map((_, i) => i)] }))
    const adapter = AdapterConfig.fromSettings({ r: 16, alpha: 32, dropout: 0.1, useRslora: false, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj"] }, "bench")
    await Effect.runPromise(Effect.gen(function*() {
      yield* writeHandoverData(path.join(dir, "data"), { train, validation: [], generation: [], plan })
      yield* writeInitialAdapter(path.join(dir, "adapter"), config, adapter, 1)
    }).pipe(Effect.provide(NodeServices.layer)))
    for (const threads of [1, 2]) {
      const runDir = path.join(dir, `run-${threads}`)
      const jobFile = path.join(dir, `job-${threads}.json`)
      const argsFile = path.join(dir, `reference-${threads}.json`)
      fs.writeFileSync(argsFile, JSON.stringify({ base, batch: c.batch, seq: c.seq, steps: c.steps, threads }))
      fs.writeFileSync(jobFile, encodeTorchJob({
        version: 1, baseModel: base, baseModelName: "bench", mode: "lora", initialAdapter: path.join(dir, "adapter"),
        optimizer: { learningRate: 1e-4, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0, maxGradNorm: 1 },
        schedule: { type: "constant", peak: 1e-4, warmupSteps: 0, totalSteps: plan.length },
        gradientAccumulationSteps: 1, batchSize: c.batch, packing: false, maxSeqLength: c.seq, padId: 2,
        logEvery: 1, saveEvery: plan.length, evalEvery: plan.length, metricForBest: "eval_loss",
        evaluation: { generationSamples: 0, maxNewTokens: 1, stopIds: [2] }, seed: 1,
        data: { dir: path.join(dir, "data"), trainCount: c.batch, validationCount: 0, steps: plan.length },
        runDir, resume: false, device: "cpu", bf16: "off", gradientCheckpointing: false, threads, distributed: { strategy: "ddp" }
      }))
      const runEngine = (): Array<StepTime> => {
        fs.rmSync(runDir, { recursive: true, force: true })
        const out = execFileSync(python, ["-m", "finetune_finance_py.engine", jobFile], { env: env(threads), encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], maxBuffer: 1 << 26 })
        // step 1 is warm-up (allocator, first-call kernels), as in the reference loop; logEvery 1: one window a step
        return out.split("\n").map(parseEngineLine).flatMap((e) =>
          e?.event === "train" && e.step > 1 ? [{ seconds: e.windowSeconds ?? NaN, cpuSeconds: e.cpuSeconds ?? NaN, tokens: e.tokens ?? NaN }] : []
        )
      }
      const runReference = (): Array<StepTime> =>
        (JSON.parse(
          execFileSync(python, ["-m", "finetune_finance_py.engine.bench", "reference", argsFile], { env: env(threads), encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim().split("\n").at(-1)!
        ) as { steps: Array<StepTime> }).steps
      const load = os.loadavg()[0]!
      const engineSteps: Array<StepTime> = []
      const referenceSteps: Array<StepTime> = []
      const rounds = roundsArg()
      for (let round = 0; round < rounds; round++) {
        process.stderr.write(`bench:train torch ${c.shape} ${threads} thread(s) round ${round + 1}/${rounds} ... `)
        const pair = round % 2 === 0 ? [runEngine, runReference] : [runReference, runEngine]
        for (const f of pair) (f === runEngine ? engineSteps : referenceSteps).push(...f())
        process.stderr.write(`engine ${rateOf(engineSteps).tokensPerSecond.toFixed(0)} tok/s, reference ${rateOf(referenceSteps).tokensPerSecond.toFixed(0)} tok/s so far\n`)
      }
      rows.push({ shape: c.shape, threads, batch: c.batch, seq: c.seq, rounds, load, engine: rateOf(engineSteps), reference: rateOf(referenceSteps) })
    }
  }
  fs.rmSync(root, { recursive: true, force: true })
  const versions = execFileSync(python, ["-c", "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)"], { encoding: "utf8" }).trim().split(" ")
  const tfjsOf = (shape: string) => tfjsResults.find((r) => r.backend === "wasm" && r.shape === shape && r.mode === "lora")
  const date = new Date().toISOString().slice(0, 16).replace("T", " ")
  const row = (r: TorchRow) => {
    const t = tfjsOf(r.shape)
    return `| ${r.shape} | ${r.batch} × ${r.seq} | ${r.threads} | ${r.load.toFixed(1)} | ${r.reference.tokensPerSecond.toFixed(0)} | ${r.engine.tokensPerSecond.toFixed(0)} | ${
      (r.engine.tokensPerSecond / r.reference.tokensPerSecond).toFixed(2)
    }× | ${r.reference.tokensPerCpuSecond.toFixed(0)} | ${r.engine.tokensPerCpuSecond.toFixed(0)} | ${
      (r.engine.tokensPerSecond / r.engine.tokensPerCpuSecond).toFixed(2)
    } | ${r.threads === 1 && t !== undefined ? `${t.trainTokensPerSecond.toFixed(1)} (${t.batch} × ${t.seq}) | ${(r.engine.tokensPerSecond / t.trainTokensPerSecond).toFixed(1)}×` : "| "} |`
  }
  return [
    "## Training engines (`npm run bench:train`)",
    "",
    `Same run as the section above (${date} UTC, 1-minute load average ${os.loadavg()[0]!.toFixed(2)} at the end; \`uptime\` load is`,
    `shared with other work on this 2-core machine). torch ${versions[0]}, transformers ${versions[1]}, PEFT ${versions[2]}, CPU, float32.`,
    "One step = forward + backward + clipping + AdamW, LoRA r 16 / α 32 on q,k,v,o, dropout 0.1, loss on the last ¾ of each row,",
    "the tfjs bench's token rows. *Reference*: the loop one writes by hand (transformers + PEFT, `model(ids, labels).loss`, backward,",
    "clip_grad_norm_, AdamW). *Engine*: `python -m finetune_finance_py.engine` on a handover written by TrainHandover (the torch",
    "engine's real code path; its own step timing from its JSON events). First step of each process excluded (warm-up). Per row,",
    `engine and reference processes alternate ${rows[0]?.rounds ?? roundsArg()} times (E R, R E, …) and each figure is the median over all their`,
    "timed steps, so a step another process preempted does not set it. tokens/CPU-s divides by the process's CPU time over all",
    "threads; CPU/wall is the cores in use; load is the 1-minute load average as the row started. The tfjs column is the wasm LoRA",
    "row above (one thread; its 100m and smollm2 rows train 1 × 128).",
    "",
    "| shape | batch × seq | threads | load | reference tok/s | engine tok/s | engine/reference | reference tok/CPU-s | engine tok/CPU-s | engine CPU/wall | tfjs wasm tok/s | engine/tfjs |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ...rows.map(row),
    ""
  ].join("\n")
}

if (args[0] === "--engines-only") {
  // the torch-engine and reference rows alone (for working on the engine); the published table comes from a full run
  console.log(await benchEngines([], args.slice(1).filter((a, i, all) => a !== "--rounds" && all[i - 1] !== "--rounds")))
} else if (args[0] === "--case") {
  const r = await runCase(args[1]!)
  console.log(JSON.stringify(r))
  process.exit(0)
} else {
  await main()
}
