// What only a real socket shows: HTTPS with the generated CA, graceful shutdown, plain HTTP
// behind a proxy.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { silentLogger } from '../../src/log.ts';
import { type Berth, start } from '../../src/main.ts';
import { sha256 } from './harness.ts';

const dirs: string[] = [];
const running: Berth[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((b) => b.stop()));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function boot(env: Record<string, string> = {}) {
  const data = mkdtempSync(join(tmpdir(), 'berth-server-'));
  dirs.push(data);
  const config = loadConfig({
    env: { BERTH_SERVER_SHUTDOWN_TIMEOUT_SECONDS: '10', ...env },
    flags: { listen: '127.0.0.1:0', data },
  });
  const berth = await start(config, silentLogger);
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
        headers: opts.headers,
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
          headers: { 'Content-Length': String(blob.length) },
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
