// The admin API over the real identity, policy, federation and audit stores (memory storage),
// with a fake authenticate/authorize driven by test headers so each route is one app.request().
import { Hono } from 'hono';
import { beforeEach, describe, expect, it } from 'vitest';
import { createAuditLog } from '../../src/auth/audit.ts';
import { createFederation } from '../../src/auth/federation.ts';
import { AuthStoreError, createIdentityStore } from '../../src/auth/identities.ts';
import { AuthError } from '../../src/auth/index.ts';
import { evaluate, type Principal } from '../../src/auth/policy.ts';
import { createPolicyStore } from '../../src/auth/policy-store.ts';
import { type AdminDeps, adminApiBase, createAdminApi } from '../../src/http/admin.ts';
import type { AppEnv } from '../../src/http/env.ts';
import { requestContext } from '../../src/http/middleware.ts';
import { silentLogger } from '../../src/log.ts';
import { createMemoryDriver } from '../../src/storage/index.ts';

const pullAll = {
  Version: '2012-10-17',
  Statement: [{ Sid: 'Pull', Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/*' }],
};
const pushAll = {
  Version: '2012-10-17',
  Statement: [{ Effect: 'Allow', Action: ['registry:Push', 'registry:Pull'], Resource: 'repository/*' }],
};
const publicPull = {
  Version: '2012-10-17',
  Statement: [{ Effect: 'Allow', Principal: '*', Action: 'registry:Pull' }],
};
const githubTrust = {
  Version: '2012-10-17',
  Statement: [
    {
      Effect: 'Allow',
      Principal: { Federated: 'token.actions.githubusercontent.com' },
      Action: 'sts:AssumeRoleWithWebIdentity',
      Condition: { StringEquals: { 'oidc:aud': 'berth' } },
    },
  ],
};

function setup() {
  const storage = createMemoryDriver();
  const policies = createPolicyStore({ storage });
  const identities = createIdentityStore({ storage, scryptCost: 16 });
  // No test here fetches an issuer's keys; the outbound rules are the defaults.
  const federation = createFederation({ storage });
  const audit = createAuditLog({ storage });
  const revoked: string[] = [];
  const authorizedVia: string[] = [];
  // The wiring's own caller type reaches authorize as authenticate returned it.
  type TestCaller = { principal: { type: 'user'; name: string; groups: string[] }; via: 'header' };
  const deps: AdminDeps<TestCaller> = {
    identities,
    policies,
    federation,
    audit,
    async authenticate(c) {
      if (c.req.header('x-test-throttle'))
        throw new AuthError('throttled', 'too many attempts', { retryAfterSeconds: 7 });
      if (c.req.header('x-test-bad-token')) throw new AuthError('invalid-token', 'the token has expired');
      if (c.req.header('x-test-bad-password'))
        throw new AuthError('bad-credentials', 'wrong name or password');
      const name = c.req.header('x-test-user');
      return name ? { principal: { type: 'user', name, groups: ['admins'] }, via: 'header' } : undefined;
    },
    async authorize(caller, action, resource, c) {
      authorizedVia.push(caller.via);
      const deny = (c.req.header('x-test-deny') ?? '').split(',').filter(Boolean);
      return deny.includes(action) || deny.includes(resource) || deny.includes('*')
        ? { effect: 'Deny', reason: 'no_allow' }
        : { effect: 'Allow', reason: 'allowed' };
    },
    async simulate({ principal, action, resource, context }) {
      let p: Principal;
      if (principal.type === 'anonymous') p = { type: 'anonymous', name: '', groups: [] };
      else if (principal.type === 'role') {
        if (!(await identities.getRole(principal.name)))
          throw new AuthStoreError('NOT_FOUND', `role ${JSON.stringify(principal.name)} does not exist`);
        p = { type: 'role', name: principal.name, groups: [] };
      } else {
        const info = await identities.resolvePrincipal({ type: principal.type, name: principal.name });
        if (!info)
          throw new AuthStoreError('NOT_FOUND', `${principal.type} ${principal.name} does not exist`);
        p = { type: info.type, name: info.name, groups: info.groups };
      }
      const repo = resource.startsWith('repository/') ? resource.slice('repository/'.length) : undefined;
      const attached = [
        ...(await policies.policiesFor(p)),
        ...(repo ? await policies.repositoryPoliciesFor(repo) : []),
      ];
      return evaluate({ principal: p, action, resource, context }, attached);
    },
    async revokeSessions(subject) {
      revoked.push(subject);
    },
  };
  const app = new Hono<AppEnv>();
  app.use(requestContext({ log: silentLogger, trustProxy: true, scheme: 'https' }));
  app.route(adminApiBase, createAdminApi(deps));

  async function call(
    method: string,
    path: string,
    opts: { body?: unknown; user?: string | null; headers?: Record<string, string>; raw?: string } = {},
  ) {
    const headers: Record<string, string> = { 'x-forwarded-for': '203.0.113.9', ...opts.headers };
    const user = opts.user === undefined ? 'root' : opts.user;
    if (user !== null) headers['x-test-user'] = user;
    let bodyText: string | undefined = opts.raw;
    if (opts.body !== undefined) bodyText = JSON.stringify(opts.body);
    if (bodyText !== undefined) headers['content-type'] ??= 'application/json';
    const res = await app.request(`${adminApiBase}${path}`, {
      method,
      headers,
      ...(bodyText !== undefined ? { body: bodyText } : {}),
    });
    const text = await res.text();
    // biome-ignore lint/suspicious/noExplicitAny: test bodies are read loosely
    const json: any = text === '' ? undefined : JSON.parse(text);
    return { res, status: res.status, json, text };
  }

  return { app, deps, identities, policies, audit, revoked, authorizedVia, call };
}

type Setup = ReturnType<typeof setup>;
let t: Setup;
beforeEach(() => {
  t = setup();
});

describe('authentication and authorization', () => {
  it('answers 401 with Basic and Bearer challenges without credentials', async () => {
    const r = await t.call('GET', '/users', { user: null });
    expect(r.status).toBe(401);
    expect(r.json).toEqual({ error: { code: 'UNAUTHORIZED', message: 'authentication required' } });
    const challenge = r.res.headers.get('www-authenticate') ?? '';
    expect(challenge).toContain('Basic realm="berth"');
    expect(challenge).toMatch(/Bearer realm="https:\/\/localhost\/token",service="berth"/);
    expect(t.authorizedVia).toEqual([]);
  });

  it('hands authorize the caller authenticate returned', async () => {
    expect((await t.call('GET', '/users')).status).toBe(200);
    expect(t.authorizedVia).toEqual(['header']);
  });

  it('answers 401 to refused credentials, flagging a bad bearer token', async () => {
    const token = await t.call('GET', '/users', { user: null, headers: { 'x-test-bad-token': '1' } });
    expect(token.status).toBe(401);
    expect(token.json.error).toEqual({ code: 'UNAUTHORIZED', message: 'the token has expired' });
    expect(token.res.headers.get('www-authenticate')).toContain('error="invalid_token"');
    const basic = await t.call('GET', '/users', { user: null, headers: { 'x-test-bad-password': '1' } });
    expect(basic.status).toBe(401);
    expect(basic.res.headers.get('www-authenticate')).not.toContain('error=');
  });

  it('answers 429 with Retry-After when sign-in is throttled', async () => {
    const r = await t.call('GET', '/users', { user: null, headers: { 'x-test-throttle': '1' } });
    expect(r.status).toBe(429);
    expect(r.json.error.code).toBe('TOO_MANY_REQUESTS');
    expect(r.res.headers.get('retry-after')).toBe('7');
  });

  it('answers 403 with a reason code and audits the denial', async () => {
    await t.policies.putPolicy('secret-policy', pullAll);
    const r = await t.call('POST', '/users', {
      body: { name: 'bob' },
      headers: { 'x-test-deny': 'admin:CreateUser', 'x-request-id': 'req-403' },
    });
    expect(r.status).toBe(403);
    expect(r.json).toEqual({
      error: {
        code: 'FORBIDDEN',
        message: 'not allowed to admin:CreateUser on user/bob',
        reason: 'no_allow',
      },
    });
    expect(r.text).not.toContain('secret-policy');
    expect(await t.identities.getUser('bob')).toBeUndefined();
    const { entries } = await t.audit.query({ decision: 'Deny' });
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({
      type: 'admin',
      actor: 'user/root',
      action: 'admin:CreateUser',
      resource: 'user/bob',
      decision: 'Deny',
      reason: 'no_allow',
      sourceIp: '203.0.113.9',
      requestId: 'req-403',
    });
  });

  it('needs the attach right on the policy as well as on the identity', async () => {
    await t.identities.createUser({ name: 'alice' });
    await t.policies.putPolicy('admin-all', pullAll);
    const r = await t.call('PUT', '/users/alice/policies/admin-all', {
      headers: { 'x-test-deny': 'policy/admin-all' },
    });
    expect(r.status).toBe(403);
    expect(await t.policies.attachedTo({ type: 'user', name: 'alice' })).toEqual([]);
    const ok = await t.call('PUT', '/users/alice/policies/admin-all');
    expect(ok.status).toBe(204);
  });

  it('audits every change with its outcome, and not plain reads', async () => {
    await t.call('POST', '/groups', { body: { name: 'devs' } });
    await t.call('POST', '/groups', { body: { name: 'devs' } });
    await t.call('GET', '/groups/devs');
    const { entries } = await t.audit.query({ type: 'admin' });
    expect(entries.map((e) => [e.action, e.resource, e.decision, e.detail])).toEqual([
      ['admin:CreateGroup', 'group/devs', 'Allow', { status: 201 }],
      ['admin:CreateGroup', 'group/devs', 'Allow', { status: 409, error: 'ALREADY_EXISTS' }],
    ]);
  });
});

describe('request bodies', () => {
  it('refuses malformed JSON', async () => {
    const r = await t.call('POST', '/users', { raw: '{"name": ' });
    expect(r.status).toBe(400);
    expect(r.json.error.code).toBe('INVALID');
    expect(r.json.error.message).toMatch(/not valid JSON/);
  });

  it('refuses unknown fields, naming them', async () => {
    const r = await t.call('POST', '/users', { body: { name: 'bob', pasword: 'x' } });
    expect(r.status).toBe(400);
    expect(r.json.error.details).toEqual([{ path: 'pasword', message: 'pasword: unknown field "pasword"' }]);
  });

  it('reports every wrong field at once', async () => {
    const r = await t.call('POST', '/users', { body: { disabled: 'no', groups: 'devs' } });
    expect(r.status).toBe(400);
    expect(r.json.error.details.map((d: { path: string }) => d.path).sort()).toEqual([
      'disabled',
      'groups',
      'name',
    ]);
  });

  it('refuses a body that is not declared JSON', async () => {
    const r = await t.call('POST', '/users', {
      raw: '{"name":"bob"}',
      headers: { 'content-type': 'text/plain' },
    });
    expect(r.status).toBe(400);
    expect(r.json.error.code).toBe('INVALID');
  });
});

describe('users', () => {
  it('create, read, update, list and delete', async () => {
    await t.identities.createGroup({ name: 'devs' });
    const created = await t.call('POST', '/users', {
      body: { name: 'alice', password: 'correct horse', groups: ['devs'], tags: { team: 'a' } },
    });
    expect(created.status).toBe(201);
    expect(created.res.headers.get('location')).toBe('/api/v1/users/alice');
    expect(created.json).toMatchObject({ type: 'user', name: 'alice', groups: ['devs'], hasPassword: true });
    expect(created.text).not.toContain('correct horse');
    expect(created.res.headers.get('etag')).toBe(`"${created.json.etag}"`);

    expect((await t.call('POST', '/users', { body: { name: 'alice' } })).json.error.code).toBe(
      'ALREADY_EXISTS',
    );
    expect((await t.call('POST', '/users', { body: { name: 'Alice' } })).status).toBe(400);

    const got = await t.call('GET', '/users/alice');
    expect(got.status).toBe(200);
    expect(got.json.name).toBe('alice');
    const etag = got.res.headers.get('etag') as string;

    const stale = await t.call('PATCH', '/users/alice', {
      body: { disabled: true },
      headers: { 'if-match': '"nope"' },
    });
    expect(stale.status).toBe(412);
    expect(stale.json.error.code).toBe('PRECONDITION_FAILED');

    const patched = await t.call('PATCH', '/users/alice', {
      body: { password: 'another password', tags: {} },
      headers: { 'if-match': etag },
    });
    expect(patched.status).toBe(200);
    expect(patched.json.tags).toEqual({});
    expect(t.revoked).toEqual(['user/alice']);

    const badGroup = await t.call('PATCH', '/users/alice', { body: { groups: ['nope'] } });
    expect(badGroup.status).toBe(400);

    const list = await t.call('GET', '/users');
    expect(list.json).toEqual({ items: [expect.objectContaining({ name: 'alice' })] });

    expect((await t.call('DELETE', '/users/alice')).status).toBe(204);
    expect(t.revoked).toEqual(['user/alice', 'user/alice']);
    const gone = await t.call('GET', '/users/alice');
    expect(gone.status).toBe(404);
    expect(gone.json.error.code).toBe('NOT_FOUND');
    expect((await t.call('DELETE', '/users/alice')).status).toBe(404);
  });

  it('answers 404 for a name no identity can have', async () => {
    expect((await t.call('GET', '/users/a%2Fb')).status).toBe(404);
    expect((await t.call('GET', '/users/*')).status).toBe(404);
  });

  it('detaches the policies of a deleted user, so the policy can then be deleted', async () => {
    await t.identities.createUser({ name: 'alice' });
    await t.policies.putPolicy('pull', pullAll);
    await t.call('PUT', '/users/alice/policies/pull');
    expect((await t.call('DELETE', '/users/alice')).status).toBe(204);
    expect((await t.call('DELETE', '/policies/pull')).status).toBe(204);
  });
});

describe('access keys', () => {
  it('shows the secret only in the response that creates the key', async () => {
    await t.identities.createUser({ name: 'alice' });
    const made = await t.call('POST', '/users/alice/access-keys');
    expect(made.status).toBe(201);
    expect(made.json).toMatchObject({ owner: { type: 'user', name: 'alice' }, status: 'active' });
    expect(made.json.secret).toEqual(expect.any(String));
    expect(made.res.headers.get('cache-control')).toBe('no-store');
    const { id, secret } = made.json;
    expect(await t.identities.verifyAccessKey(id, secret)).toMatchObject({ name: 'alice' });

    const list = await t.call('GET', '/users/alice/access-keys');
    expect(list.json.items).toEqual([expect.objectContaining({ id, status: 'active' })]);
    expect(list.text).not.toContain(secret);
    expect(JSON.stringify(await t.audit.query())).not.toContain(secret);

    await t.call('POST', '/users/alice/access-keys');
    const third = await t.call('POST', '/users/alice/access-keys');
    expect(third.status).toBe(409);
    expect(third.json.error.code).toBe('LIMIT_EXCEEDED');

    await t.identities.createServiceAccount({ name: 'ci' });
    expect((await t.call('DELETE', `/service-accounts/ci/access-keys/${id}`)).status).toBe(404);
    expect((await t.call('DELETE', `/users/alice/access-keys/${id}`)).status).toBe(204);
    expect(t.revoked).toEqual(['user/alice']);
    expect((await t.call('DELETE', `/users/alice/access-keys/${id}`)).status).toBe(404);
    expect((await t.call('GET', '/users/nobody/access-keys')).status).toBe(404);
  });

  it('works for service accounts', async () => {
    await t.identities.createServiceAccount({ name: 'ci' });
    const made = await t.call('POST', '/service-accounts/ci/access-keys');
    expect(made.status).toBe(201);
    expect(made.json.owner).toEqual({ type: 'serviceaccount', name: 'ci' });
    const list = await t.call('GET', '/service-accounts/ci/access-keys');
    expect(list.json.items).toHaveLength(1);
  });
});

describe('groups, roles and service accounts', () => {
  it('groups: CRUD, with members', async () => {
    const made = await t.call('POST', '/groups', { body: { name: 'devs', description: 'Developers' } });
    expect(made.status).toBe(201);
    await t.identities.createUser({ name: 'alice', groups: ['devs'] });
    await t.identities.createServiceAccount({ name: 'ci', groups: ['devs'] });
    const got = await t.call('GET', '/groups/devs');
    expect(got.json).toMatchObject({
      name: 'devs',
      description: 'Developers',
      members: { users: ['alice'], serviceAccounts: ['ci'] },
    });
    const patched = await t.call('PATCH', '/groups/devs', { body: { description: 'Devs' } });
    expect(patched.json.description).toBe('Devs');
    expect((await t.call('GET', '/groups')).json.items).toHaveLength(1);
    expect((await t.call('DELETE', '/groups/devs')).status).toBe(204);
    expect((await t.identities.getUser('alice'))?.groups).toEqual([]);
    expect((await t.call('GET', '/groups/devs')).status).toBe(404);
  });

  it('roles: CRUD, with the trust policy validated', async () => {
    const bad = await t.call('POST', '/roles', {
      body: { name: 'deploy', trustPolicy: { Version: '2012-10-17', Statement: [{ Effect: 'Allow' }] } },
    });
    expect(bad.status).toBe(400);
    expect(bad.json.error.code).toBe('INVALID');
    expect(bad.json.error.details.length).toBeGreaterThan(0);
    for (const d of bad.json.error.details) expect(d.path).toMatch(/^trustPolicy/);

    const made = await t.call('POST', '/roles', {
      body: { name: 'deploy', trustPolicy: githubTrust, maxSessionSeconds: 900 },
    });
    expect(made.status).toBe(201);
    expect(made.json).toMatchObject({
      type: 'role',
      name: 'deploy',
      maxSessionSeconds: 900,
      trustPolicy: githubTrust,
    });
    const patched = await t.call('PATCH', '/roles/deploy', { body: { trustPolicy: null, description: 'x' } });
    expect(patched.status).toBe(200);
    expect(patched.json.trustPolicy).toBeUndefined();
    expect((await t.call('PATCH', '/roles/deploy', { body: { maxSessionSeconds: 5 } })).status).toBe(400);
    expect((await t.call('GET', '/roles/deploy')).json.description).toBe('x');
    expect((await t.call('GET', '/roles')).json.items).toHaveLength(1);
    expect((await t.call('DELETE', '/roles/deploy')).status).toBe(204);
    expect((await t.call('GET', '/roles/deploy')).status).toBe(404);
  });

  it('service accounts: CRUD', async () => {
    await t.identities.createGroup({ name: 'ci-group' });
    const made = await t.call('POST', '/service-accounts', { body: { name: 'ci', groups: ['ci-group'] } });
    expect(made.status).toBe(201);
    expect(made.json).toMatchObject({ type: 'serviceaccount', name: 'ci', groups: ['ci-group'] });
    const patched = await t.call('PATCH', '/service-accounts/ci', { body: { description: 'pipelines' } });
    expect(patched.json.description).toBe('pipelines');
    expect((await t.call('GET', '/service-accounts/ci')).json.description).toBe('pipelines');
    expect((await t.call('GET', '/service-accounts')).json.items).toHaveLength(1);
    expect((await t.call('DELETE', '/service-accounts/ci')).status).toBe(204);
    expect(t.revoked).toEqual(['serviceaccount/ci']);
    expect((await t.call('GET', '/service-accounts/ci')).status).toBe(404);
  });

  it.each([
    ['users', 'user'],
    ['groups', 'group'],
    ['roles', 'role'],
    ['service-accounts', 'serviceaccount'],
  ] as const)('%s: attach, list and detach policies', async (path, type) => {
    await t.call('POST', `/${path}`, { body: { name: 'x1' } });
    await t.policies.putPolicy('pull', pullAll);
    expect((await t.call('PUT', `/${path}/x1/policies/pull`)).status).toBe(204);
    expect((await t.call('PUT', `/${path}/x1/policies/pull`)).status).toBe(204);
    expect((await t.call('GET', `/${path}/x1/policies`)).json).toEqual({ items: ['pull'] });
    expect(await t.policies.attachmentsOf('pull')).toEqual([{ type, name: 'x1' }]);
    expect((await t.call('PUT', `/${path}/x1/policies/nope`)).status).toBe(404);
    expect((await t.call('PUT', `/${path}/nobody/policies/pull`)).status).toBe(404);
    expect((await t.call('DELETE', `/${path}/x1/policies/pull`)).status).toBe(204);
    expect((await t.call('DELETE', `/${path}/x1/policies/pull`)).status).toBe(404);
    expect((await t.call('GET', `/${path}/x1/policies`)).json).toEqual({ items: [] });
  });
});

describe('policies', () => {
  it('PUT creates (201) then replaces (200), with ETag and If-Match', async () => {
    const made = await t.call('PUT', '/policies/pull', { body: { document: pullAll } });
    expect(made.status).toBe(201);
    expect(made.json).toMatchObject({ name: 'pull', version: 1, document: pullAll });
    const etag1 = made.res.headers.get('etag') as string;
    expect(etag1).toBe(`"${made.json.etag}"`);

    const replaced = await t.call('PUT', '/policies/pull', {
      body: { document: pushAll },
      headers: { 'if-match': etag1 },
    });
    expect(replaced.status).toBe(200);
    expect(replaced.json.version).toBe(2);

    const stale = await t.call('PUT', '/policies/pull', {
      body: { document: pullAll },
      headers: { 'if-match': etag1 },
    });
    expect(stale.status).toBe(412);
    expect(stale.json.error.code).toBe('PRECONDITION_FAILED');

    const missing = await t.call('PUT', '/policies/other', {
      body: { document: pullAll },
      headers: { 'if-match': '*' },
    });
    expect(missing.status).toBe(412);

    const got = await t.call('GET', '/policies/pull');
    expect(got.res.headers.get('etag')).toBe(replaced.res.headers.get('etag'));
    expect(got.json).toMatchObject({ name: 'pull', version: 2, document: pushAll, attachments: [] });

    const deleteStale = await t.call('DELETE', '/policies/pull', { headers: { 'if-match': etag1 } });
    expect(deleteStale.status).toBe(412);
    expect((await t.call('DELETE', '/policies/pull')).status).toBe(204);
    expect((await t.call('GET', '/policies/pull')).status).toBe(404);
  });

  it('refuses an invalid document with every problem in details', async () => {
    const r = await t.call('PUT', '/policies/bad', {
      body: {
        document: {
          Version: '2012-10-17',
          Statement: [{ Effect: 'Allow', Action: 'registry:Pul', Resource: 'repository/*' }],
        },
      },
    });
    expect(r.status).toBe(400);
    expect(r.json.error.code).toBe('INVALID');
    expect(r.json.error.details).toEqual([
      {
        path: 'document.Statement[0].Action',
        message: expect.stringContaining('unknown action "registry:Pul"'),
      },
    ]);
    expect((await t.call('PUT', '/policies/bad', { body: pullAll })).json.error.details).toEqual(
      expect.arrayContaining([{ path: 'Version', message: 'Version: unknown field "Version"' }]),
    );
    expect((await t.call('PUT', '/policies/bad%20name', { body: { document: pullAll } })).status).toBe(400);
  });

  it('refuses to delete an attached policy (409), naming where it is attached', async () => {
    await t.identities.createUser({ name: 'alice' });
    await t.call('PUT', '/policies/pull', { body: { document: pullAll } });
    await t.call('PUT', '/users/alice/policies/pull');
    const r = await t.call('DELETE', '/policies/pull');
    expect(r.status).toBe(409);
    expect(r.json.error.code).toBe('CONFLICT');
    expect(r.json.error.details).toEqual([{ type: 'user', name: 'alice' }]);
    expect((await t.call('GET', '/policies/pull')).json.attachments).toEqual([
      { type: 'user', name: 'alice' },
    ]);
    await t.call('DELETE', '/users/alice/policies/pull');
    expect((await t.call('DELETE', '/policies/pull')).status).toBe(204);
  });
});

describe('repository policies', () => {
  it('take the scope %2F-encoded or with raw slashes', async () => {
    const made = await t.call('PUT', '/repository-policies/team-a%2F*', { body: { document: publicPull } });
    expect(made.status).toBe(201);
    expect(made.json).toMatchObject({ scope: 'team-a/*', version: 1 });
    expect((await t.call('GET', '/repository-policies/team-a/*')).json.scope).toBe('team-a/*');
    expect((await t.call('GET', '/repository-policies/team-a%2F%2A')).json.scope).toBe('team-a/*');
    await t.call('PUT', '/repository-policies/team-b/app', { body: { document: publicPull } });
    await t.call('PUT', '/repository-policies/*', { body: { document: publicPull } });
    const list = await t.call('GET', '/repository-policies');
    expect(list.json.items.map((p: { scope: string }) => p.scope)).toEqual(['*', 'team-a/*', 'team-b/app']);

    const stale = await t.call('PUT', '/repository-policies/team-b/app', {
      body: { document: publicPull },
      headers: { 'if-match': made.res.headers.get('etag') as string },
    });
    expect(stale.status).toBe(412);
    const etag = (await t.call('GET', '/repository-policies/team-b%2Fapp')).res.headers.get('etag') as string;
    const replaced = await t.call('PUT', '/repository-policies/team-b/app', {
      body: { document: publicPull },
      headers: { 'if-match': etag },
    });
    expect(replaced.status).toBe(200);
    expect(replaced.json.version).toBe(2);

    expect((await t.call('DELETE', '/repository-policies/team-a%2F*')).status).toBe(204);
    expect((await t.call('GET', '/repository-policies/team-a/*')).status).toBe(404);
    expect(
      (await t.call('PUT', '/repository-policies/Team-A', { body: { document: publicPull } })).status,
    ).toBe(400);
  });

  it('validates the document as a repository policy', async () => {
    const r = await t.call('PUT', '/repository-policies/app', { body: { document: pullAll } });
    expect(r.status).toBe(400);
    expect(r.json.error.details.length).toBeGreaterThan(0);
    for (const d of r.json.error.details) expect(d.path).toMatch(/^document/);
  });
});

describe('OIDC providers', () => {
  it('add, read, list and delete', async () => {
    const body = { issuer: 'https://token.actions.githubusercontent.com', audiences: ['berth'] };
    const made = await t.call('POST', '/oidc-providers', { body });
    expect(made.status).toBe(201);
    const id = made.json.id;
    expect(made.res.headers.get('location')).toBe(`/api/v1/oidc-providers/${id}`);
    const again = await t.call('POST', '/oidc-providers', { body });
    expect(again.status).toBe(409);
    expect(again.json.error.code).toBe('ALREADY_EXISTS');
    const bad = await t.call('POST', '/oidc-providers', {
      body: { issuer: 'http://example.com', audiences: [] },
    });
    expect(bad.status).toBe(400);
    expect(bad.json.error.details.map((d: { path: string }) => d.path).sort()).toEqual([
      'audiences',
      'issuer',
    ]);
    expect((await t.call('GET', `/oidc-providers/${id}`)).json.issuer).toBe(body.issuer);
    expect((await t.call('GET', '/oidc-providers')).json.items).toHaveLength(1);
    expect((await t.call('DELETE', `/oidc-providers/${id}`)).status).toBe(204);
    expect((await t.call('DELETE', `/oidc-providers/${id}`)).status).toBe(404);
    expect((await t.call('GET', `/oidc-providers/${id}`)).status).toBe(404);
  });
});

describe('pagination', () => {
  it('pages with limit and after, and a Link to the next page', async () => {
    for (const name of ['u1', 'u2', 'u3', 'u4', 'u5']) await t.identities.createUser({ name });
    const first = await t.call('GET', '/users?limit=2');
    expect(first.json.items.map((u: { name: string }) => u.name)).toEqual(['u1', 'u2']);
    expect(first.json.next).toBe('u2');
    const link = first.res.headers.get('link') as string;
    expect(link).toBe('</api/v1/users?limit=2&after=u2>; rel="next"');
    const nextPath = (/^<\/api\/v1([^>]+)>/.exec(link) as RegExpExecArray)[1] as string;
    const second = await t.call('GET', nextPath);
    expect(second.json.items.map((u: { name: string }) => u.name)).toEqual(['u3', 'u4']);
    const third = await t.call('GET', '/users?limit=2&after=u4');
    expect(third.json).toEqual({ items: [expect.objectContaining({ name: 'u5' })] });
    expect(third.res.headers.get('link')).toBeNull();
    for (const q of ['limit=0', 'limit=1001', 'limit=abc', 'after=']) {
      const r = await t.call('GET', `/users?${q}`);
      expect(r.status, q).toBe(400);
      expect(r.json.error.code).toBe('INVALID');
    }
  });

  it('pages lists held in memory too (repository policies)', async () => {
    for (const s of ['a', 'b', 'c']) await t.policies.putRepositoryPolicy(s, publicPull);
    const first = await t.call('GET', '/repository-policies?limit=2');
    expect(first.json.next).toBe('b');
    expect(first.res.headers.get('link')).toBe('</api/v1/repository-policies?limit=2&after=b>; rel="next"');
    expect((await t.call('GET', '/repository-policies?limit=2&after=b')).json.items).toHaveLength(1);
  });
});

describe('simulate', () => {
  it('decides a hypothetical request and shows the statements that matched', async () => {
    await t.identities.createGroup({ name: 'devs' });
    await t.identities.createUser({ name: 'alice', groups: ['devs'] });
    await t.policies.putPolicy('pull', pullAll);
    await t.policies.attachPolicy('pull', { type: 'group', name: 'devs' });
    const allow = await t.call('POST', '/simulate', {
      body: {
        principal: { type: 'user', name: 'alice' },
        action: 'registry:Pull',
        resource: 'repository/app',
      },
    });
    expect(allow.status).toBe(200);
    expect(allow.json).toEqual({
      decision: 'Allow',
      reason: 'allowed',
      matched: [{ policyId: 'policy/pull', sid: 'Pull', statementIndex: 0, effect: 'Allow' }],
    });
    const deny = await t.call('POST', '/simulate', {
      body: {
        principal: { type: 'user', name: 'alice' },
        action: 'registry:Push',
        resource: 'repository/app',
        context: { 'aws:SourceIp': '10.0.0.1' },
      },
    });
    expect(deny.json).toEqual({ decision: 'Deny', reason: 'implicit-deny', matched: [] });
    const unknown = await t.call('POST', '/simulate', {
      body: {
        principal: { type: 'user', name: 'alice' },
        action: 'registry:Fly',
        resource: 'repository/app',
      },
    });
    expect(unknown.status).toBe(400);
    const nobody = await t.call('POST', '/simulate', {
      body: {
        principal: { type: 'user', name: 'nobody' },
        action: 'registry:Pull',
        resource: 'repository/app',
      },
    });
    expect(nobody.status).toBe(404);
    const denied = await t.call('POST', '/simulate', {
      body: {
        principal: { type: 'user', name: 'alice' },
        action: 'registry:Pull',
        resource: 'repository/app',
      },
      headers: { 'x-test-deny': 'user/alice' },
    });
    expect(denied.status).toBe(403);
  });
});

describe('audit', () => {
  it('queries the admin events, pages and filters them, and verifies the chain', async () => {
    await t.call('POST', '/groups', { body: { name: 'g1' } });
    await t.call('POST', '/groups', { body: { name: 'g2' } });
    await t.call('DELETE', '/groups/g1', { headers: { 'x-test-deny': 'admin:DeleteGroup' } });
    await t.call('DELETE', '/groups/g2', { user: 'alice' });

    const all = await t.call('GET', '/audit?type=admin');
    expect(all.status).toBe(200);
    expect(
      all.json.items.map((e: { action: string; decision: string }) => `${e.action}:${e.decision}`),
    ).toEqual([
      'admin:CreateGroup:Allow',
      'admin:CreateGroup:Allow',
      'admin:DeleteGroup:Deny',
      'admin:DeleteGroup:Allow',
    ]);
    const denials = await t.call('GET', '/audit?decision=Deny');
    expect(denials.json.items).toHaveLength(1);
    expect((await t.call('GET', '/audit?actor=user/alice')).json.items).toEqual([
      expect.objectContaining({ action: 'admin:DeleteGroup', resource: 'group/g2', actor: 'user/alice' }),
    ]);

    const page1 = await t.call('GET', '/audit?limit=3');
    expect(page1.json.items).toHaveLength(3);
    expect(page1.json.next).toBe('3');
    expect(page1.res.headers.get('link')).toBe('</api/v1/audit?limit=3&after=3>; rel="next"');
    expect((await t.call('GET', '/audit?limit=3&after=3')).json.items).toHaveLength(1);

    const future = new Date(Date.now() + 60_000).toISOString();
    expect((await t.call('GET', `/audit?since=${future}`)).json.items).toEqual([]);
    expect((await t.call('GET', '/audit?since=yesterday')).status).toBe(400);
    expect((await t.call('GET', '/audit?type=nope')).status).toBe(400);

    const verified = await t.call('POST', '/audit/verify');
    expect(verified.json).toEqual({ ok: true, entries: 4 });
  });
});

describe('actions', () => {
  it('lists the action catalog', async () => {
    const r = await t.call('GET', '/actions');
    expect(r.json.items).toContainEqual({ name: 'admin:CreateUser', description: 'Create a user' });
  });
});
