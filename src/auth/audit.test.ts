import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createMemoryDriver, type StorageDriver } from '../storage/index.ts';
import {
  type AuditEvent,
  AuditIntegrityError,
  canonicalJson,
  createAuditLog,
  entryHash,
  genesisHash,
} from './audit.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();

async function readLines(storage: StorageDriver, path: string): Promise<Record<string, unknown>[]> {
  const text = dec.decode(await storage.getContent(path));
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l));
}

async function writeLines(storage: StorageDriver, path: string, entries: Record<string, unknown>[]) {
  await storage.putContent(path, enc.encode(entries.map((e) => JSON.stringify(e) + '\n').join('')));
}

const event = (i: number, over: Partial<AuditEvent> = {}): AuditEvent => ({
  type: 'decision',
  actor: `user${i % 3}`,
  action: 'pull',
  resource: `repo${i}`,
  decision: i % 2 ? 'Deny' : 'Allow',
  ...over,
});

/** A log with n entries, 4 per segment, and a clock one second per tick. */
async function filled(n: number) {
  const storage = createMemoryDriver();
  let t = Date.parse('2025-01-01T00:00:00Z');
  const now = () => (t += 1000);
  const log = createAuditLog({ storage, now, segmentSize: 4 });
  for (let i = 1; i <= n; i++) await log.record(event(i));
  return { storage, log, now };
}

const seg = (first: number) => `/auth/audit/${String(first).padStart(10, '0')}.jsonl`;

describe('audit log: recording', () => {
  it('chains entries from the genesis hash', async () => {
    const storage = createMemoryDriver();
    const log = createAuditLog({ storage, now: () => Date.parse('2025-02-03T04:05:06.789Z') });
    const a = await log.record({ type: 'authn', actor: 'alice', action: 'login', sourceIp: '10.0.0.1' });
    const b = await log.record({
      type: 'admin',
      actor: 'root',
      action: 'create-user',
      detail: { name: 'bob' },
    });
    expect(a).toMatchObject({ seq: 1, time: '2025-02-03T04:05:06.789Z', prevHash: genesisHash });
    expect(b.prevHash).toBe(a.hash);
    const { hash, ...body } = a;
    expect(hash).toBe(createHash('sha256').update(canonicalJson(body)).digest('hex'));
    expect(await storage.list('/auth/audit')).toEqual([seg(1), '/auth/audit/head.json']);
    expect(JSON.parse(dec.decode(await storage.getContent('/auth/audit/head.json')))).toEqual({
      seq: 2,
      hash: b.hash,
    });
    expect(await log.verify()).toEqual({ ok: true, entries: 2 });
  });

  it('writes canonical JSON with sorted keys and drops undefined members', async () => {
    const storage = createMemoryDriver();
    const log = createAuditLog({ storage });
    await log.record({
      type: 'token',
      actor: 'ci',
      action: 'issue',
      reason: undefined,
      detail: { z: 1, a: [2] },
    });
    const line = dec.decode(await storage.getContent(seg(1))).trimEnd();
    expect(Object.keys(JSON.parse(line))).toEqual([...Object.keys(JSON.parse(line))].sort());
    expect(line).toContain('"detail":{"a":[2],"z":1}');
    expect(line).not.toContain('reason');
  });

  it('rolls a new segment every segmentSize entries', async () => {
    const { storage, log } = await filled(9);
    expect(await storage.list('/auth/audit')).toEqual([seg(1), seg(5), seg(9), '/auth/audit/head.json']);
    expect((await readLines(storage, seg(5))).map((e) => e['seq'])).toEqual([5, 6, 7, 8]);
    expect(await log.verify()).toEqual({ ok: true, entries: 9 });
  });

  it('rolls at 100 entries by default, so an append rewrites at most a small segment', async () => {
    const storage = createMemoryDriver();
    const log = createAuditLog({ storage });
    for (let i = 1; i <= 201; i++) await log.record(event(i));
    expect(await storage.list('/auth/audit')).toEqual([seg(1), seg(101), seg(201), '/auth/audit/head.json']);
    expect(await log.verify()).toEqual({ ok: true, entries: 201 });
  });

  it('keeps the chain consistent under concurrent records', async () => {
    const storage = createMemoryDriver();
    const log = createAuditLog({ storage, segmentSize: 7 });
    const entries = await Promise.all(Array.from({ length: 50 }, (_, i) => log.record(event(i))));
    expect(entries.map((e) => e.seq).sort((a, b) => a - b)).toEqual(
      Array.from({ length: 50 }, (_, i) => i + 1),
    );
    expect(await log.verify()).toEqual({ ok: true, entries: 50 });
  });

  it('continues seq and chain after a restart', async () => {
    const { storage, now } = await filled(6);
    const again = createAuditLog({ storage, now, segmentSize: 4 });
    const e = await again.record(event(7));
    expect(e.seq).toBe(7);
    expect(e.prevHash).toBe((await readLines(storage, seg(5)))[1]!['hash']);
    expect(await again.verify()).toEqual({ ok: true, entries: 7 });
  });

  it('never lets time run backwards', async () => {
    let t = Date.parse('2025-01-01T00:00:10Z');
    const log = createAuditLog({ storage: createMemoryDriver(), now: () => t });
    await log.record(event(1));
    t -= 5000;
    expect((await log.record(event(2))).time).toBe('2025-01-01T00:00:10.000Z');
  });

  it('rejects malformed events', async () => {
    const log = createAuditLog({ storage: createMemoryDriver() });
    await expect(log.record({ ...event(1), type: 'other' as 'admin' })).rejects.toThrow(TypeError);
    await expect(log.record({ ...event(1), actor: '' })).rejects.toThrow(TypeError);
    await expect(log.record({ ...event(1), decision: 'Maybe' as 'Allow' })).rejects.toThrow(TypeError);
    expect(await log.verify()).toEqual({ ok: true, entries: 0 });
  });

  it('recovers when a crash left head.json one entry behind', async () => {
    const { storage, log } = await filled(5);
    const lines = await readLines(storage, seg(5));
    const prev = (await readLines(storage, seg(1)))[3]!;
    await storage.putContent(
      '/auth/audit/head.json',
      enc.encode(JSON.stringify({ seq: 4, hash: prev['hash'] })),
    );
    expect(await log.verify()).toEqual({ ok: true, entries: 5 });
    const again = createAuditLog({ storage, segmentSize: 4 });
    const e = await again.record(event(6));
    expect(e.prevHash).toBe(lines[0]!['hash']);
    expect(await again.verify()).toEqual({ ok: true, entries: 6 });
  });
});

describe('audit log: group commit', () => {
  it('writes a burst of concurrent records in a few segment writes, chained in order', async () => {
    const inner = createMemoryDriver();
    let writes = 0;
    const storage: StorageDriver = {
      ...inner,
      putContent: (path, content) => {
        writes++;
        return inner.putContent(path, content);
      },
    };
    const log = createAuditLog({ storage, segmentSize: 100 });
    const entries = await Promise.all(Array.from({ length: 60 }, (_, i) => log.record(event(i))));
    expect(entries.map((e) => e.seq)).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
    // The first record writes alone; the 59 that queued behind it go in one segment write.
    expect(writes).toBeLessThanOrEqual(6);
    expect(await log.verify()).toEqual({ ok: true, entries: 60 });
  });

  it('recovers when a crash left head.json a whole batch behind', async () => {
    const storage = createMemoryDriver();
    const log = createAuditLog({ storage, segmentSize: 100 });
    const first = await log.record(event(1));
    const rest = await Promise.all([2, 3, 4].map((i) => log.record(event(i))));
    // As if the process died after the segment write and before head.json.
    await storage.putContent(
      '/auth/audit/head.json',
      enc.encode(JSON.stringify({ seq: 1, hash: first.hash })),
    );
    const again = createAuditLog({ storage, segmentSize: 100 });
    const e = await again.record(event(5));
    expect(e.prevHash).toBe(rest.at(-1)!.hash);
    expect(await again.verify()).toEqual({ ok: true, entries: 5 });
  });
});

describe('audit log: query', () => {
  it('filters by actor, type and decision', async () => {
    const { log } = await filled(12);
    const r = await log.query({ actor: 'user1', decision: 'Deny' });
    expect(r.entries.map((e) => e.seq)).toEqual([1, 7]);
    expect(r.next).toBeUndefined();
    expect((await log.query({ type: 'admin' })).entries).toEqual([]);
  });

  it('filters by time: since inclusive, until exclusive', async () => {
    const { log } = await filled(12);
    const all = (await log.query()).entries;
    const since = new Date(all[2]!.time);
    const until = new Date(all[6]!.time);
    expect((await log.query({ since, until })).entries.map((e) => e.seq)).toEqual([3, 4, 5, 6]);
  });

  it('pages with a seq cursor', async () => {
    const { log } = await filled(11);
    const p1 = await log.query({ limit: 5 });
    expect(p1.entries.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(p1.next).toBe(5);
    const p2 = await log.query({ limit: 5, after: p1.next });
    expect(p2.entries.map((e) => e.seq)).toEqual([6, 7, 8, 9, 10]);
    const p3 = await log.query({ limit: 5, after: p2.next });
    expect(p3.entries.map((e) => e.seq)).toEqual([11]);
    expect(p3.next).toBeUndefined();
  });

  it('caps the page size at 1000 and rejects a bad limit', async () => {
    const storage = createMemoryDriver();
    const log = createAuditLog({ storage, segmentSize: 500 });
    for (let i = 0; i < 1002; i++) await log.record(event(i));
    const r = await log.query({ limit: 5000 });
    expect(r.entries).toHaveLength(1000);
    expect(r.next).toBe(1000);
    expect((await log.query()).entries).toHaveLength(100);
    await expect(log.query({ limit: 0 })).rejects.toThrow(RangeError);
  });
});

describe('audit log: tamper evidence', () => {
  it('detects an edited entry', async () => {
    const { storage, log } = await filled(6);
    const lines = await readLines(storage, seg(1));
    lines[2]!['decision'] = 'Allow';
    lines[2]!['actor'] = 'mallory';
    await writeLines(storage, seg(1), lines);
    expect(await log.verify()).toEqual({ ok: false, seq: 3, problem: 'hash mismatch: entry was modified' });
  });

  it('detects an edited entry whose hash was recomputed', async () => {
    const { storage, log } = await filled(6);
    const lines = await readLines(storage, seg(1));
    lines[1]!['actor'] = 'mallory';
    lines[1]!['hash'] = entryHash(lines[1]!);
    await writeLines(storage, seg(1), lines);
    expect(await log.verify()).toMatchObject({
      ok: false,
      seq: 3,
      problem: expect.stringMatching(/prevHash/),
    });
  });

  it('detects a deleted entry', async () => {
    const { storage, log } = await filled(6);
    const lines = await readLines(storage, seg(1));
    lines.splice(1, 1);
    await writeLines(storage, seg(1), lines);
    expect(await log.verify()).toMatchObject({
      ok: false,
      seq: 2,
      problem: expect.stringMatching(/sequence/),
    });
  });

  it('detects a deleted entry when the rest were renumbered', async () => {
    const { storage, log } = await filled(4);
    const lines = await readLines(storage, seg(1));
    lines.splice(1, 1);
    lines.forEach((e, i) => {
      e['seq'] = i + 1;
    });
    await writeLines(storage, seg(1), lines);
    expect(await log.verify()).toMatchObject({ ok: false, seq: 2 });
  });

  it('detects a deleted segment', async () => {
    const { storage, log } = await filled(10);
    await storage.delete(seg(5));
    expect(await log.verify()).toMatchObject({
      ok: false,
      seq: 5,
      problem: expect.stringMatching(/sequence/),
    });
  });

  it('detects reordered entries', async () => {
    const { storage, log } = await filled(4);
    const lines = await readLines(storage, seg(1));
    [lines[1], lines[2]] = [lines[2]!, lines[1]!];
    await writeLines(storage, seg(1), lines);
    expect(await log.verify()).toMatchObject({
      ok: false,
      seq: 2,
      problem: expect.stringMatching(/sequence/),
    });
  });

  it('detects a truncated tail through head.json', async () => {
    const { storage, log } = await filled(7);
    const lines = await readLines(storage, seg(5));
    await writeLines(storage, seg(5), lines.slice(0, 1));
    expect(await log.verify()).toMatchObject({
      ok: false,
      seq: 7,
      problem: expect.stringMatching(/truncated/),
    });
  });

  it('detects a deleted last segment', async () => {
    const { storage, log } = await filled(6);
    await storage.delete(seg(5));
    expect(await log.verify()).toMatchObject({
      ok: false,
      seq: 6,
      problem: expect.stringMatching(/truncated/),
    });
  });

  it('detects a head.json that does not match the last entry', async () => {
    const { storage, log } = await filled(3);
    await storage.putContent(
      '/auth/audit/head.json',
      enc.encode(JSON.stringify({ seq: 3, hash: genesisHash })),
    );
    expect(await log.verify()).toMatchObject({ ok: false, seq: 3 });
  });

  it('detects an unreadable line', async () => {
    const { storage, log } = await filled(3);
    const text = dec.decode(await storage.getContent(seg(1)));
    await storage.putContent(seg(1), enc.encode(text.replace('"seq":2', '"seq":2,')));
    expect(await log.verify()).toEqual({ ok: false, seq: 2, problem: 'unreadable entry' });
  });

  it('refuses to append over a truncated log', async () => {
    const { storage } = await filled(6);
    await writeLines(storage, seg(5), (await readLines(storage, seg(5))).slice(0, 1));
    const again = createAuditLog({ storage, segmentSize: 4 });
    await expect(again.record(event(7))).rejects.toThrow(AuditIntegrityError);
    // The evidence survives the refused append.
    expect(await again.verify()).toMatchObject({ ok: false, problem: expect.stringMatching(/truncated/) });
  });
});
