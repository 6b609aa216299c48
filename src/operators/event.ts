import { object, oneOf, text, Type, withDefault, type Static } from '../core/config-kit.js';
import type { Expression } from '../expr/expression.js';
import { MISSING } from '../expr/expression.js';
import { operator } from './operator.js';
import { stepExpression } from './expression.js';
import { hasPoint, pointValue, setOwn } from './values.js';

/** The operator's keys, their loaded type and their defaults. */
export const schema = object({
  code: text,
  severity: withDefault(oneOf(['info', 'minor', 'major', 'critical']), 'info'),
  /** the code when absent */
  description: Type.Optional(Type.String()),
  fields: withDefault(Type.Unsafe<Record<string, string>>({ type: 'object', additionalProperties: text }), {}),
});
type Params = Static<typeof schema>;

/**
 * `event: { code, severity, description: "power {power_kw} kW", fields: { name: expression } }`
 *
 * Turns each reading into an event record: the description's `{point}` placeholders filled
 * from the reading (or the point's latest value, or another device's as `{device.point}`; `?`
 * when there is none), the fields computed
 * by their expressions (null when missing), and `state: cleared` for a clearing edge from
 * hysteresis, `raised` otherwise. The reading's values go along beside the event.
 */
export const event = operator(schema, (params, context) => {
  const { severity } = params;
  const template = params.description ?? params.code;
  const parts = template.split(/\{([A-Za-z0-9_.-]+)\}/);
  const fields: [string, Expression][] = Object.entries(params.fields).map(([name, source]) => [name, stepExpression(source, context, 'fields')]);
  const { latest } = context;
  /** The latest value of the reading's device's point, or of `device.point` (`{flow-1.flow}`). */
  const latestOf = (device: string, name: string) => {
    const own = latest.get(device, name);
    const dot = name.indexOf('.');
    return own !== undefined || dot <= 0 ? own : latest.get(name.slice(0, dot), name.slice(dot + 1));
  };

  return {
    process(reading, emit) {
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
      const computed: Record<string, unknown> = {};
      for (const [name, expression] of fields) {
        const value = expression.evaluate({ reading, latest });
        setOwn(computed, name, value === MISSING ? null : value);
      }
      emit({
        ...reading,
        event: { ...computed, code: params.code, severity, description, state: reading.edge === 'clear' ? 'cleared' : 'raised' },
      });
    },
  };
});
