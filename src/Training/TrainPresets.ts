/**
 * Named sets of trainer settings, beside the trainer's defaults (TrainConfig.ts), so a caller names what it wants
 * instead of spelling out hyper-parameters.
 */
import type { TrainConfig } from "./TrainConfig.ts"

export interface PretrainSettings {
  readonly steps: number
  readonly batchSize: number
  readonly learningRate: number
  readonly warmupSteps: number
  readonly maxSeqLength: number
  readonly seed: number
}

/**
 * Full-parameter pre-training of a randomly initialized base on plain text (the pipeline's project-made base): the
 * step budget decides the length (epochs never do), no dropout, light weight decay, validation loss once at the end
 * (no generations: a random model's answers say nothing), about three checkpoints of which only the newest is kept.
 */
export const pretrainPreset = (s: PretrainSettings) => ({
  mode: "full",
  epochs: 1000,
  maxSteps: s.steps,
  batchSize: s.batchSize,
  gradientAccumulationSteps: 1,
  learningRate: s.learningRate,
  warmupSteps: s.warmupSteps,
  maxSeqLength: s.maxSeqLength,
  loraDropout: 0,
  weightDecay: 0.01,
  logEvery: Math.max(1, Math.floor(s.steps / 20)),
  evalEvery: s.steps,
  saveEvery: Math.max(1, Math.floor(s.steps / 3)),
  saveTotalLimit: 1,
  metricForBest: "eval_loss",
  evalGenerationSamples: 0,
  seed: s.seed
} satisfies Partial<TrainConfig>)

/** How often a LoRA run of `maxSteps` logs: about 20 lines, at least every 10 steps. */
export const loraLogEvery = (maxSteps: number | undefined) => Math.max(1, Math.min(10, Math.floor((maxSteps ?? 100) / 20)))
