// The distribution spec's grammars for repository names and tags.
import { OciError } from '../errors.ts';

const repoName = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const tagName = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;

/** Distribution's limit; names longer than this cannot be stored or referenced by clients. */
export const maxNameLength = 255;

export function isRepositoryName(name: string): boolean {
  return name.length <= maxNameLength && repoName.test(name);
}

export function isTag(tag: string): boolean {
  return tagName.test(tag);
}

export function assertRepositoryName(name: string): void {
  if (!isRepositoryName(name)) {
    throw new OciError('NAME_INVALID', `invalid repository name: ${name.slice(0, 300)}`, {
      detail: { name },
    });
  }
}

export function assertTag(tag: string): void {
  if (!isTag(tag))
    throw new OciError('TAG_INVALID', `invalid tag: ${tag.slice(0, 200)}`, { detail: { tag } });
}
