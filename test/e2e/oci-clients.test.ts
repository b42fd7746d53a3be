// podman, buildah and skopeo against the real berth CLI over HTTPS, trusting berth's CA through
// --cert-dir. Nothing is pulled from the internet: the image is busybox-static built locally.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningBerth, startBerth } from '../support/berth.ts';
import { type ContainerTools, containerTools } from '../support/containers.ts';

let berth: RunningBerth;
let t: ContainerTools;
let reg: string;

beforeAll(async () => {
  berth = await startBerth();
  reg = berth.hostPort;
  t = containerTools(berth.caPath);
  await t.login(berth.hostPort, berth.admin.username, berth.admin.password);
  await t.buildBusybox('localhost/bb:1');
});

afterAll(async () => {
  await t?.cleanup();
  await berth?.stop();
});

/** Access-log lines of berth, parsed. */
function requests(): { method: string; path: string; status: number }[] {
  return berth
    .logs()
    .flatMap((l) => {
      try {
        return [JSON.parse(l)];
      } catch {
        return [];
      }
    })
    .filter((e) => e.msg === 'request');
}

describe('podman, buildah and skopeo over HTTPS', () => {
  it('buildah pushes a locally built image', async () => {
    const out = await t.buildah(
      'push',
      '--cert-dir',
      t.certDir,
      'localhost/bb:1',
      `docker://${reg}/team/bb:1`,
    );
    expect(out.stderr + out.stdout).toMatch(/Writing manifest to image destination/);
  });

  it('skopeo inspects it and lists its tags', async () => {
    const info = JSON.parse(
      (await t.skopeo('inspect', '--cert-dir', t.certDir, `docker://${reg}/team/bb:1`)).stdout,
    );
    expect(info.Name).toBe(`${reg}/team/bb`);
    expect(info.Architecture).toBe('amd64');
    expect(info.Digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    const tags = JSON.parse(
      (await t.skopeo('list-tags', '--cert-dir', t.certDir, `docker://${reg}/team/bb`)).stdout,
    );
    expect(tags.Tags).toEqual(['1']);
  });

  it('skopeo copies between repositories, mounting the blobs instead of uploading them', async () => {
    const before = requests().length;
    await t.skopeo(
      'copy',
      '--src-cert-dir',
      t.certDir,
      '--dest-cert-dir',
      t.certDir,
      `docker://${reg}/team/bb:1`,
      `docker://${reg}/copies/bb:2`,
    );
    const copy = requests().slice(before);
    const mounts = copy.filter(
      (r) => r.method === 'POST' && /^\/v2\/copies\/bb\/blobs\/uploads\/?$/.test(r.path) && r.status === 201,
    );
    const uploads = copy.filter((r) => r.method === 'PATCH');
    // The layer is mounted; containers/image re-uploads only the (small) config.
    expect(mounts).toHaveLength(1);
    expect(uploads.length).toBeLessThanOrEqual(1);
    const a = JSON.parse(
      (await t.skopeo('inspect', '--cert-dir', t.certDir, `docker://${reg}/team/bb:1`)).stdout,
    );
    const b = JSON.parse(
      (await t.skopeo('inspect', '--cert-dir', t.certDir, `docker://${reg}/copies/bb:2`)).stdout,
    );
    expect(b.Digest).toBe(a.Digest);
    expect(b.Layers).toEqual(a.Layers);
  });

  it('podman pulls the image and sees the same digest', async () => {
    await t.podman('pull', '-q', '--cert-dir', t.certDir, `${reg}/copies/bb:2`);
    const [img] = JSON.parse((await t.podman('image', 'inspect', `${reg}/copies/bb:2`)).stdout);
    const remote = JSON.parse(
      (await t.skopeo('inspect', '--cert-dir', t.certDir, `docker://${reg}/copies/bb:2`)).stdout,
    );
    expect(img.RepoDigests).toContain(`${reg}/copies/bb@${remote.Digest}`);
    expect(img.Config.Cmd).toEqual(['/bin/busybox', 'echo', 'hello from berth']);
  });

  it('podman pushes a retagged image', async () => {
    await t.podman('tag', `${reg}/copies/bb:2`, `${reg}/podman/bb:latest`);
    await t.podman('push', '-q', '--cert-dir', t.certDir, `${reg}/podman/bb:latest`);
    const tags = JSON.parse(
      (await t.skopeo('list-tags', '--cert-dir', t.certDir, `docker://${reg}/podman/bb`)).stdout,
    );
    expect(tags.Tags).toEqual(['latest']);
  });

  it('skopeo deletes a tag, after which the image is unknown', async () => {
    await t.skopeo('delete', '--cert-dir', t.certDir, `docker://${reg}/copies/bb:2`);
    await expect(t.skopeo('inspect', '--cert-dir', t.certDir, `docker://${reg}/copies/bb:2`)).rejects.toThrow(
      /manifest unknown/i,
    );
    // The original repository is untouched.
    await t.skopeo('inspect', '--cert-dir', t.certDir, `docker://${reg}/team/bb:1`);
  });

  it('refuses clients that do not trust the CA', async () => {
    await expect(t.skopeo('inspect', `docker://${reg}/team/bb:1`)).rejects.toThrow(
      /certificate signed by unknown authority/,
    );
  });
});
