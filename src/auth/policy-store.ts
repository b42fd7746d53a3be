// Stored policies: managed identity policies, their attachments to identities, and repository
// policies attached to a repository, a prefix (`team-a/*`) or every repository (`*`):
//
//   /auth/policies/managed/<name>.json                 {name, document, version, ...}
//   /auth/policies/attachments/<type>/<name>.json      {type, name, policies: [...]} per identity
//   /auth/policies/repository/<scope>                  {scope, document, version, ...}
//
// Names go through encodeName (identities.ts). A repository scope is one path component by
// itself: `/` becomes `~`, a trailing `/*` becomes `~_` and `*` alone `_`. Repository names only
// have [a-z0-9._-/] and never start a segment with `_`, so this is reversible, and it keeps a
// 255-character repository name within one 255-byte component (hence no `.json`).
//
// Documents are kept as written (an admin reads back what they wrote); the validated, frozen form
// is what evaluation gets. Everything is loaded once and served from memory: evaluation runs on
// every pull, and this process is the only writer.
import { randomBytes } from 'node:crypto';
import { type Logger, silentLogger } from '../log.ts';
import { PathNotFoundError, type StorageDriver } from '../storage/index.ts';
import {
  AuthStoreError,
  decodeName,
  encodeName,
  isValidIdentityName,
  type ListOptions,
  type Page,
  readRecord,
} from './identities.ts';
import {
  type AttachedPolicy,
  isValidResource,
  type Policy,
  type PolicyError,
  type PolicyKind,
  type Principal,
  validatePolicy,
} from './policy.ts';
import { isRecord, listOrEmpty, writeJson } from './store.ts';

export type AttachmentTargetType = 'user' | 'group' | 'role' | 'serviceaccount';

export interface AttachmentTarget {
  readonly type: AttachmentTargetType;
  readonly name: string;
}

interface StoredMeta {
  /** The document as written (parsed JSON). */
  readonly document: unknown;
  /** 1 for the first version, then one more on every put. */
  readonly version: number;
  readonly etag: string;
  readonly createdAt: string;
  readonly updatedAt: string;
  /**
   * Present only when the stored document no longer validates (written by an older berth whose
   * validator accepted it). Such a policy makes evaluation that needs it fail, never skip it.
   */
  readonly invalid?: readonly PolicyError[];
}

export interface ManagedPolicy extends StoredMeta {
  readonly name: string;
}

export interface RepositoryPolicy extends StoredMeta {
  /** `team-a/api`, `team-a/*` or `*`. */
  readonly scope: string;
}

export interface PutOptions {
  /** The etag the policy must have now, or `*` for "must exist"; PRECONDITION_FAILED otherwise. */
  ifMatch?: string;
}

export interface PolicyStoreOptions {
  storage: StorageDriver;
  /** Milliseconds since the epoch. */
  now?: () => number;
  /** When given, attachPolicy refuses targets it says do not exist. */
  targetExists?: (target: AttachmentTarget) => Promise<boolean>;
  log?: Logger;
}

export interface PolicyStore {
  putPolicy(name: string, document: unknown, opts?: PutOptions): Promise<ManagedPolicy>;
  getPolicy(name: string): Promise<ManagedPolicy | undefined>;
  listPolicies(opts?: ListOptions): Promise<Page<ManagedPolicy>>;
  /** CONFLICT while the policy is attached anywhere (`details.attachments` says where). */
  deletePolicy(name: string, opts?: PutOptions): Promise<void>;

  /** Idempotent. At most 20 policies per target. */
  attachPolicy(policyName: string, target: AttachmentTarget): Promise<void>;
  detachPolicy(policyName: string, target: AttachmentTarget): Promise<void>;
  /** Detaches everything from a target: for when the identity is deleted. */
  detachAll(target: AttachmentTarget): Promise<void>;
  /** Names of the policies attached to the target itself (not through its groups), sorted. */
  attachedTo(target: AttachmentTarget): Promise<string[]>;
  /** Sorted by type, then name. */
  attachmentsOf(policyName: string): Promise<AttachmentTarget[]>;

  putRepositoryPolicy(scope: string, document: unknown, opts?: PutOptions): Promise<RepositoryPolicy>;
  getRepositoryPolicy(scope: string): Promise<RepositoryPolicy | undefined>;
  deleteRepositoryPolicy(scope: string, opts?: PutOptions): Promise<void>;
  /** Sorted by scope. */
  listRepositoryPolicies(): Promise<RepositoryPolicy[]>;

  /** The identity policies of a principal: its own and its groups', each once (ids `policy/<name>`). */
  policiesFor(principal: Pick<Principal, 'type' | 'name' | 'groups'>): Promise<AttachedPolicy[]>;
  /** The repository policies covering a repository (ids `repository/<scope>`): `*`, each prefix, exact. */
  repositoryPoliciesFor(repository: string): Promise<AttachedPolicy[]>;
}

export const policyNamePattern = /^[A-Za-z0-9][A-Za-z0-9+=,.@_-]{0,127}$/;
export const maxPoliciesPerTarget = 20;
const targetTypes: readonly AttachmentTargetType[] = ['user', 'group', 'role', 'serviceaccount'];

export const identityPolicyId = (name: string) => `policy/${name}`;
export const repositoryPolicyId = (scope: string) => `repository/${scope}`;

/** A repository name, a repository prefix ending in `/*`, or `*`. */
export function isValidRepositoryScope(scope: unknown): scope is string {
  if (typeof scope !== 'string') return false;
  if (scope === '*') return true;
  const base = scope.endsWith('/*') ? scope.slice(0, -2) : scope;
  // The base must be a repository name, and `prefix/x` must still fit the length limit.
  return (
    !/[*?]/.test(base) && isValidResource(`repository/${base}`) && isValidResource(`repository/${scope}`)
  );
}

export function encodeScope(scope: string): string {
  if (scope === '*') return '_';
  const prefix = scope.endsWith('/*');
  return (prefix ? scope.slice(0, -2) : scope).replaceAll('/', '~') + (prefix ? '~_' : '');
}

export function decodeScope(component: string): string | undefined {
  const scope =
    component === '_'
      ? '*'
      : component.endsWith('~_')
        ? `${component.slice(0, -2).replaceAll('~', '/')}/*`
        : component.replaceAll('~', '/');
  return isValidRepositoryScope(scope) && encodeScope(scope) === component ? scope : undefined;
}

// ---- internals ----------------------------------------------------------------------------------

interface Entry<R> {
  readonly record: R;
  /** Undefined when the stored document does not validate. */
  readonly attached: AttachedPolicy | undefined;
}

interface State {
  readonly policies: Map<string, Entry<ManagedPolicy>>;
  /** Key `type/name`; value sorted policy names, never empty. */
  readonly attachments: Map<string, readonly string[]>;
  readonly repository: Map<string, Entry<RepositoryPolicy>>;
}

const root = '/auth/policies';
const managedDir = `${root}/managed`;
const attachmentsDir = `${root}/attachments`;
const repositoryDir = `${root}/repository`;
const managedPath = (name: string) => `${managedDir}/${encodeName(name)}.json`;
const attachmentsPath = (t: AttachmentTarget) => `${attachmentsDir}/${t.type}/${encodeName(t.name)}.json`;
const repositoryPath = (scope: string) => `${repositoryDir}/${encodeScope(scope)}`;
const targetKey = (t: AttachmentTarget) => `${t.type}/${t.name}`;
const targetLabel = (t: AttachmentTarget) =>
  `${t.type === 'serviceaccount' ? 'service account' : t.type} ${JSON.stringify(t.name)}`;
const lastComponent = (path: string) => path.slice(path.lastIndexOf('/') + 1);

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

function ignoreNotFound(err: unknown): void {
  if (!(err instanceof PathNotFoundError)) throw err;
}

const byString = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

function checkPolicyName(name: unknown): string {
  if (typeof name !== 'string' || !policyNamePattern.test(name))
    throw new AuthStoreError(
      'INVALID',
      `invalid policy name ${JSON.stringify(name)}: 1 to 128 characters of A-Z, a-z, 0-9 and +=,.@_-, starting with a letter or digit`,
    );
  return name;
}

function checkScope(scope: unknown): string {
  if (!isValidRepositoryScope(scope))
    throw new AuthStoreError(
      'INVALID',
      `invalid repository policy scope ${JSON.stringify(scope)}: a repository name, a prefix ending in "/*", or "*"`,
    );
  return scope;
}

function checkTarget(target: unknown): AttachmentTarget {
  if (!isRecord(target) || !targetTypes.includes(target['type'] as AttachmentTargetType))
    throw new AuthStoreError('INVALID', 'a policy attaches to a user, group, role or service account');
  const t = { type: target['type'] as AttachmentTargetType, name: target['name'] };
  if (!isValidIdentityName(t.name))
    throw new AuthStoreError('INVALID', `invalid ${t.type} name ${JSON.stringify(t.name)}`);
  return { type: t.type, name: t.name };
}

/** Validates, and gives the document as plain frozen JSON plus its validated policy. */
function validated(what: string, document: unknown, kind: PolicyKind): { document: unknown; policy: Policy } {
  // What is validated is exactly what is stored: plain JSON (text is parsed first).
  let plain: unknown = document;
  try {
    plain = JSON.parse(typeof document === 'string' ? document : (JSON.stringify(document) as string));
  } catch {
    // Not JSON: validatePolicy says so.
  }
  const result = validatePolicy(plain, kind);
  if (!result.ok)
    throw new AuthStoreError(
      'INVALID',
      `${what} is invalid: ${result.errors.map((e) => e.message).join('; ')}`,
      { errors: result.errors },
    );
  return { document: deepFreeze(plain), policy: result.policy };
}

function parseMeta(d: Record<string, unknown>, id: string, kind: PolicyKind) {
  const { version, etag, createdAt, updatedAt, document } = d;
  if (
    typeof version !== 'number' ||
    !Number.isSafeInteger(version) ||
    version < 1 ||
    typeof etag !== 'string' ||
    typeof createdAt !== 'string' ||
    typeof updatedAt !== 'string' ||
    document === undefined
  )
    return undefined;
  const result = validatePolicy(document, kind);
  const meta: StoredMeta = {
    document: deepFreeze(document),
    version,
    etag,
    createdAt,
    updatedAt,
    ...(result.ok ? {} : { invalid: Object.freeze(result.errors) }),
  };
  const attached: AttachedPolicy | undefined = result.ok
    ? Object.freeze({ id, kind, policy: result.policy })
    : undefined;
  return { meta, attached };
}

// ---- the store ----------------------------------------------------------------------------------

export function createPolicyStore(opts: PolicyStoreOptions): PolicyStore {
  const { storage } = opts;
  const now = opts.now ?? Date.now;
  const log = opts.log ?? silentLogger;
  const iso = () => new Date(now()).toISOString();
  const newEtag = () => randomBytes(12).toString('base64url');

  let loaded: Promise<State> | undefined;
  let queue: Promise<unknown> = Promise.resolve();

  function serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = queue.then(fn);
    queue = run.catch(() => {});
    return run;
  }

  async function load(): Promise<State> {
    const state: State = { policies: new Map(), attachments: new Map(), repository: new Map() };
    const skip = (path: string) => log.warn({ path }, 'policies: ignoring a malformed record');

    for (const path of await listOrEmpty(storage, managedDir)) {
      const file = lastComponent(path);
      const name = file.endsWith('.json') ? decodeName(file.slice(0, -'.json'.length)) : undefined;
      if (name === undefined) continue;
      const doc = await readRecord(storage, path);
      if (doc === undefined) continue;
      const parsed =
        isRecord(doc) && doc['name'] === name
          ? parseMeta(doc, identityPolicyId(name), 'identity')
          : undefined;
      if (!parsed) {
        skip(path);
        continue;
      }
      if (parsed.meta.invalid)
        log.error({ path, errors: parsed.meta.invalid }, 'policies: stored policy no longer validates');
      state.policies.set(name, {
        record: Object.freeze({ name, ...parsed.meta }),
        attached: parsed.attached,
      });
    }

    for (const type of targetTypes) {
      for (const path of await listOrEmpty(storage, `${attachmentsDir}/${type}`)) {
        const file = lastComponent(path);
        const name = file.endsWith('.json') ? decodeName(file.slice(0, -'.json'.length)) : undefined;
        if (name === undefined) continue;
        const doc = await readRecord(storage, path);
        if (doc === undefined) continue;
        const list =
          isRecord(doc) && doc['type'] === type && doc['name'] === name ? doc['policies'] : undefined;
        if (!Array.isArray(list) || !list.every((p) => typeof p === 'string' && policyNamePattern.test(p))) {
          skip(path);
          continue;
        }
        if (list.length > 0)
          state.attachments.set(
            targetKey({ type, name }),
            Object.freeze([...new Set(list as string[])].sort(byString)),
          );
      }
    }

    for (const path of await listOrEmpty(storage, repositoryDir)) {
      const scope = decodeScope(lastComponent(path));
      if (scope === undefined) continue;
      const doc = await readRecord(storage, path);
      if (doc === undefined) continue;
      const parsed =
        isRecord(doc) && doc['scope'] === scope
          ? parseMeta(doc, repositoryPolicyId(scope), 'repository')
          : undefined;
      if (!parsed) {
        skip(path);
        continue;
      }
      if (parsed.meta.invalid)
        log.error({ path, errors: parsed.meta.invalid }, 'policies: stored policy no longer validates');
      state.repository.set(scope, {
        record: Object.freeze({ scope, ...parsed.meta }),
        attached: parsed.attached,
      });
    }
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

  function checkIfMatch(what: string, current: StoredMeta | undefined, ifMatch: string | undefined) {
    if (ifMatch === undefined) return;
    if (!current) throw new AuthStoreError('PRECONDITION_FAILED', `${what} does not exist`);
    if (ifMatch !== '*' && ifMatch !== current.etag)
      throw new AuthStoreError(
        'PRECONDITION_FAILED',
        `${what} was changed since it was read (etag mismatch)`,
      );
  }

  function nextMeta(document: unknown, current: StoredMeta | undefined): StoredMeta {
    const t = iso();
    return {
      document,
      version: (current?.version ?? 0) + 1,
      etag: newEtag(),
      createdAt: current?.createdAt ?? t,
      updatedAt: t,
    };
  }

  const metaDoc = (m: StoredMeta) => ({
    document: m.document,
    version: m.version,
    etag: m.etag,
    createdAt: m.createdAt,
    updatedAt: m.updatedAt,
  });

  async function setAttachments(s: State, target: AttachmentTarget, names: readonly string[]) {
    if (names.length === 0) {
      await storage.delete(attachmentsPath(target)).catch(ignoreNotFound);
      s.attachments.delete(targetKey(target));
      return;
    }
    const sorted = Object.freeze([...names].sort(byString));
    await writeJson(storage, attachmentsPath(target), {
      type: target.type,
      name: target.name,
      policies: sorted,
    });
    s.attachments.set(targetKey(target), sorted);
  }

  function targetsOf(s: State, policyName: string): AttachmentTarget[] {
    const out: AttachmentTarget[] = [];
    for (const [key, names] of s.attachments) {
      if (!names.includes(policyName)) continue;
      const slash = key.indexOf('/');
      out.push({ type: key.slice(0, slash) as AttachmentTargetType, name: key.slice(slash + 1) });
    }
    const rank = (t: AttachmentTarget) => targetTypes.indexOf(t.type);
    return out.sort((a, b) => rank(a) - rank(b) || byString(a.name, b.name));
  }

  /** For evaluation: a policy that does not validate fails the request rather than being skipped. */
  function usable(entry: Entry<ManagedPolicy | RepositoryPolicy>, what: string): AttachedPolicy {
    if (!entry.attached)
      throw new AuthStoreError('INVALID', `${what} no longer validates; fix or delete it`, {
        errors: entry.record.invalid ?? [],
      });
    return entry.attached;
  }

  return {
    async putPolicy(name, document, { ifMatch } = {}) {
      const what = `policy ${JSON.stringify(checkPolicyName(name))}`;
      const v = validated(what, document, 'identity');
      return mutate(async (s) => {
        const cur = s.policies.get(name)?.record;
        checkIfMatch(what, cur, ifMatch);
        const record: ManagedPolicy = Object.freeze({ name, ...nextMeta(v.document, cur) });
        await writeJson(storage, managedPath(name), { name, ...metaDoc(record) });
        const attached: AttachedPolicy = Object.freeze({
          id: identityPolicyId(name),
          kind: 'identity',
          policy: v.policy,
        });
        s.policies.set(name, { record, attached });
        return record;
      });
    },

    async getPolicy(name) {
      return (await ensureLoaded()).policies.get(name)?.record;
    },

    async listPolicies(o = {}) {
      const limit = o.limit ?? 100;
      if (!Number.isSafeInteger(limit) || limit < 1 || limit > 1000)
        throw new AuthStoreError('INVALID', 'limit must be a whole number from 1 to 1000');
      const s = await ensureLoaded();
      const names = [...s.policies.keys()].filter((n) => o.after === undefined || n > o.after).sort(byString);
      const slice = names.slice(0, limit);
      const items = slice.map((n) => (s.policies.get(n) as Entry<ManagedPolicy>).record);
      return names.length > limit ? { items, next: slice.at(-1) as string } : { items };
    },

    async deletePolicy(name, { ifMatch } = {}) {
      const what = `policy ${JSON.stringify(name)}`;
      await mutate(async (s) => {
        const cur = s.policies.get(name)?.record;
        if (!cur) throw new AuthStoreError('NOT_FOUND', `${what} does not exist`);
        checkIfMatch(what, cur, ifMatch);
        const targets = targetsOf(s, name);
        if (targets.length > 0)
          throw new AuthStoreError(
            'CONFLICT',
            `${what} is attached to ${targets.map(targetLabel).join(', ')}; detach it first`,
            { details: { attachments: targets } },
          );
        await storage.delete(managedPath(name)).catch(ignoreNotFound);
        s.policies.delete(name);
      });
    },

    async attachPolicy(policyName, target) {
      const t = checkTarget(target);
      if (opts.targetExists && !(await opts.targetExists(t)))
        throw new AuthStoreError('NOT_FOUND', `${targetLabel(t)} does not exist`);
      await mutate(async (s) => {
        if (!s.policies.has(policyName))
          throw new AuthStoreError('NOT_FOUND', `policy ${JSON.stringify(policyName)} does not exist`);
        const names = s.attachments.get(targetKey(t)) ?? [];
        if (names.includes(policyName)) return;
        if (names.length >= maxPoliciesPerTarget)
          throw new AuthStoreError(
            'LIMIT_EXCEEDED',
            `${targetLabel(t)} already has ${maxPoliciesPerTarget} policies attached, the most allowed`,
          );
        await setAttachments(s, t, [...names, policyName]);
      });
    },

    async detachPolicy(policyName, target) {
      const t = checkTarget(target);
      await mutate(async (s) => {
        const names = s.attachments.get(targetKey(t)) ?? [];
        if (!names.includes(policyName))
          throw new AuthStoreError(
            'NOT_FOUND',
            `policy ${JSON.stringify(policyName)} is not attached to ${targetLabel(t)}`,
          );
        await setAttachments(
          s,
          t,
          names.filter((n) => n !== policyName),
        );
      });
    },

    async detachAll(target) {
      const t = checkTarget(target);
      await mutate((s) => setAttachments(s, t, []));
    },

    async attachedTo(target) {
      const t = checkTarget(target);
      return [...((await ensureLoaded()).attachments.get(targetKey(t)) ?? [])];
    },

    async attachmentsOf(policyName) {
      return targetsOf(await ensureLoaded(), policyName);
    },

    async putRepositoryPolicy(scope, document, { ifMatch } = {}) {
      const what = `repository policy ${JSON.stringify(checkScope(scope))}`;
      const v = validated(what, document, 'repository');
      return mutate(async (s) => {
        const cur = s.repository.get(scope)?.record;
        checkIfMatch(what, cur, ifMatch);
        const record: RepositoryPolicy = Object.freeze({ scope, ...nextMeta(v.document, cur) });
        await writeJson(storage, repositoryPath(scope), { scope, ...metaDoc(record) });
        const attached: AttachedPolicy = Object.freeze({
          id: repositoryPolicyId(scope),
          kind: 'repository',
          policy: v.policy,
        });
        s.repository.set(scope, { record, attached });
        return record;
      });
    },

    async getRepositoryPolicy(scope) {
      return (await ensureLoaded()).repository.get(scope)?.record;
    },

    async deleteRepositoryPolicy(scope, { ifMatch } = {}) {
      const what = `repository policy ${JSON.stringify(scope)}`;
      await mutate(async (s) => {
        const cur = s.repository.get(scope)?.record;
        if (!cur) throw new AuthStoreError('NOT_FOUND', `${what} does not exist`);
        checkIfMatch(what, cur, ifMatch);
        await storage.delete(repositoryPath(scope)).catch(ignoreNotFound);
        s.repository.delete(scope);
      });
    },

    async listRepositoryPolicies() {
      const s = await ensureLoaded();
      return [...s.repository.keys()]
        .sort(byString)
        .map((k) => (s.repository.get(k) as Entry<RepositoryPolicy>).record);
    },

    async policiesFor(principal) {
      const s = await ensureLoaded();
      if (principal.type === 'anonymous') return [];
      const out: AttachedPolicy[] = [];
      const seen = new Set<string>();
      const add = (key: string) => {
        for (const name of s.attachments.get(key) ?? []) {
          if (seen.has(name)) continue;
          seen.add(name);
          const entry = s.policies.get(name);
          // Only a crash can leave an attachment to a deleted policy; an absent policy grants nothing.
          if (entry) out.push(usable(entry, `policy ${JSON.stringify(name)}`));
        }
      };
      add(`${principal.type}/${principal.name}`);
      for (const g of principal.groups) add(`group/${g}`);
      return out;
    },

    async repositoryPoliciesFor(repository) {
      const s = await ensureLoaded();
      if (s.repository.size === 0) return [];
      const out: AttachedPolicy[] = [];
      const add = (scope: string) => {
        const entry = s.repository.get(scope);
        if (entry) out.push(usable(entry, `repository policy ${JSON.stringify(scope)}`));
      };
      add('*');
      for (let i = repository.indexOf('/'); i > 0; i = repository.indexOf('/', i + 1))
        add(`${repository.slice(0, i)}/*`);
      if (repository !== '*') add(repository);
      return out;
    },
  };
}
