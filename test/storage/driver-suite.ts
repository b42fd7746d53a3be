// The one suite every StorageDriver must pass (memory, filesystem, and later S3 and encrypted
// drivers): it tests the contract, never a driver's internals. Each test runs against
// checked(driver), as production does, and must leave nothing behind: after each test the suite
// deletes what the test stored and asks the driver's own leftovers() whether anything remains
// (temporary files, pending writes, empty husks a driver should have pruned are its business).
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  checked,
  InvalidOffsetError,
  InvalidPathError,
  PathNotFoundError,
  type StorageDriver,
} from '../../src/storage/index.ts';

export interface DriverUnderTest {
  readonly driver: StorageDriver;
  /** Everything the driver holds below its root, including its own hidden bookkeeping. */
  leftovers(): Promise<string[]>;
  cleanup(): Promise<void>;
}

async function readAll(d: StorageDriver, path: string, offset?: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of await d.reader(path, offset)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const bytes = (s: string) => new TextEncoder().encode(s);

export function describeDriver(name: string, make: () => Promise<DriverUnderTest>) {
  describe(`StorageDriver contract: ${name}`, () => {
    let dut: DriverUnderTest;
    let d: StorageDriver;
    beforeAll(async () => {
      dut = await make();
      d = checked(dut.driver);
    });
    afterAll(async () => {
      await dut.cleanup();
    });
    afterEach(async () => {
      for (const p of await d.list('/')) await d.delete(p);
      expect(await dut.leftovers()).toEqual([]);
    });

    it('round-trips content, including empty and binary', async () => {
      const bin = randomBytes(100_000);
      await d.putContent('/a/b/bin', bin);
      await d.putContent('/a/empty', new Uint8Array());
      expect(Buffer.from(await d.getContent('/a/b/bin')).equals(bin)).toBe(true);
      expect((await d.getContent('/a/empty')).byteLength).toBe(0);
      expect((await d.stat('/a/b/bin')).size).toBe(100_000);
    });

    it('overwrites content whole', async () => {
      await d.putContent('/f', bytes('a much longer first version'));
      await d.putContent('/f', bytes('short'));
      expect(Buffer.from(await d.getContent('/f')).toString()).toBe('short');
    });

    it('answers PathNotFoundError for what is not there', async () => {
      await expect(d.getContent('/missing')).rejects.toBeInstanceOf(PathNotFoundError);
      await expect(d.stat('/missing/deeper')).rejects.toBeInstanceOf(PathNotFoundError);
      await expect(d.reader('/missing')).rejects.toBeInstanceOf(PathNotFoundError);
      await expect(d.list('/missing')).rejects.toBeInstanceOf(PathNotFoundError);
      await expect(d.delete('/missing')).rejects.toBeInstanceOf(PathNotFoundError);
      await expect(d.move('/missing', '/x')).rejects.toBeInstanceOf(PathNotFoundError);
      await d.putContent('/file', bytes('x'));
      await expect(d.getContent('/file/child')).rejects.toBeInstanceOf(PathNotFoundError);
    });

    it('streams from any offset; past the end is InvalidOffsetError', async () => {
      const data = randomBytes(3 * 1024 * 1024 + 17);
      await d.putContent('/big', data);
      expect((await readAll(d, '/big')).equals(data)).toBe(true);
      expect((await readAll(d, '/big', 1_000_001)).equals(data.subarray(1_000_001))).toBe(true);
      expect((await readAll(d, '/big', data.length)).length).toBe(0);
      await expect(d.reader('/big', data.length + 1)).rejects.toBeInstanceOf(InvalidOffsetError);
    });

    it('streams a large write in small chunks and reads it back intact', async () => {
      const w = await d.writer('/layers/large');
      const h = createHash('sha256');
      for (let i = 0; i < 128; i++) {
        const chunk = randomBytes(64 * 1024);
        h.update(chunk);
        await w.write(chunk);
      }
      expect(w.size).toBe(8 * 1024 * 1024);
      await w.commit();
      const back = createHash('sha256');
      for await (const c of await d.reader('/layers/large')) back.update(c as Buffer);
      expect(back.digest('hex')).toBe(h.digest('hex'));
    });

    it('keeps a write invisible until commit', async () => {
      await d.putContent('/dir/old', bytes('old'));
      const w = await d.writer('/dir/new');
      await w.write(bytes('pending bytes'));
      await expect(d.stat('/dir/new')).rejects.toBeInstanceOf(PathNotFoundError);
      await expect(d.getContent('/dir/new')).rejects.toBeInstanceOf(PathNotFoundError);
      expect(await d.list('/dir')).toEqual(['/dir/old']);
      const over = await d.writer('/dir/old');
      await over.write(bytes('replacement'));
      expect(Buffer.from(await d.getContent('/dir/old')).toString()).toBe('old');
      await over.commit();
      await w.commit();
      expect(Buffer.from(await d.getContent('/dir/new')).toString()).toBe('pending bytes');
      expect(Buffer.from(await d.getContent('/dir/old')).toString()).toBe('replacement');
      expect(await d.list('/dir')).toEqual(['/dir/new', '/dir/old']);
    });

    it('leaves nothing after cancel, and keeps existing content', async () => {
      await d.putContent('/keep', bytes('kept'));
      const w = await d.writer('/keep');
      await w.write(randomBytes(5000));
      await w.cancel();
      const fresh = await d.writer('/never');
      await fresh.write(bytes('gone'));
      await fresh.cancel();
      expect(Buffer.from(await d.getContent('/keep')).toString()).toBe('kept');
      await expect(d.stat('/never')).rejects.toBeInstanceOf(PathNotFoundError);
    });

    it('resumes a closed write with append, and commits the concatenation', async () => {
      const first = await d.writer('/up/data');
      await first.write(bytes('hello '));
      await first.close();
      await expect(d.stat('/up/data')).rejects.toBeInstanceOf(PathNotFoundError);
      const second = await d.writer('/up/data', { append: true });
      expect(second.size).toBe(6);
      await second.write(bytes('world'));
      await second.close();
      const third = await d.writer('/up/data', { append: true });
      expect(third.size).toBe(11);
      await third.write(bytes('!'));
      await third.commit();
      expect(Buffer.from(await d.getContent('/up/data')).toString()).toBe('hello world!');
      const none = await d.writer('/up/other', { append: true });
      expect(none.size).toBe(0);
      await none.cancel();
    });

    it('discards a pending write on cancel of the resumed writer', async () => {
      const w = await d.writer('/p/data');
      await w.write(bytes('abc'));
      await w.close();
      await (await d.writer('/p/data', { append: true })).cancel();
      const again = await d.writer('/p/data', { append: true });
      expect(again.size).toBe(0);
      await again.cancel();
    });

    it('lets concurrent writers to one path race: the last commit wins whole', async () => {
      const contents = Array.from({ length: 5 }, (_, i) => Buffer.alloc(200_000 + i * 1000, 65 + i));
      const writers = await Promise.all(contents.map(() => d.writer('/race/target')));
      for (let step = 0; step < 4; step++) {
        await Promise.all(
          writers.map((w, i) => {
            const c = contents[i]!;
            const part = Math.ceil(c.length / 4);
            return w.write(c.subarray(step * part, (step + 1) * part));
          }),
        );
      }
      const order = [3, 0, 4, 1, 2];
      for (const i of order) {
        await writers[i]!.commit();
        expect(sha(await d.getContent('/race/target'))).toBe(sha(contents[i]!));
      }
      await Promise.all(
        contents.map(async (_, i) => {
          const w = await d.writer('/race/parallel');
          await w.write(contents[i]!);
          await w.commit();
        }),
      );
      const final = sha(await d.getContent('/race/parallel'));
      expect(contents.map(sha)).toContain(final);
    });

    it('lists direct children sorted, files and directories alike', async () => {
      for (const p of ['/l/b', '/l/a/x', '/l/a/y/z', '/l/c', '/l/B']) await d.putContent(p, bytes(p));
      expect(await d.list('/l')).toEqual(['/l/B', '/l/a', '/l/b', '/l/c']);
      expect(await d.list('/l/a')).toEqual(['/l/a/x', '/l/a/y']);
      expect(await d.list('/')).toEqual(['/l']);
      expect((await d.stat('/l/a')).isDir).toBe(true);
      expect((await d.stat('/l/a/x')).isDir).toBe(false);
    });

    it('moves a file, replacing the destination', async () => {
      await d.putContent('/m/src', bytes('payload'));
      await d.putContent('/m/dst/existing', bytes('old'));
      await d.move('/m/src', '/m/dst/existing');
      expect(Buffer.from(await d.getContent('/m/dst/existing')).toString()).toBe('payload');
      await expect(d.stat('/m/src')).rejects.toBeInstanceOf(PathNotFoundError);
      await d.putContent('/m/src2', bytes('two'));
      await d.move('/m/src2', '/n/new/deep/place');
      expect(Buffer.from(await d.getContent('/n/new/deep/place')).toString()).toBe('two');
    });

    it('deletes files and whole trees', async () => {
      await d.putContent('/t/one', bytes('1'));
      await d.putContent('/t/sub/two', bytes('2'));
      await d.putContent('/t/sub/deeper/three', bytes('3'));
      await d.delete('/t/one');
      await expect(d.stat('/t/one')).rejects.toBeInstanceOf(PathNotFoundError);
      await d.delete('/t/sub');
      await expect(d.list('/t/sub')).rejects.toBeInstanceOf(PathNotFoundError);
      await expect(d.getContent('/t/sub/deeper/three')).rejects.toBeInstanceOf(PathNotFoundError);
    });

    it('copies byte ranges to a sink, reusing buffers only once released', async () => {
      const data = randomBytes(5 * 1024 * 1024 + 123);
      await d.putContent('/copy/src', data);
      for (const [offset, length] of [
        [0, data.length],
        [1_000_000, 3_000_000],
        [data.length - 10, 10],
        [0, 0],
      ] as const) {
        const got: Buffer[] = [];
        await d.copyTo('/copy/src', offset, length, async (chunk) => {
          // Release late and copy only then: a driver reusing a buffer too early corrupts this.
          await new Promise((r) => setTimeout(r, 2));
          got.push(Buffer.from(chunk));
        });
        expect(sha(Buffer.concat(got))).toBe(sha(data.subarray(offset, offset + length)));
      }
      await expect(d.copyTo('/copy/src', data.length - 5, 10, async () => {})).rejects.toBeInstanceOf(
        InvalidOffsetError,
      );
      await expect(d.copyTo('/copy/missing', 0, 1, async () => {})).rejects.toBeInstanceOf(PathNotFoundError);
      await expect(
        d.copyTo('/copy/src', 0, data.length, async () => {
          throw new Error('client went away');
        }),
      ).rejects.toThrow(/client went away/);
    });

    it('refuses paths outside the grammar before the driver sees them', async () => {
      const bad = [
        'relative',
        '/a/../b',
        '/a/./b',
        '//a',
        '/a/',
        '/.hidden',
        '/a/.pending',
        '/a\\b',
        '/a\u0000b',
        '/a b',
        '',
      ];
      for (const p of bad) {
        await expect(d.putContent(p, bytes('x')), p).rejects.toBeInstanceOf(InvalidPathError);
        await expect(d.getContent(p), p).rejects.toBeInstanceOf(InvalidPathError);
        await expect(d.writer(p), p).rejects.toBeInstanceOf(InvalidPathError);
        await expect(d.delete(p), p).rejects.toBeInstanceOf(InvalidPathError);
        await expect(d.move('/ok', p), p).rejects.toBeInstanceOf(InvalidPathError);
      }
      await expect(d.delete('/')).rejects.toBeInstanceOf(InvalidPathError);
      expect(await d.list('/')).toEqual([]);
    });
  });
}
