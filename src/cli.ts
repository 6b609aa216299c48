#!/usr/bin/env node
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { readEd25519Key, signedPush } from './manage/signing.js';
import pino from 'pino';
import type { Agent } from './agent/agent.js';
import { ConfigError, formatIssue } from './core/config-error.js';
import { loadConfigFile, missingFiles } from './config/load.js';
import { validateConfig } from './streams/build.js';
import { replay, ReplayInputError } from './replay.js';
import { notifySystemd, startWatchdog } from './service/systemd.js';
import { startAgent } from './start.js';

const USAGE = `usage: edge-agent <command> [options]

commands:
  run [--config FILE]        start the agent (default config: config/agent.yaml)
  validate [FILE]            check a config file; exit 0 when good, 1 with the errors
                             (--config FILE works too)
  replay --config FILE --input FILE.csv [--order time|file] [--flush]
                             run the config's streams over recorded data (CSV: ts,device,point,value)
                             and print the upstream records as JSON lines; actions are printed,
                             not performed. --order file keeps the file's row order (late and
                             out-of-order data); the default sorts the rows by time.
                             A header ts,device,point,value,arrival adds when each reading
                             reached the agent. --flush emits open windows, energy and
                             episodes at the end
  sign-config --key PRIVATE.pem [--target ID] [--new-id ID] FILE
                             print FILE as a signed config push (JSON) for remote_config, for
                             the gateway whose agent.id is ID (default: FILE's agent.id); only
                             that gateway applies it. --new-id: the push renames the gateway
                             (FILE's agent.id must be that ID)
  keygen DIR                 write an Ed25519 key pair for config pushes:
                             DIR/config-signing.key (keep it safe) and DIR/config-signing.pub
  help                       this text`;

const DEFAULT_CONFIG = 'config/agent.yaml';

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      input: { type: 'string', short: 'i' },
      order: { type: 'string' },
      flush: { type: 'boolean' },
      key: { type: 'string', short: 'k' },
      target: { type: 'string', short: 't' },
      'new-id': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [command, ...rest] = positionals;
  if (values.help || !command || command === 'help') {
    console.log(USAGE);
    return command || values.help ? 0 : 2;
  }
  const file = values.config ?? rest[0] ?? DEFAULT_CONFIG;
  switch (command) {
    case 'validate':
      return validate(file);
    case 'run':
      return run(file);
    case 'replay':
      return replayCommand(file, values.input, values.order, values.flush);
    case 'sign-config':
      return signConfig(rest[0], values.key, values.target, values['new-id']);
    case 'keygen':
      return keygen(rest[0]);
    default:
      console.error(`edge-agent: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

function validate(file: string): number {
  try {
    const loaded = loadConfigFile(file);
    validateConfig(loaded);
    // the files it names (keys, certificates, trust_dir) are there: this is the gateway checking its own config
    const missing = missingFiles(loaded);
    if (missing.length > 0) throw new ConfigError(missing);
    const { devices, streams, upstream } = loaded.config;
    console.log(`${file}: ok (${devices.length} devices, ${streams.length} streams, ${upstream.length} upstreams)`);
    return 0;
  } catch (err) {
    // whatever a config makes fail is a bad config: said plainly, exit 1, never a stack trace
    const issues = err instanceof ConfigError ? err.issues : [{ file, path: '', message: `cannot check the config: ${(err as Error)?.message ?? String(err)}` }];
    for (const issue of issues) console.error(formatIssue(issue));
    console.error(`${file}: ${issues.length} error${issues.length === 1 ? '' : 's'}`);
    return 1;
  }
}

async function replayCommand(file: string, input: string | undefined, order = 'time', flushAtEnd = false): Promise<number> {
  if (!input) {
    console.error('edge-agent replay: --input FILE.csv is required');
    return 2;
  }
  if (order !== 'time' && order !== 'file') {
    console.error(`edge-agent replay: --order takes time or file, not "${order}"`);
    return 2;
  }
  try {
    const out = { lines: [] as string[] };
    const print = () => {
      if (out.lines.length) process.stdout.write(out.lines.join('\n') + '\n');
      out.lines = [];
    };
    const summary = replay(
      file,
      input,
      (line) => {
        out.lines.push(line);
        if (out.lines.length >= 1000) print();
      },
      { order, flush: flushAtEnd },
    );
    // actions are reported from a promise: let them print before the summary
    await new Promise((resolve) => setImmediate(resolve));
    print();
    console.error(`replayed ${summary.readings} readings from ${input}: ${summary.records} records, ${summary.actions} actions`);
    return 0;
  } catch (err) {
    if (err instanceof ConfigError || err instanceof ReplayInputError) {
      console.error(err.message);
      return 1;
    }
    throw err;
  }
}

function signConfig(file: string | undefined, keyFile: string | undefined, target: string | undefined, newId: string | undefined): number {
  if (!file || !keyFile) {
    console.error('usage: edge-agent sign-config --key PRIVATE.pem [--target ID] [--new-id ID] FILE');
    return 2;
  }
  // The push carries the bytes as they are: what was validated is what was signed.
  const loaded = loadConfigFile(file, {});
  validateConfig(loaded);
  const { text, config } = loaded;
  const id = config.agent.id;
  if (newId !== undefined && newId !== id) {
    console.error(`edge-agent sign-config: --new-id ${newId}, but ${file} says agent.id ${id}`);
    return 2;
  }
  if (newId === undefined && target !== undefined && target !== id) {
    // the gateway would refuse it: a push changes agent.id only when it says so
    console.error(`edge-agent sign-config: ${file} says agent.id ${id}, not ${target}: add --new-id ${id} to rename ${target}, or sign it for ${id}`);
    return 2;
  }
  if (newId !== undefined && target === undefined) {
    console.error('edge-agent sign-config: --new-id needs --target, the agent.id the gateway has now');
    return 2;
  }
  console.log(signedPush(text, readEd25519Key(keyFile, 'private'), target ?? id, newId));
  return 0;
}

function keygen(dir: string | undefined): number {
  if (!dir) {
    console.error('usage: edge-agent keygen DIR');
    return 2;
  }
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  writeFileSync(join(dir, 'config-signing.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
  writeFileSync(join(dir, 'config-signing.pub'), publicKey.export({ type: 'spki', format: 'pem' }), { flag: 'wx' });
  console.log(`${join(dir, 'config-signing.key')}: the private key (sign-config --key); ${join(dir, 'config-signing.pub')}: remote_config.public_key`);
  return 0;
}

async function run(file: string): Promise<number> {
  const log = pino({ base: { pid: process.pid } });
  const stopped = new Promise<number>((resolve) => {
    // Installed before the agent starts, so a SIGTERM during start-up still stops it cleanly.
    let stopping = false;
    const shutdown = async (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info(`${signal}: stopping`);
      notifySystemd('STOPPING=1', log);
      const agent = await starting.catch(() => undefined);
      if (!agent) return;
      await reloading;
      await agent.stop();
      log.info('stopped');
      resolve(0);
    };
    process.on('SIGTERM', () => void shutdown('SIGTERM'));
    process.on('SIGINT', () => void shutdown('SIGINT'));
  });
  let reloading: Promise<void> = Promise.resolve();
  const starting = startAgent(file, log);

  let agent: Agent;
  try {
    agent = await starting;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const issue of err.issues) log.fatal({ file: issue.file, line: issue.line, path: issue.path }, formatIssue(issue));
    // A config error will not mend itself: EX_CONFIG, which the unit's RestartPreventExitStatus names.
    return 78;
  }
  notifySystemd('READY=1', log);
  let wasHealthy = true;
  const stopWatchdog = startWatchdog((interval) => {
    const healthy = agent.healthy(interval);
    if (healthy !== wasHealthy) {
      if (healthy) log.info('forwarding makes progress again: watchdog pings resume');
      else log.error(`a forwarding loop has made no progress for ${interval} ms: watchdog pings stop`);
    }
    wasHealthy = healthy;
    return healthy;
  }, log);

  process.on('SIGHUP', () => {
    reloading = reloading.then(async () => {
      notifySystemd('RELOADING=1', log);
      await agent.reloadLogged('SIGHUP');
      notifySystemd('READY=1', log);
    });
  });

  const code = await stopped;
  stopWatchdog();
  return code;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    console.error(err);
    process.exitCode = 1;
  },
);
