/**
 * The compute device: which TensorFlow.js backend runs the model, whether it is a GPU, and how much memory it has.
 *
 * Layers, best first: `tensorflow` (tfjs-node-gpu / tfjs-node, only when the optional package is installed and its
 * native library loads), `webgpu` (tfjs-backend-webgpu over Dawn from the `webgpu` package, when an adapter exists),
 * `wasm` (XNNPACK + SIMD), `cpu` (plain JS). `layerAuto` takes the first that initializes and records why the others
 * did not. `layerMockGpu` is the CPU backend presenting itself as a GPU with a chosen budget, so GPU code paths
 * (device choice, memory planning, out-of-memory errors) run in CI.
 *
 * tfjs keeps ONE global active backend per process: building a Device layer switches it. Build one per process.
 *
 * Enabling CUDA: `npm install @tensorflow/tfjs-node-gpu@4.22.0` on a Linux x64 machine with CUDA 11.2 and cuDNN 8.1
 * (its install step downloads libtensorflow); `--device auto` or `--device gpu` then picks it up. It is deliberately not
 * a dependency of this project: its install cannot succeed without network access to its native library.
 */
import * as tf from "@tensorflow/tfjs-core"
import "@tensorflow/tfjs-backend-cpu"
import { registerHooks } from "node:module"
import * as os from "node:os"
import { withDefault } from "../Shared/CliHelp.ts"
import { describeCause, type ErrorKind } from "../Shared/Errors.ts"
import { createRequire } from "node:module"
import * as path from "node:path"
import { Context, Effect, Layer, Schema } from "effect"
import { Flag } from "effect/cli"
import type { LlamaConfig } from "./ModelContracts.ts"

/** What a user asks for on the command line: `--device auto|gpu|wasm|cpu`. */
export const DeviceChoice = Schema.Literals(["auto", "gpu", "wasm", "cpu"])
export type DeviceChoice = typeof DeviceChoice.Type

/** The `--device` flag shared by every command that computes with the model. */
export const deviceFlag = Flag.Literals("device", DeviceChoice.literals).pipe(
  Flag.withDescription(
    "compute device: auto (best that initializes: tfjs-node-gpu, webgpu, wasm, cpu), gpu (tfjs-node-gpu or webgpu), wasm, cpu"
  ),
  withDefault("auto" as const)
)

export type BackendKind = "tensorflow" | "webgpu" | "wasm" | "cpu" | "mock-gpu"

export interface DeviceInfo {
  /** our name for the layer that was chosen */
  readonly kind: BackendKind
  /** the tfjs backend name that computes (`tensorflow`, `webgpu`, `wasm`, `cpu`) */
  readonly backend: string
  readonly isGpu: boolean
  /** bytes of tensor memory this device can hold */
  readonly memoryBytes: number
  readonly threads: number
  /** one line: what was tried and why this one was picked */
  readonly reason: string
}

export class DeviceUnavailable extends Schema.TaggedError<DeviceUnavailable>()("DeviceUnavailable", {
  device: Schema.String,
  reason: Schema.String
}) {
  get kind(): ErrorKind {
    return "unavailable"
  }
  override get message() {
    return `device ${this.device} is unavailable: ${this.reason}`
  }
}

export class OutOfMemory extends Schema.TaggedError<OutOfMemory>()("OutOfMemory", {
  what: Schema.String,
  neededBytes: Schema.Finite,
  budgetBytes: Schema.Finite,
  device: Schema.String
}) {
  get kind(): ErrorKind {
    return "unavailable"
  }
  override get message() {
    return `${this.what} needs ${formatBytes(this.neededBytes)} but ${this.device} has a budget of ${
      formatBytes(this.budgetBytes)
    }`
  }
}

export const formatBytes = (bytes: number): string =>
  bytes >= 2 ** 30
    ? `${(bytes / 2 ** 30).toFixed(2)} GiB`
    : bytes >= 2 ** 20
    ? `${(bytes / 2 ** 20).toFixed(1)} MiB`
    : `${(bytes / 1024).toFixed(1)} KiB`

/** Number of parameters of a Llama-family model with this configuration. */
export const parameterCount = (c: LlamaConfig): number => {
  const attention = c.hiddenSize * c.headDim * (2 * c.numHeads + 2 * c.numKvHeads)
  const mlp = 3 * c.hiddenSize * c.intermediateSize
  const perLayer = attention + mlp + 2 * c.hiddenSize
  const embeddings = c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2)
  return c.numLayers * perLayer + embeddings + c.hiddenSize
}

export interface MemoryPlanOptions {
  /** keep activations for a backward pass */
  readonly training?: boolean
  /** bytes per base weight (4 for float32; NF4 bases are ~0.5) */
  readonly weightBytesPerParameter?: number
  /** trainable parameters: gradients and two Adam moments are kept for them */
  readonly trainableParameters?: number
}

export interface MemoryPlan {
  readonly weightsBytes: number
  readonly activationBytes: number
  readonly optimizerBytes: number
  readonly totalBytes: number
  readonly budgetBytes: number
}

/**
 * Float32 bytes a forward (and, for training, backward) pass needs: weights, the live activations of one layer plus
 * those kept for backward, attention scores [B, H, T, T] and the logits [B, T, V]. An estimate that errs high.
 */
export const estimateMemory = (
  c: LlamaConfig,
  batch: number,
  seq: number,
  options: MemoryPlanOptions = {}
): Omit<MemoryPlan, "budgetBytes"> => {
  const f = 4
  const tokens = batch * seq
  const weightsBytes = parameterCount(c) * (options.weightBytesPerParameter ?? f)
  const scores = batch * c.numHeads * seq * seq * f
  const perLayer = tokens * f * (6 * c.hiddenSize + 3 * c.intermediateSize + 2 * c.numKvHeads * c.headDim) + 2 * scores
  const logits = tokens * c.vocabSize * f
  const activationBytes = options.training === true
    ? c.numLayers * perLayer + 3 * logits
    : perLayer + 2 * logits
  const optimizerBytes = (options.trainableParameters ?? 0) * f * 3
  return { weightsBytes, activationBytes, optimizerBytes, totalBytes: weightsBytes + activationBytes + optimizerBytes }
}

export class Device extends Context.Service<Device, {
  readonly info: DeviceInfo
  /** fails with OutOfMemory when the model at this batch and sequence length does not fit the device's budget */
  planMemory(
    config: LlamaConfig,
    batch: number,
    seq: number,
    options?: MemoryPlanOptions
  ): Effect.Effect<MemoryPlan, OutOfMemory>
}>()("app/Training/Device") {
  static readonly layerTensorflow: Layer.Layer<Device, DeviceUnavailable> = Layer.effect(
    Device,
    Effect.suspend(() => initTensorflow()).pipe(Effect.map(makeDevice))
  )
  static readonly layerWebgpu: Layer.Layer<Device, DeviceUnavailable> = Layer.effect(
    Device,
    Effect.suspend(() => initWebgpu()).pipe(Effect.map(makeDevice))
  )
  static readonly layerWasm: Layer.Layer<Device, DeviceUnavailable> = Layer.effect(
    Device,
    Effect.suspend(() => initWasm()).pipe(Effect.map(makeDevice))
  )
  static readonly layerCpu: Layer.Layer<Device, DeviceUnavailable> = Layer.effect(
    Device,
    Effect.suspend(() => initCpu()).pipe(Effect.map(makeDevice))
  )
  /** the best device that initializes; `info.reason` says what was skipped and why */
  static readonly layerAuto: Layer.Layer<Device, DeviceUnavailable> = Layer.effect(
    Device,
    Effect.suspend(() => pick("auto", [initTensorflow, initWebgpu, initWasm, initCpu])).pipe(Effect.map(makeDevice))
  )
  /** the layer for a `--device` choice */
  static readonly layer = (choice: DeviceChoice): Layer.Layer<Device, DeviceUnavailable> => {
    switch (choice) {
      case "auto":
        return Device.layerAuto
      case "gpu":
        return Layer.effect(
          Device,
          Effect.suspend(() => pick("gpu", [initTensorflowGpu, initWebgpu])).pipe(Effect.map(makeDevice))
        )
      case "wasm":
        return Device.layerWasm
      case "cpu":
        return Device.layerCpu
    }
  }
  /** CPU compute presenting itself as a GPU with the given memory budget (tests of GPU code paths). */
  static readonly layerMockGpu = (options: { readonly memoryBytes: number }): Layer.Layer<Device, DeviceUnavailable> =>
    Layer.effect(
      Device,
      Effect.suspend(() => initCpu()).pipe(Effect.map((cpu) =>
        makeDevice({
          ...cpu,
          kind: "mock-gpu",
          isGpu: true,
          memoryBytes: options.memoryBytes,
          reason: `mock GPU (cpu backend) with a ${formatBytes(options.memoryBytes)} budget`
        })
      ))
    )
}

function makeDevice(info: DeviceInfo) {
  return Device.of({
    info,
    planMemory: Effect.fn("Device.planMemory")(function*(config, batch, seq, options = {}) {
      const plan = { ...estimateMemory(config, batch, seq, options), budgetBytes: info.memoryBytes }
      if (plan.totalBytes > plan.budgetBytes) {
        return yield* new OutOfMemory({
          what: `${options.training === true ? "training" : "a forward pass"} at batch ${batch} x ${seq} tokens (${
            formatBytes(plan.weightsBytes)
          } weights, ${formatBytes(plan.activationBytes)} activations, ${formatBytes(plan.optimizerBytes)} optimizer)`,
          neededBytes: plan.totalBytes,
          budgetBytes: plan.budgetBytes,
          device: info.kind
        })
      }
      return plan
    })
  })
}

// ---------------------------------------------------------------------------------------------------------------------
// backend initialization

const errorText = (e: unknown): string => describeCause(e).split("\n")[0]!

const isModuleMissing = (e: unknown, name: string) =>
  typeof e === "object" && e !== null && "code" in e &&
  (e.code === "ERR_MODULE_NOT_FOUND" || e.code === "MODULE_NOT_FOUND") && errorText(e).includes(name)

/** Gradients live in tfjs-core's ESM build, whose relative imports omit `.js`; Node needs them spelled out. */
let gradientsRegistered: Promise<void> | undefined
export const registerGradients = (): Promise<void> => {
  gradientsRegistered ??= (async () => {
    const hooks = registerHooks({
      resolve(specifier, context, next) {
        if (
          (specifier.startsWith("./") || specifier.startsWith("../")) && !/\.[cm]?js$/.test(specifier) &&
          context.parentURL?.includes("/@tensorflow/tfjs-core/dist/") === true
        ) {
          try {
            return next(`${specifier}.js`, context)
          } catch {
            return next(`${specifier}/index.js`, context)
          }
        }
        return next(specifier, context)
      }
    })
    try {
      await import("@tensorflow/tfjs-core/dist/register_all_gradients.js")
      // `x.add(y)` style methods, which the core bundle leaves unregistered
      await import("@tensorflow/tfjs-core/dist/public/chained_ops/register_all_chained_ops.js")
    } finally {
      hooks.deregister()
    }
  })()
  return gradientsRegistered
}

const setBackend = (name: string, device: string) =>
  Effect.tryPromise({
    try: async () => {
      await registerGradients()
      const ok = await tf.setBackend(name)
      if (!ok) throw new Error(`tf.setBackend("${name}") returned false`)
      await tf.ready()
    },
    catch: (e) => new DeviceUnavailable({ device, reason: errorText(e) })
  })

// A variable specifier keeps TypeScript from requiring the optional package's types.
const importOptional = (name: string): Promise<unknown> => import(name)

const tryTensorflowPackage = (pkg: string, isGpu: boolean): Effect.Effect<DeviceInfo, DeviceUnavailable> =>
  Effect.gen(function*() {
    yield* Effect.tryPromise({
      try: () => importOptional(pkg),
      catch: (e) =>
        new DeviceUnavailable({
          device: "tensorflow",
          reason: isModuleMissing(e, pkg) ? `${pkg} not installed` : `${pkg} failed to load: ${errorText(e)}`
        })
    })
    yield* setBackend("tensorflow", "tensorflow")
    return {
      kind: "tensorflow",
      backend: "tensorflow",
      isGpu,
      // libtensorflow does not report GPU memory; the host's memory bounds a CPU build, a GPU build is told by env
      memoryBytes: Number(process.env["DEVICE_MEMORY_BYTES"] ?? os.totalmem()),
      threads: os.availableParallelism(),
      reason: `using ${pkg}`
    } satisfies DeviceInfo
  })

const initTensorflowGpu = () => tryTensorflowPackage("@tensorflow/tfjs-node-gpu", true)
const initTensorflow = () =>
  initTensorflowGpu().pipe(
    Effect.catch((gpu) =>
      tryTensorflowPackage("@tensorflow/tfjs-node", false).pipe(
        Effect.mapError((cpu) => new DeviceUnavailable({ device: "tensorflow", reason: `${gpu.reason}; ${cpu.reason}` }))
      )
    )
  )

const initWebgpu = (): Effect.Effect<DeviceInfo, DeviceUnavailable> =>
  Effect.gen(function*() {
    const gpu = yield* Effect.tryPromise({
      try: async () => {
        const webgpu = await import("webgpu")
        Object.assign(globalThis, webgpu.globals)
        const gpu = webgpu.create([])
        const adapter = await gpu.requestAdapter()
        return adapter === null ? undefined : { gpu, adapter }
      },
      catch: (e) => new DeviceUnavailable({ device: "webgpu", reason: `Dawn failed to start: ${errorText(e)}` })
    })
    if (gpu === undefined) {
      return yield* new DeviceUnavailable({
        device: "webgpu",
        reason: "no adapter (Dawn found no Vulkan/Metal/D3D12 driver)"
      })
    }
    Object.defineProperty(globalThis.navigator, "gpu", { value: gpu.gpu, configurable: true })
    yield* Effect.tryPromise({
      try: () => import("@tensorflow/tfjs-backend-webgpu"),
      catch: (e) => new DeviceUnavailable({ device: "webgpu", reason: errorText(e) })
    })
    yield* setBackend("webgpu", "webgpu")
    return {
      kind: "webgpu",
      backend: "webgpu",
      isGpu: true,
      // WebGPU does not expose VRAM size; the largest buffer is the limit we can see, the env var overrides
      memoryBytes: Number(process.env["DEVICE_MEMORY_BYTES"] ?? gpu.adapter.limits.maxBufferSize),
      threads: 1,
      reason: `using webgpu (${gpu.adapter.info.vendor} ${gpu.adapter.info.architecture})`
    } satisfies DeviceInfo
  })

/** The wasm heap is 32-bit: Emscripten's getHeapMax in tfjs-backend-wasm 4.22.0 is 4 GiB minus 64 KiB. */
export const wasmHeapMaxBytes = 4294901760

const initWasm = (): Effect.Effect<DeviceInfo, DeviceUnavailable> =>
  Effect.gen(function*() {
    const wasm = yield* Effect.tryPromise({
      try: () => import("@tensorflow/tfjs-backend-wasm"),
      catch: (e) => new DeviceUnavailable({ device: "wasm", reason: errorText(e) })
    })
    // In Node the backend cannot find its .wasm files next to the bundle by itself; point it at the package's dist/.
    const require = createRequire(import.meta.url)
    wasm.setWasmPaths(`${path.dirname(require.resolve("@tensorflow/tfjs-backend-wasm/package.json"))}/dist/`)
    yield* setBackend("wasm", "wasm")
    // tfjs-backend-wasm turns threads off under Node (tfjs issue #3830: its pthreads need Web Workers and Blob URLs),
    // so XNNPACK runs on one thread here whatever setThreadsCount says.
    const threads = (yield* Effect.promise(() => tf.env().getAsync("WASM_HAS_MULTITHREAD_SUPPORT"))) === true
      ? wasm.getThreadsCount()
      : 1
    const simd = (yield* Effect.promise(() => tf.env().getAsync("WASM_HAS_SIMD_SUPPORT"))) === true
    return {
      kind: "wasm",
      backend: "wasm",
      isGpu: false,
      memoryBytes: Math.min(wasmHeapMaxBytes, os.totalmem()),
      threads,
      reason: `using wasm (XNNPACK${simd ? ", SIMD" : ""}, ${threads} thread${
        threads === 1 ? ": tfjs-backend-wasm disables threads under Node" : "s"
      })`
    } satisfies DeviceInfo
  })

const initCpu = (): Effect.Effect<DeviceInfo, DeviceUnavailable> =>
  Effect.gen(function*() {
    yield* setBackend("cpu", "cpu")
    return {
      kind: "cpu",
      backend: "cpu",
      isGpu: false,
      // typed arrays on the JS heap: bounded by the machine's memory
      memoryBytes: os.totalmem(),
      threads: 1,
      reason: "using cpu (plain JS)"
    } satisfies DeviceInfo
  })

const pick = (
  choice: string,
  candidates: ReadonlyArray<() => Effect.Effect<DeviceInfo, DeviceUnavailable>>
): Effect.Effect<DeviceInfo, DeviceUnavailable> =>
  Effect.gen(function*() {
    const skipped: Array<string> = []
    for (const init of candidates) {
      const result = yield* Effect.result(init())
      if (result._tag === "Success") {
        return { ...result.success, reason: [...skipped, result.success.reason].join("; ") }
      }
      skipped.push(`${result.failure.device}: ${result.failure.reason}`)
    }
    return yield* new DeviceUnavailable({ device: choice, reason: skipped.join("; ") })
  })

/**
 * Kernels that `backend` lacks among `kernelNames` (e.g. the names `tf.profile` reports for a forward + backward pass
 * on the cpu backend, which has them all). Names the reference backend has no kernel for (tf.customGrad scopes) are
 * not kernels and are skipped.
 */
export const missingKernels = (
  backend: string,
  kernelNames: Iterable<string>,
  reference = "cpu"
): ReadonlyArray<string> =>
  [...new Set(kernelNames)]
    .filter((name) => tf.getKernel(name, reference) !== undefined && tf.getKernel(name, backend) === undefined)
    .sort()
