// Identities: users, groups, roles, service accounts and access keys, kept as small JSON documents
// under /auth/iam (encrypted at rest by the storage wrapper, hashes included):
//
//   /auth/iam/users/<name>.json              user, with its scrypt password hash
//   /auth/iam/groups/<name>.json             group (membership lives on the members)
//   /auth/iam/roles/<name>.json              role, with its trust policy (opaque here)
//   /auth/iam/serviceaccounts/<name>.json    service account
//   /auth/iam/access-keys/<id>.json          access key, with its secret's scrypt hash and the secret
//
// An access key keeps its secret as well as the hash: AWS Signature Version 4 (the ECS endpoint)
// proves knowledge of the secret with an HMAC keyed by it, so the server needs the secret itself,
// as AWS does. Storage encrypts it at rest. Basic sign-in still checks the hash. Keys created
// before secrets were kept have the hash only and cannot sign requests (signingKey says so).
//
// <name> is encodeName(name): the name itself when it is a valid path component, else `~` and its
// base64url (an email has an `@`, which paths cannot carry).
//
// This process is the only writer, so everything is loaded once and then served from memory;
// writes go to storage first, then to memory, one at a time through a queue, so a check and the
// write that depends on it never interleave with another write.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { type Logger, silentLogger } from '../log.ts';
import { PathNotFoundError, type StorageDriver, StorageError } from '../storage/index.ts';
import {
  defaultScryptParams,
  dummyVerify,
  hashSecret,
  randomSecret,
  type ScryptParams,
  verifySecret,
} from './passwords.ts';
import type { PolicyError } from './policy.ts';
import { isRecord, listOrEmpty, readJson, writeJson } from './store.ts';

// ---- errors -------------------------------------------------------------------------------------

export type AuthStoreErrorCode =
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'INVALID'
  | 'CONFLICT'
  | 'LIMIT_EXCEEDED'
  | 'PRECONDITION_FAILED';

/** A request the identity or policy store refuses; `message` is fit to show an administrator. */
export class AuthStoreError extends Error {
  readonly code: AuthStoreErrorCode;
  /** For an invalid policy document: every problem validation found. Empty otherwise. */
  readonly errors: readonly PolicyError[];
  /** Structured detail, e.g. where a policy is still attached for a CONFLICT. */
  readonly details: unknown;
  constructor(
    code: AuthStoreErrorCode,
    message: string,
    opts: { errors?: readonly PolicyError[]; details?: unknown; cause?: unknown } = {},
  ) {
    super(message, { cause: opts.cause });
    this.name = 'AuthStoreError';
    this.code = code;
    this.errors = opts.errors ?? [];
    this.details = opts.details;
  }
}

const invalid = (message: string) => new AuthStoreError('INVALID', message);

// ---- names in paths -----------------------------------------------------------------------------

const plainComponent = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;
const base64url = /^[A-Za-z0-9_-]*$/;

/**
 * A storage path component for any name: the name itself when the path grammar allows it (and it
 * does not start with `~`), else `~` followed by the base64url of its UTF-8. Reversed by decodeName.
 */
export function encodeName(name: string): string {
  return plainComponent.test(name) ? name : `~${Buffer.from(name, 'utf8').toString('base64url')}`;
}

/** The name a component made by encodeName stands for; undefined for anything encodeName never makes. */
export function decodeName(component: string): string | undefined {
  if (!component.startsWith('~')) return plainComponent.test(component) ? component : undefined;
  const b64 = component.slice(1);
  if (!base64url.test(b64)) return undefined;
  const name = Buffer.from(b64, 'base64url').toString('utf8');
  // Only the canonical encoding counts, so each name has exactly one file.
  return encodeName(name) === component ? name : undefined;
}

// ---- records ------------------------------------------------------------------------------------

/** Users, groups, roles and service accounts share one grammar: lower case, so names cannot be
 *  confused by case, and every name is a valid policy resource segment. */
export const identityNamePattern = /^[a-z0-9][a-z0-9._@-]{0,63}$/;
export const isValidIdentityName = (name: unknown): name is string =>
  typeof name === 'string' && identityNamePattern.test(name);

export type Tags = Readonly<Record<string, string>>;

interface Meta {
  /** RFC 3339. */
  readonly createdAt: string;
  readonly updatedAt: string;
  /** Opaque; changes on every write of the record. */
  readonly etag: string;
}

export interface User extends Meta {
  readonly type: 'user';
  readonly name: string;
  /** Sorted. */
  readonly groups: readonly string[];
  readonly tags: Tags;
  readonly disabled: boolean;
  readonly hasPassword: boolean;
}

export interface Group extends Meta {
  readonly type: 'group';
  readonly name: string;
  readonly description: string;
}

export interface Role extends Meta {
  readonly type: 'role';
  readonly name: string;
  readonly description: string;
  /** Opaque JSON, validated by whoever assumes roles. */
  readonly trustPolicy?: unknown;
  readonly maxSessionSeconds: number;
  readonly tags: Tags;
}

export interface ServiceAccount extends Meta {
  readonly type: 'serviceaccount';
  readonly name: string;
  readonly description: string;
  /** Sorted. */
  readonly groups: readonly string[];
  readonly tags: Tags;
}

export type AccessKeyOwner = { readonly type: 'user' | 'serviceaccount'; readonly name: string };
export type AccessKeyStatus = 'active' | 'inactive';

export interface AccessKeyInfo {
  readonly id: string;
  readonly owner: AccessKeyOwner;
  readonly status: AccessKeyStatus;
  readonly createdAt: string;
  /** Recorded at most once a minute, so up to a minute behind. */
  readonly lastUsedAt?: string;
}

export interface NewAccessKey {
  readonly id: string;
  /** Shown once: the API never returns it again (it is stored, encrypted, for request signing). */
  readonly secret: string;
  readonly createdAt: string;
}

/** What verifying a signed request (SigV4) needs: the key's secret itself, and who owns the key. */
export interface SigningKey {
  readonly principal: PrincipalInfo & { readonly accessKeyId: string };
  /** Absent for keys created before berth kept secrets: such a key cannot sign requests. */
  readonly secret?: string;
  /** Records the key's use (lastUsedAt); call once the signature held. */
  used(): void;
}

/** What policy evaluation needs to know about an authenticated user or service account. */
export interface PrincipalInfo {
  readonly type: 'user' | 'serviceaccount';
  readonly name: string;
  readonly groups: readonly string[];
  readonly tags: Tags;
}

export interface Page<T> {
  readonly items: T[];
  /** Pass as `after` for the next page; absent on the last one. */
  readonly next?: string;
}

export interface ListOptions {
  /** Only names sorting after this one. */
  after?: string;
  /** 1 to 1000; default 100. */
  limit?: number;
}

export function principalOf(entity: User | ServiceAccount): PrincipalInfo {
  return { type: entity.type, name: entity.name, groups: entity.groups, tags: entity.tags };
}

export const bootstrapAdminUser = 'admin';
export const bootstrapAdminGroup = 'admins';
export const maxAccessKeysPerOwner = 2;
export const minPasswordLength = 8;
export const maxPasswordLength = 1024;
const maxSecretLength = 1024;
const maxGroupsPerMember = 100;
const maxTags = 50;
const maxDescriptionLength = 1000;
const maxTrustPolicyBytes = 32 * 1024;
const lastUsedIntervalMs = 60_000;
const maxCachedVerifications = 10_000;
const accessKeyIdPattern = /^BK[A-Z2-7]{18}$/;
const base32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

export function isAccessKeyId(id: unknown): id is string {
  return typeof id === 'string' && accessKeyIdPattern.test(id);
}

/** `BK` and 18 base32 characters: 90 random bits. */
function newAccessKeyId(): string {
  const bytes = randomBytes(12);
  let bits = 0n;
  for (const b of bytes) bits = (bits << 8n) | BigInt(b);
  let id = 'BK';
  for (let i = 0; i < 18; i++) id += base32[Number((bits >> BigInt(5 * i)) & 31n)];
  return id;
}

// ---- the store ----------------------------------------------------------------------------------

export interface IdentityStoreOptions {
  storage: StorageDriver;
  /** Milliseconds since the epoch. */
  now?: () => number;
  /** scrypt N for new hashes (r = 8, p = 1); default 2^14. Lower it in tests only. */
  scryptCost?: number;
  /** How long a successful password or key check is remembered, in seconds; default 60, 0 never. */
  verificationCacheSeconds?: number;
  /**
   * Called before a user, group, role or service account is deleted, e.g. to detach its policies
   * so a later identity of the same name does not inherit them. A rejection stops the deletion.
   */
  beforeDelete?: (target: {
    type: 'user' | 'group' | 'role' | 'serviceaccount';
    name: string;
  }) => Promise<void>;
  log?: Logger;
}

export interface CreateUserInput {
  name: string;
  password?: string;
  groups?: readonly string[];
  tags?: Record<string, string>;
  disabled?: boolean;
}

export interface UpdateUserPatch {
  /** null removes the password: the user can then only use access keys. */
  password?: string | null;
  groups?: readonly string[];
  tags?: Record<string, string>;
  disabled?: boolean;
}

export interface CreateRoleInput {
  name: string;
  description?: string;
  trustPolicy?: unknown;
  /** 60 to 43200; default 3600. */
  maxSessionSeconds?: number;
  tags?: Record<string, string>;
}

export interface UpdateRolePatch {
  description?: string;
  /** null removes it. */
  trustPolicy?: unknown;
  maxSessionSeconds?: number;
  tags?: Record<string, string>;
}

export interface CreateServiceAccountInput {
  name: string;
  description?: string;
  groups?: readonly string[];
  tags?: Record<string, string>;
}

export interface UpdateServiceAccountPatch {
  description?: string;
  groups?: readonly string[];
  tags?: Record<string, string>;
}

export interface WriteOptions {
  /** The etag the record must still have; PRECONDITION_FAILED otherwise. */
  ifMatch?: string;
}

export interface IdentityStore {
  createUser(input: CreateUserInput): Promise<User>;
  getUser(name: string): Promise<User | undefined>;
  listUsers(opts?: ListOptions): Promise<Page<User>>;
  updateUser(name: string, patch: UpdateUserPatch, opts?: WriteOptions): Promise<User>;
  /** Deletes the user's access keys too. */
  deleteUser(name: string): Promise<void>;
  /** The user, if the password is right and the user may log in; never faster for unknown users. */
  verifyPassword(name: string, password: string): Promise<User | undefined>;

  createGroup(input: { name: string; description?: string }): Promise<Group>;
  getGroup(name: string): Promise<Group | undefined>;
  listGroups(opts?: ListOptions): Promise<Page<Group>>;
  updateGroup(name: string, patch: { description?: string }, opts?: WriteOptions): Promise<Group>;
  /** Removes the group from its members first. */
  deleteGroup(name: string): Promise<void>;
  /** Names of the users and service accounts in the group, sorted. */
  groupMembers(name: string): Promise<{ users: string[]; serviceAccounts: string[] }>;

  createRole(input: CreateRoleInput): Promise<Role>;
  getRole(name: string): Promise<Role | undefined>;
  listRoles(opts?: ListOptions): Promise<Page<Role>>;
  updateRole(name: string, patch: UpdateRolePatch, opts?: WriteOptions): Promise<Role>;
  deleteRole(name: string): Promise<void>;

  createServiceAccount(input: CreateServiceAccountInput): Promise<ServiceAccount>;
  getServiceAccount(name: string): Promise<ServiceAccount | undefined>;
  listServiceAccounts(opts?: ListOptions): Promise<Page<ServiceAccount>>;
  updateServiceAccount(
    name: string,
    patch: UpdateServiceAccountPatch,
    opts?: WriteOptions,
  ): Promise<ServiceAccount>;
  /** Deletes the service account's access keys too. */
  deleteServiceAccount(name: string): Promise<void>;

  /** At most two keys per owner; the secret is returned here and never again. */
  createAccessKey(owner: AccessKeyOwner): Promise<NewAccessKey>;
  /** Oldest first. */
  listAccessKeys(owner: AccessKeyOwner): Promise<AccessKeyInfo[]>;
  getAccessKey(id: string): Promise<AccessKeyInfo | undefined>;
  updateAccessKey(id: string, patch: { status: AccessKeyStatus }): Promise<AccessKeyInfo>;
  deleteAccessKey(id: string): Promise<void>;
  /** The key's owner, if the key is active, the secret right and the owner may log in. */
  verifyAccessKey(id: string, secret: string): Promise<(PrincipalInfo & { accessKeyId: string }) | undefined>;
  /**
   * For verifying a signature made with the key (SigV4): its secret and owner, if the key is active
   * and the owner may log in; undefined otherwise. Never hand the secret to anything but the check.
   */
  signingKey(id: string): Promise<SigningKey | undefined>;

  /** The principal of an existing user (not disabled) or service account. */
  resolvePrincipal(ref: AccessKeyOwner): Promise<PrincipalInfo | undefined>;
  /** Creates user `admin` in group `admins` unless a user `admin` exists. */
  ensureBootstrapAdmin(opts?: { password?: string }): Promise<{ created: boolean; password?: string }>;
  /** Resolves once every write queued so far (lastUsedAt updates included) is done. */
  flush(): Promise<void>;
}

interface StoredUser {
  readonly user: User;
  readonly passwordHash?: string;
}

interface StoredKey {
  readonly info: AccessKeyInfo;
  readonly secretHash: string;
  /** The secret itself, for SigV4; absent on keys created before it was kept. */
  readonly secret?: string;
  readonly updatedAt: string;
  readonly etag: string;
}

interface Collection<T> {
  get(name: string): T | undefined;
  has(name: string): boolean;
  set(name: string, value: T): void;
  delete(name: string): void;
  values(): IterableIterator<T>;
  /** Sorted; cached until the set of names changes. */
  names(): readonly string[];
}

function collection<T>(): Collection<T> {
  const map = new Map<string, T>();
  let sorted: string[] | undefined;
  return {
    get: (name) => map.get(name),
    has: (name) => map.has(name),
    set(name, value) {
      if (!map.has(name)) sorted = undefined;
      map.set(name, value);
    },
    delete(name) {
      if (map.delete(name)) sorted = undefined;
    },
    values: () => map.values(),
    names: () => {
      sorted ??= [...map.keys()].sort();
      return sorted;
    },
  };
}

interface State {
  readonly users: Collection<StoredUser>;
  readonly groups: Collection<Group>;
  readonly roles: Collection<Role>;
  readonly serviceAccounts: Collection<ServiceAccount>;
  readonly keys: Collection<StoredKey>;
}

const root = '/auth/iam';
const dirs = {
  user: `${root}/users`,
  group: `${root}/groups`,
  role: `${root}/roles`,
  serviceaccount: `${root}/serviceaccounts`,
  key: `${root}/access-keys`,
} as const;
const recordPath = (kind: keyof typeof dirs, name: string) => `${dirs[kind]}/${encodeName(name)}.json`;
const label = { user: 'user', group: 'group', role: 'role', serviceaccount: 'service account' } as const;

// ---- validation of input ------------------------------------------------------------------------

function checkName(kind: keyof typeof label, name: unknown): string {
  if (!isValidIdentityName(name))
    throw invalid(
      `invalid ${label[kind]} name ${JSON.stringify(name)}: 1 to 64 characters of a-z, 0-9, '.', '_', '@' and '-', starting with a letter or digit`,
    );
  return name;
}

function checkDescription(v: unknown): string {
  if (v === undefined) return '';
  if (typeof v !== 'string' || v.length > maxDescriptionLength)
    throw invalid(`description must be a string of at most ${maxDescriptionLength} characters`);
  return v;
}

const tagKey = /^[\p{L}\p{N} _.:/=+@-]{1,128}$/u;

function checkTags(v: unknown): Tags {
  if (v === undefined) return Object.freeze({});
  if (!isRecord(v)) throw invalid('tags must be an object of strings');
  const entries = Object.entries(v);
  if (entries.length > maxTags) throw invalid(`at most ${maxTags} tags are allowed, not ${entries.length}`);
  for (const [k, value] of entries) {
    if (!tagKey.test(k))
      throw invalid(`invalid tag key ${JSON.stringify(k)}: 1 to 128 letters, digits, spaces and _.:/=+-@`);
    if (typeof value !== 'string' || value.length > 256)
      throw invalid(`tag ${JSON.stringify(k)} must have a string value of at most 256 characters`);
  }
  // fromEntries defines own properties, so a `__proto__` key stays a plain key.
  return Object.freeze(Object.fromEntries(entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))) as Tags;
}

function checkPassword(v: unknown): string {
  if (typeof v !== 'string' || v.length < minPasswordLength || v.length > maxPasswordLength)
    throw invalid(`password must be ${minPasswordLength} to ${maxPasswordLength} characters`);
  return v;
}

function checkMaxSession(v: unknown): number {
  if (v === undefined) return 3600;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 60 || v > 43200)
    throw invalid('maxSessionSeconds must be a whole number from 60 to 43200');
  return v;
}

function checkTrustPolicy(v: unknown): unknown {
  let json: string | undefined;
  try {
    json = JSON.stringify(v);
  } catch {
    json = undefined;
  }
  if (json === undefined) throw invalid('trustPolicy must be JSON');
  if (Buffer.byteLength(json) > maxTrustPolicyBytes)
    throw invalid(`trustPolicy is larger than ${maxTrustPolicyBytes} bytes of JSON`);
  return deepFreeze(JSON.parse(json));
}

function checkLimit(opts: ListOptions | undefined): { after: string | undefined; limit: number } {
  const limit = opts?.limit ?? 100;
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > 1000)
    throw invalid('limit must be a whole number from 1 to 1000');
  const after = opts?.after;
  if (after !== undefined && typeof after !== 'string') throw invalid('after must be a string');
  return { after, limit };
}

/**
 * The JSON at path, undefined if absent, or `malformed` if it is not JSON. Storage errors (a
 * failed read, a record that fails decryption) propagate: a record must not vanish because a
 * read went wrong once.
 */
export async function readRecord(storage: StorageDriver, path: string): Promise<unknown> {
  try {
    return await readJson(storage, path);
  } catch (err) {
    if (err instanceof StorageError) throw err;
    return malformed;
  }
}

/** Stands for a stored document that is not JSON; matches no record shape. */
export const malformed: unique symbol = Symbol('malformed');

function ignoreNotFound(err: unknown): void {
  if (!(err instanceof PathNotFoundError)) throw err;
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

/** First index whose name sorts after `after`. */
function upperBound(names: readonly string[], after: string): number {
  let lo = 0;
  let hi = names.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((names[mid] as string) <= after) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function page<T>(coll: Collection<T>, opts: ListOptions | undefined): Page<T> {
  const { after, limit } = checkLimit(opts);
  const names = coll.names();
  const start = after === undefined ? 0 : upperBound(names, after);
  const slice = names.slice(start, start + limit);
  const items = slice.map((n) => coll.get(n) as T);
  return start + limit < names.length ? { items, next: slice.at(-1) } : { items };
}

// ---- parsing stored documents -------------------------------------------------------------------

const str = (v: unknown): v is string => typeof v === 'string';

function parseMeta(d: Record<string, unknown>): Meta | undefined {
  const { createdAt, updatedAt, etag } = d;
  return str(createdAt) && str(updatedAt) && str(etag) ? { createdAt, updatedAt, etag } : undefined;
}

function parseNames(v: unknown): string[] | undefined {
  return Array.isArray(v) && v.every(isValidIdentityName) ? [...new Set(v)].sort() : undefined;
}

function parseStored<T>(parse: () => T | undefined): T | undefined {
  try {
    return parse();
  } catch {
    return undefined;
  }
}

function parseUser(d: Record<string, unknown>): StoredUser | undefined {
  const meta = parseMeta(d);
  const groups = parseNames(d['groups']);
  const hash = d['passwordHash'];
  if (!meta || !isValidIdentityName(d['name']) || !groups || typeof d['disabled'] !== 'boolean')
    return undefined;
  if (hash !== undefined && !str(hash)) return undefined;
  const user: User = {
    type: 'user',
    name: d['name'],
    groups: Object.freeze(groups),
    tags: checkTags(d['tags']),
    disabled: d['disabled'],
    hasPassword: hash !== undefined,
    ...meta,
  };
  return { user: Object.freeze(user), ...(hash !== undefined ? { passwordHash: hash } : {}) };
}

function parseGroup(d: Record<string, unknown>): Group | undefined {
  const meta = parseMeta(d);
  if (!meta || !isValidIdentityName(d['name'])) return undefined;
  return Object.freeze({
    type: 'group',
    name: d['name'],
    description: checkDescription(d['description']),
    ...meta,
  });
}

function parseRole(d: Record<string, unknown>): Role | undefined {
  const meta = parseMeta(d);
  if (!meta || !isValidIdentityName(d['name'])) return undefined;
  return Object.freeze({
    type: 'role',
    name: d['name'],
    description: checkDescription(d['description']),
    ...(d['trustPolicy'] !== undefined ? { trustPolicy: deepFreeze(d['trustPolicy']) } : {}),
    maxSessionSeconds: checkMaxSession(d['maxSessionSeconds']),
    tags: checkTags(d['tags']),
    ...meta,
  });
}

function parseServiceAccount(d: Record<string, unknown>): ServiceAccount | undefined {
  const meta = parseMeta(d);
  const groups = parseNames(d['groups']);
  if (!meta || !isValidIdentityName(d['name']) || !groups) return undefined;
  return Object.freeze({
    type: 'serviceaccount',
    name: d['name'],
    description: checkDescription(d['description']),
    groups: Object.freeze(groups),
    tags: checkTags(d['tags']),
    ...meta,
  });
}

function parseOwner(v: unknown): AccessKeyOwner | undefined {
  if (
    !isRecord(v) ||
    (v['type'] !== 'user' && v['type'] !== 'serviceaccount') ||
    !isValidIdentityName(v['name'])
  )
    return undefined;
  return Object.freeze({ type: v['type'], name: v['name'] });
}

function parseKey(d: Record<string, unknown>): StoredKey | undefined {
  const meta = parseMeta(d);
  const owner = parseOwner(d['owner']);
  const { id, status, secretHash, secret, lastUsedAt } = d;
  if (!meta || !owner || !isAccessKeyId(id) || !str(secretHash)) return undefined;
  if (secret !== undefined && !str(secret)) return undefined;
  if ((status !== 'active' && status !== 'inactive') || (lastUsedAt !== undefined && !str(lastUsedAt)))
    return undefined;
  const info: AccessKeyInfo = {
    id,
    owner,
    status,
    createdAt: meta.createdAt,
    ...(lastUsedAt !== undefined ? { lastUsedAt } : {}),
  };
  return {
    info: Object.freeze(info),
    secretHash,
    ...(secret !== undefined ? { secret } : {}),
    updatedAt: meta.updatedAt,
    etag: meta.etag,
  };
}

const userDoc = ({ user, passwordHash }: StoredUser) => ({
  name: user.name,
  groups: user.groups,
  tags: user.tags,
  disabled: user.disabled,
  ...(passwordHash !== undefined ? { passwordHash } : {}),
  createdAt: user.createdAt,
  updatedAt: user.updatedAt,
  etag: user.etag,
});

const keyDoc = (k: StoredKey) => ({
  id: k.info.id,
  owner: k.info.owner,
  status: k.info.status,
  secretHash: k.secretHash,
  ...(k.secret !== undefined ? { secret: k.secret } : {}),
  createdAt: k.info.createdAt,
  updatedAt: k.updatedAt,
  ...(k.info.lastUsedAt !== undefined ? { lastUsedAt: k.info.lastUsedAt } : {}),
  etag: k.etag,
});

/** A record as stored: the public view without its `type`, which the directory implies. */
function entityDoc(e: Group | Role | ServiceAccount): Record<string, unknown> {
  const { type: _, ...rest } = e;
  return rest;
}

// ---- the store ----------------------------------------------------------------------------------

export function createIdentityStore(opts: IdentityStoreOptions): IdentityStore {
  const { storage } = opts;
  const now = opts.now ?? Date.now;
  const log = opts.log ?? silentLogger;
  const scrypt: ScryptParams =
    opts.scryptCost === undefined ? defaultScryptParams : { ...defaultScryptParams, N: opts.scryptCost };
  const cacheMs = (opts.verificationCacheSeconds ?? 60) * 1000;
  const beforeDelete = opts.beforeDelete ?? (async () => {});
  if (!(cacheMs >= 0)) throw new RangeError('identities: bad verificationCacheSeconds');

  const hash = (secret: string) => hashSecret(secret, scrypt);
  const burn = () => dummyVerify(scrypt);
  const iso = (t = now()) => new Date(t).toISOString();
  const newEtag = () => randomBytes(12).toString('base64url');

  // ---- loading and the write queue ----

  let loaded: Promise<State> | undefined;
  let queue: Promise<unknown> = Promise.resolve();

  function serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = queue.then(fn);
    queue = run.catch(() => {});
    return run;
  }

  async function loadDir<T>(
    kind: keyof typeof dirs,
    parse: (d: Record<string, unknown>) => T | undefined,
    nameOf: (t: T) => string,
  ): Promise<Collection<T>> {
    const coll = collection<T>();
    for (const path of await listOrEmpty(storage, dirs[kind])) {
      const file = path.slice(path.lastIndexOf('/') + 1);
      const name = file.endsWith('.json') ? decodeName(file.slice(0, -'.json'.length)) : undefined;
      if (name === undefined) continue;
      const doc = await readRecord(storage, path);
      if (doc === undefined) continue;
      const rec = isRecord(doc) ? parseStored(() => parse(doc)) : undefined;
      // A record that does not parse is treated as absent (nobody can log in with it), loudly.
      if (rec === undefined || nameOf(rec) !== name) {
        log.warn({ path }, 'identities: ignoring a malformed record');
        continue;
      }
      coll.set(name, rec);
    }
    return coll;
  }

  async function load(): Promise<State> {
    const state: State = {
      users: await loadDir('user', parseUser, (u) => u.user.name),
      groups: await loadDir('group', parseGroup, (g) => g.name),
      roles: await loadDir('role', parseRole, (r) => r.name),
      serviceAccounts: await loadDir('serviceaccount', parseServiceAccount, (a) => a.name),
      keys: await loadDir('key', parseKey, (k) => k.info.id),
    };
    // A crash in the middle of deleteGroup can leave members naming a group that is gone; such a
    // membership must not come back to life if a group of that name is created again.
    const known = (g: string) => state.groups.has(g);
    for (const s of [...state.users.values()])
      if (!s.user.groups.every(known))
        state.users.set(s.user.name, {
          ...s,
          user: Object.freeze({ ...s.user, groups: Object.freeze(s.user.groups.filter(known)) }),
        });
    for (const a of [...state.serviceAccounts.values()])
      if (!a.groups.every(known))
        state.serviceAccounts.set(
          a.name,
          Object.freeze({ ...a, groups: Object.freeze(a.groups.filter(known)) }),
        );
    return state;
  }

  function ensureLoaded(): Promise<State> {
    loaded ??= load().catch((err) => {
      loaded = undefined;
      throw err;
    });
    return loaded;
  }

  async function mutate<T>(fn: (s: State) => Promise<T>): Promise<T> {
    const s = await ensureLoaded();
    return serialized(() => fn(s));
  }

  // ---- helpers over the state ----

  function checkGroups(s: State, v: unknown): readonly string[] {
    if (v === undefined) return Object.freeze([]);
    if (!Array.isArray(v)) throw invalid('groups must be an array of group names');
    const groups = [...new Set(v as unknown[])];
    if (groups.length > maxGroupsPerMember) throw invalid(`at most ${maxGroupsPerMember} groups are allowed`);
    for (const g of groups) {
      checkName('group', g);
      if (!s.groups.has(g as string)) throw invalid(`group ${JSON.stringify(g)} does not exist`);
    }
    return Object.freeze((groups as string[]).sort());
  }

  function notFound(kind: keyof typeof label, name: unknown): AuthStoreError {
    return new AuthStoreError('NOT_FOUND', `${label[kind]} ${JSON.stringify(name)} does not exist`);
  }

  function exists(kind: keyof typeof label, name: string): AuthStoreError {
    return new AuthStoreError('ALREADY_EXISTS', `${label[kind]} ${JSON.stringify(name)} already exists`);
  }

  function checkEtag(kind: keyof typeof label, name: string, etag: string, ifMatch: string | undefined) {
    if (ifMatch !== undefined && ifMatch !== '*' && ifMatch !== etag)
      throw new AuthStoreError(
        'PRECONDITION_FAILED',
        `${label[kind]} ${JSON.stringify(name)} was changed since it was read (etag mismatch)`,
      );
  }

  function ownerEntity(s: State, owner: AccessKeyOwner): User | ServiceAccount | undefined {
    return owner.type === 'user' ? s.users.get(owner.name)?.user : s.serviceAccounts.get(owner.name);
  }

  /** The owner, when it exists, may log in, and is not younger than the key (so a key left behind
   *  by a deleted identity never passes for a new one of the same name). */
  function liveOwner(s: State, key: StoredKey): User | ServiceAccount | undefined {
    const { owner, createdAt } = key.info;
    const entity = ownerEntity(s, owner);
    if (!entity || entity.createdAt > createdAt) return undefined;
    if (entity.type === 'user' && entity.disabled) return undefined;
    return entity;
  }

  /** The owner's keys, oldest first; with `orphans`, also those left by an earlier owner of the name. */
  function keysOf(s: State, owner: AccessKeyOwner, orphans = false): StoredKey[] {
    const entity = ownerEntity(s, owner);
    const out: StoredKey[] = [];
    for (const k of s.keys.values())
      if (
        k.info.owner.type === owner.type &&
        k.info.owner.name === owner.name &&
        (orphans || (entity !== undefined && entity.createdAt <= k.info.createdAt))
      )
        out.push(k);
    return out.sort((a, b) =>
      a.info.createdAt < b.info.createdAt
        ? -1
        : a.info.createdAt > b.info.createdAt
          ? 1
          : a.info.id < b.info.id
            ? -1
            : 1,
    );
  }

  async function putUser(s: State, rec: StoredUser): Promise<User> {
    await writeJson(storage, recordPath('user', rec.user.name), userDoc(rec));
    s.users.set(rec.user.name, rec);
    return rec.user;
  }

  async function putEntity<T extends Group | Role | ServiceAccount>(coll: Collection<T>, rec: T): Promise<T> {
    await writeJson(storage, recordPath(rec.type, rec.name), entityDoc(rec));
    coll.set(rec.name, Object.freeze(rec));
    return rec;
  }

  async function putKey(s: State, rec: StoredKey): Promise<void> {
    await writeJson(storage, `${dirs.key}/${rec.info.id}.json`, keyDoc(rec));
    s.keys.set(rec.info.id, rec);
  }

  async function removeKey(s: State, id: string): Promise<void> {
    verified.delete(`k:${id}`);
    await storage.delete(`${dirs.key}/${id}.json`).catch(ignoreNotFound);
    s.keys.delete(id);
  }

  async function removeRecord(kind: keyof typeof label, name: string): Promise<void> {
    await storage.delete(recordPath(kind, name)).catch(ignoreNotFound);
  }

  const stamp = (created?: Meta): Meta => {
    const t = iso();
    return { createdAt: created?.createdAt ?? t, updatedAt: t, etag: newEtag() };
  };

  // ---- the verification cache ----
  // A positive check is remembered as an HMAC of the secret under a per-process key, together with
  // the stored hash it was checked against, so a changed password or a deleted key cannot hit it.

  const cacheKey = randomBytes(32);
  const verified = new Map<string, { storedHash: string; mac: Buffer; expires: number }>();
  const mac = (secret: string) => createHmac('sha256', cacheKey).update(secret).digest();

  function cachedMatch(id: string, storedHash: string, secret: string): boolean {
    const e = verified.get(id);
    if (!e) return false;
    if (e.expires <= now() || e.storedHash !== storedHash) {
      verified.delete(id);
      return false;
    }
    return timingSafeEqual(e.mac, mac(secret));
  }

  function remember(id: string, storedHash: string, secret: string) {
    if (cacheMs === 0) return;
    verified.delete(id);
    if (verified.size >= maxCachedVerifications) {
      const oldest = verified.keys().next();
      if (!oldest.done) verified.delete(oldest.value);
    }
    verified.set(id, { storedHash, mac: mac(secret), expires: now() + cacheMs });
  }

  /** Records that a key was used, at most once a minute; never fails the request it came with. */
  function touch(s: State, id: string): void {
    const due = (k: StoredKey | undefined, t: number) =>
      k !== undefined &&
      (k.info.lastUsedAt === undefined || t - Date.parse(k.info.lastUsedAt) >= lastUsedIntervalMs);
    if (!due(s.keys.get(id), now())) return;
    serialized(async () => {
      const t = now();
      const k = s.keys.get(id);
      // Deleted meanwhile (must not be written back), or another request recorded it already.
      if (!k || !due(k, t)) return;
      await putKey(s, { ...k, info: Object.freeze({ ...k.info, lastUsedAt: iso(t) }), etag: newEtag() });
    }).catch((err: unknown) => log.warn({ err, accessKeyId: id }, 'identities: could not record key use'));
  }

  // ---- deletion shared by users and service accounts ----

  async function deleteKeysOf(s: State, owner: AccessKeyOwner) {
    // Keys first: a key must never outlive its owner, even across a crash.
    for (const k of keysOf(s, owner, true)) await removeKey(s, k.info.id);
  }

  return {
    // ---- users ----

    async createUser(input) {
      const name = checkName('user', input.name);
      const tags = checkTags(input.tags);
      if (input.disabled !== undefined && typeof input.disabled !== 'boolean')
        throw invalid('disabled must be true or false');
      const passwordHash =
        input.password === undefined ? undefined : await hash(checkPassword(input.password));
      return mutate(async (s) => {
        if (s.users.has(name)) throw exists('user', name);
        const groups = checkGroups(s, input.groups);
        const user: User = Object.freeze({
          type: 'user',
          name,
          groups,
          tags,
          disabled: input.disabled ?? false,
          hasPassword: passwordHash !== undefined,
          ...stamp(),
        });
        return putUser(s, { user, ...(passwordHash !== undefined ? { passwordHash } : {}) });
      });
    },

    async getUser(name) {
      return (await ensureLoaded()).users.get(name)?.user;
    },

    async listUsers(o) {
      const s = await ensureLoaded();
      const { items, next } = page(s.users, o);
      return { items: items.map((u) => u.user), ...(next !== undefined ? { next } : {}) };
    },

    async updateUser(name, patch, { ifMatch } = {}) {
      const tags = patch.tags === undefined ? undefined : checkTags(patch.tags);
      if (patch.disabled !== undefined && typeof patch.disabled !== 'boolean')
        throw invalid('disabled must be true or false');
      const newHash =
        patch.password === undefined || patch.password === null
          ? patch.password
          : await hash(checkPassword(patch.password));
      return mutate(async (s) => {
        const cur = s.users.get(name);
        if (!cur) throw notFound('user', name);
        checkEtag('user', name, cur.user.etag, ifMatch);
        const groups = patch.groups === undefined ? cur.user.groups : checkGroups(s, patch.groups);
        const passwordHash = newHash === undefined ? cur.passwordHash : (newHash ?? undefined);
        const user: User = Object.freeze({
          ...cur.user,
          groups,
          tags: tags ?? cur.user.tags,
          disabled: patch.disabled ?? cur.user.disabled,
          hasPassword: passwordHash !== undefined,
          ...stamp(cur.user),
        });
        return putUser(s, { user, ...(passwordHash !== undefined ? { passwordHash } : {}) });
      });
    },

    async deleteUser(name) {
      await mutate(async (s) => {
        if (!s.users.has(name)) throw notFound('user', name);
        await beforeDelete({ type: 'user', name });
        await deleteKeysOf(s, { type: 'user', name });
        verified.delete(`u:${name}`);
        await removeRecord('user', name);
        s.users.delete(name);
      });
    },

    async verifyPassword(name, password) {
      const s = await ensureLoaded();
      const cur = typeof name === 'string' ? s.users.get(name) : undefined;
      const storedHash = cur?.passwordHash;
      if (
        !cur ||
        cur.user.disabled ||
        storedHash === undefined ||
        typeof password !== 'string' ||
        password.length > maxPasswordLength
      ) {
        await burn();
        return undefined;
      }
      const id = `u:${name}`;
      if (!cachedMatch(id, storedHash, password)) {
        if (!(await verifySecret(password, storedHash))) return undefined;
        remember(id, storedHash, password);
      }
      // The user may have changed while scrypt ran: answer for the user as it is now.
      const again = s.users.get(name);
      if (!again || again.passwordHash !== storedHash || again.user.disabled) return undefined;
      return again.user;
    },

    // ---- groups ----

    async createGroup(input) {
      const name = checkName('group', input.name);
      const description = checkDescription(input.description);
      return mutate(async (s) => {
        if (s.groups.has(name)) throw exists('group', name);
        return putEntity(s.groups, { type: 'group', name, description, ...stamp() });
      });
    },

    async getGroup(name) {
      return (await ensureLoaded()).groups.get(name);
    },

    async listGroups(o) {
      return page((await ensureLoaded()).groups, o);
    },

    async updateGroup(name, patch, { ifMatch } = {}) {
      const description = patch.description === undefined ? undefined : checkDescription(patch.description);
      return mutate(async (s) => {
        const cur = s.groups.get(name);
        if (!cur) throw notFound('group', name);
        checkEtag('group', name, cur.etag, ifMatch);
        return putEntity(s.groups, { ...cur, description: description ?? cur.description, ...stamp(cur) });
      });
    },

    async deleteGroup(name) {
      await mutate(async (s) => {
        if (!s.groups.has(name)) throw notFound('group', name);
        await beforeDelete({ type: 'group', name });
        const without = (groups: readonly string[]) => Object.freeze(groups.filter((g) => g !== name));
        for (const cur of [...s.users.values()])
          if (cur.user.groups.includes(name))
            await putUser(s, {
              ...cur,
              user: Object.freeze({ ...cur.user, groups: without(cur.user.groups), ...stamp(cur.user) }),
            });
        for (const cur of [...s.serviceAccounts.values()])
          if (cur.groups.includes(name))
            await putEntity(s.serviceAccounts, { ...cur, groups: without(cur.groups), ...stamp(cur) });
        await removeRecord('group', name);
        s.groups.delete(name);
      });
    },

    async groupMembers(name) {
      const s = await ensureLoaded();
      if (!s.groups.has(name)) throw notFound('group', name);
      const users = [...s.users.values()].filter((u) => u.user.groups.includes(name)).map((u) => u.user.name);
      const serviceAccounts = [...s.serviceAccounts.values()]
        .filter((a) => a.groups.includes(name))
        .map((a) => a.name);
      return { users: users.sort(), serviceAccounts: serviceAccounts.sort() };
    },

    // ---- roles ----

    async createRole(input) {
      const name = checkName('role', input.name);
      const description = checkDescription(input.description);
      const trustPolicy = input.trustPolicy === undefined ? undefined : checkTrustPolicy(input.trustPolicy);
      const maxSessionSeconds = checkMaxSession(input.maxSessionSeconds);
      const tags = checkTags(input.tags);
      return mutate(async (s) => {
        if (s.roles.has(name)) throw exists('role', name);
        return putEntity(s.roles, {
          type: 'role',
          name,
          description,
          ...(trustPolicy !== undefined ? { trustPolicy } : {}),
          maxSessionSeconds,
          tags,
          ...stamp(),
        });
      });
    },

    async getRole(name) {
      return (await ensureLoaded()).roles.get(name);
    },

    async listRoles(o) {
      return page((await ensureLoaded()).roles, o);
    },

    async updateRole(name, patch, { ifMatch } = {}) {
      const description = patch.description === undefined ? undefined : checkDescription(patch.description);
      const trust =
        patch.trustPolicy === undefined || patch.trustPolicy === null
          ? patch.trustPolicy
          : checkTrustPolicy(patch.trustPolicy);
      const maxSessionSeconds =
        patch.maxSessionSeconds === undefined ? undefined : checkMaxSession(patch.maxSessionSeconds);
      const tags = patch.tags === undefined ? undefined : checkTags(patch.tags);
      return mutate(async (s) => {
        const cur = s.roles.get(name);
        if (!cur) throw notFound('role', name);
        checkEtag('role', name, cur.etag, ifMatch);
        const { trustPolicy: old, ...rest } = cur;
        const trustPolicy = trust === undefined ? old : (trust ?? undefined);
        return putEntity(s.roles, {
          ...rest,
          description: description ?? cur.description,
          ...(trustPolicy !== undefined ? { trustPolicy } : {}),
          maxSessionSeconds: maxSessionSeconds ?? cur.maxSessionSeconds,
          tags: tags ?? cur.tags,
          ...stamp(cur),
        });
      });
    },

    async deleteRole(name) {
      await mutate(async (s) => {
        if (!s.roles.has(name)) throw notFound('role', name);
        await beforeDelete({ type: 'role', name });
        await removeRecord('role', name);
        s.roles.delete(name);
      });
    },

    // ---- service accounts ----

    async createServiceAccount(input) {
      const name = checkName('serviceaccount', input.name);
      const description = checkDescription(input.description);
      const tags = checkTags(input.tags);
      return mutate(async (s) => {
        if (s.serviceAccounts.has(name)) throw exists('serviceaccount', name);
        const groups = checkGroups(s, input.groups);
        return putEntity(s.serviceAccounts, {
          type: 'serviceaccount',
          name,
          description,
          groups,
          tags,
          ...stamp(),
        });
      });
    },

    async getServiceAccount(name) {
      return (await ensureLoaded()).serviceAccounts.get(name);
    },

    async listServiceAccounts(o) {
      return page((await ensureLoaded()).serviceAccounts, o);
    },

    async updateServiceAccount(name, patch, { ifMatch } = {}) {
      const description = patch.description === undefined ? undefined : checkDescription(patch.description);
      const tags = patch.tags === undefined ? undefined : checkTags(patch.tags);
      return mutate(async (s) => {
        const cur = s.serviceAccounts.get(name);
        if (!cur) throw notFound('serviceaccount', name);
        checkEtag('serviceaccount', name, cur.etag, ifMatch);
        const groups = patch.groups === undefined ? cur.groups : checkGroups(s, patch.groups);
        return putEntity(s.serviceAccounts, {
          ...cur,
          description: description ?? cur.description,
          groups,
          tags: tags ?? cur.tags,
          ...stamp(cur),
        });
      });
    },

    async deleteServiceAccount(name) {
      await mutate(async (s) => {
        if (!s.serviceAccounts.has(name)) throw notFound('serviceaccount', name);
        await beforeDelete({ type: 'serviceaccount', name });
        await deleteKeysOf(s, { type: 'serviceaccount', name });
        await removeRecord('serviceaccount', name);
        s.serviceAccounts.delete(name);
      });
    },

    // ---- access keys ----

    async createAccessKey(owner) {
      if (!isRecord(owner) || (owner.type !== 'user' && owner.type !== 'serviceaccount'))
        throw invalid('an access key belongs to a user or a service account');
      const name = checkName(owner.type, owner.name);
      const type = owner.type;
      const secret = randomSecret();
      const secretHash = await hash(secret);
      return mutate(async (s) => {
        const entity = type === 'user' ? s.users.get(name)?.user : s.serviceAccounts.get(name);
        if (!entity) throw notFound(type, name);
        if (keysOf(s, { type, name }).length >= maxAccessKeysPerOwner)
          throw new AuthStoreError(
            'LIMIT_EXCEEDED',
            `${label[type]} ${JSON.stringify(name)} already has ${maxAccessKeysPerOwner} access keys, the most allowed; delete one first`,
          );
        let id = newAccessKeyId();
        while (s.keys.has(id)) id = newAccessKeyId();
        const meta = stamp();
        // Never older than its owner, which liveOwner() relies on (the clock may have stepped back).
        let createdAt = meta.createdAt;
        if (createdAt < entity.createdAt) createdAt = entity.createdAt;
        const info: AccessKeyInfo = Object.freeze({
          id,
          owner: Object.freeze({ type, name }),
          status: 'active',
          createdAt,
        });
        await putKey(s, { info, secretHash, secret, updatedAt: createdAt, etag: meta.etag });
        return { id, secret, createdAt };
      });
    },

    async listAccessKeys(owner) {
      const s = await ensureLoaded();
      if (!isRecord(owner) || !ownerEntity(s, owner))
        throw notFound(owner?.type === 'serviceaccount' ? 'serviceaccount' : 'user', owner?.name);
      return keysOf(s, owner).map((k) => k.info);
    },

    async getAccessKey(id) {
      return (await ensureLoaded()).keys.get(id)?.info;
    },

    async updateAccessKey(id, patch) {
      if (patch.status !== 'active' && patch.status !== 'inactive')
        throw invalid('status must be "active" or "inactive"');
      return mutate(async (s) => {
        const cur = s.keys.get(id);
        if (!cur) throw new AuthStoreError('NOT_FOUND', `access key ${JSON.stringify(id)} does not exist`);
        const meta = stamp();
        const next: StoredKey = {
          ...cur,
          info: Object.freeze({ ...cur.info, status: patch.status }),
          updatedAt: meta.updatedAt,
          etag: meta.etag,
        };
        await putKey(s, next);
        return next.info;
      });
    },

    async deleteAccessKey(id) {
      await mutate(async (s) => {
        if (!s.keys.has(id))
          throw new AuthStoreError('NOT_FOUND', `access key ${JSON.stringify(id)} does not exist`);
        await removeKey(s, id);
      });
    },

    async verifyAccessKey(id, secret) {
      const s = await ensureLoaded();
      const key = isAccessKeyId(id) ? s.keys.get(id) : undefined;
      const usable = (k: StoredKey | undefined) =>
        k !== undefined && k.info.status === 'active' && liveOwner(s, k);
      if (!key || !usable(key) || typeof secret !== 'string' || secret.length > maxSecretLength) {
        await burn();
        return undefined;
      }
      const cacheId = `k:${id}`;
      if (!cachedMatch(cacheId, key.secretHash, secret)) {
        if (!(await verifySecret(secret, key.secretHash))) return undefined;
        remember(cacheId, key.secretHash, secret);
      }
      // Deactivated, deleted or its owner disabled while scrypt ran?
      const again = s.keys.get(id);
      const owner = again && again.secretHash === key.secretHash ? usable(again) : undefined;
      if (!owner) return undefined;
      touch(s, id);
      return { ...principalOf(owner), accessKeyId: id };
    },

    async signingKey(id) {
      const s = await ensureLoaded();
      const key = isAccessKeyId(id) ? s.keys.get(id) : undefined;
      const owner = key !== undefined && key.info.status === 'active' ? liveOwner(s, key) : undefined;
      if (!key || !owner) return undefined;
      return {
        principal: { ...principalOf(owner), accessKeyId: id },
        ...(key.secret !== undefined ? { secret: key.secret } : {}),
        used: () => touch(s, id),
      };
    },

    // ---- principals and bootstrap ----

    async resolvePrincipal(ref) {
      const s = await ensureLoaded();
      if (ref.type === 'user') {
        const u = s.users.get(ref.name)?.user;
        return u && !u.disabled ? principalOf(u) : undefined;
      }
      const a = ref.type === 'serviceaccount' ? s.serviceAccounts.get(ref.name) : undefined;
      return a ? principalOf(a) : undefined;
    },

    async ensureBootstrapAdmin({ password } = {}) {
      const s = await ensureLoaded();
      if (s.users.has(bootstrapAdminUser)) return { created: false };
      const generated = password === undefined ? randomSecret(18) : undefined;
      const passwordHash = await hash(checkPassword(password ?? generated));
      return serialized(async () => {
        if (s.users.has(bootstrapAdminUser)) return { created: false };
        if (!s.groups.has(bootstrapAdminGroup))
          await putEntity(s.groups, {
            type: 'group',
            name: bootstrapAdminGroup,
            description: 'Administrators',
            ...stamp(),
          });
        const user: User = Object.freeze({
          type: 'user',
          name: bootstrapAdminUser,
          groups: Object.freeze([bootstrapAdminGroup]),
          tags: Object.freeze({}),
          disabled: false,
          hasPassword: true,
          ...stamp(),
        });
        await putUser(s, { user, passwordHash });
        return generated !== undefined ? { created: true, password: generated } : { created: true };
      });
    },

    async flush() {
      await serialized(async () => {});
    },
  };
}
