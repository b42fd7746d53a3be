import { describe, expect, it } from 'vitest';
import { checked, createMemoryDriver, isValidPath, type StorageDriver } from '../storage/index.ts';
import { AuthStoreError, type AuthStoreErrorCode } from './identities.ts';
import { evaluate, type Principal } from './policy.ts';
import {
  type AttachmentTarget,
  createPolicyStore,
  decodeScope,
  encodeScope,
  isValidRepositoryScope,
  type PolicyStoreOptions,
} from './policy-store.ts';
import { listOrEmpty, readJson, writeJson } from './store.ts';

const T0 = Date.parse('2025-06-01T00:00:00.000Z');
const at = (ms: number) => new Date(T0 + ms).toISOString();

const pullAll = {
  Version: '2012-10-17',
  Statement: [{ Sid: 'Pull', Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/*' }],
};
const denyPush = {
  Version: '2012-10-17',
  Statement: { Effect: 'Deny', Action: 'registry:Push', Resource: 'repository/prod/*' },
};
const publicPull = {
  Version: '2012-10-17',
  Statement: [{ Effect: 'Allow', Principal: '*', Action: 'registry:Pull' }],
};

const alice: Principal = { type: 'user', name: 'alice', groups: ['devs', 'ops'] };
const anonymous: Principal = { type: 'anonymous', name: '', groups: [] };
const user = (name: string): AttachmentTarget => ({ type: 'user', name });
const group = (name: string): AttachmentTarget => ({ type: 'group', name });

function setup(over: Partial<PolicyStoreOptions> = {}) {
  const clock = { t: T0 };
  const base = checked(createMemoryDriver());
  const reads: string[] = [];
  const storage: StorageDriver = {
    ...base,
    async getContent(path) {
      reads.push(path);
      return base.getContent(path);
    },
  };
  const opts = { storage, now: () => clock.t, ...over };
  return { store: createPolicyStore(opts), reopen: () => createPolicyStore(opts), storage, clock, reads };
}

async function expectError(p: Promise<unknown>, code: AuthStoreErrorCode, message: unknown) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AuthStoreError);
  expect((err as AuthStoreError).code).toBe(code);
  expect((err as AuthStoreError).message).toEqual(message);
  return err as AuthStoreError;
}

const ids = (list: { id: string }[]) => list.map((p) => p.id);

describe('repository scopes', () => {
  it('validates names, prefixes and the wildcard', () => {
    for (const s of ['app', 'team-a/api', 'team-a/*', 'a/b/c/*', '*', 'a.b_c__d--e/f'])
      expect(isValidRepositoryScope(s)).toBe(true);
    for (const s of [
      '',
      '/*',
      'Team',
      'team-a/',
      'team-a*',
      'team-?/x',
      'team-a/*/x',
      '*/x',
      'a//b',
      '-x',
      42,
    ])
      expect(isValidRepositoryScope(s)).toBe(false);
    expect(isValidRepositoryScope('a'.repeat(255))).toBe(true);
    expect(isValidRepositoryScope('a'.repeat(256))).toBe(false);
    expect(isValidRepositoryScope(`${'a'.repeat(253)}/*`)).toBe(true);
    expect(isValidRepositoryScope(`${'a'.repeat(254)}/*`)).toBe(false);
  });

  it('encodes each scope as one path component, reversibly', () => {
    expect(encodeScope('team-a/api')).toBe('team-a~api');
    expect(encodeScope('team-a/*')).toBe('team-a~_');
    expect(encodeScope('*')).toBe('_');
    const scopes = ['app', 'team-a/api', 'team-a/*', 'a/b/c/*', 'a/b/c', '*', 'x__y/z', 'a'.repeat(255)];
    scopes.push(`${'a'.repeat(253)}/*`);
    for (const scope of scopes) {
      const c = encodeScope(scope);
      expect(c.length).toBeLessThanOrEqual(255);
      expect(isValidPath(`/auth/policies/repository/${c}`)).toBe(true);
      expect(decodeScope(c)).toBe(scope);
    }
    for (const c of ['~_', 'a~~b', 'A', 'a~', '__', 'a~__']) expect(decodeScope(c)).toBeUndefined();
  });
});

describe('managed policies', () => {
  it('stores a validated document with version, etag and timestamps', async () => {
    const { store, clock, storage } = setup();
    const p1 = await store.putPolicy('PullAll', pullAll);
    expect(p1).toEqual({
      name: 'PullAll',
      document: pullAll,
      version: 1,
      etag: expect.stringMatching(/^[A-Za-z0-9_-]{16}$/),
      createdAt: at(0),
      updatedAt: at(0),
    });
    expect(await store.getPolicy('PullAll')).toEqual(p1);
    expect(await readJson(storage, '/auth/policies/managed/PullAll.json')).toEqual({
      name: 'PullAll',
      document: pullAll,
      version: 1,
      etag: p1.etag,
      createdAt: at(0),
      updatedAt: at(0),
    });
    clock.t += 1000;
    const p2 = await store.putPolicy('PullAll', JSON.stringify(denyPush));
    expect(p2).toEqual({
      ...p1,
      document: denyPush,
      version: 2,
      etag: expect.any(String),
      updatedAt: at(1000),
    });
    expect(p2.etag).not.toBe(p1.etag);
    expect(await store.getPolicy('nope')).toBeUndefined();
  });

  it('keeps the document as written, as plain JSON', async () => {
    const { store } = setup();
    const doc = {
      Version: '2012-10-17',
      Statement: { Effect: 'Allow', Action: 'registry:Pull', Resource: '*', Sid: undefined },
    };
    const p = await store.putPolicy('p', doc);
    expect(p.document).toEqual({
      Version: '2012-10-17',
      Statement: { Effect: 'Allow', Action: 'registry:Pull', Resource: '*' },
    });
    expect(Object.isFrozen(p.document)).toBe(true);
    doc.Statement.Action = 'registry:Push';
    expect((await store.getPolicy('p'))?.document).toEqual(p.document);
  });

  it('refuses invalid documents with every validation error', async () => {
    const { store } = setup();
    const err = await expectError(
      store.putPolicy('bad', {
        Version: '2012-10-17',
        Statement: [{ Effect: 'Maybe', Action: 'registry:Nope' }],
      }),
      'INVALID',
      'policy "bad" is invalid: Statement[0].Effect: must be "Allow" or "Deny"; Statement[0].Action: unknown action "registry:Nope"; Statement[0]: needs Resource or NotResource',
    );
    expect(err.errors).toEqual([
      { path: 'Statement[0].Effect', message: 'Statement[0].Effect: must be "Allow" or "Deny"' },
      { path: 'Statement[0].Action', message: 'Statement[0].Action: unknown action "registry:Nope"' },
      { path: 'Statement[0]', message: 'Statement[0]: needs Resource or NotResource' },
    ]);
    await expectError(
      store.putPolicy('repo-style', publicPull),
      'INVALID',
      expect.stringContaining('Principal is not allowed in an identity policy'),
    );
    await expectError(
      store.putPolicy('text', '{nope'),
      'INVALID',
      'policy "text" is invalid: policy is not valid JSON',
    );
    await expectError(
      store.putPolicy('-bad-name', pullAll),
      'INVALID',
      'invalid policy name "-bad-name": 1 to 128 characters of A-Z, a-z, 0-9 and +=,.@_-, starting with a letter or digit',
    );
    await expectError(
      store.putPolicy('a/b', pullAll),
      'INVALID',
      expect.stringContaining('invalid policy name'),
    );
    await expectError(
      store.putPolicy('x'.repeat(129), pullAll),
      'INVALID',
      expect.stringContaining('invalid policy name'),
    );
    expect((await store.listPolicies()).items).toEqual([]);
  });

  it('honours If-Match', async () => {
    const { store } = setup();
    await expectError(
      store.putPolicy('p', pullAll, { ifMatch: '*' }),
      'PRECONDITION_FAILED',
      'policy "p" does not exist',
    );
    const v1 = await store.putPolicy('p', pullAll);
    const v2 = await store.putPolicy('p', denyPush, { ifMatch: v1.etag });
    expect(v2.version).toBe(2);
    await expectError(
      store.putPolicy('p', pullAll, { ifMatch: v1.etag }),
      'PRECONDITION_FAILED',
      'policy "p" was changed since it was read (etag mismatch)',
    );
    expect((await store.putPolicy('p', pullAll, { ifMatch: '*' })).version).toBe(3);
    await expectError(
      store.deletePolicy('p', { ifMatch: v2.etag }),
      'PRECONDITION_FAILED',
      expect.any(String),
    );
    expect((await store.getPolicy('p'))?.version).toBe(3);
  });

  it('lists policies by name, page by page', async () => {
    const { store } = setup();
    for (const n of ['d', 'B', 'a', 'c', 'E']) await store.putPolicy(n, pullAll);
    const p1 = await store.listPolicies({ limit: 2 });
    expect([p1.items.map((p) => p.name), p1.next]).toEqual([['B', 'E'], 'E']);
    const p2 = await store.listPolicies({ limit: 2, after: p1.next });
    expect([p2.items.map((p) => p.name), p2.next]).toEqual([['a', 'c'], 'c']);
    const p3 = await store.listPolicies({ limit: 2, after: p2.next });
    expect(p3).toEqual({ items: [expect.objectContaining({ name: 'd' })] });
    await expectError(
      store.listPolicies({ limit: 0 }),
      'INVALID',
      'limit must be a whole number from 1 to 1000',
    );
  });

  it('refuses to delete an attached policy, saying where', async () => {
    const { store } = setup();
    await store.putPolicy('pull', pullAll);
    await store.attachPolicy('pull', user('alice'));
    await store.attachPolicy('pull', group('devs'));
    await store.attachPolicy('pull', { type: 'serviceaccount', name: 'ci' });
    const err = await expectError(
      store.deletePolicy('pull'),
      'CONFLICT',
      'policy "pull" is attached to user "alice", group "devs", service account "ci"; detach it first',
    );
    expect(err.details).toEqual({
      attachments: [user('alice'), group('devs'), { type: 'serviceaccount', name: 'ci' }],
    });
    await store.detachPolicy('pull', user('alice'));
    await store.detachPolicy('pull', group('devs'));
    await store.detachAll({ type: 'serviceaccount', name: 'ci' });
    await store.deletePolicy('pull');
    expect(await store.getPolicy('pull')).toBeUndefined();
    await expectError(store.deletePolicy('pull'), 'NOT_FOUND', 'policy "pull" does not exist');
  });
});

describe('attachments', () => {
  it('attaches idempotently and reports both ways', async () => {
    const { store } = setup();
    await store.putPolicy('pull', pullAll);
    await store.putPolicy('deny', denyPush);
    await store.attachPolicy('pull', user('alice'));
    await store.attachPolicy('pull', user('alice'));
    await store.attachPolicy('deny', user('alice'));
    await store.attachPolicy('pull', { type: 'role', name: 'ci' });
    await store.attachPolicy('pull', group('devs'));
    expect(await store.attachedTo(user('alice'))).toEqual(['deny', 'pull']);
    expect(await store.attachedTo(user('bob'))).toEqual([]);
    expect(await store.attachmentsOf('pull')).toEqual([
      user('alice'),
      group('devs'),
      { type: 'role', name: 'ci' },
    ]);
    expect(await store.attachmentsOf('nope')).toEqual([]);
  });

  it('refuses unknown policies, bad targets, and more than 20 per target', async () => {
    const { store } = setup();
    await expectError(store.attachPolicy('nope', user('alice')), 'NOT_FOUND', 'policy "nope" does not exist');
    await store.putPolicy('pull', pullAll);
    await expectError(
      store.attachPolicy('pull', { type: 'anonymous', name: 'x' } as unknown as AttachmentTarget),
      'INVALID',
      'a policy attaches to a user, group, role or service account',
    );
    await expectError(store.attachPolicy('pull', user('Alice')), 'INVALID', 'invalid user name "Alice"');
    await expectError(
      store.detachPolicy('pull', user('alice')),
      'NOT_FOUND',
      'policy "pull" is not attached to user "alice"',
    );
    for (let i = 0; i < 20; i++) {
      await store.putPolicy(`p${i}`, pullAll);
      await store.attachPolicy(`p${i}`, user('alice'));
    }
    await expectError(
      store.attachPolicy('pull', user('alice')),
      'LIMIT_EXCEEDED',
      'user "alice" already has 20 policies attached, the most allowed',
    );
    await store.attachPolicy('p3', user('alice')); // already attached: still fine
  });

  it('asks targetExists when given', async () => {
    const known = new Set(['user/alice']);
    const { store } = setup({ targetExists: async (t) => known.has(`${t.type}/${t.name}`) });
    await store.putPolicy('pull', pullAll);
    await store.attachPolicy('pull', user('alice'));
    await expectError(store.attachPolicy('pull', user('bob')), 'NOT_FOUND', 'user "bob" does not exist');
  });

  it('removes the attachment document once nothing is attached', async () => {
    const { store, storage } = setup();
    await store.putPolicy('pull', pullAll);
    await store.attachPolicy('pull', user('bob@example.com'));
    const dir = '/auth/policies/attachments/user';
    expect(await listOrEmpty(storage, dir)).toEqual([`${dir}/~Ym9iQGV4YW1wbGUuY29t.json`]);
    await store.detachPolicy('pull', user('bob@example.com'));
    expect(await listOrEmpty(storage, dir)).toEqual([]);
    await store.detachAll(user('bob@example.com'));
  });
});

describe('policiesFor', () => {
  it('gives the policies of the principal and its groups, each once', async () => {
    const { store } = setup();
    await store.putPolicy('pull', pullAll);
    await store.putPolicy('deny', denyPush);
    await store.putPolicy('other', pullAll);
    await store.attachPolicy('pull', user('alice'));
    await store.attachPolicy('deny', group('ops'));
    await store.attachPolicy('pull', group('devs'));
    await store.attachPolicy('other', group('qa'));
    const policies = await store.policiesFor(alice);
    expect(ids(policies)).toEqual(['policy/pull', 'policy/deny']);
    expect(policies.map((p) => p.kind)).toEqual(['identity', 'identity']);
    expect(policies[0]?.policy.Statement[0]?.Action).toEqual(['registry:Pull']);
    expect(await store.policiesFor(anonymous)).toEqual([]);
    expect(await store.policiesFor({ type: 'serviceaccount', name: 'alice', groups: [] })).toEqual([]);
    expect(ids(await store.policiesFor({ type: 'role', name: 'x', groups: ['qa'] }))).toEqual([
      'policy/other',
    ]);

    const req = (action: string, resource: string) => ({ principal: alice, action, resource, context: {} });
    expect(evaluate(req('registry:Pull', 'repository/prod/api'), policies).effect).toBe('Allow');
    expect(evaluate(req('registry:Push', 'repository/prod/api'), policies).reason).toBe('explicit-deny');
  });

  it('serves from memory after the first load, with the same policy objects until a write', async () => {
    const { store, reads } = setup();
    await store.putPolicy('pull', pullAll);
    await store.attachPolicy('pull', user('alice'));
    const first = await store.policiesFor(alice);
    const before = reads.length;
    for (let i = 0; i < 100; i++) await store.policiesFor(alice);
    await store.repositoryPoliciesFor('team-a/api');
    expect(reads.length).toBe(before);
    const again = await store.policiesFor(alice);
    expect(again[0]?.policy).toBe(first[0]?.policy);
    await store.putPolicy('pull', denyPush);
    const changed = await store.policiesFor(alice);
    expect(changed[0]?.policy).not.toBe(first[0]?.policy);
    expect(changed[0]?.policy.Statement[0]?.Effect).toBe('Deny');
  });

  it('fails, rather than skips, a stored policy that no longer validates', async () => {
    const { store, storage, reopen } = setup();
    await store.putPolicy('pull', pullAll);
    await store.putPolicy('fine', pullAll);
    await store.attachPolicy('pull', user('alice'));
    await store.attachPolicy('fine', user('bob'));
    const path = '/auth/policies/managed/pull.json';
    const doc = (await readJson(storage, path)) as Record<string, unknown>;
    await writeJson(storage, path, {
      ...doc,
      document: { Version: '2012-10-17', Statement: [{ Effect: 'Deny' }] },
    });
    const fresh = reopen();
    const stored = await fresh.getPolicy('pull');
    expect(stored?.invalid).toEqual([
      { path: 'Statement[0]', message: 'Statement[0]: needs Action or NotAction' },
      { path: 'Statement[0]', message: 'Statement[0]: needs Resource or NotResource' },
    ]);
    await expectError(
      fresh.policiesFor({ type: 'user', name: 'alice', groups: [] }),
      'INVALID',
      'policy "pull" no longer validates; fix or delete it',
    );
    expect(ids(await fresh.policiesFor({ type: 'user', name: 'bob', groups: [] }))).toEqual(['policy/fine']);
    // Putting a valid document repairs it.
    await fresh.putPolicy('pull', pullAll);
    expect(ids(await fresh.policiesFor({ type: 'user', name: 'alice', groups: [] }))).toEqual([
      'policy/pull',
    ]);
    expect(await fresh.getPolicy('pull')).not.toHaveProperty('invalid');
  });
});

describe('repository policies', () => {
  it('stores, lists and deletes them by scope, with versions and If-Match', async () => {
    const { store, storage, clock } = setup();
    const a = await store.putRepositoryPolicy('team-a/*', publicPull);
    expect(a).toEqual({
      scope: 'team-a/*',
      document: publicPull,
      version: 1,
      etag: expect.any(String),
      createdAt: at(0),
      updatedAt: at(0),
    });
    clock.t += 1;
    await store.putRepositoryPolicy('*', publicPull);
    await store.putRepositoryPolicy('team-a/api', publicPull);
    expect(await listOrEmpty(storage, '/auth/policies/repository')).toEqual([
      '/auth/policies/repository/_',
      '/auth/policies/repository/team-a~_',
      '/auth/policies/repository/team-a~api',
    ]);
    expect((await store.listRepositoryPolicies()).map((p) => p.scope)).toEqual([
      '*',
      'team-a/*',
      'team-a/api',
    ]);
    const a2 = await store.putRepositoryPolicy('team-a/*', publicPull, { ifMatch: a.etag });
    expect(a2).toEqual({ ...a, version: 2, etag: expect.any(String), updatedAt: at(1) });
    await expectError(
      store.putRepositoryPolicy('team-a/*', publicPull, { ifMatch: a.etag }),
      'PRECONDITION_FAILED',
      'repository policy "team-a/*" was changed since it was read (etag mismatch)',
    );
    expect(await store.getRepositoryPolicy('team-a/*')).toEqual(a2);
    await store.deleteRepositoryPolicy('team-a/*', { ifMatch: a2.etag });
    expect(await store.getRepositoryPolicy('team-a/*')).toBeUndefined();
    await expectError(
      store.deleteRepositoryPolicy('team-a/*'),
      'NOT_FOUND',
      'repository policy "team-a/*" does not exist',
    );
  });

  it('validates scope and document', async () => {
    const { store } = setup();
    await expectError(
      store.putRepositoryPolicy('team-a*', publicPull),
      'INVALID',
      'invalid repository policy scope "team-a*": a repository name, a prefix ending in "/*", or "*"',
    );
    const err = await expectError(
      store.putRepositoryPolicy('app', pullAll),
      'INVALID',
      'repository policy "app" is invalid: Statement[0]: needs Principal or NotPrincipal',
    );
    expect(err.errors).toEqual([
      { path: 'Statement[0]', message: 'Statement[0]: needs Principal or NotPrincipal' },
    ]);
  });

  it('covers a repository by exact name, by every prefix, and by *', async () => {
    const { store } = setup();
    for (const scope of ['*', 'team-a/*', 'team-a/x/*', 'team-a/x/y', 'team-ab/*', 'team-a', 'team-a/x/y/*'])
      await store.putRepositoryPolicy(scope, publicPull);
    const scopes = async (repo: string) => ids(await store.repositoryPoliciesFor(repo));
    expect(await scopes('team-a/x/y')).toEqual([
      'repository/*',
      'repository/team-a/*',
      'repository/team-a/x/*',
      'repository/team-a/x/y',
    ]);
    expect(await scopes('team-ab/x')).toEqual(['repository/*', 'repository/team-ab/*']);
    expect(await scopes('team-a')).toEqual(['repository/*', 'repository/team-a']);
    expect(await scopes('team-a/x')).toEqual(['repository/*', 'repository/team-a/*']);
    expect(await scopes('other')).toEqual(['repository/*']);
    expect(await scopes('*')).toEqual(['repository/*']);
    expect((await store.repositoryPoliciesFor('app')).map((p) => p.kind)).toEqual(['repository']);
  });

  it('gives ids that evaluation accepts and confines to the scope', async () => {
    const { store } = setup();
    await store.putRepositoryPolicy('team-a/*', publicPull);
    const pull = async (repo: string) =>
      evaluate(
        { principal: anonymous, action: 'registry:Pull', resource: `repository/${repo}`, context: {} },
        await store.repositoryPoliciesFor(repo),
      );
    expect(await pull('team-a/x/y')).toEqual({
      effect: 'Allow',
      reason: 'allowed',
      matched: [{ policyId: 'repository/team-a/*', statementIndex: 0, effect: 'Allow' }],
    });
    expect((await pull('team-ab/x')).effect).toBe('Deny');
    expect((await pull('team-a')).effect).toBe('Deny');
  });
});

describe('persistence', () => {
  it('serves everything again from a new store over the same storage', async () => {
    const { store, reopen } = setup();
    const p = await store.putPolicy('bob@home', pullAll);
    await store.attachPolicy('bob@home', user('bob@example.com'));
    await store.attachPolicy('bob@home', group('devs'));
    const r = await store.putRepositoryPolicy('team-a/*', publicPull);
    const s = await store.putRepositoryPolicy('*', publicPull);

    const fresh = reopen();
    expect(await fresh.getPolicy('bob@home')).toEqual(p);
    expect(await fresh.attachmentsOf('bob@home')).toEqual([user('bob@example.com'), group('devs')]);
    expect(ids(await fresh.policiesFor({ type: 'user', name: 'bob@example.com', groups: ['devs'] }))).toEqual(
      ['policy/bob@home'],
    );
    expect(await fresh.listRepositoryPolicies()).toEqual([s, r]);
    expect(ids(await fresh.repositoryPoliciesFor('team-a/b'))).toEqual([
      'repository/*',
      'repository/team-a/*',
    ]);
    expect((await fresh.putPolicy('bob@home', pullAll)).version).toBe(2);
  });

  it('ignores malformed records', async () => {
    const { store, storage, reopen } = setup();
    await store.putPolicy('good', pullAll);
    await storage.putContent('/auth/policies/managed/junk.json', new TextEncoder().encode('{'));
    await writeJson(storage, '/auth/policies/managed/other.json', { name: 'good', document: pullAll });
    await writeJson(storage, '/auth/policies/attachments/user/alice.json', {
      type: 'user',
      name: 'alice',
      policies: 7,
    });
    await writeJson(storage, '/auth/policies/repository/team-a~_', {
      scope: 'team-b/*',
      document: publicPull,
    });
    const fresh = reopen();
    expect((await fresh.listPolicies()).items.map((x) => x.name)).toEqual(['good']);
    expect(await fresh.attachedTo(user('alice'))).toEqual([]);
    expect(await fresh.listRepositoryPolicies()).toEqual([]);
  });
});
