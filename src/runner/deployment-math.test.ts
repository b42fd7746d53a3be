import { describe, expect, it } from 'vitest';
import {
  failureThreshold,
  launchDelayMs,
  maximumTasks,
  minimumHealthyTasks,
  type PlannedTask,
  planRollout,
} from './deployment-math.ts';

describe('deployment configuration rounding', () => {
  it('rounds maximumPercent down and minimumHealthyPercent up, as ECS does', () => {
    expect(maximumTasks(3, 150)).toBe(4); // 4.5
    expect(maximumTasks(4, 200)).toBe(8);
    expect(maximumTasks(1, 150)).toBe(1);
    expect(minimumHealthyTasks(3, 50)).toBe(2); // 1.5
    expect(minimumHealthyTasks(4, 50)).toBe(2);
    expect(minimumHealthyTasks(1, 1)).toBe(1);
    expect(minimumHealthyTasks(5, 0)).toBe(0);
  });

  it('has no floating point surprises on exact percentages', () => {
    // 100 * 0.07 is 7.000000000000001 and 100 * 0.57 is 56.99999999999999 in floating point:
    // multiplying before dividing keeps whole results whole.
    expect(minimumHealthyTasks(100, 7)).toBe(7);
    expect(maximumTasks(100, 57)).toBe(57);
  });
});

describe('failureThreshold', () => {
  it('is half the desired count, rounded up, clamped to [3, 200]', () => {
    expect(failureThreshold(0)).toBe(3);
    expect(failureThreshold(1)).toBe(3);
    expect(failureThreshold(6)).toBe(3);
    expect(failureThreshold(7)).toBe(4);
    expect(failureThreshold(10)).toBe(5);
    expect(failureThreshold(25)).toBe(13);
    expect(failureThreshold(400)).toBe(200);
    expect(failureThreshold(1000)).toBe(200);
  });
});

describe('launchDelayMs', () => {
  it('retries the first failures at once, then backs off exponentially up to 5 minutes', () => {
    expect([0, 1, 2].map(launchDelayMs)).toEqual([0, 0, 0]);
    expect([3, 4, 5].map(launchDelayMs)).toEqual([5_000, 10_000, 20_000]);
    expect(launchDelayMs(50)).toBe(300_000);
  });
});

function task(arn: string, deploymentId: string, state: Partial<PlannedTask> = {}): PlannedTask {
  return {
    taskArn: arn,
    deploymentId,
    live: true,
    wanted: true,
    healthy: true,
    unhealthy: false,
    createdAt: 0,
    ...state,
  };
}

const base = {
  desiredCount: 4,
  maximumPercent: 200,
  minimumHealthyPercent: 100,
  primaryDeploymentId: 'new',
  canStart: true,
  canDrain: true,
};

describe('planRollout', () => {
  it('starts desiredCount tasks for a new service', () => {
    expect(planRollout({ ...base, tasks: [] })).toEqual({ start: 4, stopUnhealthy: [], stopSurplus: [] });
  });

  it('surges up to maximumPercent and keeps every old task while new ones are not healthy', () => {
    const old = ['a', 'b', 'c', 'd'].map((a) => task(a, 'old'));
    expect(planRollout({ ...base, maximumPercent: 150, tasks: old })).toEqual({
      start: 2,
      stopUnhealthy: [],
      stopSurplus: [],
    });
    const pendingNew = [task('n1', 'new', { healthy: false }), task('n2', 'new', { healthy: false })];
    expect(planRollout({ ...base, maximumPercent: 150, tasks: [...old, ...pendingNew] })).toEqual({
      start: 0,
      stopUnhealthy: [],
      stopSurplus: [],
    });
  });

  it('stops old tasks only down to minimumHealthyPercent', () => {
    const old = ['a', 'b', 'c', 'd'].map((a) => task(a, 'old'));
    const plan = planRollout({ ...base, maximumPercent: 100, minimumHealthyPercent: 50, tasks: old });
    expect(plan.start).toBe(0);
    expect(plan.stopSurplus).toHaveLength(2);
  });

  it('stops old tasks that are not healthy first and freely', () => {
    const tasks = [
      task('a', 'old'),
      task('b', 'old'),
      task('p', 'old', { healthy: false }),
      task('n1', 'new'),
      task('n2', 'new'),
    ];
    const plan = planRollout({ ...base, desiredCount: 3, tasks });
    // 4 healthy, 3 required: the pending old task and one healthy old task may go.
    expect(plan.stopSurplus).toEqual(['p', 'a']);
    expect(plan.start).toBe(1);
  });

  it('counts stopping tasks against maximumPercent until they are STOPPED', () => {
    const tasks = [
      task('a', 'old', { wanted: false, healthy: false }),
      task('b', 'old', { wanted: false, healthy: false }),
      task('n1', 'new'),
    ];
    const plan = planRollout({ ...base, desiredCount: 2, maximumPercent: 150, tasks });
    expect(plan.start).toBe(0); // 3 live of at most 3
    const plan2 = planRollout({ ...base, desiredCount: 2, maximumPercent: 150, tasks: tasks.slice(1) });
    expect(plan2.start).toBe(1);
  });

  it('replaces unhealthy tasks and ignores STOPPED ones', () => {
    const tasks = [
      task('n1', 'new', { unhealthy: true, healthy: false }),
      task('n2', 'new'),
      task('gone', 'new', { live: false, wanted: false, healthy: false }),
    ];
    const plan = planRollout({ ...base, desiredCount: 2, tasks });
    expect(plan.stopUnhealthy).toEqual(['n1']);
    expect(plan.start).toBe(1);
  });

  it('scales down by stopping surplus tasks, not serving ones first, then the newest', () => {
    const tasks = [
      task('n1', 'new', { createdAt: 1 }),
      task('n2', 'new', { createdAt: 3 }),
      task('n3', 'new', { createdAt: 2 }),
      task('n4', 'new', { createdAt: 0, healthy: false }),
    ];
    const plan = planRollout({ ...base, desiredCount: 2, tasks });
    expect(plan.stopSurplus).toEqual(['n4', 'n2']);
    expect(plan.start).toBe(0);
  });

  it('neither starts nor drains without pinned images, but still stops everything at desiredCount 0', () => {
    const old = [task('a', 'old'), task('b', 'old')];
    expect(
      planRollout({
        ...base,
        desiredCount: 2,
        minimumHealthyPercent: 0,
        canStart: false,
        canDrain: false,
        tasks: old,
      }),
    ).toEqual({ start: 0, stopUnhealthy: [], stopSurplus: [] });
    expect(
      planRollout({ ...base, desiredCount: 0, canStart: false, canDrain: false, tasks: old }).stopSurplus,
    ).toEqual(['a', 'b']);
  });
});
