import { object } from '../core/config-kit.js';
import { operator } from './operator.js';

/** `pass: {}` passes every reading unchanged. */
export const pass = operator(object({}), () => ({
  process(reading, emit) {
    emit(reading);
  },
}));
