// HTTP Range (RFC 9110 §14) for blob GETs, and the Content-Range of chunked uploads.

export interface ByteRange {
  readonly start: number;
  /** Inclusive. */
  readonly end: number;
}

export type RangeResult =
  | { readonly kind: 'none' } // no usable Range header: serve the whole blob (200)
  | { readonly kind: 'partial'; readonly range: ByteRange } // 206
  | { readonly kind: 'unsatisfiable' }; // 416

/**
 * Parses a Range header against a blob of `size` bytes. Forms: bytes=a-b, bytes=a-, bytes=-n.
 * A header we cannot parse, or one with several ranges, is ignored as RFC 9110 allows (200 with
 * the whole body); a well-formed range that cannot be satisfied is 416.
 */
export function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return { kind: 'none' };
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m || (m[1] === '' && m[2] === '')) return { kind: 'none' };
  const first = m[1] === '' ? undefined : Number(m[1]);
  const last = m[2] === '' ? undefined : Number(m[2]);
  if (first === undefined) {
    // Suffix: the last n bytes. n=0 cannot be satisfied; n > size means the whole blob.
    if (last === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'partial', range: { start: Math.max(0, size - last!), end: size - 1 } };
  }
  if (last !== undefined && last < first) return { kind: 'none' }; // invalid per RFC: ignore
  if (first >= size) return { kind: 'unsatisfiable' };
  return { kind: 'partial', range: { start: first, end: Math.min(last ?? size - 1, size - 1) } };
}

/** `Content-Range: bytes a-b/size` for a 206. */
export function contentRange(r: ByteRange, size: number): string {
  return `bytes ${r.start}-${r.end}/${size}`;
}

/**
 * The Content-Range of an upload PATCH: the spec writes `<start>-<end>` (no unit); clients
 * also send `bytes <start>-<end>/<total|*>`. Undefined when malformed.
 */
export function parseUploadContentRange(header: string): ByteRange | undefined {
  const m = /^\s*(?:bytes[ =])?\s*(\d+)-(\d+)(?:\/(?:\d+|\*))?\s*$/i.exec(header);
  if (!m) return undefined;
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start) return undefined;
  return { start, end };
}
