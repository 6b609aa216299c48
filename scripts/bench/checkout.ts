// Another commit of this repository for before/after benchmarks: extracted to a temporary
// folder, built there, sharing this checkout's node_modules.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '../..');

/** A checkout to run: its scripts/edge-agent starts its dist/cli.js. */
export interface Variant {
  label: string;
  dir: string;
  /** Extracted here: removed when done. */
  temporary?: boolean;
}

/** This checkout, labelled with its commit. */
export function thisCheckout(): Variant {
  return { label: `this checkout (${execFileSync('git', ['-C', root, 'describe', '--always', '--dirty'], { encoding: 'utf8' }).trim()})`, dir: root };
}

/** `commit` in a temporary folder, built; remove `dir` when done. */
export function checkout(commit: string, prefix: string): Variant {
  const sha = execFileSync('git', ['-C', root, 'rev-parse', '--short', commit], { encoding: 'utf8' }).trim();
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-${sha}-`));
  execFileSync('sh', ['-c', `git -C "${root}" archive ${sha} | tar -x -C "${dir}"`]);
  // scripts/setup would run `npm ci` into the shared node_modules if the lock file differed
  if (readFileSync(join(dir, 'package-lock.json'), 'utf8') !== readFileSync(join(root, 'package-lock.json'), 'utf8')) {
    throw new Error(`${sha} has other dependencies (package-lock.json): compare it from a checkout of its own`);
  }
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
  execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(dir, 'tsconfig.json')], { stdio: 'inherit' });
  writeFileSync(join(dir, 'dist/.build-stamp'), '');
  return { label: `before ${sha}`, dir, temporary: true };
}

/**
 * `before`: a commit of this repository (extracted and built by `checkout`), or the folder of a
 * checkout already built with dependencies of its own (a commit whose package-lock.json differs).
 */
export function variant(before: string, prefix: string): Variant {
  if (!existsSync(join(before, 'package.json'))) return checkout(before, prefix);
  let label = before;
  try {
    label = execFileSync('git', ['-C', before, 'describe', '--always', '--dirty'], { encoding: 'utf8' }).trim();
  } catch {
    // not a git checkout: its path names it
  }
  return { label: `before ${label}`, dir: before };
}
