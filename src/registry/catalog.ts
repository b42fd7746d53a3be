// The repository catalog. Walking /repositories for every _catalog request would cost a listing
// per path component of every repository; instead each repository gets one marker under
// /catalog when something is first linked into it, and the catalog is one directory listing,
// kept in memory once read.
import type { StorageDriver } from '../storage/index.ts';
import { isNotFound } from './blobs.ts';
import { byCodeUnit } from './pagination.ts';
import * as paths from './paths.ts';

export function createCatalog(storage: StorageDriver) {
  let known: Set<string> | undefined;
  let sorted: string[] | undefined;
  let loading: Promise<Set<string>> | undefined;

  async function load(): Promise<Set<string>> {
    if (known) return known;
    loading ??= (async () => {
      let entries: string[] = [];
      try {
        entries = await storage.list(paths.catalogDir);
      } catch (e) {
        if (!isNotFound(e)) throw e;
      }
      known = new Set(entries.map(paths.repositoryFromCatalogEntry));
      return known;
    })();
    try {
      return await loading;
    } finally {
      loading = undefined;
    }
  }

  return {
    /** Records that the repository exists; cheap after the first call for a name. */
    async add(name: string): Promise<void> {
      const set = await load();
      if (set.has(name)) return;
      await storage.putContent(paths.catalogEntry(name), new Uint8Array());
      set.add(name);
      sorted = undefined;
    },

    async has(name: string): Promise<boolean> {
      return (await load()).has(name);
    },

    async list(): Promise<readonly string[]> {
      const set = await load();
      sorted ??= [...set].sort(byCodeUnit);
      return sorted;
    },
  };
}

export type Catalog = ReturnType<typeof createCatalog>;
