/** The one way benchmarks publish their figures: each owns one `## …` section of BENCHMARKS.md. */
import { readFileSync, writeFileSync } from "node:fs"
import { fileURLToPath } from "node:url"

/**
 * Replaces the section of BENCHMARKS.md that starts at `heading` with `section` (its own header line included),
 * up to the next `## ` heading, leaving every other section as it is.
 */
export const writeBenchmarkSection = (heading: string, section: string): void => {
  const file = fileURLToPath(new URL("../BENCHMARKS.md", import.meta.url))
  const text = readFileSync(file, "utf8")
  const start = text.indexOf(heading)
  if (start < 0) throw new Error(`BENCHMARKS.md has no '${heading}' section`)
  const next = text.indexOf("\n## ", start + 1)
  writeFileSync(file, text.slice(0, start) + section + (next < 0 ? "" : text.slice(next)))
}
