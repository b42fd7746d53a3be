import { describe, expect, it } from 'vitest';
import { signedEcsRequest } from '../../test/support/sigv4-request.ts';
import { silentLogger } from '../log.ts';
import { checked, createMemoryDriver } from '../storage/index.ts';
import { parseScopes } from './scope.ts';
import {
  type Auth,
  AuthError,
  type AuthOptions,
  createAuth,
  type Identity,
  type RequestInfo,
} from './service.ts';
import { SigV4Error } from './sigv4.ts';

const T0 = Date.parse('2025-06-01T00:00:00Z');
const req: RequestInfo = { sourceIp: '192.0.2.7', requestId: 'req-1', secure: true };
const password = 'correct horse battery';

function setup() {
  const clock = { t: T0 };
  const storage = checked(createMemoryDriver());
  const options: AuthOptions = {
    storage,
    log: silentLogger,
    issuer: 'https://registry.test',
    service: 'registry.test',
    scryptCost: 16,
    now: () => clock.t,
  };
  return { auth: createAuth(options), clock, reopen: () => createAuth(options) };
}

const doc = (...Statement: Record<string, unknown>[]) => ({ Version: '2012-10-17', Statement });
const pull = { Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/team/*' };
const push = { Effect: 'Allow', Action: 'registry:Push', Resource: 'repository/team/*' };
const noPush = { Effect: 'Deny', Action: 'registry:Push', Resource: 'repository/team/*' };
const listUsers = { Effect: 'Allow', Action: 'admin:ListUsers', Resource: 'user/*' };

/** A token for the identity, granted what it asks among `scopes`. */
async function tokenFor(auth: Auth, identity: Identity, ...scopes: string[]) {
  const access = await auth.grant(identity, parseScopes(scopes), req);
  return (await auth.issueToken(identity, access)).token;
}

/** Resolves to 'live', or to the AuthError detail the token is refused with. */
async function status(auth: Auth, token: string): Promise<string> {
  try {
    await auth.authenticateBearer(token, req);
    return 'live';
  } catch (err) {
    if (err instanceof AuthError) return `${err.reason}:${err.detail}`;
    throw err;
  }
}

const revoked = 'invalid-token:revoked';

async function userWithPolicy(auth: Auth, name: string, statements: Record<string, unknown>[]) {
  await auth.identities.createUser({ name, password });
  await auth.policies.putPolicy(`${name}-p`, doc(...statements));
  await auth.policies.attachPolicy(`${name}-p`, { type: 'user', name });
  return auth.authenticateBasic(name, password, req);
}

describe('tokens die with their principal', () => {
  it('refuses the token of a deleted user, and of one disabled, on the next use', async () => {
    const { auth } = setup();
    const alice = await userWithPolicy(auth, 'alice', [pull]);
    const bob = await userWithPolicy(auth, 'bob', [pull]);
    const a = await tokenFor(auth, alice, 'repository:team/app:pull');
    const b = await tokenFor(auth, bob, 'repository:team/app:pull');
    expect(await status(auth, a)).toBe('live');
    await auth.identities.deleteUser('alice');
    expect(await status(auth, a)).toBe(revoked);
    await auth.identities.updateUser('bob', { disabled: true });
    expect(await status(auth, b)).toBe(revoked);
    // Enabling bob again does not revive the token from before.
    await auth.identities.updateUser('bob', { disabled: false });
    expect(await status(auth, b)).toBe(revoked);
    // A new token of the same user works; the refusal was audited once.
    expect(await status(auth, await tokenFor(auth, await auth.authenticateBasic('bob', password, req)))).toBe(
      'live',
    );
    const audit = await auth.audit.query({ type: 'authn' });
    const refusals = audit.entries.filter((e) => e.action === 'authn:Bearer' && e.actor === 'user/bob');
    expect(refusals).toHaveLength(1);
    expect(refusals[0]).toMatchObject({ decision: 'Deny', reason: 'revoked' });
  });

  it('refuses the tokens of a deleted role and of a deleted service account', async () => {
    const { auth } = setup();
    await auth.identities.createRole({ name: 'deployer' });
    const c = await auth.roleCredentials('deployer', 'ecs-task-1');
    const roleToken = await tokenFor(
      auth,
      await auth.authenticateBasic(c.AccessKeyId, c.SecretAccessKey, req),
    );
    await auth.identities.createServiceAccount({ name: 'ci' });
    const key = await auth.identities.createAccessKey({ type: 'serviceaccount', name: 'ci' });
    const ciToken = await tokenFor(auth, await auth.authenticateBasic(key.id, key.secret, req));
    expect(await status(auth, roleToken)).toBe('live');
    expect(await status(auth, ciToken)).toBe('live');
    await auth.identities.deleteRole('deployer');
    await auth.identities.deleteServiceAccount('ci');
    expect(await status(auth, roleToken)).toBe(revoked);
    expect(await status(auth, ciToken)).toBe(revoked);
    // A role of the same name created later does not take over the old role's sessions.
    await auth.identities.createRole({ name: 'deployer' });
    await expect(auth.authenticateBasic(c.AccessKeyId, c.SecretAccessKey, req)).rejects.toThrow(AuthError);
  });

  it('refuses tokens of sessions begun with an access key once it is deactivated or deleted', async () => {
    const { auth } = setup();
    await userWithPolicy(auth, 'alice', [pull]);
    const k1 = await auth.identities.createAccessKey({ type: 'user', name: 'alice' });
    const k2 = await auth.identities.createAccessKey({ type: 'user', name: 'alice' });
    const t1 = await tokenFor(auth, await auth.authenticateBasic(k1.id, k1.secret, req));
    const t2 = await tokenFor(auth, await auth.authenticateBasic(k2.id, k2.secret, req));
    const byPassword = await tokenFor(auth, await auth.authenticateBasic('alice', password, req));
    await auth.identities.updateAccessKey(k1.id, { status: 'inactive' });
    expect(await status(auth, t1)).toBe(revoked);
    expect(await status(auth, t2)).toBe('live');
    await auth.identities.deleteAccessKey(k2.id);
    expect(await status(auth, t2)).toBe(revoked);
    // The user's other sessions are not the keys'.
    expect(await status(auth, byPassword)).toBe('live');
    await auth.identities.updateAccessKey(k1.id, { status: 'active' });
    expect(await status(auth, t1)).toBe(revoked);
  });
});

describe('tokens die when their rights narrow, not when they widen', () => {
  it('a group left, or deleted, ends the tokens that carry it', async () => {
    const { auth } = setup();
    await auth.identities.createGroup({ name: 'devs' });
    await auth.identities.createGroup({ name: 'ops' });
    await auth.policies.putPolicy('devs-pull', doc(pull));
    await auth.policies.attachPolicy('devs-pull', { type: 'group', name: 'devs' });
    await auth.identities.createUser({ name: 'alice', password, groups: ['devs'] });
    await auth.identities.createUser({ name: 'bob', password, groups: ['devs', 'ops'] });
    const a = await tokenFor(
      auth,
      await auth.authenticateBasic('alice', password, req),
      'repository:team/x:pull',
    );
    const b = await tokenFor(
      auth,
      await auth.authenticateBasic('bob', password, req),
      'repository:team/x:pull',
    );
    await auth.identities.updateUser('alice', { groups: [] });
    expect(await status(auth, a)).toBe(revoked);
    expect(await status(auth, b)).toBe('live');
    await auth.identities.deleteGroup('ops');
    expect(await status(auth, b)).toBe(revoked);
  });

  it('detaching an Allow, adding a Deny or editing a policy narrowly ends tokens; widening does not', async () => {
    const { auth } = setup();
    await userWithPolicy(auth, 'alice', [pull]);
    // Signs in again each time, as a client fetching a new token does.
    const fresh = async () =>
      tokenFor(auth, await auth.authenticateBasic('alice', password, req), 'repository:team/x:pull');
    let t = await fresh();
    // Widening: another Allow attached, the policy given a statement more.
    await auth.policies.putPolicy('more', doc(push));
    await auth.policies.attachPolicy('more', { type: 'user', name: 'alice' });
    await auth.policies.putPolicy('alice-p', doc(pull, push));
    expect(await status(auth, t)).toBe('live');
    // Narrowing: the policy loses a statement.
    await auth.policies.putPolicy('alice-p', doc(pull));
    expect(await status(auth, t)).toBe(revoked);
    t = await fresh();
    // Narrowing: a Deny attached.
    await auth.policies.putPolicy('deny', doc(noPush));
    await auth.policies.attachPolicy('deny', { type: 'user', name: 'alice' });
    expect(await status(auth, t)).toBe(revoked);
    t = await fresh();
    // Widening: the Deny-only policy detached.
    await auth.policies.detachPolicy('deny', { type: 'user', name: 'alice' });
    expect(await status(auth, t)).toBe('live');
    // Narrowing: a policy with an Allow detached.
    await auth.policies.detachPolicy('more', { type: 'user', name: 'alice' });
    expect(await status(auth, t)).toBe(revoked);
  });

  it('a policy narrowed on a group ends its members’ tokens; a narrowed repository policy ends all', async () => {
    const { auth } = setup();
    await auth.identities.createGroup({ name: 'devs' });
    await auth.policies.putPolicy('devs-p', doc(pull, push));
    await auth.policies.attachPolicy('devs-p', { type: 'group', name: 'devs' });
    await auth.identities.createUser({ name: 'alice', password, groups: ['devs'] });
    const outsider = await userWithPolicy(auth, 'carol', [pull]);
    const a = await tokenFor(
      auth,
      await auth.authenticateBasic('alice', password, req),
      'repository:team/x:push',
    );
    const c = await tokenFor(auth, outsider, 'repository:team/x:pull');
    await auth.policies.putPolicy('devs-p', doc(pull));
    expect(await status(auth, a)).toBe(revoked);
    expect(await status(auth, c)).toBe('live');
    const anon = await tokenFor(auth, auth.anonymous(), 'repository:team/x:pull');
    const open = { Effect: 'Allow', Principal: '*', Action: 'registry:Pull' };
    await auth.policies.putRepositoryPolicy('team/*', doc(open));
    expect(await status(auth, anon)).toBe('live');
    await auth.policies.putRepositoryPolicy('team/*', doc(open, { ...noPush, Principal: '*' }));
    expect(await status(auth, c)).toBe(revoked);
    expect(await status(auth, anon)).toBe(revoked);
  });

  it('a change between sign-in and issue counts as after the token', async () => {
    const { auth } = setup();
    const alice = await userWithPolicy(auth, 'alice', [pull, push]);
    // The grant is decided after the narrowing, but on an identity authenticated before it.
    await auth.policies.putPolicy('alice-p', doc(pull));
    const t = await tokenFor(auth, alice, 'repository:team/x:pull');
    expect(await status(auth, t)).toBe(revoked);
  });
});

describe('role sessions', () => {
  it('end on demand: their keys stop signing in, and tokens issued for them stop working', async () => {
    const { auth, clock } = setup();
    await auth.identities.createRole({ name: 'app-task' });
    const a = await auth.roleCredentials('app-task', 'ecs-task-a');
    const b = await auth.roleCredentials('app-task', 'ecs-task-b');
    const token = await tokenFor(auth, await auth.authenticateBasic(a.AccessKeyId, a.SecretAccessKey, req));
    expect(await auth.revokeRoleSessions((s) => s.sessionName === 'ecs-task-a')).toBe(1);
    await expect(auth.authenticateBasic(a.AccessKeyId, a.SecretAccessKey, req)).rejects.toThrow(AuthError);
    const e = await auth
      .authenticateSigV4(signedRequest(a.AccessKeyId, a.SecretAccessKey, clock.t, a.Token), req, {
        service: 'ecs',
      })
      .catch((err: unknown) => err);
    expect(e).toBeInstanceOf(SigV4Error);
    expect(await status(auth, token)).toBe(revoked);
    // The other task's session is untouched.
    expect((await auth.authenticateBasic(b.AccessKeyId, b.SecretAccessKey, req)).principal.name).toBe(
      'app-task',
    );
  });
});

describe('across a restart', () => {
  it('a token revoked before the restart stays dead, a deleted user stays gone', async () => {
    const { auth, reopen, clock } = setup();
    await auth.start();
    const alice = await userWithPolicy(auth, 'alice', [pull]);
    const bob = await userWithPolicy(auth, 'bob', [pull]);
    const a = await tokenFor(auth, alice, 'repository:team/x:pull');
    const b = await tokenFor(auth, bob, 'repository:team/x:pull');
    await auth.policies.detachPolicy('bob-p', { type: 'user', name: 'bob' });
    await auth.identities.deleteUser('alice');
    await auth.identities.createUser({ name: 'alice', password });
    await auth.identities.flush();
    clock.t += 1000;
    const again = reopen();
    await again.start();
    // alice is another alice now: the old one's token does not pass for her.
    expect(await status(again, a)).toBe(revoked);
    expect(await status(again, b)).toBe(revoked);
    // Role sessions revoked before the restart stay revoked.
    await again.identities.createRole({ name: 'r' });
    const c = await again.roleCredentials('r', 'ecs-task-x');
    await again.revokeRoleSessions(() => true);
    const third = reopen();
    await third.start();
    await expect(third.authenticateBasic(c.AccessKeyId, c.SecretAccessKey, req)).rejects.toThrow(AuthError);
  });
});

describe('the admin scope', () => {
  it('is granted to principals some policy allows an admin action, and to no one else', async () => {
    const { auth } = setup();
    const ops = await userWithPolicy(auth, 'ops', [listUsers]);
    const dev = await userWithPolicy(auth, 'dev', [pull]);
    expect(await auth.grant(ops, parseScopes(['berth:admin:*']), req)).toEqual([
      { type: 'berth', name: 'admin', actions: ['*'] },
    ]);
    expect(await auth.grant(dev, parseScopes(['berth:admin:*']), req)).toEqual([
      { type: 'berth', name: 'admin', actions: [] },
    ]);
    const ecsOnly = await userWithPolicy(auth, 'runner', [
      { Effect: 'Allow', Action: 'ecs:ReadLogs', Resource: '*' },
    ]);
    expect((await auth.grant(ecsOnly, parseScopes(['berth:admin:*']), req))[0]?.actions).toEqual(['*']);
  });
});

function signedRequest(keyId: string, secret: string, t: number, sessionToken: string) {
  return signedEcsRequest({ keyId, secret, t, region: 'us-east-1', sessionToken });
}
