import { describe, expect, it } from 'vitest';
import { createGetSigner, escapeS3Path } from './s3-sign.ts';

// The worked example of AWS's S3 documentation ("Signature Calculations for the Authorization
// Header: Transferring Payload in a Single Chunk", Example: GET Object).
const example = {
  host: 'examplebucket.s3.amazonaws.com',
  path: '/test.txt',
  headers: { range: 'bytes=0-9' },
  region: 'us-east-1',
  credentials: {
    accessKeyId: 'AKIAIOSFODNN7EXAMPLE',
    secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
  },
  now: new Date('2013-05-24T00:00:00Z'),
};

describe('S3 GET signing', () => {
  it("matches AWS's documented GET Object example", () => {
    const h = createGetSigner()(example);
    expect(h.authorization).toBe(
      'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, ' +
        'SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, ' +
        'Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41',
    );
    expect(h['x-amz-date']).toBe('20130524T000000Z');
    expect(h['x-amz-content-sha256']).toBe(
      'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    );
    expect(h.range).toBe('bytes=0-9');
    expect(h.host).toBe('examplebucket.s3.amazonaws.com');
  });

  it('signs a session token, and a new day or secret gets a new signing key', () => {
    const sign = createGetSigner();
    const withToken = sign({ ...example, credentials: { ...example.credentials, sessionToken: 'tok' } });
    expect(withToken['x-amz-security-token']).toBe('tok');
    expect(withToken.authorization).toContain(
      'SignedHeaders=host;range;x-amz-content-sha256;x-amz-date;x-amz-security-token,',
    );
    // The cached key must not leak into another day or secret: compare with a fresh signer.
    for (const other of [
      { ...example, now: new Date('2013-05-25T00:00:00Z') },
      { ...example, credentials: { ...example.credentials, secretAccessKey: 'another' } },
      example,
    ]) {
      expect(sign(other).authorization).toBe(createGetSigner()(other).authorization);
    }
    expect(sign(example).authorization).not.toBe(withToken.authorization);
  });

  it('escapes keys as S3 paths: slashes kept, everything outside the unreserved set encoded', () => {
    expect(escapeS3Path('bucket/a b/c+d/ü/x~y_z-1.2')).toBe('bucket/a%20b/c%2Bd/%C3%BC/x~y_z-1.2');
    expect(escapeS3Path("it's(*)!")).toBe('it%27s%28%2A%29%21');
  });
});
