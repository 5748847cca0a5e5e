/**
 * The human-facing report of one or more evaluation runs: an HTML page whose charts are static SVG rendered with
 * vega-lite + vega in Node (no browser, no canvas), and a Markdown summary.
 *
 * Charts: the headline metrics as bars per system; per-sample distributions (BLEU, ROUGE-L, factuality) per system;
 * the training loss curve when a training metrics log (JSONL with `step` and `loss`) is given.
 */
import { Effect, Schema } from "effect"
import * as vega from "vega"
import * as vl from "vega-lite"
import { type Aggregate, headlineMetrics, type SampleResult } from "./RunFiles.ts"
import { describeCause, type ErrorKind } from "../Shared/Errors.ts"

export class ReportError extends Schema.TaggedError<ReportError>()("ReportError", { detail: Schema.String }) {
  get kind(): ErrorKind {
    return "failure"
  }
  override get message() {
    return `report: ${this.detail}`
  }
}

export interface LossPoint {
  readonly step: number
  readonly loss: number
  readonly split?: string
}

export interface ReportInput {
  readonly title: string
  readonly aggregates: ReadonlyArray<Aggregate>
  /** per-sample results by system name, for the distributions */
  readonly samples: ReadonlyMap<string, ReadonlyArray<SampleResult>>
  readonly trainingLog?: ReadonlyArray<LossPoint> | undefined
}

/** Renders one vega-lite spec to an SVG string. */
export const renderSvg = (spec: vl.TopLevelSpec) =>
  Effect.tryPromise({
    try: async () => {
      const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: "none" })
      try {
        return await view.toSVG()
      } finally {
        view.finalize()
      }
    },
    catch: (e) => new ReportError({ detail: `chart rendering failed: ${describeCause(e)}` })
  })

const escapeHtml = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")

const fmt = (x: number) => (Number.isInteger(x) ? String(x) : x.toFixed(4))

/** bar chart of the headline metrics (all on 0–1 scales: BLEU is divided by 100 here) */
const metricBarsSpec = (aggregates: ReadonlyArray<Aggregate>): vl.TopLevelSpec => ({
  $schema: "https://vega.github.io/schema/vega-lite/v5.json",
  title: "Metrics by system (BLEU shown /100)",
  data: {
    values: aggregates.flatMap((a) =>
      headlineMetrics.map((m) => ({
        system: a.system,
        metric: m,
        value: m === "bleu" || m === "sentence_bleu" ? a.metrics[m]! / 100 : a.metrics[m]!
      }))
    )
  },
  mark: "bar",
  encoding: {
    x: { field: "metric", type: "nominal", sort: [...headlineMetrics], axis: { labelAngle: -40 } },
    xOffset: { field: "system", type: "nominal" },
    y: { field: "value", type: "quantitative", scale: { domain: [0, 1] } },
    color: { field: "system", type: "nominal" },
    tooltip: [{ field: "system" }, { field: "metric" }, { field: "value", format: ".4f" }]
  },
  width: 560,
  height: 260
})

const distributionSpec = (samples: ReadonlyMap<string, ReadonlyArray<SampleResult>>): vl.TopLevelSpec => ({
  $schema: "https://vega.github.io/schema/vega-lite/v5.json",
  title: "Per-sample distributions",
  data: {
    values: [...samples].flatMap(([system, rows]) =>
      rows.flatMap((r) => [
        { system, metric: "sentence BLEU /100", value: r.metrics.bleu / 100 },
        { system, metric: "ROUGE-L F", value: r.metrics.rougeL },
        { system, metric: "factuality", value: r.metrics.factuality }
      ])
    )
  },
  facet: { column: { field: "metric", type: "nominal", title: null } },
  spec: {
    mark: { type: "bar", opacity: 0.7 },
    encoding: {
      x: { field: "value", type: "quantitative", bin: { extent: [0, 1], step: 0.1 }, title: "score", axis: { values: [0, 0.5, 1], format: ".1f" } },
      y: { aggregate: "count", type: "quantitative", stack: null, title: "samples" },
      color: { field: "system", type: "nominal" }
    },
    width: 180,
    height: 160
  }
})

const lossSpec = (log: ReadonlyArray<LossPoint>): vl.TopLevelSpec => ({
  $schema: "https://vega.github.io/schema/vega-lite/v5.json",
  title: "Training loss",
  data: { values: log.map((p) => ({ step: p.step, loss: p.loss, split: p.split ?? "train" })) },
  mark: { type: "line", point: log.length <= 60 },
  encoding: {
    x: { field: "step", type: "quantitative" },
    y: { field: "loss", type: "quantitative", scale: { zero: false } },
    color: { field: "split", type: "nominal" }
  },
  width: 560,
  height: 220
})

const metricLabels: Record<string, string> = {
  bleu: "BLEU (corpus, 0–100)",
  sentence_bleu: "BLEU (mean sentence, 0–100)",
  rouge1: "ROUGE-1 F",
  rouge2: "ROUGE-2 F",
  rougeL: "ROUGE-L F",
  rougeLsum: "ROUGE-Lsum F",
  factuality: "Factuality",
  citation_rate: "Citation rate",
  allowed_source_rate: "Allowed-source rate",
  risk_flag_rate: "Risk-flag rate",
  unneeded_disclaimer_rate: "Unneeded disclaimers (lower is better)",
  placeholder_f1: "Placeholder fidelity F1"
}

/** The Markdown summary: one table, one column per system. */
export const markdownSummary = (input: ReportInput): string => {
  const systems = input.aggregates.map((a) => a.system)
  const lines = [
    `# ${input.title}`,
    "",
    `| metric | ${systems.join(" | ")} |`,
    `| --- | ${systems.map(() => "---:").join(" | ")} |`,
    ...Object.keys(metricLabels).map((m) =>
      `| ${metricLabels[m]} | ${input.aggregates.map((a) => (a.metrics[m] === undefined ? "–" : fmt(a.metrics[m]!) + (a.stderr[m] ? ` ± ${a.stderr[m]!.toFixed(4)}` : ""))).join(" | ")} |`
    ),
    `| samples scored | ${input.aggregates.map((a) => String(a.scored)).join(" | ")} |`,
    `| generation failures | ${input.aggregates.map((a) => String(a.failed)).join(" | ")} |`,
    `| hallucinated values | ${input.aggregates.map((a) => String(a.counts.hallucinatedValues)).join(" | ")} |`,
    `| sign flips | ${input.aggregates.map((a) => String(a.counts.signFlips)).join(" | ")} |`,
    `| dropped required values | ${input.aggregates.map((a) => String(a.counts.droppedValues)).join(" | ")} |`,
    `| latency p50 / p95 (ms) | ${input.aggregates.map((a) => `${Math.round(a.latencyMs.p50)} / ${Math.round(a.latencyMs.p95)}`).join(" | ")} |`,
    "",
    "± is the standard error of a mean over samples.",
    "",
    ...input.aggregates.map((a) => `- **${a.system}**: ${a.generator}, split \`${a.split}\` (sha256 ${a.splitSha256.slice(0, 12)}), seed ${a.seed}`),
    "",
    ...(input.aggregates[0] === undefined ? [] : [
      `BLEU as sacrebleu \`${input.aggregates[0].signatures.bleu}\` (corpus) and \`${input.aggregates[0].signatures.sentenceBleu}\` (sentence);`,
      `ROUGE as ${input.aggregates[0].signatures.rouge}.`,
      ""
    ])
  ]
  return lines.join("\n")
}

/** Samples a reader should look at first: factual errors, then the lowest ROUGE-L, at most `n` per system. */
export const worstSamples = (rows: ReadonlyArray<SampleResult>, n = 10): Array<SampleResult> => {
  const errors = (r: SampleResult) =>
    r.metrics.hallucinatedValues.length + r.metrics.hallucinatedPlaceholders.length + r.metrics.signFlips.length
  return [...rows]
    .sort((a, b) => errors(b) - errors(a) || a.metrics.rougeL - b.metrics.rougeL || a.index - b.index)
    .slice(0, n)
}

const problems = (r: SampleResult) =>
  [
    ...r.metrics.hallucinatedValues.map((v) => `hallucinated ${v}`),
    ...r.metrics.hallucinatedPlaceholders.map((v) => `unfillable ${v}`),
    ...r.metrics.signFlips.map((v) => `sign flip ${v}`),
    ...r.metrics.droppedValues.map((v) => `dropped ${v}`),
    ...(r.metrics.needsDisclaimer && !r.metrics.hasDisclaimer ? ["no risk disclaimer"] : [])
  ].join("; ")

const worstTable = (system: string, rows: ReadonlyArray<SampleResult>) =>
  `<h3>${escapeHtml(system)}: samples to look at first</h3><table><thead><tr><th>#</th><th>question</th><th>reference</th>` +
  `<th>prediction</th><th>ROUGE-L</th><th>problems</th></tr></thead><tbody>` +
  worstSamples(rows).map((r) =>
    `<tr><td>${r.index}</td><td style="text-align:left">${escapeHtml(r.question)}</td><td style="text-align:left">${escapeHtml(r.reference)}</td>` +
    `<td style="text-align:left">${escapeHtml(r.prediction)}</td><td>${r.metrics.rougeL.toFixed(3)}</td><td style="text-align:left">${escapeHtml(problems(r))}</td></tr>`
  ).join("") +
  "</tbody></table>"

/** The HTML page and the Markdown summary. */
export const renderReport = Effect.fn("Report.render")(function*(input: ReportInput) {
  const bars = yield* renderSvg(metricBarsSpec(input.aggregates))
  const dist = input.samples.size > 0 ? yield* renderSvg(distributionSpec(input.samples)) : ""
  const loss = input.trainingLog && input.trainingLog.length > 0 ? yield* renderSvg(lossSpec(input.trainingLog)) : ""
  const markdown = markdownSummary(input)
  const table = [
    "<table><thead><tr><th>metric</th>",
    ...input.aggregates.map((a) => `<th>${escapeHtml(a.system)}</th>`),
    "</tr></thead><tbody>",
    ...Object.keys(metricLabels).map((m) =>
      `<tr><td>${escapeHtml(metricLabels[m]!)}</td>${input.aggregates.map((a) => `<td>${a.metrics[m] === undefined ? "–" : fmt(a.metrics[m]!)}</td>`).join("")}</tr>`
    ),
    "</tbody></table>"
  ].join("")
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(input.title)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
td:first-child,th:first-child{text-align:left}figure{margin:1.5em 0}</style></head>
<body><h1>${escapeHtml(input.title)}</h1>
${table}
<figure>${bars}</figure>
${dist ? `<figure>${dist}</figure>` : ""}
${loss ? `<figure>${loss}</figure>` : ""}
${[...input.samples].map(([system, rows]) => worstTable(system, rows)).join("\n")}
<ul>${input.aggregates.map((a) => `<li><b>${escapeHtml(a.system)}</b>: ${escapeHtml(a.generator)}, ${a.scored} samples scored, ${a.failed} failed, split ${escapeHtml(a.split)}, seed ${a.seed}</li>`).join("")}</ul>
</body></html>
`
  return { html, markdown }
})
