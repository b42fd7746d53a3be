// A directory of JSON records through the storage driver (so they are encrypted at rest like
// everything else). Writes to one record are serialized and coalesced: a record that changes
// ten times while a write is in flight is written twice, the last state winning, so a busy task
// never queues a backlog of stale snapshots.
import { randomBytes } from 'node:crypto';
import { PathNotFoundError, type StorageDriver } from '../storage/index.ts';

export interface Records<T> {
  /** Every record stored, in no particular order. Unreadable ones are reported, not thrown. */
  load(onBad?: (id: string, err: unknown) => void): Promise<T[]>;
  get(id: string): Promise<T | undefined>;
  /** Resolves once this value (or a later one) is stored. */
  save(id: string, value: T): Promise<void>;
  remove(id: string): Promise<void>;
  /** Resolves when every write started so far has finished. */
  flush(): Promise<void>;
}

const idPattern = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,254}$/;

export function createRecords<T>(storage: StorageDriver, prefix: string): Records<T> {
  const dir = prefix.replace(/\/+$/, '');
  const pathOf = (id: string) => {
    if (!idPattern.test(id) || id.includes('..')) throw new Error(`bad record id '${id}'`);
    return `${dir}/${id}.json`;
  };
  // Per record: the write in flight, and the newest value waiting behind it.
  const inflight = new Map<string, { done: Promise<void>; next?: { value: T; waiters: (() => void)[] } }>();

  async function read(path: string): Promise<T | undefined> {
    try {
      return JSON.parse(Buffer.from(await storage.getContent(path)).toString('utf8')) as T;
    } catch (err) {
      if (err instanceof PathNotFoundError) return undefined;
      throw err;
    }
  }

  function startWrite(id: string, value: T): Promise<void> {
    const done = storage
      .putContent(pathOf(id), new TextEncoder().encode(JSON.stringify(value)))
      .finally(() => {
        const slot = inflight.get(id);
        if (!slot) return;
        const next = slot.next;
        if (next) {
          const p = startWrite(id, next.value);
          for (const w of next.waiters) p.then(w, w);
        } else inflight.delete(id);
      });
    inflight.set(id, { done });
    return done;
  }

  return {
    async load(onBad) {
      let names: string[];
      try {
        names = await storage.list(dir);
      } catch (err) {
        if (err instanceof PathNotFoundError) return [];
        throw err;
      }
      const out: T[] = [];
      for (const name of names) {
        const base = name.slice(name.lastIndexOf('/') + 1);
        if (!base.endsWith('.json')) continue;
        const id = base.slice(0, -5);
        try {
          const v = await read(`${dir}/${base}`);
          if (v !== undefined) out.push(v);
        } catch (err) {
          onBad?.(id, err);
        }
      }
      return out;
    },
    get: (id) => read(pathOf(id)),
    save(id, value) {
      pathOf(id);
      const slot = inflight.get(id);
      if (!slot) return startWrite(id, value);
      return new Promise<void>((resolve) => {
        if (slot.next) {
          slot.next.value = value;
          slot.next.waiters.push(resolve);
        } else slot.next = { value, waiters: [resolve] };
      });
    },
    async remove(id) {
      await inflight.get(id)?.done.catch(() => {});
      try {
        await storage.delete(pathOf(id));
      } catch (err) {
        if (!(err instanceof PathNotFoundError)) throw err;
      }
    },
    async flush() {
      while (inflight.size > 0) await Promise.allSettled([...inflight.values()].map((s) => s.done));
    },
  };
}

/** The file names (without .json) in a directory, unsorted; none when it was never written. */
export async function recordNames(storage: StorageDriver, dir: string): Promise<string[]> {
  try {
    return (await storage.list(dir)).map((p) => p.slice(p.lastIndexOf('/') + 1).replace(/\.json$/, ''));
  } catch (err) {
    if (err instanceof PathNotFoundError) return [];
    throw err;
  }
}

/**
 * Ids that sort in the order they were made (milliseconds, then a counter within the millisecond),
 * which is what lists newest-first and orders journal entries; the random tail keeps two
 * processes apart.
 */
export function sortableIds(now: () => number): () => string {
  let lastMs = -1;
  let counter = 0;
  return () => {
    const ms = now();
    if (ms === lastMs) counter++;
    else {
      lastMs = ms;
      counter = 0;
    }
    return `${String(ms).padStart(13, '0')}${String(counter % 10_000).padStart(4, '0')}${randomBytes(3).toString('hex')}`;
  };
}
