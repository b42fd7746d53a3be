// What only a real socket shows: HTTPS with the generated CA, graceful shutdown, plain HTTP
// behind a proxy.
import { randomBytes, type X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { connect } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { createLogger, silentLogger } from '../../src/log.ts';
import { type Berth, start } from '../../src/main.ts';
import { loadOrCreateTls } from '../../src/tls.ts';
import { sha256 } from './harness.ts';

const dirs: string[] = [];
const running: Berth[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((b) => b.stop()));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

// Auth is on, as in production: requests sign in as the bootstrap admin with Basic credentials.
const adminPassword = 'server-test-password';
const asAdmin = `Basic ${Buffer.from(`admin:${adminPassword}`).toString('base64')}`;

async function boot(env: Record<string, string> = {}, log = silentLogger) {
  const data = mkdtempSync(join(tmpdir(), 'berth-server-'));
  dirs.push(data);
  const config = loadConfig({
    env: { BERTH_SERVER_SHUTDOWN_TIMEOUT_SECONDS: '10', BERTH_ADMIN_PASSWORD: adminPassword, ...env },
    flags: { listen: '127.0.0.1:0', data },
  });
  const berth = await start(config, log);
  running.push(berth);
  return { berth, data, port: berth.server.port };
}

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

function call(
  port: number,
  path: string,
  opts: {
    method?: string;
    ca?: Buffer;
    body?: Buffer;
    headers?: Record<string, string>;
    servername?: string;
    /** Send no credentials. */
    anonymous?: boolean;
  } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        agent: false,
        port,
        path,
        method: opts.method ?? 'GET',
        ca: opts.ca,
        headers: { ...(!opts.anonymous && { Authorization: asAdmin }), ...opts.headers },
        servername: opts.servername,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }),
        );
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

describe('HTTPS server', () => {
  it('challenges callers without credentials with the token realm they reached it at', async () => {
    const { port, data } = await boot();
    const ca = readFileSync(join(data, 'tls', 'ca.crt'));
    const res = await call(port, '/v2/', { ca, servername: 'localhost', anonymous: true });
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toBe(
      `Bearer realm="https://127.0.0.1:${port}/token",service="berth"`,
    );
    expect(res.headers['docker-distribution-api-version']).toBe('registry/2.0');
    const token = await call(port, '/token?service=berth&scope=repository:app:pull,push', {
      ca,
      servername: 'localhost',
    });
    expect(token.status).toBe(200);
    const body = JSON.parse(token.body.toString()) as { token: string; expires_in: number };
    expect(body.expires_in).toBe(300);
    const withToken = await call(port, '/v2/', {
      ca,
      servername: 'localhost',
      headers: { Authorization: `Bearer ${body.token}` },
    });
    expect(withToken.status).toBe(200);
  });

  it('serves /v2/ over HTTPS with its own CA, keeping private keys 0600', async () => {
    const { data, port } = await boot();
    const ca = readFileSync(join(data, 'tls', 'ca.crt'));
    const res = await call(port, '/v2/', { ca, servername: 'localhost' });
    expect(res.status).toBe(200);
    expect(res.headers['docker-distribution-api-version']).toBe('registry/2.0');
    expect(res.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(statSync(join(data, 'tls', 'server.key')).mode & 0o777).toBe(0o600);
    expect(statSync(join(data, 'tls', 'ca.key')).mode & 0o777).toBe(0o600);
    await expect(call(port, '/v2/')).rejects.toThrow(/self[- ]signed|unable to verify|certificate/i);
  });

  it('serves whole blobs and byte ranges over the socket exactly', async () => {
    const { data, port } = await boot();
    const ca = readFileSync(join(data, 'tls', 'ca.crt'));
    const blob = randomBytes(3 * 1024 * 1024 + 7);
    const digest = sha256(blob);
    const opts = { ca, servername: 'localhost' };
    expect(
      (await call(port, `/v2/app/blobs/uploads/?digest=${digest}`, { ...opts, method: 'POST', body: blob }))
        .status,
    ).toBe(201);
    const whole = await call(port, `/v2/app/blobs/${digest}`, opts);
    expect(whole.status).toBe(200);
    expect(whole.headers['docker-distribution-api-version']).toBe('registry/2.0');
    expect(whole.body.equals(blob)).toBe(true);
    const part = await call(port, `/v2/app/blobs/${digest}`, {
      ...opts,
      headers: { Range: 'bytes=1048570-2097160' },
    });
    expect(part.status).toBe(206);
    expect(part.headers['content-range']).toBe(`bytes 1048570-2097160/${blob.length}`);
    expect(part.body.equals(blob.subarray(1048570, 2097161))).toBe(true);
    const tail = await call(port, `/v2/app/blobs/${digest}`, { ...opts, headers: { Range: 'bytes=-5' } });
    expect(tail.body.equals(blob.subarray(blob.length - 5))).toBe(true);
  });

  it('finishes an in-flight upload on shutdown, then refuses new connections', async () => {
    const { berth, data, port } = await boot();
    const ca = readFileSync(join(data, 'tls', 'ca.crt'));
    const blob = randomBytes(4 * 1024 * 1024);
    const digest = sha256(blob);
    // Start a slow monolithic upload, then ask the server to stop while it is in flight.
    const inFlight = new Promise<Reply>((resolve, reject) => {
      const req = httpsRequest(
        {
          host: '127.0.0.1',
          port,
          path: `/v2/app/blobs/uploads/?digest=${digest}`,
          method: 'POST',
          ca,
          servername: 'localhost',
          headers: { 'Content-Length': String(blob.length), Authorization: asAdmin },
        },
        (res) => {
          res.resume();
          res.on('end', () =>
            resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.alloc(0) }),
          );
        },
      );
      req.on('error', reject);
      req.write(blob.subarray(0, 1024 * 1024));
      setTimeout(() => {
        stopped = berth.stop();
        setTimeout(() => req.end(blob.subarray(1024 * 1024)), 200);
      }, 200);
    });
    let stopped: Promise<void> | undefined;
    const reply = await inFlight;
    expect(reply.status).toBe(201);
    await stopped;
    await expect(call(port, '/v2/', { ca, servername: 'localhost' })).rejects.toThrow(/ECONNREFUSED/);
    // The blob committed before the stop is there after a restart on the same data.
    const again = await start(loadConfig({ env: {}, flags: { listen: '127.0.0.1:0', data } }), silentLogger);
    running.push(again);
    const head = await call(again.server.port, `/v2/app/blobs/${digest}`, {
      method: 'HEAD',
      ca,
      servername: 'localhost',
    });
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(blob.length));
  });
});

/** A logger whose JSON lines land in an array. */
function capturingLogger() {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { log: createLogger('info', sink), lines };
}

/** The certificate a TLS handshake on port presents. */
function peerCertificate(port: number): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const raw = s.getPeerX509Certificate();
      s.end();
      if (raw) resolve(raw);
      else reject(new Error('no peer certificate'));
    });
    s.on('error', reject);
  });
}

describe('plain HTTP behind a proxy', () => {
  it('serves HTTP only when configured, with relative Locations, honouring X-Forwarded-* when trusted', async () => {
    const { log, lines } = capturingLogger();
    const { port } = await boot({ BERTH_TLS_ENABLED: 'false', BERTH_SERVER_TRUST_PROXY: 'true' }, log);
    const reply = await new Promise<{ status: number; location?: string }>((resolve, reject) => {
      const req = httpRequest(
        {
          host: '127.0.0.1',
          port,
          path: '/v2/app/blobs/uploads/',
          method: 'POST',
          agent: false,
          headers: {
            Authorization: asAdmin,
            'X-Forwarded-For': '203.0.113.7, 10.0.0.1',
            'X-Forwarded-Proto': 'https',
            'X-Forwarded-Host': 'registry.example.com',
          },
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode!, location: res.headers.location }));
        },
      );
      req.on('error', reject);
      req.end();
    });
    expect(reply.status).toBe(202);
    expect(reply.location).toMatch(/^\/v2\/app\/blobs\/uploads\/[0-9a-f-]{36}$/);
    await new Promise((r) => setTimeout(r, 50));
    const access = lines.find((l) => l.msg === 'request' && l.method === 'POST');
    expect(access).toMatchObject({ ip: '203.0.113.7', origin: 'https://registry.example.com', status: 202 });
    expect(lines.some((l) => l.level === 'warn' && String(l.msg).includes('TLS is off'))).toBe(true);
  });

  it('ignores X-Forwarded-* unless the proxy is trusted', async () => {
    const { log, lines } = capturingLogger();
    const { port } = await boot({ BERTH_TLS_ENABLED: 'false' }, log);
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest(
        {
          host: '127.0.0.1',
          port,
          path: '/v2/',
          agent: false,
          headers: { 'X-Forwarded-For': '203.0.113.7', 'X-Forwarded-Host': 'evil' },
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve());
        },
      );
      req.on('error', reject);
      req.end();
    });
    await new Promise((r) => setTimeout(r, 50));
    const access = lines.find((l) => l.msg === 'request');
    expect(access).toMatchObject({ ip: '127.0.0.1', origin: `http://127.0.0.1:${port}` });
  });
});

describe('configured certificate', () => {
  it('is served instead of a generated one and reloaded without a restart when its files change', async () => {
    // Two certificates from a throwaway CA stand in for an operator's files.
    const certs = mkdtempSync(join(tmpdir(), 'berth-certs-'));
    dirs.push(certs);
    const first = await loadOrCreateTls({ dataDir: join(certs, 'one'), names: ['first.example'] });
    const second = await loadOrCreateTls({ dataDir: join(certs, 'two'), names: ['second.example'] });
    const certFile = join(certs, 'tls.crt');
    const keyFile = join(certs, 'tls.key');
    writeFileSync(certFile, first.cert);
    writeFileSync(keyFile, first.key);
    const { data, port } = await boot({ BERTH_TLS_CERT_FILE: certFile, BERTH_TLS_KEY_FILE: keyFile });
    expect(() => statSync(join(data, 'tls', 'ca.crt'))).toThrow();
    expect((await peerCertificate(port)).checkHost('first.example')).toBe('first.example');
    // Replace both files the way cert-manager or certbot do: write aside, rename into place.
    writeFileSync(`${keyFile}.new`, second.key);
    writeFileSync(`${certFile}.new`, second.cert);
    renameSync(`${keyFile}.new`, keyFile);
    renameSync(`${certFile}.new`, certFile);
    const deadline = Date.now() + 15_000;
    let host: string | undefined;
    while (Date.now() < deadline) {
      host = (await peerCertificate(port)).checkHost('second.example');
      if (host) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(host).toBe('second.example');
  });
});
