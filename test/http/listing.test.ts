import { beforeEach, describe, expect, it } from 'vitest';
import { errorCode, type Harness, imageManifest, makeHarness } from './harness.ts';

let h: Harness;
beforeEach(() => {
  h = makeHarness();
});

async function tagged(repo: string, tags: string[]) {
  const config = await h.pushBlob(repo, '{}');
  const m = imageManifest({ digest: config, size: 2 }, []);
  for (const t of tags) expect((await h.pushManifest(repo, t, m)).status).toBe(201);
}

describe('tags list', () => {
  it('lists tags sorted, paginated with n and last, with a Link to the next page', async () => {
    await tagged('team/app', ['v2', 'latest', 'v1', '1.0', 'V3']);
    const all = await h.request('/v2/team/app/tags/list');
    expect(await all.json()).toEqual({ name: 'team/app', tags: ['1.0', 'V3', 'latest', 'v1', 'v2'] });
    expect(all.headers.get('Link')).toBeNull();

    const p1 = await h.request('/v2/team/app/tags/list?n=2');
    expect(await p1.json()).toEqual({ name: 'team/app', tags: ['1.0', 'V3'] });
    expect(p1.headers.get('Link')).toBe('</v2/team/app/tags/list?n=2&last=V3>; rel="next"');
    const p2 = await h.request('/v2/team/app/tags/list?n=2&last=V3');
    expect(((await p2.json()) as { tags: string[] }).tags).toEqual(['latest', 'v1']);
    const p3 = await h.request('/v2/team/app/tags/list?n=2&last=v1');
    expect(((await p3.json()) as { tags: string[] }).tags).toEqual(['v2']);
    expect(p3.headers.get('Link')).toBeNull();
    const zero = await h.request('/v2/team/app/tags/list?n=0');
    expect(((await zero.json()) as { tags: string[] }).tags).toEqual([]);
    const huge = await h.request('/v2/team/app/tags/list?n=99999999999');
    expect(((await huge.json()) as { tags: string[] }).tags).toHaveLength(5);
  });

  it('answers NAME_UNKNOWN for a repository that does not exist, and an empty list for one without tags', async () => {
    const res = await h.request('/v2/nope/tags/list');
    expect(res.status).toBe(404);
    expect(await errorCode(res)).toBe('NAME_UNKNOWN');
    await h.pushBlob('blobs-only', 'x');
    expect(await (await h.request('/v2/blobs-only/tags/list')).json()).toEqual({
      name: 'blobs-only',
      tags: [],
    });
  });
});

describe('catalog', () => {
  it('lists repositories sorted and paginated', async () => {
    for (const r of ['b/x', 'a', 'a/b/c', 'a-b', 'c']) await h.pushBlob(r, 'x');
    const all = await h.request('/v2/_catalog');
    expect(await all.json()).toEqual({ repositories: ['a', 'a-b', 'a/b/c', 'b/x', 'c'] });
    const p1 = await h.request('/v2/_catalog?n=2');
    expect(((await p1.json()) as { repositories: string[] }).repositories).toEqual(['a', 'a-b']);
    expect(p1.headers.get('Link')).toBe('</v2/_catalog?n=2&last=a-b>; rel="next"');
    const p2 = await h.request('/v2/_catalog?n=2&last=a-b');
    expect(((await p2.json()) as { repositories: string[] }).repositories).toEqual(['a/b/c', 'b/x']);
  });

  it('survives a restart: the catalog is read back from storage', async () => {
    await h.pushBlob('persisted/repo', 'x');
    const again = makeHarness({ storage: h.storage });
    expect(await (await again.request('/v2/_catalog')).json()).toEqual({ repositories: ['persisted/repo'] });
  });
});

describe('protocol basics', () => {
  it('answers /v2/ with 200 and the API version header', async () => {
    for (const p of ['/v2/', '/v2']) {
      const res = await h.request(p);
      expect(res.status).toBe(200);
      expect(res.headers.get('Docker-Distribution-API-Version')).toBe('registry/2.0');
    }
  });

  it('sets the API version header and the JSON error form on errors too', async () => {
    const res = await h.request('/v2/Bad_Name/tags/list');
    expect(res.status).toBe(400);
    expect(res.headers.get('Docker-Distribution-API-Version')).toBe('registry/2.0');
    expect(res.headers.get('Content-Type')).toMatch(/^application\/json/);
    const body = (await res.json()) as { errors: { code: string; message: string }[] };
    expect(body.errors[0]!.code).toBe('NAME_INVALID');
    expect(typeof body.errors[0]!.message).toBe('string');
    for (const path of ['/v2/app/nothing-here', '/nowhere']) {
      const unknown = await h.request(path);
      expect(unknown.headers.get('Docker-Distribution-API-Version')).toBe('registry/2.0');
      expect(unknown.status).toBe(404);
      expect(await errorCode(unknown)).toBe('NOT_FOUND');
    }
    const wrongMethod = await h.request('/v2/_catalog', { method: 'POST' });
    expect(wrongMethod.status).toBe(404);
    expect(wrongMethod.headers.get('Docker-Distribution-API-Version')).toBe('registry/2.0');
  });

  it('gives HEAD errors no body', async () => {
    const res = await h.request('/v2/app/manifests/missing', { method: 'HEAD' });
    expect(res.status).toBe(404);
    expect(await res.text()).toBe('');
  });

  it('refuses repository names outside the grammar', async () => {
    for (const name of ['UPPER', 'a//b', 'a/', '-a', 'a__-b', `${'a'.repeat(256)}`]) {
      const res = await h.request(`/v2/${name}/tags/list`);
      expect(res.status, name).toBeGreaterThanOrEqual(400);
      expect(res.status, name).toBeLessThan(500);
    }
  });

  it('answers health and readiness', async () => {
    expect((await h.request('/healthz')).status).toBe(200);
    expect((await h.request('/readyz')).status).toBe(200);
  });
});
