/**
 * Renders docs/cli-reference.md from the built CLI's own --help output, walking every subcommand, so the
 * reference cannot drift from the code (test/CliReference.test.ts fails when the committed file differs).
 *
 *   npm run build && node scripts/cli-reference.ts          # rewrite docs/cli-reference.md
 */
import { execFile } from "node:child_process"
import { writeFileSync } from "node:fs"
import { promisify } from "node:util"

const run = promisify(execFile)

const helpOf = async (path: ReadonlyArray<string>): Promise<string> => {
  const { stdout } = await run(process.execPath, ["dist/Main.js", ...path, "--help"], {
    encoding: "utf8",
    env: { ...process.env, COLUMNS: "120", NO_COLOR: "1", FORCE_COLOR: "0" }
  })
  return stdout.replace(/\x1b\[[0-9;]*m/g, "")
}

/** The names listed under a help page's SUBCOMMANDS heading, or under its group headings (`Dataset:` …). */
const subcommandsOf = (help: string): Array<string> =>
  help.split(/\n\s*\n/).flatMap((block) => {
    const [heading, ...lines] = block.split("\n")
    if (heading === undefined || !/^(SUBCOMMANDS|[A-Z][A-Za-z ]*:)$/.test(heading.trim())) return []
    return lines.flatMap((line) => {
      const match = /^ {2}(\S+)\s/.exec(line)
      return match ? [match[1]!] : []
    })
  })

export const renderCliReference = async (): Promise<string> => {
  // Pages are rendered concurrently (one process each) and then ordered depth-first.
  const walk = async (path: ReadonlyArray<string>): Promise<Array<string>> => {
    const help = await helpOf(path)
    // The global flags repeat on every page; keep them on the root page only.
    const body = path.length === 0 ? help : help.replace(/GLOBAL FLAGS\n(?: {2}.*\n)+\n?/, "")
    const own = `## \`${["finetune-finance", ...path].join(" ")}\`\n\n\`\`\`text\n${body.trimEnd()}\n\`\`\``
    const children = await Promise.all(subcommandsOf(help).map((sub) => walk([...path, sub])))
    return [own, ...children.flat()]
  }
  const sections = await walk([])
  return `# CLI reference\n\nGenerated from the CLI's own \`--help\` by \`node scripts/cli-reference.ts\` (after \`npm run build\`);\n` +
    `test/CliReference.test.ts fails when this file drifts from the code. Run it as \`npx finetune-finance …\`,\n` +
    `\`npm start -- …\` or \`./node_modules/.bin/node dist/Main.js …\`.\n\n${sections.join("\n\n")}\n`
}

if (import.meta.url === `file://${process.argv[1]}`) {
  writeFileSync("docs/cli-reference.md", await renderCliReference())
  console.log("wrote docs/cli-reference.md")
}
