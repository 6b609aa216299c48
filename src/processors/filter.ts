import { text } from '../config/kit.js';
import { operator } from './processor.js';
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
