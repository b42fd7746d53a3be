// Webhooks against real receivers on 127.0.0.1: a plain HTTP one that fails twice before it
// accepts, checked the way a receiver would (signature recomputed from the raw bytes), and an
// HTTPS one whose certificate only the endpoint's own CA vouches for. Both are on the loopback and
// one is plain http, so the suite allows 127.0.0.1 as an operator would (outbound.allowHosts).
import { createHmac, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { RegistryEvent } from '../../src/events.ts';
import { silentLogger } from '../../src/log.ts';
import { createOutbound } from '../../src/outbound.ts';
import { createWebhooks, type Webhooks } from '../../src/runner/webhooks.ts';
import { createMemoryDriver } from '../../src/storage/index.ts';
import { loadOrCreateTls } from '../../src/tls.ts';

const secret = 'receiver-shared-secret';
const event: RegistryEvent = {
  type: 'manifest.pushed',
  repository: 'team/web',
  digest: `sha256:${'b'.repeat(64)}`,
  mediaType: 'application/vnd.oci.image.index.v1+json',
  size: 900,
  tags: ['v1.4.0'],
  at: new Date().toISOString(),
};

interface Received {
  headers: IncomingMessage['headers'];
  body: Buffer;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

function close(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Answers each request with the next status of `statuses` (then 204), keeping what it got. */
function receiver(statuses: number[], received: Received[]) {
  return (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks) });
      res.statusCode = statuses.shift() ?? 204;
      res.end();
    });
  };
}

/** What a receiver does: recompute the MAC over "<timestamp>.<raw body>" and compare in constant time. */
function verify(r: Received, key: string): boolean {
  const ts = r.headers['x-berth-timestamp'];
  const sig = r.headers['x-berth-signature'];
  if (typeof ts !== 'string' || typeof sig !== 'string') return false;
  if (Math.abs(Date.now() / 1000 - Number(ts)) > 300) return false;
  const expected = Buffer.from(
    `sha256=${createHmac('sha256', key)
      .update(Buffer.concat([Buffer.from(`${ts}.`), r.body]))
      .digest('hex')}`,
  );
  const given = Buffer.from(sig);
  return expected.length === given.length && timingSafeEqual(expected, given);
}

function webhooks(endpoints: Parameters<typeof createWebhooks>[0]['endpoints'], maxAttempts = 5): Webhooks {
  const w = createWebhooks({
    storage: createMemoryDriver(),
    prefix: '/runner/webhooks',
    log: silentLogger,
    endpoints,
    outbound: createOutbound({ allowHosts: ['127.0.0.1'] }),
    baseDelayMs: 20,
    maxDelayMs: 200,
    maxAttempts,
  });
  cleanups.push(() => w.stop());
  return w;
}

describe('webhooks to a real receiver', () => {
  it('retries a receiver that fails twice, then delivers a CloudEvent it can verify', async () => {
    const received: Received[] = [];
    const server = createServer(receiver([503, 500], received));
    const port = await listen(server);
    cleanups.push(() => close(server));

    const w = webhooks([{ id: 'ci', url: `http://127.0.0.1:${port}/hooks/berth`, secret }]);
    await w.start();
    await w.record(event);
    await w.idle();

    expect(received).toHaveLength(3);
    for (const r of received) {
      expect(verify(r, secret)).toBe(true);
      expect(verify(r, 'some-other-secret')).toBe(false);
      expect(r.headers['content-type']).toBe('application/cloudevents+json; charset=utf-8');
    }
    const bodies = received.map((r) => JSON.parse(r.body.toString('utf8')));
    expect(new Set(bodies.map((b) => b.id)).size).toBe(1);
    expect(bodies[0]).toMatchObject({
      specversion: '1.0',
      type: 'dev.berth.manifest.pushed',
      source: 'urn:berth:registry',
      subject: `team/web@${event.type === 'manifest.pushed' ? event.digest : ''}`,
      datacontenttype: 'application/json',
      data: event,
    });
    // A tampered body no longer verifies.
    const tampered = {
      ...received[2]!,
      body: Buffer.from(received[2]!.body.toString().replace('v1.4.0', 'v9.9.9')),
    };
    expect(verify(tampered, secret)).toBe(false);

    const [delivery] = (await w.deliveries()).deliveries;
    expect(delivery).toMatchObject({ status: 'delivered', attempts: 3, lastStatusCode: 204 });
  });

  it('delivers to an HTTPS receiver through the endpoint CA, and not without it', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'berth-webhook-tls-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const tls = await loadOrCreateTls({ dataDir, names: ['127.0.0.1'] });
    const ca = readFileSync(tls.caPath!, 'utf8');
    const received: Received[] = [];
    const server = createHttpsServer({ key: tls.key, cert: tls.cert }, receiver([], received));
    const port = await listen(server as unknown as Server);
    cleanups.push(() => close(server as unknown as Server));
    const url = `https://127.0.0.1:${port}/hook`;

    const w = webhooks(
      [
        { id: 'trusted', url, secret, ca },
        { id: 'untrusted', url, secret },
      ],
      2,
    );
    await w.start();
    await w.record(event);
    await w.idle();

    expect(received).toHaveLength(1);
    expect(verify(received[0]!, secret)).toBe(true);
    const trusted = (await w.deliveries({ endpointId: 'trusted' })).deliveries[0];
    expect(trusted).toMatchObject({ status: 'delivered', attempts: 1 });
    const untrusted = (await w.deliveries({ endpointId: 'untrusted' })).deliveries[0];
    expect(untrusted).toMatchObject({ status: 'failed', attempts: 2 });
    expect(untrusted?.lastError).toMatch(/gave up after 2 attempts: .*(CERT|certificate|VERIFY|ISSUER)/i);
  });
});
