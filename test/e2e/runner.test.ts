// The runner with real pieces only: the berth CLI as users start it, images built with buildah
// from Debian's busybox-static and pushed over HTTPS with buildah, containers under runc, bridge
// networking through the CNI plugins, and the ECS API driven by @aws-sdk/client-ecs and the aws
// CLI. A push rolls a service through a hook, health-gated; a broken push trips the circuit
// breaker, which rolls back to the healthy digest; a push runs a batch task to completion; a
// SIGKILLed berth adopts its running task after the restart.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateServiceCommand,
  DescribeServicesCommand,
  DescribeTasksCommand,
  type ECSClient,
  ListTasksCommand,
  RegisterTaskDefinitionCommand,
  type Task,
} from '@aws-sdk/client-ecs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningBerth, startBerth } from '../support/berth.ts';
import { type ContainerTools, containerTools } from '../support/containers.ts';
import { httpsClient } from '../support/https.ts';
import {
  adminAccessKey,
  berthLogTail,
  ecsClient,
  httpGet,
  pushImage as pushTo,
  removeSuiteBridge,
  roleWithPolicy,
  runnerPrerequisitesMissing,
  suiteNetwork,
  until as untilWith,
} from '../support/runner-kit.ts';
import { run } from '../support/tools.ts';

const why = runnerPrerequisitesMissing();
if (why) console.warn(`runner e2e SKIPPED: ${why}`);

const { bridge, subnet } = suiteNetwork('bre', 97);

let berth: RunningBerth;
let tools: ContainerTools;
let ecs: ECSClient;
let api: ReturnType<typeof httpsClient>;
let key: { id: string; secret: string };
const dataDir = mkdtempSync(join(tmpdir(), 'berth-runner-e2e-'));
const berthArgs = {
  dataDir,
  env: {
    BERTH_RUNNER_BRIDGE_NAME: bridge,
    BERTH_RUNNER_BRIDGE_SUBNET: subnet,
    BERTH_RUNNER_HOOK_DEBOUNCE_MS: '200',
    BERTH_LOG_LEVEL: 'info',
  },
};

/** What the last probe saw, for the timeout message. */
let seen = '';

const until = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 120_000) =>
  untilWith(what, probe, { timeoutMs, context: () => `last seen: ${seen}\n${berthLogTail(berth)}` });

/** Builds an image from busybox and pushes it as REPO:TAG; answers its manifest digest. */
const pushImage = (repo: string, tag: string, cmd: string[], files: Record<string, string> = {}) =>
  pushTo(tools, berth.hostPort, repo, tag, cmd, files);

const webCmd = ['/bin/busybox', 'httpd', '-f', '-p', '8080', '-h', '/www'];

async function serviceState() {
  const out = await ecs.send(new DescribeServicesCommand({ cluster: 'default', services: ['web'] }));
  return out.services![0]!;
}

async function runningTasks(serviceName: string): Promise<Task[]> {
  const arns = (await ecs.send(new ListTasksCommand({ cluster: 'default', serviceName }))).taskArns ?? [];
  if (arns.length === 0) return [];
  return (await ecs.send(new DescribeTasksCommand({ cluster: 'default', tasks: arns }))).tasks ?? [];
}

/** The body the service's one healthy task serves, once there is exactly one and it is healthy. */
async function servedBy(digest: string): Promise<{ body: string; task: Task }> {
  return until(`the service to run ${digest} healthy`, async () => {
    const all = await runningTasks('web');
    seen = JSON.stringify(
      all.map((t) => [
        t.lastStatus,
        t.healthStatus,
        t.stoppedReason,
        t.containers?.map((c) => [c.imageDigest, c.reason, c.exitCode, c.healthStatus]),
      ]),
    );
    const tasks = all.filter((t) => t.lastStatus === 'RUNNING');
    if (tasks.length !== 1) return undefined;
    const t = tasks[0]!;
    if (t.healthStatus !== 'HEALTHY' || t.containers![0]!.imageDigest !== digest) return undefined;
    const port = t.containers![0]!.networkBindings![0]!.hostPort!;
    return { body: await httpGet(port), task: t };
  });
}

describe.skipIf(why)('the task runner with real containers', () => {
  beforeAll(async () => {
    berth = await startBerth(berthArgs);
    tools = containerTools(berth.caPath);
    await tools.login(berth.hostPort, 'admin', berth.admin.password);
    api = httpsClient(berth.url, berth.caPath, berth.adminBasic);
    key = await adminAccessKey(api);
    ecs = ecsClient(berth, key);
  }, 120_000);

  afterAll(async () => {
    // Stop every task before berth goes, so no container outlives the suite.
    if (berth && ecs) {
      for (const svc of ['web']) {
        await ecs
          .send(new DescribeServicesCommand({ cluster: 'default', services: [svc] }))
          .then(async () => {
            const { DeleteServiceCommand } = await import('@aws-sdk/client-ecs');
            await ecs.send(new DeleteServiceCommand({ cluster: 'default', service: svc, force: true }));
          })
          .catch(() => {});
      }
      // Until every task is STOPPED, not only no longer meant to run: a berth stopped mid-stop
      // leaves the rest of the stop (mounts, namespaces) to its next start.
      await until(
        'all tasks to stop',
        async () => {
          const list = async (desiredStatus: 'RUNNING' | 'STOPPED') =>
            (await ecs.send(new ListTasksCommand({ cluster: 'default', desiredStatus }))).taskArns ?? [];
          if ((await list('RUNNING')).length > 0) return undefined;
          const stopping = await list('STOPPED');
          if (stopping.length === 0) return true;
          const tasks = (await ecs.send(new DescribeTasksCommand({ cluster: 'default', tasks: stopping })))
            .tasks;
          return tasks?.every((t) => t.lastStatus === 'STOPPED') ? true : undefined;
        },
        90_000,
      ).catch(() => {});
    }
    await berth?.stop();
    await tools?.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
    // The CNI bridge plugin creates the bridge and never removes it; this suite's is its own,
    // and so are berth's iptables chains for it.
    await removeSuiteBridge(bridge);
  }, 180_000);

  let good1: string;
  let good2: string;

  it('a service on a pushed image passes its health check and answers HTTP on its port', async () => {
    good1 = await pushImage('web', '1.0.0', webCmd, { '/www/index.html': 'web v1.0.0\n' });
    await ecs.send(
      new RegisterTaskDefinitionCommand({
        family: 'web',
        networkMode: 'bridge',
        containerDefinitions: [
          {
            name: 'web',
            image: `${berth.hostPort}/web:1.0.0`,
            memory: 64,
            portMappings: [{ containerPort: 8080, hostPort: 0, protocol: 'tcp' }],
            healthCheck: {
              // CMD, not CMD-SHELL: the image is one busybox binary, with no /bin/sh.
              command: ['CMD', '/bin/busybox', 'wget', '-q', '-O', '/dev/null', 'http://127.0.0.1:8080/'],
              interval: 5,
              timeout: 3,
              retries: 2,
            },
          },
        ],
      }),
    );
    await ecs.send(
      new CreateServiceCommand({
        cluster: 'default',
        serviceName: 'web',
        taskDefinition: 'web',
        desiredCount: 1,
        deploymentConfiguration: {
          maximumPercent: 200,
          minimumHealthyPercent: 100,
          deploymentCircuitBreaker: { enable: true, rollback: true },
        },
      }),
    );
    const { body } = await servedBy(good1);
    expect(body).toBe('web v1.0.0\n');
  }, 240_000);

  it('a push rolls the service onto the new digest through a hook, gated on health', async () => {
    // The rule acts as a role that may roll this service onto images of this repository.
    const roleArn = await roleWithPolicy(api, 'web-deployer', [
      { Effect: 'Allow', Action: 'ecs:UpdateService', Resource: 'service/default/web' },
      { Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/web' },
    ]);
    const rule = await api('/api/v1/hooks', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        rule: {
          name: 'web-releases',
          repository: 'web',
          tag: 'semver:>=1.0.0',
          roleArn,
          action: { type: 'rollService', cluster: 'default', service: 'web' },
        },
      }),
    });
    expect(rule.status, rule.body.toString()).toBe(201);
    good2 = await pushImage('web', '1.0.1', webCmd, { '/www/index.html': 'web v1.0.1\n' });
    const { body } = await servedBy(good2);
    expect(body).toBe('web v1.0.1\n');
    const runs = JSON.parse((await api('/api/v1/hooks/runs')).body.toString()) as {
      items: { status: string; digest: string; result?: { deploymentId: string } }[];
    };
    expect(runs.items[0]).toMatchObject({ status: 'succeeded', digest: good2 });
    // The old task drains once the new one is healthy; then the deployment is complete.
    await until('the deployment to complete', async () =>
      (await serviceState()).deployments?.[0]?.rolloutState === 'COMPLETED' ? true : undefined,
    );
  }, 240_000);

  it('a broken push trips the circuit breaker, which rolls back to the healthy digest', async () => {
    const broken = await pushImage('web', '1.1.0', [
      '/bin/busybox',
      'sh',
      '-c',
      'echo broken build >&2; exit 3',
    ]);
    // ECS lists only live deployments: once the rollback completes, the failed one is history.
    const rolledBack = await until(
      'the rollback',
      async () => {
        const svc = await serviceState();
        seen = `${JSON.stringify(svc.deployments)} ${JSON.stringify(svc.events?.slice(0, 6))}`;
        const events = JSON.stringify(svc.events);
        const primary = svc.deployments?.find((d) => d.status === 'PRIMARY');
        return events.includes('rolling back to deployment') && primary?.rolloutState === 'COMPLETED'
          ? svc
          : undefined;
      },
      240_000,
    );
    expect(JSON.stringify(rolledBack.events)).toContain('deployment failed: tasks failed to start.');
    const { body } = await servedBy(good2);
    expect(body).toBe('web v1.0.1\n');
    // The history keeps the failed deployment, pinned to the broken digest.
    const history = JSON.parse(
      (await api('/api/v1/runner/clusters/default/services/web/deployments')).body.toString(),
    ) as { items: { rolloutState: string; pinnedImages: Record<string, string> }[] };
    expect(
      history.items.some((d) => d.rolloutState === 'FAILED' && d.pinnedImages['web']?.endsWith(broken)),
    ).toBe(true);
  }, 300_000);

  it('a push runs a batch task to completion, with its exit code and logs recorded', async () => {
    await ecs.send(
      new RegisterTaskDefinitionCommand({
        family: 'report',
        networkMode: 'none',
        containerDefinitions: [
          { name: 'main', image: `${berth.hostPort}/jobs/report:latest`, memory: 32, essential: true },
        ],
      }),
    );
    const roleArn = await roleWithPolicy(api, 'report-runner', [
      { Effect: 'Allow', Action: 'ecs:RunTask', Resource: 'taskdefinition/report' },
      { Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/jobs/*' },
    ]);
    const rule = await api('/api/v1/hooks', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        rule: {
          name: 'report-on-push',
          roleArn,
          repository: 'jobs/*',
          tag: 'latest',
          action: { type: 'runTask', cluster: 'default', taskDefinition: 'report' },
        },
      }),
    });
    expect(rule.status, rule.body.toString()).toBe(201);
    const digest = await pushImage('jobs/report', 'latest', [
      '/bin/busybox',
      'sh',
      '-c',
      'echo report done; exit 0',
    ]);
    const runRecord = await until('the hook run', async () => {
      const runs = JSON.parse((await api('/api/v1/hooks/runs')).body.toString()) as {
        items: { ruleName: string; status: string; digest: string; result?: { taskArns: string[] } }[];
      };
      const r = runs.items.find((x) => x.ruleName === 'report-on-push' && x.digest === digest);
      return r?.status === 'succeeded' ? r : undefined;
    });
    const taskArn = runRecord.result!.taskArns[0]!;
    const done = await until('the batch task to stop', async () => {
      const t = (await ecs.send(new DescribeTasksCommand({ cluster: 'default', tasks: [taskArn] })))
        .tasks?.[0];
      return t?.lastStatus === 'STOPPED' ? t : undefined;
    });
    expect(done.containers![0]!.exitCode).toBe(0);
    expect(done.containers![0]!.imageDigest).toBe(digest);
    expect(done.stopCode).toBe('EssentialContainerExited');
    const id = taskArn.slice(taskArn.lastIndexOf('/') + 1);
    const logs = JSON.parse(
      (await api(`/api/v1/runner/clusters/default/tasks/${id}/logs`)).body.toString(),
    ) as {
      entries: { stream: string; line: string }[];
    };
    expect(logs.entries).toContainEqual(expect.objectContaining({ stream: 'stdout', line: 'report done' }));
  }, 240_000);

  it('the aws CLI describes the service', async () => {
    const aws = ['/usr/bin/aws', '/usr/local/bin/aws'].find((p) => existsSync(p));
    if (!aws) {
      console.warn('aws CLI case SKIPPED: no aws binary (scripts/setup-system.sh installs awscli)');
      return;
    }
    const out = await run(
      aws,
      [
        'ecs',
        'describe-services',
        '--cluster',
        'default',
        '--services',
        'web',
        '--endpoint-url',
        `${berth.url}/ecs`,
        '--output',
        'json',
      ],
      {
        env: {
          AWS_ACCESS_KEY_ID: key.id,
          AWS_SECRET_ACCESS_KEY: key.secret,
          AWS_DEFAULT_REGION: 'us-east-1',
          AWS_CA_BUNDLE: berth.caPath,
          AWS_CONFIG_FILE: '/dev/null',
          AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
        },
      },
    );
    const parsed = JSON.parse(out.stdout) as { services: { serviceName: string; runningCount: number }[] };
    expect(parsed.services[0]).toMatchObject({ serviceName: 'web', runningCount: 1 });
  }, 120_000);

  it('after berth is killed with SIGKILL, the restarted berth adopts the running task', async () => {
    const before = (await runningTasks('web')).filter((t) => t.lastStatus === 'RUNNING');
    expect(before).toHaveLength(1);
    const port = before[0]!.containers![0]!.networkBindings![0]!.hostPort!;
    berth.process.kill('SIGKILL');
    await new Promise((r) => berth.process.once('exit', r));
    // The container does not depend on berth: it still answers while berth is down.
    expect(await httpGet(port)).toBe('web v1.0.1\n');
    berth = await startBerth(berthArgs);
    ecs = ecsClient(berth, key);
    api = httpsClient(berth.url, berth.caPath, berth.adminBasic);
    const after = await until('the service to settle', async () => {
      const svc = await serviceState();
      const tasks = (await runningTasks('web')).filter((t) => t.lastStatus === 'RUNNING');
      return svc.runningCount === 1 && tasks.length === 1 ? tasks : undefined;
    });
    expect(after[0]!.taskArn).toBe(before[0]!.taskArn);
    expect(await httpGet(port)).toBe('web v1.0.1\n');
  }, 240_000);
});
