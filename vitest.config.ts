import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    dir: 'test',
    // the agent as users run it, compiled once per run (test/support/build.ts)
    globalSetup: ['test/support/build.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
