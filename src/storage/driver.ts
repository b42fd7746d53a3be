// The storage contract: bytes at paths. A driver knows nothing of OCI, IAM or HTTP; the registry
// maps its own tree onto these paths (see registry/paths.ts). Every driver is wrapped by
// checked() (storage/checked.ts), which enforces the path grammar and normalises errors, so a
// driver may assume it only ever sees valid paths.
//
// Path grammar: absolute, '/'-separated, each component [A-Za-z0-9_~][A-Za-z0-9._~-]*. No empty
// components, no '.' or '..', nothing starting with a dot: names beginning with '.' are
// reserved for a driver's own bookkeeping (temporary and pending files), so they never collide
// with a caller's path and are never listed.
import type { Readable } from 'node:stream';

export interface FileInfo {
  readonly path: string;
  /** Size in bytes; 0 for directories. */
  readonly size: number;
  readonly modTime: Date;
  readonly isDir: boolean;
}

/**
 * A write in progress. Nothing written is visible at the target path until commit(), which
 * makes the whole content visible at once (and durable) or fails leaving the old content, if
 * any, in place. Concurrent writers to one path are allowed: each commit replaces the content
 * whole, the last commit wins, and a reader never sees a mix.
 */
export interface FileWriter {
  /** Bytes written so far, including those of a resumed pending write. */
  readonly size: number;
  /**
   * A hint: the file will most likely hold `total` bytes in all when committed (an upload's
   * Content-Length). A driver may use it to stream to its backend sooner; a wrong hint may cost
   * speed, never correctness.
   */
  expect?(total: number): void;
  /**
   * Resolves once the chunk is accepted; callers await each write, which is the backpressure.
   * The writer keeps no view of the chunk after that: the caller may reuse or free its memory.
   */
  write(chunk: Uint8Array): Promise<void>;
  /** Makes the content visible and durable at the path. The writer is finished afterwards. */
  commit(): Promise<void>;
  /** Discards everything written (including a resumed pending write). */
  cancel(): Promise<void>;
  /**
   * Stops writing but keeps what was written as the path's pending write, so a later
   * writer(path, { append: true }) resumes it. Still invisible at the path.
   */
  close(): Promise<void>;
}

/**
 * Receives chunks from copyTo(); resolves once it no longer needs the chunk's memory.
 * `unitBytes` is a hint from a sink that consumes whole units of that many bytes, counted from
 * the start of the range: a driver that picks its own read sizes ends its chunks on those
 * boundaries where it can (see chunk-units.ts). Sinks still accept any chunking.
 */
export type ChunkSink = ((chunk: Uint8Array) => Promise<void>) & { readonly unitBytes?: number };

export interface StorageDriver {
  /** For logs and errors: 'memory', 'filesystem', 's3', ... */
  readonly name: string;

  /** Whole content of a small file. PathNotFoundError if absent. */
  getContent(path: string): Promise<Uint8Array>;
  /** Atomically replaces the content of path (creating parents as needed). */
  putContent(path: string, content: Uint8Array): Promise<void>;

  /** Streams the content from `offset` (default 0). PathNotFoundError if absent;
   *  InvalidOffsetError if offset > size. */
  reader(path: string, offset?: number): Promise<Readable>;
  /**
   * Serving bytes: feeds [offset, offset + length) of path to sink in order, one call at a time
   * (the next call waits until the previous one resolved; reads may run ahead). A driver may reuse
   * a chunk's memory once sink has resolved for it (the filesystem driver reads into a small
   * ring of buffers, so a pull allocates nothing per chunk); a sink that rejects stops the copy
   * with its error. PathNotFoundError if absent; InvalidOffsetError if the range does not lie
   * within the file (possibly after the bytes that do exist were delivered).
   */
  copyTo(path: string, offset: number, length: number, sink: ChunkSink): Promise<void>;
  /** Starts a write to path; with append, resumes the pending write a close() left (or starts
   *  an empty one if there is none). */
  writer(path: string, opts?: { append?: boolean }): Promise<FileWriter>;

  /** PathNotFoundError if neither a file nor a directory exists at path. */
  stat(path: string): Promise<FileInfo>;
  /** Full paths of the direct children of a directory, sorted. PathNotFoundError if absent.
   *  The root '/' lists as empty when nothing was stored. */
  list(path: string): Promise<string[]>;
  /** Moves a file to dest, replacing what is there. PathNotFoundError if source is absent. */
  move(source: string, dest: string): Promise<void>;
  /** Deletes a file or a whole directory tree. PathNotFoundError if absent. */
  delete(path: string): Promise<void>;
  /**
   * Optional: deletes a file the caller wrote whole (putContent, or a committed writer) and knows
   * is neither a directory nor holding a pending write; absent is not an error. For drivers where
   * delete() has to look for all of those first (S3: five lookups, then the delete).
   */
  deleteFile?(path: string): Promise<void>;
}

export class StorageError extends Error {
  readonly driver: string;
  readonly path: string;
  constructor(driver: string, path: string, message: string, opts?: { cause?: unknown }) {
    super(`${driver}: ${message}: ${path}`, opts);
    this.name = 'StorageError';
    this.driver = driver;
    this.path = path;
  }
}

export class PathNotFoundError extends StorageError {
  constructor(driver: string, path: string, opts?: { cause?: unknown }) {
    super(driver, path, 'path not found', opts);
    this.name = 'PathNotFoundError';
  }
}

export class InvalidPathError extends StorageError {
  constructor(driver: string, path: string) {
    super(driver, path, 'invalid path');
    this.name = 'InvalidPathError';
  }
}

export class InvalidOffsetError extends StorageError {
  readonly offset: number;
  constructor(driver: string, path: string, offset: number) {
    super(driver, path, `invalid offset ${offset}`);
    this.name = 'InvalidOffsetError';
    this.offset = offset;
  }
}
