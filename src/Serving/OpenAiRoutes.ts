/**
 * The OpenAI-compatible routes (`/v1/chat/completions`, `/v1/completions`, `/v1/models`) as an HttpApiBuilder group
 * of the contract in `Api/Api.ts`; both generating routes stream SSE when asked to.
 */
import { Effect } from "effect"
import { HttpApiBuilder } from "effect/http-api"
import * as Api from "../Api/Api.ts"
import { respond } from "./ApiFailure.ts"
import type { GenerateRequest, GenerationResult } from "./InferenceEngine.ts"
import { messageText } from "./Prompt.ts"
import { type RequestKit, usageOf } from "./RequestKit.ts"
import { contextText } from "../Dataset/PromptFormat.ts"

const sampling = (body: Api.ChatCompletionRequest | Api.CompletionRequest, maxTokens: number) => ({
  model: body.model,
  maxTokens,
  temperature: body.temperature ?? Api.openAiDefaults.temperature,
  topK: body.top_k ?? Api.openAiDefaults.top_k,
  topP: body.top_p ?? Api.openAiDefaults.top_p,
  seed: body.seed ?? undefined,
  stop: body.stop === undefined || body.stop === null ? [] : typeof body.stop === "string" ? [body.stop] : body.stop
})

const now = () => Math.floor(Date.now() / 1000)

/** `chatcmpl-…` / `cmpl-…` ids, unique within the process. */
const makeIds = () => {
  let counter = 0
  return (prefix: string) => `${prefix}-${Date.now().toString(36)}${(counter++).toString(36)}`
}

type NewId = ReturnType<typeof makeIds>

const chatWith = (kit: RequestKit, newId: NewId) =>
  Effect.gen(function*() {
    const body = yield* kit.readBody(Api.ChatCompletionRequest)
    const context = contextText(body.context)
    yield* kit.checkPromptBytes("messages", context, ...body.messages.map(messageText))
    const request: GenerateRequest = {
      ...sampling(body, body.max_completion_tokens ?? body.max_tokens ?? Api.openAiDefaults.chatMaxTokens),
      prompt: { _tag: "Chat", messages: body.messages, context }
    }
    const id = newId("chatcmpl")
    const created = now()
    const policy = body.placeholders ?? kit.defaultPolicy
    const modelName = (r: GenerationResult | undefined) => r?.model ?? body.model ?? ""
    if (body.stream === true) {
      const includeUsage = body.stream_options?.include_usage === true
      const chunk = (delta: Api.ChatCompletionChunk["choices"][number]["delta"], finish: Api.FinishReason | null, model: string): Api.ChatCompletionChunk =>
        ({ id, object: "chat.completion.chunk", created, model, choices: [{ index: 0, delta, finish_reason: finish }] })
      return yield* kit.streamed(request, body.context, policy, {
        start: () => [chunk({ role: "assistant", content: "" }, null, modelName(undefined))],
        delta: (text) => chunk({ content: text }, null, modelName(undefined)),
        end: (r, report) => [
          { ...chunk({}, r.finishReason, r.model), usage: usageOf(r), metadata: { placeholders: report, confidence: r.confidence } },
          ...(includeUsage ? [{ id, object: "chat.completion.chunk", created, model: r.model, choices: [], usage: usageOf(r) }] : [])
        ]
      })
    }
    const result = yield* kit.run(request)
    const filled = yield* kit.finish(result.text, body.context, policy)
    return {
      id,
      object: "chat.completion",
      created,
      model: result.model,
      choices: [{ index: 0, message: { role: "assistant", content: filled.text }, finish_reason: result.finishReason }],
      usage: usageOf(result),
      metadata: { placeholders: filled.report, confidence: result.confidence }
    } satisfies Api.ChatCompletion
  })

const completionsWith = (kit: RequestKit, newId: NewId) =>
  Effect.gen(function*() {
    const body = yield* kit.readBody(Api.CompletionRequest)
    const prompt = typeof body.prompt === "string" ? body.prompt : body.prompt[0]
    yield* kit.checkPromptBytes("prompt", prompt)
    const request: GenerateRequest = {
      ...sampling(body, body.max_tokens ?? Api.openAiDefaults.completionMaxTokens),
      prompt: { _tag: "Raw", text: prompt }
    }
    const id = newId("cmpl")
    const created = now()
    const policy = body.placeholders ?? kit.defaultPolicy
    const choice = (text: string, finish: Api.FinishReason | null) => ({ index: 0, text, finish_reason: finish, logprobs: null })
    if (body.stream === true) {
      return yield* kit.streamed(request, body.context, policy, {
        start: () => [],
        delta: (text): Api.Completion => ({ id, object: "text_completion", created, model: body.model ?? "", choices: [choice(text, null)] }),
        end: (r, report): ReadonlyArray<Api.Completion> => [{
          id, object: "text_completion", created, model: r.model, choices: [choice("", r.finishReason)],
          usage: usageOf(r), metadata: { placeholders: report, confidence: r.confidence }
        }]
      })
    }
    const result = yield* kit.run(request)
    const filled = yield* kit.finish(result.text, body.context, policy)
    return {
      id, object: "text_completion", created, model: result.model,
      choices: [choice(filled.text, result.finishReason)],
      usage: usageOf(result),
      metadata: { placeholders: filled.report, confidence: result.confidence }
    } satisfies Api.Completion
  })

const modelsWith = (kit: RequestKit) =>
  Effect.gen(function*() {
    const state = yield* kit.engine.state
    const created = now()
    const data = state._tag === "Ready"
      ? state.models.map((m) => ({ id: m.id, object: "model" as const, created, owned_by: "finetune-finance", parent: m.parent ?? null }))
      : []
    return { object: "list", data } satisfies Api.ModelList
  })

/** The OpenAI group; the POST routes are raw for the same reason as `/infer` (a 400 that names the field). */
export const openAiHandlers = (kit: RequestKit) => {
  const newId = makeIds()
  const chat = chatWith(kit, newId)
  const completions = completionsWith(kit, newId)
  const models = modelsWith(kit)
  return HttpApiBuilder.group(Api.ServeApi, "openai", (h) =>
    h.handleRaw("chatCompletions", () => respond(chat))
      .handleRaw("completions", () => respond(completions))
      .handle("models", () => models))
}
