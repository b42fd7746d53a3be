// The runner's admin routes (/api/v1 secrets, hooks, webhooks, deployments, logs) and the task
// credentials endpoint over the real app: auth on, the real runner (createRunner with a real
// executor) and a registry whose pushes feed its hooks. No container is started here; the e2e
// suite (test/e2e/runner.test.ts) runs real ones.
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Auth } from '../../src/auth/index.ts';
import { taskCredentialsRoutes } from '../../src/http/task-credentials.ts';
import { type Runner, RunnerError } from '../../src/runner/index.ts';
import { ACCOUNT, REGION, type RunnerApp, startRunnerApp } from '../support/runner-app.ts';

const v1 = '/api/v1';
const basic = (user: string, password: string) =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
const admin = basic('admin', 'admin-password');
const bob = basic('bob', 'bob-password');
const doc = (...Statement: Record<string, unknown>[]) => ({ Version: '2012-10-17', Statement });
const sha256 = (b: Uint8Array | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

let world: RunnerApp;
let auth: Auth;
let runner: Runner;
let app: RunnerApp['app'];

beforeAll(async () => {
  world = await startRunnerApp({
    net: 94,
    webhooks: [
      {
        id: 'ci',
        url: 'http://127.0.0.1:9/hook',
        secret: 'a-webhook-secret-of-some-length',
        events: ['tag.deleted'],
      },
    ],
    // Nothing listens on port 9: deliveries fail, which is what this suite lists.
    allowHosts: ['127.0.0.1:9'],
  });
  ({ auth, runner, app } = world);

  // bob may list secrets and read hooks, nothing else.
  await auth.identities.createUser({ name: 'bob', password: 'bob-password' });
  await auth.policies.putPolicy(
    'secrets-read',
    doc({ Effect: 'Allow', Action: ['ecs:ListSecrets', 'ecs:ReadHooks'], Resource: '*' }),
  );
  await auth.policies.attachPolicy('secrets-read', { type: 'user', name: 'bob' });

  // What hook rules here act as: a role that may run and roll anything and pull every repository.
  await auth.identities.createRole({ name: 'deployer' });
  await auth.policies.putPolicy(
    'deploy-anything',
    doc({
      Effect: 'Allow',
      Action: ['ecs:RunTask', 'ecs:UpdateService', 'registry:Pull'],
      Resource: '*',
    }),
  );
  await auth.policies.attachPolicy('deploy-anything', { type: 'role', name: 'deployer' });
});

const deployer = `arn:aws:iam::${ACCOUNT}:role/deployer`;

afterAll(async () => {
  await world?.close();
});

async function call(
  method: string,
  path: string,
  opts: { body?: unknown; authorization?: string | null; headers?: Record<string, string> } = {},
) {
  const headers: Record<string, string> = { ...opts.headers };
  const authorization = opts.authorization === undefined ? admin : opts.authorization;
  if (authorization !== null) headers.authorization = authorization;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const res = await app.request(path, {
    method,
    headers,
    ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
  });
  const text = await res.text();
  // biome-ignore lint/suspicious/noExplicitAny: bodies are read loosely
  const json: any = text && /json/.test(res.headers.get('content-type') ?? '') ? JSON.parse(text) : undefined;
  return { res, status: res.status, json, text };
}

/** Pushes a one-layer image to the registry as admin; answers its manifest digest. */
async function pushImage(repo: string, tag: string): Promise<string> {
  const layer = Buffer.from(`layer-${randomBytes(8).toString('hex')}`);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: {} }));
  for (const b of [layer, config]) {
    const r = await app.request(`/v2/${repo}/blobs/uploads/?digest=${sha256(b)}`, {
      method: 'POST',
      headers: { authorization: admin },
      body: b,
    });
    expect(r.status, await r.text()).toBe(201);
  }
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: {
      mediaType: 'application/vnd.oci.image.config.v1+json',
      digest: sha256(config),
      size: config.length,
    },
    layers: [
      { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256(layer), size: layer.length },
    ],
  });
  const r = await app.request(`/v2/${repo}/manifests/${tag}`, {
    method: 'PUT',
    headers: { authorization: admin, 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
    body: manifest,
  });
  expect(r.status, await r.text()).toBe(201);
  return sha256(manifest);
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('secrets', () => {
  it('creates, reads, lists, replaces and deletes, never returning the value', async () => {
    const created = await call('PUT', `${v1}/secrets/db-password`, {
      body: { value: 'hunter2-very-secret', description: 'the database' },
    });
    expect(created.status).toBe(201);
    expect(created.res.headers.get('location')).toBe(`${v1}/secrets/db-password`);
    expect(created.json).toMatchObject({
      name: 'db-password',
      description: 'the database',
      arn: `arn:aws:secretsmanager:${REGION}:${ACCOUNT}:secret:db-password`,
    });
    expect(created.text).not.toContain('hunter2');

    const replaced = await call('PUT', `${v1}/secrets/db-password`, { body: { value: 'hunter3-rotated' } });
    expect(replaced.status).toBe(200);
    expect(replaced.json.description).toBe('the database');
    expect(replaced.json.createdAt).toBe(created.json.createdAt);

    const got = await call('GET', `${v1}/secrets/db-password`);
    expect(got.status).toBe(200);
    expect(got.json.name).toBe('db-password');
    expect(got.text).not.toMatch(/hunter|"value"/);

    const list = await call('GET', `${v1}/secrets`);
    expect(list.status).toBe(200);
    expect(list.json.items.map((s: { name: string }) => s.name)).toContain('db-password');
    expect(list.text).not.toMatch(/hunter|"value"/);

    // The value reaches what a task would get, and only that.
    expect(await runner.secrets.resolve('db-password')).toBe('hunter3-rotated');

    expect((await call('DELETE', `${v1}/secrets/db-password`)).status).toBe(204);
    expect((await call('GET', `${v1}/secrets/db-password`)).status).toBe(404);
    const again = await call('DELETE', `${v1}/secrets/db-password`);
    expect(again.status).toBe(404);
    expect(again.json.error.code).toBe('NOT_FOUND');
  });

  it('takes names with slashes, raw or encoded', async () => {
    const raw = await call('PUT', `${v1}/secrets/team/api/token`, { body: { value: 't0ken' } });
    expect(raw.status).toBe(201);
    expect(raw.json.name).toBe('team/api/token');
    expect((await call('GET', `${v1}/secrets/team%2Fapi%2Ftoken`)).json.name).toBe('team/api/token');
    const list = await call('GET', `${v1}/secrets`);
    expect(list.json.items.map((s: { name: string }) => s.name)).toContain('team/api/token');
    expect((await call('DELETE', `${v1}/secrets/team%2Fapi/token`)).status).toBe(204);
    expect((await call('GET', `${v1}/secrets/team/api/token`)).status).toBe(404);
  });

  it('refuses bad names, bodies and values as 404 or 400 in the error shape', async () => {
    // A name outside the grammar names nothing that could exist.
    const badName = await call('GET', `${v1}/secrets/${encodeURIComponent('no spaces')}`);
    expect(badName.status).toBe(404);
    expect(badName.json.error.code).toBe('NOT_FOUND');
    // A stray percent sign is refused, not a server error.
    expect((await call('GET', `${v1}/secrets/%25zz`)).status).toBe(404);
    const noValue = await call('PUT', `${v1}/secrets/x`, { body: { description: 'no value' } });
    expect(noValue.status).toBe(400);
    expect(noValue.json.error.details).toContainEqual({ path: 'value', message: 'value: is required' });
    const unknown = await call('PUT', `${v1}/secrets/x`, { body: { value: 'v', secretString: 'v' } });
    expect(unknown.status).toBe(400);
    expect(unknown.json.error.details[0].path).toBe('secretString');
    expect((await call('PUT', `${v1}/secrets/x`, { body: { value: 'v'.repeat(65537) } })).status).toBe(400);
  });

  it('pages the list by name with Link headers', async () => {
    const names = ['page/B', 'page/a', 'page/c'];
    for (const n of names) await call('PUT', `${v1}/secrets/${n}`, { body: { value: 'v' } });
    const seen: string[] = [];
    let path = `${v1}/secrets?limit=1`;
    for (let i = 0; i < 10; i++) {
      const page = await call('GET', path);
      expect(page.status).toBe(200);
      seen.push(...page.json.items.map((s: { name: string }) => s.name));
      const link = page.res.headers.get('link');
      if (!link) {
        expect(page.json.next).toBeUndefined();
        break;
      }
      expect(link).toMatch(/rel="next"$/);
      path = /^<([^>]+)>/.exec(link)![1]!;
    }
    // Every secret exactly once, in one order.
    expect(seen.filter((n) => n.startsWith('page/')).sort()).toEqual([...names].sort());
    expect(new Set(seen).size).toBe(seen.length);
    for (const n of names) await call('DELETE', `${v1}/secrets/${n}`);
  });

  it('is authorized: 401 without credentials, 403 for a user who may only list', async () => {
    const none = await call('GET', `${v1}/secrets`, { authorization: null });
    expect(none.status).toBe(401);
    expect(none.res.headers.get('www-authenticate')).toContain('Basic');
    expect((await call('GET', `${v1}/secrets`, { authorization: bob })).status).toBe(200);
    const put = await call('PUT', `${v1}/secrets/bobs`, { body: { value: 'x' }, authorization: bob });
    expect(put.status).toBe(403);
    expect(put.json.error).toMatchObject({ code: 'FORBIDDEN', reason: expect.any(String) });
    expect((await call('GET', `${v1}/secrets/bobs`)).status).toBe(404);
    expect((await call('DELETE', `${v1}/secrets/anything`, { authorization: bob })).status).toBe(403);
  });
});

describe('hook rules', () => {
  const rule = {
    name: 'deploy app',
    repository: 'team/*',
    tag: 'semver:^1.0',
    roleArn: deployer,
    action: { type: 'rollService', cluster: 'default', service: 'web' },
  };

  it('creates, reads, lists, updates and deletes a rule', async () => {
    const created = await call('POST', `${v1}/hooks`, { body: { rule } });
    expect(created.status).toBe(201);
    const id = created.json.id as string;
    expect(id).toMatch(/^hr-[0-9a-f]{12}$/);
    expect(created.res.headers.get('location')).toBe(`${v1}/hooks/${id}`);
    expect(created.json).toMatchObject({ ...rule, newerOnly: true, enabled: true });

    expect((await call('GET', `${v1}/hooks/${id}`)).json).toEqual(created.json);
    const list = await call('GET', `${v1}/hooks`);
    expect(list.json.items.map((r: { id: string }) => r.id)).toContain(id);

    const updated = await call('PUT', `${v1}/hooks/${id}`, {
      body: { rule: { enabled: false, tag: 'latest' } },
    });
    expect(updated.status).toBe(200);
    expect(updated.json).toMatchObject({ id, enabled: false, tag: 'latest', newerOnly: false });
    expect(updated.json.createdAt).toBe(created.json.createdAt);

    expect((await call('DELETE', `${v1}/hooks/${id}`)).status).toBe(204);
    expect((await call('GET', `${v1}/hooks/${id}`)).status).toBe(404);
    expect((await call('PUT', `${v1}/hooks/${id}`, { body: { rule: { enabled: true } } })).status).toBe(404);
    expect((await call('DELETE', `${v1}/hooks/${id}`)).status).toBe(404);
    expect((await call('GET', `${v1}/hooks/not-a-rule`)).status).toBe(404);
  });

  it('names the field at fault in a 400', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ ...rule, tag: 'semver:not a range' }, 'rule.tag'],
      [{ ...rule, repository: 'Team/App' }, 'rule.repository'],
      [{ ...rule, action: { type: 'runTask', taskDefinition: 'web', count: 11 } }, 'rule.action.count'],
      [{ ...rule, action: { type: 'deploy' } }, 'rule.action.type'],
      [{ ...rule, tag: 'latest', newerOnly: true }, 'rule.newerOnly'],
      [{ ...rule, colour: 'blue' }, 'rule.colour'],
      [{ repository: 'a', tag: 'latest', action: rule.action }, 'rule.name'],
      [{ ...rule, roleArn: undefined }, 'rule.roleArn'],
      [{ ...rule, roleArn: 'deployer' }, 'rule.roleArn'],
    ];
    for (const [body, path] of cases) {
      const r = await call('POST', `${v1}/hooks`, { body: { rule: body } });
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.json.error.code).toBe('INVALID');
      expect(r.json.error.details, JSON.stringify(r.json)).toEqual([
        { path, message: expect.stringContaining(path.slice('rule.'.length)) },
      ]);
    }
    // The envelope itself is checked too.
    const missing = await call('POST', `${v1}/hooks`, { body: rule });
    expect(missing.status).toBe(400);
    expect(missing.json.error.details.map((d: { path: string }) => d.path)).toContain('rule');
    const created = await call('POST', `${v1}/hooks`, { body: { rule } });
    const bad = await call('PUT', `${v1}/hooks/${created.json.id}`, { body: { rule: { enabled: 'yes' } } });
    expect(bad.status).toBe(400);
    expect(bad.json.error.details).toEqual([{ path: 'rule.enabled', message: expect.any(String) }]);
    await call('DELETE', `${v1}/hooks/${created.json.id}`);
  });

  it('is authorized: a user who may read hooks cannot create one', async () => {
    expect((await call('GET', `${v1}/hooks`, { authorization: bob })).status).toBe(200);
    const r = await call('POST', `${v1}/hooks`, { body: { rule }, authorization: bob });
    expect(r.status).toBe(403);
    expect(r.json.error.code).toBe('FORBIDDEN');
  });

  it('is a 403 naming the field when the writer may not pass the role, or the role lacks a right', async () => {
    // carol may manage hooks but pass only role/weak, which may do nothing at all.
    await auth.identities.createUser({ name: 'carol', password: 'carol-password' });
    await auth.identities.createRole({ name: 'weak' });
    await auth.policies.putPolicy(
      'carol-hooks',
      doc(
        { Effect: 'Allow', Action: ['ecs:ManageHooks', 'ecs:ReadHooks'], Resource: '*' },
        { Effect: 'Allow', Action: 'iam:PassRole', Resource: 'role/weak' },
      ),
    );
    await auth.policies.attachPolicy('carol-hooks', { type: 'user', name: 'carol' });
    const carol = basic('carol', 'carol-password');
    const weak = `arn:aws:iam::${ACCOUNT}:role/weak`;
    const cases: [Record<string, unknown>, string][] = [
      [{ ...rule }, 'rule.roleArn'],
      [{ ...rule, roleArn: weak }, 'rule.action.service'],
    ];
    for (const [body, path] of cases) {
      const r = await call('POST', `${v1}/hooks`, { body: { rule: body }, authorization: carol });
      expect(r.status, JSON.stringify(r.json)).toBe(403);
      expect(r.json.error).toMatchObject({
        code: 'FORBIDDEN',
        details: [{ path, message: expect.stringContaining(path) }],
      });
    }
    // The admin writes it; carol may still disable it (a disabled rule acts on nothing) but not
    // change it while it is enabled.
    const created = await call('POST', `${v1}/hooks`, { body: { rule } });
    const id = created.json.id as string;
    const rename = await call('PUT', `${v1}/hooks/${id}`, {
      body: { rule: { name: 'mine' } },
      authorization: carol,
    });
    expect(rename.status).toBe(403);
    expect(rename.json.error.details[0].path).toBe('rule.roleArn');
    const off = await call('PUT', `${v1}/hooks/${id}`, {
      body: { rule: { enabled: false } },
      authorization: carol,
    });
    expect(off.status, JSON.stringify(off.json)).toBe(200);
    expect((await call('GET', `${v1}/hooks/${id}`)).json).toMatchObject({
      enabled: false,
      roleArn: deployer,
    });
    await call('DELETE', `${v1}/hooks/${id}`);
  });
});

describe('hook runs', () => {
  it('lists none, then a failed run for a push whose rule names a missing task definition', async () => {
    const empty = await call('GET', `${v1}/hooks/runs`);
    expect(empty.status).toBe(200);
    expect(empty.json).toEqual({ items: [] });

    const created = await call('POST', `${v1}/hooks`, {
      body: {
        rule: {
          name: 'batch on push',
          repository: 'runs/app',
          tag: 'latest',
          roleArn: deployer,
          action: { type: 'runTask', taskDefinition: 'no-such-family' },
        },
      },
    });
    expect(created.status).toBe(201);
    const ruleId = created.json.id as string;
    const digest = await pushImage('runs/app', 'latest');

    const run = await until('the hook run to fail', async () => {
      const r = await call('GET', `${v1}/hooks/runs?rule=${ruleId}`);
      const first = r.json.items[0];
      return first?.status === 'failed' ? first : undefined;
    });
    expect(run).toMatchObject({
      ruleId,
      ruleName: 'batch on push',
      repository: 'runs/app',
      digest,
      tag: 'latest',
      imageRef: `runs/app@${digest}`,
      status: 'failed',
      reason: expect.stringContaining('no-such-family'),
    });

    // Filtering by another rule finds nothing; a bad filter or cursor is a 400 naming the parameter.
    const other = await call('POST', `${v1}/hooks`, {
      body: {
        rule: {
          name: 'other',
          repository: 'x',
          tag: 'latest',
          roleArn: deployer,
          action: { type: 'rollService', service: 's' },
        },
      },
    });
    expect((await call('GET', `${v1}/hooks/runs?rule=${other.json.id}`)).json.items).toEqual([]);
    const badRule = await call('GET', `${v1}/hooks/runs?rule=nope`);
    expect(badRule.status).toBe(400);
    expect(badRule.json.error.details).toEqual([{ path: 'rule', message: expect.any(String) }]);
    const badCursor = await call('GET', `${v1}/hooks/runs?after=nope`);
    expect(badCursor.status).toBe(400);
    expect(badCursor.json.error.details).toEqual([{ path: 'after', message: expect.any(String) }]);
    expect((await call('GET', `${v1}/hooks/runs?limit=0`)).status).toBe(400);
  });
});

describe('webhooks', () => {
  it('lists the configured endpoints without their secrets, and their deliveries', async () => {
    const list = await call('GET', `${v1}/webhooks`);
    expect(list.status).toBe(200);
    expect(list.json).toEqual({
      items: [{ id: 'ci', url: 'http://127.0.0.1:9/hook', events: ['tag.deleted'] }],
    });
    expect(list.text).not.toContain('a-webhook-secret');
    const deliveries = await call('GET', `${v1}/webhooks/deliveries?webhook=ci&limit=5`);
    expect(deliveries.status).toBe(200);
    expect(deliveries.json.items).toEqual([]);
    const badCursor = await call('GET', `${v1}/webhooks/deliveries?after=nope`);
    expect(badCursor.status).toBe(400);
    expect(badCursor.json.error.details).toEqual([{ path: 'after', message: expect.any(String) }]);
  });
});

describe('deployments and logs', () => {
  it('answers 404 for an unknown service or cluster', async () => {
    const r = await call('GET', `${v1}/runner/clusters/default/services/nope/deployments`);
    expect(r.status).toBe(404);
    expect(r.json.error.code).toBe('NOT_FOUND');
    expect((await call('GET', `${v1}/runner/clusters/no-cluster/services/nope/deployments`)).status).toBe(
      404,
    );
  });

  it('answers 404 for an unknown task, following or not', async () => {
    const id = randomBytes(16).toString('hex');
    const r = await call('GET', `${v1}/runner/clusters/default/tasks/${id}/logs`);
    expect(r.status).toBe(404);
    expect(r.json.error.code).toBe('NOT_FOUND');
    const sse = await call('GET', `${v1}/runner/clusters/default/tasks/${id}/logs?follow=true`, {
      headers: { accept: 'text/event-stream' },
    });
    expect(sse.status).toBe(404);
    expect(sse.res.headers.get('content-type')).toMatch(/^application\/json/);
  });

  it('refuses bad tail and since parameters', async () => {
    const id = randomBytes(16).toString('hex');
    const tail = await call('GET', `${v1}/runner/clusters/default/tasks/${id}/logs?tail=-1`);
    expect(tail.status).toBe(400);
    expect(tail.json.error.details).toEqual([{ path: 'tail', message: expect.any(String) }]);
    const since = await call('GET', `${v1}/runner/clusters/default/tasks/${id}/logs?since=2024-01-01`);
    expect(since.status).toBe(400);
    expect(since.json.error.details).toEqual([{ path: 'since', message: expect.any(String) }]);
  });
});

describe('task credentials', () => {
  const path = (id: string) => `/v1/task-credentials/${id}`;

  it('asks for the task token', async () => {
    const r = await call('GET', path(randomBytes(16).toString('hex')), { authorization: null });
    expect(r.status).toBe(401);
    expect(r.json.code).toBe('Unauthorized');
    expect(r.res.headers.get('cache-control')).toBe('no-store');
  });

  it('answers an unknown task exactly as a wrong token: 403', async () => {
    const a = await call('GET', path(randomBytes(16).toString('hex')), { authorization: 'guess' });
    const b = await call('GET', path(randomBytes(16).toString('hex')), {
      authorization: randomBytes(32).toString('base64url'),
    });
    expect(a.status).toBe(403);
    expect(b.status).toBe(403);
    expect(a.json).toEqual({ code: 'Forbidden', message: 'invalid task token' });
    expect(b.text).toBe(a.text);
  });

  it('answers 404 for what is not a task id', async () => {
    const r = await call('GET', path('not-a-task'), { authorization: 'x' });
    expect(r.status).toBe(404);
    expect(r.json.code).toBe('NotFound');
  });

  it('answers 503 when task roles are off, and 500 without detail when issuing fails', async () => {
    const id = randomBytes(16).toString('hex');
    const off = taskCredentialsRoutes({
      taskCredentials: async () => {
        throw new RunnerError('unavailable', 'task roles need authentication on');
      },
    });
    const r = await off.request(path(id), { headers: { authorization: 't' } });
    expect(r.status).toBe(503);
    expect(await r.json()).toEqual({ code: 'Unavailable', message: 'task roles need authentication on' });
    const broken = taskCredentialsRoutes({
      taskCredentials: async () => {
        throw new Error('role arn:aws:iam::000000000000:role/gone does not exist in /secret/path');
      },
    });
    const b = await broken.request(path(id), { headers: { authorization: 't' } });
    expect(b.status).toBe(500);
    const text = await b.text();
    expect(JSON.parse(text).code).toBe('InternalServerError');
    expect(text).not.toMatch(/gone|secret\/path/);
  });
});
