import { describe, expect, it } from 'vitest';
import { bufferBytesFor, maxAlignedUnitBytes, readBytesFor } from './chunk-units.ts';

describe('readBytesFor', () => {
  it('reads the whole buffer when the sink names no unit', () => {
    expect(readBytesFor(12345, 131072, undefined)).toBe(131072);
    expect(readBytesFor(0, 4096, 0)).toBe(4096);
  });

  it('ends a read on the next unit boundary', () => {
    // 1000 of a 4096-byte unit done: 3096 complete it, and one more whole unit fits in 8192.
    expect(readBytesFor(1000, 8192, 4096)).toBe(3096 + 4096);
    expect(readBytesFor(1000, 5000, 4096)).toBe(3096);
    expect(readBytesFor(4096, 8192, 4096)).toBe(8192);
    expect(readBytesFor(0, 262160, 262160)).toBe(262160);
  });

  it('reads the whole buffer when the boundary lies beyond it', () => {
    expect(readBytesFor(0, 1000, 4096)).toBe(1000);
  });

  it('ignores units too large to be worth aligned buffers', () => {
    expect(readBytesFor(5, 131072, maxAlignedUnitBytes + 1)).toBe(131072);
  });

  it('never ends a sequence of reads off a boundary when the buffer holds a unit', () => {
    const unit = 262160;
    let done = 777; // a head read left the stream misaligned
    for (let i = 0; i < 20; i++) {
      const n = readBytesFor(done, 300_000, unit);
      expect(n).toBeGreaterThan(0);
      expect(Math.floor(done / unit)).toBe(Math.floor((done + n - 1) / unit)); // no unit split
      done += n;
      expect(done % unit).toBe(0);
    }
  });
});

describe('bufferBytesFor', () => {
  it('grows the buffer to hold one unit, within the limit', () => {
    expect(bufferBytesFor(131072, 262160)).toBe(262160);
    expect(bufferBytesFor(131072, 4096)).toBe(131072);
    expect(bufferBytesFor(131072, undefined)).toBe(131072);
    expect(bufferBytesFor(131072, maxAlignedUnitBytes * 2)).toBe(131072);
  });
});
