/** The keys of a file upstream: its schema, its loaded type and what loading does to them. */
import { resolve } from 'node:path';
import { name, object, text, Type, type Static } from '../../core/config-kit.js';

export const fileUpstreamSchema = object({
  name,
  type: Type.Literal('file'),
  /** relative to the config file's folder */
  path: text,
});

export type FileUpstreamConfig = Static<typeof fileUpstreamSchema>;

/** A relative `path` is the config file's folder's, not the working directory's. */
export function prepareFileUpstream(config: FileUpstreamConfig, configDir: string): void {
  config.path = resolve(configDir, config.path);
}
