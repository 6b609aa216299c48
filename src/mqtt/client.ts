import { createConnection } from 'node:net';
// before MQTT.js: mqtt-packet loaded without its per-packet debug calls (see the file)
import './quiet-packets.js';
import mqtt, { MqttClient, type IClientOptions } from 'mqtt';
import type { Logger } from 'pino';
import type { TlsConfig } from '../core/config-kit.js';
import { Backoff } from '../core/backoff.js';
import { tlsOptions } from '../core/tls.js';

export interface MqttClientOptions {
  /** Who connects, as log lines name it: `upstream cloud`, `device zigbee`, `remote config`. */
  who: string;
  log: Logger;
  /** Fields put on each log line (`{ upstream: 'cloud' }`). */
  logFields?: Record<string, unknown>;
  url: string;
  clientId: string;
  username?: string;
  password?: string;
  tls?: TlsConfig;
  /** In ms; MQTT.js's default (60 s) when unset. */
  keepalive?: number;
  protocolVersion?: 4 | 5;
  /** How long a connection attempt may go without a CONNACK before it is an error, in ms (default 10 s). */
  connectTimeout?: number;
  /** Said after "unreachable" while the broker cannot be reached: what happens meanwhile. */
  whileDown?: string;
  /** The waits between attempts; by default 1 s doubling up to 30 s, with full jitter. */
  backoff?: Backoff;
  /** Other MQTT.js options (clean, queueQoSZero, …). */
  extra?: IClientOptions;
}

/** First and longest wait between connection attempts; each wait is random up to the current ceiling. */
export const RECONNECT_BASE = 1000;
export const RECONNECT_MAX = 30_000;
/** MQTT.js takes a reconnectPeriod of 0 as "never reconnect": full jitter may not draw that. */
const MIN_WAIT = 50;

/**
 * Connects to an MQTT broker with our config's options, and keeps connecting: MQTT.js tries
 * again after `reconnectPeriod`, which is set before each attempt from a capped exponential
 * backoff with full jitter (1 s, 2 s, 4 s … 30 s), so a fleet of gateways that lost the same
 * broker does not come back in step, nor hammer it once a second. An attempt that gets no
 * CONNACK (a broker that accepts TCP and never answers) fails after `connectTimeout` and is
 * logged then. Each outage is logged once when it starts and once when it ends.
 */
export function connectMqtt(options: MqttClientOptions): MqttClient {
  const { who, log, url } = options;
  const fields = options.logFields ?? {};
  const connectTimeout = options.connectTimeout ?? 10_000;
  const backoff = options.backoff ?? new Backoff(RECONNECT_BASE, RECONNECT_MAX);
  const nextWait = () => Math.max(MIN_WAIT, backoff.next());
  const client = connectClient(url, {
    clientId: options.clientId,
    username: options.username,
    password: options.password,
    keepalive: options.keepalive === undefined ? undefined : Math.round(options.keepalive / 1000),
    protocolVersion: options.protocolVersion ?? 4,
    connectTimeout,
    // set from the backoff before each attempt (below); this value is not used
    reconnectPeriod: RECONNECT_BASE,
    // mqtt-packet would otherwise fill a cache of 65,536 two-byte Buffers (one per 16-bit number,
    // 6.5 MB of heap) at the first packet it writes; a number is a 2-byte allocation without it.
    // The cache is global to mqtt-packet: every client must say so, or the first one fills it.
    writeCache: false,
    // MQTT.js calls its `debug` logger several times per packet: a no-op unless DEBUG asks for
    // it (3 % of the agent's CPU while it forwards a burst at QoS 1)
    log: /mqttjs/.test(process.env.DEBUG ?? '') ? undefined : () => {},
    // MQTT.js restarts its keepalive interval at every PUBACK: see keepaliveTimer
    timerVariant: keepaliveTimer(),
    ...options.extra,
    ...tlsOptions(options.tls),
  });
  let down = false;
  let connectedOnce = false;
  // before MQTT.js's own 'close' listener, which schedules the next attempt with reconnectPeriod
  client.prependListener('close', () => {
    client.options.reconnectPeriod = nextWait();
  });
  client.on('connect', () => {
    if (down) log.info({ ...fields, attempts: backoff.attempts }, `${who}: connected to ${url} after ${backoff.attempts} attempts`);
    else if (!connectedOnce) log.info(fields, `${who}: connected to ${url}`);
    connectedOnce = true;
    down = false;
    backoff.reset();
  });
  client.on('error', (err) => {
    if (down) return;
    down = true;
    const why = err.message === 'connack timeout' ? `no answer to CONNECT within ${connectTimeout / 1000} s (connack timeout)` : err.message;
    log.warn({ ...fields, err: why }, `${who}: cannot reach ${url}: ${why}; retrying with backoff (up to every ${backoff.max / 1000} s)`);
  });
  client.on('offline', () => {
    if (down) return;
    // a connack timeout emits 'offline' just before its 'error': let the error, which says why, be the line
    setImmediate(() => {
      if (down || client.connected) return;
      down = true;
      log.warn(fields, `${who}: ${url} unreachable${options.whileDown ? `; ${options.whileDown}` : ''}; retrying with backoff (up to every ${backoff.max / 1000} s)`);
    });
  });
  return client;
}

/** MQTT.js's Timer (its `timerVariant` option): an interval it can start and clear. */
interface Timer {
  set(callback: () => void, ms: number): number;
  clear(id: number): void;
}

/**
 * The keepalive interval of one client, restarted cheaply. MQTT.js restarts it at every
 * acknowledgement it receives (clearInterval, then setInterval): at QoS 1 a new Node timer and
 * two timer-list operations per message published (2 % of the agent's CPU forwarding a burst,
 * 5 % of the memory it allocates). Here a restart only moves the time of the next tick; the one
 * Node timer, when it fires early, waits for the rest. The ticks come as MQTT.js's own would:
 * `ms` after the last restart, then every `ms`. Unref'd: the connection, not its keepalive,
 * holds the process.
 */
export function keepaliveTimer(now: () => number = () => performance.now()): Timer {
  let callback: (() => void) | undefined;
  let every = 0;
  let due = 0;
  /** Which set() is running: ids of cleared ones are stale. */
  let current = 0;
  let handle: NodeJS.Timeout | undefined;
  /** When the pending Node timer fires. */
  let handleAt = 0;
  const arm = (ms: number) => {
    handleAt = now() + ms;
    handle = setTimeout(fire, Math.max(1, ms));
    handle.unref();
  };
  const fire = () => {
    handle = undefined;
    if (!callback) return;
    const wait = due - now();
    if (wait >= 1) return arm(wait);
    due = now() + every;
    arm(every);
    callback();
  };
  return {
    set(fn, ms) {
      callback = fn;
      every = ms;
      due = now() + ms;
      // a Node timer still pending that fires before `due` re-arms itself for the rest then
      if (handle && handleAt > due) {
        clearTimeout(handle);
        handle = undefined;
      }
      if (!handle) arm(ms);
      return ++current;
    },
    clear(id) {
      if (id !== current) return;
      callback = undefined;
    },
  };
}

/**
 * MQTT.js's connect() loads every transport it knows (WebSocket, SOCKS, TLS: 5 MB resident)
 * whatever the URL. A plain mqtt:// broker, the usual one on a gateway, needs only a TCP socket:
 * the client is built on one directly. Anything else (mqtts, ws, a client certificate, a SOCKS
 * proxy) goes through connect() as before.
 */
function connectClient(url: string, options: IClientOptions): MqttClient {
  const parsed = URL.canParse(url) ? new URL(url) : undefined;
  const plain = parsed && (parsed.protocol === 'mqtt:' || parsed.protocol === 'tcp:') && !parsed.search && !options.cert && !options.key && !process.env.MQTTJS_SOCKS_PROXY;
  if (!plain) return mqtt.connect(url, options);
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1') || 'localhost';
  const port = parsed.port ? Number(parsed.port) : 1883;
  // as connect() does: credentials in the URL win over the options
  const auth = parsed.username ? { username: decodeURIComponent(parsed.username), password: parsed.password ? decodeURIComponent(parsed.password) : options.password } : {};
  // the client's options at each attempt, not these: a caller may point it elsewhere meanwhile
  const client = new MqttClient((self) => createConnection({ host: self.options.host, port: self.options.port ?? port }), { ...options, ...auth, host, port, protocol: 'mqtt' });
  // as connect() does: an error nobody listens to must not end the process
  client.on('error', () => {});
  return client;
}

/**
 * Disconnects cleanly when the broker answers within `timeout` ms, else drops the connection:
 * a broker that never answers must not hold up a stop.
 */
export async function closeMqtt(client: MqttClient, timeout = 1000): Promise<void> {
  // Not connected (an attempt waiting for its CONNACK, or between attempts): nothing to say
  // goodbye to. A clean end would half-close the socket and leave MQTT.js's connack timer
  // running: a broker that never answers would hold the process for connectTimeout.
  if (!client.connected) return void (await client.endAsync(true).catch(() => undefined));
  const clean = client.endAsync(false).then(
    () => true,
    () => false,
  );
  const ended = await Promise.race([clean, new Promise<boolean>((resolve) => setTimeout(() => resolve(false), timeout).unref())]);
  if (!ended) await client.endAsync(true).catch(() => undefined);
}
