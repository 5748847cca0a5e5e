/**
 * Embedding the Router in a plain Node app (no Effect in your code): `createRouter(config)` returns Promise
 * methods that never reject for provider failures - check `result.ok`. Base URLs are configurable, so the
 * same code talks to our local server, Groq, Gemini or a test double. Run:
 * `GROQ_API_KEY=... node examples/router-plain.ts "What moved the market today?"`
 */
import { createRouter } from "../src/Router/Facade.ts"

const router = createRouter({
  providers: [
    { name: "local-pytorch", kind: "local-infer", baseUrl: process.env["LOCAL_PYTORCH_URL"] ?? "http://localhost:8000" },
    { name: "groq-llama", kind: "openai", baseUrl: "https://api.groq.com/openai/v1", apiKeys: [process.env["GROQ_API_KEY"] ?? ""] },
    { name: "gemini", kind: "gemini", baseUrl: "https://generativelanguage.googleapis.com/v1beta", apiKeys: [process.env["GEMINI_API_KEY"] ?? ""] }
  ],
  attemptTimeoutMs: 10_000,
  deadlineMs: 25_000,
  logLevel: "Warn"
})

const result = await router.route(process.argv[2] ?? "What moved the market today?")
if (result.ok) {
  console.log(result.answer)
  console.log(`model ${result.model}, ${result.latency} ms, attempts: ${result.metadata.attempts.map((a) => `${a.provider}:${a.outcome}`).join(", ")}`)
} else {
  console.error(`${result.error._tag}: ${result.error.message}`)
  process.exitCode = 1
}
await router.close()
