// The part pipeline behind the S3 writer, kept free of the SDK so its edge cases have fast tests.
//
// Bytes are copied once, into a part-sized buffer. A full part goes out while the next one fills,
// so receiving a push and sending it on to the object store overlap instead of taking turns (a
// profile of 16 MiB pushes to RGW showed them taking turns: the whole part arrived, then the
// whole part was sent). When the writer has been told how many bytes are coming (expect(), from
// the request's Content-Length) a part that will certainly fill is streamed to the store as its
// bytes arrive, with its length declared up front; S3 needs every part's length before its
// first byte, so the last, shorter part always waits for commit. A streamed request cannot be
// retried by the SDK, so if it fails the part is sent again from its buffer, which the SDK does
// retry. Memory stays bounded: one part filling and at most one part in flight.
import { PassThrough } from 'node:stream';
import { freeBuffer } from './free-buffer.ts';

export interface PartTarget {
  /** Ensures the multipart upload exists; called before the first part is sent. */
  begin(): Promise<void>;
  /**
   * Sends part n. A Buffer body may be retried; a stream delivers exactly `length` bytes and
   * stops (rejecting) when `signal` aborts.
   */
  sendPart(n: number, body: Buffer | PassThrough, length: number, signal?: AbortSignal): Promise<string>;
}

export interface SentPart {
  readonly PartNumber: number;
  readonly ETag: string;
}

export interface PartPipeline {
  /** Bytes accepted so far, sent or not (parts sent before this pipeline started excluded). */
  readonly accepted: number;
  write(chunk: Uint8Array): Promise<void>;
  /** Hint: this many bytes in all (counted like `accepted`) are expected before the finish. */
  expect(total: number): void;
  /**
   * Waits for every part in flight; returns the parts sent and the unsent remainder (< a part).
   * Call release() once the remainder has been sent, to hand its buffer to the next writer.
   */
  finish(): Promise<{ parts: SentPart[]; rest: Buffer; release(): void }>;
  /** Stops whatever is in flight and waits for it to settle; the pipeline is unusable after. */
  abandon(): Promise<void>;
}

interface Streaming {
  readonly body: PassThrough;
  readonly abort: AbortController;
  /** Settles once the request ended; a failure is kept as `failed` rather than rejected. */
  readonly settled: Promise<void>;
  etag?: string;
  failed?: unknown;
}

// Part buffers are shared by every pipeline of the process: each blob pushed used to allocate two
// of them (a full part and the short last one), and V8 counts such buffers as external memory, so
// 16 MiB pushes at 50 MiB/s ran a full garbage collection every few hundred milliseconds (a
// profile). A few idle ones are kept for the next writer, and freed after a quiet minute;
// the rest are freed as soon as they are done with.
const idleParts = new Map<number, Buffer[]>();
const maxIdleParts = 4;
let idleTimer: NodeJS.Timeout | undefined;

function takePart(size: number): Buffer {
  return idleParts.get(size)?.pop() ?? Buffer.allocUnsafeSlow(size);
}

function giveBackPart(b: Buffer) {
  const list = idleParts.get(b.byteLength) ?? [];
  if (list.length >= maxIdleParts) return freeBuffer(b);
  list.push(b);
  idleParts.set(b.byteLength, list);
  clearTimeout(idleTimer);
  idleTimer = setTimeout(() => {
    for (const parts of idleParts.values()) for (const part of parts.splice(0)) freeBuffer(part);
  }, 60_000).unref();
}

/** Bytes handed to a streamed part's request at a time. */
const streamBatch = 256 * 1024;

export function createPartPipeline(opts: {
  partSize: number;
  target: PartTarget;
  /** Number the next part gets (parts 1..n-1 were sent by an earlier writer). */
  nextPart: number;
  /** Bytes an earlier writer left unsent, which begin the first part. */
  initial?: Buffer;
}): PartPipeline {
  const { partSize, target } = opts;
  const parts: SentPart[] = [];
  let nextPart = opts.nextPart;
  let part: Buffer | undefined;
  let filled = 0;
  /** How much of the part being filled has gone to its streamed request. */
  let streamed = 0;
  let accepted = 0;
  let expected: number | undefined;
  let streaming: Streaming | undefined;
  // The previous part, still uploading while this one fills. Never rejects: errors are kept.
  let inflight: Promise<unknown> | undefined;
  let inflightError: unknown;
  let abandoned = false;

  async function waitInflight(): Promise<void> {
    if (inflight) await inflight;
    inflight = undefined;
    if (inflightError !== undefined) throw inflightError;
  }

  function startStream(n: number): Streaming {
    const body = new PassThrough({ highWaterMark: 1024 * 1024 });
    const abort = new AbortController();
    const s: Streaming = {
      body,
      abort,
      settled: target.sendPart(n, body, partSize, abort.signal).then(
        (etag) => {
          s.etag = etag;
        },
        (e) => {
          s.failed = e;
          // Unblock a writer waiting for 'drain' on a request that is gone.
          body.emit('drain');
        },
      ),
    };
    return s;
  }

  /** Feeds the stream the part's new bytes; a failed stream is left to the buffered resend. */
  async function feed(s: Streaming, bytes: Buffer): Promise<void> {
    if (s.failed !== undefined || s.body.destroyed) return;
    if (!s.body.write(bytes)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          s.body.off('drain', done);
          s.body.off('close', done);
          resolve();
        };
        s.body.on('drain', done);
        s.body.on('close', done);
      });
    }
  }

  async function openPart(): Promise<void> {
    part = takePart(partSize);
    filled = 0;
    streamed = 0;
    const n = nextPart++;
    if (expected !== undefined && expected - accepted >= partSize) {
      await waitInflight();
      await target.begin();
      streaming = startStream(n);
    }
  }

  /** Hands the full part to the background (keeping at most one there) and frees the slot. */
  async function shipPart(): Promise<void> {
    const full = part!;
    const n = nextPart - 1;
    const s = streaming;
    part = undefined;
    streaming = undefined;
    if (s) s.body.end();
    if (!s) {
      await waitInflight();
      await target.begin();
    }
    inflight = (async () => {
      let etag: string | undefined;
      if (s) {
        await s.settled;
        etag = s.etag;
      }
      etag ??= await target.sendPart(n, full, full.byteLength);
      parts.push({ PartNumber: n, ETag: etag });
      // Sent: neither the request nor a retry of it reads the buffer any more.
      giveBackPart(full);
    })().catch((e) => {
      inflightError ??= e;
    });
  }

  async function write(chunk: Uint8Array): Promise<void> {
    if (abandoned) throw new Error('part pipeline already finished');
    if (inflightError !== undefined) throw inflightError;
    let off = 0;
    while (off < chunk.byteLength) {
      if (!part) await openPart();
      const n = Math.min(partSize - filled, chunk.byteLength - off);
      part!.set(chunk.subarray(off, off + n), filled);
      filled += n;
      accepted += n;
      off += n;
      // Streamed in batches: a socket write per 16 KiB TLS record cost a syscall each, here and
      // a wakeup each in the S3 server.
      if (streaming && (filled - streamed >= streamBatch || filled === partSize)) {
        const fresh = part!.subarray(streamed, filled);
        streamed = filled;
        await feed(streaming, fresh);
      }
      if (filled === partSize) await shipPart();
    }
  }

  async function stopStreaming(): Promise<void> {
    const s = streaming;
    streaming = undefined;
    if (!s) return;
    s.abort.abort();
    s.body.destroy();
    await s.settled;
  }

  const pipeline: PartPipeline = {
    get accepted() {
      return accepted;
    },
    write,
    expect(total) {
      expected = total;
    },
    async finish() {
      abandoned = true;
      // The part being filled is the last one and shorter than declared: its request stops here
      // and the caller sends the remainder with its real length.
      await stopStreaming();
      await waitInflight();
      const last = part;
      part = undefined;
      return {
        parts: [...parts].sort((a, b) => a.PartNumber - b.PartNumber),
        rest: last ? last.subarray(0, filled) : Buffer.alloc(0),
        release: () => {
          if (last) giveBackPart(last);
        },
      };
    },
    async abandon() {
      abandoned = true;
      await stopStreaming();
      if (inflight) await inflight;
      if (part) giveBackPart(part);
      part = undefined;
    },
  };

  if (opts.initial && opts.initial.byteLength > 0) {
    // An earlier writer's unsent tail is always shorter than a part: it starts the first one.
    part = takePart(partSize);
    opts.initial.copy(part);
    filled = opts.initial.byteLength;
    accepted = filled;
    nextPart++;
  }
  return pipeline;
}
