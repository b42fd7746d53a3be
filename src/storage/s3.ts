// S3-compatible driver (AWS S3, Ceph RGW, MinIO). Keys are `<prefix><path without the leading
// slash>`; "directories" are key prefixes, listed with a '/' delimiter.
//
// Writes stream through bounded buffers (multipart.ts): parts of storage.s3.partSize (at least
// 5 MiB) go out as UploadParts of a multipart upload while the next part fills, or as their
// bytes arrive when the writer knows the size, so no blob is ever held whole in memory or
// staged on local disk; commit() completes the upload (or, for small objects, sends one
// PutObject). A writer that is closed rather than committed leaves its multipart
// upload open and the unsent tail (always smaller than a part, which S3 would refuse as a
// non-final part) as a hidden object `<prefix>.pending/<path>`; writer(path, {append}) finds
// both again. That is how an OCI upload spread over many PATCH requests, or over a restart,
// becomes the parts of one multipart upload.
//
// Reads: copyTo(), which serves blobs, signs its GET itself (s3-sign.ts) and sends it through
// a request handler (s3-direct-get.ts) that reads bodies into reused buffers; a GET that does
// not succeed that way is made again through a second client that uses the same handler. With
// readWorkers > 0 the driver also offers copySealed(), which encrypted() uses for its content
// objects: worker threads do the GET and the decryption (s3-read-workers.ts), leaving the main
// thread only the client's socket.
//
// Retries: the SDK's standard mode retries throttling (SlowDown, 503) and transient errors
// with exponential backoff and full jitter. Everything else becomes a StorageError naming the
// S3 error code.
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';
import {
  type FileInfo,
  type FileWriter,
  InvalidOffsetError,
  PathNotFoundError,
  type StorageDriver,
  StorageError,
} from './driver.ts';
import type { SealedReads } from './encrypted.ts';
import { createPartPipeline, type PartTarget, type SentPart } from './multipart.ts';
import { createDirectGetHandler, DirectBody, DirectGetError, type DirectResponse } from './s3-direct-get.ts';
import { createS3ReadWorkers } from './s3-read-workers.ts';
import { createGetSigner, escapeS3Path } from './s3-sign.ts';

export interface S3Options {
  /** Endpoint URL for S3-compatible servers; undefined for AWS S3 itself. */
  readonly endpoint?: string | undefined;
  readonly region: string;
  readonly bucket: string;
  /** Key prefix, e.g. 'berth/' (a trailing '/' is added when missing); '' for the bucket root. */
  readonly prefix: string;
  readonly forcePathStyle: boolean;
  /** Static credentials; when absent the standard AWS chain (env, profile, IMDS...) applies. */
  readonly accessKeyId?: string | undefined;
  readonly secretAccessKey?: string | undefined;
  /** Multipart part size in bytes, at least 5 MiB (S3's minimum for all but the last part). */
  readonly partSize: number;
  /** Attempts per request, retries included. */
  readonly maxAttempts: number;
  /**
   * Worker threads that read and decrypt encrypted content (s3-read-workers.ts), taking that
   * work off the thread that serves clients; 0 or unset reads on the main thread.
   */
  readonly readWorkers?: number | undefined;
}

export const minPartSize = 5 * 1024 * 1024;
/** CopyObject's limit; larger objects are copied part by part. */
const maxSingleCopy = 5 * 1024 * 1024 * 1024;
const copyPartSize = 512 * 1024 * 1024;

const name = 's3';

// With a logger configured the SDK logs every failed command (each expected 404 of a HEAD) and
// warns on every failed streamed request that it cannot retry one. Failures reach the driver as
// exceptions, and streamed parts are ours to retry (multipart.ts resends them from their buffer,
// and stops a speculative one on purpose), so only other warnings still reach stderr.
const sdkLogger = {
  debug() {},
  info() {},
  warn(...args: unknown[]) {
    if (!String(args[0]).includes('non-retryable streaming request')) console.warn(...args);
  },
  error() {},
};

function errName(e: unknown): string | undefined {
  return (e as { name?: string; Code?: string } | null)?.name ?? (e as { Code?: string } | null)?.Code;
}

function httpStatus(e: unknown): number | undefined {
  return (e as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
}

function isNotFound(e: unknown): boolean {
  const n = errName(e);
  return n === 'NoSuchKey' || n === 'NotFound' || n === 'NoSuchUpload' || httpStatus(e) === 404;
}

export function createS3Driver(opts: S3Options) {
  if (opts.partSize < minPartSize) throw new RangeError(`partSize must be at least ${minPartSize}`);
  if (opts.readWorkers !== undefined && !(Number.isInteger(opts.readWorkers) && opts.readWorkers >= 0))
    throw new RangeError('readWorkers must be a whole number, 0 or more');
  const prefix = opts.prefix === '' || opts.prefix.endsWith('/') ? opts.prefix : `${opts.prefix}/`;
  const Bucket = opts.bucket;
  const config = {
    region: opts.region,
    ...(opts.endpoint !== undefined && { endpoint: opts.endpoint }),
    forcePathStyle: opts.forcePathStyle,
    ...(opts.accessKeyId !== undefined &&
      opts.secretAccessKey !== undefined && {
        credentials: { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey },
      }),
    maxAttempts: opts.maxAttempts,
    retryMode: 'standard',
    logger: sdkLogger,
    // One resolved middleware stack per command class instead of one per request: about a
    // fifth of the SDK's CPU per request (a probe of GetObject against a local server: about
    // 1.2 against 1.0 ms of CPU per request, the server included).
    // Sound as long as nothing adds middleware to a single command, which berth never does.
    cacheMiddleware: true,
    // S3-compatible servers (RGW, older MinIO) reject or corrupt aws-chunked bodies with
    // trailing checksums, the SDK's default since 2025: send checksums only where required.
    ...(opts.endpoint !== undefined && {
      requestChecksumCalculation: 'WHEN_REQUIRED' as const,
      responseChecksumValidation: 'WHEN_REQUIRED' as const,
    }),
  };
  const client = new S3Client(config);
  // Serving reads (copyTo) go through a second client whose request handler reads bodies into
  // reused buffers (s3-direct-get.ts). Its reads are always ranged, and S3 returns no
  // whole-object checksum for a range, so response checksum validation has nothing to check.
  const direct = createDirectGetHandler();
  const reads = new S3Client({
    ...config,
    requestHandler: direct,
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  // Blob reads sign their ranged GET themselves (s3-sign.ts) and hand it straight to the direct
  // handler: the SDK's own work per request cost a few milliseconds of CPU per read in profiles
  // of pulls. Only with an endpoint and path-style URLs, where building the URL is no guess;
  // anything but a 206 for exactly the range asked is dropped and the read made again through
  // the SDK, which retries, corrects clock skew and names the error.
  const signedGet =
    opts.endpoint !== undefined && opts.forcePathStyle ? signedRangeGet(opts.endpoint) : undefined;
  // Parts streamed while a client uploads can be aborted, and a send with options (the abort
  // signal) is one the SDK's middleware cache cannot serve and clears for the whole client: on
  // `client` that would undo the cache at every part. They get a client of their own.
  const abortableParts = new S3Client({ ...config, cacheMiddleware: false });

  const key = (path: string) => prefix + path.slice(1);
  const dirKey = (path: string) => (path === '/' ? prefix : `${prefix}${path.slice(1)}/`);
  const tailKey = (path: string) => `${prefix}.pending/${path.slice(1)}`;
  const pathOf = (k: string) => `/${k.slice(prefix.length)}`;

  /**
   * A GET of `range` (bytes=first-last) of key k sent without the SDK: its body, or undefined to
   * ask the SDK instead.
   */
  function signedRangeGet(endpoint: string) {
    const ep = new URL(endpoint);
    const port = ep.port === '' ? undefined : Number(ep.port);
    const base = `${ep.pathname.replace(/\/+$/, '')}/${escapeS3Path(Bucket)}/`;
    const sign = createGetSigner();
    return async (k: string, range: string): Promise<DirectBody | undefined> => {
      const path = base + escapeS3Path(k);
      let response: DirectResponse;
      try {
        const [credentials, region] = await Promise.all([reads.config.credentials(), reads.config.region()]);
        const headers = sign({
          host: ep.host,
          path,
          headers: { range },
          region,
          credentials,
          now: new Date(Date.now() + reads.config.systemClockOffset),
        });
        ({ response } = await direct.handle({
          method: 'GET',
          protocol: ep.protocol,
          hostname: ep.hostname,
          port,
          path,
          headers,
        }));
      } catch {
        return undefined; // the SDK tries again, with its retries, and reports what fails
      }
      const answered = response.headers['content-range'];
      if (response.statusCode === 206 && answered?.startsWith(`${range.replace('=', ' ')}/`))
        return response.body;
      response.body.destroy();
      return undefined;
    };
  }

  function wrap(path: string, e: unknown): Error {
    if (e instanceof StorageError) return e;
    if (isNotFound(e)) return new PathNotFoundError(name, path, { cause: e });
    const code = errName(e) ?? 'error';
    const status = httpStatus(e);
    return new StorageError(
      name,
      path,
      `${code}${status ? ` (HTTP ${status})` : ''}: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }

  async function head(path: string): Promise<{ size: number; modTime: Date } | undefined> {
    try {
      const r = await client.send(new HeadObjectCommand({ Bucket, Key: key(path) }));
      return { size: r.ContentLength ?? 0, modTime: r.LastModified ?? new Date(0) };
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw wrap(path, e);
    }
  }

  /** Every key below a prefix, page by page (1000 per page, S3's maximum). */
  async function* keysUnder(p: string): AsyncGenerator<string[]> {
    let ContinuationToken: string | undefined;
    do {
      const r = await client.send(new ListObjectsV2Command({ Bucket, Prefix: p, ContinuationToken }));
      yield (r.Contents ?? []).map((o) => o.Key!).filter(Boolean);
      ContinuationToken = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (ContinuationToken);
  }

  async function deleteKeys(keys: string[]): Promise<void> {
    if (keys.length === 1) {
      await client.send(new DeleteObjectCommand({ Bucket, Key: keys[0]! }));
      return;
    }
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      const r = await client.send(
        new DeleteObjectsCommand({ Bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }),
      );
      const failed = (r.Errors ?? []).filter((x) => x.Code !== 'NoSuchKey');
      if (failed.length > 0)
        throw new StorageError(name, pathOf(failed[0]!.Key ?? ''), `delete failed: ${failed[0]!.Code}`);
    }
  }

  /** Open multipart uploads whose key starts with p (a writer's own or pending ones). */
  async function uploadsUnder(p: string): Promise<{ Key: string; UploadId: string; Initiated: Date }[]> {
    const out: { Key: string; UploadId: string; Initiated: Date }[] = [];
    let KeyMarker: string | undefined;
    let UploadIdMarker: string | undefined;
    do {
      const r = await client.send(
        new ListMultipartUploadsCommand({ Bucket, Prefix: p, KeyMarker, UploadIdMarker }),
      );
      for (const u of r.Uploads ?? []) {
        if (u.Key && u.UploadId)
          out.push({ Key: u.Key, UploadId: u.UploadId, Initiated: u.Initiated ?? new Date(0) });
      }
      KeyMarker = r.IsTruncated ? r.NextKeyMarker : undefined;
      UploadIdMarker = r.IsTruncated ? r.NextUploadIdMarker : undefined;
    } while (KeyMarker);
    return out;
  }

  const uploadsFor = async (k: string) => (await uploadsUnder(k)).filter((u) => u.Key === k);

  async function partsOf(
    k: string,
    UploadId: string,
  ): Promise<{ PartNumber: number; ETag: string; Size: number }[]> {
    const out: { PartNumber: number; ETag: string; Size: number }[] = [];
    let PartNumberMarker: string | undefined;
    do {
      const r = await client.send(new ListPartsCommand({ Bucket, Key: k, UploadId, PartNumberMarker }));
      for (const p of r.Parts ?? [])
        out.push({ PartNumber: p.PartNumber!, ETag: p.ETag!, Size: p.Size ?? 0 });
      PartNumberMarker = r.IsTruncated ? r.NextPartNumberMarker : undefined;
    } while (PartNumberMarker);
    return out.sort((a, b) => a.PartNumber - b.PartNumber);
  }

  async function abort(k: string, UploadId: string): Promise<void> {
    try {
      await client.send(new AbortMultipartUploadCommand({ Bucket, Key: k, UploadId }));
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
  }

  async function keyExists(k: string): Promise<boolean> {
    try {
      await client.send(new HeadObjectCommand({ Bucket, Key: k }));
      return true;
    } catch (e) {
      if (isNotFound(e)) return false;
      throw e;
    }
  }

  async function readTail(path: string): Promise<Buffer | undefined> {
    try {
      const r = await client.send(new GetObjectCommand({ Bucket, Key: tailKey(path) }));
      return Buffer.from(await r.Body!.transformToByteArray());
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  async function deleteTail(path: string): Promise<void> {
    await client.send(new DeleteObjectCommand({ Bucket, Key: tailKey(path) }));
  }

  const readWorkers =
    opts.readWorkers && opts.readWorkers > 0
      ? createS3ReadWorkers(opts, { workers: opts.readWorkers })
      : undefined;

  const driver: StorageDriver &
    Partial<SealedReads> & {
      /** Checks at start that the bucket answers with these credentials; throws saying which part failed. */
      checkBucket(): Promise<void>;
      /** Aborts multipart uploads started before `olderThan` (abandoned writers). Returns how many. */
      sweepUploads(olderThan: Date): Promise<number>;
      destroy(): void;
    } = {
    name,

    async checkBucket() {
      try {
        await client.send(new HeadBucketCommand({ Bucket }));
      } catch (e) {
        const status = httpStatus(e);
        const where = opts.endpoint ?? `AWS S3 in ${opts.region}`;
        if (status === 404 || errName(e) === 'NotFound' || errName(e) === 'NoSuchBucket') {
          throw new StorageError(name, '/', `bucket ${Bucket} does not exist at ${where}`, { cause: e });
        }
        if (status === 403 || status === 401) {
          throw new StorageError(
            name,
            '/',
            `credentials were refused for bucket ${Bucket} at ${where} (HTTP ${status})`,
            {
              cause: e,
            },
          );
        }
        if (status === undefined) {
          throw new StorageError(name, '/', `cannot reach ${where}: ${(e as Error).message}`, { cause: e });
        }
        throw wrap('/', e);
      }
    },

    async sweepUploads(olderThan) {
      let swept = 0;
      for (const u of await uploadsUnder(prefix)) {
        if (u.Initiated < olderThan) {
          await abort(u.Key, u.UploadId);
          swept++;
        }
      }
      return swept;
    },

    destroy() {
      client.destroy();
      reads.destroy();
      abortableParts.destroy();
      direct.destroy();
      void readWorkers?.close();
    },

    // Present only with read workers: encrypted() then reads content objects through them.
    ...(readWorkers && { copySealed: readWorkers.copySealed }),

    async getContent(path) {
      try {
        const r = await client.send(new GetObjectCommand({ Bucket, Key: key(path) }));
        return await r.Body!.transformToByteArray();
      } catch (e) {
        throw wrap(path, e);
      }
    },

    async putContent(path, content) {
      try {
        await client.send(
          new PutObjectCommand({ Bucket, Key: key(path), Body: content, ContentLength: content.byteLength }),
        );
      } catch (e) {
        throw wrap(path, e);
      }
    },

    async reader(path, offset = 0) {
      if (offset > 0) {
        const h = await head(path);
        if (!h) throw new PathNotFoundError(name, path);
        if (offset > h.size) throw new InvalidOffsetError(name, path, offset);
        if (offset === h.size) return Readable.from([]);
      }
      try {
        const r = await client.send(
          new GetObjectCommand({ Bucket, Key: key(path), ...(offset > 0 && { Range: `bytes=${offset}-` }) }),
        );
        return r.Body as Readable;
      } catch (e) {
        throw wrap(path, e);
      }
    },

    async copyTo(path, offset, length, sink) {
      if (length === 0) {
        const h = await head(path);
        if (!h) throw new PathNotFoundError(name, path);
        if (offset > h.size) throw new InvalidOffsetError(name, path, offset);
        return;
      }
      const Range = `bytes=${offset}-${offset + length - 1}`;
      let body: Readable | undefined = await signedGet?.(key(path), Range);
      if (!body) {
        try {
          const r = await reads.send(new GetObjectCommand({ Bucket, Key: key(path), Range }));
          body = r.Body as Readable;
          if ((r.ContentLength ?? 0) < length) {
            body.destroy();
            throw new InvalidOffsetError(name, path, offset + length);
          }
        } catch (e) {
          if (errName(e) === 'InvalidRange' || httpStatus(e) === 416)
            throw new InvalidOffsetError(name, path, offset);
          throw wrap(path, e);
        }
      }
      try {
        // The SDK hands our body through as is; were a middleware to wrap it (a checksum
        // stream), it is still a Readable and is read as one.
        if (body instanceof DirectBody) await body.pump(sink);
        else for await (const chunk of body) await sink(chunk as Uint8Array);
      } catch (e) {
        throw e instanceof DirectGetError
          ? new StorageError(name, path, `reading: ${e.message}`, { cause: e })
          : e;
      } finally {
        body.destroy();
      }
    },

    async writer(path, wopts = {}) {
      const k = key(path);
      let uploadId: string | undefined;
      let earlier: SentPart[] = [];
      let sentBefore = 0;
      let tail: Buffer | undefined;
      let done = false;
      try {
        if (wopts.append) {
          const open = (await uploadsFor(k)).sort((a, b) => b.Initiated.getTime() - a.Initiated.getTime());
          // Only the newest pending write counts; older ones are leftovers of crashed writers.
          for (const stale of open.slice(1)) await abort(k, stale.UploadId);
          if (open[0]) {
            uploadId = open[0].UploadId;
            const listed = await partsOf(k, uploadId);
            earlier = listed.map(({ PartNumber, ETag }) => ({ PartNumber, ETag }));
            sentBefore = listed.reduce((n, p) => n + p.Size, 0);
          }
          tail = await readTail(path);
        }
      } catch (e) {
        throw wrap(path, e);
      }

      const target: PartTarget = {
        async begin() {
          uploadId ??= (await client.send(new CreateMultipartUploadCommand({ Bucket, Key: k }))).UploadId!;
        },
        async sendPart(PartNumber, Body, ContentLength, abortSignal) {
          const command = new UploadPartCommand({
            Bucket,
            Key: k,
            UploadId: uploadId!,
            PartNumber,
            Body,
            ContentLength,
          });
          const r = abortSignal
            ? await abortableParts.send(command, { abortSignal })
            : await client.send(command);
          return r.ETag!;
        },
      };
      const pipeline = createPartPipeline({
        partSize: opts.partSize,
        target,
        nextPart: earlier.length + 1,
        ...(tail && { initial: tail }),
      });
      const finish = () => {
        if (done) throw new StorageError(name, path, 'writer already finished');
        done = true;
      };

      const w: FileWriter = {
        get size() {
          return sentBefore + pipeline.accepted;
        },
        expect(total) {
          pipeline.expect(total - sentBefore);
        },
        async write(chunk) {
          if (done) throw new StorageError(name, path, 'writer already finished');
          try {
            await pipeline.write(chunk);
          } catch (e) {
            throw wrap(path, e);
          }
        },
        async commit() {
          finish();
          try {
            const { parts, rest, release } = await pipeline.finish();
            const all = [...earlier, ...parts];
            if (uploadId === undefined) {
              await client.send(
                new PutObjectCommand({ Bucket, Key: k, Body: rest, ContentLength: rest.byteLength }),
              );
              release();
            } else {
              if (rest.byteLength > 0 || all.length === 0) {
                all.push({
                  PartNumber: all.length + 1,
                  ETag: await target.sendPart(all.length + 1, rest, rest.byteLength),
                });
              }
              release();
              await client.send(
                new CompleteMultipartUploadCommand({
                  Bucket,
                  Key: k,
                  UploadId: uploadId,
                  MultipartUpload: { Parts: all },
                }),
              );
            }
            if (wopts.append) await deleteTail(path);
          } catch (e) {
            if (uploadId !== undefined) await abort(k, uploadId).catch(() => {});
            throw wrap(path, e);
          }
        },
        async cancel() {
          if (done) return;
          done = true;
          try {
            await pipeline.abandon();
            if (uploadId !== undefined) await abort(k, uploadId);
            await deleteTail(path);
          } catch (e) {
            throw wrap(path, e);
          }
        },
        async close() {
          finish();
          try {
            const { rest, release } = await pipeline.finish();
            if (rest.byteLength > 0) {
              await client.send(
                new PutObjectCommand({
                  Bucket,
                  Key: tailKey(path),
                  Body: rest,
                  ContentLength: rest.byteLength,
                }),
              );
              release();
            } else {
              release();
              await deleteTail(path);
            }
          } catch (e) {
            throw wrap(path, e);
          }
        },
      };
      return w;
    },

    async stat(path): Promise<FileInfo> {
      if (path !== '/') {
        const h = await head(path);
        if (h) return { path, size: h.size, modTime: h.modTime, isDir: false };
      }
      try {
        const r = await client.send(new ListObjectsV2Command({ Bucket, Prefix: dirKey(path), MaxKeys: 1 }));
        if ((r.KeyCount ?? 0) > 0 || path === '/')
          return { path, size: 0, modTime: new Date(0), isDir: true };
      } catch (e) {
        throw wrap(path, e);
      }
      throw new PathNotFoundError(name, path);
    },

    async list(path) {
      const p = dirKey(path);
      const out: string[] = [];
      let ContinuationToken: string | undefined;
      try {
        do {
          const r = await client.send(
            new ListObjectsV2Command({ Bucket, Prefix: p, Delimiter: '/', ContinuationToken }),
          );
          for (const cp of r.CommonPrefixes ?? []) out.push(pathOf(cp.Prefix!.slice(0, -1)));
          for (const o of r.Contents ?? []) out.push(pathOf(o.Key!));
          ContinuationToken = r.IsTruncated ? r.NextContinuationToken : undefined;
        } while (ContinuationToken);
      } catch (e) {
        throw wrap(path, e);
      }
      const visible = out.filter((c) => !c.slice(c.lastIndexOf('/') + 1).startsWith('.')).sort();
      if (visible.length === 0 && path !== '/') {
        // S3 has no empty directories: nothing below the prefix means no directory, unless
        // the path is a file.
        throw (await head(path))
          ? new StorageError(name, path, 'not a directory')
          : new PathNotFoundError(name, path);
      }
      return visible;
    },

    async move(source, dest) {
      const h = await head(source);
      if (!h) throw new PathNotFoundError(name, source);
      const CopySource = encodeURIComponent(`${Bucket}/${key(source)}`).replace(/%2F/g, '/');
      try {
        if (h.size <= maxSingleCopy) {
          await client.send(new CopyObjectCommand({ Bucket, Key: key(dest), CopySource }));
        } else {
          const UploadId = (await client.send(new CreateMultipartUploadCommand({ Bucket, Key: key(dest) })))
            .UploadId!;
          try {
            const Parts: { PartNumber: number; ETag: string }[] = [];
            for (let off = 0, n = 1; off < h.size; off += copyPartSize, n++) {
              const end = Math.min(off + copyPartSize, h.size) - 1;
              const r = await client.send(
                new UploadPartCopyCommand({
                  Bucket,
                  Key: key(dest),
                  UploadId,
                  PartNumber: n,
                  CopySource,
                  CopySourceRange: `bytes=${off}-${end}`,
                }),
              );
              Parts.push({ PartNumber: n, ETag: r.CopyPartResult!.ETag! });
            }
            await client.send(
              new CompleteMultipartUploadCommand({
                Bucket,
                Key: key(dest),
                UploadId,
                MultipartUpload: { Parts },
              }),
            );
          } catch (e) {
            await abort(key(dest), UploadId).catch(() => {});
            throw e;
          }
        }
        await client.send(new DeleteObjectCommand({ Bucket, Key: key(source) }));
      } catch (e) {
        throw wrap(source, e);
      }
    },

    async delete(path) {
      // What a path can hold: an object, objects below it, and pending writes of either (tails
      // and open multipart uploads). All of it is looked up at once; one round trip, not six.
      const k = key(path);
      const below = async (p: string) => {
        const out: string[] = [];
        for await (const page of keysUnder(p)) out.push(...page);
        return out;
      };
      try {
        const [file, inside, tailFile, tailsInside, open] = await Promise.all([
          keyExists(k),
          below(dirKey(path)),
          keyExists(tailKey(path)),
          below(`${tailKey(path)}/`),
          uploadsUnder(k),
        ]);
        const keys = [...(file ? [k] : []), ...inside, ...(tailFile ? [tailKey(path)] : []), ...tailsInside];
        await Promise.all([
          deleteKeys(keys),
          ...open
            .filter((u) => u.Key === k || u.Key.startsWith(`${k}/`))
            .map((u) => abort(u.Key, u.UploadId)),
        ]);
        if (!file && inside.length === 0) throw new PathNotFoundError(name, path);
      } catch (e) {
        throw wrap(path, e);
      }
    },

    // One request: the caller vouches there is no directory, tail or upload to look for.
    async deleteFile(path) {
      try {
        await client.send(new DeleteObjectCommand({ Bucket, Key: key(path) }));
      } catch (e) {
        if (!isNotFound(e)) throw wrap(path, e); // S3 answers 204 for an absent key; some peers 404
      }
    },
  };
  return driver;
}

export type S3Driver = ReturnType<typeof createS3Driver>;
