// A container's stdout/stderr as conmon writes it (CRI's "k8s-file" format), read back, tailed and
// rotated. One record per line:
//
//   2026-11-30T10:39:49.015141832+00:00 stdout F hello
//   <RFC3339Nano, local offset>         <stream> <F = full line | P = partial> <bytes up to \n>
//
// conmon cuts lines longer than its 8 KiB read buffer (and output without a trailing newline) into
// P records followed by an F; the parser joins them back into one entry stamped with the time of
// the first piece. Times are normalised to UTC ("...Z", always 9 fraction digits), so entries
// compare as strings.
//
// Rotation is berth's, not conmon's: conmon's --log-size-max replaces the file with an empty one
// (the old lines are gone, no rotated copy is kept) and its byte counter ignores reopen requests,
// so it cannot be combined with a rotation of our own. Instead the executor calls rotateLog():
// rename container.log -> container.log.1 (replacing the older one), then ask conmon to reopen
// its file (its "ctl" fifo, message type 2). Lines written between the two land at the end of .1,
// so nothing is lost. While berth is down nothing rotates and the file may outgrow the cap; the
// next executor resumes rotating when it adopts the container.
import type { Stats } from 'node:fs';
import { watch } from 'node:fs';
import { type FileHandle, open, readFile, rename, stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';

export interface LogEntry {
  /** RFC3339Nano in UTC. */
  time: string;
  stream: 'stdout' | 'stderr';
  line: string;
}

export interface K8sRecord {
  time: string;
  stream: 'stdout' | 'stderr';
  partial: boolean;
  content: string;
}

export const LOG_FILE = 'container.log';
export const ROTATED_SUFFIX = '.1';
export const DEFAULT_LOG_MAX_BYTES = 8 * 1024 * 1024;

const TIME_RE = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/i;

/** An RFC3339 time (any offset, up to nanoseconds) as UTC with 9 fraction digits; undefined when
 * it is not one. */
export function normalizeTime(time: string): string | undefined {
  const m = TIME_RE.exec(time.trim());
  if (!m) return undefined;
  const ms = Date.parse(`${m[1]}${m[3]!.toUpperCase()}`);
  if (Number.isNaN(ms)) return undefined;
  const whole = new Date(ms).toISOString().slice(0, 19);
  return `${whole}.${(m[2] ?? '').padEnd(9, '0')}Z`;
}

/** One k8s-file line (without its newline); null for anything else (a torn or foreign line). */
export function parseK8sLine(line: string): K8sRecord | null {
  const sp1 = line.indexOf(' ');
  if (sp1 < 0) return null;
  const time = normalizeTime(line.slice(0, sp1));
  if (!time) return null;
  const rest = line.slice(sp1 + 1);
  let stream: 'stdout' | 'stderr';
  if (rest.startsWith('stdout ')) stream = 'stdout';
  else if (rest.startsWith('stderr ')) stream = 'stderr';
  else return null;
  const tag = rest[7];
  if ((tag !== 'F' && tag !== 'P') || (rest.length > 8 && rest[8] !== ' ')) return null;
  return { time, stream, partial: tag === 'P', content: rest.slice(9) };
}

/** Joins P records into entries, per stream (stdout and stderr pieces may interleave). */
export function createEntryAssembler(emit: (e: LogEntry) => void): {
  push(r: K8sRecord): void;
  /** Emits pieces still waiting for their F (the log ended mid-line). */
  flush(): void;
} {
  const pending = new Map<'stdout' | 'stderr', { time: string; parts: string[] }>();
  return {
    push(r) {
      const p = pending.get(r.stream);
      if (r.partial) {
        if (p) p.parts.push(r.content);
        else pending.set(r.stream, { time: r.time, parts: [r.content] });
        return;
      }
      if (p) {
        pending.delete(r.stream);
        emit({ time: p.time, stream: r.stream, line: p.parts.join('') + r.content });
      } else emit({ time: r.time, stream: r.stream, line: r.content });
    },
    flush() {
      for (const [stream, p] of pending) emit({ time: p.time, stream, line: p.parts.join('') });
      pending.clear();
    },
  };
}

/** Splits text into k8s records and entries; returns the unterminated rest (a line still being
 * written) for the caller to prepend to the next chunk. */
function feed(text: string, assembler: ReturnType<typeof createEntryAssembler>): string {
  let start = 0;
  for (;;) {
    const nl = text.indexOf('\n', start);
    if (nl < 0) return text.slice(start);
    const rec = parseK8sLine(text.slice(start, nl));
    if (rec) assembler.push(rec);
    start = nl + 1;
  }
}

/** Entries of a k8s-file text (a whole file's content). */
export function parseK8sLog(text: string): LogEntry[] {
  const out: LogEntry[] = [];
  const asm = createEntryAssembler((e) => out.push(e));
  const rest = feed(text, asm);
  if (rest) {
    const rec = parseK8sLine(rest);
    if (rec) asm.push(rec);
  }
  asm.flush();
  return out;
}

export interface ReadLogsOptions {
  /** Only entries at or after this RFC3339 time. */
  since?: string;
  /** Only the last n entries (after `since`). */
  tail?: number;
}

export function filterEntries(entries: LogEntry[], opts: ReadLogsOptions = {}): LogEntry[] {
  let out = entries;
  if (opts.since !== undefined) {
    const since = normalizeTime(opts.since);
    if (!since) throw new RangeError(`since '${opts.since}' is not an RFC3339 time`);
    out = out.filter((e) => e.time >= since);
  }
  if (opts.tail !== undefined) {
    if (!Number.isInteger(opts.tail) || opts.tail < 0)
      throw new RangeError('tail must be a non-negative integer');
    out = opts.tail === 0 ? [] : out.slice(-opts.tail);
  }
  return out;
}

async function readIfExists(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
}

/** The rotated file then the current one, as entries. */
export async function readLogFile(path: string, opts: ReadLogsOptions = {}): Promise<LogEntry[]> {
  const older = await readIfExists(path + ROTATED_SUFFIX);
  const current = await readIfExists(path);
  return filterEntries([...parseK8sLog(older), ...parseK8sLog(current)], opts);
}

/**
 * Where a log read ended: the time of the log's last entry and how many entries at its end carry
 * that time (conmon stamps all the lines of one read with one time). A follow starts from the
 * top of the log file and drops entries up to here, so none is lost between the read and the
 * follow, and none is sent twice. `time` is undefined when the log was empty.
 */
export interface LogCursor {
  readonly time: string | undefined;
  readonly sameTime: number;
}

export function logCursor(all: readonly LogEntry[]): LogCursor {
  const time = all.at(-1)?.time;
  let sameTime = 0;
  for (let i = all.length - 1; i >= 0 && all[i]!.time === time; i--) sameTime++;
  return { time, sameTime };
}

/** Passes on the entries after `cursor` (entries arrive in log order). */
export function afterCursor(cursor: LogCursor, onEntry: (e: LogEntry) => void): (e: LogEntry) => void {
  let past = cursor.time === undefined;
  let sameLeft = cursor.sameTime;
  return (e) => {
    if (!past) {
      if (e.time < cursor.time!) return;
      if (e.time === cursor.time && sameLeft > 0) {
        sameLeft--;
        return;
      }
      past = true;
    }
    onEntry(e);
  };
}

async function statOrNull(path: string): Promise<Stats | null> {
  try {
    return await stat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** Rotates the log when it has reached maxBytes: keeps one old file. `reopen` asks the writer to
 * start a new file. Answers whether it rotated. */
export async function rotateLog(
  path: string,
  maxBytes: number,
  reopen: () => Promise<void>,
): Promise<boolean> {
  const st = await statOrNull(path);
  if (!st || st.size < maxBytes) return false;
  await rename(path, path + ROTATED_SUFFIX);
  await reopen();
  return true;
}

export interface FollowOptions {
  /** True once nothing more will be written (the container exited and its monitor is done). */
  ended: () => Promise<boolean>;
  onEnd?: () => void;
  onError?: (err: unknown) => void;
  /** Poll period in ms as a fallback to file-system events (default 500). */
  pollMs?: number;
  /**
   * Start at the top of the current file instead of its end. A caller that read the log first
   * uses it (and drops what it already has), so a line written between its read and this
   * follow's first open is not lost.
   */
  fromStart?: boolean;
}

/** Calls onEntry for every entry written from now on (or, with fromStart, in the current file and
 * after), following rotation, until the returned function is called or the log has ended. */
export function followLogFile(path: string, onEntry: (e: LogEntry) => void, opts: FollowOptions): () => void {
  let stopped = false;
  let fh: FileHandle | null = null;
  let ino = -1;
  let pos = 0;
  let carry = '';
  let busy: Promise<void> | null = null;
  let again = false;
  const decoder = new TextDecoder();
  const asm = createEntryAssembler((e) => {
    if (!stopped) onEntry(e);
  });

  const drain = async (): Promise<void> => {
    const h = fh;
    if (!h) return;
    const buf = Buffer.allocUnsafe(64 * 1024);
    for (;;) {
      const { bytesRead } = await h.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) return;
      pos += bytesRead;
      carry = feed(carry + decoder.decode(buf.subarray(0, bytesRead), { stream: true }), asm);
    }
  };
  const switchTo = async (st: Stats, fromStart: boolean): Promise<void> => {
    await fh?.close();
    fh = await open(path, 'r');
    const opened = await fh.stat();
    ino = opened.ino;
    pos = fromStart ? 0 : opened.size;
    carry = '';
    if (opened.ino !== st.ino) pos = 0; // replaced between stat and open: read the new one whole
  };

  const step = async (): Promise<void> => {
    await drain();
    const st = await statOrNull(path);
    if (st && st.ino !== ino) {
      // Rotated: the old file is final once a new one exists (conmon closed it before creating
      // the new one). A second rotation we slept through left a file at .1 we never read.
      const rotated = await statOrNull(path + ROTATED_SUFFIX);
      if (fh && rotated && rotated.ino !== ino) {
        const text = await readIfExists(path + ROTATED_SUFFIX);
        feed(text, asm);
      }
      // Anything but the first open (which starts at the end) reads the new file from its start.
      await switchTo(st, true);
      await drain();
    }
    if (await opts.ended()) {
      await drain();
      if (carry) {
        const rec = parseK8sLine(carry);
        if (rec) asm.push(rec);
        carry = '';
      }
      asm.flush();
      finish();
      opts.onEnd?.();
    }
  };

  const tick = () => {
    if (stopped) return;
    if (busy) {
      again = true;
      return;
    }
    busy = step()
      .catch((err) => opts.onError?.(err))
      .finally(() => {
        busy = null;
        if (again && !stopped) {
          again = false;
          tick();
        }
      });
  };

  let watcher: ReturnType<typeof watch> | null = null;
  try {
    const name = basename(path);
    watcher = watch(dirname(path), { persistent: false }, (_ev, file) => {
      if (file === null || file === name || file === name + ROTATED_SUFFIX) tick();
    });
    watcher.on('error', () => {});
  } catch {
    watcher = null; // the directory may not exist yet; polling covers it
  }
  const timer = setInterval(tick, opts.pollMs ?? 500);
  timer.unref();

  function finish(): void {
    if (stopped) return;
    stopped = true;
    clearInterval(timer);
    watcher?.close();
    const h = fh;
    fh = null;
    void (busy ?? Promise.resolve()).then(() => h?.close()).catch(() => {});
  }

  // Start at the current end (following shows what is written from now on), or at the top.
  busy = (async () => {
    const st = await statOrNull(path);
    if (st) await switchTo(st, opts.fromStart === true);
  })()
    .catch((err) => opts.onError?.(err))
    .finally(() => {
      busy = null;
      tick();
    });

  return finish;
}
