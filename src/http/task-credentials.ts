// The task role credentials endpoint (runner/credentials.ts explains the scheme). Not behind
// berth's sign-in: the per-task token in Authorization is the credential, checked by the runner.
// Refusals are `{ code, message }` with a code that matches the status; nothing is cached.
import { Hono } from 'hono';
import type { Logger } from '../log.ts';
import { CredentialsError, credentialsPathPrefix, type Runner, RunnerError } from '../runner/index.ts';
import type { AppEnv } from './env.ts';
import { requestContext } from './middleware.ts';

const codeOf = {
  400: 'InvalidRequest',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'NotFound',
  500: 'InternalServerError',
  503: 'Unavailable',
} as const;

export function taskCredentialsRoutes(runner: Pick<Runner, 'taskCredentials'>): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get(`${credentialsPathPrefix}:task`, async (c) => {
    const refuse = (status: keyof typeof codeOf, message: string) =>
      c.json({ code: codeOf[status], message }, status, { 'Cache-Control': 'no-store' });
    try {
      const creds = await runner.taskCredentials(c.req.param('task'), c.req.header('authorization'));
      return c.json(creds, 200, { 'Cache-Control': 'no-store' });
    } catch (err) {
      if (err instanceof CredentialsError) return refuse(err.status, err.message);
      // Task roles need authentication on (they are minted by auth); without it no task has a role.
      if (err instanceof RunnerError && err.kind === 'unavailable') return refuse(503, err.message);
      // A role that cannot be assumed (deleted since the task started, ...) is the operator's to fix:
      // logged in full, answered without detail.
      c.get('log')?.error({ err, task: c.req.param('task') }, 'task credentials: could not issue');
      return refuse(500, 'could not issue credentials for this task');
    }
  });
  return app;
}

/**
 * The credentials endpoint and nothing else: what berth serves on its task bridge's address
 * (runner.ts), so a bridge task reaches its credentials and no other part of berth (the admin
 * API, /v2, /ecs), whichever address berth's main listener has.
 */
export function credentialsOnlyApp(runner: Pick<Runner, 'taskCredentials'>, log: Logger): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.use(requestContext({ log, trustProxy: false, scheme: 'http' }));
  app.route('/', taskCredentialsRoutes(runner));
  app.notFound((c) =>
    c.json({ code: codeOf[404], message: 'only the task credentials endpoint is served here' }, 404),
  );
  app.onError((err, c) => {
    c.get('log')?.error({ err }, 'task credentials listener');
    return c.json({ code: codeOf[500], message: 'internal error' }, 500);
  });
  return app;
}
