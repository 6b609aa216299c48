// MQTT source benchmark: 1,000 sensors (sensors/<n>/state, JSON {"temperature": …, "time": …})
// published by another process at QoS 0 as fast as Mosquitto takes them, received by one MQTT
// device with a template id (`sensor-{1}`, JSON path and payload timestamp) feeding a stream
// with a change step. Prints readings/s into the stream over BENCH_SECONDS (default 10).
import { spawn } from 'node:child_process';
import pino from 'pino';
import { createMqttDevice } from '../../src/connectors/mqtt/mqtt.js';
import { Stream } from '../../src/streams/stream.js';
import { buildStreams } from '../../src/streams/build.js';
import { parseConfig } from '../../src/config/load.js';
import { StateStore } from '../../src/streams/state.js';
import { LatestValues } from '../../src/core/latest.js';
import Database from 'better-sqlite3';
import { startMosquitto } from './mosquitto.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const SENSORS = 1000;

const broker = await startMosquitto(['max_queued_messages 100000']);
const { port, url } = broker;

const { config, ...loaded } = parseConfig(
  `agent: { id: bench }
devices:
  - id: "sensor-{1}"
    protocol: mqtt
    broker: ${url}
    points: [{ name: temperature, topic: "sensors/+/state", json: temperature, ts: time }]
streams:
  - { name: s, from: { device: "sensor-{1}" }, steps: [{ change: { point: temperature } }], to: [out] }
upstream: [{ name: out, type: file, path: /dev/null }]
`,
  'bench.yaml',
  {},
);
const streams = buildStreams({ config, ...loaded }, { now: Date.now, latest: new LatestValues() }, new StateStore(new Database(':memory:')));
const built = streams.get('s');
if (!built) throw new Error('the stream s was not built');
let inStream = 0;
const stream = new Stream(config.streams[0], built.steps, () => {});
const device = await createMqttDevice(config.devices[0], { log: pino({ level: 'silent' }), agentId: 'bench' });
device.start((reading) => {
  inStream++;
  stream.push(reading);
});
while (!device.online) await new Promise((r) => setTimeout(r, 20));
await new Promise((r) => setTimeout(r, 200));

// The publisher: another process that writes MQTT packets (CONNECT, then PUBLISH at QoS 0)
// straight to the socket from a prebuilt buffer, so that publishing costs next to nothing and
// the agent side is what the run measures.
const publisherCode = `
const net = require('node:net');
const str = (s) => { const b = Buffer.from(s); const l = Buffer.alloc(2); l.writeUInt16BE(b.length); return Buffer.concat([l, b]); };
const varint = (n) => { const out = []; do { let d = n % 128; n = Math.floor(n / 128); if (n > 0) d |= 128; out.push(d); } while (n > 0); return Buffer.from(out); };
const packet = (type, body) => Buffer.concat([Buffer.from([type]), varint(body.length), body]);
const connectBody = Buffer.concat([str('MQTT'), Buffer.from([4, 2, 0, 60]), str('pub-' + process.pid)]);
const messages = [];
for (let i = 0; i < 20000; i++) {
  const body = Buffer.concat([str('sensors/' + (i % ${SENSORS}) + '/state'), Buffer.from(JSON.stringify({ temperature: 20 + (i % 97) / 10, time: 1763719200000 + i }))]);
  messages.push(packet(0x30, body));
}
const burst = Buffer.concat(messages);
const socket = net.connect(${port}, '127.0.0.1', () => {
  socket.write(packet(0x10, connectBody));
  const pump = () => { while (socket.write(burst)) {} };
  socket.on('drain', pump);
  setTimeout(pump, 100);
});
socket.on('data', () => {});
socket.on('error', () => process.exit(0));`;
const publishers = [spawn(process.execPath, ['-e', publisherCode], { stdio: 'ignore' })];
await new Promise((r) => setTimeout(r, 2000)); // warm-up
const startCount = inStream;
const started = performance.now();
await new Promise((r) => setTimeout(r, SECONDS * 1000));
const rate = ((inStream - startCount) / (performance.now() - started)) * 1000;
for (const p of publishers) p.kill('SIGKILL');
await device.stop();
broker.stop();
console.log(`MQTT source, ${SENSORS} sensors publishing JSON at QoS 0 (raw MQTT from another process), over ${SECONDS} s: ${Math.round(rate).toLocaleString('en-US')} readings/s into the stream (target >= 50,000)`);
process.exit(0);
