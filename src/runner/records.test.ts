import { describe, expect, it } from 'vitest';
import { createMemoryDriver, type StorageDriver } from '../storage/index.ts';
import { createRecords } from './records.ts';

describe('records', () => {
  it('round-trips, lists, removes', async () => {
    const r = createRecords<{ n: number }>(createMemoryDriver(), '/runner/things');
    expect(await r.load()).toEqual([]);
    await r.save('a', { n: 1 });
    await r.save('b', { n: 2 });
    expect((await r.load()).map((x) => x.n).sort()).toEqual([1, 2]);
    expect(await r.get('a')).toEqual({ n: 1 });
    await r.remove('a');
    await r.remove('a');
    expect(await r.get('a')).toBeUndefined();
  });

  it('coalesces writes behind one in flight, the last value winning', async () => {
    const inner = createMemoryDriver();
    let puts = 0;
    const counting: StorageDriver = Object.assign(Object.create(inner), {
      putContent: async (p: string, c: Uint8Array) => {
        puts++;
        await new Promise((r) => setTimeout(r, 5));
        return inner.putContent(p, c);
      },
    });
    const r = createRecords<{ n: number }>(counting, '/x');
    const writes = Array.from({ length: 10 }, (_, i) => r.save('t', { n: i }));
    await Promise.all(writes);
    await r.flush();
    expect(await r.get('t')).toEqual({ n: 9 });
    expect(puts).toBe(2);
  });

  it('refuses ids that could escape the directory', async () => {
    const r = createRecords(createMemoryDriver(), '/x');
    expect(() => r.save('../y', {})).toThrow(/bad record id/);
  });
});
