// AWS Signature Version 4 for the one request the S3 driver sends without the SDK: the ranged
// GET behind every blob read (s3.ts copyTo). The SDK's path through its middleware stack
// (serializing, endpoint rules, signing, parsing) cost a few milliseconds of CPU per read in
// profiles of pulls, as much as moving a megabyte; a GET needs none of it but the signature.
// Everything that is not a plain success still goes through the SDK (s3.ts), so its retries,
// clock-skew correction and error parsing stay the ones every other request gets.
//
// Only what a GET without a body needs: no query string, the payload hash of the empty body,
// and the path already escaped the way S3 wants it (each character but the unreserved ones and
// '/', once: S3 does not escape the path a second time for the canonical request).
import { createHash, createHmac } from 'node:crypto';

export interface SigningCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string | undefined;
}

export interface GetToSign {
  /** The Host header: the host name, with ':port' when it is not the scheme's default. */
  readonly host: string;
  /** The escaped path (escapeS3Path), which is also the canonical URI. */
  readonly path: string;
  /** Further headers to send and sign, names in lower case (for example range). */
  readonly headers: Readonly<Record<string, string>>;
  readonly region: string;
  readonly credentials: SigningCredentials;
  /** The signing time (the SDK's clock, corrected for skew). */
  readonly now: Date;
}

/** sha256 of the empty payload, which S3 accepts as x-amz-content-sha256 of a GET. */
const emptyPayloadHash = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/** An object key (or bucket/key) escaped for an S3 path: every byte but A-Z a-z 0-9 - . _ ~ and '/'. */
export function escapeS3Path(p: string): string {
  return encodeURIComponent(p)
    .replace(/%2F/g, '/')
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** 20130524T000000Z */
function amzDate(d: Date): string {
  return `${d.toISOString().slice(0, 19).replace(/[-:]/g, '')}Z`;
}

/**
 * Returns a signer that keeps the derived signing key for the current day, region and secret
 * (four HMACs saved per request).
 */
export function createGetSigner() {
  let cached: { scope: string; secret: string; key: Buffer } | undefined;

  function signingKey(secret: string, day: string, region: string): Buffer {
    const scope = `${day}/${region}`;
    if (cached?.scope === scope && cached.secret === secret) return cached.key;
    const kDate = createHmac('sha256', `AWS4${secret}`).update(day).digest();
    const kRegion = createHmac('sha256', kDate).update(region).digest();
    const kService = createHmac('sha256', kRegion).update('s3').digest();
    const key = createHmac('sha256', kService).update('aws4_request').digest();
    cached = { scope, secret, key };
    return key;
  }

  /** The headers to send with the GET, Authorization included. */
  return function signGet(req: GetToSign): Record<string, string> {
    const date = amzDate(req.now);
    const day = date.slice(0, 8);
    const headers: Record<string, string> = {
      ...req.headers,
      host: req.host,
      'x-amz-content-sha256': emptyPayloadHash,
      'x-amz-date': date,
      ...(req.credentials.sessionToken !== undefined && {
        'x-amz-security-token': req.credentials.sessionToken,
      }),
    };
    const names = Object.keys(headers).sort();
    const canonicalHeaders = names.map((n) => `${n}:${headers[n]!.trim().replace(/\s+/g, ' ')}\n`).join('');
    const signedHeaders = names.join(';');
    const canonicalRequest = `GET\n${req.path}\n\n${canonicalHeaders}\n${signedHeaders}\n${emptyPayloadHash}`;
    const scope = `${day}/${req.region}/s3/aws4_request`;
    const stringToSign = `AWS4-HMAC-SHA256\n${date}\n${scope}\n${createHash('sha256').update(canonicalRequest).digest('hex')}`;
    const signature = createHmac('sha256', signingKey(req.credentials.secretAccessKey, day, req.region))
      .update(stringToSign)
      .digest('hex');
    headers.authorization = `AWS4-HMAC-SHA256 Credential=${req.credentials.accessKeyId}/${scope}, SignedHeaders=${signedHeaders}, Signature=${signature}`;
    return headers;
  };
}
