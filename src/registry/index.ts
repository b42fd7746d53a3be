// The registry facade http/ consumes: the distribution spec's operations over a StorageDriver.
// Every method takes already-routed parameters and throws OciError for protocol failures.
import { OciError } from '../errors.ts';
import type { EventSink } from '../events.ts';
import type { Logger } from '../log.ts';
import type { StorageDriver } from '../storage/index.ts';
import { type BlobInfo, blobUnknown, createBlobs } from './blobs.ts';
import { createCatalog } from './catalog.ts';
import { type Algorithm, type Digest, digestOf, looksLikeDigest, parseDigest } from './digest.ts';
import {
  createManifests,
  type Descriptor,
  mediaTypes,
  parseManifest,
  type StoredManifest,
} from './manifests.ts';
import { assertRepositoryName, assertTag } from './names.ts';
import { type Page, paginate } from './pagination.ts';
import { createReferrers } from './referrers.ts';
import { createTags } from './tags.ts';
import { type Body, type ContentRange, createUploads } from './uploads.ts';

export type { BlobBody, BlobInfo } from './blobs.ts';
export { type Algorithm, type Digest, isAlgorithm, parseDigest, tryParseDigest } from './digest.ts';
export { type Descriptor, mediaTypes, type StoredManifest } from './manifests.ts';
export { isRepositoryName, isTag } from './names.ts';
export { maxPageSize, type Page } from './pagination.ts';
export { type Body, type ContentRange, rangeHeader } from './uploads.ts';

export interface RegistryOptions {
  readonly log: Logger;
  readonly events?: EventSink;
  readonly manifestMaxBytes: number;
  readonly deleteEnabled: boolean;
  readonly uploadIdleMs: number;
}

export interface PutManifestResult {
  readonly digest: Digest;
  readonly tags: readonly string[];
  readonly subject?: Digest;
}

function manifestUnknown(name: string, reference: string): OciError {
  return new OciError('MANIFEST_UNKNOWN', undefined, { detail: { name, reference } });
}

export function createRegistry(storage: StorageDriver, opts: RegistryOptions) {
  const blobs = createBlobs(storage);
  const catalog = createCatalog(storage);
  const manifests = createManifests(storage, blobs);
  const tags = createTags(storage);
  const referrers = createReferrers(storage);
  const uploads = createUploads({
    storage,
    blobs,
    log: opts.log,
    idleMs: opts.uploadIdleMs,
    onLinked: (name) => catalog.add(name),
  });
  const emit = opts.events ?? (() => {});

  function assertDeleteEnabled() {
    if (!opts.deleteEnabled) throw new OciError('UNSUPPORTED', 'deletes are disabled on this registry');
  }

  /** A tag or a digest, validated; for a digest, also whether the repository has it. */
  async function resolve(name: string, reference: string): Promise<Digest> {
    if (looksLikeDigest(reference)) return parseDigest(reference);
    assertTag(reference);
    const d = await tags.resolve(name, reference);
    if (!d) throw manifestUnknown(name, reference);
    return d;
  }

  return {
    manifestMaxBytes: opts.manifestMaxBytes,
    assertName: assertRepositoryName,

    // --- blobs ---------------------------------------------------------------------------
    statBlob: (name: string, d: Digest): Promise<BlobInfo> => blobs.stat(name, d),
    blobBody: (d: Digest, offset: number, length: number) => blobs.body(d, offset, length),

    async deleteBlob(name: string, d: Digest): Promise<void> {
      assertDeleteEnabled();
      await blobs.unlink(name, d);
    },

    /**
     * Cross-repository mount. With `from`, only a blob that repository links is mounted; without
     * it, any blob the registry stores. Returns undefined when nothing was mounted (the caller
     * then starts an ordinary upload, as the spec asks).
     */
    async mountBlob(name: string, d: Digest, from: string | undefined): Promise<BlobInfo | undefined> {
      if (from !== undefined && !(await blobs.isLinked(from, d))) return undefined;
      const size = await blobs.storedSize(d);
      if (size === undefined) return undefined;
      await blobs.link(name, d, size);
      await catalog.add(name);
      return { digest: d, size };
    },

    // --- uploads -------------------------------------------------------------------------
    startUpload: (name: string, algorithm?: Algorithm) => uploads.start(name, algorithm),
    uploadStatus: (name: string, id: string) => uploads.status(name, id),
    appendUpload: (name: string, id: string, body: Body, range?: ContentRange, length?: number) =>
      uploads.append(name, id, body, range, length),
    finishUpload: (name: string, id: string, d: Digest, body?: Body, length?: number) =>
      uploads.finish(name, id, d, body, length),
    cancelUpload: (name: string, id: string) => uploads.cancel(name, id),
    monolithicUpload: (name: string, d: Digest, body: Body, length?: number) =>
      uploads.monolithic(name, d, body, length),

    // --- manifests -----------------------------------------------------------------------
    async putManifest(
      name: string,
      reference: string,
      bytes: Uint8Array,
      contentType: string | undefined,
      extraTags: readonly string[] = [],
      /**
       * Asked before anything is stored, once per tag the push sets, with whether the tag now
       * points at another manifest (so a caller can refuse moving it); a rejection stops the push.
       */
      beforeTag?: (tag: string, moves: boolean) => Promise<void>,
    ): Promise<PutManifestResult> {
      if (bytes.byteLength > opts.manifestMaxBytes) {
        throw new OciError('SIZE_TOO_LARGE', `manifest larger than ${opts.manifestMaxBytes} bytes`);
      }
      const byDigest = looksLikeDigest(reference);
      const pinned = byDigest ? parseDigest(reference) : undefined;
      if (!byDigest) assertTag(reference);
      extraTags.forEach(assertTag);
      const digest = digestOf(bytes, pinned?.algorithm ?? 'sha256');
      if (pinned && pinned.value !== digest.value) {
        throw new OciError('DIGEST_INVALID', `manifest has digest ${digest.value}, not ${pinned.value}`, {
          detail: { expected: pinned.value, actual: digest.value },
        });
      }
      const parsed = parseManifest(bytes, contentType);
      const setTags = [...new Set([...(byDigest ? [] : [reference]), ...extraTags])];
      if (beforeTag) {
        for (const t of setTags) {
          const current = await tags.resolve(name, t);
          await beforeTag(t, current !== undefined && current.value !== digest.value);
        }
      }
      await manifests.checkReferences(name, parsed);
      await manifests.store(name, digest, bytes, parsed.mediaType);
      if (parsed.subject) {
        const d: Descriptor = {
          mediaType: parsed.mediaType,
          digest: digest.value,
          size: bytes.byteLength,
          ...(parsed.artifactType !== undefined && { artifactType: parsed.artifactType }),
          ...(parsed.annotations !== undefined && { annotations: parsed.annotations }),
        };
        await referrers.add(name, parsed.subject, digest, d);
      }
      for (const t of setTags) await tags.set(name, t, digest);
      await catalog.add(name);
      await emit({
        type: 'manifest.pushed',
        repository: name,
        digest: digest.value,
        mediaType: parsed.mediaType,
        size: bytes.byteLength,
        tags: setTags,
        ...(parsed.subject && { subject: parsed.subject.value }),
        ...(parsed.artifactType !== undefined && { artifactType: parsed.artifactType }),
        at: new Date().toISOString(),
      });
      return { digest, tags: setTags, ...(parsed.subject && { subject: parsed.subject }) };
    },

    async getManifest(name: string, reference: string): Promise<StoredManifest> {
      const d = await resolve(name, reference);
      const m = await manifests.get(name, d);
      if (!m) throw manifestUnknown(name, reference);
      return m;
    },

    /** DELETE by digest removes the manifest and every tag on it; by tag, only the tag. */
    async deleteManifest(name: string, reference: string): Promise<void> {
      assertDeleteEnabled();
      if (!looksLikeDigest(reference)) {
        assertTag(reference);
        if (!(await tags.remove(name, reference))) throw manifestUnknown(name, reference);
        await emit({ type: 'tag.deleted', repository: name, tag: reference, at: new Date().toISOString() });
        return;
      }
      const d = parseDigest(reference);
      const m = await manifests.get(name, d);
      if (!m) throw manifestUnknown(name, reference);
      for (const t of await tags.pointingAt(name, d)) await tags.remove(name, t);
      const subject = parseManifestSubject(m);
      if (subject) await referrers.remove(name, subject, d);
      await manifests.unlink(name, d);
      await emit({
        type: 'manifest.deleted',
        repository: name,
        digest: d.value,
        at: new Date().toISOString(),
      });
    },

    // --- listings ------------------------------------------------------------------------
    async listTags(name: string, n: number | undefined, last: string | undefined): Promise<Page> {
      const all = await tags.list(name);
      if (all === undefined && !(await catalog.has(name))) {
        throw new OciError('NAME_UNKNOWN', undefined, { detail: { name } });
      }
      return paginate(all ?? [], n, last);
    },

    async listRepositories(n: number | undefined, last: string | undefined): Promise<Page> {
      return paginate(await catalog.list(), n, last);
    },

    /** The referrers response: always an image index, empty when nothing refers to d. */
    async referrers(name: string, d: Digest, artifactType?: string) {
      return {
        schemaVersion: 2 as const,
        mediaType: mediaTypes.ociIndex,
        manifests: await referrers.list(name, d, artifactType),
      };
    },

    // --- housekeeping --------------------------------------------------------------------
    async purgeUploads(olderThan: Date): Promise<number> {
      return uploads.purge(olderThan);
    },

    /** For graceful shutdown: keeps in-progress uploads resumable. */
    close: () => uploads.releaseAll(),

    blobUnknown,
  };
}

function parseManifestSubject(m: StoredManifest): Digest | undefined {
  try {
    return parseManifest(m.bytes, m.mediaType).subject;
  } catch {
    return undefined;
  }
}

export type Registry = ReturnType<typeof createRegistry>;

/**
 * Read-only access to stored images, the shape the task runner's ImageSource takes: manifests by
 * tag or digest, and a blob's bytes only when the repository links it (the link is the access
 * check, as for a pull).
 */
export function imageReader(registry: Registry) {
  return {
    async manifest(repository: string, reference: string) {
      const m = await registry.getManifest(repository, reference);
      return { digest: m.digest.value, mediaType: m.mediaType, bytes: m.bytes };
    },
    async blob(repository: string, digest: string) {
      const d = parseDigest(digest);
      const info = await registry.statBlob(repository, d);
      return registry.blobBody(d, 0, info.size).open();
    },
  };
}
