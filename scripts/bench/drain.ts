// What the outbox benchmarks share: an outbox of their own, and the time a forwarder takes to
// empty it into an upstream.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase, type OpenedDatabase } from '../../src/outbox/database.js';
import { Forwarder } from '../../src/upstream/forwarder.js';
import { Outbox } from '../../src/outbox/outbox.js';
import { StateStore } from '../../src/streams/state.js';
import type { Logger } from 'pino';
import type { OutboxConfig } from '../../src/config/types.js';
import type { Reading } from '../../src/core/reading.js';
import type { Upstream } from '../../src/upstream/upstream.js';

export const benchOutboxConfig: OutboxConfig = { max_size: 8 * 1024 ** 3, max_age: 7 * 86_400_000, when_full: 'drop-oldest', durability: 'normal', group_records: 1000, group_wait: 10 };

/** An outbox (with its stream state store) in `dir`, as the agent opens it. */
export function openOutbox(dir: string, log: Logger): { db: OpenedDatabase['db']; outbox: Outbox } {
  const { db } = openDatabase(dir, { durability: 'normal', maxSize: benchOutboxConfig.max_size }, log);
  let outbox: Outbox | undefined;
  const state = new StateStore(db, () => outbox?.scheduleCommit());
  outbox = new Outbox(db, benchOutboxConfig, 'gw-bench', state, log);
  return { db, outbox };
}

/** Seconds from the forwarder's start until the outbox holds nothing for `upstream`; throws on failed sends. */
export async function timeDrain(outbox: Outbox, upstream: Upstream, log: Logger): Promise<number> {
  const forwarder = new Forwarder(outbox, upstream, log);
  const started = process.hrtime.bigint();
  forwarder.start();
  while (outbox.depth(upstream.name) > 0) await new Promise((r) => setTimeout(r, 5));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await forwarder.stop();
  await upstream.close();
  if (forwarder.errors || forwarder.deadLettered) throw new Error(`${forwarder.errors} failed sends, ${forwarder.deadLettered} dead-lettered`);
  return seconds;
}

/**
 * Records/s from a fresh outbox holding `records` readings (`reading(i)` for upstream `name`)
 * into the upstream `connect()` gives, counted until the last is acknowledged.
 */
export async function drainRate(
  records: number,
  reading: (i: number) => Reading,
  name: string,
  connect: () => Upstream | Promise<Upstream>,
  log: Logger,
): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-drain-'));
  const { db, outbox } = openOutbox(dir, log);
  for (let i = 0; i < records; i++) outbox.add([name], 'power-15m', reading(i));
  outbox.commit();
  const seconds = await timeDrain(outbox, await connect(), log);
  outbox.close();
  db.close();
  rmSync(dir, { recursive: true });
  return records / seconds;
}

export const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
export const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
