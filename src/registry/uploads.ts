// Blob uploads: the POST / PATCH / PUT / DELETE session of the distribution spec.
//
// An upload's bytes accumulate as the pending write of /uploads/<id>/data,
// invisible until the final PUT. The sequence on PUT is: commit the data, verify its digest,
// move it into /blobs, link it into the repository, remove the upload. A digest mismatch
// removes the upload and leaves nothing visible.
//
// The digest is computed while bytes stream in. Node cannot serialise a hash state, so the
// running hash lives in memory with the open writer; an upload resumed after a restart, or
// after it idled out of memory, is hashed again from storage when it finishes.

import type { Hash } from 'node:crypto';
import { randomUUID } from 'node:crypto';
import { OciError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { FileWriter, StorageDriver } from '../storage/index.ts';
import type { Blobs } from './blobs.ts';
import { isNotFound } from './blobs.ts';
import { type Algorithm, type Digest, finishHash, newHash } from './digest.ts';
import * as paths from './paths.ts';

/** An upload's bytes. The registry keeps no view of a chunk once it asks for the next one. */
export type Body = AsyncIterable<Uint8Array>;

export interface ContentRange {
  readonly start: number;
  readonly end: number;
}

interface Session {
  readonly name: string;
  readonly id: string;
  writer: FileWriter | undefined;
  /** The running hash, valid only while hashed === writer.size. */
  hash: Hash | undefined;
  hashed: number;
  algorithm: Algorithm;
  /** Serialises requests on one upload. */
  queue: Promise<unknown>;
  idleTimer: NodeJS.Timeout | undefined;
}

export interface UploadDeps {
  readonly storage: StorageDriver;
  readonly blobs: Blobs;
  readonly log: Logger;
  readonly idleMs: number;
  /** Called once a blob is linked into a repository (the repository now exists). */
  readonly onLinked: (name: string) => Promise<void>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface UploadInfo {
  readonly repository: string;
  readonly startedAt: string;
}

function uploadUnknown(id: string): OciError {
  return new OciError('BLOB_UPLOAD_UNKNOWN', undefined, { detail: { uuid: id } });
}

function isUploadId(id: string): boolean {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(id);
}

export function createUploads(deps: UploadDeps) {
  const { storage, blobs, log } = deps;
  // Upload ids are random UUIDs, unique across repositories.
  const sessions = new Map<string, Session>();

  function touch(s: Session) {
    if (s.idleTimer) clearTimeout(s.idleTimer);
    s.idleTimer = setTimeout(() => {
      void serialise(s, () => release(s)).catch((e) =>
        log.warn({ err: e, upload: s.id }, 'releasing idle upload failed'),
      );
    }, deps.idleMs);
    s.idleTimer.unref();
  }

  /** Closes the open writer (its bytes stay pending in storage) and forgets the session. */
  async function release(s: Session) {
    if (s.idleTimer) clearTimeout(s.idleTimer);
    sessions.delete(s.id);
    const w = s.writer;
    s.writer = undefined;
    if (w) await w.close();
  }

  function serialise<T>(s: Session, fn: () => Promise<T>): Promise<T> {
    const run = s.queue.then(fn, fn);
    s.queue = run.catch(() => undefined);
    return run;
  }

  /** The in-memory session, or one rebuilt from storage; BLOB_UPLOAD_UNKNOWN if none. */
  async function session(name: string, id: string): Promise<Session> {
    const existing = sessions.get(id);
    if (existing) {
      if (existing.name !== name) throw uploadUnknown(id);
      return existing;
    }
    if (!isUploadId(id)) throw uploadUnknown(id);
    const info = await readInfo(id);
    if (info?.repository !== name) throw uploadUnknown(id);
    const again = sessions.get(id); // another request may have rebuilt it meanwhile
    if (again) return again;
    const s: Session = {
      name,
      id,
      writer: undefined,
      hash: undefined,
      hashed: 0,
      algorithm: 'sha256',
      queue: Promise.resolve(),
      idleTimer: undefined,
    };
    sessions.set(id, s);
    return s;
  }

  async function readInfo(id: string): Promise<UploadInfo | undefined> {
    try {
      return JSON.parse(decoder.decode(await storage.getContent(paths.uploadInfo(id)))) as UploadInfo;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  async function openWriter(s: Session): Promise<FileWriter> {
    if (!s.writer) s.writer = await storage.writer(paths.uploadData(s.id), { append: true });
    return s.writer;
  }

  /** Streams body into the session's writer, hashing as it goes. Returns bytes written. */
  async function pump(s: Session, w: FileWriter, body: Body): Promise<number> {
    let n = 0;
    for await (const chunk of body) {
      if (chunk.byteLength === 0) continue;
      await w.write(chunk);
      n += chunk.byteLength;
      if (s.hash && s.hashed + chunk.byteLength === w.size) {
        s.hash.update(chunk);
        s.hashed = w.size;
      }
    }
    return n;
  }

  async function hashStored(path: string, algorithm: Algorithm): Promise<Digest> {
    const h = newHash(algorithm);
    for await (const chunk of await storage.reader(path)) h.update(chunk as Uint8Array);
    return finishHash(h, algorithm);
  }

  const background = new Set<Promise<void>>();
  function afterwards(work: Promise<void>) {
    const p = work
      .catch((e: unknown) =>
        deps.log.warn({ err: (e as Error).message }, 'upload cleanup failed; purge will retry'),
      )
      .finally(() => background.delete(p));
    background.add(p);
  }

  async function removeUpload(id: string) {
    try {
      await storage.delete(paths.uploadDir(id));
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
  }

  return {
    /** Starts an upload. The hash algorithm is the one the client named (digest-algorithm) or sha256. */
    async start(name: string, algorithm: Algorithm = 'sha256'): Promise<{ id: string }> {
      const id = randomUUID();
      const info: UploadInfo = { repository: name, startedAt: new Date().toISOString() };
      await storage.putContent(paths.uploadInfo(id), encoder.encode(JSON.stringify(info)));
      const s: Session = {
        name,
        id,
        writer: await storage.writer(paths.uploadData(id)),
        hash: newHash(algorithm),
        hashed: 0,
        algorithm,
        queue: Promise.resolve(),
        idleTimer: undefined,
      };
      sessions.set(id, s);
      touch(s);
      return { id };
    },

    /** Bytes received so far. */
    async status(name: string, id: string): Promise<{ size: number }> {
      const s = await session(name, id);
      return serialise(s, async () => {
        const w = await openWriter(s);
        touch(s);
        return { size: w.size };
      });
    },

    /**
     * Appends a chunk. With a Content-Range the chunk must start exactly where the upload ends
     * (RANGE_INVALID, 416, otherwise, with the current Range so the client can resume).
     */
    async append(
      name: string,
      id: string,
      body: Body,
      range?: ContentRange,
      length?: number,
    ): Promise<{ size: number }> {
      const s = await session(name, id);
      return serialise(s, async () => {
        const w = await openWriter(s);
        touch(s);
        if (range && range.start !== w.size) {
          throw new OciError(
            'RANGE_INVALID',
            `chunk starts at ${range.start} but the upload has ${w.size} bytes`,
            {
              headers: { Range: rangeHeader(w.size) },
            },
          );
        }
        const before = w.size;
        if (length !== undefined) w.expect?.(before + length);
        await pump(s, w, body);
        if (range && w.size - before !== range.end - range.start + 1) {
          throw new OciError(
            'SIZE_INVALID',
            `Content-Range announced ${range.end - range.start + 1} bytes, got ${w.size - before}`,
          );
        }
        return { size: w.size };
      });
    },

    /** The final PUT: optional last chunk, digest check, then the blob becomes visible and linked. */
    async finish(
      name: string,
      id: string,
      digest: Digest,
      body?: Body,
      length?: number,
    ): Promise<{ size: number }> {
      const s = await session(name, id);
      return serialise(s, async () => {
        const w = await openWriter(s);
        if (body && length !== undefined) w.expect?.(w.size + length);
        if (body) await pump(s, w, body);
        const size = w.size;
        const hashValid = s.hash !== undefined && s.hashed === size && s.algorithm === digest.algorithm;
        const hash = hashValid ? s.hash : undefined;
        s.writer = undefined;
        if (s.idleTimer) clearTimeout(s.idleTimer);
        sessions.delete(id);
        await w.commit();
        const dataPath = paths.uploadData(id);
        try {
          const actual = hash
            ? finishHash(hash, digest.algorithm)
            : await hashStored(dataPath, digest.algorithm);
          if (actual.value !== digest.value) {
            throw new OciError('DIGEST_INVALID', `upload has digest ${actual.value}, not ${digest.value}`, {
              detail: { expected: digest.value, actual: actual.value },
            });
          }
          await storage.move(dataPath, paths.blobData(digest));
          await blobs.link(name, digest, size);
        } catch (e) {
          await removeUpload(id);
          throw e;
        }
        // The blob is in place and linked; what is left of the upload (its info file) is
        // bookkeeping the client need not wait for. On object stores that removal is several
        // round trips; if it fails, or berth stops first, the periodic purge takes it.
        afterwards(removeUpload(id));
        await deps.onLinked(name);
        return { size };
      });
    },

    async cancel(name: string, id: string): Promise<void> {
      const s = await session(name, id);
      await serialise(s, async () => {
        if (s.idleTimer) clearTimeout(s.idleTimer);
        sessions.delete(id);
        const w = s.writer;
        s.writer = undefined;
        if (w) await w.cancel();
        else {
          // A pending write left by an earlier close(): resume it only to discard it.
          await (await storage.writer(paths.uploadData(id), { append: true })).cancel();
        }
        await removeUpload(id);
      });
    },

    /** POST ?digest=: the whole blob in one request, straight into place once verified. */
    async monolithic(name: string, digest: Digest, body: Body, length?: number): Promise<{ size: number }> {
      const w = await storage.writer(paths.blobData(digest));
      if (length !== undefined) w.expect?.(length);
      const h = newHash(digest.algorithm);
      try {
        for await (const chunk of body) {
          if (chunk.byteLength === 0) continue;
          await w.write(chunk);
          h.update(chunk);
        }
      } catch (e) {
        await w.cancel();
        throw e;
      }
      const actual = finishHash(h, digest.algorithm);
      if (actual.value !== digest.value) {
        await w.cancel();
        throw new OciError('DIGEST_INVALID', `body has digest ${actual.value}, not ${digest.value}`, {
          detail: { expected: digest.value, actual: actual.value },
        });
      }
      const size = w.size;
      await w.commit();
      await blobs.link(name, digest, size);
      await deps.onLinked(name);
      return { size };
    },

    /** Removes uploads started before `olderThan` (abandoned by their clients). */
    async purge(olderThan: Date): Promise<number> {
      let dirs: string[];
      try {
        dirs = await storage.list(paths.uploadsDir);
      } catch (e) {
        if (isNotFound(e)) return 0;
        throw e;
      }
      let purged = 0;
      for (const dir of dirs) {
        const id = paths.lastComponent(dir);
        if (sessions.has(id)) continue;
        const info = await readInfo(id);
        // An upload without info is the remains of a crash between creating its directory and
        // writing the info: nothing can resume it.
        if (info && !(new Date(info.startedAt) < olderThan)) continue;
        await removeUpload(id);
        purged++;
      }
      return purged;
    },

    /** On shutdown: close every open writer so the bytes stay pending and the uploads can resume. */
    async releaseAll(): Promise<void> {
      await Promise.all([...sessions.values()].map((s) => serialise(s, () => release(s))));
      await Promise.all(background);
    },
  };
}

/** The Range header of upload responses: the inclusive byte range received so far. */
export function rangeHeader(size: number): string {
  return `0-${size > 0 ? size - 1 : 0}`;
}

export type Uploads = ReturnType<typeof createUploads>;
