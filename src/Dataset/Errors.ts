/**
 * The Dataset stage's errors. Each carries its `kind` (which decides the exit code, `exitCodeOf` in
 * Shared/Errors.ts) and a message that names the file, line and field: no stack traces for users.
 */
import * as Schema from "effect/Schema"
import type { ErrorKind } from "../Shared/Errors.ts"

/** The input cannot be opened or read (missing file, broken gzip, read error): `input`. */
export class DatasetInputError extends Schema.TaggedError<DatasetInputError>()("DatasetInputError", {
  file: Schema.String,
  detail: Schema.String
}) {
  get kind(): ErrorKind {
    return "input"
  }
  override get message() {
    return `${this.file}: ${this.detail}`
  }
}

/** An output cannot be written: `input` (the path given is unusable). */
export class DatasetOutputError extends Schema.TaggedError<DatasetOutputError>()("DatasetOutputError", {
  file: Schema.String,
  detail: Schema.String
}) {
  get kind(): ErrorKind {
    return "input"
  }
  override get message() {
    return `${this.file}: ${this.detail}`
  }
}

/** `--strict`: the first bad line stops the run: `data`. */
export class StrictModeViolation extends Schema.TaggedError<StrictModeViolation>()("StrictModeViolation", {
  file: Schema.String,
  line: Schema.Int,
  field: Schema.String,
  reason: Schema.String
}) {
  get kind(): ErrorKind {
    return "data"
  }
  override get message() {
    return `${this.file}:${this.line}: ${this.field}: ${this.reason}`
  }
}

/** More lines were rejected than `--max-reject-rate` allows (all outputs are still written): `threshold`. */
export class RejectRateExceeded extends Schema.TaggedError<RejectRateExceeded>()("RejectRateExceeded", {
  file: Schema.String,
  rejected: Schema.Int,
  records: Schema.Int,
  maxRejectRate: Schema.Finite
}) {
  get kind(): ErrorKind {
    return "threshold"
  }
  override get message() {
    const rate = this.records === 0 ? 0 : this.rejected / this.records
    return `${this.file}: ${this.rejected} of ${this.records} records rejected (${(rate * 100).toFixed(2)}%), over the allowed ${(this.maxRejectRate * 100).toFixed(2)}%`
  }
}

export type DatasetError = DatasetInputError | DatasetOutputError | StrictModeViolation | RejectRateExceeded
