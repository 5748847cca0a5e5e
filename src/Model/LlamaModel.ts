/**
 * The Llama-family decoder in TensorFlow.js, in Hugging Face layout (rotate-half RoPE, linear weights [out, in]).
 *
 * One implementation serves training (differentiable `logits`, all pure tfjs ops), evaluation (batched, padding
 * masks, packed segments) and generation (`forwardCached` with a KV cache). Every linear projection goes through a
 * `LinearLayer`, so the trainer swaps in LoRA or NF4 layers with `withLinears` without touching this file.
 *
 * Numerics follow llama.cpp where the order matters: RMSNorm as x · 1/sqrt(mean(x²) + eps) · w, attention scores
 * scaled by 1/sqrt(head_dim) after q·kᵀ, masked positions at -1e9 (exp underflows to exactly 0 as with llama.cpp's
 * -inf, without NaN on fully masked padding rows), float32 throughout.
 *
 * Attention is full (causal) even when the config declares a sliding window: llama.cpp serves the GGUF (architecture
 * `llama`) with full attention, whatever `llama.attention.sliding_window` says, so the model trained and evaluated
 * here is the one that is served. `droppedWindowWarning` says so when the window would have mattered.
 */
import * as tf from "@tensorflow/tfjs-core"
import { Effect, Schema, Stream } from "effect"
import type { ErrorKind } from "../Shared/Errors.ts"
import {
  attentionModules,
  type LinearLayer,
  type LinearModule,
  type LinearTransform,
  type LlamaConfig,
  mlpModules,
  type NamedTensor,
  weightNames
} from "./ModelContracts.ts"
import { expectedShape, expectedWeightNames, loadModelSource } from "./ModelLoader.ts"
import type { ModelFileError } from "./ModelFileError.ts"
import { inverseFrequencies, rotaryTables } from "./Rope.ts"

export class ModelWeightsError extends Schema.TaggedError<ModelWeightsError>()("ModelWeightsError", {
  weight: Schema.String,
  issue: Schema.String
}) {
  get kind(): ErrorKind {
    return "data"
  }
  override get message() {
    return `weight ${this.weight}: ${this.issue}`
  }
}

/**
 * x [N, in] · Wᵀ for W [out, in]. tfjs-backend-wasm sends only untransposed products to XNNPACK and runs any
 * transposeB product through a naive loop, ~10x slower here, so on wasm it computes (W · xᵀ)ᵀ (two cheap activation
 * transposes, no copy of the weight); the cpu backend is fastest with transposeB.
 */
export const projectRows = (x: tf.Tensor2D, weight: tf.Tensor2D): tf.Tensor2D =>
  tf.getBackend() === "wasm" ? projectRowsPlain(x, weight) as tf.Tensor2D : tf.matMul(x, weight, false, true)

/**
 * The wasm form with its own gradient: autograd of (W · xᵀ)ᵀ would take both gradients through transposed products
 * again (dW = dz · x as transposeB, dx through transposeA), the slow path this avoids. Here dx = dy · W and
 * dW = dyᵀ · x, each a plain product after an explicit transpose of an activation. Measured on the tiny model:
 * a full-parameter step 6.5x faster (bench:train's method, wasm).
 */
const projectRowsPlain = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
  const x = args[0] as tf.Tensor2D
  const weight = args[1] as tf.Tensor2D
  const save = args[2] as tf.GradSaveFunc
  save([x, weight])
  return {
    value: tf.transpose(tf.matMul(weight, tf.transpose(x))),
    gradFunc: (dy: tf.Tensor, saved: Array<tf.Tensor>) => {
      const [xs, ws] = saved as [tf.Tensor2D, tf.Tensor2D]
      return [tf.matMul(dy as tf.Tensor2D, ws), tf.matMul(tf.transpose(dy as tf.Tensor2D), xs)]
    }
  }
})

/** The module path of the output projection in `linears`. */
export const outputLinearName = "lm_head"

/** A dense projection y = x Wᵀ with W in HF shape [out, in]. */
export class DenseLinear implements LinearLayer {
  readonly name: string
  /** [out, in] */
  readonly weight: tf.Tensor2D
  readonly inFeatures: number
  readonly outFeatures: number
  /** false when the tensor belongs to someone else (the tied embedding) */
  private readonly ownsWeight: boolean
  constructor(name: string, weight: tf.Tensor2D, ownsWeight = true) {
    this.name = name
    this.weight = weight
    this.ownsWeight = ownsWeight
    this.outFeatures = weight.shape[0]
    this.inFeatures = weight.shape[1]
  }
  apply(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const lead = x.shape.slice(0, -1)
      return tf.reshape(projectRows(tf.reshape(x, [-1, this.inFeatures]) as tf.Tensor2D, this.weight), [...lead, this.outFeatures])
    })
  }
  dispose(): void {
    if (this.ownsWeight) this.weight.dispose()
  }
}

export interface ForwardOptions {
  /** [B, T], 1 for tokens to attend to, 0 for padding */
  readonly attentionMask?: tf.Tensor2D
  /** [B, T] int32: packed sequences; a token attends only within its segment, positions restart per segment */
  readonly segmentIds?: tf.Tensor2D
  /** [B, T] int32: explicit RoPE positions (override the ones derived from the mask or segments) */
  readonly positionIds?: tf.Tensor2D
}

/** Keys and values of the tokens seen so far, per layer [B, numKvHeads, length, headDim] (keys after RoPE). */
export interface KvCache {
  readonly keys: ReadonlyArray<tf.Tensor4D>
  readonly values: ReadonlyArray<tf.Tensor4D>
  readonly length: number
  /** per batch row: 1 where the cached token may be attended to */
  readonly keyValid: ReadonlyArray<Uint8Array>
  /** per batch row: the RoPE position of the next token */
  readonly nextPosition: ReadonlyArray<number>
}

export const disposeKvCache = (cache: KvCache): void => {
  tf.dispose([...cache.keys, ...cache.values])
}

export interface CachedForwardOptions {
  /** [B, T] for the new tokens, 1 keep / 0 padding */
  readonly attentionMask?: tf.Tensor2D
  /** compute the output projection only for the last position (logits then [B, 1, V]) */
  readonly lastOnly?: boolean
}

interface LayerNorms {
  readonly input: tf.Tensor1D
  readonly postAttention: tf.Tensor1D
}

/** Weights that stay with the model when its linear layers are swapped. */
interface SharedWeights {
  readonly embedding: tf.Tensor2D
  readonly finalNorm: tf.Tensor1D
  readonly norms: ReadonlyArray<LayerNorms>
  readonly invFreq: Float64Array
  /** by canonical weight name, when the model was built trainable */
  readonly variables: ReadonlyMap<string, tf.Variable>
}

let nextModelId = 0

/** A large negative instead of -inf: exp underflows to exactly 0 and fully masked rows stay finite. */
const maskedScore = -1e9

/** Every weight the configuration needs, with its shape (the model loader's own expectations). */
const expectedShapes = (c: LlamaConfig): Map<string, ReadonlyArray<number>> =>
  new Map(expectedWeightNames(c).map((name) => [name, expectedShape(c, name)!]))

const validateConfig = (c: LlamaConfig) => {
  const fail = (field: string, issue: string) => {
    throw new ModelWeightsError({ weight: `config.${field}`, issue })
  }
  if (c.numKvHeads <= 0 || c.numHeads % c.numKvHeads !== 0) {
    fail("numKvHeads", `${c.numKvHeads} must divide numHeads ${c.numHeads}`)
  }
  if (c.headDim % 2 !== 0) fail("headDim", `${c.headDim} must be even for RoPE`)
  if (c.slidingWindow !== undefined && c.slidingWindow <= 0) fail("slidingWindow", `${c.slidingWindow} must be > 0`)
}

/**
 * The warning for a config whose sliding window is shorter than the context it is used at: the window is not
 * applied (see the header), so positions past it attend further back than the original model would.
 */
export const droppedWindowWarning = (c: LlamaConfig, contextLength: number): string | undefined =>
  c.slidingWindow === undefined || c.slidingWindow >= contextLength
    ? undefined
    : `the model declares a sliding window of ${c.slidingWindow} tokens, shorter than the context of ${contextLength}: ` +
      `llama.cpp serves architecture llama with full attention, so training and evaluation use full attention too ` +
      `(the window is dropped; a sequence longer than ${c.slidingWindow} tokens sees its whole past)`

/** Reads an int tensor [B, T] into JS rows (masks and position metadata are small and drive JS-side mask building). */
const rows = (t: tf.Tensor2D): Array<Int32Array> => {
  const [b, n] = t.shape
  const data = t.dataSync()
  return Array.from({ length: b }, (_, i) => Int32Array.from(data.subarray(i * n, (i + 1) * n)))
}

/**
 * Turns weights, as they arrive, into tf tensors (or trainable variables) after checking name and shape; the
 * Float32Array of each is not kept, so at most one float32 copy of the model exists while loading.
 */
const weightCollector = (config: LlamaConfig, options: { readonly trainable?: boolean }) => {
  validateConfig(config)
  const modelId = nextModelId++
  const trainable = options.trainable === true
  const shapes = expectedShapes(config)
  const tensors = new Map<string, tf.Tensor>()
  const fail = (weight: string, issue: string): never => {
    throw new ModelWeightsError({ weight, issue })
  }
  return {
    add(w: NamedTensor): void {
      if (config.tieWordEmbeddings && w.name === weightNames.output) return // some HF files store the tied copy
      const shape = shapes.get(w.name)
      if (shape === undefined) return fail(w.name, "is not a weight of this Llama configuration")
      if (shape.length !== w.shape.length || shape.some((d, i) => d !== w.shape[i])) {
        fail(w.name, `has shape [${w.shape.join(", ")}], expected [${shape.join(", ")}]`)
      }
      if (w.data.length !== shape.reduce((a, b) => a * b, 1)) {
        fail(w.name, `has ${w.data.length} values for shape [${shape.join(", ")}]`)
      }
      if (tensors.has(w.name)) fail(w.name, "appears twice")
      const t = tf.tensor(w.data, [...w.shape], "float32")
      if (trainable) {
        // variable names are global in tfjs: suffix them so two trainable models can coexist
        tensors.set(w.name, tf.variable(t, true, `${w.name}#${modelId}`))
        t.dispose()
      } else {
        tensors.set(w.name, t)
      }
    },
    build(): LlamaModel {
      const missing = [...shapes.keys()].filter((n) => !tensors.has(n))
      if (missing.length > 0) {
        fail(missing[0]!, `is missing${missing.length > 1 ? ` (and ${missing.length - 1} more weights)` : ""}`)
      }
      return LlamaModel.assemble(config, tensors, trainable)
    },
    abort(): void {
      tf.dispose([...tensors.values()])
      tensors.clear()
    }
  }
}

export class LlamaModel {
  readonly config: LlamaConfig
  readonly linears: ReadonlyMap<string, LinearLayer>
  private readonly shared: SharedWeights
  /** the linear layers this instance must dispose */
  private readonly ownedLinears: ReadonlyArray<LinearLayer>
  /** whether this instance owns the shared weights (the base model does, `withLinears` views do not) */
  private readonly ownsShared: boolean
  private constructor(
    config: LlamaConfig,
    shared: SharedWeights,
    linears: ReadonlyMap<string, LinearLayer>,
    ownedLinears: ReadonlyArray<LinearLayer>,
    ownsShared: boolean
  ) {
    this.config = config
    this.shared = shared
    this.linears = linears
    this.ownedLinears = ownedLinears
    this.ownsShared = ownsShared
  }

  /**
   * Builds the model from canonical HF-named float32 weights, in any order. Each weight becomes a tf tensor as it
   * arrives and its Float32Array is not kept, so loading holds one float32 copy of the weights at most.
   * With `trainable: true` every weight is a trainable tf.Variable (full-model training), listed in
   * `trainableVariables`.
   */
  static async fromWeights(
    config: LlamaConfig,
    weights: Iterable<NamedTensor> | AsyncIterable<NamedTensor>,
    options: { readonly trainable?: boolean } = {}
  ): Promise<LlamaModel> {
    const collector = weightCollector(config, options)
    try {
      for await (const w of weights) collector.add(w)
      return collector.build()
    } catch (e) {
      collector.abort()
      throw e
    }
  }

  /** `fromWeights` over a Stream of weights (e.g. `ModelSource.weights` of the model loader). */
  static fromStream<E, R>(
    config: LlamaConfig,
    weights: Stream.Stream<NamedTensor, E, R>,
    options: { readonly trainable?: boolean } = {}
  ): Effect.Effect<LlamaModel, E | ModelWeightsError, R> {
    const guard = <A>(f: () => A) =>
      Effect.try({
        try: f,
        catch: (e) => e instanceof ModelWeightsError ? e : new ModelWeightsError({ weight: "(loading)", issue: String(e) })
      })
    return Effect.flatMap(guard(() => weightCollector(config, options)), (collector) =>
      Stream.runForEach(weights, (w) => guard(() => collector.add(w))).pipe(
        Effect.flatMap(() => guard(() => collector.build())),
        Effect.onError(() => Effect.sync(() => collector.abort()))
      ))
  }

  /** Loads a GGUF file or a Hugging Face folder: configuration from the file, weights one tensor at a time. */
  static load(
    path: string,
    options: { readonly trainable?: boolean } = {}
  ): Effect.Effect<LlamaModel, ModelFileError | ModelWeightsError> {
    return Effect.flatMap(loadModelSource(path), (source) => LlamaModel.fromStream(source.config, source.weights, options))
  }

  /** @internal used by the weight collector */
  static assemble(config: LlamaConfig, tensors: ReadonlyMap<string, tf.Tensor>, trainable: boolean): LlamaModel {
    const get = <T extends tf.Tensor>(name: string) => tensors.get(name) as T
    const embedding = get<tf.Tensor2D>(weightNames.embedding)
    const linears = new Map<string, LinearLayer>()
    for (let l = 0; l < config.numLayers; l++) {
      for (const m of [...attentionModules, ...mlpModules]) {
        const name = weightNames.linear(l, m)
        linears.set(name, new DenseLinear(name, get<tf.Tensor2D>(`${name}.weight`)))
      }
    }
    linears.set(
      outputLinearName,
      config.tieWordEmbeddings
        ? new DenseLinear(outputLinearName, embedding, false)
        : new DenseLinear(outputLinearName, get<tf.Tensor2D>(weightNames.output))
    )
    const shared: SharedWeights = {
      embedding,
      finalNorm: get<tf.Tensor1D>(weightNames.finalNorm),
      norms: Array.from({ length: config.numLayers }, (_, l) => ({
        input: get<tf.Tensor1D>(weightNames.inputNorm(l)),
        postAttention: get<tf.Tensor1D>(weightNames.postAttentionNorm(l))
      })),
      invFreq: inverseFrequencies(config),
      variables: trainable ? new Map(tensors as ReadonlyMap<string, tf.Variable>) : new Map()
    }
    return new LlamaModel(config, shared, linears, [...linears.values()], true)
  }

  /**
   * The weights as trainable variables when built with `trainable: true` (full-model training), else empty.
   * tfjs names them `<canonical name>#<model id>`; `trainableWeights` maps canonical names to them.
   */
  get trainableVariables(): ReadonlyArray<tf.Variable> {
    return [...this.shared.variables.values()]
  }

  get trainableWeights(): ReadonlyMap<string, tf.Variable> {
    return this.shared.variables
  }

  /**
   * A model that shares this one's embedding and norms, with each linear layer replaced by `transform(name, base)`.
   * Disposing it frees only the layers the transform created (not this model's); dispose it before this model.
   */
  withLinears(transform: LinearTransform): LlamaModel {
    const next = new Map<string, LinearLayer>()
    const created: Array<LinearLayer> = []
    for (const [name, base] of this.linears) {
      const layer = transform(name, base)
      next.set(name, layer)
      if (layer !== base) created.push(layer)
    }
    return new LlamaModel(this.config, this.shared, next, created, false)
  }

  dispose(): void {
    for (const layer of this.ownedLinears) layer.dispose()
    if (this.ownsShared) {
      tf.dispose([this.shared.embedding, this.shared.finalNorm, ...this.shared.norms.flatMap((n) => [n.input, n.postAttention])])
    }
  }

  /**
   * Next-token logits [B, T, V] for token ids [B, T]. Pure tfjs ops: differentiable inside tf.variableGrads; all
   * intermediates are freed (only the result is live afterwards).
   */
  logits(inputIds: tf.Tensor2D, options: ForwardOptions = {}): tf.Tensor3D {
    const [batch, length] = inputIds.shape
    const mask = options.attentionMask === undefined ? undefined : rows(options.attentionMask)
    const segments = options.segmentIds === undefined ? undefined : rows(options.segmentIds)
    const positions = options.positionIds !== undefined
      ? rows(options.positionIds)
      : Array.from({ length: batch }, (_, b) => {
        const p = new Int32Array(length)
        for (let t = 0, next = 0; t < length; t++) {
          if (segments !== undefined && t > 0 && segments[b]![t] !== segments[b]![t - 1]) next = 0
          p[t] = next
          // padding does not advance the position, so left-padded rows start at 0 like HF's cumsum(mask) - 1
          if (mask === undefined || mask[b]![t] !== 0) next++
        }
        return p
      })
    const keyValid = Array.from({ length: batch }, (_, b) => {
      const v = new Uint8Array(length).fill(1)
      if (mask !== undefined) for (let t = 0; t < length; t++) v[t] = mask[b]![t] === 0 ? 0 : 1
      return v
    })
    const bias = this.attentionBias(batch, length, 0, keyValid, segments)
    return tf.tidy(() => this.run(inputIds, positions, bias, undefined, false).logits)
  }

  /**
   * Forward over new tokens given the cache of earlier ones (none for the prompt). Returns the logits and a new cache;
   * the caller disposes the logits, the new cache (`disposeKvCache`) and, once done with it, the old cache.
   */
  forwardCached(
    inputIds: tf.Tensor2D,
    cache: KvCache | undefined,
    options: CachedForwardOptions = {}
  ): { readonly logits: tf.Tensor3D; readonly cache: KvCache } {
    const [batch, length] = inputIds.shape
    const past = cache?.length ?? 0
    const mask = options.attentionMask === undefined ? undefined : rows(options.attentionMask)
    const positions: Array<Int32Array> = []
    const keyValid: Array<Uint8Array> = []
    const nextPosition: Array<number> = []
    for (let b = 0; b < batch; b++) {
      const p = new Int32Array(length)
      const valid = new Uint8Array(past + length)
      if (cache !== undefined) valid.set(cache.keyValid[b]!)
      let next = cache?.nextPosition[b] ?? 0
      for (let t = 0; t < length; t++) {
        p[t] = next
        const keep = mask === undefined || mask[b]![t] !== 0
        valid[past + t] = keep ? 1 : 0
        if (keep) next++
      }
      positions.push(p)
      keyValid.push(valid)
      nextPosition.push(next)
    }
    const bias = this.attentionBias(batch, length, past, keyValid, undefined)
    const out = tf.tidy(() => {
      const r = this.run(inputIds, positions, bias, cache, options.lastOnly === true)
      return { logits: r.logits, keys: r.keys, values: r.values }
    })
    return {
      logits: out.logits,
      cache: { keys: out.keys, values: out.values, length: past + length, keyValid, nextPosition }
    }
  }

  /**
   * Additive attention bias [B, 1, T, past + T]: 0 where query t may attend key j, else -1e9. Causal by index, valid
   * keys, same segment; no sliding window (what llama.cpp computes for architecture llama).
   */
  private attentionBias(
    batch: number,
    length: number,
    past: number,
    keyValid: ReadonlyArray<Uint8Array>,
    segments: ReadonlyArray<Int32Array> | undefined
  ): Float32Array {
    const keys = past + length
    const bias = new Float32Array(batch * length * keys)
    for (let b = 0; b < batch; b++) {
      const valid = keyValid[b]!
      for (let t = 0; t < length; t++) {
        const q = past + t
        const rowStart = (b * length + t) * keys
        for (let j = 0; j < keys; j++) {
          const allowed = valid[j] === 1 && j <= q &&
            (segments === undefined || segments[b]![j] === segments[b]![t])
          if (!allowed) bias[rowStart + j] = maskedScore
        }
      }
    }
    return bias
  }

  /** The decoder; runs inside the caller's tidy. */
  private run(
    inputIds: tf.Tensor2D,
    positions: ReadonlyArray<Int32Array>,
    bias: Float32Array,
    cache: KvCache | undefined,
    lastOnly: boolean
  ): { logits: tf.Tensor3D; keys: Array<tf.Tensor4D>; values: Array<tf.Tensor4D> } {
    const c = this.config
    const [batch, length] = inputIds.shape
    const half = c.headDim / 2
    const groups = c.numHeads / c.numKvHeads
    const past = cache?.length ?? 0
    const flatPositions = new Int32Array(batch * length)
    positions.forEach((p, b) => flatPositions.set(p, b * length))
    const tables = rotaryTables(this.shared.invFreq, flatPositions)
    const cos = tf.tensor4d(tables.cos, [batch, length, 1, half])
    const sin = tf.tensor4d(tables.sin, [batch, length, 1, half])
    const rope = (x: tf.Tensor4D): tf.Tensor4D => {
      const [x1, x2] = tf.split(x, 2, 3)
      return tf.concat([tf.sub(tf.mul(x1!, cos), tf.mul(x2!, sin)), tf.add(tf.mul(x2!, cos), tf.mul(x1!, sin))], 3)
    }
    const maskBias = tf.tensor4d(bias, [batch, 1, length, past + length])
    const scale = 1 / Math.sqrt(c.headDim)
    const linear = (layer: number, m: LinearModule, x: tf.Tensor) => this.linears.get(weightNames.linear(layer, m))!.apply(x)

    let h: tf.Tensor = embed(this.shared.embedding, inputIds)
    const keys: Array<tf.Tensor4D> = []
    const values: Array<tf.Tensor4D> = []
    for (let l = 0; l < c.numLayers; l++) {
      const x = rmsNorm(h, this.shared.norms[l]!.input, c.rmsNormEps)
      const q = rope(tf.reshape(linear(l, "q_proj", x), [batch, length, c.numHeads, c.headDim]))
      const k = rope(tf.reshape(linear(l, "k_proj", x), [batch, length, c.numKvHeads, c.headDim]))
      const v = tf.reshape(linear(l, "v_proj", x), [batch, length, c.numKvHeads, c.headDim])
      let kh = tf.transpose(k, [0, 2, 1, 3]) as tf.Tensor4D // [B, Hkv, T, D]
      let vh = tf.transpose(v, [0, 2, 1, 3]) as tf.Tensor4D
      if (cache !== undefined) {
        kh = tf.concat([cache.keys[l]!, kh], 2)
        vh = tf.concat([cache.values[l]!, vh], 2)
      }
      keys.push(kh)
      values.push(vh)
      // query head h uses kv head floor(h / groups): group the query heads of one kv head along the time axis
      const qh = tf.reshape(tf.transpose(q, [0, 2, 1, 3]), [batch, c.numKvHeads, groups * length, c.headDim])
      const scores = tf.reshape(
        tf.mul(tf.matMul(qh, kh, false, true), scale),
        [batch, c.numHeads, length, past + length]
      )
      const probs = tf.reshape(tf.softmax(tf.add(scores, maskBias)), [batch, c.numKvHeads, groups * length, past + length])
      const attended = tf.reshape(
        tf.transpose(tf.reshape(tf.matMul(probs, vh), [batch, c.numHeads, length, c.headDim]), [0, 2, 1, 3]),
        [batch, length, c.numHeads * c.headDim]
      )
      h = tf.add(h, linear(l, "o_proj", attended))
      const y = rmsNorm(h, this.shared.norms[l]!.postAttention, c.rmsNormEps)
      const gate = linear(l, "gate_proj", y)
      const mlp = linear(l, "down_proj", tf.mul(tf.mul(gate, tf.sigmoid(gate)), linear(l, "up_proj", y)))
      h = tf.add(h, mlp)
    }
    if (lastOnly) h = tf.slice(h, [0, length - 1, 0], [batch, 1, c.hiddenSize])
    const logits = this.linears.get(outputLinearName)!.apply(rmsNorm(h, this.shared.finalNorm, c.rmsNormEps)) as tf.Tensor3D
    return { logits, keys, values }
  }
}

/**
 * Token embedding lookup. tfjs's gradient of gather needs the UnsortedSegmentSum kernel, which tfjs-backend-wasm
 * 4.22.0 lacks, so a trainable embedding scatters its gradient rows in JS (the same sum, on every backend).
 */
const embed = (table: tf.Tensor2D, ids: tf.Tensor2D): tf.Tensor => {
  if (!("trainable" in table) || table.trainable !== true) return tf.gather(table, ids)
  const [vocab, hidden] = table.shape
  const lookup = tf.customGrad((...inputs) => {
    const [t, i] = inputs as [tf.Tensor, tf.Tensor]
    return {
      value: tf.gather(t, i),
      gradFunc: (dy: tf.Tensor) => {
        const rowsGrad = dy.dataSync()
        const indices = i.dataSync()
        const grad = new Float32Array(vocab * hidden)
        for (let r = 0; r < indices.length; r++) {
          const base = indices[r]! * hidden
          for (let k = 0; k < hidden; k++) grad[base + k]! += rowsGrad[r * hidden + k]!
        }
        return [tf.tensor2d(grad, [vocab, hidden]), tf.zerosLike(i)]
      }
    }
  })
  return lookup(table, ids)
}

/** x · 1/sqrt(mean(x²) + eps) · w, over the last axis (llama.cpp's ggml_rms_norm, then the weight). */
export const rmsNorm = (x: tf.Tensor, weight: tf.Tensor1D, eps: number): tf.Tensor =>
  tf.mul(tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), eps))), weight)
