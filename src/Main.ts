#!/usr/bin/env node
/**
 * The CLI entry point (`finetune-finance`, `npm start`, `node dist/Main.js`). It checks the Node version before
 * anything else is parsed, so an older `node` on the PATH prints what to run instead of a SyntaxError, and then
 * loads the CLI (src/Cli.ts). This file and Shared/NodeVersion.ts use only syntax and APIs that old Node parses.
 */
import { checkNodeVersion } from "./Shared/NodeVersion.ts"

if (checkNodeVersion()) await import("./Cli.ts")
