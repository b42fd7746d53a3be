// Image reference -> pinned digest -> unpacked layers + config, read straight from berth's own
// storage through a read-only ImageSource (no network pull, no registry credentials). Each layer
// is unpacked once per diffID by the layer store; a task's rootfs is an overlay of those dirs.
import { lstat, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { LayerStore } from './layers.ts';
import type { ImageConfig } from './runtime-spec.ts';

/** What the runner may read from the registry: manifests by tag or digest, and blobs a repository links. */
export interface ImageSource {
  manifest(
    repository: string,
    reference: string,
  ): Promise<{ digest: string; mediaType: string; bytes: Uint8Array }>;
  /** The blob's bytes; rejects unless the repository links the blob. */
  blob(repository: string, digest: string): Promise<Readable>;
}

export interface ImageRef {
  /** The repository inside berth, e.g. "team/web". */
  repository: string;
  tag?: string;
  digest?: string;
}

export interface PreparedImage {
  repository: string;
  /** The digest the reference resolved to (an index's digest for a multi-platform image). */
  digest: string;
  /** The platform manifest's digest actually unpacked. */
  manifestDigest: string;
  config: ImageConfig;
  /** Unpacked layer directories, bottom layer first. */
  layers: string[];
  /** /etc/passwd and /etc/group of the image, when it has them. */
  passwd?: string;
  group?: string;
}

export class ImageError extends Error {
  override name = 'ImageError';
}

const indexTypes = new Set([
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
]);
const manifestTypes = new Set([
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
]);
const configTypes = new Set([
  'application/vnd.oci.image.config.v1+json',
  'application/vnd.docker.container.image.v1+json',
]);

const repoComponent = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const tagPattern = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const digestPattern = /^sha(?:256:[a-f0-9]{64}|512:[a-f0-9]{128})$/;

/**
 * Parses a task definition's image. A registry host in front ("localhost:5000/app:1") is accepted
 * only when it is one of berth's own names (`ownHosts`): the runner never pulls from elsewhere,
 * and says so instead of silently running a local image of the same name.
 */
export function parseImageRef(image: string, ownHosts: readonly string[]): ImageRef {
  let rest = image;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!digestPattern.test(digest)) throw new ImageError(`image '${image}': '${digest}' is not a digest`);
  }
  const slash = rest.indexOf('/');
  const first = slash >= 0 ? rest.slice(0, slash) : '';
  if (slash >= 0 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    // The port is not compared: a proxy or a port mapping may put berth behind another one.
    const host = first
      .replace(/:\d+$/, '')
      .replace(/^\[(.*)\]$/, '$1')
      .toLowerCase();
    const own = ownHosts.some((h) => h.toLowerCase() === host);
    if (!own)
      throw new ImageError(
        `image '${image}' names the registry '${first}': the runner runs only images stored in this berth (${ownHosts.join(', ')}); push it here first`,
      );
    rest = rest.slice(slash + 1);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!tagPattern.test(tag)) throw new ImageError(`image '${image}': '${tag}' is not a valid tag`);
  }
  if (rest === '' || !rest.split('/').every((c) => repoComponent.test(c)))
    throw new ImageError(`image '${image}': '${rest}' is not a valid repository name`);
  if (tag === undefined && digest === undefined) tag = 'latest';
  return { repository: rest, ...(tag !== undefined && { tag }), ...(digest !== undefined && { digest }) };
}

/** "repo@sha256:..." */
export function pinnedRef(repository: string, digest: string): string {
  return `${repository}@${digest}`;
}

interface Descriptor {
  mediaType?: string;
  digest: string;
  size?: number;
  platform?: { os?: string; architecture?: string; variant?: string };
}

function hostArch(): string {
  return process.arch === 'x64' ? 'amd64' : process.arch;
}

function parseJson(bytes: Uint8Array, what: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(Buffer.from(bytes).toString('utf8'));
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {}
  throw new ImageError(`${what} is not a JSON object`);
}

async function readAll(stream: Readable, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of stream) {
    n += (c as Buffer).length;
    if (n > limit) {
      stream.destroy();
      throw new ImageError(`${what} is larger than ${limit} bytes`);
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

/** A file from the merged view of the layers (top layer wins; a whiteout hides lower ones). */
async function readMerged(layers: readonly string[], rel: string): Promise<string | undefined> {
  for (let i = layers.length - 1; i >= 0; i--) {
    const p = join(layers[i]!, rel);
    const st = await lstat(p).catch(() => null);
    if (!st) continue;
    if (st.isCharacterDevice()) return undefined; // an overlay whiteout
    if (!st.isFile()) return undefined;
    return (await readFile(p)).toString('utf8');
  }
  return undefined;
}

export interface Images {
  /** The digest a reference names now (what a deployment pins). */
  resolve(ref: ImageRef): Promise<string>;
  /** Resolves, picks this machine's platform, unpacks the layers (once per diffID), reads the config. */
  prepare(ref: ImageRef): Promise<PreparedImage>;
}

export function createImages(source: ImageSource, layers: LayerStore): Images {
  async function resolve(ref: ImageRef): Promise<string> {
    const m = await source.manifest(ref.repository, ref.digest ?? ref.tag ?? 'latest');
    return m.digest;
  }

  async function platformManifest(repository: string, digest: string) {
    let m = await source.manifest(repository, digest);
    if (indexTypes.has(m.mediaType)) {
      const index = parseJson(m.bytes, `image index ${digest}`);
      const entries = (Array.isArray(index['manifests']) ? index['manifests'] : []) as Descriptor[];
      const arch = hostArch();
      const pick =
        entries.find((e) => e.platform?.os === 'linux' && e.platform.architecture === arch) ??
        entries.find((e) => e.platform === undefined && manifestTypes.has(e.mediaType ?? ''));
      if (!pick) {
        const have = entries
          .map((e) => `${e.platform?.os ?? '?'}/${e.platform?.architecture ?? '?'}`)
          .join(', ');
        throw new ImageError(`image ${repository}@${digest} has no linux/${arch} manifest (it has: ${have})`);
      }
      m = await source.manifest(repository, pick.digest);
    }
    if (!manifestTypes.has(m.mediaType))
      throw new ImageError(`${repository}@${m.digest} is a ${m.mediaType}, not a runnable image`);
    return m;
  }

  return {
    resolve,
    async prepare(ref) {
      const digest = ref.digest ?? (await resolve(ref));
      const m = await platformManifest(ref.repository, digest);
      const manifest = parseJson(m.bytes, `manifest ${m.digest}`);
      const configDesc = manifest['config'] as Descriptor | undefined;
      if (!configDesc || typeof configDesc.digest !== 'string')
        throw new ImageError(`manifest ${m.digest} has no config`);
      if (configDesc.mediaType !== undefined && !configTypes.has(configDesc.mediaType))
        throw new ImageError(
          `${ref.repository}@${m.digest} is an artifact (${configDesc.mediaType}), not an image`,
        );
      const configBytes = await readAll(
        await source.blob(ref.repository, configDesc.digest),
        4 * 1024 * 1024,
        'image config',
      );
      const config = parseJson(configBytes, `image config ${configDesc.digest}`);
      const diffIds = ((config['rootfs'] as { diff_ids?: unknown } | undefined)?.diff_ids ?? []) as unknown[];
      const descs = (Array.isArray(manifest['layers']) ? manifest['layers'] : []) as Descriptor[];
      if (diffIds.length !== descs.length || !diffIds.every((d) => typeof d === 'string'))
        throw new ImageError(
          `image config ${configDesc.digest} lists ${diffIds.length} diff_ids for ${descs.length} layers`,
        );
      // Sequential: layers are usually shared and already unpacked; a cold image is bound by disk.
      const dirs: string[] = [];
      for (const [i, d] of descs.entries()) {
        dirs.push(
          await layers.unpack(diffIds[i] as string, d.digest, d.mediaType ?? '', () =>
            source.blob(ref.repository, d.digest),
          ),
        );
      }
      const passwd = await readMerged(dirs, 'etc/passwd');
      const group = await readMerged(dirs, 'etc/group');
      return {
        repository: ref.repository,
        digest,
        manifestDigest: m.digest,
        config: config as ImageConfig,
        layers: dirs,
        ...(passwd !== undefined && { passwd }),
        ...(group !== undefined && { group }),
      };
    },
  };
}
