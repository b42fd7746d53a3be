// encrypted(driver, keyring): encryption at rest as a decorator, so every driver gets it.
//
// Layout on the inner driver, for a logical path P:
//   P                 the object's record: "BERTHENC1\n" + JSON {kid, dek, oid, size, seg, data?}
//                     dek: a fresh 256-bit data key, wrapped by the KEK `kid` and bound to P, the
//                     object id, the size and the segment size (change any and it will not unwrap)
//   /.objects/<oid>   the content, unless it fits one segment and 64 KiB: then it sits inline in
//                     the record (`data`)
//   /.pending/P       state of a write that was closed rather than committed (to resume it)
//
// Content is cut into segments of `seg` bytes, each sealed with AES-256-GCM under the data key,
// with the segment's index in the nonce and the index, the object id and a final-segment flag in
// the associated data. So a range read decrypts only the segments it touches; a flipped bit,
// reordered, swapped or dropped segments, a truncated object, or a record or content moved to
// another path all fail authentication, and wrong bytes are never served. Digests stay over the
// plaintext: the registry above sees plaintext only.
//
// A move rewrites only the record (the data key re-wrapped for the new path), never the content:
// finishing an upload costs the same whatever the blob's size. Rotation re-wraps records only.
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  type ChunkSink,
  type FileInfo,
  type FileWriter,
  InvalidOffsetError,
  PathNotFoundError,
  type StorageDriver,
  StorageError,
} from './driver.ts';
import { freeBuffer } from './free-buffer.ts';
import { type Keyring, unwrapKey, wrapKey } from './keyring.ts';

const magic = Buffer.from('BERTHENC1\n');
const tagBytes = 16;
// 256 KiB segments: a pull from RGW spent about 0.4 ms of CPU per MiB less than with 64 KiB ones
// (a cipher set up, and a socket write, per segment). A range read opens at most two segments
// more than it needs. The size is recorded per object, so objects written with other sizes read
// as before.
export const defaultSegmentBytes = 256 * 1024;
/** Content up to this size sits inline in its record (records are cached; content is not). */
const inlineMaxBytes = 64 * 1024;
const name = 'encrypted';

interface RecordJson {
  readonly v: 1;
  readonly kid: string;
  readonly dek: string;
  readonly oid: string;
  readonly size: number;
  readonly seg: number;
  readonly data?: string;
}

/** A record with its data key unwrapped. */
interface Sealed {
  readonly kid: string;
  readonly dek: Buffer;
  readonly oid: Buffer;
  readonly size: number;
  readonly seg: number;
  /** Inline segments, or undefined when the content lives in /.objects/<oid>. */
  readonly data: Buffer | undefined;
  /** A legacy plaintext object (read only with allowPlaintext; never written). */
  readonly plain?: true;
}

/** Records are small (inline content is under one segment); anything larger is not a record. */
const maxRecordBytes = 1024 * 1024;

interface PendingJson {
  readonly kid: string;
  readonly dek: string;
  readonly oid: string;
  readonly seg: number;
  /** Segments already written to the object. */
  readonly segments: number;
  /** The unsealed remainder, sealed here with the data key under a random nonce. */
  readonly tail: string;
}

function bindContext(path: string, oid: Buffer, size: number, seg: number, inline: boolean): string {
  return `${path}\u0000${oid.toString('hex')}\u0000${size}\u0000${seg}\u0000${inline ? 'inline' : 'object'}`;
}

/** i as 64 bits big-endian at b[at..at+8] (without a BigInt: this runs for every segment). */
function writeIndex(b: Buffer, i: number, at: number): void {
  b.writeUInt32BE(Math.floor(i / 0x1_0000_0000), at);
  b.writeUInt32BE(i >>> 0, at + 4);
}

// Nonce and AAD buffers come from Node's pool (allocUnsafe): the cipher copies both at once.
function nonceFor(i: number): Buffer {
  const n = Buffer.allocUnsafe(12);
  n.writeUInt32BE(0, 0);
  writeIndex(n, i, 4);
  return n;
}

function aadFor(oid: Buffer, i: number, final: boolean): Buffer {
  const a = Buffer.allocUnsafe(oid.length + 9);
  oid.copy(a, 0);
  writeIndex(a, i, oid.length);
  a[oid.length + 8] = final ? 1 : 0;
  return a;
}

// createCipheriv/createDecipheriv with a raw Buffer key build a KeyObject every call; a profile of
// encrypted pulls showed that conversion as 11% of the main thread. One KeyObject per data key.
const keyObjects = new WeakMap<Uint8Array, KeyObject>();
function keyOf(dek: Uint8Array): KeyObject {
  let k = keyObjects.get(dek);
  if (!k) {
    k = createSecretKey(dek);
    keyObjects.set(dek, k);
  }
  return k;
}

function seal(dek: Buffer, oid: Buffer, i: number, final: boolean, plain: Uint8Array): Buffer {
  const c = createCipheriv('aes-256-gcm', keyOf(dek), nonceFor(i));
  c.setAAD(aadFor(oid, i, final));
  return Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]);
}

function open(dek: Uint8Array, oid: Buffer, i: number, final: boolean, sealed: Buffer, path: string): Buffer {
  if (sealed.length < tagBytes) throw new StorageError(name, path, `segment ${i} is truncated`);
  try {
    const d = createDecipheriv('aes-256-gcm', keyOf(dek), nonceFor(i));
    d.setAAD(aadFor(oid, i, final));
    d.setAuthTag(sealed.subarray(sealed.length - tagBytes));
    const plain = d.update(sealed.subarray(0, sealed.length - tagBytes));
    d.final(); // GCM yields nothing more here; it verifies the tag, throwing if it does not match
    return plain;
  } catch (e) {
    throw new StorageError(name, path, `segment ${i} failed authentication: the stored data was altered`, {
      cause: e,
    });
  }
}

/** Index of the final segment of an object of `size` bytes (an empty one when size is a multiple). */
const finalIndex = (size: number, seg: number) => Math.floor(size / seg);
/** Stored size of the sealed content. */
const sealedSize = (size: number, seg: number) => size + (finalIndex(size, seg) + 1) * tagBytes;

/** What opening an object's segments takes: plain data, so another thread can do it too. */
export interface SealedKeys {
  readonly dek: Uint8Array;
  readonly oid: Uint8Array;
  /** Plaintext size of the whole object. */
  readonly size: number;
  /** Plaintext bytes per segment. */
  readonly seg: number;
}

/** Delivers [from, from + length) of an object's sealed content to take, in order. */
export type SealedRead = (from: number, length: number, take: ChunkSink) => Promise<void>;

/**
 * Offered by an inner driver that can read and open sealed content off the main thread (the S3
 * driver with read workers): the same bytes and errors as openSealedRange over its copyTo.
 */
export interface SealedReads {
  copySealed(
    objectPath: string,
    path: string,
    keys: SealedKeys,
    offset: number,
    length: number,
    sink: ChunkSink,
  ): Promise<void>;
}

/**
 * Feeds plaintext [offset, offset + length) of sealed content to sink, reading only the segments
 * the range touches. Every segment is authenticated whole before any byte of it reaches sink;
 * content that ends early fails. The caller has checked 0 < length and offset + length <= size.
 * Exported for the S3 read workers, which run it on their own thread.
 */
export async function openSealedRange(
  keys: SealedKeys,
  path: string,
  offset: number,
  length: number,
  sink: ChunkSink,
  read: SealedRead,
): Promise<void> {
  const { size, seg } = keys;
  const dek = keys.dek;
  const oid = Buffer.from(keys.oid.buffer, keys.oid.byteOffset, keys.oid.byteLength);
  const last = finalIndex(size, seg);
  const first = Math.floor(offset / seg);
  const end = Math.floor((offset + length - 1) / seg);
  const stride = seg + tagBytes;
  const from = first * stride;
  const to = Math.min((end + 1) * stride, sealedSize(size, seg));
  let index = first;
  // Only a segment split across chunks is copied together here (allocated on the first one).
  let pending: Buffer | undefined;
  let filled = 0;
  const emit = async (sealedSeg: Buffer) => {
    const plain = open(dek, oid, index, index === last, sealedSeg, path);
    const segStart = index * seg;
    const lo = Math.max(offset, segStart) - segStart;
    const hi = Math.min(offset + length, segStart + plain.length) - segStart;
    index++;
    if (hi > lo) await sink(plain.subarray(lo, hi));
    freeBuffer(plain); // the sink holds no view of it once it resolved (ChunkSink)
  };
  const segLength = (i: number) => Math.min(stride, sealedSize(size, seg) - i * stride);
  // Whole segments arrive in one chunk from drivers that honour unitBytes, and open in place.
  const takeChunk = async (chunk: Uint8Array) => {
    let off = 0;
    while (off < chunk.byteLength) {
      if (index > end) throw new StorageError(name, path, 'sealed content is longer than its record says');
      const whole = segLength(index);
      if (filled === 0 && chunk.byteLength - off >= whole) {
        // A whole segment inside the chunk: open it in place (the chunk stays ours until we return).
        await emit(Buffer.from(chunk.buffer, chunk.byteOffset + off, whole));
        off += whole;
        continue;
      }
      const n = Math.min(whole - filled, chunk.byteLength - off);
      pending ??= Buffer.allocUnsafe(Math.min(stride, to - from));
      pending.set(chunk.subarray(off, off + n), filled);
      filled += n;
      off += n;
      if (filled === whole) {
        // emit() decrypts into a fresh buffer, so `pending` is free again once it returns.
        const full = pending.subarray(0, filled);
        filled = 0;
        await emit(full);
      }
    }
  };
  const take: ChunkSink = Object.assign(takeChunk, { unitBytes: stride });
  await read(from, to - from, take);
  if (filled !== 0 || index <= end) throw new StorageError(name, path, 'sealed content ended early');
}

export interface EncryptedOptions {
  readonly keyring: Keyring;
  /** Plaintext bytes per sealed segment; content smaller than one segment is stored inline. */
  readonly segmentBytes?: number;
  /**
   * Migration from unencrypted storage: objects without an encryption record are read as
   * plaintext instead of refused. New writes are always encrypted; encryptPlaintext() rewrites
   * the old objects.
   */
  readonly allowPlaintext?: boolean;
}

export function encrypted(inner: StorageDriver, opts: EncryptedOptions) {
  const seg = opts.segmentBytes ?? defaultSegmentBytes;
  const ring = opts.keyring;
  const objectPath = (oid: Buffer) => `/.objects/${oid.toString('hex')}`;
  const pendingPath = (path: string) => `/.pending${path}`;
  // An inner driver that can read and open content objects on other threads (S3 with read
  // workers) does so; the main thread then only hands plaintext on.
  const offloaded = (inner as StorageDriver & Partial<SealedReads>).copySealed
    ? (inner as StorageDriver & SealedReads)
    : undefined;
  // Records are small and read on every access; entries go whenever this process changes a path.
  const cache = new Map<string, Sealed>();
  const remember = (path: string, s: Sealed) => {
    if (cache.size >= 10_000) cache.delete(cache.keys().next().value as string);
    cache.set(path, s);
  };
  const forgetBelow = (path: string) => {
    for (const k of [...cache.keys()]) if (k === path || k.startsWith(`${path}/`)) cache.delete(k);
  };

  function encodeRecord(path: string, s: Sealed): Buffer {
    const kek = ring.get(s.kid) ?? ring.current;
    const json: RecordJson = {
      v: 1,
      kid: kek.id,
      dek: wrapKey(kek, s.dek, bindContext(path, s.oid, s.size, s.seg, s.data !== undefined)).toString(
        'base64',
      ),
      oid: s.oid.toString('hex'),
      size: s.size,
      seg: s.seg,
      ...(s.data !== undefined && { data: s.data.toString('base64') }),
    };
    return Buffer.concat([magic, Buffer.from(JSON.stringify(json))]);
  }

  function decodeRecord(path: string, raw: Uint8Array): Sealed {
    const buf = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
    if (!buf.subarray(0, magic.length).equals(magic)) {
      throw new StorageError(
        name,
        path,
        'not an encrypted object (no BERTHENC1 record): plaintext or foreign data',
      );
    }
    let j: RecordJson;
    try {
      j = JSON.parse(buf.subarray(magic.length).toString('utf8')) as RecordJson;
    } catch (e) {
      throw new StorageError(name, path, 'encryption record is corrupt', { cause: e });
    }
    const kek = ring.get(j.kid);
    if (!kek) throw new StorageError(name, path, `encrypted with key ${j.kid}, which is not in the keyring`);
    const oid = Buffer.from(j.oid, 'hex');
    const dek = unwrapKey(
      kek,
      Buffer.from(j.dek, 'base64'),
      bindContext(path, oid, j.size, j.seg, j.data !== undefined),
      path,
    );
    return {
      kid: j.kid,
      dek,
      oid,
      size: j.size,
      seg: j.seg,
      data: j.data === undefined ? undefined : Buffer.from(j.data, 'base64'),
    };
  }

  const plainRecord = (size: number): Sealed => ({
    kid: '',
    dek: Buffer.alloc(0),
    oid: Buffer.alloc(0),
    size,
    seg,
    data: undefined,
    plain: true,
  });

  async function record(path: string): Promise<Sealed> {
    const hit = cache.get(path);
    if (hit) return hit;
    let s: Sealed;
    if (opts.allowPlaintext) {
      const info = await inner.stat(path);
      if (info.isDir) throw new PathNotFoundError(name, path);
      if (info.size > maxRecordBytes) s = plainRecord(info.size);
      else {
        const raw = await inner.getContent(path);
        s = Buffer.from(raw).subarray(0, magic.length).equals(magic)
          ? decodeRecord(path, raw)
          : plainRecord(raw.byteLength);
      }
    } else {
      s = decodeRecord(path, await inner.getContent(path));
    }
    remember(path, s);
    return s;
  }

  /** Record at path if there is a file there, else undefined (directories and absent paths). */
  async function recordIfAny(path: string): Promise<Sealed | undefined> {
    try {
      return await record(path);
    } catch (e) {
      if (e instanceof PathNotFoundError) return undefined;
      throw e;
    }
  }

  // Replacing a record must also drop the content it pointed to; two writers replacing one path
  // at once would each drop the same old content and orphan one new content, so replacements of
  // a path run one at a time.
  const publishing = new Map<string, Promise<void>>();
  // The record may still be on its way (its content committing): the one it replaces is looked
  // up meanwhile, which saves a round trip per commit on object stores.
  async function publish(path: string, next: Sealed | Promise<Sealed>): Promise<void> {
    if (next instanceof Promise) next.catch(() => {}); // awaited below; failing early is no crash
    const run = (publishing.get(path) ?? Promise.resolve()).then(async () => {
      const [previous, s] = await Promise.all([recordIfAny(path).catch(() => undefined), next]);
      await inner.putContent(path, encodeRecord(path, s));
      remember(path, s);
      if (previous && !previous.plain && previous.data === undefined && !previous.oid.equals(s.oid)) {
        await dropObject(previous.oid);
      }
    });
    const settled = run.catch(() => {});
    publishing.set(path, settled);
    try {
      await run;
    } finally {
      if (publishing.get(path) === settled) publishing.delete(path);
    }
  }

  /** Discards the pending writes at or below path, with the objects they hold. */
  async function dropPendingBelow(path: string): Promise<void> {
    const pendings: string[] = [];
    try {
      const pinfo = await inner.stat(pendingPath(path));
      if (pinfo.isDir) for await (const f of filesBelow(pendingPath(path))) pendings.push(f);
      else pendings.push(pendingPath(path));
    } catch (e) {
      if (!(e instanceof PathNotFoundError)) throw e;
    }
    await Promise.all(
      pendings.map(async (p) => {
        const j = JSON.parse(Buffer.from(await inner.getContent(p)).toString('utf8')) as PendingJson;
        if (j.segments > 0) {
          await (await inner.writer(objectPath(Buffer.from(j.oid, 'hex')), { append: true })).cancel();
        }
        await deleteOwnFile(p);
      }),
    );
  }

  /**
   * Deletes a file this decorator wrote whole: a record, a pending-write record, or a committed
   * content object. None is a directory or has a pending write of the inner driver's own, so a
   * driver's cheaper deleteFile() will do (on S3, one request instead of six). Absent is fine.
   */
  async function deleteOwnFile(path: string): Promise<void> {
    try {
      await (inner.deleteFile ? inner.deleteFile(path) : inner.delete(path));
    } catch (e) {
      if (!(e instanceof PathNotFoundError)) throw e;
    }
  }

  async function dropObject(oid: Buffer): Promise<void> {
    if (oid.length !== 16)
      throw new StorageError(name, objectPath(oid), 'refusing to drop a malformed object id');
    await deleteOwnFile(objectPath(oid));
  }

  /** Feeds plaintext [offset, offset+length) of a sealed object to sink, segment by segment. */
  async function copyPlain(
    path: string,
    s: Sealed,
    offset: number,
    length: number,
    sink: ChunkSink,
  ): Promise<void> {
    if (offset + length > s.size) throw new InvalidOffsetError(name, path, offset + length);
    if (s.plain) return inner.copyTo(path, offset, length, sink);
    if (length === 0) return;
    if (s.data !== undefined) {
      const data = s.data;
      return openSealedRange(s, path, offset, length, sink, async (from, n, take) => {
        if (data.length < from + n) throw new StorageError(name, path, 'inline data is truncated');
        await take(data.subarray(from, from + n));
      });
    }
    if (offloaded) return offloaded.copySealed(objectPath(s.oid), path, s, offset, length, sink);
    return openSealedRange(s, path, offset, length, sink, (from, n, take) =>
      inner.copyTo(objectPath(s.oid), from, n, take),
    );
  }

  async function readAll(path: string): Promise<Buffer> {
    const s = await record(path);
    const parts: Buffer[] = [];
    await copyPlain(path, s, 0, s.size, async (c) => {
      parts.push(Buffer.from(c));
    });
    return Buffer.concat(parts, s.size);
  }

  /** Every file path below dir (records), depth first. */
  async function* filesBelow(dir: string): AsyncGenerator<string> {
    for (const child of await inner.list(dir)) {
      const info = await inner.stat(child);
      if (info.isDir) yield* filesBelow(child);
      else yield child;
    }
  }

  async function pendingRecords(): Promise<string[]> {
    const out: string[] = [];
    try {
      for await (const f of filesBelow('/.pending')) out.push(f);
    } catch (e) {
      if (!(e instanceof PathNotFoundError)) throw e;
    }
    return out;
  }

  async function deletePending(path: string): Promise<void> {
    await deleteOwnFile(pendingPath(path));
  }

  const driver: StorageDriver & {
    /** Re-wraps every data key (records and pending writes) under the current KEK; content untouched. */
    rewrapAll(): Promise<{ rewrapped: number; byKey: Record<string, number> }>;
    /** Which KEK ids records still use ('plaintext' for legacy objects). */
    keysInUse(): Promise<Record<string, number>>;
    /** Rewrites every legacy plaintext object encrypted (the migration). Returns how many. */
    encryptPlaintext(): Promise<number>;
  } = {
    name: `encrypted(${inner.name})`,

    getContent: (path) => readAll(path),

    async putContent(path, content) {
      const w = await driver.writer(path);
      await w.write(content);
      await w.commit();
    },

    async reader(path, offset = 0) {
      const s = await record(path);
      if (offset > s.size) throw new InvalidOffsetError(name, path, offset);
      // copyPlain pushes; a stream pulls. A small queue joins them: the producer waits for room.
      const queue: Buffer[] = [];
      let wakeConsumer: (() => void) | undefined;
      let wakeProducer: (() => void) | undefined;
      let finished = false;
      let stopped = false;
      let failure: unknown;
      const producing = copyPlain(path, s, offset, s.size - offset, async (c) => {
        if (stopped) throw new StorageError(name, path, 'reader closed');
        queue.push(Buffer.from(c));
        wakeConsumer?.();
        if (queue.length >= 4) await new Promise<void>((r) => (wakeProducer = r));
      }).then(
        () => {
          finished = true;
          wakeConsumer?.();
        },
        (e: unknown) => {
          failure = e;
          finished = true;
          wakeConsumer?.();
        },
      );
      async function* chunks() {
        try {
          for (;;) {
            const next = queue.shift();
            if (next) {
              wakeProducer?.();
              wakeProducer = undefined;
              yield next;
            } else if (finished) {
              if (failure) throw failure;
              return;
            } else {
              await new Promise<void>((r) => (wakeConsumer = r));
              wakeConsumer = undefined;
            }
          }
        } finally {
          stopped = true;
          wakeProducer?.();
          await producing;
        }
      }
      return Readable.from(chunks(), { objectMode: false });
    },

    async copyTo(path, offset, length, sink) {
      await copyPlain(path, await record(path), offset, length, sink);
    },

    async writer(path, wopts = {}) {
      let dek: Buffer = randomBytes(32);
      let oid: Buffer = randomBytes(16);
      let kid = ring.current.id;
      let segments = 0;
      let tail: Buffer = Buffer.alloc(0);
      let object: FileWriter | undefined;
      if (wopts.append) {
        let raw: Uint8Array | undefined;
        try {
          raw = await inner.getContent(pendingPath(path));
        } catch (e) {
          if (!(e instanceof PathNotFoundError)) throw e;
        }
        if (raw) {
          const p = JSON.parse(Buffer.from(raw).toString('utf8')) as PendingJson;
          const kek = ring.get(p.kid);
          if (!kek)
            throw new StorageError(
              name,
              path,
              `pending write sealed with key ${p.kid}, which is not in the keyring`,
            );
          oid = Buffer.from(p.oid, 'hex');
          kid = p.kid;
          dek = unwrapKey(kek, Buffer.from(p.dek, 'base64'), `pending\u0000${path}\u0000${p.oid}`, path);
          if (p.seg !== seg) throw new StorageError(name, path, 'pending write uses another segment size');
          segments = p.segments;
          const t = Buffer.from(p.tail, 'base64');
          const d = createDecipheriv('aes-256-gcm', dek, t.subarray(0, 12));
          d.setAAD(Buffer.from(`tail\u0000${p.oid}\u0000${segments}`));
          d.setAuthTag(t.subarray(t.length - tagBytes));
          try {
            tail = Buffer.concat([d.update(t.subarray(12, t.length - tagBytes)), d.final()]);
          } catch (e) {
            throw new StorageError(name, path, 'pending write failed authentication', { cause: e });
          }
          if (segments > 0) object = await inner.writer(objectPath(oid), { append: true });
        }
      }
      let done = false;
      const check = () => {
        if (done) throw new StorageError(name, path, 'writer already finished');
      };
      const finish = () => {
        check();
        done = true;
      };
      /** Seals one full, non-final segment and hands it to the content writer. */
      // Plaintext of the segment being filled: one buffer per writer, so writes whose chunks
      // straddle segments copy each byte once (a profile showed Buffer.concat here).
      const pending = Buffer.allocUnsafe(seg);
      let filled = tail.copy(pending);
      let expected: number | undefined;
      const hintObject = () => {
        if (object && expected !== undefined) object.expect?.(sealedSize(expected, seg));
      };
      hintObject();
      /** Seals one full, non-final segment and hands it to the content writer. */
      const sealOut = async (plain: Buffer) => {
        if (!object) {
          object = await inner.writer(objectPath(oid));
          hintObject();
        }
        const c = createCipheriv('aes-256-gcm', keyOf(dek), nonceFor(segments));
        c.setAAD(aadFor(oid, segments, false));
        const sealed = c.update(plain);
        await object.write(sealed);
        freeBuffer(sealed); // the content writer holds no view of it once write() resolved
        c.final();
        await object.write(c.getAuthTag());
        segments++;
      };
      const w: FileWriter = {
        get size() {
          return segments * seg + filled;
        },
        expect(total) {
          expected = total;
          hintObject();
        },
        async write(chunk) {
          check();
          let input = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
          if (filled > 0) {
            // Complete the segment being filled first, then seal whole segments straight from input.
            const n = Math.min(seg - filled, input.length);
            input.copy(pending, filled, 0, n);
            filled += n;
            input = input.subarray(n);
            if (filled < seg) return;
            await sealOut(pending);
            filled = 0;
          }
          while (input.length >= seg) {
            await sealOut(input.subarray(0, seg));
            input = input.subarray(seg);
          }
          // The caller may reuse its chunk once we return: keep a copy of the remainder only.
          filled = input.copy(pending);
        },
        async commit() {
          finish();
          const size = segments * seg + filled;
          const last = seal(dek, oid, segments, true, pending.subarray(0, filled));
          const committed = (async (): Promise<Sealed> => {
            // Under a segment and small: inline. Otherwise the last (maybe only) segment goes out.
            if (!object && size <= inlineMaxBytes) return { kid, dek, oid, size, seg, data: last };
            object ??= await inner.writer(objectPath(oid));
            await object.write(last);
            await object.commit();
            return { kid, dek, oid, size, seg, data: undefined };
          })();
          await publish(path, committed);
          if (wopts.append) await deletePending(path);
        },
        async cancel() {
          if (done) return;
          done = true;
          if (object) await object.cancel();
          await deletePending(path);
        },
        async close() {
          finish();
          if (object) await object.close();
          const kek = ring.get(kid) ?? ring.current;
          const nonce = randomBytes(12);
          const c = createCipheriv('aes-256-gcm', dek, nonce);
          c.setAAD(Buffer.from(`tail\u0000${oid.toString('hex')}\u0000${segments}`));
          const sealedTail = Buffer.concat([
            nonce,
            c.update(pending.subarray(0, filled)),
            c.final(),
            c.getAuthTag(),
          ]);
          const p: PendingJson = {
            kid: kek.id,
            dek: wrapKey(kek, dek, `pending\u0000${path}\u0000${oid.toString('hex')}`).toString('base64'),
            oid: oid.toString('hex'),
            seg,
            segments,
            tail: sealedTail.toString('base64'),
          };
          await inner.putContent(pendingPath(path), Buffer.from(JSON.stringify(p)));
        },
      };
      return w;
    },

    async stat(path): Promise<FileInfo> {
      const info = await inner.stat(path);
      if (info.isDir) return info;
      return { ...info, size: (await record(path)).size };
    },

    list: (path) => inner.list(path),

    async move(source, dest) {
      const s = await record(source);
      if (s.plain) {
        await inner.move(source, dest);
        cache.delete(source);
        cache.delete(dest);
        return;
      }
      await publish(dest, s); // re-wrapped for dest by encodeRecord
      await deleteOwnFile(source);
      cache.delete(source);
    },

    async delete(path) {
      const info = await inner.stat(path);
      const files: string[] = [];
      if (info.isDir) for await (const f of filesBelow(path)) files.push(f);
      else files.push(path);
      // Content objects of the records, and pending writes below the path (which hold objects
      // too), go first, all at once: a crash part way leaves records that fail to read, never
      // content that no record points to.
      await Promise.all([
        ...files.map(async (f) => {
          const s = await recordIfAny(f).catch(() => undefined);
          if (s && !s.plain && s.data === undefined) await dropObject(s.oid);
        }),
        dropPendingBelow(path),
      ]);
      await inner.delete(path);
      forgetBelow(path);
    },

    async keysInUse() {
      const counts: Record<string, number> = {};
      for await (const f of filesBelow('/')) {
        const s = await record(f);
        const k = s.plain ? 'plaintext' : s.kid;
        counts[k] = (counts[k] ?? 0) + 1;
      }
      for (const p of await pendingRecords()) {
        const j = JSON.parse(Buffer.from(await inner.getContent(p)).toString('utf8')) as PendingJson;
        counts[j.kid] = (counts[j.kid] ?? 0) + 1;
      }
      return counts;
    },

    async encryptPlaintext() {
      let n = 0;
      for await (const f of filesBelow('/')) {
        if (!(await record(f)).plain) continue;
        const w = await driver.writer(f);
        try {
          for await (const chunk of await inner.reader(f)) await w.write(chunk as Uint8Array);
        } catch (e) {
          await w.cancel();
          throw e;
        }
        await w.commit();
        n++;
      }
      return n;
    },

    async rewrapAll() {
      let rewrapped = 0;
      const byKey: Record<string, number> = {};
      for await (const f of filesBelow('/')) {
        const s = await record(f);
        if (s.plain) continue;
        byKey[s.kid] = (byKey[s.kid] ?? 0) + 1;
        if (s.kid === ring.current.id) continue;
        const moved: Sealed = { ...s, kid: ring.current.id };
        await inner.putContent(f, encodeRecord(f, moved));
        remember(f, moved);
        rewrapped++;
      }
      for (const p of await pendingRecords()) {
        const j = JSON.parse(Buffer.from(await inner.getContent(p)).toString('utf8')) as PendingJson;
        byKey[j.kid] = (byKey[j.kid] ?? 0) + 1;
        if (j.kid === ring.current.id) continue;
        const context = `pending\u0000${p.slice('/.pending'.length)}\u0000${j.oid}`;
        const dek = unwrapKey(ring.get(j.kid)!, Buffer.from(j.dek, 'base64'), context, p);
        const next: PendingJson = {
          ...j,
          kid: ring.current.id,
          dek: wrapKey(ring.current, dek, context).toString('base64'),
        };
        await inner.putContent(p, Buffer.from(JSON.stringify(next)));
        rewrapped++;
      }
      return { rewrapped, byKey };
    },
  };
  return driver;
}
