// The task role credentials endpoint (runner/credentials.ts explains the scheme). Not behind
// berth's sign-in: the per-task token in Authorization is the credential, checked by the runner.
// Refusals are `{ code, message }` with a code that matches the status; nothing is cached.
import { Hono } from 'hono';
import { CredentialsError, credentialsPathPrefix, type Runner, RunnerError } from '../runner/index.ts';
import type { AppEnv } from './env.ts';

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
