// What every authenticating route reads off a request the same way: the request facts policies
// see (source address, request id, TLS) and Basic credentials.
import type { Context } from 'hono';
import type { RequestInfo } from '../auth/index.ts';
import type { AppEnv } from './env.ts';

export function requestInfo(c: Context<AppEnv>): RequestInfo {
  return {
    sourceIp: c.get('clientIp'),
    requestId: c.get('requestId'),
    secure: c.get('origin').startsWith('https:'),
  };
}

/** The user name and secret of an `Authorization: Basic ...` header, or undefined if malformed. */
export function basicCredentials(header: string): { username: string; secret: string } | undefined {
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { username: decoded.slice(0, colon), secret: decoded.slice(colon + 1) };
}
