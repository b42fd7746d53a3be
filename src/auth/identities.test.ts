import { beforeEach, describe, expect, it, vi } from 'vitest';
import {
  checked,
  createMemoryDriver,
  isValidPath,
  type StorageDriver,
  StorageError,
} from '../storage/index.ts';
import {
  type AccessKeyOwner,
  AuthStoreError,
  type AuthStoreErrorCode,
  createIdentityStore,
  decodeName,
  encodeName,
  type IdentityStoreOptions,
  principalOf,
} from './identities.ts';
import * as passwords from './passwords.ts';
import { listOrEmpty, readJson, writeJson } from './store.ts';

vi.mock('./passwords.ts', { spy: true });

const T0 = Date.parse('2025-06-01T00:00:00.000Z');
const at = (ms: number) => new Date(T0 + ms).toISOString();
const alice: AccessKeyOwner = { type: 'user', name: 'alice' };

/** A driver that records the paths written, checked like production drivers. */
function recordingDriver(inner: StorageDriver = createMemoryDriver()) {
  const storage = checked(inner);
  const writes: string[] = [];
  const driver: StorageDriver = {
    ...storage,
    async putContent(path, content) {
      writes.push(path);
      return storage.putContent(path, content);
    },
  };
  return { driver, writes, inner };
}

function setup(over: Partial<IdentityStoreOptions> = {}) {
  const clock = { t: T0 };
  const { driver, writes, inner } = recordingDriver();
  const storage = over.storage ?? driver;
  const opts = { storage, now: () => clock.t, scryptCost: 16, ...over };
  const store = createIdentityStore(opts);
  const reopen = () => createIdentityStore(opts);
  return { store, storage, clock, writes, inner, reopen };
}

async function expectError(p: Promise<unknown>, code: AuthStoreErrorCode, message: unknown) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AuthStoreError);
  expect((err as AuthStoreError).code).toBe(code);
  expect((err as AuthStoreError).message).toEqual(message);
}

/** Every byte the store wrote, as text. */
async function allStored(storage: StorageDriver, dir = '/'): Promise<string> {
  let out = '';
  for (const p of await storage.list(dir)) {
    const info = await storage.stat(p);
    out += info.isDir ? await allStored(storage, p) : new TextDecoder().decode(await storage.getContent(p));
  }
  return out;
}

beforeEach(() => {
  vi.clearAllMocks();
});

describe('encodeName / decodeName', () => {
  it('keeps plain names and encodes the rest reversibly into valid path components', () => {
    expect(encodeName('alice')).toBe('alice');
    expect(encodeName('ci.bot_1-x')).toBe('ci.bot_1-x');
    expect(encodeName('ReadOnly')).toBe('ReadOnly');
    expect(encodeName('bob@example.com')).toBe(`~${Buffer.from('bob@example.com').toString('base64url')}`);
    const names = [
      'alice',
      'bob@example.com',
      'team-a/*',
      '*',
      '~tilde',
      '.hidden',
      '-dash',
      'a b',
      'ünïcödé',
      'x'.repeat(128),
      '',
      'a.json',
    ];
    for (const name of names) {
      const c = encodeName(name);
      expect(isValidPath(`/auth/${c}.json`)).toBe(true);
      expect(decodeName(c)).toBe(name);
    }
  });

  it('decodes only what encodeName makes', () => {
    expect(decodeName(`~${Buffer.from('alice').toString('base64url')}`)).toBeUndefined();
    expect(decodeName('~!!')).toBeUndefined();
    expect(decodeName('.x')).toBeUndefined();
    expect(decodeName('a@b')).toBeUndefined();
  });
});

describe('users', () => {
  it('creates a user with exact fields and no password hash in sight', async () => {
    const { store, storage } = setup();
    await store.createGroup({ name: 'devs' });
    await store.createGroup({ name: 'ops' });
    const user = await store.createUser({
      name: 'alice',
      password: 'correct horse',
      groups: ['ops', 'devs', 'ops'],
      tags: { team: 'core', 'cost-center': '42' },
    });
    expect(user).toEqual({
      type: 'user',
      name: 'alice',
      groups: ['devs', 'ops'],
      tags: { 'cost-center': '42', team: 'core' },
      disabled: false,
      hasPassword: true,
      createdAt: at(0),
      updatedAt: at(0),
      etag: expect.stringMatching(/^[A-Za-z0-9_-]{16}$/),
    });
    expect(await store.getUser('alice')).toEqual(user);
    expect(await store.getUser('nobody')).toBeUndefined();
    const stored = (await readJson(storage, '/auth/iam/users/alice.json')) as Record<string, unknown>;
    expect(stored['passwordHash']).toMatch(/^scrypt\$16\$8\$1\$/);
    expect(JSON.stringify(stored)).not.toContain('correct horse');
  });

  it('stores users whose names need encoding', async () => {
    const { store, storage } = setup();
    await store.createUser({ name: 'bob@example.com' });
    expect(await storage.list('/auth/iam/users')).toEqual([
      `/auth/iam/users/~${Buffer.from('bob@example.com').toString('base64url')}.json`,
    ]);
    expect((await store.getUser('bob@example.com'))?.name).toBe('bob@example.com');
  });

  it('refuses bad input with clear errors', async () => {
    const { store } = setup();
    await store.createUser({ name: 'bob' });
    await expectError(store.createUser({ name: 'bob' }), 'ALREADY_EXISTS', 'user "bob" already exists');
    await expectError(
      store.createUser({ name: 'Bob' }),
      'INVALID',
      `invalid user name "Bob": 1 to 64 characters of a-z, 0-9, '.', '_', '@' and '-', starting with a letter or digit`,
    );
    for (const name of ['', '-x', '.x', 'a/b', 'a b', 'x'.repeat(65)])
      await expectError(store.createUser({ name }), 'INVALID', expect.stringContaining('invalid user name'));
    await expectError(
      store.createUser({ name: 'carol', groups: ['x'] }),
      'INVALID',
      'group "x" does not exist',
    );
    await expectError(
      store.createUser({ name: 'carol', password: 'short' }),
      'INVALID',
      'password must be 8 to 1024 characters',
    );
    await expectError(
      store.createUser({ name: 'carol', tags: { team: 7 as unknown as string } }),
      'INVALID',
      'tag "team" must have a string value of at most 256 characters',
    );
    await expectError(
      store.createUser({
        name: 'carol',
        tags: Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`k${i}`, ''])),
      }),
      'INVALID',
      'at most 50 tags are allowed, not 51',
    );
    expect(await store.getUser('carol')).toBeUndefined();
  });

  it('lists users sorted by name, page by page', async () => {
    const { store } = setup();
    for (const name of ['erin', 'bob', 'dave', 'alice', 'carol']) await store.createUser({ name });
    const names = (p: { items: { name: string }[]; next?: string }) => [p.items.map((u) => u.name), p.next];
    const p1 = await store.listUsers({ limit: 2 });
    expect(names(p1)).toEqual([['alice', 'bob'], 'bob']);
    const p2 = await store.listUsers({ limit: 2, after: p1.next });
    expect(names(p2)).toEqual([['carol', 'dave'], 'dave']);
    const p3 = await store.listUsers({ limit: 2, after: p2.next });
    expect(names(p3)).toEqual([['erin'], undefined]);
    expect(p3).not.toHaveProperty('next');
    expect(names(await store.listUsers({ limit: 3, after: 'bz' }))).toEqual([
      ['carol', 'dave', 'erin'],
      undefined,
    ]);
    expect(names(await store.listUsers({ limit: 5 }))).toEqual([
      ['alice', 'bob', 'carol', 'dave', 'erin'],
      undefined,
    ]);
    expect(names(await store.listUsers())).toEqual([['alice', 'bob', 'carol', 'dave', 'erin'], undefined]);
    expect(names(await store.listUsers({ after: 'erin' }))).toEqual([[], undefined]);
    await expectError(
      store.listUsers({ limit: 0 }),
      'INVALID',
      'limit must be a whole number from 1 to 1000',
    );
    await expectError(
      store.listUsers({ limit: 1001 }),
      'INVALID',
      'limit must be a whole number from 1 to 1000',
    );
  });

  it('updates fields, with a fresh etag and updatedAt, and honours If-Match', async () => {
    const { store, clock } = setup();
    await store.createGroup({ name: 'devs' });
    const created = await store.createUser({ name: 'alice', password: 'first password' });
    clock.t += 5000;
    const updated = await store.updateUser('alice', { groups: ['devs'], tags: { a: 'b' }, disabled: true });
    expect(updated).toEqual({
      ...created,
      groups: ['devs'],
      tags: { a: 'b' },
      disabled: true,
      updatedAt: at(5000),
      etag: expect.any(String),
    });
    expect(updated.etag).not.toBe(created.etag);
    await expectError(
      store.updateUser('alice', { disabled: false }, { ifMatch: created.etag }),
      'PRECONDITION_FAILED',
      'user "alice" was changed since it was read (etag mismatch)',
    );
    const again = await store.updateUser('alice', { disabled: false }, { ifMatch: updated.etag });
    expect(again.disabled).toBe(false);
    expect(again.groups).toEqual(['devs']);
    await expectError(store.updateUser('nobody', {}), 'NOT_FOUND', 'user "nobody" does not exist');
    await expectError(
      store.updateUser('alice', { groups: ['nope'] }),
      'INVALID',
      'group "nope" does not exist',
    );
  });

  it('changes and removes passwords', async () => {
    const { store } = setup();
    await store.createUser({ name: 'alice', password: 'first password' });
    await store.updateUser('alice', { password: 'second password' });
    expect(await store.verifyPassword('alice', 'first password')).toBeUndefined();
    expect((await store.verifyPassword('alice', 'second password'))?.name).toBe('alice');
    const u = await store.updateUser('alice', { password: null });
    expect(u.hasPassword).toBe(false);
    expect(await store.verifyPassword('alice', 'second password')).toBeUndefined();
    await expectError(
      store.updateUser('alice', { password: 'x' }),
      'INVALID',
      'password must be 8 to 1024 characters',
    );
  });

  it('deletes users and their access keys', async () => {
    const { store, storage } = setup();
    await store.createUser({ name: 'alice' });
    const key = await store.createAccessKey(alice);
    await store.deleteUser('alice');
    expect(await store.getUser('alice')).toBeUndefined();
    expect(await store.getAccessKey(key.id)).toBeUndefined();
    expect(await listOrEmpty(storage, '/auth/iam/access-keys')).toEqual([]);
    await expectError(store.deleteUser('alice'), 'NOT_FOUND', 'user "alice" does not exist');
  });

  it('asks beforeDelete first, and keeps the identity when it refuses', async () => {
    const calls: unknown[] = [];
    let refuse = true;
    const { store } = setup({
      beforeDelete: async (t) => {
        calls.push(t);
        if (refuse) throw new Error('policies still attached');
      },
    });
    await store.createUser({ name: 'alice' });
    await expect(store.deleteUser('alice')).rejects.toThrow('policies still attached');
    expect(await store.getUser('alice')).toBeDefined();
    refuse = false;
    await store.deleteUser('alice');
    await store.createGroup({ name: 'g' });
    await store.deleteGroup('g');
    await store.createRole({ name: 'r' });
    await store.deleteRole('r');
    await store.createServiceAccount({ name: 's' });
    await store.deleteServiceAccount('s');
    expect(calls).toEqual([
      { type: 'user', name: 'alice' },
      { type: 'user', name: 'alice' },
      { type: 'group', name: 'g' },
      { type: 'role', name: 'r' },
      { type: 'serviceaccount', name: 's' },
    ]);
  });

  it('serializes concurrent writes', async () => {
    const { store } = setup();
    const results = await Promise.allSettled([
      store.createUser({ name: 'alice', password: 'password one' }),
      store.createUser({ name: 'alice', password: 'password two' }),
    ]);
    expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect((await store.listUsers()).items).toHaveLength(1);
  });
});

describe('verifyPassword', () => {
  it('answers the user for the right password only', async () => {
    const { store } = setup();
    const user = await store.createUser({ name: 'alice', password: 'correct horse' });
    expect(await store.verifyPassword('alice', 'correct horse')).toEqual(user);
    expect(await store.verifyPassword('alice', 'wrong horse')).toBeUndefined();
    expect(await store.verifyPassword('alice', 'x'.repeat(2000))).toBeUndefined();
  });

  it('burns a verification for unknown, disabled and password-less users', async () => {
    const { store } = setup();
    await store.createUser({ name: 'dis', password: 'correct horse', disabled: true });
    await store.createUser({ name: 'nopw' });
    vi.mocked(passwords.dummyVerify).mockClear();
    expect(await store.verifyPassword('nobody', 'correct horse')).toBeUndefined();
    expect(await store.verifyPassword('dis', 'correct horse')).toBeUndefined();
    expect(await store.verifyPassword('nopw', 'correct horse')).toBeUndefined();
    expect(passwords.dummyVerify).toHaveBeenCalledTimes(3);
    expect(passwords.dummyVerify).toHaveBeenCalledWith({ N: 16, r: 8, p: 1 });
  });

  it('remembers a success for 60 seconds, and never a failure', async () => {
    const { store, clock } = setup();
    await store.createUser({ name: 'alice', password: 'correct horse' });
    const verify = vi.mocked(passwords.verifySecret);
    verify.mockClear();
    await store.verifyPassword('alice', 'correct horse');
    await store.verifyPassword('alice', 'correct horse');
    clock.t += 59_000;
    await store.verifyPassword('alice', 'correct horse');
    expect(verify).toHaveBeenCalledTimes(1);
    expect(await store.verifyPassword('alice', 'wrong horse')).toBeUndefined();
    expect(verify).toHaveBeenCalledTimes(2);
    clock.t += 1000;
    expect(await store.verifyPassword('alice', 'correct horse')).toBeDefined();
    expect(verify).toHaveBeenCalledTimes(3);
  });

  it('forgets a remembered success when the password changes or the user is disabled', async () => {
    const { store } = setup();
    await store.createUser({ name: 'alice', password: 'correct horse' });
    expect(await store.verifyPassword('alice', 'correct horse')).toBeDefined();
    await store.updateUser('alice', { password: 'battery staple' });
    expect(await store.verifyPassword('alice', 'correct horse')).toBeUndefined();
    expect(await store.verifyPassword('alice', 'battery staple')).toBeDefined();
    await store.updateUser('alice', { disabled: true });
    expect(await store.verifyPassword('alice', 'battery staple')).toBeUndefined();
  });
});

describe('groups', () => {
  it('creates, lists, updates and refuses duplicates', async () => {
    const { store, clock } = setup();
    const g = await store.createGroup({ name: 'devs', description: 'Developers' });
    expect(g).toEqual({
      type: 'group',
      name: 'devs',
      description: 'Developers',
      createdAt: at(0),
      updatedAt: at(0),
      etag: expect.any(String),
    });
    await store.createGroup({ name: 'admins' });
    expect((await store.getGroup('admins'))?.description).toBe('');
    await expectError(store.createGroup({ name: 'devs' }), 'ALREADY_EXISTS', 'group "devs" already exists');
    const page = await store.listGroups({ limit: 1 });
    expect(page.items.map((x) => x.name)).toEqual(['admins']);
    expect(page.next).toBe('admins');
    clock.t += 1;
    const u = await store.updateGroup('devs', { description: 'Devs' }, { ifMatch: g.etag });
    expect(u).toEqual({ ...g, description: 'Devs', updatedAt: at(1), etag: expect.any(String) });
    await expectError(
      store.updateGroup('devs', { description: 'x' }, { ifMatch: g.etag }),
      'PRECONDITION_FAILED',
      'group "devs" was changed since it was read (etag mismatch)',
    );
    await expectError(
      store.getGroup('x').then(() => store.deleteGroup('x')),
      'NOT_FOUND',
      'group "x" does not exist',
    );
  });

  it('removes a deleted group from its members', async () => {
    const { store } = setup();
    await store.createGroup({ name: 'devs' });
    await store.createGroup({ name: 'ops' });
    await store.createUser({ name: 'alice', groups: ['devs', 'ops'] });
    await store.createUser({ name: 'bob', groups: ['ops'] });
    await store.createServiceAccount({ name: 'ci', groups: ['devs'] });
    expect(await store.groupMembers('devs')).toEqual({ users: ['alice'], serviceAccounts: ['ci'] });
    await store.deleteGroup('devs');
    expect((await store.getUser('alice'))?.groups).toEqual(['ops']);
    expect((await store.getUser('bob'))?.groups).toEqual(['ops']);
    expect((await store.getServiceAccount('ci'))?.groups).toEqual([]);
    expect(await store.getGroup('devs')).toBeUndefined();
    await expectError(store.groupMembers('devs'), 'NOT_FOUND', 'group "devs" does not exist');
    // A new group of the same name starts empty.
    await store.createGroup({ name: 'devs' });
    expect(await store.groupMembers('devs')).toEqual({ users: [], serviceAccounts: [] });
  });

  it('drops memberships of groups a crash left deleted', async () => {
    const { store, storage, reopen } = setup();
    await store.createGroup({ name: 'devs' });
    await store.createUser({ name: 'alice', groups: ['devs'] });
    await storage.delete('/auth/iam/groups/devs.json');
    const fresh = reopen();
    expect((await fresh.getUser('alice'))?.groups).toEqual([]);
  });
});

describe('roles', () => {
  it('creates roles with defaults and validates the session length', async () => {
    const { store } = setup();
    const trustPolicy = { Version: '2012-10-17', Statement: [{ Effect: 'Allow', Skip: undefined }] };
    const r = await store.createRole({ name: 'ci-deploy', trustPolicy });
    expect(r).toEqual({
      type: 'role',
      name: 'ci-deploy',
      description: '',
      trustPolicy: { Version: '2012-10-17', Statement: [{ Effect: 'Allow' }] },
      maxSessionSeconds: 3600,
      tags: {},
      createdAt: at(0),
      updatedAt: at(0),
      etag: expect.any(String),
    });
    expect(Object.isFrozen(r.trustPolicy)).toBe(true);
    for (const maxSessionSeconds of [59, 43201, 100.5])
      await expectError(
        store.createRole({ name: 'x', maxSessionSeconds }),
        'INVALID',
        'maxSessionSeconds must be a whole number from 60 to 43200',
      );
    expect((await store.createRole({ name: 'short', maxSessionSeconds: 60 })).maxSessionSeconds).toBe(60);
    expect((await store.createRole({ name: 'long', maxSessionSeconds: 43200 })).maxSessionSeconds).toBe(
      43200,
    );
    await expectError(
      store.createRole({ name: 'ci-deploy' }),
      'ALREADY_EXISTS',
      'role "ci-deploy" already exists',
    );
    await expectError(
      store.createRole({ name: 'big', trustPolicy: { x: 'y'.repeat(40_000) } }),
      'INVALID',
      'trustPolicy is larger than 32768 bytes of JSON',
    );
    expect((await store.listRoles()).items.map((x) => x.name)).toEqual(['ci-deploy', 'long', 'short']);
  });

  it('updates and removes the trust policy, then deletes', async () => {
    const { store } = setup();
    await store.createRole({ name: 'ci', trustPolicy: { a: 1 }, description: 'CI' });
    const u = await store.updateRole('ci', { maxSessionSeconds: 900, tags: { env: 'prod' } });
    expect(u).toMatchObject({
      trustPolicy: { a: 1 },
      description: 'CI',
      maxSessionSeconds: 900,
      tags: { env: 'prod' },
    });
    const v = await store.updateRole('ci', { trustPolicy: null });
    expect(v).not.toHaveProperty('trustPolicy');
    expect((await store.updateRole('ci', { trustPolicy: { b: 2 } })).trustPolicy).toEqual({ b: 2 });
    await store.deleteRole('ci');
    expect(await store.getRole('ci')).toBeUndefined();
    await expectError(store.deleteRole('ci'), 'NOT_FOUND', 'role "ci" does not exist');
    await expectError(store.updateRole('ci', {}), 'NOT_FOUND', 'role "ci" does not exist');
  });
});

describe('service accounts', () => {
  it('creates, updates, lists and deletes them with their keys', async () => {
    const { store } = setup();
    await store.createGroup({ name: 'builders' });
    const sa = await store.createServiceAccount({ name: 'ci-bot', description: 'CI', groups: ['builders'] });
    expect(sa).toEqual({
      type: 'serviceaccount',
      name: 'ci-bot',
      description: 'CI',
      groups: ['builders'],
      tags: {},
      createdAt: at(0),
      updatedAt: at(0),
      etag: expect.any(String),
    });
    expect(principalOf(sa)).toEqual({
      type: 'serviceaccount',
      name: 'ci-bot',
      groups: ['builders'],
      tags: {},
    });
    await expectError(
      store.createServiceAccount({ name: 'ci-bot' }),
      'ALREADY_EXISTS',
      'service account "ci-bot" already exists',
    );
    expect((await store.updateServiceAccount('ci-bot', { groups: [] })).groups).toEqual([]);
    const key = await store.createAccessKey({ type: 'serviceaccount', name: 'ci-bot' });
    expect(await store.verifyAccessKey(key.id, key.secret)).toEqual({
      type: 'serviceaccount',
      name: 'ci-bot',
      groups: [],
      tags: {},
      accessKeyId: key.id,
    });
    expect((await store.listServiceAccounts()).items.map((x) => x.name)).toEqual(['ci-bot']);
    await store.deleteServiceAccount('ci-bot');
    expect(await store.getAccessKey(key.id)).toBeUndefined();
    expect(await store.verifyAccessKey(key.id, key.secret)).toBeUndefined();
    await expectError(
      store.deleteServiceAccount('ci-bot'),
      'NOT_FOUND',
      'service account "ci-bot" does not exist',
    );
  });
});

describe('access keys', () => {
  it('creates keys of the documented shape, storing the hash and, for SigV4, the secret', async () => {
    const { store, storage } = setup();
    await store.createUser({ name: 'alice' });
    const key = await store.createAccessKey(alice);
    expect(key).toEqual({
      id: expect.stringMatching(/^BK[A-Z2-7]{18}$/),
      secret: expect.any(String),
      createdAt: at(0),
    });
    expect(key.secret).toMatch(/^[A-Za-z0-9_-]{40}$/);
    expect(await store.listAccessKeys(alice)).toEqual([
      { id: key.id, owner: { type: 'user', name: 'alice' }, status: 'active', createdAt: at(0) },
    ]);
    expect(JSON.stringify(await store.listAccessKeys(alice))).not.toContain(key.secret);
    const everything = await allStored(storage);
    expect(everything).toContain(key.id);
    const doc = (await readJson(storage, `/auth/iam/access-keys/${key.id}.json`)) as Record<string, unknown>;
    expect(await passwords.verifySecret(key.secret, doc['secretHash'] as string)).toBe(true);
    // SigV4 verification needs the secret itself (storage encrypts it at rest); nothing else shows it.
    expect(doc['secret']).toBe(key.secret);
    expect(JSON.stringify(await store.getAccessKey(key.id))).not.toContain(key.secret);
  });

  it('hands the secret of a usable key to signature checks, and records the use only when asked', async () => {
    const { store, clock, reopen } = setup();
    await store.createUser({ name: 'alice', tags: { team: 'a' } });
    const key = await store.createAccessKey(alice);
    const signing = await store.signingKey(key.id);
    expect(signing).toMatchObject({
      secret: key.secret,
      principal: { type: 'user', name: 'alice', groups: [], tags: { team: 'a' }, accessKeyId: key.id },
    });
    await store.flush();
    expect((await store.getAccessKey(key.id))?.lastUsedAt).toBeUndefined();
    clock.t += 1000;
    signing?.used();
    await store.flush();
    expect((await store.getAccessKey(key.id))?.lastUsedAt).toBe(at(1000));
    // Kept across a restart.
    expect((await reopen().signingKey(key.id))?.secret).toBe(key.secret);

    expect(await store.signingKey('BKAAAAAAAAAAAAAAAAAA')).toBeUndefined();
    expect(await store.signingKey('../../etc')).toBeUndefined();
    await store.updateAccessKey(key.id, { status: 'inactive' });
    expect(await store.signingKey(key.id)).toBeUndefined();
    await store.updateAccessKey(key.id, { status: 'active' });
    await store.updateUser('alice', { disabled: true });
    expect(await store.signingKey(key.id)).toBeUndefined();
  });

  it('says a key stored before secrets were kept has none to sign with, and still verifies it', async () => {
    const { store, storage, reopen } = setup();
    await store.createUser({ name: 'alice' });
    const key = await store.createAccessKey(alice);
    const path = `/auth/iam/access-keys/${key.id}.json`;
    const { secret: _, ...legacy } = (await readJson(storage, path)) as Record<string, unknown>;
    await writeJson(storage, path, legacy);
    const fresh = reopen();
    const signing = await fresh.signingKey(key.id);
    expect(signing?.principal.accessKeyId).toBe(key.id);
    expect(signing?.secret).toBeUndefined();
    expect(await fresh.verifyAccessKey(key.id, key.secret)).toMatchObject({ accessKeyId: key.id });
  });

  it('allows two keys per owner', async () => {
    const { store, clock } = setup();
    await store.createUser({ name: 'alice' });
    const k1 = await store.createAccessKey(alice);
    clock.t += 1000;
    const k2 = await store.createAccessKey(alice);
    await expectError(
      store.createAccessKey(alice),
      'LIMIT_EXCEEDED',
      'user "alice" already has 2 access keys, the most allowed; delete one first',
    );
    await store.updateAccessKey(k1.id, { status: 'inactive' });
    await expectError(store.createAccessKey(alice), 'LIMIT_EXCEEDED', expect.any(String));
    expect((await store.listAccessKeys(alice)).map((k) => [k.id, k.status])).toEqual([
      [k1.id, 'inactive'],
      [k2.id, 'active'],
    ]);
    await store.deleteAccessKey(k1.id);
    clock.t += 1000;
    const k3 = await store.createAccessKey(alice);
    expect((await store.listAccessKeys(alice)).map((k) => k.id)).toEqual([k2.id, k3.id]);
    // Another owner has its own allowance.
    await store.createUser({ name: 'bob' });
    await store.createAccessKey({ type: 'user', name: 'bob' });
    await store.createAccessKey({ type: 'user', name: 'bob' });
  });

  it('holds the limit under concurrent creation', async () => {
    const { store } = setup();
    await store.createUser({ name: 'alice' });
    const results = await Promise.allSettled([1, 2, 3].map(() => store.createAccessKey(alice)));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(2);
    const rejected = results
      .filter((r) => r.status === 'rejected')
      .map((r) => (r.reason as AuthStoreError).code);
    expect(rejected).toEqual(['LIMIT_EXCEEDED']);
  });

  it('refuses keys for owners that do not exist', async () => {
    const { store } = setup();
    await expectError(store.createAccessKey(alice), 'NOT_FOUND', 'user "alice" does not exist');
    await expectError(
      store.createAccessKey({ type: 'serviceaccount', name: 'x' }),
      'NOT_FOUND',
      'service account "x" does not exist',
    );
    await expectError(store.listAccessKeys(alice), 'NOT_FOUND', 'user "alice" does not exist');
    await expectError(
      store.createAccessKey({ type: 'group', name: 'x' } as unknown as AccessKeyOwner),
      'INVALID',
      'an access key belongs to a user or a service account',
    );
    await expectError(
      store.deleteAccessKey('BKAAAAAAAAAAAAAAAAAA'),
      'NOT_FOUND',
      'access key "BKAAAAAAAAAAAAAAAAAA" does not exist',
    );
    await expectError(
      store.updateAccessKey('BKAAAAAAAAAAAAAAAAAA', { status: 'inactive' }),
      'NOT_FOUND',
      'access key "BKAAAAAAAAAAAAAAAAAA" does not exist',
    );
  });

  it('verifies the secret of an active key of an enabled owner', async () => {
    const { store } = setup();
    await store.createGroup({ name: 'devs' });
    await store.createUser({ name: 'alice', groups: ['devs'], tags: { team: 'a' } });
    const key = await store.createAccessKey(alice);
    const principal = {
      type: 'user',
      name: 'alice',
      groups: ['devs'],
      tags: { team: 'a' },
      accessKeyId: key.id,
    };
    expect(await store.verifyAccessKey(key.id, key.secret)).toEqual(principal);
    expect(await store.verifyAccessKey(key.id, `${key.secret}x`)).toBeUndefined();
    expect(await store.verifyAccessKey(key.id, '')).toBeUndefined();
    expect(await store.verifyAccessKey('BKAAAAAAAAAAAAAAAAAA', key.secret)).toBeUndefined();
    expect(await store.verifyAccessKey('../../etc', key.secret)).toBeUndefined();

    await store.updateAccessKey(key.id, { status: 'inactive' });
    expect(await store.verifyAccessKey(key.id, key.secret)).toBeUndefined();
    await store.updateAccessKey(key.id, { status: 'active' });
    expect(await store.verifyAccessKey(key.id, key.secret)).toEqual(principal);

    await store.updateUser('alice', { disabled: true });
    expect(await store.verifyAccessKey(key.id, key.secret)).toBeUndefined();
    await store.updateUser('alice', { disabled: false });

    await store.deleteAccessKey(key.id);
    expect(await store.verifyAccessKey(key.id, key.secret)).toBeUndefined();
  });

  it('burns a verification for unknown and unusable keys', async () => {
    const { store } = setup();
    await store.createUser({ name: 'alice' });
    const key = await store.createAccessKey(alice);
    await store.updateAccessKey(key.id, { status: 'inactive' });
    vi.mocked(passwords.dummyVerify).mockClear();
    await store.verifyAccessKey('BKAAAAAAAAAAAAAAAAAA', 'x');
    await store.verifyAccessKey('nonsense', 'x');
    await store.verifyAccessKey(key.id, key.secret);
    expect(passwords.dummyVerify).toHaveBeenCalledTimes(3);
  });

  it('remembers successful verifications for a minute', async () => {
    const { store, clock } = setup();
    await store.createUser({ name: 'alice' });
    const key = await store.createAccessKey(alice);
    const verify = vi.mocked(passwords.verifySecret);
    verify.mockClear();
    for (let i = 0; i < 5; i++) expect(await store.verifyAccessKey(key.id, key.secret)).toBeDefined();
    expect(verify).toHaveBeenCalledTimes(1);
    expect(await store.verifyAccessKey(key.id, 'wrong')).toBeUndefined();
    expect(verify).toHaveBeenCalledTimes(2);
    clock.t += 60_000;
    expect(await store.verifyAccessKey(key.id, key.secret)).toBeDefined();
    expect(verify).toHaveBeenCalledTimes(3);
  });

  it('records lastUsedAt at most once a minute', async () => {
    const { store, clock, writes } = setup();
    await store.createUser({ name: 'alice' });
    const key = await store.createAccessKey(alice);
    const keyPath = `/auth/iam/access-keys/${key.id}.json`;
    const keyWrites = () => writes.filter((w) => w === keyPath).length;
    expect(keyWrites()).toBe(1);
    clock.t += 1000;
    await store.verifyAccessKey(key.id, key.secret);
    await store.flush();
    expect(keyWrites()).toBe(2);
    expect((await store.getAccessKey(key.id))?.lastUsedAt).toBe(at(1000));
    for (let i = 0; i < 10; i++) {
      clock.t += 5000;
      await store.verifyAccessKey(key.id, key.secret);
    }
    await store.flush();
    expect(keyWrites()).toBe(2);
    expect((await store.getAccessKey(key.id))?.lastUsedAt).toBe(at(1000));
    clock.t += 10_000; // 61 s after the recorded use
    await store.verifyAccessKey(key.id, key.secret);
    await store.flush();
    expect(keyWrites()).toBe(3);
    expect((await store.listAccessKeys(alice))[0]?.lastUsedAt).toBe(at(61_000));
    // Concurrent uses record once.
    clock.t += 60_000;
    await Promise.all([1, 2, 3].map(() => store.verifyAccessKey(key.id, key.secret)));
    await store.flush();
    expect(keyWrites()).toBe(4);
  });

  it('does not write back a key deleted while its use was being recorded', async () => {
    const { store, storage } = setup();
    await store.createUser({ name: 'alice' });
    const key = await store.createAccessKey(alice);
    const verified = store.verifyAccessKey(key.id, key.secret);
    const deleted = verified.then(() => store.deleteAccessKey(key.id));
    await Promise.all([verified, deleted]);
    await store.flush();
    expect(await listOrEmpty(storage, '/auth/iam/access-keys')).toEqual([]);
  });

  it('never lets a key left behind by a deleted owner pass for a new owner of the same name', async () => {
    const { store, storage, clock, reopen } = setup();
    await store.createUser({ name: 'alice' });
    const key = await store.createAccessKey(alice);
    // As if a crash had removed the user but not its key.
    await storage.delete('/auth/iam/users/alice.json');
    clock.t += 1000;
    const fresh = reopen();
    await fresh.createUser({ name: 'alice' });
    expect(await fresh.verifyAccessKey(key.id, key.secret)).toBeUndefined();
    expect(await fresh.listAccessKeys(alice)).toEqual([]);
    await fresh.createAccessKey(alice);
    await fresh.createAccessKey(alice);
    await fresh.deleteUser('alice');
    expect(await listOrEmpty(storage, '/auth/iam/access-keys')).toEqual([]);
  });
});

describe('persistence', () => {
  it('serves everything again from a new store over the same storage', async () => {
    const { store, reopen } = setup();
    await store.createGroup({ name: 'devs', description: 'Developers' });
    const user = await store.createUser({
      name: 'bob@example.com',
      password: 'correct horse',
      groups: ['devs'],
    });
    const role = await store.createRole({
      name: 'ci',
      trustPolicy: { any: ['json'] },
      maxSessionSeconds: 900,
    });
    const sa = await store.createServiceAccount({ name: 'bot', groups: ['devs'], tags: { a: 'b' } });
    const key = await store.createAccessKey({ type: 'serviceaccount', name: 'bot' });
    await store.verifyAccessKey(key.id, key.secret);
    await store.flush();

    const fresh = reopen();
    expect(await fresh.getUser('bob@example.com')).toEqual(user);
    expect(await fresh.getRole('ci')).toEqual(role);
    expect(await fresh.getServiceAccount('bot')).toEqual(sa);
    expect((await fresh.getGroup('devs'))?.description).toBe('Developers');
    expect(await fresh.verifyPassword('bob@example.com', 'correct horse')).toEqual(user);
    expect(await fresh.verifyAccessKey(key.id, key.secret)).toEqual({
      type: 'serviceaccount',
      name: 'bot',
      groups: ['devs'],
      tags: { a: 'b' },
      accessKeyId: key.id,
    });
    expect(await fresh.listAccessKeys({ type: 'serviceaccount', name: 'bot' })).toEqual([
      {
        id: key.id,
        owner: { type: 'serviceaccount', name: 'bot' },
        status: 'active',
        createdAt: at(0),
        lastUsedAt: at(0),
      },
    ]);
  });

  it('ignores malformed records', async () => {
    const { store, storage, reopen } = setup();
    await store.createUser({ name: 'alice' });
    await writeJson(storage, '/auth/iam/users/mallory.json', { name: 'mallory' });
    await writeJson(storage, '/auth/iam/users/eve.json', {
      ...((await readJson(storage, '/auth/iam/users/alice.json')) as object),
    });
    await storage.putContent('/auth/iam/users/junk.json', new TextEncoder().encode('{not json'));
    const warnings: unknown[] = [];
    const log = { warn: (o: unknown) => warnings.push(o) } as unknown as IdentityStoreOptions['log'];
    const fresh = createIdentityStore({ storage, scryptCost: 16, log });
    expect((await fresh.listUsers()).items.map((u) => u.name)).toEqual(['alice']);
    expect(warnings).toEqual([
      { path: '/auth/iam/users/eve.json' },
      { path: '/auth/iam/users/junk.json' },
      { path: '/auth/iam/users/mallory.json' },
    ]);
    expect(await reopen().getUser('alice')).toBeDefined();
  });
});

describe('storage failures', () => {
  it('fail loudly while loading, and the next call loads again', async () => {
    const { store, inner } = setup();
    await store.createUser({ name: 'alice' });
    let fail = true;
    const base = checked(inner);
    const flaky: StorageDriver = {
      ...base,
      async getContent(path) {
        if (fail) throw new StorageError('memory', path, 'disk on fire');
        return base.getContent(path);
      },
    };
    const fresh = createIdentityStore({ storage: flaky, scryptCost: 16 });
    await expect(fresh.getUser('alice')).rejects.toThrow('disk on fire');
    fail = false;
    expect((await fresh.getUser('alice'))?.name).toBe('alice');
  });

  it('leave memory as it was when a write fails', async () => {
    let fail = false;
    const base = checked(createMemoryDriver());
    const storage: StorageDriver = {
      ...base,
      async putContent(path, content) {
        if (fail) throw new StorageError('memory', path, 'disk full');
        return base.putContent(path, content);
      },
    };
    const store = createIdentityStore({ storage, scryptCost: 16 });
    const before = await store.createUser({ name: 'alice' });
    fail = true;
    await expect(store.updateUser('alice', { disabled: true })).rejects.toThrow('disk full');
    await expect(store.createUser({ name: 'bob' })).rejects.toThrow('disk full');
    expect(await store.getUser('alice')).toEqual(before);
    expect(await store.getUser('bob')).toBeUndefined();
    fail = false;
    // The queue keeps working after a failed write.
    expect((await store.createUser({ name: 'bob' })).name).toBe('bob');
  });
});

describe('principals', () => {
  it('resolves users and service accounts, not disabled users', async () => {
    const { store } = setup();
    await store.createGroup({ name: 'devs' });
    const user = await store.createUser({ name: 'alice', groups: ['devs'] });
    expect(principalOf(user)).toEqual({ type: 'user', name: 'alice', groups: ['devs'], tags: {} });
    expect(await store.resolvePrincipal(alice)).toEqual(principalOf(user));
    await store.updateUser('alice', { disabled: true });
    expect(await store.resolvePrincipal(alice)).toBeUndefined();
    expect(await store.resolvePrincipal({ type: 'serviceaccount', name: 'x' })).toBeUndefined();
  });
});

describe('ensureBootstrapAdmin', () => {
  it('creates admin in admins once, with a generated password', async () => {
    const { store, reopen } = setup();
    const first = await store.ensureBootstrapAdmin();
    expect(first).toEqual({ created: true, password: expect.stringMatching(/^[A-Za-z0-9_-]{24}$/) });
    const admin = await store.getUser('admin');
    expect(admin).toMatchObject({ name: 'admin', groups: ['admins'], disabled: false, hasPassword: true });
    expect(await store.getGroup('admins')).toMatchObject({ name: 'admins' });
    expect(await store.verifyPassword('admin', first.password as string)).toEqual(admin);
    expect(await store.ensureBootstrapAdmin()).toEqual({ created: false });
    expect(await reopen().ensureBootstrapAdmin({ password: 'another password' })).toEqual({ created: false });
    expect(await store.verifyPassword('admin', 'another password')).toBeUndefined();
  });

  it('uses a given password and an existing admins group', async () => {
    const { store } = setup();
    const group = await store.createGroup({ name: 'admins', description: 'mine' });
    expect(await store.ensureBootstrapAdmin({ password: 'my admin password' })).toEqual({ created: true });
    expect(await store.getGroup('admins')).toEqual(group);
    expect(await store.verifyPassword('admin', 'my admin password')).toBeDefined();
    await expectError(
      setup().store.ensureBootstrapAdmin({ password: 'short' }),
      'INVALID',
      'password must be 8 to 1024 characters',
    );
  });

  it('creates one admin under concurrent calls', async () => {
    const { store } = setup();
    const results = await Promise.all([store.ensureBootstrapAdmin(), store.ensureBootstrapAdmin()]);
    expect(results.map((r) => r.created).sort()).toEqual([false, true]);
    const pw = results.find((r) => r.created)?.password as string;
    expect(await store.verifyPassword('admin', pw)).toBeDefined();
  });
});
