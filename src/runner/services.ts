// The ECS service scheduler: keeps each service at desiredCount tasks, rolls deployments within
// the deployment configuration's bounds, trips the circuit breaker (and rolls back) when a
// deployment's tasks keep failing, and writes ECS-worded service events.
//
// State lives in two places and is never duplicated: what a service *should* be (its record:
// configuration, deployments, pinned images, events, history) is persisted through a ServiceStore;
// what *is* (its tasks) is whatever the TaskManager reports. Every decision is taken afresh from
// the tasks the TaskManager lists, so after a restart, a lost notification or a crash between
// starting tasks and saving the record, the next pass converges without starting duplicates.
//
// A pass (reconcile) runs per service, one at a time per service: after every API call, on every
// task notification for that service, and on an interval (health grace periods and launch
// throttling expire without any notification).
import { randomInt, randomUUID } from 'node:crypto';
import type { Logger } from '../log.ts';
import type { StorageDriver } from '../storage/index.ts';
import { PathNotFoundError } from '../storage/index.ts';
import { failureThreshold, launchDelayMs, type PlannedTask, planRollout } from './deployment-math.ts';
import { EcsError, ecsMessages } from './ecs-protocol.ts';
import type {
  CreateServiceRequest,
  Deployment,
  DeploymentConfiguration,
  Service,
  ServiceEvent,
  ServiceScheduler,
  StopCode,
  Task,
  TaskManager,
  UpdateServiceRequest,
} from './model.ts';
import { DEFAULT_ACCOUNT_ID, type TaskDefinition } from './task-definitions.ts';

/** The service event for a task RunTask could not start: ECS's placement message when the host
 * lacks the memory or CPU (RESOURCE:MEMORY / RESOURCE:CPU), else the error itself. */
export function launchFailureEvent(serviceName: string, failure: { arn?: string; reason: string }): string {
  const lacking = { 'RESOURCE:MEMORY': 'memory', 'RESOURCE:CPU': 'CPU units' }[failure.reason];
  if (lacking === undefined)
    return `(service ${serviceName}) failed to launch a task with (error ${failure.reason}).`;
  const instance = failure.arn?.slice(failure.arn.lastIndexOf('/') + 1) ?? 'local';
  return (
    `(service ${serviceName}) was unable to place a task because no container instance met all of its ` +
    `requirements. The closest matching (container-instance ${instance}) has insufficient ${lacking} available.`
  );
}

export const MAX_SERVICE_EVENTS = 100;
/** Finished deployments kept per service (ECS keeps none; berth keeps this many). */
export const MAX_DEPLOYMENT_HISTORY = 100;
export const DEFAULT_RECONCILE_INTERVAL_MS = 10_000;
/** RunTask's limit per call. */
const MAX_RUN_COUNT = 10;
/** Task ARNs remembered as accounted for (only recently stopped tasks are still listed). */
const MAX_ACCOUNTED_TASKS = 1000;

// --- persistence -------------------------------------------------------------------------------

/** What a service should be, as persisted. */
export interface ServiceRecord {
  service: Service;
  /** Finished (INACTIVE) deployments, newest first, at most MAX_DEPLOYMENT_HISTORY. */
  history: Deployment[];
  /** The task definitions the current deployments (and the rollback target) run, by ARN. */
  taskDefinitions: Record<string, TaskDefinition>;
  /** The last deployment that reached COMPLETED: what a rollback returns to, images pinned. */
  lastCompleted?: {
    deploymentId: string;
    taskDefinitionArn: string;
    pinnedImages: Record<string, string>;
    /** The completed deployment's pull right, which a rollback to it runs on (Deployment.pullPrincipal). */
    pullPrincipal?: string;
  };
  /** Deployments whose images could not be resolved yet (resolution is retried). */
  unresolvedDeployments: string[];
  /**
   * Task ARNs whose stop is accounted for: counted in failedTasks, or stopped by the scheduler
   * itself (whatever exit code the stop produced). No stop is counted twice, or against its will.
   */
  accountedTasks: string[];
  /** Whether "has reached a steady state" was reported since the service last changed. */
  steady: boolean;
}

export interface ServiceStore {
  load(): Promise<ServiceRecord[]>;
  save(record: ServiceRecord): Promise<void>;
}

export const DEFAULT_SERVICE_STORE_PREFIX = '/runner/services';

/**
 * Records as JSON at `<prefix>/<cluster name>/<service name>.json`. ECS names may begin with '-',
 * which the storage path grammar forbids; such a component is written with a leading '~' (a
 * character ECS names cannot contain, so the mapping stays one-to-one).
 */
export function createServiceStore(
  storage: StorageDriver,
  opts: { prefix?: string; log?: Logger } = {},
): ServiceStore {
  const prefix = opts.prefix ?? DEFAULT_SERVICE_STORE_PREFIX;
  const component = (name: string) => (/^[A-Za-z0-9_]/.test(name) ? name : `~${name}`);
  const pathOf = (service: Service) =>
    `${prefix}/${component(clusterNameOf(service.clusterArn))}/${component(service.serviceName)}.json`;

  async function listOrEmpty(path: string): Promise<string[]> {
    try {
      return await storage.list(path);
    } catch (err) {
      if (err instanceof PathNotFoundError) return [];
      throw err;
    }
  }

  return {
    async load() {
      const records: ServiceRecord[] = [];
      for (const clusterDir of await listOrEmpty(prefix)) {
        for (const file of await listOrEmpty(clusterDir)) {
          if (!file.endsWith('.json')) continue;
          try {
            const text = new TextDecoder().decode(await storage.getContent(file));
            records.push(JSON.parse(text) as ServiceRecord);
          } catch (err) {
            // One unreadable record must not keep every other service from being scheduled.
            opts.log?.error({ err, path: file }, 'skipping unreadable service record');
          }
        }
      }
      return records;
    },
    async save(record) {
      await storage.putContent(pathOf(record.service), new TextEncoder().encode(JSON.stringify(record)));
    },
  };
}

// --- the scheduler -----------------------------------------------------------------------------

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
}

export interface ServiceSchedulerDeps {
  tasks: TaskManager;
  store: ServiceStore;
  log: Logger;
  clock?: Clock;
  /** container name -> "repo@sha256:..." for every container; called once per new deployment. */
  resolveImages: (taskDefinition: TaskDefinition) => Promise<Record<string, string>>;
  /** How often every service is reconciled without a notification; 0 turns the timer off. */
  reconcileIntervalMs?: number;
  /** Throws ClientException when the operator's config does not let `taskDefinition` run here. */
  admit?: (taskDefinition: TaskDefinition) => void;
}

export interface RunningServiceScheduler extends ServiceScheduler {
  /** Loads the persisted services, subscribes to task changes, starts the timer, reconciles all. */
  start(): Promise<void>;
  /** Stops listening and the timer; waits for passes in flight. Tasks are left running. */
  close(): Promise<void>;
  /** Runs a pass over one service (or all) and resolves once the scheduler has settled. */
  reconcile(clusterArn?: string, serviceName?: string): Promise<void>;
}

const DEFAULT_DEPLOYMENT_CONFIGURATION: DeploymentConfiguration = {
  maximumPercent: 200,
  minimumHealthyPercent: 100,
  deploymentCircuitBreaker: { enable: false, rollback: false },
};

const SERVICE_NAME = /^[a-zA-Z0-9_-]{1,255}$/;
const MAX_INT32 = 2_147_483_647;
const STOPPED_OR_STOPPING = new Set(['DEACTIVATING', 'STOPPING', 'DEPROVISIONING', 'STOPPED']);
const PENDING = new Set(['PROVISIONING', 'PENDING', 'ACTIVATING']);
/** Stops that mean the task itself failed (and count towards the circuit breaker). */
const FAILURE_STOP_CODES = new Set<StopCode | undefined>(['TaskFailedToStart', 'EssentialContainerExited']);

/** Throttling and retry state, deliberately not persisted: a restart may retry at once. */
interface Volatile {
  consecutiveFailures: number;
  lastFailureAt: number;
  nextResolveAt: number;
  /** Stopped tasks seen in notifications, in case the TaskManager forgets them before the pass. */
  recentlyStopped: Map<string, Task>;
}

interface Entry {
  record: ServiceRecord;
  volatile: Volatile;
  /** The pass or API call holding this service; the next one chains after it. */
  queue: Promise<void>;
  /** A pass is queued and not begun: further requests join it. */
  passQueued: Promise<void> | undefined;
}

export function createServiceScheduler(deps: ServiceSchedulerDeps): RunningServiceScheduler {
  const clock = deps.clock ?? { now: () => Date.now() };
  const log = deps.log;
  const entries = new Map<string, Entry>();
  const keyOf = (clusterArn: string, serviceName: string) => `${clusterArn}\n${serviceName}`;
  let unsubscribe: (() => void) | undefined;
  let timer: ReturnType<typeof setInterval> | undefined;
  let closed = false;

  const nowSeconds = () => Math.floor(clock.now() / 1000);

  function newEntry(record: ServiceRecord): Entry {
    return {
      record,
      volatile: { consecutiveFailures: 0, lastFailureAt: 0, nextResolveAt: 0, recentlyStopped: new Map() },
      queue: Promise.resolve(),
      passQueued: undefined,
    };
  }

  /** Runs fn after everything already queued for this service. */
  function exclusive<T>(entry: Entry, fn: () => Promise<T>): Promise<T> {
    const run = entry.queue.then(fn);
    entry.queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** Queues a pass unless one is already waiting to begin (which will see this change too). */
  function schedulePass(entry: Entry): Promise<void> {
    if (entry.passQueued) return entry.passQueued;
    const pass = exclusive(entry, async () => {
      entry.passQueued = undefined;
      if (closed) return;
      try {
        await reconcileService(entry);
      } catch (err) {
        log.error({ err, service: entry.record.service.serviceArn }, 'service reconcile failed');
      }
    });
    entry.passQueued = pass;
    return pass;
  }

  function entryOrThrow(clusterArn: string, serviceName: string): Entry {
    const entry = entries.get(keyOf(clusterArn, serviceName));
    if (!entry) throw new EcsError('ServiceNotFoundException', ecsMessages.serviceNotFound);
    return entry;
  }

  // --- events and deployments ------------------------------------------------------------------

  function addEvent(record: ServiceRecord, message: string): void {
    const event: ServiceEvent = { id: randomUUID(), createdAt: nowSeconds(), message };
    record.service.events.unshift(event);
    record.service.events.length = Math.min(record.service.events.length, MAX_SERVICE_EVENTS);
    log.info({ service: record.service.serviceArn }, message);
  }

  const tag = (record: ServiceRecord) => `(service ${record.service.serviceName})`;

  /** Adds a PRIMARY deployment; the former PRIMARY becomes ACTIVE and is drained. */
  async function addDeployment(
    entry: Entry,
    taskDefinition: TaskDefinition,
    reason: string,
    pull: { pinnedImages?: Record<string, string>; pullPrincipal?: string | undefined } = {},
  ): Promise<Deployment> {
    const { pinnedImages, pullPrincipal } = pull;
    const { record } = entry;
    const now = nowSeconds();
    const id = newDeploymentId();
    const deployment: Deployment = {
      id,
      status: 'PRIMARY',
      taskDefinition: taskDefinition.taskDefinitionArn,
      pinnedImages: pinnedImages ? { ...pinnedImages } : {},
      desiredCount: record.service.desiredCount,
      pendingCount: 0,
      runningCount: 0,
      failedTasks: 0,
      rolloutState: 'IN_PROGRESS',
      rolloutStateReason: `ECS deployment ${id} in progress.`,
      createdAt: now,
      updatedAt: now,
      reason,
      ...(pullPrincipal !== undefined && { pullPrincipal }),
    };
    for (const d of record.service.deployments) {
      if (d.status === 'PRIMARY') {
        d.status = 'ACTIVE';
        d.updatedAt = now;
      }
    }
    record.service.deployments.unshift(deployment);
    record.service.taskDefinition = taskDefinition.taskDefinitionArn;
    record.taskDefinitions[taskDefinition.taskDefinitionArn] = taskDefinition;
    record.steady = false;
    entry.volatile.consecutiveFailures = 0;
    if (!pinnedImages) await resolveDeploymentImages(entry, deployment);
    return deployment;
  }

  /** Pins the deployment's images; on failure the deployment fails (and may roll back). */
  async function resolveDeploymentImages(entry: Entry, deployment: Deployment): Promise<void> {
    const { record } = entry;
    const taskDefinition = record.taskDefinitions[deployment.taskDefinition];
    const wasUnresolved = record.unresolvedDeployments.includes(deployment.id);
    try {
      if (!taskDefinition) throw new Error(`task definition ${deployment.taskDefinition} is not known`);
      deployment.pinnedImages = await deps.resolveImages(taskDefinition);
      deployment.updatedAt = nowSeconds();
      record.unresolvedDeployments = record.unresolvedDeployments.filter((id) => id !== deployment.id);
      if (wasUnresolved && deployment.rolloutState === 'FAILED') {
        // A registry hiccup is not the deployment's fault: nothing was started, so it starts now.
        deployment.rolloutState = 'IN_PROGRESS';
        deployment.rolloutStateReason = `ECS deployment ${deployment.id} in progress.`;
        addEvent(record, `${tag(record)} (deployment ${deployment.id}) resolved its container images.`);
      }
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      entry.volatile.consecutiveFailures += 1;
      entry.volatile.lastFailureAt = clock.now();
      entry.volatile.nextResolveAt =
        clock.now() + Math.max(5_000, launchDelayMs(entry.volatile.consecutiveFailures));
      if (!wasUnresolved) record.unresolvedDeployments.push(deployment.id);
      if (deployment.rolloutState === 'FAILED') return;
      deployment.rolloutState = 'FAILED';
      deployment.rolloutStateReason = `ECS deployment failed: CannotPullContainerError: ${message}`;
      deployment.updatedAt = nowSeconds();
      addEvent(
        record,
        `${tag(record)} (deployment ${deployment.id}) deployment failed: CannotPullContainerError: ${message}`,
      );
      if (deployment.status === 'PRIMARY') await maybeRollBack(entry, deployment);
    }
  }

  /** With the circuit breaker's rollback on, a new PRIMARY from the last COMPLETED deployment. */
  async function maybeRollBack(entry: Entry, failed: Deployment): Promise<void> {
    const { record } = entry;
    const breaker = record.service.deploymentConfiguration.deploymentCircuitBreaker;
    if (!breaker.enable || !breaker.rollback) return;
    const target = record.lastCompleted;
    const taskDefinition = target && record.taskDefinitions[target.taskDefinitionArn];
    if (!target || !taskDefinition || target.deploymentId === failed.id) {
      addEvent(
        record,
        `${tag(record)} (deployment ${failed.id}) has no completed deployment to roll back to.`,
      );
      return;
    }
    // The same digests the completed deployment ran: a rollback must not pick up a moved tag.
    const rollback = await addDeployment(entry, taskDefinition, `rollback:${failed.id}`, target);
    rollback.rolloutStateReason = `ECS deployment circuit breaker: rolling back to deploymentId ${target.deploymentId}.`;
    addEvent(record, `${tag(record)} rolling back to deployment ${target.deploymentId}.`);
  }

  function recordFailure(
    entry: Entry,
    deployment: Deployment | undefined,
    taskArn: string | undefined,
  ): void {
    const { record } = entry;
    if (deployment && deployment.status === 'PRIMARY') {
      // Only the PRIMARY's failures throttle launches: those are the tasks the scheduler restarts.
      entry.volatile.consecutiveFailures += 1;
      entry.volatile.lastFailureAt = clock.now();
    }
    if (taskArn) accountFor(record, taskArn);
    // Failures after a deployment COMPLETED are ordinary replacements, not a verdict on it.
    if (!deployment || deployment.rolloutState === 'COMPLETED') return;
    deployment.failedTasks += 1;
    deployment.updatedAt = nowSeconds();
  }

  async function checkCircuitBreaker(entry: Entry): Promise<void> {
    const { record } = entry;
    const primary = primaryOf(record.service);
    const breaker = record.service.deploymentConfiguration.deploymentCircuitBreaker;
    if (!primary || !breaker.enable || primary.rolloutState !== 'IN_PROGRESS') return;
    if (primary.failedTasks < failureThreshold(primary.desiredCount)) return;
    primary.rolloutState = 'FAILED';
    primary.rolloutStateReason = 'ECS deployment circuit breaker: tasks failed to start.';
    primary.updatedAt = nowSeconds();
    addEvent(record, `${tag(record)} (deployment ${primary.id}) deployment failed: tasks failed to start.`);
    await maybeRollBack(entry, primary);
  }

  // --- observing tasks -------------------------------------------------------------------------

  function tasksOf(entry: Entry): Task[] {
    const { clusterArn, serviceName } = entry.record.service;
    const byArn = new Map<string, Task>();
    for (const t of entry.volatile.recentlyStopped.values()) byArn.set(t.taskArn, t);
    entry.volatile.recentlyStopped.clear();
    // Both desired statuses asked for explicitly: a ListTasks-like default would hide one of them.
    for (const desiredStatus of ['RUNNING', 'STOPPED'] as const) {
      for (const t of deps.tasks.list({ clusterArn, serviceName, desiredStatus })) byArn.set(t.taskArn, t);
    }
    return [...byArn.values()].filter((t) => t.serviceName === serviceName && t.clusterArn === clusterArn);
  }

  function hasHealthChecks(record: ServiceRecord, task: Task): boolean {
    const deployment = record.service.deployments.find((d) => d.id === task.deploymentId);
    const taskDefinition =
      record.taskDefinitions[deployment?.taskDefinition ?? ''] ??
      record.taskDefinitions[task.taskDefinitionArn];
    if (!taskDefinition) return task.healthStatus !== 'UNKNOWN';
    return taskDefinition.containerDefinitions.some((c) => c.healthCheck !== undefined);
  }

  function isHealthy(record: ServiceRecord, task: Task): boolean {
    if (task.lastStatus !== 'RUNNING' || task.desiredStatus !== 'RUNNING') return false;
    return !hasHealthChecks(record, task) || task.healthStatus === 'HEALTHY';
  }

  function isUnhealthyPastGrace(record: ServiceRecord, task: Task): boolean {
    if (task.healthStatus !== 'UNHEALTHY' || task.desiredStatus !== 'RUNNING') return false;
    const grace = record.service.healthCheckGracePeriodSeconds ?? 0;
    const since = task.startedAt ?? task.createdAt;
    return nowSeconds() - since >= grace;
  }

  function planned(record: ServiceRecord, task: Task): PlannedTask {
    const live = task.lastStatus !== 'STOPPED';
    return {
      taskArn: task.taskArn,
      deploymentId: task.deploymentId,
      live,
      wanted: live && task.desiredStatus === 'RUNNING',
      healthy: isHealthy(record, task),
      unhealthy: live && isUnhealthyPastGrace(record, task),
      createdAt: task.createdAt,
    };
  }

  // --- acting ----------------------------------------------------------------------------------

  async function stopTasks(entry: Entry, arns: string[], reason: string): Promise<string[]> {
    const stopped: string[] = [];
    for (const arn of arns) {
      // Before asking: a task killed at the end of its stop timeout is not a crash.
      accountFor(entry.record, arn);
      try {
        await deps.tasks.stop(arn, 'ServiceSchedulerInitiated', reason);
        stopped.push(arn);
      } catch (err) {
        log.warn({ err, taskArn: arn, service: entry.record.service.serviceArn }, 'could not stop task');
      }
    }
    if (stopped.length > 0) {
      addEvent(
        entry.record,
        `${tag(entry.record)} has stopped ${stopped.length} running tasks: ${stopped.map(taskRef).join(' ')}.`,
      );
    }
    return stopped;
  }

  async function startTasks(entry: Entry, deployment: Deployment, count: number): Promise<void> {
    const { record } = entry;
    const taskDefinition = record.taskDefinitions[deployment.taskDefinition];
    if (!taskDefinition) return;
    let remaining = count;
    while (remaining > 0) {
      const batch = Math.min(remaining, MAX_RUN_COUNT);
      remaining -= batch;
      let started: Task[] = [];
      let failures: { arn?: string; reason: string }[] = [];
      try {
        ({ tasks: started, failures } = await deps.tasks.run({
          clusterArn: record.service.clusterArn,
          taskDefinition,
          count: batch,
          startedBy: deployment.id,
          group: `service:${record.service.serviceName}`,
          pinnedImages: deployment.pinnedImages,
          serviceName: record.service.serviceName,
          deploymentId: deployment.id,
        }));
      } catch (err) {
        const reason = err instanceof Error ? err.message : String(err);
        failures = Array.from({ length: batch }, () => ({ reason }));
      }
      if (started.length > 0) {
        addEvent(
          record,
          `${tag(record)} has started ${started.length} tasks: ${started.map((t) => taskRef(t.taskArn)).join(' ')}.`,
        );
      }
      for (const failure of failures) {
        addEvent(record, launchFailureEvent(record.service.serviceName, failure));
        // A placement failure names the container instance, not a task.
        recordFailure(entry, deployment, failure.arn?.includes(':task/') ? failure.arn : undefined);
      }
      if (failures.length > 0) break; // let throttling and the circuit breaker look first
    }
  }

  // --- one pass --------------------------------------------------------------------------------

  async function reconcileService(entry: Entry): Promise<void> {
    const { record } = entry;
    const { service } = record;
    if (service.status === 'INACTIVE') return;
    const before = JSON.stringify(record);

    // Images first: a PRIMARY without pinned digests cannot start anything.
    const primaryBefore = primaryOf(service);
    if (
      primaryBefore &&
      record.unresolvedDeployments.includes(primaryBefore.id) &&
      clock.now() >= entry.volatile.nextResolveAt
    ) {
      await resolveDeploymentImages(entry, primaryBefore);
    }

    // Failures since the last pass: tasks that failed to start or crashed, counted once each.
    const counted = new Set(record.accountedTasks);
    for (const task of tasksOf(entry)) {
      if (task.lastStatus !== 'STOPPED' || counted.has(task.taskArn)) continue;
      if (!FAILURE_STOP_CODES.has(task.stopCode)) continue;
      recordFailure(
        entry,
        service.deployments.find((d) => d.id === task.deploymentId),
        task.taskArn,
      );
    }
    await checkCircuitBreaker(entry);

    if (service.status === 'DRAINING') {
      await drain(entry);
    } else {
      await roll(entry);
    }
    updateCounts(entry);
    if (JSON.stringify(record) !== before) await deps.store.save(record);
    // A rollback (or a retired deployment) may not cause any task notification: look again.
    if (primaryOf(service) !== primaryBefore) void schedulePass(entry);
  }

  async function roll(entry: Entry): Promise<void> {
    const { record } = entry;
    const { service } = record;
    const primary = primaryOf(service);
    if (!primary) return;
    const tasks = tasksOf(entry);
    const pinned = !record.unresolvedDeployments.includes(primary.id);
    const throttled =
      clock.now() < entry.volatile.lastFailureAt + launchDelayMs(entry.volatile.consecutiveFailures);
    const plan = planRollout({
      desiredCount: service.desiredCount,
      maximumPercent: service.deploymentConfiguration.maximumPercent,
      minimumHealthyPercent: service.deploymentConfiguration.minimumHealthyPercent,
      primaryDeploymentId: primary.id,
      tasks: tasks.map((t) => planned(record, t)),
      canStart: pinned && !throttled,
      canDrain: pinned,
    });

    if (plan.stopUnhealthy.length > 0) {
      const byArn = new Map(tasks.map((t) => [t.taskArn, t]));
      for (const arn of plan.stopUnhealthy) {
        addEvent(record, `${tag(record)} ${taskRef(arn)} failed container health checks.`);
      }
      const stopped = await stopTasks(entry, plan.stopUnhealthy, 'Task failed container health checks');
      for (const arn of stopped) {
        const deployment = service.deployments.find((d) => d.id === byArn.get(arn)?.deploymentId);
        recordFailure(entry, deployment, arn);
      }
      await checkCircuitBreaker(entry);
      if (primaryOf(service) !== primary) return; // rolled back: the next pass plans for the new one
    }
    if (plan.stopSurplus.length > 0) {
      await stopTasks(entry, plan.stopSurplus, `Scaling activity initiated by (deployment ${primary.id})`);
    }
    if (plan.start > 0) await startTasks(entry, primary, plan.start);
    await checkCircuitBreaker(entry);
    settleDeployments(entry);
  }

  /** COMPLETED when the PRIMARY alone serves desiredCount healthy tasks; drained ones retire. */
  function settleDeployments(entry: Entry): void {
    const { record } = entry;
    const { service } = record;
    const primary = primaryOf(service);
    if (!primary) return;
    const tasks = tasksOf(entry);
    const live = tasks.filter((t) => t.lastStatus !== 'STOPPED');
    const now = nowSeconds();

    // Oldest first, so that deployments retired together enter the history in creation order.
    for (const d of [...service.deployments].reverse()) {
      if (d === primary || live.some((t) => t.deploymentId === d.id)) continue;
      retire(record, d, now);
    }

    const primaryWanted = live.filter((t) => t.deploymentId === primary.id && t.desiredStatus === 'RUNNING');
    const healthy = primaryWanted.filter((t) => isHealthy(record, t)).length;
    const othersLive = live.some((t) => t.deploymentId !== primary.id);
    const converged =
      !othersLive && healthy >= service.desiredCount && primaryWanted.length === service.desiredCount;
    if (converged) {
      entry.volatile.consecutiveFailures = 0;
      if (primary.rolloutState === 'IN_PROGRESS' && !record.unresolvedDeployments.includes(primary.id)) {
        primary.rolloutState = 'COMPLETED';
        primary.rolloutStateReason = `ECS deployment ${primary.id} completed.`;
        primary.updatedAt = now;
        record.lastCompleted = {
          deploymentId: primary.id,
          taskDefinitionArn: primary.taskDefinition,
          pinnedImages: { ...primary.pinnedImages },
          ...(primary.pullPrincipal !== undefined && { pullPrincipal: primary.pullPrincipal }),
        };
        addEvent(record, `${tag(record)} (deployment ${primary.id}) deployment completed.`);
      }
      if (!record.steady && service.deployments.length === 1) {
        record.steady = true;
        addEvent(record, `${tag(record)} has reached a steady state.`);
      }
    } else {
      record.steady = false;
    }
    pruneTaskDefinitions(record);
  }

  async function drain(entry: Entry): Promise<void> {
    const { record } = entry;
    const tasks = tasksOf(entry);
    const wanted = tasks.filter((t) => t.lastStatus !== 'STOPPED' && t.desiredStatus === 'RUNNING');
    if (wanted.length > 0) {
      await stopTasks(
        entry,
        wanted.map((t) => t.taskArn),
        'Service deletion initiated by DeleteService',
      );
    }
    // ECS: INACTIVE once every task is stopping or stopped.
    const stillUp = tasksOf(entry).some((t) => !STOPPED_OR_STOPPING.has(t.lastStatus));
    if (stillUp) return;
    const now = nowSeconds();
    for (const d of [...record.service.deployments].reverse()) retire(record, d, now);
    record.service.status = 'INACTIVE';
    pruneTaskDefinitions(record);
  }

  function retire(record: ServiceRecord, deployment: Deployment, now: number): void {
    record.service.deployments = record.service.deployments.filter((d) => d !== deployment);
    deployment.status = 'INACTIVE';
    deployment.desiredCount = 0;
    deployment.runningCount = 0;
    deployment.pendingCount = 0;
    deployment.updatedAt = now;
    record.unresolvedDeployments = record.unresolvedDeployments.filter((id) => id !== deployment.id);
    // Newest first by creation: a deployment may drain after a younger one did.
    const at = record.history.findIndex((d) => d.createdAt < deployment.createdAt);
    record.history.splice(at === -1 ? record.history.length : at, 0, deployment);
    record.history.length = Math.min(record.history.length, MAX_DEPLOYMENT_HISTORY);
  }

  function pruneTaskDefinitions(record: ServiceRecord): void {
    const used = new Set(record.service.deployments.map((d) => d.taskDefinition));
    if (record.lastCompleted) used.add(record.lastCompleted.taskDefinitionArn);
    for (const arn of Object.keys(record.taskDefinitions)) {
      if (!used.has(arn)) delete record.taskDefinitions[arn];
    }
  }

  function updateCounts(entry: Entry): void {
    const { service } = entry.record;
    const live = tasksOf(entry).filter((t) => t.lastStatus !== 'STOPPED');
    const running = (ts: Task[]) => ts.filter((t) => t.lastStatus === 'RUNNING').length;
    const pending = (ts: Task[]) => ts.filter((t) => PENDING.has(t.lastStatus)).length;
    service.runningCount = running(live);
    service.pendingCount = pending(live);
    for (const d of service.deployments) {
      const mine = live.filter((t) => t.deploymentId === d.id);
      d.runningCount = running(mine);
      d.pendingCount = pending(mine);
      // An old deployment's desired count is what the scheduler still keeps of it.
      d.desiredCount =
        d.status === 'PRIMARY'
          ? service.desiredCount
          : mine.filter((t) => t.desiredStatus === 'RUNNING').length;
    }
  }

  // --- API -------------------------------------------------------------------------------------

  function validateCommon(req: { desiredCount?: number; healthCheckGracePeriodSeconds?: number }): void {
    if (req.desiredCount !== undefined && !(Number.isInteger(req.desiredCount) && req.desiredCount >= 0)) {
      throw new EcsError('InvalidParameterException', 'desiredCount must be a non-negative integer.');
    }
    const grace = req.healthCheckGracePeriodSeconds;
    if (grace !== undefined && !(Number.isInteger(grace) && grace >= 0 && grace <= MAX_INT32)) {
      throw new EcsError(
        'InvalidParameterException',
        `healthCheckGracePeriodSeconds must be an integer between 0 and ${MAX_INT32}.`,
      );
    }
  }

  function mergeConfiguration(
    base: DeploymentConfiguration,
    patch: Partial<DeploymentConfiguration> | undefined,
  ): DeploymentConfiguration {
    const merged: DeploymentConfiguration = {
      maximumPercent: patch?.maximumPercent ?? base.maximumPercent,
      minimumHealthyPercent: patch?.minimumHealthyPercent ?? base.minimumHealthyPercent,
      deploymentCircuitBreaker: {
        enable: patch?.deploymentCircuitBreaker?.enable ?? base.deploymentCircuitBreaker.enable,
        rollback: patch?.deploymentCircuitBreaker?.rollback ?? base.deploymentCircuitBreaker.rollback,
      },
    };
    const { maximumPercent: max, minimumHealthyPercent: min } = merged;
    if (!Number.isInteger(min) || min < 0 || min > 100) {
      throw new EcsError(
        'InvalidParameterException',
        'deploymentConfiguration.minimumHealthyPercent must be an integer between 0 and 100.',
      );
    }
    if (!Number.isInteger(max) || max < 100) {
      throw new EcsError(
        'InvalidParameterException',
        'deploymentConfiguration.maximumPercent must be an integer of at least 100.',
      );
    }
    if (max === 100 && min === 100) {
      // Neither a task could be started nor one stopped: a deployment could never progress.
      throw new EcsError(
        'InvalidParameterException',
        'deploymentConfiguration: maximumPercent and minimumHealthyPercent cannot both be 100.',
      );
    }
    return merged;
  }

  function checkTaskDefinition(taskDefinition: TaskDefinition): void {
    if (taskDefinition.status !== 'ACTIVE')
      throw new EcsError('ClientException', 'TaskDefinition is inactive');
    deps.admit?.(taskDefinition);
  }

  function view(entry: Entry): Service {
    return structuredClone(entry.record.service);
  }

  async function create(req: CreateServiceRequest): Promise<Service> {
    if (!SERVICE_NAME.test(req.serviceName)) {
      throw new EcsError(
        'InvalidParameterException',
        'serviceName must be 1-255 letters, numbers, hyphens and underscores.',
      );
    }
    validateCommon(req);
    checkTaskDefinition(req.taskDefinition);
    const configuration = mergeConfiguration(DEFAULT_DEPLOYMENT_CONFIGURATION, req.deploymentConfiguration);
    const key = keyOf(req.clusterArn, req.serviceName);
    const existing = entries.get(key);
    if (existing && existing.record.service.status !== 'INACTIVE') {
      throw new EcsError('InvalidParameterException', 'Creation of service was not idempotent.');
    }
    const now = nowSeconds();
    const { region, accountId, clusterName } = parseClusterArn(req.clusterArn);
    const service: Service = {
      serviceArn: `arn:aws:ecs:${region}:${accountId}:service/${clusterName}/${req.serviceName}`,
      serviceName: req.serviceName,
      clusterArn: req.clusterArn,
      taskDefinition: req.taskDefinition.taskDefinitionArn,
      desiredCount: req.desiredCount,
      runningCount: 0,
      pendingCount: 0,
      status: 'ACTIVE',
      launchType: 'EC2',
      schedulingStrategy: 'REPLICA',
      deploymentConfiguration: configuration,
      deployments: [],
      events: [],
      createdAt: now,
    };
    if (req.healthCheckGracePeriodSeconds !== undefined) {
      service.healthCheckGracePeriodSeconds = req.healthCheckGracePeriodSeconds;
    }
    if (req.createdBy !== undefined) service.createdBy = req.createdBy;
    if (req.tags !== undefined) service.tags = structuredClone(req.tags);
    // A name reused after deletion starts afresh, but keeps the old incarnation's history to read.
    const record: ServiceRecord = {
      service,
      history: existing ? existing.record.history : [],
      taskDefinitions: {},
      unresolvedDeployments: [],
      accountedTasks: existing ? existing.record.accountedTasks : [],
      steady: false,
    };
    const entry = newEntry(record);
    entries.set(key, entry);
    return exclusive(entry, async () => {
      await addDeployment(entry, req.taskDefinition, 'CreateService', { pullPrincipal: req.pullPrincipal });
      await deps.store.save(record);
      void schedulePass(entry);
      return view(entry);
    });
  }

  async function update(req: UpdateServiceRequest): Promise<Service> {
    const entry = entryOrThrow(req.clusterArn, req.serviceName);
    validateCommon(req);
    if (req.taskDefinition) checkTaskDefinition(req.taskDefinition);
    return exclusive(entry, async () => {
      const { record } = entry;
      const { service } = record;
      if (service.status !== 'ACTIVE')
        throw new EcsError('ServiceNotActiveException', ecsMessages.serviceNotActive);
      const primary = primaryOf(service);
      const current = primary && record.taskDefinitions[primary.taskDefinition];
      // A forced redeployment of a definition the config no longer allows would only fail: refused
      // before anything about the service changes.
      if (req.forceNewDeployment && !req.taskDefinition && current) deps.admit?.(current);
      const configuration = mergeConfiguration(service.deploymentConfiguration, req.deploymentConfiguration);
      service.deploymentConfiguration = configuration;
      if (req.healthCheckGracePeriodSeconds !== undefined) {
        service.healthCheckGracePeriodSeconds = req.healthCheckGracePeriodSeconds;
      }
      if (req.desiredCount !== undefined && req.desiredCount !== service.desiredCount) {
        service.desiredCount = req.desiredCount;
        record.steady = false;
        entry.volatile.consecutiveFailures = 0;
      }
      const changed = req.taskDefinition && req.taskDefinition.taskDefinitionArn !== primary?.taskDefinition;
      if (changed || req.forceNewDeployment || !current) {
        const taskDefinition = req.taskDefinition ?? current;
        if (!taskDefinition) throw new EcsError('ClientException', ecsMessages.taskDefinitionNotFound);
        await addDeployment(entry, taskDefinition, req.reason ?? 'UpdateService', {
          pullPrincipal: req.pullPrincipal,
        });
      } else if (primary) {
        primary.desiredCount = service.desiredCount;
        primary.updatedAt = nowSeconds();
      }
      await deps.store.save(record);
      void schedulePass(entry);
      return view(entry);
    });
  }

  async function remove(clusterArn: string, serviceName: string, force: boolean): Promise<Service> {
    const entry = entryOrThrow(clusterArn, serviceName);
    return exclusive(entry, async () => {
      const { record } = entry;
      const { service } = record;
      if (service.status !== 'ACTIVE')
        throw new EcsError('ServiceNotActiveException', ecsMessages.serviceNotActive);
      if (service.desiredCount > 0 && !force) {
        throw new EcsError(
          'InvalidParameterException',
          'The service cannot be stopped while it is scaled above 0.',
        );
      }
      service.desiredCount = 0;
      service.status = 'DRAINING';
      record.steady = false;
      await deps.store.save(record);
      void schedulePass(entry);
      return view(entry);
    });
  }

  function onTaskChange(task: Task): void {
    if (!task.serviceName) return;
    const entry = entries.get(keyOf(task.clusterArn, task.serviceName));
    if (!entry) return;
    if (task.lastStatus === 'STOPPED')
      entry.volatile.recentlyStopped.set(task.taskArn, structuredClone(task));
    void schedulePass(entry);
  }

  async function settleAll(selected: Entry[]): Promise<void> {
    // Passes trigger notifications which queue further passes; wait until none is pending.
    for (;;) {
      await Promise.all(selected.map((e) => schedulePass(e)));
      await Promise.all(selected.map((e) => e.queue));
      if (selected.every((e) => e.passQueued === undefined)) return;
    }
  }

  return {
    create,
    update,
    delete: remove,
    get(clusterArn, serviceName) {
      const entry = entries.get(keyOf(clusterArn, serviceName));
      return entry ? view(entry) : undefined;
    },
    list(clusterArn) {
      // ListServices shows ACTIVE services only; DRAINING and INACTIVE ones are still describable.
      return [...entries.values()]
        .filter((e) => e.record.service.clusterArn === clusterArn && e.record.service.status === 'ACTIVE')
        .map(view);
    },
    history(clusterArn, serviceName) {
      const { record } = entryOrThrow(clusterArn, serviceName);
      return structuredClone([...record.service.deployments, ...record.history]).sort(
        (a, b) => b.createdAt - a.createdAt,
      );
    },
    async start() {
      if (unsubscribe) return;
      for (const record of await deps.store.load()) {
        const key = keyOf(record.service.clusterArn, record.service.serviceName);
        if (!entries.has(key)) entries.set(key, newEntry(record));
      }
      unsubscribe = deps.tasks.subscribe(onTaskChange);
      const interval = deps.reconcileIntervalMs ?? DEFAULT_RECONCILE_INTERVAL_MS;
      if (interval > 0) {
        timer = setInterval(() => {
          for (const entry of entries.values()) void schedulePass(entry);
        }, interval);
        timer.unref();
      }
      await settleAll([...entries.values()]);
    },
    async close() {
      closed = true;
      unsubscribe?.();
      if (timer) clearInterval(timer);
      await Promise.all([...entries.values()].map((e) => e.queue));
    },
    async reconcile(clusterArn, serviceName) {
      const selected = [...entries.values()].filter(
        (e) =>
          (clusterArn === undefined || e.record.service.clusterArn === clusterArn) &&
          (serviceName === undefined || e.record.service.serviceName === serviceName),
      );
      await settleAll(selected);
    },
  };
}

// --- helpers -----------------------------------------------------------------------------------

function accountFor(record: ServiceRecord, taskArn: string): void {
  if (record.accountedTasks.includes(taskArn)) return;
  record.accountedTasks.push(taskArn);
  if (record.accountedTasks.length > MAX_ACCOUNTED_TASKS) record.accountedTasks.shift();
}

function primaryOf(service: Service): Deployment | undefined {
  return service.deployments.find((d) => d.status === 'PRIMARY');
}

/** ECS deployment ids: "ecs-svc/" and 19 digits. */
function newDeploymentId(): string {
  const digits =
    String(randomInt(1, 10)) +
    String(randomInt(0, 1e9)).padStart(9, '0') +
    String(randomInt(0, 1e9)).padStart(9, '0');
  return `ecs-svc/${digits}`;
}

function taskRef(taskArn: string): string {
  return `(task ${taskArn.slice(taskArn.lastIndexOf('/') + 1)})`;
}

function clusterNameOf(clusterArn: string): string {
  return parseClusterArn(clusterArn).clusterName;
}

function parseClusterArn(clusterArn: string): { region: string; accountId: string; clusterName: string } {
  const m = /^arn:[^:]+:ecs:([^:]*):([^:]*):cluster\/(.+)$/.exec(clusterArn);
  if (m) return { region: m[1]!, accountId: m[2]!, clusterName: m[3]! };
  return { region: 'us-east-1', accountId: DEFAULT_ACCOUNT_ID, clusterName: clusterArn };
}
