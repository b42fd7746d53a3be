// The direct GET handler against real local servers: node:http/https for well-behaved peers, raw
// node:net servers for framing split across reads, misbehaving peers and closed connections.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createHttpServer, type Server as HttpServer, type RequestListener } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { type AddressInfo, createServer as createNetServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  createDirectGetHandler,
  type DirectBody,
  DirectGetError,
  type DirectGetHandler,
  type DirectGetOptions,
  type DirectRequest,
  type DirectResponse,
} from './s3-direct-get.ts';

const MiB = 1024 * 1024;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

// Everything a test starts, stopped after it whatever happened.
const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function newHandler(opts: DirectGetOptions = {}): DirectGetHandler {
  const h = createDirectGetHandler(opts);
  cleanups.push(() => h.destroy());
  return h;
}

interface Listening {
  readonly port: number;
  /** Connections accepted so far. */
  connections(): number;
  /** Server-side sockets, open or closed, in accept order. */
  readonly sockets: Socket[];
}

async function listen(server: Server | HttpServer, sockets: Socket[]): Promise<number> {
  server.on('connection', (s: Socket) => sockets.push(s));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return (server.address() as AddressInfo).port;
}

/** A handler that answers every request with `data` and its Content-Length. */
const serve =
  (data: Buffer): RequestListener =>
  (_req, res) => {
    res.writeHead(200, { 'content-length': String(data.length) });
    res.end(data);
  };

async function httpServer(handler: RequestListener): Promise<Listening> {
  const server = createHttpServer(handler);
  const sockets: Socket[] = [];
  const port = await listen(server, sockets);
  return { port, connections: () => sockets.length, sockets };
}

/**
 * A raw server: onRequest gets each request head (GETs carry no body) with its index on that
 * connection and the connection's index, and writes whatever the test wants.
 */
async function rawServer(
  onRequest: (socket: Socket, head: string, nth: number, conn: number) => unknown,
): Promise<Listening & { readonly heads: string[] }> {
  const sockets: Socket[] = [];
  const heads: string[] = [];
  let accepted = 0;
  const server = createNetServer((socket) => {
    const conn = accepted++;
    socket.on('error', () => {});
    let pending = '';
    let nth = 0;
    socket.on('data', (d: Buffer) => {
      pending += d.toString('latin1');
      for (let at = pending.indexOf('\r\n\r\n'); at >= 0; at = pending.indexOf('\r\n\r\n')) {
        const head = pending.slice(0, at);
        pending = pending.slice(at + 4);
        heads.push(head);
        void onRequest(socket, head, nth++, conn);
      }
    });
  });
  const port = await listen(server, sockets);
  return { port, connections: () => sockets.length, sockets, heads };
}

/** Writes bytes in slices of the given sizes (cycling), pausing between them so they arrive as separate reads. */
async function writeSliced(socket: Socket, bytes: Buffer, sizes: number[], pauseMs = 2) {
  socket.setNoDelay(true);
  let i = 0;
  for (let at = 0; at < bytes.length; i++) {
    const n = sizes[i % sizes.length]!;
    socket.write(bytes.subarray(at, at + n));
    at += n;
    await sleep(pauseMs);
  }
}

const closed = (s: Socket) =>
  s.destroyed && s.readyState === 'closed'
    ? Promise.resolve()
    : new Promise<void>((r) => s.once('close', () => r()));

function request(port: number, extra: Partial<DirectRequest> = {}): DirectRequest {
  return {
    method: 'GET',
    protocol: 'http:',
    hostname: '127.0.0.1',
    port,
    path: '/bucket/key',
    headers: { host: `127.0.0.1:${port}` },
    ...extra,
  };
}

async function get(
  h: DirectGetHandler,
  port: number,
  extra: Partial<DirectRequest> = {},
): Promise<DirectResponse> {
  return (await h.handle(request(port, extra))).response;
}

interface Pumped {
  readonly bytes: Buffer;
  readonly chunks: number;
  /** Distinct ArrayBuffers behind the views the sink got. */
  readonly arrayBuffers: number;
  /** Sizes of those ArrayBuffers. */
  readonly bufferSizes: Set<number>;
}

/** Pumps body into copies; every `slowEvery`th chunk the sink waits a little before resolving. */
async function pumpAll(body: DirectBody, slowEvery = 0): Promise<Pumped> {
  const parts: Buffer[] = [];
  const buffers = new Set<ArrayBufferLike>();
  const bufferSizes = new Set<number>();
  let chunks = 0;
  await body.pump(async (chunk) => {
    expect(chunk).toBeInstanceOf(Uint8Array);
    buffers.add(chunk.buffer);
    bufferSizes.add(chunk.buffer.byteLength);
    // Copy now: the view's bytes are overwritten once the sink resolves.
    parts.push(Buffer.from(chunk));
    chunks++;
    if (slowEvery > 0 && chunks % slowEvery === 0) await sleep(3);
  });
  return { bytes: Buffer.concat(parts), chunks, arrayBuffers: buffers.size, bufferSizes };
}

/**
 * Pumps body with a sink that names units of `unit` bytes (ChunkSink.unitBytes): the copies, and
 * how many chunks crossed a unit boundary (each one a unit the sink would have to copy together).
 */
async function pumpUnits(
  body: DirectBody,
  unit: number,
  slowEvery = 0,
): Promise<Pumped & { crossings: number }> {
  const parts: Buffer[] = [];
  const buffers = new Set<ArrayBufferLike>();
  const bufferSizes = new Set<number>();
  let at = 0;
  let crossings = 0;
  const sink = async (chunk: Uint8Array) => {
    buffers.add(chunk.buffer);
    bufferSizes.add(chunk.buffer.byteLength);
    parts.push(Buffer.from(chunk));
    if (Math.floor(at / unit) !== Math.floor((at + chunk.byteLength - 1) / unit)) crossings++;
    at += chunk.byteLength;
    if (slowEvery > 0 && parts.length % slowEvery === 0) await sleep(3);
  };
  await body.pump(Object.assign(sink, { unitBytes: unit }));
  return {
    bytes: Buffer.concat(parts),
    chunks: parts.length,
    arrayBuffers: buffers.size,
    bufferSizes,
    crossings,
  };
}

/** Reads a Readable holding on to every chunk (a chunk that were a reused buffer would go stale). */
async function collect(body: Readable, slowEvery = 0): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of body) {
    parts.push(c as Buffer);
    if (slowEvery > 0 && parts.length % slowEvery === 0) await sleep(3);
  }
  return Buffer.concat(parts);
}

const big = randomBytes(5 * MiB);

describe('Content-Length bodies', () => {
  it('pumps a 5 MiB body byte-exact as views of a few reused read buffers, with a slow sink', async () => {
    const srv = await httpServer(serve(big));
    const readBufferBytes = 32 * 1024;
    const h = newHandler({ readBufferBytes });
    const r = await get(h, srv.port);
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-length']).toBe(String(big.length));
    const p = await pumpAll(r.body, 5);
    expect(p.bytes.length).toBe(big.length);
    expect(sha(p.bytes)).toBe(sha(big));
    // Views of the connection's read buffers, not per-read allocations or copies.
    expect([...p.bufferSizes]).toEqual([readBufferBytes]);
    expect(p.chunks).toBeGreaterThanOrEqual(big.length / readBufferBytes);
    expect(p.arrayBuffers).toBeLessThanOrEqual(4);
  });

  it('pumps byte-exact with a sink that is slow on every chunk, and with the default buffer size', async () => {
    const data = big.subarray(0, 2 * MiB);
    const srv = await httpServer(serve(data));
    const h = newHandler();
    const r = await get(h, srv.port);
    const p = await pumpAll(r.body, 1);
    expect(sha(p.bytes)).toBe(sha(data));
    expect([...p.bufferSizes]).toEqual([128 * 1024]);
    expect(p.arrayBuffers).toBeLessThanOrEqual(4);
  });

  it('ends reads on the boundaries of the units a sink names, growing buffers to hold one', async () => {
    const srv = await httpServer(serve(big));
    const unit = 50_000; // larger than the read buffers, and no divisor of them
    const h = newHandler({ readBufferBytes: 32 * 1024 });
    for (const slowEvery of [0, 3]) {
      const p = await pumpUnits((await get(h, srv.port)).body, unit, slowEvery);
      expect(sha(p.bytes)).toBe(sha(big));
      // Only reads made before pump() named the unit may cross a boundary (about 100 would
      // otherwise); every later read ends on one.
      expect(p.crossings).toBeLessThanOrEqual(4);
      expect(Math.max(...p.bufferSizes)).toBe(unit);
    }
    // The body's connection was kept and reused, its buffers grown.
    expect(srv.connections()).toBe(1);
    // A later plain pump on that connection is not held to units.
    const plain = await pumpAll((await get(h, srv.port)).body);
    expect(sha(plain.bytes)).toBe(sha(big));
  });

  it('reads the same body through the Readable interface as copies, byte-exact', async () => {
    const srv = await httpServer(serve(big));
    const h = newHandler({ readBufferBytes: 16 * 1024, timeoutMs: 10_000 });
    const r = await get(h, srv.port);
    const got = await collect(r.body, 7);
    expect(got.length).toBe(big.length);
    expect(sha(got)).toBe(sha(big));
  });

  it('refuses a second consumer once pump owns the body', async () => {
    const srv = await httpServer((_req, res) => res.end('hello'));
    const h = newHandler();
    const r = await get(h, srv.port);
    const p = await pumpAll(r.body);
    expect(p.bytes.toString()).toBe('hello');
    await expect(r.body.pump(async () => {})).rejects.toThrow(DirectGetError);
  });

  it('gives an empty body for Content-Length: 0 and reuses the connection', async () => {
    const srv = await httpServer((_req, res) => {
      res.writeHead(200, { 'content-length': '0' });
      res.end();
    });
    const h = newHandler();
    for (let i = 0; i < 2; i++) {
      const r = await get(h, srv.port);
      expect((await pumpAll(r.body)).bytes.length).toBe(0);
    }
    expect(srv.connections()).toBe(1);
  });
});

describe('chunked transfer coding', () => {
  const pieces = [
    big.subarray(0, 1),
    big.subarray(1, 100_001),
    big.subarray(100_001, 100_004),
    big.subarray(200_000, 1_200_000),
  ];
  const whole = Buffer.concat(pieces);

  it('pumps and streams a body node:http sends in several chunks', async () => {
    const srv = await httpServer(async (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      for (const p of pieces) {
        res.write(p);
        await sleep(1);
      }
      res.end();
    });
    const h = newHandler({ readBufferBytes: 16 * 1024, timeoutMs: 10_000 });
    const r1 = await get(h, srv.port);
    expect(r1.headers['transfer-encoding']).toBe('chunked');
    const p = await pumpAll(r1.body, 3);
    expect(sha(p.bytes)).toBe(sha(whole));
    const r2 = await get(h, srv.port);
    expect(sha(await collect(r2.body, 3))).toBe(sha(whole));
    expect(srv.connections()).toBe(1);
  });

  it('deframes chunks whose sizes, extensions, data and trailers are split across reads', async () => {
    const data = randomBytes(700);
    const framed = Buffer.concat([
      Buffer.from('a;name=value;q="x y"\r\n'),
      data.subarray(0, 10),
      Buffer.from('\r\n1\r\n'),
      data.subarray(10, 11),
      Buffer.from('\r\n1F4\r\n'), // upper-case hex: 500
      data.subarray(11, 511),
      Buffer.from('\r\nbD;ext\r\n'), // mixed case: 189
      data.subarray(511, 700),
      Buffer.from('\r\n0;last=1\r\nX-Trailer: one\r\nX-Other: two\r\n\r\n'),
    ]);
    const srv = await rawServer(async (socket, _head, nth) => {
      socket.write(
        'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n',
      );
      await sleep(2);
      // Odd slices put boundaries inside size lines, CRLFs, data and trailers.
      await writeSliced(socket, framed, nth === 0 ? [1, 2, 3, 5, 7, 1, 1, 13] : [1, 1, 4, 9]);
    });
    const h = newHandler({ readBufferBytes: 4096 });
    const r1 = await get(h, srv.port);
    const p = await pumpAll(r1.body);
    expect(p.bytes.equals(data)).toBe(true);
    // The trailer's end ended the body: the connection carries the next exchange.
    const r2 = await get(h, srv.port);
    expect((await collect(r2.body)).equals(data)).toBe(true);
    expect(srv.connections()).toBe(1);
    expect(srv.heads.length).toBe(2);
  });

  // Each reply is written whole; the pumped body must fail with the error named.
  it.each([
    ['a malformed chunk size', 'zz\r\nhello\r\n0\r\n\r\n', /malformed chunk size/],
    ['chunk data not followed by CRLF', '5\r\nhelloXX\r\n0\r\n\r\n', /malformed chunk/],
    // A peer out of step is an error, as for Content-Length, not success with the data lost.
    [
      'bytes after the last chunk in the same read',
      '5\r\nhello\r\n0\r\n\r\nEXTRA',
      /more bytes than its chunked body/,
    ],
  ])('rejects %s', async (_what, chunks, why) => {
    const srv = await rawServer((socket) => {
      socket.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${chunks}`);
    });
    const h = newHandler();
    const r = await get(h, srv.port);
    await expect(pumpAll(r.body)).rejects.toThrow(why);
  });
});

describe('bodies framed by the end of the connection', () => {
  const data = big.subarray(0, MiB);

  it('reads an HTTP/1.0 body until the server closes, then uses a new connection', async () => {
    const srv = await rawServer(async (socket) => {
      socket.write('HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n');
      await writeSliced(socket, data, [100_000, 3, 64 * 1024 + 1], 1);
      socket.end();
    });
    const h = newHandler({ readBufferBytes: 16 * 1024, timeoutMs: 10_000 });
    const r1 = await get(h, srv.port);
    const p = await pumpAll(r1.body, 4);
    expect(sha(p.bytes)).toBe(sha(data));
    expect(p.arrayBuffers).toBeLessThanOrEqual(4);
    const r2 = await get(h, srv.port);
    expect(sha(await collect(r2.body))).toBe(sha(data));
    expect(srv.connections()).toBe(2);
  });

  it('reads an HTTP/1.1 body without Content-Length until the close', async () => {
    const srv = await rawServer((socket) => {
      socket.write('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n');
      socket.end(data);
    });
    const h = newHandler();
    const r = await get(h, srv.port);
    expect(sha((await pumpAll(r.body)).bytes)).toBe(sha(data));
  });

  it('fails such a body when the connection is reset rather than closed', async () => {
    const srv = await rawServer(async (socket) => {
      socket.write('HTTP/1.0 200 OK\r\n\r\npartial');
      await sleep(20);
      socket.resetAndDestroy();
    });
    const h = newHandler();
    const r = await get(h, srv.port);
    await expect(pumpAll(r.body)).rejects.toThrow();
  });
});

describe('keep-alive', () => {
  it('reuses one connection for sequential requests and reconnects after the server closed it', async () => {
    const srv = await httpServer((req, res) => {
      const body = `you asked for ${req.url}`;
      res.writeHead(200, { 'content-length': String(Buffer.byteLength(body)) });
      res.end(body);
    });
    const h = newHandler();
    const r1 = await get(h, srv.port, { path: '/one' });
    expect((await pumpAll(r1.body)).bytes.toString()).toBe('you asked for /one');
    const r2 = await get(h, srv.port, { path: '/two' });
    expect((await collect(r2.body)).toString()).toBe('you asked for /two');
    expect(srv.connections()).toBe(1);

    // The server drops the idle connection.
    srv.sockets[0]!.destroy();
    await closed(srv.sockets[0]!);
    const r3 = await get(h, srv.port, { path: '/three' });
    expect((await pumpAll(r3.body)).bytes.toString()).toBe('you asked for /three');
    expect(srv.connections()).toBe(2);
  });

  it('sends a request again on a new connection when the pooled one closes before any response byte', async () => {
    const srv = await rawServer((socket, _head, nth, conn) => {
      // The first connection answers once, then closes on the next request as a server whose
      // keep-alive timer fired just as it arrived would.
      if (conn === 0 && nth === 1) socket.destroy();
      else socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nconn-${conn}`);
    });
    const h = newHandler();
    const r1 = await get(h, srv.port);
    expect((await pumpAll(r1.body)).bytes.toString()).toBe('conn-0');
    const r2 = await get(h, srv.port);
    expect((await pumpAll(r2.body)).bytes.toString()).toBe('conn-1');
    expect(srv.connections()).toBe(2);
    expect(srv.heads.length).toBe(3);
  });

  it('does not send again once part of the response came back', async () => {
    const srv = await rawServer((socket, _head, nth, conn) => {
      if (conn === 0 && nth === 1) socket.end('HTTP/1.1 200 OK\r\nContent-Le');
      else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
    const h = newHandler();
    await pumpAll((await get(h, srv.port)).body);
    const failed = get(h, srv.port);
    await expect(failed).rejects.toThrow(DirectGetError);
    await expect(failed).rejects.toMatchObject({ code: 'ECONNRESET' });
    expect(srv.heads.length).toBe(2);
  });

  it('does not send again when a new connection closes before answering', async () => {
    const srv = await rawServer((socket) => socket.destroy());
    const h = newHandler();
    await expect(get(h, srv.port)).rejects.toMatchObject({ name: 'DirectGetError', code: 'ECONNRESET' });
    expect(srv.connections()).toBe(1);
  });

  it('closes the connection after a response that says Connection: close', async () => {
    const srv = await httpServer((_req, res) => {
      res.writeHead(200, { 'content-length': '2', connection: 'close' });
      res.end('ok');
    });
    const h = newHandler();
    for (let i = 0; i < 2; i++)
      expect((await pumpAll((await get(h, srv.port)).body)).bytes.toString()).toBe('ok');
    expect(srv.connections()).toBe(2);
  });

  it('does not time out while a slow consumer holds the socket paused, only while S3 is silent', async () => {
    const srv = await httpServer(serve(big));
    const h = newHandler({ readBufferBytes: 16 * 1024, timeoutMs: 200 });
    const r = await get(h, srv.port);
    let calls = 0;
    const got: Buffer[] = [];
    await r.body.pump(async (c) => {
      got.push(Buffer.from(c));
      // Three stalls, each longer than the timeout, with the socket paused behind them.
      if (++calls % 40 === 0 && calls <= 120) await new Promise((res) => setTimeout(res, 500));
    });
    expect(sha(Buffer.concat(got))).toBe(sha(big));

    // A server that stops mid-body is still cut off.
    const stall = await rawServer((socket) => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc');
    });
    const r2 = await get(h, stall.port);
    await expect(pumpAll(r2.body)).rejects.toMatchObject({ code: 'ETIMEDOUT' });

    // And so is one that goes silent while the consumer lags: once reading resumes, the timeout runs again.
    const silent = await rawServer((socket) => {
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${MiB}\r\n\r\n`);
      // Three 16 KiB reads: one at the stalled sink, two queued, which pauses the socket, and
      // nothing left to read when it resumes (so no read re-arms the timer for us).
      socket.write(big.subarray(0, 40 * 1024));
    });
    const r3 = await get(h, silent.port);
    let first = true;
    const stalled = r3.body.pump(async () => {
      if (first) await new Promise((res) => setTimeout(res, 500));
      first = false;
    });
    await expect(stalled).rejects.toMatchObject({ code: 'ETIMEDOUT' });
  });

  it('times out a connection that sends nothing', async () => {
    const srv = await rawServer(() => {});
    const h = newHandler({ timeoutMs: 200 });
    await expect(get(h, srv.port)).rejects.toMatchObject({ name: 'DirectGetError', code: 'ETIMEDOUT' });
    await closed(srv.sockets[0]!);
  });
});

describe('requests', () => {
  it('sends the query RFC 3986-escaped and sorted, the path and headers as given', async () => {
    const seen: { url?: string; host?: string; range?: string } = {};
    const srv = await httpServer((req, res) => {
      seen.url = req.url;
      seen.host = req.headers.host;
      seen.range = req.headers.range;
      res.end();
    });
    const h = newHandler();
    const r = await get(h, srv.port, {
      path: '/bucket/a%20b/c',
      query: { 'x-id': 'GetObject', a: ['1', '2'], 'k e y': "v!'()*", versionId: null },
      headers: { host: `127.0.0.1:${srv.port}`, range: 'bytes=0-9' },
    });
    await pumpAll(r.body);
    expect(seen).toEqual({
      url: '/bucket/a%20b/c?a=1&a=2&k%20e%20y=v%21%27%28%29%2A&versionId&x-id=GetObject',
      host: `127.0.0.1:${srv.port}`,
      range: 'bytes=0-9',
    });
  });

  it('sends no query string for an empty query', async () => {
    const srv = await rawServer((socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'));
    const h = newHandler();
    await pumpAll((await get(h, srv.port, { query: {} })).body);
    expect(srv.heads[0]!.split('\r\n')[0]).toBe('GET /bucket/key HTTP/1.1');
  });

  it('refuses a request with a body without connecting', async () => {
    const srv = await httpServer((_req, res) => res.end());
    const h = newHandler();
    await expect(get(h, srv.port, { method: 'PUT', body: 'data' })).rejects.toThrow(DirectGetError);
    expect(srv.connections()).toBe(0);
  });

  it('refuses a request whose signal is already aborted', async () => {
    const srv = await httpServer((_req, res) => res.end());
    const h = newHandler();
    const ac = new AbortController();
    ac.abort();
    await expect(h.handle(request(srv.port), { abortSignal: ac.signal })).rejects.toMatchObject({
      name: 'AbortError',
    });
    expect(srv.connections()).toBe(0);
  });

  it('fails a request aborted while it waits for the response head', async () => {
    const srv = await rawServer(() => {});
    const h = newHandler();
    const ac = new AbortController();
    const pending = h.handle(request(srv.port), { abortSignal: ac.signal });
    while (srv.heads.length === 0) await sleep(5);
    ac.abort();
    await expect(pending).rejects.toThrow(/aborted/);
  });

  it('keeps a connection reused by a later request alive when an earlier request signal aborts', async () => {
    const srv = await httpServer(serve(big.subarray(0, MiB)));
    const h = newHandler({ readBufferBytes: 16 * 1024, timeoutMs: 10_000 });
    const ac = new AbortController();
    const first = (await h.handle(request(srv.port), { abortSignal: ac.signal })).response;
    await pumpAll(first.body);
    // The second request takes the first one's connection from the pool; the first request is
    // over, so aborting its signal now must not touch the second.
    const second = await get(h, srv.port);
    let aborted = false;
    const bytes: Buffer[] = [];
    await second.body.pump(async (c) => {
      bytes.push(Buffer.from(c));
      if (!aborted) {
        aborted = true;
        ac.abort();
      }
    });
    expect(sha(Buffer.concat(bytes))).toBe(sha(big.subarray(0, MiB)));
    expect(srv.connections()).toBe(1);
  });
});

describe('failures', () => {
  it('fails a body whose connection closes early, and does not reuse that connection', async () => {
    const srv = await rawServer((socket, _head, _nth, conn) => {
      if (conn === 0)
        socket.end(
          Buffer.concat([
            Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n'),
            big.subarray(0, 1000),
          ]),
        );
      else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh');
    });
    const h = newHandler();
    const r1 = await get(h, srv.port);
    const err = await pumpAll(r1.body).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DirectGetError);
    expect((err as DirectGetError).message).toMatch(/closed the connection/);
    expect((err as DirectGetError).code).toBe('ECONNRESET');
    const r2 = await get(h, srv.port);
    expect((await pumpAll(r2.body)).bytes.toString()).toBe('fresh');
    expect(srv.connections()).toBe(2);
  });

  it('fails the Readable of a body whose connection closes early', async () => {
    const srv = await rawServer((socket) => {
      socket.end('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc');
    });
    const h = newHandler();
    const r = await get(h, srv.port);
    await expect(collect(r.body)).rejects.toThrow(/closed the connection/);
  });

  it('rejects a response that is not HTTP/1.x', async () => {
    const srv = await rawServer((socket) => socket.write('SSH-2.0-OpenSSH_9.6\r\n\r\n'));
    const h = newHandler();
    await expect(get(h, srv.port)).rejects.toThrow(/other than HTTP\/1\.1/);
    await closed(srv.sockets[0]!);
  });

  it('rejects a malformed status line and a malformed header line', async () => {
    const srv = await rawServer((socket, _h, _n, conn) =>
      socket.write(conn === 0 ? 'HTTP/1.1 2000 OK\r\n\r\n' : 'HTTP/1.1 200 OK\r\nno colon here\r\n\r\n'),
    );
    const h = newHandler();
    await expect(get(h, srv.port)).rejects.toThrow(DirectGetError);
    await expect(get(h, srv.port)).rejects.toThrow(/malformed header/);
  });

  it('rejects an invalid Content-Length', async () => {
    const srv = await rawServer((socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\n'));
    const h = newHandler();
    await expect(get(h, srv.port)).rejects.toThrow(/invalid Content-Length/);
  });

  it('rejects a response head far over 64 KiB', async () => {
    // The limit is checked while no head end has been found, so it may let a head run over by
    // about one read buffer; 256 KiB is over however the reads fall.
    const srv = await rawServer((socket) =>
      socket.write(`HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(256 * 1024)}\r\nContent-Length: 0\r\n\r\n`),
    );
    const h = newHandler({ readBufferBytes: 8192 });
    await expect(get(h, srv.port)).rejects.toThrow(/too large/);
  });

  it('fails a body when the server sends more bytes than its Content-Length', async () => {
    const srv = await rawServer((socket) =>
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA'),
    );
    const h = newHandler();
    const r = await get(h, srv.port);
    await expect(pumpAll(r.body)).rejects.toThrow(/more bytes than its Content-Length/);
    await closed(srv.sockets[0]!);
  });

  it('returns a non-2xx response with its headers and a readable body, and keeps the connection', async () => {
    const xml = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code></Error>';
    const srv = await httpServer((_req, res) => {
      res.writeHead(404, { 'content-type': 'application/xml', 'x-amz-request-id': 'r1' });
      res.end(xml);
    });
    const h = newHandler();
    const r = await get(h, srv.port);
    expect(r.statusCode).toBe(404);
    expect(r.reason).toBe('Not Found');
    expect(r.headers['content-type']).toBe('application/xml');
    expect(r.headers['x-amz-request-id']).toBe('r1');
    expect((await collect(r.body)).toString()).toBe(xml);
    const again = await get(h, srv.port);
    expect((await collect(again.body)).toString()).toBe(xml);
    expect(srv.connections()).toBe(1);
  });

  it('joins repeated headers and lower-cases names', async () => {
    const srv = await rawServer((socket) =>
      socket.write('HTTP/1.1 200 OK\r\nX-Amz-Meta-A: 1\r\nx-amz-meta-a:  2 \r\nContent-Length: 0\r\n\r\n'),
    );
    const h = newHandler();
    const r = await get(h, srv.port);
    expect(r.headers['x-amz-meta-a']).toBe('1, 2');
    expect(r.reason).toBe('OK');
  });

  it('rejects with the sink error when the sink throws, closes the connection, and serves the next request', async () => {
    const srv = await httpServer(serve(big));
    const h = newHandler({ readBufferBytes: 16 * 1024, timeoutMs: 10_000 });
    const r1 = await get(h, srv.port);
    const boom = new Error('client went away');
    let calls = 0;
    await expect(
      r1.body.pump(async () => {
        if (++calls === 3) throw boom;
      }),
    ).rejects.toBe(boom);
    expect(calls).toBe(3);
    await closed(srv.sockets[0]!);
    const r2 = await get(h, srv.port);
    expect(sha((await pumpAll(r2.body)).bytes)).toBe(sha(big));
    expect(srv.connections()).toBe(2);
  });

  it('closes the connection when a Readable body is abandoned', async () => {
    const srv = await httpServer(serve(big));
    const h = newHandler({ readBufferBytes: 16 * 1024, timeoutMs: 10_000 });
    const r1 = await get(h, srv.port);
    for await (const _ of r1.body) break;
    await closed(srv.sockets[0]!);
    const r2 = await get(h, srv.port);
    expect(sha(await collect(r2.body))).toBe(sha(big));
    expect(srv.connections()).toBe(2);
  });
});

describe('response heads split across reads', () => {
  it('finds the end of a head that arrives one byte per read', async () => {
    const head = 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: "abc"\r\n\r\n';
    const srv = await rawServer(async (socket) => {
      await writeSliced(socket, Buffer.from(`${head}hello`), [1], 3);
    });
    const h = newHandler({ timeoutMs: 10_000 });
    const r = await get(h, srv.port);
    expect(r.headers.etag).toBe('"abc"');
    expect((await pumpAll(r.body)).bytes.toString()).toBe('hello');
  });

  it('finds the end of a head split in two-byte reads at odd offsets', async () => {
    const head = 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n';
    const srv = await rawServer(async (socket) => {
      await writeSliced(socket, Buffer.from(`${head}hello`), [3, 2], 3);
    });
    const h = newHandler({ timeoutMs: 10_000 });
    const r = await get(h, srv.port);
    expect((await pumpAll(r.body)).bytes.toString()).toBe('hello');
  });
});

describe('responses without a body', () => {
  it('gives HEAD and 204 responses an empty body and reuses the connection', async () => {
    const srv = await httpServer((req, res) => {
      if (req.method === 'HEAD') {
        res.writeHead(200, { 'content-length': '1234', etag: '"e"' });
        res.end();
      } else {
        res.writeHead(204);
        res.end();
      }
    });
    const h = newHandler();
    const head = await get(h, srv.port, { method: 'HEAD' });
    expect(head.statusCode).toBe(200);
    expect(head.headers['content-length']).toBe('1234');
    const p = await pumpAll(head.body);
    expect(p.chunks).toBe(0);
    const none = await get(h, srv.port);
    expect(none.statusCode).toBe(204);
    expect((await collect(none.body)).length).toBe(0);
    const head2 = await get(h, srv.port, { method: 'HEAD' });
    expect((await collect(head2.body)).length).toBe(0);
    expect(srv.connections()).toBe(1);
  });

  it('gives a 304 an empty body even with a Content-Length', async () => {
    const srv = await rawServer((socket) =>
      socket.write('HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n'),
    );
    const h = newHandler();
    for (let i = 0; i < 2; i++) {
      const r = await get(h, srv.port);
      expect(r.statusCode).toBe(304);
      expect((await pumpAll(r.body)).chunks).toBe(0);
    }
    expect(srv.connections()).toBe(1);
  });
});

describe('destroy', () => {
  it('closes idle kept-alive connections', async () => {
    const srv = await httpServer((_req, res) => res.end('x'));
    const h = newHandler();
    await pumpAll((await get(h, srv.port)).body);
    const socket = srv.sockets[0]!;
    expect(socket.destroyed).toBe(false);
    h.destroy();
    await closed(socket);
  });

  it('fails a body in progress', async () => {
    const srv = await httpServer(serve(big));
    const h = newHandler({ readBufferBytes: 16 * 1024, timeoutMs: 10_000 });
    const r = await get(h, srv.port);
    let calls = 0;
    await expect(
      r.body.pump(async () => {
        if (++calls === 2) h.destroy();
      }),
    ).rejects.toThrow(DirectGetError);
    await closed(srv.sockets[0]!);
  });
});

describe('https', () => {
  let dir: string;
  let key: Buffer;
  let cert: Buffer;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-direct-get-'));
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
        '-days',
        '2',
        '-subj',
        '/CN=berth test',
        '-addext',
        'subjectAltName=IP:127.0.0.1,DNS:localhost',
      ],
      { stdio: 'ignore' },
    );
    key = readFileSync(join(dir, 'key.pem'));
    cert = readFileSync(join(dir, 'cert.pem'));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function httpsServer(handler: RequestListener): Promise<Listening> {
    const server = createHttpsServer({ key, cert }, handler);
    const sockets: Socket[] = [];
    const port = await listen(server as unknown as Server, sockets);
    return { port, connections: () => sockets.length, sockets };
  }

  it('pumps a 5 MiB body byte-exact over TLS with a private CA, reusing the connection', async () => {
    const srv = await httpsServer(serve(big));
    const readBufferBytes = 32 * 1024;
    const h = newHandler({ tls: { ca: cert }, readBufferBytes });
    for (const host of ['127.0.0.1', 'localhost']) {
      const r = await get(h, srv.port, { protocol: 'https:', hostname: host });
      const p = await pumpAll(r.body, 5);
      expect(sha(p.bytes)).toBe(sha(big));
      expect([...p.bufferSizes]).toEqual([readBufferBytes]);
      // A TLS socket still hands over the records it has already decrypted after the callback asks
      // for a pause, so a few more buffers than over TCP; what matters is that it does not grow
      // with the body (a buffer per pause would be over a hundred here).
      expect(p.arrayBuffers).toBeLessThanOrEqual(12);
    }
    const again = await get(h, srv.port, { protocol: 'https:' });
    expect(sha(await collect(again.body))).toBe(sha(big));
    // One connection per origin: 127.0.0.1 twice, localhost once.
    expect(srv.connections()).toBe(2);
  });

  it('ends TLS reads on the boundaries of the units a sink names', async () => {
    const srv = await httpsServer(serve(big));
    const h = newHandler({ tls: { ca: cert }, readBufferBytes: 32 * 1024 });
    const unit = 50_000;
    const p = await pumpUnits((await get(h, srv.port, { protocol: 'https:' })).body, unit, 4);
    expect(sha(p.bytes)).toBe(sha(big));
    // TLS may hand over a few more records read before pump() named the unit (see above).
    expect(p.crossings).toBeLessThanOrEqual(16);
    expect(p.chunks).toBeGreaterThan(big.length / unit);
  });

  it('refuses a server its CA does not vouch for', async () => {
    const srv = await httpsServer((_req, res) => res.end('x'));
    const h = newHandler();
    await expect(get(h, srv.port, { protocol: 'https:' })).rejects.toThrow(/self.signed|certificate/i);
  });
});
