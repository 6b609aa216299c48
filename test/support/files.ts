import { readFileSync } from 'node:fs';

/** The records of a JSON-lines file; none while it does not exist yet. */
export function readJsonLines(file: string): any[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return text.split('\n').filter(Boolean).map((line) => JSON.parse(line));
}
