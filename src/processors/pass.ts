import { object } from '../config/kit.js';
import { operator } from './processor.js';

/** `pass: {}` passes every reading unchanged. */
export const pass = operator(object({}), () => ({
  process(reading, emit) {
    emit(reading);
  },
}));
