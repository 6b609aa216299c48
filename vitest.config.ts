import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    dir: 'test',
    // the agent as users run it, compiled once per run (test/support/build.ts)
    globalSetup: ['test/support/build.ts'],
    // memory tests measure what is kept after a full collection (globalThis.gc)
    execArgv: ['--expose-gc'],
    // one file at a time, as on the 2-core machine the suite's bounds were measured on (vitest's
    // default there): the files start brokers, agents and Chromium, and measure memory and time
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
