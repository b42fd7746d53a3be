import { createPublicKey, type JsonWebKey } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  type CryptoKey,
  calculateJwkThumbprint,
  createLocalJWKSet,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  type JWK,
  jwtVerify,
  SignJWT,
} from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMemoryDriver } from '../storage/index.ts';
import {
  createJwksCache,
  createTokenService,
  type Jwk,
  type JwkSet,
  type SigningAlgorithm,
  TokenError,
  type TokenErrorReason,
  type TokenServiceOptions,
  verifyIdToken,
} from './tokens.ts';

const T0 = Date.parse('2025-06-01T00:00:00Z');
const issuer = 'https://auth.berth.test';
const service = 'registry.berth.test';
const access = [{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }];

function setup(over: Partial<TokenServiceOptions> = {}) {
  const clock = { t: T0 };
  const storage = over.storage ?? createMemoryDriver();
  const svc = createTokenService({ storage, issuer, service, now: () => clock.t, ...over });
  return { svc, storage, clock };
}

async function rejection(p: Promise<unknown>): Promise<TokenErrorReason> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TokenError);
  return (err as TokenError).reason;
}

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

function payloadOf(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString());
}

/** Claims as the service would write them, for tokens forged by hand. */
function forgedClaims(over: Record<string, unknown> = {}) {
  const now = Math.floor(T0 / 1000);
  return {
    iss: issuer,
    sub: 'mallory',
    aud: service,
    iat: now,
    nbf: now,
    exp: now + 300,
    jti: 'x',
    access,
    ...over,
  };
}

describe('access tokens', () => {
  it('issues a distribution-style JWT that verifies', async () => {
    const { svc } = setup();
    const issued = await svc.issue({ subject: 'alice', access, extra: { groups: ['dev'] } });
    expect(issued.expiresIn).toBe(300);
    expect(issued.issuedAt).toBe('2025-06-01T00:00:00.000Z');
    const header = decodeProtectedHeader(issued.token);
    expect(header).toMatchObject({ alg: 'ES256', typ: 'JWT' });
    const claims = await svc.verify(issued.token);
    expect(claims).toMatchObject({
      iss: issuer,
      sub: 'alice',
      aud: service,
      iat: T0 / 1000,
      nbf: T0 / 1000,
      exp: T0 / 1000 + 300,
      access,
      groups: ['dev'],
    });
    expect(claims.jti).toMatch(/^[0-9a-f]{32}$/);
    const { keys } = await svc.jwks();
    expect(keys.map((k) => k.kid)).toEqual([header.kid]);
  });

  it('gives every token its own jti', async () => {
    const { svc } = setup();
    const a = payloadOf((await svc.issue({ subject: 'a', access })).token);
    const b = payloadOf((await svc.issue({ subject: 'a', access })).token);
    expect(a['jti']).not.toBe(b['jti']);
  });

  it('copies only type, name and actions into access', async () => {
    const { svc } = setup();
    const grant = { type: 'repository', name: 'a', actions: ['pull'], secret: 'no' };
    expect(payloadOf((await svc.issue({ subject: 'a', access: [grant] })).token)['access']).toEqual([
      { type: 'repository', name: 'a', actions: ['pull'] },
    ]);
  });

  it.each(['ES256', 'RS256', 'EdDSA'] as SigningAlgorithm[])(
    'signs with %s and publishes a JWKS a third party can verify with',
    async (algorithm) => {
      const { svc } = setup({ algorithm });
      const { token } = await svc.issue({ subject: 'alice', access });
      const jwks = await svc.jwks();
      expect(jwks.keys).toHaveLength(1);
      const key = jwks.keys[0]!;
      expect(key).toMatchObject({ alg: algorithm, use: 'sig' });
      for (const priv of ['d', 'p', 'q', 'dp', 'dq', 'qi']) expect(key).not.toHaveProperty(priv);
      const { kid, alg, use, ...bare } = key;
      expect(kid).toBe(await calculateJwkThumbprint(bare as JWK));
      const { payload } = await jwtVerify(token, createLocalJWKSet(jwks as { keys: JWK[] }), {
        issuer,
        audience: service,
        currentDate: new Date(T0),
      });
      expect(payload.sub).toBe('alice');
    },
  );

  it('honours a ttl within bounds and refuses others', async () => {
    const { svc } = setup();
    const { token, expiresIn } = await svc.issue({ subject: 'a', access, ttlSeconds: 3600 });
    expect(expiresIn).toBe(3600);
    expect(payloadOf(token)['exp']).toBe(T0 / 1000 + 3600);
    await expect(svc.issue({ subject: 'a', access, ttlSeconds: 59 })).rejects.toThrow(RangeError);
    await expect(svc.issue({ subject: 'a', access, ttlSeconds: 3601 })).rejects.toThrow(RangeError);
  });

  it('does not let extra claims replace its own', async () => {
    const { svc } = setup();
    for (const claim of ['iss', 'aud', 'exp', 'access', 'token_use'])
      await expect(svc.issue({ subject: 'a', access, extra: { [claim]: 'x' } })).rejects.toThrow(TypeError);
  });

  it('validates its options', () => {
    const storage = createMemoryDriver();
    const base = { storage, issuer, service };
    expect(() => createTokenService({ ...base, ttlSeconds: 30 })).toThrow(RangeError);
    expect(() => createTokenService({ ...base, overlapSeconds: 600 })).toThrow(RangeError);
    expect(() => createTokenService({ ...base, algorithm: 'HS256' as SigningAlgorithm })).toThrow(RangeError);
  });
});

describe('access token rejection', () => {
  it('rejects an expired token, with 5 s of leeway', async () => {
    const { svc, clock } = setup();
    const { token } = await svc.issue({ subject: 'a', access });
    clock.t = T0 + 304_000;
    await expect(svc.verify(token)).resolves.toBeTruthy();
    clock.t = T0 + 305_000;
    expect(await rejection(svc.verify(token))).toBe('expired');
  });

  it('rejects a token not yet valid, with 5 s of leeway', async () => {
    const { svc, storage } = setup();
    const early = setup({ storage });
    early.clock.t = T0 + 6000;
    const { token } = await early.svc.issue({ subject: 'a', access });
    expect(await rejection(svc.verify(token))).toBe('not-yet-valid');
    early.clock.t = T0 + 5000;
    const { token: slight } = await early.svc.issue({ subject: 'a', access });
    await expect(svc.verify(slight)).resolves.toBeTruthy();
  });

  it('rejects the wrong audience', async () => {
    const { svc } = setup();
    const { token } = await svc.issue({ subject: 'a', access });
    expect(await rejection(svc.verify(token, { audience: 'other-registry' }))).toBe('wrong-audience');
    await expect(svc.verify(token, { audience: service })).resolves.toBeTruthy();
  });

  it('rejects the wrong issuer', async () => {
    const { svc, storage } = setup();
    const other = setup({ storage, issuer: 'https://elsewhere.test' });
    const { token } = await other.svc.issue({ subject: 'a', access });
    expect(await rejection(svc.verify(token))).toBe('wrong-issuer');
  });

  it('rejects alg none', async () => {
    const { svc } = setup();
    const { kid } = decodeProtectedHeader((await svc.issue({ subject: 'a', access })).token);
    const none = `${b64({ alg: 'none', typ: 'JWT', kid })}.${b64(forgedClaims())}.`;
    expect(await rejection(svc.verify(none))).toBe('bad-algorithm');
    const noneSigned = `${b64({ alg: 'none', typ: 'JWT', kid })}.${b64(forgedClaims())}.${b64('sig')}`;
    expect(await rejection(svc.verify(noneSigned))).toBe('bad-algorithm');
  });

  it.each(['ES256', 'RS256', 'EdDSA'] as SigningAlgorithm[])(
    'rejects HS256 signed with the %s public key as the secret',
    async (algorithm) => {
      const { svc } = setup({ algorithm });
      await svc.issue({ subject: 'a', access });
      const jwk = (await svc.jwks()).keys[0]!;
      const pem = createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' }).export({
        type: 'spki',
        format: 'pem',
      });
      const der = createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' }).export({
        type: 'spki',
        format: 'der',
      });
      for (const secret of [Buffer.from(pem), der, Buffer.from(JSON.stringify(jwk))]) {
        const forged = await new SignJWT(forgedClaims())
          .setProtectedHeader({ alg: 'HS256', typ: 'JWT', kid: jwk.kid! })
          .sign(new Uint8Array(secret));
        expect(await rejection(svc.verify(forged))).toBe('bad-algorithm');
      }
    },
  );

  it("rejects a header alg other than the key's", async () => {
    const { svc } = setup({ algorithm: 'ES256' });
    await svc.issue({ subject: 'a', access });
    const kid = (await svc.jwks()).keys[0]!.kid!;
    const rsa = await generateKeyPair('RS256');
    const forged = await new SignJWT(forgedClaims())
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid })
      .sign(rsa.privateKey);
    expect(await rejection(svc.verify(forged))).toBe('bad-algorithm');
  });

  it('rejects a signature by another key under our kid', async () => {
    const { svc } = setup();
    await svc.issue({ subject: 'a', access });
    const kid = (await svc.jwks()).keys[0]!.kid!;
    const other = await generateKeyPair('ES256');
    const forged = await new SignJWT(forgedClaims())
      .setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid })
      .sign(other.privateKey);
    expect(await rejection(svc.verify(forged))).toBe('bad-signature');
  });

  it('rejects an altered payload', async () => {
    const { svc } = setup();
    const [h, , s] = (await svc.issue({ subject: 'alice', access })).token.split('.');
    const altered = `${h}.${b64(forgedClaims({ sub: 'alice', access: [{ type: 'registry', name: 'catalog', actions: ['*'] }] }))}.${s}`;
    expect(await rejection(svc.verify(altered))).toBe('bad-signature');
  });

  it('rejects an unknown or missing kid', async () => {
    const { svc } = setup();
    await svc.issue({ subject: 'a', access });
    const key = await generateKeyPair('ES256');
    const unknown = await new SignJWT(forgedClaims())
      .setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: 'no-such-key' })
      .sign(key.privateKey);
    expect(await rejection(svc.verify(unknown))).toBe('unknown-kid');
    const kidless = await new SignJWT(forgedClaims())
      .setProtectedHeader({ alg: 'ES256', typ: 'JWT' })
      .sign(key.privateKey);
    expect(await rejection(svc.verify(kidless))).toBe('unknown-kid');
  });

  it.each([
    'garbage',
    'a.b.c',
    `${b64({ alg: 'ES256' })}.e30`,
    `${b64({ alg: 'ES256' })}.e30.sig.extra.part`,
    `${b64({ alg: 'ES256', kid: 'k' })}.${'A'.repeat(70_000)}.sig`,
  ])('rejects malformed input %#', async (token) => {
    const { svc } = setup();
    expect(await rejection(svc.verify(token))).toBe('malformed');
  });

  it('rejects a refresh token offered as an access token', async () => {
    const { svc } = setup();
    const { token } = await svc.issueRefresh({ subject: 'alice', clientId: 'docker' });
    expect(await rejection(svc.verify(token))).toBe('wrong-type');
    // Even when the audience check alone could not tell them apart.
    const same = setup({ service: issuer });
    const { token: t2 } = await same.svc.issueRefresh({ subject: 'alice', clientId: 'docker' });
    expect(await rejection(same.svc.verify(t2))).toBe('wrong-type');
  });
});

describe('signing keys', () => {
  it('persists private JWKs so a restarted service verifies and keeps signing', async () => {
    const { svc, storage, clock } = setup();
    const { token } = await svc.issue({ subject: 'a', access });
    const { kid } = decodeProtectedHeader(token);
    expect(await storage.list('/auth/signing-keys')).toEqual([`/auth/signing-keys/key-${kid}.json`]);
    const doc = JSON.parse(
      new TextDecoder().decode(await storage.getContent(`/auth/signing-keys/key-${kid}.json`)),
    );
    expect(doc).toMatchObject({ kid, alg: 'ES256', createdAt: '2025-06-01T00:00:00.000Z' });
    expect(doc.jwk.d).toEqual(expect.any(String));

    const restarted = createTokenService({ storage, issuer, service, now: () => clock.t });
    await expect(restarted.verify(token)).resolves.toMatchObject({ sub: 'a' });
    expect(decodeProtectedHeader((await restarted.issue({ subject: 'b', access })).token).kid).toBe(kid);
  });

  it.each(['ES256', 'RS256', 'EdDSA'] as SigningAlgorithm[])('reloads a stored %s key', async (algorithm) => {
    const { svc, storage, clock } = setup({ algorithm });
    const { token } = await svc.issue({ subject: 'a', access });
    const restarted = createTokenService({ storage, issuer, service, algorithm, now: () => clock.t });
    await expect(restarted.verify(token)).resolves.toMatchObject({ sub: 'a' });
    const again = await restarted.issue({ subject: 'b', access });
    await expect(svc.verify(again.token)).resolves.toMatchObject({ sub: 'b' });
  });

  it('refuses a stored key whose kid is not its thumbprint', async () => {
    const { svc, storage, clock } = setup();
    await svc.issue({ subject: 'a', access });
    const [path] = await storage.list('/auth/signing-keys');
    const doc = JSON.parse(new TextDecoder().decode(await storage.getContent(path!)));
    const other = await exportJWK((await generateKeyPair('ES256', { extractable: true })).privateKey);
    await storage.putContent(path!, new TextEncoder().encode(JSON.stringify({ ...doc, jwk: other })));
    const restarted = createTokenService({ storage, issuer, service, now: () => clock.t });
    await expect(restarted.issue({ subject: 'a', access })).rejects.toThrow(/kid does not match/);
  });

  it('keeps the previous key verifiable through the overlap after rotate()', async () => {
    const { svc, clock } = setup({ overlapSeconds: 7200 });
    const old = await svc.issue({ subject: 'a', access, ttlSeconds: 3600 });
    const oldKid = decodeProtectedHeader(old.token).kid;
    clock.t = T0 + 60_000;
    const { kid } = await svc.rotate();
    expect(kid).not.toBe(oldKid);
    const fresh = await svc.issue({ subject: 'a', access });
    expect(decodeProtectedHeader(fresh.token).kid).toBe(kid);
    expect((await svc.jwks()).keys.map((k) => k.kid)).toEqual([kid, oldKid]);
    await expect(svc.verify(old.token)).resolves.toBeTruthy();
    clock.t = T0 + 3_599_000;
    await expect(svc.verify(old.token)).resolves.toBeTruthy();

    // The overlap runs from the rotation, not from the old key's creation.
    clock.t = T0 + 60_000 + 7_199_000;
    expect((await svc.jwks()).keys.map((k) => k.kid)).toEqual([kid, oldKid]);
    clock.t = T0 + 60_000 + 7_200_000;
    expect((await svc.jwks()).keys.map((k) => k.kid)).toEqual([kid]);
    // Past the overlap the old key is gone, whatever the token says.
    expect(await rejection(svc.verify(old.token))).toBe('unknown-kid');
  });

  it('rotates on issue once the key is older than rotateAfterSeconds', async () => {
    const { svc, clock, storage } = setup({ rotateAfterSeconds: 86400 });
    const first = decodeProtectedHeader((await svc.issue({ subject: 'a', access })).token).kid;
    clock.t = T0 + 86_399_000;
    expect(decodeProtectedHeader((await svc.issue({ subject: 'a', access })).token).kid).toBe(first);
    clock.t = T0 + 86_400_000;
    const results = await Promise.all(Array.from({ length: 5 }, () => svc.issue({ subject: 'a', access })));
    const kids = new Set(results.map((r) => decodeProtectedHeader(r.token).kid));
    expect(kids.size).toBe(1);
    expect(kids.has(first)).toBe(false);
    expect(await storage.list('/auth/signing-keys')).toHaveLength(2);
  });

  it('rotates to a new algorithm when the configured one changes', async () => {
    const { svc, storage, clock } = setup({ algorithm: 'ES256' });
    const old = await svc.issue({ subject: 'a', access });
    const rsa = createTokenService({ storage, issuer, service, algorithm: 'RS256', now: () => clock.t });
    const fresh = await rsa.issue({ subject: 'a', access });
    expect(decodeProtectedHeader(fresh.token).alg).toBe('RS256');
    await expect(rsa.verify(old.token)).resolves.toBeTruthy();
    expect((await rsa.jwks()).keys.map((k) => k.alg)).toEqual(['RS256', 'ES256']);
  });

  it('finds a key another instance created', async () => {
    const { svc, storage, clock } = setup();
    await svc.issue({ subject: 'a', access });
    const other = createTokenService({ storage, issuer, service, now: () => clock.t });
    clock.t += 10_000;
    await other.rotate();
    const { token } = await other.issue({ subject: 'b', access });
    await expect(svc.verify(token)).resolves.toMatchObject({ sub: 'b' });
  });

  it('deletes keys once nothing they signed can be accepted', async () => {
    const { svc, storage, clock } = setup({ refreshTtlSeconds: 86400 });
    await svc.issue({ subject: 'a', access });
    await svc.rotate();
    expect(await storage.list('/auth/signing-keys')).toHaveLength(2);
    clock.t = T0 + (86400 + 3600) * 1000 + 1000;
    await svc.rotate();
    expect(await storage.list('/auth/signing-keys')).toHaveLength(2);
  });
});

describe('refresh tokens', () => {
  it('round-trips with its own type', async () => {
    const { svc } = setup();
    const r = await svc.issueRefresh({ subject: 'alice', clientId: 'docker', extra: { ip: '10.0.0.1' } });
    expect(r.expiresIn).toBe(30 * 86400);
    expect(decodeProtectedHeader(r.token).typ).toBe('refresh+jwt');
    const claims = await svc.verifyRefresh(r.token);
    expect(claims).toMatchObject({
      sub: 'alice',
      client_id: 'docker',
      token_use: 'refresh',
      jti: r.jti,
      ip: '10.0.0.1',
    });
  });

  it('rejects an access token offered as a refresh token', async () => {
    const { svc } = setup();
    const { token } = await svc.issue({ subject: 'alice', access });
    expect(await rejection(svc.verifyRefresh(token))).toBe('wrong-type');
  });

  it('expires after the refresh ttl', async () => {
    const { svc, clock } = setup();
    const { token } = await svc.issueRefresh({ subject: 'alice', clientId: 'docker' });
    clock.t = T0 + 30 * 86400_000 - 1000;
    await expect(svc.verifyRefresh(token)).resolves.toBeTruthy();
    clock.t = T0 + 30 * 86400_000 + 5000;
    expect(await rejection(svc.verifyRefresh(token))).toBe('expired');
  });

  it('outlives the access overlap of the key that signed it', async () => {
    const { svc, clock } = setup();
    const { token } = await svc.issueRefresh({ subject: 'alice', clientId: 'docker' });
    await svc.rotate();
    clock.t = T0 + 20 * 86400_000;
    expect((await svc.jwks()).keys).toHaveLength(1);
    await expect(svc.verifyRefresh(token)).resolves.toBeTruthy();
  });

  it('rejects a revoked token, also after a restart', async () => {
    const { svc, storage, clock } = setup();
    const a = await svc.issueRefresh({ subject: 'alice', clientId: 'docker' });
    const b = await svc.issueRefresh({ subject: 'alice', clientId: 'docker' });
    await svc.revokeRefresh(a.jti);
    expect(await rejection(svc.verifyRefresh(a.token))).toBe('revoked');
    await expect(svc.verifyRefresh(b.token)).resolves.toBeTruthy();
    const restarted = createTokenService({ storage, issuer, service, now: () => clock.t });
    expect(await rejection(restarted.verifyRefresh(a.token))).toBe('revoked');
    await expect(svc.revokeRefresh('../../etc')).rejects.toThrow(TypeError);
  });

  it('rejects every earlier token of a subject after revokeAllForSubject', async () => {
    const { svc, clock } = setup();
    const old = await svc.issueRefresh({ subject: 'alice', clientId: 'docker' });
    const bob = await svc.issueRefresh({ subject: 'bob', clientId: 'docker' });
    clock.t += 400;
    await svc.revokeAllForSubject('alice');
    expect(await rejection(svc.verifyRefresh(old.token))).toBe('revoked');
    await expect(svc.verifyRefresh(bob.token)).resolves.toBeTruthy();
    clock.t += 1000;
    const fresh = await svc.issueRefresh({ subject: 'alice', clientId: 'docker' });
    await expect(svc.verifyRefresh(fresh.token)).resolves.toMatchObject({ sub: 'alice' });
  });
});

// --- OIDC id tokens ---

interface Idp {
  kid: string;
  alg: SigningAlgorithm;
  privateKey: CryptoKey;
  jwk: Jwk;
}

async function idpKey(alg: SigningAlgorithm, kid: string): Promise<Idp> {
  const { privateKey, publicKey } = await generateKeyPair(alg);
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } as Jwk;
  return { kid, alg, privateKey, jwk };
}

async function idToken(key: Idp, iss: string, over: Record<string, unknown> = {}, alg: string = key.alg) {
  const now = Math.floor(T0 / 1000);
  return new SignJWT({
    iss,
    sub: 'repo:org/app:ref:refs/heads/main',
    aud: 'berth',
    iat: now,
    exp: now + 300,
    ...over,
  })
    .setProtectedHeader({ alg, kid: key.kid, typ: 'JWT' })
    .sign(key.privateKey);
}

describe('verifyIdToken with a static JWKS', () => {
  const ciIssuer = 'https://token.actions.example';
  let keys: Idp[];
  let jwks: JwkSet;
  beforeAll(async () => {
    keys = await Promise.all([idpKey('RS256', 'r1'), idpKey('ES256', 'e1'), idpKey('EdDSA', 'o1')]);
    jwks = { keys: keys.map((k) => k.jwk) };
  });
  const opts = () => ({ issuer: ciIssuer, audience: 'berth', jwks, now: () => T0 });

  it('accepts RS256, ES256 and EdDSA and returns the claims', async () => {
    for (const k of keys) {
      const claims = await verifyIdToken(await idToken(k, ciIssuer, { repository: 'org/app' }), opts());
      expect(claims).toMatchObject({
        iss: ciIssuer,
        sub: 'repo:org/app:ref:refs/heads/main',
        repository: 'org/app',
      });
    }
  });

  it('rejects alg none and HMAC with the public key as secret', async () => {
    const none = `${b64({ alg: 'none', kid: 'r1' })}.${b64({ iss: ciIssuer, sub: 's', aud: 'berth', iat: T0 / 1000, exp: T0 / 1000 + 60 })}.`;
    expect(await rejection(verifyIdToken(none, opts()))).toBe('bad-algorithm');
    const pem = createPublicKey({ key: keys[0]!.jwk as JsonWebKey, format: 'jwk' }).export({
      type: 'spki',
      format: 'pem',
    });
    const hs = await new SignJWT({
      iss: ciIssuer,
      sub: 's',
      aud: 'berth',
      iat: T0 / 1000,
      exp: T0 / 1000 + 60,
    })
      .setProtectedHeader({ alg: 'HS256', kid: 'r1' })
      .sign(Buffer.from(pem));
    expect(await rejection(verifyIdToken(hs, opts()))).toBe('bad-algorithm');
  });

  it('rejects wrong issuer, audience, expiry, kid and signature', async () => {
    const [rsa] = keys as [Idp];
    expect(await rejection(verifyIdToken(await idToken(rsa, 'https://evil.example'), opts()))).toBe(
      'wrong-issuer',
    );
    expect(await rejection(verifyIdToken(await idToken(rsa, ciIssuer, { aud: 'other' }), opts()))).toBe(
      'wrong-audience',
    );
    expect(
      await rejection(verifyIdToken(await idToken(rsa, ciIssuer, { exp: T0 / 1000 - 10 }), opts())),
    ).toBe('expired');
    expect(
      await rejection(verifyIdToken(await idToken(rsa, ciIssuer, { nbf: T0 / 1000 + 60 }), opts())),
    ).toBe('not-yet-valid');
    const stranger = await idpKey('RS256', 'zz');
    expect(await rejection(verifyIdToken(await idToken(stranger, ciIssuer), opts()))).toBe('unknown-kid');
    const impostor = { ...stranger, kid: 'r1' };
    expect(await rejection(verifyIdToken(await idToken(impostor, ciIssuer), opts()))).toBe('bad-signature');
    expect(await rejection(verifyIdToken(await idToken(rsa, ciIssuer, { sub: undefined }), opts()))).toBe(
      'malformed',
    );
  });
});

describe('createJwksCache against a local issuer', () => {
  let server: Server;
  let iss: string;
  let published: Jwk[] = [];
  let discoveryIssuer: string | undefined;
  let up = true;
  const hits = { discovery: 0, jwks: 0 };

  beforeAll(async () => {
    server = createServer((req, res) => {
      if (!up) {
        res.writeHead(503).end();
        return;
      }
      if (req.url === '/.well-known/openid-configuration') {
        hits.discovery++;
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ issuer: discoveryIssuer ?? iss, jwks_uri: `${iss}/keys` }));
      } else if (req.url === '/keys') {
        hits.jwks++;
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ keys: published }));
      } else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    iss = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  /** A plain GET of JSON (the federation bounds these requests; here only the cache is under test). */
  const fetchJson = async (url: string) => {
    const res = await fetch(url);
    if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
    return res.json();
  };

  function reset() {
    hits.discovery = 0;
    hits.jwks = 0;
    discoveryIssuer = undefined;
    up = true;
  }

  it('discovers, caches, and refetches on an unknown kid at most every 30 s', async () => {
    reset();
    const k1 = await idpKey('RS256', 'k1');
    const k2 = await idpKey('ES256', 'k2');
    published = [k1.jwk];
    const clock = { t: T0 };
    const cache = createJwksCache({ fetchJson, ttlSeconds: 600, now: () => clock.t });
    const opts = { issuer: iss, audience: 'berth', jwks: cache, now: () => T0 };

    await expect(verifyIdToken(await idToken(k1, iss), opts)).resolves.toMatchObject({ iss });
    await verifyIdToken(await idToken(k1, iss), opts);
    expect(hits).toEqual({ discovery: 1, jwks: 1 });

    // The issuer rotates: the first token with the new kid triggers one refetch.
    published = [k1.jwk, k2.jwk];
    clock.t += 31_000;
    await expect(verifyIdToken(await idToken(k2, iss), opts)).resolves.toBeTruthy();
    expect(hits).toEqual({ discovery: 1, jwks: 2 });

    // Unknown kids within 30 s of a fetch do not reach the issuer.
    const k3 = await idpKey('RS256', 'k3');
    expect(await rejection(verifyIdToken(await idToken(k3, iss), opts))).toBe('unknown-kid');
    expect(await rejection(verifyIdToken(await idToken(k3, iss), opts))).toBe('unknown-kid');
    expect(hits.jwks).toBe(2);
    clock.t += 30_000;
    expect(await rejection(verifyIdToken(await idToken(k3, iss), opts))).toBe('unknown-kid');
    expect(hits.jwks).toBe(3);

    // Past the ttl the discovery document is read again.
    clock.t += 600_000;
    await verifyIdToken(await idToken(k1, iss), opts);
    expect(hits).toEqual({ discovery: 2, jwks: 4 });
  });

  it('keeps using known keys while the issuer is down', async () => {
    reset();
    const k1 = await idpKey('EdDSA', 'k1');
    published = [k1.jwk];
    const clock = { t: T0 };
    const cache = createJwksCache({ fetchJson, ttlSeconds: 60, now: () => clock.t });
    const opts = { issuer: iss, audience: 'berth', jwks: cache, now: () => T0 };
    await verifyIdToken(await idToken(k1, iss), opts);
    up = false;
    clock.t += 120_000;
    await expect(verifyIdToken(await idToken(k1, iss), opts)).resolves.toBeTruthy();
  });

  it('refuses a discovery document naming another issuer', async () => {
    reset();
    const k1 = await idpKey('ES256', 'k1');
    published = [k1.jwk];
    discoveryIssuer = 'https://evil.example';
    const cache = createJwksCache({ fetchJson, ttlSeconds: 60 });
    await expect(
      verifyIdToken(await idToken(k1, iss), { issuer: iss, audience: 'berth', jwks: cache, now: () => T0 }),
    ).rejects.toThrow(/another issuer/);
  });

  it('reads the discovery document, then the JWKS it names, through fetchJson', async () => {
    reset();
    const k1 = await idpKey('ES256', 'k1');
    published = [k1.jwk];
    const seen: string[] = [];
    const cache = createJwksCache({
      ttlSeconds: 60,
      fetchJson: (url, document) => {
        seen.push(`${document} ${url}`);
        return fetchJson(url);
      },
    });
    await verifyIdToken(await idToken(k1, iss), {
      issuer: iss,
      audience: 'berth',
      jwks: cache,
      now: () => T0,
    });
    expect(seen).toEqual([`discovery ${iss}/.well-known/openid-configuration`, `jwks ${iss}/keys`]);
  });
});
