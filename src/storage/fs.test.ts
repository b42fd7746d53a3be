import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { describeDriver } from '../../test/storage/driver-suite.ts';
import { checked } from './checked.ts';
import { createFsDriver } from './fs.ts';

/** Every file and directory under root, dot-names included. */
function walk(root: string, dir = root): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? [p.slice(root.length), ...walk(root, p)] : [p.slice(root.length)];
  });
}

describeDriver('filesystem', async () => {
  const root = mkdtempSync(join(tmpdir(), 'berth-fs-'));
  return {
    driver: createFsDriver(root),
    leftovers: async () => walk(root),
    cleanup: async () => rmSync(root, { recursive: true, force: true }),
  };
});

describe('filesystem driver specifics', () => {
  it('writes beside the target under a hidden temporary name, and hides pending writes', async () => {
    const root = mkdtempSync(join(tmpdir(), 'berth-fs-'));
    try {
      const d = checked(createFsDriver(root));
      const w = await d.writer('/x/data');
      await w.write(new TextEncoder().encode('abc'));
      const names = readdirSync(join(root, 'x'));
      expect(names).toHaveLength(1);
      expect(names[0]).toMatch(/^\.data\.[0-9a-f]+\.tmp$/);
      expect(await d.list('/x')).toEqual([]);
      await w.close();
      expect(readdirSync(join(root, 'x'))).toEqual(['.data.pending']);
      expect(await d.list('/x')).toEqual([]);
      const again = await d.writer('/x/data', { append: true });
      await again.commit();
      expect(readdirSync(join(root, 'x'))).toEqual(['data']);
      expect(statSync(join(root, 'x', 'data')).size).toBe(3);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('prunes directories a delete or a move leaves empty, keeping the top-level ones', async () => {
    const root = mkdtempSync(join(tmpdir(), 'berth-fs-'));
    try {
      const d = checked(createFsDriver(root));
      await d.putContent('/a/b/c/file', new Uint8Array([1]));
      await d.putContent('/a/keep', new Uint8Array([1]));
      await d.delete('/a/b/c/file');
      expect(walk(root)).toEqual(['/a', '/a/keep']);
      await d.move('/a/keep', '/z/y/moved');
      expect(walk(root).sort()).toEqual(['/a', '/z', '/z/y', '/z/y/moved']);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('lets writes land while concurrent deletes prune the same directories', async () => {
    const root = mkdtempSync(join(tmpdir(), 'berth-fs-'));
    try {
      const d = checked(createFsDriver(root));
      const errors: string[] = [];
      // Every worker creates and deletes files in one shared directory; a delete that leaves it
      // empty prunes it, racing the other workers' creates.
      await Promise.all(
        Array.from({ length: 16 }, async (_, w) => {
          for (let i = 0; i < 60; i++) {
            const p = `/shared/dir/${w}-${i}`;
            try {
              if (i % 3 === 0) {
                const wr = await d.writer(p);
                await wr.write(new Uint8Array([w, i]));
                await wr.commit();
              } else if (i % 3 === 1) {
                await d.putContent(`/other/${w}-${i}`, new Uint8Array([w]));
                await d.move(`/other/${w}-${i}`, p);
              } else {
                await d.putContent(p, new Uint8Array([w, i]));
              }
              await d.delete(p);
            } catch (e) {
              errors.push(`${p}: ${(e as Error).message}`);
            }
          }
        }),
      );
      expect(errors).toEqual([]);
      expect(walk(root).sort()).toEqual(['/other', '/shared']); // top-level directories stay
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('ends copyTo chunks on the boundaries of the units a sink names', async () => {
    const root = mkdtempSync(join(tmpdir(), 'berth-fs-'));
    try {
      const d = checked(createFsDriver(root));
      const content = randomBytes(3 * 1024 * 1024 + 77);
      await d.putContent('/blob', content);
      const unit = 262_160; // a sealed 256 KiB segment with its tag: no divisor of the read size
      for (const offset of [0, 1000]) {
        const length = content.length - offset;
        const sizes: number[] = [];
        const parts: Buffer[] = [];
        const sink = async (chunk: Uint8Array) => {
          sizes.push(chunk.byteLength);
          parts.push(Buffer.from(chunk));
        };
        await d.copyTo('/blob', offset, length, Object.assign(sink, { unitBytes: unit }));
        expect(Buffer.concat(parts).equals(content.subarray(offset))).toBe(true);
        // Whole units, counted from the start of the range, and then the remainder.
        const whole = Math.floor(length / unit);
        expect(sizes.slice(0, whole)).toEqual(Array(whole).fill(unit));
        expect(sizes.slice(whole)).toEqual([length % unit]);
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
