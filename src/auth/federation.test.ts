import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type CryptoKey, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Logger } from '../log.ts';
import { createOutbound, type Outbound } from '../outbound.ts';
import { checked, createMemoryDriver, type StorageDriver } from '../storage/index.ts';
import {
  createFederation,
  type ExchangeOptions,
  type Federation,
  FederationError,
  type FederationErrorReason,
  type FederationRole,
  ProviderError,
  providerIdFor,
} from './federation.ts';
import type { Jwk } from './tokens.ts';

const T0 = Date.parse('2025-06-01T00:00:00Z');
const offlineIssuer = 'https://ci.offline.example';

interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
  jwk: Jwk;
}

async function signingKey(kid: string, alg: 'ES256' | 'RS256' = 'ES256'): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg);
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } as Jwk };
}

function sign(
  key: SigningKey,
  claims: Record<string, unknown>,
  alg = key.jwk.alg ?? 'ES256',
): Promise<string> {
  const iat = Math.floor(T0 / 1000);
  return new SignJWT({ aud: 'berth', iat, exp: iat + 300, ...claims })
    .setProtectedHeader({ alg, kid: key.kid, typ: 'JWT' })
    .sign(key.privateKey);
}

/** A GitHub-Actions-shaped token for `issuer`. */
function ghToken(key: SigningKey, issuer: string, over: Record<string, unknown> = {}) {
  return sign(key, {
    iss: issuer,
    sub: 'repo:acme/api:ref:refs/heads/main',
    repository: 'acme/api',
    repository_owner: 'acme',
    ref: 'refs/heads/main',
    environment: 'production',
    event_name: 'push',
    ...over,
  });
}

function trustPolicy(federated: string, condition: Record<string, unknown>) {
  return {
    Version: '2012-10-17',
    Statement: [
      {
        Effect: 'Allow',
        Principal: { Federated: federated },
        Action: 'sts:AssumeRoleWithWebIdentity',
        Condition: condition,
      },
    ],
  };
}

function rolesOf(list: FederationRole[]): Pick<ExchangeOptions, 'resolveRole' | 'listRoles'> {
  return {
    resolveRole: async (name) => list.find((r) => r.name === name),
    listRoles: async () => list,
  };
}

async function reason(p: Promise<unknown>): Promise<FederationErrorReason> {
  const e = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(e instanceof FederationError)) throw new Error(`expected a FederationError, got ${String(e)}`);
  return e.reason;
}

async function failure(p: Promise<unknown>): Promise<FederationError> {
  const e = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(e instanceof FederationError)) throw new Error(`expected a FederationError, got ${String(e)}`);
  return e;
}

async function providerErrors(p: Promise<unknown>): Promise<{ reason: string; messages: string[] }> {
  const e = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(e instanceof ProviderError)) throw new Error(`expected a ProviderError, got ${String(e)}`);
  return { reason: e.reason, messages: e.errors.map((x) => x.message) };
}

// --- a local issuer ---

let server: Server;
let issuer: string;
let published: Jwk[] = [];
let up = true;
/** Bytes of padding the JWKS carries (a hostile issuer's answer). */
let jwksPadding = 0;
const hits = { discovery: 0, jwks: 0 };

beforeAll(async () => {
  server = createServer((req, res) => {
    if (!up) {
      res.writeHead(503).end();
      return;
    }
    res.setHeader('content-type', 'application/json');
    if (req.url === '/.well-known/openid-configuration') {
      hits.discovery++;
      res.end(JSON.stringify({ issuer, jwks_uri: `${issuer}/jwks` }));
    } else if (req.url === '/jwks') {
      hits.jwks++;
      res.end(JSON.stringify({ keys: published, padding: ' '.repeat(jwksPadding) }));
    } else res.writeHead(404).end('{}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

let live: SigningKey;
let offline: SigningKey;
let stranger: SigningKey;
let storage: StorageDriver;
let clock: { t: number };
let fed: Federation;
const fetched: string[] = [];

beforeAll(async () => {
  [live, offline, stranger] = await Promise.all([
    signingKey('live-1'),
    signingKey('offline-1', 'RS256'),
    signingKey('stranger'),
  ]);
});

/** The outbound rules with the local issuer's host allowed, recording what is fetched. */
function recordingOutbound(allowHosts = [new URL(issuer).host]): Outbound {
  const outbound = createOutbound({ allowHosts });
  return {
    check: outbound.check,
    request: (url, init) => {
      fetched.push(String(url));
      return outbound.request(url, init);
    },
  };
}

function newFederation(over: Partial<Parameters<typeof createFederation>[0]> = {}) {
  return createFederation({ storage, now: () => clock.t, outbound: recordingOutbound(), ...over });
}

beforeEach(() => {
  storage = checked(createMemoryDriver());
  clock = { t: T0 };
  fed = newFederation();
  published = [live.jwk];
  up = true;
  hits.discovery = 0;
  hits.jwks = 0;
  jwksPadding = 0;
  fetched.length = 0;
});

describe('providers', () => {
  it('derives ids from the issuer host, port and path', () => {
    expect(providerIdFor('https://token.actions.githubusercontent.com')).toBe(
      'token.actions.githubusercontent.com',
    );
    expect(providerIdFor('https://gitlab.example.com/ci/')).toBe('gitlab.example.com-ci');
    expect(providerIdFor('http://127.0.0.1:8080')).toBe('127.0.0.1-8080');
    expect(providerIdFor('https://idp.example/tenants/Acme%20Corp')).toBe('idp.example-tenants-Acme-20Corp');
    expect(providerIdFor('http://[::1]:9000/')).toMatch(/^[A-Za-z0-9_~][A-Za-z0-9._~-]*$/);
  });

  it('adds, reads, lists and deletes providers', async () => {
    const p = await fed.addProvider({ issuer, audiences: ['berth'] });
    expect(p).toEqual({
      id: providerIdFor(issuer),
      issuer,
      audiences: ['berth'],
      claimsLimit: 100,
      createdAt: new Date(T0).toISOString(),
    });
    const q = await fed.addProvider({
      id: 'offline',
      issuer: offlineIssuer,
      audiences: ['berth', 'berth-staging'],
      jwks: { keys: [{ ...offline.jwk, x5t: 'dropped' }] },
      claimsLimit: 40,
    });
    expect(q.jwks).toEqual({ keys: [offline.jwk] });
    expect(await fed.getProvider('offline')).toEqual(q);
    expect((await fed.listProviders()).map((x) => x.id)).toEqual([p.id, 'offline'].sort());
    expect(await fed.getProvider('../etc')).toBeUndefined();
    expect(await fed.getProvider('missing')).toBeUndefined();
    expect(await fed.deleteProvider('offline')).toBe(true);
    expect(await fed.deleteProvider('offline')).toBe(false);
    expect((await fed.listProviders()).map((x) => x.id)).toEqual([p.id]);
  });

  it('refuses bad definitions with every problem named', async () => {
    expect(
      await providerErrors(
        fed.addProvider({
          id: '-bad/id',
          issuer: 'http://ci.example.com',
          audiences: [],
          claimsLimit: 0,
          extra: true,
        } as never),
      ),
    ).toEqual({
      reason: 'invalid',
      messages: [
        'unknown key "extra"',
        'issuer: berth would fetch its keys from it, and http://ci.example.com is plain http, which berth ' +
          'uses only for hosts the operator allows: list "ci.example.com:80" in outbound.allowHosts to allow it',
        'id: must be 1 to 128 letters, digits or ._~- and not start with "." or "-"',
        'audiences: must be a non-empty array of strings (the aud the CI job requests)',
        'claimsLimit: must be an integer from 1 to 1000',
      ],
    });
    expect(
      (
        await providerErrors(
          fed.addProvider({
            issuer: 'https://ci.example.com/?tenant=a',
            audiences: ['berth', 'berth', ''],
            jwks: {
              keys: [
                { ...offline.jwk, d: 'secret' },
                { kty: 'oct', k: 'c2VjcmV0' },
                { kty: 'EC', crv: 'P-256', x: 'AAAA', y: 'AAAA' },
              ],
            },
          }),
        )
      ).messages,
    ).toEqual([
      'issuer: may not have a query or fragment',
      'audiences[1]: duplicate audience "berth"',
      'audiences[2]: must be a non-empty string of at most 256 characters',
      'jwks.keys[0]: is a private key (has d); give the public key only',
      'jwks.keys[1].kty: must be "RSA", "EC" or "OKP" (a public signing key)',
      expect.stringMatching(/^jwks\.keys\[2\]: is not a usable public key/),
    ]);
    for (const bad of ['ftp://ci.example.com', 'not a url', 'https://user:pw@ci.example.com'])
      expect((await providerErrors(fed.addProvider({ issuer: bad, audiences: ['berth'] }))).reason).toBe(
        'invalid',
      );
    expect(await fed.listProviders()).toEqual([]);
  });

  it('accepts plain http and local addresses only for hosts in outbound.allowHosts', async () => {
    const strict = newFederation({ outbound: createOutbound({ allowHosts: [] }) });
    for (const [url, why] of [
      ['http://localhost:1234', 'is plain http'] as const,
      ['https://127.0.0.1:1234/x', 'is a loopback address'],
      ['https://169.254.169.254', 'is a link-local or cloud metadata address'],
    ])
      expect(
        (await providerErrors(strict.addProvider({ issuer: url, audiences: ['berth'] }))).messages,
      ).toEqual([expect.stringContaining(`${why}, which berth `)]);
    const allowing = newFederation({
      outbound: createOutbound({ allowHosts: ['localhost:1234', '127.0.0.1'] }),
    });
    await allowing.addProvider({ issuer: 'http://localhost:1234', audiences: ['berth'] });
    await allowing.addProvider({ issuer: 'https://127.0.0.1:1234/x', audiences: ['berth'] });
    // With its keys given inline, an issuer is only a name to compare: berth never fetches from it.
    await strict.addProvider({
      issuer: 'http://ci.internal',
      audiences: ['berth'],
      jwks: { keys: [offline.jwk] },
    });
    expect((await fed.listProviders()).map((p) => p.id)).toEqual([
      '127.0.0.1-1234-x',
      'ci.internal',
      'localhost-1234',
    ]);
  });

  it('refuses a second provider with the same id or the same issuer', async () => {
    await fed.addProvider({ id: 'ci', issuer, audiences: ['berth'] });
    expect(
      await providerErrors(fed.addProvider({ id: 'ci', issuer: offlineIssuer, audiences: ['x'] })),
    ).toEqual({
      reason: 'conflict',
      messages: ['id: provider "ci" already exists; delete it first to replace it'],
    });
    expect(await providerErrors(fed.addProvider({ id: 'ci2', issuer, audiences: ['x'] }))).toEqual({
      reason: 'conflict',
      messages: [`issuer: "${issuer}" is already trusted as provider "ci"`],
    });
  });
});

describe('exchange', () => {
  const deployer = (federated: string) => ({
    name: 'deployer',
    trustPolicy: trustPolicy(federated, {
      StringLike: { 'oidc:sub': 'repo:acme/*:ref:refs/heads/main' },
      StringEquals: { 'oidc:environment': 'production' },
    }),
    maxSessionSeconds: 3600,
  });
  const orgWide = (federated: string) => ({
    name: 'org-reader',
    trustPolicy: trustPolicy(federated, { StringEquals: { 'oidc:repository_owner': 'acme' } }),
    maxSessionSeconds: 900,
  });
  const unrelated = (federated: string) => ({
    name: 'other-team',
    trustPolicy: trustPolicy(federated, { StringEquals: { 'oidc:repository_owner': 'globex' } }),
    maxSessionSeconds: 900,
  });

  async function withProviders() {
    await fed.addProvider({ id: 'local', issuer, audiences: ['berth', 'berth-alt'] });
    await fed.addProvider({
      id: 'offline',
      issuer: offlineIssuer,
      audiences: ['berth'],
      jwks: { keys: [offline.jwk] },
    });
  }

  it('maps a token from a discovered issuer to the one role that trusts it', async () => {
    await withProviders();
    const result = await fed.exchange(
      await ghToken(live, issuer),
      rolesOf([deployer(issuer), unrelated(issuer)]),
    );
    expect(result).toMatchObject({
      role: 'deployer',
      subject: `oidc:${issuer}#repo:acme/api:ref:refs/heads/main`,
      provider: 'local',
      sessionSeconds: 3600,
      claims: { iss: issuer, repository: 'acme/api', aud: 'berth' },
    });
    expect(hits).toEqual({ discovery: 1, jwks: 1 });
    // Keys are cached: a second exchange does not reach the issuer.
    await fed.exchange(await ghToken(live, issuer), rolesOf([deployer(issuer)]));
    expect(hits).toEqual({ discovery: 1, jwks: 1 });
  });

  it('verifies a static-JWKS provider without any network access', async () => {
    await withProviders();
    const result = await fed.exchange(
      await ghToken(offline, offlineIssuer),
      rolesOf([deployer(offlineIssuer)]),
    );
    expect(result).toMatchObject({
      role: 'deployer',
      provider: 'offline',
      subject: expect.stringMatching(/^oidc:https:\/\/ci\.offline\.example#repo:acme\/api/),
    });
    expect(fetched).toEqual([]);
  });

  it('matches trust policies naming the provider by id', async () => {
    await withProviders();
    const result = await fed.exchange(await ghToken(offline, offlineIssuer), rolesOf([deployer('offline')]));
    expect(result.role).toBe('deployer');
    expect(
      await reason(fed.exchange(await ghToken(offline, offlineIssuer), rolesOf([deployer('local')]))),
    ).toBe('no-role');
  });

  it('accepts any of the provider audiences, and an aud array containing one', async () => {
    await withProviders();
    const roles = rolesOf([deployer(issuer)]);
    await expect(
      fed.exchange(await ghToken(live, issuer, { aud: 'berth-alt' }), roles),
    ).resolves.toBeTruthy();
    await expect(
      fed.exchange(await ghToken(live, issuer, { aud: ['sts', 'berth'] }), roles),
    ).resolves.toBeTruthy();
  });

  it('rejects a token for another audience', async () => {
    await withProviders();
    const e = await failure(
      fed.exchange(await ghToken(live, issuer, { aud: 'sts.amazonaws.com' }), rolesOf([deployer(issuer)])),
    );
    expect(e.reason).toBe('invalid-token');
    expect(e.message).toMatch(/audience/);
  });

  it('rejects an expired token, and one not yet valid', async () => {
    await withProviders();
    const roles = rolesOf([deployer(issuer)]);
    const iat = Math.floor(T0 / 1000);
    const expired = await failure(
      fed.exchange(await ghToken(live, issuer, { iat: iat - 600, exp: iat - 60 }), roles),
    );
    expect(expired.reason).toBe('invalid-token');
    expect(expired.message).toBe('the id token has expired');
    const token = await ghToken(live, issuer);
    clock.t = T0 + 301_000 + 5_000;
    expect(await reason(fed.exchange(token, roles))).toBe('invalid-token');
    clock.t = T0;
    expect(await reason(fed.exchange(await ghToken(live, issuer, { nbf: iat + 120 }), roles))).toBe(
      'invalid-token',
    );
  });

  it('rejects an untrusted issuer before fetching anything', async () => {
    await withProviders();
    const e = await failure(
      fed.exchange(await ghToken(stranger, 'https://token.evil.example'), rolesOf([deployer(issuer)])),
    );
    expect(e.reason).toBe('untrusted-issuer');
    expect(e.message).toBe('issuer "https://token.evil.example" is not a trusted OIDC provider');
    // Issuers are compared exactly: a trailing slash is another issuer.
    expect(await reason(fed.exchange(await ghToken(live, `${issuer}/`), rolesOf([deployer(issuer)])))).toBe(
      'untrusted-issuer',
    );
    expect(fetched).toEqual([]);
  });

  it('rejects a token signed by a key the issuer does not publish', async () => {
    await withProviders();
    const roles = rolesOf([deployer(issuer), deployer(offlineIssuer)]);
    // A known kid with another key behind it.
    const impostor = { ...stranger, kid: live.kid };
    const forged = await failure(fed.exchange(await ghToken(impostor, issuer), rolesOf([deployer(issuer)])));
    expect(forged).toMatchObject({
      reason: 'invalid-token',
      message: "the id token's signature does not verify",
    });
    // An unknown kid: against discovered keys, and against a static JWKS.
    const unknown = await failure(fed.exchange(await ghToken(stranger, issuer), roles));
    expect(unknown).toMatchObject({
      reason: 'invalid-token',
      message: 'the id token is signed with a key the issuer does not publish',
    });
    expect(await reason(fed.exchange(await ghToken(stranger, offlineIssuer), roles))).toBe('invalid-token');
    // The offline provider's key does not vouch for the live issuer's tokens.
    expect(await reason(fed.exchange(await ghToken({ ...offline, kid: live.kid }, issuer), roles))).toBe(
      'invalid-token',
    );
  });

  it('picks up a rotated issuer key', async () => {
    await withProviders();
    const roles = rolesOf([deployer(issuer)]);
    await fed.exchange(await ghToken(live, issuer), roles);
    const next = await signingKey('live-2', 'RS256');
    published = [live.jwk, next.jwk];
    clock.t += 31_000;
    const iat = Math.floor(clock.t / 1000);
    await expect(
      fed.exchange(await ghToken(next, issuer, { iat, exp: iat + 300 }), roles),
    ).resolves.toMatchObject({
      role: 'deployer',
    });
  });

  it('reports an issuer it cannot reach', async () => {
    await withProviders();
    up = false;
    const e = await failure(fed.exchange(await ghToken(live, issuer), rolesOf([deployer(issuer)])));
    expect(e.reason).toBe('issuer-unreachable');
    expect(e.message).toBe(`could not get the signing keys of issuer "${issuer}"`);
    up = true;
    await expect(
      fed.exchange(await ghToken(live, issuer), rolesOf([deployer(issuer)])),
    ).resolves.toBeTruthy();
  });

  it('reads at most 1 MiB of JWKS, and tells the operator why an issuer failed', async () => {
    const warnings: Record<string, unknown>[] = [];
    const log = { warn: (obj: Record<string, unknown>) => warnings.push(obj) } as unknown as Logger;
    fed = newFederation({ log });
    await withProviders();
    jwksPadding = 1024 * 1024;
    const e = await failure(fed.exchange(await ghToken(live, issuer), rolesOf([deployer(issuer)])));
    expect(e.message).toBe(`could not get the signing keys of issuer "${issuer}"`);
    expect(warnings).toEqual([
      {
        url: `${issuer}/jwks`,
        document: 'jwks',
        err: `GET ${issuer}/jwks: the response is larger than 1 MiB, the most berth reads here`,
      },
    ]);
    // Just under the limit is fine.
    jwksPadding = 1024 * 1024 - 1024;
    clock.t += 31_000;
    await expect(
      fed.exchange(await ghToken(live, issuer), rolesOf([deployer(issuer)])),
    ).resolves.toBeTruthy();
  });

  it('refuses at fetch time an issuer whose host is no longer allowed', async () => {
    await withProviders();
    const strict = newFederation({ outbound: recordingOutbound([]) });
    const e = await failure(strict.exchange(await ghToken(live, issuer), rolesOf([deployer(issuer)])));
    expect(e.reason).toBe('issuer-unreachable');
    expect(fetched).toEqual([`${issuer}/.well-known/openid-configuration`]);
    expect(hits.discovery).toBe(0);
  });

  it('rejects malformed tokens', async () => {
    await withProviders();
    const roles = rolesOf([deployer(issuer)]);
    const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
    const head = b64({ alg: 'ES256', kid: live.kid });
    for (const token of [
      '',
      'abc',
      'a.b',
      `${head}.%%%.sig`,
      `${head}.${Buffer.from('not json').toString('base64url')}.sig`,
      `${head}.${b64(['iss'])}.sig`,
      `${head}.${b64({ sub: 'x' })}.sig`,
      `${head}.${b64({ iss: 42 })}.sig`,
      'x'.repeat(70_000),
      42 as unknown as string,
    ])
      expect(await reason(fed.exchange(token, roles))).toBe('malformed');
    // Well-formed but unsigned ('none') under a trusted issuer: read, then refused.
    const none = `${b64({ alg: 'none' })}.${b64({ iss: issuer, sub: 's', aud: 'berth' })}.c2ln`;
    expect(await reason(fed.exchange(none, roles))).toBe('invalid-token');
  });

  it('refuses a token with more claims than the provider allows', async () => {
    await fed.addProvider({ id: 'tight', issuer, audiences: ['berth'], claimsLimit: 10 });
    const roles = rolesOf([deployer(issuer)]);
    await expect(fed.exchange(await ghToken(live, issuer), roles)).resolves.toBeTruthy();
    const many = Object.fromEntries(Array.from({ length: 5 }, (_, i) => [`c${i}`, 'x']));
    const e = await failure(fed.exchange(await ghToken(live, issuer, many), roles));
    expect(e).toMatchObject({
      reason: 'invalid-token',
      message: expect.stringMatching(/claims, more than the 10/),
    });
  });

  it('says no-role when no trust policy matches, without revealing conditions', async () => {
    await withProviders();
    const token = await ghToken(live, issuer, {
      ref: 'refs/heads/dev',
      sub: 'repo:acme/api:ref:refs/heads/dev',
    });
    const e = await failure(
      fed.exchange(token, rolesOf([deployer(issuer), unrelated(issuer), deployer(offlineIssuer)])),
    );
    expect(e.reason).toBe('no-role');
    expect(e.message).toBe(
      `no role trusts this token (issuer "${issuer}", subject "repo:acme/api:ref:refs/heads/dev")`,
    );
    expect(e.message).not.toMatch(/globex|production|refs\/heads\/main|other-team|deployer/);
    expect(await reason(fed.exchange(token, rolesOf([])))).toBe('no-role');
  });

  it('says ambiguous-role with the candidate names, and the role parameter picks one', async () => {
    await withProviders();
    const roles = rolesOf([orgWide(issuer), unrelated(issuer), deployer(issuer)]);
    const token = await ghToken(live, issuer);
    const e = await failure(fed.exchange(token, roles));
    expect(e.reason).toBe('ambiguous-role');
    expect(e.roles).toEqual(['deployer', 'org-reader']);
    expect(e.message).toBe(
      '2 roles trust this token (deployer, org-reader); choose one with the role parameter',
    );
    expect(e.message).not.toMatch(/acme|production|other-team/);

    const picked = await fed.exchange(token, { ...roles, role: 'org-reader' });
    expect(picked).toMatchObject({ role: 'org-reader', sessionSeconds: 900 });
    expect((await fed.exchange(token, { ...roles, role: 'deployer' })).role).toBe('deployer');
  });

  it('with a role parameter, evaluates that role only', async () => {
    await withProviders();
    let listed = false;
    const roles = {
      ...rolesOf([deployer(issuer), unrelated(issuer)]),
      listRoles: async () => {
        listed = true;
        return [];
      },
    };
    const token = await ghToken(live, issuer);
    expect((await fed.exchange(token, { ...roles, role: 'deployer' })).role).toBe('deployer');
    const refused = await failure(fed.exchange(token, { ...roles, role: 'other-team' }));
    expect(refused).toMatchObject({
      reason: 'no-role',
      message: 'role "other-team" does not trust this token',
    });
    expect(refused.message).not.toMatch(/globex/);
    expect(await reason(fed.exchange(token, { ...roles, role: 'nobody' }))).toBe('role-not-found');
    expect(listed).toBe(false);
  });

  it('skips roles without a trust policy and warns about invalid ones', async () => {
    await withProviders();
    const warnings: unknown[] = [];
    const log = { warn: (obj: unknown) => warnings.push(obj) } as unknown as Logger;
    fed = newFederation({ log });
    const noCondition = {
      Version: '2012-10-17',
      Statement: [
        { Effect: 'Allow', Principal: { Federated: issuer }, Action: 'sts:AssumeRoleWithWebIdentity' },
      ],
    };
    const roles = rolesOf([
      { name: 'plain', trustPolicy: undefined, maxSessionSeconds: 3600 },
      { name: 'open', trustPolicy: noCondition, maxSessionSeconds: 3600 },
      deployer(issuer),
    ]);
    expect((await fed.exchange(await ghToken(live, issuer), roles)).role).toBe('deployer');
    expect(warnings).toEqual([expect.objectContaining({ role: 'open' })]);
    expect(await reason(fed.exchange(await ghToken(live, issuer), { ...roles, role: 'open' }))).toBe(
      'no-role',
    );
  });

  it('keeps providers across instances over the same storage', async () => {
    await withProviders();
    const restarted = newFederation();
    expect((await restarted.listProviders()).map((p) => p.id)).toEqual(['local', 'offline']);
    await expect(
      restarted.exchange(await ghToken(live, issuer), rolesOf([deployer(issuer)])),
    ).resolves.toMatchObject({
      role: 'deployer',
    });
    await expect(
      restarted.exchange(await ghToken(offline, offlineIssuer), rolesOf([deployer(offlineIssuer)])),
    ).resolves.toMatchObject({ provider: 'offline' });
    // A deletion made through one instance is seen by the other.
    await restarted.deleteProvider('offline');
    expect(
      await reason(fed.exchange(await ghToken(offline, offlineIssuer), rolesOf([deployer(offlineIssuer)]))),
    ).toBe('untrusted-issuer');
  });
});
