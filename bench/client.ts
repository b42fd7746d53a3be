// A lean HTTPS client for the benchmark: keep-alive sockets per target, bodies sent from
// prebuilt buffers, responses hashed as they stream so every byte is checked without copies.
//
// Given credentials it signs in the way docker does: GET /v2/ once; on a Bearer challenge it
// fetches a token from the challenge's realm with Basic credentials, one per repository
// (scope repository:<name>:pull,push), keeps it until shortly before it expires, and sends it as
// `Authorization: Bearer`; a 401 on a request (a token that expired or was revoked) fetches a new
// token and retries once. A registry that answers /v2/ with 200 (Distribution here, or berth with
// auth.enabled=false) gets no Authorization header at all.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:https';

export interface Reply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  /** sha256 of the body, when asked for. */
  readonly digest?: string;
  /** The body, when asked for (small responses only). */
  readonly body?: Buffer;
  readonly bytes: number;
}

export interface Credentials {
  readonly username: string;
  readonly password: string;
}

export interface CallOptions {
  body?: Uint8Array;
  headers?: Record<string, string>;
  hash?: boolean;
  /** Keep the body (for JSON answers). */
  keep?: boolean;
}

/** How a registry wants to be signed in to, as learnt from GET /v2/. */
export type AuthScheme =
  | { readonly kind: 'none' }
  | { readonly kind: 'basic' }
  | { readonly kind: 'bearer'; readonly realm: string; readonly service?: string };

/** The parameters of a `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` challenge. */
export function parseChallenge(header: string | string[] | undefined): AuthScheme | undefined {
  const h = Array.isArray(header) ? header.join(', ') : header;
  if (!h) return undefined;
  if (/^basic\b/i.test(h)) return { kind: 'basic' };
  if (!/^bearer\s/i.test(h)) return undefined;
  const params: Record<string, string> = {};
  for (const m of h.slice(7).matchAll(/(\w+)="([^"]*)"/g)) params[m[1]!.toLowerCase()] = m[2]!;
  if (!params.realm) return undefined;
  return {
    kind: 'bearer',
    realm: params.realm,
    ...(params.service !== undefined && { service: params.service }),
  };
}

/** The repository a /v2 path names (the same grammar as berth's router), if any. */
const repoPath =
  /^\/v2\/(.+)\/(?:blobs\/uploads(?:\/[^/]*)?|blobs\/[^/]+|manifests\/[^/]+|tags\/list|referrers\/[^/]+)\/?$/;
export function repositoryOf(path: string): string | undefined {
  const q = path.indexOf('?');
  return repoPath.exec(q < 0 ? path : path.slice(0, q))?.[1];
}

interface Token {
  readonly value: string;
  /** performance.now() after which a new token is fetched. */
  readonly renewAt: number;
}

export function client(
  base: string,
  caPath: string,
  sockets: number,
  credentials?: Credentials,
  /** Send the Basic credentials on every request instead of fetching tokens (auth.basicOnRegistry). */
  { basicAlways = false }: { basicAlways?: boolean } = {},
) {
  const agent = new Agent({ keepAlive: true, maxSockets: sockets, ca: readFileSync(caPath) });
  const origin = new URL(base);

  function raw(method: string, path: string, opts: CallOptions = {}): Promise<Reply> {
    const url = new URL(path, origin);
    return new Promise((resolve, reject) => {
      const req = request(
        url,
        {
          method,
          agent,
          headers: {
            ...(opts.body ? { 'Content-Length': String(opts.body.byteLength) } : {}),
            ...opts.headers,
          },
        },
        (res) => {
          const h = opts.hash ? createHash('sha256') : undefined;
          const parts: Buffer[] | undefined = opts.keep ? [] : undefined;
          let bytes = 0;
          res.on('data', (c: Buffer) => {
            bytes += c.byteLength;
            h?.update(c);
            parts?.push(c);
          });
          res.on('end', () =>
            resolve({
              status: res.statusCode!,
              headers: res.headers,
              bytes,
              ...(h && { digest: `sha256:${h.digest('hex')}` }),
              ...(parts && { body: Buffer.concat(parts) }),
            }),
          );
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(opts.body);
    });
  }

  const basic = credentials ? basicAuthorization(credentials) : undefined;
  let scheme: Promise<AuthScheme> | undefined;
  const tokens = new Map<string, Token>();
  const fetching = new Map<string, Promise<Token>>();
  let tokensFetched = 0;

  /** GET /v2/ once, as docker does before anything else. */
  function learnScheme(): Promise<AuthScheme> {
    scheme ??= raw('GET', '/v2/').then((r) => {
      if (r.status === 200) return { kind: 'none' } as const;
      const s = r.status === 401 ? parseChallenge(r.headers['www-authenticate']) : undefined;
      if (!s) throw new Error(`GET /v2/: ${r.status} without a challenge this client understands`);
      return s;
    });
    return scheme;
  }

  async function fetchToken(s: AuthScheme & { kind: 'bearer' }, repo: string): Promise<Token> {
    const url = new URL(s.realm, origin);
    if (s.service !== undefined) url.searchParams.set('service', s.service);
    url.searchParams.set('scope', `repository:${repo}:pull,push`);
    const t0 = performance.now();
    const r = await raw('GET', url.pathname + url.search, { headers: { Authorization: basic! }, keep: true });
    expectStatus(r, 200, `GET ${url.pathname} (scope repository:${repo}:pull,push)`);
    const j = JSON.parse(r.body!.toString('utf8')) as {
      token?: string;
      access_token?: string;
      expires_in?: number;
    };
    const value = j.token ?? j.access_token;
    if (!value) throw new Error(`GET ${url.pathname}: no token in the answer`);
    // The spec's default lifetime is 60 s; renew a little before the end (30 s, or a tenth of a
    // short lifetime), so no request goes out with a token about to expire.
    const life = (j.expires_in ?? 60) * 1000;
    tokensFetched++;
    return { value, renewAt: t0 + life - Math.min(30_000, life / 10) };
  }

  /** The Authorization header for a request on `repo`, fetching a token when needed. */
  async function authorization(repo: string | undefined, renew: boolean): Promise<string | undefined> {
    if (!basic) return undefined;
    const s = await learnScheme();
    if (s.kind === 'none') return undefined;
    if (s.kind === 'basic' || repo === undefined || basicAlways) return basic;
    const have = tokens.get(repo);
    if (have && !renew && performance.now() < have.renewAt) return `Bearer ${have.value}`;
    let pending = fetching.get(repo);
    if (!pending) {
      pending = fetchToken(s, repo).finally(() => fetching.delete(repo));
      fetching.set(repo, pending);
    }
    const t = await pending;
    tokens.set(repo, t);
    return `Bearer ${t.value}`;
  }

  return {
    agent,
    /** Tokens fetched so far (for the report: how many sign-ins a case cost). */
    get tokensFetched() {
      return tokensFetched;
    },
    /** Signs in for `repo` ahead of time, so that a timed section does not include it. */
    async prepare(repo: string): Promise<void> {
      await authorization(repo, false);
    },
    async call(method: string, path: string, opts: CallOptions = {}): Promise<Reply> {
      if (!basic || opts.headers?.Authorization !== undefined) return raw(method, path, opts);
      const repo = repositoryOf(path);
      const auth = await authorization(repo, false);
      const withAuth = (a: string | undefined) =>
        a === undefined ? opts : { ...opts, headers: { ...opts.headers, Authorization: a } };
      const r = await raw(method, path, withAuth(auth));
      if (r.status !== 401 || auth === undefined || !auth.startsWith('Bearer ')) return r;
      // Expired or revoked: one new token, one retry (bodies are buffers, so they can be resent).
      return raw(method, path, withAuth(await authorization(repo, true)));
    },
    close() {
      agent.destroy();
    },
  };
}

export type Client = ReturnType<typeof client>;

/** The `Authorization: Basic` value for `c`. */
export function basicAuthorization(c: Credentials): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
}

/** Throws with context when a reply is not what the protocol promises. */
export function expectStatus(r: Reply, status: number, what: string): void {
  if (r.status !== status) throw new Error(`${what}: expected ${status}, got ${r.status}`);
}
