import { afterEach, describe, expect, it } from 'vitest';
import type { ManifestPushed } from '../events.ts';
import { silentLogger } from '../log.ts';
import { createMemoryDriver, type StorageDriver } from '../storage/index.ts';
import {
  HookDenied,
  HookError,
  type HookRuleFields,
  type RollServiceAction,
  type RunTaskAction,
} from './hook-rules.ts';
import { createHooks, type HookActions, type Hooks } from './hooks.ts';
import type { Actor } from './launch-rights.ts';

const prefix = '/runner/hooks';
const d = (c: string) => `sha256:${c.repeat(64)}`;
const index = 'application/vnd.oci.image.index.v1+json';
const image = 'application/vnd.oci.image.manifest.v1+json';

function push(
  repository: string,
  digest: string,
  tags: string[],
  extra: Partial<ManifestPushed> = {},
): ManifestPushed {
  return {
    type: 'manifest.pushed',
    repository,
    digest,
    mediaType: index,
    size: 500,
    tags,
    at: new Date().toISOString(),
    ...extra,
  };
}

/** Platform manifests by digest, then the index by tag: what `docker buildx --push` sends. */
function multiArch(repository: string, indexDigest: string, tag: string): ManifestPushed[] {
  const platform = { mediaType: image, artifactType: 'application/vnd.oci.image.config.v1+json' };
  return [
    push(repository, d('1'), [], platform),
    push(repository, d('2'), [], platform),
    push(repository, indexDigest, [tag]),
  ];
}

interface Call {
  kind: 'runTask' | 'rollService';
  action: RunTaskAction | RollServiceAction;
  imageRef: string;
  key: string;
  roleArn: string;
}

const roleArn = 'arn:aws:iam::000000000000:role/deployer';
/** Who writes rules here; the fake actions decide what they may write. */
const author: Actor = { principalArn: 'user/admin', isAllowed: async () => true };

/** Actions that behave like RunTask with a clientToken: the same key answers the same tasks. */
function fakeActions(
  opts: {
    fail?: (imageRef: string) => string | undefined;
    deny?: (imageRef: string) => string | undefined;
    refuseRule?: (rule: HookRuleFields) => HookError | undefined;
  } = {},
) {
  const calls: Call[] = [];
  const authorized: HookRuleFields[] = [];
  const tasksByKey = new Map<string, string[]>();
  let started = 0;
  const actions: HookActions = {
    async authorizeRule(rule) {
      authorized.push(rule);
      const refusal = opts.refuseRule?.(rule);
      if (refusal) throw refusal;
    },
    async runTask(action, imageRef, key, roleArn) {
      calls.push({ kind: 'runTask', action, imageRef, key, roleArn });
      const denial = opts.deny?.(imageRef);
      if (denial) throw new HookDenied(denial);
      const failure = opts.fail?.(imageRef);
      if (failure) throw new Error(failure);
      let arns = tasksByKey.get(key);
      if (!arns) {
        arns = Array.from(
          { length: action.count },
          () => `arn:aws:ecs:local:000000000000:task/default/t${++started}`,
        );
        tasksByKey.set(key, arns);
      }
      return { taskArns: arns };
    },
    async rollService(action, imageRef, key, roleArn) {
      calls.push({ kind: 'rollService', action, imageRef, key, roleArn });
      return { deploymentId: `ecs-svc/${key.slice(-6)}`, taskDefinitionArn: `arn:td/${action.service}:2` };
    },
  };
  return { actions, calls, authorized, tasksByKey, startedTasks: () => started };
}

const open: Hooks[] = [];
afterEach(() => {
  for (const h of open.splice(0)) h.stop();
});

function hooksOver(storage: StorageDriver, actions: HookActions, debounceMs = 40): Hooks {
  const h = createHooks({ storage, prefix, log: silentLogger, actions, debounceMs });
  open.push(h);
  return h;
}

async function started(storage: StorageDriver, actions: HookActions, debounceMs = 40) {
  const h = hooksOver(storage, actions, debounceMs);
  await h.start();
  return h;
}

const runTaskRule = (extra: Record<string, unknown> = {}) => ({
  name: 'deploy web',
  repository: 'team/*',
  tag: 'latest',
  roleArn,
  action: { type: 'runTask', taskDefinition: 'web', count: 2 },
  ...extra,
});

describe('push hooks', () => {
  it('runs once for a multi-arch push, on the index digest, with the run recorded', async () => {
    const storage = createMemoryDriver();
    const fake = fakeActions();
    const hooks = await started(storage, fake.actions, 300);
    const rule = await hooks.rules.create(runTaskRule(), author);
    for (const e of multiArch('team/web', d('a'), 'latest')) await hooks.record(e);
    await hooks.idle();

    expect(fake.calls).toHaveLength(1);
    expect(fake.calls[0]).toMatchObject({ kind: 'runTask', imageRef: `team/web@${d('a')}` });
    const { runs } = await hooks.runs.list();
    expect(runs).toHaveLength(1);
    expect(runs[0]).toMatchObject({
      ruleId: rule.id,
      ruleName: 'deploy web',
      status: 'succeeded',
      tag: 'latest',
      digest: d('a'),
      key: runs[0]!.id,
      attempts: 1,
      result: { taskArns: [expect.any(String), expect.any(String)] },
    });
    expect(fake.calls[0]!.key).toBe(runs[0]!.id);
    // Nothing left in the outbox.
    await expect(storage.list(`${prefix}/journal`).catch(() => [])).resolves.toEqual([]);
    await expect(storage.list(`${prefix}/dispatches`).catch(() => [])).resolves.toEqual([]);
  });

  it('with no window at all (debounceMs 0) still acts once per multi-arch push and once per image pushed under several tags', async () => {
    const storage = createMemoryDriver();
    const fake = fakeActions();
    const hooks = await started(storage, fake.actions, 0);
    await hooks.rules.create(runTaskRule({ tag: '*' }), author);
    // The platform manifests go by digest (no tag), so only the index's tagged push counts.
    for (const e of multiArch('team/web', d('a'), 'latest')) await hooks.record(e);
    // docker push -a: the same digest under a second tag, after the first one was acted on.
    await hooks.idle();
    await hooks.record(push('team/web', d('a'), ['1.4.0']));
    await hooks.idle();
    expect(fake.calls.map((c) => c.imageRef)).toEqual([`team/web@${d('a')}`]);
    const { runs } = await hooks.runs.list();
    expect(runs.map((r) => r.status).sort()).toEqual(['skipped', 'succeeded']);
  });

  it('acts once on the last digest when a tag moves within the window, and once for several tags on one image', async () => {
    const storage = createMemoryDriver();
    const fake = fakeActions();
    const hooks = hooksOver(storage, fake.actions);
    await hooks.rules.create(runTaskRule({ tag: '*' }), author);
    // Recorded before start(): start() opens one window with all of them, whatever the machine's speed.
    await hooks.record(push('team/web', d('a'), ['latest']));
    await hooks.record(push('team/web', d('b'), ['latest']));
    await hooks.record(push('team/web', d('b'), ['1.4.0']));
    await hooks.record(push('team/api', d('c'), ['latest']));
    await hooks.start();
    await hooks.idle();
    expect(fake.calls.map((c) => c.imageRef).sort()).toEqual([`team/api@${d('c')}`, `team/web@${d('b')}`]);
    const web = (await hooks.runs.list()).runs.find((r) => r.repository === 'team/web')!;
    expect(web.tags).toEqual(['1.4.0', 'latest']);
    expect(web.event.entryIds).toHaveLength(2);
  });

  it('ignores referrers, artifacts and pushes by digest', async () => {
    const storage = createMemoryDriver();
    const fake = fakeActions();
    const hooks = await started(storage, fake.actions);
    await hooks.rules.create(runTaskRule({ tag: '*' }), author);
    await hooks.record(
      push('team/web', d('s'), [], {
        mediaType: image,
        subject: d('a'),
        artifactType: 'application/vnd.dev.cosign.artifact.sig.v1+json',
      }),
    );
    await hooks.record(push('team/web', d('t'), [`sha256-${'a'.repeat(64)}.sig`], { mediaType: image }));
    await hooks.record(
      push('team/web', d('u'), ['sbom'], { mediaType: image, artifactType: 'application/spdx+json' }),
    );
    await hooks.record(push('team/web', d('v'), []));
    await hooks.record({
      type: 'tag.deleted',
      repository: 'team/web',
      tag: 'latest',
      at: new Date().toISOString(),
    });
    await hooks.idle();
    expect(fake.calls).toEqual([]);
    expect((await hooks.runs.list()).runs).toEqual([]);
    await expect(storage.list(`${prefix}/journal`).catch(() => [])).resolves.toEqual([]);
  });

  it('does not redeploy the same digest, deploys a tag move, and deploys a move back (rollback)', async () => {
    const storage = createMemoryDriver();
    const fake = fakeActions();
    const hooks = await started(storage, fake.actions);
    await hooks.rules.create(runTaskRule({ action: { type: 'rollService', service: 'web' } }), author);
    const step = async (digest: string) => {
      await hooks.record(push('team/web', digest, ['latest']));
      await hooks.idle();
      return (await hooks.runs.list({ limit: 1 })).runs[0]!;
    };
    expect((await step(d('a'))).status).toBe('succeeded');
    const again = await step(d('a'));
    expect(again.status).toBe('skipped');
    expect(again.reason).toMatch(/is what this rule last acted on .*not a new deployment/);
    expect((await step(d('b'))).status).toBe('succeeded');
    const back = await step(d('a'));
    expect(back).toMatchObject({ status: 'succeeded', result: { deploymentId: expect.any(String) } });
    expect(fake.calls.map((c) => [c.kind, c.imageRef])).toEqual([
      ['rollService', `team/web@${d('a')}`],
      ['rollService', `team/web@${d('b')}`],
      ['rollService', `team/web@${d('a')}`],
    ]);
    expect(fake.calls[0]!.action).toEqual({ type: 'rollService', cluster: 'default', service: 'web' });
  });

  it('newerOnly: never goes back to a lower or equal version, and leaves prereleases alone', async () => {
    const storage = createMemoryDriver();
    const fake = fakeActions();
    const hooks = await started(storage, fake.actions);
    await hooks.rules.create(runTaskRule({ repository: 'app', tag: 'semver:^1.2' }), author);
    const step = async (digest: string, tag: string) => {
      await hooks.record(push('app', digest, [tag]));
      await hooks.idle();
      return (await hooks.runs.list({ limit: 1 })).runs[0];
    };
    expect((await step(d('a'), 'v1.3.0'))?.status).toBe('succeeded');
    const older = await step(d('b'), '1.2.5');
    expect(older).toMatchObject({ status: 'skipped', tag: '1.2.5' });
    expect(older?.reason).toMatch(/1\.2\.5 is not newer than v1\.3\.0/);
    const rebuilt = await step(d('c'), '1.3.0');
    expect(rebuilt?.status).toBe('skipped');
    expect(rebuilt?.reason).toMatch(/not newer/);
    await step(d('d'), '1.5.0-rc.1'); // not in the range: no run at all
    await step(d('e'), '2.0.0');
    expect((await step(d('f'), '1.4.0'))?.status).toBe('succeeded');
    expect(fake.calls.map((c) => c.imageRef)).toEqual([`app@${d('a')}`, `app@${d('f')}`]);
    expect((await hooks.runs.list()).runs).toHaveLength(4);
  });

  it('records a failed action with its reason, and a later push of that digest tries again', async () => {
    const storage = createMemoryDriver();
    let failing = true;
    const fake = fakeActions({ fail: () => (failing ? 'Unable to describe task definition.' : undefined) });
    const hooks = await started(storage, fake.actions);
    await hooks.rules.create(runTaskRule(), author);
    await hooks.record(push('team/web', d('a'), ['latest']));
    await hooks.idle();
    const [failed] = (await hooks.runs.list()).runs;
    expect(failed).toMatchObject({ status: 'failed', reason: 'Unable to describe task definition.' });
    expect(failed?.finishedAt).toBeDefined();
    failing = false;
    await hooks.record(push('team/web', d('a'), ['latest']));
    await hooks.idle();
    expect((await hooks.runs.list()).runs.map((r) => r.status)).toEqual(['succeeded', 'failed']);
  });

  it('lists runs newest first, by rule, a page at a time', async () => {
    const storage = createMemoryDriver();
    const fake = fakeActions();
    const hooks = await started(storage, fake.actions);
    const web = await hooks.rules.create(runTaskRule({ repository: 'web' }), author);
    const api = await hooks.rules.create(runTaskRule({ repository: 'api' }), author);
    for (const [i, repo] of ['web', 'api', 'web', 'web', 'api'].entries()) {
      await hooks.record(push(repo, d(String(i)), ['latest']));
      await hooks.idle();
    }
    const all = (await hooks.runs.list()).runs;
    expect(all.map((r) => r.digest)).toEqual(['4', '3', '2', '1', '0'].map(d));
    const first = await hooks.runs.list({ ruleId: web.id, limit: 2 });
    expect(first.runs.map((r) => r.digest)).toEqual([d('3'), d('2')]);
    const second = await hooks.runs.list({ ruleId: web.id, limit: 2, nextToken: first.nextToken! });
    expect(second.runs.map((r) => r.digest)).toEqual([d('0')]);
    expect(second.nextToken).toBeUndefined();
    expect((await hooks.runs.list({ ruleId: api.id })).runs.map((r) => r.digest)).toEqual([d('4'), d('1')]);
    expect(await hooks.runs.get(all[0]!.id)).toEqual(all[0]);
    await expect(hooks.runs.get('nope')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(hooks.runs.list({ limit: 0 })).rejects.toMatchObject({ code: 'INVALID', field: 'limit' });
  });

  it('keeps rules in storage: create, get, list, update, delete', async () => {
    const storage = createMemoryDriver();
    const first = hooksOver(storage, fakeActions().actions);
    const rule = await first.rules.create(runTaskRule(), author);
    expect(rule.id).toMatch(/^hr-[0-9a-f]{12}$/);
    await expect(
      first.rules.create({ ...runTaskRule(), tag: 'semver:^1.2.3.4' }, author),
    ).rejects.toBeInstanceOf(HookError);

    const second = hooksOver(storage, fakeActions().actions);
    expect(await second.rules.get(rule.id)).toEqual(rule);
    const updated = await second.rules.update(rule.id, { enabled: false, name: 'renamed' }, author);
    expect(updated).toMatchObject({
      enabled: false,
      name: 'renamed',
      createdAt: rule.createdAt,
      tag: 'latest',
    });
    await expect(second.rules.update(rule.id, { count: 3 }, author)).rejects.toMatchObject({
      code: 'INVALID',
      field: 'count',
    });

    const third = hooksOver(storage, fakeActions().actions);
    expect(await third.rules.list()).toEqual([updated]);
    await third.rules.delete(rule.id);
    await expect(third.rules.get(rule.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(third.rules.delete(rule.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(await hooksOver(storage, fakeActions().actions).rules.list()).toEqual([]);
  });

  it.each([
    ['deleted', (h: Hooks, id: string) => h.rules.delete(id)],
    ['disabled', (h: Hooks, id: string) => h.rules.update(id, { enabled: false }, author).then(() => {})],
  ])('skips a queued run whose rule was %s before it started', async (what, change) => {
    const storage = createMemoryDriver();
    const fake = fakeActions();
    let release!: () => void;
    const released = new Promise<void>((r) => {
      release = r;
    });
    let entered!: () => void;
    const inAction = new Promise<void>((r) => {
      entered = r;
    });
    // The rule's first run holds its queue until released, so the second waits as pending.
    const holding: HookActions = {
      authorizeRule: fake.actions.authorizeRule,
      async runTask(action, imageRef, key, role) {
        entered();
        await released;
        return fake.actions.runTask(action, imageRef, key, role);
      },
      rollService: fake.actions.rollService,
    };
    const hooks = await started(storage, holding);
    const rule = await hooks.rules.create(runTaskRule({ tag: '*' }), author);
    await hooks.record(push('team/web', d('a'), ['one']));
    await inAction;
    await hooks.record(push('team/web', d('b'), ['two']));
    while ((await hooks.runs.list()).runs.length < 2) await new Promise((r) => setTimeout(r, 10));
    const [queued, inFlight] = (await hooks.runs.list()).runs;
    expect(queued).toMatchObject({ status: 'pending', tag: 'two' });
    await change(hooks, rule.id);
    release();
    await hooks.idle();
    expect(await hooks.runs.get(inFlight!.id)).toMatchObject({ status: 'succeeded' });
    const skipped = await hooks.runs.get(queued!.id);
    expect(skipped).toMatchObject({
      status: 'skipped',
      reason: `the rule was ${what} before the run started`,
    });
    expect(fake.calls.map((c) => c.imageRef)).toEqual([`team/web@${d('a')}`]);
  });
});

describe('push hooks across a crash', () => {
  it('runs a push recorded by a process that stopped before dispatching it, once', async () => {
    const storage = createMemoryDriver();
    const fake = fakeActions();
    const crashed = hooksOver(storage, fake.actions, 60_000);
    await crashed.rules.create(runTaskRule(), author);
    await crashed.start();
    for (const e of multiArch('team/web', d('a'), 'latest')) await crashed.record(e);
    crashed.stop(); // the window never closed

    const next = await started(storage, fake.actions);
    await next.idle();
    expect(fake.calls).toHaveLength(1);
    expect((await next.runs.list()).runs.map((r) => r.status)).toEqual(['succeeded']);

    const third = await started(storage, fake.actions);
    await third.idle();
    expect(fake.calls).toHaveLength(1);
  });

  it('resumes a run left running with the same key, so the action does not act twice', async () => {
    const storage = createMemoryDriver();
    const fake = fakeActions();
    let sideEffectDone!: () => void;
    const sideEffect = new Promise<void>((r) => {
      sideEffectDone = r;
    });
    // The first process's RunTask starts the tasks, then the process dies before it hears back.
    const dying: HookActions = {
      authorizeRule: fake.actions.authorizeRule,
      async runTask(action, imageRef, key, role) {
        await fake.actions.runTask(action, imageRef, key, role);
        sideEffectDone();
        return new Promise(() => {});
      },
      rollService: fake.actions.rollService,
    };
    const crashed = await started(storage, dying);
    await crashed.rules.create(
      runTaskRule({ action: { type: 'runTask', taskDefinition: 'web', count: 1 } }),
      author,
    );
    await crashed.record(push('team/web', d('a'), ['latest']));
    await sideEffect;
    const [running] = (await crashed.runs.list()).runs;
    expect(running).toMatchObject({ status: 'running', attempts: 1, action: { type: 'runTask' } });
    crashed.stop();

    const next = await started(storage, fake.actions);
    await next.idle();
    const run = await next.runs.get(running!.id);
    expect(run).toMatchObject({ status: 'succeeded', attempts: 2 });
    expect(fake.calls.map((c) => c.key)).toEqual([running!.key, running!.key]);
    expect(fake.startedTasks()).toBe(1);
    expect(run.result).toEqual({ taskArns: fake.tasksByKey.get(running!.key) });
    // What the resumed run did counts as done: the same digest again is skipped.
    await next.record(push('team/web', d('a'), ['latest']));
    await next.idle();
    expect((await next.runs.list({ limit: 1 })).runs[0]?.status).toBe('skipped');
  });

  it('leaves runs queued behind a stop for the next process', async () => {
    const storage = createMemoryDriver();
    const fake = fakeActions();
    let release!: () => void;
    const released = new Promise<void>((r) => {
      release = r;
    });
    let entered!: () => void;
    const inAction = new Promise<void>((r) => {
      entered = r;
    });
    const holding: HookActions = {
      authorizeRule: fake.actions.authorizeRule,
      async runTask(action, imageRef, key, role) {
        entered();
        await released;
        return fake.actions.runTask(action, imageRef, key, role);
      },
      rollService: fake.actions.rollService,
    };
    const first = await started(storage, holding);
    await first.rules.create(runTaskRule({ tag: '*' }), author);
    await first.record(push('team/web', d('a'), ['one']));
    await inAction;
    await first.record(push('team/web', d('b'), ['two']));
    while ((await first.runs.list()).runs.length < 2) await new Promise((r) => setTimeout(r, 10));
    first.stop();
    release();
    await first.idle();
    const [queued, finished] = (await first.runs.list()).runs;
    expect([queued?.status, finished?.status]).toEqual(['pending', 'succeeded']);

    const next = await started(storage, fake.actions);
    await next.idle();
    expect(await next.runs.get(queued!.id)).toMatchObject({ status: 'succeeded', attempts: 1 });
    expect(fake.calls.map((c) => c.imageRef)).toEqual([`team/web@${d('a')}`, `team/web@${d('b')}`]);
    await expect(storage.list(`${prefix}/dispatches`).catch(() => [])).resolves.toEqual([]);
  });

  it('repairs a dispatch whose runs a crash kept from being stored', async () => {
    const memory = createMemoryDriver();
    let crash = true;
    // A driver that "crashes" the first process at its first write of a run record.
    const flaky: StorageDriver = {
      ...memory,
      async putContent(path, content) {
        if (crash && path.includes('/runs/')) throw new Error('process died');
        return memory.putContent(path, content);
      },
    };
    const fake = fakeActions();
    const crashed = await started(flaky, fake.actions);
    await crashed.rules.create(runTaskRule(), author);
    await crashed.rules.create(
      runTaskRule({ name: 'second', action: { type: 'rollService', service: 'web' } }),
      author,
    );
    await crashed.record(push('team/web', d('a'), ['latest']));
    await crashed.idle();
    crashed.stop();
    expect(fake.calls).toEqual([]);
    expect(await memory.list(`${prefix}/dispatches`)).toHaveLength(1);
    expect(await memory.list(`${prefix}/journal`)).toHaveLength(1);

    crash = false;
    const next = await started(memory, fake.actions);
    await next.idle();
    expect(fake.calls.map((c) => c.kind).sort()).toEqual(['rollService', 'runTask']);
    expect((await next.runs.list()).runs.map((r) => r.status)).toEqual(['succeeded', 'succeeded']);
    await expect(memory.list(`${prefix}/journal`).catch(() => [])).resolves.toEqual([]);
    await expect(memory.list(`${prefix}/dispatches`).catch(() => [])).resolves.toEqual([]);
  });
});

describe('push hooks act as their role', () => {
  it('checks an enabled rule when it is written, and stores nothing it refuses', async () => {
    const storage = createMemoryDriver();
    const fake = fakeActions({
      refuseRule: (r) =>
        r.repository === 'secret/*'
          ? new HookError('FORBIDDEN', 'repository: no pull', 'repository')
          : undefined,
    });
    const hooks = await started(storage, fake.actions);
    await expect(hooks.rules.create(runTaskRule({ repository: 'secret/*' }), author)).rejects.toMatchObject({
      code: 'FORBIDDEN',
      field: 'repository',
    });
    expect(await hooks.rules.list()).toEqual([]);
    const rule = await hooks.rules.create(runTaskRule(), author);
    expect(fake.authorized.at(-1)).toMatchObject({ roleArn, repository: 'team/*' });
    // A change is checked again; refused, the rule stays as it was.
    await expect(hooks.rules.update(rule.id, { repository: 'secret/*' }, author)).rejects.toMatchObject({
      code: 'FORBIDDEN',
    });
    expect(await hooks.rules.get(rule.id)).toEqual(rule);
    // A disabled rule acts on nothing, so writing one needs no more than the right to manage hooks.
    const checks = fake.authorized.length;
    await hooks.rules.update(rule.id, { enabled: false, repository: 'secret/*' }, author);
    expect(fake.authorized).toHaveLength(checks);
    await expect(hooks.rules.update(rule.id, { enabled: true }, author)).rejects.toMatchObject({
      code: 'FORBIDDEN',
    });
  });

  it('hands the action the role, and records a denial on the run without remembering the push', async () => {
    const storage = createMemoryDriver();
    let deny = true;
    const fake = fakeActions({ deny: () => (deny ? 'the role may not pull team/web' : undefined) });
    const hooks = await started(storage, fake.actions);
    await hooks.rules.create(runTaskRule(), author);
    await hooks.record(push('team/web', d('a'), ['latest']));
    await hooks.idle();
    expect(fake.calls[0]).toMatchObject({ roleArn, imageRef: `team/web@${d('a')}` });
    const [denied] = (await hooks.runs.list()).runs;
    expect(denied).toMatchObject({ status: 'denied', roleArn, reason: 'the role may not pull team/web' });
    expect(denied).not.toHaveProperty('result');
    // Nothing was done, so the same digest again is a new attempt, not "already deployed".
    deny = false;
    await hooks.record(push('team/web', d('a'), ['latest']));
    await hooks.idle();
    expect((await hooks.runs.list({ limit: 1 })).runs[0]).toMatchObject({ status: 'succeeded' });
  });

  it('denies every run of a rule stored before rules had roles, saying how to give it one', async () => {
    const storage = createMemoryDriver();
    const fake = fakeActions();
    const first = hooksOver(storage, fake.actions);
    const rule = await first.rules.create(runTaskRule(), author);
    // As an older berth stored it: no roleArn.
    const { roleArn: _gone, ...legacy } = rule;
    await storage.putContent(
      `${prefix}/rules/${rule.id}.json`,
      new TextEncoder().encode(JSON.stringify(legacy)),
    );

    const hooks = await started(storage, fake.actions);
    await hooks.record(push('team/web', d('a'), ['latest']));
    await hooks.idle();
    expect(fake.calls).toEqual([]);
    const [denied] = (await hooks.runs.list()).runs;
    expect(denied?.status).toBe('denied');
    expect(denied?.reason).toContain(`rule ${rule.id} has no roleArn`);
    expect(denied?.reason).toContain(`PUT /api/v1/hooks/${rule.id}`);
    // Given a role (which is checked), it acts on the next push.
    await hooks.rules.update(rule.id, { roleArn }, author);
    await hooks.record(push('team/web', d('a'), ['latest']));
    await hooks.idle();
    expect(fake.calls).toHaveLength(1);
  });
});
