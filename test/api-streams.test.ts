// Streams managed over the REST API, against a real agent over real HTTP: create, read, replace
// and delete go through the config file (comments kept, `.bak`), errors are located in the
// submitted text, a restart runs what the API left; the apps, the instances, the OpenAPI
// description checked against the routes; and the API safe by default (token for changes,
// Host and Origin checked).
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Agent } from '../src/agent/agent.js';
import { ROUTES } from '../src/manage/http.js';
import { startAgent as launchAgent } from '../src/start.js';
import { testLog } from './support/log.js';
import { freePort, until } from './support/ports.js';

const TOKEN = 'a-token-of-24-characters';
const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

function configText(dir: string, port: number, token: string | undefined, out = `${dir}/out.jsonl`): string {
  return `# the gateway of line 3
version: 1
agent: { id: gw-1, data_dir: ${dir}/data, log_level: error, http: "127.0.0.1:${port}"${token ? `, http_token: ${token}` : ''} }
devices:
  # a simulated meter
  - { id: sim, protocol: simulator, poll: 20ms, points: [{ name: p, signal: sine, min: 0, max: 100, period: 7s }] }
streams:
  # every reading, as it comes
  - { name: a, from: { device: sim }, to: [out] }
upstream:
  - { name: out, type: file, path: ${out} }   # the archive
`;
}

async function start(options: { token?: string | undefined; out?: (dir: string) => string } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'api-streams-'));
  const port = await freePort();
  const file = join(dir, 'agent.yaml');
  writeFileSync(file, configText(dir, port, 'token' in options ? options.token : TOKEN, options.out?.(dir)));
  let agent: Agent = await launchAgent(file, testLog);
  cleanup.push(() => agent.stop());
  const url = `http://127.0.0.1:${port}`;
  const headers = { authorization: `Bearer ${TOKEN}` };
  const call = async (method: string, path: string, body?: string, contentType = 'application/json') => {
    const res = await fetch(url + path, { method, headers: { ...headers, 'content-type': contentType }, body });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };
  const restart = async () => {
    await agent.stop();
    agent = await launchAgent(file, testLog);
    return agent;
  };
  return { agent, dir, file, port, url, headers, call, restart };
}

/** A request with the headers given as they are (fetch will not send another Host). */
function raw(port: number, method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('streams over the API', () => {
  it('creates, reads, replaces and deletes a stream; the config file follows, comments kept; a restart runs what the API left', async () => {
    const { agent, file, call, restart } = await start();
    const before = readFileSync(file, 'utf8');
    const high = { name: 'high', from: { device: 'sim' }, steps: [{ change: { point: 'p', deadband: 1 } }, { filter: 'p > 50' }], to: ['out'] };

    const created = await call('POST', '/api/streams', JSON.stringify(high));
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ name: 'high', deployed: true, definition: high });
    expect(agent.streamsByName.get('high')!.deployed).toBe(true);
    expect((await call('POST', '/api/streams', JSON.stringify(high))).status).toBe(409);

    const written = readFileSync(file, 'utf8');
    for (const comment of ['# the gateway of line 3', '# a simulated meter', '# every reading, as it comes', '# the archive']) expect(written).toContain(comment);
    expect(written).toMatch(/- name: high\n/);
    expect(readFileSync(`${file}.bak`, 'utf8')).toBe(before);
    expect(agent.text).toBe(written);

    // each step of the running stream: what it took, its counters and state keys, when it last worked
    await until(async () => (await call('GET', '/api/streams/high/instances')).body.steps[1].last_active !== null, 5000, 'the steps active');
    const instances = (await call('GET', '/api/streams/high/instances')).body;
    expect(instances).toMatchObject({ name: 'high', deployed: true, steps: [{ step: 1, operator: 'change', state_keys: 1 }, { step: 2, operator: 'filter', state_keys: 0 }] });
    expect(instances.steps[0].readings_in).toBeGreaterThan(0);
    expect(instances.steps[1].readings_in).toBeLessThanOrEqual(instances.steps[0].readings_in);
    expect(instances.steps[1].last_active).toBeGreaterThan(Date.now() - 10_000);
    await until(async () => (await call('GET', '/api/streams/high')).body.counters['2.filter.dropped'] > 0, 10_000, 'the filter dropping');
    expect((await call('GET', '/api/streams/nope/instances')).status).toBe(404);

    // replaced, as YAML
    const replaced = await call('PUT', '/api/streams/high', 'from: { device: sim }\nsteps: [{ filter: "p > 90" }]\nto: [out]\n', 'application/yaml');
    expect(replaced.status).toBe(200);
    expect(replaced.body.definition).toEqual({ from: { device: 'sim' }, steps: [{ filter: 'p > 90' }], to: ['out'], name: 'high' });
    expect(agent.streamsByName.get('high')!.config.steps).toEqual([{ filter: 'p > 90' }]);
    expect(readFileSync(file, 'utf8')).toContain('p > 90');
    expect((await call('PUT', '/api/streams/nope', JSON.stringify({ ...high, name: 'nope' }))).status).toBe(404);
    const renamed = await call('PUT', '/api/streams/high', JSON.stringify({ ...high, name: 'other' }));
    expect(renamed.status).toBe(400);
    expect(renamed.body.issues[0]).toMatchObject({ path: 'name', line: 1 });

    // a restart runs what the API left
    const kept = { name: 'kept', from: { device: 'sim' }, to: ['out'] };
    expect((await call('POST', '/api/streams', JSON.stringify(kept))).status).toBe(201);
    expect((await call('DELETE', '/api/streams/high')).status).toBe(204);
    expect((await call('GET', '/api/streams/high')).status).toBe(404);
    expect((await call('DELETE', '/api/streams/high')).status).toBe(404);
    expect(readFileSync(file, 'utf8')).not.toContain('high');
    // changes made at once are made one after the other: none is lost
    const many = ['one', 'two', 'three'].map((name) => call('POST', '/api/streams', JSON.stringify({ name, from: { device: 'sim' }, to: ['out'] })));
    expect((await Promise.all(many)).map((r) => r.status)).toEqual([201, 201, 201]);
    for (const name of ['one', 'two', 'three']) expect((await call('DELETE', `/api/streams/${name}`)).status).toBe(204);
    const again = await restart();
    expect([...again.streamsByName.keys()]).toEqual(['a', 'kept']);
    expect((await call('GET', '/api/streams/kept')).body).toMatchObject({ name: 'kept', definition: kept, deployed: true });
  });

  it('refuses an invalid stream with each error located in the submitted text, and leaves the file alone', async () => {
    const { agent, file, call } = await start();
    const before = readFileSync(file, 'utf8');
    const post = (text: string) => call('POST', '/api/streams', text, 'application/yaml');

    const badStep = await post('name: bad\nfrom: { device: sim }\nsteps:\n  - threshold: { point: p, min: 5, max: 1 }\nto: [out]\n');
    expect(badStep.status).toBe(400);
    expect(badStep.body.issues).toEqual([expect.objectContaining({ line: 4, path: 'steps[0].threshold.min', message: expect.stringMatching(/step 1 \(threshold\): min \(5\) is greater than max \(1\)/) })]);
    expect(badStep.body.error).toMatch(/^line 4, column 33: steps\[0\]\.threshold\.min: /);

    const unknownKey = await post('name: bad\nfrom: { device: sim }\nto: [out]\nwindow: 5m\n');
    expect(unknownKey.status).toBe(400);
    expect(unknownKey.body.issues[0]).toMatchObject({ line: 4, col: 1, message: expect.stringMatching(/unknown key "window"/) });

    const unknownSink = await post(JSON.stringify({ name: 'bad', from: { device: 'sim' }, to: ['nowhere'] }, null, 2));
    expect(unknownSink.status).toBe(400);
    expect(unknownSink.body.issues[0]).toMatchObject({ line: 7, path: 'to[0]', message: expect.stringMatching(/nowhere/) });

    const syntax = await post('name: bad\nfrom: { device: sim\n');
    expect(syntax.status).toBe(400);
    expect(syntax.body.issues[0].line).toBeGreaterThanOrEqual(2);
    expect(syntax.body.error).toMatch(/invalid JSON or YAML/);

    expect((await post('- a list')).status).toBe(400);
    expect((await post('from: { device: sim }\nto: [out]\n')).body.error).toMatch(/missing required key "name"/);
    expect(readFileSync(file, 'utf8')).toBe(before);
    expect(existsSync(`${file}.bak`)).toBe(false);
    expect([...agent.streamsByName.keys()]).toEqual(['a']);
  });

  it('a deleted stream\'s queued records stay in the outbox and are delivered', async () => {
    // the upstream's file is a folder for now: nothing can be delivered, records queue
    const { agent, dir, call } = await start({ out: (dir) => `${dir}/blocked` });
    mkdirSync(join(dir, 'blocked'));
    const depth = async () => (await call('GET', '/api/outbox')).body.upstreams[0].depth as number;
    await until(async () => (await depth()) > 5, 5000, 'records queued');
    expect((await call('DELETE', '/api/streams/a')).status).toBe(204);
    expect(agent.streamsByName.size).toBe(0);
    const queued = await depth();
    expect(queued).toBeGreaterThan(5);
    rmdirSync(join(dir, 'blocked'));
    await until(async () => (await depth()) === 0, 20_000, 'the queued records delivered');
    const lines = readFileSync(join(dir, 'blocked'), 'utf8').trim().split('\n').map((line) => JSON.parse(line));
    expect(lines.length).toBe(queued);
    expect(lines.every((record) => record.stream === 'a')).toBe(true);
  });

  it('lists every source, step and sink type with its parameters', async () => {
    const { call } = await start();
    const apps: { type: string; name: string; parameters: { name: string; required: boolean; default?: unknown }[] }[] = (await call('GET', '/api/apps')).body;
    const names = (type: string) => apps.filter((a) => a.type === type).map((a) => a.name);
    expect(names('source')).toEqual(expect.arrayContaining(['modbus-tcp', 'modbus-rtu', 'opcua', 'mqtt', 'simulator', 'timer']));
    expect(names('step')).toEqual(expect.arrayContaining(['filter', 'threshold', 'window', 'energy', 'event']));
    expect(names('sink')).toEqual(expect.arrayContaining(['mqtt', 'kafka', 'file', 'action']));
    const window = apps.find((a) => a.type === 'step' && a.name === 'window')!;
    expect(window.parameters.find((p) => p.name === 'size')).toMatchObject({ required: true });
    const opcua = apps.find((a) => a.type === 'source' && a.name === 'opcua')!;
    expect(opcua.parameters.find((p) => p.name === 'poll')).toMatchObject({ required: false, default: '1s' });
    expect(apps.find((a) => a.name === 'timer')!.parameters.map((p) => p.name)).toEqual(['cron', 'every', 'fixed_delay', 'at']);
  });
});

describe('the OpenAPI description', () => {
  it('describes every route served, and every route it describes answers', async () => {
    const { port, call } = await start();
    const openapi = (await call('GET', '/api/openapi.json')).body;
    expect(openapi.openapi).toBe('3.1.0');
    const described = Object.entries(openapi.paths as Record<string, Record<string, unknown>>).flatMap(([path, item]) =>
      Object.keys(item)
        .filter((key) => key !== 'parameters')
        .map((method) => `${method.toUpperCase()} ${path}`),
    );
    expect(described.sort()).toEqual(ROUTES.map((r) => `${r.method} ${r.path}`).sort());

    // every described route answers with one of its described successes (the deletion last)
    const bodies: Record<string, string> = {
      'POST /api/streams': JSON.stringify({ name: 'c', from: { device: 'sim' }, to: ['out'] }),
      'PUT /api/streams/{name}': JSON.stringify({ name: 'a', from: { device: 'sim' }, to: ['out'] }),
    };
    const order = (route: string) => (route.startsWith('DELETE') ? 1 : 0);
    for (const route of [...described].sort((x, y) => order(x) - order(y))) {
      const [method, path] = route.split(' ');
      const res = await raw(port, method, path.replace('{name}', 'a'), { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, bodies[route]);
      const successes = Object.keys(openapi.paths[path][method.toLowerCase()].responses).filter((code) => code.startsWith('2'));
      expect(successes, route).toContain(String(res.status));
    }
    // and nothing else is there
    expect((await call('GET', '/api/nothing')).status).toBe(404);
    expect((await call('PATCH', '/api/streams/c')).status).toBe(405);
  });
});

describe('safe by default', () => {
  it('refuses changes when no agent.http_token is configured, on loopback too, and still answers reads', async () => {
    const { agent, port } = await start({ token: undefined });
    expect((await raw(port, 'GET', '/api/streams', {})).status).toBe(200);
    const stream = JSON.stringify({ name: 'c', from: { device: 'sim' }, to: ['out'] });
    for (const [method, path, body] of [
      ['POST', '/api/streams', stream],
      ['PUT', '/api/streams/a', stream],
      ['DELETE', '/api/streams/a'],
      ['POST', '/api/streams/a/undeploy'],
      ['POST', '/api/streams/a/deploy'],
    ] as const) {
      const res = await raw(port, method, path, { 'content-type': 'application/json' }, body);
      expect(res.status, `${method} ${path}`).toBe(403);
      expect(JSON.parse(res.body).error).toMatch(/need a token, on loopback too: set agent\.http_token/);
    }
    expect([...agent.streamsByName.keys()]).toEqual(['a']);
    expect(agent.streamsByName.get('a')!.deployed).toBe(true);
  });

  it('with a token, changes need it', async () => {
    const { port } = await start();
    expect((await raw(port, 'POST', '/api/streams/a/undeploy', {})).status).toBe(401);
    expect((await raw(port, 'POST', '/api/streams/a/undeploy', { authorization: `Bearer ${TOKEN}` })).status).toBe(200);
  });

  it('refuses a Host that is not the API\'s address (DNS rebinding): localhost names pass on a loopback bind', async () => {
    const { port } = await start({ token: undefined });
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `LOCALHOST:${port}`, `[::1]:${port}`]) {
      expect((await raw(port, 'GET', '/api/streams', { host })).status, host).toBe(200);
    }
    for (const host of [`rebind.example.com:${port}`, `127.0.0.1:${port + 1}`, 'localhost', `127.0.0.1.nip.io:${port}`]) {
      for (const path of ['/api/streams', '/']) {
        const res = await raw(port, 'GET', path, { host });
        expect(res.status, `${host} ${path}`).toBe(403);
        expect(JSON.parse(res.body).error).toMatch(/is not this API's address .*DNS rebinding/);
      }
    }
  });

  it('refuses a request from a page of another site (Origin), and takes one from its own page', async () => {
    const { agent, port } = await start();
    const auth = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
    const stream = JSON.stringify({ name: 'c', from: { device: 'sim' }, to: ['out'] });
    for (const origin of ['http://evil.example', `http://localhost:${port + 1}`, 'null']) {
      const res = await raw(port, 'POST', '/api/streams', { ...auth, origin }, stream);
      expect(res.status, origin).toBe(403);
      expect(JSON.parse(res.body).error).toMatch(/from another site/);
      expect((await raw(port, 'GET', '/api/streams', { ...auth, origin })).status).toBe(403);
    }
    expect(agent.streamsByName.has('c')).toBe(false);
    expect((await raw(port, 'POST', '/api/streams', { ...auth, origin: `http://127.0.0.1:${port}` }, stream)).status).toBe(201);
  });
});
