import { readFileSync } from "node:fs"
import { describe, expect, it } from "vitest"
import { renderCliReference } from "../scripts/cli-reference.ts"

// docs/cli-reference.md is generated from the built CLI's --help pages; regenerate it with
// `npm run build && node scripts/cli-reference.ts` when a command changes.
describe("docs/cli-reference.md", () => {
  it("matches every command's --help", async () => {
    const rendered = await renderCliReference()
    expect(rendered).toContain("## `finetune-finance dataset synth`")
    expect(readFileSync("docs/cli-reference.md", "utf8")).toBe(rendered)
  }, 300_000)
})
