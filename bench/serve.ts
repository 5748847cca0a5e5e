/**
 * `npm run bench:serve`: the inference server under load, beside node-llama-cpp called directly in the same run.
 *
 * - Model: a project-made random GGUF (`small` preset: 8 layers, d 512, vocab 4096) plus a LoRA adapter exported
 *   from a PEFT folder, both written to a temp folder first. The server serves the adapter.
 * - Work per request: the app's `POST /infer` with the same question and context, greedy, at most GEN tokens.
 * - Server: autocannon (a maintained HTTP load generator) at concurrency 1, 4 and 16 against `/infer`; per-request
 *   latencies from its `response` events, tokens from the server's own `/metrics` counter.
 * - Baseline: node-llama-cpp called directly, doing what /infer asks of it (`directAnswer`): the same prompt
 *   text tokenized per request, the same sampler settings (/infer's top_k and top_p at temperature 0), the
 *   seed's stop strings checked as the text grows, per-token confidence; a context with the adapter and
 *   `parallel` sequences, with the same number of concurrent callers.
 * - Rounds alternate baseline and server, so drift on this shared machine hits both alike.
 *
 * - Part 3 (bench/serveThreads.ts): decode speed by llama.cpp thread setting (the default policy, 1, every core,
 *   node-llama-cpp's old default), idle and with a busy process per core; `BENCH_SERVE_PARTS=threads` runs it alone.
 *
 * Writes the results into the `## Serving` and `## Serving threads` sections of BENCHMARKS.md.
 */
import { NodeServices } from "@effect/platform-node"
import { Effect, Exit, Scope } from "effect"
import { createRequire } from "node:module"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as http from "node:http"
import type { LlamaContextSequence, LlamaModel, Token } from "node-llama-cpp"
import { inferDefaults } from "../src/Api/Api.ts"
import { exportAdapter } from "../src/Serving/Export.ts"
import { seedPrompt, seedStops } from "../src/Serving/Prompt.ts"
import { launchServer } from "../src/Serving/Server.ts"
import { LlamaCpp } from "../src/Model/LlamaCpp.ts"
import { presetConfig, writeTinyModel } from "../src/Model/TinyModel.ts"
import { writeSafetensors } from "../src/Model/Safetensors.ts"
import { weightNames } from "../src/Model/ModelContracts.ts"
import { writeBenchmarkSection } from "./BenchmarksFile.ts"
import { runThreadsBench } from "./serveThreads.ts"

// autocannon ships no types; this is the part of its API used here
interface AutocannonInstance {
  on(event: "response", listener: (client: unknown, status: number, bytes: number, responseTime: number) => void): void
}
type Autocannon = (options: Record<string, unknown>, done: (error: unknown) => void) => AutocannonInstance
const autocannon = createRequire(import.meta.url)("autocannon") as Autocannon

const GEN = 32
const PARALLEL = 4
const THREADS = Number(process.env.BENCH_THREADS ?? 1)
const ROUNDS = 3
const LEVELS = [
  { concurrency: 1, requests: 45 },
  { concurrency: 4, requests: 72 },
  { concurrency: 16, requests: 144 }
]

const question = "Should I buy AAPL at the current price, given its valuation?"
const context = "Current Symbol: AAPL\n\nCurrent Prices:\n  AAPL: $189.50 (+0.45%)\n\nFundamentals:\n  peRatio: 28.5\n  sector: \"Technology\""

const percentile = (xs: ReadonlyArray<number>, p: number) => {
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
}

interface Run {
  readonly latencies: Array<number>
  readonly seconds: number
  readonly tokens: number
}
const merge = (runs: ReadonlyArray<Run>): Run => ({
  latencies: runs.flatMap((r) => r.latencies),
  seconds: runs.reduce((a, r) => a + r.seconds, 0),
  tokens: runs.reduce((a, r) => a + r.tokens, 0)
})

// BENCH_SERVE_PARTS=threads runs part 3 alone (decode speed by llama.cpp thread setting, idle and loaded)
if (process.env.BENCH_SERVE_PARTS === "threads") {
  const threads = await runThreadsBench()
  writeBenchmarkSection("## Serving threads", threads)
  console.log(threads)
  process.exit(0)
}

// ---------------------------------------------------------------------------------------------------------------
// files

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ff-bench-serve-"))
const config = presetConfig("small")
const base = path.join(dir, "small.gguf")
const peft = path.join(dir, "peft")
const adapter = path.join(dir, "adapter.gguf")
console.log(`writing ${base} and a rank-16 adapter …`)
await Effect.runPromise(writeTinyModel({ config, seed: 3, path: base, initStd: 0.1 }))
{
  fs.mkdirSync(peft, { recursive: true })
  fs.writeFileSync(path.join(peft, "adapter_config.json"), JSON.stringify({
    peft_type: "LORA", task_type: "CAUSAL_LM", r: 16, lora_alpha: 32, lora_dropout: 0, target_modules: ["q_proj", "k_proj", "v_proj", "o_proj"],
    use_rslora: false, base_model_name_or_path: "bench-small", bias: "none"
  }))
  let seed = 1
  const random = (n: number) => Float32Array.from({ length: n }, () => (((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) - 0.5) * 0.05)
  const q = config.numHeads * config.headDim
  const kv = config.numKvHeads * config.headDim
  const dims: Record<string, [number, number]> = { q_proj: [q, config.hiddenSize], k_proj: [kv, config.hiddenSize], v_proj: [kv, config.hiddenSize], o_proj: [config.hiddenSize, q] }
  const tensors = []
  for (let layer = 0; layer < config.numLayers; layer++) {
    for (const [module, [out, inn]] of Object.entries(dims)) {
      const name = weightNames.linear(layer, module as "q_proj")
      tensors.push({ name: `base_model.model.${name}.lora_A.weight`, shape: [16, inn], data: random(16 * inn) })
      tensors.push({ name: `base_model.model.${name}.lora_B.weight`, shape: [out, 16], data: random(out * 16) })
    }
  }
  await Effect.runPromise(writeSafetensors(path.join(peft, "adapter_model.safetensors"), tensors))
  await Effect.runPromise(exportAdapter({ adapter: peft, base, out: adapter }).pipe(Effect.provide(NodeServices.layer)))
}

// ---------------------------------------------------------------------------------------------------------------
// baseline: node-llama-cpp directly

const scope = Effect.runSync(Scope.make())
const llamaCpp = await Effect.runPromise(LlamaCpp.make("cpu").pipe(Scope.provide(scope)))
const model = await llamaCpp.llama.loadModel({ modelPath: base })
const directContext = await model.createContext({
  sequences: PARALLEL,
  contextSize: 2048 * PARALLEL,
  threads: THREADS,
  lora: { adapters: [{ filePath: adapter }] }
})
// for sizing max_length only: each request tokenizes its own prompt, as the server does
const promptTokens = [model.tokens.bos!, ...model.tokenize(seedPrompt(context, question), false)]
const pool: Array<LlamaContextSequence> = Array.from({ length: PARALLEL }, () => directContext.getSequence())
const waiting: Array<(s: LlamaContextSequence) => void> = []
const acquire = () => new Promise<LlamaContextSequence>((resolve) => {
  const s = pool.pop()
  if (s !== undefined) resolve(s)
  else waiting.push(resolve)
})
const release = (s: LlamaContextSequence) => {
  const next = waiting.shift()
  if (next !== undefined) next(s)
  else pool.push(s)
}

/** /infer's sampler settings for a request that sets only `temperature: 0` */
const sampling = { temperature: 0, topK: inferDefaults.top_k, topP: inferDefaults.top_p, seed: 1 }

/**
 * One answer the way a program calling node-llama-cpp directly would get what /infer returns: tokenize the seed
 * prompt, generate with the same sampler settings, stop at the seed's stop strings (so the text is detokenized as
 * it grows), and keep each token's probability for the confidence.
 */
const directAnswer = async (m: LlamaModel, sequence: LlamaContextSequence) => {
  const prompt = [m.tokens.bos!, ...m.tokenize(seedPrompt(context, question), false)]
  await sequence.clearHistory()
  const tokens: Array<Token> = []
  let confidence = 0
  let text = ""
  for await (const step of sequence.evaluateWithMetadata(prompt, { confidence: true }, sampling)) {
    if (m.isEogToken(step.token)) break
    text += m.detokenize([step.token], false, tokens.slice(-8))
    tokens.push(step.token)
    confidence += step.confidence
    if (seedStops.some((stop) => text.includes(stop)) || tokens.length >= GEN) break
  }
  return { tokens: tokens.length, text, confidence: confidence / Math.max(1, tokens.length) }
}

const directOnce = async () => {
  const sequence = await acquire()
  try {
    return (await directAnswer(model, sequence)).tokens
  } finally {
    release(sequence)
  }
}

const runDirect = async (concurrency: number, requests: number): Promise<Run> => {
  const latencies: Array<number> = []
  let tokens = 0
  let next = 0
  const started = performance.now()
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < requests) {
      next++
      const t0 = performance.now()
      const generated = await directOnce()
      latencies.push(performance.now() - t0)
      tokens += generated
    }
  }))
  return { latencies, seconds: (performance.now() - started) / 1000, tokens }
}

// ---------------------------------------------------------------------------------------------------------------
// the server

const server = await launchServer({
  port: 0,
  engine: { base, adapters: [{ name: "finance", path: adapter }], parallel: PARALLEL, queueSize: 64, threads: THREADS, gpu: "off" }
})
const body = JSON.stringify({ question, context, max_length: promptTokens.length + GEN, temperature: 0 })

const generatedTokens = async () => {
  const text = await (await fetch(`${server.url}/metrics`)).text()
  const line = text.split("\n").find((l) => l.startsWith("inference_generated_tokens_total{model=\"finance\"}"))
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(" ") + 1))
}

const runServer = async (concurrency: number, requests: number): Promise<Run> => {
  const latencies: Array<number> = []
  const before = await generatedTokens()
  let failures = 0
  const started = performance.now()
  await new Promise<void>((resolve, reject) => {
    const instance = autocannon({
      url: `${server.url}/infer`,
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
      connections: concurrency,
      amount: requests,
      timeout: 60
    }, (error) => (error ? reject(error) : resolve()))
    instance.on("response", (_client, status, _bytes, responseTime) => {
      if (status !== 200) failures++
      latencies.push(responseTime)
    })
  })
  const seconds = (performance.now() - started) / 1000
  if (failures > 0) throw new Error(`${failures} requests failed at concurrency ${concurrency}`)
  return { latencies, seconds, tokens: (await generatedTokens()) - before }
}

// ---------------------------------------------------------------------------------------------------------------
// run

console.log("warming up …")
await runDirect(PARALLEL, 2 * PARALLEL)
await runServer(PARALLEL, 2 * PARALLEL)

interface Row {
  readonly concurrency: number
  readonly direct: Run
  readonly served: Run
  /** server / direct p50 latency of each round: how far the ratio moves between rounds of the same run */
  readonly roundRatios: ReadonlyArray<number>
}
const rows: Array<Row> = []
for (const level of LEVELS) {
  const direct: Array<Run> = []
  const served: Array<Run> = []
  for (let round = 0; round < ROUNDS; round++) {
    direct.push(await runDirect(level.concurrency, level.requests / ROUNDS))
    served.push(await runServer(level.concurrency, level.requests / ROUNDS))
  }
  const row = {
    concurrency: level.concurrency,
    direct: merge(direct),
    served: merge(served),
    roundRatios: direct.map((d, i) => percentile(served[i]!.latencies, 50) / percentile(d.latencies, 50))
  }
  rows.push(row)
  console.log(`c=${row.concurrency}: direct p50 ${percentile(row.direct.latencies, 50).toFixed(1)} ms, server p50 ${percentile(row.served.latencies, 50).toFixed(1)} ms`)
}

await server.close()
await directContext.dispose()
await model.dispose()

// ---------------------------------------------------------------------------------------------------------------
// part 2: the fixed cost per request (HTTP, validation, queue, Effect) on the `tiny` preset, where it is largest
// relative to the model's work. One caller, direct and server strictly alternating, low percentiles: on a shared
// machine the upper percentiles measure the neighbours, the low ones what each path itself costs. The client is
// node:http with a keep-alive agent (what load generators use), since it runs on the server's own thread here; a
// `GET /live` round trip beside each pair shows the floor that loopback HTTP itself sets. Main-thread CPU time
// per request (process.threadCpuUsage) does not depend on the neighbours: llama.cpp computes on its own threads,
// so it is the JavaScript each path runs (the server's figure includes the client's share).

const FIXED_ROUNDS = 80
const tinyBase = path.join(dir, "tiny.gguf")
await Effect.runPromise(writeTinyModel({ config: presetConfig("tiny"), seed: 3, path: tinyBase, initStd: 0.1 }))
const tinyModel = await llamaCpp.llama.loadModel({ modelPath: tinyBase })
const tinyContext = await tinyModel.createContext({ sequences: 1, contextSize: 2048, threads: THREADS })
const tinySequence = tinyContext.getSequence()
const tinyPrompt = [tinyModel.tokens.bos!, ...tinyModel.tokenize(seedPrompt(context, question), false)]
const tinyServer = await launchServer({ port: 0, engine: { base: tinyBase, parallel: 1, queueSize: 4, threads: THREADS, gpu: "off" } })
const tinyBody = JSON.stringify({ question, context, max_length: tinyPrompt.length + GEN, temperature: 0 })
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
const tinyUrl = new URL(tinyServer.url)
const request = (method: "GET" | "POST", route: string, body?: string) =>
  new Promise<string>((resolve, reject) => {
    const req = http.request({
      host: tinyUrl.hostname, port: tinyUrl.port, path: route, method, agent,
      headers: body === undefined ? {} : { "content-type": "application/json", "content-length": Buffer.byteLength(body) }
    }, (res) => {
      let text = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => (text += chunk))
      res.on("end", () => res.statusCode === 200 ? resolve(text) : reject(new Error(`${route}: HTTP ${res.statusCode}: ${text}`)))
      res.on("error", reject)
    })
    req.on("error", reject)
    req.end(body)
  })
const timed = async <A>(f: () => Promise<A>) => {
  const cpu = process.threadCpuUsage()
  const t0 = performance.now()
  const value = await f()
  const ms = performance.now() - t0
  const used = process.threadCpuUsage(cpu)
  return { value, ms, cpuMs: (used.user + used.system) / 1000 }
}
/** less than /infer's work, to show what the baseline's fairness is worth: the prompt tokenized once in advance,
 * temperature-only sampling, no stop strings, the text detokenized once at the end */
const bareAnswer = async () => {
  await tinySequence.clearHistory()
  const tokens: Array<Token> = []
  for await (const step of tinySequence.evaluateWithMetadata(tinyPrompt, { confidence: true }, { temperature: 0 })) {
    if (tinyModel.isEogToken(step.token)) break
    tokens.push(step.token)
    if (tokens.length >= GEN) break
  }
  return tinyModel.detokenize(tokens)
}
const fixed = {
  direct: [] as Array<number>, server: [] as Array<number>, live: [] as Array<number>,
  bare: [] as Array<number>, viaFetch: [] as Array<number>,
  directCpu: [] as Array<number>, serverCpu: [] as Array<number>, directTokens: 0, serverTokens: 0
}
for (let round = 0; round < FIXED_ROUNDS + 5; round++) {
  const direct = await timed(() => directAnswer(tinyModel, tinySequence))
  const served = await timed(() => request("POST", "/infer", tinyBody))
  const live = await timed(() => request("GET", "/live"))
  const bare = await timed(bareAnswer)
  const viaFetch = await timed(() =>
    fetch(`${tinyServer.url}/infer`, { method: "POST", headers: { "content-type": "application/json" }, body: tinyBody }).then((r) => r.json()))
  const reply = JSON.parse(served.value) as { answer: string; metadata: { completion_tokens: number; raw_answer: string } }
  if (round < 5) continue // warm-up
  if (reply.metadata.raw_answer !== direct.value.text) throw new Error(`the answers differ: ${JSON.stringify(reply.metadata.raw_answer)} vs ${JSON.stringify(direct.value.text)}`)
  fixed.direct.push(direct.ms)
  fixed.server.push(served.ms)
  fixed.live.push(live.ms)
  fixed.bare.push(bare.ms)
  fixed.viaFetch.push(viaFetch.ms)
  fixed.directCpu.push(direct.cpuMs)
  fixed.serverCpu.push(served.cpuMs)
  fixed.directTokens = direct.value.tokens
  fixed.serverTokens = reply.metadata.completion_tokens
}
agent.destroy()
await tinyServer.close()
await tinyContext.dispose()
await tinyModel.dispose()
await Effect.runPromise(Scope.close(scope, Exit.void))
fs.rmSync(dir, { recursive: true, force: true })
if (fixed.directTokens !== fixed.serverTokens) throw new Error(`token counts differ: ${fixed.directTokens} vs ${fixed.serverTokens}`)

// ---------------------------------------------------------------------------------------------------------------
// report

const f1 = (x: number) => x.toFixed(1)
const f2 = (x: number) => x.toFixed(2)
const table = [
  "| concurrency | path | requests/s | p50 ms | p95 ms | p99 ms | tokens/s |",
  "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
  ...rows.flatMap((r) => [r.direct, r.served].map((run, i) =>
    `| ${r.concurrency} | ${i === 0 ? "node-llama-cpp direct" : "server `/infer`"} | ${f1(run.latencies.length / run.seconds)} | ${f1(percentile(run.latencies, 50))} | ${f1(percentile(run.latencies, 95))} | ${f1(percentile(run.latencies, 99))} | ${f1(run.tokens / run.seconds)} |`))
]
const one = rows[0]!
// judged at the median: the low percentiles flatter, the high ones measure whatever else the machine runs
const fixedCost = percentile(fixed.server, 50) - percentile(fixed.direct, 50)
const overhead = percentile(one.served.latencies, 50) / percentile(one.direct.latencies, 50) - 1
const throughputRatio = rows.map((r) => `${r.concurrency}: ${(r.served.latencies.length / r.served.seconds / (r.direct.latencies.length / r.direct.seconds)).toFixed(3)}`).join(", ")
const date = new Date().toISOString().slice(0, 10)
const load = os.loadavg()[0]!.toFixed(1)
const section = `## Serving (\`npm run bench:serve\`)

Measured ${date} on this ${os.cpus().length}-core machine, Node ${process.version}, CPU only (llama.cpp ${THREADS} thread per
context), 1-minute load average ${load} at the end of the run (the bench itself keeps about one core busy);
read the ratios, which were measured side by side in interleaved rounds, rather than the absolute figures.

Model: the project's random \`small\` GGUF (8 layers, d 512, vocab 4096, F32) with a rank-16 LoRA adapter on
q/k/v/o exported by \`export adapter\`; the server serves the adapter. Each request is the app's \`POST /infer\`
(the same question and formatRAGContext context, ${promptTokens.length} prompt tokens, greedy, at most ${GEN} answer tokens).
The server runs ${PARALLEL} sequences (\`--parallel ${PARALLEL}\`, queue 64); load from autocannon with
\`connections\` = concurrency. The baseline is node-llama-cpp called directly in the same process, doing what
/infer asks of it: a context with the same adapter and ${PARALLEL} sequences; per request the same prompt text
tokenized, the same sampler settings (/infer's top_k ${inferDefaults.top_k} and top_p ${inferDefaults.top_p} at temperature 0), the seed's stop
strings checked as the text grows, and the per-token confidence (\`evaluateWithMetadata({confidence: true})\`,
which /infer needs for its \`confidence\`); the same number of concurrent callers. tokens/s counts generated
tokens (the server's own \`inference_generated_tokens_total\`).

${table.join("\n")}

Server overhead at concurrency 1 (p50 latency, server / direct − 1): **${(overhead * 100).toFixed(1)}%** (target ≤ 5%);
the same ratio per round of this run: ${one.roundRatios.map((r) => `${((r - 1) * 100).toFixed(1)}%`).join(", ")}: at this
size it is noise around the fixed cost below. Throughput ratio server / direct by concurrency: ${throughputRatio}.

Fixed cost per request, measured apart on the \`tiny\` preset (4 layers, d 192), where the model's own work is
smallest, so the server's share is largest: one caller, ${FIXED_ROUNDS} rounds of node-llama-cpp direct (the baseline
above), \`POST /infer\`, \`GET /live\` and the two variants below in turn, ${fixed.serverTokens} answer tokens each, the server's
answer checked equal to the direct one every round. The client is node:http with a keep-alive agent (it runs on the server's own thread, so a
heavier client such as fetch would be counted as the server's cost). Low percentiles and the median (the high
ones measure whatever else the machine runs):

| percentile | direct ms | server ms | server − direct ms | server / direct − 1 | \`GET /live\` round trip ms |
| ---: | ---: | ---: | ---: | ---: | ---: |
${[10, 25, 50].map((p) => {
  const d = percentile(fixed.direct, p)
  const v = percentile(fixed.server, p)
  return `| p${p} | ${f1(d)} | ${f1(v)} | ${f1(v - d)} | ${((v / d - 1) * 100).toFixed(1)}% | ${f2(percentile(fixed.live, p))} |`
}).join("\n")}

Main-thread CPU per request (median; llama.cpp computes on its own threads, so this is the JavaScript each path
runs, and it hardly depends on the neighbours): direct ${f2(percentile(fixed.directCpu, 50))} ms, server ${f2(percentile(fixed.serverCpu, 50))} ms (client included),
difference ${f2(percentile(fixed.serverCpu, 50) - percentile(fixed.directCpu, 50))} ms.

What the method is worth (p25, same rounds): server via fetch instead of node:http − direct: ${f1(percentile(fixed.viaFetch, 25) - percentile(fixed.direct, 25))} ms
(fetch's own cost on the shared thread); server via node:http − a bare direct call that does less than /infer
(prompt tokenized once in advance, temperature-only sampling, no stop strings): ${f1(percentile(fixed.server, 25) - percentile(fixed.bare, 25))} ms. Until
2026-11-25 this section used both (fetch against the bare call) and reported 3.2 ms, 7.4% of a \`tiny\` request.

Reading: the server's own cost is about ${f1(fixedCost)} ms per request (median difference: loopback HTTP both ways, Schema
validation, admission, rehydration, JSON; the \`/live\` column is what any HTTP round trip costs). That is
${(fixedCost / percentile(one.direct.latencies, 50) * 100).toFixed(1)}% of a \`small\`-model request at concurrency 1 (target ≤ 5%: ${fixedCost / percentile(one.direct.latencies, 50) <= 0.05 ? "met" : "not met"}) and
${(fixedCost / percentile(fixed.direct, 50) * 100).toFixed(1)}% of a \`tiny\`-model one (target ≤ 5%: ${fixedCost / percentile(fixed.direct, 50) <= 0.05 ? "met" : "not met"}; a whole ${GEN}-token \`tiny\` answer takes
~${f1(percentile(fixed.direct, 50))} ms at the median).
`
writeBenchmarkSection("## Serving", section)
console.log(section)

// part 3: thread settings (bench/serveThreads.ts); its own section, after this one
const threadsSection = await runThreadsBench()
writeBenchmarkSection("## Serving threads", threadsSection)
console.log(threadsSection)
