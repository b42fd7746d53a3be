// Joins the sub-apps into the one Hono app main.ts serves.
import { Hono } from 'hono';
import type { Auth } from '../auth/index.ts';
import { OciError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Registry } from '../registry/index.ts';
import type { Runner } from '../runner/index.ts';
import { adminApiBase, createAdminApi } from './admin.ts';
import { adminAuth } from './admin-auth.ts';
import type { AppEnv } from './env.ts';
import { healthRoutes, type Readiness } from './health.ts';
import { distributionApiVersion, requestContext } from './middleware.ts';
import { errorResponse } from './respond.ts';
import { ecsRoutes } from './runner.ts';
import { taskCredentialsRoutes } from './task-credentials.ts';
import { tokenRoutes } from './token.ts';
import { type V2Options, v2Routes } from './v2.ts';

export interface AppDeps {
  readonly log: Logger;
  readonly registry: Registry;
  readonly auth: Auth;
  readonly authOptions: { readonly service: string; readonly basicOnRegistry: boolean };
  readonly readiness: Readiness;
  readonly v2: Pick<V2Options, 'chunkMinLength'>;
  readonly trustProxy?: boolean;
  readonly scheme?: 'http' | 'https';
  /** The task runner; absent when runner.enabled is false (then /ecs says so). */
  readonly runner?: Runner;
  readonly runnerOptions?: { readonly region: string; readonly accountId: string };
}

/** The path the ECS wire API is served at: `aws ecs --endpoint-url https://HOST:PORT/ecs`. */
export const ecsEndpointPath = '/ecs';

export function createApp(deps: AppDeps) {
  // Not strict: /v2 and /v2/, /blobs/uploads and /blobs/uploads/ are the same endpoint to clients.
  const app = new Hono<AppEnv>({ strict: false });
  app.use(
    requestContext({ log: deps.log, trustProxy: deps.trustProxy ?? false, scheme: deps.scheme ?? 'https' }),
  );
  app.use(distributionApiVersion());
  app.route('/', healthRoutes(deps.readiness));
  const { service, basicOnRegistry } = deps.authOptions;
  app.route('/', tokenRoutes({ auth: deps.auth, service }));
  app.route(adminApiBase, createAdminApi(adminAuth(deps.auth, service), deps.runner));
  const runner = deps.runner;
  if (runner) {
    const { region, accountId } = deps.runnerOptions ?? { region: runner.region, accountId: '000000000000' };
    app.route(ecsEndpointPath, ecsRoutes({ auth: deps.auth, api: runner.ecs, region, accountId }));
    app.route('/', taskCredentialsRoutes(runner));
  } else {
    app.all(`${ecsEndpointPath}/*`, (c) =>
      c.json(
        {
          __type: 'ServerException',
          message: 'The task runner is disabled on this berth (runner.enabled=false).',
        },
        503,
        { 'x-amzn-ErrorType': 'ServerException' },
      ),
    );
  }
  app.route(
    '/v2',
    v2Routes(deps.registry, { ...deps.v2, auth: deps.auth, service, basicAuth: basicOnRegistry }),
  );
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
