import type { ProcessorFactory } from './processor.js';

/** `pass: {}` passes every reading unchanged. */
export const pass: ProcessorFactory = () => ({
  process(reading, emit) {
    emit(reading);
  },
});
