// Middleware factories: options are checked once, when the app is built.
import { randomUUID } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import type { Logger } from '../log.ts';
import type { AppEnv } from './env.ts';

export interface RequestContextOptions {
  readonly log: Logger;
  /** Honour X-Forwarded-For/Proto/Host: only behind a proxy that sets them. */
  readonly trustProxy: boolean;
  /** The scheme berth itself serves. */
  readonly scheme: 'http' | 'https';
}

/** First value of a possibly comma-separated forwarding header. */
function firstHop(v: string | undefined): string | undefined {
  const first = v?.split(',')[0]?.trim();
  return first || undefined;
}

/**
 * Request id (honouring a sane incoming X-Request-Id), the client's address and origin, a child
 * logger, and one access-log line per request.
 */
export function requestContext(opts: RequestContextOptions): MiddlewareHandler<AppEnv> {
  const { log, trustProxy, scheme } = opts;
  return async (c, next) => {
    const incoming = c.req.header('x-request-id');
    const requestId = incoming && /^[\w.:-]{1,128}$/.test(incoming) ? incoming : randomUUID();
    const socketIp = c.env?.incoming?.socket?.remoteAddress ?? '';
    const clientIp = (trustProxy && firstHop(c.req.header('x-forwarded-for'))) || socketIp;
    const proto = (trustProxy && firstHop(c.req.header('x-forwarded-proto'))) || scheme;
    const host =
      (trustProxy && firstHop(c.req.header('x-forwarded-host'))) || c.req.header('host') || 'localhost';
    const child = log.child({ req: requestId });
    c.set('requestId', requestId);
    c.set('log', child);
    c.set('clientIp', clientIp);
    c.set('origin', `${proto}://${host}`);
    const started = performance.now();
    await next();
    c.header('X-Request-Id', requestId);
    if (child.isLevelEnabled('info')) {
      child.info(
        {
          method: c.req.method,
          path: c.req.path,
          ip: clientIp,
          origin: c.get('origin'),
          status: c.res.status,
          ms: Math.round((performance.now() - started) * 10) / 10,
        },
        'request',
      );
    }
  };
}

/** Docker-Distribution-API-Version on every response, errors and 401s included (old docker clients check /v2/ for it). */
export function distributionApiVersion(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    await next();
    c.res.headers.set('Docker-Distribution-API-Version', 'registry/2.0');
  };
}
