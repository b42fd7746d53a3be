import { createHash, randomBytes } from 'node:crypto';
import { beforeEach, describe, expect, it } from 'vitest';
import { checked, createMemoryDriver, type StorageDriver } from '../../src/storage/index.ts';
import { errorCode, type Harness, makeHarness, sha256 } from './harness.ts';

let h: Harness;

/** Children of a storage directory; none when it does not exist. */
async function children(path: string): Promise<string[]> {
  try {
    return await h.storage.list(path);
  } catch {
    return [];
  }
}
beforeEach(() => {
  h = makeHarness();
});

async function startUpload(repo: string, query = ''): Promise<string> {
  const res = await h.request(`/v2/${repo}/blobs/uploads/${query}`, { method: 'POST' });
  expect(res.status).toBe(202);
  expect(res.headers.get('Range')).toBe('0-0');
  const location = res.headers.get('Location')!;
  expect(location).toMatch(new RegExp(`^/v2/${repo}/blobs/uploads/[0-9a-f-]{36}$`));
  expect(res.headers.get('Docker-Upload-UUID')).toBe(location.split('/').pop());
  return location;
}

/** A body the fetch API sends with chunked transfer encoding: no Content-Length. */
function streamed(parts: Uint8Array[]): RequestInit {
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const p of parts) controller.enqueue(p);
      controller.close();
    },
  });
  return { method: 'PATCH', body: stream, duplex: 'half' } as RequestInit;
}

describe('blob upload', () => {
  it('accepts a monolithic POST ?digest= and serves the blob', async () => {
    const data = randomBytes(5000);
    const digest = sha256(data);
    const res = await h.request(`/v2/team/app/blobs/uploads/?digest=${digest}`, {
      method: 'POST',
      body: data,
    });
    expect(res.status).toBe(201);
    expect(res.headers.get('Location')).toBe(`/v2/team/app/blobs/${digest}`);
    expect(res.headers.get('Docker-Content-Digest')).toBe(digest);
    const get = await h.request(`/v2/team/app/blobs/${digest}`);
    expect(get.status).toBe(200);
    expect(get.headers.get('Content-Length')).toBe('5000');
    expect(get.headers.get('Docker-Content-Digest')).toBe(digest);
    expect(Buffer.from(await get.arrayBuffer()).equals(data)).toBe(true);
  });

  it('accepts POST then PUT with the whole body', async () => {
    const data = randomBytes(3000);
    const location = await startUpload('app');
    const put = await h.request(`${location}?digest=${sha256(data)}`, { method: 'PUT', body: data });
    expect(put.status).toBe(201);
    expect(put.headers.get('Docker-Content-Digest')).toBe(sha256(data));
    expect((await h.request(`/v2/app/blobs/${sha256(data)}`, { method: 'HEAD' })).status).toBe(200);
  });

  it('accepts chunked PATCHes with Content-Range, reports progress, then PUT', async () => {
    const data = randomBytes(10_000);
    const location = await startUpload('app');
    const first = await h.request(location, {
      method: 'PATCH',
      headers: { 'Content-Range': '0-3999', 'Content-Type': 'application/octet-stream' },
      body: data.subarray(0, 4000),
    });
    expect(first.status).toBe(202);
    expect(first.headers.get('Range')).toBe('0-3999');
    expect(first.headers.get('Location')).toBe(location);
    const status = await h.request(location);
    expect(status.status).toBe(204);
    expect(status.headers.get('Range')).toBe('0-3999');
    const second = await h.request(location, {
      method: 'PATCH',
      headers: { 'Content-Range': '4000-9999' },
      body: data.subarray(4000),
    });
    expect(second.status).toBe(202);
    expect(second.headers.get('Range')).toBe('0-9999');
    const put = await h.request(`${location}?digest=${sha256(data)}`, { method: 'PUT' });
    expect(put.status).toBe(201);
    const get = await h.request(`/v2/app/blobs/${sha256(data)}`);
    expect(Buffer.from(await get.arrayBuffer()).equals(data)).toBe(true);
  });

  it('accepts a streamed PATCH with neither Content-Range nor Content-Length (docker, podman)', async () => {
    const parts = [randomBytes(70_000), randomBytes(1), randomBytes(65_536)];
    const all = Buffer.concat(parts);
    const location = await startUpload('app');
    const patch = await h.request(location, streamed(parts));
    expect(patch.status).toBe(202);
    expect(patch.headers.get('Range')).toBe(`0-${all.length - 1}`);
    const put = await h.request(`${location}?digest=${sha256(all)}`, { method: 'PUT' });
    expect(put.status).toBe(201);
    const get = await h.request(`/v2/app/blobs/${sha256(all)}`);
    expect(Buffer.from(await get.arrayBuffer()).equals(all)).toBe(true);
  });

  it('answers 416 with the current Range to an out-of-order chunk, and the upload stays usable', async () => {
    const data = randomBytes(200);
    const location = await startUpload('app');
    await h.request(location, {
      method: 'PATCH',
      headers: { 'Content-Range': '0-99' },
      body: data.subarray(0, 100),
    });
    const skip = await h.request(location, {
      method: 'PATCH',
      headers: { 'Content-Range': '150-199' },
      body: data.subarray(150),
    });
    expect(skip.status).toBe(416);
    expect(skip.headers.get('Range')).toBe('0-99');
    expect(await errorCode(skip)).toBe('RANGE_INVALID');
    const status = await h.request(location);
    expect(status.status).toBe(204);
    expect(status.headers.get('Range')).toBe('0-99');
    await h.request(location, {
      method: 'PATCH',
      headers: { 'Content-Range': '100-199' },
      body: data.subarray(100),
    });
    expect((await h.request(`${location}?digest=${sha256(data)}`, { method: 'PUT' })).status).toBe(201);
  });

  it('cancels an upload with DELETE', async () => {
    const location = await startUpload('app');
    await h.request(location, { method: 'PATCH', body: 'abc' });
    const del = await h.request(location, { method: 'DELETE' });
    expect(del.status).toBe(204);
    const after = await h.request(location);
    expect(after.status).toBe(404);
    expect(await errorCode(after)).toBe('BLOB_UPLOAD_UNKNOWN');
    expect(await children('/uploads')).toEqual([]);
  });

  it('rejects a digest mismatch with 400 DIGEST_INVALID and makes nothing visible', async () => {
    const data = randomBytes(1000);
    const wrong = sha256('something else');
    const mono = await h.request(`/v2/app/blobs/uploads/?digest=${wrong}`, { method: 'POST', body: data });
    expect(mono.status).toBe(400);
    expect(await errorCode(mono)).toBe('DIGEST_INVALID');
    const location = await startUpload('app');
    await h.request(location, { method: 'PATCH', body: data });
    const put = await h.request(`${location}?digest=${wrong}`, { method: 'PUT' });
    expect(put.status).toBe(400);
    expect(await errorCode(put)).toBe('DIGEST_INVALID');
    for (const d of [wrong, sha256(data)]) {
      expect((await h.request(`/v2/app/blobs/${d}`, { method: 'HEAD' })).status).toBe(404);
    }
    expect(await children('/blobs/sha256')).toEqual([]);
    expect(await children('/uploads')).toEqual([]);
  });

  it('verifies sha512 digests, with digest-algorithm on the POST', async () => {
    const data = randomBytes(777);
    const digest = `sha512:${createHash('sha512').update(data).digest('hex')}`;
    const location = await startUpload('app', '?digest-algorithm=sha512');
    await h.request(location, { method: 'PATCH', body: data });
    const put = await h.request(`${location}?digest=${digest}`, { method: 'PUT' });
    expect(put.status).toBe(201);
    expect(put.headers.get('Docker-Content-Digest')).toBe(digest);
    const mono = await h.request(`/v2/other/blobs/uploads/?digest=${digest}`, { method: 'POST', body: data });
    expect(mono.status).toBe(201);
    const get = await h.request(`/v2/other/blobs/${digest}`);
    expect(Buffer.from(await get.arrayBuffer()).equals(data)).toBe(true);
    const bad = await h.request('/v2/app/blobs/uploads/?digest-algorithm=md5', { method: 'POST' });
    expect(bad.status).toBe(400);
  });

  it('rejects malformed digests with 400', async () => {
    for (const d of ['sha256:abc', 'md5:0123', 'nocolon', `sha256:${'A'.repeat(64)}`]) {
      const res = await h.request(`/v2/app/blobs/${d}`);
      expect(res.status, d).toBe(400);
      expect(await errorCode(res)).toBe('DIGEST_INVALID');
    }
  });

  it('announces OCI-Chunk-Min-Length when configured', async () => {
    h = makeHarness({ chunkMinLength: 1024 * 1024 });
    const res = await h.request('/v2/app/blobs/uploads/', { method: 'POST' });
    expect(res.headers.get('OCI-Chunk-Min-Length')).toBe('1048576');
  });

  it('does not accept an upload id from another repository', async () => {
    const location = await startUpload('a');
    const id = location.split('/').pop();
    const res = await h.request(`/v2/b/blobs/uploads/${id}`);
    expect(res.status).toBe(404);
    expect(await errorCode(res)).toBe('BLOB_UPLOAD_UNKNOWN');
  });
});

describe('cross-repository mount', () => {
  it('mounts a blob from a repository that has it (201)', async () => {
    const digest = await h.pushBlob('src/repo', 'layer bytes');
    const res = await h.request(`/v2/dst/repo/blobs/uploads/?mount=${digest}&from=src/repo`, {
      method: 'POST',
    });
    expect(res.status).toBe(201);
    expect(res.headers.get('Location')).toBe(`/v2/dst/repo/blobs/${digest}`);
    expect(res.headers.get('Docker-Content-Digest')).toBe(digest);
    expect((await h.request(`/v2/dst/repo/blobs/${digest}`)).status).toBe(200);
  });

  it('falls back to an upload session (202) when `from` lacks the blob', async () => {
    const digest = await h.pushBlob('src', 'only here');
    const res = await h.request(`/v2/dst/blobs/uploads/?mount=${digest}&from=elsewhere`, { method: 'POST' });
    expect(res.status).toBe(202);
    expect(res.headers.get('Location')).toMatch(/^\/v2\/dst\/blobs\/uploads\//);
    expect((await h.request(`/v2/dst/blobs/${digest}`, { method: 'HEAD' })).status).toBe(404);
  });

  it('mounts without `from` when the registry knows the blob, else 202', async () => {
    const digest = await h.pushBlob('src', 'known blob');
    expect((await h.request(`/v2/dst/blobs/uploads/?mount=${digest}`, { method: 'POST' })).status).toBe(201);
    const unknown = sha256('never pushed');
    expect((await h.request(`/v2/dst/blobs/uploads/?mount=${unknown}`, { method: 'POST' })).status).toBe(202);
  });
});

describe('blob GET and HEAD', () => {
  const data = Buffer.from('0123456789abcdefghij');
  let digest: string;
  beforeEach(async () => {
    digest = await h.pushBlob('app', data);
  });

  it('HEAD carries length and digest and no body', async () => {
    const res = await h.request(`/v2/app/blobs/${digest}`, { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(res.headers.get('Content-Length')).toBe('20');
    expect(res.headers.get('Docker-Content-Digest')).toBe(digest);
    expect(await res.text()).toBe('');
  });

  it.each([
    ['bytes=0-4', '01234', 'bytes 0-4/20'],
    ['bytes=15-', 'fghij', 'bytes 15-19/20'],
    ['bytes=-3', 'hij', 'bytes 17-19/20'],
    ['bytes=18-100', 'ij', 'bytes 18-19/20'],
  ])('answers Range %s with 206', async (range, body, cr) => {
    const res = await h.request(`/v2/app/blobs/${digest}`, { headers: { Range: range } });
    expect(res.status).toBe(206);
    expect(res.headers.get('Content-Range')).toBe(cr);
    expect(res.headers.get('Content-Length')).toBe(String(body.length));
    expect(await res.text()).toBe(body);
  });

  it('answers an unsatisfiable Range with 416', async () => {
    const res = await h.request(`/v2/app/blobs/${digest}`, { headers: { Range: 'bytes=20-' } });
    expect(res.status).toBe(416);
    expect(res.headers.get('Content-Range')).toBe('bytes */20');
    expect(await errorCode(res)).toBe('RANGE_INVALID');
  });

  it('does not serve a blob to a repository that has no link to it', async () => {
    const res = await h.request(`/v2/other/blobs/${digest}`);
    expect(res.status).toBe(404);
    expect(await errorCode(res)).toBe('BLOB_UNKNOWN');
  });

  it('deletes the blob from the repository (202), then 404', async () => {
    expect((await h.request(`/v2/app/blobs/${digest}`, { method: 'DELETE' })).status).toBe(202);
    expect((await h.request(`/v2/app/blobs/${digest}`, { method: 'HEAD' })).status).toBe(404);
    const again = await h.request(`/v2/app/blobs/${digest}`, { method: 'DELETE' });
    expect(again.status).toBe(404);
    expect(await errorCode(again)).toBe('BLOB_UNKNOWN');
  });

  it('serves a blob pushed, chunk-uploaded or mounted here without looking it up in storage', async () => {
    const stats: string[] = [];
    const inner = checked(createMemoryDriver());
    h = makeHarness({
      storage: {
        ...inner,
        stat: (p) => {
          stats.push(p);
          return inner.stat(p);
        },
      },
    });
    const pushed = await h.pushBlob('app', data);
    const chunked = Buffer.from('chunked blob');
    const location = await startUpload('app');
    const put = await h.request(`${location}?digest=${sha256(chunked)}`, { method: 'PUT', body: chunked });
    expect(put.status).toBe(201);
    const mount = await h.request(`/v2/mounted/blobs/uploads/?mount=${pushed}&from=app`, { method: 'POST' });
    expect(mount.status).toBe(201);
    stats.length = 0;
    for (const [repo, d, bytes] of [
      ['app', pushed, data],
      ['app', sha256(chunked), chunked],
      ['mounted', pushed, data],
    ] as const) {
      const res = await h.request(`/v2/${repo}/blobs/${d}`);
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(bytes)).toBe(true);
    }
    expect(stats).toEqual([]);
    // A deleted link is forgotten at once.
    expect((await h.request(`/v2/mounted/blobs/${pushed}`, { method: 'DELETE' })).status).toBe(202);
    expect((await h.request(`/v2/mounted/blobs/${pushed}`, { method: 'HEAD' })).status).toBe(404);
  });

  it('does not remember a link that a racing DELETE removed', async () => {
    // The link lookup of a HEAD reads storage before the DELETE and answers after it.
    let hold: Promise<void> | undefined;
    let held!: () => void;
    const holding = new Promise<void>((r) => (held = r));
    const inner = checked(createMemoryDriver());
    const storage: StorageDriver = {
      ...inner,
      stat: async (p) => {
        const info = await inner.stat(p);
        if (hold && p.includes('/_layers/')) {
          held();
          await hold;
        }
        return info;
      },
    };
    const d = await makeHarness({ storage }).pushBlob('app', data);
    h = makeHarness({ storage }); // a registry that has not seen the blob yet
    let release!: () => void;
    hold = new Promise((r) => (release = r));
    const head = h.request(`/v2/app/blobs/${d}`, { method: 'HEAD' });
    await holding; // the HEAD has read the link and waits
    hold = undefined;
    expect((await h.request(`/v2/app/blobs/${d}`, { method: 'DELETE' })).status).toBe(202);
    release();
    expect((await head).status).toBe(200); // it looked before the DELETE
    expect((await h.request(`/v2/app/blobs/${d}`, { method: 'HEAD' })).status).toBe(404);
  });

  it('refuses deletes when they are disabled', async () => {
    h = makeHarness({ deleteEnabled: false });
    const d = await h.pushBlob('app', data);
    const res = await h.request(`/v2/app/blobs/${d}`, { method: 'DELETE' });
    expect(res.status).toBe(405);
    expect(await errorCode(res)).toBe('UNSUPPORTED');
  });
});
