// Turning domain errors into responses: the distribution spec's JSON error form, with
// Docker-Distribution-API-Version set by middleware. Nothing here leaks a stack or a path.
import type { Context } from 'hono';
import { type OciCode, OciError } from '../errors.ts';
import type { AppEnv } from './env.ts';

export function ociErrorBody(code: string, message: string, detail?: unknown): string {
  return JSON.stringify({ errors: [{ code, message, ...(detail !== undefined && { detail }) }] });
}

/** Builds the response for any error a handler threw. Unknown errors are logged and become 500. */
export function errorResponse(c: Context<AppEnv>, err: unknown): Response {
  const log = c.get('log');
  let status: number;
  let body: string;
  let headers: Record<string, string> = {};
  if (err instanceof OciError) {
    status = err.status;
    body = ociErrorBody(err.code, err.message, err.detail);
    headers = { ...err.headers };
    log?.debug({ code: err.code, msg: err.message }, 'request failed');
  } else if (isClientAbort(err)) {
    // The client went away mid-body: nobody is left to read a response.
    log?.info({ err: (err as Error).message }, 'client aborted the request');
    status = 400;
    body = ociErrorBody('BLOB_UPLOAD_INVALID', 'request body ended early');
  } else {
    log?.error({ err }, 'internal error');
    status = 500;
    body = ociErrorBody('UNKNOWN', 'internal server error');
  }
  if (c.req.method === 'HEAD') return new Response(null, { status, headers });
  return new Response(body, { status, headers: { ...headers, 'Content-Type': 'application/json' } });
}

export function ociError(code: OciCode, message?: string, detail?: unknown): OciError {
  return new OciError(code, message, { detail });
}

function isClientAbort(err: unknown): boolean {
  const code = (err as { code?: string } | null)?.code;
  return (
    code === 'ECONNRESET' ||
    code === 'ERR_STREAM_PREMATURE_CLOSE' ||
    (err as Error | null)?.name === 'AbortError'
  );
}
