import { text } from '../core/config-kit.js';
import { operator } from './operator.js';
import { stepExpression } from './expression.js';

/** `filter: "<expression>"`: passes the reading when the expression is true. */
export const filter = operator(text, (source, context) => {
  const expression = stepExpression(source, context);
  const { latest } = context;
  return {
    process(reading, emit) {
      if (expression.test({ reading, latest })) emit(reading);
      else context.count('dropped');
    },
  };
});
