// The machinery every admin route shares: its error shape, strict JSON bodies, pagination,
// entity tags, and the authenticate -> authorize -> act -> audit sequence (`op`).
import type { Context, Handler } from 'hono';
import {
  type ActionName,
  AuditIntegrityError,
  AuthError,
  AuthStoreError,
  ProviderError,
  TokenError,
} from '../auth/index.ts';
import type { AdminCaller, AdminDecision, AdminDeps } from './admin.ts';
import type { AppEnv } from './env.ts';

// ---- errors -------------------------------------------------------------------------------------

export type ApiErrorCode =
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'INVALID'
  | 'CONFLICT'
  | 'PRECONDITION_FAILED'
  | 'UNAUTHORIZED'
  | 'FORBIDDEN'
  | 'LIMIT_EXCEEDED'
  | 'TOO_MANY_REQUESTS'
  | 'INTERNAL';

/** One item of `error.details`: where a request or document is wrong, or where a policy is attached. */
export type ErrorDetail = { path: string; message: string } | { type: string; name: string };

/**
 * LIMIT_EXCEEDED is a 409: the request is well formed but collides with what exists (a third access
 * key, a 21st attached policy), and removing something first resolves it.
 */
const statusOf: Readonly<Record<ApiErrorCode, number>> = {
  NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  INVALID: 400,
  CONFLICT: 409,
  PRECONDITION_FAILED: 412,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  LIMIT_EXCEEDED: 409,
  TOO_MANY_REQUESTS: 429,
  INTERNAL: 500,
};

/** A refusal answered with the admin API's error shape. */
export class ApiError extends Error {
  readonly code: ApiErrorCode;
  readonly status: number;
  readonly details: readonly ErrorDetail[] | undefined;
  /** With FORBIDDEN: the decision's short reason code (never which policy decided). */
  readonly reason: string | undefined;
  readonly headers: Readonly<Record<string, string | readonly string[]>>;
  constructor(
    code: ApiErrorCode,
    message: string,
    opts: {
      details?: readonly ErrorDetail[];
      reason?: string;
      headers?: Record<string, string | readonly string[]>;
    } = {},
  ) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.status = statusOf[code];
    this.details = opts.details;
    this.reason = opts.reason;
    this.headers = opts.headers ?? {};
  }
}

export const invalid = (message: string, details?: readonly ErrorDetail[]) =>
  new ApiError('INVALID', message, details ? { details } : {});
export const notFound = (message: string) => new ApiError('NOT_FOUND', message);

function attachmentDetails(details: unknown): ErrorDetail[] | undefined {
  const list = (details as { attachments?: unknown } | null | undefined)?.attachments;
  if (!Array.isArray(list)) return undefined;
  return list.flatMap((t: { type?: unknown; name?: unknown }) =>
    typeof t?.type === 'string' && typeof t.name === 'string' ? [{ type: t.type, name: t.name }] : [],
  );
}

/** Domain errors as API errors; undefined for anything that is not a refusal (a 500). */
function toApiError(err: unknown, prefix?: string): ApiError | undefined {
  if (err instanceof ApiError) return err;
  if (err instanceof AuthStoreError) {
    const details =
      err.errors.length > 0
        ? err.errors.map((e) => ({ path: joinPath(prefix, e.path), message: e.message }))
        : attachmentDetails(err.details);
    return new ApiError(err.code, err.message, details ? { details } : {});
  }
  if (err instanceof ProviderError) {
    const details = err.errors.map((e) => ({ path: e.path, message: e.message }));
    return new ApiError(err.reason === 'conflict' ? 'ALREADY_EXISTS' : 'INVALID', err.message, { details });
  }
  return undefined;
}

/** Awaits a store call whose document errors should name their place in the request body. */
export async function within<T>(prefix: string, call: Promise<T>): Promise<T> {
  try {
    return await call;
  } catch (err) {
    if (err instanceof AuthStoreError && err.errors.length > 0) throw toApiError(err, prefix);
    throw err;
  }
}

function joinPath(prefix: string | undefined, path: string): string {
  if (!prefix) return path;
  if (!path) return prefix;
  return path.startsWith('[') ? `${prefix}${path}` : `${prefix}.${path}`;
}

function errorBody(e: ApiError) {
  return {
    error: {
      code: e.code,
      message: e.message,
      ...(e.reason !== undefined ? { reason: e.reason } : {}),
      ...(e.details !== undefined ? { details: e.details } : {}),
    },
  };
}

/** The sub-app's onError: every failure in the admin API's error shape, nothing internal leaked. */
export function adminErrorResponse(err: unknown, c: Context<AppEnv>): Response {
  let api = toApiError(err);
  if (!api) {
    const log = c.get('log');
    if (err instanceof AuditIntegrityError) {
      log?.error({ err }, 'admin: the audit log failed its integrity check');
      api = new ApiError('INTERNAL', 'the audit log failed its integrity check; see POST /audit/verify');
    } else {
      log?.error({ err }, 'admin: internal error');
      api = new ApiError('INTERNAL', 'internal server error');
    }
  }
  const headers = new Headers({ 'Cache-Control': 'no-store' });
  for (const [k, v] of Object.entries(api.headers))
    for (const one of typeof v === 'string' ? [v] : v) headers.append(k, one);
  if (c.req.method === 'HEAD') return new Response(null, { status: api.status, headers });
  headers.set('Content-Type', 'application/json');
  return new Response(JSON.stringify(errorBody(api)), { status: api.status, headers });
}

// ---- responses ----------------------------------------------------------------------------------

export function json(
  c: Context<AppEnv>,
  body: unknown,
  status: 200 | 201 = 200,
  headers: Record<string, string> = {},
): Response {
  return c.json(body, status, { 'Cache-Control': 'no-store', ...headers });
}

export function noContent(c: Context<AppEnv>): Response {
  return c.body(null, 204, { 'Cache-Control': 'no-store' });
}

/** The path of a resource created under the requested collection. */
export const childPath = (c: Context<AppEnv>, segment: string) =>
  `${c.req.path.replace(/\/+$/, '')}/${encodeURIComponent(segment)}`;

/** A strong entity tag as HTTP writes it. */
export const etagHeader = (etag: string) => ({ ETag: `"${etag}"` });

/** The one entity tag an If-Match header names, `*`, or undefined without the header. */
export function ifMatch(c: Context<AppEnv>): string | undefined {
  const raw = c.req.header('if-match')?.trim();
  if (raw === undefined || raw === '') return undefined;
  if (raw === '*') return '*';
  const tags = raw.split(',').map((t) => t.trim());
  if (tags.length !== 1)
    throw invalid('If-Match with more than one entity tag is not supported', [
      { path: 'If-Match', message: 'If-Match: give one entity tag, or *' },
    ]);
  // A weak tag never matches under If-Match's strong comparison: passed on whole, it cannot.
  const m = /^"([^"]*)"$/.exec(raw);
  return m ? (m[1] as string) : raw;
}

// ---- JSON bodies --------------------------------------------------------------------------------

const maxBodyBytes = 256 * 1024;

/**
 * The request's JSON object. A JSON content type is required: HTML forms cannot send one
 * cross-site without a CORS preflight, so a browser holding Basic credentials cannot be made to
 * submit a change.
 */
async function readJsonObject(c: Context<AppEnv>): Promise<Record<string, unknown>> {
  const type = c.req.header('content-type') ?? '';
  if (!/^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i.test(type))
    throw invalid('Content-Type must be application/json', [
      { path: 'Content-Type', message: 'Content-Type: must be application/json' },
    ]);
  const declared = Number(c.req.header('content-length') ?? '0');
  if (declared > maxBodyBytes) throw invalid(`request body is larger than ${maxBodyBytes} bytes`);
  const text = await c.req.text();
  if (Buffer.byteLength(text) > maxBodyBytes)
    throw invalid(`request body is larger than ${maxBodyBytes} bytes`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw invalid(`request body is not valid JSON: ${e instanceof Error ? e.message : 'parse error'}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw invalid('request body must be a JSON object');
  return value as Record<string, unknown>;
}

/** Checks one value; pushes what is wrong with it (path and message) and returns its typed form. */
export interface Field<T, R extends boolean = boolean> {
  readonly required: R;
  check(v: unknown, path: string, errors: ErrorDetail[]): T | undefined;
}

export type Shape = Record<string, Field<unknown>>;
type ValueOf<F> = F extends Field<infer T> ? T : never;
export type Parsed<S extends Shape> = {
  [K in keyof S as S[K] extends Field<unknown, true> ? K : never]: ValueOf<S[K]>;
} & {
  [K in keyof S as S[K] extends Field<unknown, true> ? never : K]?: ValueOf<S[K]>;
};

const problem = (errors: ErrorDetail[], path: string, text: string) => {
  errors.push({ path, message: `${path}: ${text}` });
  return undefined;
};

function field<T>(check: Field<T, false>['check']): Field<T, false> {
  return { required: false, check };
}

export function required<T>(f: Field<T>): Field<T, true> {
  return { required: true, check: f.check };
}

export function nullable<T>(f: Field<T>): Field<T | null, false> {
  return field((v, path, errors) => (v === null ? null : f.check(v, path, errors)));
}

export function str(opts: { max?: number; pattern?: RegExp; hint?: string } = {}): Field<string, false> {
  const max = opts.max ?? 1024;
  return field((v, path, errors) => {
    if (typeof v !== 'string') return problem(errors, path, 'must be a string');
    if (v.length > max) return problem(errors, path, `must be at most ${max} characters`);
    if (opts.pattern && !opts.pattern.test(v))
      return problem(errors, path, opts.hint ?? `must match ${opts.pattern.source}`);
    return v;
  });
}

export function oneOf<const T extends string>(values: readonly T[]): Field<T, false> {
  return field((v, path, errors) =>
    typeof v === 'string' && (values as readonly string[]).includes(v)
      ? (v as T)
      : problem(errors, path, `must be one of ${values.map((x) => JSON.stringify(x)).join(', ')}`),
  );
}

export function bool(): Field<boolean, false> {
  return field((v, path, errors) =>
    typeof v === 'boolean' ? v : problem(errors, path, 'must be true or false'),
  );
}

export function int(min: number, max: number): Field<number, false> {
  return field((v, path, errors) =>
    typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max
      ? v
      : problem(errors, path, `must be a whole number from ${min} to ${max}`),
  );
}

export function strings(maxItems = 1000): Field<string[], false> {
  return field((v, path, errors) => {
    if (!Array.isArray(v) || v.length > maxItems || !v.every((x) => typeof x === 'string'))
      return problem(errors, path, `must be an array of at most ${maxItems} strings`);
    return v as string[];
  });
}

/** An object whose every value is a string (tags). */
export function stringMap(): Field<Record<string, string>, false> {
  return field((v, path, errors) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v))
      return problem(errors, path, 'must be an object of strings');
    for (const [k, x] of Object.entries(v))
      if (typeof x !== 'string') return problem(errors, `${path}.${k}`, 'must be a string');
    return v as Record<string, string>;
  });
}

/** Any JSON object, checked by whoever it is meant for. */
export function jsonObject(): Field<Record<string, unknown>, false> {
  return field((v, path, errors) =>
    typeof v === 'object' && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : problem(errors, path, 'must be a JSON object'),
  );
}

/** Condition context: each key a string or an array of strings. */
export function contextMap(): Field<Record<string, string | string[]>, false> {
  return field((v, path, errors) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v))
      return problem(errors, path, 'must be an object of strings or arrays of strings');
    for (const [k, x] of Object.entries(v))
      if (typeof x !== 'string' && !(Array.isArray(x) && x.every((y) => typeof y === 'string')))
        return problem(errors, `${path}.${k}`, 'must be a string or an array of strings');
    return v as Record<string, string | string[]>;
  });
}

export function object<S extends Shape>(shape: S): Field<Parsed<S>, false> {
  return field((v, path, errors) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v))
      return problem(errors, path || '(body)', 'must be a JSON object');
    const before = errors.length;
    const raw = v as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    const at = (k: string) => (path ? `${path}.${k}` : k);
    for (const k of Object.keys(raw))
      if (!Object.hasOwn(shape, k)) problem(errors, at(k), `unknown field ${JSON.stringify(k)}`);
    for (const [k, f] of Object.entries(shape)) {
      if (!Object.hasOwn(raw, k) || raw[k] === undefined) {
        if (f.required) problem(errors, at(k), 'is required');
        continue;
      }
      const value = f.check(raw[k], at(k), errors);
      if (value !== undefined) out[k] = value;
    }
    return errors.length === before ? (out as Parsed<S>) : undefined;
  });
}

/** Reads and checks the JSON body against a shape; 400 INVALID naming every problem. */
async function readBody<T>(c: Context<AppEnv>, top: Field<T>): Promise<T> {
  const raw = await readJsonObject(c);
  const errors: ErrorDetail[] = [];
  const parsed = top.check(raw, '', errors);
  if (parsed === undefined || errors.length > 0)
    throw invalid(
      `invalid request body: ${errors.map((e) => ('message' in e ? e.message : '')).join('; ')}`,
      errors,
    );
  return parsed;
}

// ---- path segments ------------------------------------------------------------------------------

/**
 * A name from the path that can stand in a policy resource: no `/`, no wildcard. The stores
 * judge the finer grammar; this only keeps `user/<name>` a concrete, well-formed resource.
 */
const segment = /^[A-Za-z0-9_.@+=,~-]{1,128}$/;

export function pathName(c: Context<AppEnv>, key: string, what: string): string {
  const v = c.req.param(key) ?? '';
  if (!segment.test(v) || v === '.' || v.includes('..'))
    throw notFound(`${what} ${JSON.stringify(v)} does not exist`);
  return v;
}

export function isSegment(v: string): boolean {
  return segment.test(v) && v !== '.' && !v.includes('..');
}

// ---- pagination ---------------------------------------------------------------------------------

export interface PageParams {
  readonly limit: number;
  readonly after: string | undefined;
}

export function pageParams(c: Context<AppEnv>): PageParams {
  const rawLimit = c.req.query('limit');
  const rawAfter = c.req.query('after');
  let limit = 100;
  if (rawLimit !== undefined) {
    limit = /^\d{1,4}$/.test(rawLimit) ? Number(rawLimit) : 0;
    if (limit < 1 || limit > 1000)
      throw invalid('limit must be a whole number from 1 to 1000', [
        { path: 'limit', message: 'limit: must be a whole number from 1 to 1000' },
      ]);
  }
  if (rawAfter !== undefined && (rawAfter === '' || rawAfter.length > 1024))
    throw invalid('after must be a cursor from a previous page', [
      { path: 'after', message: 'after: must be the next cursor of a previous page' },
    ]);
  return { limit, after: rawAfter };
}

/** A page of a list already in memory and sorted by `key`. */
export function pageOf<T>(all: readonly T[], key: (t: T) => string, p: PageParams) {
  const rest = p.after === undefined ? all : all.filter((t) => key(t) > (p.after as string));
  const items = rest.slice(0, p.limit);
  const last = items.at(-1);
  return rest.length > p.limit && last !== undefined ? { items, next: key(last) } : { items };
}

/** `{ items, next? }`, with a `Link: <...>; rel="next"` header pointing at the next page. */
export function sendPage(c: Context<AppEnv>, page: { items: readonly unknown[]; next?: string | undefined }) {
  if (page.next === undefined) return json(c, { items: page.items });
  const url = new URL(c.req.url);
  url.searchParams.set('after', page.next);
  return json(c, { items: page.items, next: page.next }, 200, {
    Link: `<${url.pathname}?${url.searchParams.toString()}>; rel="next"`,
  });
}

// ---- authenticate, authorize, act, audit -------------------------------------------------------

const actorOf = (caller: AdminCaller) =>
  caller.subject ?? `${caller.principal.type}/${caller.principal.name}`;

export interface Op<S extends Shape> {
  readonly action: ActionName;
  /** The JSON body's fields: read and checked after authentication, before authorization (a create's resource is in it). */
  readonly body?: S;
  /** The resource(s) the action is on; every one must be allowed. May throw for a malformed path. */
  readonly resource: (c: Context<AppEnv>, body: Parsed<S>) => string | readonly string[];
  /** Changes state: audited with its outcome. Reads are audited only when denied. */
  readonly change?: boolean;
}

export interface OpContext<B> {
  readonly c: Context<AppEnv>;
  readonly caller: AdminCaller;
  readonly body: B;
  /** Adds to the audit entry's detail (never a secret). */
  note(detail: Record<string, unknown>): void;
}

export interface Kit {
  readonly deps: AdminDeps;
  // biome-ignore lint/complexity/noBannedTypes: no body is an empty shape
  op<S extends Shape = {}>(spec: Op<S>, run: (x: OpContext<Parsed<S>>) => Promise<Response>): Handler<AppEnv>;
}

function challenges(
  c: Context<AppEnv>,
  deps: AdminDeps,
  error: 'invalid_token' | 'insufficient_scope' | undefined,
): string[] {
  const origin = c.get('origin') || new URL(c.req.url).origin;
  const realm = deps.bearerRealm?.(c) ?? `${origin}/token`;
  const service = deps.bearerService ?? 'berth';
  const quote = (s: string) => `"${s.replace(/["\\]/g, '\\$&')}"`;
  const params = [`realm=${quote(realm)}`, `service=${quote(service)}`];
  if (deps.bearerScope !== undefined) params.push(`scope=${quote(deps.bearerScope)}`);
  if (error !== undefined) params.push(`error="${error}"`);
  return ['Basic realm="berth", charset="UTF-8"', `Bearer ${params.join(',')}`];
}

export function createKit(deps: AdminDeps): Kit {
  async function authenticate(c: Context<AppEnv>): Promise<AdminCaller> {
    const presentedBearer = /^bearer\s/i.test(c.req.header('authorization') ?? '');
    let caller: AdminCaller | undefined;
    try {
      caller = await deps.authenticate(c);
    } catch (err) {
      const retry = (err as { retryAfterSeconds?: unknown } | null)?.retryAfterSeconds;
      if (typeof retry === 'number' && Number.isFinite(retry))
        throw new ApiError('TOO_MANY_REQUESTS', 'too many failed sign-in attempts; try again later', {
          headers: { 'Retry-After': String(Math.max(1, Math.ceil(retry))) },
        });
      if (err instanceof AuthError) {
        const error =
          err.reason !== 'invalid-token'
            ? undefined
            : err.detail === 'insufficient-scope'
              ? 'insufficient_scope'
              : 'invalid_token';
        throw new ApiError('UNAUTHORIZED', err.message || 'authentication failed', {
          headers: { 'WWW-Authenticate': challenges(c, deps, error) },
        });
      }
      if (err instanceof TokenError)
        throw new ApiError('UNAUTHORIZED', 'the bearer token is invalid or expired', {
          headers: { 'WWW-Authenticate': challenges(c, deps, 'invalid_token') },
        });
      throw err;
    }
    if (!caller)
      throw new ApiError('UNAUTHORIZED', 'authentication required', {
        headers: { 'WWW-Authenticate': challenges(c, deps, presentedBearer ? 'invalid_token' : undefined) },
      });
    return caller;
  }

  async function record(
    c: Context<AppEnv>,
    caller: AdminCaller,
    action: string,
    resource: string,
    decision: 'Allow' | 'Deny',
    extra: { reason?: string; detail?: Record<string, unknown> },
  ) {
    const sourceIp = c.get('clientIp');
    const requestId = c.get('requestId');
    try {
      await deps.audit.record({
        type: 'admin',
        actor: actorOf(caller),
        action,
        resource,
        decision,
        ...(extra.reason !== undefined ? { reason: extra.reason } : {}),
        ...(sourceIp ? { sourceIp } : {}),
        ...(requestId ? { requestId } : {}),
        ...(extra.detail !== undefined ? { detail: extra.detail } : {}),
      });
    } catch (err) {
      // The change (or refusal) stands; losing its record is an operator alarm, not the caller's error.
      c.get('log')?.error({ err, action, resource }, 'admin: could not write the audit log');
    }
  }

  return {
    deps,
    op(spec, run) {
      return async (c) => {
        const caller = await authenticate(c);
        const parsed = (spec.body ? await readBody(c, object(spec.body)) : {}) as never;
        const res = spec.resource(c, parsed);
        const resources = typeof res === 'string' ? [res] : res;
        const primary = resources[0] ?? '*';
        for (const resource of resources) {
          let decision: AdminDecision;
          try {
            decision = await deps.authorize(caller, spec.action, resource, c);
          } catch (err) {
            // Fail closed, and as our fault: a policy that no longer validates is not the caller's 400.
            throw new Error(`admin: authorizing ${spec.action} on ${resource} failed`, { cause: err });
          }
          if (decision.effect !== 'Allow') {
            await record(c, caller, spec.action, resource, 'Deny', { reason: decision.reason });
            throw new ApiError('FORBIDDEN', `not allowed to ${spec.action} on ${resource}`, {
              reason: decision.reason,
            });
          }
        }
        const detail: Record<string, unknown> = {};
        if (resources.length > 1) detail['resources'] = resources;
        const note = (d: Record<string, unknown>) => Object.assign(detail, d);
        if (!spec.change) return run({ c, caller, body: parsed, note });
        try {
          const response = await run({ c, caller, body: parsed, note });
          await record(c, caller, spec.action, primary, 'Allow', {
            detail: { ...detail, status: response.status },
          });
          return response;
        } catch (err) {
          const api = toApiError(err);
          await record(c, caller, spec.action, primary, 'Allow', {
            detail: { ...detail, status: api?.status ?? 500, error: api?.code ?? 'INTERNAL' },
          });
          throw err;
        }
      };
    },
  };
}
