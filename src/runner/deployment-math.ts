// The arithmetic of a rolling deployment, apart from any I/O: ECS's rounding of the deployment
// configuration's percentages, the circuit breaker's threshold, and one planning step that says
// how many tasks to start and which to stop so that a service moves towards its PRIMARY deployment
// without ever exceeding maximumPercent or dropping below minimumHealthyPercent by its own hand.
// services.ts observes tasks, calls planRollout, carries the plan out, and repeats on every change.

/** Upper bound of a service's tasks that are not STOPPED (pending, running or stopping): rounded down. */
export function maximumTasks(desiredCount: number, maximumPercent: number): number {
  return Math.floor((desiredCount * maximumPercent) / 100);
}

/** Lower bound of healthy tasks the scheduler keeps while it replaces tasks: rounded up. */
export function minimumHealthyTasks(desiredCount: number, minimumHealthyPercent: number): number {
  return Math.ceil((desiredCount * minimumHealthyPercent) / 100);
}

export const CIRCUIT_BREAKER_MIN_THRESHOLD = 3;
export const CIRCUIT_BREAKER_MAX_THRESHOLD = 200;

/**
 * Failed tasks after which the circuit breaker fails a deployment: 0.5 x desiredCount, rounded up
 * to a whole task, then clamped to [3, 200] (ECS's BOUNDED_PERCENT default of 50).
 */
export function failureThreshold(desiredCount: number): number {
  const half = Math.ceil(desiredCount / 2);
  return Math.min(CIRCUIT_BREAKER_MAX_THRESHOLD, Math.max(CIRCUIT_BREAKER_MIN_THRESHOLD, half));
}

/**
 * Launch throttling: after repeated failures the scheduler waits before starting the next task, as
 * ECS does for a service whose tasks keep failing, so a crash loop does not spin. The first few
 * failures are retried at once (so the circuit breaker can see them quickly); then the wait doubles
 * from 5 s up to 5 min. Milliseconds.
 */
export function launchDelayMs(consecutiveFailures: number): number {
  const free = 3;
  if (consecutiveFailures < free) return 0;
  return Math.min(300_000, 5_000 * 2 ** (consecutiveFailures - free));
}

/** One of the service's tasks as the planner sees it. */
export interface PlannedTask {
  taskArn: string;
  deploymentId: string | undefined;
  /** Not STOPPED yet: counts against maximumPercent, stopping tasks included. */
  live: boolean;
  /** Live and meant to keep running (desiredStatus RUNNING): the tasks the scheduler may stop. */
  wanted: boolean;
  /** RUNNING and passing its health checks (or having none). */
  healthy: boolean;
  /** Reported UNHEALTHY after the grace period: to be replaced. */
  unhealthy: boolean;
  /** Epoch seconds; the newest surplus task is stopped first. */
  createdAt: number;
}

export interface RolloutInput {
  desiredCount: number;
  maximumPercent: number;
  minimumHealthyPercent: number;
  primaryDeploymentId: string;
  tasks: PlannedTask[];
  /** False while launches are throttled or the PRIMARY has no pinned images yet. */
  canStart: boolean;
  /** False while the PRIMARY cannot start tasks at all (no pinned images): old tasks then stay. */
  canDrain: boolean;
}

export interface RolloutPlan {
  /** Tasks of the PRIMARY deployment to start now. */
  start: number;
  /** Tasks failing their health checks, to replace. */
  stopUnhealthy: string[];
  /** Tasks of older deployments, or surplus PRIMARY tasks after a scale-down. */
  stopSurplus: string[];
}

/**
 * One step towards desiredCount healthy tasks of the PRIMARY deployment and none of the others.
 *   - Unhealthy tasks are stopped (they count as neither healthy nor wanted).
 *   - New tasks start while the live total stays <= maximumTasks; a stopping task still counts
 *     (it holds its ports and memory until it is gone).
 *   - Tasks of other deployments, and PRIMARY tasks beyond desiredCount, are stopped: those not
 *     healthy freely, healthy ones only while the healthy count stays >= minimumHealthyTasks.
 * Invariant: carrying out the plan never makes live > maximumTasks (unless it already was) and
 * never takes healthy below minimumHealthyTasks; only crashes can.
 */
export function planRollout(input: RolloutInput): RolloutPlan {
  const { desiredCount, primaryDeploymentId } = input;
  const maxLive = maximumTasks(desiredCount, input.maximumPercent);
  const minHealthy = minimumHealthyTasks(desiredCount, input.minimumHealthyPercent);

  const live = input.tasks.filter((t) => t.live);
  const wanted = live.filter((t) => t.wanted);
  const stopUnhealthy = wanted.filter((t) => t.unhealthy).map((t) => t.taskArn);
  const keeping = wanted.filter((t) => !t.unhealthy);
  const primary = keeping.filter((t) => t.deploymentId === primaryDeploymentId);
  const others = keeping.filter((t) => t.deploymentId !== primaryDeploymentId);

  // Surplus PRIMARY tasks after a scale-down: the ones not serving yet first, then the newest.
  const surplusPrimary = [...primary]
    .sort((a, b) => Number(a.healthy) - Number(b.healthy) || b.createdAt - a.createdAt)
    .slice(0, Math.max(0, primary.length - desiredCount));

  const stopSurplus: string[] = [];
  if (input.canDrain || desiredCount === 0) {
    let healthy = keeping.filter((t) => t.healthy).length;
    // Unhealthy-or-pending first (free to stop), old deployments before surplus new tasks.
    const candidates = [
      ...others.filter((t) => !t.healthy),
      ...surplusPrimary.filter((t) => !t.healthy),
      ...others.filter((t) => t.healthy),
      ...surplusPrimary.filter((t) => t.healthy),
    ];
    for (const t of candidates) {
      if (t.healthy) {
        if (healthy - 1 < minHealthy) continue;
        healthy -= 1;
      }
      stopSurplus.push(t.taskArn);
    }
  }

  const missing = desiredCount - primary.length;
  const room = maxLive - live.length;
  const start = input.canStart ? Math.max(0, Math.min(missing, room)) : 0;
  return { start, stopUnhealthy, stopSurplus };
}
