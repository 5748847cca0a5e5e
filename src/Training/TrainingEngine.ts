/**
 * TrainingEngine: who runs a training job. Two layers behind one interface, both fed the same job (same records,
 * prompt layouts, tokens, answer-only masks, step plan, LoRA config and initial weights):
 * - `tfjs` (TfjsEngine.ts): the in-process Trainer; no Python, every mode, one CPU core (wasm) or WebGPU;
 * - `torch` (TorchEngine.ts): transformers + PEFT in a Python child process, CUDA/bf16/QLoRA (bitsandbytes),
 *   all CPU cores, and torchrun for many GPUs or nodes (DDP, FSDP, DeepSpeed).
 * `auto` takes torch when the Python environment resolves (PythonEnv.ensure) and torch, transformers and PEFT
 * import there, tfjs otherwise; `reason` says which and why. The choice is logged here, once per job, whoever asked
 * for the engine (the `train` command, the pipeline's train stage).
 */
import { Context, Effect, Layer, Schema } from "effect"
import { describeRuntime, PythonEnv } from "../Python/PythonEnv.ts"
import { Tokenizer } from "../Model/Tokenizer.ts"
import type { TrainingEngineShape } from "./EngineContract.ts"
import { makeTfjsEngine } from "./TfjsEngine.ts"
import { makeTorchEngine, probeTorch } from "./TorchEngine.ts"
import { Trainer } from "./Trainer.ts"

export type { TrainingEngineShape }

export const EngineChoice = Schema.Literals(["tfjs", "torch", "auto"])
export type EngineChoice = typeof EngineChoice.Type

/** The engine, logging its choice as each job starts (the one place it is logged). */
const announced = (engine: TrainingEngineShape): TrainingEngineShape => ({
  ...engine,
  train: (config, options) => Effect.logInfo(`[train] engine ${engine.name}: ${engine.reason}`).pipe(Effect.andThen(engine.train(config, options)))
})

export class TrainingEngine extends Context.Service<TrainingEngine, TrainingEngineShape>()("app/Training/TrainingEngine") {
  /** The in-process tfjs trainer. */
  static readonly layerTfjs = (reason = "--engine tfjs") =>
    Layer.effect(TrainingEngine, Effect.map(makeTfjsEngine(reason), announced)).pipe(Layer.provide(Trainer.layer))

  /** The torch engine; the Python environment is resolved when a job starts (a PythonEnv failure fails the job). */
  static readonly layerTorch = (reason = "--engine torch") =>
    Layer.effect(TrainingEngine, Effect.map(makeTorchEngine(reason), announced)).pipe(Layer.provide(Tokenizer.layer))

  /** tfjs, torch, or auto: torch when the Python environment is usable, with the reason either way. */
  static readonly layer = (choice: EngineChoice) => {
    if (choice === "tfjs") return TrainingEngine.layerTfjs()
    if (choice === "torch") return TrainingEngine.layerTorch()
    return Layer.unwrap(Effect.gen(function*() {
      const env = yield* PythonEnv
      const reason = yield* env.ensure.pipe(
        Effect.flatMap((runtime) =>
          Effect.map(probeTorch(runtime), (probe) =>
            probe.ok
              ? { torch: true, text: `auto chose torch: ${describeRuntime(runtime)}, ${probe.detail}` }
              : { torch: false, text: `auto chose tfjs: ${runtime.executable} cannot import the torch stack (${probe.detail})` })
        ),
        Effect.catch((e) => Effect.succeed({ torch: false, text: `auto chose tfjs: no usable Python environment (${e.message})` }))
      )
      return reason.torch ? TrainingEngine.layerTorch(reason.text) : TrainingEngine.layerTfjs(reason.text)
    }))
  }
}
