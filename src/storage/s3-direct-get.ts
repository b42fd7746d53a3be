// The request handler behind the S3 driver's serving reads (copyTo). A profile of pulls from Ceph
// RGW put Node's HTTP client at about 3 ms of CPU per MiB received (a fresh buffer per socket
// read, a stream push per chunk, and the garbage collection behind both), against about 0.4 ms
// for a socket that reads into reused buffers. On two cores shared with the S3 server and the
// client, that difference was most of berth's gap to Distribution.
//
// It is the requestHandler of a second S3Client that sends nothing but GetObject, where the SDK
// does everything but move bytes: it resolves the endpoint, signs, retries and parses errors.
// The driver also hands it GETs it signed itself (s3-sign.ts), falling back to that client.
// The response body it returns is a real Readable (the SDK reads error bodies through it) that
// also offers pump(sink): the sink gets views of the connection's read buffers, which are reused
// as soon as the sink resolves, so a pull allocates nothing per read.
//
// HTTP/1.1 only, requests without a body only: status line and headers, then a body framed by
// Content-Length, chunked transfer coding, or the end of the connection. Connections are kept
// alive per origin; a request that finds its pooled connection closed by the server before any
// byte of the response arrived is sent again once on a new connection (GET is idempotent).
import { connect as netConnect, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { type ConnectionOptions, connect as tlsConnect } from 'node:tls';
import { bufferBytesFor, readBytesFor } from './chunk-units.ts';
import type { ChunkSink } from './driver.ts';

/** The part of the SDK's HttpRequest a GET needs. */
export interface DirectRequest {
  readonly method: string;
  readonly protocol: string;
  readonly hostname: string;
  readonly port?: number | undefined;
  readonly path: string;
  readonly query?: Record<string, string | string[] | null> | undefined;
  readonly headers: Record<string, string>;
  readonly body?: unknown;
}

export interface DirectResponse {
  readonly statusCode: number;
  readonly reason: string;
  readonly headers: Record<string, string>;
  readonly body: DirectBody;
}

export interface DirectGetOptions {
  /** Bytes per socket read buffer. */
  readonly readBufferBytes?: number;
  /** A connection with no bytes for this long while a response is pending fails the request. */
  readonly timeoutMs?: number;
  /** Idle kept-alive connections are closed after this long (below servers' own limits). */
  readonly idleMs?: number;
  /** Idle connections kept per origin. */
  readonly maxIdlePerOrigin?: number;
  /** Extra TLS options for https endpoints (tests pass a private CA). */
  readonly tls?: ConnectionOptions;
}

const maxHeadBytes = 64 * 1024;
/** Read buffers a slow consumer may hold before the socket is paused. */
const maxQueued = 2;

export class DirectGetError extends Error {
  override name = 'DirectGetError';
  /** Node's code for the failures the SDK retries (a lost connection, a timeout). */
  readonly code: string | undefined;
  constructor(message: string, code?: 'ECONNRESET' | 'ETIMEDOUT') {
    super(message);
    this.code = code;
  }
}

/** S3's query escaping (RFC 3986 unreserved kept), as the SDK's signer canonicalizes it. */
const uriEscape = (s: string) =>
  encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

function queryString(query: DirectRequest['query']): string {
  if (!query) return '';
  const parts: string[] = [];
  for (const k of Object.keys(query).sort()) {
    const v = query[k];
    if (Array.isArray(v)) for (const x of v) parts.push(`${uriEscape(k)}=${uriEscape(x)}`);
    else parts.push(v === null || v === undefined ? uriEscape(k) : `${uriEscape(k)}=${uriEscape(v)}`);
  }
  return parts.join('&');
}

type Framing =
  | { kind: 'length'; left: number }
  | { kind: 'chunked'; state: ChunkState }
  | { kind: 'close' }
  | { kind: 'none' };

interface ChunkState {
  /** 'size': reading the size line; 'data': `left` bytes of chunk data; 'crlf': after data; 'trailer'. */
  phase: 'size' | 'data' | 'crlf' | 'trailer' | 'done';
  left: number;
  line: string;
}

interface Delivery {
  readonly pieces: Buffer[];
  readonly buffer: Buffer;
}

type ResolvedOptions = Required<Omit<DirectGetOptions, 'tls'>> & { tls?: ConnectionOptions };

/** One kept-alive connection; the exchange in progress owns it until its body ends. */
class Connection {
  readonly socket: Socket;
  private readonly free: Buffer[] = [];
  /** Size of new read buffers: the configured size, or one unit of the pumping sink if larger. */
  private bufferBytes: number;
  private head: Buffer[] = [];
  private headBytes = 0;
  /** The last 3 bytes of the head read so far, to find a terminator split across reads. */
  private headTail = Buffer.alloc(0);
  /** Counts exchanges, so an abort meant for an earlier one leaves a later one alone. */
  exchanges = 0;
  /** Set while a response head is awaited. */
  private onHead:
    | ((h: { status: number; reason: string; headers: Record<string, string> }) => void)
    | undefined;
  private onFail: ((e: Error) => void) | undefined;
  body: DirectBody | undefined;
  /** Bytes of a response seen on this connection (a reused one failing at 0 is retried). */
  received = 0;
  closed = false;
  reusable = true;
  /** See waitingOnUs(). */
  private pausedForUs = false;
  private resumedAt = 0;

  readonly origin: string;
  private readonly opts: ResolvedOptions;

  constructor(origin: string, req: DirectRequest, opts: ResolvedOptions) {
    this.origin = origin;
    this.opts = opts;
    this.bufferBytes = opts.readBufferBytes;
    const port = req.port ?? (req.protocol === 'https:' ? 443 : 80);
    const onread = {
      buffer: () => this.readBuffer(),
      callback: (n: number, buf: Buffer) => this.read(buf.subarray(0, n), buf),
    };
    this.socket =
      req.protocol === 'https:'
        ? tlsConnect({
            host: req.hostname,
            port,
            ...(!/^[\d.]+$|:/.test(req.hostname) && { servername: req.hostname }),
            ...opts.tls,
            onread,
          } as ConnectionOptions)
        : netConnect({ host: req.hostname, port, onread, noDelay: true });
    this.socket.on('error', (e) => this.fail(e));
    const lost = () => new DirectGetError('S3 closed the connection', 'ECONNRESET');
    this.socket.on('end', () => this.fail(lost(), true));
    this.socket.on('close', (hadError) => this.fail(lost(), !hadError));
    this.socket.on('timeout', () => {
      // Time paused for a lagging consumer is not S3 being silent: wait again, a whole timeout
      // from when reading resumed at the earliest (so a silent S3 fails within two timeouts).
      if (this.body && (this.pausedForUs || performance.now() - this.resumedAt < this.opts.timeoutMs)) {
        this.socket.setTimeout(this.opts.timeoutMs);
        return;
      }
      this.fail(new DirectGetError(`no bytes from S3 for ${this.opts.timeoutMs / 1000} s`, 'ETIMEDOUT'));
    });
  }

  /**
   * Gives a read buffer back for the next read once nothing refers to it. Not capped: buffers are
   * only allocated when none is free, so the list never outgrows the most in use at once (a TLS
   * socket hands over a few records it already decrypted after being paused).
   */
  release(buf: Buffer) {
    // A read may have been offered only the start of a buffer (readBuffer); keep all of it.
    const whole = buf.byteLength === buf.buffer.byteLength ? buf : Buffer.from(buf.buffer);
    if (whole.byteLength >= this.bufferBytes) this.free.push(whole);
  }

  /** The buffer the next socket read goes into: cut short so it ends on the body's next unit boundary. */
  private readBuffer(): Buffer {
    let buf = this.free.pop();
    while (buf && buf.byteLength < this.bufferBytes) buf = this.free.pop();
    buf ??= Buffer.allocUnsafeSlow(this.bufferBytes);
    const n = this.body?.nextReadBytes(buf.byteLength) ?? buf.byteLength;
    return n < buf.byteLength ? buf.subarray(0, n) : buf;
  }

  /** The pumping sink consumes units of this many bytes: read buffers grow to hold one. */
  fitUnit(unit: number | undefined) {
    this.bufferBytes = Math.max(this.bufferBytes, bufferBytesFor(this.opts.readBufferBytes, unit));
  }

  send(
    req: DirectRequest,
    head: (h: { status: number; reason: string; headers: Record<string, string> }) => void,
    fail: (e: Error) => void,
  ) {
    this.onHead = head;
    this.onFail = fail;
    this.received = 0;
    this.head = [];
    this.headBytes = 0;
    this.headTail = Buffer.alloc(0);
    this.exchanges++;
    const q = queryString(req.query);
    let text = `${req.method} ${req.path}${q ? `?${q}` : ''} HTTP/1.1\r\n`;
    for (const [k, v] of Object.entries(req.headers)) text += `${k}: ${v}\r\n`;
    this.socket.setTimeout(this.opts.timeoutMs);
    this.socket.write(`${text}\r\n`);
  }

  /** Every read lands here; false pauses the socket. */
  private read(view: Buffer, buf: Buffer): boolean {
    this.received += view.length;
    if (this.body) return this.body.feed(view, buf);
    if (!this.onHead) {
      // Bytes nobody asked for: the connection is out of step.
      this.release(buf);
      this.destroy(new DirectGetError('S3 sent bytes outside a response'));
      return false;
    }
    const end = this.findHeadEnd(view);
    if (this.headBytes > maxHeadBytes) {
      this.release(buf);
      this.destroy(new DirectGetError('S3 response head is too large'));
      return false;
    }
    if (end < 0) {
      this.release(buf);
      return true;
    }
    const headText = Buffer.concat(this.head).toString('latin1');
    const rest = view.subarray(end);
    let parsed: ReturnType<typeof parseHead>;
    try {
      parsed = parseHead(headText);
    } catch (e) {
      this.release(buf);
      this.destroy(e as Error);
      return false;
    }
    const done = this.onHead;
    this.onHead = undefined;
    done(parsed);
    // onHead created the body (and claimed this connection); the head's leftover bytes are its first.
    const body = this.body as DirectBody | undefined;
    if (!body) {
      // A response without a body: anything after its head is out of step.
      this.release(buf);
      if (rest.length > 0) this.destroy(new DirectGetError('S3 sent bytes outside a response'));
      return rest.length === 0;
    }
    if (rest.length === 0) {
      this.release(buf);
      return body.wantsMore();
    }
    return body.feed(rest, buf);
  }

  /** Appends view to the head being read; the offset in view where the body starts, or -1. */
  private findHeadEnd(view: Buffer): number {
    // Search across the boundary with the last 3 bytes of the head before (reads may be 1 byte).
    const carry = this.headTail;
    const window = view.subarray(0, Math.min(view.length, maxHeadBytes + 1));
    const probe = carry.length > 0 ? Buffer.concat([carry, window]) : window;
    const at = probe.indexOf('\r\n\r\n', 0, 'latin1');
    const taken = at < 0 ? window : view.subarray(0, at + 4 - carry.length);
    this.head.push(Buffer.from(taken));
    this.headBytes += taken.length;
    const joined = Buffer.concat([carry, taken]);
    this.headTail = joined.subarray(Math.max(0, joined.length - 3));
    return at < 0 ? -1 : taken.length;
  }

  /** The connection is gone; `clean` when the server closed it in order (a body framed by the close ends there). */
  fail(e: Error, clean = false) {
    if (this.closed && !this.onFail && !this.body) return;
    this.closed = true;
    this.reusable = false;
    const f = this.onFail;
    this.onFail = undefined;
    this.onHead = undefined;
    if (f) f(e);
    this.body?.fail(e, clean);
    this.socket.destroy();
  }

  destroy(e?: Error) {
    this.fail(e ?? new DirectGetError('connection closed'));
  }

  /** Between exchanges: no head awaited, no body being read. */
  get idle(): boolean {
    return !this.onHead && !this.body;
  }

  /**
   * The no-bytes timeout is for a silent S3 server, not for a client pulling slowly: while the
   * socket is paused because the consumer lags, it does not count. Flags only, checked when the
   * timer fires: re-arming the socket's timer on every pause and resume was 2% of a pull's CPU.
   */
  waitingOnUs(paused: boolean) {
    this.pausedForUs = paused;
    if (!paused) this.resumedAt = performance.now();
  }

  /** The response's body ended: the connection is free for the next request. */
  finished() {
    this.body = undefined;
    this.pausedForUs = false;
    this.onFail = undefined;
    this.socket.setTimeout(this.opts.idleMs);
  }
}

function parseHead(text: string): { status: number; reason: string; headers: Record<string, string> } {
  const lines = text.split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0] ?? '');
  if (!m)
    throw new DirectGetError(
      `S3 answered with something other than HTTP/1.1: ${JSON.stringify((lines[0] ?? '').slice(0, 60))}`,
    );
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    if (line === '') continue;
    const colon = line.indexOf(':');
    if (colon <= 0)
      throw new DirectGetError(`S3 sent a malformed header line: ${JSON.stringify(line.slice(0, 60))}`);
    const k = line.slice(0, colon).trim().toLowerCase();
    const v = line.slice(colon + 1).trim();
    headers[k] = k in headers ? `${headers[k]}, ${v}` : v;
  }
  const version = lines[0]!.slice(5, 8);
  if (version === '1.0' && !/keep-alive/i.test(headers.connection ?? '')) headers[':close'] = '1';
  return { status: Number(m[1]), reason: m[2] ?? '', headers };
}

function framingOf(method: string, status: number, headers: Record<string, string>): Framing {
  if (method === 'HEAD' || status === 204 || status === 304 || (status >= 100 && status < 200))
    return { kind: 'none' };
  if (/chunked/i.test(headers['transfer-encoding'] ?? ''))
    return { kind: 'chunked', state: { phase: 'size', left: 0, line: '' } };
  const cl = headers['content-length'];
  if (cl !== undefined) {
    if (!/^\d+$/.test(cl)) throw new DirectGetError(`S3 sent an invalid Content-Length: ${cl}`);
    return { kind: 'length', left: Number(cl) };
  }
  return { kind: 'close' };
}

/**
 * A response body: a Readable for any consumer (copies each read), or pump(sink) for the serving
 * path (views of the read buffers, no copies). Whichever starts first owns it.
 */
export class DirectBody extends Readable {
  private mode: 'unclaimed' | 'pump' | 'stream' = 'unclaimed';
  private readonly queue: Delivery[] = [];
  private ended = false;
  private error: Error | undefined;
  private paused = false;
  private wake: (() => void) | undefined;
  /** The pumping sink's unit (ChunkSink.unitBytes), and body bytes read so far, to end reads on its boundaries. */
  private unit: number | undefined;
  private bodyBytes = 0;

  private readonly conn: Connection;
  private readonly framing: Framing;
  private readonly done: (conn: Connection, reusable: boolean) => void;

  constructor(conn: Connection, framing: Framing, done: (conn: Connection, reusable: boolean) => void) {
    super({ highWaterMark: 256 * 1024 });
    this.conn = conn;
    this.framing = framing;
    this.done = done;
    conn.body = this;
    if (framing.kind === 'none' || (framing.kind === 'length' && framing.left === 0)) this.finish();
  }

  /** Takes bytes read for this body; false pauses the socket until a consumer catches up. */
  feed(view: Buffer, buf: Buffer): boolean {
    if (this.ended || this.error) {
      this.conn.release(buf);
      if (view.length > 0) {
        this.conn.reusable = false;
        this.conn.destroy(new DirectGetError('S3 sent more bytes than the response framing says'));
      }
      return false;
    }
    let pieces: Buffer[];
    try {
      pieces = this.deframe(view);
    } catch (e) {
      this.conn.release(buf);
      this.conn.destroy(e as Error);
      return false;
    }
    if (pieces.length > 0) this.queue.push({ pieces, buffer: buf });
    else this.conn.release(buf);
    this.drain();
    return this.wantsMore();
  }

  /** Whether the socket may read on; after the body's end it belongs to the connection again. */
  wantsMore(): boolean {
    if (this.ended || this.error) return true;
    const more =
      this.queue.length < maxQueued &&
      !(this.mode === 'stream' && this.readableLength >= this.readableHighWaterMark);
    if (!more && !this.paused) this.conn.waitingOnUs(true);
    this.paused = !more;
    return more;
  }

  private resumeSocket() {
    if (this.paused && !this.ended && !this.error) {
      this.paused = false;
      this.conn.waitingOnUs(false);
      this.conn.socket.resume();
    }
  }

  /**
   * How much of a read buffer of `capacity` the next read may fill. Chunked bodies interleave
   * framing with the bytes, so only plain bodies end reads on the sink's unit boundaries.
   */
  nextReadBytes(capacity: number): number {
    const plain = this.framing.kind === 'length' || this.framing.kind === 'close';
    return plain && !this.ended ? readBytesFor(this.bodyBytes, capacity, this.unit) : capacity;
  }

  /** The body bytes in view, and the end of the body when the framing says so. */
  private deframe(view: Buffer): Buffer[] {
    const f = this.framing;
    this.bodyBytes += view.length;
    if (f.kind === 'length') {
      if (view.length > f.left) throw new DirectGetError('S3 sent more bytes than its Content-Length');
      f.left -= view.length;
      if (f.left === 0) this.finish();
      return view.length > 0 ? [view] : [];
    }
    if (f.kind === 'close') return view.length > 0 ? [view] : [];
    if (f.kind === 'none') {
      if (view.length > 0) throw new DirectGetError('S3 sent a body where none belongs');
      return [];
    }
    const s = f.state;
    const out: Buffer[] = [];
    let i = 0;
    while (i < view.length && s.phase !== 'done') {
      if (s.phase === 'data') {
        const n = Math.min(s.left, view.length - i);
        out.push(view.subarray(i, i + n));
        i += n;
        s.left -= n;
        if (s.left === 0) {
          s.phase = 'crlf';
          s.line = '';
        }
        continue;
      }
      const nl = view.indexOf(10, i);
      const upto = nl < 0 ? view.length : nl + 1;
      s.line += view.toString('latin1', i, upto);
      i = upto;
      if (s.line.length > 4096) throw new DirectGetError('S3 sent an overlong chunk line');
      if (nl < 0) continue;
      const line = s.line.replace(/\r?\n$/, '');
      s.line = '';
      if (s.phase === 'crlf') {
        if (line !== '') throw new DirectGetError('S3 sent a malformed chunk');
        s.phase = 'size';
      } else if (s.phase === 'size') {
        const size = Number.parseInt(line.split(';')[0]!.trim(), 16);
        if (!Number.isFinite(size) || size < 0) throw new DirectGetError('S3 sent a malformed chunk size');
        if (size === 0) s.phase = 'trailer';
        else {
          s.phase = 'data';
          s.left = size;
        }
      } else if (line === '') {
        s.phase = 'done';
      }
    }
    // Only once the whole read checks out is the body complete (and its connection given back).
    if (i < view.length) throw new DirectGetError('S3 sent more bytes than its chunked body');
    if (s.phase === 'done') this.finish();
    return out;
  }

  private finish() {
    if (this.ended) return;
    this.ended = true;
    // The caller drains: feed() once this read's pieces are queued, so none is pushed after EOF.
    if (this.framing.kind !== 'close') this.done(this.conn, this.conn.reusable);
  }

  /** The connection failed; a body that ends with the connection ends here. */
  fail(e: Error, clean: boolean) {
    if (this.ended) return;
    if (this.framing.kind === 'close' && !this.error && clean) {
      this.ended = true;
      this.done(this.conn, false);
    } else {
      this.error = e;
    }
    this.drain();
  }

  private drain() {
    if (this.mode === 'pump') {
      this.wake?.();
      return;
    }
    if (this.mode !== 'stream') return;
    while (this.queue.length > 0) {
      const d = this.queue.shift()!;
      for (const p of d.pieces) this.push(Buffer.from(p));
      this.conn.release(d.buffer);
    }
    if (this.error) this.destroy(this.error);
    else if (this.ended) this.push(null);
    else if (this.readableLength < this.readableHighWaterMark) this.resumeSocket();
  }

  override _read() {
    if (this.mode === 'unclaimed') this.mode = 'stream';
    if (this.mode !== 'stream') return;
    this.drain();
    // Node asks for more before it takes what it read from its buffer, so readableLength may
    // still look full here; a call to _read is itself the request for more.
    this.resumeSocket();
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void) {
    if (!this.ended) this.conn.destroy(err ?? new DirectGetError('response body abandoned'));
    cb(err);
  }

  /**
   * Feeds the body to sink as views of the read buffers, in order, one at a time; each buffer is
   * reused once the sink has resolved for it. Resolves when the body has ended.
   */
  async pump(sink: ChunkSink): Promise<void> {
    if (this.mode !== 'unclaimed') throw new DirectGetError('response body is already being read');
    this.mode = 'pump';
    this.unit = sink.unitBytes;
    this.conn.fitUnit(sink.unitBytes);
    try {
      for (;;) {
        const d = this.queue.shift();
        if (d) {
          for (const p of d.pieces) await sink(p);
          this.conn.release(d.buffer);
          this.resumeSocket();
          continue;
        }
        if (this.error) throw this.error;
        if (this.ended) break;
        this.resumeSocket();
        await new Promise<void>((r) => (this.wake = r));
        this.wake = undefined;
      }
    } catch (e) {
      if (!this.ended) this.conn.destroy(e as Error);
      throw e;
    }
  }
}

export interface DirectGetHandler {
  handle(
    request: DirectRequest,
    options?: { abortSignal?: { aborted: boolean; addEventListener?: (t: 'abort', f: () => void) => void } },
  ): Promise<{ response: DirectResponse }>;
  /** Closes every kept-alive connection. */
  destroy(): void;
  /** The SDK's HttpHandler asks for these; there is nothing to configure after creation. */
  updateHttpClientConfig(): void;
  httpHandlerConfigs(): Record<string, never>;
}

export function createDirectGetHandler(options: DirectGetOptions = {}): DirectGetHandler {
  const opts = {
    readBufferBytes: options.readBufferBytes ?? 128 * 1024,
    timeoutMs: options.timeoutMs ?? 60_000,
    idleMs: options.idleMs ?? 15_000,
    maxIdlePerOrigin: options.maxIdlePerOrigin ?? 16,
    ...(options.tls && { tls: options.tls }),
  };
  const idle = new Map<string, Connection[]>();
  const live = new Set<Connection>();

  function takeIdle(origin: string): Connection | undefined {
    const list = idle.get(origin);
    while (list && list.length > 0) {
      const c = list.pop()!;
      if (!c.closed) return c;
    }
    return undefined;
  }

  function giveBack(conn: Connection, reusable: boolean) {
    conn.finished();
    const list = idle.get(conn.origin) ?? [];
    if (!reusable || conn.closed || list.length >= opts.maxIdlePerOrigin) {
      conn.reusable = false;
      conn.destroy();
      return;
    }
    list.push(conn);
    idle.set(conn.origin, list);
  }

  function exchange(req: DirectRequest, conn: Connection): Promise<DirectResponse> {
    return new Promise((resolve, reject) => {
      conn.send(
        req,
        (h) => {
          let framing: Framing;
          try {
            framing = framingOf(req.method, h.status, h.headers);
          } catch (e) {
            reject(e);
            conn.destroy(e as Error);
            return;
          }
          if (h.headers[':close'] || /\bclose\b/i.test(h.headers.connection ?? '')) conn.reusable = false;
          delete h.headers[':close'];
          const body = new DirectBody(conn, framing, (c, reusable) => {
            live.delete(c);
            giveBack(c, reusable);
          });
          resolve({ statusCode: h.status, reason: h.reason, headers: h.headers, body });
        },
        reject,
      );
    });
  }

  return {
    async handle(req, handlerOptions) {
      if (req.body !== undefined && req.body !== null)
        throw new DirectGetError('the direct S3 handler sends requests without a body only');
      const signal = handlerOptions?.abortSignal;
      if (signal?.aborted) throw Object.assign(new Error('Request aborted'), { name: 'AbortError' });
      const origin = `${req.protocol}//${req.hostname}:${req.port ?? ''}`;
      for (let attempt = 0; ; attempt++) {
        const pooled = attempt === 0 ? takeIdle(origin) : undefined;
        const conn = pooled ?? new Connection(origin, req, opts);
        live.add(conn);
        const mine = conn.exchanges + 1; // send() counts this exchange
        signal?.addEventListener?.('abort', () => {
          if (conn.exchanges === mine && !conn.idle) conn.destroy(new DirectGetError('request aborted'));
        });
        try {
          return { response: await exchange(req, conn) };
        } catch (e) {
          live.delete(conn);
          conn.destroy();
          // A kept-alive connection the server had closed: nothing of the response came back.
          if (pooled && conn.received === 0 && attempt === 0) continue;
          throw e;
        }
      }
    },
    updateHttpClientConfig() {},
    httpHandlerConfigs: () => ({}),
    destroy() {
      for (const list of idle.values()) for (const c of list) c.destroy();
      idle.clear();
      for (const c of live) c.destroy();
      live.clear();
    },
  };
}
