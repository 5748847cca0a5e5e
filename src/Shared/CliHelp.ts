/**
 * How every command presents itself in `--help`: its description followed by the one exit-code table
 * (`exitCodesHelp`), and every flag default written next to the flag. Effect's CLI prints neither by itself.
 */
import * as Option from "effect/Option"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import * as Param from "effect/cli/Param"
import { exitCodesHelp } from "./Errors.ts"

/**
 * A command's description, with the exit-code table on the next line of its own --help; a parent's list of
 * subcommands shows only the description.
 */
export const describeCommand = (description: string) =>
<Name extends string, Input, ContextInput, E, R>(self: Command.Command<Name, Input, ContextInput, E, R>) =>
  self.pipe(Command.withDescription(`${description}\n  ${exitCodesHelp}`), Command.withShortDescription(description))

/** The description set by `Flag.withDescription` on a plain flag (`withDefault` comes straight after it). */
const descriptionOf = (flag: Flag.Flag<unknown>): string => {
  // a mapped or optional flag hides its description: rewriting it would drop the text, so refuse at start-up
  if (!Param.isSingle(flag)) throw new Error("CliHelp.withDefault: apply it to a plain flag, right after Flag.withDescription")
  return Option.getOrElse(flag.description, () => "")
}

/**
 * `Flag.withDefault` that also writes the default into the flag's description (`… (default 8000)`); apply it
 * after `Flag.withDescription`. `shown` replaces the value's text (`"- (stdout)"`, `"1 MiB"`). A boolean that
 * defaults to false is a switch and shows nothing.
 */
export const withDefault = <const B>(value: B, shown?: string) => <A>(flag: Flag.Flag<A>): Flag.Flag<A | B> => {
  const defaulted = Flag.withDefault(flag, value)
  if (value === false && shown === undefined) return defaulted
  const description = descriptionOf(flag)
  const text = `(default ${shown ?? String(value)})`
  return Flag.withDescription(defaulted, description === "" ? text : `${description} ${text}`)
}
