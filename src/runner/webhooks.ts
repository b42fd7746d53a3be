// Registry events to configured webhooks, as CloudEvents 1.0 in structured JSON mode
// (Content-Type: application/cloudevents+json), signed, retried, and durable.
//
// Signature scheme (what a receiver checks):
//   X-Berth-Timestamp: <unix seconds when this attempt was sent>
//   X-Berth-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>
// The receiver recomputes the MAC over the timestamp header, a '.', and the body bytes exactly as
// received, compares in constant time, and refuses a timestamp far from its clock (5 minutes is the
// usual window): the timestamp inside the MAC is what stops a captured request being replayed
// later. Every attempt is signed afresh, so a retry carries its own timestamp. The CloudEvent `id`
// is the same for every attempt and every endpoint of one registry event, so a receiver dedupes
// retries (delivery is at least once: a crash after the receiver answered but before the answer
// was stored sends it again).
//
// Retries: network errors, timeouts, 408, 429 and 5xx are retried with exponential backoff and
// jitter (a 429/503's Retry-After is honoured, capped by maxDelayMs) up to maxAttempts; any other
// answer (2xx delivered; 3xx, 4xx failed) ends the delivery. Redirects are not followed: a signed
// event goes only to the URL configured.
//
// Every attempt goes through outbound.ts: https only unless the receiver's host is listed in
// outbound.allowHosts (checked when the endpoints are loaded, naming both keys), not to this
// machine or a metadata address unless listed, one deadline (the endpoint's timeoutMs, default
// 10 s) for connecting, sending and the whole answer, and no more of the answer read than an
// excerpt for the delivery record: a receiver that trickles or answers with gigabytes holds an
// attempt no longer than the deadline and costs at most that excerpt.
//
// Storage under `prefix`: pending/<deliveryId>.json until a delivery ends, then done/<id>.json
// (written before the pending one is deleted; start() tidies a crash in between). record() writes
// the pending documents before it resolves, so an event the registry committed is not lost.
//
// TLS: https receivers are checked against the system CAs, or only against an endpoint's `ca` (PEM)
// when it has one.

import { createHmac } from 'node:crypto';
import { ConfigError } from '../errors.ts';
import type { RegistryEvent } from '../events.ts';
import type { Logger } from '../log.ts';
import { createOutbound, type Outbound, OutboundError } from '../outbound.ts';
import { PathNotFoundError, type StorageDriver } from '../storage/index.ts';
import { recordNames, sortableIds } from './records.ts';

export interface WebhookEndpoint {
  /** A name for logs, listings and storage paths: letters, digits, '_', '-'. */
  readonly id: string;
  readonly url: string;
  /** The HMAC key (at least 16 characters). */
  readonly secret: string;
  /** Registry event types to send ('manifest.pushed', 'manifest.deleted', 'tag.deleted'); all when absent. */
  readonly events?: readonly string[];
  /** PEM CA certificate(s) to trust for an https receiver instead of the system CAs. */
  readonly ca?: string;
  /** Per attempt; default 10 s. */
  readonly timeoutMs?: number;
}

export interface CloudEvent {
  readonly specversion: '1.0';
  readonly id: string;
  readonly source: string;
  readonly type: string;
  readonly time: string;
  readonly subject: string;
  readonly datacontenttype: 'application/json';
  readonly data: RegistryEvent;
}

export type DeliveryStatus = 'pending' | 'delivered' | 'failed';

export interface WebhookDelivery {
  readonly id: string;
  readonly endpointId: string;
  readonly url: string;
  readonly event: CloudEvent;
  readonly status: DeliveryStatus;
  readonly attempts: number;
  /** Epoch ms of the next attempt while pending. */
  readonly nextAttemptAt?: number;
  readonly lastStatusCode?: number;
  readonly lastError?: string;
  readonly createdAt: string;
  readonly finishedAt?: string;
}

export interface WebhooksOptions {
  readonly storage: StorageDriver;
  /** Storage path for deliveries, e.g. '/runner/webhooks'. */
  readonly prefix: string;
  readonly log: Logger;
  readonly endpoints: readonly WebhookEndpoint[];
  /** The CloudEvents `source`; default 'urn:berth:registry'. */
  readonly source?: string;
  /** Where and how requests may go (outbound.allowHosts); default: nothing allowed beyond https. */
  readonly outbound?: Outbound;
  /** Attempts before a delivery fails; default 8. */
  readonly maxAttempts?: number;
  /** First retry delay; doubles per attempt. Default 1000 ms. */
  readonly baseDelayMs?: number;
  /** Cap on one retry delay (and on a Retry-After). Default 5 minutes. */
  readonly maxDelayMs?: number;
  /** Attempts in flight at once; default 4. */
  readonly concurrency?: number;
  readonly clock?: () => number;
  /** [0, 1); for the jitter. */
  readonly random?: () => number;
}

export interface Webhooks {
  /** Stores one delivery per interested endpoint; resolves once they are durable. */
  record(event: RegistryEvent): Promise<void>;
  /** Tidies what a previous process left and sends what is pending. */
  start(): Promise<void>;
  /** Stops timers and new attempts; pending deliveries stay for the next start(). */
  stop(): void;
  /** Newest first. */
  deliveries(opts?: {
    endpointId?: string;
    status?: DeliveryStatus;
    limit?: number;
    nextToken?: string;
  }): Promise<{
    deliveries: WebhookDelivery[];
    nextToken?: string;
  }>;
  /** Resolves once nothing is pending (for tests: with short delays). */
  idle(): Promise<void>;
}

export class WebhookError extends Error {
  readonly code: 'INVALID';
  constructor(message: string) {
    super(message);
    this.name = 'WebhookError';
    this.code = 'INVALID';
  }
}

const eventTypes = ['manifest.pushed', 'manifest.deleted', 'tag.deleted'] as const;
const endpointIdPattern = /^[A-Za-z0-9_-]{1,64}$/;
const deliveryIdPattern = /^\d{17}[0-9a-f]{6}\.[A-Za-z0-9_-]{1,64}$/;

export const SIGNATURE_HEADER = 'x-berth-signature';
export const TIMESTAMP_HEADER = 'x-berth-timestamp';

/** `sha256=<hex>` for a body sent at `timestamp` (unix seconds, as sent in X-Berth-Timestamp). */
export function signWebhook(secret: string, timestamp: string, body: string | Uint8Array): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex')}`;
}

export function toCloudEvent(event: RegistryEvent, id: string, source: string): CloudEvent {
  const subject =
    event.type === 'tag.deleted' ? `${event.repository}:${event.tag}` : `${event.repository}@${event.digest}`;
  return {
    specversion: '1.0',
    id,
    source,
    type: `dev.berth.${event.type}`,
    time: event.at,
    subject,
    datacontenttype: 'application/json',
    data: event,
  };
}

const strictOutbound = createOutbound({ allowHosts: [] });

/** How much of a receiver's answer is read: the start of it is kept in the delivery record. */
const excerptBytes = 1024;
const excerptChars = 200;

/**
 * The endpoints as configured, checked; ConfigError names the key (`<key>[i].field`). A url that
 * `outbound` refuses (plain http, a loopback or metadata address) also names outbound.allowHosts.
 */
export function validateWebhookEndpoints(
  value: unknown,
  key = 'webhooks',
  outbound: Outbound = strictOutbound,
): WebhookEndpoint[] {
  if (!Array.isArray(value)) throw new ConfigError(key, 'must be a list of endpoints');
  const seen = new Set<string>();
  return value.map((e, i) => {
    const at = `${key}[${i}]`;
    if (typeof e !== 'object' || e === null || Array.isArray(e))
      throw new ConfigError(at, 'must be an object');
    const v = e as Record<string, unknown>;
    for (const k of Object.keys(v)) {
      if (!['id', 'url', 'secret', 'events', 'ca', 'timeoutMs'].includes(k)) {
        throw new ConfigError(`${at}.${k}`, 'unknown field; expected id, url, secret, events, ca, timeoutMs');
      }
    }
    if (typeof v.id !== 'string' || !endpointIdPattern.test(v.id)) {
      throw new ConfigError(`${at}.id`, "must be 1-64 letters, digits, '_' or '-'");
    }
    if (seen.has(v.id)) throw new ConfigError(`${at}.id`, `"${v.id}" is used by another endpoint`);
    seen.add(v.id);
    let url: URL;
    try {
      url = new URL(String(v.url));
    } catch {
      throw new ConfigError(`${at}.url`, `${JSON.stringify(v.url)} is not a URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new ConfigError(`${at}.url`, 'must be an https:// URL');
    }
    if (url.username || url.password) throw new ConfigError(`${at}.url`, 'must not carry credentials');
    try {
      outbound.check(url);
    } catch (err) {
      if (!(err instanceof OutboundError)) throw err;
      throw new ConfigError(`${at}.url`, err.message);
    }
    if (typeof v.secret !== 'string' || v.secret.length < 16) {
      throw new ConfigError(`${at}.secret`, 'must be a string of at least 16 characters');
    }
    if (v.events !== undefined) {
      if (!Array.isArray(v.events) || v.events.some((t) => !(eventTypes as readonly unknown[]).includes(t))) {
        throw new ConfigError(`${at}.events`, `must be a list of ${eventTypes.join(', ')}`);
      }
    }
    if (v.ca !== undefined) {
      if (typeof v.ca !== 'string' || !v.ca.includes('-----BEGIN CERTIFICATE-----')) {
        throw new ConfigError(`${at}.ca`, 'must be PEM certificate text');
      }
      if (url.protocol !== 'https:') throw new ConfigError(`${at}.ca`, 'only applies to an https:// url');
    }
    if (v.timeoutMs !== undefined && !(Number.isSafeInteger(v.timeoutMs) && (v.timeoutMs as number) > 0)) {
      throw new ConfigError(`${at}.timeoutMs`, 'must be a positive integer');
    }
    return v as unknown as WebhookEndpoint;
  });
}

interface Outcome {
  readonly statusCode?: number;
  readonly error?: string;
  /** From Retry-After, in ms. */
  readonly retryAfterMs?: number;
  /** The start of the answer's body, as printable text. */
  readonly excerpt?: string;
}

/** The start of a receiver's answer, safe to store and show: printable, single-line, short. */
function excerptOf(body: Buffer, truncated: boolean): string | undefined {
  const text = body
    .toString('utf8')
    .replace(/[\p{Cc}\p{Cf}\uFFFD]+/gu, ' ')
    .trim();
  if (text === '') return undefined;
  return text.length > excerptChars || truncated ? `${text.slice(0, excerptChars)}...` : text;
}

function retryAfterMs(value: string | null | undefined, now: number): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

export function createWebhooks(opts: WebhooksOptions): Webhooks {
  const { storage, log } = opts;
  const endpoints = validateWebhookEndpoints(opts.endpoints, 'endpoints', opts.outbound);
  const byId = new Map(endpoints.map((e) => [e.id, e]));
  const prefix = opts.prefix.replace(/\/+$/, '');
  const source = opts.source ?? 'urn:berth:registry';
  const outbound = opts.outbound ?? strictOutbound;
  const maxAttempts = opts.maxAttempts ?? 8;
  const baseDelayMs = opts.baseDelayMs ?? 1000;
  const maxDelayMs = opts.maxDelayMs ?? 5 * 60_000;
  const concurrency = opts.concurrency ?? 4;
  const now = opts.clock ?? Date.now;
  const random = opts.random ?? Math.random;

  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const path = (dir: 'pending' | 'done', id: string) => `${prefix}/${dir}/${id}.json`;

  async function read(p: string): Promise<WebhookDelivery | undefined> {
    try {
      return JSON.parse(decoder.decode(await storage.getContent(p))) as WebhookDelivery;
    } catch (err) {
      if (err instanceof PathNotFoundError) return undefined;
      throw err;
    }
  }
  const write = (p: string, d: WebhookDelivery) => storage.putContent(p, encoder.encode(JSON.stringify(d)));
  async function remove(p: string) {
    try {
      await storage.delete(p);
    } catch (err) {
      if (!(err instanceof PathNotFoundError)) throw err;
    }
  }
  const names = (dir: 'pending' | 'done') => recordNames(storage, `${prefix}/${dir}`);
  const newEventId = sortableIds(now);

  let started = false;
  let stopped = false;
  const timers = new Map<string, NodeJS.Timeout>();
  const ready: string[] = [];
  const active = new Set<Promise<void>>();

  /** Delivery ids waiting to start or being attempted: never two attempts of one at once. */
  const taken = new Set<string>();

  /** `retry`: scheduled by the delivery's own attempt, which still holds it. */
  function scheduleAt(id: string, at: number, retry = false) {
    if (stopped || timers.has(id) || (taken.has(id) && !retry)) return;
    taken.add(id);
    const timer = setTimeout(
      () => {
        timers.delete(id);
        ready.push(id);
        pump();
      },
      Math.max(0, at - now()),
    );
    timers.set(id, timer);
  }

  function pump() {
    while (!stopped && active.size < concurrency && ready.length > 0) {
      const id = ready.shift()!;
      const p = attempt(id)
        .catch((err) => {
          // Storage failed around an attempt: the delivery stays pending and is tried on the next start.
          log.error({ err, deliveryId: id }, 'webhook delivery could not be recorded');
        })
        .finally(() => {
          active.delete(p);
          if (!timers.has(id)) taken.delete(id);
          pump();
        });
      active.add(p);
    }
  }

  async function send(endpoint: WebhookEndpoint, delivery: WebhookDelivery): Promise<Outcome> {
    const body = JSON.stringify(delivery.event);
    const timestamp = String(Math.floor(now() / 1000));
    const headers: Record<string, string> = {
      'content-type': 'application/cloudevents+json; charset=utf-8',
      'user-agent': 'berth-webhooks',
      [TIMESTAMP_HEADER]: timestamp,
      [SIGNATURE_HEADER]: signWebhook(endpoint.secret, timestamp, body),
      'x-berth-delivery': delivery.id,
    };
    try {
      const res = await outbound.request(endpoint.url, {
        method: 'POST',
        headers,
        body,
        ...(endpoint.ca !== undefined && { ca: endpoint.ca }),
        timeoutMs: endpoint.timeoutMs ?? 10_000,
        maxBodyBytes: excerptBytes,
        overflow: 'truncate',
      });
      const ra = res.headers['retry-after'];
      const wait = typeof ra === 'string' ? retryAfterMs(ra, now()) : undefined;
      const excerpt = excerptOf(res.body, res.truncated);
      return {
        statusCode: res.status,
        ...(wait !== undefined && { retryAfterMs: wait }),
        ...(excerpt !== undefined && { excerpt }),
      };
    } catch (err) {
      if (err instanceof OutboundError) return { error: err.message };
      throw err;
    }
  }

  async function finish(
    delivery: WebhookDelivery,
    status: 'delivered' | 'failed',
    extra: Partial<WebhookDelivery>,
  ) {
    const { nextAttemptAt: _next, ...rest } = delivery;
    const done: WebhookDelivery = { ...rest, ...extra, status, finishedAt: new Date(now()).toISOString() };
    await write(path('done', delivery.id), done);
    await remove(path('pending', delivery.id));
    const ctx = { deliveryId: delivery.id, endpoint: delivery.endpointId, attempts: done.attempts };
    if (status === 'delivered') log.info(ctx, 'webhook delivered');
    else
      log.warn({ ...ctx, statusCode: done.lastStatusCode, error: done.lastError }, 'webhook delivery failed');
  }

  async function attempt(id: string) {
    const delivery = await read(path('pending', id));
    if (!delivery) return;
    const endpoint = byId.get(delivery.endpointId);
    if (!endpoint || endpoint.url !== delivery.url) {
      return finish(delivery, 'failed', {
        lastError: 'the endpoint is no longer configured (or its url changed)',
      });
    }
    const outcome = await send(endpoint, delivery);
    const attempts = delivery.attempts + 1;
    const seen = {
      attempts,
      ...(outcome.statusCode !== undefined && { lastStatusCode: outcome.statusCode }),
      ...(outcome.error !== undefined && { lastError: outcome.error }),
    };
    const code = outcome.statusCode;
    if (code !== undefined && code >= 200 && code < 300) return finish(delivery, 'delivered', seen);
    const answered = `the receiver answered ${code}${outcome.excerpt !== undefined ? `: ${outcome.excerpt}` : ''}`;
    const retryable = code === undefined || code >= 500 || code === 429 || code === 408;
    if (!retryable) return finish(delivery, 'failed', { ...seen, lastError: answered });
    if (attempts >= maxAttempts) {
      return finish(delivery, 'failed', {
        ...seen,
        lastError: `gave up after ${attempts} attempts: ${outcome.error ?? answered}`,
      });
    }
    // Exponential with "equal jitter": at least half the step, so retries never bunch at zero.
    const step = Math.min(maxDelayMs, baseDelayMs * 2 ** (attempts - 1));
    const backoff = step / 2 + random() * (step / 2);
    const delay = Math.min(maxDelayMs, Math.max(backoff, outcome.retryAfterMs ?? 0));
    const next: WebhookDelivery = { ...delivery, ...seen, nextAttemptAt: now() + Math.round(delay) };
    await write(path('pending', id), next);
    log.info(
      { deliveryId: id, attempts, statusCode: code, error: outcome.error, delayMs: delay },
      'webhook retry',
    );
    scheduleAt(id, next.nextAttemptAt!, true);
  }

  return {
    async record(event) {
      const targets = endpoints.filter((e) => !e.events || e.events.includes(event.type));
      if (targets.length === 0) return;
      const ce = toCloudEvent(event, newEventId(), source);
      const createdAt = new Date(now()).toISOString();
      const deliveries = targets.map(
        (e): WebhookDelivery => ({
          id: `${ce.id}.${e.id}`,
          endpointId: e.id,
          url: e.url,
          event: ce,
          status: 'pending',
          attempts: 0,
          nextAttemptAt: now(),
          createdAt,
        }),
      );
      await Promise.all(deliveries.map((d) => write(path('pending', d.id), d)));
      if (started && !stopped) for (const d of deliveries) scheduleAt(d.id, d.nextAttemptAt!);
    },

    async start() {
      if (started) return;
      started = true;
      const done = new Set(await names('done'));
      for (const id of await names('pending')) {
        if (done.has(id)) {
          await remove(path('pending', id)); // finished just before a crash
          continue;
        }
        const d = await read(path('pending', id));
        if (d) scheduleAt(id, d.nextAttemptAt ?? now());
      }
    },

    stop() {
      stopped = true;
      for (const t of timers.values()) clearTimeout(t);
      timers.clear();
      ready.length = 0;
    },

    async deliveries(q = {}) {
      const limit = q.limit ?? 50;
      if (!Number.isSafeInteger(limit) || limit < 1 || limit > 1000) {
        throw new WebhookError('limit: must be an integer from 1 to 1000');
      }
      if (q.nextToken !== undefined && !deliveryIdPattern.test(q.nextToken)) {
        throw new WebhookError('nextToken: not a token this list returned');
      }
      const dirs: ('pending' | 'done')[] =
        q.status === 'pending' ? ['pending'] : q.status === undefined ? ['pending', 'done'] : ['done'];
      const found = new Map<string, 'pending' | 'done'>();
      for (const dir of dirs)
        for (const id of await names(dir)) if (!found.has(id) || dir === 'done') found.set(id, dir);
      let ids = [...found.keys()]
        .filter((id) => deliveryIdPattern.test(id))
        .sort()
        .reverse();
      if (q.endpointId !== undefined) ids = ids.filter((id) => id.endsWith(`.${q.endpointId}`));
      if (q.nextToken !== undefined) {
        const token = q.nextToken;
        ids = ids.filter((id) => id < token);
      }
      const out: WebhookDelivery[] = [];
      let last: string | undefined;
      for (const id of ids) {
        if (out.length === limit) return { deliveries: out, nextToken: last! };
        const d = await read(path(found.get(id)!, id));
        last = id;
        if (d && (q.status === undefined || d.status === q.status)) out.push(d);
      }
      return { deliveries: out };
    },

    async idle() {
      while (timers.size > 0 || ready.length > 0 || active.size > 0) {
        if (active.size > 0) await Promise.race(active);
        else await new Promise((r) => setTimeout(r, 10));
      }
    },
  };
}
