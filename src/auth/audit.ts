// Tamper-evident audit log: an append-only hash chain of JSON entries.
//
// Each entry carries seq, time, prevHash (the previous entry's hash; 64 zeros for the first) and
// hash = sha256(canonical JSON of the entry without hash). Editing an entry breaks its hash;
// deleting or reordering entries breaks the seq run and the prevHash links. What a chain cannot
// show by itself is a cut tail: drop the last entries and what remains is a valid, shorter
// chain. So head.json records the last seq and hash on every append, and verify() holds the
// chain against it.
//
// The chain is unkeyed: whoever can rewrite all of /auth/audit (head included) can forge a
// consistent history, and deleting everything leaves a valid empty log. The log makes
// tampering evident to checks, not impossible; anchoring the head elsewhere is the remedy.
//
// Entries live in segments of `segmentSize` entries, /auth/audit/<first seq, 10 digits>.jsonl,
// one canonical JSON object per line. The driver can only replace whole files, so an append
// rewrites its segment; segments keep that bounded.
import { createHash } from 'node:crypto';
import type { StorageDriver } from '../storage/index.ts';
import { isRecord, listOrEmpty, readJson, readText, writeJson, writeText } from './store.ts';

export type AuditEventType = 'authn' | 'token' | 'decision' | 'admin';

export interface AuditEvent {
  readonly type: AuditEventType;
  readonly actor: string;
  readonly action: string;
  readonly resource?: string;
  readonly decision?: 'Allow' | 'Deny';
  readonly reason?: string;
  readonly sourceIp?: string;
  readonly requestId?: string;
  readonly detail?: Record<string, unknown>;
}

export interface AuditEntry extends AuditEvent {
  readonly seq: number;
  /** ISO 8601; never earlier than the previous entry's time. */
  readonly time: string;
  readonly prevHash: string;
  readonly hash: string;
}

export interface AuditQuery {
  /** Inclusive. */
  readonly since?: Date;
  /** Exclusive. */
  readonly until?: Date;
  readonly actor?: string;
  readonly type?: AuditEventType;
  readonly decision?: 'Allow' | 'Deny';
  /** Default 100, at most 1000. */
  readonly limit?: number;
  /** Cursor: only entries with a greater seq (the `next` of the previous page). */
  readonly after?: number;
}

export type AuditVerification = { ok: true; entries: number } | { ok: false; seq: number; problem: string };

export interface AuditLog {
  record(event: AuditEvent): Promise<AuditEntry>;
  query(q?: AuditQuery): Promise<{ entries: AuditEntry[]; next?: number }>;
  verify(): Promise<AuditVerification>;
}

/** The stored log does not continue where head.json says it ends; appending would hide that. */
export class AuditIntegrityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuditIntegrityError';
  }
}

export const genesisHash = '0'.repeat(64);
const dir = '/auth/audit';
const headPath = `${dir}/head.json`;
const segmentName = /^(\d{10})\.jsonl$/;
const eventTypes: readonly string[] = ['authn', 'token', 'decision', 'admin'];

/** JSON with object keys sorted (by UTF-16 code units, as Array.prototype.sort does). */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (isRecord(value)) {
    const members = Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`);
    return `{${members.join(',')}}`;
  }
  return JSON.stringify(value);
}

export function entryHash(entry: Record<string, unknown>): string {
  const { hash: _, ...body } = entry;
  return createHash('sha256').update(canonicalJson(body)).digest('hex');
}

const segmentPath = (firstSeq: number) => `${dir}/${String(firstSeq).padStart(10, '0')}.jsonl`;

interface Segment {
  readonly path: string;
  readonly first: number;
}

async function segments(storage: StorageDriver): Promise<Segment[]> {
  const out: Segment[] = [];
  for (const path of await listOrEmpty(storage, dir)) {
    const m = segmentName.exec(path.slice(dir.length + 1));
    if (m) out.push({ path, first: Number(m[1]) });
  }
  return out.sort((a, b) => a.first - b.first);
}

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l !== '');
}

function parseEntry(line: string): AuditEntry | undefined {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (!isRecord(v)) return undefined;
  const { seq, time, prevHash, hash } = v;
  if (!Number.isSafeInteger(seq) || typeof time !== 'string') return undefined;
  if (typeof prevHash !== 'string' || typeof hash !== 'string') return undefined;
  return v as unknown as AuditEntry;
}

async function readHead(storage: StorageDriver): Promise<{ seq: number; hash: string } | undefined> {
  const v = await readJson(storage, headPath);
  if (isRecord(v) && Number.isSafeInteger(v['seq']) && typeof v['hash'] === 'string')
    return { seq: v['seq'] as number, hash: v['hash'] };
  return undefined;
}

function checkEvent(e: AuditEvent): void {
  if (!eventTypes.includes(e.type)) throw new TypeError(`audit: unknown event type ${String(e.type)}`);
  if (typeof e.actor !== 'string' || e.actor === '') throw new TypeError('audit: actor is required');
  if (typeof e.action !== 'string' || e.action === '') throw new TypeError('audit: action is required');
  if (e.decision !== undefined && e.decision !== 'Allow' && e.decision !== 'Deny')
    throw new TypeError(`audit: decision must be Allow or Deny`);
  if (e.detail !== undefined && !isRecord(e.detail)) throw new TypeError('audit: detail must be an object');
}

/** Where appends continue: the last entry and the segment it sits in. */
interface Tail {
  readonly seq: number;
  readonly hash: string;
  readonly timeMs: number;
  readonly segmentFirst: number;
  readonly segmentText: string;
  readonly segmentCount: number;
}

export function createAuditLog(opts: {
  storage: StorageDriver;
  now?: () => number;
  /** Entries per segment file; default 100. */
  segmentSize?: number;
}): AuditLog {
  const { storage } = opts;
  const now = opts.now ?? Date.now;
  const segmentSize = opts.segmentSize ?? 100;
  if (!Number.isSafeInteger(segmentSize) || segmentSize < 1) throw new RangeError('audit: bad segmentSize');

  // One operation at a time, so concurrent record() calls each chain onto the one before.
  let queue: Promise<unknown> = Promise.resolve();
  function serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = queue.then(fn);
    queue = run.catch(() => {});
    return run;
  }

  let tail: Tail | undefined;

  async function loadTail(): Promise<Tail> {
    const segs = await segments(storage);
    const head = await readHead(storage);
    const last = segs.at(-1);
    if (!last) {
      if (head && head.seq > 0)
        throw new AuditIntegrityError(`audit log is empty but head.json records entry ${head.seq}`);
      return { seq: 0, hash: genesisHash, timeMs: 0, segmentFirst: 1, segmentText: '', segmentCount: 0 };
    }
    const text = (await readText(storage, last.path)) ?? '';
    const entries = lines(text).map(parseEntry);
    const end = entries.at(-1);
    if (!end) throw new AuditIntegrityError(`audit segment ${last.path} has no readable last entry`);
    // A crash between writing a segment and head.json leaves head behind by the batch that
    // segment write added (batches never span segments): head then names an entry of the last
    // segment, or the entry just before it. Anything else means entries were removed or
    // rewritten, and appending would bury the evidence.
    const headCurrent = head?.seq === end.seq && head.hash === end.hash;
    const first = entries[0] ?? end;
    const headBehind = head
      ? entries.some((e) => e?.seq === head.seq && e.hash === head.hash) ||
        (head.seq === first.seq - 1 && head.hash === first.prevHash)
      : first.seq === 1 && first.prevHash === genesisHash;
    if (!headCurrent) {
      if (!headBehind)
        throw new AuditIntegrityError(
          `audit log ends at entry ${end.seq} but head.json records ${head ? `entry ${head.seq}` : 'nothing'}`,
        );
      await writeJson(storage, headPath, { seq: end.seq, hash: end.hash });
    }
    return {
      seq: end.seq,
      hash: end.hash,
      timeMs: Date.parse(end.time) || 0,
      segmentFirst: last.first,
      segmentText: text,
      segmentCount: entries.length,
    };
  }

  /**
   * Appends events in one segment write (and one head write): concurrent record() calls are
   * grouped, so a burst of sign-ins costs a few writes, not one rewrite of the segment each.
   */
  async function appendBatch(events: readonly AuditEvent[]): Promise<AuditEntry[]> {
    const t = tail ?? (await loadTail());
    const roll = t.segmentCount >= segmentSize;
    const segmentFirst = roll ? t.seq + 1 : t.segmentFirst;
    let text = roll ? '' : t.segmentText;
    let { seq, hash, timeMs } = t;
    const out: AuditEntry[] = [];
    for (const event of events) {
      seq++;
      // Time never runs backwards along the chain, so query() can stop at `until`.
      timeMs = Math.max(now(), timeMs);
      // The JSON round trip drops undefined members and turns Dates into strings, so the hash
      // covers exactly what is stored and verify() can recompute it from the stored line.
      const body = JSON.parse(
        JSON.stringify({ ...event, seq, time: new Date(timeMs).toISOString(), prevHash: hash }),
      ) as Record<string, unknown>;
      const entry = { ...body, hash: entryHash(body) } as unknown as AuditEntry;
      hash = entry.hash;
      text += `${canonicalJson(entry)}\n`;
      out.push(entry);
    }
    try {
      await writeText(storage, segmentPath(segmentFirst), text);
      await writeJson(storage, headPath, { seq, hash });
    } catch (err) {
      // The segment may or may not hold the entries now: reread storage before the next append.
      tail = undefined;
      throw err;
    }
    tail = {
      seq,
      hash,
      timeMs,
      segmentFirst,
      segmentText: text,
      segmentCount: (roll ? 0 : t.segmentCount) + events.length,
    };
    return out;
  }

  // Events waiting for the next write, and whether a writer is running.
  const waiting: { event: AuditEvent; resolve: (e: AuditEntry) => void; reject: (e: unknown) => void }[] = [];
  let writing = false;
  async function drain(): Promise<void> {
    writing = true;
    try {
      while (waiting.length > 0) {
        await serialized(async () => {
          let batch = waiting.splice(0, waiting.length);
          try {
            const t = tail ?? (await loadTail());
            // A batch stays within one segment; the rest waits for the next round.
            const room = t.segmentCount >= segmentSize ? segmentSize : segmentSize - t.segmentCount;
            waiting.unshift(...batch.slice(room));
            batch = batch.slice(0, room);
            const entries = await appendBatch(batch.map((b) => b.event));
            for (const [i, b] of batch.entries()) b.resolve(entries[i]!);
          } catch (err) {
            for (const b of batch) b.reject(err);
          }
        });
      }
    } finally {
      writing = false;
    }
  }

  async function query(q: AuditQuery = {}): Promise<{ entries: AuditEntry[]; next?: number }> {
    const limit = q.limit ?? 100;
    if (!Number.isSafeInteger(limit) || limit < 1)
      throw new RangeError('audit: limit must be a positive integer');
    const max = Math.min(limit, 1000);
    const after = q.after ?? 0;
    if (!Number.isSafeInteger(after) || after < 0) throw new RangeError('audit: after must be a seq');
    const from = after + 1;
    const since = q.since?.getTime() ?? -Infinity;
    const until = q.until?.getTime() ?? Infinity;
    const segs = await segments(storage);
    // Segments before the one holding `from` cannot match.
    const start = Math.max(
      0,
      segs.findLastIndex((s) => s.first <= from),
    );
    const out: AuditEntry[] = [];
    for (const seg of segs.slice(start)) {
      for (const line of lines((await readText(storage, seg.path)) ?? '')) {
        const e = parseEntry(line);
        if (!e) throw new AuditIntegrityError(`audit segment ${seg.path} holds an unreadable entry`);
        if (e.seq < from) continue;
        const time = Date.parse(e.time);
        if (time >= until) return page(out, max);
        if (time < since) continue;
        if (q.actor !== undefined && e.actor !== q.actor) continue;
        if (q.type !== undefined && e.type !== q.type) continue;
        if (q.decision !== undefined && e.decision !== q.decision) continue;
        out.push(e);
        // One past the page tells whether there is a next page.
        if (out.length > max) return page(out, max);
      }
    }
    return page(out, max);
  }

  async function verify(): Promise<AuditVerification> {
    let expected = 1;
    let prevHash = genesisHash;
    let beforeLast = genesisHash;
    for (const seg of await segments(storage)) {
      if (seg.first !== expected)
        return {
          ok: false,
          seq: expected,
          problem: `sequence break: segment ${seg.path} starts at ${seg.first}`,
        };
      for (const line of lines((await readText(storage, seg.path)) ?? '')) {
        const e = parseEntry(line);
        if (!e) return { ok: false, seq: expected, problem: 'unreadable entry' };
        if (e.seq !== expected)
          return {
            ok: false,
            seq: expected,
            problem: `sequence break: expected ${expected}, found ${e.seq}`,
          };
        if (e.prevHash !== prevHash)
          return { ok: false, seq: e.seq, problem: 'prevHash does not match the previous entry' };
        if (entryHash(e as unknown as Record<string, unknown>) !== e.hash)
          return { ok: false, seq: e.seq, problem: 'hash mismatch: entry was modified' };
        beforeLast = prevHash;
        prevHash = e.hash;
        expected++;
      }
    }
    const count = expected - 1;
    const head = await readHead(storage);
    // Same tolerance as loadTail(): head may trail by the one entry a crash interrupted.
    const headOk = head
      ? (head.seq === count && head.hash === prevHash) ||
        (head.seq === count - 1 && head.hash === beforeLast && count > 0)
      : count <= 1;
    if (!headOk) {
      if (head && head.seq > count)
        return {
          ok: false,
          seq: head.seq,
          problem: `truncated: head.json records entry ${head.seq}, log ends at ${count}`,
        };
      return { ok: false, seq: head?.seq ?? count, problem: 'head.json does not match the last entry' };
    }
    return { ok: true, entries: count };
  }

  return {
    record(event) {
      return new Promise<AuditEntry>((resolve, reject) => {
        checkEvent(event);
        waiting.push({ event, resolve, reject });
        if (!writing) void drain();
      });
    },
    // Not queued: every file is replaced whole, so a reader sees each segment before or after
    // an append, never halfway.
    query,
    verify: () => serialized(verify),
  };
}

function page(found: AuditEntry[], max: number): { entries: AuditEntry[]; next?: number } {
  if (found.length <= max) return { entries: found };
  const entries = found.slice(0, max);
  return { entries, next: entries.at(-1)!.seq };
}
