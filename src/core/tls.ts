import { readFileSync } from 'node:fs';
import type { TlsConfig } from './config-kit.js';

/** TLS options for MQTT.js and Node's tls from the config's file paths. */
export function tlsOptions(tls: TlsConfig | undefined): Record<string, unknown> {
  if (!tls) return {};
  return {
    ca: tls.ca ? readFileSync(tls.ca) : undefined,
    cert: tls.cert ? readFileSync(tls.cert) : undefined,
    key: tls.key ? readFileSync(tls.key) : undefined,
    rejectUnauthorized: tls.reject_unauthorized ?? true,
  };
}
