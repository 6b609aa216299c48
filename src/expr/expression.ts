import type { LatestLookup } from '../core/latest.js';
import type { Reading, Value } from '../core/reading.js';

/**
 * The expression language of filter, hysteresis and event fields: numbers, strings, booleans,
 * point names (`power_kw`; `meter_1.power_kw` or `` `meter-1.power_kw` `` for another device),
 * `device`, `ts`, comparisons, `and or not` (`&& || !`), arithmetic, parentheses,
 * `abs min max round` and `test ? then : otherwise`. Parsed once into closures; names are looked up only among the
 * reading's points (never on objects), so nothing but the reading can be reached.
 *
 * A point that has no usable value (unknown, null, NaN, a bad reading) is MISSING; arithmetic
 * and comparisons with MISSING are MISSING, `and`/`or` treat it as false, `not` keeps it
 * MISSING (`not breaker` must not hold when breaker is unknown), and a MISSING result is false. Each lookup that finds nothing is counted.
 */

export const MISSING: unique symbol = Symbol('missing');

/**
 * Limits checked when the config is validated, so that an expression that passed cannot throw
 * when it runs: the compiled closures nest as deep as the expression, and a 20,000-term chain
 * `a+a+...` overflowed the stack at the first reading. A real expression has a few dozen terms.
 */
export const MAX_TERMS = 1000;
/** Parentheses, unary operators (`- - x`, `not not x`) and function calls nested in each other. */
export const MAX_DEPTH = 64;
type Result = Value | typeof MISSING;

export interface Scope {
  reading: Reading;
  latest?: LatestLookup;
}

export interface Expression {
  readonly source: string;
  /** The value, or MISSING. */
  evaluate(scope: Scope): Result;
  /** True only when the expression is true; MISSING is false. */
  test(scope: Scope): boolean;
  /** True or false, or undefined when the result is MISSING (the reading cannot say). */
  judge(scope: Scope): boolean | undefined;
  /** Lookups that found no usable value. */
  readonly missing: number;
}

export class ExpressionError extends Error {
  constructor(
    message: string,
    /** 1-based column in the expression */
    readonly column: number,
  ) {
    super(`column ${column}: ${message}`);
  }
}

type Node = (scope: Scope) => Result;

interface Token {
  kind: 'number' | 'string' | 'name' | 'op' | 'end';
  text: string;
  value?: Value;
  column: number;
}

const OPERATORS = ['&&', '||', '==', '!=', '<=', '>=', '<', '>', '!', '+', '-', '*', '/', '%', '(', ')', ',', '?', ':'];
const WORDS: Record<string, string> = { and: '&&', or: '||', not: '!' };

const NUMBER = /(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/y;
const NAME = /[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?/y;

function tokenize(source: string): Token[] {
  const tokens: Token[] = [];
  let terms = 0;
  const term = (column: number) => {
    if (++terms > MAX_TERMS) throw new ExpressionError(`more than ${MAX_TERMS} terms (values and names): split the expression`, column);
  };
  let i = 0;
  while (i < source.length) {
    const c = source[i];
    const column = i + 1;
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      i++;
      continue;
    }
    NUMBER.lastIndex = i;
    const number = NUMBER.exec(source);
    if (number) {
      term(column);
      const value = Number(number[0]);
      if (!Number.isFinite(value)) throw new ExpressionError(`number ${number[0]} is too large`, column);
      tokens.push({ kind: 'number', text: number[0], value, column });
      i += number[0].length;
      continue;
    }
    if (c === '"' || c === "'") {
      const end = source.indexOf(c, i + 1);
      if (end < 0) throw new ExpressionError('string without its closing quote', column);
      term(column);
      tokens.push({ kind: 'string', text: source.slice(i, end + 1), value: source.slice(i + 1, end), column });
      i = end + 1;
      continue;
    }
    if (c === '`') {
      const end = source.indexOf('`', i + 1);
      if (end < 0) throw new ExpressionError('name without its closing backtick', column);
      term(column);
      tokens.push({ kind: 'name', text: source.slice(i + 1, end), column });
      i = end + 1;
      continue;
    }
    NAME.lastIndex = i;
    const name = NAME.exec(source);
    if (name) {
      // own keys only: `constructor` is a point name, not Object.prototype.constructor
      const word = Object.hasOwn(WORDS, name[0]) ? WORDS[name[0]] : undefined;
      if (!word) term(column);
      tokens.push(word ? { kind: 'op', text: word, column } : { kind: 'name', text: name[0], column });
      i += name[0].length;
      continue;
    }
    const op = OPERATORS.find((o) => source.startsWith(o, i));
    if (!op) throw new ExpressionError(`unexpected character "${c}"`, column);
    tokens.push({ kind: 'op', text: op, column });
    i += op.length;
  }
  tokens.push({ kind: 'end', text: 'the end', column: source.length + 1 });
  return tokens;
}

const isNumber = (v: Result): v is number => typeof v === 'number';
/** 1e308 * 10 and round(x, 400) give no usable number: MISSING, like a point without one. */
const finite = (v: Result): Result => (typeof v === 'number' && !Number.isFinite(v) ? MISSING : v);
const truthy = (v: Result) => v !== MISSING && v !== false && v !== 0 && v !== '';

const isBad = (reading: Reading, point: string) => reading.quality !== undefined && Object.hasOwn(reading.quality, point) && reading.quality[point] === 'bad';

function usable(value: Value | null | undefined): Result {
  if (value === null || value === undefined) return MISSING;
  if (typeof value === 'number' && !Number.isFinite(value)) return MISSING;
  return value;
}

const FUNCTIONS: Record<string, { arity: [number, number]; apply: (args: number[]) => number }> = {
  abs: { arity: [1, 1], apply: ([x]) => Math.abs(x) },
  min: { arity: [1, 16], apply: (xs) => Math.min(...xs) },
  max: { arity: [1, 16], apply: (xs) => Math.max(...xs) },
  round: { arity: [1, 2], apply: ([x, digits = 0]) => Math.round(x * 10 ** digits) / 10 ** digits },
};

export function compileExpression(source: string): Expression {
  const tokens = tokenize(source);
  let position = 0;
  let missing = 0;
  let depth = 0;
  /** Parses one nested part (parentheses, a unary operand, a call) within MAX_DEPTH. */
  const nested = <T>(token: Token, parsePart: () => T): T => {
    if (++depth > MAX_DEPTH) throw new ExpressionError(`nested more than ${MAX_DEPTH} deep`, token.column);
    const part = parsePart();
    depth--;
    return part;
  };
  const peek = () => tokens[position];
  const next = () => tokens[position++];
  const expect = (text: string) => {
    const token = next();
    if (token.text !== text || token.kind !== 'op') throw new ExpressionError(`expected "${text}" but found ${describe(token)}`, token.column);
  };
  const describe = (token: Token) => (token.kind === 'end' ? 'the end' : `"${token.text}"`);

  // Precedence climbing: or < and < comparison < additive < multiplicative < unary < primary.
  const binary: Record<string, number> = { '||': 1, '&&': 2, '==': 3, '!=': 3, '<': 3, '<=': 3, '>': 3, '>=': 3, '+': 4, '-': 4, '*': 5, '/': 5, '%': 5 };

  /** `test ? then : otherwise`, the loosest of all: a MISSING test is MISSING. */
  function expression(): Node {
    const test = parse(1);
    const token = peek();
    if (!(token.kind === 'op' && token.text === '?')) return test;
    next();
    const then = nested(token, expression);
    expect(':');
    const otherwise = nested(token, expression);
    return (s) => {
      const t = test(s);
      if (t === MISSING) return MISSING;
      return truthy(t) ? then(s) : otherwise(s);
    };
  }

  function parse(minPrecedence: number): Node {
    let left = unary();
    for (;;) {
      const token = peek();
      const precedence = token.kind === 'op' ? binary[token.text] : undefined;
      if (precedence === undefined || precedence < minPrecedence) return left;
      next();
      const right = parse(precedence + 1);
      left = combine(token.text, left, right);
    }
  }

  function unary(): Node {
    const token = peek();
    if (token.kind === 'op' && token.text === '!') {
      next();
      const operand = nested(token, unary);
      return (s) => {
        const v = operand(s);
        return v === MISSING ? MISSING : !truthy(v);
      };
    }
    if (token.kind === 'op' && token.text === '-') {
      next();
      const operand = nested(token, unary);
      return (s) => {
        const v = operand(s);
        return isNumber(v) ? -v : MISSING;
      };
    }
    return primary();
  }

  function primary(): Node {
    const token = next();
    if (token.kind === 'number' || token.kind === 'string') {
      const value = token.value!;
      return () => value;
    }
    if (token.kind === 'op' && token.text === '(') {
      const inner = nested(token, expression);
      expect(')');
      return inner;
    }
    if (token.kind === 'name') {
      if (peek().kind === 'op' && peek().text === '(') return nested(token, () => call(token));
      return name(token.text);
    }
    throw new ExpressionError(`expected a value but found ${describe(token)}`, token.column);
  }

  function call(token: Token): Node {
    const fn = Object.hasOwn(FUNCTIONS, token.text) ? FUNCTIONS[token.text] : undefined;
    if (!fn) throw new ExpressionError(`unknown function "${token.text}" (functions: ${Object.keys(FUNCTIONS).join(', ')})`, token.column);
    expect('(');
    const args: Node[] = [];
    if (!(peek().kind === 'op' && peek().text === ')')) {
      args.push(expression());
      while (peek().kind === 'op' && peek().text === ',') {
        next();
        args.push(expression());
      }
    }
    expect(')');
    const [least, most] = fn.arity;
    if (args.length < least || args.length > most) {
      throw new ExpressionError(`${token.text}() takes ${least === most ? least : `${least} to ${most}`} argument${most === 1 ? '' : 's'}, not ${args.length}`, token.column);
    }
    return (s) => {
      const values: number[] = [];
      for (const arg of args) {
        const v = arg(s);
        if (!isNumber(v)) return MISSING;
        values.push(v);
      }
      return finite(fn.apply(values));
    };
  }

  function name(text: string): Node {
    if (text === 'ts') return (s) => s.reading.ts;
    if (text === 'device') return (s) => s.reading.device;
    if (text === 'true' || text === 'false') {
      const value = text === 'true';
      return () => value;
    }
    const dot = text.indexOf('.');
    if (dot > 0) {
      const device = text.slice(0, dot);
      const point = text.slice(dot + 1);
      return (s) => {
        const value =
          s.reading.device === device && Object.hasOwn(s.reading.values, point) && !isBad(s.reading, point)
            ? usable(s.reading.values[point])
            : usable(s.latest?.get(device, point, s.reading.ts));
        if (value === MISSING) missing++;
        return value;
      };
    }
    return (s) => {
      const { values, quality } = s.reading;
      let value: Result = MISSING;
      if (Object.hasOwn(values, text) && !isBad(s.reading, text)) value = usable(values[text]);
      if (value === MISSING) value = usable(s.latest?.get(s.reading.device, text, s.reading.ts));
      if (value === MISSING) missing++;
      return value;
    };
  }

  const root = expression();
  if (peek().kind !== 'end') throw new ExpressionError(`unexpected ${describe(peek())}`, peek().column);

  // The limits above keep the closures shallow and no operation throws; should one all the same,
  // the expression is MISSING for that reading rather than the agent down.
  const evaluate = (scope: Scope): Result => {
    try {
      return root(scope);
    } catch {
      missing++;
      return MISSING;
    }
  };

  return {
    source,
    evaluate,
    test: (scope) => truthy(evaluate(scope)),
    judge: (scope) => {
      const v = evaluate(scope);
      return v === MISSING ? undefined : truthy(v);
    },
    get missing() {
      return missing;
    },
  };
}

function combine(op: string, left: Node, right: Node): Node {
  switch (op) {
    case '&&':
      return (s) => truthy(left(s)) && truthy(right(s));
    case '||':
      return (s) => truthy(left(s)) || truthy(right(s));
    case '==':
    case '!=': {
      const equal = op === '==';
      return (s) => {
        const a = left(s);
        const b = right(s);
        if (a === MISSING || b === MISSING) return MISSING;
        return (a === b) === equal;
      };
    }
    case '+':
      return (s) => {
        const a = left(s);
        const b = right(s);
        if (isNumber(a) && isNumber(b)) return finite(a + b);
        if (typeof a === 'string' && b !== MISSING) return a + String(b);
        return MISSING;
      };
    default: {
      const apply = ARITHMETIC[op];
      return (s) => {
        const a = left(s);
        const b = right(s);
        if (a === MISSING || b === MISSING) return MISSING;
        if (isNumber(a) && isNumber(b)) return finite(apply(a, b));
        // strings compare with strings; anything else mixed is missing
        if (typeof a === 'string' && typeof b === 'string' && COMPARISONS.has(op)) return apply(a as never, b as never);
        return MISSING;
      };
    }
  }
}

const COMPARISONS = new Set(['<', '<=', '>', '>=']);
const ARITHMETIC: Record<string, (a: number, b: number) => Result> = {
  '<': (a, b) => a < b,
  '<=': (a, b) => a <= b,
  '>': (a, b) => a > b,
  '>=': (a, b) => a >= b,
  '-': (a, b) => a - b,
  '*': (a, b) => a * b,
  '/': (a, b) => (b === 0 ? MISSING : a / b),
  '%': (a, b) => (b === 0 ? MISSING : a % b),
};
