import { timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { ManagedAgent } from './managed-agent.js';
import { parseHostPort } from '../core/units.js';
import { Episodes } from '../core/episodes.js';
import type { Registry } from 'prom-client';
import { isLoopback } from '../config/management.js';
import { OPENAPI } from './openapi.js';
import { createStream, deleteStream, noStream, replaceStream, streamDetail, streamInstances, type Reply } from './streams-api.js';
import { graphBody, LIBRARY, sampleOutbox, serveLibrary, trendsBody } from './trends.js';

const STATUS_PAGE = new URL('../../static/status.html', import.meta.url);

// Not `import … from 'node:http'`: an ES module import of node:http reads every export, and
// its lazy WebSocket, CloseEvent and MessageEvent getters load undici, http2 and web streams
// (about 13 MB resident, measured by scripts/bench/memory). The CommonJS object is the same
// module without that.
const { createServer } = process.getBuiltinModule('node:http');

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

/** The largest stream definition a POST or PUT may carry. */
const MAX_BODY = 256 * 1024;

/** What a route's handler is given. */
interface Request {
  agent: ManagedAgent;
  /** The path's `{name}`, decoded. */
  params: Record<string, string>;
  /** The request body as text (at most MAX_BODY bytes). */
  body(): Promise<string>;
  /** The query string's parameters. */
  query: URLSearchParams;
}

interface Route {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** As in the OpenAPI description: `{name}` stands for one path segment. */
  path: string;
  handle(req: Request): Reply | Promise<Reply>;
}

const ok = (body: unknown): Reply => ({ status: 200, body });

/** Every route of /api: the OpenAPI description (openapi.ts) describes exactly these (a test checks it). */
const API_ROUTES: Route[] = [
  { method: 'GET', path: '/api/streams', handle: ({ agent }) => ok(agent.streamStatus()) },
  { method: 'POST', path: '/api/streams', handle: async ({ agent, body }) => createStream(agent, await body()) },
  { method: 'GET', path: '/api/streams/{name}', handle: ({ agent, params }) => streamDetail(agent, params.name) },
  { method: 'PUT', path: '/api/streams/{name}', handle: async ({ agent, params, body }) => replaceStream(agent, params.name, await body()) },
  { method: 'DELETE', path: '/api/streams/{name}', handle: ({ agent, params }) => deleteStream(agent, params.name) },
  { method: 'GET', path: '/api/streams/{name}/instances', handle: ({ agent, params }) => streamInstances(agent, params.name) },
  { method: 'POST', path: '/api/streams/{name}/deploy', handle: ({ agent, params }) => setDeployed(agent, params.name, true) },
  { method: 'POST', path: '/api/streams/{name}/undeploy', handle: ({ agent, params }) => setDeployed(agent, params.name, false) },
  { method: 'GET', path: '/api/apps', handle: async () => ok((await import('../config/schema.js')).appCatalog()) },
  { method: 'GET', path: '/api/devices', handle: ({ agent }) => ok(agent.deviceStatus()) },
  { method: 'GET', path: '/api/outbox', handle: ({ agent }) => ok(agent.outboxStatus()) },
  { method: 'GET', path: '/api/config', handle: ({ agent }) => ok(agent.configStatus()) },
  { method: 'GET', path: '/api/events', handle: ({ agent }) => ok(agent.events()) },
  // the status page's trends and stream graph (trends.ts)
  { method: 'GET', path: '/api/trends', handle: ({ agent, query }) => ok(trendsBody(agent, query)) },
  { method: 'GET', path: '/api/graph', handle: ({ agent }) => ok(graphBody(agent)) },
  { method: 'GET', path: '/api/openapi.json', handle: () => ok(OPENAPI) },
];

/** Every route served, the status page and /metrics included (for the test against openapi.json). */
export const ROUTES: readonly { method: string; path: string }[] = [
  { method: 'GET', path: '/' },
  { method: 'GET', path: '/index.html' },
  { method: 'GET', path: '/metrics' },
  ...Object.keys(LIBRARY).map((path) => ({ method: 'GET', path })),
  ...API_ROUTES.map(({ method, path }) => ({ method, path })),
];

const MATCHERS = API_ROUTES.map((route) => ({ route, pattern: new RegExp(`^${route.path.replace(/\{(\w+)\}/g, '(?<$1>[^/]+)')}$`) }));

function setDeployed(agent: ManagedAgent, name: string, deployed: boolean): Reply {
  const running = agent.setDeployed(name, deployed);
  if (!running) return noStream(agent, name);
  return ok({ name, deployed: running.deployed });
}

/**
 * Who may talk to the API at all, before any token: a request must name the API's own address
 * in `Host` (for a loopback bind, localhost names too), so that a web page whose name was made
 * to resolve to 127.0.0.1 (DNS rebinding) is refused; and a request from a page of another site
 * (`Origin` not this API's) is refused, so that a page in the engineer's browser cannot post
 * to the API. A wildcard bind (0.0.0.0, ::) answers under any name: it needs agent.http_token.
 */
export function hostGuard(hostPort: string, port: number): (req: IncomingMessage) => string | undefined {
  const { host } = parseHostPort(hostPort);
  const bracket = (h: string) => (h.includes(':') ? `[${h}]` : h);
  const wildcard = host === '0.0.0.0' || host === '::' || host === '';
  const names = isLoopback(hostPort) ? [host, 'localhost', '127.0.0.1', '::1'] : [host];
  const allowed = new Set(names.map((name) => `${bracket(name)}:${port}`.toLowerCase()));
  return (req) => {
    const given = req.headers.host?.toLowerCase();
    if (!wildcard && (given === undefined || !allowed.has(given))) {
      return `the Host header ${JSON.stringify(req.headers.host ?? '')} is not this API's address (${[...allowed].join(', ')}): requests through another name are refused (DNS rebinding)`;
    }
    const origin = req.headers.origin;
    if (origin !== undefined && origin.toLowerCase() !== `http://${given}`) {
      return `requests from another site (Origin ${origin}) are refused: use the API from the status page or a client that sends no Origin`;
    }
    return undefined;
  };
}

/** The body of a request as text; undefined beyond MAX_BODY bytes (the rest is read and let go, so that the answer can be sent). */
function readBody(req: IncomingMessage): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY) chunks.push(chunk);
    });
    req.on('end', () => resolve(size > MAX_BODY ? undefined : Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

class TooLarge extends Error {}

/**
 * The management API on `agent.http`: the REST API under /api, Prometheus metrics at /metrics
 * and the status page at /. With a token, /api and /metrics require `Authorization: Bearer`;
 * whatever changes something needs the token, on loopback too.
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
    if (body === undefined) {
      res.writeHead(status, { 'cache-control': 'no-store' });
      return void res.end();
    }
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body));
  };
  // set once listening: the port may have been chosen by the system
  let refused: (req: IncomingMessage) => string | undefined = () => 'starting';

  // the outbox over time, for the status page (see trends.ts)
  const sampler = sampleOutbox(agent, log);

  const server: Server = createServer(SERVER_OPTIONS, async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://agent');
    const path = url.pathname;
    try {
      const why = refused(req);
      if (why) return json(res, 403, { error: why });
      if (req.method === 'GET' && (path === '/' || path === '/index.html')) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
        return void res.end(page);
      }
      if (req.method === 'GET' && serveLibrary(path, res)) return;
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
      const matches = MATCHERS.map(({ route, pattern }) => ({ route, match: pattern.exec(path) })).filter((m) => m.match);
      if (matches.length === 0) return json(res, 404, { error: `nothing at ${path} (see /api/openapi.json)` });
      const found = matches.find((m) => m.route.method === req.method);
      if (!found) {
        const allowed = matches.map((m) => m.route.method).join(', ');
        res.setHeader('allow', allowed);
        return json(res, 405, { error: `${path} takes ${allowed}, not ${req.method}` });
      }
      if (found.route.method !== 'GET' && !expected) {
        return json(res, 403, { error: 'changes over the API need a token, on loopback too: set agent.http_token (16 characters or more) in the config and send "Authorization: Bearer <token>"' });
      }
      const params = Object.fromEntries(Object.entries(found.match!.groups ?? {}).map(([key, value]) => [key, decodeURIComponent(value)]));
      const body = async () => {
        const text = await readBody(req);
        if (text === undefined) throw new TooLarge(`the body is larger than ${MAX_BODY} bytes`);
        return text;
      };
      const reply = await found.route.handle({ agent, params, body, query: url.searchParams });
      return json(res, reply.status, reply.body);
    } catch (err) {
      if (err instanceof TooLarge) return json(res, 413, { error: err.message });
      if (err instanceof URIError) return json(res, 400, { error: `${path}: ${err.message}` });
      log.error({ err: (err as Error).message, path }, `management API: ${path} failed`);
      json(res, 500, { error: (err as Error).message });
    }
  });
  limitConnections(server);
  const address = parseHostPort(hostPort);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      clearInterval(sampler);
      reject(err.code === 'EADDRINUSE' ? new Error(`${err.message} (another program has the port): change agent.http, or run with --http ADDR`, { cause: err }) : err);
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
  refused = hostGuard(hostPort, port);
  log.info({ http: hostPort }, `management API, metrics and status page on http://${hostPort.slice(0, hostPort.lastIndexOf(':'))}:${port}/`);
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        clearInterval(sampler);
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
