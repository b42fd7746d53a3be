// Access control for /v2: who is calling (a registry token, Basic credentials if allowed, or
// nobody), what the request needs (pull, push or delete on a repository; the catalog), and the
// answer clients understand: 401 with a Bearer challenge naming the scope to ask the token
// service for, `error="insufficient_scope"` when a valid token lacks it, and 403 DENIED with a
// short reason when the token service already refused this caller that action.
import type { Context, MiddlewareHandler } from 'hono';
import type { AccessEntry, Decision, Identity, RequestInfo } from '../auth/index.ts';
import { AuthError } from '../auth/index.ts';
import { OciError } from '../errors.ts';
import { basicCredentials, requestInfo } from './caller.ts';
import type { AppEnv } from './env.ts';

/** What /v2 needs of the auth service (main.ts passes the real one). */
export interface RegistryAuth {
  readonly enabled: boolean;
  authenticateBasic(username: string, secret: string, req: RequestInfo): Promise<Identity>;
  authenticateBearer(token: string, req: RequestInfo): Promise<Identity & { access: AccessEntry[] }>;
  anonymous(): Identity;
  authorize(
    identity: Identity,
    action: string,
    resource: string,
    req: RequestInfo,
    extra?: Record<string, string>,
  ): Promise<Decision>;
}

export interface RegistryAuthOptions {
  readonly auth: RegistryAuth;
  /** The service name in challenges (the tokens' audience). */
  readonly service: string;
  /** Accept Basic credentials on /v2 itself, for clients that do not speak token auth. */
  readonly basic: boolean;
}

type ScopeAction = 'pull' | 'push' | 'delete';

/** What one /v2 request needs: nothing beyond a caller (the base), the catalog, or a repository action. */
export type Need =
  | { kind: 'base' }
  | { kind: 'catalog' }
  | { kind: 'repository'; name: string; action: ScopeAction; extra?: 'tags' | 'referrers' };

const suffixes =
  /^(.+)\/(blobs\/uploads(?:\/[^/]*)?|blobs\/[^/]+|manifests\/[^/]+|tags\/list|referrers\/[^/]+)$/;

/** The need of a /v2 request from its method and path (the path below /v2). */
export function needOf(method: string, path: string): Need | undefined {
  const rest = path.replace(/^\/v2/, '').replace(/\/+$/, '');
  if (rest === '') return { kind: 'base' };
  if (rest === '/_catalog') return { kind: 'catalog' };
  const m = suffixes.exec(rest.slice(1));
  if (!m) return undefined;
  const name = m[1]!;
  const what = m[2]!;
  const action: ScopeAction =
    method === 'GET' || method === 'HEAD'
      ? 'pull'
      : method === 'DELETE' && !what.startsWith('blobs/uploads')
        ? 'delete'
        : 'push';
  if (what === 'tags/list') return { kind: 'repository', name, action, extra: 'tags' };
  if (what.startsWith('referrers/')) return { kind: 'repository', name, action, extra: 'referrers' };
  return { kind: 'repository', name, action };
}

const registryAction: Record<ScopeAction, string> = {
  pull: 'registry:Pull',
  push: 'registry:Push',
  delete: 'registry:Delete',
};

function scopeOf(need: Need): string | undefined {
  if (need.kind === 'catalog') return 'registry:catalog:*';
  if (need.kind === 'repository') {
    // Ask for pull with push: clients push only after checking what exists.
    const actions = need.action === 'push' ? 'pull,push' : need.action;
    return `repository:${need.name}:${actions}`;
  }
  return undefined;
}

function challenge(c: Context<AppEnv>, service: string, need: Need, error?: string): OciError {
  const scope = scopeOf(need);
  const parts = [`realm="${c.get('origin')}/token"`, `service="${service}"`];
  if (scope) parts.push(`scope="${scope}"`);
  if (error) parts.push(`error="${error}"`);
  return new OciError(
    'UNAUTHORIZED',
    error === 'insufficient_scope' ? 'the token does not grant this access' : undefined,
    {
      headers: { 'WWW-Authenticate': `Bearer ${parts.join(',')}` },
      ...(scope && {
        detail: [
          {
            Type: scope.split(':')[0],
            Name: scope.split(':').slice(1, -1).join(':'),
            Action: scope.split(':').at(-1),
          },
        ],
      }),
    },
  );
}

function denied(need: Need, identity: Identity, reason: string): OciError {
  const what =
    need.kind === 'repository'
      ? `${need.action} on ${need.name}`
      : need.kind === 'catalog'
        ? 'the catalog'
        : 'access';
  return new OciError('DENIED', `${what} denied for ${identity.principal.type} ${identity.principal.name}`, {
    detail: { reason },
  });
}

function grants(access: readonly AccessEntry[], need: Need): 'granted' | 'refused' | 'not-asked' {
  if (need.kind === 'base') return 'granted';
  const type = need.kind === 'catalog' ? 'registry' : 'repository';
  const name = need.kind === 'catalog' ? 'catalog' : need.name;
  const wanted = need.kind === 'catalog' ? '*' : need.action;
  const entries = access.filter((a) => a.type === type && a.name === name);
  if (entries.length === 0) return 'not-asked';
  return entries.some((a) => a.actions.includes(wanted) || a.actions.includes('*')) ? 'granted' : 'refused';
}

function authFailure(e: unknown, c: Context<AppEnv>, service: string, need: Need): unknown {
  if (!(e instanceof AuthError)) return e;
  if (e.reason === 'throttled') {
    return new OciError('TOOMANYREQUESTS', 'too many failed sign-ins; try again later', {
      headers: { 'Retry-After': String(e.retryAfterSeconds ?? 60) },
    });
  }
  if (e.reason === 'invalid-token') return challenge(c, service, need, 'invalid_token');
  return challenge(c, service, need);
}

/**
 * Resolves the caller and checks the request's need. Sets `identity` for handlers (mount
 * sources and tag pushes are checked there, where the registry knows what they touch).
 */
export function registryAccess(opts: RegistryAuthOptions): MiddlewareHandler<AppEnv> {
  const { auth, service } = opts;
  return async (c, next) => {
    const need = needOf(c.req.method, c.req.path);
    if (!auth.enabled) {
      c.set('identity', auth.anonymous());
      return next();
    }
    // Unknown paths fall through to the 404 handler; they touch nothing.
    if (!need) return next();
    const req = requestInfo(c);
    const header = c.req.header('authorization') ?? '';
    let identity: Identity;
    try {
      if (/^bearer /i.test(header)) {
        const caller = await auth.authenticateBearer(header.slice(7).trim(), req);
        const verdict = grants(caller.access, need);
        if (verdict === 'not-asked') throw challenge(c, service, need, 'insufficient_scope');
        if (verdict === 'refused') {
          // The token names the repository but not this action: either it was not asked for (a
          // new token would carry it) or the token service refused it. The policies say which;
          // anonymous callers are challenged either way, so clients suggest signing in.
          const d = await decide(caller, need, req);
          if (d.effect === 'Allow' || caller.authMethod === 'anonymous') {
            throw challenge(c, service, need, 'insufficient_scope');
          }
          throw denied(need, caller, reasonOf(d));
        }
        identity = caller;
      } else if (/^basic /i.test(header) && opts.basic) {
        const creds = basicCredentials(header);
        if (!creds) throw challenge(c, service, need);
        identity = await auth.authenticateBasic(creds.username, creds.secret, req);
        await check(identity, need, req);
      } else {
        // Nobody: the base endpoint always asks for credentials (docker login relies on it);
        // anything else is served only if policies grant it to anonymous callers.
        if (need.kind === 'base') throw challenge(c, service, need);
        identity = auth.anonymous();
        const d = await decide(identity, need, req);
        if (d.effect !== 'Allow') throw challenge(c, service, need);
      }
      if (need.kind === 'repository' && need.extra) {
        const action = need.extra === 'tags' ? 'registry:ListTags' : 'registry:ListReferrers';
        const d = await auth.authorize(identity, action, `repository/${need.name}`, req);
        if (d.effect !== 'Allow') throw denied(need, identity, reasonOf(d));
      }
    } catch (e) {
      throw authFailure(e, c, service, need);
    }
    c.set('identity', identity);
    return next();
  };

  function decide(identity: Identity, need: Need, req: RequestInfo): Promise<Decision> {
    if (need.kind === 'base') return Promise.resolve({ effect: 'Allow', reason: 'allowed', matched: [] });
    if (need.kind === 'catalog') return auth.authorize(identity, 'registry:Catalog', 'repository/*', req);
    return auth.authorize(identity, registryAction[need.action], `repository/${need.name}`, req);
  }

  async function check(identity: Identity, need: Need, req: RequestInfo): Promise<void> {
    const d = await decide(identity, need, req);
    if (d.effect !== 'Allow') throw denied(need, identity, reasonOf(d));
  }
}

function reasonOf(d: Decision): string {
  return d.reason === 'explicit-deny' ? 'explicit_deny' : 'no_allow';
}

/** For handlers: may the caller pull from another repository (a cross-repository mount)? */
export async function mayPull(c: Context<AppEnv>, auth: RegistryAuth, repository: string): Promise<boolean> {
  if (!auth.enabled) return true;
  const identity = c.get('identity');
  const d = await auth.authorize(identity, 'registry:Pull', `repository/${repository}`, requestInfo(c));
  return d.effect === 'Allow';
}

/**
 * For the manifest PUT by tag: pushing a tag is checked with the tag in the context
 * (berth:Tag), and moving a tag that points elsewhere also needs registry:OverwriteTag, so tag
 * immutability is one Deny statement.
 */
export async function checkTagPush(
  c: Context<AppEnv>,
  auth: RegistryAuth,
  repository: string,
  tag: string,
  moves: boolean,
): Promise<void> {
  if (!auth.enabled) return;
  const identity = c.get('identity');
  const req = requestInfo(c);
  const resource = `repository/${repository}`;
  for (const action of moves ? ['registry:Push', 'registry:OverwriteTag'] : ['registry:Push']) {
    const d = await auth.authorize(identity, action, resource, req, { 'berth:Tag': tag });
    if (d.effect !== 'Allow') {
      const why =
        action === 'registry:OverwriteTag'
          ? `tag ${tag} exists and may not be moved`
          : `tag ${tag} may not be pushed`;
      throw new OciError('DENIED', `${why} by ${identity.principal.type} ${identity.principal.name}`, {
        detail: { reason: reasonOf(d), tag },
      });
    }
  }
}
