// The admin API (/api/v1, described by openapi.yaml) as the berth CLI calls it: HTTPS to a running
// berth, never its storage, since the server keeps identities and policies in memory and would
// miss offline edits. It signs in at the token endpoint for a token scoped to the admin API
// (berth:admin:*) and sends that. Node built-ins only; the CLI decides how results are shown.
import { existsSync, readFileSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { resolve } from 'node:path';
import { getCACertificates, rootCertificates } from 'node:tls';

// ---- what the API answers (openapi.yaml components/schemas) -------------------------------------

export interface User {
  readonly type: 'user';
  readonly name: string;
  readonly groups: string[];
  readonly tags: Record<string, string>;
  readonly disabled: boolean;
  readonly hasPassword: boolean;
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly etag: string;
}

export interface Group {
  readonly type: 'group';
  readonly name: string;
  readonly description: string;
  readonly etag: string;
  readonly members?: { users: string[]; serviceAccounts: string[] };
}

export interface ServiceAccount {
  readonly type: 'serviceaccount';
  readonly name: string;
  readonly description: string;
  readonly groups: string[];
  readonly etag: string;
}

export interface AccessKeyOwner {
  readonly type: 'user' | 'serviceaccount';
  readonly name: string;
}

export interface AccessKey {
  readonly id: string;
  readonly owner: AccessKeyOwner;
  readonly status: 'active' | 'inactive';
  readonly createdAt: string;
  readonly lastUsedAt?: string;
}

/** An access key as created: the secret is in this answer only. */
export interface NewAccessKey extends AccessKey {
  readonly secret: string;
}

export type AttachmentTargetType = 'user' | 'group' | 'role' | 'serviceaccount';

export interface AttachmentTarget {
  readonly type: AttachmentTargetType;
  readonly name: string;
}

export interface Policy {
  readonly name: string;
  readonly document: Record<string, unknown>;
  readonly version: number;
  readonly etag: string;
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly invalid?: ValidationDetail[];
  readonly attachments?: AttachmentTarget[];
}

export interface RepositoryPolicy {
  readonly scope: string;
  readonly document: Record<string, unknown>;
  readonly version: number;
  readonly etag: string;
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly invalid?: ValidationDetail[];
}

export type SimulatedPrincipalType = 'user' | 'serviceaccount' | 'role' | 'anonymous';

export interface SimulationRequest {
  readonly principal: { readonly type: SimulatedPrincipalType; readonly name: string };
  readonly action: string;
  readonly resource: string;
  readonly context?: Record<string, string | string[]>;
}

export interface MatchedStatement {
  readonly policyId: string;
  readonly sid?: string;
  readonly statementIndex: number;
  readonly effect: 'Allow' | 'Deny';
}

export interface SimulationResult {
  readonly decision: 'Allow' | 'Deny';
  readonly reason: string;
  readonly matched: MatchedStatement[];
}

export interface AuditEntry {
  readonly seq: number;
  readonly time: string;
  readonly type: string;
  readonly actor: string;
  readonly action: string;
  readonly resource?: string;
  readonly decision?: 'Allow' | 'Deny';
  readonly reason?: string;
  readonly detail?: Record<string, unknown>;
  readonly [more: string]: unknown;
}

export interface AuditQuery {
  readonly since?: string;
  readonly until?: string;
  readonly actor?: string;
  readonly type?: string;
  readonly decision?: string;
}

export type AuditVerification =
  | { readonly ok: true; readonly entries: number }
  | { readonly ok: false; readonly seq: number; readonly problem: string };

// ---- errors -------------------------------------------------------------------------------------

/** One problem of a refused request; `path` locates it in the body (`document.Statement[0].Action`). */
export interface ValidationDetail {
  readonly path: string;
  readonly message: string;
}

/** The server refused: its status and the admin API's `{error: {code, message, reason?, details?}}`. */
export class AdminApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly reason: string | undefined;
  /** Validation problems (path and message), or where a policy is still attached (type and name). */
  readonly details: readonly (ValidationDetail | AttachmentTarget)[];
  readonly retryAfter: string | undefined;
  constructor(
    status: number,
    code: string,
    message: string,
    opts: { reason?: string; details?: (ValidationDetail | AttachmentTarget)[]; retryAfter?: string } = {},
  ) {
    super(message);
    this.name = 'AdminApiError';
    this.status = status;
    this.code = code;
    this.reason = opts.reason;
    this.details = opts.details ?? [];
    this.retryAfter = opts.retryAfter;
  }
}

/** The server could not be reached or not be trusted; nothing was decided. */
export class AdminConnectionError extends Error {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super(message, opts);
    this.name = 'AdminConnectionError';
  }
}

// ---- connection ---------------------------------------------------------------------------------

export interface AdminClientOptions {
  /** https://host:port of the berth (plain http only to a loopback address). */
  readonly url: string;
  /** PEM certificates to trust instead of the default set (see trustedCertificates). */
  readonly ca?: readonly string[];
  /** A user name and password, or an access key's id and secret. */
  readonly username: string;
  readonly password: string;
  readonly timeoutMs?: number;
}

/**
 * What the CLI trusts without --ca: Node's bundled roots, NODE_EXTRA_CA_CERTS, the system store,
 * and the CA of a berth started from this directory with the default data dir (./data/tls/ca.crt).
 */
export function trustedCertificates(caFile?: string, cwd = process.cwd()): string[] {
  if (caFile !== undefined) return [readFileSync(caFile, 'utf8')];
  const out: string[] = [];
  for (const kind of ['default', 'system'] as const) {
    try {
      out.push(...getCACertificates(kind));
    } catch {
      // a platform without a readable system store keeps the rest
    }
  }
  if (out.length === 0) out.push(...rootCertificates);
  const local = resolve(cwd, 'data', 'tls', 'ca.crt');
  if (existsSync(local)) out.push(readFileSync(local, 'utf8'));
  return out;
}

const loopback = new Set(['localhost', '127.0.0.1', '[::1]']);

/** The base URL checked: https (the default), or http to loopback; no path, query or credentials. */
export function parseBaseUrl(raw: string): URL {
  let url: URL;
  try {
    // HOST:PORT alone means https.
    url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `https://${raw}`);
  } catch {
    throw new TypeError(`${JSON.stringify(raw)} is not a URL (expected https://HOST:PORT)`);
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback.has(url.hostname)))
    throw new TypeError(`${raw}: the admin API is reached over https:// (plain http only on loopback)`);
  if (url.username || url.password) throw new TypeError(`${raw}: put no credentials in the URL`);
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash)
    throw new TypeError(`${raw}: give only scheme, host and port`);
  return url;
}

type Query = Record<string, string | number | undefined>;

interface Reply<T> {
  readonly status: number;
  readonly etag: string | undefined;
  readonly body: T;
}

const maxReplyBytes = 64 * 1024 * 1024;
/** The scope of a token the admin API accepts (the token endpoint's berth:admin:*). */
const adminScope = 'berth:admin:*';
const seg = encodeURIComponent;

function ownerPath(owner: AccessKeyOwner): string {
  return `/${owner.type === 'user' ? 'users' : 'service-accounts'}/${seg(owner.name)}`;
}

const targetCollection: Readonly<Record<AttachmentTargetType, string>> = {
  user: 'users',
  group: 'groups',
  role: 'roles',
  serviceaccount: 'service-accounts',
};

function errorFrom(res: IncomingMessage, text: string): AdminApiError {
  const status = res.statusCode ?? 0;
  const retry = res.headers['retry-after'];
  const retryAfter = typeof retry === 'string' ? { retryAfter: retry } : {};
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const e = (body as { error?: unknown } | undefined)?.error;
  if (e && typeof e === 'object' && typeof (e as { message?: unknown }).message === 'string') {
    const err = e as {
      code?: unknown;
      message: string;
      reason?: unknown;
      details?: unknown;
    };
    return new AdminApiError(status, typeof err.code === 'string' ? err.code : 'UNKNOWN', err.message, {
      ...(typeof err.reason === 'string' ? { reason: err.reason } : {}),
      ...(Array.isArray(err.details) ? { details: err.details } : {}),
      ...retryAfter,
    });
  }
  // Not the admin API's shape: an OCI error (an older berth without /api/v1) or a proxy's page.
  const oci = (body as { errors?: { code?: unknown; message?: unknown }[] } | undefined)?.errors?.[0];
  if (oci && typeof oci.message === 'string')
    return new AdminApiError(status, String(oci.code ?? 'UNKNOWN'), oci.message, retryAfter);
  const snippet = text.trim().slice(0, 200);
  return new AdminApiError(
    status,
    'UNKNOWN',
    `HTTP ${status} ${res.statusMessage ?? ''}`.trim() + (snippet ? `: ${snippet}` : ''),
    retryAfter,
  );
}

function connectionError(err: Error & { code?: string }, url: URL): AdminConnectionError {
  const tlsCodes = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|HOSTNAME|ALTNAME/;
  if (err.code && tlsCodes.test(err.code))
    return new AdminConnectionError(
      `cannot verify the certificate of ${url.host} (${err.message.replace(/;.*$/s, '')}); pass --ca FILE (or set BERTH_CA) with berth's CA, e.g. DATA/tls/ca.crt`,
      { cause: err },
    );
  return new AdminConnectionError(`cannot reach ${url.origin}: ${err.message}`, { cause: err });
}

export function createAdminClient(opts: AdminClientOptions) {
  const base = parseBaseUrl(opts.url);
  const basic = `Basic ${Buffer.from(`${opts.username}:${opts.password}`, 'utf8').toString('base64')}`;
  const timeoutMs = opts.timeoutMs ?? 30_000;

  interface Raw {
    readonly res: IncomingMessage;
    readonly text: string;
  }

  /** One HTTP exchange: the status, headers and whole body, whatever the status. */
  function exchange(
    method: string,
    url: URL,
    headers: Record<string, string>,
    payload: Buffer | undefined,
  ): Promise<Raw> {
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise<Raw>((resolvePromise, reject) => {
      const req = send(
        url,
        {
          method,
          headers: { Accept: 'application/json', 'User-Agent': 'berth-cli', ...headers },
          ...(url.protocol === 'https:' && opts.ca ? { ca: [...opts.ca] } : {}),
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > maxReplyBytes) {
              req.destroy(new Error(`the answer is larger than ${maxReplyBytes} bytes`));
              return;
            }
            chunks.push(c);
          });
          res.on('error', (e) => reject(connectionError(e, url)));
          res.on('end', () => resolvePromise({ res, text: Buffer.concat(chunks).toString('utf8') }));
        },
      );
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer in ${timeoutMs / 1000} s`)));
      req.on('error', (e) => reject(connectionError(e, url)));
      req.end(payload);
    });
  }

  // The admin API takes only tokens issued for it (scope berth:admin:*): the password is sent once,
  // to the token endpoint, and the token for every call after.
  let token: Promise<string> | undefined;
  function bearer(): Promise<string> {
    token ??= (async () => {
      const url = new URL(`/token?scope=${encodeURIComponent(adminScope)}`, base);
      const { res, text } = await exchange('GET', url, { Authorization: basic }, undefined);
      if (res.statusCode !== 200) throw errorFrom(res, text);
      let issued: unknown;
      try {
        issued = JSON.parse(text);
      } catch {
        issued = undefined;
      }
      const t = (issued as { token?: unknown } | undefined)?.token;
      if (typeof t !== 'string') throw new AdminConnectionError('GET /token: the answer holds no token');
      return `Bearer ${t}`;
    })();
    token.catch(() => {
      token = undefined;
    });
    return token;
  }

  async function call<T>(
    method: string,
    path: string,
    o: { query?: Query; body?: unknown; ifMatch?: string } = {},
  ): Promise<Reply<T>> {
    const url = new URL(`/api/v1${path}`, base);
    for (const [k, v] of Object.entries(o.query ?? {}))
      if (v !== undefined) url.searchParams.set(k, String(v));
    const payload = o.body === undefined ? undefined : Buffer.from(JSON.stringify(o.body), 'utf8');
    const headers: Record<string, string> = {
      ...(payload ? { 'Content-Type': 'application/json', 'Content-Length': String(payload.length) } : {}),
      ...(o.ifMatch !== undefined ? { 'If-Match': `"${o.ifMatch}"` } : {}),
    };
    let authorization = await bearer();
    let { res, text } = await exchange(method, url, { ...headers, Authorization: authorization }, payload);
    // A token that expired (a long audit listing) or was revoked meanwhile: sign in once more.
    if (res.statusCode === 401 && /invalid_token/.test(String(res.headers['www-authenticate']))) {
      token = undefined;
      authorization = await bearer();
      ({ res, text } = await exchange(method, url, { ...headers, Authorization: authorization }, payload));
    }
    const status = res.statusCode ?? 0;
    if (status < 200 || status > 299) throw errorFrom(res, text);
    let body: unknown;
    if (text.length > 0) {
      try {
        body = JSON.parse(text);
      } catch {
        throw new AdminConnectionError(`${method} ${url.pathname}: the answer is not JSON`);
      }
    }
    const etag = res.headers.etag?.replace(/^(?:W\/)?"(.*)"$/, '$1');
    return { status, etag, body: body as T };
  }

  async function body<T>(method: string, path: string, o?: Parameters<typeof call>[2]): Promise<T> {
    return (await call<T>(method, path, o)).body;
  }

  /** Every item of a paginated list, following `next`. */
  async function all<T>(path: string): Promise<T[]> {
    const items: T[] = [];
    let after: string | undefined;
    do {
      const page = await body<{ items: T[]; next?: string }>('GET', path, { query: { limit: 1000, after } });
      items.push(...page.items);
      after = page.next;
    } while (after !== undefined);
    return items;
  }

  return {
    base,

    // users
    createUser: (input: { name: string; password?: string; groups?: string[] }) =>
      body<User>('POST', '/users', { body: input }),
    listUsers: () => all<User>('/users'),
    getUser: async (name: string) => {
      const r = await call<User>('GET', `/users/${seg(name)}`);
      return { ...r.body, etag: r.etag ?? r.body.etag };
    },
    updateUser: (name: string, change: { groups?: string[]; password?: string | null }, ifMatch?: string) =>
      body<User>('PATCH', `/users/${seg(name)}`, { body: change, ...(ifMatch ? { ifMatch } : {}) }),
    deleteUser: (name: string) => body<undefined>('DELETE', `/users/${seg(name)}`),

    // groups
    createGroup: (input: { name: string; description?: string }) =>
      body<Group>('POST', '/groups', { body: input }),
    listGroups: () => all<Group>('/groups'),
    getGroup: (name: string) => body<Group>('GET', `/groups/${seg(name)}`),
    deleteGroup: (name: string) => body<undefined>('DELETE', `/groups/${seg(name)}`),

    // service accounts
    createServiceAccount: (input: { name: string; description?: string; groups?: string[] }) =>
      body<ServiceAccount>('POST', '/service-accounts', { body: input }),
    listServiceAccounts: () => all<ServiceAccount>('/service-accounts'),
    deleteServiceAccount: (name: string) => body<undefined>('DELETE', `/service-accounts/${seg(name)}`),

    // access keys
    createAccessKey: (owner: AccessKeyOwner) => body<NewAccessKey>('POST', `${ownerPath(owner)}/access-keys`),
    listAccessKeys: async (owner: AccessKeyOwner) =>
      (await body<{ items: AccessKey[] }>('GET', `${ownerPath(owner)}/access-keys`)).items,
    updateAccessKey: (owner: AccessKeyOwner, id: string, status: 'active' | 'inactive') =>
      body<AccessKey>('PATCH', `${ownerPath(owner)}/access-keys/${seg(id)}`, { body: { status } }),
    deleteAccessKey: (owner: AccessKeyOwner, id: string) =>
      body<undefined>('DELETE', `${ownerPath(owner)}/access-keys/${seg(id)}`),

    // identity policies
    putPolicy: async (name: string, document: unknown) => {
      const r = await call<Policy>('PUT', `/policies/${seg(name)}`, { body: { document } });
      return { policy: r.body, created: r.status === 201 };
    },
    getPolicy: (name: string) => body<Policy>('GET', `/policies/${seg(name)}`),
    listPolicies: () => all<Policy>('/policies'),
    deletePolicy: (name: string) => body<undefined>('DELETE', `/policies/${seg(name)}`),
    attachPolicy: (policy: string, target: AttachmentTarget) =>
      body<undefined>('PUT', `/${targetCollection[target.type]}/${seg(target.name)}/policies/${seg(policy)}`),
    detachPolicy: (policy: string, target: AttachmentTarget) =>
      body<undefined>(
        'DELETE',
        `/${targetCollection[target.type]}/${seg(target.name)}/policies/${seg(policy)}`,
      ),

    // repository policies (the scope's slashes travel %2F-encoded)
    putRepositoryPolicy: async (scope: string, document: unknown) => {
      const r = await call<RepositoryPolicy>('PUT', `/repository-policies/${seg(scope)}`, {
        body: { document },
      });
      return { policy: r.body, created: r.status === 201 };
    },
    getRepositoryPolicy: (scope: string) =>
      body<RepositoryPolicy>('GET', `/repository-policies/${seg(scope)}`),
    listRepositoryPolicies: () => all<RepositoryPolicy>('/repository-policies'),
    deleteRepositoryPolicy: (scope: string) =>
      body<undefined>('DELETE', `/repository-policies/${seg(scope)}`),

    // simulation and audit
    simulate: (input: SimulationRequest) => body<SimulationResult>('POST', '/simulate', { body: input }),
    /** Audit entries oldest first, at most `limit`, following pages as needed. */
    audit: async (query: AuditQuery, limit: number) => {
      const items: AuditEntry[] = [];
      let after: string | undefined;
      do {
        const page = await body<{ items: AuditEntry[]; next?: string }>('GET', '/audit', {
          query: { ...query, limit: Math.min(1000, limit - items.length), after },
        });
        items.push(...page.items);
        after = page.next;
      } while (after !== undefined && items.length < limit);
      return items.slice(0, limit);
    },
    verifyAudit: () => body<AuditVerification>('POST', '/audit/verify'),
  };
}

export type AdminClient = ReturnType<typeof createAdminClient>;
