// The runner assembled: executor + networks + images -> task manager -> service scheduler, the
// catalog and the ECS API over them, push hooks and webhooks fed by registry events, secrets and
// task role credentials. main.ts builds one; http/ talks to it through this facade only.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { RegistryEvent } from '../events.ts';
import type { Logger } from '../log.ts';
import type { StorageDriver } from '../storage/index.ts';
import { type Catalog, createCatalog } from './catalog.ts';
import { afterCursor, filterEntries, type LogCursor, logCursor } from './container-logs.ts';
import {
  type ContainerCredentials,
  credentialsEnv,
  type MintCredentials,
  newTaskToken,
  type RevokeCredentials,
  sessionTaskId,
  taskCredentials,
  taskSessionName,
} from './credentials.ts';
import { createEcsApi, type EcsApi } from './ecs-api.ts';
import { EcsError } from './ecs-protocol.ts';
import type { RollServiceAction, RunTaskAction } from './hook-rules.ts';
import { createHooks, type HookActions, type Hooks } from './hooks.ts';
import { createHost } from './host.ts';
import { createImages, type ImageSource, parseImageRef } from './images.ts';
import { createLayerStore } from './layers.ts';
import { DEFAULT_CLUSTER, type Deployment } from './model.ts';
import { createNetworks } from './network.ts';
import { createRecords } from './records.ts';
import { createExecutor, detectInit, type Executor, type LogEntry } from './runtime.ts';
import { createSecretStore, type SecretStore } from './secrets.ts';
import { createServiceScheduler, createServiceStore, type RunningServiceScheduler } from './services.ts';
import type { TaskDefinition } from './task-definitions.ts';
import { createTaskManager, type StoredTask, type TaskManagerImpl } from './tasks.ts';
import { createWebhooks, type WebhookEndpoint, type Webhooks } from './webhooks.ts';

export interface RunnerOptions {
  storage: StorageDriver;
  log: Logger;
  /** Local directory: layers, bundles, logs, networks (never on S3). */
  root: string;
  runtime: 'auto' | 'runc' | 'crun';
  region: string;
  accountId: string;
  /** Registry host names meaning "this berth" in an image reference. */
  registryHosts: readonly string[];
  bridgeName: string;
  bridgeSubnet: string;
  logMaxBytes: number;
  hookDebounceMs: number;
  stoppedRetentionMs: number;
  /** What the runner reads images from: berth's own registry, read-only. */
  images: ImageSource;
  webhooks: readonly WebhookEndpoint[];
  /** The URL containers reach berth at (task role credentials); known once the server listens. */
  baseUrl: () => string | undefined;
  /** Short-lived credentials for a role (auth's role sessions). */
  mintCredentials?: MintCredentials;
  /** Ends credentials mintCredentials issued, by session name: a task's die when it stops. */
  revokeCredentials?: RevokeCredentials;
  /** Where a running executor is not wanted (tests of the API alone); default: create one. */
  executor?: Executor;
}

/** A refusal of the runner's REST side, mapped by http/ to 400/404/409. */
export class RunnerError extends Error {
  override name = 'RunnerError';
  readonly kind: 'invalid' | 'not_found' | 'conflict' | 'unavailable';
  readonly details: readonly { path: string; message: string }[] | undefined;
  constructor(
    kind: 'invalid' | 'not_found' | 'conflict' | 'unavailable',
    message: string,
    details?: readonly { path: string; message: string }[],
  ) {
    super(message);
    this.kind = kind;
    this.details = details;
  }
}

export interface Runner {
  /** False when no OCI runtime works here: the ECS API then answers ServerException with `reason`. */
  readonly available: boolean;
  readonly unavailableReason?: string;
  readonly region: string;
  readonly ecs: EcsApi;
  readonly secrets: SecretStore;
  readonly hooks: Pick<Hooks, 'rules' | 'runs'>;
  readonly webhooks: Pick<Webhooks, 'deliveries'> & {
    list(): Omit<WebhookEndpoint, 'secret' | 'ca'>[];
  };
  readonly logs: {
    read(
      cluster: string,
      taskId: string,
      container: string | undefined,
      opts: { tail?: number | undefined; since?: string | undefined },
    ): Promise<{ container: string; entries: LogEntry[]; cursor: LogCursor }>;
    /** Entries after `cursor` (from a read), live, until the container's log ends. */
    follow(
      cluster: string,
      taskId: string,
      container: string,
      cursor: LogCursor,
      onEntry: (e: LogEntry) => void,
      onEnd: () => void,
    ): () => void;
  };
  deployments(cluster: string, service: string): Promise<Deployment[]>;
  /** The task role credentials endpoint's answer. */
  taskCredentials(taskId: string, authorization: string | undefined): Promise<ContainerCredentials>;
  /** The registry's event sink: durable once resolved. */
  record(event: RegistryEvent): Promise<void>;
  /** Reconciles tasks with the runtime, then services, then resumes hooks and webhooks. */
  start(): Promise<void>;
  close(): Promise<void>;
  /** For tests and the benchmark. */
  readonly internals: {
    tasks: TaskManagerImpl;
    services: RunningServiceScheduler;
    catalog: Catalog;
    hooks: Hooks;
  };
}

const hookKeyTag = 'berth:hook-key';

export async function createRunner(opts: RunnerOptions): Promise<Runner> {
  const log = opts.log;
  const { storage, region, accountId } = opts;
  const ownHosts = [
    'localhost',
    '127.0.0.1',
    '::1',
    hostname().toLowerCase(),
    ...opts.registryHosts.map((h) => h.toLowerCase()),
  ];

  let executor = opts.executor;
  let unavailableReason: string | undefined;
  if (!executor) {
    try {
      executor = await createExecutor({
        root: join(opts.root, 'runtime'),
        log,
        runtime: opts.runtime,
        init: detectInit(),
      });
    } catch (err) {
      unavailableReason = (err as Error).message;
      log.error({ err }, 'the task runner is unavailable: no OCI runtime works here');
    }
  }

  const host = createHost();
  const layers = createLayerStore({ root: join(opts.root, 'layers'), log, host });
  const images = createImages(opts.images, layers);
  const networks = createNetworks({
    root: join(opts.root, 'network'),
    log,
    bridgeName: opts.bridgeName,
    subnet: opts.bridgeSubnet,
  });
  const secrets = createSecretStore(storage, { region, accountId });
  const catalog = createCatalog({ storage, region, accountId });
  /** Per-task credentials tokens, kept with the task record. */
  const tokens = new Map<string, string>();

  /** Ends the credentials minted for sessions `stale` picks; a failure is logged, never thrown. */
  async function revokeCredentials(stale: (sessionName: string) => boolean, why: string): Promise<void> {
    if (!opts.revokeCredentials) return;
    try {
      const ended = await opts.revokeCredentials(stale);
      if (ended > 0) log.info({ ended, why }, 'revoked task role credentials');
    } catch (err) {
      log.error({ err, why }, 'could not revoke task role credentials');
    }
  }

  const records = createRecords<StoredTask>(storage, '/runner/tasks');

  /**
   * Where a task with a role fetches its credentials. The URL is known only once the server
   * listens, which is after start(): a service replacing a task during start() (one that died
   * while berth was down) would otherwise launch its replacement without the role's variables,
   * silently. So a launch waits for the URL, and fails with a reason if berth never listens.
   */
  async function credentialsBaseUrl(): Promise<string> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const base = opts.baseUrl();
      if (base) return base;
      if (Date.now() > deadline)
        throw new Error(
          'ResourceInitializationError: the task role credentials endpoint has no URL (berth is not listening)',
        );
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const unavailable = (): never => {
    throw new EcsError(
      'ServerException',
      `the task runner is unavailable on this host: ${unavailableReason}`,
    );
  };
  const exec: Executor =
    executor ??
    ({
      runtime: 'runc',
      start: unavailable,
      wait: unavailable,
      signal: unavailable,
      stop: unavailable,
      exec: unavailable,
      list: async () => [],
      remove: async () => {},
      removeLogs: async () => {},
      readLogs: async () => [],
      followLogs: () => () => {},
      close: () => {},
    } as Executor);

  const tasks = createTaskManager({
    region,
    accountId,
    executor: exec,
    images,
    networks,
    records,
    log,
    ownHosts,
    hostLimits: hostLimits(),
    ...(detectInit() !== undefined && { init: detectInit() as string }),
    volumesRoot: join(opts.root, 'volumes'),
    logMaxBytes: opts.logMaxBytes,
    stoppedRetentionMs: opts.stoppedRetentionMs,
    environment: async (task, def, c) => {
      const env: Record<string, string> = {};
      for (const s of c.secrets ?? []) {
        try {
          env[s.name] = await secrets.resolve(s.valueFrom);
        } catch (err) {
          throw new Error(`ResourceInitializationError: unable to pull secrets: ${(err as Error).message}`);
        }
      }
      const roleArn = task.overrides.taskRoleArn ?? def.taskRoleArn;
      if (roleArn && opts.mintCredentials) {
        const base = await credentialsBaseUrl();
        const id = task.taskArn.slice(task.taskArn.lastIndexOf('/') + 1);
        let token = tokens.get(id);
        if (!token) {
          token = newTaskToken();
          tokens.set(id, token);
          // Kept with the task (encrypted at rest) so an adopted task's token still works after a restart.
          const stored = tasks.stored(task.taskArn);
          if (stored) stored.credentialsToken = token;
        }
        Object.assign(env, credentialsEnv(base, id, token));
      }
      return env;
    },
    onStopped: (task) => {
      const id = task.taskArn.slice(task.taskArn.lastIndexOf('/') + 1);
      tokens.delete(id);
      // Credentials the task already fetched die with it, not at their expiry.
      const session = taskSessionName(id);
      void revokeCredentials((name) => name === session, `task ${id} stopped`);
    },
  });

  async function resolveImages(def: TaskDefinition): Promise<Record<string, string>> {
    const pinned: Record<string, string> = {};
    for (const c of def.containerDefinitions) {
      const ref = parseImageRef(c.image, ownHosts);
      pinned[c.name] = `${ref.repository}@${ref.digest ?? (await images.resolve(ref))}`;
    }
    return pinned;
  }

  const services = createServiceScheduler({
    tasks,
    store: createServiceStore(storage, { log }),
    log,
    resolveImages,
  });
  const ecs = createEcsApi({ catalog, tasks, services, region, accountId, log });

  // --- hook actions ---------------------------------------------------------------------------

  const clusterArnOf = async (name: string | undefined) => {
    const c = await catalog.getCluster(name ?? DEFAULT_CLUSTER);
    if (!c) throw new Error(`cluster ${name} does not exist`);
    return c.clusterArn;
  };

  /** The containers of def whose image is the pushed repository, pinned to imageRef. */
  function pinnedFor(def: TaskDefinition, imageRef: string): Record<string, string> {
    const repo = imageRef.slice(0, imageRef.indexOf('@'));
    const out: Record<string, string> = {};
    for (const c of def.containerDefinitions) {
      try {
        if (parseImageRef(c.image, ownHosts).repository === repo) out[c.name] = imageRef;
      } catch {}
    }
    if (Object.keys(out).length === 0)
      throw new Error(`no container of ${def.family}:${def.revision} runs an image of ${repo}`);
    return out;
  }

  const actions: HookActions = {
    async runTask(action: RunTaskAction, imageRef, key) {
      const stored = await catalog.describeTaskDefinition(action.taskDefinition);
      if (!stored) throw new Error(`task definition ${action.taskDefinition} does not exist`);
      const def = stored.taskDefinition;
      const { tasks: started, failures } = await tasks.run({
        clusterArn: await clusterArnOf(action.cluster),
        taskDefinition: def,
        count: action.count ?? 1,
        startedBy: 'berth-hook',
        pinnedImages: pinnedFor(def, imageRef),
        clientToken: key,
        ...(action.overrides && { overrides: action.overrides }),
      });
      if (started.length === 0)
        throw new Error(failures.map((f) => f.reason).join('; ') || 'no task started');
      return { taskArns: started.map((t) => t.taskArn) };
    },

    async rollService(action: RollServiceAction, imageRef, key) {
      const clusterArn = await clusterArnOf(action.cluster);
      const svc = services.get(clusterArn, action.service);
      if (!svc) throw new Error(`service ${action.service} does not exist in cluster ${action.cluster}`);
      const current = await catalog.describeTaskDefinition(svc.taskDefinition);
      if (!current) throw new Error(`task definition ${svc.taskDefinition} does not exist`);
      const def = current.taskDefinition;
      // Idempotent per key: a revision registered for this key by an earlier (crashed) attempt is reused.
      let target: TaskDefinition | undefined;
      for (const rev of (await catalog.listTaskDefinitions({ family: def.family, sort: 'DESC' })).slice(
        0,
        20,
      )) {
        const s = await catalog.describeTaskDefinition(rev.taskDefinitionArn);
        if (s?.tags.some((t) => t.key === hookKeyTag && t.value === key)) {
          target = s.taskDefinition;
          break;
        }
      }
      if (!target) {
        const pins = pinnedFor(def, imageRef);
        const {
          taskDefinitionArn: _a,
          revision: _r,
          status: _s,
          compatibilities: _c,
          placementConstraints: _p,
          requiresAttributes: _q,
          registeredAt: _t,
          registeredBy: _b,
          deregisteredAt: _d,
          ...spec
        } = def;
        const input = {
          ...spec,
          containerDefinitions: def.containerDefinitions.map((c) =>
            pins[c.name] ? { ...c, image: pins[c.name] } : c,
          ),
          tags: [...current.tags.filter((t) => t.key !== hookKeyTag), { key: hookKeyTag, value: key }],
        };
        target = (await catalog.registerTaskDefinition(input, 'berth-hook')).taskDefinition;
      }
      const now = services.get(clusterArn, action.service)!;
      const primary = now.deployments.find((d) => d.status === 'PRIMARY');
      if (primary?.taskDefinition === target.taskDefinitionArn)
        return { deploymentId: primary.id, taskDefinitionArn: target.taskDefinitionArn };
      const updated = await services.update({
        clusterArn,
        serviceName: action.service,
        taskDefinition: target,
        reason: `hook:${key}`,
      });
      const deployment = updated.deployments.find((d) => d.status === 'PRIMARY')!;
      return { deploymentId: deployment.id, taskDefinitionArn: target.taskDefinitionArn };
    },
  };

  const hooks = createHooks({
    storage,
    prefix: '/runner/hooks',
    log,
    actions,
    debounceMs: opts.hookDebounceMs,
  });
  const webhooks = createWebhooks({ storage, prefix: '/runner/webhooks', log, endpoints: opts.webhooks });

  // --- logs -----------------------------------------------------------------------------------

  async function findTask(cluster: string, taskId: string) {
    const clusterArn = await clusterArnOf(cluster).catch(() => undefined);
    const arn = clusterArn && `arn:aws:ecs:${region}:${accountId}:task/${cluster}/${taskId}`;
    const stored = arn ? tasks.stored(arn) : undefined;
    if (!stored) throw new RunnerError('not_found', `task ${taskId} does not exist in cluster ${cluster}`);
    return stored;
  }

  function containerOf(stored: StoredTask, name: string | undefined) {
    const list = stored.task.containers;
    if (name === undefined) {
      if (list.length === 1) return list[0]!;
      throw new RunnerError(
        'invalid',
        `the task has ${list.length} containers; name one with ?container= (${list.map((c) => c.name).join(', ')})`,
      );
    }
    const c = list.find((x) => x.name === name);
    if (!c) throw new RunnerError('not_found', `the task has no container ${name}`);
    return c;
  }

  return {
    available: executor !== undefined,
    ...(unavailableReason !== undefined && { unavailableReason }),
    region,
    ecs,
    secrets,
    hooks,
    webhooks: {
      deliveries: (o) => webhooks.deliveries(o),
      list: () => opts.webhooks.map(({ secret: _s, ca: _c, ...rest }) => rest),
    },
    logs: {
      async read(cluster, taskId, container, o) {
        const c = containerOf(await findTask(cluster, taskId), container);
        // The whole log, filtered here: the cursor is the log's end whatever tail/since keep.
        const all = await exec.readLogs(c.runtimeId);
        const entries = filterEntries(all, {
          ...(o.tail !== undefined && { tail: o.tail }),
          ...(o.since !== undefined && { since: o.since }),
        });
        return { container: c.name, entries, cursor: logCursor(all) };
      },
      follow(cluster, taskId, container, cursor, onEntry, onEnd) {
        const arn = `arn:aws:ecs:${region}:${accountId}:task/${cluster}/${taskId}`;
        const stored = tasks.stored(arn);
        const c = stored?.task.containers.find((x) => x.name === container);
        if (!stored || !c || stored.task.lastStatus === 'STOPPED') {
          queueMicrotask(onEnd);
          return () => {};
        }
        // From the top of the log file, not its end: lines written since the read are not lost.
        const stop = exec.followLogs(c.runtimeId, afterCursor(cursor, onEntry), { fromStart: true });
        let ended = false;
        const end = () => {
          if (ended) return;
          ended = true;
          unsubscribe();
          // Let the last lines written before the exit reach the follower.
          setTimeout(() => {
            stop();
            onEnd();
          }, 300);
        };
        const unsubscribe = tasks.subscribe((t) => {
          if (t.taskArn !== arn) return;
          const now = t.containers.find((x) => x.name === container);
          if (now?.lastStatus === 'STOPPED') end();
        });
        return () => {
          ended = true;
          unsubscribe();
          stop();
        };
      },
    },
    async deployments(cluster, service) {
      const clusterArn = await clusterArnOf(cluster).catch(() => {
        throw new RunnerError('not_found', `cluster ${cluster} does not exist`);
      });
      const svc = services.get(clusterArn, service);
      if (!svc) throw new RunnerError('not_found', `service ${service} does not exist in cluster ${cluster}`);
      return [...svc.deployments, ...services.history(clusterArn, service)];
    },
    taskCredentials(taskId, authorization) {
      if (!opts.mintCredentials) throw new RunnerError('unavailable', 'task roles need authentication on');
      return taskCredentials(
        {
          lookup(id) {
            const token = tokens.get(id);
            const stored = tasks.storedById(id);
            if (!stored) return undefined;
            return {
              ...((stored.task.overrides.taskRoleArn ?? stored.definition.taskRoleArn) !== undefined && {
                roleArn: (stored.task.overrides.taskRoleArn ?? stored.definition.taskRoleArn) as string,
              }),
              ...(token !== undefined && { token }),
              running: stored.task.desiredStatus === 'RUNNING' && stored.task.lastStatus !== 'STOPPED',
            };
          },
          revoke: (session) => revokeCredentials((name) => name === session, 'minted as the task stopped'),
        },
        opts.mintCredentials,
        taskId,
        authorization,
      );
    },
    async record(event) {
      await Promise.all([hooks.record(event), webhooks.record(event)]);
    },
    async start() {
      await tasks.start();
      // Tokens of adopted tasks come back from their records.
      for (const s of await records.load()) {
        if (s.credentialsToken && s.task.lastStatus !== 'STOPPED')
          tokens.set(s.task.taskArn.slice(s.task.taskArn.lastIndexOf('/') + 1), s.credentialsToken);
      }
      // Credentials of tasks that stopped while berth was down (or whose revocation a crash cut
      // short) die now. Tasks reconciliation is still stopping revoke theirs when they reach STOPPED.
      await revokeCredentials((name) => {
        const id = sessionTaskId(name);
        if (id === undefined) return false;
        const t = tasks.storedById(id)?.task;
        return t === undefined || t.lastStatus === 'STOPPED';
      }, 'their tasks no longer run');
      await services.start();
      await hooks.start();
      await webhooks.start();
    },
    async close() {
      hooks.stop();
      webhooks.stop();
      await services.close();
      await tasks.close();
      exec.close();
    },
    internals: { tasks, services, catalog, hooks },
  };
}

/** The hard RLIMIT_NOFILE berth runs with: the runtime cannot give a container more (machine.md). */
function hostLimits() {
  let nofileHard = 1024;
  try {
    const m = /Max open files\s+\S+\s+(\d+|unlimited)/.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (m) nofileHard = m[1] === 'unlimited' ? 1 << 20 : Number(m[1]);
  } catch {}
  return { nofileHard };
}
