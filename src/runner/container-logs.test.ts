import { appendFile, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  afterCursor,
  filterEntries,
  followLogFile,
  type LogEntry,
  logCursor,
  normalizeTime,
  parseK8sLine,
  parseK8sLog,
  readLogFile,
  rotateLog,
} from './container-logs.ts';

describe('normalizeTime', () => {
  it('turns any offset into UTC with 9 fraction digits', () => {
    expect(normalizeTime('2026-11-30T10:39:49.015141832+00:00')).toBe('2026-11-30T10:39:49.015141832Z');
    expect(normalizeTime('2026-11-30T12:39:49.5+02:00')).toBe('2026-11-30T10:39:49.500000000Z');
    expect(normalizeTime('2026-11-30T00:10:00-01:30')).toBe('2026-11-30T01:40:00.000000000Z');
    expect(normalizeTime('2026-11-30T10:39:49Z')).toBe('2026-11-30T10:39:49.000000000Z');
  });
  it('refuses what is not RFC3339', () => {
    for (const t of ['', 'yesterday', '2026-11-30', '2026-11-30T10:39:49', '2026-11-30T10:39:49.1234567890Z'])
      expect(normalizeTime(t)).toBeUndefined();
  });
});

describe('parseK8sLine', () => {
  it('reads full and partial records of both streams', () => {
    expect(parseK8sLine('2026-11-30T10:39:49.015141832+00:00 stdout F hello world')).toEqual({
      time: '2026-11-30T10:39:49.015141832Z',
      stream: 'stdout',
      partial: false,
      content: 'hello world',
    });
    expect(parseK8sLine('2026-11-30T10:39:49.1+00:00 stderr P  two  spaces ')).toMatchObject({
      stream: 'stderr',
      partial: true,
      content: ' two  spaces ',
    });
    expect(parseK8sLine('2026-11-30T10:39:49.1+00:00 stdout F ')).toMatchObject({ content: '' });
    expect(parseK8sLine('2026-11-30T10:39:49.1+00:00 stdout F')).toMatchObject({ content: '' });
  });
  it('refuses torn or foreign lines', () => {
    for (const l of [
      '',
      'hello',
      '2026-11-30T10:39:49.1+00:00',
      '2026-11-30T10:39:49.1+00:00 stdin F x',
      '2026-11-30T10:39:49.1+00:00 stdout X x',
      '2026-11-30T10:39:49.1+00:00 stdout Fx',
      'notatime stdout F x',
    ])
      expect(parseK8sLine(l)).toBeNull();
  });
});

describe('parseK8sLog', () => {
  it('joins partial records per stream, stamped with the first piece', () => {
    const text = [
      '2026-11-30T10:00:00.000000001+00:00 stdout P abc',
      '2026-11-30T10:00:00.000000002+00:00 stderr F err line',
      '2026-11-30T10:00:00.000000003+00:00 stdout P def',
      '2026-11-30T10:00:00.000000004+00:00 stdout F ghi',
      'garbage that is skipped',
      '2026-11-30T10:00:00.000000005+00:00 stdout F next',
      '',
    ].join('\n');
    expect(parseK8sLog(text)).toEqual([
      { time: '2026-11-30T10:00:00.000000002Z', stream: 'stderr', line: 'err line' },
      { time: '2026-11-30T10:00:00.000000001Z', stream: 'stdout', line: 'abcdefghi' },
      { time: '2026-11-30T10:00:00.000000005Z', stream: 'stdout', line: 'next' },
    ]);
  });
  it('keeps a last line without its newline, and pieces whose F never came', () => {
    const text = '2026-11-30T10:00:00Z stdout F a\n2026-11-30T10:00:01Z stdout P b';
    expect(parseK8sLog(text).map((e) => e.line)).toEqual(['a', 'b']);
  });
});

describe('filterEntries', () => {
  const e = (s: number, line: string): LogEntry => ({
    time: `2026-11-30T10:00:0${s}.000000000Z`,
    stream: 'stdout',
    line,
  });
  const all = [e(1, 'a'), e(2, 'b'), e(3, 'c'), e(4, 'd')];
  it('filters by since (inclusive, any offset) and tail', () => {
    expect(filterEntries(all, { since: '2026-11-30T10:00:03Z' }).map((x) => x.line)).toEqual(['c', 'd']);
    expect(filterEntries(all, { since: '2026-11-30T11:00:02+01:00' }).map((x) => x.line)).toEqual([
      'b',
      'c',
      'd',
    ]);
    expect(filterEntries(all, { tail: 2 }).map((x) => x.line)).toEqual(['c', 'd']);
    expect(filterEntries(all, { tail: 0 })).toEqual([]);
    expect(filterEntries(all, { tail: 10, since: '2026-11-30T10:00:04Z' }).map((x) => x.line)).toEqual(['d']);
  });
  it('refuses bad options', () => {
    expect(() => filterEntries(all, { since: 'soon' })).toThrow(RangeError);
    expect(() => filterEntries(all, { tail: -1 })).toThrow(RangeError);
  });
});

describe('files', () => {
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-logs-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const rec = (n: number) => `2026-11-30T10:00:00.${String(n).padStart(9, '0')}+00:00 stdout F line-${n}\n`;

  it('reads the rotated file before the current one; nothing when neither exists', async () => {
    const log = join(dir, 'container.log');
    expect(await readLogFile(log)).toEqual([]);
    await writeFile(`${log}.1`, rec(1) + rec(2));
    await writeFile(log, rec(3));
    expect((await readLogFile(log)).map((e) => e.line)).toEqual(['line-1', 'line-2', 'line-3']);
    expect((await readLogFile(log, { tail: 1 })).map((e) => e.line)).toEqual(['line-3']);
  });

  it('rotates only at the threshold, keeping one old file', async () => {
    const log = join(dir, 'container.log');
    let reopened = 0;
    const reopen = async () => {
      reopened++;
      await writeFile(log, '');
    };
    expect(await rotateLog(log, 10, reopen)).toBe(false); // no file yet
    await writeFile(log, rec(1));
    expect(await rotateLog(log, 1000, reopen)).toBe(false);
    expect(await rotateLog(log, 10, reopen)).toBe(true);
    expect(await readFile(`${log}.1`, 'utf8')).toBe(rec(1));
    await appendFile(log, rec(2));
    expect(await rotateLog(log, 10, reopen)).toBe(true);
    expect(await readFile(`${log}.1`, 'utf8')).toBe(rec(2));
    expect(reopened).toBe(2);
  });

  it('follows appends and rotations, then ends', async () => {
    const log = join(dir, 'container.log');
    await writeFile(log, rec(0)); // before following: not reported
    let ended = false;
    let endCalls = 0;
    const seen: string[] = [];
    const stop = followLogFile(log, (e) => seen.push(e.line), {
      ended: async () => ended,
      onEnd: () => endCalls++,
      pollMs: 20,
    });
    const waitFor = async (n: number) => {
      for (let i = 0; i < 500 && seen.length < n; i++) await new Promise((r) => setTimeout(r, 10));
    };
    await new Promise((r) => setTimeout(r, 100));
    await appendFile(log, rec(1));
    await waitFor(1);
    // a record written in two pieces is reported once, whole
    await appendFile(log, rec(2).slice(0, 20));
    await new Promise((r) => setTimeout(r, 60));
    await appendFile(log, rec(2).slice(20));
    await waitFor(2);
    // rotation: the writer keeps writing to the old file until it reopens
    await rename(log, `${log}.1`);
    await appendFile(`${log}.1`, rec(3));
    await new Promise((r) => setTimeout(r, 60));
    await writeFile(log, rec(4));
    await waitFor(4);
    await appendFile(log, rec(5));
    ended = true; // after the last write, as conmon writes the exit file after draining
    await waitFor(5);
    for (let i = 0; i < 100 && endCalls === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(seen).toEqual(['line-1', 'line-2', 'line-3', 'line-4', 'line-5']);
    expect(endCalls).toBe(1);
    stop();
  });

  it('stops reporting once unsubscribed', async () => {
    const log = join(dir, 'container.log');
    await writeFile(log, '');
    const seen: string[] = [];
    const stop = followLogFile(log, (e) => seen.push(e.line), { ended: async () => false, pollMs: 20 });
    await new Promise((r) => setTimeout(r, 60));
    await appendFile(log, rec(1));
    for (let i = 0; i < 300 && seen.length < 1; i++) await new Promise((r) => setTimeout(r, 10));
    stop();
    await appendFile(log, rec(2));
    await new Promise((r) => setTimeout(r, 150));
    expect(seen).toEqual(['line-1']);
  });
});

describe('logCursor / afterCursor', () => {
  const e = (time: string, line: string): LogEntry => ({ time, stream: 'stdout', line });
  const history = [
    e('2026-01-01T00:00:01.000000000Z', 'a'),
    e('2026-01-01T00:00:02.000000000Z', 'b'),
    e('2026-01-01T00:00:02.000000000Z', 'c'),
  ];

  it('skips exactly what the read already sent, timestamp ties included', () => {
    const cursor = logCursor(history);
    expect(cursor).toEqual({ time: '2026-01-01T00:00:02.000000000Z', sameTime: 2 });
    const got: string[] = [];
    const feed = afterCursor(cursor, (x) => got.push(x.line));
    // A follow from the top of the file sees the history again, then what came after it.
    for (const x of [
      ...history,
      e('2026-01-01T00:00:02.000000000Z', 'd'),
      e('2026-01-01T00:00:03.000000000Z', 'e'),
    ])
      feed(x);
    expect(got).toEqual(['d', 'e']);
  });

  it('passes everything after an empty log', () => {
    const got: string[] = [];
    const feed = afterCursor(logCursor([]), (x) => got.push(x.line));
    for (const x of history) feed(x);
    expect(got).toEqual(['a', 'b', 'c']);
  });
});
