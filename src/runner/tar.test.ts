import { execFileSync } from 'node:child_process';
import { linkSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readTar, type TarEntry, TarError } from './tar.ts';

// ---- a tiny tar writer: ustar (with prefix), GNU L/K, PAX x/g, and room for mischief ----
interface Spec {
  path: string;
  flag?: string;
  body?: string | Buffer;
  /** Declared size when it must differ from the body's. */
  size?: number;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  link?: string;
  major?: number;
  minor?: number;
  pax?: Record<string, string | Buffer>;
  /** Edits the finished header (checksum is recomputed afterwards unless keepSum). */
  patch?: (h: Buffer) => void;
  keepSum?: boolean;
}

function octal(b: Buffer, off: number, len: number, n: number): void {
  b.write(`${n.toString(8).padStart(len - 1, '0')}\0`, off, len, 'latin1');
}

function checksum(b: Buffer, signed = false): void {
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += signed && x > 127 ? x - 256 : x;
  b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
}

function header(s: Spec, size: number, format: 'ustar' | 'gnu'): Buffer {
  const b = Buffer.alloc(512);
  let name = s.path;
  if (format === 'ustar' && Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf('/', 155);
    b.write(name.slice(0, cut), 345, 155, 'utf8');
    name = name.slice(cut + 1);
  }
  b.write(name, 0, 100, 'utf8');
  octal(b, 100, 8, s.mode ?? 0o644);
  octal(b, 108, 8, s.uid ?? 0);
  octal(b, 116, 8, s.gid ?? 0);
  octal(b, 124, 12, size);
  octal(b, 136, 12, s.mtime ?? 1_600_000_000);
  b.write(s.flag ?? '0', 156, 1, 'latin1');
  b.write(s.link ?? '', 157, 100, 'utf8');
  b.write(format === 'gnu' ? 'ustar  \0' : 'ustar\x0000', 257, 8, 'latin1');
  octal(b, 329, 8, s.major ?? 0);
  octal(b, 337, 8, s.minor ?? 0);
  checksum(b);
  if (s.patch) {
    s.patch(b);
    if (!s.keepSum) checksum(b);
  }
  return b;
}

const padded = (data: Buffer) => Buffer.concat([data, Buffer.alloc((512 - (data.length % 512)) % 512)]);

function paxRecords(records: Record<string, string | Buffer>): Buffer {
  return Buffer.concat(
    Object.entries(records).map(([k, v]) => {
      const rest = Buffer.concat([Buffer.from(` ${k}=`), Buffer.from(v), Buffer.from('\n')]);
      let len = rest.length + 1;
      while (String(len).length + rest.length !== len) len = String(len).length + rest.length;
      return Buffer.concat([Buffer.from(String(len)), rest]);
    }),
  );
}

/** Entries in order; no end marker unless `end` (the default). */
function tar(specs: Spec[], opts: { format?: 'ustar' | 'gnu'; end?: boolean } = {}): Buffer {
  const format = opts.format ?? 'ustar';
  const out: Buffer[] = [];
  for (const s of specs) {
    const body = Buffer.from(s.body ?? '');
    if (s.pax) {
      const data = paxRecords(s.pax);
      out.push(header({ path: 'PaxHeaders/x', flag: 'x' }, data.length, format), padded(data));
    }
    out.push(header(s, s.size ?? body.length, format), padded(body));
  }
  if (opts.end !== false) out.push(Buffer.alloc(1024));
  return Buffer.concat(out);
}
// ---- end of the tar writer ----

/** Feeds buf in chunks of `step` bytes. */
async function* chunks(buf: Buffer, step = 100): AsyncGenerator<Buffer> {
  for (let i = 0; i < buf.length; i += step) yield buf.subarray(i, i + step);
}

type Read = Omit<TarEntry, 'body' | 'xattrs'> & { body?: string; xattrs?: Record<string, string> };

async function readAll(source: AsyncIterable<Uint8Array> | Buffer, step?: number): Promise<Read[]> {
  const out: Read[] = [];
  for await (const e of readTar(Buffer.isBuffer(source) ? chunks(source, step) : source)) {
    const { body, xattrs, ...rest } = e;
    const r: Read = { ...rest };
    if (body) {
      const parts: Buffer[] = [];
      for await (const c of body) parts.push(c as Buffer);
      r.body = Buffer.concat(parts).toString('latin1');
    }
    if (xattrs.size) r.xattrs = Object.fromEntries([...xattrs].map(([k, v]) => [k, v.toString('hex')]));
    out.push(r);
  }
  return out;
}

const base = {
  mode: 0o644,
  uid: 0,
  gid: 0,
  mtime: 1_600_000_000,
  size: 0,
  linkname: '',
  devmajor: 0,
  devminor: 0,
};

async function failure(source: Buffer | AsyncIterable<Uint8Array>): Promise<Error> {
  try {
    await readAll(source);
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected the archive to be refused');
}

describe('readTar', () => {
  it('reads every ustar entry type with its metadata', async () => {
    const longPath = `${'p'.repeat(120)}/${'n'.repeat(90)}`;
    const entries = await readAll(
      tar([
        { path: './', flag: '5', mode: 0o755 },
        { path: 'file', body: 'hello', mode: 0o4755, uid: 1000, gid: 1001, mtime: 1_234_567_890 },
        { path: 'dir/', flag: '5', mode: 0o1777 },
        { path: 'sym', flag: '2', link: '../target', mode: 0o777 },
        { path: 'hard', flag: '1', link: 'file' },
        { path: 'dev/null', flag: '3', major: 1, minor: 3, mode: 0o666 },
        { path: 'dev/sda', flag: '4', major: 8, minor: 0, mode: 0o660 },
        { path: 'pipe', flag: '6', mode: 0o600 },
        { path: 'contig', flag: '7', body: 'c' },
        { path: longPath, body: 'prefix' },
      ]),
      100,
    );
    expect(entries).toEqual([
      { ...base, path: './', type: 'dir', mode: 0o755 },
      {
        ...base,
        path: 'file',
        type: 'file',
        mode: 0o4755,
        uid: 1000,
        gid: 1001,
        mtime: 1_234_567_890,
        size: 5,
        body: 'hello',
      },
      { ...base, path: 'dir/', type: 'dir', mode: 0o1777 },
      { ...base, path: 'sym', type: 'symlink', mode: 0o777, linkname: '../target' },
      { ...base, path: 'hard', type: 'hardlink', linkname: 'file' },
      { ...base, path: 'dev/null', type: 'char', mode: 0o666, devmajor: 1, devminor: 3 },
      { ...base, path: 'dev/sda', type: 'block', mode: 0o660, devmajor: 8, devminor: 0 },
      { ...base, path: 'pipe', type: 'fifo', mode: 0o600 },
      { ...base, path: 'contig', type: 'file', size: 1, body: 'c' },
      { ...base, path: longPath, type: 'file', size: 6, body: 'prefix' },
    ]);
  });

  it('reads GNU long names and long link targets', async () => {
    const name = `${'a'.repeat(150)}/${'b'.repeat(150)}`;
    const target = `/${'t'.repeat(300)}`;
    const longLink = (flag: string, text: string): Spec => ({
      path: '././@LongLink',
      flag,
      body: `${text}\0`,
    });
    const entries = await readAll(
      tar(
        [
          longLink('L', name),
          { path: name.slice(0, 100), body: 'x' },
          longLink('L', `${name}-link`),
          longLink('K', target),
          { path: 'short', flag: '2', link: target.slice(0, 100) },
          { path: 'after', body: 'y' },
        ],
        { format: 'gnu' },
      ),
    );
    expect(entries.map((e) => [e.path, e.type, e.linkname, e.body])).toEqual([
      [name, 'file', '', 'x'],
      [`${name}-link`, 'symlink', target, undefined],
      ['after', 'file', '', 'y'],
    ]);
  });

  it('reads PAX records: path, linkpath, size, mtime, ids, xattrs; global headers apply until changed', async () => {
    const cap = Buffer.from([1, 0, 0, 2, 0, 4, 0, 0, 0xff, 0x0a, 0x3d, 0x20]); // binary, with \n = space
    const bigUid = 3_000_000_000;
    const g = (records: Record<string, string>): Spec => ({
      path: 'GlobalHead',
      flag: 'g',
      body: paxRecords(records),
    });
    const entries = await readAll(
      tar([
        g({ uid: '77', mtime: '1700000000' }),
        {
          path: 'ignored',
          link: 'ignored',
          flag: '2',
          pax: { path: `ünïcode/${'p'.repeat(200)}`, linkpath: `${'l'.repeat(200)}` },
        },
        {
          path: 'f',
          body: 'sized by pax',
          size: 0,
          pax: {
            size: '12',
            mtime: '1600000000.25',
            uid: String(bigUid),
            gid: '4000000000',
            'SCHILY.xattr.security.capability': cap,
            'SCHILY.xattr.user.note': 'hi',
          },
        },
        g({ uid: '' }),
        { path: 'plain', uid: 5 },
      ]),
    );
    expect(entries).toEqual([
      {
        ...base,
        path: `ünïcode/${'p'.repeat(200)}`,
        type: 'symlink',
        uid: 77,
        mtime: 1_700_000_000,
        linkname: 'l'.repeat(200),
      },
      {
        ...base,
        path: 'f',
        type: 'file',
        uid: bigUid,
        gid: 4_000_000_000,
        mtime: 1_600_000_000.25,
        size: 12,
        body: 'sized by pax',
        xattrs: {
          'security.capability': cap.toString('hex'),
          'user.note': Buffer.from('hi').toString('hex'),
        },
      },
      { ...base, path: 'plain', type: 'file', uid: 5, mtime: 1_700_000_000, body: '' },
    ]);
  });

  it('reads base-256 numbers, signed checksums and pre-POSIX directories', async () => {
    const entries = await readAll(
      tar([
        {
          path: 'big',
          body: 'z',
          patch: (h) => {
            h.fill(0, 108, 116);
            h[108] = 0x80;
            h.writeUInt32BE(5_000_000_000 % 2 ** 32, 112);
            h[111] = Math.floor(5_000_000_000 / 2 ** 32);
          },
        },
        {
          path: 'é',
          body: '',
          patch: (h) => checksum(h, true),
          keepSum: true,
        },
        { path: 'olddir/', flag: '\0' },
      ]),
    );
    expect(entries.map((e) => [e.path, e.type, e.uid])).toEqual([
      ['big', 'file', 5_000_000_000],
      ['é', 'file', 0],
      ['olddir/', 'dir', 0],
    ]);
  });

  it('refuses a header whose checksum does not match, naming the offset', async () => {
    const t = tar([{ path: 'a', body: 'x' }, { path: 'b' }]);
    t[1024] = t[1024]! ^ 0x01; // the name of the second header
    const err = await failure(t);
    expect(err).toBeInstanceOf(TarError);
    expect(err.message).toMatch(
      /^tar at byte 1024: not a tar header \(checksum mismatch: stored \d+, computed \d+\)$/,
    );
  });

  it('refuses garbage', async () => {
    expect((await failure(Buffer.alloc(4096, 'garbage!'))).message).toMatch(/not a tar header/);
    const badSize = tar([{ path: 'a', patch: (h) => h.write('12x45678901\0', 124, 'latin1') }]);
    expect((await failure(badSize)).message).toMatch(/size field is not octal: "12x45678901"/);
    const lone = Buffer.concat([Buffer.alloc(512), tar([{ path: 'a' }])]);
    expect((await failure(lone)).message).toMatch(/lone zero block followed by data/);
    const badPax = tar([{ path: 'x', flag: 'x', body: '99 path=short\n' }, { path: 'a' }]);
    expect((await failure(badPax)).message).toMatch(/malformed PAX record/);
    const badPaxNumber = tar([{ path: 'a', pax: { uid: 'lots' } }]);
    expect((await failure(badPaxNumber)).message).toMatch(/PAX uid is not a number/);
    const sparse = tar([{ path: 'holey', flag: 'S' }]);
    expect((await failure(sparse)).message).toMatch(/'holey': unsupported entry type 'S'/);
    const paxSparse = tar([{ path: 'holey', pax: { 'GNU.sparse.major': '1' } }]);
    expect((await failure(paxSparse)).message).toMatch(/GNU sparse files are not supported/);
    const huge = tar([{ path: 'x', flag: 'x', size: 2 << 20 }]);
    expect((await failure(huge)).message).toMatch(/PAX header of 2097152 bytes exceeds/);
  });

  it('refuses truncated archives clearly', async () => {
    const t = tar([{ path: 'file', body: Buffer.alloc(5000, 'a') }]);
    expect((await failure(t.subarray(0, 3000))).message).toBe(
      "tar at byte 0: truncated: archive ends inside the body of 'file'",
    );
    expect((await failure(t.subarray(0, 512 + 5120))).message).toBe(
      'tar at byte 5632: truncated: archive ends without an end-of-archive marker',
    );
    expect((await failure(t.subarray(0, 200))).message).toBe(
      'tar at byte 0: truncated: archive ends inside a header',
    );
    expect((await failure(Buffer.alloc(0))).message).toMatch(/without an end-of-archive marker/);
    const pax = tar([{ path: 'a', pax: { path: 'p'.repeat(600) } }]);
    expect((await failure(pax.subarray(0, 700))).message).toMatch(
      /truncated: archive ends inside a PAX header/,
    );
    // One zero block, then the end of the stream: accepted, as other readers do.
    expect(await readAll(t.subarray(0, t.length - 512))).toHaveLength(1);
  });

  it('passes on an error of the source', async () => {
    async function* broken(): AsyncGenerator<Buffer> {
      yield tar([{ path: 'a', body: 'x'.repeat(1000) }], { end: false }).subarray(0, 700);
      throw new Error('disk on fire');
    }
    expect((await failure(broken())).message).toBe('disk on fire');
  });

  it('skips bodies left unread (wholly or in part) and reads on', async () => {
    const t = tar([
      { path: 'skipped', body: Buffer.alloc(100_000, 's') },
      { path: 'half', body: Buffer.alloc(300_000, 'h') },
      { path: 'last', body: 'end' },
    ]);
    const seen: string[] = [];
    let skippedBody: TarEntry['body'] = null;
    for await (const e of readTar(chunks(t, 4096))) {
      seen.push(e.path);
      if (e.path === 'skipped') skippedBody = e.body;
      if (e.path === 'half') {
        for await (const c of e.body!) if ((c as Buffer).length) break;
      }
      if (e.path === 'last') {
        const parts: Buffer[] = [];
        for await (const c of e.body!) parts.push(c as Buffer);
        expect(Buffer.concat(parts).toString()).toBe('end');
      }
    }
    expect(seen).toEqual(['skipped', 'half', 'last']);
    expect(skippedBody!.destroyed).toBe(true);
  });

  it('pulls from the source only as fast as a body is read (backpressure)', async () => {
    const size = 16 << 20;
    const head = tar([{ path: 'big', size, body: '' }], { end: false }).subarray(0, 512);
    let pulled = 0;
    let finished = false;
    async function* source(): AsyncGenerator<Buffer> {
      yield head;
      const block = Buffer.alloc(16 * 1024, 'b');
      for (let sent = 0; sent < size; sent += block.length) {
        pulled += block.length;
        yield block;
      }
      yield Buffer.alloc(1024 + 8192); // end marker and record padding
      finished = true;
    }
    for await (const e of readTar(source())) {
      const reader = e.body![Symbol.asyncIterator]();
      let consumed = 0;
      for (let i = 0; i < 10; i++) consumed += ((await reader.next()).value as Buffer).length;
      await new Promise((r) => setTimeout(r, 50));
      expect(pulled - consumed).toBeLessThan(256 * 1024);
      for (;;) {
        const r = await reader.next();
        if (r.done) break;
        consumed += (r.value as Buffer).length;
      }
      expect(consumed).toBe(size);
    }
    expect(finished).toBe(true); // read past the end marker to the end of the source
  });

  describe('reads what GNU tar writes', () => {
    let dir: string;
    const long = `${'d'.repeat(120)}/${'e'.repeat(120)}/${'f'.repeat(60)}`;
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'berth-tar-'));
      const src = join(dir, 'src');
      mkdirSync(join(src, long), { recursive: true });
      writeFileSync(join(src, long, 'file'), 'deep');
      writeFileSync(join(src, 'small'), 'small');
      linkSync(join(src, 'small'), join(src, 'hard'));
      symlinkSync(`/${long}/file`, join(src, 'sym'));
      execFileSync('mkfifo', [join(src, 'fifo')]);
      execFileSync('setfattr', ['-n', 'user.k', '-v', 'v', join(src, 'small')]);
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    for (const format of ['gnu', 'pax'] as const) {
      it(format, async () => {
        const args =
          format === 'pax' ? ['--format=pax', '--xattrs', '--xattrs-include=user.*'] : ['--format=gnu'];
        const t = execFileSync(
          'tar',
          [
            '-C',
            join(dir, 'src'),
            '--sort=name',
            '--owner=0',
            '--group=0',
            ...args,
            '-c',
            'small',
            'hard',
            'sym',
            'fifo',
            'd'.repeat(120),
          ],
          { maxBuffer: 1 << 26 },
        );
        const entries = await readAll(t, 1000);
        const byPath = new Map(entries.map((e) => [e.path, e]));
        expect(byPath.get('small')).toMatchObject({ type: 'file', body: 'small' });
        expect(byPath.get('hard')).toMatchObject({ type: 'hardlink', linkname: 'small' });
        expect(byPath.get('sym')).toMatchObject({ type: 'symlink', linkname: `/${long}/file` });
        expect(byPath.get('fifo')).toMatchObject({ type: 'fifo' });
        expect(byPath.get(`${long}/`)).toMatchObject({ type: 'dir' });
        expect(byPath.get(`${long}/file`)).toMatchObject({ type: 'file', body: 'deep' });
        if (format === 'pax')
          expect(byPath.get('small')?.xattrs).toEqual({ 'user.k': Buffer.from('v').toString('hex') });
      });
    }
  });
});
