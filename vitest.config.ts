import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // tfjs and llama.cpp hold process-wide state; forks keep test files isolated from each other
    pool: "forks",
    // the Python environment (managed .venv or FINETUNE_PYTHON), made once per run; forks inherit FINETUNE_PYTHON
    // then the real model's cache, filled by the same fetch as `model fetch` (FINETUNE_SMOLLM2 for the forks)
    globalSetup: ["test/support/pythonSetup.ts", "test/support/modelSetup.ts"]
  }
})
