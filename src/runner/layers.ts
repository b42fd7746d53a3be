// Image layers unpacked into directories overlayfs can stack as lowerdirs, once per diffID and
// user namespace mapping (idmap.ts): every file is owned by the host id its tar entry's uid/gid
// maps to, so the container sees the owners the image gave (runc 1.1 cannot idmap a mount).
//
//   <root>/userns-<start>-65536/<algo>/<hex>   an unpacked layer: exists only once both digests matched
//   <root>/userns-<start>-65536/<algo>/.tmp-<pid>-<rand>-...  being unpacked (or left by a crash: sweep)
//   <root>/<anything else>                     layers of another mapping, or of the layout before
//                                              user namespaces (<root>/<algo>/<hex>): sweepStale
//
// A layer streams from storage through the compressed-digest hash, the decompressor (chosen by
// the magic bytes; the media type only has to name a layer) and the diffID hash into the tar
// reader, which writes into the temp dir; a rename publishes it. Nothing in a layer may reach
// outside its directory: paths are cleaned lexically and refused when they climb out, parents
// are walked with lstat and refused when one is a symlink, hardlink targets must lie inside.
// OCI whiteouts become overlay whiteouts (char device 0:0) and opaque markers the
// trusted.overlay.opaque xattr, so the layers stack without a copy.
import { createHash, randomBytes } from 'node:crypto';
import type { Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { chmod, link, lstat, lutimes, mkdir, open, readdir, rename, rm, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline, Readable } from 'node:stream';
import { createGunzip, createZstdDecompress } from 'node:zlib';
import { OciError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { PathNotFoundError } from '../storage/index.ts';
import type { Host } from './host.ts';
import { hostId, ID_MAP_SIZE, type IdMapping, layerCacheName, rootOwner } from './idmap.ts';
import { readTar, type TarEntry } from './tar.ts';

export class LayerError extends Error {
  readonly diffId: string;
  /** The archive path of the entry refused or failed, when one is to blame. */
  readonly entry: string | undefined;
  constructor(diffId: string, message: string, opts: { entry?: string; cause?: unknown } = {}) {
    const where = opts.entry === undefined ? '' : ` entry '${opts.entry}':`;
    super(`layer ${diffId}:${where} ${message}`, { cause: opts.cause });
    this.name = 'LayerError';
    this.diffId = diffId;
    this.entry = opts.entry;
  }
}

export interface LayerStoreOptions {
  /** Directory holding the unpacked layers, e.g. DATA/runner/layers. */
  root: string;
  log: Logger;
  host: Host;
  /** The ids files are shifted to; the layers of one mapping live in a directory of their own. */
  idMapping: IdMapping;
}

export interface LayerStore {
  /** Unpacks the layer unless it already is; answers its directory. open() is called at most
   * once per call, and not at all when the layer is already unpacked or being unpacked here. */
  unpack(
    diffId: string,
    compressedDigest: string,
    mediaType: string,
    open: () => Promise<Readable>,
  ): Promise<string>;
  has(diffId: string): Promise<boolean>;
  /** Where the layer's directory is (or would be). */
  path(diffId: string): string;
  /** Deletes an unpacked layer; false when there was none. */
  remove(diffId: string): Promise<boolean>;
  /** The diffIDs unpacked, sorted. */
  list(): Promise<string[]>;
  /** Deletes temp dirs left by crashed unpacks (their process is gone); answers how many. */
  sweep(): Promise<number>;
  /** Deletes the layer caches of other mappings and of the layout before user namespaces, except
   * `inUse` (cache directory names a running container's overlay still stacks); answers the names
   * deleted. */
  sweepStale(inUse: ReadonlySet<string>): Promise<string[]>;
}

/** The cache names of layers unpacked before berth used user namespaces (<root>/<algo>/<hex>). */
export const LEGACY_LAYER_CACHES = ['sha256', 'sha512'] as const;

type Compression = 'gzip' | 'zstd' | 'none';

const mediaTypes: Record<string, { compression: Compression; foreign: boolean }> = {
  'application/vnd.oci.image.layer.v1.tar': { compression: 'none', foreign: false },
  'application/vnd.oci.image.layer.v1.tar+gzip': { compression: 'gzip', foreign: false },
  'application/vnd.oci.image.layer.v1.tar+zstd': { compression: 'zstd', foreign: false },
  'application/vnd.oci.image.layer.nondistributable.v1.tar': { compression: 'none', foreign: true },
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip': { compression: 'gzip', foreign: true },
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd': { compression: 'zstd', foreign: true },
  'application/vnd.docker.image.rootfs.diff.tar': { compression: 'none', foreign: false },
  'application/vnd.docker.image.rootfs.diff.tar.gzip': { compression: 'gzip', foreign: false },
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip': { compression: 'gzip', foreign: true },
};

const digestLengths: Record<string, number> = { sha256: 64, sha512: 128 };

function parseDigest(digest: string, what: string): { algo: string; hex: string } {
  const m = /^([a-z0-9]+):([a-f0-9]+)$/.exec(digest);
  if (!m || digestLengths[m[1]!] !== m[2]!.length)
    throw new LayerError(digest, `${what} is not a sha256 or sha512 digest`);
  return { algo: m[1]!, hex: m[2]! };
}

function sniff(head: Buffer): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  return 'none';
}

/** Whether err (or what caused it) says storage has no such blob. */
function isNotFound(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof PathNotFoundError) return true;
    if (e instanceof OciError && (e.code === 'BLOB_UNKNOWN' || e.code === 'MANIFEST_BLOB_UNKNOWN'))
      return true;
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return true;
  }
  return false;
}

async function lstatOrNull(p: string): Promise<Stats | null> {
  try {
    return await lstat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** Lexically cleans an archive path to a root-relative one ('' is the root itself); null when it
 * climbs above the root. A leading '/' means the layer root, as tar writers intend it. */
export function cleanPath(p: string): string | null {
  const parts: string[] = [];
  for (const seg of p.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') {
      if (parts.length === 0) return null;
      parts.pop();
    } else parts.push(seg);
  }
  return parts.join('/');
}

const WH = '.wh.';
const OPAQUE = '.wh..wh..opq';

interface UnpackStats {
  entries: number;
  compression: Compression;
  compressed: number;
  uncompressed: number;
}

/** Writes all of data at the file's current position (a write may be partial). */
async function writeAll(fh: FileHandle, data: Buffer): Promise<void> {
  let off = 0;
  while (off < data.length) off += (await fh.write(data, off, data.length - off)).bytesWritten;
}

/** Writes one layer's entries into dir (a fresh temp dir, owned by the mapped root already). */
function extractor(dir: string, diffId: string, host: Host, idMapping: IdMapping, log: Logger) {
  /** Root-relative paths known to be real directories (not symlinks) in dir. */
  const dirs = new Set<string>(['']);
  /** Directory modes and mtimes, applied last: adding children would change the mtimes. */
  const deferred = new Map<string, { mode: number; mtime: number | null }>([
    ['', { mode: 0o755, mtime: null }],
  ]);
  const root = rootOwner(idMapping);
  let chownWarned = false;

  const refuse = (e: TarEntry, why: string) => new LayerError(diffId, why, { entry: e.path });
  const abs = (rel: string) => (rel === '' ? dir : join(dir, rel));

  /** Makes every component of rel a real directory, creating missing ones (0755). */
  async function ensureDirs(rel: string, e: TarEntry, create: boolean): Promise<void> {
    if (dirs.has(rel)) return;
    let cur = '';
    for (const seg of rel.split('/')) {
      cur = cur ? `${cur}/${seg}` : seg;
      if (dirs.has(cur)) continue;
      const st = await lstatOrNull(abs(cur));
      if (!st) {
        if (!create) throw refuse(e, `hardlink target '${e.linkname}' is not in this layer`);
        await mkdir(abs(cur));
        await chmod(abs(cur), 0o755);
        await setOwner(abs(cur), root.uid, root.gid, e);
      } else if (st.isSymbolicLink()) {
        throw refuse(e, `'${cur}' is a symlink; refusing to write through it`);
      } else if (!st.isDirectory()) {
        throw refuse(e, `'${cur}' is not a directory`);
      }
      dirs.add(cur);
    }
  }

  async function setOwner(path: string, uid: number, gid: number, e: TarEntry): Promise<void> {
    if (!(await host.lchownSafe(path, uid, gid)) && !chownWarned) {
      chownWarned = true;
      log.warn({ diffId, entry: e.path }, 'cannot set file ownership (not root?): layer keeps our ids');
    }
  }

  /** The entry's owner, shifted into the mapping; ids the mapping lacks cannot be represented. */
  async function owner(path: string, e: TarEntry): Promise<void> {
    const uid = hostId(idMapping, e.uid);
    const gid = hostId(idMapping, e.gid);
    if (uid === undefined || gid === undefined)
      throw refuse(
        e,
        `owner ${e.uid}:${e.gid} is outside the ids a task's user namespace maps (0-${ID_MAP_SIZE - 1})`,
      );
    await setOwner(path, uid, gid, e);
  }

  async function xattrs(path: string, e: TarEntry): Promise<void> {
    for (const [name, value] of e.xattrs) {
      // Overlay's own attributes steer lookups into lower layers; a layer may not forge them.
      if (name.startsWith('trusted.overlay.')) {
        log.warn({ diffId, entry: e.path, xattr: name }, 'overlay xattr in layer ignored');
        continue;
      }
      try {
        await host.setXattr(path, name, value);
      } catch (err) {
        log.warn({ diffId, entry: e.path, xattr: name, err: (err as Error).message }, 'xattr skipped');
      }
    }
  }

  async function whiteout(e: TarEntry, parent: string, name: string): Promise<void> {
    await ensureDirs(parent, e, true);
    if (name === OPAQUE) {
      await host.setXattr(abs(parent), 'trusted.overlay.opaque', 'y');
      return;
    }
    if (name.startsWith(`${WH}${WH}`)) {
      log.debug({ diffId, entry: e.path }, 'aufs metadata entry skipped');
      return;
    }
    const target = name.slice(WH.length);
    if (target === '' || target === '.' || target === '..') throw refuse(e, 'malformed whiteout');
    const rel = parent ? `${parent}/${target}` : target;
    if (await lstatOrNull(abs(rel))) {
      // Whiteouts only hide lower layers; what this layer adds stays.
      log.warn({ diffId, entry: e.path }, 'whiteout for an entry of the same layer ignored');
      return;
    }
    await host.mknod(abs(rel), 'c', 0, 0);
    await setOwner(abs(rel), root.uid, root.gid, e);
  }

  async function apply(e: TarEntry): Promise<void> {
    const rel = cleanPath(e.path);
    if (rel === null) throw refuse(e, 'path escapes the layer root');
    if (rel === '') {
      if (e.type !== 'dir') throw refuse(e, 'the layer root must be a directory');
      await owner(dir, e);
      await xattrs(dir, e);
      deferred.set('', { mode: e.mode, mtime: e.mtime });
      return;
    }
    const slash = rel.lastIndexOf('/');
    const parent = slash < 0 ? '' : rel.slice(0, slash);
    const name = rel.slice(slash + 1);
    if (name.startsWith(WH)) return whiteout(e, parent, name);
    await ensureDirs(parent, e, true);

    let linkTarget = '';
    if (e.type === 'hardlink') {
      const t = cleanPath(e.linkname);
      if (t === null) throw refuse(e, `hardlink target '${e.linkname}' escapes the layer root`);
      if (t === '') throw refuse(e, 'hardlink to the layer root');
      const ts = t.lastIndexOf('/');
      await ensureDirs(ts < 0 ? '' : t.slice(0, ts), e, false);
      const st = await lstatOrNull(abs(t));
      if (!st) throw refuse(e, `hardlink target '${e.linkname}' is not in this layer`);
      if (st.isDirectory()) throw refuse(e, `hardlink target '${e.linkname}' is a directory`);
      if (t === rel) return; // a link to itself: already there
      linkTarget = abs(t);
    }

    const path = abs(rel);
    const existing = await lstatOrNull(path);
    if (existing && !(existing.isDirectory() && e.type === 'dir')) {
      // A later entry replaces an earlier one (OCI: unlink, then recreate).
      await rm(path, { recursive: true, force: true });
      if (existing.isDirectory()) {
        dirs.clear();
        dirs.add('');
        for (const k of deferred.keys()) if (k === rel || k.startsWith(`${rel}/`)) deferred.delete(k);
      }
    }

    switch (e.type) {
      case 'dir':
        if (!existing) await mkdir(path, { mode: 0o700 });
        dirs.add(rel);
        await owner(path, e);
        await xattrs(path, e);
        deferred.set(rel, { mode: e.mode, mtime: e.mtime });
        return;
      case 'file': {
        const fh = await open(path, 'wx', 0o600);
        try {
          for await (const chunk of e.body!) await writeAll(fh, chunk as Buffer);
        } finally {
          await fh.close();
        }
        break;
      }
      case 'symlink':
        await symlink(e.linkname, path);
        break;
      case 'hardlink':
        await link(linkTarget, path);
        return; // the inode (and its metadata) is the target's
      case 'char':
      case 'block':
      case 'fifo':
        await host.mknod(
          path,
          e.type === 'char' ? 'c' : e.type === 'block' ? 'b' : 'p',
          e.devmajor,
          e.devminor,
        );
        break;
    }
    await owner(path, e);
    if (e.type !== 'symlink') await chmod(path, e.mode);
    await xattrs(path, e);
    await lutimes(path, e.mtime, e.mtime);
  }

  async function finish(): Promise<void> {
    for (const [rel, { mode, mtime }] of deferred) {
      await chmod(abs(rel), mode);
      if (mtime !== null) await lutimes(abs(rel), mtime, mtime);
    }
  }

  return { apply, finish };
}

function tempName(hex: string): string {
  return `.tmp-${process.pid}-${randomBytes(4).toString('hex')}-${hex.slice(0, 12)}`;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function createLayerStore(opts: LayerStoreOptions): LayerStore {
  const { host, idMapping } = opts;
  const cacheName = layerCacheName(idMapping);
  const root = join(opts.root, cacheName);
  const log = opts.log.child({ component: 'layers' });
  const inflight = new Map<string, Promise<string>>();
  const activeTemps = new Set<string>();

  const pathOf = (diffId: string): string => {
    const { algo, hex } = parseDigest(diffId, 'diffID');
    return join(root, algo, hex);
  };

  const isDir = async (p: string) => (await lstatOrNull(p))?.isDirectory() === true;

  /** Streams raw -> compressed hash -> decompressor -> diffID hash -> tar entries into dir. */
  async function extract(
    raw: Readable,
    dir: string,
    diffId: string,
    diff: { algo: string; hex: string },
    comp: { algo: string; hex: string },
    compressedDigest: string,
    declared: Compression,
  ): Promise<UnpackStats> {
    const stats: UnpackStats = { entries: 0, compression: 'none', compressed: 0, uncompressed: 0 };
    const compHash = createHash(comp.algo);
    const diffHash = createHash(diff.algo);
    const it: AsyncIterator<Buffer> = raw[Symbol.asyncIterator]();
    const head: Buffer[] = [];
    let headLen = 0;
    let rawDone = false;
    try {
      while (headLen < 4) {
        const r = await it.next();
        if (r.done) {
          rawDone = true;
          break;
        }
        head.push(r.value);
        headLen += r.value.length;
      }
    } catch (err) {
      await it.return?.();
      throw err;
    }
    const compression = sniff(Buffer.concat(head));
    stats.compression = compression;
    if (compression !== declared)
      log.warn({ diffId, declared, found: compression }, 'layer compression differs from its media type');

    async function* rawChunks(): AsyncGenerator<Buffer> {
      try {
        for (const chunk of head) {
          compHash.update(chunk);
          stats.compressed += chunk.length;
          yield chunk;
        }
        if (rawDone) return;
        for (;;) {
          const r = await it.next();
          if (r.done) return;
          compHash.update(r.value);
          stats.compressed += r.value.length;
          yield r.value;
        }
      } finally {
        await it.return?.();
      }
    }
    const rawStream = Readable.from(rawChunks(), { objectMode: false });
    const tarStream: Readable =
      compression === 'none'
        ? rawStream
        : pipeline(rawStream, compression === 'gzip' ? createGunzip() : createZstdDecompress(), () => {});
    async function* hashed(): AsyncGenerator<Buffer> {
      try {
        for await (const chunk of tarStream) {
          diffHash.update(chunk);
          stats.uncompressed += chunk.length;
          yield chunk;
        }
      } catch (err) {
        throw new Error(`reading the layer (${compression}): ${(err as Error).message}`, { cause: err });
      }
    }

    const x = extractor(dir, diffId, host, idMapping, log);
    try {
      for await (const entry of readTar(hashed())) {
        stats.entries++;
        try {
          await x.apply(entry);
        } catch (err) {
          if (err instanceof LayerError) throw err;
          throw new LayerError(diffId, (err as Error).message, { entry: entry.path, cause: err });
        }
      }
    } catch (err) {
      tarStream.destroy();
      if (err instanceof LayerError) throw err;
      throw new LayerError(diffId, (err as Error).message, { cause: err });
    }
    const gotComp = compHash.digest('hex');
    if (gotComp !== comp.hex)
      throw new LayerError(
        diffId,
        `compressed digest mismatch: expected ${compressedDigest}, got ${comp.algo}:${gotComp}`,
      );
    const gotDiff = diffHash.digest('hex');
    if (gotDiff !== diff.hex)
      throw new LayerError(diffId, `diffID mismatch: the uncompressed layer is ${diff.algo}:${gotDiff}`);
    await x.finish();
    return stats;
  }

  async function unpackOnce(
    diffId: string,
    compressedDigest: string,
    mediaType: string,
    openLayer: () => Promise<Readable>,
  ): Promise<string> {
    const diff = parseDigest(diffId, 'diffID');
    const comp = parseDigest(compressedDigest, 'compressed digest');
    const kind = mediaTypes[mediaType];
    if (!kind) throw new LayerError(diffId, `'${mediaType}' is not a layer media type berth can unpack`);
    const final = join(root, diff.algo, diff.hex);
    if (await isDir(final)) return final;

    const foreignError = (cause: unknown) =>
      new LayerError(
        diffId,
        `non-distributable (foreign) layer ${compressedDigest} is not in this registry: push the image with its ` +
          'non-distributable layers included (e.g. skopeo copy or crane with their foreign-layer options)',
        { cause },
      );
    const started = performance.now();
    let raw: Readable;
    try {
      raw = await openLayer();
    } catch (err) {
      if (kind.foreign && isNotFound(err)) throw foreignError(err);
      throw err;
    }

    const parent = join(root, diff.algo);
    // 0700: layers hold setuid binaries and device nodes that host users must not reach.
    await mkdir(parent, { recursive: true, mode: 0o700 });
    const tmp = join(parent, tempName(diff.hex));
    activeTemps.add(tmp);
    try {
      await mkdir(tmp);
      // The layer's root, unless its tar says otherwise: the container's root directory.
      const top = rootOwner(idMapping);
      await host.lchownSafe(tmp, top.uid, top.gid);
      const stats = await extract(raw, tmp, diffId, diff, comp, compressedDigest, kind.compression).catch(
        (err: unknown) => {
          // Reading the bytes (not writing an entry) failed because storage has none.
          const cause = err instanceof LayerError ? (err.entry === undefined ? err.cause : undefined) : err;
          throw kind.foreign && isNotFound(cause) ? foreignError(cause) : err;
        },
      );
      try {
        await rename(tmp, final);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // Another process published the same diffID first: theirs is as good as ours.
        if ((code === 'ENOTEMPTY' || code === 'EEXIST') && (await isDir(final))) {
          await rm(tmp, { recursive: true, force: true });
          return final;
        }
        throw err;
      }
      log.info({ diffId, ...stats, ms: Math.round(performance.now() - started) }, 'layer unpacked');
      return final;
    } catch (err) {
      raw.destroy();
      await rm(tmp, { recursive: true, force: true });
      throw err;
    } finally {
      activeTemps.delete(tmp);
    }
  }

  return {
    unpack(diffId, compressedDigest, mediaType, openLayer) {
      const running = inflight.get(diffId);
      if (running) return running;
      const p = unpackOnce(diffId, compressedDigest, mediaType, openLayer).finally(() =>
        inflight.delete(diffId),
      );
      inflight.set(diffId, p);
      return p;
    },

    has: (diffId) => isDir(pathOf(diffId)),

    path: pathOf,

    async remove(diffId) {
      const final = pathOf(diffId);
      await inflight.get(diffId)?.catch(() => {});
      const { algo, hex } = parseDigest(diffId, 'diffID');
      const doomed = join(root, algo, tempName(hex));
      try {
        // Out of sight first, so a half-deleted layer never looks unpacked.
        await rename(final, doomed);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
        throw err;
      }
      await rm(doomed, { recursive: true, force: true });
      return true;
    },

    async list() {
      const out: string[] = [];
      for (const algo of Object.keys(digestLengths)) {
        let names: string[];
        try {
          names = await readdir(join(root, algo));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
          throw err;
        }
        const re = new RegExp(`^[a-f0-9]{${digestLengths[algo]}}$`);
        for (const n of names) if (re.test(n)) out.push(`${algo}:${n}`);
      }
      return out.sort();
    },

    async sweep() {
      let removed = 0;
      for (const algo of Object.keys(digestLengths)) {
        let names: string[];
        try {
          names = await readdir(join(root, algo));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
          throw err;
        }
        for (const n of names) {
          const m = /^\.tmp-([0-9]+)-/.exec(n);
          if (!m) continue;
          const p = join(root, algo, n);
          const pid = Number(m[1]);
          if (pid === process.pid ? activeTemps.has(p) : pidAlive(pid)) continue;
          await rm(p, { recursive: true, force: true });
          removed++;
        }
      }
      return removed;
    },

    async sweepStale(inUse) {
      let names: string[];
      try {
        names = await readdir(opts.root);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw err;
      }
      const removed: string[] = [];
      for (const name of names.sort()) {
        if (name === cacheName || inUse.has(name)) continue;
        await rm(join(opts.root, name), { recursive: true, force: true });
        removed.push(name);
      }
      if (removed.length > 0) log.info({ removed }, 'deleted layer caches of another user namespace mapping');
      return removed;
    },
  };
}
