// Admin routes for what ECS's API has no place for: container logs (read and follow with
// server-sent events), a service's deployment history, task secrets, push hook rules with their
// runs, and webhooks with their deliveries. Same conventions as the rest of /api/v1.
import type { Context, Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { HookError, type LogEntry, type Runner, RunnerError, SecretError } from '../runner/index.ts';
import {
  ApiError,
  childPath,
  invalid,
  json,
  jsonObject,
  type Kit,
  noContent,
  notFound,
  pageOf,
  pageParams,
  pathName,
  required,
  sendPage,
  str,
} from './admin-kit.ts';
import type { AppEnv } from './env.ts';

/** Runner failures as API errors (the kit turns anything else into a 500). */
async function runnerCall<T>(call: () => Promise<T> | T): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (err instanceof RunnerError) {
      const code = err.kind === 'not_found' ? 'NOT_FOUND' : err.kind === 'conflict' ? 'CONFLICT' : 'INVALID';
      throw new ApiError(code, err.message, err.details ? { details: err.details } : {});
    }
    if (err instanceof HookError) {
      const details = err.field ? [{ path: `rule.${err.field}`, message: err.message }] : undefined;
      throw new ApiError(err.code, err.message, details ? { details } : {});
    }
    if (err instanceof SecretError)
      throw new ApiError(err.kind === 'not_found' ? 'NOT_FOUND' : 'INVALID', err.message);
    throw err;
  }
}

function tailParam(c: Context<AppEnv>): number | undefined {
  const raw = c.req.query('tail');
  if (raw === undefined) return undefined;
  if (!/^\d{1,6}$/.test(raw))
    throw invalid('tail must be a whole number of lines', [
      { path: 'tail', message: 'tail: a whole number' },
    ]);
  return Number(raw);
}

function sinceParam(c: Context<AppEnv>): string | undefined {
  const raw = c.req.query('since');
  if (raw === undefined) return undefined;
  if (Number.isNaN(Date.parse(raw)))
    throw invalid('since must be an RFC 3339 time', [{ path: 'since', message: 'since: an RFC 3339 time' }]);
  return raw;
}

const secretBody = {
  value: required(str({ max: 65536 })),
  description: str({ max: 1024 }),
};

export function runnerRoutes(app: Hono<AppEnv>, kit: Kit, runner: Runner): void {
  const { op } = kit;
  const cluster = (c: Context<AppEnv>) => pathName(c, 'cluster', 'cluster');
  const taskResource = (c: Context<AppEnv>) => `task/${cluster(c)}/${pathName(c, 'task', 'task')}`;

  // ---- logs ----

  app.get(
    '/runner/clusters/:cluster/tasks/:task/logs',
    op({ action: 'ecs:ReadLogs', resource: taskResource }, async ({ c }) => {
      const container = c.req.query('container');
      const follow = c.req.query('follow') === 'true' || c.req.header('accept') === 'text/event-stream';
      const opts = { tail: tailParam(c), since: sinceParam(c) };
      const taskId = pathName(c, 'task', 'task');
      const { container: name, entries } = await runnerCall(() =>
        runner.logs.read(cluster(c), taskId, container, opts),
      );
      if (!follow) return json(c, { container: name, entries });
      return streamSSE(c, async (stream) => {
        let id = 0;
        const send = (e: LogEntry) =>
          stream.writeSSE({ event: 'log', id: String(++id), data: JSON.stringify(e) });
        for (const e of entries) await send(e);
        await new Promise<void>((resolve) => {
          // Writes are chained so entries go out in order; the stream ends when the container's
          // log ends (it stopped) or the client goes away.
          let chain = Promise.resolve();
          const stop = runner.logs.follow(
            cluster(c),
            taskId,
            name,
            (e) => {
              chain = chain.then(() => send(e));
            },
            () => {
              chain.then(async () => {
                await stream.writeSSE({ event: 'end', data: '{}' });
                resolve();
              });
            },
          );
          stream.onAbort(() => {
            stop();
            resolve();
          });
        });
      });
    }),
  );

  // ---- deployments ----

  app.get(
    '/runner/clusters/:cluster/services/:service/deployments',
    op(
      {
        action: 'ecs:ReadDeployments',
        resource: (c) => `service/${cluster(c)}/${pathName(c, 'service', 'service')}`,
      },
      async ({ c }) => {
        const items = await runnerCall(() =>
          runner.deployments(cluster(c), pathName(c, 'service', 'service')),
        );
        return json(c, { items });
      },
    ),
  );

  // ---- secrets ----

  const secretName = (c: Context<AppEnv>) => {
    const v = decodeURIComponent(c.req.param('name') ?? '');
    if (!/^[A-Za-z0-9/_+=.@-]{1,120}$/.test(v))
      throw notFound(`secret ${JSON.stringify(v.slice(0, 200))} does not exist`);
    return v;
  };

  app.get(
    '/secrets',
    op({ action: 'ecs:ListSecrets', resource: () => 'secret/*' }, async ({ c }) => {
      const all = await runner.secrets.list();
      return sendPage(
        c,
        pageOf(all, (s) => s.name, pageParams(c)),
      );
    }),
  );

  app.put(
    '/secrets/:name{.+}',
    op(
      {
        action: 'ecs:ManageSecrets',
        change: true,
        body: secretBody,
        resource: (c) => `secret/${secretName(c)}`,
      },
      async ({ c, body }) => {
        const { info, created } = await runnerCall(() =>
          runner.secrets.put(secretName(c), body.value, body.description),
        );
        return created ? json(c, info, 201, { Location: c.req.path }) : json(c, info);
      },
    ),
  );

  app.get(
    '/secrets/:name{.+}',
    op({ action: 'ecs:ListSecrets', resource: (c) => `secret/${secretName(c)}` }, async ({ c }) =>
      json(c, await runnerCall(() => runner.secrets.get(secretName(c)))),
    ),
  );

  app.delete(
    '/secrets/:name{.+}',
    op(
      { action: 'ecs:ManageSecrets', change: true, resource: (c) => `secret/${secretName(c)}` },
      async ({ c }) => {
        await runnerCall(() => runner.secrets.remove(secretName(c)));
        return noContent(c);
      },
    ),
  );

  // ---- hook rules and runs ----

  const ruleId = (c: Context<AppEnv>) => pathName(c, 'id', 'hook rule');
  const ruleBody = { rule: required(jsonObject()) };

  app.get(
    '/hooks',
    op({ action: 'ecs:ReadHooks', resource: () => 'hook/*' }, async ({ c }) => {
      const all = await runner.hooks.rules.list();
      return sendPage(
        c,
        pageOf(all, (r) => r.id, pageParams(c)),
      );
    }),
  );

  app.post(
    '/hooks',
    op(
      { action: 'ecs:ManageHooks', change: true, body: ruleBody, resource: () => 'hook/*' },
      async ({ c, body, note }) => {
        const rule = await runnerCall(() => runner.hooks.rules.create(body.rule));
        note({ id: rule.id });
        return json(c, rule, 201, { Location: childPath(c, rule.id) });
      },
    ),
  );

  app.get(
    '/hooks/runs',
    op({ action: 'ecs:ReadHooks', resource: () => 'hook/*' }, async ({ c }) => {
      const rule = c.req.query('rule');
      const p = pageParams(c);
      const page = await runnerCall(() =>
        runner.hooks.runs.list({
          ...(rule !== undefined && { ruleId: rule }),
          limit: p.limit,
          ...(p.after !== undefined && { nextToken: p.after }),
        }),
      );
      return sendPage(c, { items: page.runs, next: page.nextToken });
    }),
  );

  app.get(
    '/hooks/:id',
    op({ action: 'ecs:ReadHooks', resource: (c) => `hook/${ruleId(c)}` }, async ({ c }) =>
      json(c, await runnerCall(() => runner.hooks.rules.get(ruleId(c)))),
    ),
  );

  app.put(
    '/hooks/:id',
    op(
      { action: 'ecs:ManageHooks', change: true, body: ruleBody, resource: (c) => `hook/${ruleId(c)}` },
      async ({ c, body }) => json(c, await runnerCall(() => runner.hooks.rules.update(ruleId(c), body.rule))),
    ),
  );

  app.delete(
    '/hooks/:id',
    op({ action: 'ecs:ManageHooks', change: true, resource: (c) => `hook/${ruleId(c)}` }, async ({ c }) => {
      await runnerCall(() => runner.hooks.rules.delete(ruleId(c)));
      return noContent(c);
    }),
  );

  // ---- webhooks (configured in runner.webhooksFile) and their deliveries ----

  app.get(
    '/webhooks',
    op({ action: 'ecs:ReadHooks', resource: () => 'webhook/*' }, async ({ c }) =>
      json(c, { items: runner.webhooks.list() }),
    ),
  );

  app.get(
    '/webhooks/deliveries',
    op({ action: 'ecs:ReadHooks', resource: () => 'webhook/*' }, async ({ c }) => {
      const webhook = c.req.query('webhook');
      const p = pageParams(c);
      const page = await runner.webhooks.deliveries({
        ...(webhook !== undefined && { endpointId: webhook }),
        limit: p.limit,
        ...(p.after !== undefined && { nextToken: p.after }),
      });
      return sendPage(c, { items: page.deliveries, next: page.nextToken });
    }),
  );
}
