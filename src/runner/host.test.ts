import { lstatSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createHost } from './host.ts';

const host = createHost();
let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'berth-host-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('host', () => {
  it('makes character and block devices and fifos', async () => {
    await host.mknod(join(dir, 'wh'), 'c', 0, 0);
    await host.mknod(join(dir, 'null'), 'c', 1, 3);
    await host.mknod(join(dir, 'loop'), 'b', 7, 300);
    await host.mknod(join(dir, 'pipe'), 'p', 0, 0);
    const wh = lstatSync(join(dir, 'wh'));
    expect(wh.isCharacterDevice()).toBe(true);
    expect(wh.rdev).toBe(0);
    expect(lstatSync(join(dir, 'null')).rdev).toBe((1 << 8) | 3);
    const loop = lstatSync(join(dir, 'loop'));
    expect(loop.isBlockDevice()).toBe(true);
    expect((loop.rdev >> 8) & 0xfff).toBe(7);
    expect((loop.rdev & 0xff) | ((loop.rdev >> 12) & 0xfff00)).toBe(300);
    expect(lstatSync(join(dir, 'pipe')).isFIFO()).toBe(true);
    await expect(host.mknod(join(dir, 'pipe'), 'p', 0, 0)).rejects.toThrow(/File exists/);
    await expect(host.mknod(join(dir, 'bad'), 'c', -1, 0)).rejects.toThrow(/bad major/);
  });

  it('sets and reads xattrs on the path itself, binary values intact', async () => {
    const f = join(dir, 'f');
    writeFileSync(f, '');
    const value = Buffer.from([0, 1, 2, 0xff, 0x0a, 0x22, 0x27, 0x5c]);
    await host.setXattr(f, 'user.bin', value);
    await host.setXattr(f, 'trusted.overlay.opaque', 'y');
    expect(await host.getXattr(f, 'user.bin')).toEqual(value);
    expect((await host.getXattr(f, 'trusted.overlay.opaque'))?.toString()).toBe('y');
    expect(await host.getXattr(f, 'user.none')).toBeNull();

    // On a symlink the link itself is changed, never its target.
    const l = join(dir, 'l');
    symlinkSync(f, l);
    await host.setXattr(l, 'trusted.mark', 'link');
    expect((await host.getXattr(l, 'trusted.mark'))?.toString()).toBe('link');
    expect(await host.getXattr(f, 'trusted.mark')).toBeNull();

    await expect(host.setXattr(f, 'nonsense.name', 'x')).rejects.toThrow(/setfattr .*nonsense\.name/);
    await expect(host.setXattr(join(dir, '-n'), 'user.x', 'x')).rejects.toThrow(/No such file/);
  });

  it('says which package to install when a tool is missing', async () => {
    const saved = process.env.PATH;
    process.env.PATH = dir;
    try {
      await expect(host.setXattr(join(dir, 'f'), 'user.x', 'x')).rejects.toThrow(
        'setfattr is not installed (apt-get install attr)',
      );
      await expect(host.getXattr(join(dir, 'f'), 'user.x')).rejects.toThrow('apt-get install attr');
    } finally {
      process.env.PATH = saved;
    }
  });

  it('lchowns the link, not its target', async () => {
    const f = join(dir, 'f');
    writeFileSync(f, '');
    const l = join(dir, 'l');
    symlinkSync(f, l);
    expect(await host.lchownSafe(l, 1234, 5678)).toBe(true);
    expect(lstatSync(l).uid).toBe(1234);
    expect(lstatSync(l).gid).toBe(5678);
    expect(statSync(f).uid).toBe(process.getuid!());
  });
});
