import { object, text, Type, withDefault, type Static } from '../core/config-kit.js';
import type { EventInfo, Reading, Value } from '../core/reading.js';
import type { Expression } from '../expr/expression.js';
import { MISSING } from '../expr/expression.js';
import type { LatestLookup } from '../core/latest.js';
import { check, operator, type StepContext } from './operator.js';
import { stepExpression } from './expression.js';
import { hasPoint, pointValue, setOwn } from './values.js';

const SEVERITIES = ['info', 'minor', 'major', 'critical'] as const;
/** The event's own names: a `fields` entry may not take one. */
const BUILT_IN = ['code', 'severity', 'description', 'state', 'source', 'acknowledged'];

/** The operator's keys, their loaded type and their defaults. A value starting with `=` is an expression. */
export const schema = object({
  code: text,
  severity: withDefault(Type.String({ pattern: '^(info|minor|major|critical|=.+)$' }), 'info'),
  /** the code when absent; `{point}` and `{device.point}` are filled in */
  description: Type.Optional(Type.String()),
  source: Type.Optional(text),
  acknowledged: Type.Optional(Type.Union([Type.Boolean(), Type.String({ pattern: '^=.+' })])),
  fields: withDefault(Type.Unsafe<Record<string, string>>({ type: 'object', additionalProperties: text }), {}),
});
type Params = Static<typeof schema>;

type Attribute = (reading: Reading) => Value | undefined;

/**
 * `event: { code, severity, description: "power {power_kw} kW", source, acknowledged, fields: { name: expression } }`
 *
 * Turns each reading into an event record. `code`, `severity`, `description`, `source` and
 * `acknowledged` are each a static value or, starting with `=`, an expression
 * (`severity: "=temp > 100 ? 'critical' : 'minor'"`); a severity that is not one of
 * info/minor/major/critical, or missing, is `info` (counted as `bad_severity`). A static
 * description fills its `{point}` placeholders from the reading (or the point's latest value, or
 * another device's as `{device.point}`; `?` when there is none). `fields` are expressions (null
 * when missing) and may not take an event's own names. `state` is `cleared` for a clearing edge,
 * `raised` otherwise. The reading's values go along beside the event.
 */
export const event = operator(schema, (params, context) => {
  const { latest } = context;
  for (const name of Object.keys(params.fields)) {
    check(!BUILT_IN.includes(name), context, `fields: "${name}" is the event's own ${name}; set it as ${name}: (a value or "=expression"), or name the field otherwise`, 'fields');
  }
  const code = attribute(params.code, context, 'code');
  const severity = attribute(params.severity, context, 'severity');
  // without a description, the event's code (computed, when it is an expression) says it
  const description =
    params.description === undefined ? code : params.description.startsWith('=') ? attribute(params.description, context, 'description') : template(params.description, latest);
  const source = params.source === undefined ? undefined : attribute(params.source, context, 'source');
  const acknowledged = params.acknowledged === undefined ? undefined : attribute(params.acknowledged, context, 'acknowledged');
  const fields: [string, Expression][] = Object.entries(params.fields).map(([name, source]) => [name, stepExpression(source, context, 'fields')]);

  return {
    process(reading, emit) {
      const computed: Record<string, unknown> = {};
      for (const [name, expression] of fields) {
        const value = expression.evaluate({ reading, latest });
        setOwn(computed, name, value === MISSING ? null : value);
      }
      let level = severity(reading);
      if (!SEVERITIES.includes(level as EventInfo['severity'])) {
        context.count('bad_severity');
        level = 'info';
      }
      const info: EventInfo = {
        ...computed,
        code: String(code(reading) ?? '?'),
        severity: level as EventInfo['severity'],
        description: String(description(reading) ?? '?'),
        state: reading.edge === 'clear' ? 'cleared' : 'raised',
      };
      if (source) info.source = source(reading) ?? null;
      if (acknowledged) info.acknowledged = acknowledged(reading) ?? null;
      emit({ ...reading, event: info });
    },
  };

  /** A static value, or (starting with `=`) an expression's value; undefined when missing. */
  function attribute(spec: string | boolean, context: StepContext, key: string): Attribute {
    if (typeof spec !== 'string' || !spec.startsWith('=')) return () => spec;
    const expression = stepExpression(spec.slice(1), context, key);
    return (reading) => {
      const value = expression.evaluate({ reading, latest });
      return value === MISSING ? undefined : value;
    };
  }
});

/** A description with `{point}` and `{device.point}` placeholders. */
function template(text: string, latest: LatestLookup): Attribute {
  const parts = text.split(/\{([A-Za-z0-9_.-]+)\}/);
  const latestOf = (device: string, name: string) => {
    const own = latest.get(device, name);
    const dot = name.indexOf('.');
    return own !== undefined || dot <= 0 ? own : latest.get(name.slice(0, dot), name.slice(dot + 1));
  };
  return (reading) => {
    let description = '';
    for (let i = 0; i < parts.length; i++) {
      if (i % 2 === 0) {
        description += parts[i];
        continue;
      }
      const name = parts[i];
      const value = hasPoint(reading, name) ? pointValue(reading, name) : latestOf(reading.device, name);
      description += value === undefined || value === null ? '?' : String(value);
    }
    return description;
  };
}
