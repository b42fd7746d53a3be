// Manifests: validated on PUT, stored byte-exact in /blobs, linked as a revision of the
// repository with the media type they were pushed with, and returned exactly as pushed.
import { OciError } from '../errors.ts';
import type { StorageDriver } from '../storage/index.ts';
import type { Blobs } from './blobs.ts';
import { isNotFound } from './blobs.ts';
import { createLru } from './cache.ts';
import { type Digest, tryParseDigest } from './digest.ts';
import * as paths from './paths.ts';

export const mediaTypes = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
} as const;

const imageManifestTypes = new Set<string>([mediaTypes.ociManifest, mediaTypes.dockerManifest]);
const indexTypes = new Set<string>([mediaTypes.ociIndex, mediaTypes.dockerManifestList]);

export interface Descriptor {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly artifactType?: string;
  readonly annotations?: Record<string, string>;
  readonly urls?: readonly string[];
  readonly platform?: unknown;
}

/** What validation learned about a manifest, beyond its bytes. */
export interface ParsedManifest {
  readonly mediaType: string;
  /** Blobs that must already be in the repository. */
  readonly requiredBlobs: readonly Digest[];
  readonly subject?: Digest;
  /** For the referrers API: manifest artifactType, else (image manifests) the config media type. */
  readonly artifactType?: string;
  readonly annotations?: Record<string, string>;
}

function invalid(message: string, detail?: unknown): OciError {
  return new OciError('MANIFEST_INVALID', message, { detail });
}

function descriptor(v: unknown, where: string): Descriptor {
  if (typeof v !== 'object' || v === null) throw invalid(`${where} must be a descriptor object`);
  const d = v as Record<string, unknown>;
  if (typeof d.mediaType !== 'string' || d.mediaType === '')
    throw invalid(`${where}.mediaType must be a string`);
  if (typeof d.digest !== 'string' || !tryParseDigest(d.digest))
    throw invalid(`${where}.digest is not a valid digest`);
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) {
    throw invalid(`${where}.size must be a non-negative integer`);
  }
  return d as unknown as Descriptor;
}

/** Layers a registry must not require: they are fetched from elsewhere (urls) or never distributed. */
function isForeign(d: Descriptor): boolean {
  return (
    d.mediaType.includes('nondistributable') ||
    d.mediaType === 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip' ||
    (Array.isArray(d.urls) && d.urls.length > 0)
  );
}

/** Strips parameters: 'application/json; charset=utf-8' -> 'application/json'. */
export function bareMediaType(contentType: string | undefined): string | undefined {
  const t = contentType?.split(';')[0]?.trim().toLowerCase();
  return t || undefined;
}

export function parseManifest(bytes: Uint8Array, contentType: string | undefined): ParsedManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    throw invalid(`manifest is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
    throw invalid('manifest must be a JSON object');
  const m = doc as Record<string, unknown>;
  const declared = typeof m.mediaType === 'string' ? m.mediaType : undefined;
  const header = bareMediaType(contentType);
  // The Content-Type names the type; a mediaType field, when present, must agree with it.
  const mediaType = header && header !== 'application/octet-stream' ? header : declared;
  if (!mediaType)
    throw invalid('manifest media type unknown: send a Content-Type header or a mediaType field');
  if (declared !== undefined && declared !== mediaType) {
    throw invalid(`manifest mediaType ${declared} does not match Content-Type ${mediaType}`);
  }
  if (m.schemaVersion !== 2) throw invalid('schemaVersion must be 2');

  const subject = m.subject === undefined ? undefined : descriptor(m.subject, 'subject');
  const artifactType = typeof m.artifactType === 'string' ? m.artifactType : undefined;
  const annotations = isStringMap(m.annotations) ? m.annotations : undefined;

  if (imageManifestTypes.has(mediaType)) {
    const config = descriptor(m.config, 'config');
    if (!Array.isArray(m.layers)) throw invalid('layers must be an array');
    const layers = m.layers.map((l, i) => descriptor(l, `layers[${i}]`));
    const required = [config, ...layers.filter((l) => !isForeign(l))];
    return {
      mediaType,
      requiredBlobs: required.map((d) => tryParseDigest(d.digest)!),
      subject: subject && tryParseDigest(subject.digest),
      artifactType: artifactType ?? (mediaType === mediaTypes.ociManifest ? config.mediaType : undefined),
      annotations,
    };
  }
  if (indexTypes.has(mediaType)) {
    if (!Array.isArray(m.manifests)) throw invalid('manifests must be an array');
    for (const [i, d] of m.manifests.entries()) descriptor(d, `manifests[${i}]`);
    // An index may point at children that live elsewhere or arrive later; none is required.
    return {
      mediaType,
      requiredBlobs: [],
      subject: subject && tryParseDigest(subject.digest),
      artifactType,
      annotations,
    };
  }
  throw invalid(
    `unsupported manifest media type ${mediaType}; supported: ${[...imageManifestTypes, ...indexTypes].join(', ')}`,
  );
}

function isStringMap(v: unknown): v is Record<string, string> {
  return (
    typeof v === 'object' &&
    v !== null &&
    !Array.isArray(v) &&
    Object.values(v).every((x) => typeof x === 'string')
  );
}

interface RevisionLink {
  readonly mediaType: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export interface StoredManifest {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly bytes: Uint8Array;
}

export function createManifests(storage: StorageDriver, blobs: Blobs) {
  // Manifests are immutable once stored; the entry goes when the revision is unlinked.
  const cache = createLru<StoredManifest>(
    { maxEntries: 20_000, maxWeight: 64 * 1024 * 1024 },
    (m) => m.bytes.byteLength,
  );
  const key = (name: string, d: Digest) => `${name}@${d.value}`;
  async function readRevision(name: string, d: Digest): Promise<RevisionLink | undefined> {
    try {
      return JSON.parse(
        decoder.decode(await storage.getContent(paths.revisionLink(name, d))),
      ) as RevisionLink;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  return {
    /** Verifies that every blob the manifest needs is in the repository (MANIFEST_BLOB_UNKNOWN). */
    async checkReferences(name: string, parsed: ParsedManifest): Promise<void> {
      const missing: string[] = [];
      await Promise.all(
        parsed.requiredBlobs.map(async (d) => {
          if (!(await blobs.isLinked(name, d)) || (await blobs.storedSize(d)) === undefined)
            missing.push(d.value);
        }),
      );
      if (missing.length > 0) {
        throw new OciError(
          'MANIFEST_BLOB_UNKNOWN',
          `blob unknown to registry: ${missing.sort().join(', ')}`,
          {
            detail: { digests: missing },
          },
        );
      }
    },

    /** Stores the bytes and links the revision. The caller validated them. */
    async store(name: string, d: Digest, bytes: Uint8Array, mediaType: string): Promise<void> {
      await storage.putContent(paths.blobData(d), bytes);
      const link: RevisionLink = { mediaType };
      await storage.putContent(paths.revisionLink(name, d), encoder.encode(JSON.stringify(link)));
      cache.set(key(name, d), { digest: d, mediaType, bytes });
    },

    /** The manifest as stored in this repository, or undefined. */
    async get(name: string, d: Digest): Promise<StoredManifest | undefined> {
      const hit = cache.get(key(name, d));
      if (hit) return hit;
      const link = await readRevision(name, d);
      if (!link) return undefined;
      try {
        const m = {
          digest: d,
          mediaType: link.mediaType,
          bytes: await storage.getContent(paths.blobData(d)),
        };
        cache.set(key(name, d), m);
        return m;
      } catch (e) {
        if (isNotFound(e)) return undefined;
        throw e;
      }
    },

    /** Unlinks the revision; the bytes stay in /blobs for garbage collection. */
    async unlink(name: string, d: Digest): Promise<boolean> {
      cache.delete(key(name, d));
      try {
        await storage.delete(paths.revisionLink(name, d).replace(/\/link$/, ''));
        return true;
      } catch (e) {
        if (isNotFound(e)) return false;
        throw e;
      }
    },
  };
}

export type Manifests = ReturnType<typeof createManifests>;
