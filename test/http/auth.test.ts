// Token auth and policies as clients see them on /v2 and /token: challenges, grants, denials
// with reasons, tag immutability, Basic on /v2, OAuth2 POST, throttling, and the attacks a
// registry token must withstand.
import { createHmac, randomBytes } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { beforeEach, describe, expect, it } from 'vitest';
import { errorCode, type Harness, imageManifest, makeHarness, sha256 } from './harness.ts';

const doc = (...Statement: Record<string, unknown>[]) => ({ Version: '2012-10-17', Statement });
const basic = (user: string, password: string) =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
const admin = basic('admin', 'admin-password');

let h: Harness;

async function token(authorization: string | undefined, ...scopes: string[]): Promise<string> {
  const q = new URLSearchParams({ service: 'berth' });
  for (const s of scopes) q.append('scope', s);
  const res = await h.request(`/token?${q}`, {
    headers: authorization ? { Authorization: authorization } : {},
  });
  expect(res.status).toBe(200);
  const body = (await res.json()) as {
    token: string;
    access_token: string;
    expires_in: number;
    issued_at: string;
  };
  expect(body.access_token).toBe(body.token);
  expect(body.expires_in).toBeGreaterThanOrEqual(60);
  return body.token;
}

const bearer = (t: string) => ({ Authorization: `Bearer ${t}` });

async function pushImage(headers: Record<string, string>, repo: string, tag: string, payload = 'layer') {
  const layer = Buffer.from(`${payload}-${randomBytes(4).toString('hex')}`);
  const config = Buffer.from('{}');
  for (const b of [layer, config]) {
    const r = await h.request(`/v2/${repo}/blobs/uploads/?digest=${sha256(b)}`, {
      method: 'POST',
      headers,
      body: b,
    });
    if (r.status !== 201) return r;
  }
  const manifest = imageManifest({ digest: sha256(config), size: config.length }, [
    { digest: sha256(layer), size: layer.length },
  ]);
  return h.request(`/v2/${repo}/manifests/${tag}`, {
    method: 'PUT',
    headers: { ...headers, 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
    body: JSON.stringify(manifest),
  });
}

beforeEach(async () => {
  h = makeHarness({ auth: true });
  await h.auth.start();
  await h.auth.identities.createUser({ name: 'alice', password: 'alice-password' });
  await h.auth.policies.putPolicy(
    'pull-team',
    doc({ Effect: 'Allow', Action: ['registry:Pull', 'registry:ListTags'], Resource: 'repository/team/*' }),
  );
  await h.auth.policies.attachPolicy('pull-team', { type: 'user', name: 'alice' });
});

describe('challenges', () => {
  it('asks for credentials on /v2/ with the realm and service, and names the scope elsewhere', async () => {
    const base = await h.request('/v2/');
    expect(base.status).toBe(401);
    expect(base.headers.get('WWW-Authenticate')).toBe(
      'Bearer realm="https://localhost/token",service="berth"',
    );
    expect(base.headers.get('Docker-Distribution-API-Version')).toBe('registry/2.0');
    expect(await errorCode(base)).toBe('UNAUTHORIZED');
    const push = await h.request('/v2/team/app/blobs/uploads/', { method: 'POST' });
    expect(push.status).toBe(401);
    expect(push.headers.get('WWW-Authenticate')).toBe(
      'Bearer realm="https://localhost/token",service="berth",scope="repository:team/app:pull,push"',
    );
    const catalog = await h.request('/v2/_catalog');
    expect(catalog.headers.get('WWW-Authenticate')).toContain('scope="registry:catalog:*"');
  });

  it('answers a valid token that lacks the scope with insufficient_scope', async () => {
    const t = await token(admin, 'repository:a/x:pull');
    const res = await h.request('/v2/b/y/tags/list', { headers: bearer(t) });
    expect(res.status).toBe(401);
    expect(res.headers.get('WWW-Authenticate')).toContain('error="insufficient_scope"');
    expect(res.headers.get('WWW-Authenticate')).toContain('scope="repository:b/y:pull"');
  });
});

describe('grants and denials', () => {
  it('lets the admin push and pull with a token', async () => {
    const t = await token(admin, 'repository:team/app:pull,push');
    expect((await pushImage(bearer(t), 'team/app', 'v1')).status).toBe(201);
    expect((await h.request('/v2/team/app/manifests/v1', { headers: bearer(t) })).status).toBe(200);
  });

  it('grants alice only pull, and a push with her token is denied with a reason', async () => {
    const adminToken = await token(admin, 'repository:team/app:pull,push');
    expect((await pushImage(bearer(adminToken), 'team/app', 'v1')).status).toBe(201);
    const t = await token(basic('alice', 'alice-password'), 'repository:team/app:pull,push');
    expect((await h.request('/v2/team/app/manifests/v1', { headers: bearer(t) })).status).toBe(200);
    expect((await h.request('/v2/team/app/tags/list', { headers: bearer(t) })).status).toBe(200);
    const push = await h.request('/v2/team/app/blobs/uploads/', { method: 'POST', headers: bearer(t) });
    expect(push.status).toBe(403);
    const body = (await push.json()) as { errors: { code: string; message: string; detail: unknown }[] };
    expect(body.errors[0]).toEqual({
      code: 'DENIED',
      message: 'push on team/app denied for user alice',
      detail: { reason: 'no_allow' },
    });
    const denials = await h.auth.audit.query({ type: 'decision', decision: 'Deny' });
    expect(denials.entries.some((e) => e.actor === 'user/alice' && e.action === 'registry:Push')).toBe(true);
  });

  it('keeps a prefix grant inside its prefix', async () => {
    const t = await token(
      basic('alice', 'alice-password'),
      'repository:team-b/app:pull',
      'repository:team/../x:pull',
    );
    for (const repo of ['team-b/app']) {
      const res = await h.request(`/v2/${repo}/manifests/v1`, { headers: bearer(t) });
      expect(res.status).toBe(403);
    }
  });

  it('serves anonymous pulls only where a repository policy makes a repository public', async () => {
    await h.auth.policies.putRepositoryPolicy(
      'public/*',
      doc({ Effect: 'Allow', Principal: '*', Action: 'registry:Pull' }),
    );
    const adminToken = await token(
      admin,
      'repository:public/app:pull,push',
      'repository:private/app:pull,push',
    );
    expect((await pushImage(bearer(adminToken), 'public/app', 'v1')).status).toBe(201);
    expect((await pushImage(bearer(adminToken), 'private/app', 'v1')).status).toBe(201);
    // Without any credentials, and with an anonymous token.
    expect((await h.request('/v2/public/app/manifests/v1')).status).toBe(200);
    const anon = await token(undefined, 'repository:public/app:pull', 'repository:private/app:pull');
    expect((await h.request('/v2/public/app/manifests/v1', { headers: bearer(anon) })).status).toBe(200);
    const priv = await h.request('/v2/private/app/manifests/v1', { headers: bearer(anon) });
    expect(priv.status).toBe(401); // anonymous callers are asked to sign in, not told "denied"
    expect((await h.request('/v2/private/app/manifests/v1')).status).toBe(401);
    // Public pull is not public push.
    const push = await h.request('/v2/public/app/blobs/uploads/', { method: 'POST', headers: bearer(anon) });
    expect(push.status).toBe(401);
  });

  it('makes tags immutable with one Deny on registry:OverwriteTag', async () => {
    await h.auth.policies.putPolicy(
      'immutable-releases',
      doc({
        Effect: 'Deny',
        Action: 'registry:OverwriteTag',
        Resource: 'repository/*',
        Condition: { StringLike: { 'berth:Tag': 'v*' } },
      }),
    );
    await h.auth.policies.attachPolicy('immutable-releases', { type: 'group', name: 'admins' });
    const t = await token(admin, 'repository:team/app:pull,push');
    expect((await pushImage(bearer(t), 'team/app', 'v1', 'one')).status).toBe(201);
    const again = await pushImage(bearer(t), 'team/app', 'v1', 'two');
    expect(again.status).toBe(403);
    const body = (await again.json()) as { errors: { message: string; detail: unknown }[] };
    expect(body.errors[0]?.message).toBe('tag v1 exists and may not be moved by user admin');
    expect(body.errors[0]?.detail).toEqual({ reason: 'explicit_deny', tag: 'v1' });
    // Mutable tags still move.
    expect((await pushImage(bearer(t), 'team/app', 'latest', 'one')).status).toBe(201);
    expect((await pushImage(bearer(t), 'team/app', 'latest', 'two')).status).toBe(201);
  });

  it('enforces the README example: push anything, tag only v*, never move a tag', async () => {
    await h.auth.identities.createUser({ name: 'ci', password: 'ci-password' });
    await h.auth.policies.putPolicy(
      'team-a-ci',
      doc(
        { Effect: 'Allow', Action: ['registry:Pull', 'registry:Push'], Resource: 'repository/team-a/*' },
        {
          Effect: 'Deny',
          Action: 'registry:Push',
          Resource: 'repository/team-a/*',
          Condition: { Null: { 'berth:Tag': 'false' }, StringNotLike: { 'berth:Tag': 'v*' } },
        },
        { Effect: 'Deny', Action: 'registry:OverwriteTag', Resource: 'repository/team-a/*' },
      ),
    );
    await h.auth.policies.attachPolicy('team-a-ci', { type: 'user', name: 'ci' });
    const t = bearer(await token(basic('ci', 'ci-password'), 'repository:team-a/api:pull,push'));
    expect((await pushImage(t, 'team-a/api', 'v1.0', 'a')).status).toBe(201);
    expect((await pushImage(t, 'team-a/api', 'v1.0', 'a-again')).status).toBe(403);
    expect((await pushImage(t, 'team-a/api', 'latest', 'b')).status).toBe(403);
    expect((await pushImage(t, 'team-a/api', 'v1.1', 'c')).status).toBe(201);
  });

  it('honours a cross-repository mount only from a repository the caller may pull', async () => {
    const t = await token(admin, 'repository:secret/app:pull,push');
    const blob = Buffer.from('secret layer');
    await h.request(`/v2/secret/app/blobs/uploads/?digest=${sha256(blob)}`, {
      method: 'POST',
      headers: bearer(t),
      body: blob,
    });
    await h.auth.policies.putPolicy(
      'push-own',
      doc({ Effect: 'Allow', Action: ['registry:Pull', 'registry:Push'], Resource: 'repository/alice/*' }),
    );
    await h.auth.policies.attachPolicy('push-own', { type: 'user', name: 'alice' });
    const at = await token(basic('alice', 'alice-password'), 'repository:alice/app:pull,push');
    for (const q of [`mount=${sha256(blob)}&from=secret/app`, `mount=${sha256(blob)}`]) {
      const res = await h.request(`/v2/alice/app/blobs/uploads/?${q}`, {
        method: 'POST',
        headers: bearer(at),
      });
      expect(res.status).toBe(202); // an ordinary upload instead: the bytes stay secret
    }
    const adminMount = await h.request(`/v2/team/copy/blobs/uploads/?mount=${sha256(blob)}&from=secret/app`, {
      method: 'POST',
      headers: bearer(await token(admin, 'repository:team/copy:pull,push')),
    });
    expect(adminMount.status).toBe(201);
  });

  it('accepts Basic credentials on /v2 itself, deciding per request', async () => {
    const alice = { Authorization: basic('alice', 'alice-password') };
    const adminPush = await pushImage({ Authorization: admin }, 'team/app', 'v1');
    expect(adminPush.status).toBe(201);
    expect((await h.request('/v2/team/app/manifests/v1', { headers: alice })).status).toBe(200);
    const push = await h.request('/v2/team/app/blobs/uploads/', { method: 'POST', headers: alice });
    expect(push.status).toBe(403);
    expect(((await push.json()) as { errors: { detail: unknown }[] }).errors[0]?.detail).toEqual({
      reason: 'no_allow',
    });
    const wrong = await h.request('/v2/team/app/manifests/v1', {
      headers: { Authorization: basic('alice', 'nope') },
    });
    expect(wrong.status).toBe(401);
  });

  it('refuses Basic on /v2 when it is switched off', async () => {
    h = makeHarness({ auth: true, basicOnRegistry: false });
    await h.auth.start();
    expect((await h.request('/v2/', { headers: { Authorization: admin } })).status).toBe(401);
  });
});

describe('the token endpoint', () => {
  it('answers bad credentials with 401 and throttles guessing with 429 and Retry-After', async () => {
    const bad = await h.request('/token?service=berth', {
      headers: { Authorization: basic('alice', 'guess') },
    });
    expect(bad.status).toBe(401);
    expect(await errorCode(bad)).toBe('UNAUTHORIZED');
    let last: Response | undefined;
    for (let i = 0; i < 12; i++) {
      last = await h.request('/token?service=berth', {
        headers: { Authorization: basic('alice', `guess${i}`) },
      });
    }
    expect(last!.status).toBe(429);
    expect(Number(last!.headers.get('Retry-After'))).toBeGreaterThan(0);
    // Even the right password waits out the lockout.
    const right = await h.request('/token?service=berth', {
      headers: { Authorization: basic('alice', 'alice-password') },
    });
    expect(right.status).toBe(429);
  });

  it('refuses a token for another service', async () => {
    const res = await h.request('/token?service=other', { headers: { Authorization: admin } });
    expect(res.status).toBe(403);
  });

  it('speaks OAuth2 on POST with JSON errors, and refreshes offline sessions', async () => {
    const form = (fields: Record<string, string>) => ({
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(fields).toString(),
    });
    const ok = await h.request(
      '/token',
      form({
        grant_type: 'password',
        username: 'alice',
        password: 'alice-password',
        service: 'berth',
        client_id: 'test',
        access_type: 'offline',
        scope: 'repository:team/app:pull,push repository:other/x:pull',
      }),
    );
    expect(ok.status).toBe(200);
    const body = (await ok.json()) as {
      access_token: string;
      scope: string;
      refresh_token: string;
      token_type: string;
    };
    expect(body.scope).toBe('repository:team/app:pull');
    expect(body.token_type).toBe('Bearer');
    const refreshed = await h.request(
      '/token',
      form({
        grant_type: 'refresh_token',
        refresh_token: body.refresh_token,
        service: 'berth',
        client_id: 'test',
        scope: 'repository:team/app:pull',
      }),
    );
    expect(refreshed.status).toBe(200);
    // Revoked by a password change: the refresh token stops working.
    await h.auth.identities.updateUser('alice', { password: 'new-alice-password' });
    const reused = await h.request(
      '/token',
      form({
        grant_type: 'refresh_token',
        refresh_token: body.refresh_token,
        service: 'berth',
        client_id: 'test',
      }),
    );
    expect(reused.status).toBe(400);
    expect(await reused.json()).toMatchObject({ error: 'invalid_grant' });
    const badGrant = await h.request('/token', form({ grant_type: 'magic' }));
    expect(badGrant.status).toBe(400);
    expect(await badGrant.json()).toMatchObject({ error: 'unsupported_grant_type' });
    const wrong = await h.request(
      '/token',
      form({ grant_type: 'password', username: 'alice', password: 'x' }),
    );
    expect(wrong.status).toBe(400);
    expect(wrong.headers.get('Content-Type')).toContain('application/json');
  });

  it('exchanges a CI id token for a role session, by POST and as the oidc user of GET', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const jwk = { ...(await exportJWK(publicKey)), kty: 'EC', kid: 'ci', alg: 'ES256', use: 'sig' };
    const issuer = 'https://ci.example.test';
    await h.auth.federation.addProvider({ issuer, audiences: ['berth'], jwks: { keys: [jwk] } });
    await h.auth.identities.createRole({
      name: 'ci-main',
      trustPolicy: doc({
        Effect: 'Allow',
        Principal: { Federated: issuer },
        Action: 'sts:AssumeRoleWithWebIdentity',
        Condition: { StringEquals: { 'oidc:ref': 'refs/heads/main', 'oidc:repository': 'acme/app' } },
      }),
    });
    await h.auth.policies.putPolicy(
      'ci-push',
      doc({ Effect: 'Allow', Action: ['registry:Pull', 'registry:Push'], Resource: 'repository/ci/*' }),
    );
    await h.auth.policies.attachPolicy('ci-push', { type: 'role', name: 'ci-main' });
    const idToken = (ref: string) => {
      const iat = Math.floor(Date.now() / 1000);
      return new SignJWT({
        iss: issuer,
        aud: 'berth',
        sub: `repo:acme/app:ref:${ref}`,
        ref,
        repository: 'acme/app',
        iat,
        exp: iat + 300,
      })
        .setProtectedHeader({ alg: 'ES256', kid: 'ci' })
        .sign(privateKey);
    };
    const exchange = await h.request('/token', {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: await idToken('refs/heads/main'),
        subject_token_type: 'urn:ietf:params:oauth:token-type:id_token',
        service: 'berth',
        scope: 'repository:ci/app:pull,push repository:team/app:push',
      }).toString(),
    });
    expect(exchange.status).toBe(200);
    const body = (await exchange.json()) as { access_token: string; scope: string };
    expect(body.scope).toBe('repository:ci/app:pull,push');
    expect((await pushImage(bearer(body.access_token), 'ci/app', 'main')).status).toBe(201);
    // docker login -u oidc -p $ID_TOKEN: the same exchange through GET /token with Basic.
    const viaBasic = await token(basic('oidc', await idToken('refs/heads/main')), 'repository:ci/app:pull');
    expect((await h.request('/v2/ci/app/manifests/main', { headers: bearer(viaBasic) })).status).toBe(200);
    // Another branch is trusted by no role.
    const refused = await h.request('/token?service=berth', {
      headers: { Authorization: basic('oidc', await idToken('refs/heads/dev')) },
    });
    expect(refused.status).toBe(401);
    const audit = await h.auth.audit.query({ type: 'authn' });
    expect(audit.entries.some((e) => e.actor.startsWith('role/ci-main') || e.actor.includes('ci-main'))).toBe(
      true,
    );
  });

  it('publishes the keys that verify its tokens', async () => {
    const res = await h.request('/.well-known/jwks.json');
    expect(res.status).toBe(200);
    const jwks = (await res.json()) as { keys: { kid: string; alg: string; d?: string }[] };
    expect(jwks.keys.length).toBeGreaterThan(0);
    expect(jwks.keys[0]?.alg).toBe('ES256');
    expect(jwks.keys.every((k) => k.d === undefined)).toBe(true);
  });
});

describe('attacks on tokens', () => {
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');

  async function claimsOf(t: string) {
    const [header, payload] = t.split('.');
    return {
      header: JSON.parse(Buffer.from(header!, 'base64url').toString()) as Record<string, unknown>,
      payload: JSON.parse(Buffer.from(payload!, 'base64url').toString()) as Record<string, unknown>,
    };
  }

  it('refuses alg=none, HMAC confusion, unknown kids, tampering, wrong audience and expiry', async () => {
    const good = await token(admin, 'repository:team/app:pull,push');
    const { header, payload } = await claimsOf(good);
    const jwks = (await (await h.request('/.well-known/jwks.json')).json()) as { keys: unknown[] };
    const forged = [
      // alg none, no signature
      `${b64({ ...header, alg: 'none' })}.${b64(payload)}.`,
      // HS256 "signed" with the public key as the secret
      (() => {
        const head = `${b64({ ...header, alg: 'HS256' })}.${b64(payload)}`;
        const sig = createHmac('sha256', JSON.stringify(jwks.keys[0])).update(head).digest('base64url');
        return `${head}.${sig}`;
      })(),
      // a kid nobody issued
      `${b64({ ...header, kid: 'not-a-key' })}.${good.split('.')[1]}.${good.split('.')[2]}`,
      // more access than was granted, original signature
      `${good.split('.')[0]}.${b64({ ...payload, access: [{ type: 'repository', name: 'secret/app', actions: ['*'] }] })}.${good.split('.')[2]}`,
      // another audience / an expired token, original signature
      `${good.split('.')[0]}.${b64({ ...payload, aud: 'other' })}.${good.split('.')[2]}`,
      `${good.split('.')[0]}.${b64({ ...payload, exp: 1 })}.${good.split('.')[2]}`,
      'not.a.jwt',
    ];
    for (const t of forged) {
      const res = await h.request('/v2/team/app/tags/list', { headers: bearer(t) });
      expect(res.status).toBe(401);
      expect(res.headers.get('WWW-Authenticate')).toContain('error="invalid_token"');
    }
    expect((await h.request('/v2/team/app/tags/list', { headers: bearer(good) })).status).not.toBe(401);
  });

  it('does not let a token for one repository open another, or a pull token push', async () => {
    const t = await token(admin, 'repository:team/a:pull');
    expect((await h.request('/v2/team/b/tags/list', { headers: bearer(t) })).status).toBe(401);
    const push = await h.request('/v2/team/a/blobs/uploads/', { method: 'POST', headers: bearer(t) });
    // Asked for pull only, so the token says nothing of push: the client is sent for a new token.
    expect(push.status).toBe(401);
    expect(push.headers.get('WWW-Authenticate')).toContain('error="insufficient_scope"');
  });
});

describe('development mode', () => {
  it('lets everything through when auth is off', async () => {
    h = makeHarness({ auth: false });
    expect((await h.request('/v2/')).status).toBe(200);
    expect((await pushImage({}, 'any/repo', 'v1')).status).toBe(201);
  });
});

describe('the admin API behind real auth', () => {
  it('lets the administrator manage identities and refuses others with a reason', async () => {
    const json = (body: unknown, headers: Record<string, string>) => ({
      method: 'POST',
      headers: { ...headers, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    const created = await h.request(
      '/api/v1/users',
      json({ name: 'bob', password: 'bob-password-1' }, { Authorization: admin }),
    );
    expect(created.status).toBe(201);
    // A registry token is no admin credential: 401, and the challenge names the scope to ask for.
    const registryToken = await token(admin, 'repository:team/app:pull');
    const notForAdmin = await h.request('/api/v1/users', { headers: bearer(registryToken) });
    expect(notForAdmin.status).toBe(401);
    expect(notForAdmin.headers.get('WWW-Authenticate')).toContain(
      'scope="berth:admin:*",error="insufficient_scope"',
    );
    // A token issued for the admin API works as well as Basic credentials.
    const t = await token(admin, 'berth:admin:*');
    const list = await h.request('/api/v1/users', { headers: bearer(t) });
    expect(list.status).toBe(200);
    expect(((await list.json()) as { items: { name: string }[] }).items.map((u) => u.name)).toEqual([
      'admin',
      'alice',
      'bob',
    ]);
    const refused = await h.request(
      '/api/v1/users',
      json({ name: 'eve', password: 'eve-password-1' }, { Authorization: basic('alice', 'alice-password') }),
    );
    expect(refused.status).toBe(403);
    expect(await refused.json()).toMatchObject({ error: { code: 'FORBIDDEN', reason: 'no_allow' } });
    // Nobody allows alice an admin action: the token service leaves the scope out of her token's
    // grant, and the admin API says so rather than asking for the same token again.
    const aliceAdmin = await token(basic('alice', 'alice-password'), 'berth:admin:*');
    const aliceList = await h.request('/api/v1/users', { headers: bearer(aliceAdmin) });
    expect(aliceList.status).toBe(403);
    expect(await aliceList.json()).toMatchObject({ error: { code: 'FORBIDDEN', reason: 'no_allow' } });
    expect((await h.request('/api/v1/users')).status).toBe(401);
    const audit = await h.auth.audit.query({ type: 'admin' });
    expect(audit.entries.some((e) => e.actor === 'user/admin' && e.action === 'admin:CreateUser')).toBe(true);
    expect(audit.entries.some((e) => e.actor === 'user/alice' && e.decision === 'Deny')).toBe(true);
  });
});
