import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../log.ts';
import { createHost } from './host.ts';
import { createImages, type ImageSource, parseImageRef } from './images.ts';
import { createLayerStore } from './layers.ts';

describe('parseImageRef', () => {
  const own = ['localhost', '127.0.0.1', 'registry.example'];

  it('reads repository, tag and digest, with latest as the default tag', () => {
    expect(parseImageRef('web', own)).toEqual({ repository: 'web', tag: 'latest' });
    expect(parseImageRef('team/web:1.2', own)).toEqual({ repository: 'team/web', tag: '1.2' });
    const d = `sha256:${'a'.repeat(64)}`;
    expect(parseImageRef(`web@${d}`, own)).toEqual({ repository: 'web', digest: d });
    expect(parseImageRef(`web:1@${d}`, own)).toEqual({ repository: 'web', tag: '1', digest: d });
  });

  it("accepts berth's own host names (any port) and refuses other registries by name", () => {
    expect(parseImageRef('127.0.0.1:5000/web:1', own)).toEqual({ repository: 'web', tag: '1' });
    expect(parseImageRef('REGISTRY.example/a/b', own)).toEqual({ repository: 'a/b', tag: 'latest' });
    expect(() => parseImageRef('docker.io/library/nginx', own)).toThrow(/names the registry 'docker.io'/);
    expect(() => parseImageRef('ghcr.io:443/x', own)).toThrow(/push it here first/);
  });

  it('refuses malformed references', () => {
    expect(() => parseImageRef('Web', own)).toThrow(/not a valid repository/);
    expect(() => parseImageRef('web@sha256:abc', own)).toThrow(/not a digest/);
    expect(() => parseImageRef('web:', own)).toThrow(/not a valid tag/);
  });
});

describe('createImages', () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-images-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const blobs = new Map<string, Buffer>();
  const manifests = new Map<string, { mediaType: string; bytes: Buffer }>();
  const tags = new Map<string, string>();
  const put = (b: Buffer) => {
    const d = `sha256:${createHash('sha256').update(b).digest('hex')}`;
    blobs.set(d, b);
    return d;
  };
  const putManifest = (mediaType: string, doc: unknown) => {
    const bytes = Buffer.from(JSON.stringify(doc));
    const d = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    manifests.set(d, { mediaType, bytes });
    return { digest: d, size: bytes.length };
  };
  const source: ImageSource = {
    async manifest(repository, reference) {
      const d = tags.get(`${repository}:${reference}`) ?? reference;
      const m = manifests.get(d);
      if (!m) throw new Error(`manifest unknown: ${repository}:${reference}`);
      return { digest: d, mediaType: m.mediaType, bytes: m.bytes };
    },
    async blob(_repository, digest) {
      const b = blobs.get(digest);
      if (!b) throw new Error(`blob unknown: ${digest}`);
      return Readable.from([b]);
    },
  };

  function image(files: Record<string, string>) {
    const root = mkdtempSync(join(dir, 'rootfs-'));
    for (const [p, text] of Object.entries(files)) {
      mkdirSync(join(root, p, '..'), { recursive: true });
      writeFileSync(join(root, p), text);
    }
    const layer = execFileSync('tar', ['-c', '-C', root, '--owner=0', '--group=0', '.']);
    const layerDigest = put(layer);
    const config = put(
      Buffer.from(
        JSON.stringify({
          architecture: 'amd64',
          os: 'linux',
          config: { Cmd: ['/bin/app'] },
          rootfs: { type: 'layers', diff_ids: [layerDigest] },
        }),
      ),
    );
    return putManifest('application/vnd.oci.image.manifest.v1+json', {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config, size: 1 },
      layers: [
        { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layerDigest, size: layer.length },
      ],
    });
  }

  const images = createImages(
    source,
    createLayerStore({
      root: join(dir, 'layers'),
      log: silentLogger,
      host: createHost(),
      idMapping: { hostIdStart: 300000 },
    }),
  );
  const hostArch = process.arch === 'x64' ? 'amd64' : process.arch;
  const otherArch = hostArch === 'amd64' ? 'arm64' : 'amd64';

  it("picks this machine's platform from an index, unpacks it and reads /etc/passwd", async () => {
    const mine = image({ 'etc/passwd': 'root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n' });
    const theirs = image({ 'etc/passwd': 'wrong\n' });
    const index = putManifest('application/vnd.oci.image.index.v1+json', {
      schemaVersion: 2,
      manifests: [
        {
          ...theirs,
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          platform: { os: 'linux', architecture: otherArch },
        },
        {
          ...mine,
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          platform: { os: 'linux', architecture: hostArch },
        },
      ],
    });
    tags.set('web:1', index.digest);
    expect(await images.resolve({ repository: 'web', tag: '1' })).toBe(index.digest);
    const p = await images.prepare({ repository: 'web', tag: '1' });
    expect(p.digest).toBe(index.digest);
    expect(p.manifestDigest).toBe(mine.digest);
    expect(p.config.config?.Cmd).toEqual(['/bin/app']);
    expect(p.layers).toHaveLength(1);
    expect(p.passwd).toContain('app:x:1000');
    // Prepared again: the layer is not unpacked twice (same directory).
    expect((await images.prepare({ repository: 'web', digest: index.digest })).layers).toEqual(p.layers);
  });

  it('says which platforms an index has when this one is missing', async () => {
    const theirs = image({ a: 'x' });
    const index = putManifest('application/vnd.oci.image.index.v1+json', {
      schemaVersion: 2,
      manifests: [
        {
          ...theirs,
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          platform: { os: 'linux', architecture: otherArch },
        },
      ],
    });
    await expect(images.prepare({ repository: 'web', digest: index.digest })).rejects.toThrow(
      new RegExp(`no linux/${hostArch} manifest \\(it has: linux/${otherArch}\\)`),
    );
  });

  it('refuses artifacts that are not images', async () => {
    const config = put(Buffer.from('{}'));
    const sig = putManifest('application/vnd.oci.image.manifest.v1+json', {
      schemaVersion: 2,
      config: { mediaType: 'application/vnd.dev.cosign.artifact.sig.v1+json', digest: config, size: 2 },
      layers: [],
    });
    await expect(images.prepare({ repository: 'web', digest: sig.digest })).rejects.toThrow(/is an artifact/);
  });
});
