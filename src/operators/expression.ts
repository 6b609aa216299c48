import { compileExpression, ExpressionError, type Expression } from '../expr/expression.js';
import { check, type StepContext } from './operator.js';

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
