// Holds the server to openapi.yaml: the routes the app registers are the paths the document
// declares, and every response of a scripted admin session (successes and errors alike) has a
// status the operation declares and a body that validates against its JSON Schema (2020-12).
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { Hono } from 'hono';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { createAuditLog } from '../../src/auth/audit.ts';
import { createFederation } from '../../src/auth/federation.ts';
import { AuthStoreError, createIdentityStore } from '../../src/auth/identities.ts';
import { evaluate, type Principal } from '../../src/auth/policy.ts';
import { createPolicyStore } from '../../src/auth/policy-store.ts';
import { type AdminDeps, adminApiBase, createAdminApi } from '../../src/http/admin.ts';
import type { AppEnv } from '../../src/http/env.ts';
import { healthRoutes } from '../../src/http/health.ts';
import { requestContext } from '../../src/http/middleware.ts';
import { silentLogger } from '../../src/log.ts';
import { createMemoryDriver } from '../../src/storage/index.ts';

// ---- the document -------------------------------------------------------------------------------

// biome-ignore lint/suspicious/noExplicitAny: the document is walked generically
type Json = any;
const spec: Json = parse(readFileSync(resolve(import.meta.dirname, '../../openapi.yaml'), 'utf8'));
const methods = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace'] as const;
const specId = 'https://berth.invalid/openapi.yaml';

interface Operation {
  readonly method: string;
  readonly template: string;
  readonly pattern: RegExp;
  readonly op: Json;
}

const operations: Operation[] = Object.entries(spec.paths as Record<string, Json>).flatMap(
  ([template, item]) =>
    methods
      .filter((m) => item[m] !== undefined)
      .map((m) => ({
        method: m.toUpperCase(),
        template,
        // A repository scope may carry raw slashes; every other parameter is one segment.
        pattern: new RegExp(
          `^${template.replace(/\{(\w+)\}/g, (_, name: string) => (name === 'scope' ? '(.+)' : '([^/]+)'))}$`,
        ),
        op: item[m],
      })),
);

const escapePointer = (s: string) => s.replaceAll('~', '~0').replaceAll('/', '~1');

/** The value at a local JSON pointer of the document. */
function at(pointer: string): Json {
  let v: Json = spec;
  for (const raw of pointer.replace(/^#\//, '').split('/'))
    v = v?.[raw.replaceAll('~1', '/').replaceAll('~0', '~')];
  return v;
}

/** Follows an OpenAPI-level $ref (responses are shared through components); keeps the pointer. */
function deref(value: Json, pointer: string): { value: Json; pointer: string } {
  let v = value;
  let p = pointer;
  while (v && typeof v.$ref === 'string') {
    p = v.$ref;
    v = at(p);
    expect(v, `${p} resolves`).toBeDefined();
  }
  return { value: v, pointer: p };
}

const ajv = new Ajv2020({ strict: false, allErrors: true });
ajv.addFormat('date-time', {
  type: 'string',
  validate: (s: string) =>
    /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)$/i.test(s) && !Number.isNaN(Date.parse(s)),
});
ajv.addFormat('uri', { type: 'string', validate: (s: string) => URL.canParse(s) });
ajv.addSchema({ ...spec, $id: specId });
const validators = new Map<string, ValidateFunction>();

function validatorAt(pointer: string): ValidateFunction {
  let v = validators.get(pointer);
  if (!v) {
    v = ajv.compile({ $ref: `${specId}${pointer}` });
    validators.set(pointer, v);
  }
  return v;
}

// ---- the app under test -------------------------------------------------------------------------

function makeDeps(): AdminDeps {
  const storage = createMemoryDriver();
  const policies = createPolicyStore({ storage });
  const identities = createIdentityStore({ storage, scryptCost: 16 });
  return {
    identities,
    policies,
    federation: createFederation({ storage, fetch: async () => new Response('offline', { status: 503 }) }),
    audit: createAuditLog({ storage }),
    async authenticate(c) {
      if (c.req.header('x-test-throttle'))
        throw Object.assign(new Error('locked'), { retryAfterSeconds: 30 });
      const name = c.req.header('x-test-user');
      return name ? { principal: { type: 'user', name, groups: [] } } : undefined;
    },
    async authorize(_caller, action, _resource, c) {
      return c.req.header('x-test-deny') === action
        ? { effect: 'Deny', reason: 'explicit_deny' }
        : { effect: 'Allow', reason: 'allowed' };
    },
    async simulate({ principal, action, resource, context }) {
      let p: Principal = { type: 'anonymous', name: '', groups: [] };
      if (principal.type === 'user' || principal.type === 'serviceaccount') {
        const info = await identities.resolvePrincipal({ type: principal.type, name: principal.name });
        if (!info) throw new AuthStoreError('NOT_FOUND', `${principal.type} does not exist`);
        p = { type: info.type, name: info.name, groups: info.groups };
      } else if (principal.type === 'role') p = { type: 'role', name: principal.name, groups: [] };
      const repo = resource.startsWith('repository/') ? resource.slice('repository/'.length) : undefined;
      const attached = [
        ...(await policies.policiesFor(p)),
        ...(repo ? await policies.repositoryPoliciesFor(repo) : []),
      ];
      return evaluate({ principal: p, action, resource, context }, attached);
    },
  };
}

const readiness = { check: async () => {}, draining: () => false };

/** Hono `:name` and `:scope{.+}` as OpenAPI `{name}`. */
const toTemplate = (path: string) => path.replace(/:(\w+)(?:\{[^}]*\})?/g, '{$1}');

// ---- route parity -------------------------------------------------------------------------------

describe('openapi.yaml', () => {
  it('declares every operation with an operationId, tags and responses', () => {
    expect(spec.openapi).toMatch(/^3\.1\./);
    const ids = operations.map((o) => o.op.operationId);
    expect(ids.every((id) => typeof id === 'string' && id !== '')).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    for (const { op, method, template } of operations) {
      expect(op.tags?.length, `${method} ${template} has tags`).toBeGreaterThan(0);
      expect(Object.keys(op.responses ?? {}).length, `${method} ${template} has responses`).toBeGreaterThan(
        0,
      );
      if (template.startsWith(adminApiBase)) {
        expect(op.responses['401'], `${op.operationId} declares 401`).toBeDefined();
        expect(op.responses['403'], `${op.operationId} declares 403`).toBeDefined();
      }
    }
    expect(spec.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(spec.components.securitySchemes.basic).toMatchObject({ type: 'http', scheme: 'basic' });
  });

  it('has schemas that compile, with every $ref resolving', () => {
    for (const name of Object.keys(spec.components.schemas))
      expect(() => validatorAt(`#/components/schemas/${escapePointer(name)}`), name).not.toThrow();
    for (const { op, method, template } of operations) {
      const base = `#/paths/${escapePointer(template)}/${method.toLowerCase()}`;
      const body = op.requestBody?.content?.['application/json'];
      if (body)
        expect(() => validatorAt(`${base}/requestBody/content/application~1json/schema`)).not.toThrow();
      for (const [status, response] of Object.entries(op.responses as Record<string, Json>)) {
        const r = deref(response, `${base}/responses/${status}`);
        expect(r.value.description, `${op.operationId} ${status} has a description`).toBeTypeOf('string');
        if (r.value.content)
          expect(() => validatorAt(`${r.pointer}/content/application~1json/schema`)).not.toThrow();
      }
      for (const p of op.parameters ?? []) expect(deref(p, '').value.name).toBeTypeOf('string');
    }
  });

  it('matches the routes the app registers, both ways', () => {
    const app = new Hono<AppEnv>();
    app.route('/', healthRoutes(readiness));
    app.route(adminApiBase, createAdminApi(makeDeps()));
    const registered = new Set(
      app.routes.filter((r) => r.method !== 'ALL').map((r) => `${r.method} ${toTemplate(r.path)}`),
    );
    const declared = new Set(operations.map((o) => `${o.method} ${o.template}`));
    const ours = (route: string) => {
      const path = route.slice(route.indexOf(' ') + 1);
      return path.startsWith(`${adminApiBase}/`) || path === '/healthz' || path === '/readyz';
    };
    expect(
      [...registered].filter((r) => !declared.has(r)),
      'routes missing from openapi.yaml',
    ).toEqual([]);
    expect(
      [...declared].filter((r) => ours(r) && !registered.has(r)),
      'operations in openapi.yaml the app does not serve',
    ).toEqual([]);
    expect(registered.size).toBeGreaterThan(50);
  });
});

// ---- a scripted session, every response validated ----------------------------------------------

describe('a scripted admin session', () => {
  const deps = makeDeps();
  const app = new Hono<AppEnv>();
  app.use(requestContext({ log: silentLogger, trustProxy: false, scheme: 'https' }));
  app.route('/', healthRoutes(readiness));
  app.route(adminApiBase, createAdminApi(deps));
  /** operationId -> statuses seen. */
  const seen = new Map<string, Set<string>>();

  function operationFor(method: string, path: string): Operation {
    const candidates = operations.filter((o) => o.method === method && o.pattern.test(path));
    expect(candidates.length, `${method} ${path} matches one operation of openapi.yaml`).toBe(1);
    return candidates[0] as Operation;
  }

  /** Sends a request and checks the response against the operation's declared status and schema. */
  async function call(
    method: string,
    path: string,
    opts: { body?: unknown; user?: string | null; headers?: Record<string, string>; raw?: string } = {},
  ) {
    const headers: Record<string, string> = { ...opts.headers };
    const user = opts.user === undefined ? 'root' : opts.user;
    if (user !== null) headers['x-test-user'] = user;
    const text = opts.body !== undefined ? JSON.stringify(opts.body) : opts.raw;
    if (text !== undefined) headers['content-type'] ??= 'application/json';
    const res = await app.request(path, { method, headers, ...(text !== undefined ? { body: text } : {}) });
    const { op, template } = operationFor(method, new URL(path, 'http://x').pathname);
    const status = String(res.status);
    const declared = op.responses[status];
    const bodyText = await res.text();
    if (!declared)
      expect.fail(`${op.operationId} answered ${status}, which openapi.yaml does not declare: ${bodyText}`);
    const { value: response, pointer } = deref(
      declared,
      `#/paths/${escapePointer(template)}/${method.toLowerCase()}/responses/${status}`,
    );
    // biome-ignore lint/suspicious/noExplicitAny: bodies are read loosely
    let json: any;
    if (response.content?.['application/json']) {
      expect(res.headers.get('content-type'), `${op.operationId} ${status} content type`).toMatch(
        /^application\/json/,
      );
      json = JSON.parse(bodyText);
      const validate = validatorAt(`${pointer}/content/application~1json/schema`);
      if (!validate(json))
        expect.fail(
          `${op.operationId} ${status} does not match its schema: ${ajv.errorsText(validate.errors)}\n${bodyText}`,
        );
    } else {
      expect(bodyText, `${op.operationId} ${status} has no body`).toBe('');
    }
    for (const name of Object.keys(response.headers ?? {}))
      if (['ETag', 'Location', 'WWW-Authenticate', 'Retry-After'].includes(name))
        expect(res.headers.get(name), `${op.operationId} ${status} sends ${name}`).not.toBeNull();
    const statuses = seen.get(op.operationId) ?? new Set<string>();
    statuses.add(status);
    seen.set(op.operationId, statuses);
    return { res, status: res.status, json };
  }

  const pullAll = {
    Version: '2012-10-17',
    Statement: [{ Sid: 'Pull', Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/*' }],
  };
  const publicPull = {
    Version: '2012-10-17',
    Statement: { Effect: 'Allow', Principal: '*', Action: ['registry:Pull', 'registry:ListTags'] },
  };
  const trust = {
    Version: '2012-10-17',
    Statement: [
      {
        Effect: 'Allow',
        Principal: { Federated: 'token.actions.githubusercontent.com' },
        Action: 'sts:AssumeRoleWithWebIdentity',
        Condition: { StringLike: { 'oidc:sub': 'repo:acme/*' } },
      },
    ],
  };
  const v1 = adminApiBase;

  beforeAll(async () => {
    // Health.
    await call('GET', '/healthz', { user: null });
    await call('GET', '/readyz', { user: null });

    // Refusals before anything else: no credentials, throttled, denied by policy.
    expect((await call('GET', `${v1}/users`, { user: null })).status).toBe(401);
    expect(
      (await call('GET', `${v1}/users`, { user: null, headers: { 'x-test-throttle': '1' } })).status,
    ).toBe(429);
    expect(
      (
        await call('POST', `${v1}/groups`, {
          body: { name: 'x' },
          headers: { 'x-test-deny': 'admin:CreateGroup' },
        })
      ).status,
    ).toBe(403);

    // Groups.
    expect(
      (await call('POST', `${v1}/groups`, { body: { name: 'devs', description: 'Developers' } })).status,
    ).toBe(201);
    expect((await call('POST', `${v1}/groups`, { body: { name: 'devs' } })).status).toBe(409);
    await call('POST', `${v1}/groups`, { body: { name: 'ops' } });
    await call('GET', `${v1}/groups`);
    await call('PATCH', `${v1}/groups/ops`, { body: { description: 'Operations' } });

    // Users.
    const alice = await call('POST', `${v1}/users`, {
      body: { name: 'alice', password: 'correct horse battery', groups: ['devs'], tags: { team: 'a' } },
    });
    expect(alice.status).toBe(201);
    expect((await call('POST', `${v1}/users`, { body: { name: 'bob', pw: 'x' } })).status).toBe(400);
    expect((await call('POST', `${v1}/users`, { raw: '{' })).status).toBe(400);
    expect((await call('POST', `${v1}/users`, { body: { name: 'alice' } })).status).toBe(409);
    for (const name of ['bob', 'carol', 'dave']) await call('POST', `${v1}/users`, { body: { name } });
    const page = await call('GET', `${v1}/users?limit=2`);
    expect(page.json.next).toBe('bob');
    expect(page.res.headers.get('link')).toContain('rel="next"');
    await call('GET', `${v1}/users?limit=2&after=bob`);
    expect((await call('GET', `${v1}/users?limit=0`)).status).toBe(400);
    const got = await call('GET', `${v1}/users/alice`);
    expect((await call('GET', `${v1}/users/nobody`)).status).toBe(404);
    expect(
      (
        await call('PATCH', `${v1}/users/alice`, {
          body: { disabled: false },
          headers: { 'if-match': '"stale"' },
        })
      ).status,
    ).toBe(412);
    await call('PATCH', `${v1}/users/alice`, {
      body: { password: null, groups: ['devs', 'ops'] },
      headers: { 'if-match': got.res.headers.get('etag') as string },
    });
    expect((await call('PATCH', `${v1}/users/alice`, { body: { groups: ['nope'] } })).status).toBe(400);
    await call('GET', `${v1}/groups/devs`);

    // Access keys.
    const key = await call('POST', `${v1}/users/alice/access-keys`);
    await call('GET', `${v1}/users/alice/access-keys`);
    await call('DELETE', `${v1}/users/alice/access-keys/${key.json.id}`);
    expect((await call('DELETE', `${v1}/users/alice/access-keys/${key.json.id}`)).status).toBe(404);

    // Service accounts.
    await call('POST', `${v1}/service-accounts`, {
      body: { name: 'ci', description: 'CI', groups: ['devs'] },
    });
    await call('GET', `${v1}/service-accounts`);
    await call('GET', `${v1}/service-accounts/ci`);
    await call('PATCH', `${v1}/service-accounts/ci`, { body: { tags: { env: 'prod' } } });
    const ciKey = await call('POST', `${v1}/service-accounts/ci/access-keys`);
    await call('POST', `${v1}/service-accounts/ci/access-keys`);
    const third = await call('POST', `${v1}/service-accounts/ci/access-keys`);
    expect(third.json.error.code).toBe('LIMIT_EXCEEDED');
    await call('GET', `${v1}/service-accounts/ci/access-keys`);
    await call('DELETE', `${v1}/service-accounts/ci/access-keys/${ciKey.json.id}`);

    // Roles.
    const badRole = await call('POST', `${v1}/roles`, {
      body: { name: 'deploy', trustPolicy: { Version: '2012-10-17', Statement: [] } },
    });
    expect(badRole.status).toBe(400);
    await call('POST', `${v1}/roles`, {
      body: { name: 'deploy', trustPolicy: trust, maxSessionSeconds: 900 },
    });
    await call('GET', `${v1}/roles`);
    await call('GET', `${v1}/roles/deploy`);
    await call('PATCH', `${v1}/roles/deploy`, { body: { description: 'Deploys from CI' } });

    // Policies.
    const created = await call('PUT', `${v1}/policies/pull`, { body: { document: pullAll } });
    expect(created.status).toBe(201);
    const bad = await call('PUT', `${v1}/policies/bad`, {
      body: { document: { Version: '2012-10-17', Statement: { Effect: 'Allow', Action: 'nope:Nope' } } },
    });
    expect(bad.status).toBe(400);
    expect(bad.json.error.details.length).toBeGreaterThan(0);
    const replaced = await call('PUT', `${v1}/policies/pull`, {
      body: { document: pullAll },
      headers: { 'if-match': created.res.headers.get('etag') as string },
    });
    expect(replaced.status).toBe(200);
    expect(
      (
        await call('PUT', `${v1}/policies/pull`, {
          body: { document: pullAll },
          headers: { 'if-match': created.res.headers.get('etag') as string },
        })
      ).status,
    ).toBe(412);
    await call('PUT', `${v1}/policies/scratch`, { body: { document: pullAll } });
    await call('GET', `${v1}/policies`);
    await call('GET', `${v1}/actions`);

    // Attachments, for every kind of identity.
    for (const [kind, name] of [
      ['users', 'alice'],
      ['groups', 'devs'],
      ['roles', 'deploy'],
      ['service-accounts', 'ci'],
    ]) {
      expect((await call('PUT', `${v1}/${kind}/${name}/policies/pull`)).status).toBe(204);
      await call('PUT', `${v1}/${kind}/${name}/policies/scratch`);
      await call('GET', `${v1}/${kind}/${name}/policies`);
      expect((await call('DELETE', `${v1}/${kind}/${name}/policies/scratch`)).status).toBe(204);
      expect((await call('DELETE', `${v1}/${kind}/${name}/policies/scratch`)).status).toBe(404);
    }
    await call('GET', `${v1}/policies/pull`);
    const conflict = await call('DELETE', `${v1}/policies/pull`);
    expect(conflict.json.error.code).toBe('CONFLICT');
    expect(conflict.json.error.details.length).toBe(4);
    await call('DELETE', `${v1}/policies/scratch`);
    expect((await call('GET', `${v1}/policies/scratch`)).status).toBe(404);

    // Repository policies, scope encoded and raw.
    expect(
      (await call('PUT', `${v1}/repository-policies/team-a%2F*`, { body: { document: publicPull } })).status,
    ).toBe(201);
    expect(
      (await call('PUT', `${v1}/repository-policies/team-a/*`, { body: { document: publicPull } })).status,
    ).toBe(200);
    expect(
      (await call('PUT', `${v1}/repository-policies/team-b/api`, { body: { document: pullAll } })).status,
    ).toBe(400);
    await call('GET', `${v1}/repository-policies`);
    await call('GET', `${v1}/repository-policies/team-a%2F%2A`);
    await call('DELETE', `${v1}/repository-policies/team-a/*`);
    expect((await call('GET', `${v1}/repository-policies/team-a/*`)).status).toBe(404);

    // OIDC providers.
    const provider = await call('POST', `${v1}/oidc-providers`, {
      body: { id: 'github', issuer: 'https://token.actions.githubusercontent.com', audiences: ['berth'] },
    });
    expect(provider.status).toBe(201);
    expect(
      (
        await call('POST', `${v1}/oidc-providers`, {
          body: { id: 'github', issuer: 'https://token.actions.githubusercontent.com', audiences: ['berth'] },
        })
      ).status,
    ).toBe(409);
    expect(
      (await call('POST', `${v1}/oidc-providers`, { body: { issuer: 'ftp://x', audiences: ['a'] } })).status,
    ).toBe(400);
    await call('GET', `${v1}/oidc-providers`);
    await call('GET', `${v1}/oidc-providers/github`);
    await call('DELETE', `${v1}/oidc-providers/github`);
    expect((await call('GET', `${v1}/oidc-providers/github`)).status).toBe(404);

    // The simulator.
    const sim = await call('POST', `${v1}/simulate`, {
      body: {
        principal: { type: 'user', name: 'alice' },
        action: 'registry:Pull',
        resource: 'repository/app',
      },
    });
    expect(sim.json.decision).toBe('Allow');
    await call('POST', `${v1}/simulate`, {
      body: {
        principal: { type: 'anonymous', name: '' },
        action: 'registry:Push',
        resource: 'repository/app',
        context: { 'aws:SourceIp': ['10.0.0.1'] },
      },
    });
    expect(
      (
        await call('POST', `${v1}/simulate`, {
          body: { principal: { type: 'user' }, action: 'x', resource: 'y' },
        })
      ).status,
    ).toBe(400);
    expect(
      (
        await call('POST', `${v1}/simulate`, {
          body: {
            principal: { type: 'user', name: 'ghost' },
            action: 'registry:Pull',
            resource: 'repository/a',
          },
        })
      ).status,
    ).toBe(404);

    // Deletions.
    for (const [kind, name] of [
      ['users', 'bob'],
      ['groups', 'ops'],
      ['roles', 'deploy'],
      ['service-accounts', 'ci'],
    ]) {
      expect((await call('DELETE', `${v1}/${kind}/${name}`)).status).toBe(204);
      expect((await call('GET', `${v1}/${kind}/${name}`)).status).toBe(404);
    }

    // The audit log saw all of it.
    const audit = await call('GET', `${v1}/audit?type=admin&limit=5`);
    expect(audit.json.items).toHaveLength(5);
    await call('GET', `${v1}/audit?decision=Deny`);
    expect((await call('GET', `${v1}/audit?since=soon`)).status).toBe(400);
    expect((await call('POST', `${v1}/audit/verify`)).json.ok).toBe(true);
  });

  it('exercised every admin operation', () => {
    const missing = operations.filter((o) => !seen.has(o.op.operationId)).map((o) => o.op.operationId);
    expect(missing).toEqual([]);
  });

  it('exercised each error status the API answers with', () => {
    const statuses = new Set([...seen.values()].flatMap((s) => [...s]));
    for (const s of ['200', '201', '204', '400', '401', '403', '404', '409', '412', '429'])
      expect(statuses.has(s), `some response had status ${s}`).toBe(true);
  });
});
