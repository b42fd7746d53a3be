import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ECSClient, RegisterTaskDefinitionCommand } from '@aws-sdk/client-ecs';
import { describe, expect, it } from 'vitest';
import { EcsError } from './ecs-protocol.ts';
import {
  parseTaskDefinitionRef,
  registerTaskDefinition,
  taskDefinitionArn,
  validateTaskDefinitionInput,
} from './task-definitions.ts';

const ctx = {
  region: 'eu-west-3',
  revision: 1,
  registeredAt: new Date('2026-01-02T03:04:05.678Z'),
  hostArchitecture: 'X86_64' as const,
};

// The "sample-app" web server of AWS's ECS developer guide (httpd serving a page written by its
// command), adapted from Fargate to what one machine runs: bridge networking, a dynamic host port.
const sampleApp = {
  family: 'sample-app',
  containerDefinitions: [
    {
      name: 'sample-app',
      image: 'public.ecr.aws/docker/library/httpd:2.4',
      cpu: 256,
      memory: 512,
      essential: true,
      entryPoint: ['sh', '-c'],
      command: [
        '/bin/sh -c "echo \'<html><head><title>Amazon ECS Sample App</title></head><body><h1>Amazon ECS Sample App</h1></body></html>\' > /usr/local/apache2/htdocs/index.html && httpd-foreground"',
      ],
      portMappings: [{ containerPort: 80, protocol: 'tcp' }],
      logConfiguration: {
        logDriver: 'awslogs',
        options: {
          'awslogs-group': '/ecs/sample-app',
          'awslogs-region': 'us-east-1',
          'awslogs-stream-prefix': 'ecs',
        },
      },
      healthCheck: { command: ['CMD-SHELL', 'wget -q -O- http://localhost/ || exit 1'], startPeriod: 10 },
    },
  ],
  requiresCompatibilities: ['EC2'],
  networkMode: 'bridge',
  cpu: '256',
  memory: '512',
  runtimePlatform: { operatingSystemFamily: 'LINUX' },
};

// What `aws ecs describe-task-definition` or the console's "Download JSON" hands people: every
// member present, most null or empty, plus the read-only fields. It must register as is.
const consoleExport = {
  taskDefinitionArn: 'arn:aws:ecs:eu-west-1:123456789012:task-definition/shop-api:7',
  family: 'shop-api',
  revision: 7,
  status: 'ACTIVE',
  compatibilities: ['EC2', 'EXTERNAL'],
  requiresAttributes: [{ name: 'com.amazonaws.ecs.capability.docker-remote-api.1.21' }],
  registeredAt: '2025-06-01T10:00:00.000Z',
  registeredBy: 'arn:aws:iam::123456789012:user/deployer',
  ipcMode: null,
  pidMode: null,
  executionRoleArn: 'arn:aws:iam::123456789012:role/ecsTaskExecutionRole',
  taskRoleArn: 'arn:aws:iam::123456789012:role/shop-api',
  networkMode: 'bridge',
  placementConstraints: [],
  proxyConfiguration: null,
  inferenceAccelerators: [],
  volumes: [{ name: 'cache', host: { sourcePath: null } }],
  memory: '1024',
  cpu: null,
  enableFaultInjection: false,
  containerDefinitions: [
    {
      name: 'api',
      image: '123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop/api@sha256:' + 'a'.repeat(64),
      cpu: 0,
      memory: null,
      memoryReservation: 256,
      links: null,
      portMappings: [
        { name: 'api-8080-tcp', containerPort: 8080, hostPort: 0, protocol: 'tcp', appProtocol: 'http' },
      ],
      essential: true,
      entryPoint: null,
      command: ['node', 'server.js'],
      environment: [
        { name: 'NODE_ENV', value: 'production' },
        { name: 'GREETING', value: 'Grüße aus Köln 👋' },
      ],
      environmentFiles: [],
      mountPoints: [{ sourceVolume: 'cache', containerPath: '/var/cache/api', readOnly: null }],
      volumesFrom: [],
      linuxParameters: { initProcessEnabled: true, capabilities: null, devices: null, tmpfs: null },
      secrets: [
        { name: 'DB_PASSWORD', valueFrom: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-pass' },
      ],
      dependsOn: [{ containerName: 'migrate', condition: 'SUCCESS' }],
      startTimeout: null,
      stopTimeout: 20,
      hostname: null,
      user: '1000:1000',
      workingDirectory: '/app',
      disableNetworking: null,
      privileged: false,
      readonlyRootFilesystem: true,
      dnsServers: null,
      dnsSearchDomains: null,
      extraHosts: null,
      dockerSecurityOptions: null,
      interactive: null,
      pseudoTerminal: null,
      dockerLabels: { team: 'shop' },
      ulimits: [{ name: 'nofile', softLimit: 65536, hardLimit: 65536 }],
      logConfiguration: { logDriver: 'json-file', options: { 'max-size': '10m' }, secretOptions: [] },
      healthCheck: {
        command: ['CMD', 'wget', '-q', '-O-', 'http://localhost:8080/health'],
        interval: 10,
        timeout: 3,
        retries: 5,
        startPeriod: null,
      },
      systemControls: [],
      resourceRequirements: null,
      firelensConfiguration: null,
      credentialSpecs: [],
    },
    {
      name: 'migrate',
      image: '123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop/api:1.4.2',
      essential: false,
      memoryReservation: 64,
      command: ['node', 'migrate.js'],
      environment: [],
      mountPoints: [],
      volumesFrom: [],
      systemControls: [],
    },
  ],
};

function clone<T>(v: T): T {
  return structuredClone(v);
}

function refusal(input: unknown): EcsError {
  try {
    validateTaskDefinitionInput(input, { hostArchitecture: 'X86_64' });
  } catch (err) {
    expect(err).toBeInstanceOf(EcsError);
    return err as EcsError;
  }
  throw new Error('expected the task definition to be refused');
}

describe('registering real-world task definitions', () => {
  it("registers AWS's sample-app, adapted to bridge mode, with ECS's defaults filled in", () => {
    const { taskDefinition: td, tags, ignoredMembers } = registerTaskDefinition(clone(sampleApp), ctx);
    expect(ignoredMembers).toEqual([]);
    expect(tags).toEqual([]);
    expect(td).toEqual({
      taskDefinitionArn: 'arn:aws:ecs:eu-west-3:000000000000:task-definition/sample-app:1',
      family: 'sample-app',
      revision: 1,
      status: 'ACTIVE',
      compatibilities: ['EC2'],
      requiresCompatibilities: ['EC2'],
      placementConstraints: [],
      requiresAttributes: [],
      networkMode: 'bridge',
      volumes: [],
      cpu: '256',
      memory: '512',
      runtimePlatform: { operatingSystemFamily: 'LINUX' },
      registeredAt: 1767323045.678,
      containerDefinitions: [
        {
          name: 'sample-app',
          image: 'public.ecr.aws/docker/library/httpd:2.4',
          cpu: 256,
          memory: 512,
          essential: true,
          entryPoint: ['sh', '-c'],
          command: sampleApp.containerDefinitions[0]!.command,
          portMappings: [{ containerPort: 80, hostPort: 0, protocol: 'tcp' }],
          environment: [],
          mountPoints: [],
          volumesFrom: [],
          logConfiguration: sampleApp.containerDefinitions[0]!.logConfiguration,
          healthCheck: {
            command: ['CMD-SHELL', 'wget -q -O- http://localhost/ || exit 1'],
            interval: 30,
            timeout: 5,
            retries: 3,
            startPeriod: 10,
          },
        },
      ],
    });
  });

  it('registers a console export as is, ignoring only its read-only members', () => {
    const { taskDefinition: td, ignoredMembers } = registerTaskDefinition(clone(consoleExport), {
      ...ctx,
      revision: 8,
      accountId: '111122223333',
      registeredBy: 'arn:aws:iam::111122223333:user/alice',
    });
    expect(ignoredMembers.sort()).toEqual(
      [
        'compatibilities',
        'registeredAt',
        'registeredBy',
        'requiresAttributes',
        'revision',
        'status',
        'taskDefinitionArn',
      ].sort(),
    );
    expect(td.taskDefinitionArn).toBe('arn:aws:ecs:eu-west-3:111122223333:task-definition/shop-api:8');
    expect(td.registeredBy).toBe('arn:aws:iam::111122223333:user/alice');
    expect(td.memory).toBe('1024');
    expect(td.cpu).toBeUndefined();
    expect(td.volumes).toEqual([{ name: 'cache', host: {} }]);
    const [api, migrate] = td.containerDefinitions;
    expect(api).toMatchObject({
      name: 'api',
      cpu: 0,
      memoryReservation: 256,
      portMappings: [
        { name: 'api-8080-tcp', containerPort: 8080, hostPort: 0, protocol: 'tcp', appProtocol: 'http' },
      ],
      environment: [
        { name: 'NODE_ENV', value: 'production' },
        { name: 'GREETING', value: 'Grüße aus Köln 👋' },
      ],
      mountPoints: [{ sourceVolume: 'cache', containerPath: '/var/cache/api', readOnly: false }],
      linuxParameters: { initProcessEnabled: true },
      secrets: [
        { name: 'DB_PASSWORD', valueFrom: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-pass' },
      ],
      dependsOn: [{ containerName: 'migrate', condition: 'SUCCESS' }],
      stopTimeout: 20,
      user: '1000:1000',
      workingDirectory: '/app',
      readonlyRootFilesystem: true,
      dockerLabels: { team: 'shop' },
      ulimits: [{ name: 'nofile', softLimit: 65536, hardLimit: 65536 }],
      logConfiguration: { logDriver: 'json-file', options: { 'max-size': '10m' } },
      healthCheck: {
        command: ['CMD', 'wget', '-q', '-O-', 'http://localhost:8080/health'],
        interval: 10,
        timeout: 3,
        retries: 5,
      },
    });
    expect(api).not.toHaveProperty('memory');
    expect(api).not.toHaveProperty('privileged');
    expect(api!.healthCheck).not.toHaveProperty('startPeriod');
    expect(migrate).toMatchObject({ name: 'migrate', essential: false, memoryReservation: 64 });
  });

  it('lists members outside ECS’s model by path, and registers anyway', () => {
    const input = clone(sampleApp) as Record<string, unknown> & typeof sampleApp;
    (input.containerDefinitions[0] as Record<string, unknown>).essentail = false;
    input.colour = 'blue';
    const { ignoredMembers } = validateTaskDefinitionInput(input, { hostArchitecture: 'X86_64' });
    expect(ignoredMembers.sort()).toEqual(['colour', 'containerDefinitions[0].essentail']);
  });

  it('answers in a shape @aws-sdk/client-ecs reads back', async () => {
    const { taskDefinition, tags } = registerTaskDefinition(
      { ...clone(sampleApp), tags: [{ key: 'team', value: 'web' }] },
      ctx,
    );
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' });
      res.end(JSON.stringify({ taskDefinition, tags }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const ecs = new ECSClient({
        endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        region: 'eu-west-3',
        maxAttempts: 1,
        credentials: { accessKeyId: 'AKIDTEST', secretAccessKey: 'secret' },
      });
      const out = await ecs.send(new RegisterTaskDefinitionCommand(clone(sampleApp) as never));
      expect(out.tags).toEqual([{ key: 'team', value: 'web' }]);
      expect(out.taskDefinition?.taskDefinitionArn).toBe(taskDefinition.taskDefinitionArn);
      expect(out.taskDefinition?.registeredAt).toEqual(ctx.registeredAt);
      expect(out.taskDefinition?.containerDefinitions?.[0]?.healthCheck?.interval).toBe(30);
      ecs.destroy();
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

describe('defaults and normal forms', () => {
  const minimal = () => ({
    family: 'f',
    containerDefinitions: [{ name: 'c', image: 'busybox', memory: 32 }],
  });

  it('bridge networking, essential containers, cpu 0, tcp, dynamic host ports', () => {
    const input = minimal();
    (input.containerDefinitions[0] as Record<string, unknown>).portMappings = [
      { containerPort: 8080 },
      { containerPort: 53, hostPort: 5353, protocol: 'udp' },
    ];
    const { spec } = validateTaskDefinitionInput(input);
    expect(spec.networkMode).toBe('bridge');
    expect(spec.containerDefinitions[0]).toEqual({
      name: 'c',
      image: 'busybox',
      cpu: 0,
      memory: 32,
      essential: true,
      portMappings: [
        { containerPort: 8080, hostPort: 0, protocol: 'tcp' },
        { containerPort: 53, hostPort: 5353, protocol: 'udp' },
      ],
      environment: [],
      mountPoints: [],
      volumesFrom: [],
    });
  });

  it('host networking maps each port onto itself', () => {
    const input = { ...minimal(), networkMode: 'host' };
    (input.containerDefinitions[0] as Record<string, unknown>).portMappings = [
      { containerPort: 8080 },
      { containerPort: 9090, hostPort: 9090 },
    ];
    const { spec } = validateTaskDefinitionInput(input);
    expect(spec.containerDefinitions[0]!.portMappings.map((p) => p.hostPort)).toEqual([8080, 9090]);
  });

  it('health check intervals default to 30/5/3 and keep what was given', () => {
    const input = minimal();
    (input.containerDefinitions[0] as Record<string, unknown>).healthCheck = {
      command: ['CMD', 'true'],
      retries: 10,
    };
    expect(validateTaskDefinitionInput(input).spec.containerDefinitions[0]!.healthCheck).toEqual({
      command: ['CMD', 'true'],
      interval: 30,
      timeout: 5,
      retries: 10,
    });
  });

  it.each([
    [256, '256'],
    ['1024', '1024'],
    ['1 vCPU', '1024'],
    ['0.25vcpu', '256'],
  ])('task cpu %j reads as %s units', (cpu, units) => {
    expect(validateTaskDefinitionInput({ ...minimal(), cpu }).spec.cpu).toBe(units);
  });

  it.each([
    [512, '512'],
    ['2048', '2048'],
    ['1GB', '1024'],
    ['0.5 GB', '512'],
  ])('task memory %j reads as %s MiB', (memory, mib) => {
    expect(validateTaskDefinitionInput({ ...minimal(), memory }).spec.memory).toBe(mib);
  });

  it('with task memory, containers need no memory of their own', () => {
    const { spec } = validateTaskDefinitionInput({
      family: 'f',
      memory: '256',
      containerDefinitions: [{ name: 'c', image: 'busybox' }],
    });
    expect(spec.containerDefinitions[0]!.memory).toBeUndefined();
  });

  it('accepts ulimits of -1 (unlimited), a matching runtime platform and EXTERNAL', () => {
    const input = {
      ...minimal(),
      requiresCompatibilities: ['EC2', 'EXTERNAL'],
      runtimePlatform: { operatingSystemFamily: 'LINUX', cpuArchitecture: 'ARM64' },
    };
    (input.containerDefinitions[0] as Record<string, unknown>).ulimits = [
      { name: 'memlock', softLimit: -1, hardLimit: -1 },
    ];
    const { spec } = validateTaskDefinitionInput(input, { hostArchitecture: 'ARM64' });
    expect(spec.runtimePlatform).toEqual({ operatingSystemFamily: 'LINUX', cpuArchitecture: 'ARM64' });
    expect(spec.requiresCompatibilities).toEqual(['EC2', 'EXTERNAL']);
  });

  it('keeps task roles and returns tags apart', () => {
    const out = registerTaskDefinition(
      {
        ...minimal(),
        taskRoleArn: 'arn:aws:iam::000000000000:role/web',
        tags: [{ key: 'team', value: 'web' }, { key: 'empty' }],
      },
      ctx,
    );
    expect(out.taskDefinition.taskRoleArn).toBe('arn:aws:iam::000000000000:role/web');
    expect(out.taskDefinition).not.toHaveProperty('tags');
    expect(out.tags).toEqual([
      { key: 'team', value: 'web' },
      { key: 'empty', value: '' },
    ]);
  });

  it('volumes: host paths, task-scoped and shared local volumes', () => {
    const { spec } = validateTaskDefinitionInput({
      family: 'f',
      volumes: [
        { name: 'data', host: { sourcePath: '/srv/data' } },
        { name: 'scratch', dockerVolumeConfiguration: { scope: 'task', driver: 'local' } },
        {
          name: 'shared',
          dockerVolumeConfiguration: { scope: 'shared', autoprovision: true, labels: { a: 'b' } },
        },
      ],
      containerDefinitions: [
        {
          name: 'c',
          image: 'busybox',
          memory: 32,
          mountPoints: [{ sourceVolume: 'data', containerPath: '/data', readOnly: true }],
        },
        { name: 'd', image: 'busybox', memory: 32, volumesFrom: [{ sourceContainer: 'c' }] },
      ],
    });
    expect(spec.volumes).toEqual([
      { name: 'data', host: { sourcePath: '/srv/data' } },
      { name: 'scratch', dockerVolumeConfiguration: { scope: 'task', driver: 'local' } },
      {
        name: 'shared',
        dockerVolumeConfiguration: {
          scope: 'shared',
          driver: 'local',
          autoprovision: true,
          labels: { a: 'b' },
        },
      },
    ]);
    expect(spec.containerDefinitions[1]!.volumesFrom).toEqual([{ sourceContainer: 'c', readOnly: false }]);
  });
});

describe('what one machine cannot do is refused, naming the field and why', () => {
  const base = () =>
    clone(sampleApp) as Record<string, unknown> & { containerDefinitions: Record<string, unknown>[] };
  const withTask = (patch: Record<string, unknown>) => ({ ...base(), ...patch });
  const withContainer = (patch: Record<string, unknown>) => {
    const b = base();
    Object.assign(b.containerDefinitions[0]!, patch);
    return b;
  };

  it.each<[string, unknown, string]>([
    [
      'awsvpc',
      withTask({ networkMode: 'awsvpc' }),
      "networkMode 'awsvpc' is not supported by berth: it gives each task an elastic network interface in an AWS VPC; use bridge (with port mappings), host or none.",
    ],
    [
      'Fargate',
      withTask({ requiresCompatibilities: ['FARGATE'] }),
      "requiresCompatibilities 'FARGATE' is not supported by berth: berth runs tasks on its own machine, as the EC2 launch type does; use EC2 or EXTERNAL.",
    ],
    [
      'placement constraints',
      withTask({
        placementConstraints: [{ type: 'memberOf', expression: 'attribute:ecs.instance-type =~ t2.*' }],
      }),
      'placementConstraints is not supported by berth: there is a single machine to place tasks on.',
    ],
    [
      'an App Mesh proxy',
      withTask({ proxyConfiguration: { type: 'APPMESH', containerName: 'envoy' } }),
      'proxyConfiguration is not supported by berth: App Mesh proxy configuration needs AWS App Mesh.',
    ],
    [
      'inference accelerators',
      withTask({ inferenceAccelerators: [{ deviceName: 'd', deviceType: 'eia2.medium' }] }),
      'inferenceAccelerators is not supported by berth: Elastic Inference accelerators are AWS hardware.',
    ],
    [
      'ephemeral storage',
      withTask({ ephemeralStorage: { sizeInGiB: 50 } }),
      "ephemeralStorage is not supported by berth: it sizes Fargate's task storage; berth tasks use this machine's disk.",
    ],
    [
      'Windows',
      withTask({ runtimePlatform: { operatingSystemFamily: 'WINDOWS_SERVER_2022_CORE' } }),
      "runtimePlatform.operatingSystemFamily 'WINDOWS_SERVER_2022_CORE' is not supported by berth: it runs Linux containers only.",
    ],
    [
      'another CPU architecture',
      withTask({ runtimePlatform: { operatingSystemFamily: 'LINUX', cpuArchitecture: 'ARM64' } }),
      "runtimePlatform.cpuArchitecture 'ARM64' is not supported by berth: this machine is X86_64.",
    ],
    [
      'a PID namespace mode',
      withTask({ pidMode: 'task' }),
      'pidMode is not supported by berth: sharing the host or task PID namespace is not implemented.',
    ],
    [
      'EFS',
      withTask({ volumes: [{ name: 'efs', efsVolumeConfiguration: { fileSystemId: 'fs-1' } }] }),
      'volumes[0].efsVolumeConfiguration is not supported by berth: Amazon EFS is an AWS service.',
    ],
    [
      'a Docker volume plugin',
      withTask({ volumes: [{ name: 'v', dockerVolumeConfiguration: { driver: 'rexray/ebs' } }] }),
      "volumes[0].dockerVolumeConfiguration.driver 'rexray/ebs' is not supported by berth: only the local volume driver exists on this machine.",
    ],
    [
      'a log driver shipping logs away',
      withContainer({ logConfiguration: { logDriver: 'splunk', options: {} } }),
      "Invalid setting for container 'sample-app': logConfiguration.logDriver 'splunk' is not supported by berth: berth captures stdout and stderr on this machine; use json-file (or awslogs, kept locally).",
    ],
    [
      'FireLens',
      withContainer({ firelensConfiguration: { type: 'fluentbit' } }),
      "Invalid setting for container 'sample-app': firelensConfiguration is not supported by berth: FireLens log routing is not implemented; berth captures stdout and stderr itself.",
    ],
    [
      'kernel capabilities',
      withContainer({ linuxParameters: { capabilities: { add: ['NET_ADMIN'] } } }),
      "Invalid setting for container 'sample-app': linuxParameters.capabilities is not supported by berth: adding or dropping kernel capabilities is not implemented.",
    ],
    [
      'privileged containers',
      withContainer({ privileged: true }),
      "Invalid setting for container 'sample-app': privileged is not supported by berth: privileged containers are not allowed.",
    ],
    [
      'Docker links',
      withContainer({ links: ['db'] }),
      "Invalid setting for container 'sample-app': links is not supported by berth: legacy Docker links are not implemented; publish ports, or use host networking.",
    ],
    [
      'private registry credentials',
      withContainer({ repositoryCredentials: { credentialsParameter: 'arn:aws:secretsmanager:x' } }),
      "Invalid setting for container 'sample-app': repositoryCredentials is not supported by berth: berth runs images from its own storage and pulls from no other registry.",
    ],
    [
      'environment files',
      withContainer({ environmentFiles: [{ value: 'arn:aws:s3:::bucket/app.env', type: 's3' }] }),
      "Invalid setting for container 'sample-app': environmentFiles is not supported by berth: environment files are read from Amazon S3.",
    ],
    [
      'GPUs',
      withContainer({ resourceRequirements: [{ type: 'GPU', value: '1' }] }),
      "Invalid setting for container 'sample-app': resourceRequirements is not supported by berth: GPUs and inference accelerators are not available.",
    ],
    [
      'port ranges',
      withContainer({ portMappings: [{ containerPortRange: '8000-8010' }] }),
      "Invalid setting for container 'sample-app': portMappings[0].containerPortRange is not supported by berth: list the ports one by one.",
    ],
    [
      'restart policies',
      withContainer({ restartPolicy: { enabled: true, restartAttemptPeriod: 60 } }),
      "Invalid setting for container 'sample-app': restartPolicy is not supported by berth: containers are not restarted in place; a service replaces stopped tasks.",
    ],
    [
      'a terminal',
      withContainer({ pseudoTerminal: true }),
      "Invalid setting for container 'sample-app': pseudoTerminal is not supported by berth: tasks run without a terminal.",
    ],
    [
      'unpinned image tags',
      withContainer({ versionConsistency: 'disabled' }),
      "Invalid setting for container 'sample-app': versionConsistency 'disabled' is not supported by berth: each deployment always pins the image tag to one digest.",
    ],
  ])('%s', (_what, input, message) => {
    const err = refusal(input);
    expect(err.type).toBe('ClientException');
    expect(err.status).toBe(400);
    expect(err.message).toBe(message);
  });

  it('accepts the same members when they ask for nothing', () => {
    const input = withContainer({
      privileged: false,
      links: [],
      pseudoTerminal: null,
      resourceRequirements: [],
      linuxParameters: { capabilities: {}, devices: [] },
      restartPolicy: { enabled: false },
      logConfiguration: { logDriver: 'json-file', secretOptions: [] },
    });
    Object.assign(input, {
      placementConstraints: [],
      pidMode: null,
      enableFaultInjection: false,
      inferenceAccelerators: [],
    });
    expect(() => validateTaskDefinitionInput(input, { hostArchitecture: 'X86_64' })).not.toThrow();
  });
});

describe('what ECS itself would refuse', () => {
  const task = (containers: Record<string, unknown>[], patch: Record<string, unknown> = {}) => ({
    family: 'f',
    containerDefinitions: containers,
    ...patch,
  });
  const c = (name: string, patch: Record<string, unknown> = {}) => ({
    name,
    image: 'busybox',
    memory: 32,
    ...patch,
  });

  it.each<[string, unknown, string | RegExp]>([
    ['no family', { containerDefinitions: [c('a')] }, 'family is required.'],
    ['a family with a dot', task([c('a')], { family: 'web.app' }), /^family 'web.app' is invalid/],
    ['no containers', task([]), 'containerDefinitions must have at least one container.'],
    ['eleven containers', task(Array.from({ length: 11 }, (_, i) => c(`c${i}`))), /at most 10/],
    ['no image', task([{ name: 'a', memory: 32 }]), "Invalid setting for container 'a': image is required."],
    [
      'two containers with one name',
      task([c('a'), c('a')]),
      "containerDefinitions has two containers named 'a'.",
    ],
    [
      'no essential container',
      task([c('a', { essential: false })]),
      'A task definition must have at least one essential container.',
    ],
    [
      'no memory anywhere',
      task([{ name: 'a', image: 'busybox' }]),
      "Invalid setting for container 'a'. At least one of 'memory' or 'memoryReservation' must be specified.",
    ],
    [
      'a reservation above the limit',
      task([c('a', { memory: 64, memoryReservation: 128 })]),
      "Invalid setting for container 'a': memoryReservation (128 MiB) must not exceed memory (64 MiB).",
    ],
    [
      'containers above the task memory',
      task([c('a', { memory: 300 })], { memory: '256' }),
      /exceeds the task's memory \(256 MiB\)/,
    ],
    [
      'containers above the task cpu',
      task([c('a', { cpu: 200 }), c('b', { cpu: 200 })], { cpu: '256' }),
      /cpu adds up to 400/,
    ],
    ['task cpu below 128', task([c('a')], { cpu: '64' }), /between 128 and 196608/],
    ['task memory in TB', task([c('a')], { memory: '1 TB' }), /memory '1 TB' is invalid/],
    [
      'a health check every 2 s',
      task([c('a', { healthCheck: { command: ['CMD', 'true'], interval: 2 } })]),
      "Invalid setting for container 'a': healthCheck.interval must be between 5 and 300, got 2.",
    ],
    [
      'a health check without CMD',
      task([c('a', { healthCheck: { command: ['curl', 'localhost'] } })]),
      /healthCheck.command must start with "CMD" or "CMD-SHELL"/,
    ],
    [
      'a retries of 11',
      task([c('a', { healthCheck: { command: ['CMD', 'x'], retries: 11 } })]),
      /retries must be between 1 and 10/,
    ],
    [
      'a stop timeout of 300 s',
      task([c('a', { stopTimeout: 300 })]),
      /stopTimeout must be between 2 and 120 seconds, got 300/,
    ],
    [
      'a dependency on a missing container',
      task([c('a', { dependsOn: [{ containerName: 'db', condition: 'START' }] })]),
      "Invalid setting for container 'a': dependsOn 'db' is not a container of this task definition.",
    ],
    [
      'an unknown dependency condition',
      task([c('a', { dependsOn: [{ containerName: 'b', condition: 'READY' }] }), c('b')]),
      /'READY' is invalid: use START, COMPLETE, SUCCESS or HEALTHY/,
    ],
    [
      'HEALTHY on a container without a health check',
      task([c('a', { dependsOn: [{ containerName: 'b', condition: 'HEALTHY' }] }), c('b')]),
      "Invalid setting for container 'a': dependsOn 'b' with condition HEALTHY needs a healthCheck on that container.",
    ],
    [
      'SUCCESS on an essential container',
      task([c('a', { dependsOn: [{ containerName: 'b', condition: 'SUCCESS' }] }), c('b')]),
      /with condition SUCCESS needs a non-essential container/,
    ],
    [
      'a dependency cycle',
      task([
        c('a', { dependsOn: [{ containerName: 'b', condition: 'START' }] }),
        c('b', { dependsOn: [{ containerName: 'c', condition: 'START' }] }),
        c('c', { dependsOn: [{ containerName: 'a', condition: 'START' }] }),
      ]),
      'dependsOn forms a cycle: a -> b -> c -> a; no container of it could ever start.',
    ],
    [
      'a port in none mode',
      task([c('a', { portMappings: [{ containerPort: 80 }] })], { networkMode: 'none' }),
      /networkMode 'none'/,
    ],
    [
      'a remapped port in host mode',
      task([c('a', { portMappings: [{ containerPort: 80, hostPort: 8080 }] })], { networkMode: 'host' }),
      "Invalid setting for container 'a': portMappings[0].hostPort (8080) must equal containerPort (80) or be left out in networkMode 'host'.",
    ],
    [
      'one host port bound twice',
      task([
        c('a', { portMappings: [{ containerPort: 80, hostPort: 8080 }] }),
        c('b', { portMappings: [{ containerPort: 81, hostPort: 8080 }] }),
      ]),
      "Host port 8080/tcp is mapped twice (containers 'a' and 'b'); a host port can be bound once.",
    ],
    [
      'port 70000',
      task([c('a', { portMappings: [{ containerPort: 70000 }] })]),
      /containerPort must be between 1 and 65535/,
    ],
    [
      'protocol sctp',
      task([c('a', { portMappings: [{ containerPort: 80, protocol: 'sctp' }] })]),
      /'sctp' is invalid: use tcp or udp/,
    ],
    [
      'a soft ulimit above the hard one',
      task([c('a', { ulimits: [{ name: 'nofile', softLimit: 10, hardLimit: 5 }] })]),
      /softLimit 10 exceeds hardLimit 5/,
    ],
    [
      'an unknown ulimit',
      task([c('a', { ulimits: [{ name: 'files', softLimit: 1, hardLimit: 1 }] })]),
      /'files' is invalid: use one of core/,
    ],
    [
      'a relative working directory',
      task([c('a', { workingDirectory: 'app' })]),
      /workingDirectory 'app' must be an absolute path/,
    ],
    [
      'a variable set twice',
      task([c('a', { environment: [{ name: 'X', value: '1' }], secrets: [{ name: 'X', valueFrom: 's' }] })]),
      /sets the variable 'X' twice/,
    ],
    [
      'a mount of an undeclared volume',
      task([c('a', { mountPoints: [{ sourceVolume: 'v', containerPath: '/v' }] })]),
      /'v' names no volume/,
    ],
    [
      'a relative host path',
      task([c('a')], { volumes: [{ name: 'v', host: { sourcePath: 'data' } }] }),
      /must be an absolute path/,
    ],
    [
      'an aws: tag',
      task([c('a')], { tags: [{ key: 'aws:owner', value: 'x' }] }),
      /keys beginning with 'aws:' are reserved/,
    ],
    [
      'a bogus network mode',
      task([c('a')], { networkMode: 'nat' }),
      "networkMode 'nat' is invalid: use bridge, host or none.",
    ],
  ])('%s', (_what, input, message) => {
    const err = refusal(input);
    expect(err.type).toBe('ClientException');
    if (typeof message === 'string') expect(err.message).toBe(message);
    else expect(err.message).toMatch(message);
  });

  it.each<[string, unknown, string]>([
    [
      'container cpu as a string',
      task([c('a', { cpu: '256' })]),
      'containerDefinitions[0].cpu must be an integer, got string.',
    ],
    [
      'essential as a string',
      task([c('a', { essential: 'yes' })]),
      'containerDefinitions[0].essential must be a boolean, got string.',
    ],
    [
      'containers as an object',
      { family: 'f', containerDefinitions: { a: 1 } },
      'containerDefinitions must be a list, got object.',
    ],
    [
      'a command string',
      task([c('a', { command: 'echo hi' })]),
      'containerDefinitions[0].command must be a list, got string.',
    ],
    [
      'a number in the environment',
      task([c('a', { environment: [{ name: 'N', value: 1 }] })]),
      'containerDefinitions[0].environment[0].value must be a string, got number.',
    ],
    ['the input itself', [], 'input must be an object, got array.'],
  ])('wrong JSON types are a SerializationException: %s', (_what, input, message) => {
    const err = refusal(input);
    expect([err.type, err.message]).toEqual(['SerializationException', message]);
  });
});

describe('naming task definitions', () => {
  it('builds ARNs with the configured account', () => {
    expect(taskDefinitionArn('us-east-1', '000000000000', 'web', 3)).toBe(
      'arn:aws:ecs:us-east-1:000000000000:task-definition/web:3',
    );
  });

  it.each<[string, ReturnType<typeof parseTaskDefinitionRef>]>([
    ['web', { family: 'web' }],
    ['web:3', { family: 'web', revision: 3 }],
    ['arn:aws:ecs:us-east-1:000000000000:task-definition/web:12', { family: 'web', revision: 12 }],
    ['arn:aws:ecs:us-east-1:000000000000:task-definition/web', undefined],
    ['web:0', undefined],
    ['web:latest', undefined],
    ['we b', undefined],
    ['', undefined],
  ])('%j', (ref, expected) => {
    expect(parseTaskDefinitionRef(ref)).toEqual(expected);
  });
});
