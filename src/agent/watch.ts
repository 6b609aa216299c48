import { readFileSync, watch } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Logger } from 'pino';

/**
 * Calls `changed(text)` when the config file's content changes on disk, once it has been quiet
 * for 300 ms (editors write in steps; a push writes a temporary file and renames it). Watches
 * the directory, so a file replaced by a rename is still seen. Returns a function that stops.
 */
export function watchConfigFile(file: string, changed: (text: string) => void, log: Logger): () => void {
  let quiet: NodeJS.Timeout | undefined;
  const cannotWatch = (err: Error) => log.warn({ err: err.message }, `cannot watch ${file} for changes: ${err.message}; SIGHUP reloads it`);
  try {
    const watcher = watch(dirname(file), (_event, name) => {
      if (name !== basename(file)) return;
      clearTimeout(quiet);
      quiet = setTimeout(() => {
        let text: string;
        try {
          text = readFileSync(file, 'utf8');
        } catch {
          return; // being replaced: the rename will be seen too
        }
        changed(text);
      }, 300);
    });
    watcher.on('error', cannotWatch);
    return () => {
      clearTimeout(quiet);
      watcher.close();
    };
  } catch (err) {
    cannotWatch(err as Error);
    return () => {};
  }
}
