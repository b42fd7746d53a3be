// Unit tests of the scheduling logic: services.ts drives a small in-test TaskManager whose tasks
// the tests move through their states by hand, one transition at a time, with a fake clock.
// The end-to-end run with real containers lives in test/.
import { describe, expect, it, vi } from 'vitest';
import { silentLogger } from '../log.ts';
import { createMemoryDriver } from '../storage/index.ts';
import { maximumTasks, minimumHealthyTasks } from './deployment-math.ts';
import { EcsError } from './ecs-protocol.ts';
import type {
  DeploymentConfiguration,
  ListTasksFilter,
  RunTaskRequest,
  StopCode,
  Task,
  TaskListener,
  TaskManager,
  TaskStatus,
} from './model.ts';
import {
  createServiceScheduler,
  createServiceStore,
  launchFailureEvent,
  type RunningServiceScheduler,
  type ServiceRecord,
  type ServiceStore,
} from './services.ts';
import { registerTaskDefinition, type TaskDefinition } from './task-definitions.ts';

const CLUSTER = 'arn:aws:ecs:us-east-1:000000000000:cluster/default';
const T0 = 1_800_000_000_000;

function taskDefinition(
  revision: number,
  opts: { healthCheck?: boolean; image?: string } = {},
): TaskDefinition {
  const container: Record<string, unknown> = {
    name: 'app',
    image: opts.image ?? 'registry.local/team/app:latest',
    memory: 128,
  };
  if (opts.healthCheck) container.healthCheck = { command: ['CMD', 'true'], interval: 5, retries: 1 };
  return registerTaskDefinition(
    { family: 'app', containerDefinitions: [container] },
    { region: 'us-east-1', revision, registeredAt: new Date(T0), hostArchitecture: 'X86_64' },
  ).taskDefinition;
}

function fakeClock() {
  let t = T0;
  return {
    now: () => t,
    advance(ms: number) {
      t += ms;
    },
  };
}

type Clock = ReturnType<typeof fakeClock>;

/** The registry: tags that can move, and a count of resolutions. */
function fakeRegistry() {
  const tags = new Map<string, string>([['registry.local/team/app:latest', 'sha256:aaa']]);
  let failWith: string | undefined;
  const registry = {
    calls: 0,
    move(ref: string, digest: string) {
      tags.set(ref, digest);
    },
    fail(message: string | undefined) {
      failWith = message;
    },
    async resolve(td: TaskDefinition): Promise<Record<string, string>> {
      registry.calls += 1;
      if (failWith) throw new Error(failWith);
      const out: Record<string, string> = {};
      for (const c of td.containerDefinitions) {
        const digest = tags.get(c.image);
        if (!digest) throw new Error(`manifest unknown: ${c.image}`);
        out[c.name] = `${c.image.replace(/:[^:/]+$/, '')}@${digest}`;
      }
      return out;
    },
  };
  return registry;
}

/** A TaskManager whose tasks only move when the test moves them. */
function fakeTasks(clock: Clock) {
  const tasks = new Map<string, Task>();
  const listeners = new Set<TaskListener>();
  const runs: RunTaskRequest[] = [];
  let seq = 0;
  let failRuns: string | undefined;

  function notify(task: Task) {
    task.version += 1;
    for (const l of listeners) l(structuredClone(task));
  }
  function must(arn: string): Task {
    const t = tasks.get(arn);
    if (!t) throw new Error(`no task ${arn}`);
    return t;
  }
  const seconds = () => Math.floor(clock.now() / 1000);

  const manager: TaskManager = {
    async run(req) {
      runs.push(structuredClone(req));
      if (failRuns)
        return { tasks: [], failures: Array.from({ length: req.count }, () => ({ reason: failRuns! })) };
      const started: Task[] = [];
      for (let i = 0; i < req.count; i++) {
        seq += 1;
        const task: Task = {
          taskArn: `arn:aws:ecs:us-east-1:000000000000:task/default/${String(seq).padStart(32, '0')}`,
          clusterArn: req.clusterArn,
          taskDefinitionArn: req.taskDefinition.taskDefinitionArn,
          group: req.group ?? `family:${req.taskDefinition.family}`,
          lastStatus: 'PROVISIONING',
          desiredStatus: 'RUNNING',
          healthStatus: 'UNKNOWN',
          containers: [],
          overrides: {},
          launchType: 'EC2',
          version: 0,
          createdAt: seconds(),
        };
        if (req.startedBy) task.startedBy = req.startedBy;
        if (req.serviceName) task.serviceName = req.serviceName;
        if (req.deploymentId) task.deploymentId = req.deploymentId;
        tasks.set(task.taskArn, task);
        started.push(structuredClone(task));
        notify(task);
      }
      return { tasks: started, failures: [] };
    },
    async stop(arn: string, stopCode: StopCode, reason: string) {
      const t = must(arn);
      if (t.desiredStatus !== 'STOPPED') {
        t.desiredStatus = 'STOPPED';
        t.stopCode = stopCode;
        t.stoppedReason = reason;
        t.stoppingAt = seconds();
        notify(t);
      }
      return structuredClone(t);
    },
    get: (arn) => structuredClone(tasks.get(arn)),
    list(filter: ListTasksFilter) {
      return [...tasks.values()]
        .filter(
          (t) =>
            t.clusterArn === filter.clusterArn &&
            (filter.serviceName === undefined || t.serviceName === filter.serviceName) &&
            (filter.desiredStatus === undefined || t.desiredStatus === filter.desiredStatus),
        )
        .map((t) => structuredClone(t));
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };

  function set(arn: string, lastStatus: TaskStatus, patch: Partial<Task> = {}) {
    const t = must(arn);
    Object.assign(t, patch, { lastStatus });
    if (lastStatus === 'RUNNING' && t.startedAt === undefined) t.startedAt = seconds();
    if (lastStatus === 'STOPPED') t.stoppedAt = seconds();
    notify(t);
  }

  const all = () => [...tasks.values()];
  return {
    manager,
    runs,
    all,
    failRuns(reason: string | undefined) {
      failRuns = reason;
    },
    live: () => all().filter((t) => t.lastStatus !== 'STOPPED'),
    ofDeployment: (id: string) => all().filter((t) => t.deploymentId === id && t.lastStatus !== 'STOPPED'),
    running(arn: string, healthStatus: Task['healthStatus'] = 'UNKNOWN') {
      set(arn, 'RUNNING', { healthStatus });
    },
    health(arn: string, healthStatus: Task['healthStatus']) {
      must(arn).healthStatus = healthStatus;
      notify(must(arn));
    },
    crash(arn: string) {
      set(arn, 'STOPPED', {
        desiredStatus: 'STOPPED',
        stopCode: 'EssentialContainerExited',
        stoppedReason: 'Essential container in task exited',
      });
    },
    failToStart(arn: string) {
      set(arn, 'STOPPED', {
        desiredStatus: 'STOPPED',
        stopCode: 'TaskFailedToStart',
        stoppedReason: 'CannotStartContainerError',
      });
    },
    finishStop(arn: string) {
      set(arn, 'STOPPED');
    },
    /** Brings every pending task up and every stopping task down. */
    settleAll(healthStatus: Task['healthStatus'] = 'UNKNOWN') {
      for (const t of all()) {
        if (t.lastStatus === 'STOPPED') continue;
        if (t.desiredStatus === 'STOPPED') set(t.taskArn, 'STOPPED');
        else if (t.lastStatus !== 'RUNNING') set(t.taskArn, 'RUNNING', { healthStatus });
      }
    },
  };
}

type FakeTasks = ReturnType<typeof fakeTasks>;

interface Harness {
  clock: Clock;
  tasks: FakeTasks;
  registry: ReturnType<typeof fakeRegistry>;
  store: ServiceStore;
  scheduler: RunningServiceScheduler;
  settle(): Promise<void>;
}

async function harness(
  opts: {
    clock?: Clock;
    tasks?: FakeTasks;
    store?: ServiceStore;
    registry?: ReturnType<typeof fakeRegistry>;
    reconcileIntervalMs?: number;
  } = {},
): Promise<Harness> {
  const clock = opts.clock ?? fakeClock();
  const tasks = opts.tasks ?? fakeTasks(clock);
  const registry = opts.registry ?? fakeRegistry();
  const store = opts.store ?? createServiceStore(createMemoryDriver());
  const scheduler = createServiceScheduler({
    tasks: tasks.manager,
    store,
    log: silentLogger,
    clock,
    resolveImages: (td) => registry.resolve(td),
    reconcileIntervalMs: opts.reconcileIntervalMs ?? 0,
  });
  await scheduler.start();
  return { clock, tasks, registry, store, scheduler, settle: () => scheduler.reconcile() };
}

async function createService(
  h: Harness,
  desiredCount: number,
  opts: {
    td?: TaskDefinition;
    config?: Partial<DeploymentConfiguration>;
    grace?: number;
    name?: string;
    pullPrincipal?: string;
  } = {},
) {
  const service = await h.scheduler.create({
    clusterArn: CLUSTER,
    serviceName: opts.name ?? 'web',
    taskDefinition: opts.td ?? taskDefinition(1),
    desiredCount,
    ...(opts.pullPrincipal !== undefined ? { pullPrincipal: opts.pullPrincipal } : {}),
    ...(opts.config ? { deploymentConfiguration: opts.config } : {}),
    ...(opts.grace !== undefined ? { healthCheckGracePeriodSeconds: opts.grace } : {}),
  });
  await h.settle();
  return service;
}

const svc = (h: Harness, name = 'web') => {
  const s = h.scheduler.get(CLUSTER, name);
  if (!s) throw new Error('service missing');
  return s;
};
const primary = (h: Harness, name = 'web') => svc(h, name).deployments[0]!;
const messages = (h: Harness, name = 'web') => svc(h, name).events.map((e) => e.message);

/** Brings every task up (and stopping ones down) until the scheduler stops asking for more. */
async function converge(h: Harness, healthStatus: Task['healthStatus'] = 'UNKNOWN') {
  for (let i = 0; i < 50; i++) {
    const before = JSON.stringify(h.tasks.all().map((t) => [t.taskArn, t.lastStatus, t.desiredStatus]));
    h.tasks.settleAll(healthStatus);
    await h.settle();
    const after = JSON.stringify(h.tasks.all().map((t) => [t.taskArn, t.lastStatus, t.desiredStatus]));
    if (before === after) return;
  }
  throw new Error('did not converge');
}

async function expectEcsError(p: Promise<unknown>, type: string, message?: RegExp) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(EcsError);
  expect((err as EcsError).type).toBe(type);
  if (message) expect((err as EcsError).message).toMatch(message);
}

describe('service scheduler: steady state', () => {
  it('starts desiredCount tasks with pinned digests and reports a completed, steady deployment', async () => {
    const h = await harness();
    const created = await createService(h, 2);
    expect(created.status).toBe('ACTIVE');
    expect(created.serviceArn).toBe('arn:aws:ecs:us-east-1:000000000000:service/default/web');
    expect(created.deployments[0]).toMatchObject({
      status: 'PRIMARY',
      rolloutState: 'IN_PROGRESS',
      reason: 'CreateService',
      pinnedImages: { app: 'registry.local/team/app@sha256:aaa' },
    });
    expect(created.deployments[0]!.id).toMatch(/^ecs-svc\/\d{19}$/);

    expect(h.tasks.runs).toHaveLength(1);
    const run = h.tasks.runs[0]!;
    expect(run).toMatchObject({
      count: 2,
      serviceName: 'web',
      group: 'service:web',
      deploymentId: created.deployments[0]!.id,
      startedBy: created.deployments[0]!.id,
      pinnedImages: { app: 'registry.local/team/app@sha256:aaa' },
    });
    expect(svc(h).pendingCount).toBe(2);

    await converge(h);
    const s = svc(h);
    expect(s.runningCount).toBe(2);
    expect(s.pendingCount).toBe(0);
    expect(s.deployments).toHaveLength(1);
    expect(s.deployments[0]).toMatchObject({ rolloutState: 'COMPLETED', runningCount: 2, desiredCount: 2 });
    expect(s.deployments[0]!.rolloutStateReason).toBe(`ECS deployment ${s.deployments[0]!.id} completed.`);
    const ids = h.tasks.all().map((t) => `(task ${t.taskArn.split('/').pop()})`);
    expect(messages(h)).toEqual([
      '(service web) has reached a steady state.',
      `(service web) (deployment ${s.deployments[0]!.id}) deployment completed.`,
      `(service web) has started 2 tasks: ${ids.join(' ')}.`,
    ]);

    // Further passes change nothing and start nothing.
    await h.settle();
    await h.settle();
    expect(h.tasks.runs).toHaveLength(1);
    expect(messages(h)).toHaveLength(3);
    await h.scheduler.close();
  });

  it('replaces tasks that stop, whatever stopped them', async () => {
    const h = await harness();
    await createService(h, 3);
    await converge(h);
    const [a, b] = h.tasks.live();
    h.tasks.crash(a!.taskArn);
    await h.settle();
    expect(h.tasks.live()).toHaveLength(3);
    await h.tasks.manager.stop(b!.taskArn, 'UserInitiated', 'stopped by hand');
    h.tasks.finishStop(b!.taskArn);
    await h.settle();
    expect(h.tasks.live()).toHaveLength(3);
    expect(h.tasks.runs.map((r) => r.count)).toEqual([3, 1, 1]);
    await converge(h);
    expect(svc(h).runningCount).toBe(3);
    // A crash after the deployment completed is a replacement, not a verdict on the deployment.
    expect(primary(h)).toMatchObject({ rolloutState: 'COMPLETED', failedTasks: 0 });
    expect(messages(h)[0]).toBe('(service web) has reached a steady state.');
    await h.scheduler.close();
  });

  it('scales up and down with UpdateService without a new deployment', async () => {
    const h = await harness();
    await createService(h, 2);
    await converge(h);
    const id = primary(h).id;
    await h.scheduler.update({ clusterArn: CLUSTER, serviceName: 'web', desiredCount: 4 });
    await converge(h);
    expect(h.tasks.live()).toHaveLength(4);
    await h.scheduler.update({ clusterArn: CLUSTER, serviceName: 'web', desiredCount: 1 });
    await converge(h);
    expect(h.tasks.live()).toHaveLength(1);
    expect(svc(h).deployments.map((d) => d.id)).toEqual([id]);
    expect(primary(h).desiredCount).toBe(1);
    expect(h.tasks.all().filter((t) => t.stopCode === 'ServiceSchedulerInitiated')).toHaveLength(3);
    await h.scheduler.close();
  });
});

describe('service scheduler: rolling deployments', () => {
  const configs: [number, number, number][] = [
    // desiredCount, minimumHealthyPercent, maximumPercent
    [4, 100, 200],
    [4, 50, 100],
    [3, 50, 150],
    [5, 0, 100],
    [10, 90, 110],
    [1, 0, 200],
  ];

  it.each(configs)(
    'desiredCount %i, minimumHealthyPercent %i, maximumPercent %i: bounds hold at every step',
    async (desired, min, max) => {
      const h = await harness();
      await createService(h, desired, { config: { minimumHealthyPercent: min, maximumPercent: max } });
      await converge(h);
      const first = primary(h).id;

      await h.scheduler.update({
        clusterArn: CLUSTER,
        serviceName: 'web',
        taskDefinition: taskDefinition(2),
      });
      await h.settle();
      const second = primary(h).id;
      expect(second).not.toBe(first);
      expect(svc(h).deployments.map((d) => [d.id, d.status])).toEqual([
        [second, 'PRIMARY'],
        [first, 'ACTIVE'],
      ]);

      const maxLive = maximumTasks(desired, max);
      const minHealthy = minimumHealthyTasks(desired, min);
      const check = () => {
        const live = h.tasks.live();
        const healthy = live.filter((t) => t.lastStatus === 'RUNNING' && t.desiredStatus === 'RUNNING');
        expect(live.length).toBeLessThanOrEqual(maxLive);
        expect(healthy.length).toBeGreaterThanOrEqual(minHealthy);
      };
      check();
      // One transition at a time (a task comes up, or a stopping task goes down), then a pass.
      for (let step = 0; step < 200 && primary(h).rolloutState !== 'COMPLETED'; step++) {
        const next =
          h.tasks.live().find((t) => t.desiredStatus === 'STOPPED') ??
          h.tasks.live().find((t) => t.lastStatus !== 'RUNNING');
        if (!next) throw new Error(`stuck at step ${step}`);
        if (next.desiredStatus === 'STOPPED') h.tasks.finishStop(next.taskArn);
        else h.tasks.running(next.taskArn);
        await h.settle();
        check();
      }
      const s = svc(h);
      expect(s.deployments).toHaveLength(1);
      expect(s.deployments[0]).toMatchObject({
        id: second,
        rolloutState: 'COMPLETED',
        runningCount: desired,
      });
      expect(h.tasks.live().every((t) => t.deploymentId === second)).toBe(true);
      expect(h.tasks.live()).toHaveLength(desired);
      const history = h.scheduler.history(CLUSTER, 'web');
      expect(history.map((d) => [d.id, d.status, d.rolloutState])).toEqual([
        [second, 'PRIMARY', 'COMPLETED'],
        [first, 'INACTIVE', 'COMPLETED'],
      ]);
      await h.scheduler.close();
    },
  );

  it('does not start a deployment for an UpdateService with the same task definition', async () => {
    const h = await harness();
    const td = taskDefinition(1);
    await createService(h, 1, { td });
    await h.scheduler.update({ clusterArn: CLUSTER, serviceName: 'web', taskDefinition: td });
    expect(svc(h).deployments).toHaveLength(1);
    expect(h.registry.calls).toBe(1);
    await h.scheduler.close();
  });

  it('forceNewDeployment re-pins the tag to the digest it points at now', async () => {
    const h = await harness();
    await createService(h, 2);
    await converge(h);
    h.registry.move('registry.local/team/app:latest', 'sha256:bbb');
    const updated = await h.scheduler.update({
      clusterArn: CLUSTER,
      serviceName: 'web',
      forceNewDeployment: true,
    });
    expect(h.registry.calls).toBe(2);
    expect(updated.deployments[0]).toMatchObject({
      status: 'PRIMARY',
      reason: 'UpdateService',
      taskDefinition: updated.deployments[1]!.taskDefinition,
      pinnedImages: { app: 'registry.local/team/app@sha256:bbb' },
    });
    expect(updated.deployments[1]!.pinnedImages).toEqual({ app: 'registry.local/team/app@sha256:aaa' });
    await converge(h);
    const newRuns = h.tasks.runs.filter((r) => r.deploymentId === updated.deployments[0]!.id);
    expect(newRuns.length).toBeGreaterThan(0);
    for (const r of newRuns) expect(r.pinnedImages).toEqual({ app: 'registry.local/team/app@sha256:bbb' });
    expect(primary(h).rolloutState).toBe('COMPLETED');
    expect(h.tasks.live().every((t) => t.deploymentId === updated.deployments[0]!.id)).toBe(true);
    await h.scheduler.close();
  });

  it("carries the caller's reason (a push hook) into the deployment", async () => {
    const h = await harness();
    await createService(h, 1);
    const s = await h.scheduler.update({
      clusterArn: CLUSTER,
      serviceName: 'web',
      forceNewDeployment: true,
      reason: 'hook:rule-1',
    });
    expect(s.deployments[0]!.reason).toBe('hook:rule-1');
    await h.scheduler.close();
  });
});

describe('service scheduler: circuit breaker', () => {
  const breaker = (rollback: boolean): Partial<DeploymentConfiguration> => ({
    deploymentCircuitBreaker: { enable: true, rollback },
  });

  it('counts tasks that start and then crash, and rolls back to the previous pinned digests', async () => {
    const h = await harness();
    const alice = 'arn:aws:iam::000000000000:user/alice';
    await createService(h, 2, { config: breaker(true), pullPrincipal: alice });
    await converge(h);
    const good = primary(h);
    expect(good).toMatchObject({ rolloutState: 'COMPLETED', pullPrincipal: alice });

    // The tag moves on, and the new revision crashes shortly after it starts.
    h.registry.move('registry.local/team/app:latest', 'sha256:bad');
    await h.scheduler.update({
      clusterArn: CLUSTER,
      serviceName: 'web',
      taskDefinition: taskDefinition(2),
      pullPrincipal: 'arn:aws:iam::000000000000:role/hook',
    });
    await h.settle();
    const bad = primary(h);
    expect(bad.pinnedImages).toEqual({ app: 'registry.local/team/app@sha256:bad' });
    const resolutions = h.registry.calls;

    let crashes = 0;
    while (primary(h).id === bad.id) {
      const pending = h.tasks.ofDeployment(bad.id).filter((t) => t.lastStatus !== 'RUNNING');
      expect(pending.length).toBeGreaterThan(0);
      const t = pending[0]!;
      h.tasks.running(t.taskArn); // it does start ...
      await h.settle();
      h.tasks.crash(t.taskArn); // ... and then exits
      crashes += 1;
      await h.settle();
      if (crashes > 10) throw new Error('circuit breaker never tripped');
    }
    expect(crashes).toBe(3); // threshold for desiredCount 2: max(3, ceil(0.5 x 2))

    const s = svc(h);
    const [rollback, failed] = s.deployments;
    expect(failed).toMatchObject({
      id: bad.id,
      status: 'ACTIVE',
      rolloutState: 'FAILED',
      rolloutStateReason: 'ECS deployment circuit breaker: tasks failed to start.',
      failedTasks: 3,
    });
    expect(rollback).toMatchObject({
      status: 'PRIMARY',
      reason: `rollback:${bad.id}`,
      taskDefinition: good.taskDefinition,
      pinnedImages: { app: 'registry.local/team/app@sha256:aaa' },
      // The completed deployment's digests, on the right that pinned them.
      pullPrincipal: alice,
      rolloutState: 'IN_PROGRESS',
    });
    expect(failed?.pullPrincipal).toBe('arn:aws:iam::000000000000:role/hook');
    expect(s.taskDefinition).toBe(good.taskDefinition);
    expect(h.registry.calls).toBe(resolutions); // the rollback resolved nothing
    expect(messages(h)).toContain(
      `(service web) (deployment ${bad.id}) deployment failed: tasks failed to start.`,
    );
    expect(messages(h)).toContain(`(service web) rolling back to deployment ${good.id}.`);

    await converge(h);
    const after = svc(h);
    expect(after.deployments).toHaveLength(1);
    expect(after.deployments[0]).toMatchObject({ id: rollback!.id, rolloutState: 'COMPLETED' });
    expect(after.runningCount).toBe(2);
    for (const r of h.tasks.runs.filter((r) => r.deploymentId === rollback!.id)) {
      expect(r.pinnedImages).toEqual({ app: 'registry.local/team/app@sha256:aaa' });
      expect(r.taskDefinition.taskDefinitionArn).toBe(good.taskDefinition);
    }
    expect(h.tasks.live().every((t) => t.deploymentId === rollback!.id)).toBe(true);
    expect(h.scheduler.history(CLUSTER, 'web').map((d) => [d.id, d.status, d.rolloutState])).toEqual([
      [rollback!.id, 'PRIMARY', 'COMPLETED'],
      [bad.id, 'INACTIVE', 'FAILED'],
      [good.id, 'INACTIVE', 'COMPLETED'],
    ]);
    await h.scheduler.close();
  });

  it('counts tasks that go UNHEALTHY and are replaced before the deployment completes', async () => {
    const h = await harness();
    await createService(h, 1, { td: taskDefinition(1, { healthCheck: true }), config: breaker(true) });
    await converge(h, 'HEALTHY');
    const good = primary(h);
    await h.scheduler.update({
      clusterArn: CLUSTER,
      serviceName: 'web',
      taskDefinition: taskDefinition(2, { healthCheck: true }),
    });
    await h.settle();
    const bad = primary(h);
    for (let i = 0; i < 3; i++) {
      const [t] = h.tasks.ofDeployment(bad.id).filter((t) => t.desiredStatus === 'RUNNING');
      h.tasks.running(t!.taskArn, 'UNHEALTHY');
      await h.settle();
      expect(h.tasks.manager.get(t!.taskArn)).toMatchObject({
        desiredStatus: 'STOPPED',
        stopCode: 'ServiceSchedulerInitiated',
        stoppedReason: 'Task failed container health checks',
      });
      h.tasks.finishStop(t!.taskArn);
      await h.settle();
    }
    // The failed deployment's last task is gone, so it already moved to the history.
    const failed = h.scheduler.history(CLUSTER, 'web').find((d) => d.id === bad.id);
    expect(failed).toMatchObject({ status: 'INACTIVE', rolloutState: 'FAILED', failedTasks: 3 });
    expect(primary(h)).toMatchObject({ reason: `rollback:${bad.id}`, taskDefinition: good.taskDefinition });
    expect(messages(h).filter((m) => m.endsWith('failed container health checks.'))).toHaveLength(3);
    await h.scheduler.close();
  });

  it('without rollback, fails the deployment but keeps retrying it, throttled', async () => {
    const h = await harness();
    await createService(h, 2, { config: breaker(false) });
    await converge(h);
    const good = primary(h);
    await h.scheduler.update({ clusterArn: CLUSTER, serviceName: 'web', taskDefinition: taskDefinition(2) });
    await h.settle();
    const bad = primary(h);
    for (let i = 0; i < 3; i++) {
      const [t] = h.tasks.ofDeployment(bad.id).filter((t) => t.lastStatus !== 'RUNNING');
      h.tasks.failToStart(t!.taskArn);
      await h.settle();
    }
    let s = svc(h);
    expect(s.deployments.map((d) => d.id)).toEqual([bad.id, good.id]);
    expect(s.deployments[0]).toMatchObject({ status: 'PRIMARY', rolloutState: 'FAILED', failedTasks: 3 });
    // minimumHealthyPercent 100: the old tasks keep serving meanwhile.
    expect(h.tasks.ofDeployment(good.id).filter((t) => t.desiredStatus === 'RUNNING')).toHaveLength(2);

    // After three failures in a row, launches wait (5 s, then longer) instead of spinning.
    const runsBefore = h.tasks.runs.length;
    const [t] = h.tasks.ofDeployment(bad.id).filter((t) => t.lastStatus !== 'RUNNING');
    h.tasks.failToStart(t!.taskArn);
    await h.settle();
    expect(h.tasks.runs.length).toBe(runsBefore);
    h.clock.advance(10_000);
    await h.settle();
    expect(h.tasks.runs.length).toBe(runsBefore + 1);

    // The next tasks do come up: the deployment finishes its work, still marked FAILED.
    await converge(h);
    s = svc(h);
    expect(s.deployments).toHaveLength(1);
    expect(s.deployments[0]).toMatchObject({ id: bad.id, rolloutState: 'FAILED', runningCount: 2 });
    expect(s.deployments[0]!.failedTasks).toBe(4);
    await h.scheduler.close();
  });

  it('counts tasks the TaskManager could not start at all', async () => {
    const h = await harness();
    await createService(h, 1, { config: breaker(true) });
    await converge(h);
    const good = primary(h);
    h.tasks.failRuns('RESOURCE:MEMORY');
    await h.scheduler.update({ clusterArn: CLUSTER, serviceName: 'web', taskDefinition: taskDefinition(2) });
    await h.settle();
    const bad = primary(h);
    // Each launch fails at once; three in a row trip the breaker before any throttling applies.
    for (let i = 0; i < 3 && primary(h).id === bad.id; i++) await h.settle();
    expect(h.tasks.runs.filter((r) => r.deploymentId === bad.id)).toHaveLength(3);
    const failed = h.scheduler.history(CLUSTER, 'web').find((d) => d.id === bad.id);
    expect(failed).toMatchObject({ rolloutState: 'FAILED', failedTasks: 3 });
    expect(primary(h).reason).toBe(`rollback:${bad.id}`);
    expect(messages(h)).toContain(
      '(service web) was unable to place a task because no container instance met all of its requirements. ' +
        'The closest matching (container-instance local) has insufficient memory available.',
    );
    // The old task was never stopped: the service kept serving throughout.
    expect(h.tasks.ofDeployment(good.id)).toHaveLength(1);

    h.tasks.failRuns(undefined);
    h.clock.advance(300_000);
    await converge(h);
    expect(svc(h).deployments).toHaveLength(1);
    expect(primary(h)).toMatchObject({
      reason: `rollback:${bad.id}`,
      rolloutState: 'COMPLETED',
      runningCount: 1,
    });
    await h.scheduler.close();
  });

  it('does not count a task it stopped itself, whatever exit that stop produced', async () => {
    const h = await harness();
    await createService(h, 3, { config: breaker(true) });
    // Scaled down while the deployment is in progress: the scheduler stops two of the
    // deployment's own tasks, which then end with an exit code (SIGTERM, or SIGKILL after the
    // stop timeout) that the TaskManager may report like a crash.
    await h.scheduler.update({ clusterArn: CLUSTER, serviceName: 'web', desiredCount: 1 });
    await h.settle();
    const stopping = h.tasks.live().filter((t) => t.desiredStatus === 'STOPPED');
    expect(stopping).toHaveLength(2);
    for (const t of stopping) h.tasks.crash(t.taskArn);
    await h.settle();
    expect(primary(h)).toMatchObject({ rolloutState: 'IN_PROGRESS', failedTasks: 0 });
    await converge(h);
    expect(primary(h)).toMatchObject({ rolloutState: 'COMPLETED', failedTasks: 0, runningCount: 1 });
    expect(h.tasks.runs).toHaveLength(1);
    await h.scheduler.close();
  });

  it('without the circuit breaker, failures are counted but never fail the deployment', async () => {
    const h = await harness();
    await createService(h, 1);
    for (let i = 0; i < 5; i++) {
      const [t] = h.tasks.live();
      h.tasks.failToStart(t!.taskArn);
      await h.settle();
      h.clock.advance(600_000); // past any launch throttling
      await h.settle();
    }
    expect(primary(h)).toMatchObject({ rolloutState: 'IN_PROGRESS', failedTasks: 5 });
    await converge(h);
    expect(primary(h).rolloutState).toBe('COMPLETED');
    await h.scheduler.close();
  });
});

describe('service scheduler: health', () => {
  it('waits for HEALTHY before a deployment completes, and ignores UNHEALTHY within the grace period', async () => {
    const h = await harness();
    await createService(h, 1, { td: taskDefinition(1, { healthCheck: true }), grace: 60 });
    const [t] = h.tasks.live();
    h.tasks.running(t!.taskArn, 'UNKNOWN');
    await h.settle();
    expect(primary(h).rolloutState).toBe('IN_PROGRESS'); // running is not enough with a health check
    expect(primary(h).runningCount).toBe(1);

    h.tasks.health(t!.taskArn, 'UNHEALTHY');
    h.clock.advance(30_000);
    await h.settle();
    expect(h.tasks.manager.get(t!.taskArn)!.desiredStatus).toBe('RUNNING'); // still in grace

    h.clock.advance(31_000);
    await h.settle();
    expect(h.tasks.manager.get(t!.taskArn)).toMatchObject({
      desiredStatus: 'STOPPED',
      stoppedReason: 'Task failed container health checks',
    });
    expect(messages(h)).toContain(
      `(service web) (task ${t!.taskArn.split('/').pop()}) failed container health checks.`,
    );
    expect(primary(h).failedTasks).toBe(1);

    // maximumPercent 200 lets the replacement start while the unhealthy task is still stopping.
    const replacement = h.tasks.live().find((x) => x.taskArn !== t!.taskArn);
    expect(replacement).toBeDefined();
    h.tasks.finishStop(t!.taskArn);
    await h.settle();
    expect(h.tasks.live()).toHaveLength(1);
    h.tasks.running(replacement!.taskArn, 'HEALTHY');
    await h.settle();
    expect(primary(h).rolloutState).toBe('COMPLETED');
    await h.scheduler.close();
  });

  it('notices an expired grace period on its own timer, without any task notification', async () => {
    const h = await harness({ reconcileIntervalMs: 20 });
    await createService(h, 1, { td: taskDefinition(1, { healthCheck: true }), grace: 10 });
    const [t] = h.tasks.live();
    h.tasks.running(t!.taskArn, 'UNHEALTHY');
    await h.settle();
    expect(h.tasks.manager.get(t!.taskArn)!.desiredStatus).toBe('RUNNING');
    h.clock.advance(10_000);
    await vi.waitFor(() => expect(h.tasks.manager.get(t!.taskArn)!.desiredStatus).toBe('STOPPED'), {
      timeout: 20_000,
      interval: 20,
    });
    await h.scheduler.close();
  });

  it('does not count a healthy-check-less RUNNING task as unhealthy', async () => {
    const h = await harness();
    await createService(h, 1);
    const [t] = h.tasks.live();
    h.tasks.running(t!.taskArn, 'UNKNOWN');
    await h.settle();
    expect(primary(h).rolloutState).toBe('COMPLETED');
    await h.scheduler.close();
  });

  it('holds old tasks while the new ones are not yet healthy (minimumHealthyPercent 100)', async () => {
    const h = await harness();
    await createService(h, 2, { td: taskDefinition(1, { healthCheck: true }) });
    await converge(h, 'HEALTHY');
    const old = primary(h).id;
    await h.scheduler.update({
      clusterArn: CLUSTER,
      serviceName: 'web',
      taskDefinition: taskDefinition(2, { healthCheck: true }),
    });
    await h.settle();
    const fresh = primary(h).id;
    for (const t of h.tasks.ofDeployment(fresh)) h.tasks.running(t.taskArn, 'UNKNOWN');
    await h.settle();
    expect(h.tasks.ofDeployment(old).filter((t) => t.desiredStatus === 'RUNNING')).toHaveLength(2);
    for (const t of h.tasks.ofDeployment(fresh)) h.tasks.health(t.taskArn, 'HEALTHY');
    await h.settle();
    expect(h.tasks.ofDeployment(old).filter((t) => t.desiredStatus === 'RUNNING')).toHaveLength(0);
    await h.scheduler.close();
  });
});

describe('service scheduler: image resolution', () => {
  it('fails the deployment with the reason when images cannot be resolved, and retries later', async () => {
    const h = await harness();
    h.registry.fail('registry unreachable');
    const created = await createService(h, 1);
    expect(created.deployments[0]).toMatchObject({
      rolloutState: 'FAILED',
      rolloutStateReason: 'ECS deployment failed: CannotPullContainerError: registry unreachable',
      pinnedImages: {},
    });
    const id = created.deployments[0]!.id;
    expect(messages(h)).toContain(
      `(service web) (deployment ${id}) deployment failed: CannotPullContainerError: registry unreachable`,
    );
    expect(h.tasks.runs).toHaveLength(0);

    h.registry.fail(undefined);
    await h.settle();
    expect(h.tasks.runs).toHaveLength(0); // not before the retry is due
    h.clock.advance(5_000);
    await h.settle();
    expect(primary(h)).toMatchObject({ id, rolloutState: 'IN_PROGRESS' });
    expect(h.tasks.runs).toHaveLength(1);
    expect(h.tasks.runs[0]!.pinnedImages).toEqual({ app: 'registry.local/team/app@sha256:aaa' });
    await converge(h);
    expect(primary(h).rolloutState).toBe('COMPLETED');
    await h.scheduler.close();
  });

  it('rolls back when the new images cannot be resolved and rollback is on', async () => {
    const h = await harness();
    await createService(h, 1, { config: { deploymentCircuitBreaker: { enable: true, rollback: true } } });
    await converge(h);
    const good = primary(h);
    await h.scheduler.update({
      clusterArn: CLUSTER,
      serviceName: 'web',
      taskDefinition: taskDefinition(2, { image: 'registry.local/team/app:missing' }),
    });
    const s = svc(h);
    expect(s.deployments[1]).toMatchObject({ rolloutState: 'FAILED' });
    expect(s.deployments[1]!.rolloutStateReason).toMatch(/manifest unknown/);
    expect(s.deployments[0]).toMatchObject({
      reason: `rollback:${s.deployments[1]!.id}`,
      pinnedImages: good.pinnedImages,
    });
    await converge(h);
    expect(svc(h).deployments).toHaveLength(1);
    expect(primary(h).rolloutState).toBe('COMPLETED');
    await h.scheduler.close();
  });
});

describe('service scheduler: restart', () => {
  it('converges back to desiredCount after a restart without starting duplicates', async () => {
    const clock = fakeClock();
    const tasks = fakeTasks(clock);
    const store = createServiceStore(createMemoryDriver());
    const first = await harness({ clock, tasks, store });
    await createService(first, 3);
    // Two tasks came up, one is still pending when the process goes away.
    const [a, b] = tasks.live();
    tasks.running(a!.taskArn);
    tasks.running(b!.taskArn);
    await first.settle();
    const deployment = primary(first).id;
    await first.scheduler.close();

    // While nobody listened: one task crashed.
    tasks.crash(a!.taskArn);

    const second = await harness({ clock, tasks, store });
    expect(svc(second).deployments[0]!.id).toBe(deployment);
    expect(tasks.runs.map((r) => r.count)).toEqual([3, 1]); // only the crashed one was replaced
    expect(tasks.live()).toHaveLength(3);
    await converge(second);
    expect(svc(second)).toMatchObject({ runningCount: 3, pendingCount: 0 });
    expect(primary(second)).toMatchObject({ id: deployment, rolloutState: 'COMPLETED', failedTasks: 1 });
    expect(tasks.runs).toHaveLength(2);

    // And again, with everything healthy: a restart changes nothing.
    await second.scheduler.close();
    const third = await harness({ clock, tasks, store });
    await third.settle();
    expect(tasks.runs).toHaveLength(2);
    expect(primary(third).failedTasks).toBe(1); // the crash is not counted twice
    await third.scheduler.close();
  });

  it('resumes a rolling deployment where it was', async () => {
    const clock = fakeClock();
    const tasks = fakeTasks(clock);
    const store = createServiceStore(createMemoryDriver());
    const first = await harness({ clock, tasks, store });
    await createService(first, 2);
    await converge(first);
    await first.scheduler.update({
      clusterArn: CLUSTER,
      serviceName: 'web',
      taskDefinition: taskDefinition(2),
    });
    await first.settle();
    const fresh = primary(first).id;
    expect(tasks.ofDeployment(fresh)).toHaveLength(2);
    await first.scheduler.close();

    const second = await harness({ clock, tasks, store });
    expect(tasks.ofDeployment(fresh)).toHaveLength(2);
    await converge(second);
    expect(svc(second).deployments.map((d) => [d.id, d.rolloutState])).toEqual([[fresh, 'COMPLETED']]);
    expect(tasks.live()).toHaveLength(2);
    expect(second.registry.calls).toBe(0); // the pins came from the store
    await second.scheduler.close();
  });
});

describe('service scheduler: delete', () => {
  it('refuses to delete a service scaled above 0 without force', async () => {
    const h = await harness();
    await createService(h, 1);
    await expectEcsError(
      h.scheduler.delete(CLUSTER, 'web', false),
      'InvalidParameterException',
      /cannot be stopped while it is scaled above 0/,
    );
    expect(svc(h).status).toBe('ACTIVE');
    await h.scheduler.close();
  });

  it('deletes a service scaled to 0: DRAINING, then INACTIVE, history kept', async () => {
    const h = await harness();
    await createService(h, 2);
    await converge(h);
    await h.scheduler.update({ clusterArn: CLUSTER, serviceName: 'web', desiredCount: 0 });
    await converge(h);
    expect(h.tasks.live()).toHaveLength(0);
    const deleted = await h.scheduler.delete(CLUSTER, 'web', false);
    expect(deleted.status).toBe('DRAINING');
    await h.settle();
    expect(svc(h).status).toBe('INACTIVE');
    expect(h.scheduler.list(CLUSTER)).toEqual([]);
    expect(h.scheduler.history(CLUSTER, 'web')).toHaveLength(1);
    await expectEcsError(
      h.scheduler.update({ clusterArn: CLUSTER, serviceName: 'web', desiredCount: 1 }),
      'ServiceNotActiveException',
    );
    await expectEcsError(h.scheduler.delete(CLUSTER, 'web', true), 'ServiceNotActiveException');
    await h.scheduler.close();
  });

  it('force-deletes a running service: stops every task as the scheduler, INACTIVE once they stopped', async () => {
    const h = await harness();
    await createService(h, 3);
    await converge(h);
    const deleted = await h.scheduler.delete(CLUSTER, 'web', true);
    expect(deleted).toMatchObject({ status: 'DRAINING', desiredCount: 0 });
    await h.settle();
    const live = h.tasks.live();
    expect(live).toHaveLength(3);
    for (const t of live)
      expect(t).toMatchObject({ desiredStatus: 'STOPPED', stopCode: 'ServiceSchedulerInitiated' });
    expect(svc(h).status).toBe('DRAINING');
    expect(h.scheduler.list(CLUSTER)).toEqual([]);
    expect(h.scheduler.get(CLUSTER, 'web')).toBeDefined(); // still describable
    await converge(h);
    expect(svc(h).status).toBe('INACTIVE');
    expect(h.tasks.runs).toHaveLength(1); // nothing was replaced while draining
    const history = h.scheduler.history(CLUSTER, 'web');
    expect(history.map((d) => [d.status, d.rolloutState])).toEqual([['INACTIVE', 'COMPLETED']]);

    // The name can be used again; the old incarnation's history stays readable.
    await createService(h, 1);
    expect(svc(h).status).toBe('ACTIVE');
    expect(h.scheduler.history(CLUSTER, 'web')).toHaveLength(2);
    await h.scheduler.close();
  });
});

describe('service scheduler: validation', () => {
  it('answers ECS error types for bad requests', async () => {
    const h = await harness();
    const td = taskDefinition(1);
    const base = { clusterArn: CLUSTER, serviceName: 'web', taskDefinition: td, desiredCount: 1 };
    await expectEcsError(h.scheduler.create({ ...base, desiredCount: -1 }), 'InvalidParameterException');
    await expectEcsError(h.scheduler.create({ ...base, desiredCount: 1.5 }), 'InvalidParameterException');
    await expectEcsError(
      h.scheduler.create({ ...base, serviceName: 'no spaces' }),
      'InvalidParameterException',
    );
    await expectEcsError(
      h.scheduler.create({ ...base, deploymentConfiguration: { minimumHealthyPercent: 101 } }),
      'InvalidParameterException',
    );
    await expectEcsError(
      h.scheduler.create({ ...base, deploymentConfiguration: { maximumPercent: 99 } }),
      'InvalidParameterException',
    );
    await expectEcsError(
      h.scheduler.create({ ...base, deploymentConfiguration: { maximumPercent: 100 } }),
      'InvalidParameterException',
    );
    await expectEcsError(
      h.scheduler.create({ ...base, healthCheckGracePeriodSeconds: -1 }),
      'InvalidParameterException',
    );
    await expectEcsError(
      h.scheduler.create({ ...base, taskDefinition: { ...td, status: 'INACTIVE' } }),
      'ClientException',
      /inactive/,
    );
    expect(h.scheduler.list(CLUSTER)).toEqual([]);

    await h.scheduler.create(base);
    await expectEcsError(h.scheduler.create(base), 'InvalidParameterException', /not idempotent/);
    await expectEcsError(
      h.scheduler.update({ clusterArn: CLUSTER, serviceName: 'nope', desiredCount: 1 }),
      'ServiceNotFoundException',
    );
    await expectEcsError(h.scheduler.delete(CLUSTER, 'nope', true), 'ServiceNotFoundException');
    expect(() => h.scheduler.history(CLUSTER, 'nope')).toThrow(EcsError);
    await expectEcsError(
      h.scheduler.update({
        clusterArn: CLUSTER,
        serviceName: 'web',
        deploymentConfiguration: { minimumHealthyPercent: -5 },
      }),
      'InvalidParameterException',
    );
    expect(svc(h).deploymentConfiguration).toEqual({
      maximumPercent: 200,
      minimumHealthyPercent: 100,
      deploymentCircuitBreaker: { enable: false, rollback: false },
    });
    expect(h.scheduler.get(CLUSTER, 'nope')).toBeUndefined();
    expect(h.scheduler.list('arn:aws:ecs:us-east-1:000000000000:cluster/other')).toEqual([]);
    await h.scheduler.close();
  });

  it('keeps at most 100 events, newest first', async () => {
    const h = await harness();
    await createService(h, 1);
    for (let i = 0; i < 120; i++) {
      const [t] = h.tasks.live();
      h.tasks.running(t!.taskArn);
      h.tasks.crash(t!.taskArn);
      await h.settle();
      h.clock.advance(600_000);
      await h.settle();
    }
    const events = svc(h).events;
    expect(events).toHaveLength(100);
    expect(events[0]!.message).toMatch(/has started 1 tasks/);
    expect(events[0]!.createdAt).toBeGreaterThanOrEqual(events[99]!.createdAt);
    await h.scheduler.close();
  });
});

describe('service store', () => {
  it('round-trips records through a storage driver', async () => {
    const h = await harness();
    await createService(h, 2);
    await converge(h);
    await createService(h, 1, { name: '-dash' });
    await h.scheduler.close();

    const loaded = await h.store.load();
    expect(loaded.map((r) => r.service.serviceName).sort()).toEqual(['-dash', 'web']);
    const web = loaded.find((r) => r.service.serviceName === 'web')!;
    expect(web.service).toEqual(svc(h, 'web'));
    expect(web.lastCompleted).toMatchObject({
      deploymentId: svc(h, 'web').deployments[0]!.id,
      pinnedImages: { app: 'registry.local/team/app@sha256:aaa' },
    });
    expect(Object.keys(web.taskDefinitions)).toEqual([taskDefinition(1).taskDefinitionArn]);

    const reopened = await harness({ store: h.store, tasks: h.tasks, clock: h.clock });
    expect(reopened.scheduler.get(CLUSTER, 'web')).toEqual(svc(h, 'web'));
    expect(reopened.scheduler.history(CLUSTER, '-dash')).toEqual(h.scheduler.history(CLUSTER, '-dash'));
    await reopened.scheduler.close();
  });

  it('loads nothing from empty storage and skips unreadable records', async () => {
    const driver = createMemoryDriver();
    const store = createServiceStore(driver);
    expect(await store.load()).toEqual([]);
    await driver.putContent('/runner/services/default/broken.json', new TextEncoder().encode('{not json'));
    const h = await harness();
    await createService(h, 0);
    const record = (await h.store.load())[0] as ServiceRecord;
    await store.save(record);
    const loaded = await store.load();
    expect(loaded.map((r) => r.service.serviceName)).toEqual(['web']);
    await h.scheduler.close();
  });
});

describe('service events for tasks that could not start', () => {
  const instance = 'arn:aws:ecs:us-east-1:000000000000:container-instance/default/local';
  it('says in ECS words that no container instance had the memory or CPU', () => {
    expect(launchFailureEvent('web', { arn: instance, reason: 'RESOURCE:MEMORY' })).toBe(
      '(service web) was unable to place a task because no container instance met all of its requirements. ' +
        'The closest matching (container-instance local) has insufficient memory available.',
    );
    expect(launchFailureEvent('web', { arn: instance, reason: 'RESOURCE:CPU' })).toContain(
      'has insufficient CPU units available.',
    );
  });
  it('passes other errors through', () => {
    expect(launchFailureEvent('web', { reason: 'image gone' })).toBe(
      '(service web) failed to launch a task with (error image gone).',
    );
  });
});
