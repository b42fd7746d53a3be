// CI federation without stored secrets: a CI job presents its OIDC id token (GitHub Actions,
// GitLab, ...) and receives a role, as with AWS's AssumeRoleWithWebIdentity. berth keeps a list
// of trusted issuers ("providers", /auth/oidc/<id>.json) and, per role, a trust policy
// (trust.ts) saying which tokens of which issuer may assume it.
//
// The token is read twice. First unverified, only to learn which provider it claims to come
// from; then verified against that provider's configured issuer, audiences and keys, so nothing
// the token says about itself chooses how it is checked. Only the verified claims meet a policy.
//
// An issuer is a URL an admin-API caller chose, and its discovery document names another (the
// jwks_uri): berth reads both through outbound.ts, so only over https (plain http for hosts the
// operator lists in outbound.allowHosts), never on this machine or a cloud metadata address unless
// listed, at most 256 KiB of discovery document and 1 MiB of JWKS (real ones are a few KiB; a
// JWKS at berth's limit of 100 keys with certificate chains stays well under it), each request
// done within 5 s, redirects not followed. A provider is refused when it is added if its issuer
// breaks the rules on its face; names that resolve to a refused address fail at fetch time.
import { createPublicKey, type JsonWebKey } from 'node:crypto';
import { type Logger, silentLogger } from '../log.ts';
import { createOutbound, type Outbound, OutboundError } from '../outbound.ts';
import type { StorageDriver } from '../storage/index.ts';
import { policyError as err, type PolicyError } from './conditions.ts';
import { isRecord, listOrEmpty, readJson, writeJson } from './store.ts';
import {
  createJwksCache,
  type IdTokenClaims,
  type Jwk,
  type JwkSet,
  TokenError,
  type TokenErrorReason,
  verifyIdToken,
} from './tokens.ts';
import { evaluateTrust, providerIdPattern, type TrustPolicy, validateTrustPolicy } from './trust.ts';

export type FederationErrorReason =
  | 'malformed'
  | 'untrusted-issuer'
  | 'invalid-token'
  | 'no-role'
  | 'ambiguous-role'
  | 'role-not-found'
  | 'issuer-unreachable';

/** Why an exchange failed. Messages are safe to show the caller: no role's conditions appear. */
export class FederationError extends Error {
  readonly reason: FederationErrorReason;
  /** With 'ambiguous-role': the roles that trust the token, one of which the caller must pick. */
  readonly roles?: readonly string[];
  constructor(
    reason: FederationErrorReason,
    message: string,
    opts: { cause?: unknown; roles?: readonly string[] } = {},
  ) {
    super(message, { cause: opts.cause });
    this.name = 'FederationError';
    this.reason = reason;
    if (opts.roles) this.roles = opts.roles;
  }
}

/** A provider definition that cannot be saved: 'invalid' lists every problem, by path. */
export class ProviderError extends Error {
  readonly reason: 'invalid' | 'conflict';
  readonly errors: readonly PolicyError[];
  constructor(reason: 'invalid' | 'conflict', errors: readonly PolicyError[]) {
    super(errors.map((e) => e.message).join('; '));
    this.name = 'ProviderError';
    this.reason = reason;
    this.errors = errors;
  }
}

export interface OidcProvider {
  readonly id: string;
  /** Compared exactly with the token's `iss`, as OIDC requires. */
  readonly issuer: string;
  /** The token's `aud` must contain one of these. */
  readonly audiences: readonly string[];
  /** Fixed keys for sites that cannot reach the issuer; otherwise keys come from discovery. */
  readonly jwks?: JwkSet;
  /** The most claims a token may carry; a larger one is refused before any signature check. */
  readonly claimsLimit: number;
  /** RFC 3339. */
  readonly createdAt: string;
}

export interface AddProviderInput {
  /** Default: derived from the issuer's host and path. */
  id?: string;
  issuer: string;
  audiences: string[];
  jwks?: JwkSet;
  claimsLimit?: number;
}

export interface FederationRole {
  readonly name: string;
  /** The role's trust policy document; a role without one cannot be assumed by federation. */
  readonly trustPolicy: unknown;
  readonly maxSessionSeconds: number;
}

export interface ExchangeOptions {
  /** Assume this role; without it, the one role that trusts the token. */
  role?: string;
  resolveRole: (name: string) => Promise<FederationRole | undefined>;
  listRoles: () => Promise<readonly FederationRole[]>;
}

export interface ExchangeResult {
  readonly role: string;
  /** `oidc:<issuer>#<sub>`: who acted, for audit and for the session's tokens. */
  readonly subject: string;
  /** The id of the provider that verified the token. */
  readonly provider: string;
  readonly claims: IdTokenClaims;
  readonly sessionSeconds: number;
}

export interface Federation {
  addProvider(input: AddProviderInput): Promise<OidcProvider>;
  getProvider(id: string): Promise<OidcProvider | undefined>;
  listProviders(): Promise<OidcProvider[]>;
  /** False when there was no such provider. */
  deleteProvider(id: string): Promise<boolean>;
  exchange(idToken: string, opts: ExchangeOptions): Promise<ExchangeResult>;
}

export interface FederationOptions {
  storage: StorageDriver;
  /** For discovery and JWKS requests; default: outbound rules with nothing in outbound.allowHosts. */
  outbound?: Outbound;
  /** Milliseconds since the epoch. */
  now?: () => number;
  /** How long discovered keys are used before discovery runs again; default 600. */
  jwksTtlSeconds?: number;
  /** Receives warnings about roles whose stored trust policy no longer validates. */
  log?: Logger;
}

const providerDir = '/auth/oidc';
const providerPath = (id: string) => `${providerDir}/${id}.json`;
const defaultClaimsLimit = 100;
const maxClaimsLimit = 1000;
const maxAudiences = 32;
const maxAudienceLength = 256;
const maxIssuerLength = 2048;
const maxJwksKeys = 100;
// The same bound tokens.ts puts on a token before decoding it.
const maxTokenLength = 64 * 1024;
/** Response size limits and the deadline of each discovery and JWKS request (see the header). */
export const issuerFetchLimits = {
  discovery: 256 * 1024,
  jwks: 1024 * 1024,
  timeoutMs: 5000,
} as const;
const privateJwkMembers = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];
const publicJwkMembers = ['kty', 'kid', 'alg', 'use', 'key_ops', 'crv', 'n', 'e', 'x', 'y'];
const requiredJwkMembers: Readonly<Record<string, readonly string[]>> = {
  RSA: ['n', 'e'],
  EC: ['crv', 'x', 'y'],
  OKP: ['crv', 'x'],
};

// ---- provider validation ------------------------------------------------------------------------

/** Issuer text in a message: the caller's own (possibly hostile) text, so quoted and bounded. */
function show(text: string): string {
  return JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}...` : text);
}

/**
 * `outbound` is given for a provider being added whose keys berth will fetch (no inline JWKS):
 * its issuer must be one berth may send requests to. A stored provider is read back without it
 * (the rules apply again to every fetch), and with inline keys the issuer is only a name to compare.
 */
function checkIssuer(raw: unknown, errors: PolicyError[], outbound?: Outbound): URL | undefined {
  if (typeof raw !== 'string' || raw === '') {
    errors.push(err('issuer', 'must be a non-empty string'));
    return undefined;
  }
  if (raw.length > maxIssuerLength || /\s/.test(raw)) {
    errors.push(err('issuer', `must be a URL of at most ${maxIssuerLength} characters without spaces`));
    return undefined;
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    errors.push(err('issuer', `${show(raw)} is not a URL`));
    return undefined;
  }
  const before = errors.length;
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    errors.push(err('issuer', 'must be an https URL'));
  else if (outbound) {
    try {
      outbound.check(url);
    } catch (e) {
      if (!(e instanceof OutboundError)) throw e;
      errors.push(err('issuer', `berth would fetch its keys from it, and ${e.message}`));
    }
  }
  // OIDC Discovery 1.0 section 2: an issuer is scheme, host, port and path, nothing more.
  if (raw.includes('?') || raw.includes('#')) errors.push(err('issuer', 'may not have a query or fragment'));
  if (url.username !== '' || url.password !== '') errors.push(err('issuer', 'may not carry credentials'));
  return errors.length === before ? url : undefined;
}

function checkAudiences(raw: unknown, errors: PolicyError[]): string[] | undefined {
  if (!Array.isArray(raw) || raw.length === 0) {
    errors.push(err('audiences', 'must be a non-empty array of strings (the aud the CI job requests)'));
    return undefined;
  }
  if (raw.length > maxAudiences) {
    errors.push(err('audiences', `has ${raw.length} entries, at most ${maxAudiences} are allowed`));
    return undefined;
  }
  const before = errors.length;
  const seen = new Set<string>();
  for (const [i, a] of raw.entries()) {
    if (typeof a !== 'string' || a === '' || a.length > maxAudienceLength)
      errors.push(
        err(`audiences[${i}]`, `must be a non-empty string of at most ${maxAudienceLength} characters`),
      );
    else if (seen.has(a)) errors.push(err(`audiences[${i}]`, `duplicate audience ${show(a)}`));
    else seen.add(a);
  }
  return errors.length === before ? [...seen] : undefined;
}

function checkJwks(raw: unknown, errors: PolicyError[]): JwkSet | undefined {
  if (!isRecord(raw) || !Array.isArray(raw['keys']) || raw['keys'].length === 0) {
    errors.push(err('jwks', 'must be a JWKS: an object with a non-empty "keys" array'));
    return undefined;
  }
  const list: unknown[] = raw['keys'];
  if (list.length > maxJwksKeys) {
    errors.push(err('jwks.keys', `has ${list.length} keys, at most ${maxJwksKeys} are allowed`));
    return undefined;
  }
  const before = errors.length;
  const keys: Jwk[] = [];
  for (const [i, key] of list.entries()) {
    const path = `jwks.keys[${i}]`;
    const keyBefore = errors.length;
    if (!isRecord(key)) {
      errors.push(err(path, 'must be a JWK object'));
      continue;
    }
    const kty = key['kty'];
    const required =
      typeof kty === 'string' && Object.hasOwn(requiredJwkMembers, kty) ? requiredJwkMembers[kty] : undefined;
    if (!required) {
      errors.push(err(`${path}.kty`, 'must be "RSA", "EC" or "OKP" (a public signing key)'));
      continue;
    }
    // Pasting the issuer's private key here would store a secret berth has no use for.
    const secret = privateJwkMembers.filter((m) => Object.hasOwn(key, m));
    if (secret.length > 0) {
      errors.push(err(path, `is a private key (has ${secret.join(', ')}); give the public key only`));
      continue;
    }
    for (const m of required)
      if (typeof key[m] !== 'string' || key[m] === '')
        errors.push(err(`${path}.${m}`, 'must be a non-empty string'));
    for (const m of ['kid', 'alg', 'use'])
      if (Object.hasOwn(key, m) && typeof key[m] !== 'string')
        errors.push(err(`${path}.${m}`, 'must be a string'));
    if (Object.hasOwn(key, 'use') && key['use'] !== 'sig') errors.push(err(`${path}.use`, 'must be "sig"'));
    const jwk = Object.fromEntries(
      publicJwkMembers.filter((m) => Object.hasOwn(key, m)).map((m) => [m, key[m]]),
    ) as Jwk;
    if (errors.length > keyBefore) continue;
    // A key that does not import would only show up as a failed exchange, long after the typo.
    try {
      createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' });
    } catch (e) {
      errors.push(err(path, `is not a usable public key (${e instanceof Error ? e.message : String(e)})`));
      continue;
    }
    keys.push(jwk);
  }
  return errors.length === before ? { keys } : undefined;
}

/** A default id: host, port and path with everything a storage path component forbids as '-'. */
export function providerIdFor(issuer: string): string {
  const url = new URL(issuer);
  const raw = `${url.hostname}${url.port ? `-${url.port}` : ''}${url.pathname}`;
  const trim = (s: string) => s.replace(/^[-.]+|[-.]+$/g, '');
  const id = trim(trim(raw.replace(/[^A-Za-z0-9._~-]+/g, '-')).slice(0, 128));
  return providerIdPattern.test(id) ? id : 'provider';
}

const inputKeys = ['id', 'issuer', 'audiences', 'jwks', 'claimsLimit'];

function checkProvider(
  raw: unknown,
  known = inputKeys,
  outbound?: Outbound,
): Omit<OidcProvider, 'createdAt'> {
  if (!isRecord(raw)) throw new ProviderError('invalid', [err('', 'a provider must be an object')]);
  const errors: PolicyError[] = [];
  for (const k of Object.keys(raw)) if (!known.includes(k)) errors.push(err('', `unknown key ${show(k)}`));
  const url = checkIssuer(raw['issuer'], errors, raw['jwks'] === undefined ? outbound : undefined);
  let id = raw['id'];
  if (id === undefined) id = url ? providerIdFor(url.href) : undefined;
  else if (typeof id !== 'string' || !providerIdPattern.test(id))
    errors.push(err('id', 'must be 1 to 128 letters, digits or ._~- and not start with "." or "-"'));
  const audiences = checkAudiences(raw['audiences'], errors);
  const jwks = raw['jwks'] === undefined ? undefined : checkJwks(raw['jwks'], errors);
  const limit = raw['claimsLimit'] ?? defaultClaimsLimit;
  if (!Number.isSafeInteger(limit) || (limit as number) < 1 || (limit as number) > maxClaimsLimit)
    errors.push(err('claimsLimit', `must be an integer from 1 to ${maxClaimsLimit}`));
  if (errors.length > 0 || !audiences || typeof id !== 'string') throw new ProviderError('invalid', errors);
  return {
    id,
    issuer: raw['issuer'] as string,
    audiences,
    ...(jwks ? { jwks } : {}),
    claimsLimit: limit as number,
  };
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

function parseStored(doc: unknown, path: string): OidcProvider {
  try {
    const p = checkProvider(doc, [...inputKeys, 'createdAt']);
    const createdAt = isRecord(doc) ? doc['createdAt'] : undefined;
    if (typeof createdAt !== 'string' || Number.isNaN(Date.parse(createdAt)))
      throw new Error('bad createdAt');
    return deepFreeze({ ...p, createdAt });
  } catch (e) {
    throw new Error(`OIDC provider ${path}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}

// ---- tokens -------------------------------------------------------------------------------------

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** What the token says about itself, read WITHOUT checking it: only to find its provider. */
function peek(token: unknown): { iss: string; claimCount: number } {
  const bad = (why: string) => new FederationError('malformed', `not an id token: ${why}`);
  if (typeof token !== 'string' || token === '') throw bad('empty');
  if (token.length > maxTokenLength) throw bad('too long');
  const parts = token.split('.');
  if (parts.length !== 3 || !parts.every((p) => /^[A-Za-z0-9_-]+$/.test(p)))
    throw bad('not a signed JWT (three base64url parts)');
  let payload: unknown;
  try {
    payload = JSON.parse(utf8.decode(Buffer.from(parts[1] ?? '', 'base64url')));
  } catch {
    throw bad('unreadable payload');
  }
  if (!isRecord(payload)) throw bad('payload is not a JSON object');
  const iss = payload['iss'];
  if (typeof iss !== 'string' || iss === '') throw bad('no iss claim');
  return { iss, claimCount: Object.keys(payload).length };
}

const tokenProblems: Readonly<Partial<Record<TokenErrorReason, string>>> = {
  expired: 'the id token has expired',
  'not-yet-valid': 'the id token is not valid yet',
  'wrong-audience': "the id token's audience is not one this provider accepts",
  'wrong-issuer': "the id token's issuer does not match the provider",
  'bad-signature': "the id token's signature does not verify",
  'unknown-kid': 'the id token is signed with a key the issuer does not publish',
  'bad-algorithm': 'the id token is signed with an algorithm berth does not accept',
  malformed: 'the id token is malformed',
};

// ---- the service --------------------------------------------------------------------------------

export function createFederation(opts: FederationOptions): Federation {
  const { storage } = opts;
  const now = opts.now ?? Date.now;
  const log = opts.log ?? silentLogger;
  const outbound = opts.outbound ?? createOutbound({ allowHosts: [] });

  /**
   * One bounded GET. The operator learns why an issuer's keys could not be read (the caller
   * presenting a token is only told that they could not: the reason is about berth's network).
   */
  async function fetchJson(url: string, document: 'discovery' | 'jwks'): Promise<unknown> {
    const name = document === 'jwks' ? 'JWKS' : 'discovery document';
    try {
      const res = await outbound.request(url, {
        timeoutMs: issuerFetchLimits.timeoutMs,
        maxBodyBytes: issuerFetchLimits[document],
        headers: { accept: 'application/json' },
      });
      if (res.status !== 200) {
        const to = res.headers.location;
        throw new Error(
          `GET ${url}: HTTP ${res.status}${to ? ` redirecting to ${show(to)}, which berth does not follow: configure the issuer it leads to` : ''}`,
        );
      }
      try {
        return JSON.parse(res.body.toString('utf8'));
      } catch {
        throw new Error(`GET ${url}: the ${name} is not JSON`);
      }
    } catch (e) {
      log.warn(
        { url, document, err: e instanceof Error ? e.message : String(e) },
        `OIDC: could not read an issuer's ${name}`,
      );
      throw e;
    }
  }

  const cache = createJwksCache({
    fetchJson,
    ...(opts.jwksTtlSeconds !== undefined ? { ttlSeconds: opts.jwksTtlSeconds } : {}),
    now,
  });

  let queue: Promise<unknown> = Promise.resolve();
  function serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = queue.then(fn);
    queue = run.catch(() => {});
    return run;
  }

  async function getProvider(id: string): Promise<OidcProvider | undefined> {
    // An id that could not have been saved names no file: it never reaches a path.
    if (typeof id !== 'string' || !providerIdPattern.test(id)) return undefined;
    const doc = await readJson(storage, providerPath(id));
    return doc === undefined ? undefined : parseStored(doc, providerPath(id));
  }

  async function listProviders(): Promise<OidcProvider[]> {
    const out: OidcProvider[] = [];
    for (const path of await listOrEmpty(storage, providerDir)) {
      if (!path.endsWith('.json')) continue;
      const doc = await readJson(storage, path);
      // Deleted by another instance between list and read.
      if (doc !== undefined) out.push(parseStored(doc, path));
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  // Validated trust policies by document text: roles arrive as fresh objects on every exchange,
  // and the compiled form is cached per validated policy object.
  const trustPolicies = new Map<string, TrustPolicy | undefined>();
  function trustPolicyOf(role: FederationRole): TrustPolicy | undefined {
    const doc = role.trustPolicy;
    if (doc === undefined || doc === null) return undefined;
    const text = typeof doc === 'string' ? doc : JSON.stringify(doc);
    if (trustPolicies.has(text)) return trustPolicies.get(text);
    const result = validateTrustPolicy(doc);
    if (!result.ok)
      log.warn(
        { role: role.name, errors: result.errors.map((e) => e.message) },
        'role trust policy is invalid; ignored',
      );
    const policy = result.ok ? result.policy : undefined;
    if (trustPolicies.size >= 1000) trustPolicies.clear();
    trustPolicies.set(text, policy);
    return policy;
  }

  return {
    async addProvider(input) {
      const provider = checkProvider(input, inputKeys, outbound);
      return serialized(async () => {
        if (await getProvider(provider.id))
          throw new ProviderError('conflict', [
            err('id', `provider ${show(provider.id)} already exists; delete it first to replace it`),
          ]);
        const same = (await listProviders()).find((p) => p.issuer === provider.issuer);
        if (same)
          throw new ProviderError('conflict', [
            err('issuer', `${show(provider.issuer)} is already trusted as provider ${show(same.id)}`),
          ]);
        const saved = deepFreeze({ ...provider, createdAt: new Date(now()).toISOString() });
        await writeJson(storage, providerPath(saved.id), saved);
        return saved;
      });
    },

    getProvider,
    listProviders,

    deleteProvider(id) {
      return serialized(async () => {
        if (!(await getProvider(id))) return false;
        await storage.delete(providerPath(id));
        return true;
      });
    },

    async exchange(idToken, { role: wanted, resolveRole, listRoles }) {
      const { iss, claimCount } = peek(idToken);
      const provider = (await listProviders()).find((p) => p.issuer === iss);
      if (!provider)
        throw new FederationError('untrusted-issuer', `issuer ${show(iss)} is not a trusted OIDC provider`);
      if (claimCount > provider.claimsLimit)
        throw new FederationError(
          'invalid-token',
          `the id token has ${claimCount} claims, more than the ${provider.claimsLimit} this provider allows`,
        );

      let claims: IdTokenClaims;
      try {
        claims = await verifyIdToken(idToken, {
          issuer: provider.issuer,
          audience: [...provider.audiences],
          jwks: provider.jwks ?? cache,
          now,
        });
      } catch (e) {
        if (e instanceof TokenError)
          throw new FederationError('invalid-token', tokenProblems[e.reason] ?? 'the id token is invalid', {
            cause: e,
          });
        // A fixed JWKS was checked when it was saved; a failure there is ours, not the issuer's.
        if (provider.jwks) throw e;
        throw new FederationError(
          'issuer-unreachable',
          `could not get the signing keys of issuer ${show(provider.issuer)}`,
          { cause: e },
        );
      }

      const request = { issuer: provider.issuer, providerId: provider.id, claims };
      const trusts = (role: FederationRole) => {
        const policy = trustPolicyOf(role);
        return policy !== undefined && evaluateTrust(policy, request).allowed;
      };

      let chosen: FederationRole;
      if (wanted !== undefined) {
        const role = await resolveRole(wanted);
        if (!role) throw new FederationError('role-not-found', `role ${show(wanted)} does not exist`);
        if (!trusts(role))
          throw new FederationError('no-role', `role ${show(role.name)} does not trust this token`);
        chosen = role;
      } else {
        const trusting = (await listRoles()).filter(trusts);
        const [only, ...more] = trusting;
        if (!only)
          throw new FederationError(
            'no-role',
            `no role trusts this token (issuer ${show(provider.issuer)}, subject ${show(claims.sub)})`,
          );
        if (more.length > 0) {
          const names = trusting.map((r) => r.name).sort();
          throw new FederationError(
            'ambiguous-role',
            `${names.length} roles trust this token (${names.join(', ')}); choose one with the role parameter`,
            { roles: names },
          );
        }
        chosen = only;
      }

      const sessionSeconds = chosen.maxSessionSeconds;
      if (!Number.isSafeInteger(sessionSeconds) || sessionSeconds <= 0)
        throw new Error(`role ${show(chosen.name)}: maxSessionSeconds must be a positive integer`);
      return {
        role: chosen.name,
        subject: `oidc:${provider.issuer}#${claims.sub}`,
        provider: provider.id,
        claims,
        sessionSeconds,
      };
    },
  };
}
