import { describe, expect, it } from 'vitest';
import { decode, encode } from '../src/connectors/modbus/codec.js';
import { plan } from '../src/connectors/modbus/planner.js';
import type { ModbusPoint } from '../src/connectors/modbus/points.js';

const p = (type: ModbusPoint['type'], order?: ModbusPoint['order'], extra: Partial<ModbusPoint> = {}): ModbusPoint => ({ name: 'x', area: 'holding', address: 0, type, order, ...extra });

describe('Modbus decoding of known bytes', () => {
  it('decodes every integer type, negative and largest values', () => {
    expect(decode(p('int16'), [0xfffe], 0)).toBe(-2);
    expect(decode(p('uint16'), [0xfffe], 0)).toBe(65534);
    expect(decode(p('int16'), [0x8000], 0)).toBe(-32768);
    expect(decode(p('int32'), [0xffff, 0xfffe], 0)).toBe(-2);
    expect(decode(p('uint32'), [0xffff, 0xffff], 0)).toBe(4294967295);
    expect(decode(p('int32'), [0x8000, 0x0000], 0)).toBe(-2147483648);
    expect(decode(p('int64'), [0xffff, 0xffff, 0xffff, 0xfff6], 0)).toBe(-10);
    expect(decode(p('uint64'), [0x001f, 0xffff, 0xffff, 0xffff], 0)).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('applies each word and byte order to 32- and 64-bit values', () => {
    // 0x12345678 sent as ABCD 1234 5678, CDAB 5678 1234, BADC 3412 7856, DCBA 7856 3412
    expect(decode(p('uint32', 'ABCD'), [0x1234, 0x5678], 0)).toBe(0x12345678);
    expect(decode(p('uint32', 'CDAB'), [0x5678, 0x1234], 0)).toBe(0x12345678);
    expect(decode(p('uint32', 'BADC'), [0x3412, 0x7856], 0)).toBe(0x12345678);
    expect(decode(p('uint32', 'DCBA'), [0x7856, 0x3412], 0)).toBe(0x12345678);
    // float64 1.5 = 3FF8 0000 0000 0000
    expect(decode(p('float64', 'ABCD'), [0x3ff8, 0, 0, 0], 0)).toBe(1.5);
    expect(decode(p('float64', 'CDAB'), [0, 0, 0, 0x3ff8], 0)).toBe(1.5);
    expect(decode(p('float64', 'DCBA'), [0, 0, 0, 0xf83f], 0)).toBe(1.5);
    expect(decode(p('int16', 'BADC'), [0xfeff], 0)).toBe(-2);
  });

  it('decodes floats, NaN patterns and infinities', () => {
    expect(decode(p('float32'), [0x3fc0, 0x0000], 0)).toBe(1.5);
    expect(decode(p('float32', 'CDAB'), [0x0000, 0xc2c8], 0)).toBe(-100);
    expect(decode(p('float32'), [0x7fc0, 0x0000], 0)).toBeNaN();
    expect(decode(p('float32'), [0xffff, 0xffff], 0)).toBeNaN();
    expect(decode(p('float32'), [0x7f80, 0x0000], 0)).toBe(Infinity);
    expect(decode(p('float32'), [0x7f7f, 0xffff], 0)).toBeCloseTo(3.4028234663852886e38, -30);
  });

  it('applies scale and offset, reads bits, coils and strings', () => {
    expect(decode(p('uint32', 'CDAB', { scale: 0.01 }), [0x4240, 0x000f], 0)).toBe(10000);
    expect(decode(p('int16', undefined, { scale: 0.1, offset: -40 }), [650], 0)).toBeCloseTo(25, 9);
    expect(decode(p('bool', undefined, { bit: 3 }), [0b1000], 0)).toBe(true);
    expect(decode(p('bool', undefined, { bit: 2 }), [0b1000], 0)).toBe(false);
    expect(decode({ name: 'c', area: 'coil', address: 0 }, [false, true], 1)).toBe(true);
    expect(decode(p('string', undefined, { length: 3 }), [0x4142, 0x4344, 0x0000], 0)).toBe('ABCD');
    expect(decode(p('string', 'BADC', { length: 2 }), [0x4241, 0x0043], 0)).toBe('ABC');
  });

  it('encodes the inverse of each decoding', () => {
    for (const order of ['ABCD', 'CDAB', 'BADC', 'DCBA'] as const) {
      for (const [type, value] of [['int16', -1234], ['uint16', 65535], ['int32', -2e9], ['uint32', 4e9], ['int64', -123456789012], ['uint64', 2 ** 52], ['float32', 1.5], ['float64', Math.PI]] as const) {
        const point = p(type, order);
        expect(decode(point, encode(point, value) as number[], 0), `${type} ${order}`).toBe(value);
      }
    }
    const scaled = p('uint32', 'CDAB', { scale: 0.01 });
    expect(encode(scaled, 10000)).toEqual([0x4240, 0x000f]);
    expect(() => encode(p('int16'), 40000)).toThrow('40000 is out of range for int16');
    expect(() => encode(p('bool', undefined, { bit: 1 }), true)).toThrow('writing one bit of a register is not supported');
    expect(encode({ name: 'c', area: 'coil', address: 0 }, false)).toBe(false);
  });
});

describe('read planner', () => {
  it('coalesces 50 points in 3 clusters into 3 requests', () => {
    const points: ModbusPoint[] = [];
    for (const [start, n] of [[0, 20], [1000, 20], [3000, 10]]) {
      for (let i = 0; i < n; i++) points.push({ name: `p${start + i}`, area: 'holding', address: start + i * 2, type: 'float32' });
    }
    const blocks = plan(points);
    expect(blocks.map((b) => [b.start, b.count, b.points.length])).toEqual([
      [0, 40, 20],
      [1000, 40, 20],
      [3000, 20, 10],
    ]);
  });

  it('reads gaps up to max_gap, splits at 125 registers and 2000 bits, keeps areas apart', () => {
    const reg = (address: number, area: ModbusPoint['area'] = 'holding'): ModbusPoint => ({ name: `r${area}${address}`, area, address });
    expect(plan([reg(0), reg(11)]).map((b) => [b.start, b.count])).toEqual([[0, 12]]);
    expect(plan([reg(0), reg(12)]).map((b) => [b.start, b.count])).toEqual([
      [0, 1],
      [12, 1],
    ]);
    expect(plan([reg(0), reg(5)], { maxGap: 2, maxRegisters: 125, maxBits: 2000 })).toHaveLength(2);
    const many = Array.from({ length: 200 }, (_, i) => reg(i));
    expect(plan(many).map((b) => b.count)).toEqual([125, 75]);
    expect(plan(many, { maxGap: 10, maxRegisters: 50, maxBits: 2000 }).map((b) => b.count)).toEqual([50, 50, 50, 50]);
    const coils = Array.from({ length: 2500 }, (_, i) => reg(i, 'coil'));
    expect(plan(coils).map((b) => b.count)).toEqual([2000, 500]);
    expect(plan([reg(0), reg(0, 'input'), reg(1)]).map((b) => [b.area, b.count])).toEqual([
      ['holding', 2],
      ['input', 1],
    ]);
  });
});
