import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CLI } from './support/cli.js';
import { parseDocument, type Document, type YAMLMap, type YAMLSeq } from 'yaml';
import { ConfigError } from '../src/core/config-error.js';
import { loadConfigFile, parseConfig } from '../src/config/load.js';
import { parseDuration, parseSize } from '../src/core/units.js';
import { validateConfig } from '../src/streams/build.js';

const ROOT = resolve(import.meta.dirname, '..');
// A copy of the configuration contract: the keys users and acceptance tests rely on (extend, never rename).
const CONTRACT = resolve(ROOT, 'test/fixtures/config-contract.yaml');

/** Parts of the contract whose features have not landed yet: none now; a new part of the contract goes here until it is built. */
const NOT_YET_BUILT = {
  streams: [] as string[],
  upstreamKeys: [] as string[],
  upstreamTypes: [] as string[],
};

function streamIndex(doc: Document, name: string): number {
  const streams = (doc.toJS() as { streams: { name: string }[] }).streams;
  return streams.findIndex((s) => s.name === name);
}

/**
 * The contract's streams over time and devices name plant devices that its `devices:` does not
 * define (it shows keys, not a plant): they are added as simulators with the points used.
 */
const PLANT_DEVICES = [
  { id: 'pump-1', protocol: 'simulator', points: [{ name: 'running' }, { name: 'run_cmd', writable: true }] },
  { id: 'flow-1', protocol: 'simulator', points: [{ name: 'flow' }] },
  { id: 'boiler', protocol: 'simulator', points: [{ name: 'temp' }] },
  { id: 'breaker-1', protocol: 'simulator', points: [{ name: 'tripped' }] },
  { id: 'motor-1', protocol: 'simulator', points: [{ name: 'running' }, { name: 'power_kw' }, { name: 'vib' }, { name: 'current_a' }] },
];

/** The contract without the parts listed in NOT_YET_BUILT, with the plant devices its streams name. */
function withoutPending(doc: Document): Document {
  const copy = doc.clone();
  for (const device of PLANT_DEVICES) (copy.get('devices') as YAMLSeq).add(copy.createNode(device));
  const streams = copy.get('streams') as YAMLSeq<YAMLMap>;
  streams.items = streams.items.filter((s) => !NOT_YET_BUILT.streams.includes(String(s.get('name'))));
  const upstreams = copy.get('upstream') as YAMLSeq<YAMLMap>;
  upstreams.items = upstreams.items.filter((u) => !NOT_YET_BUILT.upstreamTypes.includes(String(u.get('type'))));
  for (const upstream of upstreams.items) for (const key of NOT_YET_BUILT.upstreamKeys) upstream.delete(key);
  return copy;
}

/** The issues that `text` raises, as `line:col path: message` strings. */
function issuesOf(text: string, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    const loaded = parseConfig(text, 'test.yaml', env);
    validateConfig(loaded);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return err.issues.map((i) => `${i.line}:${i.col} ${i.path}: ${i.message}`);
  }
  return [];
}

const BASE = `agent:
  id: gw-1
devices:
  - id: sim
    protocol: simulator
    points:
      - { name: p, signal: sine }
      - { name: b, writable: true }
      - { name: c }
streams:
  - name: s
    from: { device: sim }
    to: [out]
upstream:
  - name: out
    type: file
    path: out.jsonl
`;

describe('units', () => {
  it('parses durations to ms', () => {
    expect([parseDuration('250ms'), parseDuration('1s'), parseDuration('15m'), parseDuration('1h'), parseDuration('7d')]).toEqual([
      250, 1000, 900_000, 3_600_000, 604_800_000,
    ]);
    expect(parseDuration('1.5s')).toBe(1500);
    expect(parseDuration('10')).toBeUndefined();
    expect(parseDuration('1w')).toBeUndefined();
  });
  it('parses sizes to bytes', () => {
    expect([parseSize('512KB'), parseSize('64MB'), parseSize('1GB')]).toEqual([524_288, 67_108_864, 1_073_741_824]);
    expect(parseSize('12')).toBeUndefined();
  });
});

describe('config loading', () => {
  it('accepts a good file and fills defaults, with durations and sizes as numbers', () => {
    const { config } = parseConfig(BASE + 'outbox: { max_size: 64MB, max_age: 1d }\n', '/etc/edge-agent/agent.yaml', {});
    expect(config.outbox).toMatchObject({ max_size: 64 * 1024 ** 2, max_age: 86_400_000, when_full: 'drop-oldest', durability: 'normal' });
    expect(config.agent).toMatchObject({ id: 'gw-1', data_dir: '/var/lib/edge-agent', http: '127.0.0.1:8080' });
    expect(config.upstream[0]).toMatchObject({ type: 'file', path: '/etc/edge-agent/out.jsonl' });
    expect(issuesOf(BASE)).toEqual([]);
  });

  it('accepts every part of the contract this build runs, and still refuses each part not built yet', () => {
    const contract = parseDocument(readFileSync(CONTRACT, 'utf8'));
    const loaded = parseConfig(withoutPending(contract).toString(), CONTRACT, { OPCUA_PASSWORD: 'secret' });
    expect(loaded.config.devices.map((d) => d.protocol).slice(0, 5)).toEqual(['modbus-tcp', 'modbus-rtu', 'opcua', 'mqtt', 'simulator']);
    expect(loaded.config.devices[0].poll).toBe(1000);
    expect(loaded.config.devices[2].password).toBe('secret');
    expect(() => validateConfig(loaded)).not.toThrow();
    // When a feature lands, its part of the contract validates and must leave NOT_YET_BUILT.
    let message = '';
    try {
      loadConfigFile(CONTRACT, { OPCUA_PASSWORD: 'secret' });
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      message = (err as Error).message;
    }
    for (const stream of NOT_YET_BUILT.streams) expect(message).toContain(`streams[${streamIndex(contract, stream)}]`);
    for (const type of NOT_YET_BUILT.upstreamTypes) expect(message).toContain(`"${type}"`);
    for (const key of NOT_YET_BUILT.upstreamKeys) expect(message).toContain(`unknown key "${key}"`);
  });

  it('fills the Kafka defaults and refuses an idempotent producer without acks: all', () => {
    const kafka = (extra: string) => BASE.replace('    type: file\n    path: out.jsonl', `    type: kafka\n    brokers: [k:9092]\n    topic: t\n${extra}`);
    const { config } = parseConfig(kafka(''), 'test.yaml', {});
    expect(config.upstream[0]).toEqual({
      name: 'out', type: 'kafka', brokers: ['k:9092'], topic: 't', key: '{device}', acks: 'all', idempotent: true, compression: 'none', timeout: 10_000,
      batch: { max_records: 1000, max_wait: 10 },
    });
    // acks 1 alone turns idempotence off, as the Java client does; asking for both is an error
    expect(parseConfig(kafka('    acks: 1\n'), 'test.yaml', {}).config.upstream[0]).toMatchObject({ acks: 1, idempotent: false });
    expect(issuesOf(kafka('    acks: 1\n    idempotent: true\n'))).toEqual([
      '20:17 upstream[0].idempotent: upstream out: an idempotent producer needs acks: all (set idempotent: false to use acks: 1)',
    ]);
    expect(issuesOf(kafka('    compression: brotli\n'))[0]).toMatch(/upstream\[0\]\.compression: must be one of: none, gzip, snappy, lz4, zstd/);
  });

  it('reports invalid YAML with its line and column', () => {
    expect(issuesOf('agent:\n  id: gw-1\n  log_level: [info\n')).toEqual([expect.stringMatching(/^\d+:\d+ : invalid YAML: /)]);
    expect(issuesOf('agent:\n  id: a\n  id: b\n')[0]).toMatch(/^3:3 : invalid YAML: .*unique/i);
  });

  it('reports an unknown key at the key, with the keys expected there', () => {
    const text = BASE.replace('    points:\n', '    pol: 1s\n    points:\n');
    expect(issuesOf(text)).toEqual(['6:5 devices[0].pol: unknown key "pol" (expected one of: id, protocol, poll, points)']);
  });

  it('reports an unknown protocol and lists the known ones', () => {
    expect(issuesOf(BASE.replace('protocol: simulator', 'protocol: bacnet'))).toEqual([
      '5:15 devices[0].protocol: must be one of: modbus-tcp, modbus-rtu, opcua, mqtt, simulator (got "bacnet")',
    ]);
  });

  it('reports wrong types, bad enums, bad durations and missing keys', () => {
    const text = `agent: { id: gw-1, log_level: loud }
devices:
  - id: m
    protocol: modbus-tcp
    host: 10.0.0.1
    port: "five"
    poll: 5 seconds
    points:
      - { name: v, area: holding, address: 0, type: float128 }
      - { name: w, address: 1 }
`;
    expect(issuesOf(text)).toEqual([
      '1:31 agent.log_level: must be one of: trace, debug, info, warn, error, fatal, silent (got "loud")',
      '6:11 devices[0].port: must be integer (got "five")',
      '7:11 devices[0].poll: must be a duration such as 250ms, 1s, 15m, 1h or 7d',
      '9:53 devices[0].points[0].type: must be one of: int16, uint16, int32, uint32, int64, uint64, float32, float64, bool, string (got "float128")',
      '10:9 devices[0].points[1]: missing required key "area"',
    ]);
  });

  it('requires a step to hold exactly one operator', () => {
    const text = BASE.replace('    to: [out]', '    steps:\n      - { pass: {}, filter: "p > 1" }\n    to: [out]');
    expect(issuesOf(text)).toEqual(['14:9 streams[0].steps[0]: a step must have exactly one operator key']);
  });

  it('substitutes ${NAME}, ${NAME:-default} and ${file:/path}, keeping numbers numbers', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    writeFileSync(join(dir, 'secret'), '  s3cret\n');
    const text = `agent: { id: "\${GW}", data_dir: "\${DATA:-/tmp/x}" }
devices:
  - id: m
    protocol: modbus-tcp
    host: \${HOST}
    port: \${PORT}
    points: [{ name: v, area: holding, address: 0 }]
remote_config: { broker: "mqtt://h", topic: t, public_key: k, password: "\${file:${dir}/secret}" }
`;
    const { config } = parseConfig(text, 'x.yaml', { GW: 'gw-9', HOST: '10.1.1.1', PORT: '1502' });
    expect(config.agent.id).toBe('gw-9');
    expect(config.agent.data_dir).toBe('/tmp/x');
    expect(config.devices[0]).toMatchObject({ host: '10.1.1.1', port: 1502 });
    expect(config.remote_config?.password).toBe('s3cret');
  });

  it('names an unset environment variable and an unreadable file with their place', () => {
    const text = 'agent:\n  id: ${GATEWAY_ID}\n  data_dir: ${file:/nonexistent/x}\n';
    expect(issuesOf(text)).toEqual([
      '2:7 agent.id: environment variable GATEWAY_ID is not set',
      expect.stringMatching(/^3:13 agent.data_dir: \$\{file:\/nonexistent\/x\}: cannot read \/nonexistent\/x: ENOENT/),
    ]);
  });

  it('checks references: devices, points, upstreams, writable action targets, duplicates', () => {
    const text = BASE.replace('    from: { device: sim }\n    to: [out]', `    from: { device: sim, points: [p, q] }
    to:
      - out
      - lake
      - action: { device: sim, point: c, value: 1 }
      - action: { device: sim, point: b, value: 1 }
  - name: s
    from: { device: nope }
    to: [out]`);
    expect(issuesOf(text)).toEqual([
      '12:38 streams[0].from.points[1]: stream s: device sim has no point "q"',
      '15:9 streams[0].to[1]: stream s: no upstream "lake" (upstreams: out)',
      '16:39 streams[0].to[2].action.point: stream s: point sim.c is not writable (set writable: true on the point)',
      '18:11 streams[1].name: name "s" is used twice in streams',
      '19:21 streams[1].from.device: stream s: no device "nope" (devices: sim)',
    ]);
  });

  it('checks a stream over several devices: each listed device exists, a glob matches one, device and devices not both', () => {
    const stream = (from: string) => BASE.replace('    from: { device: sim }', `    from: ${from}`);
    expect(issuesOf(stream('{ devices: [sim, gone] }'))).toEqual(['12:28 streams[0].from.devices[1]: stream s: no device "gone" (devices: sim)']);
    expect(issuesOf(stream('{ device: "pump-*" }'))).toEqual(['12:21 streams[0].from.device: stream s: "pump-*" matches no device (devices: sim)']);
    expect(issuesOf(stream('{ device: sim, devices: [sim] }'))).toEqual(['12:11 streams[0].from: stream s: "from" takes "device" (an id or a glob) or "devices" (a list), not both']);
    expect(issuesOf(stream('{ devices: [sim], timer: { every: 1m } }'))).toEqual(['12:11 streams[0].from: stream s: "from" takes devices or a timer, not both']);
    expect(issuesOf(stream('{ device: "s*", points: [p, zz], max_age: 10s }'))).toEqual(['12:39 streams[0].from.points[1]: stream s: device sim has no point "zz"']);
    expect(issuesOf(stream('{ devices: [sim], max_age: soon }'))[0]).toMatch(/streams\[0\]\.from\.max_age/);
  });

  it('refuses an event field that takes one of the event\'s own names, and a severity that is neither a level nor an expression', () => {
    const stream = (event: string) => BASE.replace('    from: { device: sim }\n    to: [out]', `    from: { device: sim }\n    steps: [{ event: ${event} }]\n    to: [out]`);
    expect(issuesOf(stream('{ code: X, fields: { severity: "p > 1" } }'))[0]).toMatch(/stream s, step 1 \(event\): fields: "severity" is the event's own severity/);
    expect(issuesOf(stream('{ code: X, severity: urgent }'))[0]).toMatch(/streams\[0\]\.steps\[0\]\.event\.severity/);
    expect(issuesOf(stream('{ code: X, severity: "=p > 1 ? \'major\'" }'))[0]).toMatch(/severity.*expected ":"/);
  });

  it('validates every example in config/examples', () => {
    const dir = join(ROOT, 'config/examples');
    const secret = join(mkdtempSync(join(tmpdir(), 'cfg-')), 'password');
    writeFileSync(secret, 'x');
    for (const name of readdirSync(dir).filter((f) => f.endsWith('.yaml'))) {
      const text = readFileSync(join(dir, name), 'utf8').replaceAll('${file:secrets/broker-password}', `\${file:${secret}}`).replaceAll('${file:secrets/kafka.password}', `\${file:${secret}}`);
      expect(issuesOf(text, { GATEWAY_ID: 'gw-7' }), name).toEqual([]);
    }
  });

  it('reports a size without a unit', () => {
    expect(issuesOf(BASE + 'outbox: { max_size: "12" }\n')).toEqual(['18:21 outbox.max_size: must be a size such as 512KB, 64MB or 1GB']);
  });

  it('reports a bad expression or bad operator parameters with the stream, the step and the column', () => {
    const text = BASE.replace('    to: [out]', '    steps:\n      - filter: "p > > 1"\n      - threshold: { point: p, min: 5, max: 1 }\n    to: [out]');
    expect(issuesOf(text)).toEqual([
      '14:17 streams[0].steps[0].filter: stream s, step 1 (filter): expression "p > > 1": column 5: expected a value but found ">"',
      '15:37 streams[0].steps[1].threshold.min: stream s, step 2 (threshold): min (5) is greater than max (1)',
    ]);
  });

  it('names the file when it cannot be read', () => {
    expect(() => loadConfigFile('/nonexistent/agent.yaml')).toThrow(/\/nonexistent\/agent.yaml: cannot read the config file/);
  });
});

describe('edge-agent validate', () => {

  it('exits 0 on the default config', () => {
    const out = execFileSync(process.execPath, [...CLI, 'validate', join(ROOT, 'config/agent.yaml')], { encoding: 'utf8' });
    expect(out).toMatch(/agent.yaml: ok \(1 devices, 3 streams, 2 upstreams\)/);
  });

  it('exits 1 and prints file, line, column, path and what was expected', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, BASE.replace('type: file', 'type: ftp'));
    const result = spawnSync(process.execPath, [...CLI, 'validate', '--config', file], { encoding: 'utf8' });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`${file}:16:11: upstream[0].type: must be one of: mqtt, sparkplug, kafka, file (got "ftp")`);
    expect(result.stderr).toContain(`${file}: 1 error`);
  });
});

describe('texts that would exhaust the heap while parsed', () => {
  const issuesOf = (text: string) => {
    try {
      parseConfig(text, 'big.yaml', {});
    } catch (err) {
      if (err instanceof ConfigError) return err.issues;
      throw err;
    }
    throw new Error('accepted');
  };

  it('flow collections nested too deep: refused where the 65th opens, before yaml parses', () => {
    const issues = issuesOf(`${BASE}x: ${'[a, '.repeat(10_000)}\n`);
    const line = BASE.split('\n').length;
    expect(issues).toEqual([{ file: 'big.yaml', line, col: 4 + 4 * 64, path: '', message: 'invalid YAML: [ and { nested more than 64 deep' }]);
  });

  it('a closing bracket that closes nothing: refused at its place', () => {
    const issues = issuesOf(`${BASE}x: [1, 2]\ny: {a: 1}}${'}'.repeat(20_000)}\n`);
    const line = BASE.split('\n').length + 1;
    expect(issues).toEqual([{ file: 'big.yaml', line, col: 10, path: '', message: 'invalid YAML: this } closes no [ or {' }]);
  });

  it('brackets inside quotes, comments and block scalars are text', () => {
    const text = `${BASE}x-text: "${']'.repeat(10_000)}"\n# ${'['.repeat(10_000)}\nx-block: |\n  ${'{'.repeat(10_000)}\n`;
    expect(parseConfig(text, 'big.yaml', {}).config.agent.id).toBe('gw-1');
  });

  it('parsing stops at 100 YAML errors, the first 100 listed in file order', () => {
    const issues = issuesOf(`${BASE}${Array.from({ length: 5_000 }, (_, i) => `x${i}: "never closed`).join('\n')}\n`);
    expect(issues).toHaveLength(101);
    expect(issues.at(-1)!.message).toBe('invalid YAML: stopped after 100 errors');
    expect(issues.filter((i) => i.message === 'invalid YAML: Missing closing "quote')).not.toHaveLength(0);
    expect(issues.every((i) => i.line !== undefined)).toBe(true);
  });
});

describe('YAML anchors, aliases and merge keys', () => {
  /** 150 devices sharing one points list (whose durations are aliases too), and devices merged from a template. */
  function anchored(devices: number): string {
    const more = Array.from({ length: devices - 1 }, (_, i) => `  - { id: sim${i + 1}, protocol: simulator, poll: *poll, points: *pts }`).join('\n');
    return `x-defaults: &defaults
  protocol: simulator
  poll: &poll 1s
agent: { id: gw-1 }
devices:
  - id: sim0
    <<: *defaults
    points: &pts
      - { name: p, signal: sine, period: &period 10m }
      - { name: q, signal: sine, period: *period }
${more}
  - &whole { id: merged, <<: *defaults, points: [{ name: r, signal: random }] }
streams:
  - name: s
    from: { device: sim0 }
    to: [out]
upstream:
  - { name: out, type: file, path: out.jsonl }
`;
  }

  it('resolves aliases everywhere: points lists, durations, merged device templates (150 devices)', () => {
    const { config } = parseConfig(anchored(150), 'test.yaml', {});
    expect(config.devices).toHaveLength(151);
    for (const device of config.devices.slice(0, 150)) {
      expect(device).toMatchObject({ protocol: 'simulator', poll: 1000, points: [{ name: 'p', period: 600_000 }, { name: 'q', period: 600_000 }] });
    }
    expect(config.devices[150]).toMatchObject({ id: 'merged', protocol: 'simulator', poll: 1000 });
    // the x- key only held the anchor
    expect(Object.keys(config)).not.toContain('x-defaults');
    expect(issuesOf(anchored(150))).toEqual([]);
  });

  it('locates an error inside an anchor at the anchor, and names the alias that reached it', () => {
    const issues = issuesOf(anchored(3).replace('period: &period 10m', 'period: &period 10 minutes'));
    expect(issues).toContain('9:50 devices[0].points[0].period: must be a duration such as 250ms, 1s, 15m, 1h or 7d');
    expect(issues).toContain('9:50 devices[1].points[0].period: must be a duration such as 250ms, 1s, 15m, 1h or 7d (reached through the alias *pts at line 11)');
    // a bad key merged in from the template is found in the template
    const merged = issuesOf(anchored(2).replace('protocol: simulator\n  poll', 'protocol: simulator\n  colour: red\n  poll'));
    expect(merged.some((i) => /^3:3 devices\[0\]\.colour: unknown key "colour".*reached through the alias \*defaults at line 8/.test(i))).toBe(true);
  });

  it('refuses a billion laughs quickly, as a config error', () => {
    const levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (let i = 1; i < 10; i++) levels.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(10).fill(`*${String.fromCharCode(96 + i)}`).join(',')}]`);
    const text = `x-laughs:\n${levels.map((l) => `  ${l}`).join('\n')}\nagent: { id: gw-1, data_dir: *j }\n`;
    expect(issuesOf(text)).toEqual([expect.stringMatching(/^undefined:undefined : cannot resolve the YAML aliases: Excessive alias count/)]);
    // under yaml's alias count but over the expanded size: a big anchor used many times
    const big = `x-big: &big [${Array(1000).fill('1').join(',')}]\nx-uses: [${Array(600).fill('*big').join(',')}]\nagent: { id: gw-1 }\n`;
    expect(issuesOf(big)).toEqual([expect.stringMatching(/the config expands to more than 500000 values/)]);
  });

  it('answers random anchors, aliases and merge keys spliced into a config with a config or a ConfigError, never another error', () => {
    const base = anchored(4).split('\n');
    const snippet = fc.constantFrom('&a ', '*a', '<<: *a', '<<: [*a, *sim]', '*pts', '&pts ', '*period', '*poll', '&poll ', '*defaults', '<<: *defaults', '[', '{', ': ', '- ', '__proto__: 1', 'constructor: *pts');
    const edit = fc.tuple(fc.nat(base.length - 1), fc.nat(60), snippet);
    fc.assert(
      fc.property(fc.array(edit, { minLength: 1, maxLength: 4 }), (edits) => {
        const lines = [...base];
        for (const [line, col, text] of edits) lines[line] = lines[line].slice(0, col) + text + lines[line].slice(col);
        // issuesOf rethrows anything that is not a ConfigError
        issuesOf(lines.join('\n'));
      }),
      { numRuns: 2_000 },
    );
  });

  it('rejects an unknown alias, a scalar merged as a map and __proto__ keys as config errors, never other exceptions', () => {
    expect(issuesOf(`agent: { id: gw-1 }\ndevices: *nope\n`)[0]).toMatch(/nope/);
    expect(issuesOf(`x: &s 5\nagent: { id: gw-1, <<: *s }\n`)[0]).toMatch(/Merge sources must be maps/);
    expect(issuesOf(`agent: { id: gw-1, __proto__: { id: x } }\n`)).toEqual(['1:20 agent.__proto__: unknown key "__proto__" (expected one of: id, data_dir, log_level, log_format, log_summary, http, http_token, timezone, max_future, min_time, clock_sync, state_ttl, state_cache, max_latest_devices)']);
  });
});
