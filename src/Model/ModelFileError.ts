/**
 * The one error of the weight-file readers and writers (safetensors, GGUF, HF folders): it names the file and, where
 * one is involved, the tensor or metadata key, so a user can find what is wrong without a stack trace.
 */
import { Schema } from "effect"
import { causeKind, describeCause, kindField } from "../Shared/Errors.ts"

export class ModelFileError extends Schema.TaggedError<ModelFileError>()("ModelFileError", {
  file: Schema.String,
  /** the tensor (or metadata key / config field) the problem is about, when there is one */
  tensor: Schema.optionalKey(Schema.String),
  detail: Schema.String,
  /** `data` (the contents are wrong) unless the file is missing or unreadable (`input`) */
  kind: kindField("data")
}) {
  override get message() {
    return this.tensor === undefined ? `${this.file}: ${this.detail}` : `${this.file}: ${this.tensor}: ${this.detail}`
  }
}

/** Builds a `ModelFileError` (internal code throws it synchronously; Effect wrappers pass it through). */
export const fileError = (file: string, detail: string, tensor?: string): ModelFileError =>
  new ModelFileError(tensor === undefined ? { file, detail } : { file, tensor, detail })

/** Turns whatever a synchronous file operation threw into a `ModelFileError` about `file`. */
export const toFileError = (file: string) => (cause: unknown): ModelFileError =>
  cause instanceof ModelFileError
    ? cause
    : new ModelFileError({ file, detail: describeCause(cause), kind: causeKind(cause) ?? "data" })
