// Issue 13, attacks 3 and 4, tried as a hostile tenant would, against the real thing: the berth
// CLI as users start it, images built with buildah and pushed over HTTPS, tasks under runc, the
// admin API over HTTPS and the ECS API through @aws-sdk/client-ecs.
//
//   Attack 3, "push hooks skip the checks": a user with only ecs:ManageHooks and registry:Push
//   (no iam:PassRole) writes a runTask hook with overrides.taskRoleArn of an admin role and a
//   command override; with a role of their own that lacks ecs:RunTask, registry:Pull or the
//   right to pass the task role; the same for rollService. And a legitimate rule whose role later
//   loses its rights (runTask) or is deleted (rollService): the next push records a denied run
//   and starts or changes nothing.
//   Attack 4, "RunTask ignores pull permission": a user allowed ecs:* on everything and
//   registry:Pull on one repository runs a task from alice/secret:1 (403 for them on /v2), in
//   every image form, and through CreateService and UpdateService; with an executionRoleArn the
//   role's pull right decides, and the caller must be allowed to pass it.
// Also: a service's later tasks run on the pull right recorded at deployment.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateServiceCommand,
  DeleteServiceCommand,
  DescribeServicesCommand,
  DescribeTasksCommand,
  type ECSClient,
  ListTasksCommand,
  RegisterTaskDefinitionCommand,
  RunTaskCommand,
  StopTaskCommand,
  UpdateServiceCommand,
} from '@aws-sdk/client-ecs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningBerth, startBerth } from '../support/berth.ts';
import { type ContainerTools, containerTools } from '../support/containers.ts';
import { httpsClient } from '../support/https.ts';
import {
  adminAccessKey,
  berthLogTail,
  ecsClient,
  pushImage as pushTo,
  removeSuiteBridge,
  roleWithPolicy,
  runnerPrerequisitesMissing,
  suiteNetwork,
  until as untilWith,
} from '../support/runner-kit.ts';

const why = runnerPrerequisitesMissing();
if (why) console.warn(`runner authorization attacks SKIPPED: ${why}`);

const { bridge, subnet } = suiteNetwork('aut', 92);
const dataDir = mkdtempSync(join(tmpdir(), 'berth-attack-authz-'));
const cluster = 'default';
const account = '000000000000';
const roleArn = (name: string) => `arn:aws:iam::${account}:role/${name}`;

let berth: RunningBerth;
let tools: ContainerTools;
let api: ReturnType<typeof httpsClient>;
let admin: ECSClient;
/** Digests of what the admin pushed, by `repo:tag`. */
const pushed: Record<string, string> = {};
let seen = '';

const until = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 120_000) =>
  untilWith(what, probe, { timeoutMs, context: () => `last seen: ${seen}\n${berthLogTail(berth)}` });

const json = { 'content-type': 'application/json' };
const body = (r: { body: Buffer }) => JSON.parse(r.body.toString() || 'null');

async function ok(r: Promise<{ status: number; body: Buffer }>, want: number) {
  const got = await r;
  if (got.status !== want) throw new Error(`expected ${want}, got ${got.status}: ${got.body.toString()}`);
  return got;
}

/** Pushes a busybox image running `cmd` as `user` (the admin unless named); answers its digest. */
async function push(repo: string, tag: string, cmd: string[], user?: { name: string; password: string }) {
  if (user) await tools.login(berth.hostPort, user.name, user.password);
  try {
    const digest = await pushTo(tools, berth.hostPort, repo, tag, cmd);
    pushed[`${repo}:${tag}`] = digest;
    return digest;
  } finally {
    if (user) await tools.login(berth.hostPort, 'admin', berth.admin.password);
  }
}

/** A user with one policy of their own, an access key and an ECS client; answers its pieces. */
async function tenant(name: string, statements: Record<string, unknown>[]) {
  const password = `${name}-password-0123456789`;
  await ok(
    api('/api/v1/users', { method: 'POST', headers: json, body: JSON.stringify({ name, password }) }),
    201,
  );
  await ok(
    api(`/api/v1/policies/${name}-policy`, {
      method: 'PUT',
      headers: json,
      body: JSON.stringify({ document: { Version: '2012-10-17', Statement: statements } }),
    }),
    201,
  );
  await ok(api(`/api/v1/users/${name}/policies/${name}-policy`, { method: 'PUT' }), 204);
  const key = body(await ok(api(`/api/v1/users/${name}/access-keys`, { method: 'POST' }), 201)) as {
    id: string;
    secret: string;
  };
  const basic = `Basic ${Buffer.from(`${name}:${password}`).toString('base64')}`;
  return {
    name,
    password,
    arn: `arn:aws:iam::${account}:user/${name}`,
    api: httpsClient(berth.url, berth.caPath, basic),
    ecs: ecsClient(berth, key),
  };
}

async function registerAs(
  ecs: ECSClient,
  family: string,
  image: string,
  extra: Record<string, unknown> = {},
) {
  await ecs.send(
    new RegisterTaskDefinitionCommand({
      family,
      networkMode: 'none',
      containerDefinitions: [{ name: 'main', image, memory: 32, essential: true }],
      ...extra,
    }),
  );
}

/** Every task of a family, running or stopped, as the admin sees them. */
async function tasksOf(family: string): Promise<string[]> {
  const arns = new Set<string>();
  // RUNNING first: desiredStatus only ever moves on to STOPPED, so no task slips between the two.
  for (const desiredStatus of ['RUNNING', 'STOPPED'] as const)
    for (const arn of (await admin.send(new ListTasksCommand({ cluster, family, desiredStatus }))).taskArns ??
      [])
      arns.add(arn);
  return [...arns];
}

/** The ECS error a call fails with. */
async function refusal(p: Promise<unknown>): Promise<{ name: string; message: string }> {
  try {
    await p;
  } catch (err) {
    return { name: (err as Error).name, message: (err as Error).message };
  }
  throw new Error('expected the call to be refused');
}

/** Writes a hook rule as `who`; answers status and body. */
async function writeRule(who: ReturnType<typeof httpsClient>, rule: Record<string, unknown>, id?: string) {
  const r = await who(id ? `/api/v1/hooks/${id}` : '/api/v1/hooks', {
    method: id ? 'PUT' : 'POST',
    headers: json,
    body: JSON.stringify({ rule }),
  });
  return { status: r.status, json: body(r) };
}

async function runsOf(ruleId: string) {
  return (
    body(await api(`/api/v1/hooks/runs?rule=${ruleId}`)) as {
      items: {
        status: string;
        digest: string;
        reason?: string;
        roleArn?: string;
        result?: Record<string, unknown>;
      }[];
    }
  ).items;
}

describe.skipIf(why)('issue 13: hooks and images are authorized (attacks 3 and 4)', () => {
  beforeAll(async () => {
    berth = await startBerth({
      dataDir,
      env: { BERTH_RUNNER_BRIDGE_NAME: bridge, BERTH_RUNNER_BRIDGE_SUBNET: subnet, BERTH_LOG_LEVEL: 'info' },
    });
    tools = containerTools(berth.caPath);
    await tools.login(berth.hostPort, 'admin', berth.admin.password);
    api = httpsClient(berth.url, berth.caPath, berth.adminBasic);
    admin = ecsClient(berth, await adminAccessKey(api));
    // The escalation target: a role with AdministratorAccess.
    await ok(
      api('/api/v1/roles', { method: 'POST', headers: json, body: JSON.stringify({ name: 'admin-role' }) }),
      201,
    );
    await ok(api('/api/v1/roles/admin-role/policies/AdministratorAccess', { method: 'PUT' }), 204);
    await push('alice/secret', '1', ['/bin/busybox', 'echo', 'alice secret']);
  }, 240_000);

  afterAll(async () => {
    if (berth && admin) {
      for (const service of ['app-svc', 'eve-svc', 'eve-keep', 'stolen']) {
        await admin.send(new DeleteServiceCommand({ cluster, service, force: true })).catch(() => undefined);
      }
      await until(
        'every task to stop',
        async () => {
          const running =
            (await admin.send(new ListTasksCommand({ cluster, desiredStatus: 'RUNNING' }))).taskArns ?? [];
          for (const task of running)
            await admin
              .send(new StopTaskCommand({ cluster, task, reason: 'suite cleanup' }))
              .catch(() => undefined);
          if (running.length > 0) return undefined;
          const all =
            (await admin.send(new ListTasksCommand({ cluster, desiredStatus: 'STOPPED' }))).taskArns ?? [];
          if (all.length === 0) return true;
          const tasks =
            (await admin.send(new DescribeTasksCommand({ cluster, tasks: all.slice(0, 100) }))).tasks ?? [];
          seen = JSON.stringify(tasks.map((t) => [t.taskArn, t.lastStatus]));
          return tasks.every((t) => t.lastStatus === 'STOPPED') ? true : undefined;
        },
        120_000,
      ).catch((err) => console.error('runner-authz cleanup:', err));
    }
    await berth?.stop();
    await tools?.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
    // The bridge and berth's guard chains for it (containers outlive berth, so berth leaves them).
    await removeSuiteBridge(bridge);
  }, 240_000);

  describe('attack 3: push hooks act with rights someone was given', () => {
    let mallory: Awaited<ReturnType<typeof tenant>>;

    beforeAll(async () => {
      // Only ecs:ManageHooks (and reading them) and pushing to her own repositories; no iam:PassRole.
      mallory = await tenant('mallory', [
        { Effect: 'Allow', Action: ['ecs:ManageHooks', 'ecs:ReadHooks'], Resource: '*' },
        { Effect: 'Allow', Action: ['registry:Push', 'registry:Pull'], Resource: 'repository/mallory/*' },
      ]);
      await push('mallory/app', '1', ['/bin/busybox', 'echo', 'mallory v1']);
      await registerAs(admin, 'mallory-job', `${berth.hostPort}/mallory/app:1`);
    }, 240_000);

    it('refuses a runTask hook with an admin task role and a command override from a user who may pass no role', async () => {
      const escalation = {
        name: 'escalate',
        repository: 'mallory/*',
        tag: '*',
        action: {
          type: 'runTask',
          taskDefinition: 'mallory-job',
          overrides: {
            taskRoleArn: roleArn('admin-role'),
            containerOverrides: [{ name: 'main', command: ['/bin/busybox', 'cat', '/etc/shadow'] }],
          },
        },
      };
      // As the rule was written before: no role. Refused, naming the field.
      const bare = await writeRule(mallory.api, escalation);
      expect(bare.status, JSON.stringify(bare.json)).toBe(400);
      expect(bare.json.error.details[0].path).toBe('rule.roleArn');
      // Acting as the admin role itself, or as a role someone else set up for hooks: she may pass neither.
      await roleWithPolicy(api, 'job-deployer', [
        { Effect: 'Allow', Action: ['ecs:RunTask', 'registry:Pull', 'iam:PassRole'], Resource: '*' },
      ]);
      for (const role of ['admin-role', 'job-deployer']) {
        const r = await writeRule(mallory.api, { ...escalation, roleArn: roleArn(role) });
        expect(r.status, JSON.stringify(r.json)).toBe(403);
        expect(r.json.error).toMatchObject({
          code: 'FORBIDDEN',
          details: [
            { path: 'rule.roleArn', message: expect.stringContaining(`iam:PassRole on role/${role}`) },
          ],
        });
      }
      expect(body(await api('/api/v1/hooks')).items).toEqual([]);
      // Her push runs nothing.
      await push('mallory/app', '2', ['/bin/busybox', 'echo', 'mallory v2'], mallory);
      expect(body(await api('/api/v1/hooks/runs')).items).toEqual([]);
      expect(await tasksOf('mallory-job')).toEqual([]);
    }, 240_000);

    it("refuses a rule whose role lacks the action, the pull or the task role's pass, with the field named", async () => {
      // Now she may pass roles of her own, each missing one right.
      await ok(
        api('/api/v1/policies/mallory-pass', {
          method: 'PUT',
          headers: json,
          body: JSON.stringify({
            document: {
              Version: '2012-10-17',
              Statement: [{ Effect: 'Allow', Action: 'iam:PassRole', Resource: 'role/mallory-*' }],
            },
          }),
        }),
        201,
      );
      await ok(api('/api/v1/users/mallory/policies/mallory-pass', { method: 'PUT' }), 204);
      const noRun = await roleWithPolicy(api, 'mallory-norun', [
        { Effect: 'Allow', Action: ['registry:Pull', 'iam:PassRole'], Resource: '*' },
      ]);
      const noPull = await roleWithPolicy(api, 'mallory-nopull', [
        { Effect: 'Allow', Action: ['ecs:RunTask', 'ecs:UpdateService', 'iam:PassRole'], Resource: '*' },
      ]);
      const onePull = await roleWithPolicy(api, 'mallory-onepull', [
        { Effect: 'Allow', Action: ['ecs:RunTask', 'ecs:UpdateService'], Resource: '*' },
        { Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/mallory/app' },
      ]);
      const noPass = await roleWithPolicy(api, 'mallory-nopass', [
        { Effect: 'Allow', Action: ['ecs:RunTask', 'registry:Pull'], Resource: '*' },
      ]);
      const runTask = {
        type: 'runTask',
        taskDefinition: 'mallory-job',
        overrides: { containerOverrides: [{ name: 'main', command: ['/bin/busybox', 'id'] }] },
      };
      const withAdminRole = {
        ...runTask,
        overrides: { ...runTask.overrides, taskRoleArn: roleArn('admin-role') },
      };
      await ok(
        api('/api/v1/roles', {
          method: 'POST',
          headers: json,
          body: JSON.stringify({ name: 'some-service-role' }),
        }),
        201,
      );
      const cases: [Record<string, unknown>, string, string][] = [
        [
          { roleArn: noRun, action: runTask },
          'rule.action.taskDefinition',
          'ecs:RunTask on taskdefinition/mallory-job',
        ],
        [{ roleArn: noPull, action: runTask }, 'rule.repository', 'registry:Pull'],
        // The glob must be covered as a whole: pull on one repository does not cover mallory/*.
        [{ roleArn: onePull, action: runTask }, 'rule.repository', 'registry:Pull'],
        [
          { roleArn: noPass, action: withAdminRole },
          'rule.action.overrides.taskRoleArn',
          'iam:PassRole on role/admin-role',
        ],
        [
          { roleArn: noRun, action: { type: 'rollService', service: 'app-svc' } },
          'rule.action.service',
          'ecs:UpdateService on service/default/app-svc',
        ],
        [
          { roleArn: noPull, action: { type: 'rollService', service: 'app-svc' } },
          'rule.repository',
          'registry:Pull',
        ],
      ];
      for (const [fields, path, right] of cases) {
        const r = await writeRule(mallory.api, {
          name: 'mine',
          repository: 'mallory/*',
          tag: '*',
          ...fields,
        });
        expect([path, r.status], JSON.stringify(r.json)).toEqual([path, 403]);
        expect(r.json.error.details).toEqual([{ path, message: expect.stringContaining(right) }]);
      }
      // A task definition that names the admin role itself is caught too, once it exists.
      await registerAs(admin, 'mallory-admin-job', `${berth.hostPort}/mallory/app:1`, {
        taskRoleArn: roleArn('admin-role'),
      });
      const viaDefinition = await writeRule(mallory.api, {
        name: 'via definition',
        repository: 'mallory/*',
        tag: '*',
        roleArn: noPass,
        action: { type: 'runTask', taskDefinition: 'mallory-admin-job' },
      });
      expect(viaDefinition.status, JSON.stringify(viaDefinition.json)).toBe(403);
      expect(viaDefinition.json.error.details[0]).toMatchObject({
        path: 'rule.action.taskDefinition',
        message: expect.stringContaining(
          'iam:PassRole on resource: arn:aws:iam::000000000000:role/admin-role',
        ),
      });
      expect(body(await api('/api/v1/hooks')).items).toEqual([]);
      await push('mallory/app', '3', ['/bin/busybox', 'echo', 'mallory v3'], mallory);
      expect(await tasksOf('mallory-job')).toEqual([]);
      expect(await tasksOf('mallory-admin-job')).toEqual([]);
    }, 240_000);

    it("records a denied run and starts nothing once a runTask rule's role has lost its rights", async () => {
      await registerAs(admin, 'app-job', `${berth.hostPort}/app/job:latest`);
      const runner = await roleWithPolicy(api, 'job-runner', [
        { Effect: 'Allow', Action: 'ecs:RunTask', Resource: 'taskdefinition/app-job' },
        { Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/app/*' },
      ]);
      const created = await writeRule(api, {
        name: 'job on push',
        repository: 'app/*',
        tag: 'latest',
        roleArn: runner,
        action: { type: 'runTask', taskDefinition: 'app-job' },
      });
      expect(created.status, JSON.stringify(created.json)).toBe(201);
      const id = created.json.id as string;
      const first = await push('app/job', 'latest', ['/bin/busybox', 'echo', 'job one']);
      const ran = await until('the first run to succeed', async () => {
        const [r] = await runsOf(id);
        seen = JSON.stringify(r);
        return r?.status === 'succeeded' && r.digest === first ? r : undefined;
      });
      expect(ran.roleArn).toBe(runner);
      expect(await tasksOf('app-job')).toHaveLength(1);

      // The role loses its policy; the next push is denied as that role and starts nothing.
      await ok(api('/api/v1/roles/job-runner/policies/job-runner-policy', { method: 'DELETE' }), 204);
      const second = await push('app/job', 'latest', ['/bin/busybox', 'echo', 'job two']);
      const denied = await until('the second run to be denied', async () => {
        const r = (await runsOf(id)).find((x) => x.digest === second);
        seen = JSON.stringify(r);
        return r && r.status !== 'pending' && r.status !== 'running' ? r : undefined;
      });
      expect(denied).toMatchObject({ status: 'denied', roleArn: runner });
      expect(denied.reason).toContain(`User: ${runner} is not authorized to perform: ecs:RunTask`);
      expect(denied).not.toHaveProperty('result');
      expect(await tasksOf('app-job')).toHaveLength(1);
    }, 300_000);

    it("records a denied run and leaves the service as it was once a rollService rule's role is deleted", async () => {
      await push('app/svc', '1', ['/bin/busybox', 'sleep', '3600']);
      await registerAs(admin, 'app-svc', `${berth.hostPort}/app/svc:1`);
      await admin.send(
        new CreateServiceCommand({
          cluster,
          serviceName: 'app-svc',
          taskDefinition: 'app-svc',
          desiredCount: 1,
          deploymentConfiguration: { maximumPercent: 200, minimumHealthyPercent: 0 },
        }),
      );
      const roller = await roleWithPolicy(api, 'svc-roller', [
        { Effect: 'Allow', Action: 'ecs:UpdateService', Resource: `service/${cluster}/app-svc` },
        { Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/app/svc' },
      ]);
      const created = await writeRule(api, {
        name: 'roll app-svc',
        repository: 'app/svc',
        tag: 'semver:>=2.0.0',
        roleArn: roller,
        action: { type: 'rollService', service: 'app-svc' },
      });
      expect(created.status, JSON.stringify(created.json)).toBe(201);
      const id = created.json.id as string;

      const v2 = await push('app/svc', '2.0.0', ['/bin/busybox', 'sleep', '3602']);
      await until('the roll to v2', async () => {
        const [r] = await runsOf(id);
        seen = JSON.stringify(r);
        return r?.status === 'succeeded' && r.digest === v2 ? r : undefined;
      });
      const deployments = async () =>
        (
          body(await api(`/api/v1/runner/clusters/${cluster}/services/app-svc/deployments`)) as {
            items: { status: string; pinnedImages: Record<string, string>; pullPrincipal?: string }[];
          }
        ).items;
      const rolled = (await deployments()).find((d) => d.status === 'PRIMARY');
      expect(rolled).toMatchObject({ pinnedImages: { main: `app/svc@${v2}` }, pullPrincipal: roller });

      // The role is deleted; the next push is denied and the service keeps its deployment.
      await ok(api('/api/v1/roles/svc-roller', { method: 'DELETE' }), 204);
      const v3 = await push('app/svc', '3.0.0', ['/bin/busybox', 'sleep', '3601']);
      const denied = await until('the v3 run to be denied', async () => {
        const r = (await runsOf(id)).find((x) => x.digest === v3);
        seen = JSON.stringify(r);
        return r && r.status !== 'pending' && r.status !== 'running' ? r : undefined;
      });
      expect(denied).toMatchObject({ status: 'denied', roleArn: roller });
      expect(denied.reason).toContain(`User: ${roller} is not authorized to perform: ecs:UpdateService`);
      const after = await deployments();
      expect(after.find((d) => d.status === 'PRIMARY')?.pinnedImages).toEqual({ main: `app/svc@${v2}` });
      expect(JSON.stringify(after)).not.toContain(v3);
    }, 300_000);
  });

  describe('attack 4: images are pulled with the right to pull them', () => {
    let eve: Awaited<ReturnType<typeof tenant>>;
    const denial = (principal: string, repository: string) =>
      `User: ${principal} is not authorized to perform: registry:Pull on resource: repository/${repository} because no identity-based policy allows the registry:Pull action`;

    beforeAll(async () => {
      eve = await tenant('eve', [
        { Effect: 'Allow', Action: 'ecs:*', Resource: '*' },
        { Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/eve/app' },
      ]);
      await push('eve/app', '1', ['/bin/busybox', 'sleep', '3600']);
    }, 240_000);

    it('a user who gets 403 for alice/secret on /v2 cannot run it as a task, in any image form', async () => {
      const manifest = await eve.api('/v2/alice/secret/manifests/1', {
        headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
      });
      expect(manifest.status).toBe(403);
      const forms = [
        `${berth.hostPort}/alice/secret:1`,
        'alice/secret:1',
        `alice/secret@${pushed['alice/secret:1']}`,
        `localhost/alice/secret:1`,
      ];
      for (const [i, image] of forms.entries()) {
        await registerAs(eve.ecs, `steal-${i}`, image);
        const e = await refusal(eve.ecs.send(new RunTaskCommand({ cluster, taskDefinition: `steal-${i}` })));
        expect([image, e.name, e.message]).toEqual([
          image,
          'AccessDeniedException',
          denial(eve.arn, 'alice/secret'),
        ]);
        expect(await tasksOf(`steal-${i}`)).toEqual([]);
      }
    }, 120_000);

    it('nor through CreateService or UpdateService', async () => {
      const e = await refusal(
        eve.ecs.send(
          new CreateServiceCommand({
            cluster,
            serviceName: 'stolen',
            taskDefinition: 'steal-0',
            desiredCount: 1,
          }),
        ),
      );
      expect([e.name, e.message]).toEqual(['AccessDeniedException', denial(eve.arn, 'alice/secret')]);
      const none = await admin.send(new DescribeServicesCommand({ cluster, services: ['stolen'] }));
      expect(none.services).toEqual([]);

      // Her own service, on her own image, is fine; moving it onto alice's image is not.
      await registerAs(eve.ecs, 'eve-svc', `${berth.hostPort}/eve/app:1`);
      await eve.ecs.send(
        new CreateServiceCommand({
          cluster,
          serviceName: 'eve-svc',
          taskDefinition: 'eve-svc',
          desiredCount: 1,
        }),
      );
      const before = (await admin.send(new DescribeServicesCommand({ cluster, services: ['eve-svc'] })))
        .services![0]!;
      const u = await refusal(
        eve.ecs.send(new UpdateServiceCommand({ cluster, service: 'eve-svc', taskDefinition: 'steal-0' })),
      );
      expect([u.name, u.message]).toEqual(['AccessDeniedException', denial(eve.arn, 'alice/secret')]);
      const after = (await admin.send(new DescribeServicesCommand({ cluster, services: ['eve-svc'] })))
        .services![0]!;
      expect(after.taskDefinition).toBe(before.taskDefinition);
      expect(after.deployments?.map((d) => d.id)).toEqual(before.deployments?.map((d) => d.id));
    }, 120_000);

    it("with an executionRoleArn the role's pull right decides, and the caller must pass the role", async () => {
      const puller = await roleWithPolicy(api, 'alice-puller', [
        { Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/alice/*' },
      ]);
      const blind = await roleWithPolicy(api, 'blind', [
        { Effect: 'Allow', Action: 'ecs:ListClusters', Resource: '*' },
      ]);
      await registerAs(eve.ecs, 'steal-exec', `${berth.hostPort}/alice/secret:1`, {
        executionRoleArn: puller,
      });
      await registerAs(eve.ecs, 'own-exec', `${berth.hostPort}/eve/app:1`, { executionRoleArn: blind });
      // She may pass neither role.
      let e = await refusal(eve.ecs.send(new RunTaskCommand({ cluster, taskDefinition: 'steal-exec' })));
      expect([e.name, e.message]).toEqual([
        'AccessDeniedException',
        `User: ${eve.arn} is not authorized to perform: iam:PassRole on resource: ${puller} because no identity-based policy allows the iam:PassRole action`,
      ]);
      expect(await tasksOf('steal-exec')).toEqual([]);
      // Allowed to pass both: the role that may not pull refuses her own image ...
      await ok(
        api('/api/v1/policies/eve-pass', {
          method: 'PUT',
          headers: json,
          body: JSON.stringify({
            document: {
              Version: '2012-10-17',
              Statement: [
                { Effect: 'Allow', Action: 'iam:PassRole', Resource: ['role/alice-puller', 'role/blind'] },
              ],
            },
          }),
        }),
        201,
      );
      await ok(api('/api/v1/users/eve/policies/eve-pass', { method: 'PUT' }), 204);
      e = await refusal(eve.ecs.send(new RunTaskCommand({ cluster, taskDefinition: 'own-exec' })));
      expect([e.name, e.message]).toEqual(['AccessDeniedException', denial(blind, 'eve/app')]);
      expect(await tasksOf('own-exec')).toEqual([]);
      // ... and the role that may pull alice's image runs it, though she could not pull it herself.
      const started = await eve.ecs.send(new RunTaskCommand({ cluster, taskDefinition: 'steal-exec' }));
      expect(started.failures).toEqual([]);
      const done = await until('the execution-role task to finish', async () => {
        const t = (
          await admin.send(new DescribeTasksCommand({ cluster, tasks: [started.tasks![0]!.taskArn!] }))
        ).tasks?.[0];
        seen = JSON.stringify(t?.containers);
        return t?.lastStatus === 'STOPPED' ? t : undefined;
      });
      expect(done.containers![0]).toMatchObject({ exitCode: 0, imageDigest: pushed['alice/secret:1'] });
      await ok(api('/api/v1/users/eve/policies/eve-pass', { method: 'DELETE' }), 204);
    }, 180_000);

    it("a service's later tasks run on the pull right recorded at deployment", async () => {
      await registerAs(eve.ecs, 'eve-keep', `${berth.hostPort}/eve/app:1`);
      await eve.ecs.send(
        new CreateServiceCommand({
          cluster,
          serviceName: 'eve-keep',
          taskDefinition: 'eve-keep',
          desiredCount: 1,
        }),
      );
      const history = async () =>
        (
          body(await api(`/api/v1/runner/clusters/${cluster}/services/eve-keep/deployments`)) as {
            items: { status: string; pullPrincipal?: string; pinnedImages: Record<string, string> }[];
          }
        ).items;
      const primary = (await history()).find((d) => d.status === 'PRIMARY');
      expect(primary).toMatchObject({
        pullPrincipal: eve.arn,
        pinnedImages: { main: `eve/app@${pushed['eve/app:1']}` },
      });
      const running = async () =>
        (
          await admin.send(
            new ListTasksCommand({ cluster, serviceName: 'eve-keep', desiredStatus: 'RUNNING' }),
          )
        ).taskArns ?? [];
      const [first] = await until('eve-keep to run a task', async () => {
        const arns = await running();
        return arns.length === 1 ? arns : undefined;
      });
      // Her rights go; the deployment's replacement still starts, on the pinned digest.
      await ok(api('/api/v1/users/eve/policies/eve-policy', { method: 'DELETE' }), 204);
      await admin.send(new StopTaskCommand({ cluster, task: first!, reason: 'replaced by the test' }));
      const replacement = await until('a replacement task', async () => {
        const arns = (await running()).filter((a) => a !== first);
        if (arns.length !== 1) return undefined;
        const t = (await admin.send(new DescribeTasksCommand({ cluster, tasks: arns }))).tasks?.[0];
        seen = JSON.stringify([t?.lastStatus, t?.containers]);
        return t?.lastStatus === 'RUNNING' ? t : undefined;
      });
      expect(replacement.containers![0]!.imageDigest).toBe(pushed['eve/app:1']);
    }, 180_000);
  });
});
