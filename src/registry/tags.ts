// Tags: a name in a repository pointing at a manifest digest.
import type { StorageDriver } from '../storage/index.ts';
import { isNotFound } from './blobs.ts';
import { type Digest, tryParseDigest } from './digest.ts';
import { byCodeUnit } from './pagination.ts';
import * as paths from './paths.ts';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function createTags(storage: StorageDriver) {
  return {
    async resolve(name: string, tag: string): Promise<Digest | undefined> {
      try {
        return tryParseDigest(decoder.decode(await storage.getContent(paths.tagLink(name, tag))));
      } catch (e) {
        if (isNotFound(e)) return undefined;
        throw e;
      }
    },

    async set(name: string, tag: string, d: Digest): Promise<void> {
      await storage.putContent(paths.tagLink(name, tag), encoder.encode(d.value));
    },

    async remove(name: string, tag: string): Promise<boolean> {
      try {
        await storage.delete(paths.tagDir(name, tag));
        return true;
      } catch (e) {
        if (isNotFound(e)) return false;
        throw e;
      }
    },

    /** All tags, sorted; undefined when the repository has never had one. */
    async list(name: string): Promise<string[] | undefined> {
      try {
        return (await storage.list(paths.tagsDir(name))).map(paths.lastComponent).sort(byCodeUnit);
      } catch (e) {
        if (isNotFound(e)) return undefined;
        throw e;
      }
    },

    /** Tags currently pointing at d (one listing plus one small read per tag). */
    async pointingAt(name: string, d: Digest): Promise<string[]> {
      const all = (await this.list(name)) ?? [];
      const hits = await Promise.all(
        all.map(async (t) => ((await this.resolve(name, t))?.value === d.value ? t : undefined)),
      );
      return hits.filter((t): t is string => t !== undefined);
    },
  };
}

export type Tags = ReturnType<typeof createTags>;
