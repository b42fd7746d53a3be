// Errors are data. Domain code throws OciError (registry protocol failures, carrying a code from
// the table below) or ConfigError (bad configuration, naming the key); http/ turns them into
// responses. Nothing here knows about HTTP frameworks.

/** The distribution-spec error codes, with the status and message each one answers with. */
export const ociErrorTable = {
  BLOB_UNKNOWN: { status: 404, message: 'blob unknown to registry' },
  BLOB_UPLOAD_INVALID: { status: 400, message: 'blob upload invalid' },
  BLOB_UPLOAD_UNKNOWN: { status: 404, message: 'blob upload unknown to registry' },
  DIGEST_INVALID: { status: 400, message: 'provided digest did not match uploaded content' },
  MANIFEST_BLOB_UNKNOWN: {
    status: 400,
    message: 'manifest references a manifest or blob unknown to registry',
  },
  MANIFEST_INVALID: { status: 400, message: 'manifest invalid' },
  MANIFEST_UNKNOWN: { status: 404, message: 'manifest unknown to registry' },
  NAME_INVALID: { status: 400, message: 'invalid repository name' },
  NAME_UNKNOWN: { status: 404, message: 'repository name not known to registry' },
  SIZE_INVALID: { status: 400, message: 'provided length did not match content length' },
  TAG_INVALID: { status: 400, message: 'manifest tag did not match URI' },
  UNAUTHORIZED: { status: 401, message: 'authentication required' },
  DENIED: { status: 403, message: 'requested access to the resource is denied' },
  UNSUPPORTED: { status: 405, message: 'the operation is unsupported' },
  TOOMANYREQUESTS: { status: 429, message: 'too many requests' },
  RANGE_INVALID: { status: 416, message: 'requested range not satisfiable' },
  // Not in the spec's table, but in its prose (413 for oversized manifests) and in distribution.
  SIZE_TOO_LARGE: { status: 413, message: 'payload too large' },
  UNAVAILABLE: { status: 503, message: 'service unavailable' },
  // A path no endpoint serves (distribution answers a bare "404 page not found").
  NOT_FOUND: { status: 404, message: 'no such endpoint' },
} as const;

export type OciCode = keyof typeof ociErrorTable;

export class OciError extends Error {
  readonly code: OciCode;
  readonly status: number;
  readonly detail: unknown;
  /** Extra response headers the error implies (Range after a 416, Retry-After after a 429). */
  readonly headers: Readonly<Record<string, string>>;

  constructor(
    code: OciCode,
    message?: string,
    opts: { detail?: unknown; headers?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(message ?? ociErrorTable[code].message, { cause: opts.cause });
    this.name = 'OciError';
    this.code = code;
    this.status = ociErrorTable[code].status;
    this.detail = opts.detail;
    this.headers = opts.headers ?? {};
  }
}

/** A configuration value that cannot be used; `key` is the dotted path the user wrote. */
export class ConfigError extends Error {
  readonly key: string;
  constructor(key: string, message: string) {
    super(`config ${key}: ${message}`);
    this.name = 'ConfigError';
    this.key = key;
  }
}
