// The ECS endpoint as its clients see it: the real @aws-sdk/client-ecs (and the aws CLI when it is
// installed) over HTTPS against berth's HTTP layer, auth on. Signatures, policy denials, every
// cluster and task definition operation end to end, and the task and service operations reaching
// the TaskManager and ServiceScheduler contracts (small recording implementations here; the real
// ones get their own end-to-end suite) with the answers read back through the SDK's deserializers.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateClusterCommand,
  CreateServiceCommand,
  DeleteServiceCommand,
  DeregisterTaskDefinitionCommand,
  DescribeClustersCommand,
  DescribeServicesCommand,
  DescribeTaskDefinitionCommand,
  DescribeTasksCommand,
  ECSClient,
  ListClustersCommand,
  ListServicesCommand,
  ListTaskDefinitionFamiliesCommand,
  type ListTaskDefinitionFamiliesCommandInput,
  ListTaskDefinitionsCommand,
  type ListTaskDefinitionsCommandInput,
  ListTasksCommand,
  paginateListClusters,
  paginateListTaskDefinitions,
  RegisterTaskDefinitionCommand,
  type RegisterTaskDefinitionCommandInput,
  RunTaskCommand,
  StartTaskCommand,
  StopTaskCommand,
  UpdateServiceCommand,
} from '@aws-sdk/client-ecs';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Auth, createAuth } from '../../src/auth/index.ts';
import type { AppEnv } from '../../src/http/env.ts';
import { requestContext } from '../../src/http/middleware.ts';
import { ecsRoutes } from '../../src/http/runner.ts';
import { type RunningServer, startServer } from '../../src/http/server.ts';
import { silentLogger } from '../../src/log.ts';
import { createCatalog } from '../../src/runner/catalog.ts';
import { containerInstanceArn, createEcsApi } from '../../src/runner/ecs-api.ts';
import type {
  CreateServiceRequest,
  ListTasksFilter,
  RunTaskRequest,
  Service,
  ServiceScheduler,
  StopCode,
  Task,
  TaskManager,
  UpdateServiceRequest,
} from '../../src/runner/model.ts';
import { checked, createMemoryDriver } from '../../src/storage/index.ts';
import { loadOrCreateTls } from '../../src/tls.ts';
import { awsCli as awsCliAt, awsCliPresent } from '../support/aws-cli.ts';

const REGION = 'us-east-1';
const ACCOUNT = '000000000000';
const arn = (rest: string) => `arn:aws:ecs:${REGION}:${ACCOUNT}:${rest}`;
const doc = (...Statement: Record<string, unknown>[]) => ({ Version: '2012-10-17', Statement });

// --- recording stand-ins for the task manager and the service scheduler ---------------------------

function recordingTasks() {
  const tasks = new Map<string, Task>();
  const runs: RunTaskRequest[] = [];
  const stops: { taskArn: string; stopCode: StopCode; reason: string }[] = [];
  const manager: TaskManager = {
    async run(req) {
      runs.push(req);
      if (req.startedBy === 'no-room')
        return {
          tasks: [],
          failures: [
            { arn: req.taskDefinition.taskDefinitionArn, reason: 'RESOURCE:MEMORY', detail: 'full' },
          ],
        };
      const cluster = req.clusterArn.slice(req.clusterArn.lastIndexOf('/') + 1);
      const out: Task[] = [];
      for (let i = 0; i < req.count; i++) {
        const id = randomBytes(16).toString('hex');
        const taskArn = arn(`task/${cluster}/${id}`);
        const task: Task = {
          taskArn,
          clusterArn: req.clusterArn,
          taskDefinitionArn: req.taskDefinition.taskDefinitionArn,
          group: req.group ?? `family:${req.taskDefinition.family}`,
          ...(req.startedBy !== undefined ? { startedBy: req.startedBy } : {}),
          lastStatus: 'PROVISIONING',
          desiredStatus: 'RUNNING',
          healthStatus: 'UNKNOWN',
          containers: req.taskDefinition.containerDefinitions.map((c) => ({
            containerArn: arn(`container/${cluster}/${id}/${c.name}`),
            taskArn,
            name: c.name,
            image: c.image,
            runtimeId: `${id}-${c.name}`,
            lastStatus: 'PENDING',
            networkBindings: [],
            essential: c.essential,
            cpu: String(c.cpu),
            ...(c.memory !== undefined ? { memory: String(c.memory) } : {}),
          })),
          overrides: req.overrides ?? {},
          launchType: 'EC2',
          version: 1,
          createdAt: 1_750_000_000.5,
          ...(req.tags ? { tags: req.tags } : {}),
          ...(req.serviceName ? { serviceName: req.serviceName } : {}),
        };
        tasks.set(taskArn, task);
        out.push(task);
      }
      return { tasks: out, failures: [] };
    },
    async stop(taskArn, stopCode, reason) {
      stops.push({ taskArn, stopCode, reason });
      const t = tasks.get(taskArn)!;
      const next: Task = {
        ...t,
        desiredStatus: 'STOPPED',
        stopCode,
        stoppedReason: reason,
        version: t.version + 1,
      };
      tasks.set(taskArn, next);
      return next;
    },
    get: (taskArn) => tasks.get(taskArn),
    list(f: ListTasksFilter) {
      return [...tasks.values()].filter(
        (t) =>
          t.clusterArn === f.clusterArn &&
          (f.family === undefined || t.taskDefinitionArn.includes(`:task-definition/${f.family}:`)) &&
          (f.serviceName === undefined || t.serviceName === f.serviceName) &&
          (f.startedBy === undefined || t.startedBy === f.startedBy) &&
          (f.desiredStatus === undefined || t.desiredStatus === f.desiredStatus),
      );
    },
    subscribe: () => () => {},
  };
  return { manager, runs, stops, tasks };
}

function recordingServices() {
  const services = new Map<string, Service>();
  const calls: { op: string; req: unknown }[] = [];
  const key = (clusterArn: string, name: string) => `${clusterArn}|${name}`;
  const scheduler: ServiceScheduler = {
    async create(req: CreateServiceRequest) {
      calls.push({ op: 'create', req });
      const cluster = req.clusterArn.slice(req.clusterArn.lastIndexOf('/') + 1);
      const s: Service = {
        serviceArn: arn(`service/${cluster}/${req.serviceName}`),
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
          ...req.deploymentConfiguration,
        },
        deployments: [
          {
            id: 'ecs-svc/1',
            status: 'PRIMARY',
            taskDefinition: req.taskDefinition.taskDefinitionArn,
            pinnedImages: {},
            desiredCount: req.desiredCount,
            pendingCount: 0,
            runningCount: 0,
            failedTasks: 0,
            rolloutState: 'IN_PROGRESS',
            rolloutStateReason: 'ECS deployment ecs-svc/1 in progress.',
            createdAt: 1_750_000_000,
            updatedAt: 1_750_000_000,
            reason: 'CreateService',
          },
        ],
        events: [{ id: 'e1', createdAt: 1_750_000_001, message: '(service web) has started 1 tasks.' }],
        createdAt: 1_750_000_000,
        ...(req.healthCheckGracePeriodSeconds !== undefined
          ? { healthCheckGracePeriodSeconds: req.healthCheckGracePeriodSeconds }
          : {}),
        ...(req.createdBy !== undefined ? { createdBy: req.createdBy } : {}),
        ...(req.tags ? { tags: req.tags } : {}),
      };
      services.set(key(req.clusterArn, req.serviceName), s);
      return s;
    },
    async update(req: UpdateServiceRequest) {
      calls.push({ op: 'update', req });
      const s = services.get(key(req.clusterArn, req.serviceName))!;
      const next: Service = {
        ...s,
        desiredCount: req.desiredCount ?? s.desiredCount,
        taskDefinition: req.taskDefinition?.taskDefinitionArn ?? s.taskDefinition,
      };
      services.set(key(req.clusterArn, req.serviceName), next);
      return next;
    },
    async delete(clusterArn, serviceName, force) {
      calls.push({ op: 'delete', req: { clusterArn, serviceName, force } });
      const s = services.get(key(clusterArn, serviceName))!;
      const next: Service = { ...s, status: 'DRAINING', desiredCount: 0 };
      services.set(key(clusterArn, serviceName), next);
      return next;
    },
    get: (clusterArn, name) => services.get(key(clusterArn, name)),
    list: (clusterArn) => [...services.values()].filter((s) => s.clusterArn === clusterArn),
    history: () => [],
  };
  return { scheduler, calls, services };
}

// --- the server -------------------------------------------------------------------------------------

let dataDir: string;
let server: RunningServer;
let auth: Auth;
let agent: Agent;
let caPem: string;
let caPath: string;
let endpoint: string;
let adminKey: { id: string; secret: string };
let aliceKey: { id: string; secret: string };
const tasks = recordingTasks();
const services = recordingServices();

function client(key = adminKey, over: Partial<ConstructorParameters<typeof ECSClient>[0]> = {}) {
  return new ECSClient({
    endpoint,
    region: REGION,
    maxAttempts: 1,
    credentials: { accessKeyId: key.id, secretAccessKey: key.secret },
    requestHandler: { httpsAgent: agent },
    ...over,
  });
}

let ecs: ECSClient;

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'berth-ecs-'));
  const tls = await loadOrCreateTls({ dataDir, names: ['127.0.0.1'] });
  caPath = tls.caPath!;
  caPem = (await import('node:fs')).readFileSync(caPath, 'utf8');
  agent = new Agent({ ca: caPem, keepAlive: false });

  const storage = checked(createMemoryDriver());
  auth = createAuth({
    storage,
    log: silentLogger,
    issuer: 'https://127.0.0.1',
    service: 'berth',
    bootstrapPassword: 'admin-password',
    scryptCost: 2 ** 10,
  });
  await auth.start();
  adminKey = await auth.identities.createAccessKey({ type: 'user', name: 'admin' });
  await auth.identities.createUser({ name: 'alice' });
  aliceKey = await auth.identities.createAccessKey({ type: 'user', name: 'alice' });
  await auth.policies.putPolicy(
    'alice-ecs',
    doc(
      { Effect: 'Allow', Action: ['ecs:ListClusters', 'ecs:ListTaskDefinitions'], Resource: '*' },
      { Effect: 'Allow', Action: 'ecs:DescribeClusters', Resource: 'cluster/team-*' },
      { Effect: 'Allow', Action: 'ecs:RunTask', Resource: 'taskdefinition/web' },
    ),
  );
  await auth.policies.attachPolicy('alice-ecs', { type: 'user', name: 'alice' });

  const catalog = createCatalog({ storage, region: REGION, accountId: ACCOUNT, hostArchitecture: 'X86_64' });
  const api = createEcsApi({
    catalog,
    tasks: tasks.manager,
    services: services.scheduler,
    region: REGION,
    accountId: ACCOUNT,
    ownHosts: ['127.0.0.1', 'localhost'],
    decideAs: async (principal, action, resource) =>
      (await auth.authorizeAs(principal, action, resource)).effect === 'Allow',
  });
  const app = new Hono<AppEnv>({ strict: false });
  app.use(requestContext({ log: silentLogger, trustProxy: false, scheme: 'https' }));
  app.route('/ecs', ecsRoutes({ auth, api, region: REGION, accountId: ACCOUNT }));
  server = await startServer({
    // biome-ignore lint/suspicious/noExplicitAny: the app here carries only the /ecs routes
    app: app as any,
    host: '127.0.0.1',
    port: 0,
    log: silentLogger,
    tls: { key: tls.key, cert: tls.cert },
  });
  endpoint = `https://127.0.0.1:${server.port}/ecs`;
  ecs = client();
}, 60_000);

afterAll(async () => {
  ecs?.destroy();
  await server?.close(5000);
  agent?.destroy();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

async function thrown(p: Promise<unknown>): Promise<Error & { $metadata?: { httpStatusCode?: number } }> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected the call to fail');
}

/** A raw request: for what the SDK will not send (unknown members, nulls, no signature). */
function rawPost(headers: Record<string, string>, body: string) {
  return new Promise<{ status: number; headers: Record<string, unknown>; body: string }>(
    (resolve, reject) => {
      const req = httpsRequest(
        `${endpoint}/`,
        { method: 'POST', agent, headers: { 'content-type': 'application/x-amz-json-1.1', ...headers } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({
              status: res.statusCode!,
              headers: res.headers,
              body: Buffer.concat(chunks).toString('utf8'),
            }),
          );
        },
      );
      req.on('error', reject);
      req.end(body);
    },
  );
}

/**
 * Sends `body` as the JSON of a signed request through the SDK, which signs what is sent: the SDK
 * itself drops members its model lacks, and a console export is full of them.
 */
async function sendRawJson(command: RegisterTaskDefinitionCommand, body: string) {
  const raw = client();
  raw.middlewareStack.add(
    (next) => async (args) => {
      const request = args.request as { body: string; headers: Record<string, string> };
      request.body = body;
      request.headers['content-length'] = String(Buffer.byteLength(body));
      return next(args);
    },
    { step: 'build', priority: 'low' },
  );
  try {
    return await raw.send(command);
  } finally {
    raw.destroy();
  }
}

// --- signatures and policies ------------------------------------------------------------------------

describe('signing in', () => {
  it('answers a signed request from the admin, with a request id', async () => {
    const out = await ecs.send(new ListClustersCommand({}));
    expect(out.clusterArns).toEqual([arn('cluster/default')]);
    expect(out.$metadata.httpStatusCode).toBe(200);
    expect(out.$metadata.requestId).toMatch(/.+/);
  });

  it('refuses a wrong secret, an unknown key, another region and a skewed clock', async () => {
    const wrong = await thrown(
      client({ id: adminKey.id, secret: 'not-the-secret' }).send(new ListClustersCommand({})),
    );
    expect(wrong.name).toBe('InvalidSignatureException');
    expect(wrong.message).toContain('The request signature we calculated does not match');
    expect(wrong.$metadata?.httpStatusCode).toBe(400);

    const unknown = await thrown(
      client({ id: 'BKAAAAAAAAAAAAAAAAAA', secret: 'x' }).send(new ListClustersCommand({})),
    );
    expect(unknown.name).toBe('UnrecognizedClientException');
    expect(unknown.message).toBe('The security token included in the request is invalid.');

    const region = await thrown(client(adminKey, { region: 'eu-west-1' }).send(new ListClustersCommand({})));
    expect(region.name).toBe('InvalidSignatureException');
    expect(region.message).toContain("Credential should be scoped to a valid region, not 'eu-west-1'");

    const ahead = await thrown(
      client(adminKey, { systemClockOffset: 10 * 60 * 1000 }).send(new ListClustersCommand({})),
    );
    expect(ahead.name).toBe('InvalidSignatureException');
    expect(ahead.message).toMatch(/^Signature not yet current: /);
    const behind = await thrown(
      client(adminKey, { systemClockOffset: -10 * 60 * 1000 }).send(new ListClustersCommand({})),
    );
    expect(behind.message).toMatch(/^Signature expired: /);

    const audit = await auth.audit.query({ type: 'authn', decision: 'Deny' });
    expect(audit.entries.map((e) => [e.action, e.reason])).toEqual(
      expect.arrayContaining([
        ['authn:SigV4', 'bad-signature'],
        ['authn:SigV4', 'bad-credentials'],
      ]),
    );
  });

  it('answers a request without a signature in ECS shape', async () => {
    const res = await rawPost({ 'x-amz-target': 'AmazonEC2ContainerServiceV20141113.ListClusters' }, '{}');
    expect(res.status).toBe(400);
    expect(res.headers['x-amzn-errortype']).toBe('MissingAuthenticationTokenException');
    expect(res.headers['x-amzn-requestid']).toEqual(expect.any(String));
    expect(JSON.parse(res.body)).toEqual({
      __type: 'MissingAuthenticationTokenException',
      message: 'Missing Authentication Token',
    });
  });

  it('denies what no policy allows in ECS words, and allows what one does', async () => {
    const alice = client(aliceKey);
    try {
      expect((await alice.send(new ListClustersCommand({}))).clusterArns).toContain(arn('cluster/default'));
      const denied = await thrown(alice.send(new CreateClusterCommand({ clusterName: 'alice-made' })));
      expect(denied.name).toBe('AccessDeniedException');
      expect(denied.message).toBe(
        `User: arn:aws:iam::${ACCOUNT}:user/alice is not authorized to perform: ecs:CreateCluster on resource: ` +
          `${arn('cluster/alice-made')} because no identity-based policy allows the ecs:CreateCluster action`,
      );
      // Denied before anything is looked up: the cluster was not created, and a missing one is not revealed.
      expect(
        (await ecs.send(new DescribeClustersCommand({ clusters: ['alice-made'] }))).failures,
      ).toHaveLength(1);
      const prod = await thrown(alice.send(new DescribeClustersCommand({ clusters: ['prod'] })));
      expect(prod.name).toBe('AccessDeniedException');
      expect(prod.message).toContain(`on resource: ${arn('cluster/prod')}`);
      const team = await alice.send(new DescribeClustersCommand({ clusters: ['team-a'] }));
      expect(team.failures).toEqual([{ arn: arn('cluster/team-a'), reason: 'MISSING' }]);
      const run = await thrown(alice.send(new RunTaskCommand({ taskDefinition: 'worker:1' })));
      expect(run.name).toBe('AccessDeniedException');
      expect(run.message).toContain(`ecs:RunTask on resource: ${arn('task-definition/worker:1')}`);
      const decisions = await auth.audit.query({ type: 'decision', decision: 'Deny', actor: 'user/alice' });
      expect(decisions.entries.map((e) => [e.action, e.resource])).toEqual(
        expect.arrayContaining([
          ['ecs:CreateCluster', 'cluster/alice-made'],
          ['ecs:DescribeClusters', 'cluster/prod'],
          ['ecs:RunTask', 'taskdefinition/worker'],
        ]),
      );
    } finally {
      alice.destroy();
    }
  });

  it('answers a member of the wrong type with SerializationException', async () => {
    // The SDK sends what it is given; ECS's front end refuses a string where a number belongs.
    const err = await thrown(ecs.send(new ListClustersCommand({ maxResults: 'ten' as unknown as number })));
    expect([err.name, err.message]).toEqual([
      'SerializationException',
      'maxResults must be an integer, got string.',
    ]);
  });
});

// --- clusters -----------------------------------------------------------------------------------------

describe('clusters', () => {
  it('creates clusters idempotently and describes them, with failures for missing ones', async () => {
    const created = await ecs.send(
      new CreateClusterCommand({
        clusterName: 'prod',
        tags: [{ key: 'team', value: 'shop' }],
        settings: [{ name: 'containerInsights', value: 'disabled' }],
      }),
    );
    expect(created.cluster).toEqual({
      clusterArn: arn('cluster/prod'),
      clusterName: 'prod',
      status: 'ACTIVE',
      registeredContainerInstancesCount: 1,
      runningTasksCount: 0,
      pendingTasksCount: 0,
      activeServicesCount: 0,
      statistics: [],
      tags: [{ key: 'team', value: 'shop' }],
      settings: [{ name: 'containerInsights', value: 'disabled' }],
      capacityProviders: [],
      defaultCapacityProviderStrategy: [],
    });
    const again = await ecs.send(new CreateClusterCommand({ clusterName: 'prod' }));
    expect(again.cluster?.tags).toEqual([{ key: 'team', value: 'shop' }]);

    const described = await ecs.send(
      new DescribeClustersCommand({
        clusters: ['prod', arn('cluster/default'), 'nope', 'arn:aws:ecs:eu-west-1:123456789012:cluster/prod'],
        include: ['TAGS', 'STATISTICS'],
      }),
    );
    expect(described.clusters?.map((c) => [c.clusterName, c.tags])).toEqual([
      ['prod', [{ key: 'team', value: 'shop' }]],
      ['default', []],
    ]);
    expect(described.clusters?.[0]?.statistics).toContainEqual({ name: 'runningEC2TasksCount', value: '0' });
    expect(described.failures).toEqual([
      { arn: arn('cluster/nope'), reason: 'MISSING' },
      { arn: 'arn:aws:ecs:eu-west-1:123456789012:cluster/prod', reason: 'MISSING' },
    ]);
    // Without include, no tags; without clusters, the default one.
    const plain = await ecs.send(new DescribeClustersCommand({}));
    expect(plain.clusters?.map((c) => [c.clusterName, c.tags])).toEqual([['default', undefined]]);
  });

  it('lists clusters page by page', async () => {
    for (const name of ['team-a', 'team-b', 'team-c'])
      await ecs.send(new CreateClusterCommand({ clusterName: name }));
    const first = await ecs.send(new ListClustersCommand({ maxResults: 2 }));
    expect(first.clusterArns).toEqual([arn('cluster/default'), arn('cluster/prod')]);
    expect(first.nextToken).toEqual(expect.any(String));
    const second = await ecs.send(new ListClustersCommand({ maxResults: 2, nextToken: first.nextToken }));
    expect(second.clusterArns).toEqual([arn('cluster/team-a'), arn('cluster/team-b')]);
    const all: string[] = [];
    for await (const page of paginateListClusters({ client: ecs, pageSize: 2 }, {}))
      all.push(...(page.clusterArns ?? []));
    expect(all).toEqual(['default', 'prod', 'team-a', 'team-b', 'team-c'].map((n) => arn(`cluster/${n}`)));
    const bad = await thrown(ecs.send(new ListClustersCommand({ nextToken: 'garbage!' })));
    expect(bad.name).toBe('InvalidParameterException');
    const big = await thrown(ecs.send(new ListClustersCommand({ maxResults: 101 })));
    expect([big.name, big.message]).toEqual([
      'InvalidParameterException',
      'maxResults must be between 1 and 100.',
    ]);
  });

  it('refuses what one machine cannot do, naming the field', async () => {
    const cp = await thrown(
      ecs.send(new CreateClusterCommand({ clusterName: 'x', capacityProviders: ['FARGATE'] })),
    );
    expect(cp.name).toBe('InvalidParameterException');
    expect(cp.message).toMatch(/^capacityProviders is not supported by berth/);
    const insights = await thrown(
      ecs.send(
        new CreateClusterCommand({
          clusterName: 'x',
          settings: [{ name: 'containerInsights', value: 'enabled' }],
        }),
      ),
    );
    expect(insights.message).toContain("settings[0].value 'enabled' is not supported by berth");
    const name = await thrown(ecs.send(new CreateClusterCommand({ clusterName: 'bad name' })));
    expect(name.name).toBe('InvalidParameterException');
  });
});

// --- task definitions --------------------------------------------------------------------------------

/** A task definition as the ECS console's "Export JSON" writes it: read-only fields and nulls included. */
const consoleExport = {
  taskDefinitionArn: 'arn:aws:ecs:eu-west-1:123456789012:task-definition/shop-web:7',
  containerDefinitions: [
    {
      name: 'web',
      image: '127.0.0.1:5000/shop/web:1.4.2',
      cpu: 256,
      memory: 512,
      memoryReservation: null,
      links: [],
      portMappings: [
        { containerPort: 8080, hostPort: 0, protocol: 'tcp', name: 'web-8080-tcp', appProtocol: 'http' },
      ],
      essential: true,
      entryPoint: [],
      command: ['node', 'server.js'],
      environment: [
        { name: 'NODE_ENV', value: 'production' },
        { name: 'PORT', value: '8080' },
      ],
      environmentFiles: [],
      mountPoints: [],
      volumesFrom: [],
      secrets: [],
      dnsServers: [],
      dnsSearchDomains: [],
      extraHosts: [],
      dockerSecurityOptions: [],
      dockerLabels: {},
      ulimits: [{ name: 'nofile', softLimit: 65536, hardLimit: 65536 }],
      logConfiguration: {
        logDriver: 'awslogs',
        options: {
          'awslogs-group': '/ecs/shop-web',
          'awslogs-region': 'eu-west-1',
          'awslogs-stream-prefix': 'ecs',
        },
        secretOptions: [],
      },
      healthCheck: {
        command: ['CMD-SHELL', 'wget -qO- http://127.0.0.1:8080/health || exit 1'],
        interval: 30,
        timeout: 5,
        retries: 3,
        startPeriod: 10,
      },
      systemControls: [],
      credentialSpecs: [],
      privileged: null,
      readonlyRootFilesystem: false,
    },
  ],
  family: 'shop-web',
  taskRoleArn: null,
  executionRoleArn: 'arn:aws:iam::123456789012:role/ecsTaskExecutionRole',
  networkMode: 'bridge',
  revision: 7,
  volumes: [],
  status: 'ACTIVE',
  requiresAttributes: [
    { name: 'com.amazonaws.ecs.capability.logging-driver.awslogs' },
    { name: 'ecs.capability.container-health-check' },
  ],
  placementConstraints: [],
  compatibilities: ['EC2'],
  requiresCompatibilities: ['EC2'],
  cpu: '256',
  memory: '512',
  runtimePlatform: { cpuArchitecture: 'X86_64', operatingSystemFamily: 'LINUX' },
  registeredAt: '2025-05-20T09:12:44.123Z',
  registeredBy: 'arn:aws:sts::123456789012:assumed-role/admin/someone',
  enableFaultInjection: false,
  tags: [],
};

const small = (family: string, image = 'busybox:1.36'): RegisterTaskDefinitionCommandInput => ({
  family,
  containerDefinitions: [{ name: 'main', image, memory: 64, command: ['sleep', '3600'] }],
});

describe('task definitions', () => {
  it('registers a console-exported task definition as it is and describes it back', async () => {
    const out = await sendRawJson(
      new RegisterTaskDefinitionCommand(small('placeholder')),
      JSON.stringify(consoleExport),
    );
    const td = out.taskDefinition!;
    expect(td.taskDefinitionArn).toBe(arn('task-definition/shop-web:1'));
    expect(td.revision).toBe(1);
    expect(td.status).toBe('ACTIVE');
    expect(td.registeredBy).toBe(`arn:aws:iam::${ACCOUNT}:user/admin`);
    expect(td.registeredAt).toBeInstanceOf(Date);
    expect(td.containerDefinitions?.[0]).toMatchObject({
      name: 'web',
      image: '127.0.0.1:5000/shop/web:1.4.2',
      cpu: 256,
      memory: 512,
      essential: true,
      portMappings: [
        { containerPort: 8080, hostPort: 0, protocol: 'tcp', name: 'web-8080-tcp', appProtocol: 'http' },
      ],
      healthCheck: { command: ['CMD-SHELL', 'wget -qO- http://127.0.0.1:8080/health || exit 1'], retries: 3 },
    });
    expect(td.executionRoleArn).toBe('arn:aws:iam::123456789012:role/ecsTaskExecutionRole');
    const described = await ecs.send(new DescribeTaskDefinitionCommand({ taskDefinition: 'shop-web' }));
    expect(described.taskDefinition).toEqual(td);
    expect(described.tags).toBeUndefined();
  });

  it('numbers revisions per family, keeps deregistered ones describable, and finds the latest ACTIVE', async () => {
    const tagged = { ...small('web'), tags: [{ key: 'tier', value: 'front' }] };
    const revisions = await Promise.all(
      [1, 2, 3].map(() => ecs.send(new RegisterTaskDefinitionCommand(tagged))),
    );
    expect(revisions.map((r) => r.taskDefinition?.revision).sort()).toEqual([1, 2, 3]);
    expect(revisions[0]?.tags).toEqual([{ key: 'tier', value: 'front' }]);
    await ecs.send(new RegisterTaskDefinitionCommand(small('worker')));

    const gone = await ecs.send(new DeregisterTaskDefinitionCommand({ taskDefinition: 'web:3' }));
    expect(gone.taskDefinition?.status).toBe('INACTIVE');
    expect(gone.taskDefinition?.deregisteredAt).toBeInstanceOf(Date);
    const again = await ecs.send(
      new DeregisterTaskDefinitionCommand({ taskDefinition: arn('task-definition/web:3') }),
    );
    expect(again.taskDefinition?.status).toBe('INACTIVE');
    expect(
      (await ecs.send(new DescribeTaskDefinitionCommand({ taskDefinition: 'web:3' }))).taskDefinition?.status,
    ).toBe('INACTIVE');
    const latest = await ecs.send(
      new DescribeTaskDefinitionCommand({ taskDefinition: 'web', include: ['TAGS'] }),
    );
    expect(latest.taskDefinition?.revision).toBe(2);
    expect(latest.tags).toEqual([{ key: 'tier', value: 'front' }]);

    const revisionless = await thrown(
      ecs.send(new DeregisterTaskDefinitionCommand({ taskDefinition: 'web' })),
    );
    expect(revisionless.name).toBe('ClientException');
    const missing = await thrown(ecs.send(new DescribeTaskDefinitionCommand({ taskDefinition: 'web:99' })));
    expect([missing.name, missing.message]).toEqual([
      'ClientException',
      'Unable to describe task definition.',
    ]);
  });

  it('lists revisions and families with filters, order and pages', async () => {
    const list = (input: ListTaskDefinitionsCommandInput) => ecs.send(new ListTaskDefinitionsCommand(input));
    expect((await list({ familyPrefix: 'web' })).taskDefinitionArns).toEqual([
      arn('task-definition/web:1'),
      arn('task-definition/web:2'),
    ]);
    expect((await list({ familyPrefix: 'web', status: 'INACTIVE' })).taskDefinitionArns).toEqual([
      arn('task-definition/web:3'),
    ]);
    expect((await list({ sort: 'DESC' })).taskDefinitionArns).toEqual([
      arn('task-definition/worker:1'),
      arn('task-definition/web:2'),
      arn('task-definition/web:1'),
      arn('task-definition/shop-web:1'),
    ]);
    const pages: string[][] = [];
    for await (const page of paginateListTaskDefinitions({ client: ecs, pageSize: 1 }, { sort: 'DESC' }))
      pages.push(page.taskDefinitionArns ?? []);
    expect(pages.flat()).toEqual((await list({ sort: 'DESC' })).taskDefinitionArns);
    expect(pages.filter((p) => p.length > 0)).toHaveLength(4);

    const families = (input: ListTaskDefinitionFamiliesCommandInput) =>
      ecs.send(new ListTaskDefinitionFamiliesCommand(input));
    expect((await families({})).families).toEqual(['shop-web', 'web', 'worker']);
    expect((await families({ familyPrefix: 'w' })).families).toEqual(['web', 'worker']);
    await ecs.send(new DeregisterTaskDefinitionCommand({ taskDefinition: 'worker:1' }));
    expect((await families({ status: 'ACTIVE' })).families).toEqual(['shop-web', 'web']);
    expect((await families({ status: 'INACTIVE' })).families).toEqual(['worker']);
    const firstPage = await families({ maxResults: 2 });
    expect(firstPage.families).toEqual(['shop-web', 'web']);
    expect((await families({ maxResults: 2, nextToken: firstPage.nextToken })).families).toEqual(['worker']);
  });

  it('refuses task definitions one machine cannot run, naming the field', async () => {
    const awsvpc = await thrown(
      ecs.send(new RegisterTaskDefinitionCommand({ ...small('x'), networkMode: 'awsvpc' })),
    );
    expect(awsvpc.name).toBe('ClientException');
    expect(awsvpc.message).toContain("networkMode 'awsvpc' is not supported by berth");
    const fargate = await thrown(
      ecs.send(new RegisterTaskDefinitionCommand({ ...small('x'), requiresCompatibilities: ['FARGATE'] })),
    );
    expect(fargate.message).toContain("requiresCompatibilities 'FARGATE' is not supported by berth");
    // A refused registration uses up no revision.
    const next = await ecs.send(new RegisterTaskDefinitionCommand(small('x')));
    expect(next.taskDefinition?.revision).toBe(1);
  });
});

// --- tasks ----------------------------------------------------------------------------------------------

describe('tasks', () => {
  it('runs tasks with the request carried to the task manager and the answer read back', async () => {
    const before = tasks.runs.length;
    const out = await ecs.send(
      new RunTaskCommand({
        cluster: 'prod',
        taskDefinition: 'web',
        count: 2,
        startedBy: 'ci/deploy-42',
        group: 'batch',
        overrides: {
          containerOverrides: [
            { name: 'main', command: ['echo', 'hi'], environment: [{ name: 'A', value: '1' }] },
          ],
        },
        tags: [{ key: 'run', value: '42' }],
        propagateTags: 'TASK_DEFINITION',
        clientToken: 'token-1',
        launchType: 'EC2',
      }),
    );
    const req = tasks.runs[before]!;
    expect(req).toMatchObject({
      clusterArn: arn('cluster/prod'),
      count: 2,
      startedBy: 'ci/deploy-42',
      group: 'batch',
      overrides: {
        containerOverrides: [
          { name: 'main', command: ['echo', 'hi'], environment: [{ name: 'A', value: '1' }] },
        ],
      },
      tags: [
        { key: 'tier', value: 'front' },
        { key: 'run', value: '42' },
      ],
      clientToken: 'token-1',
    });
    expect(req.taskDefinition.taskDefinitionArn).toBe(arn('task-definition/web:2'));
    expect(out.failures).toEqual([]);
    expect(out.tasks).toHaveLength(2);
    const task = out.tasks![0]!;
    expect(task).toMatchObject({
      clusterArn: arn('cluster/prod'),
      taskDefinitionArn: arn('task-definition/web:2'),
      containerInstanceArn: containerInstanceArn(REGION, ACCOUNT, 'prod'),
      lastStatus: 'PROVISIONING',
      desiredStatus: 'RUNNING',
      group: 'batch',
      startedBy: 'ci/deploy-42',
      launchType: 'EC2',
      version: 1,
    });
    expect(task.createdAt).toEqual(new Date(1_750_000_000_500));
    expect(task.containers?.[0]).toMatchObject({
      name: 'main',
      image: 'busybox:1.36',
      lastStatus: 'PENDING',
    });
    expect(task.overrides?.containerOverrides?.[0]?.command).toEqual(['echo', 'hi']);

    const full = await ecs.send(new RunTaskCommand({ taskDefinition: 'web:1', startedBy: 'no-room' }));
    expect(full.tasks).toEqual([]);
    expect(full.failures).toEqual([
      { arn: arn('task-definition/web:1'), reason: 'RESOURCE:MEMORY', detail: 'full' },
    ]);
    expect(tasks.runs.at(-1)?.clusterArn).toBe(arn('cluster/default'));
  });

  it('refuses RunTask input berth cannot honour, naming the field', async () => {
    const cases: [Partial<ConstructorParameters<typeof RunTaskCommand>[0]>, string, string | RegExp][] = [
      [
        { launchType: 'FARGATE' },
        'InvalidParameterException',
        /^launchType 'FARGATE' is not supported by berth/,
      ],
      [
        { networkConfiguration: { awsvpcConfiguration: { subnets: ['subnet-1'] } } },
        'InvalidParameterException',
        /^networkConfiguration is not supported by berth/,
      ],
      [
        { placementConstraints: [{ type: 'distinctInstance' }] },
        'InvalidParameterException',
        /^placementConstraints is not supported/,
      ],
      [
        { capacityProviderStrategy: [{ capacityProvider: 'FARGATE_SPOT' }] },
        'InvalidParameterException',
        /^capacityProviderStrategy is not supported/,
      ],
      [{ count: 11 }, 'InvalidParameterException', 'count must be between 1 and 10.'],
      [
        { overrides: { containerOverrides: [{ name: 'sidecar' }] } },
        'InvalidParameterException',
        'Override for container named sidecar is not a container in the TaskDefinition.',
      ],
      [
        { taskDefinition: 'web:3' },
        'ClientException',
        `TaskDefinition is inactive: ${arn('task-definition/web:3')}`,
      ],
      [{ taskDefinition: 'nothing' }, 'ClientException', 'TaskDefinition not found.'],
      [{ cluster: 'nowhere' }, 'ClusterNotFoundException', 'Cluster not found.'],
    ];
    const before = tasks.runs.length;
    for (const [input, type, message] of cases) {
      const err = await thrown(ecs.send(new RunTaskCommand({ taskDefinition: 'web', ...input })));
      expect([err.name, err.message], JSON.stringify(input)).toEqual([
        type,
        typeof message === 'string' ? message : expect.stringMatching(message),
      ]);
    }
    expect(tasks.runs.length).toBe(before);
  });

  it('starts tasks on the one local container instance and refuses others', async () => {
    const local = containerInstanceArn(REGION, ACCOUNT, 'prod');
    const out = await ecs.send(
      new StartTaskCommand({
        cluster: 'prod',
        taskDefinition: 'web:1',
        containerInstances: [local, 'local'],
      }),
    );
    expect(out.tasks).toHaveLength(2);
    expect(tasks.runs.at(-1)).toMatchObject({ clusterArn: arn('cluster/prod'), count: 2 });
    const other = await thrown(
      ecs.send(
        new StartTaskCommand({
          cluster: 'prod',
          taskDefinition: 'web:1',
          containerInstances: [arn('container-instance/prod/0123456789abcdef')],
        }),
      ),
    );
    expect(other.name).toBe('InvalidParameterException');
    expect(other.message).toContain(local);
  });

  it('describes, lists and stops tasks', async () => {
    const run = await ecs.send(
      new RunTaskCommand({
        cluster: 'team-a',
        taskDefinition: 'web',
        count: 3,
        tags: [{ key: 'k', value: 'v' }],
      }),
    );
    const arns = run.tasks!.map((t) => t.taskArn!);
    const id = arns[0]!.split('/').at(-1)!;

    const described = await ecs.send(
      new DescribeTasksCommand({ cluster: 'team-a', tasks: [id, arns[1]!, 'feedface'], include: ['TAGS'] }),
    );
    expect(described.tasks?.map((t) => t.taskArn)).toEqual([arns[0], arns[1]]);
    expect(described.tasks?.[0]?.tags).toContainEqual({ key: 'k', value: 'v' });
    expect(described.failures).toEqual([{ arn: arn('task/team-a/feedface'), reason: 'MISSING' }]);
    // A task of another cluster is missing here.
    const elsewhere = await ecs.send(new DescribeTasksCommand({ cluster: 'prod', tasks: [arns[0]!] }));
    expect(elsewhere.failures?.[0]?.reason).toBe('MISSING');

    const listed = await ecs.send(new ListTasksCommand({ cluster: 'team-a', family: 'web' }));
    expect([...(listed.taskArns ?? [])].sort()).toEqual([...arns].sort());
    const first = await ecs.send(new ListTasksCommand({ cluster: 'team-a', maxResults: 2 }));
    const rest = await ecs.send(
      new ListTasksCommand({ cluster: 'team-a', maxResults: 2, nextToken: first.nextToken }),
    );
    expect([...first.taskArns!, ...rest.taskArns!]).toEqual([...arns].sort());
    expect(rest.nextToken).toBeUndefined();
    const both = await thrown(
      ecs.send(new ListTasksCommand({ cluster: 'team-a', startedBy: 'x', family: 'web' })),
    );
    expect(both.name).toBe('InvalidParameterException');
    expect(
      (await ecs.send(new ListTasksCommand({ cluster: 'team-a', launchType: 'FARGATE' }))).taskArns,
    ).toEqual([]);
    expect(
      (await ecs.send(new ListTasksCommand({ cluster: 'team-a', containerInstance: 'local' }))).taskArns,
    ).toHaveLength(3);

    const stopped = await ecs.send(
      new StopTaskCommand({ cluster: 'team-a', task: id, reason: 'rolled back' }),
    );
    expect(tasks.stops.at(-1)).toEqual({
      taskArn: arns[0],
      stopCode: 'UserInitiated',
      reason: 'rolled back',
    });
    expect(stopped.task).toMatchObject({
      taskArn: arns[0],
      desiredStatus: 'STOPPED',
      stopCode: 'UserInitiated',
    });
    await ecs.send(new StopTaskCommand({ cluster: arn('cluster/team-a'), task: arns[1]! }));
    expect(tasks.stops.at(-1)?.reason).toBe('Task stopped by user');
    expect(
      (await ecs.send(new ListTasksCommand({ cluster: 'team-a', desiredStatus: 'STOPPED' }))).taskArns,
    ).toHaveLength(2);
    const unknown = await thrown(ecs.send(new StopTaskCommand({ cluster: 'team-a', task: 'feedface' })));
    expect([unknown.name, unknown.message]).toEqual([
      'InvalidParameterException',
      'The referenced task was not found.',
    ]);
  });
});

// --- services --------------------------------------------------------------------------------------------

describe('services', () => {
  it('creates, describes, lists, updates and deletes services through the scheduler', async () => {
    const created = await ecs.send(
      new CreateServiceCommand({
        cluster: 'prod',
        serviceName: 'web',
        taskDefinition: 'web:2',
        desiredCount: 2,
        deploymentConfiguration: {
          maximumPercent: 150,
          minimumHealthyPercent: 50,
          deploymentCircuitBreaker: { enable: true, rollback: true },
        },
        healthCheckGracePeriodSeconds: 30,
        schedulingStrategy: 'REPLICA',
        deploymentController: { type: 'ECS' },
        tags: [{ key: 'app', value: 'web' }],
      }),
    );
    const createCall = services.calls.at(-1)!;
    expect(createCall.op).toBe('create');
    expect(createCall.req).toMatchObject({
      clusterArn: arn('cluster/prod'),
      serviceName: 'web',
      desiredCount: 2,
      deploymentConfiguration: {
        maximumPercent: 150,
        minimumHealthyPercent: 50,
        deploymentCircuitBreaker: { enable: true, rollback: true },
      },
      healthCheckGracePeriodSeconds: 30,
      createdBy: `arn:aws:iam::${ACCOUNT}:user/admin`,
      tags: [{ key: 'app', value: 'web' }],
    });
    expect((createCall.req as CreateServiceRequest).taskDefinition.taskDefinitionArn).toBe(
      arn('task-definition/web:2'),
    );
    const svc = created.service!;
    expect(svc).toMatchObject({
      serviceArn: arn('service/prod/web'),
      status: 'ACTIVE',
      desiredCount: 2,
      launchType: 'EC2',
      schedulingStrategy: 'REPLICA',
      createdBy: `arn:aws:iam::${ACCOUNT}:user/admin`,
      deploymentController: { type: 'ECS' },
      tags: [{ key: 'app', value: 'web' }],
    });
    expect(svc.deployments?.[0]).toMatchObject({
      id: 'ecs-svc/1',
      status: 'PRIMARY',
      rolloutState: 'IN_PROGRESS',
    });
    expect(svc.deployments?.[0]?.createdAt).toEqual(new Date(1_750_000_000_000));
    expect(svc.events?.[0]?.message).toBe('(service web) has started 1 tasks.');

    const dup = await thrown(
      ecs.send(
        new CreateServiceCommand({
          cluster: 'prod',
          serviceName: 'web',
          taskDefinition: 'web:2',
          desiredCount: 1,
        }),
      ),
    );
    expect([dup.name, dup.message]).toEqual([
      'InvalidParameterException',
      'Creation of service was not idempotent.',
    ]);
    await ecs.send(
      new CreateServiceCommand({
        cluster: 'prod',
        serviceName: 'api',
        taskDefinition: 'web',
        desiredCount: 0,
      }),
    );

    const described = await ecs.send(
      new DescribeServicesCommand({
        cluster: 'prod',
        services: ['web', arn('service/prod/nope')],
        include: ['TAGS'],
      }),
    );
    expect(described.services?.map((s) => [s.serviceName, s.tags])).toEqual([
      ['web', [{ key: 'app', value: 'web' }]],
    ]);
    expect(described.failures).toEqual([{ arn: arn('service/prod/nope'), reason: 'MISSING' }]);

    const page = await ecs.send(new ListServicesCommand({ cluster: 'prod', maxResults: 1 }));
    expect(page.serviceArns).toEqual([arn('service/prod/api')]);
    const next = await ecs.send(
      new ListServicesCommand({ cluster: 'prod', maxResults: 1, nextToken: page.nextToken }),
    );
    expect(next.serviceArns).toEqual([arn('service/prod/web')]);

    const updated = await ecs.send(
      new UpdateServiceCommand({
        cluster: 'prod',
        service: arn('service/prod/web'),
        taskDefinition: 'web:1',
        desiredCount: 3,
        forceNewDeployment: true,
      }),
    );
    const updateCall = services.calls.at(-1)!;
    expect(updateCall.op).toBe('update');
    expect(updateCall.req).toMatchObject({
      clusterArn: arn('cluster/prod'),
      serviceName: 'web',
      desiredCount: 3,
      forceNewDeployment: true,
    });
    expect((updateCall.req as UpdateServiceRequest).taskDefinition?.revision).toBe(1);
    expect(updated.service?.desiredCount).toBe(3);

    const scaled = await thrown(ecs.send(new DeleteServiceCommand({ cluster: 'prod', service: 'web' })));
    expect(scaled.name).toBe('InvalidParameterException');
    expect(scaled.message).toMatch(/^The service cannot be stopped while it is scaled above 0/);
    const deleted = await ecs.send(
      new DeleteServiceCommand({ cluster: 'prod', service: 'web', force: true }),
    );
    expect(services.calls.at(-1)).toEqual({
      op: 'delete',
      req: { clusterArn: arn('cluster/prod'), serviceName: 'web', force: true },
    });
    expect(deleted.service?.status).toBe('DRAINING');
    const inactiveUpdate = await thrown(
      ecs.send(new UpdateServiceCommand({ cluster: 'prod', service: 'web', desiredCount: 1 })),
    );
    expect(inactiveUpdate.name).toBe('ServiceNotActiveException');

    const cluster = await ecs.send(new DescribeClustersCommand({ clusters: ['prod'] }));
    expect(cluster.clusters?.[0]?.activeServicesCount).toBe(1);
  });

  it('refuses service features one machine cannot provide, and missing services', async () => {
    const base = { cluster: 'prod', serviceName: 'lb', taskDefinition: 'web', desiredCount: 1 };
    const cases: [Partial<ConstructorParameters<typeof CreateServiceCommand>[0]>, RegExp][] = [
      [
        { loadBalancers: [{ targetGroupArn: 'arn:tg', containerName: 'main', containerPort: 80 }] },
        /^loadBalancers is not supported/,
      ],
      [{ serviceRegistries: [{ registryArn: 'arn:sd' }] }, /^serviceRegistries is not supported/],
      [{ launchType: 'FARGATE' }, /^launchType 'FARGATE' is not supported/],
      [{ schedulingStrategy: 'DAEMON' }, /^schedulingStrategy 'DAEMON' is not supported/],
      [
        { deploymentController: { type: 'CODE_DEPLOY' } },
        /^deploymentController.type 'CODE_DEPLOY' is not supported/,
      ],
      [
        { networkConfiguration: { awsvpcConfiguration: { subnets: ['s'] } } },
        /^networkConfiguration is not supported/,
      ],
      [
        { deploymentConfiguration: { minimumHealthyPercent: 150 } },
        /minimumHealthyPercent must be between 0 and 100/,
      ],
    ];
    const before = services.calls.length;
    for (const [input, message] of cases) {
      const err = await thrown(ecs.send(new CreateServiceCommand({ ...base, ...input })));
      expect([err.name, err.message], JSON.stringify(input)).toEqual([
        'InvalidParameterException',
        expect.stringMatching(message),
      ]);
    }
    expect(services.calls.length).toBe(before);
    const missing = await thrown(
      ecs.send(new UpdateServiceCommand({ cluster: 'prod', service: 'ghost', desiredCount: 1 })),
    );
    expect([missing.name, missing.message]).toEqual(['ServiceNotFoundException', 'Service not found.']);
    const noCluster = await thrown(ecs.send(new ListServicesCommand({ cluster: 'nowhere' })));
    expect(noCluster.name).toBe('ClusterNotFoundException');
  });
});

// --- the aws CLI --------------------------------------------------------------------------------------------

const awsCli = (args: string[]) =>
  awsCliAt({ endpoint, caPath, key: adminKey, home: dataDir, region: REGION }, args);

const hasAwsCli = awsCliPresent();
if (!hasAwsCli) console.log('test/http/ecs.test.ts: skipping the aws CLI case: `aws` is not installed');

describe.skipIf(!hasAwsCli)('the aws CLI', () => {
  it('lists clusters and registers and describes a task definition', async () => {
    const clusters = await awsCli(['ecs', 'list-clusters']);
    expect(clusters.stderr).toBe('');
    expect(JSON.parse(clusters.stdout).clusterArns).toContain(arn('cluster/default'));

    const registered = await awsCli([
      'ecs',
      'register-task-definition',
      '--family',
      'cli-made',
      '--container-definitions',
      JSON.stringify([{ name: 'main', image: 'busybox:1.36', memory: 32 }]),
    ]);
    expect(registered.stderr).toBe('');
    expect(JSON.parse(registered.stdout).taskDefinition.taskDefinitionArn).toBe(
      arn('task-definition/cli-made:1'),
    );
    const denied = await awsCli(['ecs', 'describe-task-definition', '--task-definition', 'cli-made:9']);
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toContain('(ClientException)');
    expect(denied.stderr).toContain('Unable to describe task definition.');
  }, 240_000);
});
