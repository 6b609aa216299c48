import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../..');
/** Beside `static/`, as `dist/` is, so the status page is found the same way. */
export const TEST_BUILD = resolve(ROOT, '.test-dist');

/**
 * Vitest's global set-up: compiles src/ as the package ships it, into a directory of the tests'
 * own, so that agent processes run what users run (not a TypeScript loader, which would add its
 * own memory to every RSS the tests measure) and no test depends on a `dist/` built before.
 */
export default function setup(): void {
  execFileSync(process.execPath, [resolve(ROOT, 'node_modules/typescript/bin/tsc'), '-p', resolve(ROOT, 'tsconfig.json'), '--outDir', TEST_BUILD, '--incremental', '--tsBuildInfoFile', resolve(TEST_BUILD, '.tsbuildinfo')], {
    stdio: 'inherit',
  });
}
