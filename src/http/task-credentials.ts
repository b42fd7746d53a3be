// The task role credentials endpoint (runner/credentials.ts explains the scheme). Not behind
// berth's sign-in: the per-task token in Authorization is the credential, checked by the runner.
import { Hono } from 'hono';
import { CredentialsError, credentialsPathPrefix, type Runner } from '../runner/index.ts';
import type { AppEnv } from './env.ts';

export function taskCredentialsRoutes(runner: Pick<Runner, 'taskCredentials'>): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get(`${credentialsPathPrefix}:task`, async (c) => {
    try {
      const creds = await runner.taskCredentials(c.req.param('task'), c.req.header('authorization'));
      return c.json(creds, 200, { 'Cache-Control': 'no-store' });
    } catch (err) {
      if (err instanceof CredentialsError)
        return c.json({ code: 'Forbidden', message: err.message }, err.status, {
          'Cache-Control': 'no-store',
        });
      throw err;
    }
  });
  return app;
}
