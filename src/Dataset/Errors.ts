/**
 * The Dataset stage's errors. Each carries the process exit code the CLI should end with
 * (`Runtime.errorExitCode`) and a message that names the file, line and field: no stack traces for users.
 */
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"

/** The input cannot be opened or read (missing file, broken gzip, read error). Exit 1. */
export class DatasetInputError extends Schema.TaggedError<DatasetInputError>()("DatasetInputError", {
  file: Schema.String,
  detail: Schema.String
}) {
  override readonly [Runtime.errorExitCode] = 1
  override get message() {
    return `${this.file}: ${this.detail}`
  }
}

/** An output cannot be written. Exit 1. */
export class DatasetOutputError extends Schema.TaggedError<DatasetOutputError>()("DatasetOutputError", {
  file: Schema.String,
  detail: Schema.String
}) {
  override readonly [Runtime.errorExitCode] = 1
  override get message() {
    return `${this.file}: ${this.detail}`
  }
}

/** `--strict`: the first bad line stops the run. Exit 2. */
export class StrictModeViolation extends Schema.TaggedError<StrictModeViolation>()("StrictModeViolation", {
  file: Schema.String,
  line: Schema.Int,
  field: Schema.String,
  reason: Schema.String
}) {
  override readonly [Runtime.errorExitCode] = 2
  override get message() {
    return `${this.file}:${this.line}: ${this.field}: ${this.reason}`
  }
}

/** More lines were rejected than `--max-reject-rate` allows (all outputs are still written). Exit 3. */
export class RejectRateExceeded extends Schema.TaggedError<RejectRateExceeded>()("RejectRateExceeded", {
  file: Schema.String,
  rejected: Schema.Int,
  records: Schema.Int,
  maxRejectRate: Schema.Finite
}) {
  override readonly [Runtime.errorExitCode] = 3
  override get message() {
    const rate = this.records === 0 ? 0 : this.rejected / this.records
    return `${this.file}: ${this.rejected} of ${this.records} records rejected (${(rate * 100).toFixed(2)}%), over the allowed ${(this.maxRejectRate * 100).toFixed(2)}%`
  }
}

export type DatasetError = DatasetInputError | DatasetOutputError | StrictModeViolation | RejectRateExceeded
