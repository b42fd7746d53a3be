// checked(driver): the wrapper every driver runs inside. It refuses paths outside the grammar
// before the driver sees them (so no driver has to defend against traversal) and turns any
// unexpected error into a StorageError that names the driver and the storage path only.
import {
  type ChunkSink,
  type FileWriter,
  InvalidPathError,
  type StorageDriver,
  StorageError,
} from './driver.ts';

const component = /^[A-Za-z0-9_~][A-Za-z0-9._~-]*$/;

/** Absolute, '/'-separated, no empty, '.', '..' or dot-prefixed components; '/' is the root. */
export function isValidPath(path: string): boolean {
  if (path === '/') return true;
  if (!path.startsWith('/') || path.length > 4096) return false;
  return path
    .slice(1)
    .split('/')
    .every((c) => component.test(c));
}

export function checked(inner: StorageDriver): StorageDriver {
  const name = inner.name;
  function check(path: string, allowRoot = false) {
    if (!isValidPath(path) || (!allowRoot && path === '/')) throw new InvalidPathError(name, path);
  }
  async function guard<T>(path: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof StorageError) throw e;
      throw new StorageError(name, path, (e as Error)?.message ?? String(e), { cause: e });
    }
  }
  function guardWriter(path: string, w: FileWriter): FileWriter {
    return {
      get size() {
        return w.size;
      },
      expect: (total) => {
        if (Number.isSafeInteger(total) && total >= 0) w.expect?.(total);
      },
      write: (chunk) => guard(path, () => w.write(chunk)),
      commit: () => guard(path, () => w.commit()),
      cancel: () => guard(path, () => w.cancel()),
      close: () => guard(path, () => w.close()),
    };
  }
  return {
    name,
    getContent: async (p) => {
      check(p);
      return guard(p, () => inner.getContent(p));
    },
    putContent: async (p, c) => {
      check(p);
      return guard(p, () => inner.putContent(p, c));
    },
    reader: async (p, o) => {
      check(p);
      if (o !== undefined && (!Number.isSafeInteger(o) || o < 0))
        throw new StorageError(name, p, `invalid offset ${o}`);
      return guard(p, () => inner.reader(p, o));
    },
    copyTo: async (p: string, offset: number, length: number, sink: ChunkSink) => {
      check(p);
      if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
        throw new StorageError(name, p, `invalid range ${offset}+${length}`);
      }
      return guard(p, () => inner.copyTo(p, offset, length, sink));
    },
    writer: async (p, o) => {
      check(p);
      return guardWriter(p, await guard(p, () => inner.writer(p, o)));
    },
    stat: async (p) => {
      check(p, true);
      return guard(p, () => inner.stat(p));
    },
    list: async (p) => {
      check(p, true);
      return guard(p, () => inner.list(p));
    },
    move: async (s, d) => {
      check(s);
      check(d);
      return guard(s, () => inner.move(s, d));
    },
    delete: async (p) => {
      check(p);
      return guard(p, () => inner.delete(p));
    },
    ...(inner.deleteFile && {
      deleteFile: async (p: string) => {
        check(p);
        return guard(p, () => inner.deleteFile!(p));
      },
    }),
  };
}
