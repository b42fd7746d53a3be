import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ECSClient, ListClustersCommand, RegisterTaskDefinitionCommand } from '@aws-sdk/client-ecs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  canonicalQueryString,
  canonicalUri,
  deriveSigningKey,
  type SigV4Error,
  type SigV4Options,
  type SigV4Request,
  sigV4Messages,
  verifySigV4,
} from './sigv4.ts';

const KEY_ID = 'BKIATESTKEY0000001';
const SECRET = 'berth/test+secret/0123456789abcdefghijklmn';
const PRINCIPAL = { kind: 'user', name: 'alice' };

/** Captures requests as they arrive on the socket and answers like ECS would. */
let server: Server;
let endpoint: string;
const captured: SigV4Request[] = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = req.url ?? '/';
      const q = url.indexOf('?');
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) {
        if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(',') : v;
      }
      captured.push({
        method: req.method ?? 'GET',
        path: q < 0 ? url : url.slice(0, q),
        query: q < 0 ? '' : url.slice(q + 1),
        headers,
        body: new Uint8Array(Buffer.concat(chunks)),
      });
      res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' });
      res.end(headers['x-amz-target']?.endsWith('ListClusters') ? '{"clusterArns":[]}' : '{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

function client(opts: { region?: string; sessionToken?: string; secret?: string } = {}) {
  return new ECSClient({
    endpoint,
    region: opts.region ?? 'eu-west-3',
    maxAttempts: 1,
    credentials: {
      accessKeyId: KEY_ID,
      secretAccessKey: opts.secret ?? SECRET,
      ...(opts.sessionToken ? { sessionToken: opts.sessionToken } : {}),
    },
  });
}

async function send(command: ListClustersCommand | RegisterTaskDefinitionCommand, c = client()) {
  const before = captured.length;
  // biome-ignore lint/suspicious/noExplicitAny: both commands go through the same client
  await c.send(command as any);
  expect(captured.length).toBe(before + 1);
  return captured[captured.length - 1]!;
}

function dateOf(req: SigV4Request): number {
  const d = req.headers['x-amz-date']!;
  return Date.UTC(
    +d.slice(0, 4),
    +d.slice(4, 6) - 1,
    +d.slice(6, 8),
    +d.slice(9, 11),
    +d.slice(11, 13),
    +d.slice(13, 15),
  );
}

function options(req: SigV4Request, over: Partial<SigV4Options> = {}): SigV4Options {
  return {
    service: 'ecs',
    lookupSecret: async (id) => (id === KEY_ID ? { secret: SECRET, principal: PRINCIPAL } : undefined),
    now: () => dateOf(req) + 1_000,
    ...over,
  };
}

async function rejection(p: Promise<unknown>): Promise<SigV4Error> {
  try {
    await p;
  } catch (err) {
    return err as SigV4Error;
  }
  throw new Error('expected a rejection');
}

function withHeaders(req: SigV4Request, headers: Record<string, string | undefined>): SigV4Request {
  return { ...req, headers: { ...req.headers, ...headers } };
}

const registerInput = {
  family: 'web-ünïcødé',
  containerDefinitions: [
    {
      name: 'web',
      image: 'berth.local/shop/web:1.0',
      memory: 128,
      environment: [{ name: 'GREETING', value: 'こんにちは, Grüße, 👋' }],
    },
  ],
};

describe('verifySigV4 with requests signed by @aws-sdk/client-ecs', () => {
  it('accepts ListClusters and names the key, principal and region', async () => {
    const req = await send(new ListClustersCommand({}));
    expect(req.headers['x-amz-target']).toBe('AmazonEC2ContainerServiceV20141113.ListClusters');
    const id = await verifySigV4(req, options(req));
    expect(id).toEqual({ accessKeyId: KEY_ID, principal: PRINCIPAL, region: 'eu-west-3' });
  });

  it('accepts RegisterTaskDefinition with a unicode JSON body', async () => {
    const req = await send(new RegisterTaskDefinitionCommand(registerInput));
    expect(new TextDecoder().decode(req.body)).toContain('こんにちは');
    await expect(verifySigV4(req, options(req))).resolves.toMatchObject({ accessKeyId: KEY_ID });
  });

  it('accepts any region the client chose, and pins one when configured', async () => {
    const req = await send(new ListClustersCommand({}), client({ region: 'ap-southeast-2' }));
    await expect(verifySigV4(req, options(req))).resolves.toMatchObject({ region: 'ap-southeast-2' });
    const err = await rejection(verifySigV4(req, options(req, { region: 'us-east-1' })));
    expect(err.code).toBe('InvalidSignatureException');
    expect(err.message).toBe("Credential should be scoped to a valid region, not 'ap-southeast-2'. ");
  });

  it('passes the session token to lookupSecret and returns it', async () => {
    const req = await send(new ListClustersCommand({}), client({ sessionToken: 'session-token-1' }));
    const seen: (string | undefined)[] = [];
    const id = await verifySigV4(
      req,
      options(req, {
        lookupSecret: async (keyId, token) => {
          seen.push(token);
          return keyId === KEY_ID && token === 'session-token-1'
            ? { secret: SECRET, principal: 'role' }
            : undefined;
        },
      }),
    );
    expect(seen).toEqual(['session-token-1']);
    expect(id).toMatchObject({ principal: 'role', sessionToken: 'session-token-1' });

    const forged = withHeaders(req, { 'x-amz-security-token': 'forged' });
    const err = await rejection(
      verifySigV4(
        forged,
        options(forged, { lookupSecret: async (_k, t) => (t === 'forged' ? undefined : undefined) }),
      ),
    );
    expect(err.code).toBe('UnrecognizedClientException');
  });

  it('lets lookupSecret raise ExpiredTokenException', async () => {
    const req = await send(new ListClustersCommand({}), client({ sessionToken: 'old' }));
    const { SigV4Error } = await import('./sigv4.ts');
    const err = await rejection(
      verifySigV4(
        req,
        options(req, {
          lookupSecret: async () => {
            throw new SigV4Error('ExpiredTokenException', sigV4Messages.expiredToken);
          },
        }),
      ),
    );
    expect(err.code).toBe('ExpiredTokenException');
  });

  describe('tampering', () => {
    let req: SigV4Request;
    beforeAll(async () => {
      req = await send(new RegisterTaskDefinitionCommand(registerInput));
    });

    const mismatch = async (tampered: SigV4Request) => {
      const err = await rejection(verifySigV4(tampered, options(tampered)));
      expect(err.code).toBe('InvalidSignatureException');
      expect(err.status).toBe(400);
      expect(err.message.startsWith(sigV4Messages.signatureMismatch)).toBe(true);
      expect(err.message).toContain('The Canonical String for this request should have been');
      return err;
    };

    it('a changed body byte', async () => {
      const body = Uint8Array.from(req.body);
      const at = body.length - 3;
      body[at] = body[at]! ^ 1;
      // The SDK signs x-amz-content-sha256, so the body no longer matches its declared hash...
      const tampered = { ...req, body };
      const err = await rejection(verifySigV4(tampered, options(tampered)));
      expect(err.code).toBe('InvalidSignatureException');
      expect(err.message).toBe(
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
      );
      // ...and declaring the new hash breaks the signature instead.
      const { createHash } = await import('node:crypto');
      await mismatch(
        withHeaders(tampered, { 'x-amz-content-sha256': createHash('sha256').update(body).digest('hex') }),
      );
      // Without the header the body's own hash goes into the canonical request.
      await mismatch(withHeaders(tampered, { 'x-amz-content-sha256': undefined }));
    });

    it('a changed signed header', async () => {
      await mismatch(
        withHeaders(req, { 'x-amz-target': 'AmazonEC2ContainerServiceV20141113.DeregisterTaskDefinition' }),
      );
    });

    it('a changed path or query', async () => {
      await mismatch({ ...req, path: '/other' });
      await mismatch({ ...req, query: 'a=b' });
    });

    it('a changed date within the same day', async () => {
      const d = req.headers['x-amz-date']!;
      const later = d.slice(0, 13) + String((Number(d.slice(13, 15)) + 1) % 60).padStart(2, '0') + 'Z';
      await mismatch(withHeaders(req, { 'x-amz-date': later }));
    });

    it('the wrong secret', async () => {
      const err = await rejection(
        verifySigV4(req, options(req, { lookupSecret: async () => ({ secret: 'other', principal: null }) })),
      );
      expect(err.code).toBe('InvalidSignatureException');
    });

    it('a declared payload hash that does not match the body', async () => {
      const err = await rejection(
        verifySigV4(withHeaders(req, { 'x-amz-content-sha256': '0'.repeat(64) }), options(req)),
      );
      expect(err.code).toBe('InvalidSignatureException');
    });
  });

  it('accepts a matching x-amz-content-sha256 header', async () => {
    const { createHash } = await import('node:crypto');
    const req = await send(new ListClustersCommand({}));
    const hash = createHash('sha256').update(req.body).digest('hex');
    expect(req.headers['x-amz-content-sha256']).toBe(hash);
    await expect(verifySigV4(req, options(req))).resolves.toBeTruthy();
  });

  it('answers UnrecognizedClientException for an unknown key', async () => {
    const req = await send(new ListClustersCommand({}));
    const err = await rejection(verifySigV4(req, options(req, { lookupSecret: async () => undefined })));
    expect(err.code).toBe('UnrecognizedClientException');
    expect(err.message).toBe('The security token included in the request is invalid.');
  });

  it('refuses a request more than 5 minutes old, with AWS message', async () => {
    const req = await send(new ListClustersCommand({}));
    const signed = dateOf(req);
    const now = signed + 6 * 60_000;
    const err = await rejection(verifySigV4(req, options(req, { now: () => now })));
    expect(err.code).toBe('InvalidSignatureException');
    const basic = (ms: number) =>
      new Date(ms)
        .toISOString()
        .replace(/[-:]/g, '')
        .replace(/\.\d{3}/, '');
    expect(err.message).toBe(
      `Signature expired: ${basic(signed)} is now earlier than ${basic(now - 300_000)} (${basic(now)} - 5 min.)`,
    );
    // 4:59 later is still fine.
    await expect(verifySigV4(req, options(req, { now: () => signed + 299_000 }))).resolves.toBeTruthy();
  });

  it('refuses a request dated more than 5 minutes ahead', async () => {
    const req = await send(new ListClustersCommand({}));
    const signed = dateOf(req);
    const now = signed - 6 * 60_000;
    const err = await rejection(verifySigV4(req, options(req, { now: () => now })));
    const basic = (ms: number) =>
      new Date(ms)
        .toISOString()
        .replace(/[-:]/g, '')
        .replace(/\.\d{3}/, '');
    expect(err.message).toBe(
      `Signature not yet current: ${basic(signed)} is still later than ${basic(now + 300_000)} (${basic(now)} + 5 min.)`,
    );
  });

  it('accepts the same signed request again and in parallel within the window, as AWS does', async () => {
    const req = await send(new ListClustersCommand({}));
    const opts = options(req);
    await verifySigV4(req, opts);
    await expect(verifySigV4(req, opts)).resolves.toMatchObject({ accessKeyId: KEY_ID });
    const results = await Promise.allSettled([1, 2, 3, 4].map(() => verifySigV4(req, opts)));
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled']);
    // Until its date leaves the window.
    const late = await rejection(verifySigV4(req, { ...opts, now: () => dateOf(req) + 301_000 }));
    expect(late.message).toMatch(/^Signature expired: /);
  });
});

describe('verifySigV4 refusals before the signature', () => {
  let req: SigV4Request;
  beforeAll(async () => {
    req = await send(new ListClustersCommand({}));
  });

  const codeOf = async (r: SigV4Request, over: Partial<SigV4Options> = {}) =>
    rejection(verifySigV4(r, options(req, over)));

  it('no Authorization header: MissingAuthenticationTokenException', async () => {
    const err = await codeOf(withHeaders(req, { authorization: undefined }));
    expect([err.code, err.message]).toEqual([
      'MissingAuthenticationTokenException',
      'Missing Authentication Token',
    ]);
    expect((await codeOf(withHeaders(req, { authorization: 'Bearer abc' }))).code).toBe(
      'MissingAuthenticationTokenException',
    );
  });

  it('missing parts: IncompleteSignatureException naming each', async () => {
    const auth = 'AWS4-HMAC-SHA256 Credential=abc/20150830/us-east-1/ecs/aws4_request';
    const err = await codeOf(withHeaders(req, { authorization: auth, 'x-amz-date': undefined }));
    expect(err.code).toBe('IncompleteSignatureException');
    expect(err.message).toBe(
      "Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. " +
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. " +
        `Authorization=${auth}`,
    );
  });

  it('a pair without "=": IncompleteSignatureException', async () => {
    const auth = req.headers['authorization']!.replace('Credential=', 'Credential ');
    const err = await codeOf(withHeaders(req, { authorization: auth }));
    expect(err.code).toBe('IncompleteSignatureException');
    expect(err.message).toMatch(/not a valid key=value pair \(missing equal-sign\) in Authorization header/);
  });

  it('a malformed date: IncompleteSignatureException', async () => {
    const err = await codeOf(withHeaders(req, { 'x-amz-date': '2015-08-30T12:36:00Z' }));
    expect(err.code).toBe('IncompleteSignatureException');
    expect(err.message).toBe(
      "Date must be in ISO-8601 'basic format'. Got '2015-08-30T12:36:00Z'. See http://en.wikipedia.org/wiki/ISO_8601",
    );
  });

  it('an unsupported algorithm: IncompleteSignatureException', async () => {
    const auth = req.headers['authorization']!.replace('AWS4-HMAC-SHA256', 'AWS4-HMAC-SHA512');
    const err = await codeOf(withHeaders(req, { authorization: auth }));
    expect(err.code).toBe('IncompleteSignatureException');
    expect(err.message).toBe(
      "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512' (only AWS4-HMAC-SHA256 for now). ",
    );
  });

  it('a short credential: IncompleteSignatureException', async () => {
    const auth = req.headers['authorization']!.replace(/Credential=[^,]+/, 'Credential=a/b/c/d');
    const err = await codeOf(withHeaders(req, { authorization: auth }));
    expect(err.message).toBe(
      "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got 'a/b/c/d'",
    );
  });

  it('a wrong scope: every complaint at once, as AWS lists them', async () => {
    const d = req.headers['x-amz-date']!;
    const auth = req.headers['authorization']!.replace(
      /Credential=[^,]+/,
      `Credential=${KEY_ID}/20000101/eu-west-3/s3/aws5_request`,
    );
    const err = await codeOf(withHeaders(req, { authorization: auth }));
    expect(err.code).toBe('InvalidSignatureException');
    expect(err.message).toBe(
      "Credential should be scoped to correct service: 'ecs'. " +
        "Credential should be scoped with a valid terminator: 'aws4_request', not 'aws5_request'. " +
        `Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '20000101' != '${d.slice(0, 8)}', from '${d}'.`,
    );
  });

  it('Host or the date left unsigned: InvalidSignatureException', async () => {
    const noHost = req.headers['authorization']!.replace(/SignedHeaders=[^,]+/, 'SignedHeaders=x-amz-date');
    const err = await codeOf(withHeaders(req, { authorization: noHost }));
    expect(err.message).toBe("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.");
    const noDate = req.headers['authorization']!.replace(/SignedHeaders=[^,]+/, 'SignedHeaders=host');
    expect((await codeOf(withHeaders(req, { authorization: noDate }))).message).toBe(
      "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.",
    );
  });

  it('both a header and a query signature', async () => {
    const err = await codeOf({ ...req, query: 'X-Amz-Algorithm=AWS4-HMAC-SHA256' });
    expect(err.message).toBe(
      "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header.",
    );
  });
});

// The AWS SigV4 test suite (IAM user guide, "Signature Version 4 test suite"): credentials
// AKIDEXAMPLE / wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, region us-east-1, service "service",
// 2015-08-30T12:36:00Z, with the signatures AWS published for each request.
describe('the AWS SigV4 test suite', () => {
  const now = Date.UTC(2015, 7, 30, 12, 36, 0);
  const suite = (method: string, path: string, query: string, signature: string): SigV4Request => ({
    method,
    path,
    query,
    headers: {
      host: 'example.amazonaws.com',
      'x-amz-date': '20150830T123600Z',
      authorization:
        'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, ' +
        `SignedHeaders=host;x-amz-date, Signature=${signature}`,
    },
    body: new Uint8Array(),
  });
  const opts = (): SigV4Options => ({
    service: 'service',
    lookupSecret: async (id) =>
      id === 'AKIDEXAMPLE'
        ? { secret: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', principal: 'example' }
        : undefined,
    now: () => now,
  });

  it.each([
    ['get-vanilla', 'GET', '/', '', '5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31'],
    [
      'get-vanilla-query-order-key-case',
      'GET',
      '/',
      'Param2=value2&Param1=value1',
      'b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500',
    ],
    ['post-vanilla', 'POST', '/', '', '5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b'],
    ['get-utf8', 'GET', '/ሴ', '', '8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85'],
  ])('%s', async (_name, method, path, query, signature) => {
    await expect(verifySigV4(suite(method, path, query, signature), opts())).resolves.toEqual({
      accessKeyId: 'AKIDEXAMPLE',
      principal: 'example',
      region: 'us-east-1',
    });
  });

  it('get-vanilla with one hex digit changed fails', async () => {
    const err = await rejection(
      verifySigV4(
        suite('GET', '/', '', '5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf30'),
        opts(),
      ),
    );
    expect(err.code).toBe('InvalidSignatureException');
    expect(err.message).toContain(
      "'GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" +
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'",
    );
  });

  it('derives the published signing key', () => {
    expect(
      deriveSigningKey(
        'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
        '20150830',
        'us-east-1',
        'service',
      ).toString('hex'),
    ).toBe('938127b5336810ddb6a5d6af445fcac9e371f9ed418ed386b022aed82901be75');
  });
});

describe('a request dated by the HTTP Date header', () => {
  it('is accepted when Date is signed, and its time bounds the skew', async () => {
    const { createHmac } = await import('node:crypto');
    const { canonicalRequest, stringToSign } = await import('./sigv4.ts');
    const headers: Record<string, string> = {
      host: 'berth.local:8443',
      date: 'Sun, 30 Aug 2015 12:36:00 GMT',
      'x-amz-target': 'AmazonEC2ContainerServiceV20141113.ListClusters',
    };
    const body = new TextEncoder().encode('{}');
    const { createHash } = await import('node:crypto');
    const canonical = canonicalRequest({
      method: 'POST',
      path: '/',
      query: '',
      headers,
      signedHeaders: ['date', 'host', 'x-amz-target'],
      payloadHash: createHash('sha256').update(body).digest('hex'),
    });
    const sts = stringToSign('20150830T123600Z', '20150830/us-east-1/ecs/aws4_request', canonical);
    const sig = createHmac('sha256', deriveSigningKey(SECRET, '20150830', 'us-east-1', 'ecs'))
      .update(sts)
      .digest('hex');
    headers.authorization = `AWS4-HMAC-SHA256 Credential=${KEY_ID}/20150830/us-east-1/ecs/aws4_request, SignedHeaders=date;host;x-amz-target, Signature=${sig}`;
    const req: SigV4Request = { method: 'POST', path: '/', query: '', headers, body };
    const signedAt = Date.UTC(2015, 7, 30, 12, 36, 0);
    await expect(verifySigV4(req, options(req, { now: () => signedAt + 60_000 }))).resolves.toMatchObject({
      region: 'us-east-1',
    });
    const err = await rejection(verifySigV4(req, options(req, { now: () => signedAt + 600_000 })));
    expect(err.message).toMatch(/^Signature expired: 20150830T123600Z is now earlier than/);
  });
});

describe('canonical forms', () => {
  it('normalises the path and encodes what was sent once more', () => {
    expect(canonicalUri('')).toBe('/');
    expect(canonicalUri('/')).toBe('/');
    expect(canonicalUri('//example//')).toBe('/example/');
    expect(canonicalUri('/./a/../b')).toBe('/b');
    expect(canonicalUri('/example space/')).toBe('/example%20space/');
    expect(canonicalUri('/%E1%88%B4')).toBe('/%25E1%2588%25B4');
  });

  it('sorts and strictly encodes the query', () => {
    expect(canonicalQueryString('b=2&a=1&A=0')).toBe('A=0&a=1&b=2');
    expect(canonicalQueryString('x=a%20b&y=c*d&flag')).toBe('flag=&x=a%20b&y=c%2Ad');
    expect(canonicalQueryString('k=v2&k=v1')).toBe('k=v1&k=v2');
  });
});
