/**
 * Embedding the Router in an Effect app: provide `ModelRouter.layer` once (it reads LOCAL_PYTORCH_ENABLED,
 * LOCAL_PYTORCH_URL, GROQ_API_KEY[_SECONDARY|_THIRD|_FOURTH], GEMINI_API_KEY through Effect Config), then
 * `yield* ModelRouter` wherever an answer is needed. Failures are typed: `AllProvidersUnavailable`,
 * `InvalidRouteRequest`. Run: `LOCAL_PYTORCH_ENABLED=true node examples/router-effect.ts "Is AAPL overvalued?"`
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect } from "effect"
import { ModelRouter } from "../src/Router/ModelRouter.ts"

const program = Effect.gen(function*() {
  const router = yield* ModelRouter
  const question = process.argv[2] ?? "Is AAPL overvalued at its current P/E?"
  const answer = yield* router.route(question, {
    symbol: "AAPL",
    prices: { AAPL: { price: 189.5, changePercent: 0.45 } },
    fundamentals: { peRatio: 28.5 }
  })
  yield* Console.log(answer.answer)
  yield* Console.log(`answered by ${answer.model} in ${answer.latency} ms (${answer.metadata.reason})`)
  if (answer.metadata.fallback) yield* Console.log(`fell back from ${answer.metadata.originalModel}: ${answer.metadata.fallbackReason}`)
}).pipe(
  Effect.catchTag("AllProvidersUnavailable", (e) => Console.error(`no provider could answer: ${e.message}`)),
  Effect.provide(ModelRouter.layer)
)

NodeRuntime.runMain(program)
