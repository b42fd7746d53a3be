import { createHmac } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../errors.ts';
import type { RegistryEvent } from '../events.ts';
import { silentLogger } from '../log.ts';
import { createOutbound, type Outbound, OutboundError, type OutboundInit } from '../outbound.ts';
import { createMemoryDriver, type StorageDriver } from '../storage/index.ts';
import {
  createWebhooks,
  toCloudEvent,
  validateWebhookEndpoints,
  type WebhookEndpoint,
  type Webhooks,
  type WebhooksOptions,
} from './webhooks.ts';

const secret = 'a-secret-of-some-length';
const pushed: RegistryEvent = {
  type: 'manifest.pushed',
  repository: 'team/web',
  digest: `sha256:${'a'.repeat(64)}`,
  mediaType: 'application/vnd.oci.image.index.v1+json',
  size: 321,
  tags: ['latest'],
  at: '2025-03-01T12:00:00.000Z',
};
const tagDeleted: RegistryEvent = {
  type: 'tag.deleted',
  repository: 'team/web',
  tag: 'old',
  at: '2025-03-01T12:00:01.000Z',
};

interface Seen {
  url: string;
  headers: Record<string, string>;
  body: string;
}

const policy = createOutbound({ allowHosts: [] });

/** The outbound rules as berth applies them, with requests answered by `answer` instead of a network. */
function outboundAnswering(
  answer: (
    url: string,
    init: OutboundInit,
  ) => Promise<{ status: number; headers?: Record<string, string>; body?: string }>,
): Outbound {
  return {
    check: policy.check,
    request: async (url, init) => {
      const a = await answer(String(url), init);
      return {
        status: a.status,
        headers: a.headers ?? {},
        body: Buffer.from(a.body ?? ''),
        truncated: false,
      };
    },
  };
}

/** Answers from a script, one status per call, and records what it was sent. */
function scriptedFetch(statuses: (number | 'network')[]) {
  const seen: Seen[] = [];
  const impl = outboundAnswering(async (url, init) => {
    seen.push({ url, headers: { ...init.headers }, body: String(init.body) });
    const next = statuses.shift() ?? 200;
    if (next === 'network')
      throw new OutboundError('network', `POST ${url}: ECONNREFUSED: connect ECONNREFUSED`);
    return { status: next };
  });
  return { impl, seen };
}

const opened: Webhooks[] = [];
afterEach(() => {
  for (const w of opened.splice(0)) w.stop();
});

function make(storage: StorageDriver, endpoints: WebhookEndpoint[], extra: Partial<WebhooksOptions> = {}) {
  const w = createWebhooks({
    storage,
    prefix: '/runner/webhooks',
    log: silentLogger,
    endpoints,
    baseDelayMs: 5,
    maxDelayMs: 50,
    ...extra,
  });
  opened.push(w);
  return w;
}

describe('CloudEvents', () => {
  it('carries the registry event as a structured CloudEvent', () => {
    expect(toCloudEvent(pushed, 'e1', 'urn:berth:registry')).toEqual({
      specversion: '1.0',
      id: 'e1',
      source: 'urn:berth:registry',
      type: 'dev.berth.manifest.pushed',
      time: pushed.at,
      subject: `team/web@sha256:${'a'.repeat(64)}`,
      datacontenttype: 'application/json',
      data: pushed,
    });
    expect(toCloudEvent(tagDeleted, 'e2', 's').subject).toBe('team/web:old');
  });
});

describe('validateWebhookEndpoints', () => {
  const ok = { id: 'ci', url: 'https://ci.example/hook', secret };
  it.each([
    [[{ ...ok, id: 'a b' }], 'webhooks[0].id'],
    [[ok, ok], 'webhooks[1].id'],
    [[{ ...ok, url: 'ftp://x' }], 'webhooks[0].url'],
    [[{ ...ok, url: 'not a url' }], 'webhooks[0].url'],
    [[{ ...ok, secret: 'short' }], 'webhooks[0].secret'],
    [[{ ...ok, events: ['push'] }], 'webhooks[0].events'],
    [[{ ...ok, ca: 'not PEM' }], 'webhooks[0].ca'],
    [[{ ...ok, url: 'http://ci.example/hook' }], 'webhooks[0].url'],
    [[{ ...ok, url: 'https://127.0.0.1:9000/hook' }], 'webhooks[0].url'],
    [[{ ...ok, url: 'https://169.254.169.254/' }], 'webhooks[0].url'],
    [[{ ...ok, retries: 3 }], 'webhooks[0].retries'],
  ])('names the bad key (%#)', (value, key) => {
    try {
      validateWebhookEndpoints(value);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).key).toBe(key);
    }
  });
  it('accepts a good list', () => {
    expect(validateWebhookEndpoints([ok, { ...ok, id: 'b', events: ['tag.deleted'] }])).toHaveLength(2);
  });
  it('says which key allows plain http or a local receiver, and takes it into account', () => {
    const local = [{ ...ok, url: 'http://127.0.0.1:9000/hook' }];
    expect(() => validateWebhookEndpoints(local, 'runner.webhooksFile')).toThrow(
      'config runner.webhooksFile[0].url: http://127.0.0.1:9000 is plain http, which berth uses only for ' +
        'hosts the operator allows: list "127.0.0.1:9000" in outbound.allowHosts to allow it',
    );
    const allowing = createOutbound({ allowHosts: ['127.0.0.1:9000'] });
    expect(validateWebhookEndpoints(local, 'runner.webhooksFile', allowing)).toHaveLength(1);
  });
});

describe('webhook deliveries', () => {
  it('signs each attempt over its timestamp and the body, with one event id across retries', async () => {
    const storage = createMemoryDriver();
    const fetch = scriptedFetch([503, 'network', 200]);
    const hooks = make(storage, [{ id: 'ci', url: 'https://receiver.test/hook', secret }], {
      outbound: fetch.impl,
    });
    await hooks.start();
    await hooks.record(pushed);
    await hooks.idle();

    expect(fetch.seen).toHaveLength(3);
    const ids = new Set<string>();
    for (const { headers, body } of fetch.seen) {
      expect(headers['content-type']).toBe('application/cloudevents+json; charset=utf-8');
      const ts = headers['x-berth-timestamp']!;
      expect(ts).toMatch(/^\d+$/);
      const mac = createHmac('sha256', secret).update(`${ts}.${body}`).digest('hex');
      expect(headers['x-berth-signature']).toBe(`sha256=${mac}`);
      const ce = JSON.parse(body);
      expect(ce).toMatchObject({ specversion: '1.0', type: 'dev.berth.manifest.pushed', data: pushed });
      ids.add(ce.id);
    }
    expect(ids.size).toBe(1);
    const { deliveries } = await hooks.deliveries();
    expect(deliveries).toHaveLength(1);
    expect(deliveries[0]).toMatchObject({
      status: 'delivered',
      attempts: 3,
      lastStatusCode: 200,
      endpointId: 'ci',
    });
  });

  it('gives up after maxAttempts on 5xx, and at once on a 4xx', async () => {
    const storage = createMemoryDriver();
    const seen: string[] = [];
    const byHost = outboundAnswering(async (url) => {
      seen.push(url);
      return url.includes('down') ? { status: 500 } : { status: 404, body: 'no such hook\n' };
    });
    const hooks = make(
      storage,
      [
        { id: 'down', url: 'https://down.test/', secret },
        { id: 'gone', url: 'https://gone.test/', secret, events: ['tag.deleted'] },
      ],
      { outbound: byHost, maxAttempts: 3 },
    );
    await hooks.start();
    await hooks.record(pushed);
    await hooks.record(tagDeleted);
    await hooks.idle();
    const down = (await hooks.deliveries({ endpointId: 'down' })).deliveries;
    expect(down.map((d) => [d.status, d.attempts, d.event.type])).toEqual([
      ['failed', 3, 'dev.berth.tag.deleted'],
      ['failed', 3, 'dev.berth.manifest.pushed'],
    ]);
    expect(down[1]?.lastError).toBe('gave up after 3 attempts: the receiver answered 500');
    // 'gone' takes only tag.deleted, and its 404 ends the delivery at the first attempt.
    const gone = (await hooks.deliveries({ endpointId: 'gone' })).deliveries;
    expect(gone.map((d) => [d.status, d.attempts, d.lastError])).toEqual([
      ['failed', 1, 'the receiver answered 404: no such hook'],
    ]);
    expect(seen.filter((u) => u.includes('gone'))).toHaveLength(1);
    expect((await hooks.deliveries({ status: 'failed' })).deliveries).toHaveLength(3);
    expect((await hooks.deliveries({ status: 'delivered' })).deliveries).toHaveLength(0);
  });

  it('honours Retry-After, capped at maxDelayMs', async () => {
    const storage = createMemoryDriver();
    let calls = 0;
    let open!: () => void;
    const gate = new Promise<void>((r) => {
      open = r;
    });
    // The second attempt waits for the test, so the state after the first one holds still.
    const limited = outboundAnswering(async () => {
      calls++;
      if (calls === 1) return { status: 429, headers: { 'retry-after': '3600' } };
      await gate;
      return { status: 200 };
    });
    const clock = 1_000_000;
    const hooks = make(storage, [{ id: 'ci', url: 'https://r.test/', secret }], {
      outbound: limited,
      clock: () => clock,
      maxDelayMs: 30,
    });
    await hooks.start();
    await hooks.record(pushed);
    while ((await hooks.deliveries()).deliveries[0]?.attempts !== 1)
      await new Promise((r) => setTimeout(r, 5));
    // Waits maxDelayMs after the 429, not the hour it asked for.
    expect((await hooks.deliveries()).deliveries[0]).toMatchObject({
      status: 'pending',
      lastStatusCode: 429,
      nextAttemptAt: clock + 30,
    });
    open();
    await hooks.idle();
    expect((await hooks.deliveries()).deliveries[0]).toMatchObject({ status: 'delivered', attempts: 2 });
  });

  it('keeps undelivered events across a restart and sends them then', async () => {
    const storage = createMemoryDriver();
    const first = make(storage, [{ id: 'ci', url: 'https://r.test/', secret }], {
      outbound: scriptedFetch([]).impl,
    });
    await first.record(pushed); // never started: a crash right after the registry committed
    first.stop();
    const fetch = scriptedFetch([200]);
    const second = make(storage, [{ id: 'ci', url: 'https://r.test/', secret }], { outbound: fetch.impl });
    await second.start();
    await second.idle();
    expect(fetch.seen).toHaveLength(1);
    expect((await second.deliveries()).deliveries.map((d) => d.status)).toEqual(['delivered']);
    expect(await storage.list('/runner/webhooks/pending').catch(() => [])).toEqual([]);
  });

  it('pages deliveries newest first', async () => {
    const storage = createMemoryDriver();
    const hooks = make(storage, [{ id: 'ci', url: 'https://r.test/', secret }], {
      outbound: scriptedFetch([]).impl,
    });
    await hooks.start();
    for (let i = 0; i < 5; i++) await hooks.record({ ...tagDeleted, tag: `t${i}` });
    await hooks.idle();
    const page1 = await hooks.deliveries({ limit: 3 });
    expect(page1.deliveries.map((d) => (d.event.data as { tag: string }).tag)).toEqual(['t4', 't3', 't2']);
    const page2 = await hooks.deliveries({ limit: 3, nextToken: page1.nextToken! });
    expect(page2.deliveries.map((d) => (d.event.data as { tag: string }).tag)).toEqual(['t1', 't0']);
    expect(page2.nextToken).toBeUndefined();
  });
});
