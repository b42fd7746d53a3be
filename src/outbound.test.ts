import type { lookup as dnsLookup } from 'node:dns';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import {
  type AddressInfo,
  createServer as createTcpServer,
  type Socket,
  type Server as TcpServer,
} from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from './errors.ts';
import { createOutbound, localAddressKind, type Outbound, OutboundError } from './outbound.ts';
import { loadOrCreateTls, type TlsMaterial } from './tls.ts';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function listen(server: Server | TcpServer): Promise<number> {
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => {
    for (const s of sockets) s.destroy();
    return new Promise((r) => server.close(r));
  });
  return (server.address() as AddressInfo).port;
}

/** A plain http server on 127.0.0.1, and an Outbound that allows it. */
async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void) {
  const port = await listen(createServer(handler));
  return { url: `http://127.0.0.1:${port}`, outbound: createOutbound({ allowHosts: [`127.0.0.1:${port}`] }) };
}

async function failure(p: Promise<unknown>): Promise<OutboundError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof OutboundError)) throw new Error(`expected an OutboundError, got ${String(err)}`);
  return err;
}

function refusal(outbound: Outbound, url: string): string {
  try {
    outbound.check(url);
  } catch (err) {
    if (err instanceof OutboundError && err.reason === 'refused') return err.message;
    throw err;
  }
  throw new Error(`${url} was not refused`);
}

describe('outbound URL policy', () => {
  const strict = createOutbound({ allowHosts: [] });

  it('refuses plain http unless the host is allowed, naming the key', () => {
    expect(refusal(strict, 'http://issuer.example/')).toBe(
      'http://issuer.example is plain http, which berth uses only for hosts the operator allows: ' +
        'list "issuer.example:80" in outbound.allowHosts to allow it',
    );
    const some = createOutbound({ allowHosts: ['issuer.example:8080', 'CI.Example', '[::1]:9000'] });
    expect(some.check('http://issuer.example:8080/x').href).toBe('http://issuer.example:8080/x');
    expect(refusal(some, 'http://issuer.example:8081/')).toContain('"issuer.example:8081"');
    // A bare host allows every port; names compare without case.
    expect(some.check('http://ci.example:1234/').host).toBe('ci.example:1234');
    expect(some.check('http://[::1]:9000/').hostname).toBe('[::1]');
    expect(refusal(some, 'ftp://ci.example/')).toMatch(/only https/);
  });

  it.each([
    ['https://127.0.0.1/', 'a loopback address'],
    ['https://127.9.9.9:8443/', 'a loopback address'],
    ['https://localhost/', 'a loopback address'],
    ['https://berth.localhost/', 'a loopback address'],
    ['https://[::1]/', 'a loopback address'],
    ['https://[::ffff:127.0.0.1]/', 'a loopback address'],
    ['https://2130706433/', 'a loopback address'],
    ['https://0.0.0.0/', 'an unspecified address (this host)'],
    ['https://169.254.169.254/latest/meta-data/', 'a link-local or cloud metadata address'],
    ['https://[fd00:ec2::254]/', 'a link-local or cloud metadata address'],
    ['https://[fe80::1]/', 'a link-local or cloud metadata address'],
    ['https://224.0.0.1/', 'a multicast or reserved address'],
    ['https://255.255.255.255/', 'a multicast or reserved address'],
  ])('refuses %s as %s unless allowed', (url, kind) => {
    expect(refusal(strict, url)).toContain(`is ${kind}, which berth does not reach: list "`);
    const host = new URL(url);
    const allowed = createOutbound({ allowHosts: [host.hostname] });
    expect(allowed.check(url).href).toBe(host.href);
  });

  it('accepts https to public and private-network addresses', () => {
    for (const url of [
      'https://issuer.example/',
      'https://10.1.2.3/',
      'https://192.168.0.9:8443/',
      'https://[fd12::1]/',
    ])
      expect(strict.check(url).href).toBe(url);
  });

  it('names the entry of outbound.allowHosts that is not HOST or HOST:PORT', () => {
    for (const [entries, key] of [
      [['ok.example', 'http://x'], 'outbound.allowHosts[1]'],
      [['a b'], 'outbound.allowHosts[0]'],
      [['ok:99999'], 'outbound.allowHosts[0]'],
      [['::1'], 'outbound.allowHosts[0]'],
    ] as const) {
      let err: unknown;
      try {
        createOutbound({ allowHosts: entries });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).key).toBe(key);
    }
  });

  it('classifies addresses', () => {
    expect(localAddressKind('127.0.0.1')).toBe('a loopback address');
    expect(localAddressKind('::ffff:169.254.169.254')).toBe('a link-local or cloud metadata address');
    expect(localAddressKind('100.100.100.200')).toBe('a link-local or cloud metadata address');
    expect(localAddressKind('10.0.0.1')).toBeUndefined();
    expect(localAddressKind('8.8.8.8')).toBeUndefined();
    expect(localAddressKind('not-an-ip')).toBeUndefined();
  });
});

describe('outbound requests', () => {
  it('gets a body, and posts one with its length', async () => {
    let got = '';
    const { url, outbound } = await serve((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        got = `${req.method} ${req.headers['content-length']} ${body}`;
        res.end('{"ok":true}');
      });
    });
    const res = await outbound.request(`${url}/x`, { timeoutMs: 5000, maxBodyBytes: 100 });
    expect([res.status, res.body.toString(), res.truncated]).toEqual([200, '{"ok":true}', false]);
    await outbound.request(url, { method: 'POST', body: 'héllo', timeoutMs: 5000, maxBodyBytes: 100 });
    expect(got).toBe('POST 6 héllo');
  });

  it('refuses a body over the limit without reading it to its end, declared or streamed', async () => {
    const total = 48 * 1024 * 1024;
    let sent = 0;
    let closed!: () => void;
    const hungUp = new Promise<void>((r) => {
      closed = r;
    });
    const { url, outbound } = await serve((req, res) => {
      if (req.url === '/declared') {
        res.writeHead(200, { 'content-length': String(total) });
        res.end(Buffer.alloc(1024));
        return;
      }
      // Chunked, as fast as the client reads: count what it took before it hung up.
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      res.on('close', closed);
      const pump = () => {
        while (sent < total && !res.destroyed) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    });
    const declared = await failure(
      outbound.request(`${url}/declared`, { timeoutMs: 5000, maxBodyBytes: 1024 }),
    );
    expect(declared.reason).toBe('too-large');
    const streamed = await failure(
      outbound.request(`${url}/stream`, { timeoutMs: 10_000, maxBodyBytes: 256 * 1024 }),
    );
    expect(streamed.message).toBe(
      `GET ${url}/stream: the response is larger than 256 KiB, the most berth reads here`,
    );
    await hungUp;
    // What sat in socket buffers when berth hung up, not the 48 MiB.
    expect(sent).toBeLessThan(16 * 1024 * 1024);
  });

  it('keeps an excerpt of a long body when asked to truncate', async () => {
    const { url, outbound } = await serve((_req, res) => res.end('x'.repeat(100_000)));
    const res = await outbound.request(url, { timeoutMs: 5000, maxBodyBytes: 10, overflow: 'truncate' });
    expect([res.body.toString(), res.truncated]).toEqual(['xxxxxxxxxx', true]);
  });

  it('gives up on a peer that never answers, or answers a byte at a time, at the deadline', async () => {
    const { url, outbound } = await serve((req, res) => {
      if (req.url === '/silent') return;
      res.writeHead(200);
      const t = setInterval(() => res.write('x'), 100);
      res.on('close', () => clearInterval(t));
    });
    const started = Date.now();
    const silent = await failure(outbound.request(`${url}/silent`, { timeoutMs: 600, maxBodyBytes: 100 }));
    expect(silent.message).toBe(`GET ${url}/silent: no complete answer within 600 ms`);
    const trickle = await failure(outbound.request(`${url}/trickle`, { timeoutMs: 800, maxBodyBytes: 1000 }));
    expect(trickle.reason).toBe('timeout');
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  it('gives up on a TLS handshake that never completes at the connect deadline', async () => {
    const port = await listen(createTcpServer(() => {}));
    const outbound = createOutbound({ allowHosts: [`127.0.0.1:${port}`] });
    const err = await failure(
      outbound.request(`https://127.0.0.1:${port}/`, {
        timeoutMs: 5000,
        connectTimeoutMs: 300,
        maxBodyBytes: 100,
      }),
    );
    expect(err.message).toBe(`GET https://127.0.0.1:${port}/: could not connect within 300 ms`);
  });

  it('does not follow redirects', async () => {
    let hits = 0;
    const { url, outbound } = await serve((_req, res) => {
      hits++;
      res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data/' }).end();
    });
    const res = await outbound.request(url, { timeoutMs: 5000, maxBodyBytes: 100 });
    expect([res.status, res.headers.location, hits]).toEqual([
      302,
      'http://169.254.169.254/latest/meta-data/',
      1,
    ]);
  });

  it('refuses a name that resolves to a local address, at connect time', async () => {
    const port = await listen(createServer((_req, res) => res.end('reached')));
    // A DNS name whose answer points at this machine (or changed to, after a check).
    const lookup = ((host: string, opts: unknown, cb: (...a: unknown[]) => void) => {
      if (host !== 'rebind.test') return cb(Object.assign(new Error('ENOTFOUND'), { code: 'ENOTFOUND' }));
      const addresses = [
        { address: '10.9.9.9', family: 4 },
        { address: '127.0.0.1', family: 4 },
      ];
      if ((opts as { all?: boolean }).all) cb(null, addresses);
      else cb(null, '127.0.0.1', 4);
    }) as unknown as typeof dnsLookup;
    const outbound = createOutbound({ allowHosts: [], lookup });
    expect(outbound.check(`https://rebind.test:${port}/`).hostname).toBe('rebind.test');
    const err = await failure(
      outbound.request(`https://rebind.test:${port}/`, { timeoutMs: 5000, maxBodyBytes: 100 }),
    );
    expect(err.message).toBe(
      `GET https://rebind.test:${port}/: rebind.test resolves to 127.0.0.1, a loopback address, which berth ` +
        `does not reach: list "rebind.test:${port}" in outbound.allowHosts to allow it`,
    );
    // Listed, the operator vouches for it (and its own resolver answers).
    const listed = createOutbound({ allowHosts: [`rebind.test:${port}`], lookup });
    const reached = await failure(
      listed.request(`https://rebind.test:${port}/`, { timeoutMs: 5000, maxBodyBytes: 100 }),
    );
    expect(reached.reason).toBe('network'); // it connected: the plain http server cannot speak TLS
  });

  describe('over https', () => {
    let dir: string;
    let tls: TlsMaterial;
    let ca: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'berth-outbound-'));
      tls = await loadOrCreateTls({ dataDir: dir, names: ['127.0.0.1'] });
      ca = readFileSync(tls.caPath!, 'utf8');
    });
    afterAll(() => rm(dir, { recursive: true, force: true }));

    it('trusts the CA it is given, and only then', async () => {
      const port = await listen(
        createHttpsServer({ key: tls.key, cert: tls.cert }, (_req, res) => res.end('secure')),
      );
      const outbound = createOutbound({ allowHosts: [`127.0.0.1:${port}`] });
      const url = `https://127.0.0.1:${port}/`;
      const res = await outbound.request(url, { ca, timeoutMs: 5000, maxBodyBytes: 100 });
      expect(res.body.toString()).toBe('secure');
      const untrusted = await failure(outbound.request(url, { timeoutMs: 5000, maxBodyBytes: 100 }));
      expect(untrusted.reason).toBe('network');
      expect(untrusted.message).toMatch(/certificate/i);
    });
  });
});
