import { absence } from './absence.js';
import { anomaly } from './anomaly.js';
import { capture } from './capture.js';
import { change } from './change.js';
import { count } from './count.js';
import { debounce } from './debounce.js';
import { energy } from './energy.js';
import { episode } from './episode.js';
import { event } from './event.js';
import { filter } from './filter.js';
import { flatline } from './flatline.js';
import { hysteresis } from './hysteresis.js';
import { pass } from './pass.js';
import type { OperatorFactory } from './operator.js';
import { sampler } from './sampler.js';
import { sequence } from './sequence.js';
import { threshold } from './threshold.js';
import { window } from './window.js';

/** Operators by their key in a stream's `steps:`. */
export const operators: Record<string, OperatorFactory> = {
  pass,
  threshold,
  filter,
  change,
  sampler,
  hysteresis,
  window,
  energy,
  event,
  debounce,
  absence,
  sequence,
  count,
  episode,
  anomaly,
  flatline,
  capture,
};
