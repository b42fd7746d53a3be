// Encrypted pulls from S3, off the main thread. A profile of berth serving encrypted blobs from
// RGW showed its one thread ~85% busy, a third of it receiving bytes from S3 and opening AES-GCM
// segments (plus the garbage both leave), work that has nothing to do with the client's socket.
// So a few worker threads (s3-read-worker.ts) each run their own S3 driver: they do the ranged
// GET, authenticate and decrypt the segments (openSealedRange, the same code the main thread
// runs without workers) and hand plaintext over in chunks whose memory moves between threads
// without copying. The main thread only writes those chunks to the client.
//
// Guarantees, the same as the main-thread path: a segment reaches the sink only once verified
// (the worker copies plaintext into a chunk after opening it); errors arrive as the same typed
// StorageErrors, after the bytes that were good; a range decrypts only the segments it touches.
// Backpressure: each read owns at most `chunksInFlight` chunks; the worker waits for one to come
// back (after the sink resolved for it) before filling another, which pauses its GET, so a slow
// client holds `chunksInFlight * chunkBytes` of memory per read, never a blob. Chunks go back to
// the worker that sent them and are reused, so a pull allocates no per-chunk memory on either side.
import { Worker } from 'node:worker_threads';
import type { ChunkSink } from './driver.ts';
import { InvalidOffsetError, PathNotFoundError, StorageError } from './driver.ts';
import type { SealedKeys, SealedReads } from './encrypted.ts';
import type { S3Options } from './s3.ts';

/** What a worker is started with (workerData). */
export interface ReadWorkerSetup {
  readonly options: S3Options;
  readonly chunkBytes: number;
  readonly chunksInFlight: number;
}

/** Main thread to worker. */
export type ToReadWorker =
  | {
      readonly type: 'copy';
      readonly id: number;
      readonly objectPath: string;
      readonly path: string;
      readonly keys: SealedKeys;
      readonly offset: number;
      readonly length: number;
    }
  /** A chunk the sink is done with, back to its worker's pool. */
  | { readonly type: 'release'; readonly id: number; readonly buffer: ArrayBuffer }
  /** The sink failed (the client went away): stop reading. */
  | { readonly type: 'cancel'; readonly id: number };

/** An error crossing threads: enough to rebuild the typed StorageError. */
export interface WireError {
  readonly name: string;
  readonly message: string;
  readonly driver: string;
  readonly path: string;
  readonly offset?: number;
}

/** Worker to main thread. A read's messages arrive in order: chunks, then end or error. */
export type FromReadWorker =
  | { readonly type: 'chunk'; readonly id: number; readonly buffer: ArrayBuffer; readonly length: number }
  | { readonly type: 'end'; readonly id: number }
  | { readonly type: 'error'; readonly id: number; readonly error: WireError };

export interface ReadWorkerOptions {
  /** Worker threads (at least 1). */
  readonly workers: number;
  /** Bytes per chunk handed to the main thread. */
  readonly chunkBytes?: number;
  /** Chunks a read may have on their way to or at the sink. */
  readonly chunksInFlight?: number;
}

export const defaultChunkBytes = 256 * 1024;
export const defaultChunksInFlight = 4;

export function reviveError(e: WireError): StorageError {
  if (e.name === 'PathNotFoundError') return new PathNotFoundError(e.driver, e.path);
  if (e.name === 'InvalidOffsetError') return new InvalidOffsetError(e.driver, e.path, e.offset ?? 0);
  const err = new StorageError(e.driver, e.path, '');
  err.message = e.message; // already "driver: what: path"
  return err;
}

interface Read {
  readonly path: string;
  readonly chunks: { buffer: ArrayBuffer; length: number }[];
  ended: boolean;
  failure: StorageError | undefined;
  wake: (() => void) | undefined;
}

interface Slot {
  readonly worker: Worker;
  readonly reads: Map<number, Read>;
  dead: boolean;
}

export function createS3ReadWorkers(
  options: S3Options,
  opts: ReadWorkerOptions,
): SealedReads & { close(): Promise<void> } {
  if (!Number.isInteger(opts.workers) || opts.workers < 1) throw new RangeError('workers must be at least 1');
  const setup: ReadWorkerSetup = {
    options: { ...options, readWorkers: 0 },
    chunkBytes: opts.chunkBytes ?? defaultChunkBytes,
    chunksInFlight: opts.chunksInFlight ?? defaultChunksInFlight,
  };
  const slots: Slot[] = [];
  let lastId = 0;
  let closed = false;

  function start(): Slot {
    const worker = new Worker(new URL('./s3-read-worker.ts', import.meta.url), { workerData: setup });
    const slot: Slot = { worker, reads: new Map(), dead: false };
    // Idle workers must not keep the process alive; a worker with reads under way does.
    worker.unref();
    worker.on('message', (m: FromReadWorker) => {
      const read = slot.reads.get(m.id);
      if (!read) {
        // A read that stopped early (its sink failed): hand its chunks straight back.
        if (m.type === 'chunk') release(slot, m.id, m.buffer);
        return;
      }
      if (m.type === 'chunk') read.chunks.push({ buffer: m.buffer, length: m.length });
      else if (m.type === 'end') read.ended = true;
      else read.failure = reviveError(m.error);
      read.wake?.();
    });
    const lost = (why: string) => {
      if (slot.dead) return;
      slot.dead = true;
      for (const read of slot.reads.values()) {
        read.failure ??= new StorageError('s3', read.path, `read worker stopped: ${why}`);
        read.wake?.();
      }
      const i = slots.indexOf(slot);
      if (i >= 0) slots.splice(i, 1);
    };
    worker.on('error', (e) => lost(e.message));
    worker.on('exit', (code) => lost(`exit code ${code}`));
    return slot;
  }

  function release(slot: Slot, id: number, buffer: ArrayBuffer) {
    if (!slot.dead) slot.worker.postMessage({ type: 'release', id, buffer } satisfies ToReadWorker, [buffer]);
  }

  /** The live worker with the fewest reads, starting workers up to the configured count. */
  function pick(): Slot {
    if (slots.length < opts.workers) slots.push(start());
    let best = slots[0]!;
    for (const s of slots) if (s.reads.size < best.reads.size) best = s;
    return best;
  }

  // Started now, not on the first pull: a worker loads the AWS SDK, which takes a moment.
  for (let i = 0; i < opts.workers; i++) slots.push(start());

  return {
    async copySealed(objectPath, path, keys, offset, length, sink: ChunkSink) {
      if (closed) throw new StorageError('s3', objectPath, 'read workers are closed');
      const slot = pick();
      const id = ++lastId;
      const read: Read = { path: objectPath, chunks: [], ended: false, failure: undefined, wake: undefined };
      slot.reads.set(id, read);
      if (slot.reads.size === 1) slot.worker.ref();
      // Fresh copies: a Buffer may be a view into a shared pool, which cloning would copy whole.
      const plainKeys: SealedKeys = {
        dek: new Uint8Array(keys.dek),
        oid: new Uint8Array(keys.oid),
        size: keys.size,
        seg: keys.seg,
      };
      slot.worker.postMessage({
        type: 'copy',
        id,
        objectPath,
        path,
        keys: plainKeys,
        offset,
        length,
      } satisfies ToReadWorker);
      try {
        for (;;) {
          const chunk = read.chunks.shift();
          if (chunk) {
            try {
              await sink(new Uint8Array(chunk.buffer, 0, chunk.length));
            } finally {
              release(slot, id, chunk.buffer);
            }
          } else if (read.failure) {
            throw read.failure;
          } else if (read.ended) {
            return;
          } else {
            await new Promise<void>((r) => (read.wake = r));
            read.wake = undefined;
          }
        }
      } catch (e) {
        if (!read.ended && !read.failure && !slot.dead) {
          slot.worker.postMessage({ type: 'cancel', id } satisfies ToReadWorker);
        }
        throw e;
      } finally {
        slot.reads.delete(id);
        for (const c of read.chunks.splice(0)) release(slot, id, c.buffer);
        if (slot.reads.size === 0) slot.worker.unref();
      }
    },

    async close() {
      closed = true;
      await Promise.all(slots.splice(0).map((s) => s.worker.terminate()));
    },
  };
}
