// The real docker CLI and daemon (Debian's docker.io) against the berth CLI over HTTPS, the CA
// trusted through /etc/docker/certs.d (no insecure-registries).
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningBerth, startBerth } from '../support/berth.ts';
import { type Dockerd, startDockerd } from '../support/dockerd.ts';
import { httpsClient } from '../support/https.ts';
import { type OidcIssuer, startOidcIssuer } from '../support/oidc-issuer.ts';
import { tool } from '../support/tools.ts';

let berth: RunningBerth;
let dockerd: Dockerd;
let context: string;
let image: string;
let ci: OidcIssuer;

beforeAll(async () => {
  // The CI job's issuer serves plain http on 127.0.0.1: berth fetches its keys only because the
  // operator allows that host.
  ci = await startOidcIssuer();
  [berth, dockerd] = await Promise.all([
    startBerth({ env: { BERTH_OUTBOUND_ALLOW_HOSTS: ci.host } }),
    startDockerd(),
  ]);
  dockerd.trust(berth.hostPort, berth.caPath);
  // Token auth, as docker does it against any registry: /v2/ challenges, /token signs in.
  const login = await dockerd.login(berth.hostPort, berth.admin.username, berth.admin.password);
  expect(login.stdout).toContain('Login Succeeded');
  image = `${berth.hostPort}/docker/busybox:1.0`;
  // An image made of the busybox-static binary alone: nothing comes from the internet.
  context = mkdtempSync(join(tmpdir(), 'berth-docker-ctx-'));
  copyFileSync(tool('busybox'), join(context, 'busybox'));
  writeFileSync(
    join(context, 'Dockerfile'),
    'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox", "echo", "hello from berth via docker"]\n',
  );
});

afterAll(async () => {
  await dockerd?.stop();
  await berth?.stop();
  await ci?.stop();
  if (context) rmSync(context, { recursive: true, force: true });
});

describe('docker push, pull and run', () => {
  it('pushes a locally built image', async () => {
    await dockerd.docker('build', '-q', '-t', image, context);
    const out = await dockerd.docker('push', image);
    expect(out.stdout).toMatch(/1\.0: digest: sha256:[0-9a-f]{64} size: \d+/);
  });

  it('pulls it back after removing the local copy, and runs it', async () => {
    await dockerd.docker('rmi', image);
    await expect(dockerd.docker('image', 'inspect', image)).rejects.toThrow();
    const pull = await dockerd.docker('pull', image);
    expect(pull.stdout).toMatch(/Downloaded newer image/);
    const runOut = await dockerd.docker('run', '--rm', '--network', 'none', image);
    expect(runOut.stdout.trim()).toBe('hello from berth via docker');
  });

  it('resolves the pushed digest the same way berth stores it', async () => {
    const [repoDigest] = JSON.parse(
      (await dockerd.docker('image', 'inspect', '--format', '{{json .RepoDigests}}', image)).stdout,
    );
    const digest = String(repoDigest).split('@')[1];
    const res = await fetchManifest(`/v2/docker/busybox/manifests/1.0`);
    expect(res.digest).toBe(digest);
    expect(res.type).toBe('application/vnd.docker.distribution.manifest.v2+json');
  });
});

describe('docker with users, policies and CI federation', () => {
  const api = () => httpsClient(berth.url, berth.caPath, berth.adminBasic);
  async function admin(method: string, path: string, body: unknown) {
    const res = await api()(`/api/v1${path}`, {
      method,
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${res.body}`);
  }

  it('shows a clear error when a user who may only pull tries to push', async () => {
    await admin('POST', '/users', { name: 'reader', password: 'reader-password' });
    await admin('PUT', '/policies/pull-docker', {
      document: {
        Version: '2012-10-17',
        Statement: [{ Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/docker/*' }],
      },
    });
    await admin('PUT', '/users/reader/policies/pull-docker', {});
    await dockerd.login(berth.hostPort, 'reader', 'reader-password');
    await dockerd.docker('pull', image);
    const denied = await dockerd.docker('push', image).then(
      () => '',
      (e: Error) => e.message,
    );
    expect(denied).toContain('denied: push on docker/busybox denied for user reader');
  });

  it('lets a CI job sign in with its OIDC id token and push where its role allows', async () => {
    await admin('POST', '/oidc-providers', { issuer: ci.issuer, audiences: ['berth'] });
    await admin('POST', '/roles', {
      name: 'ci-publisher',
      trustPolicy: {
        Version: '2012-10-17',
        Statement: [
          {
            Effect: 'Allow',
            Principal: { Federated: ci.issuer },
            Action: 'sts:AssumeRoleWithWebIdentity',
            Condition: { StringEquals: { 'oidc:repository': 'acme/app', 'oidc:ref': 'refs/heads/main' } },
          },
        ],
      },
    });
    await admin('PUT', '/policies/ci-publish', {
      document: {
        Version: '2012-10-17',
        Statement: [
          { Effect: 'Allow', Action: ['registry:Pull', 'registry:Push'], Resource: 'repository/ci/*' },
        ],
      },
    });
    await admin('PUT', '/roles/ci-publisher/policies/ci-publish', {});
    const idToken = await ci.idToken({
      sub: 'repo:acme/app:ref:refs/heads/main',
      repository: 'acme/app',
      ref: 'refs/heads/main',
    });
    // docker login -u oidc -p $ID_TOKEN, the way a CI step does it (password on stdin).
    const login = await dockerd.login(berth.hostPort, 'oidc', idToken);
    expect(login.stdout).toContain('Login Succeeded');
    const target = `${berth.hostPort}/ci/busybox:main`;
    await dockerd.docker('tag', image, target);
    expect((await dockerd.docker('push', target)).stdout).toMatch(/main: digest: sha256:/);
    // A token from another branch is trusted by no role.
    const branch = await ci.idToken({
      sub: 'repo:acme/app:ref:refs/heads/dev',
      repository: 'acme/app',
      ref: 'refs/heads/dev',
    });
    await expect(dockerd.login(berth.hostPort, 'oidc', branch)).rejects.toThrow(/unauthorized|401/i);
  });
});

async function fetchManifest(path: string) {
  const get = httpsClient(berth.url, berth.caPath, berth.adminBasic);
  const res = await get(path, { method: 'HEAD' });
  return { digest: res.headers['docker-content-digest'], type: res.headers['content-type'] };
}
