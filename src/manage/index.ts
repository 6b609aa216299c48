import type { Logger } from 'pino';
import type { ManagedAgent } from './managed-agent.js';
import type { AgentConfig } from '../config/types.js';

/** The management side of a running agent: the HTTP API and the remote config client. */
export interface Management {
  httpKey: string;
  remoteKey: string;
  http?: { close(): Promise<void>; port: number };
  remote?: { close(): Promise<void> };
  close(): Promise<void>;
}

/**
 * Starts what `config` asks for, keeping what runs with the same settings. `strict`: a part
 * that cannot start throws (an apply then goes back to the previous config); otherwise it is
 * logged and left out, so that a busy port never keeps the agent from forwarding data.
 */
export async function startManagement(agent: ManagedAgent, config: AgentConfig, running: Management | undefined, strict: boolean, log: Logger): Promise<Management> {
  // Changed in place as parts stop and start, so that it always tells what runs.
  const m: Management = running ?? {
    httpKey: '',
    remoteKey: '',
    async close() {
      await m.http?.close();
      await m.remote?.close();
      m.http = m.remote = undefined;
      m.httpKey = m.remoteKey = '';
    },
  };
  const httpKey = JSON.stringify([config.agent.http, config.agent.http_token]);
  const remoteKey = JSON.stringify([config.remote_config, config.agent.id]);
  const attempt = async <T>(what: string, start: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await start();
    } catch (err) {
      if (strict) throw new Error(`${what}: ${(err as Error).message}`, { cause: err });
      log.error({ err: (err as Error).message }, `${what} not started: ${(err as Error).message}`);
      return undefined;
    }
  };
  if (m.httpKey !== httpKey) {
    await m.http?.close();
    m.http = undefined;
    m.httpKey = '';
    if (config.agent.http !== 'off') m.http = await attempt(`management API on ${config.agent.http}`, async () => (await import('./http.js')).startHttp(agent, config.agent.http, config.agent.http_token, log));
    m.httpKey = httpKey;
  }
  if (m.remoteKey !== remoteKey) {
    await m.remote?.close();
    m.remote = undefined;
    m.remoteKey = '';
    const remoteConfig = config.remote_config;
    if (remoteConfig) m.remote = await attempt('remote config', async () => new (await import('./remote.js')).RemoteConfigClient(agent, remoteConfig, config.agent.id, log));
    m.remoteKey = remoteKey;
  }
  return m;
}
