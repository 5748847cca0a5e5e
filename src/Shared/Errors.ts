/**
 * The project's one error vocabulary. Every tagged error says what *kind* of failure it is, and the kind alone
 * decides the process exit code of every command (`exitCodeOf`), so `dataset`, `train`, `eval`, `serve`, `route`,
 * `model` and `pipeline` agree: a missing input file exits 1 in all of them.
 *
 * Also here: `describeCause` (one line of text from anything thrown or failed with), `issueField` (a Schema issue
 * as `field.path: reason`) and the CLI edge (`CommandFailed`, `failCommand`, `reportErrors`): the message is
 * printed once on stderr, without a stack trace, and the process exits with the kind's code.
 */
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"

/**
 * - input: a flag, an argument or a path is wrong (unknown flag, bad value, a file that is missing or cannot be
 *   read or written). Effect's own CLI parser exits 1 for usage errors too.
 * - data: an input was read but its contents are invalid (config values, records, a model or adapter file, an
 *   adapter that does not fit its base).
 * - failure: the work ran and failed (training diverged, every generation failed, a stage broke).
 * - threshold: the work ran, and a gate the user asked for was not met (`--max-reject-rate`, `eval check`
 *   regressions, `--require-improvement`).
 * - unavailable: something the work needs is not there right now (a device, a port, a model server, every provider).
 * - interrupted: Ctrl-C / SIGTERM (what Effect's runtime exits with on interruption).
 */
export const ErrorKind = Schema.Literals(["input", "data", "failure", "threshold", "unavailable", "interrupted"])
export type ErrorKind = typeof ErrorKind.Type

/** The one exit-code table. `threshold` shares 3 with `failure`: both mean "the run did not produce a passing result". */
export const exitCodes: { readonly [K in "ok" | ErrorKind]: number } = {
  ok: 0,
  input: 1,
  data: 2,
  failure: 3,
  threshold: 3,
  unavailable: 4,
  interrupted: 130
}

export const exitCodeOf = (kind: ErrorKind): number => exitCodes[kind]

/** The table as one line, shown at the end of every command's --help. */
export const exitCodesHelp =
  "Exit codes: 0 ok; 1 bad usage or input (a flag, a missing or unreadable file); 2 invalid data or config; " +
  "3 the run failed or a required threshold was not met; 4 unavailable (device, port, model, providers); 130 interrupted."

/**
 * A `kind` field for an error that can be more than one kind (the same "cannot use this model file" is `input` when
 * the file is missing and `data` when its contents are wrong): `kind: kindField("data")` defaults to `data` and a
 * constructor passes `kind: "input"` (often `causeKind(cause)`) where it knows better. An error that is always the
 * same kind declares `get kind(): ErrorKind` instead.
 */
export const kindField = (defaultKind: ErrorKind) => ErrorKind.pipe(Schema.withConstructorDefault(Effect.succeed(defaultKind)))

const isErrorKind = Schema.is(ErrorKind)

/** An error's kind: its `kind` when that is an `ErrorKind`, else `failure` (an unclassified error is a failure). */
export const kindOf = (error: unknown): ErrorKind => {
  if (typeof error === "object" && error !== null && "kind" in error && isErrorKind(error.kind)) return error.kind
  return "failure"
}

// ---------------------------------------------------------------------------------------------------------
// causes

/** What a system error tag (Effect's PlatformError) or errno code means, in words. */
const systemWords: Readonly<Record<string, string>> = {
  NotFound: "no such file or folder",
  ENOENT: "no such file or folder",
  PermissionDenied: "permission denied",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  AlreadyExists: "already exists",
  EEXIST: "already exists",
  EISDIR: "is a folder, expected a file",
  ENOTDIR: "a part of the path is not a folder",
  EADDRINUSE: "address already in use",
  EADDRNOTAVAIL: "address not available",
  ECONNREFUSED: "connection refused",
  TimedOut: "timed out",
  UnexpectedEof: "unexpected end of file"
}

const field = (u: object, key: string): unknown => (u as Record<string, unknown>)[key]
const nonEmptyString = (u: unknown): u is string => typeof u === "string" && u.trim() !== ""

/**
 * One line of text for anything an effect failed with or a callback threw: an Error's message, an Effect
 * PlatformError in words (`no such file or folder (/x/y.gguf)`), a string as is. Never empty, never a stack.
 */
export const describeCause = (cause: unknown): string => {
  if (typeof cause === "string") return cause === "" ? "unknown error" : cause
  if (typeof cause !== "object" || cause === null) return String(cause)
  // Effect's PlatformError: { _tag: "PlatformError", reason: SystemError | BadArgument }
  const reason = field(cause, "reason")
  if (field(cause, "_tag") === "PlatformError" && typeof reason === "object" && reason !== null) {
    const tag = field(reason, "_tag")
    const words = typeof tag === "string" ? systemWords[tag] : undefined
    const path = field(reason, "pathOrDescriptor")
    const description = field(reason, "description")
    if (words !== undefined) {
      return `${words}${path === undefined ? "" : ` (${String(path)})`}${nonEmptyString(description) && !description.includes(words) ? `: ${description}` : ""}`
    }
  }
  const message = field(cause, "message")
  if (nonEmptyString(message)) return message
  const code = field(cause, "code")
  if (typeof code === "string" && systemWords[code] !== undefined) return systemWords[code]!
  const inner = field(cause, "cause")
  if (inner !== undefined && inner !== cause) return describeCause(inner)
  const tag = field(cause, "_tag")
  if (nonEmptyString(tag)) return tag
  if (nonEmptyString(code)) return code
  const text = String(cause)
  return text === "[object Object]" || text === "" ? "unknown error" : text
}

const inputCodes = new Set(["NotFound", "PermissionDenied", "ENOENT", "EACCES", "EPERM", "EISDIR", "ENOTDIR", "EEXIST"])
const unavailableCodes = new Set(["EADDRINUSE", "EADDRNOTAVAIL", "ECONNREFUSED"])

/**
 * The kind a cause implies, when it implies one: an error of ours says its `kind`; a missing or unreadable path is
 * `input`, a port in use or a refused connection is `unavailable`. Lets an error built from "could not open X"
 * carry the right kind.
 */
export const causeKind = (cause: unknown): ErrorKind | undefined => {
  if (typeof cause !== "object" || cause === null) return undefined
  const own = field(cause, "kind")
  if (isErrorKind(own)) return own
  const reason = field(cause, "reason")
  const tag = field(cause, "_tag") === "PlatformError" && typeof reason === "object" && reason !== null ? field(reason, "_tag") : undefined
  const code = field(cause, "code")
  const key = typeof tag === "string" ? tag : typeof code === "string" ? code : undefined
  if (key !== undefined && inputCodes.has(key)) return "input"
  if (key !== undefined && unavailableCodes.has(key)) return "unavailable"
  const inner = field(cause, "cause")
  return inner !== undefined && inner !== cause ? causeKind(inner) : undefined
}

// ---------------------------------------------------------------------------------------------------------
// Schema issues

/** One Schema problem: the dotted path of the field (`""` at the root) and what is wrong with it. */
export interface FieldIssue {
  readonly field: string
  readonly reason: string
}

const formatter = SchemaIssue.makeFormatterStandardSchemaV1()

/** `messages.0.content` from a Standard Schema path. */
export const issuePath = (path: ReadonlyArray<unknown> | undefined): string =>
  (path ?? []).map((p) => (typeof p === "object" && p !== null && "key" in p ? String(p.key) : String(p))).join(".")

/** Every problem of a Schema error, each with its field path. */
export const fieldIssues = (error: Schema.SchemaError): ReadonlyArray<FieldIssue> => {
  const issues = formatter(error.issue).issues
  return issues.length === 0
    ? [{ field: "", reason: error.message }]
    : issues.map((issue) => ({ field: issuePath(issue.path), reason: issue.message }))
}

/** The first problem of a Schema error (what a one-line message names). */
export const firstFieldIssue = (error: Schema.SchemaError): FieldIssue => fieldIssues(error)[0]!

/** `field.path: reason`; `root` names the whole value when the path is empty (e.g. `<root>` or `body`). */
export const issueField = (issue: FieldIssue | Schema.SchemaError, root = "<root>"): string => {
  const first = Schema.isSchemaError(issue) ? firstFieldIssue(issue) : issue
  return `${first.field === "" ? root : first.field}: ${first.reason}`
}

// ---------------------------------------------------------------------------------------------------------
// the CLI edge

/** A command's failure after its message was printed for the user; exits with the kind's code. */
export class CommandFailed extends Schema.TaggedError<CommandFailed>()("CommandFailed", {
  command: Schema.String,
  message: Schema.String,
  kind: ErrorKind
}) {
  override readonly [Runtime.errorExitCode] = exitCodeOf(this.kind)
  override readonly [Runtime.errorReported] = false
}

/** Prints `command: message` on stderr and fails with the kind's exit code. */
export const failCommand = (command: string, message: string, kind: ErrorKind) =>
  Effect.andThen(Console.error(`${command}: ${message}`), Effect.fail(new CommandFailed({ command, message, kind })))

/**
 * A CLI edge: any failure of `self` is printed as `command: message` (no stack trace) and ends the process with
 * `exitCodeOf(kindOf(error))`. A `CommandFailed` was printed already and passes through.
 */
export const reportErrors = (command: string) => <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, CommandFailed, R> =>
  Effect.catch(self, (error) =>
    error instanceof CommandFailed ? Effect.fail(error) : failCommand(command, describeCause(error), kindOf(error)))
