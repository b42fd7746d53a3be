// The runner's catalog: clusters and task definition revisions, ECS's two kinds of configuration
// that tasks and services refer to. Everything is loaded once and then served from memory; this
// process is the only writer, and every change goes to storage first, then to memory, one at a
// time through a queue, so two registrations of one family can never get the same revision.
//
// Storage (JSON through the StorageDriver, so encrypted at rest like everything else):
//   /runner/catalog/clusters/c_<name>.json                      a cluster
//   /runner/catalog/task-definitions/f_<family>/counter.json   the family's last revision handed out
//   /runner/catalog/task-definitions/f_<family>/r<rev>.json    one revision and its tags
// Names get a prefix because ECS allows a leading '-' and storage path components do not.
//
// The counter is bumped before the revision is written, so a crash in between leaves a gap in the
// numbers, never a number handed out twice (revisions are immutable, as on ECS).
import { PathNotFoundError, type StorageDriver } from '../storage/index.ts';
import { EcsError, ecsMessages } from './ecs-protocol.ts';
import { DEFAULT_CLUSTER } from './model.ts';
import {
  type CpuArchitecture,
  DEFAULT_ACCOUNT_ID,
  parseTaskDefinitionRef,
  type Tag,
  type TaskDefinition,
  type TaskDefinitionSpec,
  toTaskDefinition,
  validateTaskDefinitionInput,
} from './task-definitions.ts';

export interface ClusterRecord {
  clusterArn: string;
  clusterName: string;
  status: 'ACTIVE';
  /** Epoch seconds. */
  createdAt: number;
  tags: Tag[];
}

export interface StoredTaskDefinition {
  taskDefinition: TaskDefinition;
  tags: Tag[];
}

export type TaskDefinitionStatusFilter = 'ACTIVE' | 'INACTIVE';
export type FamilyStatusFilter = 'ACTIVE' | 'INACTIVE' | 'ALL';

export interface CatalogOptions {
  storage: StorageDriver;
  region: string;
  /** The account id in ARNs; DEFAULT_ACCOUNT_ID by default. */
  accountId?: string;
  /** Milliseconds since the epoch. */
  now?: () => number;
  /** For task definition validation (runtimePlatform); the machine's by default. */
  hostArchitecture?: CpuArchitecture;
  /** Throws ClientException when the operator's config does not let a definition run here
   * (host paths, host network): refused at registration, not only when a task starts. */
  admit?: (spec: TaskDefinitionSpec) => void;
}

export interface Catalog {
  readonly region: string;
  readonly accountId: string;
  clusterArn(name: string): string;
  /**
   * ECS's CreateCluster: idempotent on the name (an existing cluster is returned as it is, its tags
   * unchanged). The 'default' cluster always exists, as on ECS, and is stored once created.
   */
  createCluster(name: string, tags?: Tag[]): Promise<ClusterRecord>;
  /** By name or ARN (of this region and account); the 'default' cluster always answers. */
  getCluster(nameOrArn: string): Promise<ClusterRecord | undefined>;
  /** Sorted by name; includes 'default'. */
  listClusters(): Promise<ClusterRecord[]>;

  /**
   * Validates (task-definitions.ts) and stores the next revision of the family. Throws EcsError
   * (SerializationException, ClientException) for input ECS would refuse.
   */
  registerTaskDefinition(
    input: unknown,
    registeredBy?: string,
  ): Promise<StoredTaskDefinition & { ignoredMembers: string[] }>;
  /**
   * "family" (its latest ACTIVE revision), "family:revision" or the ARN; any status for an exact
   * revision. Undefined when there is no such revision, or a bare family has no ACTIVE one.
   */
  describeTaskDefinition(ref: string): Promise<StoredTaskDefinition | undefined>;
  /**
   * ACTIVE -> INACTIVE ("family:revision" or the ARN; a revision is required). Idempotent: an
   * INACTIVE revision is answered as it is. ClientException for a bad reference or a missing one.
   */
  deregisterTaskDefinition(ref: string): Promise<TaskDefinition>;
  /**
   * Revisions with `status` (default ACTIVE), of one family when `family` is given, ordered by family
   * then revision, ascending or descending.
   */
  listTaskDefinitions(opts?: {
    family?: string;
    status?: TaskDefinitionStatusFilter;
    sort?: 'ASC' | 'DESC';
  }): Promise<TaskDefinition[]>;
  /**
   * Family names starting with `familyPrefix`, sorted. ACTIVE: families with an ACTIVE revision;
   * INACTIVE: families without one; ALL (the default): both.
   */
  listTaskDefinitionFamilies(opts?: {
    familyPrefix?: string;
    status?: FamilyStatusFilter;
  }): Promise<string[]>;
}

const root = '/runner/catalog';
const clustersDir = `${root}/clusters`;
const familiesDir = `${root}/task-definitions`;
const clusterPath = (name: string) => `${clustersDir}/c_${name}.json`;
const familyDir = (family: string) => `${familiesDir}/f_${family}`;
const revisionPath = (family: string, revision: number) => `${familyDir(family)}/r${revision}.json`;
const counterPath = (family: string) => `${familyDir(family)}/counter.json`;

export const CLUSTER_NAME = /^[a-zA-Z0-9_-]{1,255}$/;

interface Family {
  lastRevision: number;
  /** revision -> stored revision */
  revisions: Map<number, StoredTaskDefinition>;
}

interface State {
  clusters: Map<string, ClusterRecord>;
  families: Map<string, Family>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

async function readJson(storage: StorageDriver, path: string): Promise<unknown> {
  try {
    return JSON.parse(decoder.decode(await storage.getContent(path)));
  } catch (err) {
    if (err instanceof PathNotFoundError) return undefined;
    throw err;
  }
}

async function writeJson(storage: StorageDriver, path: string, value: unknown): Promise<void> {
  await storage.putContent(path, encoder.encode(JSON.stringify(value)));
}

async function listOrEmpty(storage: StorageDriver, path: string): Promise<string[]> {
  try {
    return await storage.list(path);
  } catch (err) {
    if (err instanceof PathNotFoundError) return [];
    throw err;
  }
}

const baseName = (path: string) => path.slice(path.lastIndexOf('/') + 1);

export function createCatalog(opts: CatalogOptions): Catalog {
  const { storage, region } = opts;
  const accountId = opts.accountId ?? DEFAULT_ACCOUNT_ID;
  const now = opts.now ?? Date.now;
  const arnPrefix = `arn:aws:ecs:${region}:${accountId}:`;
  const clusterArn = (name: string) => `${arnPrefix}cluster/${name}`;

  let loaded: Promise<State> | undefined;
  let queue: Promise<unknown> = Promise.resolve();

  /** Writes run one at a time, each seeing the memory state the previous one left. */
  function serialized<T>(fn: (s: State) => Promise<T>): Promise<T> {
    const run = queue.then(async () => fn(await ensureLoaded()));
    queue = run.catch(() => {});
    return run;
  }

  function ensureLoaded(): Promise<State> {
    loaded ??= load().catch((err: unknown) => {
      loaded = undefined; // a storage hiccup at start must not poison every later call
      throw err;
    });
    return loaded;
  }

  async function load(): Promise<State> {
    const state: State = { clusters: new Map(), families: new Map() };
    for (const path of await listOrEmpty(storage, clustersDir)) {
      const rec = (await readJson(storage, path)) as ClusterRecord | undefined;
      if (rec && typeof rec.clusterName === 'string') state.clusters.set(rec.clusterName, rec);
    }
    for (const dir of await listOrEmpty(storage, familiesDir)) {
      const family = baseName(dir).replace(/^f_/, '');
      const entry: Family = { lastRevision: 0, revisions: new Map() };
      for (const path of await listOrEmpty(storage, dir)) {
        const name = baseName(path);
        if (name === 'counter.json') {
          const c = (await readJson(storage, path)) as { lastRevision?: unknown } | undefined;
          if (typeof c?.lastRevision === 'number')
            entry.lastRevision = Math.max(entry.lastRevision, c.lastRevision);
          continue;
        }
        if (!/^r\d+\.json$/.test(name)) continue;
        const stored = (await readJson(storage, path)) as StoredTaskDefinition | undefined;
        if (!stored?.taskDefinition) continue;
        entry.revisions.set(stored.taskDefinition.revision, stored);
        entry.lastRevision = Math.max(entry.lastRevision, stored.taskDefinition.revision);
      }
      state.families.set(family, entry);
    }
    return state;
  }

  function defaultCluster(): ClusterRecord {
    // Exists before anyone creates it, as ECS's does; createdAt 0 marks "never stored".
    return {
      clusterArn: clusterArn(DEFAULT_CLUSTER),
      clusterName: DEFAULT_CLUSTER,
      status: 'ACTIVE',
      createdAt: 0,
      tags: [],
    };
  }

  /** The cluster name an ARN or name refers to, or undefined for another region's or account's ARN. */
  function clusterNameOf(nameOrArn: string): string | undefined {
    if (!nameOrArn.startsWith('arn:')) return nameOrArn;
    return nameOrArn.startsWith(`${arnPrefix}cluster/`) ? nameOrArn.slice(arnPrefix.length + 8) : undefined;
  }

  /** family:revision from a reference, checking an ARN names this region and account. */
  function parseRef(ref: string): { family: string; revision?: number } | undefined {
    const parsed = parseTaskDefinitionRef(ref);
    if (!parsed) return undefined;
    if (ref.startsWith('arn:') && !ref.startsWith(`${arnPrefix}task-definition/`)) return undefined;
    return parsed;
  }

  function latestActive(f: Family): StoredTaskDefinition | undefined {
    let best: StoredTaskDefinition | undefined;
    for (const r of f.revisions.values())
      if (
        r.taskDefinition.status === 'ACTIVE' &&
        r.taskDefinition.revision > (best?.taskDefinition.revision ?? 0)
      )
        best = r;
    return best;
  }

  const copy = <T>(v: T): T => structuredClone(v);

  return {
    region,
    accountId,
    clusterArn,

    async createCluster(name, tags = []) {
      if (!CLUSTER_NAME.test(name)) {
        throw new EcsError(
          'InvalidParameterException',
          'Cluster name must be 1 to 255 letters (uppercase and lowercase), numbers, underscores and hyphens.',
        );
      }
      return serialized(async (s) => {
        const existing = s.clusters.get(name);
        if (existing) return copy(existing);
        const rec: ClusterRecord = {
          clusterArn: clusterArn(name),
          clusterName: name,
          status: 'ACTIVE',
          createdAt: Math.floor(now() / 1000),
          tags: copy(tags),
        };
        await writeJson(storage, clusterPath(name), rec);
        s.clusters.set(name, rec);
        return copy(rec);
      });
    },

    async getCluster(nameOrArn) {
      const s = await ensureLoaded();
      const name = clusterNameOf(nameOrArn);
      if (name === undefined) return undefined;
      const rec = s.clusters.get(name) ?? (name === DEFAULT_CLUSTER ? defaultCluster() : undefined);
      return rec && copy(rec);
    },

    async listClusters() {
      const s = await ensureLoaded();
      const all = new Map(s.clusters);
      if (!all.has(DEFAULT_CLUSTER)) all.set(DEFAULT_CLUSTER, defaultCluster());
      return [...all.keys()].sort().map((n) => copy(all.get(n)!));
    },

    async registerTaskDefinition(input, registeredBy) {
      // Validated before taking a revision, so refused input never uses up a number.
      const { spec, ignoredMembers } = validateTaskDefinitionInput(
        input,
        opts.hostArchitecture ? { hostArchitecture: opts.hostArchitecture } : {},
      );
      opts.admit?.(spec);
      return serialized(async (s) => {
        const f = s.families.get(spec.family) ?? { lastRevision: 0, revisions: new Map() };
        const revision = f.lastRevision + 1;
        const taskDefinition = toTaskDefinition(spec, {
          region,
          accountId,
          revision,
          registeredAt: new Date(now()),
          ...(registeredBy !== undefined ? { registeredBy } : {}),
        });
        await writeJson(storage, counterPath(spec.family), { lastRevision: revision });
        f.lastRevision = revision;
        s.families.set(spec.family, f);
        const stored: StoredTaskDefinition = { taskDefinition, tags: spec.tags };
        await writeJson(storage, revisionPath(spec.family, revision), stored);
        f.revisions.set(revision, stored);
        return { ...copy(stored), ignoredMembers };
      });
    },

    async describeTaskDefinition(ref) {
      const s = await ensureLoaded();
      const parsed = parseRef(ref);
      const f = parsed && s.families.get(parsed.family);
      if (!parsed || !f) return undefined;
      const found = parsed.revision === undefined ? latestActive(f) : f.revisions.get(parsed.revision);
      return found && copy(found);
    },

    async deregisterTaskDefinition(ref) {
      const parsed = parseRef(ref);
      if (!parsed) throw new EcsError('ClientException', `Invalid revision number. Task definition: ${ref}`);
      if (parsed.revision === undefined) {
        throw new EcsError(
          'ClientException',
          `A revision is required: name the task definition as family:revision or by its ARN, not '${ref}'.`,
        );
      }
      const revision = parsed.revision;
      return serialized(async (s) => {
        const stored = s.families.get(parsed.family)?.revisions.get(revision);
        if (!stored) throw new EcsError('ClientException', 'The specified task definition does not exist.');
        if (stored.taskDefinition.status === 'INACTIVE') return copy(stored.taskDefinition);
        const next: StoredTaskDefinition = {
          ...stored,
          taskDefinition: { ...stored.taskDefinition, status: 'INACTIVE', deregisteredAt: now() / 1000 },
        };
        await writeJson(storage, revisionPath(parsed.family, revision), next);
        s.families.get(parsed.family)!.revisions.set(revision, next);
        return copy(next.taskDefinition);
      });
    },

    async listTaskDefinitions(o = {}) {
      const s = await ensureLoaded();
      const status = o.status ?? 'ACTIVE';
      const out: TaskDefinition[] = [];
      const families = o.family !== undefined ? [o.family] : [...s.families.keys()];
      for (const name of families) {
        for (const r of s.families.get(name)?.revisions.values() ?? [])
          if (r.taskDefinition.status === status) out.push(r.taskDefinition);
      }
      out.sort((a, b) => (a.family !== b.family ? (a.family < b.family ? -1 : 1) : a.revision - b.revision));
      if (o.sort === 'DESC') out.reverse();
      return out.map(copy);
    },

    async listTaskDefinitionFamilies(o = {}) {
      const s = await ensureLoaded();
      const status = o.status ?? 'ALL';
      const prefix = o.familyPrefix ?? '';
      return [...s.families.entries()]
        .filter(([name, f]) => {
          if (!name.startsWith(prefix) || f.revisions.size === 0) return false;
          if (status === 'ALL') return true;
          return (latestActive(f) !== undefined) === (status === 'ACTIVE');
        })
        .map(([name]) => name)
        .sort();
    },
  };
}

/** What DescribeTaskDefinition answers for a reference that resolves to nothing. */
export function taskDefinitionNotFound(): EcsError {
  return new EcsError('ClientException', ecsMessages.taskDefinitionNotFound);
}
