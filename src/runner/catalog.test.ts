import { describe, expect, it } from 'vitest';
import { checked, createMemoryDriver, type StorageDriver } from '../storage/index.ts';
import { createCatalog } from './catalog.ts';
import { EcsError } from './ecs-protocol.ts';

const REGION = 'eu-central-1';
const ACCOUNT = '123456789012';
const arn = (rest: string) => `arn:aws:ecs:${REGION}:${ACCOUNT}:${rest}`;
const T0 = Date.parse('2025-06-01T00:00:00Z');

function setup(storage: StorageDriver = checked(createMemoryDriver())) {
  const clock = { t: T0 };
  const make = () =>
    createCatalog({
      storage,
      region: REGION,
      accountId: ACCOUNT,
      now: () => clock.t,
      hostArchitecture: 'X86_64',
    });
  return { catalog: make(), reopen: make, storage, clock };
}

const td = (family: string, extra: Record<string, unknown> = {}) => ({
  family,
  containerDefinitions: [{ name: 'main', image: 'busybox', memory: 32 }],
  ...extra,
});

async function ecsError(p: Promise<unknown>): Promise<EcsError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!(e instanceof EcsError)) throw new Error(`expected an EcsError, got ${String(e)}`);
  return e;
}

describe('clusters', () => {
  it('has the default cluster before anyone creates it, and creates others once', async () => {
    const { catalog, reopen, clock } = setup();
    expect(await catalog.getCluster('default')).toMatchObject({
      clusterArn: arn('cluster/default'),
      status: 'ACTIVE',
    });
    expect((await catalog.listClusters()).map((c) => c.clusterName)).toEqual(['default']);

    const prod = await catalog.createCluster('prod', [{ key: 'env', value: 'prod' }]);
    expect(prod).toEqual({
      clusterArn: arn('cluster/prod'),
      clusterName: 'prod',
      status: 'ACTIVE',
      createdAt: T0 / 1000,
      tags: [{ key: 'env', value: 'prod' }],
    });
    clock.t += 5000;
    // Idempotent: the existing cluster as it was, tags untouched.
    expect(await catalog.createCluster('prod', [{ key: 'other', value: 'x' }])).toEqual(prod);
    await catalog.createCluster('-dash_name');
    expect(await catalog.getCluster(arn('cluster/prod'))).toEqual(prod);
    expect(await catalog.getCluster('arn:aws:ecs:us-east-1:123456789012:cluster/prod')).toBeUndefined();
    expect(await catalog.getCluster('nope')).toBeUndefined();

    const again = reopen();
    expect((await again.listClusters()).map((c) => c.clusterName)).toEqual(['-dash_name', 'default', 'prod']);
    expect(await again.getCluster('prod')).toEqual(prod);
  });

  it('refuses names ECS refuses', async () => {
    const { catalog } = setup();
    for (const name of ['', 'a b', 'x'.repeat(256), 'a/b'])
      expect((await ecsError(catalog.createCluster(name))).type).toBe('InvalidParameterException');
  });
});

describe('task definitions', () => {
  it('hands out revisions once each, even to concurrent registrations, and keeps counting after a restart', async () => {
    const { catalog, reopen } = setup();
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) => catalog.registerTaskDefinition(td(i % 3 === 0 ? 'b' : 'a'))),
    );
    const byFamily = (f: string) =>
      results
        .filter((r) => r.taskDefinition.family === f)
        .map((r) => r.taskDefinition.revision)
        .sort((x, y) => x - y);
    expect(byFamily('a')).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(byFamily('b')).toEqual([1, 2, 3, 4]);

    const again = reopen();
    expect((await again.registerTaskDefinition(td('a'))).taskDefinition.revision).toBe(9);
    expect((await again.describeTaskDefinition('b'))?.taskDefinition.taskDefinitionArn).toBe(
      arn('task-definition/b:4'),
    );
  });

  it('never reuses a revision whose file a crash lost', async () => {
    const { catalog, storage, reopen } = setup();
    await catalog.registerTaskDefinition(td('web'));
    await catalog.registerTaskDefinition(td('web'));
    // As if the process died after bumping the counter to 2 but before writing revision 2.
    await storage.delete('/runner/catalog/task-definitions/f_web/r2.json');
    const again = reopen();
    expect((await again.registerTaskDefinition(td('web'))).taskDefinition.revision).toBe(3);
    expect((await again.listTaskDefinitions({ family: 'web' })).map((t) => t.revision)).toEqual([1, 3]);
  });

  it('spends no revision on refused input or a failed write', async () => {
    const inner = checked(createMemoryDriver());
    let failNext = false;
    const flaky: StorageDriver = {
      ...inner,
      async putContent(path, content) {
        if (failNext) {
          failNext = false;
          throw new Error('disk full');
        }
        return inner.putContent(path, content);
      },
    };
    const { catalog } = setup(flaky);
    const refused = await ecsError(catalog.registerTaskDefinition(td('web', { networkMode: 'awsvpc' })));
    expect(refused.type).toBe('ClientException');
    const wrongType = await ecsError(catalog.registerTaskDefinition({ family: 7 }));
    expect(wrongType.type).toBe('SerializationException');
    failNext = true;
    await expect(catalog.registerTaskDefinition(td('web'))).rejects.toThrow('disk full');
    const ok = await catalog.registerTaskDefinition(td('web'), 'arn:aws:iam::123456789012:user/alice');
    expect(ok.taskDefinition).toMatchObject({
      revision: 1,
      registeredBy: 'arn:aws:iam::123456789012:user/alice',
      registeredAt: T0 / 1000,
      status: 'ACTIVE',
    });
  });

  it('keeps tags and reports members ECS does not have', async () => {
    const { catalog } = setup();
    const out = await catalog.registerTaskDefinition(
      td('web', {
        tags: [{ key: 'team', value: 'shop' }],
        taskDefinitionArn: 'x',
        revision: 9,
        colour: 'red',
      }),
    );
    expect(out.tags).toEqual([{ key: 'team', value: 'shop' }]);
    expect(out.ignoredMembers).toEqual(['taskDefinitionArn', 'revision', 'colour']);
    expect(out.taskDefinition.revision).toBe(1);
    expect((await catalog.describeTaskDefinition('web:1'))?.tags).toEqual([{ key: 'team', value: 'shop' }]);
  });

  it('deregisters revisions, which stay describable, and resolves a family to its latest ACTIVE one', async () => {
    const { catalog, clock, reopen } = setup();
    for (let i = 0; i < 3; i++) await catalog.registerTaskDefinition(td('web'));
    clock.t += 60_000;
    const gone = await catalog.deregisterTaskDefinition('web:3');
    expect(gone).toMatchObject({ revision: 3, status: 'INACTIVE', deregisteredAt: T0 / 1000 + 60 });
    clock.t += 60_000;
    expect(await catalog.deregisterTaskDefinition(arn('task-definition/web:3'))).toEqual(gone);
    expect((await catalog.describeTaskDefinition('web'))?.taskDefinition.revision).toBe(2);
    expect((await catalog.describeTaskDefinition('web:3'))?.taskDefinition.status).toBe('INACTIVE');
    await catalog.deregisterTaskDefinition('web:1');
    await catalog.deregisterTaskDefinition('web:2');
    expect(await catalog.describeTaskDefinition('web')).toBeUndefined();
    expect((await reopen().describeTaskDefinition('web:2'))?.taskDefinition.status).toBe('INACTIVE');

    expect(
      await catalog.describeTaskDefinition('arn:aws:ecs:us-east-1:123456789012:task-definition/web:1'),
    ).toBe(undefined);
    expect(await catalog.describeTaskDefinition('nope')).toBeUndefined();
    expect(await catalog.describeTaskDefinition('bad name')).toBeUndefined();
    expect((await ecsError(catalog.deregisterTaskDefinition('web'))).message).toMatch(
      /^A revision is required/,
    );
    expect((await ecsError(catalog.deregisterTaskDefinition('web:9'))).type).toBe('ClientException');
  });

  it('lists revisions by status and order, and families by prefix and status', async () => {
    const { catalog } = setup();
    for (const f of ['web', 'worker', 'web', 'api', 'web']) await catalog.registerTaskDefinition(td(f));
    await catalog.deregisterTaskDefinition('web:2');
    await catalog.deregisterTaskDefinition('api:1');
    const names = (l: { family: string; revision: number }[]) => l.map((t) => `${t.family}:${t.revision}`);
    expect(names(await catalog.listTaskDefinitions())).toEqual(['web:1', 'web:3', 'worker:1']);
    expect(names(await catalog.listTaskDefinitions({ sort: 'DESC' }))).toEqual([
      'worker:1',
      'web:3',
      'web:1',
    ]);
    expect(names(await catalog.listTaskDefinitions({ status: 'INACTIVE' }))).toEqual(['api:1', 'web:2']);
    expect(names(await catalog.listTaskDefinitions({ family: 'web' }))).toEqual(['web:1', 'web:3']);
    // ListTaskDefinitions' familyPrefix is a whole family name on ECS.
    expect(await catalog.listTaskDefinitions({ family: 'we' })).toEqual([]);

    expect(await catalog.listTaskDefinitionFamilies()).toEqual(['api', 'web', 'worker']);
    expect(await catalog.listTaskDefinitionFamilies({ familyPrefix: 'w' })).toEqual(['web', 'worker']);
    expect(await catalog.listTaskDefinitionFamilies({ status: 'ACTIVE' })).toEqual(['web', 'worker']);
    expect(await catalog.listTaskDefinitionFamilies({ status: 'INACTIVE' })).toEqual(['api']);
  });
});
