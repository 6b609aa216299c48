import { describe, expect, it } from 'vitest';
import { compileExpression, ExpressionError, MAX_DEPTH, MAX_TERMS, MISSING } from '../src/expr/expression.js';
import { LatestValues } from '../src/core/latest.js';
import type { Reading } from '../src/core/reading.js';

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

  it('chooses with test ? then : otherwise, the loosest operator, right-associative; a missing test is missing', () => {
    expect(run("rpm > 100 ? 'fast' : 'slow'")).toBe('fast');
    expect(run('rpm < 100 ? 1 : 2 + 3')).toBe(5);
    expect(run("rpm > 200 ? 'a' : rpm > 100 ? 'b' : 'c'")).toBe('b');
    expect(run('(rpm > 100 ? 1 : 0) * 10')).toBe(10);
    expect(run('max(on ? 3 : 4, 1)')).toBe(3);
    expect(run('nope > 1 ? 1 : 2')).toBe(MISSING);
    expect(() => compileExpression('rpm ? 1')).toThrow(/expected ":" but found the end/);
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

describe('expression limits: what validates cannot throw when it runs', () => {
  const chain = (n: number, op = '+') => Array(n).fill('rpm').join(op);

  it('refuses more than MAX_TERMS terms at validation, and runs a chain of MAX_TERMS', () => {
    expect(() => compileExpression(chain(20_000))).toThrow(`more than ${MAX_TERMS} terms`);
    expect(() => compileExpression(chain(MAX_TERMS + 1, ' and '))).toThrow(ExpressionError);
    expect(run(chain(MAX_TERMS))).toBe(105 * MAX_TERMS);
    expect(run(chain(MAX_TERMS, '-'))).toBe(105 - 105 * (MAX_TERMS - 1));
    expect(test(chain(MAX_TERMS, ' or '))).toBe(true);
  });

  it('refuses nesting deeper than MAX_DEPTH: parentheses, unary chains, calls', () => {
    const parens = (n: number) => '('.repeat(n) + 'rpm' + ')'.repeat(n);
    expect(run(parens(MAX_DEPTH))).toBe(105);
    expect(() => compileExpression(parens(MAX_DEPTH + 1))).toThrow(`nested more than ${MAX_DEPTH} deep`);
    expect(() => compileExpression(parens(100_000))).toThrow(`nested more than ${MAX_DEPTH} deep`);
    expect(run('-'.repeat(MAX_DEPTH) + 'rpm')).toBe(105);
    expect(() => compileExpression('-'.repeat(50_000) + 'rpm')).toThrow(ExpressionError);
    expect(() => compileExpression('not '.repeat(MAX_DEPTH + 1) + 'on')).toThrow(ExpressionError);
    expect(() => compileExpression('abs('.repeat(MAX_DEPTH + 1) + '1' + ')'.repeat(MAX_DEPTH + 1))).toThrow(ExpressionError);
  });

  it('gives MISSING, never Infinity, NaN or an exception, for huge numbers, division by zero and NaN', () => {
    expect(() => compileExpression('1e400 + 1')).toThrow('number 1e400 is too large');
    expect(run('1e308 * 10')).toBe(MISSING);
    expect(run('-1e308 - 1e308')).toBe(MISSING);
    expect(run('rpm / 0')).toBe(MISSING);
    expect(run('rpm % 0')).toBe(MISSING);
    expect(run('0 / 0')).toBe(MISSING);
    expect(run('nan + 1')).toBe(MISSING);
    expect(run('round(rpm, 400)')).toBe(MISSING);
    expect(run('round(rpm, -400)')).toBe(MISSING);
    expect(run('max(1e308, 1e308) * 2 > 0')).toBe(MISSING);
    expect(test('rpm / 0 > 1')).toBe(false);
  });

  it('takes point names such as constructor, __proto__ and toString as names, never Object properties', () => {
    const names = ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf'];
    const none: Reading = { device: 'x', ts: 1, values: {} };
    for (const name of names) {
      expect(compileExpression(name).evaluate({ reading: none }), name).toBe(MISSING);
      expect(compileExpression(`${name} + 1`).evaluate({ reading: none }), name).toBe(MISSING);
      const values: Reading['values'] = {};
      Object.defineProperty(values, name, { value: 4, enumerable: true });
      expect(compileExpression(`${name} * 2`).evaluate({ reading: { device: 'x', ts: 1, values } }), name).toBe(8);
      expect(compileExpression(`x.${name}`).evaluate({ reading: none }), name).toBe(MISSING);
    }
  });
});
