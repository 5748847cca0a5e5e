/**
 * The Node version check of the entry points. It runs before the CLI's modules are even parsed, so it is written
 * for any Node that can load an ES module (no optional chaining, no `??`, no Node APIs newer than v12); the CLI
 * itself needs the project's Node (package.json `engines`, the `node` package in node_modules).
 */

/** The oldest Node the CLI runs on (package.json `engines.node`). */
export const minimumNode = { major: 22, minor: 19 }

/** Whether `version` ("22.19.0", "v20.20.2") is at least the minimum. */
export const isSupportedNode = (version: string): boolean => {
  const parts = version.replace(/^v/, "").split(".")
  const major = Number(parts[0])
  const minor = Number(parts[1] === undefined ? 0 : parts[1])
  return major > minimumNode.major || (major === minimumNode.major && minor >= minimumNode.minor)
}

/** The line printed on an older Node: what is needed, what was found, and two ways to run the right one. */
export const unsupportedNodeMessage = (version: string): string =>
  "finetune-finance needs Node \u2265 " + minimumNode.major + "." + minimumNode.minor + " (found " + version + "): " +
  "use npm start -- \u2026 or ./node_modules/.bin/node dist/Main.js \u2026 (the project's own Node, from npm install)"

/** True on a supported Node; otherwise prints the message on stderr, sets exit code 1 and returns false. */
export const checkNodeVersion = (): boolean => {
  const version = process.versions.node
  if (isSupportedNode(version)) return true
  process.stderr.write(unsupportedNodeMessage(version) + "\n")
  process.exitCode = 1
  return false
}
