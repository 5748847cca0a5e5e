/**
 * Bounding V8's young generation for the ingest (see Main.ts for why). V8 reads `--max-semi-space-size`
 * only when the heap is created, so the only way for a CLI to set it for itself is to start again with
 * the flag: `process.execve` replaces the running process (same pid, stdio, exit code), so no second
 * process holds memory.
 */
import { tmpdir } from "node:os"
import { join } from "node:path"

/**
 * semi-space size in MB, fixed (minimum = maximum): 8 keeps the ingest's speed (measured in BENCHMARKS.md)
 * at a much lower peak RSS than Node's default (up to 32 MB here), and a fixed size keeps memory flat: a
 * young generation that starts at 1 MB and grows with the run held 8 MB more at 1M records than at 100k
 */
export const datasetSemiSpaceMb = 8

/**
 * old-space limit in MB for the ingest commands (`split`, `validate`), whose main thread keeps no
 * per-record objects (the dedupe table is one ArrayBuffer, outside this limit): a small limit makes V8
 * collect the old generation sooner, where by default its garbage grew with the run (1M-record peak RSS
 * about 10 MB lower, 100k unchanged, no measured cost in speed). Other commands keep Node's default.
 */
export const datasetOldSpaceMb = 128

/** true when the command line runs an ingest (`split`, `validate`): the commands with worker threads and the old-space limit */
export const isIngestCommand = (argv: ReadonlyArray<string>): boolean => argv[2] === "split" || argv[2] === "validate"

/**
 * The argv to restart with, or undefined when the process should go on as it is: the flag is already
 * set (command line or NODE_OPTIONS), or `DATASET_NO_REEXEC` is set. A `--max-old-space-size` already
 * given is kept.
 */
export const reexecArgs = (
  execPath: string,
  execArgv: ReadonlyArray<string>,
  argv: ReadonlyArray<string>,
  env: Readonly<Record<string, string | undefined>>
): Array<string> | undefined => {
  const flag = "--max-semi-space-size"
  if (env.DATASET_NO_REEXEC !== undefined && env.DATASET_NO_REEXEC !== "" && env.DATASET_NO_REEXEC !== "0") return undefined
  if (execArgv.some((a) => a.startsWith(flag)) || (env.NODE_OPTIONS ?? "").includes(flag)) return undefined
  const ingest = isIngestCommand(argv)
  const oldSpace = "--max-old-space-size"
  const oldSpaceSet = execArgv.some((a) => a.startsWith(oldSpace)) || (env.NODE_OPTIONS ?? "").includes(oldSpace)
  return [
    execPath,
    `${flag}=${datasetSemiSpaceMb}`,
    `--min-semi-space-size=${datasetSemiSpaceMb}`,
    ...(ingest && !oldSpaceSet ? [`${oldSpace}=${datasetOldSpaceMb}`] : []),
    ...execArgv,
    ...argv.slice(1)
  ]
}

/**
 * The environment to restart with (each value only where it is not set already):
 * - glibc's malloc arenas capped at 2: the ingest's native buffers are allocated from several threads (fs,
 *   GC helpers) and each extra arena kept its own fragmented pages (about 30 MB of peak RSS at 1M records);
 * - glibc's mmap threshold fixed at its default 128 KiB: left dynamic, it rises after the first large free,
 *   so later batch buffers come from the heap, whose holes are never given back (about 8 MB more peak RSS
 *   at 1M records, none at 100k; no measured cost in speed: a run allocates about a hundred such buffers);
 * - V8's on-disk code cache from the first line: the entry is one bundled file
 *   (scripts/bundle-dataset.ts), compiled before its own `enableCompileCache()` could run, and compiling
 *   it is 40 ms of a 0.17 s start.
 */
export const reexecEnv = (env: Readonly<Record<string, string | undefined>>, cacheDir = join(tmpdir(), "node-compile-cache")): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out[k] = v
  out.MALLOC_ARENA_MAX ??= "2"
  out.MALLOC_MMAP_THRESHOLD_ ??= "131072"
  // the folder `enableCompileCache()` uses by default, so both share one cache
  if (out.NODE_DISABLE_COMPILE_CACHE === undefined) out.NODE_COMPILE_CACHE ??= cacheDir
  out.DATASET_NO_REEXEC = "1"
  return out
}

/** Restarts this process once with a bounded young generation, where the platform can (not on Windows). */
export const semiSpaceReexec = (): void => {
  if (process.platform === "win32" || typeof process.execve !== "function") return
  const args = reexecArgs(process.execPath, process.execArgv, process.argv, process.env)
  if (args !== undefined) process.execve(process.execPath, args, reexecEnv(process.env))
}
