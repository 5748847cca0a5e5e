/**
 * Part 3 of `npm run bench:serve` (alone: `BENCH_SERVE_PARTS=threads npm run bench:serve`): llama.cpp decode speed
 * by thread setting, on an idle machine and with a CPU-bound process on every core, all in one run.
 *
 * - Settings: `default` (no --threads: the thread policy and its governor, `chooseThreads` in Model/LlamaCpp.ts),
 *   `1`, `N` = every core (os.availableParallelism()), and node-llama-cpp's own default (the math cores or 4,
 *   whichever is higher: what these commands used before the policy). Each setting and model has a LlamaCpp
 *   runtime of its own (its own node-llama-cpp `Llama`, so its own thread budget, as a `serve` process has) and
 *   makes its context through `LlamaCpp.createContext`, the call the serving engine and eval's generator make;
 *   only the `threads` argument differs.
 * - Work: greedy decoding after a short prompt, up to GEN tokens or CAP_S seconds (a collapsed setting can take
 *   minutes for GEN tokens); tok/s = tokens / seconds, prompt evaluation included.
 * - Models: the project's `small` (111 MB F32: the policy gives it 1 thread) and a wider `medium` (d 1024, 8
 *   layers, 396 MB F32: the policy gives it every free core), so both of the policy's answers are measured.
 * - Conditions: `idle` (nothing started by the bench; the CPU that other processes used meanwhile is measured and
 *   shown), then `loaded`: one busy-looping child process per core, started LOAD_WARM_S before the measurements
 *   (the governor re-measures every 0.5 s) and killed at the end (each also stops itself after a bound).
 * - Rounds: ROUNDS per condition, settings in turn (rotating the order) within each round; the table gives each
 *   cell's median.
 */
import { Effect, Exit, Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { LlamaContextSequence, LlamaModel } from "node-llama-cpp"
import { describeThreads, LlamaCpp } from "../src/Model/LlamaCpp.ts"
import { presetConfig, writeTinyModel } from "../src/Model/TinyModel.ts"
import type { LlamaConfig } from "../src/Model/ModelContracts.ts"

const GEN = 64
const CAP_S = 6
const ROUNDS = 3
const LOAD_WARM_S = 2

interface Cell {
  readonly model: string
  readonly condition: "idle" | "loaded"
  readonly setting: string
  readonly tokPerS: Array<number>
  /** the threads the runtime said it used after each round's decode */
  readonly threads: Array<string>
}

const median = (xs: ReadonlyArray<number>) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}

/** CPU that other processes used (cores' worth) between two points: all CPUs' busy time less this process's. */
const cpuNow = () => {
  let busy = 0
  for (const cpu of os.cpus()) busy += cpu.times.user + cpu.times.nice + cpu.times.sys + cpu.times.irq
  const own = process.cpuUsage()
  return { at: performance.now(), busy, own: (own.user + own.system) / 1000 }
}
const othersBetween = (a: ReturnType<typeof cpuNow>, b: ReturnType<typeof cpuNow>) =>
  Math.max(0, (b.busy - a.busy) - (b.own - a.own)) / (b.at - a.at)

const startBusyLoops = (n: number, seconds: number): Array<ChildProcess> =>
  Array.from({ length: n }, () =>
    spawn(process.execPath, ["-e", `const end = Date.now() + ${Math.ceil(seconds * 1000)}; let x = 0; while (Date.now() < end) x++`], { stdio: "ignore" }))

export const runThreadsBench = async (): Promise<string> => {
  const cores = os.availableParallelism()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ff-bench-threads-"))
  const small = presetConfig("small")
  const medium: LlamaConfig = { ...small, hiddenSize: 1024, intermediateSize: 2816, numHeads: 16, numKvHeads: 4, headDim: 64 }
  const models = [
    { name: "small", config: small, file: path.join(dir, "small.gguf") },
    { name: "medium", config: medium, file: path.join(dir, "medium.gguf") }
  ]
  for (const m of models) {
    console.log(`writing ${m.file} …`)
    await Effect.runPromise(writeTinyModel({ config: m.config, seed: 3, path: m.file, initStd: 0.1 }))
  }
  const settings: ReadonlyArray<{ readonly name: string; readonly threads: number | undefined }> = [
    { name: "default", threads: undefined },
    { name: "1", threads: 1 },
    { name: `N = ${cores}`, threads: cores },
    // what node-llama-cpp chose before the policy: its `maxThreads` default, the math cores or 4 if higher
    { name: "node-llama-cpp's default", threads: Math.max(4, cores) }
  ]
  const scope = Effect.runSync(Scope.make())
  const run = <A>(effect: Effect.Effect<A, unknown, Scope.Scope>) => Effect.runPromise(effect.pipe(Scope.provide(scope)))
  // a runtime per setting and model (as `serve` has one per process), so each runtime's thread count is its model's
  const runtimes: Array<{
    readonly setting: (typeof settings)[number]
    readonly contexts: ReadonlyArray<{
      readonly name: string
      readonly llamaCpp: LlamaCpp["Service"]
      readonly model: LlamaModel
      readonly sequence: LlamaContextSequence
    }>
  }> = []
  for (const setting of settings) {
    const contexts = []
    for (const m of models) {
      const llamaCpp = await run(LlamaCpp.make("cpu"))
      const model = await run(llamaCpp.loadModel({ modelPath: m.file }))
      const context = await run(llamaCpp.createContext(model, { contextSize: 512, sequences: 1 }, setting.threads))
      contexts.push({ name: m.name, llamaCpp, model, sequence: context.getSequence() })
    }
    runtimes.push({ setting, contexts })
  }

  const promptText = "Question: Should I buy AAPL at the current price, given its valuation?\nAnswer:"
  const promptTokens = runtimes[0]!.contexts[0]!.model.tokenize(promptText).length
  const decode = async (runtime: (typeof runtimes)[number], index: number) => {
    const { model, sequence } = runtime.contexts[index]!
    await sequence.clearHistory()
    const prompt = model.tokenize(promptText)
    let tokens = 0
    const started = performance.now()
    for await (const _token of sequence.evaluate(prompt, { temperature: 0 })) {
      tokens++
      if (tokens >= GEN || performance.now() - started > CAP_S * 1000) break
    }
    const rate = tokens / ((performance.now() - started) / 1000)
    // the batch in flight when the loop stopped still runs (seconds, on a collapsed setting): wait for it (this
    // takes the context's lock), so that it does not run into the next setting's measurement
    await sequence.clearHistory()
    return rate
  }

  const cells: Array<Cell> = []
  const cell = (model: string, condition: Cell["condition"], setting: string) => {
    let c = cells.find((x) => x.model === model && x.condition === condition && x.setting === setting)
    if (c === undefined) cells.push(c = { model, condition, setting, tokPerS: [], threads: [] })
    return c
  }
  const measure = async (condition: Cell["condition"]) => {
    for (let round = 0; round < ROUNDS; round++) {
      for (let m = 0; m < models.length; m++) {
        // the settings in a rotating order, so none always runs first after another model's slowest setting
        for (let k = 0; k < runtimes.length; k++) {
          const runtime = runtimes[(k + round) % runtimes.length]!
          const rate = await decode(runtime, m)
          const state = await Effect.runPromise(runtime.contexts[m]!.llamaCpp.threads)
          const c = cell(models[m]!.name, condition, runtime.setting.name)
          c.tokPerS.push(rate)
          c.threads.push(String(state.threads))
          console.log(`${condition} ${models[m]!.name} ${runtime.setting.name}: ${rate.toFixed(1)} tok/s (${describeThreads(state)})`)
        }
      }
    }
  }

  const loadBefore = os.loadavg()[0]!
  console.log("warming up …")
  for (const runtime of runtimes) for (let m = 0; m < models.length; m++) await decode(runtime, m)
  const idleStart = cpuNow()
  await measure("idle")
  const idleOthers = othersBetween(idleStart, cpuNow())
  // bounded: long enough for the loaded phase at its slowest (every cell at the cap), then they stop themselves
  const loops = startBusyLoops(cores, LOAD_WARM_S + ROUNDS * models.length * settings.length * (CAP_S + 1) + 30)
  let loadedOthers = 0
  try {
    await new Promise((r) => setTimeout(r, LOAD_WARM_S * 1000))
    const loadedStart = cpuNow()
    await measure("loaded")
    loadedOthers = othersBetween(loadedStart, cpuNow())
  } finally {
    for (const child of loops) child.kill("SIGKILL")
  }
  const loadAfter = os.loadavg()[0]!
  await Effect.runPromise(Scope.close(scope, Exit.void))
  fs.rmSync(dir, { recursive: true, force: true })

  // ---- report
  const rows: Array<string> = []
  const verdicts: Array<string> = []
  let worst = Infinity
  for (const m of models) {
    for (const condition of ["idle", "loaded"] as const) {
      const here = settings.map((s) => cell(m.name, condition, s.name))
      const best = Math.max(...here.map((c) => median(c.tokPerS)))
      const def = median(here[0]!.tokPerS)
      worst = Math.min(worst, def / best)
      const defaultThreads = here[0]!.threads.join(", ")
      rows.push(`| ${m.name} | ${condition} | ${here.map((c) => median(c.tokPerS).toFixed(1)).join(" | ")} | ${(def / best).toFixed(2)} | ${defaultThreads} |`)
      verdicts.push(`${m.name} ${condition}: ${(def / best).toFixed(2)}`)
    }
  }
  const date = new Date().toISOString().slice(0, 16).replace("T", " ")
  const section = `## Serving threads (\`npm run bench:serve\`, part 3; alone: \`BENCH_SERVE_PARTS=threads npm run bench:serve\`)

Measured ${date} UTC on this machine: \`nproc\` ${cores}, Node ${process.version}, CPU only; 1-minute load average
${loadBefore.toFixed(2)} before the run and ${loadAfter.toFixed(2)} after it. "idle" means nothing started by the bench: other
processes on this shared machine used ${idleOthers.toFixed(2)} cores' worth of CPU meanwhile (measured from the kernel's
per-CPU counters less the bench's own time); "loaded" adds one busy-looping process per core (${cores}), started
${LOAD_WARM_S} s before the measurements, and other processes then used ${loadedOthers.toFixed(2)} cores.

Decode tokens/s (greedy, after a ${promptTokens}-token prompt, up to ${GEN} tokens or ${CAP_S} s), median of ${ROUNDS} rounds with the settings
in turn (the order rotating by round); \`default\` is what \`serve\`, \`eval run --model\` and the pipeline use without \`--threads\` (the thread
policy: \`chooseThreads\` in src/Model/LlamaCpp.ts, with its governor). Models: the project's random \`small\` (8 layers,
d 512, 111 MB F32) and \`medium\` (8 layers, d 1024, 396 MB F32).

| model | condition | default tok/s | 1 thread tok/s | N = ${cores} threads tok/s | ${Math.max(4, cores)} threads (node-llama-cpp's default) tok/s | default / best | default's threads (per round) |
| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |
${rows.join("\n")}

Goal: the default never below 0.5× the best setting of the same run: **${worst >= 0.5 ? "met" : "not met"}** (lowest ratio ${worst.toFixed(2)}; ${verdicts.join(", ")}).
The last column of figures is what these commands did before the policy: node-llama-cpp's own default, its
\`maxThreads\` (the math cores or 4, whichever is higher). llama.cpp's barrier spins, so any count above the free
cores collapses. The governor shows in the last column: the default's count per round, as the runtime reported it.

Reading: a thread count above the cores that are free in that moment is what collapses (the 1-thread column never
does; \`N\` does whenever a neighbour computes, on this shared machine "idle" included); the default follows the
free cores, so it decodes on N threads only while nothing else needs them. The rounds are a few seconds each and
neighbours come and go, so single figures move by 2x between runs: read the ratios within a row.
`
  return section
}
