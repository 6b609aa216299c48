import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { ServerResponse } from 'node:http';
import { QUALITY_CODES, type TrendData } from '../core/trends.js';
import type { Logger } from 'pino';
import type { ManagedAgent } from './managed-agent.js';

/**
 * The status page's live parts: its chart library, the trends (one request per refresh) and
 * the stream graph; http.ts routes to them.
 */

/** The chart library, served by the agent itself from node_modules: the page needs no network but the gateway. */
export const LIBRARY: Record<string, { file: string; type: string }> = {
  '/lib/uPlot.iife.min.js': { file: 'uPlot.iife.min.js', type: 'text/javascript; charset=utf-8' },
  '/lib/uPlot.min.css': { file: 'uPlot.min.css', type: 'text/css; charset=utf-8' },
};
const libraryFiles = new Map<string, Buffer>();

/** Serves a file of the chart library (no token: it is public code, as the page is); true when `path` is one. */
export function serveLibrary(path: string, res: ServerResponse): boolean {
  const entry = LIBRARY[path];
  if (!entry) return false;
  let body = libraryFiles.get(path);
  if (!body) {
    const dir = join(dirname(createRequire(import.meta.url).resolve('uplot/package.json')), 'dist');
    libraryFiles.set(path, (body = readFileSync(join(dir, entry.file))));
  }
  res.writeHead(200, { 'content-type': entry.type, 'cache-control': 'max-age=3600' });
  res.end(body);
  return true;
}

/** Window functions whose result has the unit of the point they aggregate. */
const SAME_UNIT = ['avg', 'min', 'max', 'first', 'last', 'sum', 'delta'];

type PointConfig = { name: string; unit?: string };

/**
 * Samples the outbox once a trend step (1 s) into the trends' outbox history while the API
 * runs, so that the page finds the last 15 minutes when it opens. Returns the timer to clear.
 */
export function sampleOutbox(agent: ManagedAgent, log: Logger): NodeJS.Timeout {
  let failing = false;
  const sample = () => {
    try {
      const history = agent.trends.outbox;
      const status = agent.outboxStatus();
      const now = Date.now();
      for (const u of status.upstreams) {
        const dropped = Object.values(u.drops).reduce((a, b) => a + b, 0);
        history.sample(now, u.name, u.depth, u.sent, dropped, u.dead_lettered);
      }
      history.keep(new Set(status.upstreams.map((u) => u.name)));
      failing = false;
    } catch (err) {
      // a chart's history is never worth the agent: logged once per spell
      if (!failing) log.warn({ err: (err as Error).message }, `status page: sampling the outbox failed: ${(err as Error).message}`);
      failing = true;
    }
  };
  // the first sample a step after start: the agent's parts are in place by then
  const timer = setInterval(sample, agent.trends?.options.stepMs ?? 1000);
  timer.unref();
  return timer;
}

/**
 * Everything the page plots, in one answer: `minutes` how far back (at most the span the agent
 * keeps), `since` (ms, the `now` of the previous answer) only the slots written since then,
 * whatever their time (a window's record comes when the window closes): the page holds the rest.
 */
export function trendsBody(agent: ManagedAgent, query: URLSearchParams) {
  const { options } = agent.trends;
  const now = Date.now();
  const minutes = Number(query.get('minutes') ?? options.spanMs / 60_000);
  const span = Math.min(options.spanMs, Number.isFinite(minutes) && minutes > 0 ? minutes * 60_000 : options.spanMs);
  const sinceParam = query.get('since');
  const since = sinceParam === null || !Number.isFinite(Number(sinceParam)) ? undefined : Number(sinceParam);
  const from = now - span;

  const config = agent.config;
  const pointsOf = new Map<string, PointConfig[]>();
  for (const device of config.devices as { id: string; points?: PointConfig[] }[]) pointsOf.set(device.id, device.points ?? []);
  const unitOf = (device: string, point: string): string | undefined => pointsOf.get(device)?.find((p) => p.name === point)?.unit;
  // a stream's output point has the unit of the device point of the same name, or of the point a window aggregates
  const outputUnit = (device: string, point: string): string | undefined => {
    const own = unitOf(device, point);
    if (own !== undefined) return own;
    const cut = point.lastIndexOf('_');
    return cut > 0 && SAME_UNIT.includes(point.slice(cut + 1)) ? unitOf(device, point.slice(0, cut)) : undefined;
  };
  const status = new Map(agent.deviceStatus().map((d) => [d.id, d]));
  const deployed = new Map(agent.streamStatus().map((s) => [s.name, s.deployed]));
  const series = (data: TrendData, name: string, unit: string | undefined) => ({ name, unit: unit ?? null, ...data });

  return {
    now,
    from,
    since: since ?? null,
    span_ms: span,
    step_ms: options.stepMs,
    qualities: QUALITY_CODES,
    devices: agent.trends.readDevices(from, now, since).map(({ id, points }) => ({
      id,
      online: status.get(id)?.online ?? null,
      points: points.map(({ name, data }) => series(data, name, unitOf(id, name))),
    })),
    streams: agent.trends.readStreams(from, now, since).map(({ name, devices }) => ({
      name,
      deployed: deployed.get(name) ?? false,
      devices: devices.map(({ id, points }) => ({ id, points: points.map((p) => series(p.data, p.name, outputUnit(id, p.name))) })),
    })),
    outbox: agent.trends.outbox.read(from, now, since),
    events: agent.events().filter((e) => e.ts >= now - span),
    series: agent.trends.seriesCount,
    untracked: agent.trends.untracked,
  };
}

/** Each stream as source → steps → sinks, with its counts; the page draws it. */
export function graphBody(agent: ManagedAgent) {
  const status = new Map(agent.streamStatus().map((s) => [s.name, s]));
  const upstreams = new Map(agent.outboxStatus().upstreams.map((u) => [u.name, u]));
  return agent.config.streams.map((stream) => {
    const s = status.get(stream.name);
    const counters = Object.entries(s?.counters ?? {});
    const instances = agent.streamInstances(stream.name);
    return {
      name: stream.name,
      deployed: s?.deployed ?? false,
      from: stream.from,
      readings_in: s?.readings_in ?? 0,
      readings_out: s?.readings_out ?? 0,
      errors: s?.errors ?? 0,
      steps: stream.steps.map((step, index) => {
        const [operator, params] = Object.entries(step)[0];
        const prefix = `${index + 1}.${operator}.`;
        return {
          operator,
          params,
          /** readings that reached this step: the count on the arrow into it */
          readings_in: instances?.[index]?.readings_in ?? 0,
          counters: Object.fromEntries(counters.filter(([key]) => key.startsWith(prefix)).map(([key, n]) => [key.slice(prefix.length), n])),
        };
      }),
      sinks: stream.to.map((sink) => {
        if (typeof sink === 'string') {
          const u = upstreams.get(sink);
          return { upstream: sink, connected: u ? u.connected && !u.retrying : false, depth: u?.depth ?? 0 };
        }
        const { device, point, value, on } = sink.action;
        return { action: { device, point, value, on: on ?? 'raise' } };
      }),
    };
  });
}
