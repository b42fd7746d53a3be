import { type CryptoKey, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { signedEcsRequest } from '../../test/support/sigv4-request.ts';
import { silentLogger } from '../log.ts';
import { checked, createMemoryDriver } from '../storage/index.ts';
import { AuthStoreError } from './identities.ts';
import { parseScopes } from './scope.ts';
import {
  type Auth,
  AuthError,
  type AuthErrorReason,
  type AuthOptions,
  administratorPolicyName,
  createAuth,
  maxSessionClaims,
  type RequestInfo,
  sessionClaims,
} from './service.ts';
import { SigV4Error, sigV4Messages } from './sigv4.ts';
import type { Jwk } from './tokens.ts';

const T0 = Date.parse('2025-06-01T00:00:00Z');
const req: RequestInfo = { sourceIp: '192.0.2.7', requestId: 'req-1', secure: true };
const password = 'correct horse battery';

function setup(over: Partial<AuthOptions> = {}) {
  const clock = { t: T0 };
  const storage = checked(createMemoryDriver());
  const options: AuthOptions = {
    storage,
    log: silentLogger,
    issuer: 'https://registry.test',
    service: 'registry.test',
    scryptCost: 16,
    now: () => clock.t,
    ...over,
  };
  const auth = createAuth(options);
  return { auth, clock, storage, reopen: () => createAuth(options) };
}

const doc = (...Statement: Record<string, unknown>[]) => ({ Version: '2012-10-17', Statement });
const scopes = (...s: string[]) => parseScopes(s);

async function authError(p: Promise<unknown>): Promise<AuthError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!(e instanceof AuthError)) throw new Error(`expected an AuthError, got ${String(e)}`);
  return e;
}

async function reasonOf(p: Promise<unknown>): Promise<[AuthErrorReason, string | undefined]> {
  const e = await authError(p);
  return [e.reason, e.detail];
}

/** A user with a password and, optionally, one managed policy attached to it. */
async function userWith(
  auth: Auth,
  name: string,
  policy?: unknown,
  extra: { groups?: string[]; tags?: Record<string, string> } = {},
) {
  for (const g of extra.groups ?? [])
    if (!(await auth.identities.getGroup(g))) await auth.identities.createGroup({ name: g });
  await auth.identities.createUser({ name, password, ...extra });
  if (policy !== undefined) {
    await auth.policies.putPolicy(`${name}-policy`, policy);
    await auth.policies.attachPolicy(`${name}-policy`, { type: 'user', name });
  }
  return auth.authenticateBasic(name, password, req);
}

describe('bootstrap', () => {
  it('creates the admin once, with a generated password, and the admin may do everything', async () => {
    const { auth, reopen } = setup();
    const first = await auth.start();
    expect(first.bootstrapPassword).toEqual(expect.any(String));
    expect(await auth.start()).toEqual({});
    // A restarted process finds the marker too.
    expect(await reopen().start()).toEqual({});
    expect(await auth.policies.attachmentsOf(administratorPolicyName)).toEqual([
      { type: 'group', name: 'admins' },
    ]);

    const admin = await auth.authenticateBasic('admin', first.bootstrapPassword as string, req);
    expect(admin.principal).toMatchObject({ type: 'user', name: 'admin', groups: ['admins'] });
    for (const [action, resource] of [
      ['admin:CreateUser', 'user/bob'],
      ['admin:PutRepositoryPolicy', 'repository/team/app'],
      ['ecs:RunTask', 'taskdefinition/web'],
      ['registry:Catalog', 'repository/*'],
    ] as const)
      expect((await auth.authorize(admin, action, resource, req)).effect).toBe('Allow');
    expect(await auth.grant(admin, scopes('repository:team/app:*', 'registry:catalog:*'), req)).toEqual([
      { type: 'repository', name: 'team/app', actions: ['pull', 'push', 'delete', '*'] },
      { type: 'registry', name: 'catalog', actions: ['*'] },
    ]);
  });

  it('uses the configured password and leaves later changes by administrators alone', async () => {
    const { auth } = setup({ bootstrapPassword: 'the configured one' });
    expect(await auth.start()).toEqual({});
    await auth.authenticateBasic('admin', 'the configured one', req);
    await auth.policies.detachPolicy(administratorPolicyName, { type: 'group', name: 'admins' });
    await auth.identities.deleteUser('admin');
    expect(await auth.start()).toEqual({});
    expect(await auth.identities.getUser('admin')).toBeUndefined();
    expect(await auth.policies.attachmentsOf(administratorPolicyName)).toEqual([]);
  });
});

describe('grant and authorize', () => {
  it('grants the intersection of what is asked and what is allowed, and audits the denial', async () => {
    const { auth } = setup();
    const alice = await userWith(
      auth,
      'alice',
      doc({ Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/*' }),
    );
    expect(await auth.grant(alice, scopes('repository:team/app:pull,push'), req)).toEqual([
      { type: 'repository', name: 'team/app', actions: ['pull'] },
    ]);
    // `*` is all three or nothing; what is allowed of it is still granted.
    expect(await auth.grant(alice, scopes('repository:team/app:*'), req)).toEqual([
      { type: 'repository', name: 'team/app', actions: ['pull'] },
    ]);
    // Nothing granted: the entries stay, empty, recording that they were asked for and refused.
    expect(await auth.grant(alice, scopes('repository:team/app:push', 'registry:catalog:*'), req)).toEqual([
      { type: 'repository', name: 'team/app', actions: [] },
      { type: 'registry', name: 'catalog', actions: [] },
    ]);

    const { entries } = await auth.audit.query({ type: 'decision' });
    expect(entries[0]).toMatchObject({
      actor: 'user/alice',
      action: 'registry:Push',
      resource: 'repository/team/app',
      decision: 'Deny',
      reason: 'no_allow',
      sourceIp: req.sourceIp,
      requestId: req.requestId,
    });
    expect(entries.map((e) => e.action)).toEqual([
      'registry:Push',
      'registry:Push',
      'registry:Delete',
      'registry:Push',
      'registry:Catalog',
    ]);
  });

  it('lets anonymous pull where a repository policy makes it public, and nothing else', async () => {
    const { auth } = setup();
    await auth.policies.putRepositoryPolicy(
      'public/*',
      doc({ Effect: 'Allow', Principal: '*', Action: ['registry:Pull', 'registry:ListTags'] }),
    );
    await auth.policies.putRepositoryPolicy(
      'shared/app',
      doc({ Effect: 'Allow', Principal: { berth: 'anonymous' }, Action: 'registry:Pull' }),
    );
    const anon = auth.anonymous();
    expect(anon.principal).toEqual({ type: 'anonymous', name: 'anonymous', groups: [], tags: {} });
    expect(
      await auth.grant(
        anon,
        scopes(
          'repository:public/app:pull,push',
          'repository:private/app:pull',
          'repository:shared/app:pull',
        ),
        req,
      ),
    ).toEqual([
      { type: 'repository', name: 'public/app', actions: ['pull'] },
      { type: 'repository', name: 'private/app', actions: [] },
      { type: 'repository', name: 'shared/app', actions: ['pull'] },
    ]);
    expect((await auth.authorize(anon, 'registry:ListTags', 'repository/public/app', req)).effect).toBe(
      'Allow',
    );
    expect((await auth.authorize(anon, 'registry:ListTags', 'repository/shared/app', req)).effect).toBe(
      'Deny',
    );
    // Principal "*" is everyone: signed-in users without policies of their own too.
    const bob = await userWith(auth, 'bob');
    expect(await auth.grant(bob, scopes('repository:public/app:pull'), req)).toEqual([
      { type: 'repository', name: 'public/app', actions: ['pull'] },
    ]);
  });

  it('denies overwriting immutable tags through berth:Tag', async () => {
    const { auth } = setup();
    const ci = await userWith(
      auth,
      'ci',
      doc(
        { Effect: 'Allow', Action: ['registry:Push', 'registry:OverwriteTag'], Resource: 'repository/app' },
        {
          Sid: 'ImmutableReleases',
          Effect: 'Deny',
          Action: 'registry:OverwriteTag',
          Resource: 'repository/*',
          Condition: { StringLike: { 'berth:Tag': 'v*' } },
        },
      ),
    );
    const v1 = await auth.authorize(ci, 'registry:OverwriteTag', 'repository/app', req, {
      'berth:Tag': 'v1',
    });
    expect(v1).toMatchObject({ effect: 'Deny', reason: 'explicit-deny' });
    expect(v1.matched.find((m) => m.effect === 'Deny')).toMatchObject({
      policyId: 'policy/ci-policy',
      sid: 'ImmutableReleases',
      statementIndex: 1,
    });
    const latest = await auth.authorize(ci, 'registry:OverwriteTag', 'repository/app', req, {
      'berth:Tag': 'latest',
    });
    expect(latest.effect).toBe('Allow');
    const { entries } = await auth.audit.query({ type: 'decision' });
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ action: 'registry:OverwriteTag', reason: 'explicit_deny' });
    expect(entries[0]?.detail).toEqual({ context: { 'berth:Tag': 'v1' } });
  });

  it('fills the context from the request and keeps callers from overriding it', async () => {
    const { auth } = setup();
    const alice = await userWith(
      auth,
      'alice',
      doc({
        Effect: 'Allow',
        Action: 'registry:Pull',
        Resource: 'repository/*',
        Condition: {
          IpAddress: { 'berth:SourceIp': '192.0.2.0/24' },
          Bool: { 'berth:SecureTransport': 'true' },
          StringEquals: { 'berth:PrincipalTag/team': 'red', 'berth:AuthMethod': 'password' },
        },
      }),
      { tags: { team: 'red' } },
    );
    const allowed = (r: RequestInfo, extra?: Record<string, string>) =>
      auth.authorize(alice, 'registry:Pull', 'repository/app', r, extra).then((d) => d.effect);
    expect(await allowed(req)).toBe('Allow');
    expect(await allowed({ ...req, secure: false })).toBe('Deny');
    expect(await allowed({ ...req, sourceIp: '198.51.100.1' })).toBe('Deny');
    expect(await allowed({ ...req, sourceIp: '198.51.100.1' }, { 'berth:sourceip': '192.0.2.1' })).toBe(
      'Deny',
    );
    expect(await allowed(req, { 'berth:PrincipalTag/team': 'blue' })).toBe('Allow');
  });
});

describe('authentication', () => {
  it('accepts access keys and refuses wrong secrets', async () => {
    const { auth } = setup();
    await auth.identities.createServiceAccount({ name: 'builder' });
    const key = await auth.identities.createAccessKey({ type: 'serviceaccount', name: 'builder' });
    const id = await auth.authenticateBasic(key.id, key.secret, req);
    expect(id).toMatchObject({
      principal: { type: 'serviceaccount', name: 'builder', groups: [], tags: {} },
      authMethod: 'accesskey',
      accessKeyId: key.id,
    });
    expect(await reasonOf(auth.authenticateBasic(key.id, `${key.secret}x`, req))).toEqual([
      'bad-credentials',
      undefined,
    ]);
    await auth.identities.createUser({ name: 'alice', password });
    expect((await reasonOf(auth.authenticateBasic('alice', 'not the password', req)))[0]).toBe(
      'bad-credentials',
    );
    expect((await reasonOf(auth.authenticateBasic('nobody', password, req)))[0]).toBe('bad-credentials');

    const authn = (await auth.audit.query({ type: 'authn' })).entries;
    expect(authn.map((e) => [e.actor, e.action, e.decision])).toEqual([
      ['serviceaccount/builder', 'authn:AccessKey', 'Allow'],
      [`accesskey/${key.id}`, 'authn:AccessKey', 'Deny'],
      ['user/alice', 'authn:Password', 'Deny'],
      ['user/nobody', 'authn:Password', 'Deny'],
    ]);
  });

  it('throttles the address that keeps failing on an account, with a retry time, and not the others', async () => {
    const { auth, clock } = setup({ throttle: { maxFailures: 3, windowSeconds: 300, lockoutSeconds: 60 } });
    await auth.identities.createUser({ name: 'alice', password });
    for (let i = 0; i < 3; i++)
      expect((await reasonOf(auth.authenticateBasic('alice', 'wrong password', req)))[0]).toBe(
        'bad-credentials',
      );
    const locked = await authError(auth.authenticateBasic('alice', password, req));
    expect(locked.reason).toBe('throttled');
    expect(locked.retryAfterSeconds).toBe(60);
    clock.t += 20_000;
    expect((await authError(auth.authenticateBasic('bob', password, req))).retryAfterSeconds).toBe(40);
    // Another address, which has not failed, still signs in as alice.
    const elsewhere = { ...req, sourceIp: '198.51.100.9' };
    expect((await auth.authenticateBasic('alice', password, elsewhere)).principal.name).toBe('alice');
    // Once a failure of its own is in the window, the account's lock holds it back too.
    expect((await reasonOf(auth.authenticateBasic('alice', 'wrong password', elsewhere)))[0]).toBe(
      'bad-credentials',
    );
    expect((await authError(auth.authenticateBasic('alice', password, elsewhere))).retryAfterSeconds).toBe(
      60,
    );
    clock.t += 61_000;
    expect((await auth.authenticateBasic('alice', password, req)).principal.name).toBe('alice');
    const denied = (await auth.audit.query({ type: 'authn', decision: 'Deny' })).entries;
    expect(denied.map((e) => [e.actor, e.reason, e.sourceIp])).toEqual([
      ['user/alice', 'bad-credentials', req.sourceIp],
      ['user/alice', 'bad-credentials', req.sourceIp],
      ['user/alice', 'bad-credentials', req.sourceIp],
      ['user/alice', 'throttled', req.sourceIp],
      ['user/bob', 'throttled', req.sourceIp],
      ['user/alice', 'bad-credentials', elsewhere.sourceIp],
      ['user/alice', 'throttled', elsewhere.sourceIp],
    ]);
  });
});

/** An ECS ListClusters request signed at time `t` for this suite's region. */
function signedRequest(keyId: string, secret: string, t: number, body = '{}', sessionToken?: string) {
  return signedEcsRequest({
    keyId,
    secret,
    t,
    region: 'eu-west-1',
    body,
    ...(sessionToken !== undefined && { sessionToken }),
  });
}

async function sigV4Error(p: Promise<unknown>): Promise<SigV4Error> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!(e instanceof SigV4Error)) throw new Error(`expected a SigV4Error, got ${String(e)}`);
  return e;
}

describe('SigV4 sign-in', () => {
  const ecs = { service: 'ecs' };

  it('accepts a request signed with an access key as its owner, audits it and records the use', async () => {
    const { auth, clock } = setup();
    await auth.identities.createUser({ name: 'alice', tags: { team: 'a' } });
    const key = await auth.identities.createAccessKey({ type: 'user', name: 'alice' });
    clock.t += 5000;
    const id = await auth.authenticateSigV4(signedRequest(key.id, key.secret, clock.t), req, ecs);
    expect(id).toEqual({
      principal: { type: 'user', name: 'alice', groups: [], tags: { team: 'a' } },
      authMethod: 'accesskey',
      accessKeyId: key.id,
    });
    await auth.identities.flush();
    expect((await auth.identities.getAccessKey(key.id))?.lastUsedAt).toBe(new Date(clock.t).toISOString());
    const authn = (await auth.audit.query({ type: 'authn' })).entries;
    expect(authn.map((e) => [e.actor, e.action, e.decision, e.sourceIp, e.detail])).toEqual([
      ['user/alice', 'authn:SigV4', 'Allow', req.sourceIp, { accessKeyId: key.id }],
    ]);
    // The same signed request once more is accepted, as AWS accepts it within the window.
    const again = await auth.authenticateSigV4(signedRequest(key.id, key.secret, clock.t), req, ecs);
    expect(again.accessKeyId).toBe(key.id);
    // A pinned region must be the one signed for.
    const pinned = await sigV4Error(
      auth.authenticateSigV4(signedRequest(key.id, key.secret, clock.t, '{"a":1}'), req, {
        service: 'ecs',
        region: 'us-east-1',
      }),
    );
    expect(pinned.message).toContain("Credential should be scoped to a valid region, not 'eu-west-1'");
  });

  it('refuses wrong secrets, unknown and inactive keys, audits them and throttles the key', async () => {
    const { auth, clock } = setup({ throttle: { maxFailures: 3, windowSeconds: 300, lockoutSeconds: 60 } });
    await auth.identities.createServiceAccount({ name: 'ci' });
    const key = await auth.identities.createAccessKey({ type: 'serviceaccount', name: 'ci' });
    // Each from its own address, so only the key's own failures add up.
    const from = (n: number): RequestInfo => ({ ...req, sourceIp: `198.51.100.${n}` });
    const wrong = await sigV4Error(
      auth.authenticateSigV4(signedRequest(key.id, 'nope', clock.t), from(1), ecs),
    );
    expect(wrong.code).toBe('InvalidSignatureException');
    expect(wrong.message.startsWith(sigV4Messages.signatureMismatch)).toBe(true);
    const unknown = await sigV4Error(
      auth.authenticateSigV4(signedRequest('BKAAAAAAAAAAAAAAAAAA', 'x', clock.t), from(2), ecs),
    );
    expect([unknown.code, unknown.message]).toEqual([
      'UnrecognizedClientException',
      sigV4Messages.unrecognizedClient,
    ]);
    await auth.identities.updateAccessKey(key.id, { status: 'inactive' });
    const inactive = await sigV4Error(
      auth.authenticateSigV4(signedRequest(key.id, key.secret, clock.t + 1000), from(3), ecs),
    );
    expect(inactive.code).toBe('UnrecognizedClientException');
    await auth.identities.updateAccessKey(key.id, { status: 'active' });
    await sigV4Error(auth.authenticateSigV4(signedRequest(key.id, 'nope', clock.t + 2000), from(4), ecs));
    // Three failures on this key: each address that failed on it is held back, however well it
    // signs now; an address that never failed is not.
    const locked = await authError(
      auth.authenticateSigV4(signedRequest(key.id, key.secret, clock.t + 3000), from(4), ecs),
    );
    expect(locked.reason).toBe('throttled');
    const fresh = await auth.authenticateSigV4(
      signedRequest(key.id, key.secret, clock.t + 3000),
      from(5),
      ecs,
    );
    expect(fresh.principal).toMatchObject({ type: 'serviceaccount', name: 'ci' });
    clock.t += 61_000;
    const ok = await auth.authenticateSigV4(signedRequest(key.id, key.secret, clock.t), from(4), ecs);
    expect(ok.principal).toMatchObject({ type: 'serviceaccount', name: 'ci' });

    const denied = (await auth.audit.query({ type: 'authn', decision: 'Deny' })).entries;
    expect(denied.map((e) => [e.actor, e.reason])).toEqual([
      ['serviceaccount/ci', 'bad-signature'],
      ['accesskey/BKAAAAAAAAAAAAAAAAAA', 'bad-credentials'],
      [`accesskey/${key.id}`, 'bad-credentials'],
      ['serviceaccount/ci', 'bad-signature'],
      [`accesskey/${key.id}`, 'throttled'],
    ]);
  });

  it('tells the owner of a key made before secrets were kept to create a new one', async () => {
    const { auth, storage, reopen, clock } = setup();
    await auth.identities.createUser({ name: 'alice' });
    const key = await auth.identities.createAccessKey({ type: 'user', name: 'alice' });
    const path = `/auth/iam/access-keys/${key.id}.json`;
    const stored = JSON.parse(new TextDecoder().decode(await storage.getContent(path)));
    delete stored.secret;
    await storage.putContent(path, new TextEncoder().encode(JSON.stringify(stored)));
    const fresh = reopen();
    const err = await sigV4Error(
      fresh.authenticateSigV4(signedRequest(key.id, key.secret, clock.t), req, ecs),
    );
    expect(err.code).toBe('UnrecognizedClientException');
    expect(err.message).toContain(`The access key ${key.id} was created before berth kept`);
    expect(err.message).toContain('Create a new access key');
    // Basic sign-in with it still works.
    expect((await fresh.authenticateBasic(key.id, key.secret, req)).accessKeyId).toBe(key.id);
    const denied = (await fresh.audit.query({ type: 'authn', decision: 'Deny' })).entries;
    expect(denied.map((e) => [e.actor, e.reason])).toEqual([[`accesskey/${key.id}`, 'no-signing-secret']]);
  });

  it('does not audit requests that name no key', async () => {
    const { auth, clock } = setup();
    const unsigned = signedRequest('BKAAAAAAAAAAAAAAAAAA', 'x', clock.t);
    const { authorization: _, ...headers } = unsigned.headers;
    const err = await sigV4Error(auth.authenticateSigV4({ ...unsigned, headers }, req, ecs));
    expect(err.code).toBe('MissingAuthenticationTokenException');
    const skewed = await sigV4Error(
      auth.authenticateSigV4(signedRequest('BKAAAAAAAAAAAAAAAAAA', 'x', clock.t - 600_000), req, ecs),
    );
    expect(skewed.message).toMatch(/^Signature expired/);
    expect((await auth.audit.query({ type: 'authn' })).entries).toEqual([]);
  });
});

describe('tokens', () => {
  it('round-trips an identity and its access through a bearer token', async () => {
    const { auth } = setup();
    const alice = await userWith(
      auth,
      'alice',
      doc({
        Effect: 'Allow',
        Action: ['registry:Pull', 'registry:ListTags'],
        Resource: 'repository/*',
        Condition: { StringEquals: { 'berth:PrincipalTag/team': 'red' } },
      }),
      { groups: ['devs', 'ops'], tags: { team: 'red' } },
    );
    const access = await auth.grant(alice, scopes('repository:a:pull', 'repository:b:push'), req);
    expect(access).toEqual([
      { type: 'repository', name: 'a', actions: ['pull'] },
      { type: 'repository', name: 'b', actions: [] },
    ]);
    const issued = await auth.issueToken(alice, access);
    expect(issued).toMatchObject({ expiresIn: 300, issuedAt: new Date(T0).toISOString() });
    expect(issued.refreshToken).toBeUndefined();

    const bearer = await auth.authenticateBearer(issued.token, req);
    expect(bearer.principal).toEqual({
      type: 'user',
      name: 'alice',
      groups: ['devs', 'ops'],
      tags: { team: 'red' },
    });
    expect(bearer.authMethod).toBe('password');
    expect(bearer.access).toEqual(access);
    // A token for a does not carry b: b's entry records only that it was refused.
    expect(bearer.access.find((e) => e.name === 'b')?.actions).toEqual([]);
    // Tags in the token feed conditions at request time.
    expect((await auth.authorize(bearer, 'registry:ListTags', 'repository/a', req)).effect).toBe('Allow');

    const tokenEvents = (await auth.audit.query({ type: 'token' })).entries;
    expect(tokenEvents).toHaveLength(1);
    expect(tokenEvents[0]).toMatchObject({ actor: 'user/alice', action: 'token:Issue' });
    expect(tokenEvents[0]?.detail).toMatchObject({ access: ['repository:a:pull'], expiresIn: 300 });
  });

  it('refuses expired, foreign and malformed tokens', async () => {
    const { auth, clock, storage } = setup();
    const alice = await userWith(auth, 'alice');
    const { token } = await auth.issueToken(alice, []);
    expect(await reasonOf(auth.authenticateBearer('not.a.token', req))).toEqual([
      'invalid-token',
      'malformed',
    ]);
    const stranger = setup().auth;
    expect(await reasonOf(stranger.authenticateBearer(token, req))).toEqual(['invalid-token', 'unknown-kid']);
    // Same keys, another service name: the token is not for it.
    const other = createAuth({
      storage,
      log: silentLogger,
      issuer: 'https://registry.test',
      service: 'other.test',
      now: () => clock.t,
    });
    expect(await reasonOf(other.authenticateBearer(token, req))).toEqual(['invalid-token', 'wrong-audience']);
    clock.t += 306_000;
    expect(await reasonOf(auth.authenticateBearer(token, req))).toEqual(['invalid-token', 'expired']);
  });

  it('does not let a bearer-derived identity outlive its token', async () => {
    const { auth, clock } = setup();
    const alice = await userWith(auth, 'alice');
    const bearer = await auth.authenticateBearer((await auth.issueToken(alice, [])).token, req);
    clock.t += 100_000;
    const again = await auth.issueToken(bearer, [], { offline: true });
    expect(again.expiresIn).toBe(200);
    expect(again.refreshToken).toBeUndefined();
    clock.t += 150_000;
    expect(await reasonOf(auth.issueToken(bearer, []))).toEqual(['invalid-token', 'expired']);
  });

  it('refreshes a session until the password changes or the user is deleted', async () => {
    const { auth, clock } = setup();
    const alice = await userWith(auth, 'alice', undefined, { groups: ['devs'] });
    const { refreshToken } = await auth.issueToken(alice, [], { offline: true, clientId: 'docker' });
    expect(refreshToken).toEqual(expect.any(String));
    const refreshed = await auth.authenticateRefresh(refreshToken as string, req, { clientId: 'docker' });
    expect(refreshed).toMatchObject({
      principal: { type: 'user', name: 'alice', groups: ['devs'] },
      authMethod: 'password',
    });
    expect(
      await reasonOf(auth.authenticateRefresh(refreshToken as string, req, { clientId: 'other' })),
    ).toEqual(['invalid-token', 'client-mismatch']);
    // An access token is not a refresh token.
    const { token } = await auth.issueToken(alice, []);
    expect((await reasonOf(auth.authenticateRefresh(token, req)))[0]).toBe('invalid-token');

    clock.t += 2000;
    await auth.identities.updateUser('alice', { password: 'a brand new password' });
    expect(await reasonOf(auth.authenticateRefresh(refreshToken as string, req))).toEqual([
      'invalid-token',
      'revoked',
    ]);

    clock.t += 2000;
    const relogged = await auth.authenticateBasic('alice', 'a brand new password', req);
    const second = (await auth.issueToken(relogged, [], { offline: true })).refreshToken as string;
    expect((await auth.authenticateRefresh(second, req)).principal.name).toBe('alice');
    clock.t += 2000;
    await auth.identities.deleteUser('alice');
    expect((await reasonOf(auth.authenticateRefresh(second, req)))[0]).toBe('invalid-token');
    // Not even by a new user of the same name.
    await auth.identities.createUser({ name: 'alice', password });
    expect(await reasonOf(auth.authenticateRefresh(second, req))).toEqual(['invalid-token', 'revoked']);
  });

  it('ends an access-key session when the key is deactivated, sessions are revoked or the user disabled', async () => {
    const { auth, clock } = setup();
    await auth.identities.createUser({ name: 'bob' });
    const key = await auth.identities.createAccessKey({ type: 'user', name: 'bob' });
    const bob = await auth.authenticateBasic(key.id, key.secret, req);
    const refresh = (await auth.issueToken(bob, [], { offline: true })).refreshToken as string;
    expect(await auth.authenticateRefresh(refresh, req)).toMatchObject({
      authMethod: 'accesskey',
      accessKeyId: key.id,
    });
    await auth.identities.updateAccessKey(key.id, { status: 'inactive' });
    expect(await reasonOf(auth.authenticateRefresh(refresh, req))).toEqual([
      'invalid-token',
      'principal-unavailable',
    ]);
    await auth.identities.updateAccessKey(key.id, { status: 'active' });
    expect((await auth.authenticateRefresh(refresh, req)).principal.name).toBe('bob');
    clock.t += 1000;
    const fresh = (await auth.issueToken(bob, [], { offline: true })).refreshToken as string;
    clock.t += 1000;
    await auth.revokeSessions('user/bob');
    expect(await reasonOf(auth.authenticateRefresh(fresh, req))).toEqual(['invalid-token', 'revoked']);
    clock.t += 1000;
    await auth.identities.updateUser('bob', { disabled: true });
    expect((await reasonOf(auth.authenticateRefresh(refresh, req)))[0]).toBe('invalid-token');
  });
});

describe('task role credentials', () => {
  it('mints short-lived keys that act as the role over Basic and SigV4 (with the session token only)', async () => {
    const { auth, clock } = setup();
    await auth.identities.createRole({
      name: 'web-task',
      maxSessionSeconds: 900,
      trustPolicy: {
        Version: '2012-10-17',
        Statement: {
          Effect: 'Allow',
          Principal: { Federated: 'https://ci.example' },
          Action: 'sts:AssumeRoleWithWebIdentity',
          Condition: { StringEquals: { 'oidc:sub': 'x' } },
        },
      },
    });
    const c = await auth.roleCredentials('arn:aws:iam::000000000000:role/web-task', 'ecs-task:t1');
    expect(c.RoleArn).toBe('arn:aws:iam::000000000000:role/web-task');
    expect(Date.parse(c.Expiration) - clock.t).toBe(900_000);
    const basic = await auth.authenticateBasic(c.AccessKeyId, c.SecretAccessKey, req);
    expect(basic.principal).toMatchObject({ type: 'role', name: 'web-task' });
    expect(basic.expiresAt).toBe(Math.floor(clock.t / 1000) + 900);
    await expect(auth.authenticateBasic(c.AccessKeyId, 'wrong', req)).rejects.toThrow(/invalid/);
    const ecs = { service: 'ecs' };
    const signed = await auth.authenticateSigV4(
      signedRequest(c.AccessKeyId, c.SecretAccessKey, clock.t, '{}', c.Token),
      req,
      ecs,
    );
    expect(signed.principal.name).toBe('web-task');
    // Without its session token a temporary key is unknown.
    const bare = await sigV4Error(
      auth.authenticateSigV4(signedRequest(c.AccessKeyId, c.SecretAccessKey, clock.t, '{"b":1}'), req, ecs),
    );
    expect(bare.code).toBe('UnrecognizedClientException');
    await expect(auth.roleCredentials('nope', 's')).rejects.toThrow(/does not exist/);
  });
});

describe('OIDC role sessions', () => {
  const ciIssuer = 'https://ci.example';

  async function ciSetup() {
    const ctx = setup();
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' } as Jwk;
    await ctx.auth.federation.addProvider({ issuer: ciIssuer, audiences: ['berth'], jwks: { keys: [jwk] } });
    await ctx.auth.identities.createRole({
      name: 'deployer',
      maxSessionSeconds: 120,
      tags: { env: 'prod' },
      trustPolicy: {
        Version: '2012-10-17',
        Statement: {
          Effect: 'Allow',
          Principal: { Federated: ciIssuer },
          Action: 'sts:AssumeRoleWithWebIdentity',
          Condition: { StringLike: { 'oidc:sub': 'repo:acme/*' } },
        },
      },
    });
    await ctx.auth.policies.putPolicy(
      'deploy',
      doc(
        { Effect: 'Allow', Action: ['registry:Pull', 'registry:Push'], Resource: 'repository/acme/*' },
        {
          Sid: 'MainOnly',
          Effect: 'Deny',
          Action: 'registry:Push',
          Resource: 'repository/*',
          Condition: { StringNotEquals: { 'oidc:ref': 'refs/heads/main' } },
        },
      ),
    );
    await ctx.auth.policies.attachPolicy('deploy', { type: 'role', name: 'deployer' });
    const idToken = (claims: Record<string, unknown> = {}) => sign(privateKey, claims, ctx.clock.t);
    return { ...ctx, idToken };
  }

  function sign(key: CryptoKey, claims: Record<string, unknown>, nowMs: number) {
    const iat = Math.floor(nowMs / 1000);
    return new SignJWT({
      iss: ciIssuer,
      aud: 'berth',
      sub: 'repo:acme/api:ref:refs/heads/main',
      ref: 'refs/heads/main',
      repository: 'acme/api',
      iat,
      exp: iat + 300,
      ...claims,
    })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1', typ: 'JWT' })
      .sign(key);
  }

  it('exchanges an id token for a role whose policies and claims decide', async () => {
    const { auth, idToken } = await ciSetup();
    const main = await auth.authenticateBasic('oidc', await idToken(), req);
    expect(main).toMatchObject({
      principal: { type: 'role', name: 'deployer', groups: [], tags: { env: 'prod' } },
      authMethod: 'oidc',
      sessionSubject: `oidc:${ciIssuer}#repo:acme/api:ref:refs/heads/main`,
    });
    expect(main.claims).toMatchObject({ ref: 'refs/heads/main', iss: ciIssuer, aud: 'berth' });
    expect(main.claims).not.toHaveProperty('exp');
    expect(
      await auth.grant(main, scopes('repository:acme/api:pull,push', 'repository:other/x:pull'), req),
    ).toEqual([
      { type: 'repository', name: 'acme/api', actions: ['pull', 'push'] },
      { type: 'repository', name: 'other/x', actions: [] },
    ]);

    const branch = await auth.exchangeIdToken(
      await idToken({ sub: 'repo:acme/api:ref:refs/heads/dev', ref: 'refs/heads/dev' }),
      req,
      'deployer',
    );
    expect(await auth.grant(branch, scopes('repository:acme/api:pull,push'), req)).toEqual([
      { type: 'repository', name: 'acme/api', actions: ['pull'] },
    ]);

    // The token lasts the role's session at most, and carries the claims to request time.
    const issued = await auth.issueToken(main, [], { offline: true });
    expect(issued.expiresIn).toBe(120);
    expect(issued.refreshToken).toBeUndefined();
    const bearer = await auth.authenticateBearer(issued.token, req);
    expect(bearer.claims).toEqual(main.claims);
    expect(bearer.sessionSubject).toBe(main.sessionSubject);
    expect((await auth.authorize(bearer, 'registry:Push', 'repository/acme/api', req)).effect).toBe('Allow');
    const branchBearer = await auth.authenticateBearer((await auth.issueToken(branch, [])).token, req);
    expect((await auth.authorize(branchBearer, 'registry:Push', 'repository/acme/api', req)).effect).toBe(
      'Deny',
    );

    const authn = (await auth.audit.query({ type: 'authn' })).entries;
    expect(authn.map((e) => [e.actor, e.action, e.decision])).toEqual([
      ['role/deployer', 'authn:AssumeRoleWithWebIdentity', 'Allow'],
      ['role/deployer', 'authn:AssumeRoleWithWebIdentity', 'Allow'],
    ]);
  });

  it('refuses tokens no role trusts, and throttles the address', async () => {
    const { auth, idToken } = await ciSetup();
    const foreign = await idToken({ sub: 'repo:evil/x:ref:refs/heads/main' });
    expect(await reasonOf(auth.authenticateBasic('oidc', foreign, req))).toEqual(['federation', 'no-role']);
    expect(await reasonOf(auth.exchangeIdToken(await idToken(), req, 'nope'))).toEqual([
      'federation',
      'role-not-found',
    ]);
    expect(await reasonOf(auth.exchangeIdToken('garbage', req))).toEqual(['federation', 'malformed']);
    const denied = (await auth.audit.query({ type: 'authn', decision: 'Deny' })).entries;
    expect(denied.map((e) => e.reason)).toEqual(['no-role', 'role-not-found', 'malformed']);
  });

  it('locks out an address that keeps presenting bad id tokens', async () => {
    const ctx = setup({ throttle: { maxFailures: 2, lockoutSeconds: 30 } });
    await reasonOf(ctx.auth.exchangeIdToken('garbage', req));
    await reasonOf(ctx.auth.authenticateBasic('oidc', 'garbage', req));
    const locked = await authError(ctx.auth.exchangeIdToken('garbage', req));
    expect(locked.reason).toBe('throttled');
    expect(locked.retryAfterSeconds).toBe(30);
  });
});

describe('simulate', () => {
  it('returns the decision and the statements that decided it', async () => {
    const { auth } = setup();
    await auth.identities.createGroup({ name: 'devs' });
    await auth.identities.createUser({ name: 'carol', groups: ['devs'], tags: { team: 'red' } });
    await auth.policies.putPolicy(
      'dev-pull',
      doc({ Sid: 'Pull', Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/*' }),
    );
    await auth.policies.attachPolicy('dev-pull', { type: 'group', name: 'devs' });
    await auth.policies.putRepositoryPolicy(
      'secret/*',
      doc({
        Sid: 'OnlyBlue',
        Effect: 'Deny',
        Principal: '*',
        Action: 'registry:*',
        Condition: { StringNotEquals: { 'berth:PrincipalTag/team': 'blue' } },
      }),
    );

    const open = await auth.simulate({
      principal: { type: 'user', name: 'carol' },
      action: 'registry:pull',
      resource: 'repository/app',
    });
    expect(open).toMatchObject({ effect: 'Allow', reason: 'allowed' });
    expect(open.statements).toEqual([
      {
        policyId: 'policy/dev-pull',
        sid: 'Pull',
        index: 0,
        effect: 'Allow',
        statement: { Sid: 'Pull', Effect: 'Allow', Action: ['registry:Pull'], Resource: ['repository/*'] },
      },
    ]);

    const secret = await auth.simulate({
      principal: { type: 'user', name: 'carol' },
      action: 'registry:Pull',
      resource: 'repository/secret/app',
    });
    expect(secret.effect).toBe('Deny');
    expect(secret.statements.map((s) => [s.policyId, s.sid, s.effect])).toEqual([
      ['policy/dev-pull', 'Pull', 'Allow'],
      ['repository/secret/*', 'OnlyBlue', 'Deny'],
    ]);
    // The caller's context overrides the principal's own tags.
    const asBlue = await auth.simulate({
      principal: { type: 'user', name: 'carol' },
      action: 'registry:Pull',
      resource: 'repository/secret/app',
      context: { 'berth:PrincipalTag/team': 'blue' },
    });
    expect(asBlue.effect).toBe('Allow');

    const anon = await auth.simulate({
      principal: { type: 'anonymous', name: 'anonymous' },
      action: 'registry:Pull',
      resource: 'repository/app',
    });
    expect(anon).toMatchObject({ effect: 'Deny', reason: 'implicit-deny', statements: [] });
    // Simulations are not audited.
    expect((await auth.audit.query()).entries).toEqual([]);

    const code = (p: Promise<unknown>) =>
      p.then(
        () => 'ok',
        (e: unknown) => (e instanceof AuthStoreError ? e.code : String(e)),
      );
    expect(
      await code(
        auth.simulate({
          principal: { type: 'user', name: 'ghost' },
          action: 'registry:Pull',
          resource: 'repository/a',
        }),
      ),
    ).toBe('NOT_FOUND');
    expect(
      await code(
        auth.simulate({
          principal: { type: 'group', name: 'devs' },
          action: 'registry:Pull',
          resource: 'repository/a',
        }),
      ),
    ).toBe('INVALID');
    expect(
      await code(
        auth.simulate({
          principal: { type: 'user', name: 'carol' },
          action: 'registry:Fly',
          resource: 'repository/a',
        }),
      ),
    ).toBe('INVALID');
    expect(
      await code(
        auth.simulate({
          principal: { type: 'user', name: 'carol' },
          action: 'registry:Pull',
          resource: 'repo/a',
        }),
      ),
    ).toBe('INVALID');
  });
});

describe('identity lifecycle', () => {
  it('detaches the policies of a deleted identity', async () => {
    const { auth } = setup();
    await userWith(auth, 'dave', doc({ Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/*' }));
    await auth.identities.deleteUser('dave');
    expect(await auth.policies.attachmentsOf('dave-policy')).toEqual([]);
    await auth.identities.createUser({ name: 'dave', password });
    const again = await auth.authenticateBasic('dave', password, req);
    expect(await auth.grant(again, scopes('repository:app:pull'), req)).toEqual([
      { type: 'repository', name: 'app', actions: [] },
    ]);
  });

  it('refuses to attach a policy to an identity that does not exist', async () => {
    const { auth } = setup();
    await auth.policies.putPolicy('p', doc({ Effect: 'Allow', Action: 'registry:Pull', Resource: '*' }));
    await expect(auth.policies.attachPolicy('p', { type: 'role', name: 'ghost' })).rejects.toMatchObject({
      code: 'NOT_FOUND',
    });
  });
});

describe('development mode', () => {
  it('allows everything as anonymous-dev', async () => {
    const { auth } = setup({ enabled: false });
    expect(auth.enabled).toBe(false);
    const dev = await auth.authenticateBasic('whoever', 'whatever', req);
    expect(dev.principal).toEqual({ type: 'user', name: 'anonymous-dev', groups: [], tags: {} });
    expect(auth.anonymous().principal.name).toBe('anonymous-dev');
    expect((await auth.authorize(dev, 'admin:DeleteUser', 'user/admin', req)).effect).toBe('Allow');
    const asked = scopes('repository:a:pull,push', 'repository:b:*', 'registry:catalog:*');
    expect(await auth.grant(dev, asked, req)).toEqual([
      { type: 'repository', name: 'a', actions: ['pull', 'push'] },
      { type: 'repository', name: 'b', actions: ['*'] },
      { type: 'registry', name: 'catalog', actions: ['*'] },
    ]);
    const bearer = await auth.authenticateBearer((await auth.issueToken(dev, [])).token, req);
    expect(bearer.principal.name).toBe('anonymous-dev');
    const signed = signedRequest('BKAAAAAAAAAAAAAAAAAA', 'any secret', Date.now());
    expect((await auth.authenticateSigV4(signed, req, { service: 'ecs' })).principal.name).toBe(
      'anonymous-dev',
    );
  });
});

describe('sessionClaims', () => {
  it('keeps a bounded subset of the claims', () => {
    const claims: Record<string, unknown> = {
      exp: 1,
      iat: 1,
      nbf: 1,
      jti: 'x',
      big: 'x'.repeat(257),
      'has space': 'v',
      nested: { a: 1 },
      list: ['a', 'b'],
      mixed: ['a', { b: 1 }],
      flag: true,
      n: 42,
    };
    for (let i = 0; i < 40; i++) claims[`c${i}`] = `v${i}`;
    claims['sub'] = 'last but preferred';
    const kept = sessionClaims(claims);
    expect(Object.keys(kept)).toHaveLength(maxSessionClaims);
    expect(Object.keys(kept).slice(0, 4)).toEqual(['sub', 'list', 'flag', 'n']);
    expect(kept).toMatchObject({ list: ['a', 'b'], flag: 'true', n: '42' });
    for (const k of ['exp', 'iat', 'nbf', 'jti', 'big', 'has space', 'nested', 'mixed', 'c39'])
      expect(kept).not.toHaveProperty(k);
  });
});
