/**
 * Writes docs/config-reference.md from the pipeline config Schema (src/Pipeline/PipelineConfig.ts).
 * Run after changing the Schema or the defaults: `./node_modules/.bin/node scripts/config-reference.ts`.
 * test/Pipeline/PipelineConfig.test.ts fails when the committed file differs from what this writes.
 */
import { writeFileSync } from "node:fs"
import { renderConfigReference } from "../src/Pipeline/PipelineConfig.ts"

const out = new URL("../docs/config-reference.md", import.meta.url)
writeFileSync(out, renderConfigReference())
console.log(`wrote ${out.pathname}`)
