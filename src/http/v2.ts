// The OCI Distribution API (/v2). Each route parses the request, calls the registry facade and
// shapes the response; the protocol's rules live in registry/, the error form in respond.ts.
import { type Context, Hono } from 'hono';
import { OciError } from '../errors.ts';
import {
  type Body,
  isAlgorithm,
  type Page,
  parseDigest,
  type Registry,
  rangeHeader,
} from '../registry/index.ts';
import type { AppEnv } from './env.ts';
import { contentRange, parseRange, parseUploadContentRange } from './range.ts';
import { checkTagPush, mayPull, type RegistryAuth, registryAccess } from './registry-auth.ts';
import { sendBlob } from './send.ts';

export interface V2Options {
  readonly chunkMinLength: number;
  /** Access control: registryAccess() runs before every route; handlers check mounts and tags. */
  readonly auth: RegistryAuth;
  readonly service: string;
  readonly basicAuth: boolean;
}

type C = Context<AppEnv>;

const noBody: Body = { async *[Symbol.asyncIterator]() {} };

/** The request body as a byte stream: the Node request itself when served by the Node adapter. */
function body(c: C): Body | undefined {
  const incoming = c.env?.incoming;
  if (incoming) return incoming as AsyncIterable<Uint8Array>;
  return (c.req.raw.body as AsyncIterable<Uint8Array> | null) ?? undefined;
}

/**
 * An upload's body for the registry, which is done with each chunk once it asks for the next.
 * Under the Node adapter every chunk is a socket read of its own, freed at that point: left to
 * the garbage collector, 16 KiB reads arriving at 50 MiB/s and more, counted by V8 as external
 * memory, triggered a full mark-compact every few hundred milliseconds (a profile of pushes).
 */
function uploadBody(c: C): Body | undefined {
  const incoming = c.env?.incoming as AsyncIterable<Uint8Array> | undefined;
  if (!incoming) return body(c);
  return (async function* () {
    for await (const chunk of incoming) {
      yield chunk;
      if (chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength)
        (chunk.buffer as ArrayBuffer).transfer(0);
    }
  })();
}

/** The body's declared length, when the client sent one (not with chunked transfer encoding). */
function bodyLength(c: C): number | undefined {
  const v = c.req.header('content-length');
  if (v === undefined || !/^\d{1,15}$/.test(v)) return undefined;
  return Number(v);
}

/** Reads a whole body of at most `max` bytes (manifests); 413 beyond that. */
async function readBounded(c: C, max: number): Promise<Uint8Array> {
  const declared = Number(c.req.header('content-length'));
  if (declared > max) throw new OciError('SIZE_TOO_LARGE', `manifest larger than ${max} bytes`);
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of body(c) ?? noBody) {
    total += chunk.byteLength;
    if (total > max) throw new OciError('SIZE_TOO_LARGE', `manifest larger than ${max} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

function pageLink(c: C, path: string, page: Page, n: number | undefined): void {
  if (page.next === undefined) return;
  const q = new URLSearchParams();
  q.set('n', String(n ?? page.items.length));
  q.set('last', page.next);
  c.header('Link', `<${path}?${q.toString()}>; rel="next"`);
}

/** `n` as the spec means it: a count; anything unparseable is treated as absent. */
function pageSize(c: C): number | undefined {
  const raw = c.req.query('n');
  if (raw === undefined || !/^\d+$/.test(raw)) return undefined;
  return Number(raw);
}

function uploadLocation(name: string, id: string): string {
  return `/v2/${name}/blobs/uploads/${id}`;
}

function uploadResponse(c: C, status: 202 | 204, name: string, id: string, size: number): Response {
  c.header('Location', uploadLocation(name, id));
  c.header('Range', rangeHeader(size));
  c.header('Docker-Upload-UUID', id);
  c.header('Content-Length', '0');
  return c.body(null, status);
}

function blobCreated(c: C, name: string, digest: string): Response {
  c.header('Location', `/v2/${name}/blobs/${digest}`);
  c.header('Docker-Content-Digest', digest);
  c.header('Content-Length', '0');
  return c.body(null, 201);
}

export function v2Routes(registry: Registry, opts: V2Options) {
  const app = new Hono<AppEnv>();
  app.use(registryAccess({ auth: opts.auth, service: opts.service, basic: opts.basicAuth }));
  const name = (c: C) => {
    const n = c.req.param('name') ?? '';
    registry.assertName(n);
    return n;
  };

  // --- base and listings -----------------------------------------------------------------
  const base = (c: C) => c.json({});
  app.get('/', base);

  app.get('/_catalog', async (c) => {
    const n = pageSize(c);
    const page = await registry.listRepositories(n, c.req.query('last'));
    pageLink(c, '/v2/_catalog', page, n);
    return c.json({ repositories: page.items });
  });

  app.get('/:name{.+}/tags/list', async (c) => {
    const repo = name(c);
    const n = pageSize(c);
    const page = await registry.listTags(repo, n, c.req.query('last'));
    pageLink(c, `/v2/${repo}/tags/list`, page, n);
    return c.json({ name: repo, tags: page.items });
  });

  app.get('/:name{.+}/referrers/:digest', async (c) => {
    const repo = name(c);
    const d = parseDigest(c.req.param('digest'));
    const artifactType = c.req.query('artifactType');
    const index = await registry.referrers(repo, d, artifactType);
    if (artifactType !== undefined) c.header('OCI-Filters-Applied', 'artifactType');
    c.header('Content-Type', 'application/vnd.oci.image.index.v1+json');
    return c.body(JSON.stringify(index));
  });

  // --- manifests -------------------------------------------------------------------------
  app.get('/:name{.+}/manifests/:reference', async (c) => {
    const m = await registry.getManifest(name(c), c.req.param('reference'));
    const headers = {
      'Content-Type': m.mediaType,
      'Content-Length': String(m.bytes.byteLength),
      'Docker-Content-Digest': m.digest.value,
      ETag: `"${m.digest.value}"`,
    };
    // HEAD is routed here by Hono; it drops the body, we only skip building it.
    return new Response(c.req.method === 'HEAD' ? null : m.bytes, { status: 200, headers });
  });

  app.put('/:name{.+}/manifests/:reference', async (c) => {
    const repo = name(c);
    const reference = c.req.param('reference');
    const bytes = await readBounded(c, registry.manifestMaxBytes);
    const extraTags = c.req.queries('tag') ?? [];
    const result = await registry.putManifest(
      repo,
      reference,
      bytes,
      c.req.header('content-type'),
      extraTags,
      (tag, moves) => checkTagPush(c, opts.auth, repo, tag, moves),
    );
    c.header('Location', `/v2/${repo}/manifests/${result.digest.value}`);
    c.header('Docker-Content-Digest', result.digest.value);
    if (result.subject) c.header('OCI-Subject', result.subject.value);
    for (const t of extraTags) c.header('OCI-Tag', t, { append: true });
    c.header('Content-Length', '0');
    return c.body(null, 201);
  });

  app.delete('/:name{.+}/manifests/:reference', async (c) => {
    await registry.deleteManifest(name(c), c.req.param('reference'));
    c.header('Content-Length', '0');
    return c.body(null, 202);
  });

  // --- uploads (registered before blobs/:digest so 'uploads' is never taken for a digest) ---
  const startUpload = async (c: C) => {
    const repo = name(c);
    const mount = c.req.query('mount');
    if (mount !== undefined) {
      const d = parseDigest(mount);
      const from = c.req.query('from');
      if (from !== undefined) registry.assertName(from);
      // With auth on, a mount needs a source the caller may read: knowing a digest is no right
      // to its bytes, so a mount without `from` is never honoured then.
      const allowed = from !== undefined ? await mayPull(c, opts.auth, from) : !opts.auth.enabled;
      const mounted = allowed && (await registry.mountBlob(repo, d, from));
      if (mounted) return blobCreated(c, repo, d.value);
      // Not mountable: the spec asks for an ordinary upload session instead.
    }
    const digest = c.req.query('digest');
    if (digest !== undefined && mount === undefined) {
      const d = parseDigest(digest);
      await registry.monolithicUpload(repo, d, uploadBody(c) ?? noBody, bodyLength(c));
      return blobCreated(c, repo, d.value);
    }
    const alg = c.req.query('digest-algorithm');
    if (alg !== undefined && !isAlgorithm(alg)) {
      throw new OciError('DIGEST_INVALID', `unsupported digest algorithm ${alg}; use sha256 or sha512`);
    }
    const { id } = await registry.startUpload(repo, alg);
    if (opts.chunkMinLength > 0) c.header('OCI-Chunk-Min-Length', String(opts.chunkMinLength));
    return uploadResponse(c, 202, repo, id, 0);
  };
  app.post('/:name{.+}/blobs/uploads', startUpload);

  app.get('/:name{.+}/blobs/uploads/:id', async (c) => {
    const repo = name(c);
    const id = c.req.param('id');
    const { size } = await registry.uploadStatus(repo, id);
    return uploadResponse(c, 204, repo, id, size);
  });

  app.patch('/:name{.+}/blobs/uploads/:id', async (c) => {
    const repo = name(c);
    const id = c.req.param('id');
    const rangeHeaderValue = c.req.header('content-range');
    let range: { start: number; end: number } | undefined;
    if (rangeHeaderValue !== undefined) {
      range = parseUploadContentRange(rangeHeaderValue);
      if (!range)
        throw new OciError('RANGE_INVALID', `malformed Content-Range: ${rangeHeaderValue.slice(0, 100)}`);
    }
    const { size } = await registry.appendUpload(repo, id, uploadBody(c) ?? noBody, range, bodyLength(c));
    return uploadResponse(c, 202, repo, id, size);
  });

  app.put('/:name{.+}/blobs/uploads/:id', async (c) => {
    const repo = name(c);
    const digest = c.req.query('digest');
    if (digest === undefined) throw new OciError('DIGEST_INVALID', 'the digest query parameter is required');
    const d = parseDigest(digest);
    await registry.finishUpload(repo, c.req.param('id'), d, uploadBody(c), bodyLength(c));
    return blobCreated(c, repo, d.value);
  });

  app.delete('/:name{.+}/blobs/uploads/:id', async (c) => {
    await registry.cancelUpload(name(c), c.req.param('id'));
    c.header('Content-Length', '0');
    return c.body(null, 204);
  });

  // --- blobs -----------------------------------------------------------------------------
  app.get('/:name{.+}/blobs/:digest', async (c) => {
    const repo = name(c);
    const d = parseDigest(c.req.param('digest'));
    const blob = await registry.statBlob(repo, d);
    const headers: Record<string, string> = {
      'Docker-Content-Digest': d.value,
      'Content-Type': 'application/octet-stream',
      'Accept-Ranges': 'bytes',
      ETag: `"${d.value}"`,
      'Cache-Control': 'max-age=31536000',
    };
    const r = parseRange(c.req.header('range'), blob.size);
    if (r.kind === 'unsatisfiable') {
      throw new OciError('RANGE_INVALID', undefined, {
        headers: { 'Content-Range': `bytes */${blob.size}` },
      });
    }
    const start = r.kind === 'partial' ? r.range.start : 0;
    const end = r.kind === 'partial' ? r.range.end : blob.size - 1;
    const length = blob.size === 0 ? 0 : end - start + 1;
    headers['Content-Length'] = String(length);
    const status = r.kind === 'partial' ? 206 : 200;
    if (r.kind === 'partial') headers['Content-Range'] = contentRange(r.range, blob.size);
    if (c.req.method === 'HEAD' || length === 0) return new Response(null, { status, headers });
    return sendBlob(c, status, headers, registry.blobBody(d, start, length));
  });

  app.delete('/:name{.+}/blobs/:digest', async (c) => {
    await registry.deleteBlob(name(c), parseDigest(c.req.param('digest')));
    c.header('Content-Length', '0');
    return c.body(null, 202);
  });

  return app;
}
