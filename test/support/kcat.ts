import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

export interface ConsumedRecord {
  topic: string;
  partition: number;
  offset: number;
  key: string | null;
  payload: string | null;
  headers: Record<string, string>;
}

/**
 * Every record of a topic as kcat (librdkafka, a client independent of ours) reads it back:
 * from the beginning to the end of each partition. `extra` adds kcat options (-X for TLS, SASL).
 */
export async function kcatConsume(brokers: string, topic: string, extra: string[] = []): Promise<ConsumedRecord[]> {
  const { stdout } = await promisify(execFile)('kcat', ['-C', '-b', brokers, '-t', topic, '-o', 'beginning', '-e', '-q', '-J', '-X', 'topic.metadata.refresh.interval.ms=-1', ...extra], {
    maxBuffer: 512 * 1024 * 1024,
    timeout: 60_000,
  });
  return stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const record = JSON.parse(line) as ConsumedRecord & { headers?: string[] };
      const headers: Record<string, string> = {};
      // kcat -J prints headers as a flat [name, value, name, value, …] list
      for (let i = 0; i < (record.headers?.length ?? 0); i += 2) headers[record.headers![i]] = record.headers![i + 1];
      return { ...record, headers };
    });
}
