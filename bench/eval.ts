/**
 * `npm run bench:eval`: metric throughput on 10,000 generated answer pairs.
 *
 * Measures, each as the best of ROUNDS passes over the same 10k pairs (after a warm-up pass):
 * - the baselines: tokenization alone (sacrebleu's 13a for BLEU, rouge-score's tokenizer for ROUGE, both sides),
 *   the floor any implementation of that metric pays;
 * - sentence BLEU per pair (sacrebleu defaults: exp smoothing, effective order) and corpus BLEU of all pairs;
 * - ROUGE-1/2/L/Lsum per pair, without and with the Porter stemmer;
 * - peak RSS of the process (`process.resourceUsage().maxRSS`).
 *
 * Writes the results into the `## Evaluation metrics` section of BENCHMARKS.md.
 */
import { cpus, loadavg } from "node:os"
import { corpusBleu, sentenceBleu, tokenize13a } from "../src/Metrics/Bleu.ts"
import { rougeScores, rougeTokenize } from "../src/Metrics/Rouge.ts"
import { writeBenchmarkSection } from "./BenchmarksFile.ts"

const loadAtStart = loadavg()[0]!
const PAIRS = 10_000
const ROUNDS = 5

// deterministic finance-like pairs: ~20–40 tokens, numbers, placeholders, some two-line answers
let seed = 12345
const rand = () => {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff
  return seed / 0x7fffffff
}
const pick = <A>(xs: ReadonlyArray<A>) => xs[Math.floor(rand() * xs.length)]!
const subjects = ["AAPL", "The company", "<SYMBOL>", "Microsoft (MSFT)", "The S&P 500", "Investors", "NVDA", "<STOCK_1>"]
const verbs = ["rose", "fell", "is trading at", "closed at", "gained", "reported earnings of", "was valued at", "declined by"]
const values = ["$1,234.50", "1.2%", "+0.45", "3.1B", "<PRICE>", "<CHANGE>", "$189.84 (+1.25%)", "12,345", "<PE_1>", "-2.3%"]
const tails = [
  "today after strong quarterly results and raised guidance.",
  "amid rate-cut hopes, while volatility remains elevated across the sector.",
  "as investors weighed the outlook for margins and revenue growth.",
  "according to Reuters; analysts expect further upside if demand holds.",
  "— past performance does not guarantee future results."
]
const sentence = () => `${pick(subjects)} ${pick(verbs)} ${pick(values)} ${pick(tails)}`
const mutate = (s: string) => {
  const t = s.split(" ")
  for (let k = 0; k < 3; k++) {
    const i = Math.floor(rand() * t.length)
    if (rand() < 0.5) t.splice(i, 1)
    else t.splice(i, 0, pick(["the", "stock", "<PRICE>", "investing", "up", ","]))
  }
  return t.join(" ")
}
const refs: Array<string> = []
const hyps: Array<string> = []
for (let i = 0; i < PAIRS; i++) {
  const ref = rand() < 0.3 ? `${sentence()}\n${sentence()}` : sentence()
  refs.push(ref)
  hyps.push(rand() < 0.1 ? sentence() : mutate(ref))
}
const avgTokens = refs.reduce((a, r) => a + tokenize13a(r).split(" ").length, 0) / PAIRS

let sink = 0
const time = (label: string, f: () => void) => {
  f() // warm-up (JIT, stemmer memo)
  let best = Number.POSITIVE_INFINITY
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = performance.now()
    f()
    best = Math.min(best, performance.now() - t0)
  }
  return { label, ms: best, pairsPerSecond: (PAIRS / best) * 1000 }
}

const results = [
  time("baseline for BLEU: 13a tokenization of both sides only", () => {
    for (let i = 0; i < PAIRS; i++) sink += tokenize13a(hyps[i]!).length + tokenize13a(refs[i]!).length
  }),
  time("baseline for ROUGE: rouge-score tokenization of both sides only", () => {
    for (let i = 0; i < PAIRS; i++) sink += rougeTokenize(hyps[i]!).length + rougeTokenize(refs[i]!).length
  }),
  time("sentence BLEU per pair", () => {
    for (let i = 0; i < PAIRS; i++) sink += sentenceBleu(hyps[i]!, [refs[i]!]).score
  }),
  time("corpus BLEU (one score over 10k pairs)", () => {
    sink += corpusBleu(hyps, [refs]).score
  }),
  time("ROUGE-1/2/L/Lsum per pair", () => {
    for (let i = 0; i < PAIRS; i++) sink += rougeScores(hyps[i]!, refs[i]!).rougeL.fmeasure
  }),
  time("ROUGE-1/2/L/Lsum per pair, Porter stemmer", () => {
    for (let i = 0; i < PAIRS; i++) sink += rougeScores(hyps[i]!, refs[i]!, { useStemmer: true }).rougeL.fmeasure
  })
]
const peakRssMiB = process.resourceUsage().maxRSS / 1024
// each metric against the tokenization it cannot avoid
const baselineOf = (label: string) => (label.includes("BLEU") ? results[0]!.ms : results[1]!.ms)

const table = [
  "| measurement | time for 10k pairs (best of 5) | pairs/s | × its tokenization baseline |",
  "| --- | ---: | ---: | ---: |",
  ...results.map((r) => `| ${r.label} | ${r.ms.toFixed(0)} ms | ${Math.round(r.pairsPerSecond).toLocaleString("en-US")} | ${r.label.startsWith("baseline") ? "1.00" : (r.ms / baselineOf(r.label)).toFixed(2)} |`)
].join("\n")

const met = (ms: number) => `${(ms / 1000).toFixed(2)} s (${ms < 1000 ? "met" : "NOT met"})`
const date = new Date().toISOString().slice(0, 10)
const section = `## Evaluation metrics (\`npm run bench:eval\`)

Command: \`npm run bench:eval\` (bench/eval.ts). Machine: ${cpus().length}-core ${cpus()[0]?.model.trim() ?? "CPU"}, Node ${process.version}, ${date}.
The machine was shared with other engineers' builds and tests while this ran (1-minute load average ${loadAtStart.toFixed(1)} on
${cpus().length} cores at the start), so absolute times are noisy; the
ratio to each metric's tokenization baseline (measured in the same run, same pairs) is the steadier figure.

${PAIRS.toLocaleString("en-US")} generated finance answer pairs (about ${avgTokens.toFixed(0)} 13a tokens per reference, 30% two-line), each figure the best of
${ROUNDS} passes after a warm-up pass. Target: BLEU and ROUGE each score 10k pairs in under 1 s.

${table}

Target (10k pairs in under 1 s each): sentence BLEU ${met(results[2]!.ms)}, ROUGE-1/2/L/Lsum ${met(results[4]!.ms)}, with stemming ${met(results[5]!.ms)}.
Peak RSS of the whole benchmark process: ${peakRssMiB.toFixed(0)} MiB.
`

writeBenchmarkSection("## Evaluation metrics", section)
console.log(section)
if (sink === 42) console.log("") // keeps the work observable
