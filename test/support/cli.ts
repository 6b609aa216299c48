import { resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../..');

/** Node's arguments that load TypeScript sources directly (tsx), so no test needs a build. */
export const TS_NODE_ARGS = ['--import', import.meta.resolve('tsx')];

/** `node ...CLI command ...`: the agent's command line, run from its TypeScript sources. */
export const CLI = [...TS_NODE_ARGS, resolve(ROOT, 'src/cli.ts')];
