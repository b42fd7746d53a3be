import { describe, expect, it } from 'vitest';
import { createLru } from './cache.ts';

describe('createLru', () => {
  it('evicts the least recently used entry beyond maxEntries', () => {
    const lru = createLru<number>({ maxEntries: 2 });
    lru.set('a', 1);
    lru.set('b', 2);
    expect(lru.get('a')).toBe(1); // a is now the most recent
    lru.set('c', 3);
    expect(lru.get('b')).toBeUndefined();
    expect(lru.get('a')).toBe(1);
    expect(lru.get('c')).toBe(3);
  });

  it('bounds the summed weight and refuses entries heavier than the bound', () => {
    const lru = createLru<string>({ maxEntries: 100, maxWeight: 10 }, (v) => v.length);
    lru.set('x', '123456');
    lru.set('y', '12345');
    expect(lru.get('x')).toBeUndefined();
    expect(lru.weight).toBe(5);
    lru.set('huge', '12345678901');
    expect(lru.get('huge')).toBeUndefined();
    expect(lru.get('y')).toBe('12345');
  });

  it('replaces values, deletes keys and prefixes', () => {
    const lru = createLru<string>({ maxEntries: 10 }, (v) => v.length);
    lru.set('r1:a', 'aa');
    lru.set('r1:a', 'a');
    lru.set('r1:b', 'b');
    lru.set('r2:a', 'c');
    expect(lru.weight).toBe(3);
    lru.delete('r2:a');
    expect(lru.get('r2:a')).toBeUndefined();
    lru.deletePrefix('r1:');
    expect(lru.size).toBe(0);
    expect(lru.weight).toBe(0);
  });
});
