import { pass } from './pass.js';
import type { ProcessorFactory } from './processor.js';

/** Operators by their key in a stream's `steps:`. */
export const processors: Record<string, ProcessorFactory> = { pass };
