import { describe, expect, it } from "vitest"
import { spawnSync } from "node:child_process"
import { datasetOldSpaceMb, datasetSemiSpaceMb, reexecArgs, reexecEnv } from "../../src/Dataset/Reexec.ts"

describe("dataset entry: bounded young generation", () => {
  it("restarts with --max-semi-space-size unless it is already set or turned off", () => {
    const flag = `--max-semi-space-size=${datasetSemiSpaceMb}`
    const min = `--min-semi-space-size=${datasetSemiSpaceMb}`
    const old = `--max-old-space-size=${datasetOldSpaceMb}`
    expect(reexecArgs("/n", ["--import=x"], ["/n", "main.js", "split", "a.jsonl"], {})).toEqual(
      ["/n", flag, min, old, "--import=x", "main.js", "split", "a.jsonl"]
    )
    expect(reexecArgs("/n", [], ["/n", "main.js", "validate", "a.jsonl"], {})).toEqual(["/n", flag, min, old, "main.js", "validate", "a.jsonl"])
    // only the ingest commands get the old-space limit, and one already given is kept
    expect(reexecArgs("/n", [], ["/n", "main.js", "stats", "a.jsonl"], {})).toEqual(["/n", flag, min, "main.js", "stats", "a.jsonl"])
    expect(reexecArgs("/n", ["--max-old-space-size=4096"], ["/n", "main.js", "split", "a"], {})).toEqual(["/n", flag, min, "--max-old-space-size=4096", "main.js", "split", "a"])
    expect(reexecArgs("/n", [], ["/n", "main.js", "split", "a"], { NODE_OPTIONS: "--max-old-space-size=4096" })).toEqual(["/n", flag, min, "main.js", "split", "a"])
    expect(reexecArgs("/n", ["--max-semi-space-size=32"], ["/n", "main.js"], {})).toBeUndefined()
    expect(reexecArgs("/n", [], ["/n", "main.js"], { NODE_OPTIONS: "--max-semi-space-size=4" })).toBeUndefined()
    expect(reexecArgs("/n", [], ["/n", "main.js"], { DATASET_NO_REEXEC: "1" })).toBeUndefined()
    expect(reexecArgs("/n", [], ["/n", "main.js"], { DATASET_NO_REEXEC: "0" })).toEqual(["/n", flag, min, "main.js"])
    expect(reexecEnv({ HOME: "/h", GONE: undefined }, "/c")).toEqual({ HOME: "/h", MALLOC_ARENA_MAX: "2", MALLOC_MMAP_THRESHOLD_: "131072", NODE_COMPILE_CACHE: "/c", DATASET_NO_REEXEC: "1" })
    expect(reexecEnv({ MALLOC_ARENA_MAX: "8" }).MALLOC_ARENA_MAX).toBe("8")
    expect(reexecEnv({ MALLOC_MMAP_THRESHOLD_: "65536" }).MALLOC_MMAP_THRESHOLD_).toBe("65536")
    expect(reexecEnv({ NODE_COMPILE_CACHE: "/mine" }, "/c").NODE_COMPILE_CACHE).toBe("/mine")
    expect(reexecEnv({ NODE_DISABLE_COMPILE_CACHE: "1" }, "/c").NODE_COMPILE_CACHE).toBeUndefined()
  })

  it("the built entry runs with the flag, keeps the pid, and passes exit codes through", () => {
    // a preload module (carried over by the restart, like any node option) reports the final process's flags
    const report = `--import=data:text/javascript,process.on("exit",(c)=>console.error("ENTRY"+JSON.stringify([process.pid,process.execArgv,c,process.env.MALLOC_ARENA_MAX??null])))`
    const run = (env: Record<string, string>, args: ReadonlyArray<string>) => {
      const base = { ...process.env }
      delete base.MALLOC_ARENA_MAX
      const r = spawnSync(process.execPath, [report, "dist/Dataset/Main.js", ...args], { encoding: "utf8", env: { ...base, ...env }, timeout: 60_000 })
      const line = r.stderr.split("\n").find((l) => l.startsWith("ENTRY"))
      return { code: r.status, pid: r.pid, entry: JSON.parse(line!.slice(5)) as [number, Array<string>, number, string | null] }
    }
    const env = { DATASET_NO_REEXEC: "", NODE_OPTIONS: "" }
    const ok = run(env, ["--version"])
    expect(ok.code).toBe(0)
    expect(ok.entry[0]).toBe(ok.pid)
    expect(ok.entry[1]).toContain(`--max-semi-space-size=${datasetSemiSpaceMb}`)
    expect(ok.entry[1]).toContain(`--min-semi-space-size=${datasetSemiSpaceMb}`)
    expect(ok.entry[3]).toBe("2")
    const bad = run(env, ["split", "/nonexistent/input.jsonl"])
    expect(bad.code).not.toBe(0)
    expect(bad.entry[2]).toBe(bad.code)
    const off = run({ DATASET_NO_REEXEC: "1", NODE_OPTIONS: "" }, ["--version"])
    expect(off.entry[1].some((a) => a.startsWith("--max-semi-space-size"))).toBe(false)
    expect(off.entry[3]).toBeNull()
  })
})
