// More of the runner with real pieces only (the berth CLI, buildah-pushed busybox images,
// containers under runc/crun, @aws-sdk/client-ecs, skopeo), each case as a user meets it:
//   - task roles: a task finds its credentials endpoint in its environment, gets short-lived
//     credentials that pull what the role's policy allows and nothing more, and can never read
//     another task's credentials; they die with the task; a role that does not exist is refused;
//   - secrets reach a container as variables, and a missing secret fails the start by name;
//   - following a task's log over server-sent events, line by line until the container exits,
//     and joining a busy log without losing or repeating a line;
//   - webhooks: a push arrives at a receiver as a signed CloudEvent, and is listed as delivered;
//   - restart convergence: with berth SIGKILLed, one container of a two-task service is killed
//     from outside; the restarted berth adopts the survivor, records the dead one with its exit
//     code, replaces it, and never runs more than two tasks.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { Agent, request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateServiceCommand,
  DeleteServiceCommand,
  DescribeServicesCommand,
  DescribeTasksCommand,
  ECSClient,
  ListTasksCommand,
  RegisterTaskDefinitionCommand,
  RunTaskCommand,
  StopTaskCommand,
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
  pushImage,
  removeSuiteBridge,
  runnerPrerequisitesMissing,
  suiteNetwork,
  until as untilWith,
} from '../support/runner-kit.ts';
import { run } from '../support/tools.ts';

const why = runnerPrerequisitesMissing();
if (why) console.warn(`runner-more e2e SKIPPED: ${why}`);

// Apart from runner.test.ts (bre*, 10.97.x): vitest may run both files at once.
const { bridge, subnet } = suiteNetwork('brm', 95);
const dataDir = mkdtempSync(join(tmpdir(), 'berth-runner-more-'));
const webhookSecret = 'whsec-e2e-0123456789abcdef';
const cluster = 'default';

let berth: RunningBerth;
let tools: ContainerTools;
let ecs: ECSClient;
let api: ReturnType<typeof httpsClient>;
let key: { id: string; secret: string };
let berthArgs: { dataDir: string; env: Record<string, string> };
/** The image every task here runs: one busybox binary; each definition gives the command. */
let image: string;

/** What the last probe saw, for the timeout message. */
let seen = '';
const until = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 90_000) =>
  untilWith(what, probe, { timeoutMs, context: () => `last seen: ${seen}\n${berthLogTail(berth)}` });

// --- the receiver: webhooks land here, and the log-following task waits at its gate ------------

interface Received {
  headers: IncomingMessage['headers'];
  body: string;
}
const received: Received[] = [];
let gateOpen = false;
let receiver: Server;
let receiverPort: number;

function startReceiver(): Promise<void> {
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/hooks' && req.method === 'POST') {
        received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
        res.writeHead(204).end();
      } else if (req.url === '/gate') {
        res.writeHead(gateOpen ? 200 : 404).end(gateOpen ? 'open\n' : 'closed\n');
      } else res.writeHead(404).end();
    });
  });
  return new Promise((resolve) =>
    receiver.listen(0, '127.0.0.1', () => {
      receiverPort = (receiver.address() as AddressInfo).port;
      resolve();
    }),
  );
}

// --- helpers ------------------------------------------------------------------------------------

const taskIdOf = (arn: string) => arn.slice(arn.lastIndexOf('/') + 1);

async function describeTask(arn: string): Promise<Task> {
  const t = (await ecs.send(new DescribeTasksCommand({ cluster, tasks: [arn] }))).tasks?.[0];
  if (!t) throw new Error(`task ${arn} is not described`);
  return t;
}

async function taskReaches(arn: string, status: 'RUNNING' | 'STOPPED'): Promise<Task> {
  return until(`task ${taskIdOf(arn)} to be ${status}`, async () => {
    const t = await describeTask(arn);
    seen = JSON.stringify([t.lastStatus, t.stopCode, t.stoppedReason]);
    // A task that stopped will not run: answer it, so the check below fails at once.
    return t.lastStatus === status || t.lastStatus === 'STOPPED' ? t : undefined;
  }).then((t) => {
    expect(t.lastStatus, `task ${taskIdOf(arn)}: ${t.stopCode} ${t.stoppedReason}`).toBe(status);
    return t;
  });
}

async function runTask(family: string, command?: string[], count = 1): Promise<string[]> {
  const out = await ecs.send(
    new RunTaskCommand({
      cluster,
      taskDefinition: family,
      count,
      ...(command && { overrides: { containerOverrides: [{ name: 'main', command }] } }),
    }),
  );
  expect(out.failures ?? []).toEqual([]);
  return out.tasks!.map((t) => t.taskArn!);
}

async function register(
  family: string,
  container: Record<string, unknown>,
  extra: Record<string, unknown> = {},
) {
  await ecs.send(
    new RegisterTaskDefinitionCommand({
      family,
      networkMode: 'host',
      ...extra,
      containerDefinitions: [
        // stopTimeout 2: no stop here waits the default 30 s for a SIGKILL.
        { name: 'main', image, memory: 32, essential: true, stopTimeout: 2, ...container },
      ],
    }),
  );
}

async function logLines(arn: string): Promise<string[]> {
  const r = await api(`/api/v1/runner/clusters/${cluster}/tasks/${taskIdOf(arn)}/logs`);
  expect(r.status, r.body.toString()).toBe(200);
  return (JSON.parse(r.body.toString()) as { entries: { line: string }[] }).entries.map((e) => e.line);
}

/** The variables a task printed with `env`, from its log. */
async function printedEnv(arn: string, wanted: string): Promise<Record<string, string>> {
  return until(`task ${taskIdOf(arn)} to print ${wanted}`, async () => {
    const env: Record<string, string> = {};
    for (const line of await logLines(arn)) {
      const eq = line.indexOf('=');
      if (eq > 0) env[line.slice(0, eq)] = line.slice(eq + 1);
    }
    return env[wanted] !== undefined ? env : undefined;
  });
}

/** GET a task credentials URL with a token, trusting berth's CA. */
async function fetchCredentials(fullUri: string, token: string) {
  const url = new URL(fullUri);
  const r = await httpsClient(url.origin, berth.caPath)(url.pathname, { headers: { Authorization: token } });
  return { status: r.status, body: JSON.parse(r.body.toString()) as Record<string, string> };
}

/** The access claim of a registry token /token issued for `scope` to Basic `user:secret`. */
async function grantedAccess(user: string, secret: string, scope: string) {
  const basic = `Basic ${Buffer.from(`${user}:${secret}`).toString('base64')}`;
  const r = await httpsClient(
    berth.url,
    berth.caPath,
    basic,
  )(`/token?service=berth&scope=${encodeURIComponent(scope)}`);
  expect(r.status, r.body.toString()).toBe(200);
  const { token } = JSON.parse(r.body.toString()) as { token: string };
  const payload = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as {
    access: { type: string; name: string; actions: string[] }[];
  };
  return payload.access;
}

interface SseEvent {
  event: string;
  data: string;
}

/**
 * Follows a task's log over SSE, handing each event to `onEvent` as it arrives; resolves with all
 * of them when the server ends the stream.
 */
function followLog(taskId: string, onEvent: (e: SseEvent) => void): Promise<SseEvent[]> {
  return new Promise((resolve, reject) => {
    const events: SseEvent[] = [];
    const req = httpsRequest(
      new URL(`/api/v1/runner/clusters/${cluster}/tasks/${taskId}/logs?follow=true`, berth.url),
      {
        headers: { Authorization: berth.adminBasic, Accept: 'text/event-stream' },
        ca: readFileSync(berth.caPath),
      },
      (res) => {
        const type = String(res.headers['content-type']);
        if (res.statusCode !== 200 || !type.startsWith('text/event-stream')) {
          reject(new Error(`follow answered ${res.statusCode} ${type}`));
          res.resume();
          return;
        }
        let buffered = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buffered += chunk;
          let blank = buffered.indexOf('\n\n');
          while (blank >= 0) {
            const block = buffered.slice(0, blank);
            buffered = buffered.slice(blank + 2);
            const e: SseEvent = { event: 'message', data: '' };
            for (const line of block.split('\n')) {
              if (line.startsWith('event:')) e.event = line.slice(6).trim();
              else if (line.startsWith('data:')) e.data += line.slice(5).trimStart();
            }
            events.push(e);
            onEvent(e);
            blank = buffered.indexOf('\n\n');
          }
        });
        res.on('end', () => resolve(events));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Every task of the cluster whose lastStatus is RUNNING, whatever its desired status. */
async function runningNow(serviceName: string): Promise<Task[]> {
  const arns: string[] = [];
  for (const desiredStatus of ['RUNNING', 'STOPPED'] as const)
    arns.push(
      ...((await ecs.send(new ListTasksCommand({ cluster, serviceName, desiredStatus }))).taskArns ?? []),
    );
  if (arns.length === 0) return [];
  const tasks = (await ecs.send(new DescribeTasksCommand({ cluster, tasks: arns }))).tasks ?? [];
  return tasks.filter((t) => t.lastStatus === 'RUNNING');
}

/** Stops every task still meant to run, and waits for them to be STOPPED. */
async function stopEverything(): Promise<void> {
  await ecs.send(new DeleteServiceCommand({ cluster, service: 'pair', force: true })).catch(() => {});
  const arns = (await ecs.send(new ListTasksCommand({ cluster, desiredStatus: 'RUNNING' }))).taskArns ?? [];
  for (const task of arns) await ecs.send(new StopTaskCommand({ cluster, task, reason: 'suite cleanup' }));
  await until(
    'every task to stop',
    async () => {
      const all = [
        ...((await ecs.send(new ListTasksCommand({ cluster, desiredStatus: 'RUNNING' }))).taskArns ?? []),
        ...((await ecs.send(new ListTasksCommand({ cluster, desiredStatus: 'STOPPED' }))).taskArns ?? []),
      ];
      if (all.length === 0) return true;
      const tasks = (await ecs.send(new DescribeTasksCommand({ cluster, tasks: all }))).tasks ?? [];
      seen = JSON.stringify(tasks.map((t) => [taskIdOf(t.taskArn!), t.lastStatus, t.desiredStatus]));
      return tasks.every((t) => t.lastStatus === 'STOPPED') ? true : undefined;
    },
    120_000,
  );
}

/** The role tasks of team/app run as: pull on team/app, nothing else. */
async function createAppTaskRole(): Promise<void> {
  const policy = await api('/api/v1/policies/team-app-pull', {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      document: {
        Version: '2012-10-17',
        Statement: [{ Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/team/app' }],
      },
    }),
  });
  expect(policy.status, policy.body.toString()).toBe(201);
  // A task role needs no trust policy: berth's task runner assumes it, not a federated token.
  const role = await api('/api/v1/roles', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'app-task', description: 'what team/app tasks may do' }),
  });
  expect(role.status, role.body.toString()).toBe(201);
  const attached = await api('/api/v1/roles/app-task/policies/team-app-pull', { method: 'PUT' });
  expect(attached.status, attached.body.toString()).toBe(204);
}

/** Starts berth on this suite's data; a restart keeps the port, as a real deployment's is fixed
 * (the credentials URL in a running task's environment names it). */
function startBerthHere(restart = false) {
  const args = restart ? ['--listen', berth.hostPort] : [];
  return startBerth({ ...berthArgs, args }).then((b) => {
    berth = b;
    api = httpsClient(b.url, b.caPath, b.adminBasic);
    if (key) ecs = ecsClient(b, key);
  });
}

describe.skipIf(why)('the task runner: roles, secrets, logs, webhooks, restarts', () => {
  beforeAll(async () => {
    await startReceiver();
    const webhooksFile = join(dataDir, 'webhooks.json');
    writeFileSync(
      webhooksFile,
      JSON.stringify([
        {
          id: 'e2e-receiver',
          url: `http://127.0.0.1:${receiverPort}/hooks`,
          secret: webhookSecret,
          events: ['manifest.pushed'],
        },
      ]),
    );
    berthArgs = {
      dataDir,
      env: {
        BERTH_RUNNER_BRIDGE_NAME: bridge,
        BERTH_RUNNER_BRIDGE_SUBNET: subnet,
        BERTH_RUNNER_WEBHOOKS_FILE: webhooksFile,
        // Its tasks use the host network (they reach berth on its loopback): the operator's choice.
        BERTH_RUNNER_ALLOW_HOST_NETWORK: 'true',
        // The receiver is plain http on the loopback: allowed, as an operator would allow it.
        BERTH_OUTBOUND_ALLOW_HOSTS: `127.0.0.1:${receiverPort}`,
        BERTH_LOG_LEVEL: 'info',
      },
    };
    await startBerthHere();
    tools = containerTools(berth.caPath);
    await tools.login(berth.hostPort, 'admin', berth.admin.password);
    key = await adminAccessKey(api);
    ecs = ecsClient(berth, key);
    const digest = await pushImage(tools, berth.hostPort, 'team/app', '1', ['/bin/busybox', 'env']);
    image = `${berth.hostPort}/team/app@${digest}`;
    await createAppTaskRole();
  }, 180_000);

  afterAll(async () => {
    // Every task stops before berth goes, so no container outlives the suite.
    if (berth && ecs) {
      if (berth.process.exitCode !== null || berth.process.signalCode !== null)
        await startBerthHere(true).catch(() => undefined);
      await stopEverything().catch((err) => console.error('runner-more cleanup:', err));
    }
    await berth?.stop();
    await tools?.cleanup();
    if (receiver) await new Promise((r) => receiver.close(r));
    rmSync(dataDir, { recursive: true, force: true });
    // The CNI bridge plugin creates the bridge and never removes it; this suite's is its own,
    // and so are berth's iptables chains for it.
    await removeSuiteBridge(bridge);
  }, 240_000);

  it('a task with a role gets credentials that pull what the role allows, and only its own', async () => {
    await register('with-role', {}, { taskRoleArn: 'arn:aws:iam::000000000000:role/app-task' });

    // A task that prints its environment and exits: the endpoint and its token are there.
    const [printer] = await runTask('with-role');
    const printerEnv = await printedEnv(printer!, 'AWS_CONTAINER_AUTHORIZATION_TOKEN');
    const printerUri = printerEnv.AWS_CONTAINER_CREDENTIALS_FULL_URI!;
    // berth listens on 127.0.0.1 here, which a host-network task reaches.
    expect(printerUri).toBe(`${berth.url}/v1/task-credentials/${taskIdOf(printer!)}`);
    expect(printerEnv.AWS_CONTAINER_AUTHORIZATION_TOKEN!.length).toBeGreaterThanOrEqual(32);
    await taskReaches(printer!, 'STOPPED');
    // Its token died with it.
    expect((await fetchCredentials(printerUri, printerEnv.AWS_CONTAINER_AUTHORIZATION_TOKEN!)).status).toBe(
      403,
    );

    // Two long-running tasks of the same definition, each printing its environment first.
    const sleepers = await runTask(
      'with-role',
      ['/bin/busybox', 'sh', '-c', 'env; exec /bin/busybox sleep 300'],
      2,
    );
    const [a, b] = await Promise.all(
      sleepers.map((arn) => printedEnv(arn, 'AWS_CONTAINER_AUTHORIZATION_TOKEN')),
    );
    for (const arn of sleepers) await taskReaches(arn, 'RUNNING');
    const aUri = a!.AWS_CONTAINER_CREDENTIALS_FULL_URI!;
    const aToken = a!.AWS_CONTAINER_AUTHORIZATION_TOKEN!;
    const bUri = b!.AWS_CONTAINER_CREDENTIALS_FULL_URI!;
    const bToken = b!.AWS_CONTAINER_AUTHORIZATION_TOKEN!;
    expect(aToken).not.toBe(bToken);

    const creds = await fetchCredentials(aUri, aToken);
    expect(creds.status, JSON.stringify(creds.body)).toBe(200);
    expect(creds.body).toMatchObject({
      AccessKeyId: expect.stringMatching(/^BT[A-Z2-7]{18}$/),
      SecretAccessKey: expect.any(String),
      Token: expect.any(String),
      RoleArn: 'arn:aws:iam::000000000000:role/app-task',
    });
    const expires = Date.parse(creds.body.Expiration!);
    expect(expires).toBeGreaterThan(Date.now());
    expect(expires).toBeLessThanOrEqual(Date.now() + 3600_000 + 60_000);

    // Neither task can read the other's credentials, nor can anyone without a token.
    expect((await fetchCredentials(aUri, bToken)).status).toBe(403);
    expect((await fetchCredentials(bUri, aToken)).status).toBe(403);
    expect((await fetchCredentials(aUri, '')).status).toBe(401);

    // The temporary key acts as the role on /token: pull on team/app, never push, nothing else.
    const { AccessKeyId: id, SecretAccessKey: secret } = creds.body as {
      AccessKeyId: string;
      SecretAccessKey: string;
    };
    expect(await grantedAccess(id, secret, 'repository:team/app:pull')).toEqual([
      { type: 'repository', name: 'team/app', actions: ['pull'] },
    ]);
    const pushAsked = await grantedAccess(id, secret, 'repository:team/app:pull,push');
    expect(pushAsked).toEqual([{ type: 'repository', name: 'team/app', actions: ['pull'] }]);
    const elsewhere = await grantedAccess(id, secret, 'repository:other/app:pull');
    expect(elsewhere.flatMap((e) => e.actions)).toEqual([]);

    // A real client with the temporary key: skopeo reads the image, and is refused elsewhere.
    const inspected = await tools.skopeo(
      'inspect',
      '--cert-dir',
      tools.certDir,
      '--creds',
      `${id}:${secret}`,
      `docker://${berth.hostPort}/team/app:1`,
    );
    expect((JSON.parse(inspected.stdout) as { Digest: string }).Digest).toBe(
      image.slice(image.indexOf('@') + 1),
    );
    await expect(
      tools.skopeo(
        'inspect',
        '--cert-dir',
        tools.certDir,
        '--creds',
        `${id}:${secret}`,
        `docker://${berth.hostPort}/other/app:1`,
      ),
    ).rejects.toThrow(/denied|unauthorized|not authorized|authentication required/i);

    // SigV4 with the session token: the signature is accepted, and the role has no ECS rights.
    const asRole = new ECSClient({
      endpoint: `${berth.url}/ecs`,
      region: 'us-east-1',
      credentials: { accessKeyId: id, secretAccessKey: secret, sessionToken: creds.body.Token! },
      requestHandler: { httpsAgent: new Agent({ ca: readFileSync(berth.caPath) }) },
    });
    await expect(asRole.send(new ListTasksCommand({ cluster }))).rejects.toMatchObject({
      name: 'AccessDeniedException',
    });

    // Stopped, a task's endpoint answers 403 to its own token; the other task's still works.
    await ecs.send(new StopTaskCommand({ cluster, task: sleepers[0]!, reason: 'done with it' }));
    await taskReaches(sleepers[0]!, 'STOPPED');
    expect((await fetchCredentials(aUri, aToken)).status).toBe(403);
    expect((await fetchCredentials(bUri, bToken)).status).toBe(200);
    await ecs.send(new StopTaskCommand({ cluster, task: sleepers[1]!, reason: 'done with it' }));
    await taskReaches(sleepers[1]!, 'STOPPED');
  }, 180_000);

  it('a task whose role does not exist is refused credentials, and berth logs why', async () => {
    await register(
      'ghost-role',
      { command: ['/bin/busybox', 'sh', '-c', 'env; exec /bin/busybox sleep 300'] },
      { taskRoleArn: 'arn:aws:iam::000000000000:role/nobody' },
    );
    const [arn] = await runTask('ghost-role');
    const env = await printedEnv(arn!, 'AWS_CONTAINER_AUTHORIZATION_TOKEN');
    await taskReaches(arn!, 'RUNNING');
    const r = await fetchCredentials(
      env.AWS_CONTAINER_CREDENTIALS_FULL_URI!,
      env.AWS_CONTAINER_AUTHORIZATION_TOKEN!,
    );
    // The operator's to fix: the task gets no detail, berth's log names the missing role.
    expect(r.status).toBe(500);
    expect(r.body.code).toBe('InternalServerError');
    expect(JSON.stringify(r.body)).not.toContain('nobody');
    await until("the refusal in berth's log", async () =>
      berth.logs().some((l) => l.includes('task credentials: could not issue') && l.includes('nobody'))
        ? true
        : undefined,
    );
    await ecs.send(new StopTaskCommand({ cluster, task: arn!, reason: 'done with it' }));
    await taskReaches(arn!, 'STOPPED');
  }, 120_000);

  it('secrets reach the container as variables; a missing one fails the start by name', async () => {
    const put = await api('/api/v1/secrets/prod/db', {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ value: 's3cr3t-pa55', description: 'the database password' }),
    });
    expect(put.status, put.body.toString()).toBe(201);
    // The API never shows the value.
    expect((await api('/api/v1/secrets/prod/db')).body.toString()).not.toContain('s3cr3t-pa55');
    // No shell in the image: busybox is the shell.
    const echo = ['/bin/busybox', 'sh', '-c', 'echo "db password is $DB_PASSWORD"'];
    await register('with-secret', {
      command: echo,
      secrets: [{ name: 'DB_PASSWORD', valueFrom: 'prod/db' }],
    });
    await register('missing-secret', {
      command: echo,
      secrets: [{ name: 'DB_PASSWORD', valueFrom: 'prod/nowhere' }],
    });
    const [ok] = await runTask('with-secret');
    const [bad] = await runTask('missing-secret');

    const done = await taskReaches(ok!, 'STOPPED');
    expect(done.containers![0]!.exitCode).toBe(0);
    expect(await logLines(ok!)).toContain('db password is s3cr3t-pa55');

    const failed = await taskReaches(bad!, 'STOPPED');
    expect(failed.stopCode).toBe('TaskFailedToStart');
    expect(failed.stoppedReason).toContain('prod/nowhere');
    expect(failed.containers![0]!.exitCode).toBeUndefined();
  }, 120_000);

  it('following a log streams the lines as they are written, then an end event at the exit', async () => {
    // The task prints its first line, then waits at the receiver's gate, which opens only once the
    // stream has delivered that line: the container cannot exit before the follower saw it live.
    await register('ticker', {
      command: [
        '/bin/busybox',
        'sh',
        '-c',
        `echo tick 1; until /bin/busybox wget -q -O /dev/null http://127.0.0.1:${receiverPort}/gate 2>/dev/null; do /bin/busybox sleep 0.3; done; for i in 2 3 4; do /bin/busybox sleep 1; echo tick $i; done`,
      ],
    });
    gateOpen = false;
    const [arn] = await runTask('ticker');
    await taskReaches(arn!, 'RUNNING');
    const events = await followLog(taskIdOf(arn!), (e) => {
      if (e.event === 'log' && (JSON.parse(e.data) as { line: string }).line === 'tick 1') gateOpen = true;
    });
    const lines = events
      .filter((e) => e.event === 'log')
      .map((e) => JSON.parse(e.data) as { stream: string; line: string });
    expect(lines.map((l) => l.line)).toEqual(['tick 1', 'tick 2', 'tick 3', 'tick 4']);
    expect(lines.every((l) => l.stream === 'stdout')).toBe(true);
    expect(events.at(-1)?.event).toBe('end');
    const done = await taskReaches(arn!, 'STOPPED');
    expect(done.containers![0]!.exitCode).toBe(0);
  }, 120_000);

  it('a follower joining a busy log gets every line once: history, then live, nothing lost', async () => {
    // 150 numbered lines, one every 20 ms; the follower joins once some are written, so the
    // history it is sent and the live lines meet while lines are still being written.
    await register('counter', {
      command: [
        '/bin/busybox',
        'sh',
        '-c',
        'i=1; while [ $i -le 1500 ]; do echo "n $i"; i=$((i+1)); /bin/busybox usleep 1000; done',
      ],
    });
    const [arn] = await runTask('counter');
    await until('the first lines', async () => ((await logLines(arn!)).length >= 5 ? true : undefined));
    const events = await followLog(taskIdOf(arn!), () => {});
    const numbers = events
      .filter((e) => e.event === 'log')
      .map((e) => Number((JSON.parse(e.data) as { line: string }).line.slice(2)));
    expect(numbers).toEqual(Array.from({ length: 1500 }, (_, i) => i + 1));
    expect(events.at(-1)?.event).toBe('end');
  }, 120_000);

  it('a push reaches a webhook receiver as a signed CloudEvent, and is listed as delivered', async () => {
    const digest = await pushImage(tools, berth.hostPort, 'hooks/demo', '2', ['/bin/busybox', 'true']);
    const subject = `hooks/demo@${digest}`;
    const got = await until('the webhook', async () =>
      received.find((r) => (JSON.parse(r.body) as { subject?: string }).subject === subject),
    );
    expect(got.headers['content-type']).toMatch(/^application\/cloudevents\+json/);
    const event = JSON.parse(got.body) as {
      specversion: string;
      id: string;
      type: string;
      source: string;
      data: { repository: string; digest: string; tag?: string };
    };
    expect(event).toMatchObject({
      specversion: '1.0',
      type: 'dev.berth.manifest.pushed',
      data: { repository: 'hooks/demo', digest },
    });
    // The receiver's check: HMAC-SHA256(secret, "<timestamp>.<raw body>"), timestamp near now.
    const timestamp = String(got.headers['x-berth-timestamp']);
    expect(Math.abs(Number(timestamp) - Date.now() / 1000)).toBeLessThan(300);
    const expected = Buffer.from(
      `sha256=${createHmac('sha256', webhookSecret).update(`${timestamp}.${got.body}`).digest('hex')}`,
    );
    const given = Buffer.from(String(got.headers['x-berth-signature']));
    expect(given.length === expected.length && timingSafeEqual(given, expected)).toBe(true);
    // A different secret would not verify.
    const forged = `sha256=${createHmac('sha256', 'another-secret-0123456').update(`${timestamp}.${got.body}`).digest('hex')}`;
    expect(forged).not.toBe(given.toString());

    const delivery = await until('the delivery to be recorded as delivered', async () => {
      const r = await api('/api/v1/webhooks/deliveries?webhook=e2e-receiver');
      const items = (
        JSON.parse(r.body.toString()) as {
          items: { status: string; attempts: number; lastStatusCode?: number; event: { id: string } }[];
        }
      ).items;
      return items.find((d) => d.event.id === event.id && d.status === 'delivered');
    });
    expect(delivery).toMatchObject({ attempts: 1, lastStatusCode: 204 });
  }, 120_000);

  it('after a SIGKILL and a container killed meanwhile, the restarted berth converges to 2 tasks', async () => {
    await register(
      'pair',
      { command: ['/bin/busybox', 'sh', '-c', 'env; exec /bin/busybox sleep 3600'] },
      { taskRoleArn: 'arn:aws:iam::000000000000:role/app-task' },
    );
    await ecs.send(
      new CreateServiceCommand({
        cluster,
        serviceName: 'pair',
        taskDefinition: 'pair',
        // The default maximumPercent (200) would allow 4 tasks: only the scheduler's own sense
        // of what runs keeps the count at 2 across the restart.
        desiredCount: 2,
      }),
    );
    const before = await until('two running tasks', async () => {
      const tasks = await runningNow('pair');
      const svc = (await ecs.send(new DescribeServicesCommand({ cluster, services: ['pair'] })))
        .services![0]!;
      seen = JSON.stringify([svc.runningCount, tasks.map((t) => t.taskArn)]);
      return tasks.length === 2 && svc.runningCount === 2 ? tasks : undefined;
    });
    const [victim, survivor] = before.map((t) => t.taskArn!) as [string, string];
    const survivorEnv = await printedEnv(survivor, 'AWS_CONTAINER_AUTHORIZATION_TOKEN');
    const survivorUri = survivorEnv.AWS_CONTAINER_CREDENTIALS_FULL_URI!;
    const survivorToken = survivorEnv.AWS_CONTAINER_AUTHORIZATION_TOKEN!;
    expect((await fetchCredentials(survivorUri, survivorToken)).status).toBe(200);

    berth.process.kill('SIGKILL');
    await new Promise((r) => berth.process.once('exit', r));

    // berth is down; its containers are not. Kill one with the runtime berth chose.
    const stateRoot = join(dataDir, 'runner', 'runtime', 'state');
    const containerId = `${taskIdOf(victim)}-main`;
    const runtime = readdirSync(stateRoot).find((rt) => existsSync(join(stateRoot, rt, containerId)));
    expect(runtime, `no runtime state for ${containerId} under ${stateRoot}`).toBeDefined();
    const bin = runtime === 'crun' ? '/usr/bin/crun' : '/usr/sbin/runc';
    const rt = (...args: string[]) => run(bin, ['--root', join(stateRoot, runtime!), ...args]);
    await rt('kill', containerId, 'KILL');
    await until('the killed container to stop', async () => {
      const state = JSON.parse((await rt('state', containerId)).stdout) as { status: string };
      return state.status === 'stopped' ? true : undefined;
    });

    await startBerthHere(true);
    let most = 0;
    const settled = await until('the service to converge', async () => {
      const running = await runningNow('pair');
      most = Math.max(most, running.length);
      const svc = (await ecs.send(new DescribeServicesCommand({ cluster, services: ['pair'] })))
        .services![0]!;
      const dead = await describeTask(victim);
      seen = JSON.stringify([svc.runningCount, running.map((t) => taskIdOf(t.taskArn!)), dead.lastStatus]);
      return svc.runningCount === 2 && running.length === 2 && dead.lastStatus === 'STOPPED'
        ? running
        : undefined;
    });
    expect(most).toBeLessThanOrEqual(2);
    const arns = settled.map((t) => t.taskArn);
    expect(arns).toContain(survivor);
    expect(arns).not.toContain(victim);
    const dead = await describeTask(victim);
    expect(dead.containers![0]!.exitCode).toBe(137);
    expect(dead.stopCode).toBe('EssentialContainerExited');
    // The survivor was adopted, not restarted: same task, still running since before.
    const adopted = await describeTask(survivor);
    expect(adopted.startedAt).toEqual(before.find((t) => t.taskArn === survivor)!.startedAt);

    // Task roles carry across the restart: the adopted task's token still fetches credentials
    // (those minted before the restart are stored and stay valid while the task runs), and the
    // replacement started by the restarted berth has its own endpoint.
    const again = await fetchCredentials(survivorUri, survivorToken);
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    const { AccessKeyId: id, SecretAccessKey: secret } = again.body as {
      AccessKeyId: string;
      SecretAccessKey: string;
    };
    expect(await grantedAccess(id, secret, 'repository:team/app:pull')).toEqual([
      { type: 'repository', name: 'team/app', actions: ['pull'] },
    ]);
    const replacement = settled.find((t) => t.taskArn !== survivor)!.taskArn!;
    const replacementEnv = await printedEnv(replacement, 'AWS_CONTAINER_AUTHORIZATION_TOKEN');
    const fresh = await fetchCredentials(
      replacementEnv.AWS_CONTAINER_CREDENTIALS_FULL_URI!,
      replacementEnv.AWS_CONTAINER_AUTHORIZATION_TOKEN!,
    );
    expect(fresh.status, JSON.stringify(fresh.body)).toBe(200);
  }, 180_000);
});
