/**
 * `route "question" [--context file.json] [--explain] [--stream] [--model name] [--json]`: asks the Router
 * configured from the app's environment names and prints the answer and the decision.
 *
 * Exit codes are the project's one table (`exitCodeOf` in Shared/Errors.ts): 1 bad input (question, a missing
 * context file, unknown model), 2 a context file or router configuration that is not valid, 3 a stream that broke
 * off, 4 every provider unavailable.
 */
import { Console, Effect, FileSystem, Option, Stream } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import type { BreakerSnapshot } from "./CircuitBreaker.ts"
import type { Attempt } from "./Errors.ts"
import { type Explanation, ModelRouter, type RouteAnswer, type RouteContext } from "./ModelRouter.ts"
import { describeCommand, withDefault } from "../Shared/CliHelp.ts"
import { causeKind, describeCause, type ErrorKind, failCommand, kindOf } from "../Shared/Errors.ts"

const fail = (message: string, kind: ErrorKind) => failCommand("route", message, kind)

const readContext = Effect.fnUntraced(function*(file: string) {
  const fs = yield* FileSystem.FileSystem
  const text = yield* fs.readFileString(file).pipe(
    Effect.catch((e) => fail(`cannot read context file ${file}: ${describeCause(e)}`, causeKind(e) ?? "input"))
  )
  if (!file.endsWith(".json")) return text as RouteContext
  const parsed = yield* Effect.try({
    try: () => JSON.parse(text) as unknown,
    catch: describeCause
  }).pipe(Effect.catch((reason) => fail(`context file ${file}: invalid JSON: ${reason}`, "data")))
  if (typeof parsed === "string") return parsed as RouteContext
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return yield* fail(`context file ${file}: expected a JSON object (symbol, prices, fundamentals, news, holdings) or a string`, "data")
  }
  return parsed as RouteContext
})

const describeAttempt = (a: Attempt) =>
  `${a.provider}${a.key === undefined ? "" : ` ${a.key}`}: ${a.outcome}${a.status === undefined ? "" : ` (HTTP ${a.status})`} in ${a.durationMs} ms${a.detail === undefined ? "" : ` - ${a.detail}`}`

const describeBreakers = (breakers: Readonly<Record<string, BreakerSnapshot>>) =>
  Object.entries(breakers).map(([name, b]) => `  ${name}: ${b.state} (consecutive failures ${b.consecutiveFailures})`)

const decisionLines = (answer: RouteAnswer, explain: boolean): Array<string> => {
  const m = answer.metadata
  const lines = [
    `model: ${answer.model}${m.fallback ? ` (fallback from ${m.originalModel}: ${m.fallbackReason ?? "unavailable"})` : ""}`,
    `latency: ${answer.latency} ms, request ${m.requestId}`
  ]
  if (answer.riskNote !== undefined) lines.push(`risk note: ${answer.riskNote}`)
  if (answer.citations !== undefined) lines.push(`citations: ${answer.citations.map((c) => c.source).join("; ")}`)
  if (explain) {
    lines.push(`classification: ${m.classification.explanation}`)
    lines.push(`reason: ${m.reason}`)
    lines.push("attempts:", ...m.attempts.map((a) => `  ${describeAttempt(a)}`))
  }
  return lines
}

const explanationLines = (e: Explanation) => [
  `classification: ${e.classification.explanation}`,
  `reason: ${e.plan.reason}`,
  "breakers:",
  ...describeBreakers(e.breakers)
]

export const routeCommand = Command.make("route", {
  question: Argument.String("question").pipe(Argument.withDescription("the question to answer")),
  context: Flag.String("context").pipe(
    Flag.withDescription("a context file: .json with {symbol, prices, fundamentals, news, holdings}, or any text file"),
    Flag.optional
  ),
  explain: Flag.Boolean("explain").pipe(
    Flag.withDescription("print why the query was routed where it was (rules fired, chain, attempts, breakers)"),
    withDefault(false)
  ),
  stream: Flag.Boolean("stream").pipe(Flag.withDescription("print tokens as they arrive"), withDefault(false)),
  model: Flag.String("model").pipe(
    Flag.withDescription("preferred provider tried first: local-pytorch, groq-llama, gemini, ollama"),
    Flag.optional
  ),
  json: Flag.Boolean("json").pipe(Flag.withDescription("print the full answer (with metadata) as JSON"), withDefault(false))
}, Effect.fn("route")(function*({ question, context: contextFile, explain, stream, model, json }) {
  const router = yield* ModelRouter
  if (router.config.providers.length === 0) {
    return yield* fail(
      "no provider configured: set LOCAL_PYTORCH_ENABLED=true (+ LOCAL_PYTORCH_URL), GROQ_API_KEY, GEMINI_API_KEY or OLLAMA_URL",
      "data"
    )
  }
  const context = Option.isSome(contextFile) ? yield* readContext(contextFile.value) : undefined
  const options = Option.isSome(model) ? { preferredModel: model.value } : {}
  if (explain) {
    const e = yield* router.explain(question, context, options).pipe(Effect.catch((err) => fail(err.message, kindOf(err))))
    yield* Console.error(explanationLines(e).join("\n"))
  }
  const onError = (err: { readonly _tag: string; readonly message: string }) => fail(err.message, kindOf(err))
  let answer: RouteAnswer
  if (stream) {
    let done: RouteAnswer | undefined
    yield* router.routeStream(question, context, options).pipe(
      Stream.runForEach((event) =>
        event.type === "token"
          ? Effect.sync(() => process.stdout.write(event.text))
          : Effect.sync(() => {
            done = event.answer
          })
      ),
      Effect.catch(onError)
    )
    yield* Console.log("")
    if (done === undefined) return yield* fail("the stream ended without an answer", "failure")
    answer = done
  } else {
    answer = yield* router.route(question, context, options).pipe(Effect.catch(onError))
    if (!json) yield* Console.log(answer.answer)
  }
  if (json) return yield* Console.log(JSON.stringify(answer, null, 2))
  yield* Console.error(decisionLines(answer, explain).join("\n"))
}, (effect) =>
  effect.pipe(
    Effect.provide(ModelRouter.layer),
    Effect.catchTag(["ConfigError", "RouterConfigError"], (e) => fail(`bad router configuration in the environment: ${e.message}`, "data"))
  ))).pipe(
  describeCommand(
    "Answer a question through the Router (local model for finance queries, cloud providers otherwise) and print the decision. " +
      "Configured from LOCAL_PYTORCH_ENABLED, LOCAL_PYTORCH_URL, GROQ_API_KEY[_SECONDARY|_THIRD|_FOURTH], GEMINI_API_KEY, OLLAMA_URL."
  )
)
