import { describe, expect, it } from 'vitest';
import { bool, ConfigError, int, loadConfig, num, str } from '../../libs/config/index.js';

const spec = {
  port: int({ env: 'T_PORT', flag: 'port', default: 8500, min: 0, max: 65535 }),
  rate: num({ env: 'T_RATE', flag: 'rate', default: 0.5, min: 0, max: 1 }),
  mode: str<'a' | 'b'>({ env: 'T_MODE', flag: 'mode', default: 'a', choices: ['a', 'b'] }),
  on: bool({ env: 'T_ON', flag: 'on', default: false }),
};

describe('loadConfig', () => {
  it('defaults, then environment, then flags; frozen', () => {
    expect(loadConfig(spec, [], {})).toEqual({ port: 8500, rate: 0.5, mode: 'a', on: false });
    const c = loadConfig(spec, ['--port', '9000', '--on', '--mode=b'], { T_PORT: '1', T_RATE: '0.25' });
    expect(c).toEqual({ port: 9000, rate: 0.25, mode: 'b', on: true });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('names the variable or flag of a bad value', () => {
    expect(() => loadConfig(spec, [], { T_PORT: 'eighty' })).toThrow(/T_PORT/);
    expect(() => loadConfig(spec, ['--port', '70000'], {})).toThrow(/--port/);
    expect(() => loadConfig(spec, [], { T_RATE: '2' })).toThrow(/T_RATE/);
    expect(() => loadConfig(spec, ['--mode', 'c'], {})).toThrow(/--mode.*one of a, b/);
    expect(() => loadConfig(spec, ['--nope', '1'], {})).toThrow(ConfigError);
    expect(() => loadConfig(spec, ['--port'], {})).toThrow(/missing value/);
  });
});
