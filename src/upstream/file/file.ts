import { mkdirSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { FileUpstreamConfig } from './config.js';
import type { OutboxRow } from '../../outbox/outbox.js';
import type { Upstream } from '../upstream.js';

/** Appends records as JSON lines; a send is acknowledged once the lines are fsynced. */
export class FileUpstream implements Upstream {
  readonly name: string;
  readonly connected = true;
  readonly window = 1;
  private handle: Promise<FileHandle> | undefined;
  /** Sends are written one after another, so lines keep the outbox's order. */
  private tail: Promise<void> = Promise.resolve();

  constructor(private readonly config: FileUpstreamConfig) {
    this.name = config.name;
  }

  onConnect(): void {}

  send(rows: OutboxRow[]): Promise<void> {
    const written = this.tail.then(() => this.append(rows));
    this.tail = written.catch(() => undefined);
    return written;
  }

  private async append(rows: OutboxRow[]): Promise<void> {
    if (!this.handle) {
      mkdirSync(dirname(this.config.path), { recursive: true });
      this.handle = open(this.config.path, 'a');
      this.handle.catch(() => (this.handle = undefined));
    }
    const file = await this.handle;
    let text = '';
    for (const row of rows) text += row.payload + '\n';
    await file.appendFile(text);
    await file.sync();
  }

  async close(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    if (handle) await (await handle.catch(() => undefined))?.close();
  }
}
