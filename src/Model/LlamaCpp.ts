/**
 * The process's one llama.cpp runtime (node-llama-cpp's `Llama`), shared by the tokenizer, the parity tests and
 * whoever else needs llama.cpp, so the native backend is initialised once. It uses the prebuilt binaries shipped
 * with node-llama-cpp only: it never downloads or builds llama.cpp.
 */
import { Config, Context, Effect, Layer, Schema, Scope } from "effect"
import { getLlama, type Llama, type LlamaModel, type LlamaModelOptions } from "node-llama-cpp"

export class LlamaCppError extends Schema.TaggedError<LlamaCppError>()("LlamaCppError", {
  /** what was being done, e.g. `load model /path/x.gguf` */
  operation: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `llama.cpp: ${this.operation}: ${this.detail}`
  }
}

const describe = (cause: unknown) => cause instanceof Error ? cause.message : String(cause)

/** Where llama.cpp computes: "cpu", or "auto" (a prebuilt GPU backend when one loads, otherwise the CPU). */
export const LlamaCppGpu = Schema.Literals(["cpu", "auto"])
export type LlamaCppGpu = typeof LlamaCppGpu.Type

export class LlamaCpp extends Context.Service<LlamaCpp, {
  readonly llama: Llama
  /** "cpu" or the GPU backend node-llama-cpp picked (cuda, vulkan, metal) */
  readonly backend: string
  /** loads a model for the scope's lifetime */
  readonly loadModel: (
    options: LlamaModelOptions
  ) => Effect.Effect<LlamaModel, LlamaCppError, Scope.Scope>
}>()("app/Training/LlamaCpp") {
  static readonly make = (gpu: LlamaCppGpu) =>
    Effect.gen(function*() {
      const llama = yield* Effect.acquireRelease(
        Effect.tryPromise({
          try: () => getLlama({ gpu: gpu === "cpu" ? false : "auto", build: "never", progressLogs: false }),
          catch: (cause) => new LlamaCppError({ operation: "start", detail: describe(cause) })
        }),
        (llama) => Effect.promise(() => llama.dispose())
      )
      const loadModel = Effect.fn("LlamaCpp.loadModel")(function*(options: LlamaModelOptions) {
        return yield* Effect.acquireRelease(
          Effect.tryPromise({
            try: () => llama.loadModel(options),
            catch: (cause) => new LlamaCppError({ operation: `load model ${options.modelPath}`, detail: describe(cause) })
          }),
          (model) => Effect.promise(() => model.dispose())
        )
      })
      return LlamaCpp.of({ llama, backend: llama.gpu === false ? "cpu" : llama.gpu, loadModel })
    })

  /** `LLAMA_CPP_GPU` = cpu | auto (default auto) */
  static readonly layer = Layer.effect(
    LlamaCpp,
    Effect.gen(function*() {
      const gpu = yield* Config.Literals(["cpu", "auto"], "LLAMA_CPP_GPU").pipe(Config.withDefault("auto" as const))
      return yield* LlamaCpp.make(gpu)
    })
  )

  /** CPU only: deterministic, what the parity tests compare against */
  static readonly layerCpu = Layer.effect(LlamaCpp, LlamaCpp.make("cpu"))
}
