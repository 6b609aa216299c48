import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { connectors } from '../src/connectors/index.js';
import { loadConfigFile } from '../src/config/load.js';
import { validateConfig } from '../src/streams/build.js';
import { upstreams } from '../src/upstream/index.js';

/**
 * Every plugin folder (a folder of src/connectors or src/upstream with a config.ts) documents
 * itself: a sample.yaml that the real loader accepts, and a README.md with a row per key of the
 * schema of every plugin its sample uses (`| \`points[].area\` | default | … |`), default included.
 */
const families = [
  { dir: 'src/connectors', section: 'devices', field: 'protocol', registry: connectors as Record<string, { schema: object }> },
  { dir: 'src/upstream', section: 'upstream', field: 'type', registry: upstreams as Record<string, { schema: object }> },
] as const;

const folders = families.flatMap((family) =>
  readdirSync(family.dir, { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && existsSync(join(family.dir, entry.name, 'config.ts')))
    .map((entry) => ({ ...family, folder: join(family.dir, entry.name) })),
);

interface Schema {
  properties?: Record<string, Schema>;
  items?: Schema;
  default?: unknown;
}

/** Every key of a schema as a README names it (`serial.baud`, `points[].area`), with its default as written in YAML. */
function keysOf(schema: Schema, prefix = ''): { key: string; fallback?: string }[] {
  return Object.entries(schema.properties ?? {}).flatMap(([key, sub]) => {
    const path = prefix + key;
    const fallback = sub.default === undefined || typeof sub.default === 'object' ? undefined : String(sub.default);
    const nested = sub.properties ? keysOf(sub, `${path}.`) : sub.items?.properties ? keysOf(sub.items, `${path}[].`) : [];
    return [{ key: path, fallback }, ...nested];
  });
}

describe('plugin folders', () => {
  it('finds the plugin folders', () => {
    expect(folders.map((f) => f.folder)).toEqual(expect.arrayContaining(['src/connectors/modbus', 'src/connectors/opcua', 'src/upstream/kafka', 'src/upstream/file']));
  });

  for (const { folder, section, field, registry } of folders) {
    describe(folder, () => {
      it('has a sample.yaml that the loader accepts', () => {
        const loaded = loadConfigFile(join(folder, 'sample.yaml'), {});
        validateConfig(loaded);
        expect(loaded.config[section].length).toBeGreaterThan(0);
      });

      it('has a README.md with a row for every key of its schema, with its default', () => {
        const readme = readFileSync(join(folder, 'README.md'), 'utf8');
        const rows = new Map(readme.split('\n').flatMap((line) => {
          const m = /^\|\s*`([^`]+)`\s*\|/.exec(line);
          return m ? [[m[1], line] as const] : [];
        }));
        const used = new Set(loadConfigFile(join(folder, 'sample.yaml'), {}).config[section].map((p: Record<string, unknown>) => String(p[field])));
        const problems: string[] = [];
        for (const kind of used) {
          for (const { key, fallback } of keysOf(registry[kind].schema as Schema)) {
            const row = rows.get(key);
            if (!row) problems.push(`${kind}: no row for \`${key}\``);
            else if (fallback !== undefined && !row.split('|')[2].includes(fallback)) problems.push(`${kind}: the row of \`${key}\` does not give its default ${fallback}`);
          }
        }
        expect(problems).toEqual([]);
      });
    });
  }

  it('every registered protocol and upstream type is shown in some sample', () => {
    for (const { dir, section, field, registry } of families) {
      const shown = new Set(
        folders
          .filter((f) => f.dir === dir)
          .flatMap((f) => loadConfigFile(join(f.folder, 'sample.yaml'), {}).config[section].map((p: Record<string, unknown>) => String(p[field]))),
      );
      expect([...shown].sort(), dir).toEqual(Object.keys(registry).sort());
    }
  });
});
