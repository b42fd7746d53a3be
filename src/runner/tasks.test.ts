import { describe, expect, it } from 'vitest';
import type { TaskContainer } from './model.ts';
import type { ContainerDefinition } from './task-definitions.ts';
import { applyOverride, healthArgv, taskHealth } from './tasks.ts';

describe('healthArgv', () => {
  it('runs CMD directly and CMD-SHELL through /bin/sh -c, as ECS does', () => {
    const h = { interval: 30, timeout: 5, retries: 3 };
    expect(healthArgv({ ...h, command: ['CMD', '/bin/check', '--fast'] })).toEqual(['/bin/check', '--fast']);
    expect(healthArgv({ ...h, command: ['CMD-SHELL', 'curl -f http://localhost/ || exit 1'] })).toEqual([
      '/bin/sh',
      '-c',
      'curl -f http://localhost/ || exit 1',
    ]);
  });
});

describe('applyOverride', () => {
  const base: ContainerDefinition = {
    name: 'app',
    image: 'web:1',
    cpu: 256,
    memory: 128,
    portMappings: [],
    essential: true,
    command: ['serve'],
    environment: [
      { name: 'A', value: '1' },
      { name: 'B', value: '2' },
    ],
    mountPoints: [],
    volumesFrom: [],
  };

  it("replaces the command, merges the environment (override wins) and the sizes, as RunTask's overrides do", () => {
    const c = applyOverride(base, {
      name: 'app',
      command: ['migrate'],
      environment: [
        { name: 'B', value: 'two' },
        { name: 'C', value: '3' },
      ],
      memory: 256,
    });
    expect(c.command).toEqual(['migrate']);
    expect(c.environment).toEqual([
      { name: 'A', value: '1' },
      { name: 'B', value: 'two' },
      { name: 'C', value: '3' },
    ]);
    expect([c.cpu, c.memory]).toEqual([256, 256]);
    expect(applyOverride(base, undefined)).toBe(base);
  });
});

describe('taskHealth', () => {
  const c = (essential: boolean, healthStatus?: TaskContainer['healthStatus']) =>
    ({ essential, ...(healthStatus && { healthStatus }) }) as TaskContainer;

  it('follows the essential containers that have health checks', () => {
    expect(taskHealth([c(true)])).toBe('UNKNOWN');
    expect(taskHealth([c(true, 'HEALTHY'), c(true)])).toBe('HEALTHY');
    expect(taskHealth([c(true, 'HEALTHY'), c(true, 'UNKNOWN')])).toBe('UNKNOWN');
    expect(taskHealth([c(true, 'HEALTHY'), c(true, 'UNHEALTHY')])).toBe('UNHEALTHY');
    // A non-essential container's health does not decide the task's.
    expect(taskHealth([c(true, 'HEALTHY'), c(false, 'UNHEALTHY')])).toBe('HEALTHY');
  });
});
