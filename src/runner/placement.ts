// Whether a task fits on this machine, the one container instance of every cluster. ECS accepts
// any memory and cpu in RegisterTaskDefinition for EC2 (only Fargate has fixed sizes) and refuses
// at placement: RunTask answers a failure "RESOURCE:MEMORY" or "RESOURCE:CPU" naming the container
// instance, and a service records that it could not place a task. berth does the same against
// what the host has: its memory, and 1024 CPU units per core. Running tasks' reservations are not
// subtracted (berth does not reserve), so this bounds each task, not their sum.
import { availableParallelism, totalmem } from 'node:os';

export interface HostCapacity {
  memoryMiB: number;
  cpuUnits: number;
}

/** What a task asks of the host: its task size, or else its containers' together (ECS's rule:
 * each container's memoryReservation, else its memory), and the largest single hard limit. */
export interface TaskNeeds {
  taskMemory?: number;
  taskCpu?: number;
  containers: readonly { cpu: number; memory?: number; memoryReservation?: number }[];
}

export type PlacementReason = 'RESOURCE:MEMORY' | 'RESOURCE:CPU';

export interface PlacementFailure {
  reason: PlacementReason;
  detail: string;
}

export function hostCapacity(): HostCapacity {
  return {
    memoryMiB: Math.floor(totalmem() / (1024 * 1024)),
    cpuUnits: 1024 * availableParallelism(),
  };
}

/** Why the task cannot be placed on a host of `host`'s size, or undefined when it fits. */
export function placementFailure(needs: TaskNeeds, host: HostCapacity): PlacementFailure | undefined {
  const reserved = needs.containers.reduce((n, c) => n + (c.memoryReservation ?? c.memory ?? 0), 0);
  const memory = Math.max(
    needs.taskMemory ?? reserved,
    ...needs.containers.map((c) => Math.max(c.memory ?? 0, c.memoryReservation ?? 0)),
  );
  if (memory > host.memoryMiB)
    return {
      reason: 'RESOURCE:MEMORY',
      detail: `the task asks for ${memory} MiB of memory; this host has ${host.memoryMiB} MiB`,
    };
  const cpu = Math.max(
    needs.taskCpu ?? needs.containers.reduce((n, c) => n + c.cpu, 0),
    ...needs.containers.map((c) => c.cpu),
  );
  if (cpu > host.cpuUnits)
    return {
      reason: 'RESOURCE:CPU',
      detail: `the task asks for ${cpu} CPU units; this host has ${host.cpuUnits} (1024 per core)`,
    };
  return undefined;
}
