// In-memory driver: for tests and throwaway registries. Same contract as every driver,
// including invisible-until-commit writes and resumable pending writes.
import { Readable } from 'node:stream';
import {
  type FileInfo,
  type FileWriter,
  InvalidOffsetError,
  PathNotFoundError,
  type StorageDriver,
  StorageError,
} from './driver.ts';

interface Entry {
  readonly content: Uint8Array;
  readonly modTime: Date;
}

export function createMemoryDriver(): StorageDriver {
  const name = 'memory';
  const files = new Map<string, Entry>();
  const pending = new Map<string, Uint8Array[]>();

  const isDir = (path: string) => {
    const prefix = path === '/' ? '/' : `${path}/`;
    for (const k of files.keys()) if (k.startsWith(prefix)) return true;
    return false;
  };

  function get(path: string): Entry {
    const e = files.get(path);
    if (!e) throw new PathNotFoundError(name, path);
    return e;
  }

  function commitContent(path: string, content: Uint8Array) {
    if (isDir(path)) throw new StorageError(name, path, 'is a directory');
    files.set(path, { content, modTime: new Date() });
  }

  return {
    name,
    async getContent(path) {
      return new Uint8Array(get(path).content);
    },
    async putContent(path, content) {
      commitContent(path, new Uint8Array(content));
    },
    async reader(path, offset = 0) {
      const { content } = get(path);
      if (offset > content.byteLength || offset < 0) throw new InvalidOffsetError(name, path, offset);
      const data = content.subarray(offset);
      const step = 64 * 1024;
      return Readable.from(
        (function* () {
          for (let i = 0; i < data.byteLength; i += step) yield Buffer.from(data.subarray(i, i + step));
        })(),
        { objectMode: false },
      );
    },
    async copyTo(path, offset, length, sink) {
      const { content } = get(path);
      if (offset + length > content.byteLength) throw new InvalidOffsetError(name, path, offset + length);
      const step = 64 * 1024;
      for (let i = offset; i < offset + length; i += step)
        await sink(content.subarray(i, Math.min(i + step, offset + length)));
    },
    async writer(path, opts = {}) {
      const chunks: Uint8Array[] = opts.append ? (pending.get(path) ?? []) : [];
      if (opts.append) pending.delete(path);
      let size = chunks.reduce((n, c) => n + c.byteLength, 0);
      let done = false;
      const check = () => {
        if (done) throw new StorageError(name, path, 'writer already finished');
      };
      const w: FileWriter = {
        get size() {
          return size;
        },
        async write(chunk) {
          check();
          chunks.push(new Uint8Array(chunk)); // a copy: Buffer#slice() would be a view
          size += chunk.byteLength;
        },
        async commit() {
          check();
          done = true;
          commitContent(path, Buffer.concat(chunks));
        },
        async cancel() {
          done = true;
        },
        async close() {
          check();
          done = true;
          pending.set(path, chunks);
        },
      };
      return w;
    },
    async stat(path): Promise<FileInfo> {
      const e = files.get(path);
      if (e) return { path, size: e.content.byteLength, modTime: e.modTime, isDir: false };
      if (path === '/' || isDir(path)) return { path, size: 0, modTime: new Date(0), isDir: true };
      throw new PathNotFoundError(name, path);
    },
    async list(path) {
      const prefix = path === '/' ? '/' : `${path}/`;
      const children = new Set<string>();
      for (const k of files.keys()) {
        if (!k.startsWith(prefix)) continue;
        const rest = k.slice(prefix.length);
        children.add(prefix + rest.split('/')[0]);
      }
      if (children.size === 0) {
        if (path === '/') return [];
        if (files.has(path)) throw new StorageError(name, path, 'not a directory');
        throw new PathNotFoundError(name, path);
      }
      // Dot-names are a driver's (or a decorator's) own bookkeeping: never listed.
      const visible = [...children].filter((c) => !c.slice(c.lastIndexOf('/') + 1).startsWith('.'));
      return visible.sort();
    },
    async move(source, dest) {
      const e = get(source);
      commitContent(dest, e.content);
      files.delete(source);
    },
    async delete(path) {
      if (files.delete(path)) return;
      const prefix = `${path}/`;
      let found = false;
      for (const k of [...files.keys()]) {
        if (k.startsWith(prefix)) {
          files.delete(k);
          found = true;
        }
      }
      for (const k of [...pending.keys()]) if (k === path || k.startsWith(prefix)) pending.delete(k);
      if (!found) throw new PathNotFoundError(name, path);
    },
  };
}
