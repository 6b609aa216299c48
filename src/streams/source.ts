import type { StreamConfig } from '../config/types.js';

/**
 * Which devices a stream reads: `from.device` (an id, or a glob such as `pump-*`, where `*`
 * is any run of characters and `?` one), or `from.devices` (a list of ids). Globs match
 * configured ids: a template device (`plug-{1}`) matches with its template id, and then every
 * device it makes is read.
 */
export function deviceMatcher(from: StreamConfig['from']): (device: string) => boolean {
  if (from.devices) {
    const ids = new Set(from.devices);
    return (device) => ids.has(device);
  }
  const { device } = from;
  if (device === undefined) return () => false;
  if (!isGlob(device)) return (id) => id === device;
  const pattern = new RegExp(`^${device.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  return (id) => pattern.test(id);
}

export function isGlob(device: string): boolean {
  return device.includes('*') || device.includes('?');
}
