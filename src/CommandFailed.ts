/**
 * The one failure every stage's CLI ends with: the message has already been printed for the user (no stack
 * trace), and the error carries the process exit code that scripts rely on.
 */
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"

export class CommandFailed extends Schema.TaggedError<CommandFailed>()("CommandFailed", {
  command: Schema.String,
  message: Schema.String,
  exitCode: Schema.Int
}) {
  override readonly [Runtime.errorExitCode] = this.exitCode
  override readonly [Runtime.errorReported] = false
}

/** Prints `command: message` on stderr and fails with that exit code. */
export const failCommand = (command: string, message: string, exitCode: number) =>
  Effect.andThen(Console.error(`${command}: ${message}`), Effect.fail(new CommandFailed({ command, message, exitCode })))
