import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..');

describe('scripts/install', () => {
  it('installs the agent, its config and the unit under a root, and the result runs', () => {
    const root = mkdtempSync(join(tmpdir(), 'install-'));
    execFileSync(join(ROOT, 'scripts/install'), ['--root', root], { stdio: 'pipe' });
    expect(existsSync(join(root, 'opt/edge-agent/dist/cli.js'))).toBe(true);
    expect(readFileSync(join(root, 'etc/edge-agent/agent.yaml'), 'utf8')).toBe(readFileSync(join(ROOT, 'config/agent.yaml'), 'utf8'));
    const unit = readFileSync(join(root, 'etc/systemd/system/edge-agent.service'), 'utf8');
    expect(unit).toMatch(/^Type=notify$/m);
    expect(unit).toMatch(/^WatchdogSec=/m);
    expect(unit).toMatch(/^StateDirectory=edge-agent$/m);

    // An edited config is kept by a second install.
    writeFileSync(join(root, 'etc/edge-agent/agent.yaml'), readFileSync(join(root, 'etc/edge-agent/agent.yaml'), 'utf8') + '\n# edited\n');
    execFileSync(join(ROOT, 'scripts/install'), ['--root', root], { stdio: 'pipe' });
    expect(readFileSync(join(root, 'etc/edge-agent/agent.yaml'), 'utf8')).toContain('# edited');

    const validate = spawnSync(join(root, 'opt/edge-agent/scripts/edge-agent'), ['validate', join(root, 'etc/edge-agent/agent.yaml')], { encoding: 'utf8' });
    expect(validate.status).toBe(0);

    // systemd's own checker, on the unit pointed at this root.
    if (existsSync('/usr/bin/systemd-analyze')) {
      const pointed = join(root, 'edge-agent.service');
      writeFileSync(pointed, unit.replaceAll('/opt/edge-agent', join(root, 'opt/edge-agent')));
      const verify = spawnSync('systemd-analyze', ['verify', pointed], { encoding: 'utf8' });
      expect(verify.stderr).toBe('');
      expect(verify.status).toBe(0);
    }
  });
});
