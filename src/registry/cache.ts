// A small LRU map for metadata that only this process changes: tag -> digest, manifests by
// digest, blob sizes by link. Every write path in the registry updates or drops the entries it
// affects, so a hit is never stale as long as one berth process owns the storage (the supported
// deployment); the bounds keep memory predictable.

export interface LruOptions {
  readonly maxEntries: number;
  /** Upper bound on the summed weight of the entries (e.g. bytes); Infinity for none. */
  readonly maxWeight?: number;
}

export function createLru<V>(opts: LruOptions, weigh: (v: V) => number = () => 0) {
  const map = new Map<string, V>();
  let weight = 0;
  const maxWeight = opts.maxWeight ?? Number.POSITIVE_INFINITY;

  function drop(key: string) {
    const v = map.get(key);
    if (v === undefined) return;
    map.delete(key);
    weight -= weigh(v);
  }

  return {
    get(key: string): V | undefined {
      const v = map.get(key);
      if (v === undefined) return undefined;
      // Re-insert: Map keeps insertion order, so the first key is the least recently used.
      map.delete(key);
      map.set(key, v);
      return v;
    },
    set(key: string, v: V): void {
      drop(key);
      const w = weigh(v);
      if (w > maxWeight) return;
      map.set(key, v);
      weight += w;
      while (map.size > opts.maxEntries || weight > maxWeight) {
        const oldest = map.keys().next().value as string;
        drop(oldest);
      }
    },
    delete: drop,
    /** Drops every key that starts with prefix (e.g. all entries of a repository). */
    deletePrefix(prefix: string): void {
      for (const k of [...map.keys()]) if (k.startsWith(prefix)) drop(k);
    },
    get size() {
      return map.size;
    },
    get weight() {
      return weight;
    },
  };
}
