// The one mapping from registry concepts to storage paths. The whole tree:
//
//   /blobs/<alg>/<hex[0:2]>/<hex>/data          blob bytes, content-addressed, shared by all repos
//   /catalog/<name, '/' written as '~'>         empty marker: the repository exists (for _catalog)
//   /repositories/<name>/
//     _layers/<alg>/<hex>/link                  the blob is in this repo (content: the digest)
//     _manifests/revisions/<alg>/<hex>/link     the manifest is in this repo (content: JSON with
//                                               its media type; the bytes live in /blobs)
//     _manifests/tags/<tag>/current/link        the tag (content: the digest it points to)
//     _manifests/referrers/<alg>/<subject hex>/<alg>-<hex>
//                                               a manifest whose subject is that digest
//                                               (content: its descriptor, for the referrers API)
//   /uploads/<id>/info                          an upload in progress (content: JSON with its
//                                               repository and start time)
//   /uploads/<id>/data                          its bytes so far (pending until the final PUT)
//
// Uploads live outside their repository so that abandoned ones are found with one listing,
// including those of repositories that never received a blob.
// A link is the access check: a blob or manifest is served from a repository only if the
// repository links it. Repository name components never start with '_', so the underscore
// directories cannot collide with a nested repository name.
import type { Digest } from './digest.ts';

export function blobData(d: Digest): string {
  return `/blobs/${d.algorithm}/${d.hex.slice(0, 2)}/${d.hex}/data`;
}

export function repository(name: string): string {
  return `/repositories/${name}`;
}

export function layerLink(name: string, d: Digest): string {
  return `/repositories/${name}/_layers/${d.algorithm}/${d.hex}/link`;
}

export function revisionLink(name: string, d: Digest): string {
  return `/repositories/${name}/_manifests/revisions/${d.algorithm}/${d.hex}/link`;
}

export function tagsDir(name: string): string {
  return `/repositories/${name}/_manifests/tags`;
}

export function tagDir(name: string, tag: string): string {
  return `/repositories/${name}/_manifests/tags/${tag}`;
}

export function tagLink(name: string, tag: string): string {
  return `/repositories/${name}/_manifests/tags/${tag}/current/link`;
}

export function referrersDir(name: string, subject: Digest): string {
  return `/repositories/${name}/_manifests/referrers/${subject.algorithm}/${subject.hex}`;
}

export function referrerEntry(name: string, subject: Digest, referrer: Digest): string {
  return `${referrersDir(name, subject)}/${referrer.algorithm}-${referrer.hex}`;
}

export const uploadsDir = '/uploads';

export function uploadDir(id: string): string {
  return `/uploads/${id}`;
}

export function uploadData(id: string): string {
  return `/uploads/${id}/data`;
}

export function uploadInfo(id: string): string {
  return `/uploads/${id}/info`;
}

export const catalogDir = '/catalog';

export function catalogEntry(name: string): string {
  return `${catalogDir}/${name.replaceAll('/', '~')}`;
}

/** Inverse of catalogEntry for one listed path. */
export function repositoryFromCatalogEntry(path: string): string {
  return path.slice(catalogDir.length + 1).replaceAll('~', '/');
}

export function lastComponent(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}
