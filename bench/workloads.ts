// What the benchmark does to a registry: the docker-style two-step push, chunked push, verified
// pulls, and fixed-duration request loops with latency percentiles. Every response is checked;
// the first wrong status or digest aborts the run.
import { createHash, randomBytes } from 'node:crypto';
import { type Client, expectStatus } from './client.ts';

export const MiB = 1024 * 1024;

export interface Blob {
  readonly bytes: Buffer;
  digest: string;
}

/**
 * `count` buffers of `size` bytes, allocated once and reused by every case of that size. Each
 * `refresh()` stamps fresh random bytes over the first 16 of each (the rest is the run's shared
 * random seed) and recomputes the digests, outside any timing: every push sends blobs no
 * registry has seen, so nothing is deduplicated, and the client allocates nothing big while
 * measuring.
 */
export function blobSet(size: number, count: number, seed: Buffer) {
  if (seed.length < size) throw new Error('seed smaller than blob');
  const blobs: Blob[] = Array.from({ length: count }, () => ({
    bytes: Buffer.allocUnsafe(size),
    digest: '',
  }));
  for (const b of blobs) seed.copy(b.bytes, 0, 0, size);
  const refresh = () => {
    const nonce = randomBytes(16 * count);
    blobs.forEach((b, i) => {
      nonce.copy(b.bytes, 0, 16 * i, 16 * (i + 1));
      b.digest = `sha256:${createHash('sha256').update(b.bytes).digest('hex')}`;
    });
    return blobs;
  };
  return { size, blobs, refresh };
}

/** Runs `task(i)` for i in [0, count) with at most `concurrency` in flight. */
export async function pool(count: number, concurrency: number, task: (i: number) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) await task(next++);
    }),
  );
}

function withDigest(location: string, digest: string): string {
  const loc = new URL(location, 'https://x');
  loc.searchParams.set('digest', digest);
  return loc.pathname + loc.search;
}

function checkCommitted(put: { headers: Record<string, unknown> }, repo: string, b: Blob, what: string) {
  if (put.headers['docker-content-digest'] !== b.digest)
    throw new Error(`${what}: Docker-Content-Digest ${put.headers['docker-content-digest']} != ${b.digest}`);
  const loc = String(put.headers.location ?? '');
  if (!loc.endsWith(`/v2/${repo}/blobs/${b.digest}`)) throw new Error(`${what}: Location ${loc}`);
}

/** The docker way: POST, one PATCH with the whole body (no Content-Range), PUT ?digest= empty. */
export async function pushDockerStyle(c: Client, repo: string, b: Blob): Promise<void> {
  const post = await c.call('POST', `/v2/${repo}/blobs/uploads/`);
  expectStatus(post, 202, 'POST upload');
  const patch = await c.call('PATCH', String(post.headers.location), {
    body: b.bytes,
    headers: { 'Content-Type': 'application/octet-stream' },
  });
  expectStatus(patch, 202, 'PATCH');
  const range = patch.headers.range;
  if (range !== `0-${b.bytes.length - 1}`) throw new Error(`PATCH: Range ${range}`);
  const put = await c.call('PUT', withDigest(String(patch.headers.location), b.digest));
  expectStatus(put, 201, 'PUT upload');
  checkCommitted(put, repo, b, 'PUT upload');
}

/** POST, PATCHes of `chunk` bytes with Content-Range, then PUT ?digest= with an empty body. */
export async function pushChunked(c: Client, repo: string, b: Blob, chunk: number): Promise<void> {
  const post = await c.call('POST', `/v2/${repo}/blobs/uploads/`);
  expectStatus(post, 202, 'POST upload');
  let location = String(post.headers.location);
  for (let off = 0; off < b.bytes.length; off += chunk) {
    const part = b.bytes.subarray(off, Math.min(off + chunk, b.bytes.length));
    const patch = await c.call('PATCH', location, {
      body: part,
      headers: {
        'Content-Range': `${off}-${off + part.length - 1}`,
        'Content-Type': 'application/octet-stream',
      },
    });
    expectStatus(patch, 202, 'PATCH chunk');
    if (patch.headers.range !== `0-${off + part.length - 1}`)
      throw new Error(`PATCH chunk: Range ${patch.headers.range}`);
    location = String(patch.headers.location);
  }
  const put = await c.call('PUT', withDigest(location, b.digest));
  expectStatus(put, 201, 'PUT chunked');
  checkCommitted(put, repo, b, 'PUT chunked');
}

/** GET a blob, hashing the body as it streams in. */
export async function pull(c: Client, repo: string, digest: string, size: number): Promise<void> {
  const r = await c.call('GET', `/v2/${repo}/blobs/${digest}`, { hash: true });
  expectStatus(r, 200, 'GET blob');
  if (r.bytes !== size) throw new Error(`GET blob: ${r.bytes} bytes, expected ${size}`);
  if (r.digest !== digest) throw new Error(`GET blob: body digest ${r.digest} != ${digest}`);
}

export interface Throughput {
  readonly mbps: number;
  readonly seconds: number;
  readonly bytes: number;
}

export async function timed(bytes: number, fn: () => Promise<void>): Promise<Throughput> {
  const t0 = performance.now();
  await fn();
  const seconds = (performance.now() - t0) / 1000;
  return { mbps: bytes / MiB / seconds, seconds, bytes };
}

export interface Latency {
  readonly rps: number;
  /** milliseconds */
  readonly p50: number;
  readonly p99: number;
  readonly requests: number;
  readonly seconds: number;
}

/** Fires `fn` from `concurrency` loops for `seconds`, recording each request's latency. */
export async function rate(seconds: number, concurrency: number, fn: () => Promise<void>): Promise<Latency> {
  // Preallocated: no array growth while measuring (80k/s is far above what 2 cores serve).
  const lat = new Float64Array(Math.ceil(seconds * 80_000) + concurrency);
  let n = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let s = performance.now(); s < end; s = performance.now()) {
        await fn();
        if (n < lat.length) lat[n++] = performance.now() - s;
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  const sorted = lat.subarray(0, n).sort();
  const q = (p: number) => sorted[Math.min(n - 1, Math.floor(p * n))] ?? Number.NaN;
  return { rps: n / elapsed, p50: q(0.5), p99: q(0.99), requests: n, seconds: elapsed };
}

export interface SmallImage {
  readonly repo: string;
  readonly layer: Blob;
  readonly manifestDigest: string;
}

/** The bytes of a small image: a 1 KiB config blob, a 1 KiB layer and an OCI manifest naming them. */
export interface SmallImageContent {
  readonly config: Blob;
  readonly layer: Blob;
  readonly manifest: Buffer;
  readonly manifestDigest: string;
}

/** A small image made of `seed` (2 KiB; random when not given), so that it can be pushed alike twice. */
export function smallImage(seed: Buffer = randomBytes(2048)): SmallImageContent {
  const [config, layer] = [seed.subarray(0, 1024), seed.subarray(1024, 2048)].map((b) => ({
    bytes: Buffer.from(b),
    digest: `sha256:${createHash('sha256').update(b).digest('hex')}`,
  }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config!.digest, size: 1024 },
      layers: [
        { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer!.digest, size: 1024 },
      ],
    }),
  );
  const manifestDigest = `sha256:${createHash('sha256').update(manifest).digest('hex')}`;
  return { config: config!, layer: layer!, manifest, manifestDigest };
}

/** Pushes a config blob, a 1 KiB layer and an OCI image manifest tagged `latest`. */
export async function pushSmallImage(
  c: Client,
  repo: string,
  content: SmallImageContent = smallImage(),
): Promise<SmallImage> {
  const { config, layer, manifest, manifestDigest } = content;
  for (const b of [config, layer]) await pushDockerStyle(c, repo, b);
  const put = await c.call('PUT', `/v2/${repo}/manifests/latest`, {
    body: manifest,
    headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
  });
  expectStatus(put, 201, 'PUT manifest');
  if (put.headers['docker-content-digest'] !== manifestDigest) throw new Error('PUT manifest: wrong digest');
  return { repo, layer, manifestDigest };
}

export function getManifest(c: Client, img: SmallImage) {
  return async () => {
    const r = await c.call('GET', `/v2/${img.repo}/manifests/latest`, {
      headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' },
      hash: true,
    });
    expectStatus(r, 200, 'GET manifest');
    if (r.headers['docker-content-digest'] !== img.manifestDigest || r.digest !== img.manifestDigest)
      throw new Error(`GET manifest: digest ${r.headers['docker-content-digest']} / body ${r.digest}`);
  };
}

export function headBlob(c: Client, img: SmallImage) {
  return async () => {
    const r = await c.call('HEAD', `/v2/${img.repo}/blobs/${img.layer.digest}`);
    expectStatus(r, 200, 'HEAD blob');
    if (r.headers['docker-content-digest'] !== img.layer.digest) throw new Error('HEAD blob: wrong digest');
    if (r.headers['content-length'] !== String(img.layer.bytes.length))
      throw new Error(`HEAD blob: Content-Length ${r.headers['content-length']}`);
  };
}
