// Issue 13, attacks 1 and 5, tried as a hostile tenant would, against a real berth (the CLI as
// users start it), real tasks under runc, bridge networking through the CNI plugins, and the ECS
// API through @aws-sdk/client-ecs:
//   attack 1 (host root from a task definition): the issue's `host.sourcePath "/"` at /host,
//     read-write, and its variants (/proc, the data dir, the key file, `..`, a symlink a task
//     plants in an allowed directory, a directory swapped for a symlink between RunTask and the
//     mount), a task reading /etc/shadow and DATA/keys/kek.json through every mount it is
//     allowed, `networkMode: host` with `user: "0"` (refused by default, working once allowed,
//     withdrawn from a running task and a service by a stricter config), and an allow list that
//     holds berth's data (berth refuses to start);
//   attack 5 (bridge tasks reach the host's loopback, CVE-2020-8558): a hand-built SYN to a
//     listener on the host's 127.0.0.1, from a namespace of the suite's own on the task bridge and
//     from a real bridge task's namespace, gets no answer.
// And what bridge tasks keep: published ports answering on the host's 127.0.0.1, each other, a
// peer beyond the host, and their role credentials at http://169.254.170.2, fetched with the real
// AWS SDK for JavaScript and the aws CLI, with a second berth on a second bridge beside it.
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import {
  CreateServiceCommand,
  DeleteServiceCommand,
  DescribeServicesCommand,
  DescribeTasksCommand,
  type ECSClient,
  ListTasksCommand,
  RegisterTaskDefinitionCommand,
  type RegisterTaskDefinitionCommandInput,
  RunTaskCommand,
  StopTaskCommand,
  type Task,
  UpdateServiceCommand,
} from '@aws-sdk/client-ecs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningBerth, startBerth } from '../support/berth.ts';
import { type ContainerTools, containerTools } from '../support/containers.ts';
import { httpsClient } from '../support/https.ts';
import { bridgeNetns, macOf, routedNetns, synProbe } from '../support/netns.ts';
import {
  adminAccessKey,
  berthLogTail,
  ecsClient,
  httpGet,
  pushImage,
  removeSuiteBridge,
  roleWithPolicy,
  runnerPrerequisitesMissing,
  suiteNetwork,
  until as untilWith,
} from '../support/runner-kit.ts';
import { run, tool } from '../support/tools.ts';

const why = runnerPrerequisitesMissing();
if (why) console.warn(`host access attacks SKIPPED: ${why}`);

const { bridge, subnet } = suiteNetwork('hst', 91);
const prefix = subnet.slice(0, subnet.lastIndexOf('.'));
const gateway = `${prefix}.1`;
// A second berth on a bridge of its own (this suite owns 10.91.x.0/24).
const bridge2 = `${bridge}b`;
const subnet2 = `10.91.${200 + (process.pid % 50)}.0/24`;
const cluster = 'default';
const role = 'arn:aws:iam::000000000000:role/app-task';

const work = mkdtempSync(join(tmpdir(), 'berth-hst-'));
const dataDir = join(work, 'data');
const allowed = join(work, 'allowed');
mkdirSync(allowed);
// Tasks write there, so it belongs to their user namespace's root, as the README tells operators
// (the default of runner.userNamespace.hostIdStart): a hostile task must be able to plant things.
const taskRoot = 2013265920;
chownSync(allowed, taskRoot, taskRoot);
const keyFile = join(dataDir, 'keys', 'kek.json');

let berth: RunningBerth;
let berth2: RunningBerth | undefined;
let tools: ContainerTools;
let tools2: ContainerTools | undefined;
let ecs: ECSClient;
let api: ReturnType<typeof httpsClient>;
let key: { id: string; secret: string };
let image: string;
const closers: (() => Promise<unknown>)[] = [];

/** What the last probe saw, for the timeout message. */
let seen = '';
const until = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 120_000) =>
  untilWith(what, probe, { timeoutMs, context: () => `last seen: ${seen}\n${berthLogTail(berth)}` });

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const taskIdOf = (arn: string) => arn.slice(arn.lastIndexOf('/') + 1);

async function startBerthHere(env: Record<string, string> = {}): Promise<void> {
  berth = await startBerth({
    dataDir,
    env: {
      BERTH_RUNNER_BRIDGE_NAME: bridge,
      BERTH_RUNNER_BRIDGE_SUBNET: subnet,
      BERTH_RUNNER_HOST_PATH_ALLOW_LIST: allowed,
      BERTH_LOG_LEVEL: 'info',
      ...env,
    },
  });
  api = httpsClient(berth.url, berth.caPath, berth.adminBasic);
  if (key) ecs = ecsClient(berth, key);
}

/** A busybox shell script as a container command (the image has no /bin/sh, only busybox). */
const sh = (script: string) => ['/bin/busybox', 'sh', '-c', script];

function taskDefinition(
  family: string,
  containers: Record<string, unknown>[],
  extra: Partial<RegisterTaskDefinitionCommandInput> = {},
): RegisterTaskDefinitionCommandInput {
  return {
    family,
    networkMode: 'bridge',
    ...extra,
    containerDefinitions: containers.map((c) => ({
      name: 'main',
      image,
      memory: 32,
      essential: true,
      stopTimeout: 2,
      ...c,
    })) as RegisterTaskDefinitionCommandInput['containerDefinitions'],
  };
}

const register = (input: RegisterTaskDefinitionCommandInput) =>
  ecs.send(new RegisterTaskDefinitionCommand(input));

/** The ECS error a call fails with (it must fail). */
async function refusal(call: Promise<unknown>): Promise<{ name: string; message: string }> {
  try {
    await call;
  } catch (e) {
    return { name: (e as Error).name, message: (e as Error).message };
  }
  throw new Error('the call was accepted');
}

async function runTask(family: string, overrides?: Record<string, unknown>): Promise<string> {
  const out = await ecs.send(
    new RunTaskCommand({ cluster, taskDefinition: family, ...(overrides && { overrides }) }),
  );
  expect(out.failures ?? []).toEqual([]);
  return out.tasks![0]!.taskArn!;
}

async function describeTask(arn: string): Promise<Task> {
  const t = (await ecs.send(new DescribeTasksCommand({ cluster, tasks: [arn] }))).tasks?.[0];
  if (!t) throw new Error(`task ${arn} is not described`);
  return t;
}

async function taskReaches(arn: string, status: 'RUNNING' | 'STOPPED'): Promise<Task> {
  const t = await until(`task ${taskIdOf(arn)} to be ${status}`, async () => {
    const t = await describeTask(arn);
    seen = JSON.stringify([t.lastStatus, t.stopCode, t.stoppedReason, t.containers?.map((c) => c.reason)]);
    return t.lastStatus === status || t.lastStatus === 'STOPPED' ? t : undefined;
  });
  expect(t.lastStatus, `task ${taskIdOf(arn)}: ${t.stopCode} ${t.stoppedReason}`).toBe(status);
  return t;
}

async function logLines(arn: string, container = 'main'): Promise<string[]> {
  const r = await api(
    `/api/v1/runner/clusters/${cluster}/tasks/${taskIdOf(arn)}/logs?container=${container}`,
  );
  expect(r.status, r.body.toString()).toBe(200);
  return (JSON.parse(r.body.toString()) as { entries: { line: string }[] }).entries.map((e) => e.line);
}

async function logUntil(arn: string, marker: string, container = 'main'): Promise<string[]> {
  return until(`task ${taskIdOf(arn)} to log ${marker}`, async () => {
    const lines = await logLines(arn, container);
    seen = lines.slice(-5).join(' | ');
    return lines.some((l) => l.includes(marker)) ? lines : undefined;
  });
}

/** A listener on `host` that accepts and closes; answers its port. */
async function listener(host: string): Promise<number> {
  const server: Server = createServer((s) => s.destroy());
  await new Promise<void>((r) => server.listen(0, host, r));
  closers.push(() => new Promise((r) => server.close(r)));
  return (server.address() as { port: number }).port;
}

/** A port nothing listens on now (the kernel's pick, released). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

/** The task's address on the bridge, read from its namespace. */
async function taskAddress(arn: string): Promise<string> {
  const out = await run(tool('ip'), ['-n', `berth-${taskIdOf(arn)}`, '-j', '-4', 'addr', 'show', 'eth0']);
  const parsed = JSON.parse(out.stdout) as { addr_info: { local: string }[] }[];
  return parsed[0]!.addr_info[0]!.local;
}

async function createTaskRole(client: ReturnType<typeof httpsClient>): Promise<void> {
  const json = { 'content-type': 'application/json' };
  const policy = await client('/api/v1/policies/team-app-pull', {
    method: 'PUT',
    headers: json,
    body: JSON.stringify({
      document: {
        Version: '2012-10-17',
        Statement: [{ Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/team/app' }],
      },
    }),
  });
  expect(policy.status, policy.body.toString()).toBe(201);
  const made = await client('/api/v1/roles', {
    method: 'POST',
    headers: json,
    body: JSON.stringify({ name: 'app-task' }),
  });
  expect(made.status, made.body.toString()).toBe(201);
  const attached = await client('/api/v1/roles/app-task/policies/team-app-pull', { method: 'PUT' });
  expect(attached.status, attached.body.toString()).toBe(204);
}

/** What /token grants `id:secret` (Basic) for pulling team/app: proof the credentials are real. */
async function pullGranted(b: RunningBerth, id: string, secret: string): Promise<string[]> {
  const basic = `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`;
  const r = await httpsClient(b.url, b.caPath, basic)('/token?service=berth&scope=repository:team/app:pull');
  expect(r.status, r.body.toString()).toBe(200);
  const { token } = JSON.parse(r.body.toString()) as { token: string };
  const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as {
    access: { name: string; actions: string[] }[];
  };
  return claims.access.flatMap((a) => a.actions.map((x) => `${a.name}:${x}`));
}

/** Stops every task still meant to run, and waits until none runs. */
async function stopEverything(client: ECSClient): Promise<void> {
  const arns =
    (await client.send(new ListTasksCommand({ cluster, desiredStatus: 'RUNNING' }))).taskArns ?? [];
  for (const task of arns) await client.send(new StopTaskCommand({ cluster, task, reason: 'suite cleanup' }));
  await untilWith(
    'every task to stop',
    async () => {
      const left =
        (await client.send(new ListTasksCommand({ cluster, desiredStatus: 'RUNNING' }))).taskArns ?? [];
      const all = [...left, ...arns];
      if (all.length === 0) return true;
      const tasks = (await client.send(new DescribeTasksCommand({ cluster, tasks: all }))).tasks ?? [];
      return left.length === 0 && tasks.every((t) => t.lastStatus === 'STOPPED') ? true : undefined;
    },
    { timeoutMs: 120_000 },
  );
}

describe.skipIf(why)('attacks 1 and 5: host paths, host network and the loopback are closed to tasks', () => {
  beforeAll(async () => {
    await startBerthHere();
    tools = containerTools(berth.caPath);
    await tools.login(berth.hostPort, 'admin', berth.admin.password);
    key = await adminAccessKey(api);
    ecs = ecsClient(berth, key);
    const digest = await pushImage(tools, berth.hostPort, 'team/app', '1', ['/bin/busybox', 'env'], {
      '/www/index.html': 'berth-hst\n',
    });
    image = `${berth.hostPort}/team/app@${digest}`;
    await createTaskRole(api);
  }, 240_000);

  afterAll(async () => {
    await ecs?.send(new DeleteServiceCommand({ cluster, service: 'hostsvc', force: true })).catch(() => {});
    if (berth && ecs) await stopEverything(ecs).catch((err) => console.error('host-access cleanup:', err));
    await berth?.stop();
    if (berth2) await berth2.stop();
    for (const close of closers.splice(0).reverse()) await close().catch(() => undefined);
    await tools?.cleanup();
    await tools2?.cleanup();
    await removeSuiteBridge(bridge);
    await removeSuiteBridge(bridge2);
    rmSync(work, { recursive: true, force: true });
  }, 300_000);

  it('attack 1: the task definition of the issue and its variants are refused, naming the field and the config key', async () => {
    // The issue's task definition, verbatim: / read-write at /host, as root.
    const issue = await refusal(
      register(
        taskDefinition(
          'root',
          [{ user: '0', mountPoints: [{ sourceVolume: 'root', containerPath: '/host', readOnly: false }] }],
          { volumes: [{ name: 'root', host: { sourcePath: '/' } }] },
        ),
      ),
    );
    expect(issue.name).toBe('ClientException');
    expect(issue.message).toContain("volumes[0].host.sourcePath '/' is not allowed");
    expect(issue.message).toContain('runner.hostPathAllowList');

    symlinkSync('/', join(allowed, 'planted-root'));
    const variants: [string, string][] = [
      ['/proc', "is the host's /proc"],
      ['/sys/fs/cgroup', "lies inside the host's /sys"],
      ['/dev', "is the host's /dev"],
      [dataDir, "is berth's data directory (data)"],
      [keyFile, "lies inside berth's data directory (data)"],
      [`${allowed}/../data/keys`, "resolving to '"],
      [`${allowed}/sub/../../../..`, "resolving to '/'"],
      ['/etc', 'lies under none of runner.hostPathAllowList'],
      [join(allowed, 'planted-root'), `'${join(allowed, 'planted-root')}' (resolving to '/') is not allowed`],
    ];
    for (const [sourcePath, what] of variants) {
      const r = await refusal(
        register(
          taskDefinition(
            'variant',
            [
              {
                mountPoints: [
                  { sourceVolume: 'scratch', containerPath: '/s' },
                  { sourceVolume: 'h', containerPath: '/host' },
                ],
              },
            ],
            {
              volumes: [{ name: 'scratch' }, { name: 'h', host: { sourcePath } }],
            },
          ),
        ),
      );
      expect(r.name, sourcePath).toBe('ClientException');
      expect(r.message, sourcePath).toContain('volumes[1].host.sourcePath');
      expect(r.message, sourcePath).toContain(what);
      expect(r.message, sourcePath).toContain('runner.hostPathAllowList');
    }

    // The host network with root in the container: refused unless the operator allows it.
    const hostNet = await refusal(
      register(taskDefinition('hostnet', [{ user: '0' }], { networkMode: 'host' })),
    );
    expect(hostNet.name).toBe('ClientException');
    expect(hostNet.message).toMatch(
      /^networkMode 'host' is not allowed on this berth: .*runner\.allowHostNetwork/,
    );
  });

  it('attack 1: no task reads /etc/shadow or DATA/keys/kek.json through a mount it is allowed, nor through what it plants there', async () => {
    const secrets = new Map([
      [sha256(readFileSync('/etc/shadow')), '/etc/shadow'],
      [sha256(readFileSync(keyFile)), 'DATA/keys/kek.json'],
    ]);
    // Every way a task could name the host's files from its allowed host directory (/data) and
    // its task volume (/scratch); it also plants a symlink to / and a directory to swap later.
    const reader = [
      'b=/bin/busybox',
      '$b ln -s / /data/escape; $b mkdir -p /data/swap',
      'for f in /data/escape/etc/shadow /data/../etc/shadow /scratch/../../etc/shadow /proc/1/root/etc/shadow /etc/shadow ' +
        '/data/escape$DATA/keys/kek.json /data/..$DATA/keys/kek.json /scratch/../..$DATA/keys/kek.json $DATA/keys/kek.json; do',
      '  if [ -r "$f" ]; then echo "READ $($b sha256sum < "$f" | $b cut -c1-64) $f"; else echo "NONE $f"; fi',
      'done',
      '$b find /data /scratch -name kek.json -o -name shadow | $b sed "s/^/FOUND /"',
      'echo DONE',
    ].join('\n');
    await register(
      taskDefinition(
        'reader',
        [
          {
            user: '0',
            command: sh(reader),
            environment: [{ name: 'DATA', value: dataDir }],
            mountPoints: [
              { sourceVolume: 'shared', containerPath: '/data', readOnly: false },
              { sourceVolume: 'scratch', containerPath: '/scratch', readOnly: false },
            ],
          },
        ],
        { volumes: [{ name: 'shared', host: { sourcePath: allowed } }, { name: 'scratch' }] },
      ),
    );
    const readerTask = await runTask('reader');
    await taskReaches(readerTask, 'STOPPED');
    const lines = await logLines(readerTask);
    expect(lines, lines.join('\n')).toContain('DONE');
    expect(lines.filter((l) => l.startsWith('FOUND'))).toEqual([]);
    for (const l of lines) expect(secrets.get(l.split(' ')[1] ?? ''), l).toBeUndefined();

    // What the task planted: a symlink to / in the allowed directory is not a way to mount /.
    const planted = await refusal(
      register(
        taskDefinition('escape', [{ mountPoints: [{ sourceVolume: 'h', containerPath: '/host' }] }], {
          volumes: [{ name: 'h', host: { sourcePath: join(allowed, 'escape') } }],
        }),
      ),
    );
    expect(planted.name).toBe('ClientException');
    expect(planted.message).toContain(
      `volumes[0].host.sourcePath '${join(allowed, 'escape')}' (resolving to '/')`,
    );

    // A directory that is a directory when RunTask looks, swapped for a symlink to / by the task's
    // first container before its second is started with it mounted: refused at the mount itself.
    await register(
      taskDefinition(
        'swap',
        [
          {
            name: 'swapper',
            essential: false,
            command: sh('/bin/busybox rm -r /data/swap && /bin/busybox ln -s / /data/swap && echo SWAPPED'),
            mountPoints: [{ sourceVolume: 'shared', containerPath: '/data' }],
          },
          {
            name: 'victim',
            user: '0',
            dependsOn: [{ containerName: 'swapper', condition: 'SUCCESS' }],
            command: sh('echo "READ $(/bin/busybox sha256sum < /host/etc/shadow | /bin/busybox cut -c1-64)"'),
            mountPoints: [{ sourceVolume: 'target', containerPath: '/host' }],
          },
        ],
        {
          volumes: [
            { name: 'shared', host: { sourcePath: allowed } },
            { name: 'target', host: { sourcePath: join(allowed, 'swap') } },
          ],
        },
      ),
    );
    const swapTask = await runTask('swap');
    const stopped = await taskReaches(swapTask, 'STOPPED');
    expect(await logLines(swapTask, 'swapper')).toContain('SWAPPED');
    expect(stopped.stopCode).toBe('TaskFailedToStart');
    expect(stopped.stoppedReason).toContain(
      `volumes[1].host.sourcePath '${join(allowed, 'swap')}' (resolving to '/')`,
    );
    expect(stopped.stoppedReason).toContain('runner.hostPathAllowList');
    const victim = await logLines(swapTask, 'victim').catch(() => [] as string[]);
    for (const l of victim) expect(secrets.get(l.split(' ')[1] ?? ''), l).toBeUndefined();
  });

  it('attack 1: networkMode host works once allowed, and a stricter config withdraws it from a running task, a service and push hooks', async () => {
    await berth.stop();
    await startBerthHere({ BERTH_RUNNER_ALLOW_HOST_NETWORK: 'true' });
    const port = await freePort();
    await register(
      taskDefinition(
        'hostnet',
        [{ user: '0', command: ['/bin/busybox', 'httpd', '-f', '-p', String(port), '-h', '/www'] }],
        {
          networkMode: 'host',
        },
      ),
    );
    await register(
      taskDefinition('hostsvc', [{ user: '0', command: ['/bin/busybox', 'sleep', '3600'] }], {
        networkMode: 'host',
      }),
    );
    const hostTask = await runTask('hostnet');
    await taskReaches(hostTask, 'RUNNING');
    // Root in the container listening on the host's own network: what the operator allowed.
    expect(await until('the host-network task to answer', () => httpGet(port).catch(() => undefined))).toBe(
      'berth-hst\n',
    );
    await ecs.send(
      new CreateServiceCommand({
        cluster,
        serviceName: 'hostsvc',
        taskDefinition: 'hostsvc',
        desiredCount: 1,
      }),
    );
    const svcTask = await until('the host-network service to run', async () => {
      const arns = (await ecs.send(new ListTasksCommand({ cluster, serviceName: 'hostsvc' }))).taskArns ?? [];
      const t = arns.length ? await describeTask(arns[0]!) : undefined;
      return t?.lastStatus === 'RUNNING' ? t : undefined;
    });

    // The operator takes it back: the running task and the service's task stop, with the reason.
    await berth.stop();
    await startBerthHere();
    for (const arn of [hostTask, svcTask.taskArn!]) {
      const t = await taskReaches(arn, 'STOPPED');
      expect(t.stoppedReason).toContain(
        "berth's configuration no longer allows this task: networkMode 'host'",
      );
      expect(t.stoppedReason).toContain('runner.allowHostNetwork');
    }
    await expect(httpGet(port)).rejects.toThrow();
    // The service's replacements are refused at launch, and it says why in its events.
    const events = await until('the service to report the refused launch', async () => {
      const svc = (await ecs.send(new DescribeServicesCommand({ cluster, services: ['hostsvc'] })))
        .services![0]!;
      const msgs = (svc.events ?? []).map((e) => e.message ?? '');
      seen = msgs.slice(0, 3).join(' | ');
      return msgs.some((m) => m.includes('failed to launch a task') && m.includes('runner.allowHostNetwork'))
        ? svc
        : undefined;
    });
    expect(events.runningCount).toBe(0);
    // A definition registered while it was allowed does not run now, however it is started.
    const again = await refusal(ecs.send(new RunTaskCommand({ cluster, taskDefinition: 'hostnet' })));
    expect(again.name).toBe('ClientException');
    expect(again.message).toContain('runner.allowHostNetwork');
    const forced = await refusal(
      ecs.send(new UpdateServiceCommand({ cluster, service: 'hostsvc', forceNewDeployment: true })),
    );
    expect(forced.name).toBe('ClientException');
    expect(forced.message).toContain('runner.allowHostNetwork');
    // One at a time: a refusal must not wait unobserved while another call runs.
    for (const call of [
      () =>
        ecs.send(
          new CreateServiceCommand({
            cluster,
            serviceName: 'hostsvc2',
            taskDefinition: 'hostnet',
            desiredCount: 1,
          }),
        ),
      () => ecs.send(new UpdateServiceCommand({ cluster, service: 'hostsvc', taskDefinition: 'hostnet' })),
    ]) {
      const r = await refusal(call());
      expect(r.name).toBe('ClientException');
      expect(r.message).toContain("networkMode 'host' is not allowed");
      expect(r.message).toContain('runner.allowHostNetwork');
    }
    // Push hooks: a runTask rule and a rollService rule on a push record the refusal on their runs.
    // Their role may do all they do, so the refusal they record is the host network's alone.
    const roleArn = await roleWithPolicy(api, 'hostnet-hooks', [
      { Effect: 'Allow', Action: ['ecs:RunTask', 'ecs:UpdateService', 'registry:Pull'], Resource: '*' },
    ]);
    for (const [name, action] of [
      ['run-hostnet', { type: 'runTask', cluster, taskDefinition: 'hostnet' }],
      ['roll-hostsvc', { type: 'rollService', cluster, service: 'hostsvc' }],
    ] as const) {
      const rule = await api('/api/v1/hooks', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ rule: { name, repository: 'team/app', tag: 'hooked', roleArn, action } }),
      });
      expect(rule.status, rule.body.toString()).toBe(201);
    }
    await tools.login(berth.hostPort, 'admin', berth.admin.password);
    const pushed = await pushImage(tools, berth.hostPort, 'team/app', 'hooked', ['/bin/busybox', 'env'], {
      '/www/index.html': 'hooked\n',
    });
    for (const name of ['run-hostnet', 'roll-hostsvc']) {
      const run = await until(`the ${name} hook run to fail`, async () => {
        const runs = JSON.parse((await api('/api/v1/hooks/runs')).body.toString()) as {
          items: { ruleName: string; status: string; digest: string; reason?: string }[];
        };
        const r = runs.items.find((x) => x.ruleName === name && x.digest === pushed);
        seen = JSON.stringify(r);
        return r && r.status !== 'pending' && r.status !== 'running' ? r : undefined;
      });
      expect(run.status, JSON.stringify(run)).toBe('failed');
      expect(run.reason).toContain("networkMode 'host' is not allowed");
      expect(run.reason).toContain('runner.allowHostNetwork');
    }
    await ecs.send(new DeleteServiceCommand({ cluster, service: 'hostsvc', force: true }));
  });

  it('attack 5: a hand-built SYN from the task bridge to the host loopback gets no answer; bridge tasks keep their ports, each other and the world beyond', async () => {
    await register(
      taskDefinition('web', [
        {
          command: ['/bin/busybox', 'httpd', '-f', '-p', '8080', '-h', '/www'],
          portMappings: [{ containerPort: 8080, hostPort: 0 }],
        },
      ]),
    );
    const web = await runTask('web');
    const running = await taskReaches(web, 'RUNNING');
    const hostPort = running.containers![0]!.networkBindings![0]!.hostPort!;
    // The precondition of the CVE: portmap let the bridge route to 127.0.0.0/8.
    expect(readFileSync(`/proc/sys/net/ipv4/conf/${bridge}/route_localnet`, 'utf8').trim()).toBe('1');
    // Published ports still answer on the host's 127.0.0.1 (the README says so).
    expect(await until('the published port', () => httpGet(hostPort).catch(() => undefined))).toBe(
      'berth-hst\n',
    );

    const loopbackPort = await listener('127.0.0.1');
    const gatewayPort = await listener(gateway);
    const probe = await bridgeNetns(
      `hst-probe-${process.pid}`,
      `hstv${process.pid % 100000}`,
      bridge,
      `${prefix}.250/24`,
      gateway,
    );
    closers.push(() => probe.close());
    const bridgeMac = macOf(bridge);
    // The probe works: a listener on the bridge's own address answers it.
    expect(await synProbe(probe.name, 'eth0', probe.address, gateway, gatewayPort, bridgeMac)).toBe(
      'SYN-ACK',
    );
    // The attack: the host's loopback listener must not answer (not even with a reset).
    expect(await synProbe(probe.name, 'eth0', probe.address, '127.0.0.1', loopbackPort, bridgeMac)).toBe(
      'NO ANSWER',
    );
    // The same from a real bridge task's namespace.
    const webNetns = `berth-${taskIdOf(web)}`;
    const webIp = await taskAddress(web);
    expect(await synProbe(webNetns, 'eth0', webIp, gateway, gatewayPort, bridgeMac)).toBe('SYN-ACK');
    expect(await synProbe(webNetns, 'eth0', webIp, '127.0.0.1', loopbackPort, bridgeMac)).toBe('NO ANSWER');

    // Tasks still reach each other, and a peer beyond the host through the bridge's masquerade.
    const outside = await routedNetns(
      `hst-out-${process.pid}`,
      `hsto${process.pid % 100000}`,
      '10.91.254.1/30',
      '10.91.254.2/30',
    );
    closers.push(() => outside.close());
    const www = join(work, 'outside-www');
    mkdirSync(www);
    writeFileSync(join(www, 'index.html'), 'beyond-the-host\n');
    const httpd: ChildProcess = spawn(
      tool('ip'),
      ['netns', 'exec', outside.name, tool('busybox'), 'httpd', '-f', '-p', '8080', '-h', www],
      {
        stdio: 'ignore',
      },
    );
    closers.push(async () => httpd.kill('SIGKILL'));
    await register(
      taskDefinition('client', [
        {
          command: sh(
            `for i in 1 2 3 4 5 6 7 8 9 10; do /bin/busybox wget -q -O- http://${webIp}:8080/ && break; /bin/busybox sleep 1; done; ` +
              'for i in 1 2 3 4 5 6 7 8 9 10; do /bin/busybox wget -q -O- http://10.91.254.2:8080/ && break; /bin/busybox sleep 1; done; echo DONE',
          ),
        },
      ]),
    );
    const client = await runTask('client');
    await taskReaches(client, 'STOPPED');
    const said = await logLines(client);
    expect(said, said.join('\n')).toEqual(expect.arrayContaining(['berth-hst', 'beyond-the-host', 'DONE']));
    await ecs.send(new StopTaskCommand({ cluster, task: web }));
  });

  it('bridge tasks get their role credentials at http://169.254.170.2, through the real SDK and CLI, from that listener alone, beside a second berth', async () => {
    await register(
      taskDefinition(
        'with-role',
        [
          {
            command: sh(
              'env; /bin/busybox wget -q -O- --header "Authorization: $AWS_CONTAINER_AUTHORIZATION_TOKEN" "$AWS_CONTAINER_CREDENTIALS_FULL_URI"; echo; echo FETCHED; /bin/busybox sleep 600',
            ),
          },
        ],
        { taskRoleArn: role },
      ),
    );
    const task = await runTask('with-role');
    const lines = await logUntil(task, 'FETCHED');
    const env = Object.fromEntries(
      lines
        .filter((l) => /^[A-Z_]+=/.test(l))
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    const fullUri = env.AWS_CONTAINER_CREDENTIALS_FULL_URI!;
    const token = env.AWS_CONTAINER_AUTHORIZATION_TOKEN!;
    expect(fullUri).toBe(`http://169.254.170.2/v1/task-credentials/${taskIdOf(task)}`);
    // busybox wget inside the task fetched them.
    const fetched = JSON.parse(lines.find((l) => l.startsWith('{'))!) as {
      AccessKeyId: string;
      SecretAccessKey: string;
    };
    expect(await pullGranted(berth, fetched.AccessKeyId, fetched.SecretAccessKey)).toEqual(['team/app:pull']);

    // The real SDK's credential chain and the aws CLI, from a namespace on the bridge, with nothing
    // but the container variables in their environment.
    const probe = await bridgeNetns(
      `hst-cred-${process.pid}`,
      `hstc${process.pid % 100000}`,
      bridge,
      `${prefix}.251/24`,
      gateway,
    );
    closers.push(() => probe.close());
    const home = mkdtempSync(join(work, 'home-'));
    const containerEnv = [
      `PATH=${dirname(process.execPath)}:/usr/bin:/bin`,
      `HOME=${home}`,
      `AWS_CONTAINER_CREDENTIALS_FULL_URI=${fullUri}`,
      `AWS_CONTAINER_AUTHORIZATION_TOKEN=${token}`,
    ];
    const sdk = await probe.exec(
      [
        '/usr/bin/env',
        '-i',
        ...containerEnv,
        process.execPath,
        '--input-type=module',
        '-e',
        "import { defaultProvider } from '@aws-sdk/credential-provider-node'; const c = await defaultProvider()(); console.log(JSON.stringify(c));",
      ],
      { timeoutMs: 60_000 },
    );
    const fromSdk = JSON.parse(sdk.stdout) as { accessKeyId: string; secretAccessKey: string };
    expect(await pullGranted(berth, fromSdk.accessKeyId, fromSdk.secretAccessKey)).toEqual(['team/app:pull']);
    const cli = await probe.exec(
      [
        '/usr/bin/env',
        '-i',
        ...containerEnv,
        tool('aws'),
        'configure',
        'export-credentials',
        '--format',
        'process',
      ],
      {
        timeoutMs: 60_000,
      },
    );
    const fromCli = JSON.parse(cli.stdout) as { AccessKeyId: string; SecretAccessKey: string };
    expect(await pullGranted(berth, fromCli.AccessKeyId, fromCli.SecretAccessKey)).toEqual(['team/app:pull']);

    // Least privilege: there is nothing but the credentials endpoint behind that address.
    const statuses = await probe.exec(
      [
        process.execPath,
        '-e',
        `(async () => { const out = []; for (const p of ['/v2/', '/api/v1/users', '/ecs', '/token', '/v1/task-credentials/${taskIdOf(task)}']) out.push((await fetch('http://169.254.170.2' + p)).status); console.log(JSON.stringify(out)); })()`,
      ],
      { timeoutMs: 30_000 },
    );
    expect(JSON.parse(statuses.stdout)).toEqual([404, 404, 404, 404, 401]);

    // A second berth, listening on 127.0.0.1 too, with a bridge of its own: its tasks get its
    // credentials at the same address, and this berth's tasks still get theirs.
    const data2 = join(work, 'data2');
    berth2 = await startBerth({
      dataDir: data2,
      env: {
        BERTH_RUNNER_BRIDGE_NAME: bridge2,
        BERTH_RUNNER_BRIDGE_SUBNET: subnet2,
        BERTH_LOG_LEVEL: 'info',
      },
    });
    const api2 = httpsClient(berth2.url, berth2.caPath, berth2.adminBasic);
    tools2 = containerTools(berth2.caPath);
    await tools2.login(berth2.hostPort, 'admin', berth2.admin.password);
    const ecs2 = ecsClient(berth2, await adminAccessKey(api2));
    const digest2 = await pushImage(tools2, berth2.hostPort, 'team/app', '1', ['/bin/busybox', 'env']);
    await createTaskRole(api2);
    await ecs2.send(
      new RegisterTaskDefinitionCommand({
        family: 'with-role',
        networkMode: 'bridge',
        taskRoleArn: role,
        containerDefinitions: [
          {
            name: 'main',
            image: `${berth2.hostPort}/team/app@${digest2}`,
            memory: 32,
            stopTimeout: 2,
            // It stays up: a task's credentials die with it, and they are tried below.
            command: sh(
              '/bin/busybox wget -q -O- --header "Authorization: $AWS_CONTAINER_AUTHORIZATION_TOKEN" "$AWS_CONTAINER_CREDENTIALS_FULL_URI"; echo; echo FETCHED; exec /bin/busybox sleep 600',
            ),
          },
        ],
      }),
    );
    const task2 = (await ecs2.send(new RunTaskCommand({ cluster, taskDefinition: 'with-role' }))).tasks![0]!
      .taskArn!;
    const logs2 = await untilWith(
      'the second berth task to fetch its credentials',
      async () => {
        const r = await api2(`/api/v1/runner/clusters/${cluster}/tasks/${taskIdOf(task2)}/logs`);
        const l =
          (JSON.parse(r.body.toString()) as { entries?: { line: string }[] }).entries?.map((e) => e.line) ??
          [];
        return l.includes('FETCHED') ? l : undefined;
      },
      { context: () => berthLogTail(berth2) },
    );
    const second = JSON.parse(logs2.find((l) => l.startsWith('{'))!) as {
      AccessKeyId: string;
      SecretAccessKey: string;
    };
    expect(await pullGranted(berth2, second.AccessKeyId, second.SecretAccessKey)).toEqual(['team/app:pull']);
    const sdkAgain = await probe.exec(
      [
        '/usr/bin/env',
        '-i',
        ...containerEnv,
        process.execPath,
        '--input-type=module',
        '-e',
        "import { defaultProvider } from '@aws-sdk/credential-provider-node'; const c = await defaultProvider()(); console.log(JSON.stringify(c));",
      ],
      { timeoutMs: 60_000 },
    );
    const stillOurs = JSON.parse(sdkAgain.stdout) as { accessKeyId: string; secretAccessKey: string };
    expect(await pullGranted(berth, stillOurs.accessKeyId, stillOurs.secretAccessKey)).toEqual([
      'team/app:pull',
    ]);
    await stopEverything(ecs2);
    await ecs.send(new StopTaskCommand({ cluster, task }));
  });

  it('attack 1: berth refuses to start with an allowed directory that holds its data, its keys, or /', async () => {
    const nested = join(work, 'nested');
    for (const [list, what] of [
      [nested, `'${nested}' contains berth's data directory (data)`],
      ['/', 'would allow every path on the host'],
      ['/proc/self', 'lies inside /proc'],
    ]) {
      const failed = await startBerth({
        dataDir: join(nested, 'data'),
        env: { BERTH_RUNNER_HOST_PATH_ALLOW_LIST: list! },
      }).then(
        async (b) => {
          await b.stop();
          return '';
        },
        (e: Error) => e.message,
      );
      expect(failed, list).toContain('config runner.hostPathAllowList');
      expect(failed, list).toContain(what!);
    }
  });
});
