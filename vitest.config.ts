import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // tfjs and llama.cpp hold process-wide state; forks keep test files isolated from each other
    pool: "forks"
  }
})
