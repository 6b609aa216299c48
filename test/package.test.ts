import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from './support/ports.js';

// scripts/package built once for both architectures (gzip -1: the contents are what is tested,
// xz would take 3 minutes a package here), then inspected, run under qemu and installed with dpkg.
const ROOT = resolve(import.meta.dirname, '..');
const VERSION = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version as string;
const OUT = mkdtempSync(join(tmpdir(), 'package-'));
const deb = (arch: string) => join(OUT, `edge-agent_${VERSION}_${arch}.deb`);
const tarball = (arch: string) => join(OUT, `edge-agent_${VERSION}_${arch}.tar.gz`);
/** Today's figure for `scripts/install --root` before the release existed (issue 15). */
const BEFORE_KB = 411 * 1000;

const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** The deb's tree, unpacked (no maintainer scripts run). */
function extract(arch: string): string {
  const dir = join(OUT, `tree-${arch}`);
  if (!existsSync(dir)) run('dpkg-deb', ['-x', deb(arch), dir]);
  return dir;
}

const ELF_MACHINE: Record<number, string> = { 0x3e: 'amd64', 0xb7: 'arm64' };
const elfArch = (file: string) => ELF_MACHINE[readFileSync(file).readUInt16LE(18)] ?? 'other';

beforeAll(() => {
  run(join(ROOT, 'scripts/package'), ['--fast', '--out', OUT]);
}, 300_000);
afterAll(() => rmSync(OUT, { recursive: true, force: true }));

describe('scripts/package', () => {
  it.each(['amd64', 'arm64'])('%s: the agent, production modules and Node for the architecture only, the unit, the conffile, a command on PATH', (arch) => {
    const fields = Object.fromEntries(
      run('dpkg-deb', ['-f', deb(arch)])
        .trim()
        .split('\n')
        .filter((l) => /^\S+: /.test(l))
        .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 2)]),
    );
    expect(fields.Package).toBe('edge-agent');
    expect(fields.Version).toBe(VERSION);
    expect(fields.Architecture).toBe(arch);
    const installedKb = Number(fields['Installed-Size']);
    console.log(`${arch}: installed ${(installedKb / 1024).toFixed(0)} MiB (${installedKb} KiB, against ${BEFORE_KB} KB before), .deb ${(statSync(deb(arch)).size / 1e6).toFixed(1)} MB`);
    expect(installedKb * 1024).toBeLessThanOrEqual((BEFORE_KB * 1000) / 2);
    expect(execFileSync('sh', ['-c', `dpkg-deb --info ${deb(arch)} conffiles`], { encoding: 'utf8' }).trim()).toBe('/etc/edge-agent/agent.yaml');

    const tree = extract(arch);
    const opt = join(tree, 'opt/edge-agent');
    expect(existsSync(join(opt, 'dist/cli.js'))).toBe(true);
    expect(existsSync(join(opt, 'static/status.html'))).toBe(true);
    expect(JSON.parse(readFileSync(join(opt, 'package.json'), 'utf8'))).toMatchObject({ type: 'module', version: VERSION });
    expect(readFileSync(join(tree, 'etc/edge-agent/agent.yaml'), 'utf8')).toBe(readFileSync(join(ROOT, 'config/agent.yaml'), 'utf8'));
    expect(readFileSync(join(tree, 'usr/lib/systemd/system/edge-agent.service'), 'utf8')).toBe(readFileSync(join(ROOT, 'systemd/edge-agent.service'), 'utf8'));
    expect(readlinkSync(join(tree, 'usr/bin/edge-agent'))).toBe('../../opt/edge-agent/scripts/edge-agent');
    // what running does not need is not there: sources, tests, dev tools, Node's headers and npm
    for (const absent of ['src', 'test', 'scripts/setup', 'node_modules/typescript', 'node_modules/vitest', 'node_modules/playwright-core', 'node_modules/tsx', 'node/include', 'node/lib', 'node_modules/better-sqlite3/deps']) {
      expect(existsSync(join(opt, absent)), absent).toBe(false);
    }
    // every native binary is the target's
    const natives = run('find', [opt, '-type', 'f', '(', '-name', '*.node', '-o', '-path', '*/node/bin/node', ')']).trim().split('\n');
    expect(natives.length).toBeGreaterThanOrEqual(4); // node, better-sqlite3, serialport (glibc and musl), crc32
    for (const file of natives) expect(`${file.slice(opt.length)}: ${elfArch(file)}`).toBe(`${file.slice(opt.length)}: ${arch}`);

    // the .tar.gz is the same tree
    const inTar = run('tar', ['-tzf', tarball(arch)]).trim().split('\n').map((p) => p.replace(/\/$/, '')).sort();
    const inDeb = run('sh', ['-c', `dpkg-deb --fsys-tarfile ${deb(arch)} | tar -t`]).trim().split('\n').map((p) => p.replace(/^\.\//, '').replace(/\/$/, '')).filter((p) => p !== '.' && p !== '').sort();
    expect(inTar).toEqual(inDeb);
  });

  it('the arm64 package runs under qemu-user: Node starts, loads its native modules, and validate passes on the default config', () => {
    const tree = extract('arm64');
    const opt = join(tree, 'opt/edge-agent');
    // arm64's glibc from Debian's cross packages; no binfmt registration needed
    const qemu = (args: string[]) =>
      spawnSync('qemu-aarch64-static', [join(opt, 'node/bin/node'), ...args], { encoding: 'utf8', env: { ...process.env, QEMU_LD_PREFIX: '/usr/aarch64-linux-gnu' }, timeout: 120_000 });
    const probe = qemu([
      '-e',
      `const { createRequire } = require('node:module');
       const r = createRequire(${JSON.stringify(opt + '/')});
       const Database = r('better-sqlite3');
       const db = new Database(':memory:');
       const serial = r('node-gyp-build')(${JSON.stringify(join(opt, 'node_modules/@serialport/bindings-cpp'))});
       console.log(JSON.stringify({ arch: process.arch, sqlite: db.prepare('select sqlite_version() v').get().v,
         serial: typeof serial.open, crc32c: r('@node-rs/crc32').crc32c('edge') }));`,
    ]);
    expect(probe.stderr).toBe('');
    expect(JSON.parse(probe.stdout)).toMatchObject({ arch: 'arm64', sqlite: expect.stringMatching(/^3\./), serial: 'function', crc32c: expect.any(Number) });
    const validate = qemu([join(opt, 'dist/cli.js'), 'validate', join(tree, 'etc/edge-agent/agent.yaml')]);
    expect(validate.stdout + validate.stderr).toMatch(/agent\.yaml: ok/);
    expect(validate.status).toBe(0);
  });
});

const root = process.getuid?.() === 0;
const installed = () => spawnSync('dpkg-query', ['-W', '-f=${Status}', 'edge-agent'], { encoding: 'utf8' }).stdout;

describe.skipIf(!root)('the amd64 package installed with dpkg', () => {
  /** The unit's ExecStart, as the service user with nothing but the launcher's needs on PATH and no network. */
  async function runAsService(seconds: number): Promise<{ code: number | null; output: string }> {
    const bin = mkdtempSync(join(tmpdir(), 'service-path-'));
    chmodSync(bin, 0o755);
    for (const tool of ['bash', 'readlink', 'dirname', 'systemd-notify', 'timedatectl']) symlinkSync(`/usr/bin/${tool}`, join(bin, tool));
    const unit = readFileSync('/usr/lib/systemd/system/edge-agent.service', 'utf8');
    const execStart = unit.match(/^ExecStart=(.*)$/m)![1].split(' ');
    const child = spawn('unshare', ['-n', 'setpriv', '--reuid=edge-agent', '--regid=edge-agent', '--init-groups', 'env', '-i', `PATH=${bin}`, 'HOME=/nonexistent', 'STATE_DIRECTORY=/var/lib/edge-agent', ...execStart], {
      cwd: '/var/lib/edge-agent',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d));
    child.stderr.on('data', (d: Buffer) => (output += d));
    const exited = new Promise<number | null>((done) => child.once('exit', done));
    await until(() => /agent gw-demo running/.test(output), 30_000, `the agent running, so far: ${output}`);
    await new Promise((r) => setTimeout(r, seconds * 1000));
    child.kill('SIGTERM');
    return { code: await exited, output };
  }
  const outboxSeq = () => {
    const db = new Database('/var/lib/edge-agent/edge-agent.db', { readonly: true });
    try {
      return db.prepare("SELECT value FROM meta WHERE key = 'seq'").pluck().get() as number;
    } finally {
      db.close();
    }
  };

  it('installs as a service with its user, upgrades keeping the edited config and the outbox, removes keeping state, purges it', { timeout: 180_000 }, async () => {
    expect(installed(), 'edge-agent is already installed on this machine: the test would replace it').not.toMatch(/ok installed|config-files/);
    try {
      run('dpkg', ['-i', deb('amd64')]);
      expect(installed()).toBe('install ok installed');
      // a system user, in dialout for serial ports
      const passwd = run('getent', ['passwd', 'edge-agent']).split(':');
      expect(Number(passwd[2])).toBeLessThan(1000);
      expect(run('id', ['-nG', 'edge-agent'])).toMatch(/\bdialout\b/);
      const state = statSync('/var/lib/edge-agent');
      expect(state.uid).toBe(Number(passwd[2]));
      expect(state.mode & 0o777).toBe(0o750);
      const etc = statSync('/etc/edge-agent');
      expect(etc.gid).toBe(Number(passwd[3]));
      expect(etc.mode & 0o777).toBe(0o770);
      // enabled (systemd is not PID 1 here, so it is not started)
      expect(lstatSync('/etc/systemd/system/multi-user.target.wants/edge-agent.service').isSymbolicLink()).toBe(true);
      expect(readFileSync('/usr/lib/systemd/system/edge-agent.service', 'utf8')).toMatch(/^ExecStart=\/opt\/edge-agent\/scripts\/edge-agent run --config \/etc\/edge-agent\/agent\.yaml$/m);
      expect(run('edge-agent', ['validate'])).toMatch(/^\/etc\/edge-agent\/agent\.yaml: ok/);

      // hardening, scored by systemd on the installed unit
      const security = spawnSync('systemd-analyze', ['security', '--offline=yes', '/usr/lib/systemd/system/edge-agent.service'], { encoding: 'utf8' });
      const score = Number((security.stdout + security.stderr).match(/Overall exposure level for edge-agent\.service: ([\d.]+)/)![1]);
      console.log(`systemd-analyze security --offline=yes: ${score}`);
      expect(score).toBeLessThanOrEqual(2.5);
      const verify = spawnSync('systemd-analyze', ['verify', '/usr/lib/systemd/system/edge-agent.service'], { encoding: 'utf8' });
      expect(verify.stderr.split('\n').filter((l) => l.includes('edge-agent'))).toEqual([]);

      // the config edited by its owner; the agent run as the unit runs it: the service user, no
      // network, nothing on PATH but what the launcher uses (no npm, no compiler)
      const edited = readFileSync('/etc/edge-agent/agent.yaml', 'utf8').replace('http: 127.0.0.1:8080', 'http: off') + '\n# edited on the gateway\n';
      writeFileSync('/etc/edge-agent/agent.yaml', edited);
      const first = await runAsService(2);
      expect(first.output).not.toMatch(/npm|setup:/);
      expect(first.code).toBe(0);
      const seq = outboxSeq();
      expect(seq).toBeGreaterThan(0);

      // an upgrade: the same tree as the next version
      const next = join(OUT, 'next');
      run('dpkg-deb', ['-R', deb('amd64'), next]);
      const control = join(next, 'DEBIAN/control');
      writeFileSync(control, readFileSync(control, 'utf8').replace(/^Version: .*$/m, `Version: ${VERSION}+next`));
      run('dpkg-deb', ['--root-owner-group', '-Zgzip', '-z1', '-b', next, join(OUT, 'next.deb')]);
      run('dpkg', ['-i', join(OUT, 'next.deb')]);
      expect(run('dpkg-query', ['-W', '-f=${Version}', 'edge-agent'])).toBe(`${VERSION}+next`);
      expect(readFileSync('/etc/edge-agent/agent.yaml', 'utf8')).toBe(edited);
      expect(statSync('/etc/edge-agent').mode & 0o777).toBe(0o770);
      expect(outboxSeq()).toBe(seq);
      const second = await runAsService(1);
      expect(second.code).toBe(0);
      expect(outboxSeq()).toBeGreaterThan(seq);

      // remove: the agent goes, its config and state stay
      run('dpkg', ['-r', 'edge-agent']);
      expect(existsSync('/opt/edge-agent')).toBe(false);
      expect(existsSync('/usr/bin/edge-agent')).toBe(false);
      expect(readFileSync('/etc/edge-agent/agent.yaml', 'utf8')).toBe(edited);
      expect(existsSync('/var/lib/edge-agent/edge-agent.db')).toBe(true);

      // purge: config and state go
      run('dpkg', ['-P', 'edge-agent']);
      expect(existsSync('/etc/edge-agent')).toBe(false);
      expect(existsSync('/var/lib/edge-agent')).toBe(false);
      expect(existsSync('/etc/systemd/system/multi-user.target.wants/edge-agent.service')).toBe(false);
      expect(installed()).not.toMatch(/ok installed|config-files/);
    } finally {
      if (/ok installed|config-files|half/.test(installed())) spawnSync('dpkg', ['-P', 'edge-agent']);
    }
  });
});
