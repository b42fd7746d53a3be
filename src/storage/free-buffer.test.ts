import { describe, expect, it } from 'vitest';
import { freeBuffer } from './free-buffer.ts';

describe('freeBuffer', () => {
  it('frees a buffer that is the whole of its memory', () => {
    const b = Buffer.allocUnsafeSlow(64 * 1024).fill(7);
    freeBuffer(b);
    expect(b.buffer.byteLength).toBe(0);
    expect(b.byteLength).toBe(0);
  });

  it('leaves a slice of shared memory alone, and its neighbours intact', () => {
    const whole = Buffer.alloc(1024, 1);
    const slice = whole.subarray(100, 200);
    freeBuffer(slice);
    expect(slice.byteLength).toBe(100);
    expect(whole.byteLength).toBe(1024);
    const pooled = Buffer.from('small strings come from a shared pool');
    freeBuffer(pooled);
    expect(pooled.toString()).toBe('small strings come from a shared pool');
  });
});
