#!/usr/bin/env node
/**
 * A dataset-only entry point: `node dist/Dataset/Main.js split …` runs the same `dataset` command as
 * `node dist/Main.js dataset split …` without loading the other stages (tfjs, llama.cpp), so a data-prep
 * box or CI job starts faster and with about 100 MB less memory.
 *
 * It also fixes V8's young generation at 8 MB semi-spaces: Node sizes them from the machine's memory (up to
 * 32 MB each here), and the ingest's short-lived strings fill them, which costs about 90 MB of peak RSS for
 * no speed; a fixed size also keeps memory flat as the input grows. The flags (and glibc's malloc settings,
 * see Reexec.ts) only take effect at process start (`v8.setFlagsFromString` is too late), so the entry
 * replaces itself once, before loading anything, with `process.execve` (same pid, stdio and exit code; no
 * second process). A `--max-semi-space-size` already given (command line or NODE_OPTIONS) is respected,
 * and `DATASET_NO_REEXEC=1` turns this off.
 */
import { enableCompileCache } from "node:module"
import { isIngestCommand, semiSpaceReexec } from "./Reexec.ts"

semiSpaceReexec()
// V8's on-disk code cache (in the temp folder): compiling is a third of the entry's start-up
enableCompileCache()

// the ingest's worker threads load while the CLI does (see IngestWorkers.ts); a run that needs none ends them
if (isIngestCommand(process.argv)) {
  const { defaultIngestWorkers, prestartIngestWorkers } = await import("./IngestWorkers.ts")
  prestartIngestWorkers(defaultIngestWorkers())
}

// the command itself, bundled into one file by `npm run build` (scripts/bundle-dataset.ts); this file
// stays small so the restart above happens before that file is even parsed
await import("./Run.ts")
