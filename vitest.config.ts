import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    dir: 'test',
    // the agent as users run it, compiled once per run (test/support/build.ts)
    globalSetup: ['test/support/build.ts'],
    // memory tests measure what is kept after a full collection (globalThis.gc)
    execArgv: ['--expose-gc'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
