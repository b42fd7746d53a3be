// Filesystem driver: the embedded default. Paths map onto files under root.
//
// Writes go to a temporary file beside the target (a dot-name, never listed), are fsynced,
// renamed over the target and the directory fsynced: a reader sees the old content or the new,
// never a mix, and a crash leaves at most an unlisted temporary file. A writer that is closed
// rather than committed renames its file to `.<name>.pending`, where an appending writer finds
// it again. Deleting prunes directories left empty, so the tree does not fill with husks.
import { randomBytes } from 'node:crypto';
import { createReadStream, close as fsClose, open as fsOpen, read as fsRead, fstat } from 'node:fs';
import {
  type FileHandle,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  rmdir,
  stat,
  unlink,
} from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { bufferBytesFor, readBytesFor } from './chunk-units.ts';
import {
  type FileInfo,
  type FileWriter,
  InvalidOffsetError,
  PathNotFoundError,
  type StorageDriver,
  StorageError,
} from './driver.ts';

const name = 'filesystem';
/** Writes are gathered into buffers of this size: network chunks are small (TLS records are 16 KiB). */
const writeBufferBytes = 1024 * 1024;
const readChunkBytes = 256 * 1024;
/**
 * Read buffers in flight per copyTo(): enough to keep disk reads and socket writes overlapping.
 * 256 KiB x 6 measured best on a 16 MiB pull (bench/pullprobe.ts): 1 MiB chunks left the
 * client idle while each chunk was encrypted whole, 64 KiB chunks did no better.
 */
const copyRingSize = 6;

function code(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | null)?.code;
}

export function createFsDriver(root: string): StorageDriver {
  const real = (path: string) => join(root, path);
  const tempName = (path: string) =>
    join(dirname(real(path)), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const pendingName = (path: string) => join(dirname(real(path)), `.${basename(path)}.pending`);

  /** Maps ENOENT/ENOTDIR to PathNotFoundError and anything else to a StorageError. */
  function wrap(path: string, e: unknown): Error {
    if (code(e) === 'ENOENT' || code(e) === 'ENOTDIR') return new PathNotFoundError(name, path, { cause: e });
    if (e instanceof StorageError) return e;
    return new StorageError(name, path, code(e) ?? (e as Error).message, { cause: e });
  }

  async function syncDir(dir: string) {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  /** Renames file over the target and makes the rename durable. */
  async function publish(file: string, path: string) {
    await rename(file, real(path));
    await syncDir(dirname(real(path)));
  }

  /**
   * Runs op, which creates an entry in path's directory, creating the parents first. Deletes
   * prune directories they leave empty, so a concurrent delete can remove the directory between
   * our mkdir and op; op is then retried after creating the parents again.
   */
  async function inParent<T>(path: string, op: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        await mkdir(dirname(real(path)), { recursive: true });
        return await op();
      } catch (e) {
        if (code(e) !== 'ENOENT' || attempt >= 10) throw e;
      }
    }
  }

  /**
   * Removes the directories a delete or move left empty, up to but not including the top-level
   * ones (/uploads, /blobs, ...): those are where every writer races every pruner, and keeping
   * them costs nothing.
   */
  async function pruneEmptyParents(path: string) {
    let dir = dirname(real(path));
    while (dirname(dir).length > root.length && dir.startsWith(root)) {
      try {
        await rmdir(dir);
      } catch {
        return; // not empty (or already gone): stop climbing
      }
      dir = dirname(dir);
    }
  }

  return {
    name,

    async getContent(path) {
      try {
        return await readFile(real(path));
      } catch (e) {
        throw wrap(path, e);
      }
    },

    async putContent(path, content) {
      // Small files (links, markers): one write, no staging buffer.
      const file = tempName(path);
      try {
        const fh = await inParent(path, () => open(file, 'w', 0o644));
        try {
          await fh.writeFile(content);
          await fh.sync();
        } finally {
          await fh.close();
        }
        await publish(file, path);
      } catch (e) {
        await unlink(file).catch(() => {});
        throw wrap(path, e);
      }
    },

    async reader(path, offset = 0) {
      // The callback fs API on a plain fd: a profile of blob pulls showed Node 24's FileHandle
      // stream spending 13% of the main thread inside FileHandle.read; these reads run in the
      // thread pool.
      let fd: number;
      try {
        fd = await promisify(fsOpen)(real(path), 'r');
      } catch (e) {
        throw wrap(path, e);
      }
      // Offset 0 needs no size check: one thread-pool round trip less on every whole-blob GET.
      if (offset !== 0) {
        const { size } = await promisify(fstat)(fd);
        if (offset < 0 || offset > size) {
          await promisify(fsClose)(fd);
          throw new InvalidOffsetError(name, path, offset);
        }
      }
      return createReadStream('', { fd, start: offset, highWaterMark: readChunkBytes, autoClose: true });
    },

    async copyTo(path, offset, length, sink) {
      let fd: number;
      try {
        fd = await promisify(fsOpen)(real(path), 'r');
      } catch (e) {
        throw wrap(path, e);
      }
      try {
        // No fstat: a read that ends early means the range ran past the end (one thread-pool
        // round trip less per blob GET; the caller knows the size from its own stat).
        // A ring of read buffers: buffer k is read into again only once the sink released it.
        // Reads end on the sink's unit boundaries (chunk-units.ts), so buffers hold a whole unit.
        const unit = sink.unitBytes;
        const ring = Array.from({ length: copyRingSize }, () =>
          Buffer.allocUnsafe(Math.min(bufferBytesFor(readChunkBytes, unit), length)),
        );
        const released: Promise<void>[] = ring.map(() => Promise.resolve());
        let failure: { error: unknown } | undefined;
        // Sink calls are chained (one at a time, in order) while reads run ahead into the ring.
        let chain: Promise<void> = Promise.resolve();
        const end = offset + length;
        let pos = offset;
        let k = 0;
        while (pos < end && !failure) {
          await released[k];
          if (failure) break;
          const buf = ring[k]!;
          const n = await readAt(
            fd,
            buf,
            readBytesFor(pos - offset, Math.min(buf.length, end - pos), unit),
            pos,
          );
          if (n === 0) throw new InvalidOffsetError(name, path, offset + length);
          pos += n;
          const view = buf.subarray(0, n);
          chain = chain
            .then(() => (failure ? undefined : sink(view)))
            .catch((error: unknown) => {
              failure ??= { error };
            });
          released[k] = chain;
          k = (k + 1) % ring.length;
        }
        await Promise.all(released);
        if (failure) throw failure.error;
      } catch (e) {
        throw wrap(path, e);
      } finally {
        await promisify(fsClose)(fd);
      }
    },

    async writer(path, opts = {}) {
      let file = tempName(path);
      let size = 0;
      let fh: FileHandle;
      if (opts.append) {
        const pending = pendingName(path);
        try {
          size = (await stat(pending)).size;
          await rename(pending, file); // claim it, so no other writer resumes it too
        } catch (e) {
          if (code(e) !== 'ENOENT') throw wrap(path, e);
        }
      }
      try {
        fh = await inParent(path, () => open(file, 'a', 0o644));
      } catch (e) {
        throw wrap(path, e);
      }
      // Allocated on the first small chunk: a writer fed large chunks never needs it.
      let buffer = Buffer.alloc(0);
      let buffered = 0;
      let done = false;

      const flush = async () => {
        if (buffered === 0) return;
        let off = 0;
        while (off < buffered) off += (await fh.write(buffer, off, buffered - off)).bytesWritten;
        buffered = 0;
      };
      const finish = async () => {
        if (done) throw new StorageError(name, path, 'writer already finished');
        done = true;
      };
      const w: FileWriter = {
        get size() {
          return size;
        },
        async write(chunk) {
          if (done) throw new StorageError(name, path, 'writer already finished');
          try {
            if (chunk.byteLength >= writeBufferBytes) {
              await flush();
              let off = 0;
              while (off < chunk.byteLength)
                off += (await fh.write(chunk, off, chunk.byteLength - off)).bytesWritten;
            } else {
              if (buffered + chunk.byteLength > writeBufferBytes) await flush();
              if (buffer.byteLength === 0) buffer = Buffer.allocUnsafe(writeBufferBytes);
              buffer.set(chunk, buffered);
              buffered += chunk.byteLength;
            }
            size += chunk.byteLength;
          } catch (e) {
            throw wrap(path, e);
          }
        },
        async commit() {
          await finish();
          try {
            await flush();
            await fh.sync();
            await fh.close();
            await publish(file, path);
          } catch (e) {
            await unlink(file).catch(() => {});
            throw wrap(path, e);
          }
        },
        async cancel() {
          if (done) return;
          done = true;
          await fh.close().catch(() => {});
          await unlink(file).catch(() => {});
        },
        async close() {
          await finish();
          try {
            await flush();
            await fh.close();
            const pending = pendingName(path);
            await rename(file, pending);
            file = pending;
          } catch (e) {
            throw wrap(path, e);
          }
        },
      };
      // Let the buffer go with the writer; a finished writer holds no megabyte.
      const release = () => {
        buffer = Buffer.alloc(0);
      };
      for (const k of ['commit', 'cancel', 'close'] as const) {
        const f = w[k];
        w[k] = async () => {
          try {
            await f();
          } finally {
            release();
          }
        };
      }
      return w;
    },

    async stat(path): Promise<FileInfo> {
      try {
        const s = await stat(real(path));
        return { path, size: s.isDirectory() ? 0 : s.size, modTime: s.mtime, isDir: s.isDirectory() };
      } catch (e) {
        if (path === '/' && code(e) === 'ENOENT') return { path, size: 0, modTime: new Date(0), isDir: true };
        throw wrap(path, e);
      }
    },

    async list(path) {
      try {
        const entries = await readdir(real(path));
        const prefix = path === '/' ? '/' : `${path}/`;
        return entries
          .filter((e) => !e.startsWith('.'))
          .sort()
          .map((e) => prefix + e);
      } catch (e) {
        if (path === '/' && code(e) === 'ENOENT') return [];
        throw wrap(path, e);
      }
    },

    async move(source, dest) {
      try {
        await stat(real(source));
        await inParent(dest, () => rename(real(source), real(dest)));
        await syncDir(dirname(real(dest)));
      } catch (e) {
        throw wrap(source, e);
      }
      await pruneEmptyParents(source);
    },

    async delete(path) {
      try {
        await stat(real(path));
        await rm(real(path), { recursive: true, force: true });
        // A pending write of a deleted file goes with it.
        await rm(pendingName(path), { force: true });
      } catch (e) {
        throw wrap(path, e);
      }
      await pruneEmptyParents(path);
    },
  };
}

function readAt(fd: number, buf: Buffer, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fsRead(fd, buf, 0, length, position, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

function basename(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}
