import { change } from './change.js';
import { energy } from './energy.js';
import { event } from './event.js';
import { filter } from './filter.js';
import { hysteresis } from './hysteresis.js';
import { pass } from './pass.js';
import type { OperatorFactory } from './operator.js';
import { sampler } from './sampler.js';
import { threshold } from './threshold.js';
import { window } from './window.js';

/** Operators by their key in a stream's `steps:`. */
export const operators: Record<string, OperatorFactory> = { pass, threshold, filter, change, sampler, hysteresis, window, energy, event };
