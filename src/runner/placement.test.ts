import { describe, expect, it } from 'vitest';
import { hostCapacity, placementFailure, type TaskNeeds } from './placement.ts';

const host = { memoryMiB: 4096, cpuUnits: 2048 };
const c = (cpu: number, memory?: number, memoryReservation?: number) => ({
  cpu,
  ...(memory !== undefined && { memory }),
  ...(memoryReservation !== undefined && { memoryReservation }),
});

describe('placement on this host', () => {
  it.each<[string, TaskNeeds, string | undefined]>([
    ['a task that fits', { containers: [c(512, 256)] }, undefined],
    ['exactly the host', { taskMemory: 4096, taskCpu: 2048, containers: [c(0, 4096)] }, undefined],
    ['task memory above the host', { taskMemory: 99999999, containers: [c(0, 64)] }, 'RESOURCE:MEMORY'],
    ['container memory above the host', { containers: [c(0, 99999999)] }, 'RESOURCE:MEMORY'],
    [
      'a hard limit above the host behind a small reservation',
      { containers: [c(0, 8192, 64)] },
      'RESOURCE:MEMORY',
    ],
    ['containers together above the host', { containers: [c(0, 3000), c(0, 3000)] }, 'RESOURCE:MEMORY'],
    ['task cpu above the host', { taskCpu: 4096, containers: [c(0, 64)] }, 'RESOURCE:CPU'],
    ['one container above the host cpu', { containers: [c(3000, 64)] }, 'RESOURCE:CPU'],
    ['containers together above the host cpu', { containers: [c(1500, 64), c(1500, 64)] }, 'RESOURCE:CPU'],
  ])('%s', (_name, needs, reason) => {
    expect(placementFailure(needs, host)?.reason).toBe(reason);
  });

  it('says what was asked and what the host has', () => {
    expect(placementFailure({ taskMemory: 99999999, containers: [] }, host)?.detail).toBe(
      'the task asks for 99999999 MiB of memory; this host has 4096 MiB',
    );
  });

  it("reads this machine's memory and cores", () => {
    const h = hostCapacity();
    expect(h.memoryMiB).toBeGreaterThan(0);
    expect(h.cpuUnits % 1024).toBe(0);
    expect(h.cpuUnits).toBeGreaterThanOrEqual(1024);
  });
});
