import { closeSync, copyFileSync, existsSync, fsyncSync, openSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { LoadedConfig } from '../config/load.js';
import type { ConfigChange, ManagedAgent } from './managed-agent.js';

/** The config file could not be written: nothing was applied. */
export class NotWritten extends Error {
  constructor(file: string, cause: Error) {
    super(`cannot write ${file} (the agent needs write access to its directory): ${cause.message}`, { cause });
    this.name = 'NotWritten';
  }
}

/**
 * The one way a change from outside (a signed push, the REST API) becomes the running config:
 * validated first (an invalid config leaves the file alone: ConfigError), then `loaded.text`
 * written over the config file atomically, the previous file kept as `<file>.bak`, then applied
 * (only what differs restarted). When the apply fails (RolledBack), the file goes back to what
 * runs, so that a restart runs what runs now, and the error is thrown. Call it from a step of
 * `agent.oneAtATime`.
 */
export async function writeAndApply(agent: ManagedAgent, loaded: LoadedConfig, source: string): Promise<ConfigChange> {
  const file = agent.file;
  agent.validate(loaded);
  try {
    writeAtomically(file, loaded.text, `${file}.bak`);
  } catch (err) {
    throw new NotWritten(file, err as Error);
  }
  try {
    return await agent.applyInQueue(loaded, source);
  } catch (err) {
    writeAtomically(file, agent.text);
    throw err;
  }
}

/** Writes `text` to a temporary file, syncs it and renames it over `file`; `backup` gets a copy of the old file first. */
export function writeAtomically(file: string, text: string, backup?: string): void {
  if (backup && existsSync(file)) copyFileSync(file, backup);
  const temporary = `${file}.tmp-${process.pid}`;
  const fd = openSync(temporary, 'w', 0o640);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, file);
  const dir = openSync(dirname(file), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}
