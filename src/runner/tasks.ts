// The task manager: RunTask -> network -> images -> containers (in dependsOn order) -> health
// checks -> stop (SIGTERM, stopTimeout, SIGKILL) -> cleanup, walking ECS's lifecycle states and
// persisting the task at every step, so a restarted berth adopts what still runs (exit codes
// included: the executor's monitors outlive us) and marks the rest STOPPED with a reason.
import { randomBytes, randomUUID } from 'node:crypto';
import type { Logger } from '../log.ts';
import { createHostAccess, denyAllHostAccess, type HostAccess, type StagedHostPath } from './host-access.ts';
import { type ImageError, type Images, type PreparedImage, parseImageRef, pinnedRef } from './images.ts';
import type {
  ContainerOverride,
  HealthStatus,
  ListTasksFilter,
  RunTaskFailure,
  RunTaskRequest,
  StopCode,
  Task,
  TaskContainer,
  TaskListener,
  TaskManager,
  TaskStatus,
} from './model.ts';
import { containerInstanceArn, TaskLaunchError } from './model.ts';
import type { Networks, TaskNetwork } from './network.ts';
import { type HostCapacity, placementFailure } from './placement.ts';
import type { Records } from './records.ts';
import type { Executor, ExitStatus } from './runtime.ts';
import { buildRuntimeSpec, type HostLimits, type Isolation } from './runtime-spec.ts';
import {
  type ContainerDefinition,
  DEFAULT_STOP_TIMEOUT_SECONDS,
  type HealthCheck,
  type TaskDefinition,
} from './task-definitions.ts';
import { createTaskVolumes } from './volumes.ts';

/** What is persisted per task: the ECS view plus what a restart needs to carry on. */
export interface StoredTask {
  task: Task;
  /** The revision the task runs, copied so a restart needs no catalog lookup. */
  definition: TaskDefinition;
  /** container name -> repo@digest, resolved when the task was created. */
  pinned: Record<string, string>;
  stopSignals: Record<string, string>;
  clientToken?: string;
  network?: TaskNetwork;
  /** The task role credentials token (runner.ts), when the task has a role. */
  credentialsToken?: string;
}

export interface TaskManagerOptions {
  region: string;
  accountId: string;
  executor: Executor;
  images: Images;
  networks: Networks;
  records: Records<StoredTask>;
  log: Logger;
  /** Registry host names that mean "this berth" in an image reference. */
  ownHosts: readonly string[];
  hostLimits: HostLimits;
  /** The user namespace, seccomp profile and pids limit every container gets. */
  isolation: Isolation;
  /** What a task may ask for at most (placement.ts); RunTask refuses more as ECS does. */
  hostCapacity: HostCapacity;
  /** tini-static on the host, bind-mounted as /init. */
  init?: string;
  /** Where berth-managed volumes live (DATA/runner/volumes): task-scoped ones under
   * tasks/<taskId>/<name>, deleted with the task; shared ones under shared/<name>. */
  volumesRoot: string;
  /** What the operator allows of the host (host paths, host network); by default nothing. */
  hostAccess?: HostAccess;
  /** Variables berth adds to a container (secrets, task role credentials, metadata); a throw fails the start. */
  environment?: (task: Task, def: TaskDefinition, c: ContainerDefinition) => Promise<Record<string, string>>;
  /** Called once when a task reaches STOPPED (to revoke its credentials, ...). */
  onStopped?: (task: Task) => void;
  /** How long STOPPED tasks stay describable; ECS keeps them about an hour. */
  stoppedRetentionMs?: number;
  /** How long a clientToken answers the same tasks; 24 h as ECS. */
  clientTokenMs?: number;
  logMaxBytes?: number;
  now?: () => number;
}

interface Live {
  stored: StoredTask;
  images: Map<string, PreparedImage>;
  healthTimers: Map<string, NodeJS.Timeout>;
  /** Wakes the launch loop when a container changes state. */
  changed: { wait: Promise<void>; wake: () => void };
  stopping?: Promise<void>;
  /** The launch in progress; a stop waits for it to notice desiredStatus and return. */
  launching?: Promise<void>;
  finished: boolean;
}

const OOM_REASON = 'OutOfMemoryError: Container killed due to memory usage';

function signal(): { wait: Promise<void>; wake: () => void } {
  let wake!: () => void;
  const wait = new Promise<void>((r) => {
    wake = r;
  });
  return { wait, wake };
}

/** CMD / CMD-SHELL as ECS takes them, to an argv for `exec`. */
export function healthArgv(h: HealthCheck): string[] {
  const [kind, ...rest] = h.command;
  if (kind === 'CMD-SHELL') return ['/bin/sh', '-c', rest.join(' ')];
  if (kind === 'CMD') return rest;
  return h.command; // task-definitions.ts rejects other forms; a bare command runs as CMD
}

/** The container definition with RunTask's containerOverrides applied. */
export function applyOverride(c: ContainerDefinition, o: ContainerOverride | undefined): ContainerDefinition {
  if (!o) return c;
  const env = new Map(c.environment.map((e) => [e.name, e.value]));
  for (const e of o.environment ?? []) env.set(e.name, e.value);
  return {
    ...c,
    ...(o.command && { command: o.command }),
    environment: [...env].map(([name, value]) => ({ name, value })),
    ...(o.cpu !== undefined && { cpu: o.cpu }),
    ...(o.memory !== undefined && { memory: o.memory }),
    ...(o.memoryReservation !== undefined && { memoryReservation: o.memoryReservation }),
  };
}

/** Task health from its essential containers' health, as ECS defines it. */
export function taskHealth(containers: readonly TaskContainer[]): HealthStatus {
  const checked = containers.filter((c) => c.essential && c.healthStatus !== undefined);
  if (checked.length === 0) return 'UNKNOWN';
  if (checked.some((c) => c.healthStatus === 'UNHEALTHY')) return 'UNHEALTHY';
  return checked.every((c) => c.healthStatus === 'HEALTHY') ? 'HEALTHY' : 'UNKNOWN';
}

const order: Record<TaskStatus, number> = {
  PROVISIONING: 0,
  PENDING: 1,
  ACTIVATING: 2,
  RUNNING: 3,
  DEACTIVATING: 4,
  STOPPING: 5,
  DEPROVISIONING: 6,
  STOPPED: 7,
};

export interface TaskManagerImpl extends TaskManager {
  /** Loads persisted tasks and reconciles them with the runtime; call once before serving. */
  start(): Promise<void>;
  /** Stops timers (not the containers: they keep running, and a restart adopts them). */
  close(): Promise<void>;
  /** The runtime id of a task's container, for logs. */
  runtimeId(taskArn: string, containerName: string): string | undefined;
  /** Resolves when the task reaches STOPPED. */
  stopped(taskArn: string): Promise<Task>;
  /** The task a secret or credentials request comes from. */
  stored(taskArn: string): StoredTask | undefined;
  storedById(taskId: string): StoredTask | undefined;
}

export function createTaskManager(opts: TaskManagerOptions): TaskManagerImpl {
  const now = opts.now ?? Date.now;
  const seconds = () => now() / 1000;
  const log = opts.log.child({ component: 'tasks' });
  const live = new Map<string, Live>();
  const listeners = new Set<TaskListener>();
  const stoppedWaiters = new Map<string, ((t: Task) => void)[]>();
  const tokens = new Map<string, { arns: string[]; at: number }>();
  const retentionMs = opts.stoppedRetentionMs ?? 3600_000;
  const tokenMs = opts.clientTokenMs ?? 86400_000;
  let closed = false;
  const hostAccess = opts.hostAccess ?? createHostAccess(denyAllHostAccess);
  const volumes = createTaskVolumes({
    root: opts.volumesRoot,
    idMapping: opts.isolation.idMapping,
    hostAccess,
    log,
  });

  const taskId = (arn: string) => arn.slice(arn.lastIndexOf('/') + 1);
  const snapshot = (t: Task): Task => structuredClone(t);

  function persist(l: Live): void {
    l.stored.task.version += 1;
    opts.records.save(taskId(l.stored.task.taskArn), l.stored).catch((err) => {
      log.error({ err, task: l.stored.task.taskArn }, 'cannot persist task state');
    });
    const copy = snapshot(l.stored.task);
    for (const fn of listeners) {
      try {
        fn(copy);
      } catch (err) {
        log.error({ err }, 'task listener failed');
      }
    }
    l.changed.wake();
    l.changed = signal();
  }

  function setStatus(l: Live, status: TaskStatus): void {
    const t = l.stored.task;
    if (order[status] <= order[t.lastStatus]) return;
    t.lastStatus = status;
    if (status === 'RUNNING') t.startedAt ??= seconds();
    if (status === 'STOPPED') t.stoppedAt = seconds();
  }

  function container(l: Live, name: string): TaskContainer {
    const c = l.stored.task.containers.find((x) => x.name === name);
    if (!c) throw new Error(`task ${l.stored.task.taskArn} has no container ${name}`);
    return c;
  }

  function definitionOf(l: Live, name: string): ContainerDefinition {
    const c = l.stored.definition.containerDefinitions.find((x) => x.name === name)!;
    return applyOverride(
      c,
      l.stored.task.overrides.containerOverrides?.find((o) => o.name === name),
    );
  }

  // --- creating -------------------------------------------------------------------------------

  function newTask(req: RunTaskRequest, pinned: Record<string, string>): Live {
    const id = randomBytes(16).toString('hex');
    const cluster = req.clusterArn.slice(req.clusterArn.lastIndexOf('/') + 1);
    const taskArn = `arn:aws:ecs:${opts.region}:${opts.accountId}:task/${cluster}/${id}`;
    const def = req.taskDefinition;
    const task: Task = {
      taskArn,
      clusterArn: req.clusterArn,
      taskDefinitionArn: def.taskDefinitionArn,
      group: req.group ?? (req.serviceName ? `service:${req.serviceName}` : `family:${def.family}`),
      ...(req.startedBy !== undefined && { startedBy: req.startedBy }),
      lastStatus: 'PROVISIONING',
      desiredStatus: 'RUNNING',
      healthStatus: 'UNKNOWN',
      containers: def.containerDefinitions.map((c) => {
        const o = req.overrides?.containerOverrides?.find((x) => x.name === c.name);
        const eff = applyOverride(c, o);
        return {
          containerArn: `arn:aws:ecs:${opts.region}:${opts.accountId}:container/${cluster}/${id}/${randomUUID()}`,
          taskArn,
          name: c.name,
          image: c.image,
          runtimeId: `${id}-${c.name}`,
          lastStatus: 'PENDING',
          networkBindings: [],
          essential: c.essential,
          cpu: String(eff.cpu),
          ...(eff.memory !== undefined && { memory: String(eff.memory) }),
          ...(eff.memoryReservation !== undefined && { memoryReservation: String(eff.memoryReservation) }),
          ...(c.healthCheck && { healthStatus: 'UNKNOWN' as const }),
        };
      }),
      overrides: req.overrides ?? {},
      ...((req.overrides?.cpu ?? def.cpu) !== undefined && { cpu: req.overrides?.cpu ?? def.cpu }),
      ...((req.overrides?.memory ?? def.memory) !== undefined && {
        memory: req.overrides?.memory ?? def.memory,
      }),
      launchType: 'EC2',
      version: 0,
      createdAt: seconds(),
      ...(req.serviceName !== undefined && { serviceName: req.serviceName }),
      ...(req.deploymentId !== undefined && { deploymentId: req.deploymentId }),
      ...(req.tags && { tags: req.tags }),
    };
    const l: Live = {
      stored: {
        task,
        definition: def,
        pinned,
        stopSignals: {},
        ...(req.clientToken !== undefined && { clientToken: req.clientToken }),
      },
      images: new Map(),
      healthTimers: new Map(),
      changed: signal(),
      finished: false,
    };
    live.set(taskArn, l);
    return l;
  }

  /** Resolves each container's image to a digest once, so every task of a run gets the same bytes. */
  async function pinImages(def: TaskDefinition, given: Record<string, string> | undefined) {
    const pinned: Record<string, string> = {};
    for (const c of def.containerDefinitions) {
      const ref = parseImageRef(given?.[c.name] ?? c.image, opts.ownHosts);
      pinned[c.name] = pinnedRef(ref.repository, ref.digest ?? (await opts.images.resolve(ref)));
    }
    return pinned;
  }

  // --- launching ------------------------------------------------------------------------------

  async function launch(l: Live): Promise<void> {
    const t = l.stored.task;
    const def = l.stored.definition;
    try {
      setStatus(l, 'PENDING');
      persist(l);
      const ports = def.containerDefinitions.flatMap((c) =>
        c.portMappings.map((p) => ({
          containerPort: p.containerPort,
          hostPort: p.hostPort,
          protocol: p.protocol,
        })),
      );
      l.stored.network = await opts.networks.setup(taskId(t.taskArn), def.networkMode, ports, hostnameOf(t));
      for (const c of t.containers) {
        const cd = def.containerDefinitions.find((x) => x.name === c.name)!;
        c.networkBindings = l.stored.network.bindings.filter((b) =>
          cd.portMappings.some((p) => p.containerPort === b.containerPort && p.protocol === b.protocol),
        );
      }
      t.pullStartedAt = seconds();
      persist(l);
      for (const c of t.containers) {
        if (l.stored.task.desiredStatus === 'STOPPED') return;
        const ref = parseImageRef(l.stored.pinned[c.name] ?? c.image, opts.ownHosts);
        try {
          const img = await opts.images.prepare(ref);
          l.images.set(c.name, img);
          c.imageDigest = img.digest;
        } catch (err) {
          throw new TaskLaunchError(`CannotPullContainerError: ${c.image}: ${(err as ImageError).message}`, {
            cause: err,
          });
        }
      }
      t.pullStoppedAt = seconds();
      setStatus(l, 'ACTIVATING');
      persist(l);
      await startInOrder(l);
    } catch (err) {
      log.warn({ err, task: t.taskArn }, 'task failed to start');
      for (const c of t.containers)
        if (c.lastStatus === 'PENDING') {
          c.lastStatus = 'STOPPED';
          c.reason ??= (err as Error).message;
        }
      if (t.desiredStatus === 'RUNNING') {
        t.stopCode = 'TaskFailedToStart';
        t.stoppedReason = (err as Error).message;
      }
      // Not awaited: the stop waits for this launch to return.
      void requestStop(l, t.stopCode ?? 'TaskFailedToStart', t.stoppedReason ?? (err as Error).message);
    }
  }

  function hostnameOf(t: Task): string {
    return taskId(t.taskArn).slice(0, 12);
  }

  /** Starts containers as their dependsOn conditions allow; a condition that can no longer hold
   * stops the container (and, if essential, the task) with the reason. */
  async function startInOrder(l: Live): Promise<void> {
    const t = l.stored.task;
    const def = l.stored.definition;
    for (;;) {
      if (t.desiredStatus === 'STOPPED') return;
      const pending = t.containers.filter((c) => c.lastStatus === 'PENDING' && !l.stored.stopSignals[c.name]);
      if (pending.length === 0) break;
      let progressed = false;
      for (const c of pending) {
        const deps = def.containerDefinitions.find((x) => x.name === c.name)!.dependsOn ?? [];
        const verdicts = deps.map((d) => dependencyState(container(l, d.containerName), d.condition));
        const failed = deps.find((_d, i) => verdicts[i] === 'never');
        if (failed) {
          c.lastStatus = 'STOPPED';
          c.reason = `DependencyConditionNotMet: ${failed.containerName} did not reach ${failed.condition}`;
          progressed = true;
          persist(l);
          if (c.essential) {
            void requestStop(l, 'TaskFailedToStart', c.reason);
            return;
          }
          continue;
        }
        if (verdicts.every((v) => v === 'met')) {
          await startContainer(l, c);
          progressed = true;
        }
      }
      if (t.containers.every((c) => c.lastStatus !== 'PENDING' || l.stored.stopSignals[c.name])) break;
      if (!progressed) {
        const timeout = Math.max(
          ...pending.map((c) => def.containerDefinitions.find((x) => x.name === c.name)!.startTimeout ?? 0),
        );
        const waited = l.changed.wait;
        if (timeout > 0) {
          const timer = new Promise<'timeout'>((r) => setTimeout(r, timeout * 1000, 'timeout').unref());
          if ((await Promise.race([waited, timer])) === 'timeout') {
            void requestStop(
              l,
              'TaskFailedToStart',
              `dependencies of ${pending.map((c) => c.name).join(', ')} not met within startTimeout`,
            );
            return;
          }
        } else await waited;
      }
      if (t.lastStatus === 'ACTIVATING' && t.containers.every((c) => c.lastStatus !== 'PENDING')) break;
    }
    if (t.desiredStatus === 'RUNNING' && t.lastStatus === 'ACTIVATING') {
      setStatus(l, 'RUNNING');
      persist(l);
    }
  }

  function dependencyState(dep: TaskContainer, condition: string): 'met' | 'wait' | 'never' {
    switch (condition) {
      case 'START':
        return dep.lastStatus === 'PENDING' ? 'wait' : 'met';
      case 'COMPLETE':
        return dep.lastStatus === 'STOPPED' ? 'met' : 'wait';
      case 'SUCCESS':
        if (dep.lastStatus !== 'STOPPED') return 'wait';
        return dep.exitCode === 0 ? 'met' : 'never';
      case 'HEALTHY':
        if (dep.healthStatus === 'HEALTHY') return 'met';
        return dep.lastStatus === 'STOPPED' || dep.healthStatus === 'UNHEALTHY' ? 'never' : 'wait';
      default:
        return 'never';
    }
  }

  async function startContainer(l: Live, c: TaskContainer): Promise<void> {
    const t = l.stored.task;
    const cd = definitionOf(l, c.name);
    const img = l.images.get(c.name)!;
    const net = l.stored.network!;
    const extraEnv = opts.environment ? await opts.environment(t, l.stored.definition, cd) : {};
    const held: StagedHostPath[] = [];
    try {
      const built = buildRuntimeSpec({
        imageConfig: img.config,
        container: cd,
        task: {
          taskId: taskId(t.taskArn),
          hostname: hostnameOf(t),
          networkMode: l.stored.definition.networkMode,
          ...(net.netnsPath !== undefined && { netnsPath: net.netnsPath }),
          ...(net.usernsPath !== undefined && { usernsPath: net.usernsPath }),
          ...(t.cpu !== undefined && { cpu: t.cpu }),
          ...(t.memory !== undefined && { memory: t.memory }),
        },
        rootfsPath: 'rootfs',
        ...(img.passwd !== undefined && { passwd: img.passwd }),
        ...(img.group !== undefined && { group: img.group }),
        hostLimits: opts.hostLimits,
        isolation: opts.isolation,
        extraEnv,
        ...(opts.init !== undefined && { init: { path: opts.init } }),
        ...(net.resolvConfPath !== undefined && { resolvConfPath: net.resolvConfPath }),
        ...(net.hostsPath !== undefined && { hostsPath: net.hostsPath }),
        ...(net.hostnamePath !== undefined && { hostnamePath: net.hostnamePath }),
        volumeMounts: await volumes.mounts(taskId(t.taskArn), l.stored.definition, cd, held),
      });
      for (const w of built.warnings) log.info({ task: t.taskArn, container: c.name }, w);
      l.stored.stopSignals[c.name] = built.stopSignal;
      await opts.executor.start({
        id: c.runtimeId,
        spec: built.spec,
        layers: img.layers,
        readonlyRootfs: cd.readonlyRootFilesystem === true,
        cgroup: built.taskCgroup,
        ...(opts.logMaxBytes !== undefined && { logMaxBytes: opts.logMaxBytes }),
      });
    } finally {
      // The runtime has made its mounts (or failed): the staged host paths are no longer needed.
      for (const h of held) await h.release();
    }
    c.lastStatus = 'RUNNING';
    persist(l);
    watch(l, c);
  }

  /** Follows a running container: its exit, and its health checks. */
  function watch(l: Live, c: TaskContainer): void {
    const cd = definitionOf(l, c.name);
    if (cd.healthCheck) scheduleHealth(l, c, cd.healthCheck, now());
    opts.executor.wait(c.runtimeId).then(
      (exit) => onExit(l, c, exit),
      (err) => {
        // The executor rejects its waiters when berth stops: the container runs on under its
        // monitor and the next start adopts it, so this is no exit (recording one would stop the
        // task, killing the container, on every graceful restart).
        if (closed) return;
        log.error({ err, task: l.stored.task.taskArn, container: c.name }, 'lost track of a container');
        onExit(l, c, undefined, `berth lost track of the container: ${(err as Error).message}`);
      },
    );
  }

  function onExit(l: Live, c: TaskContainer, exit: ExitStatus | undefined, reason?: string): void {
    const timer = l.healthTimers.get(c.name);
    if (timer) clearTimeout(timer);
    l.healthTimers.delete(c.name);
    if (c.lastStatus === 'STOPPED') return;
    c.lastStatus = 'STOPPED';
    if (exit) c.exitCode = exit.exitCode;
    if (exit?.oomKilled) c.reason = OOM_REASON;
    else if (reason) c.reason = reason;
    const t = l.stored.task;
    persist(l);
    if (t.desiredStatus === 'RUNNING' && c.essential) {
      const why = exit?.oomKilled
        ? `Essential container in task exited: ${c.name} ${OOM_REASON}`
        : 'Essential container in task exited';
      void requestStop(l, 'EssentialContainerExited', why);
    } else if (t.containers.every((x) => x.lastStatus === 'STOPPED')) {
      // Every container finished (non-essential ones after the essential ones, say).
      void requestStop(
        l,
        t.stopCode ?? 'EssentialContainerExited',
        t.stoppedReason ?? 'All containers exited',
      );
    }
  }

  function scheduleHealth(l: Live, c: TaskContainer, h: HealthCheck, startedAt: number, failures = -1): void {
    // The first probe runs one second after the start (not a full interval later), so a service
    // rollout is gated by health promptly; later probes follow the interval. failures -1: no probe yet.
    const delay = failures < 0 ? 1000 : h.interval * 1000;
    const timer = setTimeout(async () => {
      if (c.lastStatus !== 'RUNNING' || closed) return;
      let ok = false;
      try {
        const r = await opts.executor.exec(c.runtimeId, healthArgv(h), h.timeout * 1000);
        ok = !r.timedOut && r.exitCode === 0;
      } catch {
        ok = false;
      }
      if (c.lastStatus !== 'RUNNING' || closed) return;
      // Failures inside the start period do not count (ECS's startPeriod); a success always does.
      const inStartPeriod = now() - startedAt < (h.startPeriod ?? 0) * 1000;
      const count = ok ? 0 : inStartPeriod ? Math.max(failures, 0) : Math.max(failures, 0) + 1;
      const status: HealthStatus = ok ? 'HEALTHY' : count >= h.retries ? 'UNHEALTHY' : c.healthStatus!;
      if (status !== c.healthStatus) {
        c.healthStatus = status;
        l.stored.task.healthStatus = taskHealth(l.stored.task.containers);
        persist(l);
      }
      scheduleHealth(l, c, h, startedAt, count);
    }, delay);
    timer.unref();
    l.healthTimers.set(c.name, timer);
  }

  // --- stopping -------------------------------------------------------------------------------

  function requestStop(l: Live, code: StopCode, reason: string): Promise<void> {
    const t = l.stored.task;
    if (t.desiredStatus === 'RUNNING') {
      t.desiredStatus = 'STOPPED';
      t.stopCode ??= code;
      t.stoppedReason ??= reason;
      t.stoppingAt = seconds();
    }
    l.stopping ??= finishStop(l);
    return l.stopping;
  }

  async function finishStop(l: Live): Promise<void> {
    const t = l.stored.task;
    if (order[t.lastStatus] < order.DEACTIVATING) setStatus(l, 'DEACTIVATING');
    persist(l);
    setStatus(l, 'STOPPING');
    persist(l);
    // Wait for a launch still in progress to notice desiredStatus and return.
    await l.launching;
    await Promise.all(
      t.containers.map(async (c) => {
        if (c.lastStatus !== 'RUNNING') return;
        const cd = definitionOf(l, c.name);
        try {
          const exit = await opts.executor.stop(
            c.runtimeId,
            l.stored.stopSignals[c.name] ?? 'SIGTERM',
            cd.stopTimeout ?? DEFAULT_STOP_TIMEOUT_SECONDS,
          );
          onExitQuiet(l, c, exit);
        } catch (err) {
          log.error({ err, task: t.taskArn, container: c.name }, 'cannot stop container');
          onExitQuiet(l, c, undefined, `cannot stop: ${(err as Error).message}`);
        }
      }),
    );
    for (const c of t.containers) if (c.lastStatus === 'PENDING') c.lastStatus = 'STOPPED';
    setStatus(l, 'DEPROVISIONING');
    persist(l);
    for (const c of t.containers) {
      await opts.executor.remove(c.runtimeId).catch((err) => {
        log.warn({ err, container: c.runtimeId }, 'cannot remove container');
      });
    }
    await opts.networks.teardown(taskId(t.taskArn)).catch((err) => {
      log.warn({ err, task: t.taskArn }, 'cannot tear down the task network');
    });
    await volumes.removeTask(taskId(t.taskArn));
    for (const c of t.containers) c.networkBindings = [];
    setStatus(l, 'STOPPED');
    l.finished = true;
    persist(l);
    const copy = snapshot(t);
    for (const w of stoppedWaiters.get(t.taskArn) ?? []) w(copy);
    stoppedWaiters.delete(t.taskArn);
    try {
      opts.onStopped?.(copy);
    } catch (err) {
      log.error({ err }, 'onStopped failed');
    }
  }

  /** Records an exit seen while stopping, without starting another stop. */
  function onExitQuiet(l: Live, c: TaskContainer, exit: ExitStatus | undefined, reason?: string): void {
    const timer = l.healthTimers.get(c.name);
    if (timer) clearTimeout(timer);
    if (c.lastStatus === 'STOPPED') return;
    c.lastStatus = 'STOPPED';
    if (exit) c.exitCode = exit.exitCode;
    if (exit?.oomKilled) c.reason = OOM_REASON;
    else if (reason) c.reason = reason;
  }

  // --- restart --------------------------------------------------------------------------------

  async function reconcile(): Promise<void> {
    const stored = await opts.records.load((id, err) => log.error({ err, id }, 'unreadable task record'));
    const runtime = new Map((await opts.executor.list()).map((r) => [r.id, r]));
    const known = new Set<string>();
    const cutoff = now() - retentionMs;
    for (const s of stored) {
      const t = s.task;
      for (const c of t.containers) known.add(c.runtimeId);
      if (t.lastStatus === 'STOPPED') {
        if ((t.stoppedAt ?? 0) * 1000 < cutoff) {
          await opts.records.remove(taskId(t.taskArn));
          for (const c of t.containers) await opts.executor.removeLogs(c.runtimeId).catch(() => {});
        } else
          live.set(t.taskArn, {
            stored: s,
            images: new Map(),
            healthTimers: new Map(),
            changed: signal(),
            finished: true,
          });
        if (s.clientToken) tokens.set(s.clientToken, { arns: [t.taskArn], at: t.createdAt * 1000 });
        continue;
      }
      const l: Live = {
        stored: s,
        images: new Map(),
        healthTimers: new Map(),
        changed: signal(),
        finished: false,
      };
      live.set(t.taskArn, l);
      if (s.clientToken) tokens.set(s.clientToken, { arns: [t.taskArn], at: t.createdAt * 1000 });
      const startedAny = t.containers.some((c) => c.lastStatus !== 'PENDING');
      for (const c of t.containers) {
        if (c.lastStatus !== 'RUNNING') continue;
        const r = runtime.get(c.runtimeId);
        if (r?.status === 'running') {
          log.info({ task: t.taskArn, container: c.name }, 'adopted a running container');
          watch(l, c);
        } else if (r?.exit) onExitQuiet(l, c, r.exit);
        else onExitQuiet(l, c, undefined, 'the container was gone when berth restarted');
      }
      const essentialDown = t.containers.some((c) => c.essential && c.lastStatus === 'STOPPED');
      // A task started under a laxer config (a host path or the host network since withdrawn)
      // keeps nothing the operator has taken back: it is stopped, and a service's replacement is
      // refused at launch like any new task (services.ts records why in its events).
      const withdrawn = t.desiredStatus === 'RUNNING' ? hostAccess.problem(s.definition) : undefined;
      if (t.desiredStatus === 'STOPPED')
        void requestStop(l, t.stopCode ?? 'UserInitiated', t.stoppedReason ?? 'stopped');
      else if (order[t.lastStatus] < order.RUNNING) {
        // It was still starting: carrying on could start a container twice, so stop it cleanly
        // (a service replaces it).
        void requestStop(
          l,
          'TaskFailedToStart',
          startedAny
            ? 'berth restarted while the task was starting'
            : 'berth restarted before the task started',
        );
      } else if (essentialDown) {
        const c = t.containers.find((x) => x.essential && x.lastStatus === 'STOPPED')!;
        void requestStop(
          l,
          'EssentialContainerExited',
          c.reason === OOM_REASON
            ? `Essential container in task exited: ${c.name} ${OOM_REASON}`
            : 'Essential container in task exited',
        );
      } else if (withdrawn) {
        log.warn(
          { task: t.taskArn, reason: withdrawn },
          'stopping a task the configuration no longer allows',
        );
        void requestStop(
          l,
          'UserInitiated',
          `berth's configuration no longer allows this task: ${withdrawn}`,
        );
      } else persist(l);
    }
    // Containers of tasks berth has no record of (a crash between start and persist): stop them.
    for (const r of runtime.values()) {
      if (known.has(r.id)) continue;
      log.warn({ container: r.id }, 'removing a container no task owns');
      if (r.status === 'running') await opts.executor.stop(r.id, 'SIGKILL', 0).catch(() => {});
      await opts.executor.remove(r.id).catch(() => {});
    }
    const liveIds = new Set(
      [...live.values()].filter((l) => !l.finished).map((l) => taskId(l.stored.task.taskArn)),
    );
    // Best effort: a host where networks cannot be inspected (no iptables, not root) still serves.
    const swept = await opts.networks.sweep(liveIds).catch((err) => {
      log.warn({ err }, 'could not sweep task networks left by an earlier run');
      return [] as string[];
    });
    if (swept.length > 0) log.info({ tasks: swept }, 'tore down networks no task uses');
    await volumes.sweep(liveIds);
  }

  function prune(): void {
    const cutoff = now() - retentionMs;
    for (const [arn, l] of live) {
      if (l.finished && (l.stored.task.stoppedAt ?? 0) * 1000 < cutoff) {
        live.delete(arn);
        void opts.records.remove(taskId(arn)).catch(() => {});
        // The task can no longer be described, so its logs cannot be asked for either.
        for (const c of l.stored.task.containers) void opts.executor.removeLogs(c.runtimeId).catch(() => {});
      }
    }
    for (const [token, v] of tokens) if (v.at < now() - tokenMs) tokens.delete(token);
  }
  const pruneTimer = setInterval(prune, 60_000);
  pruneTimer.unref();

  return {
    start: reconcile,

    async close() {
      closed = true;
      clearInterval(pruneTimer);
      for (const l of live.values()) for (const t of l.healthTimers.values()) clearTimeout(t);
      await opts.records.flush();
    },

    async run(req) {
      if (req.clientToken !== undefined) {
        const prior = tokens.get(req.clientToken);
        if (prior && prior.at >= now() - tokenMs) {
          const tasks = prior.arns.map((a) => live.get(a)).filter((l) => l !== undefined);
          return { tasks: tasks.map((l) => snapshot(l.stored.task)), failures: [] };
        }
      }
      // Every way to start a task comes through here (RunTask, services, hooks): a definition
      // registered under a laxer config does not run under this one. ClientException, as ECS.
      hostAccess.admit(req.taskDefinition);
      const failures: RunTaskFailure[] = [];
      const misfit = placementFailure(
        {
          ...((req.overrides?.memory ?? req.taskDefinition.memory)
            ? { taskMemory: Number(req.overrides?.memory ?? req.taskDefinition.memory) }
            : {}),
          ...((req.overrides?.cpu ?? req.taskDefinition.cpu)
            ? { taskCpu: Number(req.overrides?.cpu ?? req.taskDefinition.cpu) }
            : {}),
          containers: req.taskDefinition.containerDefinitions.map((c) =>
            applyOverride(
              c,
              req.overrides?.containerOverrides?.find((o) => o.name === c.name),
            ),
          ),
        },
        opts.hostCapacity,
      );
      if (misfit) {
        // As ECS: no task, a failure naming the container instance that could not take it.
        const cluster = req.clusterArn.slice(req.clusterArn.lastIndexOf('/') + 1);
        return {
          tasks: [],
          failures: [
            {
              arn: containerInstanceArn(opts.region, opts.accountId, cluster),
              reason: misfit.reason,
              detail: misfit.detail,
            },
          ],
        };
      }
      let pinned: Record<string, string>;
      try {
        pinned = await pinImages(req.taskDefinition, req.pinnedImages);
      } catch (err) {
        // As ECS: the tasks exist, and stop at once with the pull error.
        pinned = {};
        const made = Array.from({ length: req.count }, () => newTask(req, pinned));
        for (const l of made) {
          const reason = `CannotPullContainerError: ${(err as Error).message}`;
          for (const c of l.stored.task.containers) {
            c.lastStatus = 'STOPPED';
            c.reason = reason;
          }
          l.stored.task.stopCode = 'TaskFailedToStart';
          l.stored.task.stoppedReason = reason;
          void requestStop(l, 'TaskFailedToStart', reason);
        }
        if (req.clientToken !== undefined)
          tokens.set(req.clientToken, { arns: made.map((l) => l.stored.task.taskArn), at: now() });
        return { tasks: made.map((l) => snapshot(l.stored.task)), failures };
      }
      const made = Array.from({ length: req.count }, () => newTask(req, pinned));
      if (req.clientToken !== undefined)
        tokens.set(req.clientToken, { arns: made.map((l) => l.stored.task.taskArn), at: now() });
      // Persist before answering: a task RunTask reported must survive a crash.
      await Promise.all(made.map((l) => opts.records.save(taskId(l.stored.task.taskArn), l.stored)));
      const out = made.map((l) => snapshot(l.stored.task));
      for (const l of made) l.launching = launch(l);
      return { tasks: out, failures };
    },

    async stop(taskArn, code, reason) {
      const l = live.get(taskArn);
      if (!l) throw new TaskLaunchError(`task ${taskArn} not found`);
      void requestStop(l, code, reason);
      return snapshot(l.stored.task);
    },

    get(taskArn) {
      const l = live.get(taskArn);
      return l ? snapshot(l.stored.task) : undefined;
    },

    list(filter: ListTasksFilter) {
      const out: Task[] = [];
      for (const l of live.values()) {
        const t = l.stored.task;
        if (t.clusterArn !== filter.clusterArn) continue;
        if (filter.family !== undefined && l.stored.definition.family !== filter.family) continue;
        if (filter.serviceName !== undefined && t.serviceName !== filter.serviceName) continue;
        if (filter.startedBy !== undefined && t.startedBy !== filter.startedBy) continue;
        if ((filter.desiredStatus ?? 'RUNNING') !== t.desiredStatus) continue;
        out.push(snapshot(t));
      }
      return out.sort((a, b) => a.createdAt - b.createdAt || a.taskArn.localeCompare(b.taskArn));
    },

    subscribe(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },

    runtimeId(taskArn, name) {
      return live.get(taskArn)?.stored.task.containers.find((c) => c.name === name)?.runtimeId;
    },

    stopped(taskArn) {
      const l = live.get(taskArn);
      if (!l) return Promise.reject(new TaskLaunchError(`task ${taskArn} not found`));
      if (l.finished) return Promise.resolve(snapshot(l.stored.task));
      return new Promise((resolve) => {
        const list = stoppedWaiters.get(taskArn) ?? [];
        list.push(resolve);
        stoppedWaiters.set(taskArn, list);
      });
    },

    stored(taskArn) {
      return live.get(taskArn)?.stored;
    },

    storedById(id) {
      for (const [arn, l] of live) if (taskId(arn) === id) return l.stored;
      return undefined;
    },
  };
}
