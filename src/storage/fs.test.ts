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

  it('prunes directories that a delete or a move leaves empty', async () => {
    const root = mkdtempSync(join(tmpdir(), 'berth-fs-'));
    try {
      const d = checked(createFsDriver(root));
      await d.putContent('/a/b/c/file', new Uint8Array([1]));
      await d.putContent('/a/keep', new Uint8Array([1]));
      await d.delete('/a/b/c/file');
      expect(walk(root)).toEqual(['/a', '/a/keep']);
      await d.move('/a/keep', '/z/moved');
      expect(walk(root)).toEqual(['/z', '/z/moved']);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
