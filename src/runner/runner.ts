// The runner assembled: executor + networks + images -> task manager -> service scheduler, the
// catalog and the ECS API over them, push hooks and webhooks fed by registry events, secrets and
// task role credentials. main.ts builds one; http/ talks to it through this facade only.
import { readFileSync } from 'node:fs';
import { hostname, release } from 'node:os';
import { join } from 'node:path';
import type { RegistryEvent } from '../events.ts';
import type { Logger } from '../log.ts';
import type { Outbound } from '../outbound.ts';
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
import { createHookActions } from './hook-actions.ts';
import { createHooks, type Hooks } from './hooks.ts';
import { createHost } from './host.ts';
import { createHostAccess, denyAllHostAccess, type HostAccessPolicy } from './host-access.ts';
import { type IdMapping, layerCacheName } from './idmap.ts';
import { createImages, type ImageSource, parseImageRef } from './images.ts';
import type { DecideAs } from './launch-rights.ts';
import { createLayerStore, LEGACY_LAYER_CACHES } from './layers.ts';
import { DEFAULT_CLUSTER, type Deployment } from './model.ts';
import { createNetworks, ecsCredentialsAddress } from './network.ts';
import { hostCapacity } from './placement.ts';
import { createRecords } from './records.ts';
import { createExecutor, detectInit, type Executor, type LogEntry } from './runtime.ts';
import { DEFAULT_CAPABILITIES, type HostLimits, type Isolation, maskedCpuPaths } from './runtime-spec.ts';
import { defaultSeccompProfile, kernelVersion, seccompArch } from './seccomp.ts';
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
  /** The rules webhook requests follow (outbound.allowHosts); default: https to non-local hosts only. */
  outbound?: Outbound;
  /** The URL containers reach berth at (task role credentials); known once the server listens. */
  baseUrl: () => string | undefined;
  /** Short-lived credentials for a role (auth's role sessions). */
  mintCredentials?: MintCredentials;
  /**
   * Decisions for a principal named by reference (`role/NAME`) from its current policies (auth's
   * authorizeAs): what hooks act with, and what execution roles pull with.
   */
  decideAs: DecideAs;
  /**
   * Starts a listener serving the task credentials endpoint and nothing else, on `host` (the
   * bridge's own address), port chosen by the system. Bridge tasks reach it as ECS tasks reach
   * their agent, at http://169.254.170.2 (network.ts routes it). Without it bridge tasks get no role.
   */
  serveCredentials?: (host: string) => Promise<{ port: number; close(): Promise<void> }>;
  /** Host paths and host network the operator allows (default: neither). */
  hostAccess?: HostAccessPolicy;
  /** Ends credentials mintCredentials issued, by session name: a task's die when it stops. */
  revokeCredentials?: RevokeCredentials;
  /** Where a running executor is not wanted (tests of the API alone); default: create one. */
  executor?: Executor;
  /** The host range every task's ids 0-65535 map to (runner.userNamespace.hostIdStart). */
  userNamespace: IdMapping;
  /** pids.max of every task (runner.pidsLimit). */
  pidsLimit: number;
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

/** How often stale layer caches are looked for again (after the one at start). */
const LAYER_SWEEP_MS = 10 * 60_000;

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
  const arch = seccompArch();
  const isolation: Isolation = {
    idMapping: opts.userNamespace,
    pidsLimit: opts.pidsLimit,
    seccomp: defaultSeccompProfile({
      arch: arch ?? 'x86_64',
      kernel: kernelVersion(release()),
      capabilities: DEFAULT_CAPABILITIES,
    }),
    extraMaskedPaths: maskedCpuPaths(readText('/sys/devices/system/cpu/possible') ?? ''),
  };
  if (!executor && arch === undefined) {
    unavailableReason = `berth has no seccomp profile for ${process.arch} (only x86_64 and aarch64), and runs no container without one`;
    log.error(`the task runner is unavailable: ${unavailableReason}`);
  } else if (!executor) {
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
  const layers = createLayerStore({
    root: join(opts.root, 'layers'),
    log,
    host,
    idMapping: opts.userNamespace,
  });
  const images = createImages(opts.images, layers);
  const networks = createNetworks({
    root: join(opts.root, 'network'),
    log,
    bridgeName: opts.bridgeName,
    subnet: opts.bridgeSubnet,
    idMapping: opts.userNamespace,
  });
  const secrets = createSecretStore(storage, { region, accountId });
  const hostAccess = createHostAccess(opts.hostAccess ?? denyAllHostAccess, {
    root: join(opts.root, 'host-mounts'),
    host,
  });
  const catalog = createCatalog({ storage, region, accountId, admit: (spec) => hostAccess.admit(spec) });
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
   * Layer caches of another mapping (runner.userNamespace.hostIdStart changed) or of the layout
   * before user namespaces go, once no container's rootfs still stacks them: a container keeps its
   * overlay until it is removed, so those of running or not yet removed containers stay until a
   * later sweep.
   */
  let layerSweepTimer: NodeJS.Timeout | undefined;
  async function sweepLayerCaches(): Promise<void> {
    try {
      const inUse = new Set<string>();
      for (const c of await exec.list()) {
        if (c.idMapping) inUse.add(layerCacheName(c.idMapping));
        else for (const legacy of LEGACY_LAYER_CACHES) inUse.add(legacy);
      }
      await layers.sweepStale(inUse);
    } catch (err) {
      log.warn({ err }, 'could not delete stale layer caches');
    }
  }

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
  /**
   * Where a bridge task fetches its credentials: berth's main listener may be on 127.0.0.1 only,
   * which a bridge task cannot (and must not) reach, so a second listener serving nothing but the
   * credentials endpoint binds the bridge's own address, and 169.254.170.2:80 from the bridge is
   * DNATed to it: the URL ECS itself uses, which every AWS SDK and the CLI accept over plain HTTP
   * (the token never leaves the host). Several berths on one host each have their own bridge,
   * listener and DNAT (matched on the bridge). Made when the first bridge task with a role starts.
   */
  let bridgeListener: Promise<{ port: number; close(): Promise<void> }> | undefined;
  async function bridgeCredentialsBaseUrl(): Promise<string> {
    if (!opts.serveCredentials)
      throw new Error(
        'ResourceInitializationError: this berth serves no task credentials endpoint for bridge tasks',
      );
    const serve = opts.serveCredentials;
    bridgeListener ??= (async () => {
      const server = await serve(networks.gateway);
      try {
        await networks.routeCredentials(server.port);
      } catch (err) {
        await server.close();
        throw err;
      }
      log.info(
        { address: `${networks.gateway}:${server.port}` },
        'task credentials listener for bridge tasks',
      );
      return server;
    })();
    try {
      await bridgeListener;
    } catch (err) {
      bridgeListener = undefined;
      throw new Error(
        `ResourceInitializationError: the task credentials endpoint for bridge tasks could not start: ${(err as Error).message}`,
      );
    }
    return `http://${ecsCredentialsAddress}`;
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
    isolation,
    hostCapacity: hostCapacity(),
    ...(detectInit() !== undefined && { init: detectInit() as string }),
    volumesRoot: join(opts.root, 'volumes'),
    hostAccess,
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
        // Host-network tasks share the host's loopback, where berth listens.
        const base =
          def.networkMode === 'bridge' ? await bridgeCredentialsBaseUrl() : await credentialsBaseUrl();
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
    admit: (def) => hostAccess.admit(def),
  });
  const ecs = createEcsApi({
    catalog,
    tasks,
    services,
    region,
    accountId,
    log,
    decideAs: opts.decideAs,
    ownHosts,
  });

  const clusterArnOf = async (name: string | undefined) => {
    const c = await catalog.getCluster(name ?? DEFAULT_CLUSTER);
    if (!c) throw new Error(`cluster ${name} does not exist`);
    return c.clusterArn;
  };

  const hooks = createHooks({
    storage,
    prefix: '/runner/hooks',
    log,
    actions: createHookActions({ catalog, tasks, services, decideAs: opts.decideAs, ownHosts }),
    debounceMs: opts.hookDebounceMs,
  });
  const webhooks = createWebhooks({
    storage,
    prefix: '/runner/webhooks',
    log,
    endpoints: opts.webhooks,
    ...(opts.outbound && { outbound: opts.outbound }),
  });

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
      // A bridge left by an earlier run may carry tasks already: guard it before anything else.
      if (executor && (await networks.bridgeExists()))
        await networks.guard().catch((err) => log.error({ err }, 'network: cannot guard the task bridge'));
      await hostAccess.sweep().catch((err) => log.error({ err }, 'cannot sweep staged host paths'));
      await tasks.start();
      // Not awaited: deleting a stale cache may take a while, and nothing waits for it.
      void sweepLayerCaches();
      layerSweepTimer = setInterval(() => void sweepLayerCaches(), LAYER_SWEEP_MS);
      layerSweepTimer.unref();
      // Tokens of adopted tasks come back from their records; those on the bridge fetch their
      // credentials through this berth's listener, made again now.
      let roleOnBridge = false;
      for (const s of await records.load()) {
        if (!s.credentialsToken || s.task.lastStatus === 'STOPPED') continue;
        tokens.set(s.task.taskArn.slice(s.task.taskArn.lastIndexOf('/') + 1), s.credentialsToken);
        if (s.definition.networkMode === 'bridge') roleOnBridge = true;
      }
      if (roleOnBridge)
        await bridgeCredentialsBaseUrl().catch((err) =>
          log.error({ err }, 'task credentials for bridge tasks'),
        );
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
      clearInterval(layerSweepTimer);
      hooks.stop();
      webhooks.stop();
      await services.close();
      await tasks.close();
      if (bridgeListener) {
        const listener = await bridgeListener.catch(() => undefined);
        bridgeListener = undefined;
        // Unrouted first: while berth is down the address is refused, not sent to a freed port.
        await networks
          .routeCredentials(undefined)
          .catch((err) => log.warn({ err }, 'network: cannot unroute task credentials'));
        await listener?.close();
      }
      exec.close();
    },
    internals: { tasks, services, catalog, hooks },
  };
}

/** The hard RLIMIT_NOFILE and RLIMIT_NPROC berth runs with: the runtime cannot give a container
 * more (machine.md; in a user namespace it has no CAP_SYS_RESOURCE to raise them). */
export function hostLimits(limits = readText('/proc/self/limits') ?? ''): HostLimits {
  const hard = (name: string, unlimited: number): number | undefined => {
    const m = new RegExp(`^${name}\\s+\\S+\\s+(\\d+|unlimited)`, 'm').exec(limits);
    if (!m) return undefined;
    return m[1] === 'unlimited' ? unlimited : Number(m[1]);
  };
  const nprocHard = hard('Max processes', 4194304); // the kernel's pid_max ceiling
  return {
    nofileHard: hard('Max open files', 1 << 20) ?? 1024,
    ...(nprocHard !== undefined && { nprocHard }),
  };
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}
