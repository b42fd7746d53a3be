import { createHash, randomBytes } from 'node:crypto';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { describeDriver } from '../../test/storage/driver-suite.ts';
import { checked } from './checked.ts';
import { encrypted } from './encrypted.ts';
import { createFsDriver } from './fs.ts';
import { createKeyring, newKek } from './keyring.ts';
import { createMemoryDriver } from './memory.ts';

/** Every file under root, dot-names included, as root-relative paths. */
function walk(root: string, dir = root): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? [p.slice(root.length), ...walk(root, p)] : [p.slice(root.length)];
  });
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

// Small segments so the suite's multi-megabyte cases cross thousands of segment boundaries.
describeDriver('encrypted(filesystem)', async () => {
  const root = mkdtempSync(join(tmpdir(), 'berth-enc-'));
  return {
    driver: encrypted(createFsDriver(root), { keyring: createKeyring([newKek()]), segmentBytes: 4096 + 7 }),
    leftovers: async () => walk(root).filter((p) => !/^\/\.(objects|pending)$/.test(p)),
    cleanup: async () => rmSync(root, { recursive: true, force: true }),
  };
});

describeDriver('encrypted(memory)', async () => {
  const raw = createMemoryDriver();
  return {
    driver: encrypted(raw, { keyring: createKeyring([newKek()]), segmentBytes: 1000 }),
    leftovers: async () => {
      const out: string[] = [];
      for (const top of ['/', '/.objects', '/.pending']) {
        try {
          out.push(...(await raw.list(top)).filter((p) => !p.startsWith('/.')));
        } catch {
          // absent: nothing left there
        }
      }
      return out;
    },
    cleanup: async () => {},
  };
});

describe('encryption at rest', () => {
  let root: string;
  const kek = newKek();
  const make = (ring = createKeyring([kek])) =>
    checked(encrypted(createFsDriver(root), { keyring: ring, segmentBytes: 1024 }));
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'berth-enc-'));
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  const objectFile = () => {
    const objects = readdirSync(join(root, '.objects'));
    expect(objects).toHaveLength(1);
    return join(root, '.objects', objects[0]!);
  };
  async function expectRejected(read: () => Promise<unknown>, pattern: RegExp) {
    await expect(read()).rejects.toThrow(pattern);
  }

  it('stores no plaintext, small or large, and reads it back', async () => {
    const d = make();
    const secret = Buffer.from('the quick brown fox jumps over the lazy registry '.repeat(200));
    await d.putContent('/blobs/big', secret);
    await d.putContent('/small', Buffer.from('tiny secret link'));
    for (const f of walk(root)) {
      if (f.endsWith('/') || (!f.includes('.') && readdirSync(join(root, '.')).length === 0)) continue;
      try {
        const raw = readFileSync(join(root, f));
        expect(raw.includes('quick brown fox')).toBe(false);
        expect(raw.includes('tiny secret')).toBe(false);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EISDIR') throw e;
      }
    }
    expect(Buffer.from(await d.getContent('/blobs/big')).equals(secret)).toBe(true);
    expect((await d.stat('/blobs/big')).size).toBe(secret.length);
    expect(Buffer.from(await d.getContent('/small')).toString()).toBe('tiny secret link');
  });

  it('detects a flipped bit anywhere in the content', async () => {
    const d = make();
    const data = randomBytes(10_000);
    await d.putContent('/x', data);
    const f = objectFile();
    const raw = readFileSync(f);
    raw[5000] = raw[5000]! ^ 1;
    writeFileSync(f, raw);
    await expectRejected(() => make().getContent('/x'), /segment \d+ failed authentication/);
    // A range read that avoids the damaged segment still works; one that touches it fails.
    const fresh = make();
    const got: Buffer[] = [];
    await fresh.copyTo('/x', 0, 1000, async (c) => {
      got.push(Buffer.from(c));
    });
    expect(Buffer.concat(got).equals(data.subarray(0, 1000))).toBe(true);
    await expectRejected(() => fresh.copyTo('/x', 4500, 1000, async () => {}), /failed authentication/);
  });

  it('detects truncation, and segments reordered or swapped', async () => {
    const data = randomBytes(5 * 1024);
    await make().putContent('/x', data);
    const f = objectFile();
    const original = readFileSync(f);
    const stride = 1024 + 16;
    writeFileSync(f, original.subarray(0, original.length - 20));
    await expectRejected(
      () => make().getContent('/x'),
      /authentication|ended early|invalid offset|truncated/,
    );
    writeFileSync(f, original.subarray(0, 4 * stride)); // drop the final segment whole
    await expectRejected(
      () => make().getContent('/x'),
      /authentication|ended early|invalid offset|truncated/,
    );
    const swapped = Buffer.concat([
      original.subarray(stride, 2 * stride),
      original.subarray(0, stride),
      original.subarray(2 * stride),
    ]);
    writeFileSync(f, swapped);
    await expectRejected(() => make().getContent('/x'), /segment 0 failed authentication/);
  });

  it('detects whole objects swapped between paths (records and content alike)', async () => {
    const d = make();
    await d.putContent('/a', Buffer.from('content of a, which is long enough '.repeat(100)));
    await d.putContent('/b', Buffer.from('content of b, which is long enough '.repeat(100)));
    const ra = readFileSync(join(root, 'a'));
    const rb = readFileSync(join(root, 'b'));
    writeFileSync(join(root, 'a'), rb);
    writeFileSync(join(root, 'b'), ra);
    await expectRejected(() => make().getContent('/a'), /data key does not unwrap/);
    // Content objects swapped under intact records: each record's key opens only its own.
    writeFileSync(join(root, 'a'), ra);
    writeFileSync(join(root, 'b'), rb);
    const [o1, o2] = readdirSync(join(root, '.objects')).map((o) => join(root, '.objects', o));
    const c1 = readFileSync(o1!);
    writeFileSync(o1!, readFileSync(o2!));
    writeFileSync(o2!, c1);
    await expectRejected(() => make().getContent('/a'), /failed authentication/);
  });

  it('moves by re-wrapping the record, without rewriting the content', async () => {
    const d = make();
    const data = randomBytes(100_000);
    await d.putContent('/uploads/u/data', data);
    const before = objectFile();
    const bytes = readFileSync(before);
    await d.move('/uploads/u/data', '/blobs/sha256/ab/abc/data');
    expect(objectFile()).toBe(before);
    expect(readFileSync(before).equals(bytes)).toBe(true);
    expect(sha(await d.getContent('/blobs/sha256/ab/abc/data'))).toBe(sha(data));
    // The old record, copied back to the old path, no longer opens the moved content.
    await expect(d.stat('/uploads/u/data')).rejects.toThrow(/not found/);
  });

  it('rotates: a new KEK re-wraps every data key without touching content, then the old key can go', async () => {
    const d = make();
    await d.putContent('/one', randomBytes(50_000));
    const w = await d.writer('/pending/data');
    await w.write(randomBytes(3000));
    await w.close();
    const contentBefore = Object.fromEntries(
      readdirSync(join(root, '.objects')).map((o) => [o, sha(readFileSync(join(root, '.objects', o)))]),
    );
    const next = newKek();
    const rotated = encrypted(createFsDriver(root), {
      keyring: createKeyring([kek, next]),
      segmentBytes: 1024,
    });
    expect(await rotated.keysInUse()).toEqual({ [kek.id]: 2 });
    expect((await rotated.rewrapAll()).rewrapped).toBe(2);
    expect(await rotated.keysInUse()).toEqual({ [next.id]: 2 });
    const contentAfter = Object.fromEntries(
      readdirSync(join(root, '.objects')).map((o) => [o, sha(readFileSync(join(root, '.objects', o)))]),
    );
    expect(contentAfter).toEqual(contentBefore);
    const onlyNew = checked(
      encrypted(createFsDriver(root), { keyring: createKeyring([next]), segmentBytes: 1024 }),
    );
    expect((await onlyNew.stat('/one')).size).toBe(50_000);
    const resumed = await onlyNew.writer('/pending/data', { append: true });
    expect(resumed.size).toBe(3000);
    await resumed.commit();
    expect((await onlyNew.stat('/pending/data')).size).toBe(3000);
  });

  it('reads legacy plaintext only when allowed, and migrates it', async () => {
    const plain = createFsDriver(root);
    const big = randomBytes(2 * 1024 * 1024);
    await plain.putContent('/blobs/old', big);
    await plain.putContent('/link', Buffer.from('sha256:abc'));
    await expect(make().getContent('/link')).rejects.toThrow(/not an encrypted object/);
    const ring = createKeyring([kek]);
    const migrating = encrypted(createFsDriver(root), {
      keyring: ring,
      segmentBytes: 1024,
      allowPlaintext: true,
    });
    expect(Buffer.from(await migrating.getContent('/link')).toString()).toBe('sha256:abc');
    expect((await migrating.stat('/blobs/old')).size).toBe(big.length);
    expect(await migrating.keysInUse()).toEqual({ plaintext: 2 });
    expect(await migrating.encryptPlaintext()).toBe(2);
    expect(await migrating.keysInUse()).toEqual({ [kek.id]: 2 });
    expect(readFileSync(join(root, 'link')).includes('sha256:abc')).toBe(false);
    expect(sha(await make().getContent('/blobs/old'))).toBe(sha(big));
  });
});

describe('default segments', () => {
  let root: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'berth-enc-default-'));
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('keeps content up to 64 KiB inline in its record, and larger content in an object', async () => {
    const d = checked(encrypted(createFsDriver(root), { keyring: createKeyring([newKek()]) }));
    const small = randomBytes(64 * 1024);
    const middling = randomBytes(100 * 1024); // under one default segment, over the inline limit
    const large = randomBytes(600 * 1024 + 3); // several segments
    await d.putContent('/small', small);
    expect(readdirSync(root)).not.toContain('.objects');
    await d.putContent('/middling', middling);
    expect(readdirSync(join(root, '.objects'))).toHaveLength(1);
    await d.putContent('/large', large);
    expect(readdirSync(join(root, '.objects'))).toHaveLength(2);
    expect(Buffer.from(await d.getContent('/small')).equals(small)).toBe(true);
    expect(Buffer.from(await d.getContent('/middling')).equals(middling)).toBe(true);
    expect(Buffer.from(await d.getContent('/large')).equals(large)).toBe(true);
    // A range across a segment boundary of the default size opens both segments.
    const parts: Buffer[] = [];
    await d.copyTo('/large', 256 * 1024 - 10, 20, async (c) => {
      parts.push(Buffer.from(c));
    });
    expect(Buffer.concat(parts).equals(large.subarray(256 * 1024 - 10, 256 * 1024 + 10))).toBe(true);
  });
});

// Objects written by berth before the nonce and AAD were built without BigInt (written at commit
// c61fdc4 with the KEK below, 1000-byte segments): every later version must read them as they were.
describe('objects written by an earlier version', () => {
  const kek = { id: 'golden', key: Buffer.from(Array.from({ length: 32 }, (_, i) => i)) };
  const content = (n: number, m: number) =>
    Buffer.from(Array.from({ length: n }, (_, i) => (i * m + 3) & 255));
  let root: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'berth-enc-v1-'));
    cpSync(join(import.meta.dirname, 'testdata', 'encrypted-v1'), root, { recursive: true });
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('still read, whole and by range, inline and in segments', async () => {
    const d = checked(encrypted(createFsDriver(root), { keyring: createKeyring([kek]) }));
    expect(Buffer.from(await d.getContent('/golden/inline')).equals(content(100, 7))).toBe(true);
    const segmented = content(3500, 13);
    expect(Buffer.from(await d.getContent('/golden/segmented')).equals(segmented)).toBe(true);
    const parts: Buffer[] = [];
    await d.copyTo('/golden/segmented', 990, 2020, async (c) => {
      parts.push(Buffer.from(c));
    });
    expect(Buffer.concat(parts).equals(segmented.subarray(990, 3010))).toBe(true);
  });
});
