// A multi-arch image index made by podman (manifest create/add/push --all), copied whole by
// skopeo, and an artifact that refers to it, pushed through the API (no client here makes
// referrers), all against the berth CLI over HTTPS.
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningBerth, startBerth } from '../support/berth.ts';
import { type ContainerTools, containerTools } from '../support/containers.ts';
import { type HttpsReply, httpsClient } from '../support/https.ts';

const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

let berth: RunningBerth;
let t: ContainerTools;
let reg: string;
let call: ReturnType<typeof httpsClient>;

const sha256 = (b: Uint8Array | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const json = (r: HttpsReply) => JSON.parse(r.body.toString());

beforeAll(async () => {
  berth = await startBerth();
  reg = berth.hostPort;
  call = httpsClient(berth.url, berth.caPath, berth.adminBasic);
  t = containerTools(berth.caPath);
  await t.login(berth.hostPort, berth.admin.username, berth.admin.password);
  await t.buildBusybox('localhost/multi:amd64', { arch: 'amd64', message: 'amd64' });
  await t.buildBusybox('localhost/multi:arm64', { arch: 'arm64', message: 'arm64' });
});

afterAll(async () => {
  await t?.cleanup();
  await berth?.stop();
});

describe('multi-arch index and referrers', () => {
  let indexDigest: string;

  it('podman pushes a two-platform index with --all', async () => {
    await t.podman('manifest', 'create', 'localhost/multi:list');
    await t.podman('manifest', 'add', 'localhost/multi:list', 'containers-storage:localhost/multi:amd64');
    await t.podman('manifest', 'add', 'localhost/multi:list', 'containers-storage:localhost/multi:arm64');
    await t.podman(
      'manifest',
      'push',
      '--all',
      '--format',
      'oci',
      '--cert-dir',
      t.certDir,
      'localhost/multi:list',
      `docker://${reg}/multi/app:1`,
    );
    const res = await call('/v2/multi/app/manifests/1', { headers: { Accept: OCI_INDEX } });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe(OCI_INDEX);
    indexDigest = String(res.headers['docker-content-digest']);
    expect(indexDigest).toBe(sha256(res.body));
    const index = json(res);
    const platforms = index.manifests
      .map((m: { platform: { architecture: string } }) => m.platform.architecture)
      .sort();
    expect(platforms).toEqual(['amd64', 'arm64']);
    for (const m of index.manifests) {
      const child = await call(`/v2/multi/app/manifests/${m.digest}`, { method: 'HEAD' });
      expect(child.status).toBe(200);
      expect(child.headers['content-type']).toBe(m.mediaType);
    }
  });

  it('skopeo copies the whole index to another repository and picks a platform from it', async () => {
    await t.skopeo(
      'copy',
      '--all',
      '--src-cert-dir',
      t.certDir,
      '--dest-cert-dir',
      t.certDir,
      `docker://${reg}/multi/app:1`,
      `docker://${reg}/multi/copy:1`,
    );
    const copied = await call('/v2/multi/copy/manifests/1', { method: 'HEAD' });
    expect(copied.headers['docker-content-digest']).toBe(indexDigest);
    const arm = JSON.parse(
      (
        await t.skopeo(
          'inspect',
          '--override-arch',
          'arm64',
          '--cert-dir',
          t.certDir,
          `docker://${reg}/multi/copy:1`,
        )
      ).stdout,
    );
    expect(arm.Architecture).toBe('arm64');
  });

  it('lists an artifact pushed with the index as subject through the referrers API', async () => {
    const empty = '{}';
    const sbom = JSON.stringify({ spdxVersion: 'SPDX-2.3', name: 'multi' });
    for (const blob of [empty, sbom]) {
      const up = await call(`/v2/multi/app/blobs/uploads/?digest=${sha256(blob)}`, {
        method: 'POST',
        body: blob,
      });
      expect(up.status).toBe(201);
    }
    const index = await call('/v2/multi/app/manifests/1');
    const artifact = JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: 'application/spdx+json',
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256(empty), size: 2 },
      layers: [{ mediaType: 'application/spdx+json', digest: sha256(sbom), size: Buffer.byteLength(sbom) }],
      subject: { mediaType: OCI_INDEX, digest: indexDigest, size: index.body.length },
    });
    const put = await call(`/v2/multi/app/manifests/${sha256(artifact)}`, {
      method: 'PUT',
      headers: { 'Content-Type': OCI_MANIFEST },
      body: artifact,
    });
    expect(put.status).toBe(201);
    expect(put.headers['oci-subject']).toBe(indexDigest);

    const refs = await call(`/v2/multi/app/referrers/${indexDigest}?artifactType=application%2Fspdx%2Bjson`);
    expect(refs.status).toBe(200);
    expect(refs.headers['oci-filters-applied']).toBe('artifactType');
    expect(json(refs).manifests).toEqual([
      {
        mediaType: OCI_MANIFEST,
        digest: sha256(artifact),
        size: Buffer.byteLength(artifact),
        artifactType: 'application/spdx+json',
      },
    ]);
    const none = await call(`/v2/multi/app/referrers/${indexDigest}?artifactType=application%2Fother`);
    expect(json(none).manifests).toEqual([]);
  });
});
