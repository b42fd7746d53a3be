// Liveness and readiness for orchestrators: /healthz answers while the process runs;
// /readyz only while storage answers and the server is not draining for shutdown.
import { Hono } from 'hono';
import type { AppEnv } from './env.ts';

export interface Readiness {
  /** Resolves if the backing storage answers; rejects with the reason otherwise. */
  check(): Promise<void>;
  /** True once shutdown has begun. */
  draining(): boolean;
}

export function healthRoutes(readiness: Readiness) {
  const app = new Hono<AppEnv>();
  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', async (c) => {
    if (readiness.draining()) return c.json({ status: 'draining' }, 503);
    try {
      await readiness.check();
      return c.json({ status: 'ready' });
    } catch (e) {
      c.get('log').warn({ err: e }, 'readiness check failed');
      return c.json({ status: 'unavailable', reason: 'storage is not answering' }, 503);
    }
  });
  return app;
}
