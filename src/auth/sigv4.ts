// Server-side AWS Signature Version 4 verification, framework-free: the ECS endpoint hands in the
// request exactly as it arrived and gets back who signed it, or a SigV4Error carrying the error type
// and message an AWS JSON service (ECS, ECR, DynamoDB: the "coral" front ends) answers with.
// It lives in auth/ because it is sign-in: the access key's secret never leaves this module, and
// the facade (service.ts authenticateSigV4) throttles and audits it like every other method.
//
// The checks run in the order those services apply them, so a client sees the same first complaint:
//   no Authorization            -> MissingAuthenticationTokenException
//   missing parts / bad date    -> IncompleteSignatureException
//   clock skew (default 5 min)  -> InvalidSignatureException "Signature expired: ..."
//   Host not signed             -> InvalidSignatureException
//   algorithm, credential shape -> IncompleteSignatureException
//   scope (region/service/...)  -> InvalidSignatureException "Credential should be scoped ..."
//   unknown key or bad token    -> UnrecognizedClientException
//   signature                   -> InvalidSignatureException "The request signature we calculated ..."
// Every one of these answers HTTP 400 on ECS.
//
// There is no replay check, because AWS has none: a signed request stays valid for the whole
// clock-skew window (5 minutes either way on ECS), and the SDKs and the CLI rely on it. They sign
// once and send the same bytes again on a retry, and two calls made in the same second with the
// same parameters (parallel `aws ecs list-clusters`, a describe loop) are byte-identical, so a
// cache of used signatures refused normal use. What bounds a captured request is the window (the
// date is inside the signature) and TLS, which keeps requests from being captured at all.

import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

export type SigV4ErrorCode =
  | 'MissingAuthenticationTokenException'
  | 'IncompleteSignatureException'
  | 'InvalidSignatureException'
  | 'UnrecognizedClientException'
  | 'ExpiredTokenException';

export class SigV4Error extends Error {
  readonly code: SigV4ErrorCode;
  /** AWS JSON services answer every authentication failure with 400. */
  readonly status = 400;
  constructor(code: SigV4ErrorCode, message: string) {
    super(message);
    this.name = 'SigV4Error';
    this.code = code;
  }
}

/** The messages AWS uses, for callers (lookupSecret) that need to raise the same errors. */
export const sigV4Messages = {
  missingToken: 'Missing Authentication Token',
  unrecognizedClient: 'The security token included in the request is invalid.',
  expiredToken: 'The security token included in the request is expired',
  signatureMismatch:
    'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.',
} as const;

export interface SigV4Request {
  method: string;
  /** The path exactly as received (still percent-encoded), without the query. */
  path: string;
  /** The raw query string, without the leading '?'. */
  query: string;
  /** Header names in lower case; repeated headers joined with ',' as Node does. */
  headers: Readonly<Record<string, string | undefined>>;
  body: Uint8Array;
}

export interface SigV4Secret {
  secret: string;
  principal: unknown;
}

export interface SigV4Options {
  /** The signing name the credential scope must carry ('ecs' for the ECS endpoint). */
  service: string;
  /** When set, the scope must name this region; when not, any region the client chose is accepted. */
  region?: string;
  /**
   * Resolves an access key id (and the X-Amz-Security-Token, when the request carries one) to its
   * secret. Return undefined for an unknown key or an invalid token; throw a SigV4Error (for example
   * ExpiredTokenException with sigV4Messages.expiredToken) for anything more specific.
   */
  lookupSecret: (accessKeyId: string, sessionToken?: string) => Promise<SigV4Secret | undefined>;
  /** Milliseconds since the epoch; Date.now by default. */
  now?: () => number;
  /** How far the request's date may be from now, either way (AWS: 5 minutes). */
  maxSkewSeconds?: number;
}

export interface SigV4Identity {
  accessKeyId: string;
  principal: unknown;
  /** The region the client signed for. */
  region: string;
  sessionToken?: string;
}

const ALGORITHM = 'AWS4-HMAC-SHA256';
const TERMINATOR = 'aws4_request';
const DEFAULT_SKEW_SECONDS = 300;

export async function verifySigV4(req: SigV4Request, opts: SigV4Options): Promise<SigV4Identity> {
  const headers = req.headers;
  const authorization = headers['authorization'];
  const queryHasSignature = /(^|&)X-Amz-Algorithm=/.test(req.query);
  if (authorization !== undefined && queryHasSignature) {
    throw new SigV4Error(
      'InvalidSignatureException',
      "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header.",
    );
  }
  // Presigned URLs are an S3 habit; the ECS clients always sign the Authorization header.
  if (authorization === undefined || !authorization.trim().startsWith('AWS4-')) {
    throw new SigV4Error('MissingAuthenticationTokenException', sigV4Messages.missingToken);
  }

  const auth = parseAuthorization(authorization);
  const dateHeader = headers['x-amz-date'] !== undefined ? 'x-amz-date' : 'date';
  const rawDate = headers[dateHeader];
  {
    let missing = '';
    for (const p of ['Credential', 'Signature', 'SignedHeaders'] as const) {
      if (!auth.params.get(p)) missing += `Authorization header requires '${p}' parameter. `;
    }
    if (rawDate === undefined) {
      missing += "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ";
    }
    if (missing)
      throw new SigV4Error('IncompleteSignatureException', `${missing}Authorization=${authorization}`);
  }
  const credential = auth.params.get('Credential')!;
  const signature = auth.params.get('Signature')!;
  const signedHeaders = auth.params.get('SignedHeaders')!.split(';');

  const requestTime = parseRequestDate(rawDate!, dateHeader);
  const amzDate = basicFormat(requestTime);
  const nowMs = (opts.now ?? Date.now)();
  checkSkew(requestTime, nowMs, opts.maxSkewSeconds ?? DEFAULT_SKEW_SECONDS);

  if (!signedHeaders.includes('host') && !signedHeaders.includes(':authority')) {
    throw new SigV4Error(
      'InvalidSignatureException',
      "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
    );
  }
  if (!signedHeaders.includes(dateHeader)) {
    // AWS tolerates an unsigned date; berth does not, since the date is what bounds a replay.
    const name = dateHeader === 'date' ? 'Date' : 'X-Amz-Date';
    throw new SigV4Error(
      'InvalidSignatureException',
      `'${name}' must be a 'SignedHeader' in the AWS Authorization.`,
    );
  }
  if (auth.algorithm !== ALGORITHM) {
    throw new SigV4Error(
      'IncompleteSignatureException',
      `Unsupported AWS 'algorithm': '${auth.algorithm}' (only ${ALGORITHM} for now). `,
    );
  }

  // Trailing slashes are ignored, as AWS does.
  const scopeParts = credential.replace(/\/+$/, '').split('/');
  if (scopeParts.length !== 5) {
    throw new SigV4Error(
      'IncompleteSignatureException',
      `Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '${credential}'`,
    );
  }
  const [accessKeyId, scopeDate, region, service, terminator] = scopeParts as [
    string,
    string,
    string,
    string,
    string,
  ];
  let scopeErrors = '';
  if (!/^[a-z0-9-]{1,64}$/.test(region) || (opts.region !== undefined && region !== opts.region)) {
    scopeErrors += `Credential should be scoped to a valid region, not '${region}'. `;
  }
  if (service !== opts.service)
    scopeErrors += `Credential should be scoped to correct service: '${opts.service}'. `;
  if (terminator !== TERMINATOR) {
    scopeErrors += `Credential should be scoped with a valid terminator: '${TERMINATOR}', not '${terminator}'. `;
  }
  if (scopeDate !== amzDate.slice(0, 8)) {
    scopeErrors +=
      `Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: ` +
      `'${scopeDate}' != '${amzDate.slice(0, 8)}', from '${amzDate}'.`;
  }
  if (scopeErrors) throw new SigV4Error('InvalidSignatureException', scopeErrors);

  const sessionToken = headers['x-amz-security-token'];
  const found = await opts.lookupSecret(accessKeyId, sessionToken);
  if (!found) throw new SigV4Error('UnrecognizedClientException', sigV4Messages.unrecognizedClient);

  const bodyHash = sha256Hex(req.body);
  const declaredHash = headers['x-amz-content-sha256'];
  if (declaredHash !== undefined && declaredHash !== bodyHash) {
    throw new SigV4Error(
      'InvalidSignatureException',
      "The provided 'x-amz-content-sha256' header does not match what was computed.",
    );
  }

  const canonical = canonicalRequest({
    method: req.method,
    path: req.path,
    query: req.query,
    headers,
    signedHeaders,
    payloadHash: bodyHash,
  });
  const scope = `${scopeDate}/${region}/${service}/${TERMINATOR}`;
  const toSign = stringToSign(amzDate, scope, canonical);
  const expected = createHmac('sha256', deriveSigningKey(found.secret, scopeDate, region, service))
    .update(toSign, 'utf8')
    .digest();
  const given = /^[0-9a-f]{64}$/.test(signature) ? Buffer.from(signature, 'hex') : Buffer.alloc(0);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new SigV4Error(
      'InvalidSignatureException',
      `${sigV4Messages.signatureMismatch}\n\nThe Canonical String for this request should have been\n'${canonical}'\n\n` +
        `The String-to-Sign should have been\n'${toSign}'\n`,
    );
  }

  const identity: SigV4Identity = { accessKeyId, principal: found.principal, region };
  if (sessionToken !== undefined) identity.sessionToken = sessionToken;
  return identity;
}

// --- the Authorization header ---------------------------------------------------------------

interface ParsedAuthorization {
  algorithm: string;
  params: Map<string, string>;
}

function parseAuthorization(header: string): ParsedAuthorization {
  const trimmed = header.trim();
  const space = trimmed.search(/\s/);
  const algorithm = space < 0 ? trimmed : trimmed.slice(0, space);
  const rest = space < 0 ? '' : trimmed.slice(space + 1);
  const params = new Map<string, string>();
  for (const piece of rest.split(',')) {
    const item = piece.trim();
    if (!item) continue;
    const eq = item.indexOf('=');
    if (eq < 0) {
      throw new SigV4Error(
        'IncompleteSignatureException',
        `'${item}' not a valid key=value pair (missing equal-sign) in Authorization header: '${header}'.`,
      );
    }
    const key = item.slice(0, eq).trim();
    if (params.has(key)) {
      throw new SigV4Error(
        'IncompleteSignatureException',
        `Authorization header has more than one '${key}' parameter: '${header}'.`,
      );
    }
    params.set(key, item.slice(eq + 1).trim());
  }
  return { algorithm, params };
}

// --- dates ----------------------------------------------------------------------------------

function parseRequestDate(value: string, header: 'x-amz-date' | 'date'): number {
  const bad = () =>
    new SigV4Error(
      'IncompleteSignatureException',
      `Date must be in ISO-8601 'basic format'. Got '${value}'. See http://en.wikipedia.org/wiki/ISO_8601`,
    );
  if (header === 'date') {
    // The HTTP Date header (RFC 7231) is the fallback AWS accepts when X-Amz-Date is absent.
    const ms = Date.parse(value);
    if (!/GMT$/.test(value.trim()) || Number.isNaN(ms)) throw bad();
    return ms;
  }
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value);
  if (!m) throw bad();
  const [y, mo, d, h, mi, s] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  const ms = Date.UTC(y, mo - 1, d, h, mi, s);
  if (basicFormat(ms) !== value) throw bad(); // rejects 20150231T..., 25:00:00 and the like
  return ms;
}

/** YYYYMMDDTHHMMSSZ, the form SigV4 signs and AWS quotes in its messages. */
function basicFormat(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000)
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
}

function checkSkew(requestMs: number, nowMs: number, skewSeconds: number): void {
  const skewMs = skewSeconds * 1000;
  const window = `${skewSeconds / 60} min.`;
  if (requestMs < nowMs - skewMs) {
    throw new SigV4Error(
      'InvalidSignatureException',
      `Signature expired: ${basicFormat(requestMs)} is now earlier than ${basicFormat(nowMs - skewMs)} ` +
        `(${basicFormat(nowMs)} - ${window})`,
    );
  }
  if (requestMs > nowMs + skewMs) {
    throw new SigV4Error(
      'InvalidSignatureException',
      `Signature not yet current: ${basicFormat(requestMs)} is still later than ${basicFormat(nowMs + skewMs)} ` +
        `(${basicFormat(nowMs)} + ${window})`,
    );
  }
}

// --- the canonical request --------------------------------------------------------------------

export interface CanonicalRequestParts {
  method: string;
  path: string;
  query: string;
  headers: Readonly<Record<string, string | undefined>>;
  signedHeaders: readonly string[];
  payloadHash: string;
}

export function canonicalRequest(p: CanonicalRequestParts): string {
  const headerLines = p.signedHeaders.map((name) => {
    const value = p.headers[name] ?? (name === 'host' ? p.headers[':authority'] : undefined) ?? '';
    return `${name}:${value.trim().replace(/\s+/g, ' ')}\n`;
  });
  return [
    p.method.toUpperCase(),
    canonicalUri(p.path),
    canonicalQueryString(p.query),
    headerLines.join(''),
    p.signedHeaders.join(';'),
    p.payloadHash,
  ].join('\n');
}

/**
 * Non-S3 services normalise the path (empty, '.' and '..' segments go, as RFC 3986 and the AWS
 * SDKs do) and URI-encode the path as it was sent once more: '%' becomes '%25', so a segment the
 * client percent-encoded is signed encoded twice.
 */
export function canonicalUri(rawPath: string): string {
  const segments: string[] = [];
  for (const segment of rawPath.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') segments.pop();
    else segments.push(segment);
  }
  if (segments.length === 0) return '/';
  const trailing = rawPath.endsWith('/') ? '/' : '';
  return `/${segments.map(uriEncode).join('/')}${trailing}`;
}

/** Names and values decoded, encoded again the strict way, then sorted by name and value. */
export function canonicalQueryString(rawQuery: string): string {
  const pairs: [string, string][] = [];
  for (const piece of rawQuery.split('&')) {
    if (!piece) continue;
    const eq = piece.indexOf('=');
    const name = eq < 0 ? piece : piece.slice(0, eq);
    const value = eq < 0 ? '' : piece.slice(eq + 1);
    pairs.push([uriEncode(percentDecode(name)), uriEncode(percentDecode(value))]);
  }
  pairs.sort(([an, av], [bn, bv]) => (an < bn ? -1 : an > bn ? 1 : av < bv ? -1 : av > bv ? 1 : 0));
  return pairs.map(([n, v]) => `${n}=${v}`).join('&');
}

const encoder = new TextEncoder();

/** AWS's UriEncode: every byte but A-Z a-z 0-9 - . _ ~ as %XX with upper-case hex. */
function uriEncode(s: string): string {
  let out = '';
  for (const byte of encoder.encode(s)) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9\-._~]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** Decodes valid %XX escapes to UTF-8 text; a stray '%' stays literal instead of failing. */
function percentDecode(s: string): string {
  if (!s.includes('%')) return s;
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const hex = s.slice(i + 1, i + 3);
    if (s[i] === '%' && /^[0-9A-Fa-f]{2}$/.test(hex)) {
      bytes.push(Number.parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(...encoder.encode(s[i]!));
    }
  }
  return new TextDecoder().decode(Uint8Array.from(bytes));
}

export function stringToSign(amzDate: string, scope: string, canonical: string): string {
  return `${ALGORITHM}\n${amzDate}\n${scope}\n${sha256Hex(encoder.encode(canonical))}`;
}

/** kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request"). */
export function deriveSigningKey(secret: string, date: string, region: string, service: string): Buffer {
  let key: Buffer = createHmac('sha256', `AWS4${secret}`).update(date, 'utf8').digest();
  for (const part of [region, service, TERMINATOR])
    key = createHmac('sha256', key).update(part, 'utf8').digest();
  return key;
}

function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
