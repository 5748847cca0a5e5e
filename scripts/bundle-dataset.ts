/**
 * The last step of `npm run build`: bundles the dataset-only CLI (`dist/Dataset/Run.js`, which the entry
 * `dist/Dataset/Main.js` loads after its restart) and the ingest's worker (`dist/Dataset/IngestWorker.js`)
 * each into one file, in place, with rolldown.
 *
 * Why: Node's ESM loader pays per module (resolve, stat, package.json scope, link), and the dataset entry
 * loads about 200 of them from `effect` and `@effect/platform-node`. One file starts in about 0.13 s instead
 * of 0.24 s and holds about 35 MB less memory (measured in BENCHMARKS.md, `npm run bench:dataset`). The
 * bundles stay next to the other compiled files, so the worker is still found at `./IngestWorker.js`.
 * `dist/Main.js` (every stage) is not bundled: tfjs and node-llama-cpp load native and wasm files by path.
 *
 *   npm run build                       # tsc, then this
 *   node scripts/bundle-dataset.ts      # again on a fresh tsc output (a bundle is never bundled twice)
 */
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { build } from "rolldown"

const root = new URL("..", import.meta.url).pathname
const banner = "// bundled by scripts/bundle-dataset.ts"

for (const name of ["Run.js", "IngestWorker.js"]) {
  const file = join(root, "dist/Dataset", name)
  const source = readFileSync(file, "utf8")
  if (source.includes(banner)) continue
  // rolldown reads every module before it writes, so the bundle can replace its own entry
  await build({
    input: file,
    platform: "node",
    logLevel: "warn",
    output: {
      file,
      format: "esm",
      codeSplitting: false,
      banner,
      sourcemap: true
    }
  })
}
