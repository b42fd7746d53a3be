// Blobs: content-addressed bytes in /blobs, made visible to a repository by a link.
import { Readable } from 'node:stream';
import { OciError } from '../errors.ts';
import {
  type ChunkSink,
  InvalidOffsetError,
  PathNotFoundError,
  type StorageDriver,
} from '../storage/index.ts';
import { createLru } from './cache.ts';
import type { Digest } from './digest.ts';
import * as paths from './paths.ts';

export interface BlobInfo {
  readonly digest: Digest;
  readonly size: number;
}

/** A blob's bytes ready to be served one way or the other (see Blobs.body). */
export interface BlobBody {
  readonly length: number;
  copyTo(sink: ChunkSink): Promise<void>;
  open(): Promise<Readable>;
}

/** The first `n` bytes of a stream, destroying the source once they have passed. */
function takeBytes(source: Readable, n: number): Readable {
  let left = n;
  return Readable.from(
    (async function* () {
      try {
        for await (const chunk of source as AsyncIterable<Buffer>) {
          if (chunk.byteLength >= left) {
            yield chunk.subarray(0, left);
            return;
          }
          left -= chunk.byteLength;
          yield chunk;
        }
      } finally {
        source.destroy();
      }
    })(),
    { objectMode: false },
  );
}

export function isNotFound(e: unknown): boolean {
  return e instanceof PathNotFoundError;
}

export function blobUnknown(d: Digest): OciError {
  return new OciError('BLOB_UNKNOWN', undefined, { detail: { digest: d.value } });
}

export function createBlobs(storage: StorageDriver) {
  // Sizes of blobs known to be linked into a repository: HEADs and GETs skip two stats. Unlink
  // drops the entry; garbage collection must go through here too.
  const linkedSizes = createLru<number>({ maxEntries: 100_000 });
  /** Counts finished unlinks, so a stat racing one does not remember a link it saw before. */
  let unlinks = 0;
  const key = (name: string, d: Digest) => `${name}@${d.value}`;

  /** Size of the blob in the global store, or undefined if it is not stored at all. */
  async function storedSize(d: Digest): Promise<number | undefined> {
    try {
      return (await storage.stat(paths.blobData(d))).size;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  async function isLinked(name: string, d: Digest): Promise<boolean> {
    try {
      await storage.stat(paths.layerLink(name, d));
      return true;
    } catch (e) {
      if (isNotFound(e)) return false;
      throw e;
    }
  }

  return {
    storedSize,
    isLinked,

    /** The blob as this repository sees it; BLOB_UNKNOWN unless linked here and stored. */
    async stat(name: string, d: Digest): Promise<BlobInfo> {
      const hit = linkedSizes.get(key(name, d));
      if (hit !== undefined) return { digest: d, size: hit };
      const seen = unlinks;
      const [linked, size] = await Promise.all([isLinked(name, d), storedSize(d)]);
      if (!linked || size === undefined) throw blobUnknown(d);
      // A link seen before an unlink that has finished since is not remembered (it may be gone).
      if (seen === unlinks) linkedSizes.set(key(name, d), size);
      return { digest: d, size };
    },

    /** Streams the blob from `offset`. Callers stat() first; a blob deleted in between is BLOB_UNKNOWN. */
    async open(d: Digest, offset = 0): Promise<Readable> {
      try {
        return await storage.reader(paths.blobData(d), offset);
      } catch (e) {
        if (isNotFound(e)) throw blobUnknown(d);
        if (e instanceof InvalidOffsetError) throw new OciError('RANGE_INVALID');
        throw e;
      }
    },

    /** The bytes [offset, offset + length) of a blob, for serving: pushed by copyTo() or read as a stream. */
    body(d: Digest, offset: number, length: number): BlobBody {
      const path = paths.blobData(d);
      const mapErrors = (e: unknown): never => {
        if (isNotFound(e)) throw blobUnknown(d);
        if (e instanceof InvalidOffsetError) throw new OciError('RANGE_INVALID');
        throw e;
      };
      return {
        length,
        copyTo: (sink: ChunkSink) => storage.copyTo(path, offset, length, sink).catch(mapErrors),
        // Cut at `length` without asking storage for the size: the caller knows the range is inside.
        open: async () => takeBytes(await this.open(d, offset), length),
      };
    },

    /**
     * Links a stored blob of `size` bytes into the repository. The size is remembered at once:
     * a pull right after a push (CI, deploy-on-push) then needs no lookups in storage, which on
     * S3 were two HEAD requests per blob. Remembered before the write, so an unlink racing it
     * leaves no stale entry behind.
     */
    async link(name: string, d: Digest, size: number): Promise<void> {
      linkedSizes.set(key(name, d), size);
      try {
        await storage.putContent(paths.layerLink(name, d), new TextEncoder().encode(d.value));
      } catch (e) {
        linkedSizes.delete(key(name, d));
        throw e;
      }
    },

    /** Removes the repository's link; the bytes stay for other repositories until garbage collection. */
    async unlink(name: string, d: Digest): Promise<void> {
      linkedSizes.delete(key(name, d));
      try {
        await storage.delete(paths.layerLink(name, d));
      } catch (e) {
        if (isNotFound(e)) throw blobUnknown(d);
        throw e;
      } finally {
        // A stat that looked while the delete ran may have remembered the link: forget it again,
        // and stop stats still in flight from remembering it later.
        unlinks++;
        linkedSizes.delete(key(name, d));
      }
    },
  };
}

export type Blobs = ReturnType<typeof createBlobs>;
