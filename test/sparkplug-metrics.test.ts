import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeviceBase } from '../src/connectors/connector.js';
import type { OutboxRow } from '../src/outbox/outbox.js';
import { SparkplugUpstream } from '../src/upstream/sparkplug/sparkplug.js';
import type { UpstreamContext } from '../src/upstream/upstream.js';
import { testLog } from './support/log.js';
import { Mosquitto } from './support/mosquitto.js';
import { until } from './support/ports.js';
import { SparkplugHost } from './support/sparkplug.js';

let broker: Mosquitto;
beforeAll(async () => {
  broker = await Mosquitto.start();
});
afterAll(async () => {
  await broker?.stop('SIGKILL');
});

/** A Modbus-like device: each point type the datatypes come from. */
const device: DeviceBase = {
  id: 'plc',
  protocol: 'modbus-tcp',
  points: [
    { name: 'i16', type: 'int16' },
    { name: 'u16', type: 'uint16' },
    { name: 'u32', type: 'uint32' },
    { name: 'i64', type: 'int64' },
    { name: 'f32', type: 'float32' },
    { name: 'f64', type: 'float64' },
    { name: 'flag', type: 'bool' },
    { name: 'scaled', type: 'int16', scale: 0.1 },
  ],
};

function upstream(group: string, aliases: boolean, dataDir = mkdtempSync(join(tmpdir(), 'sparkplug-metrics-')), more: Partial<UpstreamContext> = {}): SparkplugUpstream {
  const context: UpstreamContext = {
    dataDir,
    lastSeq: () => 0,
    device: (id) => (id === 'plc' ? device : undefined),
    write: async () => undefined,
    report: () => undefined,
    ...more,
  };
  return new SparkplugUpstream({ name: 'sp', type: 'sparkplug', url: broker.url, group_id: group, aliases, keepalive: 30_000 }, 'gw', testLog, context);
}

let id = 0;
function row(values: Record<string, unknown>, ts: number, quality?: Record<string, string>): OutboxRow {
  id++;
  return { id, stream: 'raw', device: 'plc', payload: JSON.stringify({ agent: 'gw', stream: 'raw', device: 'plc', ts, seq: id, values, quality }) };
}

/** A DEVICE_OFFLINE or DEVICE_ONLINE record, as connectors report them (stream `devices`). */
function status(online: boolean, ts: number): OutboxRow {
  id++;
  const event = { code: online ? 'DEVICE_ONLINE' : 'DEVICE_OFFLINE', severity: online ? 'info' : 'major', description: 'x', state: online ? 'cleared' : 'raised' };
  return { id, stream: 'devices', device: 'plc', payload: JSON.stringify({ agent: 'gw', stream: 'devices', device: 'plc', ts, seq: id, event }) };
}

describe('Sparkplug metrics (decoded with Eclipse Tahu)', () => {
  it('gives each value the datatype of its point where it fits, quality as a property, null as is_null, and a new DBIRTH when a value stops fitting', async () => {
    const host = await SparkplugHost.connect(broker.url, 'metrics');
    const sp = upstream('metrics', true);
    await until(() => sp.connected, 10_000, 'the session');
    const ts = 1_763_719_200_000;
    await sp.send([
      row({ i16: -5, u16: 65535, u32: 4_000_000_000, i64: 2 ** 40, f32: 1.5, f64: 0.1, flag: true, scaled: 12.3, text: 'a', window_avg: 3, missing: null }, ts, { f64: 'stale', window_avg: 'partial', missing: 'bad' }),
      row({ i16: 7 }, ts + 1000),
    ]);
    await sp.send([row({ i16: 2.5 }, ts + 2000)]);
    await until(() => host.of('DDATA').length >= 3, 10_000, 'three DDATA');
    await sp.close();
    await host.close();

    // the session's NBIRTH (nothing known yet); a new device: the birth sequence again, then its data;
    // a value that stops fitting its datatype: the birth sequence again, describing it as it is now
    const kinds = host.messages.map((m) => m.kind);
    expect(kinds).toEqual(['NBIRTH', 'NBIRTH', 'DBIRTH', 'DDATA', 'DDATA', 'NBIRTH', 'DBIRTH', 'DDATA', 'NDEATH']);
    const birth = host.messages[2];
    const byName = Object.fromEntries(birth.metrics.map((m) => [m.name, m]));
    expect(Object.fromEntries(birth.metrics.map((m) => [m.name, m.type]))).toEqual({
      'raw/i16': 'Int16', 'raw/u16': 'UInt16', 'raw/u32': 'UInt32', 'raw/i64': 'Int64', 'raw/f32': 'Float', 'raw/f64': 'Double', 'raw/flag': 'Boolean',
      'raw/scaled': 'Double', 'raw/text': 'String', 'raw/window_avg': 'Double', 'raw/missing': 'Double',
    });
    // the DBIRTH has the current values: the batch's latest (i16 7 at ts + 1000)
    expect([byName['raw/i16'].value, byName['raw/u16'].value, byName['raw/u32'].value, byName['raw/i64'].value]).toEqual([7, 65535, 4_000_000_000, 2 ** 40]);
    expect([byName['raw/f32'].value, byName['raw/f64'].value, byName['raw/scaled'].value, byName['raw/missing'].value]).toEqual([1.5, 0.1, 12.3, null]);
    // Sparkplug's quality codes (0, 192, 500 only), with the agent's own word beside
    const quality = (name: string) => [byName[name].quality, byName[name].edgeQuality];
    expect([quality('raw/f64'), quality('raw/window_avg'), quality('raw/missing'), quality('raw/i16')]).toEqual([
      [500, 'stale'], [192, 'partial'], [0, 'bad'], [undefined, undefined],
    ]);
    for (const m of birth.metrics) expect(m.timestamp).toBe(m.name === 'raw/i16' ? ts + 1000 : ts);
    expect(host.messages[3].metrics[0]).toMatchObject({ alias: byName['raw/i16'].alias, type: 'Int16', value: -5, timestamp: ts });
    // aliases 1…n, unique; the DDATA names them by alias only, with the readings' timestamps
    expect(new Set(birth.metrics.map((m) => m.alias)).size).toBe(birth.metrics.length);
    const second = host.messages[4];
    expect(second.metrics).toEqual([{ alias: byName['raw/i16'].alias, timestamp: ts + 1000, type: 'Int16', value: 7, isHistorical: undefined, name: undefined, quality: undefined, edgeQuality: undefined }]);
    // 2.5 does not fit Int16: the device is described again (Double) before the data
    const rebirth = host.messages[6];
    expect(rebirth.metrics.find((m) => m.name === 'raw/i16')).toMatchObject({ type: 'Double', value: 2.5, alias: byName['raw/i16'].alias });
    expect(host.messages[7].metrics[0]).toMatchObject({ type: 'Double', value: 2.5 });
  });

  it('names metrics in DDATA when aliases: false', async () => {
    const host = await SparkplugHost.connect(broker.url, 'names');
    const sp = upstream('names', false);
    await until(() => sp.connected, 10_000, 'the session');
    await sp.send([row({ i16: 1 }, 1_763_719_200_000), row({ i16: 2 }, 1_763_719_201_000)]);
    await until(() => host.of('DDATA').length >= 2, 10_000, 'two DDATA');
    await sp.close();
    await host.close();
    expect(host.of('DBIRTH')[0].metrics.map((m) => m.name)).toEqual(['raw/i16']);
    expect(host.of('DDATA').map((m) => m.metrics.map((x) => [x.name, x.alias, x.value]))).toEqual([[['raw/i16', undefined, 1]], [['raw/i16', undefined, 2]]]);
  });

  it('wraps bdSeq from 255 to 0, and saves it before the CONNECT', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sparkplug-bdseq-'));
    writeFileSync(join(dir, 'sparkplug-sp.bdseq'), '255\n');
    const host = await SparkplugHost.connect(broker.url, 'wrap');
    const sp = upstream('wrap', true, dir);
    expect(readFileSync(join(dir, 'sparkplug-sp.bdseq'), 'utf8').trim()).toBe('0');
    await until(() => host.of('NBIRTH').length >= 1, 10_000, 'the NBIRTH');
    await sp.close();
    await host.close();
    expect(host.of('NBIRTH')[0].metrics.find((m) => m.name === 'bdSeq')!.value).toBe(0);
  });

  it('marks historical only what the outbox held when the session began (a Rebirth changes nothing), and births a dead device again with its next data', async () => {
    const host = await SparkplugHost.connect(broker.url, 'held');
    id = 100;
    let outboxSeq = 102;
    const sp = upstream('held', true, undefined, { lastSeq: () => outboxSeq });
    await until(() => sp.connected, 10_000, 'the session');
    const ts = 1_763_719_200_000;
    await sp.send([row({ i16: 1 }, ts), row({ i16: 2 }, ts + 1)]); // seq 101, 102: held
    outboxSeq = 105; // records 103…105 came meanwhile
    await host.command('spBv1.0/held/NCMD/gw', [{ name: 'Node Control/Rebirth', type: 'Boolean', value: true }]);
    await until(() => host.of('NBIRTH').length >= 3, 10_000, 'the rebirth');
    await sp.send([row({ i16: 3 }, ts + 2), status(false, ts + 3), row({ i16: 4 }, ts + 4)]); // 103…105: live
    await until(() => host.of('DDATA').length >= 4, 10_000, 'four DDATA');
    await sp.close();
    await host.close();
    expect(host.of('DDATA').map((m) => [m.metrics[0].value, m.metrics[0].isHistorical === true])).toEqual([[1, true], [2, true], [3, false], [4, false]]);
    // offline: DDEATH; its next data: DBIRTH first (the device's session starts again)
    const tail = host.messages.filter((m) => m.kind !== 'NCMD').slice(-5).map((m) => m.kind);
    expect(tail).toEqual(['DDATA', 'DDEATH', 'DBIRTH', 'DDATA', 'NDEATH']);
  });

  it('reports a DCMD write the connector refuses as a failed ACTION event, and writes nothing for a refused metric', async () => {
    const host = await SparkplugHost.connect(broker.url, 'cmd');
    const writes: string[] = [];
    const reports: Record<string, unknown>[] = [];
    const writableDevice: DeviceBase = { ...device, points: [...device.points, { name: 'sp', type: 'int16', writable: true }] };
    const sp = upstream('cmd', true, undefined, {
      device: () => writableDevice,
      write: async (dev, point, value) => {
        writes.push(`${dev}.${point}=${value}`);
        throw new Error('exception 2 (illegal data address)');
      },
      report: (event) => void reports.push(event.event!),
    });
    await until(() => sp.connected, 10_000, 'the session');
    await sp.send([row({ sp: 5, i16: 1 }, 1_763_719_200_000)]);
    await until(() => host.of('DBIRTH').length >= 1, 10_000, 'the DBIRTH');
    await host.command('spBv1.0/cmd/DCMD/gw/plc', [{ name: 'raw/sp', type: 'Int16', value: 9 }, { name: 'raw/i16', type: 'Int16', value: 9 }]);
    await until(() => reports.length >= 1, 10_000, 'the ACTION event');
    await sp.close();
    await host.close();
    expect(writes).toEqual(['plc.sp=9']);
    expect(reports).toEqual([
      expect.objectContaining({ code: 'ACTION', severity: 'major', point: 'sp', value: 9, ok: false, error: 'exception 2 (illegal data address)', source: 'sparkplug sp' }),
    ]);
  });
});
