// The auth facade: the one object http/ and main.ts use. It wires the building blocks together
// (identities, policies, tokens, federation, audit, throttle) and answers the questions a request
// asks: who is this (authenticate*), what may they have (grant, for the token endpoint), may they
// do this now (authorize), and what would a policy say (simulate, for the admin API).
//
// Principals travel inside registry tokens. An access token carries, in its `berth` claim, the
// principal's type, name, groups and tags, how it authenticated and, for a role session, a bounded
// subset of the OIDC claims, so that a request bearing it is decided without reading storage and
// without asking the identity store again. What keeps that honest is revocation (revocation.ts):
// every change that can narrow a principal's rights (deleting or disabling it, its groups or tags,
// a policy detached or edited, an access key deactivated or deleted, a task's role session ended)
// marks the tokens issued before it stale, and a stale token is refused on its next use, as is one
// whose principal, access key or role session no longer exists. The check costs one integer
// comparison per request while nothing changed. Refresh tokens carry only the subject and are
// re-resolved on every use.
//
// Subjects are principal references: `user/alice`, `serviceaccount/ci`, `role/deployer`,
// `anonymous`. They are the `sub` of access and refresh tokens and the audit actor.
import { type Logger, silentLogger } from '../log.ts';
import type { Outbound } from '../outbound.ts';
import type { StorageDriver } from '../storage/index.ts';
import { actions, canonicalAction } from './actions.ts';
import { type AuditEvent, type AuditLog, createAuditLog } from './audit.ts';
import type { RequestContext } from './conditions.ts';
import { createFederation, type Federation, FederationError, type FederationRole } from './federation.ts';
import {
  AuthStoreError,
  bootstrapAdminGroup,
  createIdentityStore,
  type IdentityStore,
  isAccessKeyId,
  isValidIdentityName,
  type PrincipalInfo,
} from './identities.ts';
import {
  type AttachedPolicy,
  allowAll,
  type Decision,
  evaluate,
  implicitDeny,
  isValidResource,
  mayAllowAny,
  type PrincipalType,
  reasonCode,
} from './policy.ts';
import { createPolicyStore, type PolicyStore } from './policy-store.ts';
import { createPrincipalDecisions, type PrincipalReference } from './principal-decisions.ts';
import { createRevocations } from './revocation.ts';
import { revokingIdentities, revokingPolicies } from './revoking-stores.ts';
import {
  createRoleSessions,
  isSessionKeyId,
  type RoleSession,
  type StoredRoleSession,
} from './role-sessions.ts';
import { adminScope, adminScopeText, type Scope, type ScopeAction } from './scope.ts';
import { SigV4Error, type SigV4Request, sigV4Messages, verifySigV4 } from './sigv4.ts';
import { listOrEmpty, readJson, writeJson } from './store.ts';
import { createThrottle, type Throttle, type ThrottleSubject } from './throttle.ts';
import {
  type AccessEntry,
  type Claims,
  createTokenService,
  type JwkSet,
  TokenError,
  type TokenService,
} from './tokens.ts';

// ---- public types -------------------------------------------------------------------------------

export interface AuthOptions {
  storage: StorageDriver;
  log: Logger;
  /** Token issuer: the registry's own URL (e.g. https://127.0.0.1:5000). Also the audience of refresh tokens. */
  issuer: string;
  /** The registry's service name: the audience of access tokens (the `service` of the token endpoint). */
  service: string;
  /** Lifetime of access tokens in seconds; default 300, at least 60. */
  tokenTtlSeconds?: number;
  /**
   * false = development mode: every request is allowed as the principal
   * `{type: 'user', name: 'anonymous-dev'}`, whatever credentials it brings. Logged loudly.
   * Default true.
   */
  enabled?: boolean;
  /** Password of the bootstrap admin; otherwise one is generated on first start and returned by start(). */
  bootstrapPassword?: string;
  /**
   * The Basic-auth user name meaning "the password is an OIDC id token" (default 'oidc'). A user
   * of that name cannot log in with a password.
   */
  oidcUsername?: string;
  /** Login throttling; see throttle.ts for the defaults (10 failures in 300 s lock for 60 s). */
  throttle?: { maxFailures?: number; windowSeconds?: number; lockoutSeconds?: number };
  /** scrypt N for new password and key hashes. Lower it in tests only. */
  scryptCost?: number;
  /** Milliseconds since the epoch. */
  now?: () => number;
  /** For OIDC discovery and JWKS requests (outbound.ts); default: nothing in outbound.allowHosts. */
  outbound?: Outbound;
}

/** What the HTTP layer knows about the request that authenticates or is being decided. */
export interface RequestInfo {
  sourceIp: string;
  requestId?: string;
  /** Whether the request came over TLS (berth:SecureTransport). */
  secure: boolean;
}

export type AuthMethod = 'password' | 'accesskey' | 'oidc' | 'token' | 'anonymous';

export interface IdentityPrincipal {
  readonly type: PrincipalType;
  readonly name: string;
  readonly groups: readonly string[];
  readonly tags: Readonly<Record<string, string>>;
}

/** An authenticated (or anonymous) caller. Plain data: it survives a trip through a token. */
export interface Identity {
  readonly principal: IdentityPrincipal;
  /**
   * How the caller proved who they are. Kept across tokens: a bearer token or a refresh token
   * says how the session it belongs to began (`password`, `accesskey`, `oidc`), so a condition on
   * berth:AuthMethod means the same on every request of the session. `token` is used only for a
   * bearer token that does not say (never one issued by this service).
   */
  readonly authMethod: AuthMethod;
  /** The access key the session began with. */
  readonly accessKeyId?: string;
  /** Role sessions: the OIDC claims kept for conditions (the `oidc:*` keys); a bounded subset. */
  readonly claims?: Readonly<Record<string, string | readonly string[]>>;
  /** Role sessions: who assumed the role, `oidc:<issuer>#<sub>`. */
  readonly sessionSubject?: string;
  /**
   * When the credentials behind this identity stop counting (seconds since the epoch): the end of
   * a role session, or the expiry of the bearer token it came from. Tokens issued for it expire
   * no later, so a session cannot be stretched by trading its token for a new one.
   */
  readonly expiresAt?: number;
  /**
   * The revocation revision current when the caller was authenticated (revocation.ts): tokens
   * issued for this identity carry it, so a change made after it makes them stale even when it
   * landed before the token was signed.
   */
  readonly revision?: number;
}

export type AuthErrorReason = 'bad-credentials' | 'throttled' | 'invalid-token' | 'federation';

/**
 * An authentication failure. `message` and `detail` are safe to show the client: they never name a
 * policy or say whether a user exists. 'throttled' maps to 429 with Retry-After; the rest to 401.
 */
export class AuthError extends Error {
  readonly reason: AuthErrorReason;
  /** With 'throttled': seconds until another attempt may be made. */
  readonly retryAfterSeconds?: number;
  /**
   * With 'invalid-token': why (a TokenErrorReason such as `expired` or `wrong-audience`, or
   * `principal-unavailable`, `client-mismatch`, `revoked`). With 'federation': the FederationErrorReason.
   */
  readonly detail?: string;
  /** With 'federation' and detail `ambiguous-role`: the roles the caller may choose from. */
  readonly roles?: readonly string[];
  constructor(
    reason: AuthErrorReason,
    message: string,
    opts: { retryAfterSeconds?: number; detail?: string; roles?: readonly string[]; cause?: unknown } = {},
  ) {
    super(message, { cause: opts.cause });
    this.name = 'AuthError';
    this.reason = reason;
    if (opts.retryAfterSeconds !== undefined) this.retryAfterSeconds = opts.retryAfterSeconds;
    if (opts.detail !== undefined) this.detail = opts.detail;
    if (opts.roles !== undefined) this.roles = opts.roles;
  }
}

export interface SimulatedStatement {
  readonly policyId: string;
  readonly sid?: string;
  readonly index: number;
  readonly effect: 'Allow' | 'Deny';
  /** The statement as validated (list elements normalized to arrays). */
  readonly statement: unknown;
}

export interface SimulateInput {
  /** `user`, `serviceaccount`, `role` or `anonymous`; looked up so its groups and tags count. */
  principal: { type: string; name: string };
  action: string;
  resource: string;
  /** Condition keys; they override the defaults (current time, the principal's tags, ...). */
  context?: Readonly<Record<string, string | readonly string[]>>;
}

export interface IssueTokenOptions {
  /**
   * Also issue a refresh token (the token endpoint's offline_token / access_type=offline). Only
   * for users and service accounts that logged in with a password or an access key; for anyone
   * else (role sessions, anonymous, identities from a bearer token) the request is ignored.
   */
  offline?: boolean;
  /** The OAuth2 client id the refresh token is bound to; default 'berth'. */
  clientId?: string;
}

export interface IssuedAccessToken {
  token: string;
  /** Seconds. */
  expiresIn: number;
  /** RFC 3339. */
  issuedAt: string;
  refreshToken?: string;
}

export interface Auth {
  /** false in development mode (see AuthOptions.enabled). */
  readonly enabled: boolean;
  /**
   * The identity store, for the admin API. Changing a user's password, disabling it or deleting
   * it (or deleting a service account) through this object also revokes its refresh tokens, and
   * deleting any identity detaches its policies.
   */
  readonly identities: IdentityStore;
  readonly policies: PolicyStore;
  readonly federation: Federation;
  readonly audit: AuditLog;
  readonly tokens: TokenService;

  /**
   * Bootstrap, on the first start only (a marker in storage records that it ran): user `admin` in
   * group `admins` and a managed policy `AdministratorAccess` (Allow * on *) attached to group
   * `admins`. Each step is idempotent, so a start that crashed halfway completes on the next one;
   * once done, later starts leave what administrators changed alone (a deleted admin user is not
   * recreated). Returns the generated admin password the one time one is generated.
   */
  start(): Promise<{ bootstrapPassword?: string }>;

  /**
   * Basic credentials to an identity: a user name and password; an access key id (`BK...`) and its
   * secret; or the OIDC user name (AuthOptions.oidcUsername) and an id token, exchanged for the one
   * role that trusts it. Throttled per source address, per account and address, and per account
   * for addresses that failed on it (OIDC: per address only; throttle.ts): AuthError 'throttled'
   * with retryAfterSeconds. Failures are AuthError 'bad-credentials' (or 'federation'). Every
   * outcome is audited (type 'authn').
   */
  authenticateBasic(username: string, secret: string, req: RequestInfo): Promise<Identity>;

  /**
   * An AWS Signature Version 4 request (the ECS endpoint) to the owner of the access key that
   * signed it: the request exactly as received (raw path and query, headers in lower case, body
   * bytes). `service` is the signing name the credential scope must carry ('ecs'); `region`, when
   * given, pins the scope's region (otherwise any region the client chose is accepted). Throws
   * SigV4Error with the error type and message AWS answers (InvalidSignatureException,
   * UnrecognizedClientException, ...); a key created before berth kept secrets gets
   * UnrecognizedClientException saying to create a new key. Throttled like Basic (the key id is the
   * account: AuthError 'throttled'); every outcome that names a key is audited ('authn',
   * action authn:SigV4). In development mode the signature is not checked.
   */
  authenticateSigV4(
    request: SigV4Request,
    req: RequestInfo,
    opts: { service: string; region?: string },
  ): Promise<Identity>;

  /**
   * A registry access token (Authorization: Bearer) to the identity it was issued to and the access
   * entries it carries. Checks signature, issuer, audience and expiry, and that it was not revoked:
   * its principal still exists (a user not disabled), the access key or role session it began with
   * is still live, and nothing narrowed the rights of its principal, its groups or its key since it
   * was issued (revocation.ts). A token's signature is checked once; later uses cost a map lookup
   * and, while nothing was revoked, one comparison. Failures are AuthError 'invalid-token' with the
   * TokenError reason as detail, or `revoked` (audited, once per token).
   */
  authenticateBearer(token: string, req: RequestInfo): Promise<Identity & { access: AccessEntry[] }>;

  /**
   * The refresh_token grant: verifies the refresh token (not revoked, and bound to `clientId` when
   * one is given), then resolves its subject again, so a deleted or disabled user, a deleted service
   * account or a deactivated access key ends the session. Throttled per address; audited.
   */
  authenticateRefresh(
    refreshToken: string,
    req: RequestInfo,
    opts?: { clientId?: string },
  ): Promise<Identity>;

  /**
   * An OIDC id token to a role session (AssumeRoleWithWebIdentity): `role` names the role, else the
   * one role whose trust policy accepts the token. The session is principal {type 'role', name,
   * groups [], tags: the role's}, its claims feed `oidc:*` conditions, and it lasts the role's
   * maxSessionSeconds. Throttled per address; audited. Failures are AuthError 'federation' with the
   * FederationError reason as detail.
   */
  exchangeIdToken(idToken: string, req: RequestInfo, role?: string): Promise<Identity>;

  /** The identity of a request without credentials (in development mode, the dev principal). */
  anonymous(): Identity;

  /**
   * The token endpoint's grant: for each scope, the subset of its actions the identity may do
   * (pull: registry:Pull, push: registry:Push, delete: registry:Delete on `repository/<name>`,
   * `*`: granted only when all three are; registry:catalog:* is registry:Catalog on
   * `repository/*`; berth:admin:* is granted when some identity policy allows the principal an
   * action of the admin API, `admin:*` or `ecs:*`, on any resource; each admin request is still
   * decided on its own). Never throws for a partial grant: denied actions are left out and audited
   * ('decision', Deny); a scope with nothing granted stays, with no actions. Names are kept as given, so a
   * scope naming `host:port/repo` matches no policy and is granted nothing. In development mode
   * everything asked for is granted.
   */
  grant(identity: Identity, scopes: readonly Scope[], req: RequestInfo): Promise<AccessEntry[]>;

  /**
   * Issues a registry access token for the identity and access, lasting the token TTL (less for a
   * role session or a bearer-derived identity that ends sooner), and a refresh token when asked and
   * allowed (IssueTokenOptions.offline). Audited ('token'). AuthError 'invalid-token' (detail
   * 'expired') when the identity's session has less than a minute left.
   */
  issueToken(
    identity: Identity,
    access: readonly AccessEntry[],
    opts?: IssueTokenOptions,
  ): Promise<IssuedAccessToken>;

  /**
   * One decision at request time (admin API operations, tag overwrite on manifest PUT, ListTags,
   * ...): the identity policies of the principal and its groups (or its role), plus, for
   * `repository/...` resources, the repository policies covering the repository. Context keys
   * filled in: berth:SourceIp, berth:CurrentTime, berth:EpochTime, berth:SecureTransport,
   * berth:AuthMethod, berth:PrincipalTag/<key>, oidc:<claim> (role sessions), and `extra` (e.g.
   * berth:Tag; keys colliding with the ones filled in are ignored). Deny decisions are audited.
   * Policies come from memory after the first load. In development mode always Allow.
   */
  authorize(
    identity: Identity,
    action: string,
    resource: string,
    req: RequestInfo,
    extra?: Record<string, string>,
  ): Promise<Decision>;

  /**
   * The policy simulator of the admin API: the decision for a named principal (looked up, so its
   * groups and tags count; disabled users too) with a caller-supplied context, and each matching
   * statement with the policy it came from. Not audited. AuthStoreError INVALID for an unknown
   * principal type, action or a malformed resource; NOT_FOUND for an unknown principal.
   */
  simulate(input: SimulateInput): Promise<Decision & { statements: SimulatedStatement[] }>;

  /**
   * A decision for a principal named by reference (`role/NAME`, `user/NAME`,
   * `serviceaccount/NAME`) from its current policies, with no request: for whatever acts on its
   * behalf later (a push hook as its role, an execution role pulling images). A principal that
   * does not exist, or a disabled user, is denied. Denials are audited. Allow in development mode.
   * See principal-decisions.ts.
   */
  authorizeAs(principal: PrincipalReference, action: string, resource: string): Promise<Decision>;

  /**
   * Temporary credentials for a role (task roles): `roleArnOrName` is `arn:aws:iam::ACCOUNT:role/NAME`
   * or NAME. They sign in with Basic (key id and secret) on /token and /v2, or sign ECS requests
   * with SigV4 plus the session token, and act as the role. Valid for an hour at most (less when
   * the role's maxSessionSeconds is shorter). AuthError 'federation' (detail 'role-not-found')
   * when there is no such role. Audited.
   */
  roleCredentials(
    roleArnOrName: string,
    sessionName: string,
  ): Promise<{
    AccessKeyId: string;
    SecretAccessKey: string;
    Token: string;
    Expiration: string;
    RoleArn: string;
  }>;

  /** The public keys that verify access tokens, for /.well-known/jwks.json. */
  jwks(): Promise<JwkSet>;

  /**
   * Ends the temporary role sessions `match` picks (task credentials, by session name or role): their
   * keys stop working at once, as Basic and SigV4 credentials and inside tokens issued for them.
   * Answers how many ended.
   */
  revokeRoleSessions(match: (session: { role: string; sessionName: string }) => boolean): Promise<number>;

  /**
   * Revokes every refresh token of a subject issued up to now: `user/alice`, `serviceaccount/ci`.
   * `identities` already does this on password changes, disabling and deletion; this is for
   * anything else that should end sessions (e.g. an access key's deletion, an admin's "log out").
   */
  revokeSessions(subject: string): Promise<void>;
}

// ---- constants and pure helpers -----------------------------------------------------------------

/** The principal every request runs as in development mode. */
export const devPrincipalName = 'anonymous-dev';
export const administratorPolicyName = 'AdministratorAccess';
export const administratorPolicy = Object.freeze({
  Version: '2012-10-17',
  Statement: [{ Sid: 'AdministratorAccess', Effect: 'Allow', Action: '*', Resource: '*' }],
});

const bootstrapMarkerPath = '/auth/bootstrap.json';
const sessionClaim = 'berth';
const defaultClientId = 'berth';
const authMethods: readonly AuthMethod[] = ['password', 'accesskey', 'oidc', 'token', 'anonymous'];
const principalTypes: readonly PrincipalType[] = ['user', 'serviceaccount', 'role', 'anonymous'];
const scopeActions: Readonly<Record<Exclude<ScopeAction, '*'>, string>> = {
  pull: 'registry:Pull',
  push: 'registry:Push',
  delete: 'registry:Delete',
};
// Bounds on the OIDC claims a role session keeps (and carries in every token).
export const maxSessionClaims = 32;
export const maxClaimValueLength = 256;
const maxClaimNameLength = 64;
const maxClaimArrayLength = 32;
// Different on every token and useless in a condition: not worth carrying.
const droppedClaims = new Set(['exp', 'iat', 'nbf', 'jti', 'auth_time']);
const preferredClaims = ['iss', 'sub', 'aud'];
// Audit strings that come from the caller are cut to this.
const maxAuditText = 256;

const frozenEmpty = Object.freeze({}) as Readonly<Record<string, string>>;

/** `user/alice`, `role/deployer`, `anonymous`: the token subject and audit actor of a principal. */
export function principalRef(p: { type: PrincipalType; name: string }): string {
  return p.type === 'anonymous' ? 'anonymous' : `${p.type}/${p.name}`;
}

function anonymousIdentity(): Identity {
  return {
    principal: { type: 'anonymous', name: 'anonymous', groups: [], tags: frozenEmpty },
    authMethod: 'anonymous',
  };
}

function devIdentity(): Identity {
  return {
    principal: { type: 'user', name: devPrincipalName, groups: [], tags: frozenEmpty },
    authMethod: 'anonymous',
  };
}

/** What the admin API (/api/v1) decides: its own actions and the runner's REST routes' ECS ones. */
const adminApiActions: readonly string[] = actions
  .map((a) => a.name)
  .filter((n) => n.startsWith('admin:') || n.startsWith('ecs:'));

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
const isStringArray = (v: unknown): v is string[] =>
  Array.isArray(v) && v.every((x) => typeof x === 'string');
const clip = (s: string) => (s.length > maxAuditText ? `${s.slice(0, maxAuditText)}...` : s);

function scalar(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if ((typeof v === 'number' && Number.isFinite(v)) || typeof v === 'boolean') return String(v);
  return undefined;
}

/**
 * The OIDC claims a role session keeps: as trust policies see them (trust.ts claimsContext:
 * scalars as strings, arrays of scalars as multi-valued keys), minus the per-token ones (exp,
 * iat, nbf, jti, auth_time) and anything too large: values over 256 characters, arrays over 32
 * elements, names over 64 characters or with whitespace. At most 32 claims: iss, sub and aud
 * first, then in the token's order.
 */
export function sessionClaims(claims: Readonly<Record<string, unknown>>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const names = [
    ...preferredClaims.filter((n) => Object.hasOwn(claims, n)),
    ...Object.keys(claims).filter((n) => !preferredClaims.includes(n)),
  ];
  let count = 0;
  for (const name of names) {
    if (count >= maxSessionClaims) break;
    if (droppedClaims.has(name) || name === '' || name.length > maxClaimNameLength || /\s/.test(name))
      continue;
    const value = claims[name];
    let kept: string | string[] | undefined;
    if (Array.isArray(value)) {
      const values = value.map(scalar);
      if (
        value.length <= maxClaimArrayLength &&
        values.every((v) => v !== undefined && v.length <= maxClaimValueLength)
      )
        kept = values as string[];
    } else {
      const v = scalar(value);
      if (v !== undefined && v.length <= maxClaimValueLength) kept = v;
    }
    if (kept === undefined) continue;
    // defineProperty: a `__proto__` claim stays a plain key.
    Object.defineProperty(out, name, { value: kept, enumerable: true, writable: true, configurable: true });
    count++;
  }
  return out;
}

/** The `berth` claim of an access token: the identity, as authenticateBearer rebuilds it. */
interface SessionClaim {
  /** Identity.revision: tokens without one (from before revocation) count as revision 0. */
  rev?: number;
  type: PrincipalType;
  name: string;
  groups: string[];
  tags: Record<string, string>;
  authMethod: AuthMethod;
  accessKeyId?: string;
  claims?: Record<string, string | string[]>;
  sessionSubject?: string;
}

function toSessionClaim(identity: Identity): SessionClaim {
  const { principal: p } = identity;
  return {
    ...(identity.revision !== undefined ? { rev: identity.revision } : {}),
    type: p.type,
    name: p.name,
    groups: [...p.groups],
    tags: { ...p.tags },
    authMethod: identity.authMethod,
    ...(identity.accessKeyId !== undefined ? { accessKeyId: identity.accessKeyId } : {}),
    ...(identity.claims !== undefined ? { claims: sessionClaims(identity.claims) } : {}),
    ...(identity.sessionSubject !== undefined ? { sessionSubject: identity.sessionSubject } : {}),
  };
}

function fromSessionClaim(raw: unknown, exp: number): Identity | undefined {
  if (!isRecord(raw)) return undefined;
  const { rev, type, name, groups, tags, authMethod, accessKeyId, claims, sessionSubject } = raw;
  if (rev !== undefined && (typeof rev !== 'number' || !Number.isFinite(rev))) return undefined;
  if (!principalTypes.includes(type as PrincipalType) || typeof name !== 'string' || !isStringArray(groups))
    return undefined;
  if (!isRecord(tags) || !Object.values(tags).every((v) => typeof v === 'string')) return undefined;
  if (accessKeyId !== undefined && typeof accessKeyId !== 'string') return undefined;
  if (sessionSubject !== undefined && typeof sessionSubject !== 'string') return undefined;
  if (claims !== undefined) {
    if (!isRecord(claims)) return undefined;
    if (!Object.values(claims).every((v) => typeof v === 'string' || isStringArray(v))) return undefined;
  }
  const method = authMethods.includes(authMethod as AuthMethod) ? (authMethod as AuthMethod) : 'token';
  return {
    principal: {
      type: type as PrincipalType,
      name,
      groups: Object.freeze([...groups]),
      tags: Object.freeze({ ...(tags as Record<string, string>) }),
    },
    authMethod: method,
    ...(accessKeyId !== undefined ? { accessKeyId } : {}),
    ...(claims !== undefined ? { claims: claims as Record<string, string | string[]> } : {}),
    ...(sessionSubject !== undefined ? { sessionSubject } : {}),
    expiresAt: exp,
    revision: rev ?? 0,
  };
}

/** The audit reason of a SigV4 failure: short codes, as the other sign-in methods record. */
function sigV4Reason(err: SigV4Error): string {
  if (err.code === 'UnrecognizedClientException')
    return err.message === sigV4Messages.unrecognizedClient ? 'bad-credentials' : 'no-signing-secret';
  return err.message.startsWith(sigV4Messages.signatureMismatch) ? 'bad-signature' : 'invalid-signature';
}

function identityOf(p: PrincipalInfo, authMethod: AuthMethod, accessKeyId?: string): Identity {
  return {
    principal: { type: p.type, name: p.name, groups: p.groups, tags: p.tags },
    authMethod,
    ...(accessKeyId !== undefined ? { accessKeyId } : {}),
  };
}

/** `user/alice` or `serviceaccount/ci` back to a reference the identity store resolves. */
function parseSubject(sub: string): { type: 'user' | 'serviceaccount'; name: string } | undefined {
  const slash = sub.indexOf('/');
  const type = sub.slice(0, slash);
  const name = sub.slice(slash + 1);
  if (slash < 0 || (type !== 'user' && type !== 'serviceaccount') || !isValidIdentityName(name))
    return undefined;
  return { type, name };
}

/** Condition keys this service fills in itself; `extra` may not add values to them. */
function reservedKey(key: string): boolean {
  const k = key.toLowerCase();
  return (
    k.startsWith('oidc:') ||
    k.startsWith('berth:principaltag/') ||
    [
      'berth:sourceip',
      'berth:currenttime',
      'berth:epochtime',
      'berth:securetransport',
      'berth:authmethod',
      'berth:principaltype',
      'berth:principalname',
      'berth:principalgroups',
      'berth:repository',
    ].includes(k)
  );
}

function timeContext(nowMs: number): Record<string, string> {
  return {
    'berth:CurrentTime': new Date(nowMs).toISOString(),
    'berth:EpochTime': String(Math.floor(nowMs / 1000)),
  };
}

function identityContext(identity: Identity): Record<string, string | readonly string[]> {
  const ctx: Record<string, string | readonly string[]> = { 'berth:AuthMethod': identity.authMethod };
  for (const [k, v] of Object.entries(identity.principal.tags)) ctx[`berth:PrincipalTag/${k}`] = v;
  for (const [k, v] of Object.entries(identity.claims ?? {})) ctx[`oidc:${k}`] = v;
  return ctx;
}

/** Keys differing only in case are one key to conditions: drop the defaults the caller overrides. */
function overlay(
  base: Record<string, string | readonly string[]>,
  over: Record<string, string | readonly string[]>,
): Record<string, string | readonly string[]> {
  const overridden = new Set(Object.keys(over).map((k) => k.toLowerCase()));
  const out: Record<string, string | readonly string[]> = {};
  for (const [k, v] of Object.entries(base)) if (!overridden.has(k.toLowerCase())) out[k] = v;
  for (const [k, v] of Object.entries(over)) out[k] = v;
  return out;
}

// ---- the service --------------------------------------------------------------------------------

const maxVerifiedTokens = 10_000;

export function createAuth(opts: AuthOptions): Auth {
  const { storage, issuer, service } = opts;
  const log = opts.log ?? silentLogger;
  const now = opts.now ?? Date.now;
  const enabled = opts.enabled ?? true;
  const tokenTtl = opts.tokenTtlSeconds ?? 300;
  const oidcUsername = opts.oidcUsername ?? 'oidc';

  if (!enabled)
    log.warn(
      'AUTHENTICATION IS DISABLED (development mode): every request is allowed as user ' +
        `"${devPrincipalName}". Never run like this where anyone else can reach the registry.`,
    );

  // The stores refer to each other (deleting an identity detaches its policies; attaching checks
  // the target exists), so each reaches the other through these bindings.
  let policyStore: PolicyStore;
  let identityStore: IdentityStore;

  const baseIdentities = createIdentityStore({
    storage,
    now,
    log,
    ...(opts.scryptCost !== undefined ? { scryptCost: opts.scryptCost } : {}),
    beforeDelete: (target) => policyStore.detachAll(target),
  });
  policyStore = createPolicyStore({
    storage,
    now,
    log,
    targetExists: async (t) => {
      switch (t.type) {
        case 'user':
          return (await identityStore.getUser(t.name)) !== undefined;
        case 'group':
          return (await identityStore.getGroup(t.name)) !== undefined;
        case 'role':
          return (await identityStore.getRole(t.name)) !== undefined;
        case 'serviceaccount':
          return (await identityStore.getServiceAccount(t.name)) !== undefined;
      }
    },
  });
  const tokens = createTokenService({ storage, issuer, service, ttlSeconds: tokenTtl, now });
  /**
   * Access tokens already verified, until they expire (bounded; the oldest go first), with the
   * revocation epoch they were last found live at.
   */
  const verified = new Map<
    string,
    { caller: Identity & { access: AccessEntry[] }; expiresAtMs: number; checkedAt: number }
  >();
  /** Tokens found revoked, until they expire: refused without another signature check or audit entry. */
  const refused = new Map<string, number>();
  const federation = createFederation({
    storage,
    now,
    log,
    ...(opts.outbound && { outbound: opts.outbound }),
  });
  const auditLog = createAuditLog({ storage, now });
  const throttle: Throttle = createThrottle({ ...opts.throttle, now });
  const roleSessionsDir = '/auth/role-sessions';
  const roleSessions = createRoleSessions(now, {
    load: async (id) =>
      (await readJson(storage, `${roleSessionsDir}/${id}.json`)) as StoredRoleSession | undefined,
    save: (s) => writeJson(storage, `${roleSessionsDir}/${s.accessKeyId}.json`, s),
    remove: async (id) => {
      await storage.delete(`${roleSessionsDir}/${id}.json`).catch(() => {});
    },
    list: async () => {
      const out: StoredRoleSession[] = [];
      for (const p of await listOrEmpty(storage, roleSessionsDir)) {
        const s = (await readJson(storage, p).catch(() => undefined)) as StoredRoleSession | undefined;
        if (s) out.push(s);
      }
      return out;
    },
  });
  // Entries outlive every token: the longest a token can be issued for, and an hour to spare.
  const revocations = createRevocations({
    storage,
    now,
    log,
    horizonMs: (Math.max(tokenTtl, 3600) + 3600) * 1000,
  });
  /**
   * Bumped by every revocation (of tokens or of role sessions): a verified token found live at the
   * current epoch needs no other check.
   */
  let epoch = 0;
  const revoke = (subjects: readonly string[]) => {
    if (subjects.length > 0) epoch++;
    return revocations.revoke(subjects);
  };
  async function revokeRoleSessions(match: (s: RoleSession) => boolean): Promise<number> {
    const ended = roleSessions.revoke(match);
    epoch++;
    return ended;
  }

  /** The role identity of a live temporary session; undefined when the role is gone. */
  async function roleSessionIdentity(s: RoleSession): Promise<Identity | undefined> {
    const r = await identityStore.getRole(s.role);
    if (!r) return undefined;
    return {
      principal: { type: 'role', name: r.name, groups: Object.freeze([]), tags: r.tags },
      authMethod: 'accesskey',
      accessKeyId: s.accessKeyId,
      sessionSubject: s.sessionName,
      expiresAt: s.expiresAt,
      revision: revocations.current(),
    };
  }

  identityStore = revokingIdentities(baseIdentities, {
    revoke,
    endRefreshTokens: (subject) => tokens.revokeAllForSubject(subject),
    endRoleSessions: async (role) => {
      await revokeRoleSessions((s) => s.role === role);
    },
  });
  const policies = revokingPolicies(policyStore, { revoke });

  /**
   * Why a verified token no longer counts, or undefined while it does: a revocation after it was
   * issued, or its principal, access key or role session gone.
   */
  async function staleness(caller: Identity): Promise<string | undefined> {
    const p = caller.principal;
    const key = caller.accessKeyId;
    const subjects = ['*', ...p.groups.map((g) => `group/${g}`)];
    if (p.type !== 'anonymous') subjects.push(principalRef(p));
    if (key !== undefined && !isSessionKeyId(key)) subjects.push(`accesskey/${key}`);
    const revoked = revocations.revokedAfter(caller.revision ?? 0, subjects);
    if (revoked !== undefined) return `revoked (${revoked})`;
    switch (p.type) {
      case 'user':
      case 'serviceaccount':
        if (!(await identityStore.resolvePrincipal({ type: p.type, name: p.name })))
          return 'principal-unavailable';
        break;
      case 'role':
        if (!(await identityStore.getRole(p.name))) return 'principal-unavailable';
        break;
    }
    if (key !== undefined) {
      if (isSessionKeyId(key)) {
        if (!(await roleSessions.alive(key))) return 'role session ended';
      } else {
        const k = await identityStore.getAccessKey(key);
        if (k?.status !== 'active' || k.owner.type !== p.type || k.owner.name !== p.name)
          return 'access key unavailable';
      }
    }
    return undefined;
  }

  /** Audit is recorded before answering, but a failure to record does not fail the request. */
  async function audit(event: AuditEvent): Promise<void> {
    try {
      await auditLog.record({ ...event, actor: clip(event.actor) });
    } catch (err) {
      log.error(
        { err, audit: { type: event.type, action: event.action } },
        'audit: could not record an event',
      );
    }
  }

  const reqFields = (req: RequestInfo) => ({
    sourceIp: req.sourceIp,
    ...(req.requestId !== undefined ? { requestId: req.requestId } : {}),
  });

  const actorOf = (identity: Identity) => principalRef(identity.principal);

  function throttled(keys: ThrottleSubject): AuthError | undefined {
    const c = throttle.check(keys);
    return c.allowed
      ? undefined
      : new AuthError('throttled', 'too many failed attempts; try again later', {
          retryAfterSeconds: c.retryAfterSeconds,
        });
  }

  // ---- federation ----

  const toFederationRole = (r: { name: string; trustPolicy?: unknown; maxSessionSeconds: number }) =>
    ({ name: r.name, trustPolicy: r.trustPolicy, maxSessionSeconds: r.maxSessionSeconds }) as FederationRole;

  async function allRoles(): Promise<FederationRole[]> {
    const out: FederationRole[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await identityStore.listRoles({ limit: 1000, ...(after !== undefined ? { after } : {}) });
      out.push(...page.items.map(toFederationRole));
      if (page.next === undefined) return out;
      after = page.next;
    }
  }

  /** The exchange itself, unthrottled and unaudited: callers do both. */
  async function assumeRole(idToken: string, role: string | undefined): Promise<Identity> {
    let result: Awaited<ReturnType<Federation['exchange']>>;
    try {
      result = await federation.exchange(idToken, {
        ...(role !== undefined ? { role } : {}),
        resolveRole: async (name) => {
          const r = await identityStore.getRole(name);
          return r ? toFederationRole(r) : undefined;
        },
        listRoles: allRoles,
      });
    } catch (err) {
      if (err instanceof FederationError)
        throw new AuthError('federation', err.message, {
          detail: err.reason,
          ...(err.roles ? { roles: err.roles } : {}),
          cause: err,
        });
      throw err;
    }
    const r = await identityStore.getRole(result.role);
    // Deleted between the exchange and now.
    if (!r)
      throw new AuthError('federation', `role ${JSON.stringify(result.role)} does not exist`, {
        detail: 'role-not-found',
      });
    const sessionSeconds = Math.min(result.sessionSeconds, r.maxSessionSeconds);
    return {
      principal: { type: 'role', name: r.name, groups: Object.freeze([]), tags: r.tags },
      authMethod: 'oidc',
      claims: sessionClaims(result.claims),
      sessionSubject: result.subject,
      expiresAt: Math.floor(now() / 1000) + sessionSeconds,
    };
  }

  async function exchange(
    idToken: string,
    req: RequestInfo,
    role: string | undefined,
    action: string,
  ): Promise<Identity> {
    const keys = { address: req.sourceIp };
    const locked = throttled(keys);
    if (locked) {
      await audit({
        type: 'authn',
        actor: 'oidc',
        action,
        decision: 'Deny',
        reason: 'throttled',
        ...reqFields(req),
      });
      throw locked;
    }
    // Taken before anything is read: a change landing after it makes the tokens stale.
    const revision = revocations.current();
    try {
      const identity = { ...(await assumeRole(idToken, role)), revision };
      throttle.succeed(keys);
      await audit({
        type: 'authn',
        actor: actorOf(identity),
        action,
        decision: 'Allow',
        ...reqFields(req),
        detail: { subject: identity.sessionSubject },
      });
      return identity;
    } catch (err) {
      if (err instanceof AuthError) {
        throttle.fail(keys);
        await audit({
          type: 'authn',
          actor: role !== undefined ? clip(`role/${role}`) : 'oidc',
          action,
          decision: 'Deny',
          reason: err.detail ?? err.reason,
          ...reqFields(req),
        });
      }
      throw err;
    }
  }

  // ---- decisions ----

  async function policiesFor(identity: Identity, resource: string): Promise<AttachedPolicy[]> {
    const identityPolicies = await policyStore.policiesFor(identity.principal);
    if (!resource.startsWith('repository/')) return identityPolicies;
    const repository = resource.slice('repository/'.length);
    return [...identityPolicies, ...(await policyStore.repositoryPoliciesFor(repository))];
  }

  function requestContext(identity: Identity, req: RequestInfo, extra: Record<string, string> | undefined) {
    const ctx: Record<string, string | readonly string[]> = {};
    for (const [k, v] of Object.entries(extra ?? {}))
      if (reservedKey(k)) log.debug({ key: k }, 'authorize: ignoring a reserved context key in extra');
      else ctx[k] = v;
    Object.assign(ctx, identityContext(identity), timeContext(now()), {
      'berth:SourceIp': req.sourceIp,
      'berth:SecureTransport': req.secure ? 'true' : 'false',
    });
    return ctx as RequestContext;
  }

  async function decide(
    identity: Identity,
    action: string,
    resource: string,
    context: RequestContext,
  ): Promise<Decision> {
    if (!enabled) return allowAll;
    const policies = await policiesFor(identity, resource);
    return evaluate({ principal: identity.principal, action, resource, context }, policies);
  }

  async function auditDeny(
    identity: Identity,
    action: string,
    resource: string,
    decision: Decision,
    req: RequestInfo,
    detail?: Record<string, unknown>,
  ) {
    await audit({
      type: 'decision',
      actor: actorOf(identity),
      action,
      resource: clip(resource),
      decision: 'Deny',
      reason: reasonCode(decision),
      ...reqFields(req),
      ...(detail ? { detail } : {}),
    });
  }

  const revokedError = () =>
    new AuthError('invalid-token', 'invalid token: revoked; ask the token service for a new one', {
      detail: 'revoked',
    });

  /** Remembers a revoked token until it expires, audits its first refusal, and answers the error. */
  async function refuse(
    token: string,
    caller: Identity,
    expiresAtMs: number,
    why: string,
    req: RequestInfo,
  ): Promise<AuthError> {
    if (refused.size >= maxVerifiedTokens) refused.delete(refused.keys().next().value as string);
    refused.set(token, expiresAtMs);
    await audit({
      type: 'authn',
      actor: actorOf(caller),
      action: 'authn:Bearer',
      decision: 'Deny',
      reason: 'revoked',
      ...reqFields(req),
      detail: { why, ...(caller.accessKeyId !== undefined ? { accessKeyId: caller.accessKeyId } : {}) },
    });
    return revokedError();
  }

  // ---- the facade ----

  return {
    enabled,
    identities: identityStore,
    policies,
    federation,
    audit: auditLog,
    tokens,

    async start() {
      if (!enabled)
        log.warn(`auth is DISABLED (development mode): every request runs as "${devPrincipalName}"`);
      await revocations.load();
      const swept = await roleSessions.sweep().catch((err) => {
        log.warn({ err }, 'could not sweep expired role sessions');
        return 0;
      });
      if (swept > 0) log.info({ swept }, 'deleted expired role sessions');
      if ((await readJson(storage, bootstrapMarkerPath)) !== undefined) return {};
      const admin = await identityStore.ensureBootstrapAdmin(
        opts.bootstrapPassword !== undefined ? { password: opts.bootstrapPassword } : {},
      );
      if (!(await policyStore.getPolicy(administratorPolicyName)))
        await policyStore.putPolicy(administratorPolicyName, administratorPolicy);
      if (await identityStore.getGroup(bootstrapAdminGroup))
        await policyStore.attachPolicy(administratorPolicyName, { type: 'group', name: bootstrapAdminGroup });
      await writeJson(storage, bootstrapMarkerPath, { bootstrappedAt: new Date(now()).toISOString() });
      if (admin.created)
        log.info(
          { user: 'admin', group: bootstrapAdminGroup, policy: administratorPolicyName },
          'auth: created the bootstrap administrator',
        );
      return admin.password !== undefined ? { bootstrapPassword: admin.password } : {};
    },

    async authenticateBasic(username, secret, req) {
      if (!enabled) return devIdentity();
      // Taken before anything is read: a change landing after it makes the tokens stale.
      const revision = revocations.current();
      if (username === oidcUsername)
        return exchange(secret, req, undefined, 'authn:AssumeRoleWithWebIdentity');

      const bySession = isSessionKeyId(username);
      const byKey = bySession || isAccessKeyId(username);
      const action = byKey ? 'authn:AccessKey' : 'authn:Password';
      const account = clip(username);
      const keys = { address: req.sourceIp, account };
      const claimed = byKey ? `accesskey/${account}` : `user/${account}`;
      const locked = throttled(keys);
      if (locked) {
        await audit({
          type: 'authn',
          actor: claimed,
          action,
          decision: 'Deny',
          reason: 'throttled',
          ...reqFields(req),
        });
        throw locked;
      }
      let identity: Identity | undefined;
      if (bySession) {
        const session = isSessionKeyId(username) ? await roleSessions.verify(username, secret) : undefined;
        if (session) identity = await roleSessionIdentity(session);
      } else if (byKey) {
        const owner = await identityStore.verifyAccessKey(username, secret);
        if (owner) identity = identityOf(owner, 'accesskey', owner.accessKeyId);
      } else {
        const user = await identityStore.verifyPassword(username, secret);
        if (user) identity = identityOf(user, 'password');
      }
      if (identity) identity = { ...identity, revision };
      if (!identity) {
        throttle.fail(keys);
        await audit({
          type: 'authn',
          actor: claimed,
          action,
          decision: 'Deny',
          reason: 'bad-credentials',
          ...reqFields(req),
        });
        throw new AuthError('bad-credentials', 'invalid user name or password');
      }
      throttle.succeed(keys);
      await audit({
        type: 'authn',
        actor: actorOf(identity),
        action,
        decision: 'Allow',
        ...reqFields(req),
        ...(identity.accessKeyId ? { detail: { accessKeyId: identity.accessKeyId } } : {}),
      });
      return identity;
    },

    async authenticateSigV4(request, req, o) {
      if (!enabled) return devIdentity();
      const action = 'authn:SigV4';
      // Filled in by lookupSecret: failures before it (no or malformed Authorization, clock skew,
      // wrong scope) name no key, guess nothing and are not audited or counted.
      let keyId: string | undefined;
      let keys: ThrottleSubject = { address: req.sourceIp };
      let identity: Identity | undefined;
      let markUsed: (() => void) | undefined;
      try {
        await verifySigV4(request, {
          service: o.service,
          ...(o.region !== undefined ? { region: o.region } : {}),
          now,
          lookupSecret: async (accessKeyId, sessionToken) => {
            keyId = clip(accessKeyId);
            keys = { address: req.sourceIp, account: keyId };
            const locked = throttled(keys);
            if (locked) throw locked;
            if (isSessionKeyId(accessKeyId)) {
              const session = await roleSessions.signing(accessKeyId, sessionToken);
              if (!session) return undefined;
              identity = await roleSessionIdentity(session);
              if (!identity) return undefined;
              return { secret: session.secret, principal: identity.principal };
            }
            const key = isAccessKeyId(accessKeyId) ? await identityStore.signingKey(accessKeyId) : undefined;
            if (!key) return undefined;
            if (key.secret === undefined)
              throw new SigV4Error(
                'UnrecognizedClientException',
                `The access key ${accessKeyId} was created before berth kept access key secrets for ` +
                  'request signing (AWS Signature Version 4), so it can only sign in with Basic ' +
                  'credentials. Create a new access key and use that one.',
              );
            identity = identityOf(key.principal, 'accesskey', accessKeyId);
            markUsed = key.used;
            return { secret: key.secret, principal: key.principal };
          },
        });
      } catch (err) {
        if (keyId === undefined) throw err;
        const reason =
          err instanceof AuthError ? err.reason : err instanceof SigV4Error ? sigV4Reason(err) : undefined;
        if (reason === undefined) throw err;
        // A throttled attempt guesses no secret.
        if (reason !== 'throttled') throttle.fail(keys);
        await audit({
          type: 'authn',
          actor: identity ? actorOf(identity) : `accesskey/${keyId}`,
          action,
          decision: 'Deny',
          reason,
          ...reqFields(req),
          detail: { accessKeyId: keyId },
        });
        throw err;
      }
      if (!identity) throw new SigV4Error('UnrecognizedClientException', sigV4Messages.unrecognizedClient);
      throttle.succeed(keys);
      markUsed?.();
      await audit({
        type: 'authn',
        actor: actorOf(identity),
        action,
        decision: 'Allow',
        ...reqFields(req),
        detail: { accessKeyId: keyId },
      });
      return identity;
    },

    async authenticateBearer(token, req) {
      // Clients send the same token with every request for its whole life: its signature is
      // checked once, then it is a map lookup (a profile of manifest GETs with auth on showed
      // ES256 verification costing more than the request itself). Expiry is checked on every
      // use, revocation whenever anything was revoked since the token was last found live.
      const hit = verified.get(token);
      if (hit) {
        if (now() >= hit.expiresAtMs) verified.delete(token);
        else if (hit.checkedAt === epoch) return hit.caller;
        else {
          const checkedAt = epoch;
          const why = enabled ? await staleness(hit.caller) : undefined;
          if (why === undefined) {
            hit.checkedAt = checkedAt;
            return hit.caller;
          }
          verified.delete(token);
          throw await refuse(token, hit.caller, hit.expiresAtMs, why, req);
        }
      }
      const refusedUntil = refused.get(token);
      if (refusedUntil !== undefined) {
        if (now() < refusedUntil) throw revokedError();
        refused.delete(token);
      }
      let claims: Claims;
      try {
        claims = await tokens.verify(token);
      } catch (err) {
        if (err instanceof TokenError)
          throw new AuthError('invalid-token', `invalid token: ${err.reason}`, {
            detail: err.reason,
            cause: err,
          });
        throw err;
      }
      const identity = fromSessionClaim(claims[sessionClaim], claims.exp);
      if (!identity || principalRef(identity.principal) !== claims.sub)
        throw new AuthError('invalid-token', 'invalid token: malformed', { detail: 'malformed' });
      const access = claims.access.map((e) => ({ type: e.type, name: e.name, actions: [...e.actions] }));
      const caller = Object.freeze({ ...identity, access });
      const checkedAt = epoch;
      const why = enabled ? await staleness(caller) : undefined;
      if (why !== undefined) throw await refuse(token, caller, claims.exp * 1000, why, req);
      if (verified.size >= maxVerifiedTokens) verified.delete(verified.keys().next().value as string);
      verified.set(token, { caller, expiresAtMs: claims.exp * 1000, checkedAt });
      return caller;
    },

    async authenticateRefresh(refreshToken, req, o = {}) {
      if (!enabled) return devIdentity();
      // Taken before anything is read: a change landing after it makes the tokens stale.
      const revision = revocations.current();
      const keys = { address: req.sourceIp };
      const action = 'authn:RefreshToken';
      const locked = throttled(keys);
      const deny = async (actor: string, err: AuthError) => {
        throttle.fail(keys);
        await audit({
          type: 'authn',
          actor,
          action,
          decision: 'Deny',
          reason: err.detail ?? err.reason,
          ...reqFields(req),
        });
        return err;
      };
      if (locked) {
        await audit({
          type: 'authn',
          actor: 'unknown',
          action,
          decision: 'Deny',
          reason: 'throttled',
          ...reqFields(req),
        });
        throw locked;
      }
      let claims: Awaited<ReturnType<TokenService['verifyRefresh']>>;
      try {
        claims = await tokens.verifyRefresh(refreshToken);
      } catch (err) {
        if (err instanceof TokenError)
          throw await deny(
            'unknown',
            new AuthError('invalid-token', `invalid refresh token: ${err.reason}`, {
              detail: err.reason,
              cause: err,
            }),
          );
        throw err;
      }
      if (o.clientId !== undefined && o.clientId !== claims.client_id)
        throw await deny(
          claims.sub,
          new AuthError('invalid-token', 'refresh token was issued to another client', {
            detail: 'client-mismatch',
          }),
        );
      const session = isRecord(claims[sessionClaim]) ? claims[sessionClaim] : {};
      const method = session['authMethod'] === 'accesskey' ? 'accesskey' : 'password';
      const keyId = typeof session['accessKeyId'] === 'string' ? session['accessKeyId'] : undefined;
      const ref = parseSubject(claims.sub);
      let principal = ref ? await identityStore.resolvePrincipal(ref) : undefined;
      if (principal && keyId !== undefined) {
        // A session begun with an access key ends when the key is deactivated or deleted.
        const key = await identityStore.getAccessKey(keyId);
        if (key?.status !== 'active' || key.owner.type !== ref?.type || key.owner.name !== ref.name)
          principal = undefined;
      }
      if (!principal)
        throw await deny(
          claims.sub,
          new AuthError('invalid-token', 'invalid refresh token: its principal can no longer log in', {
            detail: 'principal-unavailable',
          }),
        );
      const identity = { ...identityOf(principal, method, keyId), revision };
      throttle.succeed(keys);
      await audit({ type: 'authn', actor: actorOf(identity), action, decision: 'Allow', ...reqFields(req) });
      return identity;
    },

    async roleCredentials(roleArnOrName, sessionName) {
      const m = /^arn:[^:]+:iam::[^:]*:role\/(?:.*\/)?([^/]+)$/.exec(roleArnOrName);
      const name = m ? m[1]! : roleArnOrName;
      const r = await identityStore.getRole(name);
      if (!r)
        throw new AuthError('federation', `role ${JSON.stringify(name)} does not exist`, {
          detail: 'role-not-found',
        });
      const s = await roleSessions.issue(r.name, sessionName, Math.min(3600, r.maxSessionSeconds));
      await audit({
        type: 'authn',
        actor: clip(`role/${r.name}`),
        action: 'authn:AssumeRole',
        decision: 'Allow',
        detail: { session: sessionName, accessKeyId: s.accessKeyId },
      });
      return {
        AccessKeyId: s.accessKeyId,
        SecretAccessKey: s.secretAccessKey,
        Token: s.sessionToken,
        Expiration: new Date(s.expiresAt * 1000).toISOString(),
        RoleArn: roleArnOrName.startsWith('arn:')
          ? roleArnOrName
          : `arn:aws:iam::000000000000:role/${r.name}`,
      };
    },

    async exchangeIdToken(idToken, req, role) {
      if (!enabled) return devIdentity();
      return exchange(idToken, req, role, 'authn:AssumeRoleWithWebIdentity');
    },

    anonymous() {
      return enabled ? { ...anonymousIdentity(), revision: revocations.current() } : devIdentity();
    },

    async grant(identity, scopes, req) {
      if (!enabled) return scopes.map((s) => ({ type: s.type, name: s.name, actions: [...s.actions] }));
      const context = requestContext(identity, req, undefined);
      const out: AccessEntry[] = [];
      for (const scope of scopes) {
        if (scope.type === 'berth') {
          // The admin API: granted to whoever some policy may allow an action of it.
          const policies = await policyStore.policiesFor(identity.principal);
          if (mayAllowAny(identity.principal, adminApiActions, policies))
            out.push({ type: adminScope.type, name: adminScope.name, actions: ['*'] });
          else {
            out.push({ type: adminScope.type, name: adminScope.name, actions: [] });
            await auditDeny(identity, 'admin:*', '*', implicitDeny, req, { scope: adminScopeText });
          }
          continue;
        }
        if (scope.type === 'registry') {
          if (scope.name !== 'catalog') continue;
          const resource = 'repository/*';
          const d = await decide(identity, 'registry:Catalog', resource, context);
          if (d.effect === 'Allow') out.push({ type: 'registry', name: 'catalog', actions: ['*'] });
          else {
            out.push({ type: 'registry', name: 'catalog', actions: [] });
            await auditDeny(identity, 'registry:Catalog', resource, d, req, { scope: 'registry:catalog:*' });
          }
          continue;
        }
        const resource = `repository/${scope.name}`;
        const wanted = new Set<Exclude<ScopeAction, '*'>>();
        for (const a of scope.actions)
          if (a === '*') for (const x of ['pull', 'push', 'delete'] as const) wanted.add(x);
          else wanted.add(a);
        const granted = new Set<ScopeAction>();
        for (const a of ['pull', 'push', 'delete'] as const) {
          if (!wanted.has(a)) continue;
          const action = scopeActions[a];
          const d = await decide(identity, action, resource, context);
          if (d.effect === 'Allow') granted.add(a);
          else
            await auditDeny(identity, action, resource, d, req, { scope: `repository:${scope.name}:${a}` });
        }
        // `*` stands for all three: granted only when each of them is.
        if (scope.actions.includes('*') && granted.size === 3) granted.add('*');
        const actions = (['pull', 'push', 'delete', '*'] as const).filter(
          (a) => granted.has(a) && (scope.actions.includes(a) || scope.actions.includes('*')),
        );
        // Kept even when empty: it records that the scope was asked for and refused, so /v2 can
        // answer 403 with a reason instead of challenging the client for the same token again.
        out.push({ type: 'repository', name: scope.name, actions });
      }
      return out;
    },

    async issueToken(identity, access, o = {}) {
      const nowSeconds = Math.floor(now() / 1000);
      let ttl = tokenTtl;
      if (identity.expiresAt !== undefined) ttl = Math.min(ttl, identity.expiresAt - nowSeconds);
      if (ttl < 60)
        throw new AuthError('invalid-token', 'the session ends in less than a minute; authenticate again', {
          detail: 'expired',
        });
      const subject = principalRef(identity.principal);
      const issued = await tokens.issue({
        subject,
        access,
        ttlSeconds: ttl,
        extra: { [sessionClaim]: toSessionClaim(identity) },
      });
      const p = identity.principal;
      const refreshable =
        o.offline === true &&
        enabled &&
        (p.type === 'user' || p.type === 'serviceaccount') &&
        (identity.authMethod === 'password' || identity.authMethod === 'accesskey') &&
        identity.expiresAt === undefined;
      let refreshToken: string | undefined;
      if (refreshable) {
        const refresh = await tokens.issueRefresh({
          subject,
          clientId: o.clientId ?? defaultClientId,
          extra: {
            [sessionClaim]: {
              authMethod: identity.authMethod,
              ...(identity.accessKeyId !== undefined ? { accessKeyId: identity.accessKeyId } : {}),
            },
          },
        });
        refreshToken = refresh.token;
      }
      await audit({
        type: 'token',
        actor: subject,
        action: 'token:Issue',
        detail: {
          access: access
            .filter((e) => e.actions.length > 0)
            .map((e) => clip(`${e.type}:${e.name}:${e.actions.join(',')}`)),
          expiresIn: issued.expiresIn,
          refreshToken: refreshToken !== undefined,
          ...(identity.sessionSubject !== undefined ? { sessionSubject: identity.sessionSubject } : {}),
        },
      });
      return {
        token: issued.token,
        expiresIn: issued.expiresIn,
        issuedAt: issued.issuedAt,
        ...(refreshToken !== undefined ? { refreshToken } : {}),
      };
    },

    async authorize(identity, action, resource, req, extra) {
      if (!enabled) return allowAll;
      const decision = await decide(identity, action, resource, requestContext(identity, req, extra));
      if (decision.effect === 'Deny')
        await auditDeny(
          identity,
          action,
          resource,
          decision,
          req,
          extra ? { context: { ...extra } } : undefined,
        );
      return decision;
    },

    async simulate(input) {
      const { type, name } = input.principal ?? {};
      const action = canonicalAction(typeof input.action === 'string' ? input.action : '');
      if (!action) throw new AuthStoreError('INVALID', `unknown action ${JSON.stringify(input.action)}`);
      if (typeof input.resource !== 'string' || !isValidResource(input.resource))
        throw new AuthStoreError('INVALID', `malformed resource ${JSON.stringify(input.resource)}`);
      let principal: IdentityPrincipal;
      const missing = () =>
        new AuthStoreError('NOT_FOUND', `${String(type)} ${JSON.stringify(name)} does not exist`);
      switch (type) {
        case 'anonymous':
          principal = anonymousIdentity().principal;
          break;
        case 'user': {
          const u = await identityStore.getUser(name);
          if (!u) throw missing();
          principal = { type, name: u.name, groups: u.groups, tags: u.tags };
          break;
        }
        case 'serviceaccount': {
          const a = await identityStore.getServiceAccount(name);
          if (!a) throw missing();
          principal = { type, name: a.name, groups: a.groups, tags: a.tags };
          break;
        }
        case 'role': {
          const r = await identityStore.getRole(name);
          if (!r) throw missing();
          principal = { type, name: r.name, groups: [], tags: r.tags };
          break;
        }
        default:
          throw new AuthStoreError(
            'INVALID',
            `principal type must be user, serviceaccount, role or anonymous, not ${JSON.stringify(type)}`,
          );
      }
      const defaults: Record<string, string | readonly string[]> = {
        ...timeContext(now()),
        ...(type === 'anonymous' ? { 'berth:AuthMethod': 'anonymous' } : {}),
      };
      for (const [k, v] of Object.entries(principal.tags)) defaults[`berth:PrincipalTag/${k}`] = v;
      const context = overlay(defaults, input.context ?? {});
      const policies = await policiesFor({ principal, authMethod: 'anonymous' }, input.resource);
      const decision = evaluate({ principal, action, resource: input.resource, context }, policies);
      const byId = new Map(policies.map((p) => [p.id, p]));
      const statements = decision.matched.map((m) => ({
        policyId: m.policyId,
        ...(m.sid !== undefined ? { sid: m.sid } : {}),
        index: m.statementIndex,
        effect: m.effect,
        statement: byId.get(m.policyId)?.policy.Statement[m.statementIndex],
      }));
      return { ...decision, statements };
    },

    authorizeAs: createPrincipalDecisions({
      identities: identityStore,
      policies: policyStore,
      enabled,
      now,
      audit,
    }),

    jwks: () => tokens.jwks(),

    revokeSessions: (subject) => tokens.revokeAllForSubject(subject),

    revokeRoleSessions: (match) =>
      revokeRoleSessions((s) => match({ role: s.role, sessionName: s.sessionName })),
  };
}
