// The n/last pagination the spec defines for tag lists and the catalog.

/** More than this many entries per page is clamped rather than refused. */
export const maxPageSize = 10_000;

export interface Page {
  readonly items: readonly string[];
  /** Set when more entries follow: the `last` for the next request. */
  readonly next?: string;
}

/**
 * `sorted` must be in ascending code-unit order. `last` is exclusive; n=0 gives an empty page;
 * no n means everything after `last` (clamped to maxPageSize with a next link).
 */
export function paginate(sorted: readonly string[], n: number | undefined, last: string | undefined): Page {
  let start = 0;
  if (last !== undefined) {
    // First index whose entry sorts after `last` (binary search: lists can be long).
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (sorted[mid]! <= last) lo = mid + 1;
      else hi = mid;
    }
    start = lo;
  }
  const size = Math.min(n ?? maxPageSize, maxPageSize);
  const items = sorted.slice(start, start + size);
  const more = start + size < sorted.length && items.length > 0;
  return more ? { items, next: items[items.length - 1] } : { items };
}

/** Ascending code-unit order (what `last` comparisons assume), not locale order. */
export function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
