import { beforeEach, describe, expect, it } from 'vitest';
import { errorCode, type Harness, imageManifest, makeHarness, sha256 } from './harness.ts';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const EMPTY = { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256('{}'), size: 2 };

let h: Harness;
let image: ReturnType<typeof imageManifest>;
beforeEach(async () => {
  h = makeHarness();
  const config = await h.pushBlob('app', '{"architecture":"amd64","os":"linux"}');
  const layer = await h.pushBlob('app', 'layer-1');
  image = imageManifest({ digest: config, size: 37 }, [{ digest: layer, size: 7 }]);
});

describe('manifest PUT and GET', () => {
  it('stores by tag and returns the exact bytes and media type whatever Accept says', async () => {
    // Odd spacing on purpose: the bytes, not a re-serialisation, must come back.
    const body = JSON.stringify(image, null, 3);
    const put = await h.request('/v2/app/manifests/v1', {
      method: 'PUT',
      headers: { 'Content-Type': OCI_MANIFEST },
      body,
    });
    expect(put.status).toBe(201);
    const digest = sha256(body);
    expect(put.headers.get('Docker-Content-Digest')).toBe(digest);
    expect(put.headers.get('Location')).toBe(`/v2/app/manifests/${digest}`);
    for (const accept of [undefined, DOCKER_MANIFEST, 'application/json', OCI_MANIFEST]) {
      for (const ref of ['v1', digest]) {
        const get = await h.request(`/v2/app/manifests/${ref}`, {
          headers: accept ? { Accept: accept } : {},
        });
        expect(get.status).toBe(200);
        expect(get.headers.get('Content-Type')).toBe(OCI_MANIFEST);
        expect(get.headers.get('Docker-Content-Digest')).toBe(digest);
        expect(await get.text()).toBe(body);
      }
    }
    const head = await h.request('/v2/app/manifests/v1', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('Content-Type')).toBe(OCI_MANIFEST);
    expect(head.headers.get('Content-Length')).toBe(String(Buffer.byteLength(body)));
    expect(head.headers.get('Docker-Content-Digest')).toBe(digest);
    expect(await head.text()).toBe('');
  });

  it('stores by digest, and rejects a body whose digest differs', async () => {
    const body = JSON.stringify(image);
    const ok = await h.request(`/v2/app/manifests/${sha256(body)}`, {
      method: 'PUT',
      headers: { 'Content-Type': OCI_MANIFEST },
      body,
    });
    expect(ok.status).toBe(201);
    const bad = await h.request(`/v2/app/manifests/${sha256('other')}`, {
      method: 'PUT',
      headers: { 'Content-Type': OCI_MANIFEST },
      body,
    });
    expect(bad.status).toBe(400);
    expect(await errorCode(bad)).toBe('DIGEST_INVALID');
  });

  it('sets several tags with ?tag= and answers one OCI-Tag header per tag', async () => {
    const body = JSON.stringify(image);
    const res = await h.request(`/v2/app/manifests/${sha256(body)}?tag=a&tag=b&tag=c`, {
      method: 'PUT',
      headers: { 'Content-Type': OCI_MANIFEST },
      body,
    });
    expect(res.status).toBe(201);
    expect(res.headers.get('OCI-Tag')).toBe('a, b, c');
    for (const t of ['a', 'b', 'c']) {
      expect((await h.request(`/v2/app/manifests/${t}`)).headers.get('Docker-Content-Digest')).toBe(
        sha256(body),
      );
    }
  });

  it('answers MANIFEST_BLOB_UNKNOWN when config or layers are missing, but not for foreign layers', async () => {
    const missing = {
      ...image,
      layers: [...image.layers, { mediaType: image.layers[0]!.mediaType, digest: sha256('x'), size: 1 }],
    };
    const res = await h.pushManifest('app', 'broken', missing);
    expect(res.status).toBe(400);
    expect(await errorCode(res)).toBe('MANIFEST_BLOB_UNKNOWN');
    // A blob pushed to another repository does not count either.
    const elsewhere = await h.pushBlob('other', 'x');
    const cross = {
      ...image,
      layers: [{ mediaType: image.layers[0]!.mediaType, digest: elsewhere, size: 1 }],
    };
    expect((await h.pushManifest('app', 'cross', cross)).status).toBe(400);
    const foreign = {
      ...image,
      layers: [
        ...image.layers,
        {
          mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
          digest: sha256('win'),
          size: 3,
        },
      ],
    };
    expect((await h.pushManifest('app', 'foreign', foreign)).status).toBe(201);
    expect((await h.request('/v2/app/manifests/broken')).status).toBe(404);
  });

  it('accepts an OCI index without requiring its children, and Docker types', async () => {
    const index = {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        {
          mediaType: OCI_MANIFEST,
          digest: sha256('elsewhere'),
          size: 10,
          platform: { os: 'linux', architecture: 'arm64' },
        },
      ],
    };
    expect((await h.pushManifest('app', 'multi', index, OCI_INDEX)).status).toBe(201);
    const docker = {
      ...image,
      mediaType: DOCKER_MANIFEST,
      config: { ...image.config, mediaType: 'application/vnd.docker.container.image.v1+json' },
    };
    expect((await h.pushManifest('app', 'docker', docker, DOCKER_MANIFEST)).status).toBe(201);
    const list = { schemaVersion: 2, mediaType: DOCKER_LIST, manifests: index.manifests };
    const put = await h.pushManifest('app', 'list', list, DOCKER_LIST);
    expect(put.status).toBe(201);
    expect((await h.request('/v2/app/manifests/list')).headers.get('Content-Type')).toBe(DOCKER_LIST);
  });

  it('rejects invalid manifests with MANIFEST_INVALID', async () => {
    const cases: [string, string][] = [
      ['not json', OCI_MANIFEST],
      ['[]', OCI_MANIFEST],
      [JSON.stringify({ ...image, schemaVersion: 1 }), OCI_MANIFEST],
      [JSON.stringify({ ...image, layers: 'x' }), OCI_MANIFEST],
      [JSON.stringify({ ...image, mediaType: OCI_INDEX }), OCI_MANIFEST],
      [JSON.stringify(image), 'application/vnd.example.unknown+json'],
    ];
    for (const [body, type] of cases) {
      const res = await h.request('/v2/app/manifests/bad', {
        method: 'PUT',
        headers: { 'Content-Type': type },
        body,
      });
      expect(res.status, body).toBe(400);
      expect(await errorCode(res)).toBe('MANIFEST_INVALID');
    }
  });

  it('accepts a 4 MiB manifest and answers 413 above the limit', async () => {
    const pad = (n: number) => ({ ...image, annotations: { pad: 'x'.repeat(n) } });
    const base = Buffer.byteLength(JSON.stringify(pad(0)));
    const exact = JSON.stringify(pad(4 * 1024 * 1024 - base));
    expect(Buffer.byteLength(exact)).toBe(4 * 1024 * 1024);
    const ok = await h.request('/v2/app/manifests/big', {
      method: 'PUT',
      headers: { 'Content-Type': OCI_MANIFEST },
      body: exact,
    });
    expect(ok.status).toBe(201);
    const tooBig = JSON.stringify(pad(4 * 1024 * 1024 - base + 1));
    const res = await h.request('/v2/app/manifests/big2', {
      method: 'PUT',
      headers: { 'Content-Type': OCI_MANIFEST },
      body: tooBig,
    });
    expect(res.status).toBe(413);
    expect(await errorCode(res)).toBe('SIZE_TOO_LARGE');
  });

  it('answers MANIFEST_UNKNOWN for unknown tags and digests, TAG_INVALID for bad tags', async () => {
    const tag = await h.request('/v2/app/manifests/nope');
    expect(tag.status).toBe(404);
    expect(await errorCode(tag)).toBe('MANIFEST_UNKNOWN');
    expect((await h.request(`/v2/app/manifests/${sha256('nope')}`)).status).toBe(404);
    const bad = await h.pushManifest('app', '.bad', image);
    expect(bad.status).toBe(400);
  });
});

describe('artifacts and referrers', () => {
  it('accepts an artifact with an empty config and lists it as a referrer of its subject', async () => {
    const subjectBody = JSON.stringify(image);
    const subjectDigest = sha256(subjectBody);
    await h.request('/v2/app/manifests/v1', {
      method: 'PUT',
      headers: { 'Content-Type': OCI_MANIFEST },
      body: subjectBody,
    });
    await h.pushBlob('app', '{}');
    const sbomLayer = await h.pushBlob('app', 'sbom-content');
    const artifact = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: 'application/spdx+json',
      config: EMPTY,
      layers: [{ mediaType: 'application/spdx+json', digest: sbomLayer, size: 12 }],
      subject: { mediaType: OCI_MANIFEST, digest: subjectDigest, size: Buffer.byteLength(subjectBody) },
      annotations: { 'org.example.kind': 'sbom' },
    };
    const body = JSON.stringify(artifact);
    const put = await h.request(`/v2/app/manifests/${sha256(body)}`, {
      method: 'PUT',
      headers: { 'Content-Type': OCI_MANIFEST },
      body,
    });
    expect(put.status).toBe(201);
    expect(put.headers.get('OCI-Subject')).toBe(subjectDigest);
    const sig = { ...artifact, artifactType: 'application/vnd.example.signature', annotations: undefined };
    const sigBody = JSON.stringify(sig);
    await h.request(`/v2/app/manifests/${sha256(sigBody)}`, {
      method: 'PUT',
      headers: { 'Content-Type': OCI_MANIFEST },
      body: sigBody,
    });

    const all = await h.request(`/v2/app/referrers/${subjectDigest}`);
    expect(all.status).toBe(200);
    expect(all.headers.get('Content-Type')).toBe(OCI_INDEX);
    expect(all.headers.get('OCI-Filters-Applied')).toBeNull();
    const index = (await all.json()) as {
      schemaVersion: number;
      mediaType: string;
      manifests: Record<string, unknown>[];
    };
    expect(index.schemaVersion).toBe(2);
    expect(index.mediaType).toBe(OCI_INDEX);
    expect(index.manifests.map((m) => m.digest).sort()).toEqual([sha256(body), sha256(sigBody)].sort());
    const sbom = index.manifests.find((m) => m.digest === sha256(body))!;
    expect(sbom).toEqual({
      mediaType: OCI_MANIFEST,
      digest: sha256(body),
      size: Buffer.byteLength(body),
      artifactType: 'application/spdx+json',
      annotations: { 'org.example.kind': 'sbom' },
    });

    const filtered = await h.request(
      `/v2/app/referrers/${subjectDigest}?artifactType=application/spdx%2Bjson`,
    );
    expect(filtered.headers.get('OCI-Filters-Applied')).toBe('artifactType');
    const f = (await filtered.json()) as { manifests: { digest: string }[] };
    expect(f.manifests.map((m) => m.digest)).toEqual([sha256(body)]);

    // Deleting the referrer removes it from the list.
    expect((await h.request(`/v2/app/manifests/${sha256(body)}`, { method: 'DELETE' })).status).toBe(202);
    const after = (await (await h.request(`/v2/app/referrers/${subjectDigest}`)).json()) as {
      manifests: unknown[];
    };
    expect(after.manifests).toHaveLength(1);
  });

  it('answers an empty index for unknown subjects and repositories', async () => {
    const res = await h.request(`/v2/nothing/here/referrers/${sha256('x')}`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] });
  });

  it('accepts a referrer before its subject exists', async () => {
    await h.pushBlob('app', '{}');
    const artifact = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: 'application/vnd.example',
      config: EMPTY,
      layers: [],
      subject: { mediaType: OCI_MANIFEST, digest: sha256('later'), size: 5 },
    };
    const res = await h.pushManifest('app', 'early', artifact);
    expect(res.status).toBe(201);
    expect(res.headers.get('OCI-Subject')).toBe(sha256('later'));
  });
});

describe('manifest DELETE', () => {
  it('deletes by digest (with its tags) and by tag (only the tag)', async () => {
    const body = JSON.stringify(image);
    const digest = sha256(body);
    await h.request(`/v2/app/manifests/${digest}?tag=a&tag=b`, {
      method: 'PUT',
      headers: { 'Content-Type': OCI_MANIFEST },
      body,
    });
    expect((await h.request('/v2/app/manifests/a', { method: 'DELETE' })).status).toBe(202);
    expect((await h.request('/v2/app/manifests/a')).status).toBe(404);
    expect((await h.request('/v2/app/manifests/b')).status).toBe(200);
    expect((await h.request(`/v2/app/manifests/${digest}`, { method: 'DELETE' })).status).toBe(202);
    expect((await h.request(`/v2/app/manifests/${digest}`)).status).toBe(404);
    expect((await h.request('/v2/app/manifests/b')).status).toBe(404);
    const tags = (await (await h.request('/v2/app/tags/list')).json()) as { tags: string[] };
    expect(tags.tags).toEqual([]);
    const again = await h.request(`/v2/app/manifests/${digest}`, { method: 'DELETE' });
    expect(again.status).toBe(404);
    expect(await errorCode(again)).toBe('MANIFEST_UNKNOWN');
  });
});
