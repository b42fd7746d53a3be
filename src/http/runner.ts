// The ECS endpoint: `POST /ecs` (and `/ecs/`), AWS JSON 1.1, so the aws CLI and the AWS SDKs drive
// berth's runner with `--endpoint-url https://HOST/ecs`. Mounted by the app:
//
//   app.route('/ecs', ecsRoutes({ auth, api, region, accountId }))
//
// Every request is authenticated with AWS Signature Version 4 (signing name `ecs`, the configured
// region) over the exact bytes that arrived: the raw path and query, the headers as Node received
// them and the body, read here in full (bounded) before anything else looks at it. Then the
// operation is parsed, and runner's ECS API reads, authorizes (ecs:<Operation>, through auth's
// policy engine) and carries it out. Every answer, errors included, is in ECS's shape with the
// x-amzn-RequestId header the SDKs report.
import type { Context } from 'hono';
import { Hono } from 'hono';
import { type Auth, AuthError, type Identity } from '../auth/index.ts';
import {
  ECS_CONTENT_TYPE,
  type EcsApi,
  type EcsCaller,
  EcsError,
  type EcsErrorResponse,
  ecsError,
  ecsErrorFrom,
  parseEcsRequest,
} from '../runner/index.ts';
import { requestInfo } from './caller.ts';
import type { AppEnv } from './env.ts';

export interface EcsRoutesDeps {
  readonly auth: Pick<Auth, 'authenticateSigV4' | 'authorize'>;
  readonly api: EcsApi;
  /** The region in berth's ARNs; requests must be signed for it, as AWS requires of its endpoints. */
  readonly region: string;
  /** The account id in ARNs, principals' included. */
  readonly accountId: string;
  /** The largest request body accepted, in bytes; default 1 MiB (ECS's largest input is 64 KiB). */
  readonly maxBodyBytes?: number;
}

/** The caller as an IAM-style ARN: what ECS puts in registeredBy and createdBy and its denials. */
export function principalArn(identity: Identity, accountId: string): string {
  const { type, name } = identity.principal;
  switch (type) {
    case 'user':
      return `arn:aws:iam::${accountId}:user/${name}`;
    case 'serviceaccount':
      // An IAM user path keeps it parseable as a user ARN while saying what it is.
      return `arn:aws:iam::${accountId}:user/serviceaccount/${name}`;
    case 'role':
      return `arn:aws:iam::${accountId}:role/${name}`;
    default:
      return `arn:aws:iam::${accountId}:anonymous`;
  }
}

export function ecsRoutes(deps: EcsRoutesDeps): Hono<AppEnv> {
  const { auth, api, region, accountId } = deps;
  const maxBody = deps.maxBodyBytes ?? 1024 * 1024;
  const app = new Hono<AppEnv>();

  const answer = (c: Context<AppEnv>, status: number, body: unknown, headers: Record<string, string> = {}) =>
    new Response(JSON.stringify(body), {
      status,
      headers: { 'content-type': ECS_CONTENT_TYPE, 'x-amzn-requestid': c.get('requestId'), ...headers },
    });

  const failure = (c: Context<AppEnv>, err: unknown): Response => {
    let res: EcsErrorResponse;
    const extra: Record<string, string> = {};
    if (err instanceof AuthError && err.reason === 'throttled') {
      res = ecsError('ThrottlingException', 'Rate exceeded: too many failed sign-ins; try again later.');
      if (err.retryAfterSeconds !== undefined) extra['Retry-After'] = String(err.retryAfterSeconds);
    } else {
      res = ecsErrorFrom(err);
      if (res.body.__type === 'ServerException') c.get('log').error({ err }, 'ecs: internal error');
      else c.get('log').debug({ type: res.body.__type, msg: res.body.message }, 'ecs: request refused');
    }
    // res.headers carries x-amzn-ErrorType, which the SDKs read before the body's __type.
    return answer(c, res.status, res.body, { ...res.headers, ...extra });
  };

  app.post('/', async (c) => {
    try {
      const body = await readBody(c.req.raw, maxBody);
      const { path, query } = rawTarget(c);
      const headers = rawHeaders(c);
      const info = requestInfo(c);
      const identity = await auth.authenticateSigV4({ method: 'POST', path, query, headers, body }, info, {
        service: 'ecs',
        region,
      });
      const request = parseEcsRequest({ headers, body });
      const caller: EcsCaller = {
        principalArn: principalArn(identity, accountId),
        isAllowed: async (action, resource) =>
          (await auth.authorize(identity, action, resource, info)).effect === 'Allow',
      };
      const output = await api.handle(request.operation, request.input, caller);
      return answer(c, 200, output);
    } catch (err) {
      return failure(c, err);
    }
  });

  // Anything but POST is no ECS request; say so in ECS's shape rather than the registry's.
  app.all('/', (c) =>
    failure(
      c,
      new EcsError('UnknownOperationException', 'ECS requests are POST, AWS JSON 1.1, to this URL.'),
    ),
  );

  return app;
}

/** The whole body, at most `max` bytes (SigV4 hashes exactly what arrived). */
async function readBody(req: Request, max: number): Promise<Uint8Array> {
  const tooLarge = () =>
    new EcsError(
      'SerializationException',
      `The request body is larger than ${max} bytes, the most accepted.`,
    );
  const declared = Number(req.headers.get('content-length'));
  if (declared > max) throw tooLarge();
  if (!req.body) return new Uint8Array();
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel().catch(() => {});
      throw tooLarge();
    }
    chunks.push(value);
  }
  return new Uint8Array(Buffer.concat(chunks));
}

/** The path (still percent-encoded) and query as the client sent them, which is what it signed. */
function rawTarget(c: Context<AppEnv>): { path: string; query: string } {
  const raw =
    c.env?.incoming?.url ??
    (() => {
      const u = new URL(c.req.url);
      return `${u.pathname}${u.search}`;
    })();
  const q = raw.indexOf('?');
  return q < 0 ? { path: raw, query: '' } : { path: raw.slice(0, q), query: raw.slice(q + 1) };
}

/** Header names in lower case, values as Node received them (repeated ones joined with ','). */
function rawHeaders(c: Context<AppEnv>): Record<string, string> {
  const out: Record<string, string> = {};
  const incoming = c.env?.incoming?.headers;
  if (incoming) {
    for (const [k, v] of Object.entries(incoming))
      if (v !== undefined) out[k] = Array.isArray(v) ? v.join(',') : v;
    return out;
  }
  c.req.raw.headers.forEach((v, k) => {
    out[k] = v;
  });
  return out;
}
