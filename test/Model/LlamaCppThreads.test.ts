/**
 * The llama.cpp thread policy: `chooseThreads` for given (cores, load, model size), and contexts made through the
 * runtime carrying its counts into node-llama-cpp (the context's `ideal` and the Llama's thread budget).
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { Effect } from "effect"
import { join } from "node:path"
import { bytesPerThread, chooseThreads, describeThreads, governorStep, LlamaCpp } from "../../src/Model/LlamaCpp.ts"
import { presetConfig, writeTinyModel } from "../../src/Model/TinyModel.ts"
import { tempDir } from "./WeightFileFixtures.ts"

const MB = 1024 * 1024
const GB = 1024 * MB

describe("chooseThreads", () => {
  it("gives a small model one thread, whatever the cores", () => {
    for (const cores of [1, 2, 8, 64]) {
      assert.deepStrictEqual(chooseThreads({ cores, busyCores: 0, cpuBytes: 13 * MB }), { threads: 1, ceiling: 1, freeCores: cores })
      assert.strictEqual(chooseThreads({ cores, busyCores: 0, cpuBytes: 111 * MB }).threads, 1)
    }
  })

  it("gives a large model every free core, and no more than the model pays for", () => {
    assert.deepStrictEqual(chooseThreads({ cores: 2, busyCores: 0, cpuBytes: 2.2 * GB }), { threads: 2, ceiling: 2, freeCores: 2 })
    assert.deepStrictEqual(chooseThreads({ cores: 16, busyCores: 0, cpuBytes: 4 * GB }), { threads: 16, ceiling: 16, freeCores: 16 })
    // 200 MB pays for 3 threads (64 MiB each) on an idle 8-core machine
    assert.deepStrictEqual(chooseThreads({ cores: 8, busyCores: 0, cpuBytes: 200 * MB }), { threads: 3, ceiling: 3, freeCores: 8 })
    assert.strictEqual(chooseThreads({ cores: 8, busyCores: 0, cpuBytes: 2 * bytesPerThread - 1 }).threads, 1)
    assert.strictEqual(chooseThreads({ cores: 8, busyCores: 0, cpuBytes: 2 * bytesPerThread }).threads, 2)
  })

  it("leaves the cores that other processes use", () => {
    const big = 8 * GB
    // one busy neighbour per core: one thread, never zero
    assert.deepStrictEqual(chooseThreads({ cores: 2, busyCores: 2, cpuBytes: big }), { threads: 1, ceiling: 2, freeCores: 0 })
    assert.strictEqual(chooseThreads({ cores: 2, busyCores: 5.3, cpuBytes: big }).threads, 1)
    assert.strictEqual(chooseThreads({ cores: 16, busyCores: 8, cpuBytes: big }).threads, 8)
    assert.strictEqual(chooseThreads({ cores: 16, busyCores: 15.9, cpuBytes: big }).threads, 1)
    // a core counts as free only when less than a quarter of it is in use
    assert.strictEqual(chooseThreads({ cores: 2, busyCores: 0.2, cpuBytes: big }).threads, 2)
    assert.strictEqual(chooseThreads({ cores: 2, busyCores: 0.3, cpuBytes: big }).threads, 1)
    assert.strictEqual(chooseThreads({ cores: 16, busyCores: 3.5, cpuBytes: big }).threads, 12)
  })

  it("never gives more threads for more load or fewer for a larger model", () => {
    for (const cores of [1, 2, 4, 12, 32]) {
      for (let busy = 0; busy <= cores + 1; busy += 0.25) {
        for (const bytes of [0, 10 * MB, 100 * MB, 500 * MB, 3 * GB, 40 * GB]) {
          const here = chooseThreads({ cores, busyCores: busy, cpuBytes: bytes })
          assert.isAtLeast(here.threads, 1)
          assert.isAtMost(here.threads, Math.min(cores, here.ceiling))
          assert.isAtMost(chooseThreads({ cores, busyCores: busy + 0.25, cpuBytes: bytes }).threads, here.threads)
          assert.isAtLeast(chooseThreads({ cores, busyCores: busy, cpuBytes: bytes * 2 }).threads, here.threads)
        }
      }
    }
  })

  it("the governor goes down at once and up after two measurements that agree", () => {
    const run = (targets: ReadonlyArray<number>, start = 4) => {
      let state = { threads: start, raiseVotes: 0 }
      return targets.map((t) => (state = governorStep(state, t)).threads)
    }
    assert.deepStrictEqual(run([1]), [1])
    assert.deepStrictEqual(run([2, 4, 4, 4]), [2, 2, 4, 4])
    // a lull of one measurement does not raise it
    assert.deepStrictEqual(run([1, 4, 1, 4, 1], 1), [1, 1, 1, 1, 1])
    assert.deepStrictEqual(run([1, 3, 4, 4], 1), [1, 1, 4, 4])
    assert.deepStrictEqual(run([4, 4, 4], 4), [4, 4, 4])
  })

  it("describes the choice for startup lines", () => {
    assert.strictEqual(describeThreads({ mode: "fixed", threads: 2, ceiling: 2, cores: 8, busyCores: 1 }), "2 threads (--threads)")
    assert.strictEqual(
      describeThreads({ mode: "auto", threads: 1, ceiling: 4, cores: 8, busyCores: 6.94 }),
      "1 thread (auto: up to 4 for the model size, 8 cores, 6.9 busy)"
    )
  })
})

const dir = tempDir("llamacpp-threads")

layer(LlamaCpp.layerCpu, { timeout: 60_000 })("contexts made through the runtime", (it) => {
  it.effect("a fixed count goes to the context and to the Llama's budget; auto gives a small model one thread", () =>
    Effect.gen(function*() {
      const llamaCpp = yield* LlamaCpp
      const path = join(dir, "tiny.gguf")
      yield* writeTinyModel({ config: presetConfig("tiny"), seed: 2, path })
      // node-llama-cpp's own default would be at least 4
      assert.strictEqual(llamaCpp.llama.maxThreads, 1)
      yield* Effect.scoped(Effect.gen(function*() {
        const model = yield* llamaCpp.loadModel({ modelPath: path })
        const fixed = yield* llamaCpp.createContext(model, { contextSize: 256 }, 3)
        assert.strictEqual(fixed.idealThreads, 3)
        assert.strictEqual(llamaCpp.llama.maxThreads, 3)
        assert.deepInclude(yield* llamaCpp.threads, { mode: "fixed", threads: 3 })
      }))
      yield* Effect.scoped(Effect.gen(function*() {
        const model = yield* llamaCpp.loadModel({ modelPath: path })
        const auto = yield* llamaCpp.createContext(model, { contextSize: 256 })
        const expected = chooseThreads({ cores: (yield* llamaCpp.threads).cores, busyCores: 0, cpuBytes: model.size })
        assert.strictEqual(expected.ceiling, 1)
        assert.strictEqual(auto.idealThreads, 1)
        assert.deepInclude(yield* llamaCpp.threads, { mode: "auto", threads: 1, ceiling: 1 })
        assert.strictEqual(llamaCpp.llama.maxThreads, 1)
        // it decodes
        const sequence = auto.getSequence()
        let n = 0
        yield* Effect.promise(async () => {
          for await (const _token of sequence.evaluate(model.tokenize("Question: AAPL?"), { temperature: 0 })) if (++n >= 4) break
        })
        assert.strictEqual(n, 4)
      }))
      // every context gone: back to one thread
      assert.strictEqual(llamaCpp.llama.maxThreads, 1)
    }))
})
