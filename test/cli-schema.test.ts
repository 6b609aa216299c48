import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { connectors } from '../src/connectors/index.js';
import { upstreams } from '../src/upstream/index.js';
import { CLI } from './support/cli.js';

const ROOT = resolve(import.meta.dirname, '..');
const EXAMPLES = join(ROOT, 'config/examples');
const examples = readdirSync(EXAMPLES)
  .filter((f) => f.endsWith('.yaml'))
  .map((f) => join(EXAMPLES, f));

/**
 * Debian's python3-jsonschema (Draft 2020-12) and python3-yaml, independent of the agent's Ajv
 * and YAML parser, on each YAML file
 * as the agent reads it: ${NAME:-default} and ${file:...} replaced first (a whole-value
 * reference gives a number or boolean, as in the agent). Prints one line per error.
 */
const VALIDATOR = String.raw`
import json, os, re, sys
import jsonschema, yaml
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
# YAML 1.2's booleans, as the agent's parser reads them (PyYAML's 1.1 would make "on:" True)
class Loader(yaml.SafeLoader): pass
Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:bool"] for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
ref = re.compile(r"\$\{([^}]+)\}")
def substitute(value, base):
    def one(m):
        expr = m.group(1)
        if expr.startswith("file:"):
            with open(os.path.join(base, expr[5:])) as f:
                return f.read().strip()
        name, _, default = expr.partition(":-")
        return os.environ.get(name) or default
    out = ref.sub(one, value)
    if ref.fullmatch(value):
        if re.fullmatch(r"-?\d+", out): return int(out)
        if re.fullmatch(r"-?\d+\.\d+", out): return float(out)
        if out in ("true", "false"): return out == "true"
    return out
def walk(node, base):
    if isinstance(node, dict): return {k: walk(v, base) for k, v in node.items()}
    if isinstance(node, list): return [walk(v, base) for v in node]
    if isinstance(node, str) and ("$" "{") in node: return substitute(node, base)
    return node
errors = 0
for path in sys.argv[2:]:
    doc = walk(yaml.load(open(path), Loader=Loader), os.path.dirname(path))
    for error in validator.iter_errors(doc):
        errors += 1
        print(f"{os.path.basename(path)}: {'.'.join(str(p) for p in error.absolute_path)}: {error.message}")
sys.exit(1 if errors else 0)
`;

function printedSchema(): string {
  const file = join(mkdtempSync(join(tmpdir(), 'schema-')), 'agent.schema.json');
  writeFileSync(file, execFileSync(process.execPath, [...CLI, 'schema'], { encoding: 'utf8' }));
  return file;
}

function jsonschema(schema: string, files: string[]) {
  // /usr/bin/python3: Debian's packages, not another Python's
  return spawnSync('/usr/bin/python3', ['-c', VALIDATOR, schema, ...files], { encoding: 'utf8', env: { PATH: process.env.PATH } });
}

describe('edge-agent schema', () => {
  it('prints a JSON Schema draft 2020-12 that python3-jsonschema accepts for the default config and every example', () => {
    const schema = printedSchema();
    const parsed = JSON.parse(readFileSync(schema, 'utf8'));
    expect(parsed.$schema).toBe('https://json-schema.org/draft/2020-12/schema');
    expect(Object.keys(parsed.properties)).toEqual(expect.arrayContaining(['agent', 'devices', 'streams', 'upstream', 'outbox', 'remote_config']));
    const result = jsonschema(schema, [join(ROOT, 'config/agent.yaml'), ...examples]);
    expect(result.stderr).toBe('');
    expect(result.stdout).toBe('');
    expect(result.status).toBe(0);
  });

  it('the independent validator does refuse what the agent refuses', () => {
    const schema = printedSchema();
    const dir = mkdtempSync(join(tmpdir(), 'schema-bad-'));
    const bad = join(dir, 'bad.yaml');
    const text = readFileSync(join(ROOT, 'config/agent.yaml'), 'utf8');
    writeFileSync(bad, text.replace('  log_level: info', '  log_level: chatty\n  colour: blue').replace('qos: 1', 'qos: 3'));
    const result = jsonschema(schema, [bad]);
    expect(result.status).toBe(1);
    expect(result.stdout).toMatch(/^bad\.yaml: agent: Additional properties are not allowed \('colour' was unexpected\)$/m);
    expect(result.stdout).toMatch(/^bad\.yaml: agent\.log_level: 'chatty' is not one of/m);
    expect(result.stdout).toMatch(/^bad\.yaml: upstream\.0/m);
  });
});

describe('config/examples', () => {
  it('each starts with the yaml-language-server comment naming the schema, then says what it shows', () => {
    for (const file of examples) {
      const lines = readFileSync(file, 'utf8').split('\n');
      expect(lines[0], file).toBe('# yaml-language-server: $schema=../agent.schema.json');
      expect(lines[1], file).toMatch(/^# \S/);
    }
  });

  it('each validates as shipped, with no environment and from another directory', () => {
    for (const file of examples) {
      const out = spawnSync(process.execPath, [...CLI, 'validate', file], { encoding: 'utf8', cwd: tmpdir(), env: { PATH: process.env.PATH } });
      expect(out.stderr, file).toBe('');
      expect(out.stdout).toMatch(/: ok \(/);
      expect(out.status).toBe(0);
    }
  });

  it('every device protocol and upstream type has an example', () => {
    const texts = examples.map((f) => readFileSync(f, 'utf8')).join('\n');
    for (const protocol of Object.keys(connectors)) expect(texts, protocol).toMatch(new RegExp(`protocol: ${protocol}\\b`));
    for (const type of Object.keys(upstreams)) expect(texts, type).toMatch(new RegExp(`type: ${type}\\b`));
  });
});
