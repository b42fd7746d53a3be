// Registry tokens: the only module that touches jose.
//
// Access tokens follow distribution's docs/content/spec/auth/jwt.md and token.md: a JWT with
// iss, sub, aud (the registry's service name), exp, nbf, iat, jti and `access`, the list of
// {type, name, actions} the bearer was granted. Refresh tokens are JWTs of their own kind
// (header typ and a token_use claim), so neither kind passes for the other. verifyIdToken()
// checks OIDC id tokens from CI providers for federation.
//
// Signing keys are private JWKs in storage (/auth/signing-keys/key-<kid>.json; kid is the RFC
// 7638 thumbprint, and base64url may start with '-', which the path grammar forbids as a first
// character, hence the prefix). A key is current until a newer one exists; from then on it only
// verifies, for `overlapSeconds` (access tokens, and the JWKS), or for the refresh TTL plus an
// hour (refresh tokens, which never leave this server and so need no JWKS entry).
import { createHash, randomBytes } from 'node:crypto';
import {
  type CryptoKey,
  calculateJwkThumbprint,
  createLocalJWKSet,
  decodeProtectedHeader,
  errors,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JSONWebKeySet,
  type JWK,
  type JWSAlgorithm,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
  SignJWT,
} from 'jose';
import type { StorageDriver } from '../storage/index.ts';
import { isRecord, listOrEmpty, readJson, writeJson } from './store.ts';

export type SigningAlgorithm = 'ES256' | 'RS256' | 'EdDSA';

export type TokenErrorReason =
  | 'malformed'
  | 'bad-signature'
  | 'unknown-kid'
  | 'expired'
  | 'not-yet-valid'
  | 'wrong-audience'
  | 'wrong-issuer'
  | 'bad-algorithm'
  /** An access token offered as a refresh token, or the other way round. */
  | 'wrong-type'
  | 'revoked';

export class TokenError extends Error {
  readonly reason: TokenErrorReason;
  constructor(reason: TokenErrorReason, message?: string, opts?: { cause?: unknown }) {
    super(message ?? `token rejected: ${reason}`, opts);
    this.name = 'TokenError';
    this.reason = reason;
  }
}

/** One entry of a token's `access` claim (distribution's ResourceActions). */
export interface AccessEntry {
  readonly type: string;
  readonly name: string;
  readonly actions: readonly string[];
}

export interface Claims {
  readonly iss: string;
  readonly sub: string;
  readonly aud: string | string[];
  readonly exp: number;
  readonly nbf: number;
  readonly iat: number;
  readonly jti: string;
  readonly access: AccessEntry[];
  readonly [claim: string]: unknown;
}

export interface RefreshClaims {
  readonly iss: string;
  readonly sub: string;
  readonly aud: string | string[];
  readonly exp: number;
  readonly nbf: number;
  readonly iat: number;
  readonly jti: string;
  readonly client_id: string;
  readonly token_use: 'refresh';
  readonly [claim: string]: unknown;
}

export interface IdTokenClaims {
  readonly iss: string;
  readonly sub: string;
  readonly aud: string | string[];
  readonly exp: number;
  readonly iat: number;
  readonly [claim: string]: unknown;
}

/** A JSON Web Key as it travels in a JWKS document. */
export interface Jwk {
  readonly kty: string;
  readonly kid?: string;
  readonly alg?: string;
  readonly use?: string;
  readonly [member: string]: unknown;
}

export interface JwkSet {
  readonly keys: readonly Jwk[];
}

export interface IssuedToken {
  readonly token: string;
  /** Seconds. */
  readonly expiresIn: number;
  /** RFC 3339. */
  readonly issuedAt: string;
}

export interface TokenService {
  issue(req: {
    subject: string;
    access: readonly AccessEntry[];
    extra?: Record<string, unknown>;
    ttlSeconds?: number;
  }): Promise<IssuedToken>;
  verify(token: string, opts?: { audience?: string }): Promise<Claims>;
  /** Public keys that verify access tokens now: the current one and those in their overlap. */
  jwks(): Promise<{ keys: Jwk[] }>;
  /** Starts signing with a new key; the previous one keeps verifying until its overlap ends. */
  rotate(): Promise<{ kid: string }>;
  issueRefresh(req: {
    subject: string;
    clientId: string;
    extra?: Record<string, unknown>;
  }): Promise<IssuedToken & { jti: string }>;
  verifyRefresh(token: string): Promise<RefreshClaims>;
  revokeRefresh(jti: string): Promise<void>;
  /** Rejects every refresh token of subject issued up to now. */
  revokeAllForSubject(subject: string): Promise<void>;
}

// Clocks drift; a few seconds of it must not fail a fresh token, more is a real error.
const leewaySeconds = 5;
// Far above any real token; a bound keeps decoding cheap for whatever is thrown at us.
const maxTokenLength = 64 * 1024;
const signingAlgorithms: readonly string[] = ['ES256', 'RS256', 'EdDSA'];
const accessTyp = 'JWT';
const refreshTyp = 'refresh+jwt';
// Claims the service sets itself; `extra` may not override them.
const reservedClaims = new Set([
  'iss',
  'sub',
  'aud',
  'exp',
  'nbf',
  'iat',
  'jti',
  'access',
  'client_id',
  'token_use',
]);
const keyDir = '/auth/signing-keys';
const revokedJtiDir = '/auth/refresh-revocations/jti';
const revokedSubjectDir = '/auth/refresh-revocations/subject';
const jtiPattern = /^[0-9a-f]{32}$/;
// How often an unknown kid may send verify() back to storage for keys another instance made.
const reloadIntervalMs = 5000;

// --- errors ---------------------------------------------------------------------------------

/** jose's failure, as the reason a caller can act on. Errors that are not about the token pass. */
function tokenError(err: unknown): unknown {
  if (err instanceof TokenError) return err;
  if (err instanceof errors.JWTExpired) return new TokenError('expired', err.message, { cause: err });
  if (err instanceof errors.JWTClaimValidationFailed) {
    const byClaim: Record<string, TokenErrorReason> = {
      nbf: 'not-yet-valid',
      aud: 'wrong-audience',
      iss: 'wrong-issuer',
      typ: 'wrong-type',
    };
    const reason = err.reason === 'missing' ? 'malformed' : (byClaim[err.claim] ?? 'malformed');
    return new TokenError(reason, err.message, { cause: err });
  }
  if (err instanceof errors.JWSSignatureVerificationFailed || err instanceof errors.JWKSMultipleMatchingKeys)
    return new TokenError('bad-signature', err.message, { cause: err });
  if (err instanceof errors.JOSEAlgNotAllowed || err instanceof errors.JOSENotSupported)
    return new TokenError('bad-algorithm', err.message, { cause: err });
  if (err instanceof errors.JWKSNoMatchingKey)
    return new TokenError('unknown-kid', err.message, { cause: err });
  if (err instanceof errors.JOSEError) return new TokenError('malformed', err.message, { cause: err });
  return err;
}

/** The protected header of a compact JWS, checked before any key is looked up. */
function readHeader(token: string, allowed: readonly string[]): { alg: string; kid?: string } {
  if (typeof token !== 'string' || token.length > maxTokenLength || token.split('.').length !== 3)
    throw new TokenError('malformed', 'not a compact JWS');
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(token);
  } catch (err) {
    throw new TokenError('malformed', 'unreadable token header', { cause: err });
  }
  // Before any key is touched: 'none' and HMAC algorithms never verify here, so a public key
  // can never be misused as an HMAC secret.
  if (typeof header.alg !== 'string' || !allowed.includes(header.alg))
    throw new TokenError('bad-algorithm', `algorithm ${String(header.alg)} is not accepted`);
  if (header.kid !== undefined && typeof header.kid !== 'string')
    throw new TokenError('malformed', 'bad kid');
  return { alg: header.alg, kid: header.kid };
}

// --- signing keys ---------------------------------------------------------------------------

interface SigningKey {
  readonly kid: string;
  readonly alg: SigningAlgorithm;
  /** Milliseconds since the epoch. */
  readonly createdAt: number;
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
  readonly publicJwk: Jwk;
}

const publicMembers = ['kty', 'crv', 'x', 'y', 'n', 'e'];

function publicPart(jwk: JWK): JWK {
  return Object.fromEntries(Object.entries(jwk).filter(([k]) => publicMembers.includes(k))) as JWK;
}

const keyPath = (kid: string) => `${keyDir}/key-${kid}.json`;

async function importKey(stored: unknown, path: string): Promise<SigningKey> {
  const bad = (why: string) => new Error(`signing key ${path}: ${why}`);
  if (!isRecord(stored) || !isRecord(stored['jwk'])) throw bad('not a key document');
  const { kid, alg, createdAt } = stored;
  if (typeof alg !== 'string' || !signingAlgorithms.includes(alg)) throw bad('unsupported algorithm');
  const createdMs = typeof createdAt === 'string' ? Date.parse(createdAt) : Number.NaN;
  if (Number.isNaN(createdMs)) throw bad('bad createdAt');
  const privateJwk = stored['jwk'] as JWK;
  const pub = publicPart(privateJwk);
  // The kid names the key everywhere; a document whose key does not hash to it is not ours.
  if (kid !== (await calculateJwkThumbprint(pub))) throw bad('kid does not match the key');
  const privateKey = (await importJWK(privateJwk, alg)) as CryptoKey;
  const publicKey = (await importJWK(pub, alg)) as CryptoKey;
  return {
    kid,
    alg: alg as SigningAlgorithm,
    createdAt: createdMs,
    privateKey,
    publicKey,
    publicJwk: { ...pub, kid, alg, use: 'sig' } as Jwk,
  };
}

async function newKey(alg: SigningAlgorithm, createdAt: number): Promise<{ key: SigningKey; doc: unknown }> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = await exportJWK(privateKey);
  const pub = publicPart(jwk);
  const kid = await calculateJwkThumbprint(pub);
  return {
    key: { kid, alg, createdAt, privateKey, publicKey, publicJwk: { ...pub, kid, alg, use: 'sig' } as Jwk },
    doc: { kid, alg, createdAt: new Date(createdAt).toISOString(), jwk },
  };
}

// --- the token service ----------------------------------------------------------------------

export interface TokenServiceOptions {
  storage: StorageDriver;
  issuer: string;
  /** The registry's service name: the audience of access tokens. */
  service: string;
  /** Default lifetime of access tokens; at least 60, default 300. */
  ttlSeconds?: number;
  /** The longest lifetime issue() may be asked for; default max(ttlSeconds, 3600). */
  maxTtlSeconds?: number;
  algorithm?: SigningAlgorithm;
  /** Age at which issue() replaces the signing key; default 7 days. */
  rotateAfterSeconds?: number;
  /** How long a replaced key still verifies access tokens; default maxTtlSeconds + 1 hour. */
  overlapSeconds?: number;
  /** Default 30 days. */
  refreshTtlSeconds?: number;
  /** Milliseconds since the epoch. */
  now?: () => number;
}

export function createTokenService(opts: TokenServiceOptions): TokenService {
  const { storage, issuer, service } = opts;
  const now = opts.now ?? Date.now;
  const algorithm = opts.algorithm ?? 'ES256';
  const ttl = opts.ttlSeconds ?? 300;
  const maxTtl = opts.maxTtlSeconds ?? Math.max(ttl, 3600);
  const rotateAfterMs = (opts.rotateAfterSeconds ?? 7 * 86400) * 1000;
  const overlapMs = (opts.overlapSeconds ?? maxTtl + 3600) * 1000;
  const refreshTtl = opts.refreshTtlSeconds ?? 30 * 86400;
  const refreshWindowMs = Math.max(overlapMs, (refreshTtl + 3600) * 1000);
  if (!signingAlgorithms.includes(algorithm))
    throw new RangeError(`tokens: unsupported algorithm ${algorithm}`);
  if (!Number.isSafeInteger(ttl) || ttl < 60) throw new RangeError('tokens: ttlSeconds must be at least 60');
  if (!Number.isSafeInteger(maxTtl) || maxTtl < ttl)
    throw new RangeError('tokens: maxTtlSeconds below ttlSeconds');
  // A token must not outlive the key that verifies it.
  if (overlapMs < (maxTtl + leewaySeconds) * 1000)
    throw new RangeError('tokens: overlapSeconds must exceed the longest token lifetime');
  if (!(rotateAfterMs > 0)) throw new RangeError('tokens: rotateAfterSeconds must be positive');
  if (!Number.isSafeInteger(refreshTtl) || refreshTtl < 60)
    throw new RangeError('tokens: bad refreshTtlSeconds');

  /** Oldest first; the last is the signing key. */
  let ring: SigningKey[] = [];
  let loaded: Promise<void> | undefined;
  let lastLoad = Number.NEGATIVE_INFINITY;
  let queue: Promise<unknown> = Promise.resolve();
  function serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = queue.then(fn);
    queue = run.catch(() => {});
    return run;
  }

  async function load(): Promise<void> {
    lastLoad = now();
    const keys: SigningKey[] = [];
    for (const path of await listOrEmpty(storage, keyDir)) {
      if (!path.endsWith('.json')) continue;
      const doc = await readJson(storage, path);
      // A key another instance pruned between list and read is simply gone.
      if (doc !== undefined) keys.push(await importKey(doc, path));
    }
    ring = keys.sort((a, b) => a.createdAt - b.createdAt || (a.kid < b.kid ? -1 : 1));
  }

  function ensureLoaded(): Promise<void> {
    loaded ??= load().catch((err) => {
      loaded = undefined;
      throw err;
    });
    return loaded;
  }

  /** Until when a key verifies tokens, given how long its tokens may outlive its replacement. */
  function verifiesUntil(key: SigningKey, windowMs: number): number {
    const successor = ring.find(
      (k) => k.createdAt > key.createdAt || (k.createdAt === key.createdAt && k.kid > key.kid),
    );
    return successor ? successor.createdAt + windowMs : Number.POSITIVE_INFINITY;
  }

  const stale = (key: SigningKey) => key.alg !== algorithm || now() - key.createdAt >= rotateAfterMs;

  async function addKey(): Promise<SigningKey> {
    const last = ring.at(-1);
    // Strictly after the current key, so it becomes current even if the clock stepped back.
    const createdAt = Math.max(now(), last ? last.createdAt + 1 : 0);
    const { key, doc } = await newKey(algorithm, createdAt);
    await writeJson(storage, keyPath(key.kid), doc);
    ring = [...ring, key];
    await prune();
    return key;
  }

  /** Deletes keys no token they signed could still be accepted with. */
  async function prune(): Promise<void> {
    const t = now();
    const gone = ring.filter((k) => verifiesUntil(k, refreshWindowMs) < t);
    for (const k of gone) await storage.delete(keyPath(k.kid)).catch(() => {});
    ring = ring.filter((k) => !gone.includes(k));
  }

  async function signingKey(): Promise<SigningKey> {
    await ensureLoaded();
    const current = ring.at(-1);
    if (current && !stale(current)) return current;
    return serialized(async () => {
      // Another instance, or an earlier call waiting in this queue, may have rotated already.
      await load();
      const again = ring.at(-1);
      return again && !stale(again) ? again : addKey();
    });
  }

  async function findKey(kid: string | undefined, windowMs: number): Promise<SigningKey> {
    if (kid === undefined) throw new TokenError('unknown-kid', 'token names no key');
    await ensureLoaded();
    let key = ring.find((k) => k.kid === kid);
    if (!key && now() - lastLoad >= reloadIntervalMs) {
      // Queued, so a reload cannot overwrite the ring while a rotation is adding to it.
      await serialized(load);
      key = ring.find((k) => k.kid === kid);
    }
    if (!key || verifiesUntil(key, windowMs) <= now())
      throw new TokenError('unknown-kid', `no verifying key ${kid.slice(0, 100)}`);
    return key;
  }

  async function sign(
    claims: Record<string, unknown>,
    typ: string,
    audience: string,
    subject: string,
    ttlSeconds: number,
  ): Promise<IssuedToken & { jti: string }> {
    if (typeof subject !== 'string' || subject === '') throw new TypeError('tokens: subject is required');
    const key = await signingKey();
    const iat = Math.floor(now() / 1000);
    const jti = randomBytes(16).toString('hex');
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ })
      .setIssuer(issuer)
      .setSubject(subject)
      .setAudience(audience)
      .setIssuedAt(iat)
      .setNotBefore(iat)
      .setExpirationTime(iat + ttlSeconds)
      .setJti(jti)
      .sign(key.privateKey);
    return { token, expiresIn: ttlSeconds, issuedAt: new Date(iat * 1000).toISOString(), jti };
  }

  async function verifySigned(
    token: string,
    typ: string,
    audience: string,
    windowMs: number,
  ): Promise<JWTPayload> {
    const header = readHeader(token, signingAlgorithms);
    const key = await findKey(header.kid, windowMs);
    if (header.alg !== key.alg) throw new TokenError('bad-algorithm', `key ${key.kid} signs ${key.alg} only`);
    try {
      const { payload } = await jwtVerify(token, key.publicKey, {
        algorithms: [key.alg],
        issuer,
        audience,
        typ,
        clockTolerance: leewaySeconds,
        currentDate: new Date(now()),
        requiredClaims: ['sub', 'exp', 'nbf', 'iat', 'jti'],
      });
      if (typeof payload.sub !== 'string' || typeof payload.jti !== 'string')
        throw new TokenError('malformed', 'sub and jti must be strings');
      return payload;
    } catch (err) {
      throw tokenError(err);
    }
  }

  function checkExtra(extra: Record<string, unknown> | undefined): Record<string, unknown> {
    for (const k of Object.keys(extra ?? {}))
      if (reservedClaims.has(k)) throw new TypeError(`tokens: extra may not set the ${k} claim`);
    return { ...extra };
  }

  return {
    async issue({ subject, access, extra, ttlSeconds = ttl }) {
      if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds < 60 || ttlSeconds > maxTtl)
        throw new RangeError(`tokens: ttlSeconds must be between 60 and ${maxTtl}`);
      // Copied field by field: whatever else a caller's objects carry stays out of the token.
      const grants = access.map(({ type, name, actions }) => ({ type, name, actions: [...actions] }));
      const { jti: _, ...issued } = await sign(
        { ...checkExtra(extra), access: grants },
        accessTyp,
        service,
        subject,
        ttlSeconds,
      );
      return issued;
    },

    async verify(token, { audience = service } = {}) {
      const payload = await verifySigned(token, accessTyp, audience, overlapMs);
      if (payload['token_use'] !== undefined) throw new TokenError('wrong-type', 'not an access token');
      if (!isAccessList(payload['access'])) throw new TokenError('malformed', 'bad access claim');
      return payload as Claims;
    },

    async jwks() {
      // Verifiers may fetch the JWKS before any token exists: there is always a key to publish.
      await ensureLoaded();
      if (ring.length === 0) await signingKey();
      const t = now();
      const keys = ring.filter((k) => verifiesUntil(k, overlapMs) > t).map((k) => k.publicJwk);
      return { keys: keys.reverse() };
    },

    async rotate() {
      await ensureLoaded();
      const key = await serialized(async () => {
        await load();
        return addKey();
      });
      return { kid: key.kid };
    },

    async issueRefresh({ subject, clientId, extra }) {
      if (typeof clientId !== 'string' || clientId === '')
        throw new TypeError('tokens: clientId is required');
      // The token endpoint is what consumes a refresh token, so it is also its audience.
      return sign(
        { ...checkExtra(extra), client_id: clientId, token_use: 'refresh' },
        refreshTyp,
        issuer,
        subject,
        refreshTtl,
      );
    },

    async verifyRefresh(token) {
      const payload = await verifySigned(token, refreshTyp, issuer, refreshWindowMs);
      if (payload['token_use'] !== 'refresh') throw new TokenError('wrong-type', 'not a refresh token');
      if (typeof payload['client_id'] !== 'string') throw new TokenError('malformed', 'bad client_id claim');
      const claims = payload as RefreshClaims;
      if ((await readJson(storage, `${revokedJtiDir}/${jtiFile(claims.jti)}`)) !== undefined)
        throw new TokenError('revoked', 'refresh token revoked');
      const cutoff = await subjectCutoff(claims.sub);
      // iat has whole seconds: a token from the revocation's own second counts as before it.
      if (cutoff !== undefined && claims.iat <= Math.floor(cutoff / 1000))
        throw new TokenError('revoked', 'refresh tokens of this subject were revoked');
      return claims;
    },

    async revokeRefresh(jti) {
      if (typeof jti !== 'string' || !jtiPattern.test(jti))
        throw new TypeError('tokens: not a refresh token id');
      await writeJson(storage, `${revokedJtiDir}/${jtiFile(jti)}`, {
        jti,
        revokedAt: new Date(now()).toISOString(),
      });
    },

    async revokeAllForSubject(subject) {
      const previous = (await subjectCutoff(subject)) ?? 0;
      const revokedAt = Math.max(previous, now());
      await writeJson(storage, subjectPath(subject), {
        subject,
        revokedAt: new Date(revokedAt).toISOString(),
      });
    },
  };

  async function subjectCutoff(subject: string): Promise<number | undefined> {
    const doc = await readJson(storage, subjectPath(subject));
    if (!isRecord(doc) || typeof doc['revokedAt'] !== 'string') return undefined;
    const t = Date.parse(doc['revokedAt']);
    return Number.isNaN(t) ? undefined : t;
  }
}

// A jti from a verified token is still attacker-shaped text once it reaches a path; only our
// own 32-hex ids map to a file, anything else to one that is never written.
const jtiFile = (jti: string) => (jtiPattern.test(jti) ? `${jti}.json` : 'invalid.json');

// Subjects are free text ("ci:github:org/repo"); their hash is always a valid path component.
const subjectPath = (subject: string) =>
  `${revokedSubjectDir}/${createHash('sha256').update(subject).digest('hex')}.json`;

function isAccessList(v: unknown): v is AccessEntry[] {
  return (
    Array.isArray(v) &&
    v.every(
      (e) =>
        isRecord(e) &&
        typeof e['type'] === 'string' &&
        typeof e['name'] === 'string' &&
        Array.isArray(e['actions']) &&
        e['actions'].every((a) => typeof a === 'string'),
    )
  );
}

// --- OIDC id tokens -------------------------------------------------------------------------

const idTokenAlgorithms: JWSAlgorithm[] = ['RS256', 'ES256', 'EdDSA'];

export interface JwksCache {
  /**
   * The issuer's signing keys, found through its discovery document. When `kid` is given and
   * not among the cached keys, refetches first (at most once per 30 s per issuer).
   */
  keys(issuer: string, kid?: string): Promise<JwkSet>;
}

/**
 * Checks an OIDC id token against a fixed JWKS or an issuer's published keys. Keys are looked
 * up under the configured issuer, never the token's own iss claim, so a token cannot point
 * verification at keys of its choosing.
 */
export async function verifyIdToken(
  token: string,
  opts: { issuer: string; audience: string | string[]; jwks: JwkSet | JwksCache; now?: () => number },
): Promise<IdTokenClaims> {
  const header = readHeader(token, idTokenAlgorithms);
  const source = opts.jwks;
  const getKey = localSet(isCache(source) ? await source.keys(opts.issuer, header.kid) : source);
  try {
    const { payload } = await jwtVerify(token, getKey, {
      algorithms: idTokenAlgorithms,
      issuer: opts.issuer,
      audience: opts.audience,
      clockTolerance: leewaySeconds,
      currentDate: new Date((opts.now ?? Date.now)()),
      requiredClaims: ['sub', 'exp', 'iat'],
    });
    if (typeof payload.sub !== 'string') throw new TokenError('malformed', 'sub must be a string');
    return payload as IdTokenClaims;
  } catch (err) {
    throw tokenError(err);
  }
}

function isCache(source: JwkSet | JwksCache): source is JwksCache {
  return typeof source.keys === 'function';
}

// Imported keys are cached per JWKS object, so a cached set is imported once, not per token.
const localSets = new WeakMap<JwkSet, JWTVerifyGetKey>();
function localSet(set: JwkSet): JWTVerifyGetKey {
  let getKey = localSets.get(set);
  if (!getKey) {
    try {
      getKey = createLocalJWKSet(set as unknown as JSONWebKeySet);
    } catch (err) {
      throw new Error('JWKS is malformed', { cause: err });
    }
    localSets.set(set, getKey);
  }
  return getKey;
}

const refetchIntervalMs = 30_000;

interface CachedIssuer {
  jwksUri?: string;
  set?: JwkSet;
  fetchedAt: number;
  lastAttempt: number;
  inflight?: Promise<void>;
}

/**
 * Reads a JSON document from the network: the discovery document or the JWKS. The caller owns
 * the network (and the rules on where and how much it reads, see outbound.ts); this module only
 * knows what the documents must say.
 */
export type FetchJson = (url: string, document: 'discovery' | 'jwks') => Promise<unknown>;

export function createJwksCache(opts: {
  fetchJson: FetchJson;
  /** How long fetched keys are used before discovery runs again; default 600. */
  ttlSeconds?: number;
  now?: () => number;
}): JwksCache {
  const { fetchJson } = opts;
  const ttlMs = (opts.ttlSeconds ?? 600) * 1000;
  const now = opts.now ?? Date.now;
  const issuers = new Map<string, CachedIssuer>();

  async function discover(issuer: string): Promise<string> {
    const doc = await fetchJson(
      `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`,
      'discovery',
    );
    // OIDC Discovery 1.0 section 4.3: the document must name the issuer it was fetched for.
    if (!isRecord(doc) || doc['issuer'] !== issuer)
      throw new Error(`discovery document of ${issuer} names another issuer`);
    const uri = doc['jwks_uri'];
    if (typeof uri !== 'string') throw new Error(`discovery document of ${issuer} has no jwks_uri`);
    return uri;
  }

  async function fetchKeys(issuer: string, entry: CachedIssuer, rediscover: boolean): Promise<void> {
    entry.lastAttempt = now();
    if (rediscover || !entry.jwksUri) entry.jwksUri = await discover(issuer);
    const set = await fetchJson(entry.jwksUri, 'jwks');
    if (!isRecord(set) || !Array.isArray(set['keys']) || !set['keys'].every(isRecord))
      throw new Error(`JWKS of ${issuer} is malformed`);
    entry.set = { keys: set['keys'] as Jwk[] };
    entry.fetchedAt = now();
  }

  /** One fetch per issuer at a time; concurrent callers share it. */
  function refresh(issuer: string, entry: CachedIssuer, rediscover: boolean): Promise<void> {
    entry.inflight ??= fetchKeys(issuer, entry, rediscover).finally(() => {
      entry.inflight = undefined;
    });
    return entry.inflight;
  }

  return {
    async keys(issuer, kid) {
      let entry = issuers.get(issuer);
      if (!entry) {
        entry = { fetchedAt: Number.NEGATIVE_INFINITY, lastAttempt: Number.NEGATIVE_INFINITY };
        issuers.set(issuer, entry);
      }
      const mayRetry = () => now() - entry.lastAttempt >= refetchIntervalMs;
      if (!entry.set) {
        await refresh(issuer, entry, true);
      } else if (now() - entry.fetchedAt >= ttlMs && mayRetry()) {
        // An issuer that is down does not stop federation while its last keys are known.
        await refresh(issuer, entry, true).catch(() => {});
      }
      if (kid !== undefined && !entry.set?.keys.some((k) => k.kid === kid) && mayRetry())
        await refresh(issuer, entry, false).catch(() => {});
      if (!entry.set) throw new Error(`no keys for issuer ${issuer}`);
      return entry.set;
    },
  };
}
