import { resolve } from 'node:path';
import { TEST_BUILD } from './build.js';

/** Node's arguments that load TypeScript sources directly (tsx): for scripts that import src/. */
export const TS_NODE_ARGS = ['--import', import.meta.resolve('tsx')];

/** `node ...CLI command ...`: the agent's command line, as compiled for this test run (see build.ts). */
export const CLI = [resolve(TEST_BUILD, 'cli.js')];
