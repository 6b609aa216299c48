import { timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { ManagedAgent } from './managed-agent.js';
import { parseHostPort } from '../core/units.js';
import { Episodes } from '../core/episodes.js';
import type { Registry } from 'prom-client';
import { pageRoutes } from './trends.js';

const STATUS_PAGE = new URL('../../static/status.html', import.meta.url);

/**
 * Idle connections cannot starve the API: beyond MAX_CONNECTIONS new ones are closed at once
 * (the agent's file descriptors stay free for devices, upstreams and the database), and a
 * connection that says nothing is closed after IDLE_MS, one slow to send its request after
 * REQUEST_MS. The API answers small requests from a status page or a fleet tool: these bounds
 * are far above what they need.
 */
export const HTTP_LIMITS = { MAX_CONNECTIONS: 64, IDLE_MS: 5000, HEADERS_MS: 5000, REQUEST_MS: 10_000, KEEP_ALIVE_MS: 5000 };

/** Server options: the request timeouts checked every second (Node's default: 30 s). */
const SERVER_OPTIONS = {
  keepAliveTimeout: HTTP_LIMITS.KEEP_ALIVE_MS,
  headersTimeout: HTTP_LIMITS.HEADERS_MS,
  requestTimeout: HTTP_LIMITS.REQUEST_MS,
  connectionsCheckingInterval: 1000,
};

function limitConnections(server: Server): void {
  server.maxConnections = HTTP_LIMITS.MAX_CONNECTIONS;
  // a socket that sends and receives nothing for IDLE_MS is destroyed (no 'timeout' listener)
  server.timeout = HTTP_LIMITS.IDLE_MS;
}

/**
 * The management API on `agent.http`: the REST API under /api, Prometheus metrics at /metrics
 * and the status page at /. With a token, /api and /metrics require `Authorization: Bearer`.
 */
export async function startHttp(agent: ManagedAgent, hostPort: string, token: string | undefined, log: Logger): Promise<{ close(): Promise<void>; port: number }> {
  const page = readFileSync(STATUS_PAGE);
  // prom-client (about 15 MB resident once loaded) only for a gateway that is scraped
  let metrics: Promise<Registry> | undefined;
  const expected = token ? Buffer.from(`Bearer ${token}`) : undefined;
  const authorized = (req: IncomingMessage) => {
    if (!expected) return true;
    const given = Buffer.from(req.headers.authorization ?? '');
    return given.length === expected.length && timingSafeEqual(given, expected);
  };
  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body));
  };

  // the status page's chart library, trends and stream graph (see trends.ts)
  const pageApi = pageRoutes(agent, json);

  const server: Server = createServer(SERVER_OPTIONS, async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://agent');
    const path = url.pathname;
    try {
      if (req.method === 'GET' && (path === '/' || path === '/index.html')) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
        return void res.end(page);
      }
      if (req.method === 'GET' && pageApi.library(path, res)) return;
      if (!authorized(req)) {
        res.setHeader('www-authenticate', 'Bearer');
        return json(res, 401, { error: 'this API needs "Authorization: Bearer <agent.http_token>"' });
      }
      if (req.method === 'GET' && path === '/metrics') {
        metrics ??= import('./metrics.js').then(({ createMetrics }) => createMetrics(agent));
        const registry = await metrics;
        const text = await registry.metrics();
        res.writeHead(200, { 'content-type': registry.contentType });
        return void res.end(text);
      }
      const deploy = /^\/api\/streams\/([^/]+)\/(deploy|undeploy)$/.exec(path);
      if (deploy) {
        if (req.method !== 'POST') return json(res, 405, { error: `${path} takes POST` });
        const name = decodeURIComponent(deploy[1]);
        const running = agent.setDeployed(name, deploy[2] === 'deploy');
        if (!running) return json(res, 404, { error: `no stream "${name}" (streams: ${agent.streamStatus().map((s) => s.name).join(', ')})` });
        return json(res, 200, { name, deployed: running.deployed });
      }
      if (req.method !== 'GET') return json(res, 405, { error: `${req.method} is not allowed on ${path}` });
      if (path === '/api/streams') return json(res, 200, agent.streamStatus());
      if (path === '/api/devices') return json(res, 200, agent.deviceStatus());
      if (path === '/api/outbox') return json(res, 200, agent.outboxStatus());
      if (path === '/api/config') return json(res, 200, agent.configStatus());
      if (path === '/api/events') return json(res, 200, agent.events());
      if (pageApi.api(path, url.searchParams, res)) return;
      return json(res, 404, { error: `nothing at ${path} (see /api/streams, /api/devices, /api/outbox, /api/config, /api/events, /api/trends, /api/graph, /metrics)` });
    } catch (err) {
      log.error({ err: (err as Error).message, path }, `management API: ${path} failed`);
      json(res, 500, { error: (err as Error).message });
    }
  });
  limitConnections(server);
  const address = parseHostPort(hostPort);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => {
      pageApi.close();
      reject(err);
    });
    server.listen(address.port, address.host, () => resolve());
  });
  // after start, a failed accept (out of file descriptors) is logged, once until a request is served again
  const acceptErrors = new Episodes();
  server.on('request', () => {
    for (const code of ['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM']) if (acceptErrors.end(code)) log.info(`management API on ${hostPort}: accepting connections again`);
  });
  server.on('error', (err: NodeJS.ErrnoException) => {
    if (acceptErrors.begin(err.code ?? err.message)) log.warn({ err: err.message }, `management API on ${hostPort}: ${err.message}`);
  });
  const port = (server.address() as { port: number }).port;
  log.info({ http: hostPort }, `management API, metrics and status page on http://${hostPort.slice(0, hostPort.lastIndexOf(':'))}:${port}/`);
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        pageApi.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
