// A sink that consumes fixed-size units (the encryption decorator opens sealed segments of
// 256 KiB + tag) has to copy a unit together whenever it arrives split across chunks; a profile of
// encrypted pulls showed that copy at about 4% of the serving thread, because 128 and 256 KiB
// reads split nearly every segment. A driver that picks its own read sizes ends each read on a
// unit boundary instead, so units arrive whole and are used where they were read.

/** Units larger than this are not worth read buffers of their size; such reads stay unaligned. */
export const maxAlignedUnitBytes = 1024 * 1024;

/**
 * Bytes to read next into a buffer of `capacity`: as many as fit while ending on a boundary of
 * `unit` (counted from the start of the range, `done` bytes in), or `capacity` when the sink names
 * no unit or the next boundary lies beyond the buffer.
 */
export function readBytesFor(done: number, capacity: number, unit: number | undefined): number {
  if (!unit || unit <= 0 || unit > maxAlignedUnitBytes) return capacity;
  const toBoundary = unit - (done % unit);
  if (toBoundary > capacity) return capacity;
  return toBoundary + Math.floor((capacity - toBoundary) / unit) * unit;
}

/** Read buffer size for a sink's unit: at least `base`, and large enough to hold one whole unit. */
export function bufferBytesFor(base: number, unit: number | undefined): number {
  return unit && unit > 0 && unit <= maxAlignedUnitBytes ? Math.max(base, unit) : base;
}
