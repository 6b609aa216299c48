#!/usr/bin/env node
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { readEd25519Key, signedPush } from './manage/signing.js';
import type { Agent } from './agent/agent.js';
import { ConfigError, formatIssue } from './core/config-error.js';
import { loadConfigFile, missingFiles } from './config/load.js';
import { configJsonSchema } from './config/schema.js';
import { validateConfig } from './streams/build.js';
import { replay, ReplayInputError } from './replay.js';
import { liveTest, LiveTestError } from './live-test.js';
import { notifySystemd, startWatchdog } from './service/systemd.js';
import { startAgent } from './start.js';
import { createLogger } from './logging.js';
import { isLoopback } from './config/management.js';
import type { AgentConfig } from './config/types.js';
import { startSummary } from './summary.js';

/**
 * The config when none is named, whatever the working directory: the checkout's
 * config/agent.yaml beside the built code; a release (scripts/package) ships none there, and
 * reads /etc/edge-agent/agent.yaml, its conffile.
 */
const CHECKOUT_CONFIG = fileURLToPath(new URL('../config/agent.yaml', import.meta.url));
const DEFAULT_CONFIG = existsSync(CHECKOUT_CONFIG) ? CHECKOUT_CONFIG : '/etc/edge-agent/agent.yaml';

type Options = NonNullable<ParseArgsConfig['options']>;
interface Command {
  /** what follows the command's name in the usage */
  synopsis: string;
  /** what it does, as shown by `help` (lines of at most 70 characters) */
  help: string;
  options: Options;
}

const configOption: Options = { config: { type: 'string', short: 'c' } };
const COMMANDS: Record<string, Command> = {
  run: {
    synopsis: '[--config FILE] [--http ADDR]',
    help: `start the agent (default config: ${DEFAULT_CONFIG});
--http host:port (or off) replaces agent.http`,
    options: { ...configOption, http: { type: 'string' } },
  },
  validate: {
    synopsis: '[FILE]',
    help: 'check a config file; exit 0 when good, 1 with the errors\n(--config FILE works too)',
    options: configOption,
  },
  replay: {
    synopsis: '--config FILE --input FILE.csv [--order time|file] [--flush]',
    help: `run the config's streams over recorded data (CSV: ts,device,point,value)
and print the upstream records as JSON lines; actions are printed,
not performed. --order file keeps the file's row order (late and
out-of-order data); the default sorts the rows by time.
A header ts,device,point,value,arrival adds when each reading
reached the agent. --flush emits open windows, energy and
episodes at the end`,
    options: { ...configOption, input: { type: 'string', short: 'i' }, order: { type: 'string' }, flush: { type: 'boolean' } },
  },
  'sign-config': {
    synopsis: '--key PRIVATE.pem [--target ID] [--new-id ID] FILE',
    help: `print FILE as a signed config push (JSON) for remote_config, for
the gateway whose agent.id is ID (default: FILE's agent.id); only
that gateway applies it. --new-id: the push renames the gateway
(FILE's agent.id must be that ID)`,
    options: { key: { type: 'string', short: 'k' }, target: { type: 'string', short: 't' }, 'new-id': { type: 'string' } },
  },
  keygen: {
    synopsis: 'DIR',
    help: `write an Ed25519 key pair for config pushes (DIR is created):
DIR/config-signing.key (keep it safe) and DIR/config-signing.pub`,
    options: {},
  },
  test: {
    synopsis: '[--config FILE] [--device ID] [--seconds N]',
    help: `read the devices once (or for N seconds), run the streams and print
what would go upstream as a table; nothing is sent or written, and
actions are listed, not performed. Exit 1 when a device gave no
good value`,
    options: { ...configOption, device: { type: 'string', short: 'd' }, seconds: { type: 'string', short: 's' } },
  },
  schema: {
    synopsis: '',
    help: `print the config's JSON Schema (draft 2020-12), for editors:
edge-agent schema > agent.schema.json, then start a config with
# yaml-language-server: $schema=agent.schema.json`,
    options: {},
  },
  help: { synopsis: '[COMMAND]', help: 'this text, or what COMMAND does', options: {} },
};

function commandHelp(name: string): string {
  const { synopsis, help } = COMMANDS[name];
  const head = `  ${name} ${synopsis}`;
  const [first, ...more] = help.split('\n');
  const indent = ' '.repeat(29);
  const lines = head.length < 28 ? [`${head.padEnd(29)}${first}`] : [head, indent + first];
  return [...lines, ...more.map((line) => indent + line)].join('\n');
}

const USAGE = `usage: edge-agent <command> [options]

commands:
${Object.keys(COMMANDS).map(commandHelp).join('\n')}

options: --help (-h) after a command shows its help; --version (-V) prints the version`;

/** agent.http's form (config/schema.ts). */
const HTTP_ADDRESS = /^(off|([^:]+|\[[0-9a-fA-F:]+\]):[0-9]{1,5})$/;

const SHORT_USAGE = `usage: edge-agent ${Object.keys(COMMANDS).join('|')} [options]   (edge-agent --help: all of it)`;

/** A mistake on the command line: one line saying what, the usage, exit 2. */
class UsageError extends Error {
  constructor(message: string, readonly usage = SHORT_USAGE) {
    super(message);
  }
}

function version(): string {
  const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return version;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  if (command === undefined) throw new UsageError('no command given');
  if (command === '--version' || command === '-V') {
    console.log(`edge-agent ${version()}`);
    return 0;
  }
  if (command === '--help' || command === '-h') {
    console.log(USAGE);
    return 0;
  }
  if (command.startsWith('-')) throw new UsageError(`unknown option "${command}" (a command comes first)`);
  if (!Object.hasOwn(COMMANDS, command)) throw new UsageError(`unknown command "${command}"`);
  const commandUsage = `usage: edge-agent ${command} ${COMMANDS[command].synopsis}\n\n${commandHelp(command)}`;
  const shortUsage = `usage: edge-agent ${command} ${COMMANDS[command].synopsis}   (edge-agent help ${command}: more)`;
  let parsed;
  try {
    parsed = parseArgs({ args, allowPositionals: true, strict: true, options: { ...COMMANDS[command].options, help: { type: 'boolean', short: 'h' } } });
  } catch (err) {
    // node:util's messages name the option; its hint about '--' does not apply here
    throw new UsageError(`${command}: ${(err as Error).message.split('. ')[0].replace(/\.$/, '')}`, shortUsage);
  }
  const { positionals: rest, values } = parsed as { positionals: string[]; values: Record<string, string | boolean | undefined> };
  if (values.help) {
    console.log(commandUsage);
    return 0;
  }
  const text = (name: string) => values[name] as string | undefined;
  const file = text('config') ?? rest[0] ?? DEFAULT_CONFIG;
  switch (command) {
    case 'help': {
      const about = rest[0];
      if (about === undefined) console.log(USAGE);
      else if (Object.hasOwn(COMMANDS, about)) console.log(`usage: edge-agent ${about} ${COMMANDS[about].synopsis}\n\n${commandHelp(about)}`);
      else throw new UsageError(`help: unknown command "${about}"`);
      return 0;
    }
    case 'validate':
      return validate(file);
    case 'run':
      return run(file, text('http'));
    case 'replay':
      return replayCommand(file, text('input'), text('order'), values.flush === true);
    case 'sign-config':
      return signConfig(rest[0], text('key'), text('target'), text('new-id'));
    case 'keygen':
      return keygen(rest[0]);
    case 'test':
      return testCommand(file, text('device'), text('seconds'));
    case 'schema':
      console.log(JSON.stringify(printableSchema(), null, 2));
      return 0;
  }
  throw new Error(`command ${command} has no implementation`);
}

/**
 * The config's schema as a file of its own: the draft it follows named, and `duration` and
 * `size`, keywords of ours, described for people (validators ignore unknown keywords).
 */
function printableSchema(): object {
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: 'edge-agent configuration',
    description: 'Durations are written 250ms 1s 15m 1h 7d; sizes 512KB 64MB 1GB. ${NAME}, ${NAME:-default} and ${file:/path} are replaced before the file is checked.',
    ...configJsonSchema(),
  };
}

async function testCommand(file: string, device: string | undefined, seconds: string | undefined): Promise<number> {
  const duration = seconds === undefined ? undefined : Number(seconds);
  if (duration !== undefined && !(duration > 0)) throw new UsageError(`test: --seconds takes a number of seconds, not "${seconds}"`, `usage: edge-agent test ${COMMANDS.test.synopsis}`);
  // the table on stdout; the connectors' warnings (a device that does not answer) on stderr
  const log = createLogger('auto', process.stderr);
  log.level = 'warn';
  try {
    const { table, silent } = await liveTest(file, { device, seconds: duration }, log);
    console.log(table);
    for (const id of silent) console.error(`device ${id} gave no good value`);
    return silent.length > 0 ? 1 : 0;
  } catch (err) {
    if (err instanceof LiveTestError) {
      console.error(`edge-agent test: ${err.message}`);
      return 1;
    }
    throw err;
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
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  writeFileSync(join(dir, 'config-signing.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
  writeFileSync(join(dir, 'config-signing.pub'), publicKey.export({ type: 'spki', format: 'pem' }), { flag: 'wx' });
  console.log(`${join(dir, 'config-signing.key')}: the private key (sign-config --key); ${join(dir, 'config-signing.pub')}: remote_config.public_key`);
  return 0;
}

/** The config's agent keys, read before the agent starts (log_format applies to its first lines). */
function agentKeysOf(file: string): AgentConfig['agent'] | undefined {
  try {
    return loadConfigFile(file).config.agent;
  } catch {
    return undefined; // the start that follows reports what is wrong with the file
  }
}

async function run(file: string, http?: string): Promise<number> {
  const keys = agentKeysOf(file);
  if (http !== undefined) {
    if (!HTTP_ADDRESS.test(http)) throw new UsageError(`run: --http takes host:port or off, not "${http}"`, 'usage: edge-agent run [--config FILE] [--http ADDR]');
    if (http !== 'off' && !isLoopback(http) && !keys?.http_token) {
      throw new UsageError(`run: --http ${http} is reachable from the network: set agent.http_token in the config first`, 'usage: edge-agent run [--config FILE] [--http ADDR]');
    }
  }
  const log = createLogger(keys?.log_format ?? 'auto');
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
  const starting = startAgent(file, log, process.env, { http });

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

  const stopSummary = startSummary(agent, log);

  const code = await stopped;
  stopWatchdog();
  stopSummary();
  return code;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    if (err instanceof UsageError) {
      console.error(`edge-agent: ${err.message}\n${err.usage}`);
      process.exitCode = 2;
    } else if (err instanceof ConfigError) {
      for (const issue of err.issues) console.error(formatIssue(issue));
      process.exitCode = 1;
    } else if ((err as NodeJS.ErrnoException)?.code && (err as NodeJS.ErrnoException).syscall) {
      // a file the user named is missing, exists already, cannot be written: no stack for that
      console.error(`edge-agent: ${(err as Error).message}`);
      process.exitCode = 1;
    } else {
      console.error(err);
      process.exitCode = 1;
    }
  },
);
