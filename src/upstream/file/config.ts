/** The keys of a file upstream: its schema and its loaded type. */
import { filePath, name, object, Type, type Static } from '../../core/config-kit.js';

export const fileUpstreamSchema = object({
  name,
  type: Type.Literal('file'),
  /** relative to the config file's folder (made absolute by the loader, as every path key) */
  path: filePath('made'),
});

export type FileUpstreamConfig = Static<typeof fileUpstreamSchema>;
