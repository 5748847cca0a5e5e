/** Shared helpers of the weight-format tests: temp folders, seeded data, float16 reference, error assertions. */
import { assert } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import { join } from "node:path"
import { getLlama, type Llama } from "node-llama-cpp"
import { afterAll, beforeAll } from "vitest"
import { ModelFileError } from "../../src/Model/ModelFileError.ts"

/** A temp folder removed after the file's tests. */
export const tempDir = (prefix: string): string => {
  const dir = fs.mkdtempSync(join(os.tmpdir(), `${prefix}-`))
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** One llama.cpp runtime (CPU, prebuilt binaries only) for the file's tests. */
export const sharedLlama = (): (() => Llama) => {
  let llama: Llama | undefined
  beforeAll(async () => {
    llama = await getLlama({ gpu: false, build: "never" })
  })
  afterAll(async () => {
    await llama?.dispose()
  })
  return () => llama!
}

/** Node 24's Math.f16round: an independent reference for float16 rounding (ES2025, not in our ES2024 lib types). */
export const f16round = (Math as unknown as { f16round: (x: number) => number }).f16round

/** `n` deterministic values in [-scale, scale). */
export const seeded = (n: number, seed: number, scale = 1): Float32Array => {
  let s = seed >>> 0
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    out[i] = ((s / 2 ** 32) * 2 - 1) * scale
  }
  return out
}

/** The `ModelFileError` an effect fails with (the test fails if it succeeds or fails otherwise). */
export const fileFailure = <A>(effect: Effect.Effect<A, ModelFileError>): Effect.Effect<ModelFileError, A> =>
  Effect.flip(effect).pipe(Effect.map((e) => {
    assert.instanceOf(e, ModelFileError)
    return e
  }))
