/**
 * Learning-rate schedules as transformers' `get_linear_schedule_with_warmup` and
 * `get_cosine_schedule_with_warmup` (num_cycles 0.5) define them: a multiplier of the peak rate as a function of
 * the number of optimizer steps already taken. As in the HF Trainer, update k (0-based) uses `lrAt(k)`, so with
 * warmup the very first update has rate 0.
 */
import { Schema } from "effect"

export const LrSchedulerType = Schema.Literals(["linear", "cosine", "constant"])
export type LrSchedulerType = typeof LrSchedulerType.Type

export interface LrScheduleSpec {
  readonly type: LrSchedulerType
  readonly peak: number
  readonly warmupSteps: number
  readonly totalSteps: number
}

export const lrMultiplier = (spec: Omit<LrScheduleSpec, "peak">, step: number): number => {
  const { warmupSteps, totalSteps } = spec
  if (step < warmupSteps) return step / Math.max(1, warmupSteps)
  switch (spec.type) {
    case "constant":
      return 1
    case "linear":
      return Math.max(0, (totalSteps - step) / Math.max(1, totalSteps - warmupSteps))
    case "cosine": {
      const progress = (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps)
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * progress)))
    }
  }
}

/** The learning rate of update `step` (0-based count of updates already taken). */
export const lrAt = (spec: LrScheduleSpec, step: number): number => spec.peak * lrMultiplier(spec, step)
