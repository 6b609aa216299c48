import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Agent } from '../src/agent/agent.js';
import { startAgent as launchAgent } from '../src/start.js';
import { testLog } from './support/log.js';
import { ModbusServer } from './support/modbus-server.js';
import { Mosquitto } from './support/mosquitto.js';
import { freePort, until } from './support/ports.js';

/**
 * The status page as a person sees it: Chromium draws it, and the tests read what is on the
 * canvases (the line's pixels where there were values, none where the device was offline),
 * where the timeline's markers are, and what a click on one shows.
 *
 * EDGE_UPDATE_SCREENSHOTS=1 also writes the default config's screenshot to docs/ (README shows it).
 */
const ROOT = resolve(import.meta.dirname, '..');
const SHOTS = process.env.EDGE_UPDATE_SCREENSHOTS ? join(ROOT, 'docs') : mkdtempSync(join(tmpdir(), 'page-shots-'));

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

let browser: Browser;
beforeAll(async () => {
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
afterAll(async () => {
  await browser?.close();
});

async function startAgent(text: string): Promise<{ agent: Agent; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'page-'));
  const file = join(dir, 'agent.yaml');
  writeFileSync(file, text.replaceAll('$DIR', dir));
  const agent = await launchAgent(file, testLog);
  cleanup.push(() => agent.stop());
  return { agent, dir };
}

async function openPage(port: number, query = ''): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  cleanup.push(() => page.close());
  const errors: string[] = [];
  page.on('pageerror', (err) => errors.push(err.message));
  cleanup.push(async () => expect(errors).toEqual([]));
  await page.goto(`http://127.0.0.1:${port}/${query}`);
  return page;
}

/**
 * How many pixels of the value's line (blue) and of the bad band (light red) a chart has in the
 * canvas column of time `t` (seconds), three pixels wide, within its plot area.
 */
function pixelsAt(page: Page, key: string, t: number): Promise<{ line: number; bad: number }> {
  return page.evaluate(
    ([key, t]) => {
      const u = (window as unknown as { edgeCharts: Map<string, any> }).edgeCharts.get(key as string);
      const x = Math.round(u.valToPos(t, 'x', true));
      const { top, height } = u.bbox;
      const data = u.ctx.getImageData(x - 1, top, 3, height).data as Uint8ClampedArray;
      let line = 0;
      let bad = 0;
      for (let i = 0; i < data.length; i += 4) {
        // the canvas is transparent over the chart's white: composed as the eye sees it
        const alpha = data[i + 3] / 255;
        const [r, g, b] = [0, 1, 2].map((k) => data[i + k] * alpha + 255 * (1 - alpha));
        if (b > 180 && b - r > 40) line++;
        else if (r > 200 && r - g > 10 && r - b > 5) bad++;
      }
      return { line, bad };
    },
    [key, t] as const,
  );
}

/** What a chart holds: its times (s) and values, as uPlot drew them. */
function chartData(page: Page, key: string): Promise<{ xs: number[]; ys: (number | null)[]; marks: (number | null)[]; bad: number[] } | null> {
  return page.evaluate((key) => {
    const u = (window as unknown as { edgeCharts: Map<string, any> }).edgeCharts.get(key);
    return u ? { xs: [...u.data[0]], ys: [...u.data[1]], marks: [...(u.data[2] ?? [])], bad: [...(u.bad ?? [])] } : null;
  }, key);
}

describe('status page in Chromium', () => {
  it('draws the default config after a minute: a trend per point with its unit, the stream graph, the outbox', async () => {
    const broker = await Mosquitto.start();
    cleanup.push(() => broker.stop('SIGKILL'));
    const port = await freePort();
    const text = readFileSync(join(ROOT, 'config/agent.yaml'), 'utf8')
      .replaceAll('${STATE_DIRECTORY:-../data}', '$DIR')
      .replace('http: 127.0.0.1:8080', `http: 127.0.0.1:${port}`)
      .replace('log_level: info', 'log_level: error')
      .replace('mqtt://127.0.0.1:1883', broker.url);
    const { agent } = await startAgent(text);
    const page = await openPage(port);
    // a minute with the page open: it asks only for what it lacks (since=) at each refresh
    await new Promise((r) => setTimeout(r, 60_000));
    await page.waitForFunction(() => (window as any).edgeCharts.get('device:sim:power_kw')?.data[0].length > 50);

    for (const point of ['power_kw', 'voltage_v', 'energy_kwh', 'breaker']) {
      const data = (await chartData(page, `device:sim:${point}`))!;
      // one slot a second, none twice, none missing: what the page pieced together is the agent's
      // minute. The first two readings are 2 s apart: the agent reads at start, and skips the tick
      // after that read when it comes less than a poll later (no two readings closer than a poll)
      const steps = data.xs.slice(1).map((x, i) => x - data.xs[i]);
      expect(steps[0]).toBeGreaterThanOrEqual(1);
      expect(steps[0]).toBeLessThanOrEqual(2);
      expect(new Set(steps.slice(1))).toEqual(new Set([1]));
      expect(data.ys.every((y) => typeof y === 'number')).toBe(true);
      // the line is drawn where the values are
      expect((await pixelsAt(page, `device:sim:${point}`, data.xs[data.xs.length - 10])).line, point).toBeGreaterThan(0);
    }
    // the page's minute is the agent's: the same slots as a fresh request for everything
    const fresh = await (await fetch(`http://127.0.0.1:${port}/api/trends`)).json();
    const power = fresh.devices[0].points.find((p: { name: string }) => p.name === 'power_kw');
    const drawn = (await chartData(page, 'device:sim:power_kw'))!;
    const common = drawn.xs.filter((x) => x * 1000 <= power.t[power.t.length - 2]);
    expect(common.map((x) => x * 1000)).toEqual(power.t.filter((t: number) => t >= common[0] * 1000 && t <= common[common.length - 1] * 1000));

    // units from the config, on the chart
    expect(await page.locator('[data-series="device:sim:power_kw"] .title').textContent()).toMatch(/^power_kw [\d.]+ kW$/);
    expect(await page.locator('[data-series="device:sim:energy_kwh"] .title').textContent()).toMatch(/ kWh$/);
    // the stream outputs on their own charts: meter's values, power-1m's averages once its minute closed
    expect(await chartData(page, 'stream:meter:sim:voltage_v')).not.toBeNull();
    await until(() => agent.streamsByName.get('power-1m')!.stream.readingsOut > 0, 15_000, 'the first 1-minute window');
    await page.waitForFunction(() => (window as any).edgeCharts.get('stream:power-1m:sim:power_kw_avg')?.data[0].length > 0, undefined, { timeout: 10_000 });
    expect(await page.locator('[data-series="stream:power-1m:sim:power_kw_avg"] .title').textContent()).toMatch(/ kW$/);

    // the graph: source → steps → sinks, the overload stream's two actions told apart by their edge
    expect(await page.locator('.graph[data-stream="meter"] .node.step').allTextContents()).toEqual([
      expect.stringMatching(/^threshold/),
      expect.stringMatching(/^energy/),
    ]);
    expect(await page.locator('.graph[data-stream="overload"] .node.action').evaluateAll((nodes) => nodes.map((n) => (n as HTMLElement).dataset.on))).toEqual(['raise', 'clear']);
    expect(await page.locator('.graph[data-stream="meter"] .edge').first().textContent()).toMatch(/^\d+ in$/);
    // the arrow between threshold and energy counts the readings that reached energy
    const arrows = await page.locator('.graph[data-stream="meter"] .edge').allTextContents();
    expect(arrows).toHaveLength(3);
    expect(Number(arrows[1])).toBeGreaterThan(0);
    // outbox health: a chart per upstream, the broker's records sent
    await page.waitForFunction(() => /[1-9]\d* sent\/s|[0-9.]+ sent\/s/.test(document.querySelector('[data-upstream="local-broker"] .title')?.textContent ?? ''));
    expect(await page.locator('#outbox-charts [data-upstream]').evaluateAll((nodes) => nodes.map((n) => (n as HTMLElement).dataset.upstream))).toEqual(['local-broker', 'local-file']);

    await page.screenshot({ path: join(SHOTS, 'status-page.png'), fullPage: true });
  }, 120_000);

  it('shows a gap where a device was offline, and the line again once it is back', async () => {
    const server = await ModbusServer.start();
    cleanup.push(() => server.stop());
    server.unit(1).holding[0] = 40;
    const port = await freePort();
    const { agent } = await startAgent(`agent: { id: gw-page, data_dir: $DIR/data, log_level: error, http: "127.0.0.1:${port}" }
devices:
  - id: mb
    protocol: modbus-tcp
    host: 127.0.0.1
    port: ${server.port}
    poll: 200ms
    timeout: 300ms
    points: [{ name: p, area: holding, address: 0, type: uint16, unit: kW }]
streams:
  - { name: s, from: { device: mb }, to: [out] }
upstream:
  - { name: out, type: file, path: $DIR/out.jsonl }
`);
    const page = await openPage(port, '?minutes=1');
    const online = () => agent.deviceStatus()[0].online;
    await new Promise((r) => setTimeout(r, 5000));
    await server.stop();
    await until(() => !online(), 10_000, 'the device offline');
    await page.waitForSelector('section[data-device="mb"] h3 .offline', { timeout: 10_000 });
    await new Promise((r) => setTimeout(r, 6000));
    await server.resume();
    await until(online, 40_000, 'the device back');
    await new Promise((r) => setTimeout(r, 5000));
    await page.waitForSelector('section[data-device="mb"] h3 .online', { timeout: 10_000 });

    await page.screenshot({ path: join(SHOTS, 'status-page-offline.png') });
    const data = (await chartData(page, 'device:mb:p'))!;
    expect(data.bad.length).toBeGreaterThan(3);
    const middle = data.bad[data.bad.length >> 1];
    // where it was offline: no line, the bad band instead
    const gap = await pixelsAt(page, 'device:mb:p', middle + 0.5);
    expect(gap.line).toBe(0);
    expect(gap.bad).toBeGreaterThan(20);
    // before and after: the line
    const good = data.xs.filter((x, i) => data.ys[i] !== null);
    expect((await pixelsAt(page, 'device:mb:p', good[1])).line).toBeGreaterThan(0);
    expect((await pixelsAt(page, 'device:mb:p', good[good.length - 2])).line).toBeGreaterThan(0);
    expect(good[good.length - 2]).toBeGreaterThan(middle);
  }, 90_000);

  it('puts a burst of events and actions on the timeline, at their time on the trends, each opening its record', async () => {
    const port = await freePort();
    // undeploying over the API needs a token; the page takes it from its address
    const token = 'page-test-token-0123456789';
    const { agent } = await startAgent(`agent: { id: gw-page, data_dir: $DIR/data, log_level: error, http: "127.0.0.1:${port}", http_token: ${token} }
devices:
  - id: sim
    protocol: simulator
    poll: 100ms
    points:
      - { name: p, signal: sine, min: 0, max: 100, period: 4s, unit: kW }
      - { name: breaker, signal: constant, value: true, writable: true }
streams:
  - name: alarm
    from: { device: sim, points: [p] }
    steps:
      - hysteresis: { emit: "p > 80", release: "p < 20", on_release: true }
      - event: { code: HIGH, severity: major, description: "p {p}" }
    to:
      - out
      - action: { device: sim, point: breaker, value: false, on: raise }
  - { name: idle, from: { device: sim, points: [p] }, to: [out] }
upstream:
  - { name: out, type: file, path: $DIR/out.jsonl }
`);
    const page = await openPage(port, `?minutes=1#token=${token}`);
    await until(() => agent.events().filter((e) => e.event?.state === 'cleared').length >= 2, 20_000, 'raised and cleared events');
    const undeploy = await fetch(`http://127.0.0.1:${port}/api/streams/idle/undeploy`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(undeploy.status).toBe(200);
    await new Promise((r) => setTimeout(r, 2500));
    await page.screenshot({ path: join(SHOTS, 'status-page-events.png') });
    await page.waitForFunction(() => document.querySelectorAll('.marker.cleared').length >= 2 && document.querySelectorAll('.marker.action').length >= 1, undefined, { timeout: 10_000 });

    const kinds = await page.locator('.marker').evaluateAll((nodes) => nodes.map((n) => (n as HTMLElement).dataset.kind));
    expect(kinds).toContain('raised');
    expect(kinds).toContain('cleared');
    expect(kinds).toContain('action');
    // a marker is drawn at its event's time on the trends' time axis. Read in one turn of the
    // page: the view slides by a refresh every 2 s (37 px in a 1-minute view), and a loaded
    // machine took one between two separate reads
    const { ts, markerX, trendX } = await page.evaluate(() => {
      const marker = document.querySelector('.marker.raised') as HTMLElement;
      const ts = Number(marker.dataset.ts);
      const r = marker.getBoundingClientRect();
      const u = (window as any).edgeCharts.get('device:sim:p');
      return { ts, markerX: r.left + r.width / 2, trendX: u.over.getBoundingClientRect().left + u.valToPos(ts / 1000, 'x') };
    });
    expect(Math.abs(markerX - trendX)).toBeLessThan(2);
    // and every time chart's plot spans the same x: the timeline's, a trend's, and the outbox
    // chart's beside its right-hand sent/s axis (it was 53 px narrower)
    const plots = await page.evaluate(() =>
      ['timeline', 'device:sim:p', 'outbox:out'].map((key) => {
        const r = (window as any).edgeCharts.get(key).over.getBoundingClientRect();
        return { key, left: r.left, right: r.right };
      }),
    );
    for (const plot of plots.slice(1)) {
      expect(Math.abs(plot.left - plots[0].left), `${plot.key} starts where the timeline does`).toBeLessThan(1);
      expect(Math.abs(plot.right - plots[0].right), `${plot.key} ends where the timeline does`).toBeLessThan(1);
    }
    // a click shows its record
    await page.locator(`.marker.raised[data-ts="${ts}"]`).first().click();
    const record = JSON.parse((await page.locator('#record').textContent())!);
    expect(record).toMatchObject({ ts, device: 'sim', stream: 'alarm', event: { code: 'HIGH', state: 'raised', severity: 'major' } });
    await page.locator('.marker.action').first().click();
    expect(JSON.parse((await page.locator('#record').textContent())!)).toMatchObject({ device: 'sim', event: { code: 'ACTION', point: 'breaker', value: false } });

    // the breaker the action opened: 0 since, its lowest value, drawn inside the frame, not on it
    const breaker = (await chartData(page, 'device:sim:breaker'))!;
    expect(breaker.ys[breaker.ys.length - 1]).toBe(0);
    expect((await pixelsAt(page, 'device:sim:breaker', breaker.xs[breaker.xs.length - 2])).line).toBeGreaterThan(0);
    // (the dots of a 1-minute view would show even a line on the frame: where 0 sits is checked too)
    const zeroRow = await page.evaluate(() => {
      const u = (window as any).edgeCharts.get('device:sim:breaker');
      return { y: u.valToPos(0, 'y', true), top: u.bbox.top, bottom: u.bbox.top + u.bbox.height };
    });
    expect(zeroRow.y).toBeLessThan(zeroRow.bottom - 3);
    expect(zeroRow.y).toBeGreaterThan(zeroRow.top + 3);
    // and whatever the view holds: only zeros (a loaded machine's first slot already 0), only ones, both
    const ranges = await page.evaluate(() => [[0, 0], [1, 1], [0, 1], [-5, -5]].map(([min, max]) => (window as any).valueRange(min, max)));
    for (const [i, [low, high]] of ranges.entries()) {
      const [min, max] = [[0, 0], [1, 1], [0, 1], [-5, -5]][i];
      expect(low, `${min}..${max}`).toBeLessThan(min);
      expect(high, `${min}..${max}`).toBeGreaterThan(max);
    }
    // the undeployed stream is greyed out in the graph, the deployed one is not
    await page.waitForSelector('.graph[data-stream="idle"].undeployed', { timeout: 10_000 });
    const opacity = (stream: string) => page.locator(`.graph[data-stream="${stream}"]`).evaluate((g) => Number(getComputedStyle(g).opacity));
    expect(await opacity('idle')).toBeLessThan(0.5);
    expect(await opacity('alarm')).toBe(1);
  }, 60_000);
});
