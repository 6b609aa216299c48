import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI } from './support/cli.js';

const ROOT = resolve(import.meta.dirname, '..');
const COMMANDS = ['run', 'validate', 'test', 'replay', 'sign-config', 'keygen', 'schema', 'help'];

/** The CLI from a directory that is not the checkout, as a user on a gateway would call it. */
function cli(...args: string[]) {
  return spawnSync(process.execPath, [...CLI, ...args], { encoding: 'utf8', cwd: tmpdir() });
}

describe('the command line', () => {
  it('--version prints the package version', () => {
    const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version;
    for (const flag of ['--version', '-V']) {
      const out = cli(flag);
      expect(out.stdout).toBe(`edge-agent ${version}\n`);
      expect(out.status).toBe(0);
    }
  });

  it('--help and help list every command; help COMMAND and COMMAND --help show that command', () => {
    for (const args of [['--help'], ['-h'], ['help']]) {
      const out = cli(...args);
      expect(out.status).toBe(0);
      for (const command of COMMANDS) expect(out.stdout).toMatch(new RegExp(`^  ${command} `, 'm'));
    }
    for (const args of [['help', 'keygen'], ['keygen', '--help']]) {
      const out = cli(...args);
      expect(out.status).toBe(0);
      expect(out.stdout).toMatch(/^usage: edge-agent keygen DIR\n/);
      expect(out.stdout).not.toMatch(/^ {2}validate/m);
    }
  });

  it.each([
    [['--bogus'], 'edge-agent: unknown option "--bogus" (a command comes first)'],
    [['frobnicate'], 'edge-agent: unknown command "frobnicate"'],
    [['help', 'frobnicate'], 'edge-agent: help: unknown command "frobnicate"'],
    [['validate', '--nope'], "edge-agent: validate: Unknown option '--nope'"],
    [['run', '--config'], "edge-agent: run: Option '-c, --config <value>' argument missing"],
    [['keygen', '--input', 'x'], "edge-agent: keygen: Unknown option '--input'"],
    [[], 'edge-agent: no command given'],
  ])('%j: one line saying what is wrong, the usage, exit 2, no stack trace', (args, message) => {
    const out = cli(...args);
    expect(out.status).toBe(2);
    const lines = out.stderr.trimEnd().split('\n');
    expect(lines[0]).toBe(message);
    expect(lines[1]).toMatch(/^usage: edge-agent /);
    expect(lines).toHaveLength(2);
    expect(out.stdout).toBe('');
  });

  it("the default config is the checkout's config/agent.yaml whatever the working directory", () => {
    const out = cli('validate');
    expect(out.stdout).toBe(`${join(ROOT, 'config/agent.yaml')}: ok (1 devices, 3 streams, 2 upstreams)\n`);
    expect(out.status).toBe(0);
  });

  it('keygen DIR creates DIR, and refuses to overwrite a key in one line', () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'keygen-')), 'keys/fleet');
    expect(cli('keygen', dir).status).toBe(0);
    expect(statSync(join(dir, 'config-signing.key')).mode & 0o777).toBe(0o600);
    expect(existsSync(join(dir, 'config-signing.pub'))).toBe(true);
    const again = cli('keygen', dir);
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/^edge-agent: EEXIST: file already exists, open '.*config-signing\.key'\n$/);
  });
});
