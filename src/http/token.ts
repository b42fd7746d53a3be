// The token service docker, podman, containerd and buildkit sign in through (distribution's
// docs/content/spec/auth token.md and oauth.md), and the JWKS that verifies its tokens.
//   GET  /token   Basic credentials or none (anonymous), ?service&scope&offline_token
//   POST /token   OAuth2 form: password, refresh_token, and token-exchange for OIDC id tokens;
//                 JSON errors only (containerd and buildkit try POST first and need them)
//   GET  /.well-known/jwks.json
// The grant is always the intersection of what was asked and what the caller may do: a partial
// grant is never an error, and only bad credentials answer 401.
import { type Context, Hono } from 'hono';
import {
  type AccessEntry,
  AuthError,
  formatScope,
  type Identity,
  type JwkSet,
  parseScopes,
  type RequestInfo,
  type Scope,
} from '../auth/index.ts';
import { OciError } from '../errors.ts';
import { basicCredentials, requestInfo } from './caller.ts';
import type { AppEnv } from './env.ts';
import type { RegistryAuth } from './registry-auth.ts';

export interface TokenAuth extends RegistryAuth {
  authenticateRefresh(
    refreshToken: string,
    req: RequestInfo,
    opts?: { clientId?: string },
  ): Promise<Identity>;
  exchangeIdToken(idToken: string, req: RequestInfo, role?: string): Promise<Identity>;
  grant(identity: Identity, scopes: Scope[], req: RequestInfo): Promise<AccessEntry[]>;
  issueToken(
    identity: Identity,
    access: AccessEntry[],
    opts?: { offline?: boolean; clientId?: string },
  ): Promise<{ token: string; expiresIn: number; issuedAt: string; refreshToken?: string }>;
  jwks(): Promise<JwkSet>;
}

export interface TokenRoutesOptions {
  readonly auth: TokenAuth;
  readonly service: string;
}

const tokenExchange = 'urn:ietf:params:oauth:grant-type:token-exchange';
const idTokenTypes = ['urn:ietf:params:oauth:token-type:id_token', 'urn:ietf:params:oauth:token-type:jwt'];

/** An OAuth2 error (RFC 6749 section 5.2): always JSON, never a redirect or HTML. */
function oauthError(c: Context<AppEnv>, status: 400 | 401 | 429, error: string, description: string) {
  return c.json({ error, error_description: description }, status);
}

export function tokenRoutes(opts: TokenRoutesOptions) {
  const { auth, service } = opts;
  const app = new Hono<AppEnv>();

  const checkService = (asked: string | undefined) => {
    if (asked !== undefined && asked !== '' && asked !== service) {
      throw new OciError(
        'DENIED',
        `this token service issues tokens for service "${service}", not "${asked}"`,
      );
    }
  };

  app.get('/token', async (c) => {
    checkService(c.req.query('service'));
    const req = requestInfo(c);
    const header = c.req.header('authorization') ?? '';
    let identity: Identity;
    if (/^basic /i.test(header)) {
      const creds = basicCredentials(header);
      try {
        if (!creds) throw new AuthError('bad-credentials', 'malformed Basic credentials');
        identity = await auth.authenticateBasic(creds.username, creds.secret, req);
      } catch (e) {
        throw basicFailure(e);
      }
    } else {
      identity = auth.anonymous();
    }
    const scopes = parseScopes(c.req.queries('scope') ?? []);
    const access = await auth.grant(identity, scopes, req);
    const offline = c.req.query('offline_token') === 'true' && identity.authMethod !== 'anonymous';
    const clientId = c.req.query('client_id');
    const issued = await auth.issueToken(identity, access, { offline, ...(clientId && { clientId }) });
    return c.json({
      token: issued.token,
      access_token: issued.token,
      expires_in: issued.expiresIn,
      issued_at: issued.issuedAt,
      ...(issued.refreshToken && { refresh_token: issued.refreshToken }),
    });
  });

  app.post('/token', async (c) => {
    const type = c.req.header('content-type') ?? '';
    if (!type.toLowerCase().startsWith('application/x-www-form-urlencoded')) {
      return oauthError(c, 400, 'invalid_request', 'the body must be application/x-www-form-urlencoded');
    }
    const form = new URLSearchParams(await c.req.text());
    const asked = form.get('service');
    if (asked && asked !== service) {
      return oauthError(
        c,
        400,
        'invalid_request',
        `tokens here are for service "${service}", not "${asked}"`,
      );
    }
    const req = requestInfo(c);
    const grantType = form.get('grant_type');
    let identity: Identity;
    try {
      if (grantType === 'password') {
        const username = form.get('username');
        const password = form.get('password');
        if (!username || !password) {
          return oauthError(c, 400, 'invalid_request', 'the password grant needs username and password');
        }
        identity = await auth.authenticateBasic(username, password, req);
      } else if (grantType === 'refresh_token') {
        const refresh = form.get('refresh_token');
        if (!refresh) return oauthError(c, 400, 'invalid_request', 'refresh_token is missing');
        // A refresh token is bound to the client it was issued to (client_id), as OAuth2 asks.
        const clientId = form.get('client_id');
        identity = await auth.authenticateRefresh(refresh, req, clientId ? { clientId } : undefined);
      } else if (grantType === tokenExchange) {
        const subject = form.get('subject_token');
        const subjectType = form.get('subject_token_type');
        if (!subject || !subjectType || !idTokenTypes.includes(subjectType)) {
          return oauthError(
            c,
            400,
            'invalid_request',
            `token exchange needs subject_token and subject_token_type ${idTokenTypes[0]}`,
          );
        }
        identity = await auth.exchangeIdToken(subject, req, form.get('role') ?? undefined);
      } else {
        return oauthError(
          c,
          400,
          'unsupported_grant_type',
          `grant_type must be password, refresh_token or ${tokenExchange}`,
        );
      }
    } catch (e) {
      if (!(e instanceof AuthError)) throw e;
      if (e.reason === 'throttled') {
        c.header('Retry-After', String(e.retryAfterSeconds ?? 60));
        return oauthError(c, 429, 'slow_down', 'too many failed sign-ins; try again later');
      }
      return oauthError(c, 400, 'invalid_grant', e.message);
    }
    const scopes = parseScopes((form.get('scope') ?? '').split(' ').filter(Boolean));
    const access = await auth.grant(identity, scopes, req);
    const clientId = form.get('client_id');
    const issued = await auth.issueToken(identity, access, {
      offline: form.get('access_type') === 'offline',
      ...(clientId && { clientId }),
    });
    return c.json({
      access_token: issued.token,
      token_type: 'Bearer',
      scope: access
        .filter((a) => a.actions.length > 0)
        .map((a) =>
          formatScope({
            type: a.type as Scope['type'],
            name: a.name,
            actions: a.actions as Scope['actions'],
          }),
        )
        .join(' '),
      expires_in: issued.expiresIn,
      issued_at: issued.issuedAt,
      ...(issued.refreshToken && { refresh_token: issued.refreshToken }),
    });
  });

  app.get('/.well-known/jwks.json', async (c) => {
    c.header('Cache-Control', 'public, max-age=300');
    return c.json(await auth.jwks());
  });

  return app;
}

function basicFailure(e: unknown): unknown {
  if (!(e instanceof AuthError)) return e;
  if (e.reason === 'throttled') {
    return new OciError('TOOMANYREQUESTS', 'too many failed sign-ins; try again later', {
      headers: { 'Retry-After': String(e.retryAfterSeconds ?? 60) },
    });
  }
  return new OciError('UNAUTHORIZED', 'incorrect username or password', {
    headers: { 'WWW-Authenticate': 'Basic realm="berth"' },
  });
}
