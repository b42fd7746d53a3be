// Joins the sub-apps into the one Hono app main.ts serves.
import { Hono } from 'hono';
import { OciError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Registry } from '../registry/index.ts';
import type { AppEnv } from './env.ts';
import { healthRoutes, type Readiness } from './health.ts';
import { distributionApiVersion, requestContext } from './middleware.ts';
import { errorResponse } from './respond.ts';
import { type V2Options, v2Routes } from './v2.ts';

export interface AppDeps {
  readonly log: Logger;
  readonly registry: Registry;
  readonly readiness: Readiness;
  readonly v2: V2Options;
  readonly trustProxy?: boolean;
  readonly scheme?: 'http' | 'https';
}

export function createApp(deps: AppDeps) {
  // Not strict: /v2 and /v2/, /blobs/uploads and /blobs/uploads/ are the same endpoint to clients.
  const app = new Hono<AppEnv>({ strict: false });
  app.use(
    requestContext({ log: deps.log, trustProxy: deps.trustProxy ?? false, scheme: deps.scheme ?? 'https' }),
  );
  app.use(distributionApiVersion());
  app.route('/', healthRoutes(deps.readiness));
  app.route('/v2', v2Routes(deps.registry, deps.v2));
  app.notFound((c) => {
    return errorResponse(
      c,
      new OciError('NOT_FOUND', `no ${c.req.method} endpoint at ${c.req.path.slice(0, 200)}`),
    );
  });
  app.onError((err, c) => errorResponse(c, err));
  return app;
}

export type App = ReturnType<typeof createApp>;
