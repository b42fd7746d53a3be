import { beforeEach, describe, expect, it } from 'vitest';
import { checked, createMemoryDriver } from '../storage/index.ts';
import { type Catalog, createCatalog } from './catalog.ts';
import { createEcsApi, type EcsApi, type EcsCaller } from './ecs-api.ts';
import { EcsError, type EcsOperation, ecsOperations } from './ecs-protocol.ts';
import type { RunnerAction } from './launch-rights.ts';
import type {
  CreateServiceRequest,
  RunTaskRequest,
  Service,
  ServiceScheduler,
  Task,
  TaskManager,
  UpdateServiceRequest,
} from './model.ts';

const REGION = 'us-east-1';
const ACCOUNT = '000000000000';
const arn = (rest: string) => `arn:aws:ecs:${REGION}:${ACCOUNT}:${rest}`;
const TASK_ID = '0123456789abcdef0123456789abcdef';

/** Counts every call that reads or changes state, so a denial can be shown to touch none. */
interface Touches {
  n: number;
}

function fakeTasks(touches: Touches): TaskManager & { runs: RunTaskRequest[] } {
  const task: Task = {
    taskArn: arn(`task/prod/${TASK_ID}`),
    clusterArn: arn('cluster/prod'),
    taskDefinitionArn: arn('task-definition/web:1'),
    group: 'family:web',
    lastStatus: 'RUNNING',
    desiredStatus: 'RUNNING',
    healthStatus: 'HEALTHY',
    containers: [],
    overrides: {},
    launchType: 'EC2',
    version: 3,
    createdAt: 1,
  };
  const runs: RunTaskRequest[] = [];
  return {
    runs,
    async run(req) {
      touches.n++;
      runs.push(req);
      return { tasks: [], failures: [] };
    },
    async stop() {
      touches.n++;
      return task;
    },
    get(taskArn) {
      touches.n++;
      return taskArn === task.taskArn ? task : undefined;
    },
    list(f) {
      touches.n++;
      return f.clusterArn === task.clusterArn ? [task] : [];
    },
    subscribe: () => () => {},
  };
}

function fakeServices(
  touches: Touches,
): ServiceScheduler & { created: number; requests: (CreateServiceRequest | UpdateServiceRequest)[] } {
  const made = new Map<string, Service>();
  const requests: (CreateServiceRequest | UpdateServiceRequest)[] = [];
  const out = {
    created: 0,
    requests,
    async create(req) {
      touches.n++;
      out.created++;
      requests.push(req);
      const s = {
        serviceArn: arn(`service/prod/${req.serviceName}`),
        serviceName: req.serviceName,
        clusterArn: req.clusterArn,
        taskDefinition: req.taskDefinition.taskDefinitionArn,
        desiredCount: req.desiredCount,
        runningCount: 0,
        pendingCount: 0,
        status: 'ACTIVE',
        launchType: 'EC2',
        schedulingStrategy: 'REPLICA',
        deploymentConfiguration: {
          maximumPercent: 200,
          minimumHealthyPercent: 100,
          deploymentCircuitBreaker: { enable: false, rollback: false },
        },
        deployments: [],
        events: [],
        createdAt: 1,
      } satisfies Service;
      made.set(req.serviceName, s);
      return s;
    },
    async update(req) {
      touches.n++;
      requests.push(req);
      return made.get(req.serviceName)!;
    },
    async delete(_c, name) {
      touches.n++;
      return made.get(name)!;
    },
    get(_c, name) {
      touches.n++;
      return made.get(name);
    },
    list() {
      touches.n++;
      return [...made.values()];
    },
    history: () => [],
  } satisfies ServiceScheduler & { created: number; requests: unknown[] };
  return out;
}

function countingCatalog(inner: Catalog, touches: Touches): Catalog {
  const wrapped = { ...inner } as Record<string, unknown>;
  for (const [k, v] of Object.entries(inner))
    if (typeof v === 'function' && k !== 'clusterArn')
      wrapped[k] = (...args: unknown[]) => {
        touches.n++;
        return (v as (...a: unknown[]) => unknown)(...args);
      };
  return wrapped as unknown as Catalog;
}

let touches: Touches;
let api: EcsApi;
let tasks: ReturnType<typeof fakeTasks>;
let services: ReturnType<typeof fakeServices>;
let asked: [RunnerAction, string][];
/** What roles were asked (execution roles pulling images): [principal, action, resource]. */
let askedAs: [string, RunnerAction, string][];
/** Role -> the repositories it may pull. */
let rolePulls: Record<string, string[]>;

const allowAll: EcsCaller = {
  principalArn: `arn:aws:iam::${ACCOUNT}:user/admin`,
  async isAllowed(action, resource) {
    asked.push([action, resource]);
    return true;
  },
};
const denyAll: EcsCaller = {
  principalArn: `arn:aws:iam::${ACCOUNT}:user/mallory`,
  async isAllowed(action, resource) {
    asked.push([action, resource]);
    return false;
  },
};

beforeEach(async () => {
  const catalog = createCatalog({
    storage: checked(createMemoryDriver()),
    region: REGION,
    accountId: ACCOUNT,
  });
  await catalog.createCluster('prod');
  await catalog.registerTaskDefinition({
    family: 'web',
    containerDefinitions: [{ name: 'main', image: 'busybox', memory: 32 }],
  });
  touches = { n: 0 };
  tasks = fakeTasks(touches);
  services = fakeServices(touches);
  api = createEcsApi({
    catalog: countingCatalog(catalog, touches),
    tasks,
    services,
    region: REGION,
    accountId: ACCOUNT,
    ownHosts: ['localhost', 'registry.example'],
    async decideAs(principal, action, resource) {
      askedAs.push([principal, action, resource]);
      return action === 'registry:Pull' && (rolePulls[principal] ?? []).includes(resource);
    },
  });
  asked = [];
  askedAs = [];
  rolePulls = {};
});

async function ecsError(p: Promise<unknown>): Promise<EcsError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!(e instanceof EcsError)) throw new Error(`expected an EcsError, got ${String(e)}`);
  return e;
}

/**
 * One request per operation, and the berth resources each must be authorized on: `ecs:<Operation>`
 * on a string, the action given on a pair (starting tasks also pulls their images).
 */
const table: Record<EcsOperation, [Record<string, unknown>, (string | [RunnerAction, string])[]]> = {
  CreateCluster: [{ clusterName: 'team-a' }, ['cluster/team-a']],
  DescribeClusters: [{ clusters: ['prod', arn('cluster/other')] }, ['cluster/prod', 'cluster/other']],
  ListClusters: [{}, ['*']],
  RegisterTaskDefinition: [
    { family: 'api', containerDefinitions: [{ name: 'm', image: 'busybox', memory: 8 }] },
    ['taskdefinition/api'],
  ],
  DescribeTaskDefinition: [{ taskDefinition: arn('task-definition/web:1') }, ['taskdefinition/web']],
  ListTaskDefinitions: [{ familyPrefix: 'web' }, ['*']],
  ListTaskDefinitionFamilies: [{}, ['*']],
  DeregisterTaskDefinition: [{ taskDefinition: 'api:1' }, ['taskdefinition/api']],
  RunTask: [
    { cluster: 'prod', taskDefinition: 'web' },
    ['taskdefinition/web', ['registry:Pull', 'repository/busybox']],
  ],
  StartTask: [
    { cluster: 'prod', taskDefinition: 'web', containerInstances: ['local'] },
    ['taskdefinition/web', ['registry:Pull', 'repository/busybox']],
  ],
  StopTask: [{ cluster: 'prod', task: TASK_ID }, [`task/prod/${TASK_ID}`]],
  DescribeTasks: [
    { cluster: arn('cluster/prod'), tasks: [TASK_ID, arn('task/prod/feed')] },
    [`task/prod/${TASK_ID}`, 'task/prod/feed'],
  ],
  ListTasks: [{ cluster: 'prod' }, ['cluster/prod']],
  CreateService: [
    { cluster: 'prod', serviceName: 'web', taskDefinition: 'web', desiredCount: 1 },
    ['service/prod/web', ['registry:Pull', 'repository/busybox']],
  ],
  UpdateService: [
    { cluster: 'prod', service: arn('service/prod/web'), desiredCount: 2 },
    ['service/prod/web'],
  ],
  DescribeServices: [{ cluster: 'prod', services: ['web', 'api'] }, ['service/prod/web', 'service/prod/api']],
  ListServices: [{}, ['cluster/default']],
  DeleteService: [{ cluster: 'prod', service: 'web', force: true }, ['service/prod/web']],
};

describe('authorization', () => {
  it('covers every operation', () => {
    expect(Object.keys(table).sort()).toEqual([...ecsOperations].sort());
  });

  it('asks ecs:<Operation> on the resources each request names', async () => {
    // In table order, so the service exists for the operations after CreateService.
    for (const op of ecsOperations) {
      const [input, resources] = table[op];
      asked = [];
      await api.handle(op, structuredClone(input), allowAll);
      expect(asked, op).toEqual(resources.map((r) => (typeof r === 'string' ? [`ecs:${op}`, r] : r)));
    }
  });

  it('denies in ECS words before reading or changing anything', async () => {
    for (const op of ecsOperations) {
      const [input] = table[op];
      touches.n = 0;
      const err = await ecsError(api.handle(op, structuredClone(input), denyAll));
      expect(err.type, op).toBe('AccessDeniedException');
      expect(err.message, op).toMatch(
        new RegExp(
          `^User: arn:aws:iam::${ACCOUNT}:user/mallory is not authorized to perform: ecs:${op} on resource: `,
        ),
      );
      expect(touches.n, op).toBe(0);
    }
  });

  it('names the ECS ARN of what was denied', async () => {
    const cases: [EcsOperation, Record<string, unknown>, string][] = [
      ['StopTask', { cluster: 'prod', task: TASK_ID }, arn(`task/prod/${TASK_ID}`)],
      ['DeleteService', { cluster: 'prod', service: 'web' }, arn('service/prod/web')],
      ['DescribeTaskDefinition', { taskDefinition: 'web:4' }, arn('task-definition/web:4')],
      ['ListClusters', {}, '*'],
    ];
    for (const [op, input, resource] of cases) {
      const err = await ecsError(api.handle(op, input, denyAll));
      expect(err.message).toContain(`on resource: ${resource} because`);
    }
  });
});

describe('iam:PassRole', () => {
  /** Allowed every ECS action, and PassRole only on role/allowed. */
  const runner: EcsCaller = {
    principalArn: `arn:aws:iam::${ACCOUNT}:user/ci`,
    async isAllowed(action, resource) {
      asked.push([action, resource]);
      return action !== 'iam:PassRole' || resource === 'role/allowed';
    },
  };

  it('is needed to start tasks or services with a task role, on that role', async () => {
    await api.handle(
      'RegisterTaskDefinition',
      {
        family: 'with-role',
        taskRoleArn: `arn:aws:iam::${ACCOUNT}:role/admin-ish`,
        containerDefinitions: [{ name: 'main', image: 'busybox', memory: 32 }],
      },
      runner,
    );
    for (const [op, input] of [
      ['RunTask', { cluster: 'prod', taskDefinition: 'with-role' }],
      ['CreateService', { cluster: 'prod', serviceName: 's', taskDefinition: 'with-role', desiredCount: 1 }],
    ] as const) {
      const e = await ecsError(api.handle(op, input, runner));
      expect([e.type, e.message]).toEqual([
        'AccessDeniedException',
        `User: arn:aws:iam::${ACCOUNT}:user/ci is not authorized to perform: iam:PassRole on resource: arn:aws:iam::${ACCOUNT}:role/admin-ish because no identity-based policy allows the iam:PassRole action`,
      ]);
    }
    expect(asked).toContainEqual(['iam:PassRole', 'role/admin-ish']);
    expect(tasks.runs).toHaveLength(0);
    // A role the caller may pass, given as an override, and a definition without a role, both run.
    await api.handle(
      'RunTask',
      {
        cluster: 'prod',
        taskDefinition: 'with-role',
        overrides: { taskRoleArn: `arn:aws:iam::${ACCOUNT}:role/allowed` },
      },
      runner,
    );
    await api.handle('RunTask', { cluster: 'prod', taskDefinition: 'web' }, runner);
    expect(tasks.runs).toHaveLength(2);
  });
});

describe('reading input', () => {
  it('reads null as absent and refuses wrong types with SerializationException', async () => {
    const out = await api.handle('ListClusters', { maxResults: null, nextToken: null }, allowAll);
    expect(out['clusterArns']).toEqual([arn('cluster/default'), arn('cluster/prod')]);
    const nested = await ecsError(
      api.handle(
        'RunTask',
        { taskDefinition: 'web', overrides: { containerOverrides: [{ name: 'main', command: 'echo hi' }] } },
        allowAll,
      ),
    );
    expect([nested.type, nested.message]).toEqual([
      'SerializationException',
      'overrides.containerOverrides[0].command must be a list, got string.',
    ]);
    const count = await ecsError(api.handle('RunTask', { taskDefinition: 'web', count: 1.5 }, allowAll));
    expect(count.type).toBe('SerializationException');
  });

  it('accepts what asks for nothing and refuses what asks for something berth lacks', async () => {
    await api.handle(
      'RunTask',
      {
        taskDefinition: 'web',
        placementConstraints: [],
        capacityProviderStrategy: null,
        enableExecuteCommand: false,
        networkConfiguration: {},
        propagateTags: 'NONE',
      },
      allowAll,
    );
    expect(tasks.runs).toHaveLength(1);
    const exec = await ecsError(
      api.handle('RunTask', { taskDefinition: 'web', enableExecuteCommand: true }, allowAll),
    );
    expect([exec.type, exec.message]).toEqual([
      'InvalidParameterException',
      'enableExecuteCommand is not supported by berth: ECS Exec (through AWS Systems Manager) is not available.',
    ]);
    const role = await ecsError(
      api.handle(
        'RunTask',
        { taskDefinition: 'web', overrides: { executionRoleArn: 'arn:aws:iam::1:role/x' } },
        allowAll,
      ),
    );
    expect(role.message).toMatch(/^overrides.executionRoleArn is not supported by berth/);
  });

  it('requires what ECS requires', async () => {
    const cases: [EcsOperation, Record<string, unknown>, string][] = [
      ['RunTask', {}, 'taskDefinition is required.'],
      ['DescribeTasks', {}, 'tasks is required.'],
      ['StartTask', { taskDefinition: 'web' }, 'containerInstances is required.'],
      [
        'CreateService',
        { serviceName: 's', taskDefinition: 'web' },
        'desiredCount is required for the REPLICA scheduling strategy.',
      ],
      ['StopTask', {}, 'task is required.'],
    ];
    for (const [op, input, message] of cases) {
      const err = await ecsError(api.handle(op, input, allowAll));
      expect([err.type, err.message], op).toEqual(['InvalidParameterException', message]);
    }
  });
});

describe('behaviour', () => {
  it('answers a CreateService retried with its clientToken with the service it created', async () => {
    const input = {
      cluster: 'prod',
      serviceName: 'web',
      taskDefinition: 'web',
      desiredCount: 1,
      clientToken: 'tok-1',
    };
    const first = await api.handle('CreateService', { ...input }, allowAll);
    const retry = await api.handle('CreateService', { ...input }, allowAll);
    expect(retry).toEqual(first);
    expect(services.created).toBe(1);
    const other = await ecsError(api.handle('CreateService', { ...input, clientToken: 'tok-2' }, allowAll));
    expect(other.message).toBe('Creation of service was not idempotent.');
  });

  it('lists nothing for filters no berth task can match', async () => {
    expect((await api.handle('ListTasks', { cluster: 'prod' }, allowAll))['taskArns']).toEqual([
      arn(`task/prod/${TASK_ID}`),
    ]);
    for (const input of [{ desiredStatus: 'PENDING' }, { launchType: 'FARGATE' }])
      expect((await api.handle('ListTasks', { cluster: 'prod', ...input }, allowAll))['taskArns']).toEqual(
        [],
      );
    const bad = await ecsError(api.handle('ListTasks', { cluster: 'prod', desiredStatus: 'DONE' }, allowAll));
    expect(bad.message).toBe("desiredStatus 'DONE' is invalid: use one of RUNNING, PENDING, STOPPED.");
  });

  it('finds no cluster by an invalid name or another account', async () => {
    for (const cluster of ['bad name', 'arn:aws:ecs:us-east-1:999999999999:cluster/prod']) {
      const err = await ecsError(api.handle('ListTasks', { cluster }, allowAll));
      expect([err.type, err.message]).toEqual(['ClusterNotFoundException', 'Cluster not found.']);
    }
  });
});

describe('registry:Pull on the images', () => {
  const secret = 'alice/secret';
  /** Allowed every ECS action and iam:PassRole, and registry:Pull on team/app only. */
  const ci: EcsCaller = {
    principalArn: `arn:aws:iam::${ACCOUNT}:user/ci`,
    async isAllowed(action, resource) {
      asked.push([action, resource]);
      return action !== 'registry:Pull' || resource === 'repository/team/app';
    },
  };
  const register = (family: string, image: string, extra: Record<string, unknown> = {}) =>
    api.handle(
      'RegisterTaskDefinition',
      { family, containerDefinitions: [{ name: 'main', image, memory: 32 }], ...extra },
      allowAll,
    );
  const refusal = (principal: string, repository: string) =>
    `User: ${principal} is not authorized to perform: registry:Pull on resource: repository/${repository} because no identity-based policy allows the registry:Pull action`;

  it('is checked for the caller on every form of a berth image, before any task or service', async () => {
    const forms = [
      `${secret}:1`,
      `${secret}@sha256:${'a'.repeat(64)}`,
      `localhost:5000/${secret}:1`,
      `registry.example/${secret}`,
    ];
    for (const [i, image] of forms.entries()) {
      await register(`secret-${i}`, image);
      for (const [op, input] of [
        ['RunTask', { cluster: 'prod', taskDefinition: `secret-${i}` }],
        ['StartTask', { cluster: 'prod', taskDefinition: `secret-${i}`, containerInstances: ['local'] }],
        [
          'CreateService',
          { cluster: 'prod', serviceName: `s${i}`, taskDefinition: `secret-${i}`, desiredCount: 1 },
        ],
      ] as const) {
        const e = await ecsError(api.handle(op, input, ci));
        expect([op, image, e.type, e.message]).toEqual([
          op,
          image,
          'AccessDeniedException',
          refusal(ci.principalArn, secret),
        ]);
      }
    }
    expect(tasks.runs).toHaveLength(0);
    expect(services.created).toBe(0);
    // Every container counts, not only the first.
    await api.handle(
      'RegisterTaskDefinition',
      {
        family: 'two',
        containerDefinitions: [
          { name: 'app', image: 'team/app:1', memory: 32 },
          { name: 'sidecar', image: `${secret}:1`, memory: 32 },
        ],
      },
      allowAll,
    );
    const e = await ecsError(api.handle('RunTask', { cluster: 'prod', taskDefinition: 'two' }, ci));
    expect(e.message).toBe(refusal(ci.principalArn, secret));
    await register('mine', 'localhost/team/app:1');
    await api.handle('RunTask', { cluster: 'prod', taskDefinition: 'mine' }, ci);
    expect(tasks.runs).toHaveLength(1);
  });

  it('is checked on UpdateService when it deploys, not when it only scales', async () => {
    await register('mine', 'team/app:1');
    await register('theirs', `${secret}:1`);
    await api.handle(
      'CreateService',
      { cluster: 'prod', serviceName: 'web', taskDefinition: 'mine', desiredCount: 1 },
      ci,
    );
    expect(services.requests[0]).toMatchObject({ pullPrincipal: ci.principalArn });
    const e = await ecsError(
      api.handle('UpdateService', { cluster: 'prod', service: 'web', taskDefinition: 'theirs' }, ci),
    );
    expect(e.message).toBe(refusal(ci.principalArn, secret));
    expect(services.requests).toHaveLength(1);
    asked = [];
    await api.handle('UpdateService', { cluster: 'prod', service: 'web', desiredCount: 3 }, ci);
    expect(asked.filter(([a]) => a === 'registry:Pull')).toEqual([]);
    expect(services.requests[1]).not.toHaveProperty('pullPrincipal');
    await api.handle('UpdateService', { cluster: 'prod', service: 'web', forceNewDeployment: true }, ci);
    expect(asked).toContainEqual(['registry:Pull', 'repository/team/app']);
    expect(services.requests[2]).toMatchObject({ pullPrincipal: ci.principalArn });
  });

  it("is the execution role's when the definition names one, and the caller must pass that role", async () => {
    const execArn = `arn:aws:iam::${ACCOUNT}:role/puller`;
    await register('exec', `${secret}:1`, { executionRoleArn: execArn });
    // The role may not pull it: refused in the role's name, whatever the caller may pull.
    let e = await ecsError(api.handle('RunTask', { cluster: 'prod', taskDefinition: 'exec' }, allowAll));
    expect(e.message).toBe(refusal(execArn, secret));
    expect(askedAs).toContainEqual(['role/puller', 'registry:Pull', `repository/${secret}`]);
    // The role may: the caller (who may not pull it) runs it, and the service records the role.
    rolePulls['role/puller'] = [`repository/${secret}`];
    await api.handle('RunTask', { cluster: 'prod', taskDefinition: 'exec' }, ci);
    await api.handle(
      'CreateService',
      { cluster: 'prod', serviceName: 'x', taskDefinition: 'exec', desiredCount: 1 },
      ci,
    );
    expect(services.requests.at(-1)).toMatchObject({ pullPrincipal: execArn });
    // Without iam:PassRole on the execution role, its pull right is not the caller's to use.
    const noPass: EcsCaller = {
      principalArn: `arn:aws:iam::${ACCOUNT}:user/nopass`,
      isAllowed: async (action) => action !== 'iam:PassRole',
    };
    e = await ecsError(api.handle('RunTask', { cluster: 'prod', taskDefinition: 'exec' }, noPass));
    expect(e.message).toContain(`iam:PassRole on resource: ${execArn}`);
    expect(tasks.runs).toHaveLength(1);
  });
});
