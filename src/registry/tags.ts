// Tags: a name in a repository pointing at a manifest digest.
import type { StorageDriver } from '../storage/index.ts';
import { isNotFound } from './blobs.ts';
import { createLru } from './cache.ts';
import { type Digest, tryParseDigest } from './digest.ts';
import { byCodeUnit } from './pagination.ts';
import * as paths from './paths.ts';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function createTags(storage: StorageDriver) {
  // Tag resolution is on every pull's first request; see cache.ts for why hits are never stale.
  const cache = createLru<Digest>({ maxEntries: 50_000 });
  const key = (name: string, tag: string) => `${name}:${tag}`;
  return {
    async resolve(name: string, tag: string): Promise<Digest | undefined> {
      const hit = cache.get(key(name, tag));
      if (hit) return hit;
      try {
        const d = tryParseDigest(decoder.decode(await storage.getContent(paths.tagLink(name, tag))));
        if (d) cache.set(key(name, tag), d);
        return d;
      } catch (e) {
        if (isNotFound(e)) return undefined;
        throw e;
      }
    },

    async set(name: string, tag: string, d: Digest): Promise<void> {
      cache.delete(key(name, tag));
      await storage.putContent(paths.tagLink(name, tag), encoder.encode(d.value));
      cache.set(key(name, tag), d);
    },

    async remove(name: string, tag: string): Promise<boolean> {
      cache.delete(key(name, tag));
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
