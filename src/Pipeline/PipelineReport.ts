/**
 * What a person reads at the end of `pipeline`: the one-screen summary printed to the terminal and `report.md` in
 * the run folder. Base-vs-tuned margins come with a paired bootstrap 95% interval over the held-out samples (the
 * same records scored for both systems; src/Evaluation/Margins.ts), so a margin can be told apart from noise.
 */
import type { DatasetResult } from "../Dataset/DatasetStage.ts"
import type { EvaluateResult } from "../Evaluation/EvaluateStage.ts"
import type { ExportResult } from "../Serving/ExportStage.ts"
import type { ServeResult } from "../Serving/ServeStage.ts"
import type { BaseResult } from "../Training/BaseStage.ts"
import type { PretrainResult } from "../Training/PretrainStage.ts"
import type { TrainStageResult } from "../Training/TrainStage.ts"
import { type PipelineConfig, settingsProfile } from "./PipelineConfig.ts"
import type { RunManifest } from "./StageRunner.ts"

export interface ReportInput {
  readonly config: PipelineConfig
  readonly manifest: Pick<RunManifest, "stages" | "lastInvocation" | "artifacts" | "startedAt"> & { readonly finishedAt?: string }
  readonly dataset: DatasetResult
  readonly base: BaseResult
  readonly pretrain: PretrainResult
  readonly train: TrainStageResult
  readonly exported: ExportResult
  readonly evaluation: EvaluateResult
  readonly serve: ServeResult
}

export const formatSeconds = (s: number | undefined): string => {
  if (s === undefined) return "-"
  if (s < 60) return `${s.toFixed(1)} s`
  const whole = Math.round(s) // round first, so 119.6 s reads 2m00s, not 1m60s
  return `${Math.floor(whole / 60)}m${String(whole % 60).padStart(2, "0")}s`
}
const fmt = (x: number | null | undefined, digits = 3) => (x === null || x === undefined ? "-" : x.toFixed(digits))
const signed = (x: number, digits = 3) => `${x >= 0 ? "+" : ""}${x.toFixed(digits)}`
const pad = (s: string, n: number) => (s.length >= n ? s : s + " ".repeat(n - s.length))
const padLeft = (s: string, n: number) => (s.length >= n ? s : " ".repeat(n - s.length) + s)
const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(2)} MiB`

const stageLine = (input: ReportInput, name: string): string => {
  const d = input.dataset
  switch (name) {
    case "dataset":
      return `${d.summary.linesRead} lines -> ${d.summary.train} train / ${d.summary.test} test ` +
        `(${d.summary.rejected} rejected, ${d.summary.duplicates.exact + d.summary.duplicates.normalized} duplicates)`
    case "base":
      return `${input.base.madeByProject ? "project-made" : input.base.catalogName ?? "yours"}: ${input.base.shape}, ${(input.base.parameters / 1e6).toFixed(2)}M parameters`
    case "pretrain":
      return input.pretrain.ran
        ? `full-parameter, ${input.pretrain.steps} steps, ${fmt(input.pretrain.tokensPerSecond, 0)} tok/s, loss ${fmt(input.pretrain.firstLoss, 2)} -> ${fmt(input.pretrain.lastLoss, 2)}`
        : `not run: ${input.pretrain.reason}`
    case "train":
      return `${input.train.mode} on ${input.train.engine ?? "tfjs"}, ${input.train.steps} steps, ${fmt(input.train.tokensPerSecond, 0)} tok/s, loss ${fmt(input.train.firstLoss, 2)} -> ${fmt(input.train.lastLoss, 2)}, best step ${input.train.bestStep}`
    case "export":
      return `adapter GGUF ${input.exported.tensors} tensors, ${mib(input.exported.adapterBytes)}${input.exported.merged === undefined ? "" : ", merged GGUF"}`
    case "evaluate":
      return input.evaluation.ran
        ? `${input.evaluation.samples} held-out samples, base and tuned (llama.cpp, greedy${input.evaluation.maxNewTokens === undefined ? "" : `, up to ${input.evaluation.maxNewTokens} tokens`})`
        : `not run: ${input.evaluation.reason}`
    case "serve": {
      const a = input.serve.answers ?? []
      return input.serve.ran
        ? `POST /infer answered ${a.length}/${a.length}, mean ${fmt(a.reduce((s, x) => s + x.latencyMs, 0) / Math.max(1, a.length), 0)} ms`
        : `not run: ${input.serve.reason}`
    }
    default:
      return ""
  }
}

/** The stages a report lists: pre-training only when it ran (a real base has no pre-training stage). */
const reportedStages = (input: ReportInput) =>
  ["dataset", "base", "pretrain", "train", "export", "evaluate", "serve"].filter((n) => n !== "pretrain" || input.pretrain.ran)

/** Which defaults the run used and the training settings that matter, in one line. */
export const settingsLine = (input: ReportInput): string => {
  const t = input.config.train
  const profile = settingsProfile(input.config.model.base)
  return `settings: ${profile.name} defaults (${profile.reason}); ${t.mode} r ${t.r} alpha ${t.loraAlpha} on ${
    Array.isArray(t.targetModules) ? t.targetModules.join(",") : t.targetModules
  }, lr ${t.learningRate}, ${t.maxSteps ?? `${t.epochs} epochs of`} steps x ${t.batchSize}, warmup ${t.warmupSteps}, dropout ${t.loraDropout}, ` +
    `${t.maxSeqLength} tokens, ${t.promptLayout} prompts; engine ${input.train.engine ?? "tfjs"}${input.train.engineReason === undefined ? "" : ` (${input.train.engineReason})`}`
}

const oneLine = (s: string) => s.replace(/\s+/g, " ").trim()

/** The one-screen summary printed at the end of a run. */
export const renderSummary = (input: ReportInput): string => {
  const lines: Array<string> = []
  const stages = reportedStages(input)
  const total = stages.reduce((s, n) => s + (input.manifest.stages[n]?.seconds ?? 0), 0)
  const cpu = stages.reduce((s, n) => s + (input.manifest.stages[n]?.cpuSeconds ?? 0), 0)
  lines.push("", `finetune-finance pipeline: ${input.config.out}  (stages took ${formatSeconds(total)}, ${formatSeconds(cpu)} of CPU)`, "")
  lines.push(`${pad("stage", 9)} ${pad("this run", 8)} ${padLeft("time", 8)} ${padLeft("cpu", 8)}  what`)
  for (const name of stages) {
    const ran = input.manifest.lastInvocation[name] ?? "-"
    const record = input.manifest.stages[name]
    lines.push(`${pad(name, 9)} ${pad(ran, 8)} ${padLeft(formatSeconds(record?.seconds), 8)} ${padLeft(formatSeconds(record?.cpuSeconds), 8)}  ${stageLine(input, name)}`)
  }
  lines.push("", settingsLine(input))
  const margins = input.evaluation.margins
  if (margins !== undefined && margins.length > 0) {
    lines.push("", `held-out metrics (${margins[0]!.pairs} samples; margin = tuned - base, paired bootstrap 95% interval)`)
    lines.push(`${pad("metric", 16)} ${padLeft("base", 7)} ${padLeft("tuned", 7)} ${padLeft("margin", 8)}  95% interval`)
    for (const m of margins) {
      lines.push(`${pad(m.label, 16)} ${padLeft(fmt(m.base), 7)} ${padLeft(fmt(m.tuned), 7)} ${padLeft(signed(m.delta), 8)}  [${signed(m.low)}, ${signed(m.high)}]`)
    }
    const b = input.evaluation.base!.metrics
    const t = input.evaluation.tuned!.metrics
    lines.push(`${pad("corpus BLEU", 16)} ${padLeft(fmt(b["bleu"], 2), 7)} ${padLeft(fmt(t["bleu"], 2), 7)} ${padLeft(signed(t["bleu"]! - b["bleu"]!, 2), 8)}`)
  }
  const sideBySide = input.evaluation.sideBySide ?? []
  if (sideBySide.length > 0) {
    lines.push("", `${sideBySide.length} held-out questions side by side (report.md has them whole):`)
    const cut = (s: string) => (oneLine(s).length > 150 ? `${oneLine(s).slice(0, 147)}...` : oneLine(s))
    for (const [i, q] of sideBySide.entries()) {
      lines.push(`${i + 1}. Q: ${cut(q.question)}`, `   base:      ${cut(q.base)}`, `   tuned:     ${cut(q.tuned)}`, `   reference: ${cut(q.reference)}`)
    }
  }
  if (input.pretrain.ran) {
    lines.push("", "note: the built-in base starts from random weights, so it was pre-trained (full-parameter, same trainer) on the",
      "training split's answer text before LoRA; \"base\" above is that pre-trained model, \"tuned\" is it plus the LoRA adapter.")
  }
  lines.push("", "artifacts:")
  for (const [name, file] of Object.entries(input.manifest.artifacts)) lines.push(`  ${pad(name, 18)} ${file}`)
  lines.push("")
  return lines.join("\n")
}

/** report.md: everything in the summary, plus settings, the served answers and where every file is. */
export const renderMarkdownReport = (input: ReportInput): string => {
  const out: Array<string> = []
  const stages = reportedStages(input)
  out.push("# Pipeline report", "")
  out.push(`Run folder \`${input.config.out}\`, started ${input.manifest.startedAt}.`, "")
  out.push(settingsLine(input), "")
  out.push("## Stages", "", "| stage | time | CPU | what |", "| --- | ---: | ---: | --- |")
  for (const name of stages) {
    const record = input.manifest.stages[name]
    out.push(`| ${name} | ${formatSeconds(record?.seconds)} | ${formatSeconds(record?.cpuSeconds)} | ${stageLine(input, name)} |`)
  }
  out.push("")
  if (input.pretrain.ran) {
    out.push("## Why the base was pre-trained", "",
      "The built-in base model is made by the project with random weights. A random model cannot show what LoRA adds, so the " +
        "default first pre-trains it, full-parameter and with the same trainer, on the training split's answers " +
        "as plain text (no Context/Question/Answer prompt). That pre-trained model is the **base** below; LoRA then teaches the " +
        "task (answering a question from its context) and the **tuned** model is the base plus the adapter. With your own " +
        "model (`--model`), this step does not run.", "")
  }
  const margins = input.evaluation.margins
  if (margins !== undefined && input.evaluation.base !== undefined && input.evaluation.tuned !== undefined) {
    out.push("## Base vs tuned on the held-out split", "",
      `${margins[0]?.pairs ?? 0} held-out records, greedy decoding through llama.cpp (the GGUF files that are served). ` +
        "Margin = tuned − base; the interval is a paired bootstrap 95% interval over the samples.", "",
      "| metric | base | tuned | margin | 95% interval |", "| --- | ---: | ---: | ---: | --- |")
    for (const m of margins) out.push(`| ${m.label} | ${fmt(m.base)} | ${fmt(m.tuned)} | ${signed(m.delta)} | [${signed(m.low)}, ${signed(m.high)}] |`)
    out.push("", "All corpus metrics:", "", "| metric | base | tuned |", "| --- | ---: | ---: |")
    for (const [k, v] of Object.entries(input.evaluation.tuned.metrics)) out.push(`| ${k} | ${fmt(input.evaluation.base.metrics[k])} | ${fmt(v)} |`)
    out.push("", `Charts and per-sample results: \`${input.evaluation.report}\`.`, "")
    if (input.evaluation.budgetSource !== undefined) out.push(`Answer budget: ${input.evaluation.maxNewTokens} tokens (${input.evaluation.budgetSource}).`, "")
  }
  const sideBySide = input.evaluation.sideBySide ?? []
  if (sideBySide.length > 0) {
    const cell = (s: string) => oneLine(s).replace(/\|/g, "\\|")
    out.push(`## ${sideBySide.length} held-out questions side by side`, "", "| question | base | tuned | reference |", "| --- | --- | --- | --- |")
    for (const q of sideBySide) out.push(`| ${cell(q.question)} | ${cell(q.base)} | ${cell(q.tuned)} | ${cell(q.reference)} |`)
    out.push("")
  }
  if (input.serve.ran && input.serve.answers !== undefined) {
    out.push("## Served answers (`POST /infer`)", "")
    for (const a of input.serve.answers) {
      out.push(`- **Q:** ${a.question}`, `  **A:** ${a.answer.replace(/\n/g, " ")} _(confidence ${fmt(a.confidence, 2)}, ${a.latencyMs} ms)_`)
    }
    out.push("")
  }
  out.push("## Artifacts", "", "| artifact | path |", "| --- | --- |")
  for (const [name, file] of Object.entries(input.manifest.artifacts)) out.push(`| ${name} | \`${file}\` |`)
  out.push("", "## Settings", "", "```json", JSON.stringify(input.config, null, 2), "```", "")
  return out.join("\n")
}
