// A streaming tar reader: POSIX ustar, GNU long names and links (L/K), PAX extended headers
// (x local, g global). It pulls from the source only as fast as the consumer reads file bodies,
// so no file is ever held in memory whole; every header's checksum is verified, and an archive
// that ends early or holds garbage fails with the byte offset and the entry it was reading.
import { Readable } from 'node:stream';

export type TarEntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

export interface TarEntry {
  /** The path as the archive spells it (PAX path, GNU long name, or ustar prefix/name). */
  readonly path: string;
  readonly type: TarEntryType;
  /** Permission bits, including setuid/setgid/sticky (mode & 0o7777). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Seconds since the epoch; PAX mtimes may carry a fraction. */
  readonly mtime: number;
  /** Bytes in body (0 for every type but file). */
  readonly size: number;
  /** Symlink target or hardlink target path ('' for other types). */
  readonly linkname: string;
  readonly devmajor: number;
  readonly devminor: number;
  /** Extended attributes from PAX SCHILY.xattr.<name> records, values as raw bytes. */
  readonly xattrs: ReadonlyMap<string, Buffer>;
  /** The file's bytes, for type 'file'; null otherwise. Read it (or not) before asking for the
   * next entry: the reader skips whatever is left unread and ends the stream. */
  readonly body: Readable | null;
}

export class TarError extends Error {
  /** Byte offset (in the uncompressed archive) of the header being read. */
  readonly offset: number;
  constructor(offset: number, message: string, opts?: { cause?: unknown }) {
    super(`tar at byte ${offset}: ${message}`, opts);
    this.name = 'TarError';
    this.offset = offset;
  }
}

const BLOCK = 512;
/** The largest GNU long name/link or PAX header accepted: far beyond PATH_MAX, yet bounded. */
const MAX_META = 1 << 20;

/** Pulls bytes from an async iterable of chunks, in exact amounts or up to a limit. */
function byteReader(source: AsyncIterable<Uint8Array>) {
  const it = source[Symbol.asyncIterator]();
  let chunk: Buffer = Buffer.alloc(0);
  let pos = 0;
  let ended = false;
  let failure: unknown;
  let offset = 0;

  async function fill(): Promise<boolean> {
    while (pos >= chunk.length) {
      if (failure !== undefined) throw failure;
      if (ended) return false;
      let r: IteratorResult<Uint8Array>;
      try {
        r = await it.next();
      } catch (err) {
        failure = err;
        throw err;
      }
      if (r.done) {
        ended = true;
        return false;
      }
      const v = r.value;
      chunk = Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
      pos = 0;
    }
    return true;
  }

  return {
    get offset() {
      return offset;
    },
    /** Up to n bytes (at least one), or null at the end of the source. */
    async upTo(n: number): Promise<Buffer | null> {
      if (!(await fill())) return null;
      const take = Math.min(n, chunk.length - pos);
      const out = chunk.subarray(pos, pos + take);
      pos += take;
      offset += take;
      return out;
    },
    /** Exactly n bytes; null if the source ended before the first of them; 'short' if it ended
     * part way. */
    async exact(n: number): Promise<Buffer | null | 'short'> {
      const first = await this.upTo(n);
      if (!first) return null;
      if (first.length === n) return first;
      const parts = [first];
      let got = first.length;
      while (got < n) {
        const p = await this.upTo(n - got);
        if (!p) return 'short';
        parts.push(p);
        got += p.length;
      }
      return Buffer.concat(parts, n);
    },
    /** Skips n bytes; false if the source ended first. */
    async skip(n: number): Promise<boolean> {
      while (n > 0) {
        const p = await this.upTo(n);
        if (!p) return false;
        n -= p.length;
      }
      return true;
    },
    /** Reads to the end of the source (so a hash over it sees every byte). */
    async drain(): Promise<void> {
      while (await fill()) {
        offset += chunk.length - pos;
        pos = chunk.length;
      }
    },
    async close(): Promise<void> {
      await it.return?.();
    },
  };
}

type ByteReader = ReturnType<typeof byteReader>;

function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

function isZero(block: Buffer): boolean {
  for (let i = 0; i < block.length; i++) if (block[i] !== 0) return false;
  return true;
}

function cString(block: Buffer, off: number, len: number): string {
  const end = block.indexOf(0, off);
  return block.toString('utf8', off, end >= off && end < off + len ? end : off + len);
}

/** A numeric header field: octal text (NUL/space padded), or GNU base-256 when the high bit of
 * its first byte is set. */
function numeric(block: Buffer, off: number, len: number, field: string, at: number): number {
  const first = block[off]!;
  if (first & 0x80) {
    if (first === 0xff) throw new TarError(at, `negative ${field} in base-256 encoding`);
    let v = first & 0x7f;
    for (let i = 1; i < len; i++) v = v * 256 + block[off + i]!;
    if (!Number.isSafeInteger(v)) throw new TarError(at, `${field} too large`);
    return v;
  }
  const text = block
    .toString('latin1', off, off + len)
    .replace(/[\0 ]+$/, '')
    .replace(/^ +/, '');
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new TarError(at, `${field} field is not octal: ${JSON.stringify(text)}`);
  return Number.parseInt(text, 8);
}

function verifyChecksum(block: Buffer, at: number): void {
  const field = block
    .toString('latin1', 148, 156)
    .replace(/[\0 ]+$/, '')
    .replace(/^ +/, '');
  if (!/^[0-7]{1,7}$/.test(field))
    throw new TarError(at, 'not a tar header (its checksum field is not octal)');
  const stored = Number.parseInt(field, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  if (stored !== unsigned && stored !== signed)
    throw new TarError(at, `not a tar header (checksum mismatch: stored ${stored}, computed ${unsigned})`);
}

interface Header {
  name: string;
  linkname: string;
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  devmajor: number;
  devminor: number;
}

function parseHeader(block: Buffer, at: number): Header {
  verifyChecksum(block, at);
  const magic = block.toString('latin1', 257, 263);
  let name = cString(block, 0, 100);
  // POSIX ustar splits long paths into prefix/name; GNU tar uses that area for other fields.
  if (magic === 'ustar\0') {
    const prefix = cString(block, 345, 155);
    if (prefix) name = `${prefix}/${name}`;
  }
  const hasDev = magic.startsWith('ustar');
  return {
    name,
    linkname: cString(block, 157, 100),
    typeflag: String.fromCharCode(block[156]!),
    mode: numeric(block, 100, 8, 'mode', at) & 0o7777,
    uid: numeric(block, 108, 8, 'uid', at),
    gid: numeric(block, 116, 8, 'gid', at),
    size: numeric(block, 124, 12, 'size', at),
    mtime: numeric(block, 136, 12, 'mtime', at),
    devmajor: hasDev ? numeric(block, 329, 8, 'devmajor', at) : 0,
    devminor: hasDev ? numeric(block, 337, 8, 'devminor', at) : 0,
  };
}

/** PAX records, "<len> <key>=<value>\n" each; values stay bytes (xattr values are binary). */
function parsePax(buf: Buffer, at: number): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let i = 0;
  while (i < buf.length) {
    if (buf[i] === 0) break; // NUL padding after the last record
    const sp = buf.indexOf(0x20, i);
    const lenText = sp > i ? buf.toString('latin1', i, sp) : '';
    if (!/^[0-9]+$/.test(lenText)) throw new TarError(at, `malformed PAX record at +${i}`);
    const len = Number(lenText);
    if (len <= sp - i + 1 || i + len > buf.length || buf[i + len - 1] !== 0x0a)
      throw new TarError(at, `malformed PAX record at +${i}`);
    const rec = buf.subarray(sp + 1, i + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) throw new TarError(at, `malformed PAX record at +${i}`);
    out.set(rec.toString('utf8', 0, eq), Buffer.from(rec.subarray(eq + 1)));
    i += len;
  }
  return out;
}

const XATTR = 'SCHILY.xattr.';

/** Applies PAX records over the header; an empty value means "not set here". */
function applyPax(h: Header, pax: Map<string, Buffer>, xattrs: Map<string, Buffer>, at: number): void {
  const int = (key: string, v: string): number => {
    if (!/^[0-9]+$/.test(v)) throw new TarError(at, `PAX ${key} is not a number: ${JSON.stringify(v)}`);
    const n = Number(v);
    if (!Number.isSafeInteger(n)) throw new TarError(at, `PAX ${key} too large`);
    return n;
  };
  for (const [key, raw] of pax) {
    if (key.startsWith(XATTR)) {
      xattrs.set(key.slice(XATTR.length), raw);
      continue;
    }
    if (key.startsWith('GNU.sparse.'))
      throw new TarError(at, 'GNU sparse files are not supported (OCI layers should not use them)');
    if (raw.length === 0) continue;
    const v = raw.toString('utf8');
    if (key === 'path') h.name = v;
    else if (key === 'linkpath') h.linkname = v;
    else if (key === 'size') h.size = int(key, v);
    else if (key === 'uid') h.uid = int(key, v);
    else if (key === 'gid') h.gid = int(key, v);
    else if (key === 'mtime') {
      if (!/^-?[0-9]+(\.[0-9]+)?$/.test(v)) throw new TarError(at, `PAX mtime is not a number: ${v}`);
      h.mtime = Number(v);
    }
  }
}

const types: Record<string, TarEntryType> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file', // contiguous file: a regular file everywhere that matters
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'dir',
  D: 'dir', // GNU dump directory: a directory whose data (a listing) is skipped
  '6': 'fifo',
};

function flagText(flag: string): string {
  return /^[\x20-\x7e]$/.test(flag) ? `'${flag}'` : `0x${flag.charCodeAt(0).toString(16)}`;
}

function body(r: ByteReader, size: number, path: string, at: number) {
  let remaining = size;
  let pulling: Promise<void> | null = null;
  const stream = new Readable({
    highWaterMark: 64 * 1024,
    read() {
      if (pulling) return;
      if (remaining === 0) {
        this.push(null);
        return;
      }
      pulling = (async () => {
        let chunk: Buffer | null;
        try {
          chunk = await r.upTo(remaining);
        } catch (err) {
          pulling = null;
          stream.destroy(err as Error);
          return;
        }
        pulling = null;
        if (!chunk) {
          stream.destroy(new TarError(at, `truncated: archive ends inside the body of '${path}'`));
          return;
        }
        remaining -= chunk.length;
        stream.push(chunk);
        if (remaining === 0) stream.push(null);
      })();
    },
  });
  return {
    stream,
    /** Waits out a read in progress, then skips what the consumer left unread. */
    async finish(): Promise<number> {
      while (pulling) await pulling;
      const left = remaining;
      remaining = 0;
      if (left > 0 && !stream.destroyed) stream.destroy();
      return left;
    },
  };
}

/**
 * Reads a tar archive from source, yielding one entry per file system object. Metadata-only
 * records (L, K, x, g) are folded into the entry they describe. After the end-of-archive marker
 * the rest of the source is read and discarded, so a hash taken over the source covers it all.
 */
export async function* readTar(source: AsyncIterable<Uint8Array>): AsyncGenerator<TarEntry, void, undefined> {
  const r = byteReader(source);
  let globalPax = new Map<string, Buffer>();
  let localPax: Map<string, Buffer> | undefined;
  let longName: string | undefined;
  let longLink: string | undefined;

  const readMeta = async (size: number, at: number, what: string): Promise<Buffer> => {
    if (size > MAX_META)
      throw new TarError(at, `${what} of ${size} bytes exceeds the ${MAX_META}-byte limit`);
    const data = size === 0 ? Buffer.alloc(0) : await r.exact(size);
    if (data === null || data === 'short') throw new TarError(at, `truncated: archive ends inside a ${what}`);
    if (!(await r.skip(padding(size)))) throw new TarError(at, `truncated: archive ends inside a ${what}`);
    return data;
  };

  try {
    for (;;) {
      const at = r.offset;
      const block = await r.exact(BLOCK);
      if (block === null) throw new TarError(at, 'truncated: archive ends without an end-of-archive marker');
      if (block === 'short') throw new TarError(at, 'truncated: archive ends inside a header');
      if (isZero(block)) {
        const next = await r.exact(BLOCK);
        if (next === 'short' || (next !== null && !isZero(next)))
          throw new TarError(at, 'a lone zero block followed by data: not an end-of-archive marker');
        await r.drain();
        return;
      }
      const h = parseHeader(block, at);
      switch (h.typeflag) {
        case 'L':
          longName = cString(await readMeta(h.size, at, 'GNU long name'), 0, h.size);
          continue;
        case 'K':
          longLink = cString(await readMeta(h.size, at, 'GNU long link'), 0, h.size);
          continue;
        case 'x':
          localPax = parsePax(await readMeta(h.size, at, 'PAX header'), at);
          continue;
        case 'g': {
          const g = new Map(globalPax);
          for (const [k, v] of parsePax(await readMeta(h.size, at, 'PAX global header'), at)) {
            if (v.length === 0) g.delete(k);
            else g.set(k, v);
          }
          globalPax = g;
          continue;
        }
      }

      if (longName !== undefined) h.name = longName;
      if (longLink !== undefined) h.linkname = longLink;
      const xattrs = new Map<string, Buffer>();
      applyPax(h, globalPax, xattrs, at);
      if (localPax) applyPax(h, localPax, xattrs, at);
      longName = longLink = localPax = undefined;

      let type = types[h.typeflag];
      if (!type) throw new TarError(at, `'${h.name}': unsupported entry type ${flagText(h.typeflag)}`);
      if (h.typeflag === '\0' && h.name.endsWith('/')) type = 'dir'; // pre-POSIX directories
      if (h.name === '') throw new TarError(at, 'entry with an empty name');

      // Only regular files (and GNU dump directories, whose listing is skipped) carry data.
      const dataSize = type === 'file' || h.typeflag === 'D' ? h.size : 0;
      const b = type === 'file' ? body(r, dataSize, h.name, at) : null;
      yield {
        path: h.name,
        type,
        mode: h.mode,
        uid: h.uid,
        gid: h.gid,
        mtime: h.mtime,
        size: type === 'file' ? h.size : 0,
        linkname: type === 'hardlink' || type === 'symlink' ? h.linkname : '',
        devmajor: type === 'char' || type === 'block' ? h.devmajor : 0,
        devminor: type === 'char' || type === 'block' ? h.devminor : 0,
        xattrs,
        body: b ? b.stream : null,
      };
      const left = b ? await b.finish() : dataSize;
      if (!(await r.skip(left + padding(dataSize))))
        throw new TarError(at, `truncated: archive ends inside the body of '${h.name}'`);
    }
  } finally {
    await r.close();
  }
}
