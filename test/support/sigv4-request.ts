// An ECS ListClusters request signed with SigV4 at a given time, the way the AWS SDKs sign it,
// for unit tests of the verifier's callers (auth/sigv4.test.ts holds the verifier to the real SDK;
// here the signer only has to agree with it).
import { createHash, createHmac } from 'node:crypto';
import { canonicalRequest, deriveSigningKey, type SigV4Request, stringToSign } from '../../src/auth/sigv4.ts';

export function signedEcsRequest(o: {
  keyId: string;
  secret: string;
  /** Milliseconds since the epoch; the signature carries whole seconds. */
  t: number;
  region: string;
  body?: string;
  sessionToken?: string;
}): SigV4Request {
  const amzDate = new Date(Math.floor(o.t / 1000) * 1000)
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
  const day = amzDate.slice(0, 8);
  const headers: Record<string, string> = {
    host: 'berth.test',
    'content-type': 'application/x-amz-json-1.1',
    'x-amz-date': amzDate,
    'x-amz-target': 'AmazonEC2ContainerServiceV20141113.ListClusters',
    ...(o.sessionToken !== undefined && { 'x-amz-security-token': o.sessionToken }),
  };
  const signedHeaders = Object.keys(headers).sort();
  const bytes = new TextEncoder().encode(o.body ?? '{}');
  const canonical = canonicalRequest({
    method: 'POST',
    path: '/ecs/',
    query: '',
    headers,
    signedHeaders,
    payloadHash: createHash('sha256').update(bytes).digest('hex'),
  });
  const scope = `${day}/${o.region}/ecs/aws4_request`;
  const signature = createHmac('sha256', deriveSigningKey(o.secret, day, o.region, 'ecs'))
    .update(stringToSign(amzDate, scope, canonical))
    .digest('hex');
  headers['authorization'] =
    `AWS4-HMAC-SHA256 Credential=${o.keyId}/${scope}, SignedHeaders=${signedHeaders.join(';')}, Signature=${signature}`;
  return { method: 'POST', path: '/ecs/', query: '', headers, body: bytes };
}
