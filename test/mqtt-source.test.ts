import mqtt from 'mqtt';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DeviceConfig } from '../src/config/types.js';
import type { Connector } from '../src/connectors/connector.js';
import { createMqttDevice } from '../src/connectors/mqtt/mqtt.js';
import { atPath, fillLevels, matchTopic } from '../src/connectors/mqtt/topics.js';
import type { Reading } from '../src/core/reading.js';
import { Mosquitto } from './support/mosquitto.js';
import { until } from './support/ports.js';

let broker: Mosquitto;
let publisher: mqtt.MqttClient;
beforeAll(async () => {
  broker = await Mosquitto.start();
  publisher = await mqtt.connectAsync(broker.url, { clientId: 'test-publisher' });
});
afterAll(async () => {
  await publisher?.endAsync();
  await broker?.stop('SIGKILL');
});

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function device(config: Partial<DeviceConfig> & { points: DeviceConfig['points'] }) {
  const lines: string[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
  const readings: Reading[] = [];
  const connector: Connector & { malformed?: number } = await createMqttDevice({ id: 'room', protocol: 'mqtt', broker: broker.url, ...config }, { log, agentId: 'gw' });
  cleanups.push(() => connector.stop());
  connector.start((r) => readings.push(r));
  await until(() => connector.online, 5000, 'the MQTT device to connect');
  await new Promise((r) => setTimeout(r, 100)); // subscriptions
  return { connector, readings, lines };
}

const publish = (topic: string, payload: string, retain = false) => publisher.publishAsync(topic, payload, { qos: 1, retain });

describe('MQTT topic helpers', () => {
  it('matches filters with + and #, fills templates, follows JSON paths', () => {
    expect(matchTopic('shellies/+/relay/0/power', 'shellies/plug-7/relay/0/power')).toEqual(['plug-7']);
    expect(matchTopic('a/#', 'a/b/c')).toEqual(['b/c']);
    expect(matchTopic('a/+', 'a/b/c')).toBeUndefined();
    expect(matchTopic('a/b', 'a/b')).toEqual([]);
    expect(fillLevels('plug-{1}', ['7'])).toBe('plug-7');
    expect(atPath({ a: { b: [{ c: 3 }] } }, 'a.b[0].c')).toBe(3);
    expect(atPath({ a: 1 }, 'constructor')).toBeUndefined();
    expect(atPath({ a: 1 }, '__proto__')).toBeUndefined();
  });
});

describe('MQTT sensors', () => {
  it('reads JSON fields by path and plain payloads (numbers, true/false/on/off)', async () => {
    const { readings } = await device({
      points: [
        { name: 'temperature', topic: 'zigbee2mqtt/room_sensor', json: 'temperature' },
        { name: 'battery', topic: 'zigbee2mqtt/room_sensor', json: 'device.battery[0]' },
        { name: 'door_open', topic: 'sensors/door/state' },
        { name: 'power', topic: 'sensors/power' },
      ],
    });
    await publish('zigbee2mqtt/room_sensor', JSON.stringify({ temperature: 21.5, device: { battery: [87] } }));
    await publish('sensors/door/state', 'ON');
    await publish('sensors/power', ' 1234.5 ');
    await until(() => readings.length >= 3, 5000, 'three readings');
    expect(readings.map((r) => r.values)).toEqual([{ temperature: 21.5, battery: 87 }, { door_open: true }, { power: 1234.5 }]);
  });

  it('makes one device per matched topic level from a template id', async () => {
    const { readings } = await device({ id: 'plug-{1}', points: [{ name: 'power_w', topic: 'shellies/+/relay/0/power' }] });
    await publish('shellies/kitchen/relay/0/power', '12.5');
    await publish('shellies/office/relay/0/power', '80');
    await until(() => readings.length >= 2, 5000, 'two plugs');
    expect(readings.map((r) => [r.device, r.values.power_w])).toEqual([
      ['plug-kitchen', 12.5],
      ['plug-office', 80],
    ]);
  });

  it('takes the timestamp from the payload when the sensor sends one', async () => {
    const { readings } = await device({ points: [{ name: 't', topic: 'ts/+', json: 'v', ts: 'time' }] });
    await publish('ts/s', JSON.stringify({ v: 1, time: 1763719200 }));
    await publish('ts/ms', JSON.stringify({ v: 2, time: 1763719200123 }));
    await publish('ts/iso', JSON.stringify({ v: 3, time: '2025-11-21T10:00:00.500Z' }));
    await until(() => readings.length >= 3, 5000, 'three readings');
    expect(readings.map((r) => r.ts)).toEqual([1763719200000, 1763719200123, Date.parse('2025-11-21T10:00:00.500Z')]);
  });

  it('counts a malformed payload, logs it once per episode with its topic, and keeps going', async () => {
    const { readings, lines, connector } = await device({ points: [{ name: 'temperature', topic: 'bad/sensor', json: 'temperature' }] });
    for (const payload of ['{not json', '{"temperature": {"nested": 1}}', '[]', '{}']) await publish('bad/sensor', payload);
    await publish('bad/sensor', '{"temperature": 20}');
    await until(() => readings.length >= 1, 5000, 'the good reading');
    expect(readings[0].values).toEqual({ temperature: 20 });
    expect(connector.malformed).toBe(4);
    const warnings = lines.filter((l) => l.includes('malformed payload on bad/sensor'));
    expect(warnings).toHaveLength(1);
  });

  it('makes at most max_devices devices from a template: the messages of new ones past it are dropped, counted and logged once', async () => {
    const { readings, lines, connector } = await device({ id: 'plug-{1}', max_devices: 3, points: [{ name: 'power_w', topic: 'capped/+/power' }] });
    for (let i = 0; i < 10; i++) await publish(`capped/p${i}/power`, String(i));
    await publish('capped/p1/power', '100'); // a device already made still reads
    await until(() => readings.some((r) => r.values.power_w === 100), 5000, 'p1 again');
    expect(readings.map((r) => r.device)).toEqual(['plug-p0', 'plug-p1', 'plug-p2', 'plug-p1']);
    expect((connector as unknown as { refusedDevices: number }).refusedDevices).toBe(7);
    expect(lines.filter((l) => l.includes('max_devices'))).toHaveLength(1);
  });

  it('a sensor that leaves out one configured field logs once per episode; the episode ends when the field is back', async () => {
    const { readings, lines } = await device({
      points: [
        { name: 'temperature', topic: 'z2m/th', json: 'temperature' },
        { name: 'humidity', topic: 'z2m/th', json: 'humidity' },
      ],
    });
    for (let i = 0; i < 20; i++) await publish('z2m/th', JSON.stringify({ temperature: 20 + i }));
    await publish('z2m/th', JSON.stringify({ temperature: 1, humidity: 50 }));
    await publish('z2m/th', JSON.stringify({ temperature: 2 }));
    await until(() => readings.length >= 22, 5000, 'all readings');
    const missing = lines.filter((l) => l.includes('no value at \\"humidity\\"'));
    expect(missing).toHaveLength(2); // the first episode, then the second after the field came back
    expect(lines.filter((l) => l.includes('readable again after 20 malformed'))).toHaveLength(1);
  });

  it('remembers at most 1000 bad topics and logs them at most that many times, however many there are', async () => {
    const { lines, connector } = await device({ points: [{ name: 'v', topic: 'flood/+', json: 'v' }] });
    const flooder = await mqtt.connectAsync(broker.url, { clientId: 'test-flooder' });
    cleanups.push(() => flooder.endAsync());
    for (let i = 0; i < 3000; i++) flooder.publish(`flood/${i}`, '{bad');
    await flooder.publishAsync('flood/last', '{bad', { qos: 1 });
    await until(() => connector.malformed! >= 3001, 20_000, 'every malformed payload counted');
    const warnings = lines.filter((l) => l.includes('malformed payload'));
    expect(warnings).toHaveLength(1001); // 1000 topics, then one line for all the others
    expect(warnings.at(-1)).toContain('more than 1000 topics');
  });

  it('reads a topic matched by points of different filters the same at every message, and topics too long to remember as well', async () => {
    const { readings } = await device({
      id: 'plant-{1}',
      points: [
        { name: 'level', topic: 'plant/+/tank', json: 'level' },
        { name: 'raw', topic: 'plant/#' },
        { name: '__proto__', topic: 'plant/+/tank', json: 'proto' },
      ],
    });
    const long = `plant/${'x'.repeat(300)}/tank`;
    for (let i = 0; i < 3; i++) {
      await publish('plant/a/tank', JSON.stringify({ level: i, proto: 10 + i }));
      await publish('plant/b/other', String(i));
      await publish(long, JSON.stringify({ level: i }));
    }
    await until(() => readings.length === 9, 5000, 'nine readings');
    // the device id comes from the first point that matched: `plant/+/tank` gives `a`, `plant/#` gives `b/other`
    const of = (device: string) => readings.filter((r) => r.device === device);
    expect(of('plant-a').map((r) => ({ ...r.values }))).toEqual([0, 1, 2].map((i) => ({ level: i, raw: JSON.stringify({ level: i, proto: 10 + i }), ['__proto__']: 10 + i })));
    expect(Object.hasOwn(of('plant-a')[0].values, '__proto__')).toBe(true);
    expect(of('plant-b/other').map((r) => r.values)).toEqual([{ raw: 0 }, { raw: 1 }, { raw: 2 }]);
    expect(of(`plant-${'x'.repeat(300)}`).map((r) => r.values.level)).toEqual([0, 1, 2]);
  });

  it('starts from the retained value', async () => {
    await publish('retained/level', '42', true);
    const { readings } = await device({ points: [{ name: 'level', topic: 'retained/level' }] });
    await until(() => readings.length >= 1, 5000, 'the retained value');
    expect(readings[0].values.level).toBe(42);
    await publish('retained/level', '', true); // clear it
  });

  it('writes by publishing to the command topic', async () => {
    const received: string[] = [];
    const listener = await mqtt.connectAsync(broker.url);
    cleanups.push(() => listener.endAsync());
    await listener.subscribeAsync('cmnd/plug/POWER');
    listener.on('message', (_t, payload) => received.push(payload.toString()));
    const { connector } = await device({ points: [{ name: 'relay', topic: 'stat/plug/POWER', command_topic: 'cmnd/plug/POWER', writable: true }, { name: 'ro', topic: 'x' }] });
    await connector.write('relay', 'OFF');
    await connector.write('relay', true);
    await until(() => received.length >= 2, 5000, 'two commands');
    expect(received).toEqual(['OFF', 'true']);
    await expect(connector.write('ro', 1)).rejects.toThrow('device room, point ro: the point is not writable (it needs writable: true and a command_topic)');
  });
});

describe('random and adversarial MQTT payloads (fast-check)', () => {
  it('never crash the device: each is a reading or a counted rejection', async () => {
    const fc = (await import('fast-check')).default;
    const payloads = fc.sample(
      fc.oneof(fc.string(), fc.json(), fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b).toString('latin1')), fc.constantFrom('{"temperature":', '{"temperature": NaN}', '{"__proto__": {"temperature": 1}}', '{"constructor": 1}', '\u0000', 'null', '[1,2]', '"text"', '{"temperature": "21.5"}', '{"temperature": 1e400}')),
      300,
    );
    const { readings, connector } = await device({ points: [{ name: 'temperature', topic: 'fuzz/sensor', json: 'temperature' }] });
    for (const payload of payloads) await publish('fuzz/sensor', payload);
    await publish('fuzz/sensor', '{"temperature": 19}');
    await until(() => readings.some((r) => r.values.temperature === 19), 10_000, 'the last, good reading');
    expect(readings.length + connector.malformed!).toBe(payloads.length + 1);
    expect(connector.online).toBe(true);
  });
});
