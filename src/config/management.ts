/** The management side's keys: `remote_config:` and the rule on agent.http / agent.http_token. */
import type { ConfigIssue } from '../core/config-error.js';
import { duration, filePath, object, size, text, tls, Type, withDefault, type IssueAt, type Static } from '../core/config-kit.js';
import { parseHostPort } from '../core/units.js';

export const remoteConfigSchema = object({
  broker: text,
  topic: text,
  public_key: filePath('file'),
  username: Type.Optional(text),
  password: Type.Optional(Type.String()),
  tls: Type.Optional(tls),
  /** A larger push is dropped by the broker (MQTT 5 maximum packet size). */
  max_size: size('1MB'),
  /** How long the broker keeps the agent's session (and pushes sent meanwhile) while it is away. */
  session_expiry: duration('7d'),
  /** Accept pushes of the first format, which name no target gateway. */
  allow_untargeted: withDefault(Type.Boolean(), false),
});

export type RemoteConfig = Static<typeof remoteConfigSchema>;

/** The management API off loopback needs a token. */
export function checkManagement(agent: { http: string; http_token?: string }, issueAt: IssueAt): ConfigIssue[] {
  const { http, http_token } = agent;
  if (http !== 'off' && !http_token && !isLoopback(http)) {
    return [issueAt(['agent', 'http'], `the management API on ${http} is reachable from the network: set agent.http_token (16 characters or more), which clients send as "Authorization: Bearer <token>"`)];
  }
  return [];
}

/** True for an address only this machine can reach: 127.0.0.0/8, ::1, localhost. */
export function isLoopback(hostPort: string): boolean {
  const { host } = parseHostPort(hostPort);
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
