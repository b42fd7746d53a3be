import { randomBytes } from 'node:crypto';
import type { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createPartPipeline, type PartTarget } from './multipart.ts';

const partSize = 1024;

/** An object store stand-in: records each part's bytes and how they came (buffer or stream). */
function fakeStore(opts: { failStreamAfter?: number; delayMs?: number } = {}) {
  const parts = new Map<number, { bytes: Buffer; via: 'buffer' | 'stream' }>();
  let begun = 0;
  let active = 0;
  let maxActive = 0;
  let aborted = 0;
  const target: PartTarget = {
    async begin() {
      begun++;
    },
    async sendPart(n, body, length, signal) {
      active++;
      maxActive = Math.max(maxActive, active);
      try {
        if (opts.delayMs) await new Promise((r) => setTimeout(r, opts.delayMs));
        if (Buffer.isBuffer(body)) {
          expect(body.byteLength).toBe(length);
          parts.set(n, { bytes: Buffer.from(body), via: 'buffer' });
          return `etag-${n}`;
        }
        const bytes = await readExactly(body, length, signal, opts.failStreamAfter);
        parts.set(n, { bytes, via: 'stream' });
        return `etag-${n}`;
      } finally {
        active--;
      }
    },
  };
  return {
    target,
    parts,
    get begun() {
      return begun;
    },
    get maxActive() {
      return maxActive;
    },
    get aborted() {
      return aborted;
    },
  };

  function readExactly(body: PassThrough, length: number, signal?: AbortSignal, failAfter?: number) {
    return new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let got = 0;
      const fail = (why: string) => {
        body.removeAllListeners('data');
        reject(new Error(why));
      };
      signal?.addEventListener('abort', () => {
        aborted++;
        fail('aborted');
      });
      body.on('data', (c: Buffer) => {
        chunks.push(Buffer.from(c));
        got += c.byteLength;
        if (failAfter !== undefined && got >= failAfter) fail('connection reset');
        else if (got === length) resolve(Buffer.concat(chunks));
        else if (got > length) fail('more bytes than declared');
      });
      body.on('close', () => {
        if (got < length) fail('stream closed early');
      });
    });
  }
}

async function writeAll(p: { write(c: Uint8Array): Promise<void> }, data: Buffer, chunk = 100) {
  for (let off = 0; off < data.byteLength; off += chunk) await p.write(data.subarray(off, off + chunk));
}

function joined(parts: Map<number, { bytes: Buffer }>, numbers: number[]) {
  return Buffer.concat(numbers.map((n) => parts.get(n)!.bytes));
}

describe('part pipeline', () => {
  it('without a hint, sends each full part from its buffer and returns the remainder', async () => {
    const store = fakeStore();
    const p = createPartPipeline({ partSize, target: store.target, nextPart: 1 });
    const data = randomBytes(partSize * 3 + 300);
    await writeAll(p, data);
    const { parts, rest } = await p.finish();
    expect(parts.map((x) => x.PartNumber)).toEqual([1, 2, 3]);
    expect(parts.map((x) => x.ETag)).toEqual(['etag-1', 'etag-2', 'etag-3']);
    expect([...store.parts.values()].every((x) => x.via === 'buffer')).toBe(true);
    expect(Buffer.concat([joined(store.parts, [1, 2, 3]), rest]).equals(data)).toBe(true);
    expect(rest.byteLength).toBe(300);
    expect(p.accepted).toBe(data.byteLength);
  });

  it('with a hint, streams the parts that will fill as their bytes arrive', async () => {
    const store = fakeStore();
    const p = createPartPipeline({ partSize, target: store.target, nextPart: 1 });
    const data = randomBytes(partSize * 2 + 10);
    p.expect(data.byteLength);
    await writeAll(p, data, 333);
    const { parts, rest } = await p.finish();
    expect(parts.map((x) => x.PartNumber)).toEqual([1, 2]);
    expect(store.parts.get(1)!.via).toBe('stream');
    expect(store.parts.get(2)!.via).toBe('stream');
    expect(Buffer.concat([joined(store.parts, [1, 2]), rest]).equals(data)).toBe(true);
    expect(rest.byteLength).toBe(10);
    expect(store.aborted).toBe(0);
  });

  it('stops a streamed part when fewer bytes come than the hint said, keeping them as the remainder', async () => {
    const store = fakeStore();
    const p = createPartPipeline({ partSize, target: store.target, nextPart: 1 });
    p.expect(partSize * 3);
    const data = randomBytes(partSize + 500);
    await writeAll(p, data);
    const { parts, rest } = await p.finish();
    expect(parts.map((x) => x.PartNumber)).toEqual([1]);
    expect(store.aborted).toBe(1);
    expect(store.parts.has(2)).toBe(false);
    expect(Buffer.concat([store.parts.get(1)!.bytes, rest]).equals(data)).toBe(true);
  });

  it('resends a part from its buffer when its stream fails', async () => {
    const store = fakeStore({ failStreamAfter: 400 });
    const p = createPartPipeline({ partSize, target: store.target, nextPart: 1 });
    const data = randomBytes(partSize * 2);
    p.expect(data.byteLength);
    await writeAll(p, data);
    const { parts, rest } = await p.finish();
    expect(parts.map((x) => x.PartNumber)).toEqual([1, 2]);
    expect(store.parts.get(1)!.via).toBe('buffer');
    expect(joined(store.parts, [1, 2]).equals(data)).toBe(true);
    expect(rest.byteLength).toBe(0);
  });

  it('continues the numbering and starts from an earlier writer’s unsent tail', async () => {
    const store = fakeStore();
    const initial = randomBytes(200);
    const p = createPartPipeline({ partSize, target: store.target, nextPart: 4, initial });
    expect(p.accepted).toBe(200);
    const more = randomBytes(partSize + 100);
    await writeAll(p, more);
    const { parts, rest } = await p.finish();
    expect(parts.map((x) => x.PartNumber)).toEqual([4]);
    expect(Buffer.concat([store.parts.get(4)!.bytes, rest]).equals(Buffer.concat([initial, more]))).toBe(
      true,
    );
  });

  it('keeps at most one finished part in flight while the next fills', async () => {
    const store = fakeStore({ delayMs: 20 });
    const p = createPartPipeline({ partSize, target: store.target, nextPart: 1 });
    const data = randomBytes(partSize * 6);
    await writeAll(p, data, partSize);
    const { parts } = await p.finish();
    expect(parts).toHaveLength(6);
    expect(store.maxActive).toBe(1);
    expect(joined(store.parts, [1, 2, 3, 4, 5, 6]).equals(data)).toBe(true);
  });

  it('reports a failed part on the next write or at the finish', async () => {
    const target: PartTarget = {
      async begin() {},
      async sendPart() {
        throw new Error('SlowDown, still, after every retry');
      },
    };
    const p = createPartPipeline({ partSize, target, nextPart: 1 });
    await p.write(randomBytes(partSize));
    await expect(p.finish()).rejects.toThrow('SlowDown');
  });

  it('abandon() stops a streamed part and waits for it', async () => {
    const store = fakeStore();
    const p = createPartPipeline({ partSize, target: store.target, nextPart: 1 });
    p.expect(partSize * 2);
    await p.write(randomBytes(100));
    await p.abandon();
    expect(store.aborted).toBe(1);
    await expect(p.write(randomBytes(1))).rejects.toThrow('finished');
  });
});

describe('part buffers', () => {
  it('are reused by the next pipeline once sent or released, with no bytes of one upload in another', async () => {
    const seen: ArrayBuffer[] = [];
    const bodies: Buffer[] = [];
    const target: PartTarget = {
      async begin() {},
      async sendPart(_n, body) {
        if (!Buffer.isBuffer(body)) throw new Error('expected a buffered part');
        seen.push(body.buffer as ArrayBuffer);
        bodies.push(Buffer.from(body));
        return 'etag';
      },
    };
    // An odd size no other test uses, so the shared idle list holds only this test's buffers.
    const size = 4099;
    const a = createPartPipeline({ partSize: size, target, nextPart: 1 });
    const first = randomBytes(size + 10);
    await a.write(first);
    const done = await a.finish();
    expect(done.rest).toEqual(first.subarray(size));
    const restBuffer = done.rest.buffer;
    done.release();

    const b = createPartPipeline({ partSize: size, target, nextPart: 1 });
    const second = randomBytes(size * 2);
    await b.write(second);
    await b.finish();
    // b's parts filled buffers a gave back (its remainder's and its sent part's; a part sent
    // before the next one opens may be filled again at once), none newly allocated.
    expect(seen).toHaveLength(3);
    for (const used of seen.slice(1)) expect([restBuffer, seen[0]]).toContain(used);
    expect(Buffer.concat(bodies.slice(1))).toEqual(second);
  });
});
