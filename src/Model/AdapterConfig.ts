/**
 * The one description of a LoRA adapter's configuration: PEFT's `adapter_config.json` as a Schema, with the rules
 * PEFT 0.21 applies to it (peft/tuners/tuners_utils.py `check_target_module_exists`, peft/utils/other.py
 * `get_pattern_key`, peft/tuners/lora/layer.py `update_layer`):
 * - a module is adapted when `target_modules` names it (a list: the full key, or a key ending with `.name`; a
 *   string: a regex that must match the whole key), it is not excluded, and its layer is in `layers_to_transform`;
 * - its rank and alpha are the first `rank_pattern` / `alpha_pattern` key `k` for which `^(.*\.)?(k)$` matches the
 *   module key, else `r` / `lora_alpha`;
 * - its scale is alpha / rank, or alpha / √rank with rsLoRA.
 * The trainer writes it, the PEFT reader decodes it, in-process evaluation builds its LoRA layers from it and the
 * GGUF export takes llama.cpp's alpha from it, so all four agree on every module's scale.
 */
import { Schema } from "effect"
import { gguf, type GgufValue } from "./Gguf.ts"
import { ggufKeys } from "./GgufKeys.ts"
import { attentionModules, type LinearModule, mlpModules } from "./ModelContracts.ts"

export const LinearModuleName = Schema.Literals([...attentionModules, ...mlpModules])

/** `all-linear` (PEFT's spelling) or a list of module short names: what the trainer's config accepts. */
export const TargetModules = Schema.Union([Schema.Literal("all-linear"), Schema.Array(LinearModuleName)])
export type TargetModules = typeof TargetModules.Type

/** The short module names a training setting adapts, in HF order. */
export const resolveTargets = (targets: TargetModules): ReadonlyArray<LinearModule> =>
  targets === "all-linear" ? [...attentionModules, ...mlpModules] : targets

/** What a training run chooses; the AdapterConfig it writes is built from it. */
export interface LoraSettings {
  readonly r: number
  readonly alpha: number
  readonly dropout: number
  readonly useRslora: boolean
  readonly targetModules: TargetModules
}

const StringOrList = Schema.Union([Schema.String, Schema.Array(Schema.String)])
const Off = <S extends Schema.Top>(schema: S) => Schema.optionalKey(Schema.NullOr(schema))

/** Python's `re.match(rf"(.*\.)?({key})$", module)`: anchored at the start, `$` at the end. */
const patternMatches = (key: string, module: string): boolean => new RegExp(`^(?:.*\\.)?(?:${key})$`).test(module)

const listMatches = (list: ReadonlyArray<string>, module: string) =>
  list.includes(module) || list.some((k) => module.endsWith(`.${k}`))

const shortName = (module: string) => module.slice(module.lastIndexOf(".") + 1)

export class AdapterConfig extends Schema.Class<AdapterConfig>("app/Model/AdapterConfig")({
  peft_type: Schema.Literal("LORA"),
  task_type: Off(Schema.String),
  r: Schema.Int.check(Schema.isGreaterThan(0)),
  lora_alpha: Schema.Finite,
  lora_dropout: Schema.optionalKey(Schema.Finite),
  use_rslora: Schema.optionalKey(Schema.Boolean),
  target_modules: StringOrList,
  exclude_modules: Off(StringOrList),
  layers_to_transform: Off(Schema.Union([Schema.Int, Schema.Array(Schema.Int)])),
  layers_pattern: Off(StringOrList),
  rank_pattern: Off(Schema.Record(Schema.String, Schema.Int.check(Schema.isGreaterThan(0)))),
  alpha_pattern: Off(Schema.Record(Schema.String, Schema.Finite)),
  base_model_name_or_path: Off(Schema.String),
  // what would change the function and is not implemented: accepted only at its off value
  bias: Schema.optionalKey(Schema.Literal("none")),
  use_dora: Schema.optionalKey(Schema.Literal(false)),
  fan_in_fan_out: Schema.optionalKey(Schema.Literal(false)),
  lora_bias: Schema.optionalKey(Schema.Literal(false)),
  modules_to_save: Off(Schema.Array(Schema.String).check(Schema.isMaxLength(0))),
  layer_replication: Schema.optionalKey(Schema.Null),
  trainable_token_indices: Schema.optionalKey(Schema.Null),
  target_parameters: Off(Schema.Array(Schema.String).check(Schema.isMaxLength(0)))
}) {
  /** The config a training run writes (PEFT's resolved module names, as PEFT saves them for "all-linear"). */
  static fromSettings(settings: LoraSettings, baseModel: string | null): AdapterConfig {
    return new AdapterConfig({
      peft_type: "LORA",
      task_type: "CAUSAL_LM",
      r: settings.r,
      lora_alpha: settings.alpha,
      lora_dropout: settings.dropout,
      use_rslora: settings.useRslora,
      target_modules: [...resolveTargets(settings.targetModules)],
      rank_pattern: {},
      alpha_pattern: {},
      base_model_name_or_path: baseModel,
      bias: "none"
    })
  }

  get rslora(): boolean {
    return this.use_rslora === true
  }

  get dropout(): number {
    return this.lora_dropout ?? 0
  }

  /** Whether PEFT puts a LoRA layer on the module with this key (e.g. `model.layers.0.self_attn.q_proj`). */
  targets(module: string): boolean {
    const exclude = this.exclude_modules
    if (exclude !== undefined && exclude !== null) {
      if (typeof exclude === "string" ? new RegExp(`^(?:${exclude})$`).test(module) : listMatches(exclude, module)) return false
    }
    const targets = this.target_modules
    if (typeof targets === "string") {
      // PEFT expands "all-linear" to every linear layer but the output head before matching
      if (targets === "all-linear") return (resolveTargets("all-linear") as ReadonlyArray<string>).includes(shortName(module))
      return new RegExp(`^(?:${targets})$`).test(module)
    }
    if (targets.includes(module)) return true
    if (!targets.some((k) => module.endsWith(`.${k}`))) return false
    const layers = this.layers_to_transform
    if (layers === undefined || layers === null || (Array.isArray(layers) && layers.length === 0)) return true
    const patterns = this.layers_pattern === undefined || this.layers_pattern === null || this.layers_pattern.length === 0
      ? undefined
      : typeof this.layers_pattern === "string" ? [this.layers_pattern] : this.layers_pattern
    const index = patterns === undefined
      ? /^.*?\.[^.]*\.(\d+)\./.exec(module)?.[1]
      : patterns.map((p) => new RegExp(`^(?:|.*?\\.)${p}\\.(\\d+)\\.`).exec(module)?.[1]).find((i) => i !== undefined)
    if (index === undefined) return false
    return typeof layers === "number" ? Number(index) === layers : layers.includes(Number(index))
  }

  /** The module's rank: its `rank_pattern` entry, else `r`. */
  rankOf(module: string): number {
    return patternValue(this.rank_pattern, module) ?? this.r
  }

  /** The module's alpha: its `alpha_pattern` entry, else `lora_alpha`. */
  alphaOf(module: string): number {
    return patternValue(this.alpha_pattern, module) ?? this.lora_alpha
  }

  /** The factor PEFT applies to B·A for this module. */
  scaleOf(module: string): number {
    const rank = this.rankOf(module)
    return this.alphaOf(module) / (this.rslora ? Math.sqrt(rank) : rank)
  }

  /** Whether every one of these modules has the config's own rank and alpha (no pattern changes any of them). */
  isUniform(modules: ReadonlyArray<string>): boolean {
    return modules.every((m) => this.rankOf(m) === this.r && this.alphaOf(m) === this.lora_alpha)
  }

  /**
   * llama.cpp's view (llama-adapter.cpp): scale = user_scale · alpha / rank with the rank read off each lora_a. The
   * alpha it is given, and the factor each module's B must be multiplied by so llama.cpp's scale equals PEFT's:
   * one alpha when all modules are uniform (rsLoRA's alpha/√r written as alpha·√r), else alpha 0 (llama.cpp then
   * uses the user scale alone) with each module's PEFT scale baked into its B.
   */
  llamaCppScaling(modules: ReadonlyArray<string>): { readonly alpha: number; readonly bFactor: (module: string) => number } {
    if (!this.isUniform(modules)) return { alpha: 0, bFactor: (m) => this.scaleOf(m) }
    return { alpha: this.rslora ? this.lora_alpha * Math.sqrt(this.r) : this.lora_alpha, bFactor: () => 1 }
  }

  /** The metadata of a llama.cpp LoRA adapter GGUF for these modules over a base of this architecture. */
  toLlamaCppMetadata(options: {
    readonly architecture: string
    readonly name: string
    readonly modules: ReadonlyArray<string>
  }): ReadonlyArray<readonly [string, GgufValue]> {
    return [
      [ggufKeys.architecture, gguf.string(options.architecture)],
      [ggufKeys.type, gguf.string("adapter")],
      [ggufKeys.name, gguf.string(options.name)],
      [ggufKeys.adapterType, gguf.string("lora")],
      [ggufKeys.adapterLoraAlpha, gguf.f32(this.llamaCppScaling(options.modules).alpha)]
    ]
  }

  /** `adapter_config.json` as PEFT writes it (the fields PEFT expects, ours filled in). */
  toPeftJson(): Record<string, unknown> {
    return {
      alpha_pattern: this.alpha_pattern ?? {},
      auto_mapping: null,
      base_model_name_or_path: this.base_model_name_or_path ?? null,
      bias: "none",
      exclude_modules: this.exclude_modules ?? null,
      fan_in_fan_out: false,
      inference_mode: true,
      init_lora_weights: true,
      layers_pattern: this.layers_pattern ?? null,
      layers_to_transform: this.layers_to_transform ?? null,
      lora_alpha: this.lora_alpha,
      lora_dropout: this.dropout,
      modules_to_save: null,
      peft_type: "LORA",
      r: this.r,
      rank_pattern: this.rank_pattern ?? {},
      revision: null,
      target_modules: this.target_modules,
      task_type: this.task_type ?? "CAUSAL_LM",
      use_dora: false,
      use_rslora: this.rslora
    }
  }
}

const patternValue = (pattern: Readonly<Record<string, number>> | null | undefined, module: string): number | undefined => {
  if (pattern === undefined || pattern === null) return undefined
  for (const [key, value] of Object.entries(pattern)) if (patternMatches(key, module)) return value
  return undefined
}

/** Decodes `adapter_config.json` text (PEFT's extra fields are ignored; unsupported features are refused). */
export const decodeAdapterConfig = Schema.decodeUnknownEffect(Schema.fromJsonString(AdapterConfig))
