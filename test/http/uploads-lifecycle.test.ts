// Uploads across a restart and abandoned uploads: the parts of the upload lifecycle that the
// in-memory hash state does not cover.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checked, createFsDriver } from '../../src/storage/index.ts';
import { errorCode, makeHarness, sha256 } from './harness.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function fsStorage() {
  const root = mkdtempSync(join(tmpdir(), 'berth-uploads-'));
  dirs.push(root);
  return checked(createFsDriver(root));
}

describe('upload lifecycle', () => {
  it('resumes an upload after a restart and verifies the digest over all of it', async () => {
    const storage = fsStorage();
    const data = randomBytes(300_000);
    const before = makeHarness({ storage });
    const post = await before.request('/v2/app/blobs/uploads/', { method: 'POST' });
    const location = post.headers.get('Location')!;
    await before.request(location, {
      method: 'PATCH',
      headers: { 'Content-Range': '0-99999' },
      body: data.subarray(0, 100_000),
    });
    await before.registry.close(); // graceful stop: the open writer becomes a pending write

    const after = makeHarness({ storage });
    const status = await after.request(location);
    expect(status.status).toBe(204);
    expect(status.headers.get('Range')).toBe('0-99999');
    const patch = await after.request(location, {
      method: 'PATCH',
      headers: { 'Content-Range': '100000-299999' },
      body: data.subarray(100_000),
    });
    expect(patch.status).toBe(202);
    const wrong = await after.request(`${location}?digest=${sha256('not it')}`, { method: 'PUT' });
    expect(wrong.status).toBe(400);
    expect(await errorCode(wrong)).toBe('DIGEST_INVALID');
    expect((await after.request(location)).status).toBe(404); // a failed finish removes the upload

    // Again, this time with the right digest: the hash is rebuilt from storage.
    const again = await after.request('/v2/app/blobs/uploads/', { method: 'POST' });
    const loc2 = again.headers.get('Location')!;
    await after.request(loc2, { method: 'PATCH', body: data.subarray(0, 1000) });
    await after.registry.close();
    const third = makeHarness({ storage });
    await third.request(loc2, { method: 'PATCH', body: data.subarray(1000) });
    const put = await third.request(`${loc2}?digest=${sha256(data)}`, { method: 'PUT' });
    expect(put.status).toBe(201);
    const get = await third.request(`/v2/app/blobs/${sha256(data)}`);
    expect(Buffer.from(await get.arrayBuffer()).equals(data)).toBe(true);
  });

  it('purges uploads older than the cutoff and keeps newer ones', async () => {
    const h = makeHarness({ storage: fsStorage() });
    const old = (await h.request('/v2/a/blobs/uploads/', { method: 'POST' })).headers.get('Location')!;
    await h.request(old, { method: 'PATCH', body: 'abandoned' });
    await h.registry.close();
    const fresh = makeHarness({ storage: h.storage });
    expect(await fresh.registry.purgeUploads(new Date(Date.now() - 60_000))).toBe(0);
    expect(await fresh.registry.purgeUploads(new Date(Date.now() + 60_000))).toBe(1);
    expect((await fresh.request(old)).status).toBe(404);
    expect(await h.storage.list('/uploads')).toEqual([]);
  });
});

describe('concurrency on the filesystem driver', () => {
  it('keeps every upload working while others finish and prune their directories', async () => {
    const h = makeHarness({ storage: fsStorage() });
    let next = 0;
    const total = 300;
    const failures: string[] = [];
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < total) {
          const i = next++;
          const data = Buffer.from(`blob ${i} ${'x'.repeat(i)}`);
          const post = await h.request(`/v2/repo${i % 3}/blobs/uploads/`, { method: 'POST' });
          if (post.status !== 202) {
            failures.push(`POST ${post.status} ${await post.text()}`);
            continue;
          }
          const location = post.headers.get('Location')!;
          const patch = await h.request(location, { method: 'PATCH', body: data });
          if (patch.status !== 202) failures.push(`PATCH ${patch.status} ${await patch.text()}`);
          const put = await h.request(`${location}?digest=${sha256(data)}`, { method: 'PUT' });
          if (put.status !== 201) failures.push(`PUT ${put.status} ${await put.text()}`);
          if (i % 5 === 0) await h.request(`/v2/repo${i % 3}/blobs/${sha256(data)}`, { method: 'DELETE' });
        }
      }),
    );
    expect(failures).toEqual([]);
  });
});
