// A read worker (see s3-read-workers.ts): its own S3 driver, so the GET's bytes arrive on this
// thread; segments opened here by the same openSealedRange the main thread uses; plaintext
// copied into pooled chunks that travel to the main thread and come back.
import { parentPort, workerData } from 'node:worker_threads';
import { StorageError } from './driver.ts';
import { openSealedRange } from './encrypted.ts';
import { createS3Driver } from './s3.ts';
import type { FromReadWorker, ReadWorkerSetup, ToReadWorker, WireError } from './s3-read-workers.ts';

const setup = workerData as ReadWorkerSetup;
const port = parentPort!;
const driver = createS3Driver(setup.options);

/** Chunks back from the main thread, ready for reuse; a few more than one read holds. */
const spare: ArrayBuffer[] = [];
const maxSpare = setup.chunksInFlight * 4;

interface Job {
  /** Chunks of this read not yet released by the main thread. */
  held: number;
  cancelled: boolean;
  wake: (() => void) | undefined;
}
const jobs = new Map<number, Job>();

function post(m: FromReadWorker, transfer: ArrayBuffer[] = []) {
  port.postMessage(m, transfer);
}

function wire(e: unknown, path: string): WireError {
  if (e instanceof StorageError) {
    return {
      name: e.name,
      message: e.message,
      driver: e.driver,
      path: e.path,
      ...('offset' in e && typeof e.offset === 'number' && { offset: e.offset }),
    };
  }
  return {
    name: 'StorageError',
    message: `s3: ${(e as Error)?.message ?? String(e)}: ${path}`,
    driver: 's3',
    path,
  };
}

async function copy(m: Extract<ToReadWorker, { type: 'copy' }>) {
  const job: Job = { held: 0, cancelled: false, wake: undefined };
  jobs.set(m.id, job);
  const stopped = () => new StorageError('s3', m.objectPath, 'read cancelled');
  let chunk: Uint8Array | undefined;
  let filled = 0;
  const send = () => {
    if (!chunk || filled === 0) return;
    const buffer = chunk.buffer as ArrayBuffer;
    chunk = undefined;
    post({ type: 'chunk', id: m.id, buffer, length: filled }, [buffer]);
    filled = 0;
  };
  const acquire = async (): Promise<Uint8Array> => {
    while (job.held >= setup.chunksInFlight && !job.cancelled) {
      await new Promise<void>((r) => (job.wake = r));
      job.wake = undefined;
    }
    if (job.cancelled) throw stopped();
    job.held++;
    return new Uint8Array(spare.pop() ?? new ArrayBuffer(setup.chunkBytes));
  };
  try {
    await openSealedRange(
      m.keys,
      m.path,
      m.offset,
      m.length,
      async (plain) => {
        let off = 0;
        while (off < plain.byteLength) {
          if (job.cancelled) throw stopped();
          chunk ??= await acquire();
          const n = Math.min(chunk.byteLength - filled, plain.byteLength - off);
          chunk.set(plain.subarray(off, off + n), filled);
          filled += n;
          off += n;
          if (filled === chunk.byteLength) send();
        }
      },
      (from, length, take) => driver.copyTo(m.objectPath, from, length, take),
    );
    send();
    post({ type: 'end', id: m.id });
  } catch (e) {
    if (!job.cancelled) post({ type: 'error', id: m.id, error: wire(e, m.objectPath) });
  } finally {
    if (chunk && spare.length < maxSpare) spare.push(chunk.buffer as ArrayBuffer);
    jobs.delete(m.id);
  }
}

port.on('message', (m: ToReadWorker) => {
  if (m.type === 'copy') {
    void copy(m);
    return;
  }
  const job = jobs.get(m.id);
  if (m.type === 'release') {
    if (spare.length < maxSpare) spare.push(m.buffer);
    if (job) job.held--;
  } else if (job) {
    job.cancelled = true;
  }
  job?.wake?.();
});
