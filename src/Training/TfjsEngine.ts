/**
 * The tfjs layer of TrainingEngine: the in-process Trainer (tfjs on wasm, cpu or WebGPU), unchanged. It needs no
 * Python, trains every mode (lora, qlora through our NF4, full), and is the second opinion the torch engine is
 * checked against (test/Training/TorchEngineAgreement.test.ts). The caller's Device is used when there is one
 * (tests pin wasm); otherwise the config's `device` picks it.
 */
import { Effect, Option } from "effect"
import { Device } from "../Model/Device.ts"
import type { TrainingEngineShape } from "./EngineContract.ts"
import type { TrainConfig } from "./TrainConfig.ts"
import { TrainError, Trainer, type TrainOptions } from "./Trainer.ts"

export const makeTfjsEngine = (reason: string) =>
  Effect.gen(function*() {
    const trainer = yield* Trainer
    const train = Effect.fn("TfjsEngine.train")(function*(config: TrainConfig, options?: TrainOptions) {
      const device = yield* Effect.serviceOption(Device)
      if (Option.isSome(device)) return yield* trainer.train(config, options)
      return yield* trainer.train(config, options).pipe(
        Effect.provide(Device.layer(config.device)),
        Effect.catchTag("DeviceUnavailable", (e) => Effect.fail(new TrainError({ stage: "device", detail: e.message })))
      )
    })
    return { name: "tfjs", reason, train } satisfies TrainingEngineShape
  })
