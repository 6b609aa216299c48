import { compileExpression, ExpressionError, type Expression } from '../expr/expression.js';
import type { Reading } from '../core/reading.js';
import { check, type StepContext } from './operator.js';
import { anyGoodValue } from './values.js';

/** Compiles a step's expression; a syntax error is a config error naming the step and the column. */
export function stepExpression(source: string, context: StepContext, key?: string): Expression {
  try {
    return compileExpression(source);
  } catch (err) {
    if (!(err instanceof ExpressionError)) throw err;
    check(false, context, `expression "${source}": ${err.message}`, key);
    throw err;
  }
}

/**
 * Whether a reading is news for a step that judges over time: not when its time is not believed
 * (counted as `untimely`) nor when it carries no good value, a failed read (counted as `missing`).
 */
export function isNews(reading: Reading, context: StepContext): boolean {
  if (reading.untimely) return context.count('untimely'), false;
  if (!anyGoodValue(reading)) return context.count('missing'), false;
  return true;
}

/**
 * The condition's verdict on a reading for a step that judges over time, or undefined when the
 * reading says nothing (see isNews) or the condition is missing (counted as `missing`): a broken
 * sensor neither raises nor clears.
 */
export function verdict(when: Expression, reading: Reading, context: StepContext): boolean | undefined {
  if (!isNews(reading, context)) return undefined;
  const holds = when.judge({ reading, latest: context.latest });
  if (holds === undefined) context.count('missing');
  return holds;
}
