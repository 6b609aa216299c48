import { describe, expect, it } from 'vitest';
import { compileExpression, ExpressionError, MISSING } from '../src/expr/expression.js';
import { LatestValues } from '../src/streams/latest.js';
import type { Reading } from '../src/streams/reading.js';

const reading: Reading = { device: 'm1', ts: 1000, values: { rpm: 105, temp: 20.5, mode: 'auto', on: true, nan: NaN, nothing: null, broken: 7 }, quality: { broken: 'bad' } };
const latest = new LatestValues();
latest.update({ device: 'm1', ts: 0, values: { pressure: 3.5 } });
latest.update({ device: 'meter-2', ts: 0, values: { power_kw: 42 } });
latest.update({ device: 'pump_3', ts: 0, values: { flow: 7 } });
const run = (source: string) => compileExpression(source).evaluate({ reading, latest });
const test = (source: string) => compileExpression(source).test({ reading, latest });

describe('expressions', () => {
  it('computes with numbers, strings, booleans, precedence and parentheses', () => {
    expect(run('1 + 2 * 3')).toBe(7);
    expect(run('(1 + 2) * 3')).toBe(9);
    expect(run('10 - 4 - 3')).toBe(3);
    expect(run('7 % 4')).toBe(3);
    expect(run('-rpm + 5')).toBe(-100);
    expect(run('"a" + "b"')).toBe('ab');
    expect(run("mode == 'auto'")).toBe(true);
    expect(run('1.5e2')).toBe(150);
    expect(test('rpm > 100 and temp < 25')).toBe(true);
    expect(test('rpm > 100 && !(temp < 25)')).toBe(false);
    expect(test('rpm < 100 or on')).toBe(true);
    expect(test('not on')).toBe(false);
  });

  it('knows device, ts, the latest values and other devices', () => {
    expect(run('device')).toBe('m1');
    expect(run('ts')).toBe(1000);
    expect(run('pressure * 2')).toBe(7);
    expect(run('`meter-2.power_kw` + pump_3.flow')).toBe(49);
    expect(run('m1.rpm')).toBe(105);
  });

  it('has abs, min, max and round', () => {
    expect(run('abs(-3) + min(4, 2, 8) + max(1, 9)')).toBe(14);
    expect(run('round(temp)')).toBe(21);
    expect(run('round(2.3456, 2)')).toBe(2.35);
  });

  it('treats unknown, null, NaN and bad values as missing: false, and counted', () => {
    const expression = compileExpression('nope > 1');
    expect(expression.evaluate({ reading, latest })).toBe(MISSING);
    expect(expression.test({ reading, latest })).toBe(false);
    expect(expression.missing).toBe(2); // one per evaluation
    for (const source of ['nan > 1', 'nothing == 1', 'broken > 1', 'not nope', 'rpm / 0 > 1', '`other.rpm` > 0']) expect(test(source), source).toBe(false);
    expect(test('nope > 1 or rpm > 100')).toBe(true);
  });

  it('reaches nothing but the reading', () => {
    for (const source of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'process', 'globalThis', 'm1.constructor', '`__proto__.polluted`']) {
      expect(run(source), source).toBe(MISSING);
    }
    // calls are only the four functions; no member access, no calls on values
    for (const source of ['process.exit(1)', 'constructor("return process")()', 'eval("1")', 'Function("x")', 'require("fs")', 'rpm.toString()']) {
      expect(() => compileExpression(source), source).toThrow(ExpressionError);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('reports syntax errors with the column', () => {
    const cases: [string, string][] = [
      ['rpm > ', 'column 7: expected a value but found the end'],
      ['rpm >> 3', 'column 6: expected a value but found ">"'],
      ['(rpm > 3', 'column 9: expected ")" but found the end'],
      ['rpm > 3)', 'column 8: unexpected ")"'],
      ['rpm # 3', 'column 5: unexpected character "#"'],
      ['"open', 'column 1: string without its closing quote'],
      ['sqrt(4)', 'column 1: unknown function "sqrt" (functions: abs, min, max, round)'],
      ['abs(1, 2)', 'column 1: abs() takes 1 argument, not 2'],
    ];
    for (const [source, message] of cases) expect(() => compileExpression(source), source).toThrow(message);
  });
});
