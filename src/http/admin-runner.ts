// Admin routes for what ECS's API has no place for: container logs (read and follow with
// server-sent events), a service's deployment history, task secrets, push hook rules with their
// runs, and webhooks with their deliveries. Same conventions as the rest of /api/v1.
import type { Context, Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import {
  type Actor,
  HookError,
  type LogEntry,
  type Runner,
  RunnerError,
  SecretError,
  WebhookError,
} from '../runner/index.ts';
import type { AdminCaller } from './admin.ts';
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

/**
 * Runner failures as API errors (the kit turns anything else into a 500). `fieldPath` says where a
 * HookError's field is in the request: `rule.<field>` for a rule in the body, a query parameter
 * for a list.
 */
async function runnerCall<T>(
  call: () => Promise<T> | T,
  fieldPath: (field: string) => string = (field) => `rule.${field}`,
): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (err instanceof RunnerError) {
      const code = err.kind === 'not_found' ? 'NOT_FOUND' : err.kind === 'conflict' ? 'CONFLICT' : 'INVALID';
      throw new ApiError(code, err.message, err.details ? { details: err.details } : {});
    }
    if (err instanceof HookError) {
      if (!err.field) throw new ApiError(err.code, err.message);
      // The runner's message starts with its own name for the field; the detail uses the request's.
      const path = fieldPath(err.field);
      const message = err.message.startsWith(`${err.field}:`)
        ? `${path}${err.message.slice(err.field.length)}`
        : err.message;
      throw new ApiError(err.code, message, { details: [{ path, message }] });
    }
    if (err instanceof SecretError)
      throw new ApiError(err.kind === 'not_found' ? 'NOT_FOUND' : 'INVALID', err.message);
    throw err;
  }
}

/** The runner's list options by the names this API gives them (`?rule=`, `?after=`). */
const listParam = (field: string) => (field === 'ruleId' ? 'rule' : field === 'nextToken' ? 'after' : field);

/** Code-unit order, the order `pageOf` compares cursors in (localeCompare's is another). */
const byKey =
  <T>(key: (t: T) => string) =>
  (a: T, b: T) =>
    key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0;

function tailParam(c: Context<AppEnv>): number | undefined {
  const raw = c.req.query('tail');
  if (raw === undefined) return undefined;
  if (!/^\d{1,6}$/.test(raw))
    throw invalid('tail must be a whole number of lines', [
      { path: 'tail', message: 'tail: a whole number' },
    ]);
  return Number(raw);
}

/** RFC 3339 with a zone, up to nanoseconds: what the log reader compares entries against. */
const rfc3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)$/i;

function sinceParam(c: Context<AppEnv>): string | undefined {
  const raw = c.req.query('since');
  if (raw === undefined) return undefined;
  if (!rfc3339.test(raw) || Number.isNaN(Date.parse(raw)))
    throw invalid('since must be an RFC 3339 time', [
      { path: 'since', message: 'since: an RFC 3339 time, e.g. 2026-01-02T15:04:05Z' },
    ]);
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
      const follow =
        c.req.query('follow') === 'true' || /\btext\/event-stream\b/i.test(c.req.header('accept') ?? '');
      const opts = { tail: tailParam(c), since: sinceParam(c) };
      const taskId = pathName(c, 'task', 'task');
      const {
        container: name,
        entries,
        cursor,
      } = await runnerCall(() => runner.logs.read(cluster(c), taskId, container, opts));
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
            cursor,
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

  // Hono has already decoded the parameter (%2F included): decoding again would turn a literal
  // `%41` into another name, and a stray `%` into a URIError.
  const secretName = (c: Context<AppEnv>) => {
    const v = c.req.param('name') ?? '';
    if (!/^[A-Za-z0-9/_+=.@-]{1,120}$/.test(v))
      throw notFound(`secret ${JSON.stringify(v.slice(0, 200))} does not exist`);
    return v;
  };

  app.get(
    '/secrets',
    op({ action: 'ecs:ListSecrets', resource: () => 'secret/*' }, async ({ c }) => {
      const all = (await runner.secrets.list()).sort(byKey((s) => s.name));
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
  /**
   * Who writes a rule, as the runner checks them: the caller's own rights (iam:PassRole on the
   * rule's role), decided and audited as every admin decision is.
   */
  const ruleAuthor = (c: Context<AppEnv>, caller: AdminCaller): Actor => ({
    principalArn: caller.subject ?? `${caller.principal.type}/${caller.principal.name}`,
    isAllowed: async (action, resource) =>
      (await kit.deps.authorize(caller, action, resource, c)).effect === 'Allow',
  });
  const ruleBody = { rule: required(jsonObject()) };

  app.get(
    '/hooks',
    op({ action: 'ecs:ReadHooks', resource: () => 'hook/*' }, async ({ c }) => {
      // Oldest first; the cursor is creation time and id, which sort in that same order.
      const cursor = (r: { createdAt: string; id: string }) => `${r.createdAt}_${r.id}`;
      const all = (await runner.hooks.rules.list()).sort(byKey(cursor));
      return sendPage(c, pageOf(all, cursor, pageParams(c)));
    }),
  );

  app.post(
    '/hooks',
    op(
      { action: 'ecs:ManageHooks', change: true, body: ruleBody, resource: () => 'hook/*' },
      async ({ c, caller, body, note }) => {
        const rule = await runnerCall(() => runner.hooks.rules.create(body.rule, ruleAuthor(c, caller)));
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
      const page = await runnerCall(
        () =>
          runner.hooks.runs.list({
            ...(rule !== undefined && { ruleId: rule }),
            limit: p.limit,
            ...(p.after !== undefined && { nextToken: p.after }),
          }),
        listParam,
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
      async ({ c, caller, body }) =>
        json(
          c,
          await runnerCall(() => runner.hooks.rules.update(ruleId(c), body.rule, ruleAuthor(c, caller))),
        ),
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
      let page: Awaited<ReturnType<Runner['webhooks']['deliveries']>>;
      try {
        page = await runner.webhooks.deliveries({
          ...(webhook !== undefined && { endpointId: webhook }),
          limit: p.limit,
          ...(p.after !== undefined && { nextToken: p.after }),
        });
      } catch (err) {
        // limit is checked above, so the cursor is what the list refused.
        if (err instanceof WebhookError)
          throw invalid('after must be the next cursor of a previous page', [
            { path: 'after', message: 'after: must be the next cursor of a previous page' },
          ]);
        throw err;
      }
      return sendPage(c, { items: page.deliveries, next: page.nextToken });
    }),
  );
}
