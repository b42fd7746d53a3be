// RegisterTaskDefinition input -> a validated, normalised task definition, with ECS's own field
// names, so a task-definition JSON written for ECS registers as is and DescribeTaskDefinition
// answers in the shape ECS does. Pure: no storage, no clock, no I/O; revisions are the caller's.
//
// Every member of ECS's RegisterTaskDefinition model falls in one of three groups:
//   - supported: validated against ECS's rules, defaults filled in as ECS reports them;
//   - ECS features one machine (or berth) cannot provide: refused with ClientException naming the
//     field and the reason, never dropped quietly. Inert values (null, false, [] or {}, which
//     console exports are full of) are accepted, since they ask for nothing;
//   - not in ECS's model at all (typos, or the read-only fields DescribeTaskDefinition returns:
//     taskDefinitionArn, revision, status, ...): ignored, as AWS JSON services ignore unknown
//     members, and listed in `ignoredMembers` for the caller to log or warn about.
// A value of the wrong JSON type is a SerializationException, as the AWS front end answers it;
// a value ECS would refuse is a ClientException, the error ECS returns for task definitions.

import { EcsError } from './ecs-protocol.ts';

export const DEFAULT_ACCOUNT_ID = '000000000000';
/** What the agent uses when a container has no stopTimeout (ECS_CONTAINER_STOP_TIMEOUT). */
export const DEFAULT_STOP_TIMEOUT_SECONDS = 30;
export const MAX_CONTAINERS_PER_TASK = 10;

export type NetworkMode = 'bridge' | 'host' | 'none';
export type CpuArchitecture = 'X86_64' | 'ARM64';
export type DependencyCondition = 'START' | 'COMPLETE' | 'SUCCESS' | 'HEALTHY';

export interface KeyValuePair {
  name: string;
  value: string;
}
export interface Secret {
  name: string;
  /** A reference into berth's secret store (an ARN or a parameter name, as in ECS). */
  valueFrom: string;
}
export interface PortMapping {
  containerPort: number;
  /** 0 = a dynamic host port (bridge mode); always equal to containerPort in host mode. */
  hostPort: number;
  protocol: 'tcp' | 'udp';
  name?: string;
  appProtocol?: 'http' | 'http2' | 'grpc';
}
export interface HealthCheck {
  command: string[];
  interval: number;
  timeout: number;
  retries: number;
  startPeriod?: number;
}
export interface ContainerDependency {
  containerName: string;
  condition: DependencyCondition;
}
export const ulimitNames = [
  'core',
  'cpu',
  'data',
  'fsize',
  'locks',
  'memlock',
  'msgqueue',
  'nice',
  'nofile',
  'nproc',
  'rss',
  'rtprio',
  'rttime',
  'sigpending',
  'stack',
] as const;
export type UlimitName = (typeof ulimitNames)[number];
export interface Ulimit {
  name: UlimitName;
  /** -1 means unlimited. */
  softLimit: number;
  hardLimit: number;
}
export interface MountPoint {
  sourceVolume: string;
  containerPath: string;
  readOnly: boolean;
}
export interface VolumeFrom {
  sourceContainer: string;
  readOnly: boolean;
}
export interface LogConfiguration {
  /** Both mean: berth captures stdout/stderr on this machine ('awslogs' options are kept, not acted on). */
  logDriver: 'json-file' | 'awslogs';
  options?: Record<string, string>;
}
export interface LinuxParameters {
  initProcessEnabled?: boolean;
}
export interface ContainerDefinition {
  name: string;
  image: string;
  /** CPU units (1024 = one vCPU), 0 when not given, as ECS reports it. */
  cpu: number;
  /** Hard limit in MiB. */
  memory?: number;
  /** Soft limit in MiB. */
  memoryReservation?: number;
  portMappings: PortMapping[];
  essential: boolean;
  entryPoint?: string[];
  command?: string[];
  environment: KeyValuePair[];
  secrets?: Secret[];
  mountPoints: MountPoint[];
  volumesFrom: VolumeFrom[];
  linuxParameters?: LinuxParameters;
  dependsOn?: ContainerDependency[];
  /** Seconds to wait for dependencies before giving up on this container. */
  startTimeout?: number;
  /** Seconds between SIGTERM and SIGKILL; DEFAULT_STOP_TIMEOUT_SECONDS when absent. */
  stopTimeout?: number;
  user?: string;
  workingDirectory?: string;
  readonlyRootFilesystem?: boolean;
  ulimits?: Ulimit[];
  logConfiguration?: LogConfiguration;
  healthCheck?: HealthCheck;
  dockerLabels?: Record<string, string>;
  versionConsistency?: 'enabled';
}
export interface Volume {
  name: string;
  /** A bind mount of sourcePath; without one, a volume berth creates for the task. */
  host?: { sourcePath?: string };
  dockerVolumeConfiguration?: {
    scope: 'task' | 'shared';
    autoprovision?: boolean;
    driver: 'local';
    labels?: Record<string, string>;
  };
}
export interface Tag {
  key: string;
  value: string;
}

/** A RegisterTaskDefinition input that passed validation, with ECS's defaults filled in. */
export interface TaskDefinitionSpec {
  family: string;
  containerDefinitions: ContainerDefinition[];
  taskRoleArn?: string;
  executionRoleArn?: string;
  networkMode: NetworkMode;
  volumes: Volume[];
  requiresCompatibilities?: ('EC2' | 'EXTERNAL')[];
  /** Task-level CPU units, as the string ECS reports ("256"). */
  cpu?: string;
  /** Task-level memory in MiB, as the string ECS reports ("512"). */
  memory?: string;
  runtimePlatform?: { operatingSystemFamily?: 'LINUX'; cpuArchitecture?: CpuArchitecture };
  tags: Tag[];
}

/** DescribeTaskDefinition's `taskDefinition`. Timestamps are epoch seconds, JSON 1.1's wire form. */
export interface TaskDefinition extends Omit<TaskDefinitionSpec, 'tags'> {
  taskDefinitionArn: string;
  revision: number;
  status: 'ACTIVE' | 'INACTIVE';
  compatibilities: ['EC2'];
  placementConstraints: [];
  requiresAttributes: [];
  registeredAt: number;
  registeredBy?: string;
  deregisteredAt?: number;
}

export interface ValidationOptions {
  /** The machine's CPU architecture; from process.arch by default. */
  hostArchitecture?: CpuArchitecture;
}

export interface ValidatedInput {
  spec: TaskDefinitionSpec;
  /** Paths of members ECS's model does not have, which were ignored (e.g. "containerDefinitions[0].essentail"). */
  ignoredMembers: string[];
}

export interface RegistrationContext {
  region: string;
  /** The fake account id berth puts in ARNs; DEFAULT_ACCOUNT_ID by default. */
  accountId?: string;
  revision: number;
  registeredAt: Date;
  /** The ARN of the principal that registered it. */
  registeredBy?: string;
}

export function taskDefinitionArn(
  region: string,
  accountId: string,
  family: string,
  revision: number,
): string {
  return `arn:aws:ecs:${region}:${accountId}:task-definition/${family}:${revision}`;
}

/**
 * How RunTask, CreateService and DescribeTaskDefinition name a task definition: "family",
 * "family:revision" or its full ARN. Undefined when it is none of these.
 */
export function parseTaskDefinitionRef(ref: string): { family: string; revision?: number } | undefined {
  const arn = /^arn:[^:]+:ecs:[^:]*:[^:]*:task-definition\/(.+)$/.exec(ref);
  const m = /^([a-zA-Z0-9_-]{1,255})(?::([1-9]\d{0,9}))?$/.exec(arn ? arn[1]! : ref);
  if (!m) return undefined;
  if (arn && m[2] === undefined) return undefined; // an ARN always names its revision
  return m[2] === undefined ? { family: m[1]! } : { family: m[1]!, revision: Number(m[2]) };
}

/** Validation and the ECS-shaped result in one step, with RegisterTaskDefinition's `tags` alongside. */
export function registerTaskDefinition(
  input: unknown,
  ctx: RegistrationContext & ValidationOptions,
): { taskDefinition: TaskDefinition; tags: Tag[]; ignoredMembers: string[] } {
  const { spec, ignoredMembers } = validateTaskDefinitionInput(input, ctx);
  return { taskDefinition: toTaskDefinition(spec, ctx), tags: spec.tags, ignoredMembers };
}

export function toTaskDefinition(spec: TaskDefinitionSpec, ctx: RegistrationContext): TaskDefinition {
  if (!Number.isInteger(ctx.revision) || ctx.revision < 1)
    throw new RangeError('revision must be a positive integer');
  const { tags: _tags, ...rest } = spec;
  const out: TaskDefinition = {
    taskDefinitionArn: taskDefinitionArn(
      ctx.region,
      ctx.accountId ?? DEFAULT_ACCOUNT_ID,
      spec.family,
      ctx.revision,
    ),
    ...structuredClone(rest),
    revision: ctx.revision,
    status: 'ACTIVE',
    compatibilities: ['EC2'],
    placementConstraints: [],
    requiresAttributes: [],
    registeredAt: ctx.registeredAt.getTime() / 1000,
  };
  if (ctx.registeredBy !== undefined) out.registeredBy = ctx.registeredBy;
  return out;
}

// --- the reading machinery ------------------------------------------------------------------

type Json = Record<string, unknown>;

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

function wrongType(path: string, expected: string, v: unknown): never {
  throw new EcsError('SerializationException', `${path} must be ${expected}, got ${typeName(v)}.`);
}

function isInert(v: unknown): boolean {
  if (v === undefined || v === null || v === false) return true;
  if (Array.isArray(v)) return v.length === 0;
  return typeof v === 'object' && Object.keys(v).length === 0;
}

/** One JSON object being read: fields come out typed; leftover keys are checked at the end. */
class Reader {
  readonly path: string;
  readonly obj: Json;
  private readonly seen = new Set<string>();
  private readonly ctx: Ctx;

  constructor(ctx: Ctx, path: string, value: unknown) {
    if (typeof value !== 'object' || value === null || Array.isArray(value))
      wrongType(path || 'input', 'an object', value);
    this.ctx = ctx;
    this.path = path;
    this.obj = value as Json;
  }

  at(key: string): string {
    return this.path ? `${this.path}.${key}` : key;
  }

  /** The raw value, null read as absent. */
  raw(key: string): unknown {
    this.seen.add(key);
    const v = this.obj[key];
    return v === null ? undefined : v;
  }

  str(key: string): string | undefined {
    const v = this.raw(key);
    if (v !== undefined && typeof v !== 'string') wrongType(this.at(key), 'a string', v);
    return v as string | undefined;
  }

  int(key: string): number | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v)) wrongType(this.at(key), 'an integer', v);
    return v;
  }

  bool(key: string): boolean | undefined {
    const v = this.raw(key);
    if (v !== undefined && typeof v !== 'boolean') wrongType(this.at(key), 'a boolean', v);
    return v as boolean | undefined;
  }

  list(key: string): unknown[] | undefined {
    const v = this.raw(key);
    if (v !== undefined && !Array.isArray(v)) wrongType(this.at(key), 'a list', v);
    return v as unknown[] | undefined;
  }

  strings(key: string): string[] | undefined {
    const v = this.list(key);
    v?.forEach((s, i) => {
      if (typeof s !== 'string') wrongType(`${this.at(key)}[${i}]`, 'a string', s);
    });
    return v as string[] | undefined;
  }

  stringMap(key: string): Record<string, string> | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'object' || Array.isArray(v)) wrongType(this.at(key), 'a map of strings', v);
    for (const [k, s] of Object.entries(v as Json)) {
      if (typeof s !== 'string') wrongType(`${this.at(key)}.${k}`, 'a string', s);
    }
    return { ...(v as Record<string, string>) };
  }

  child(key: string): Reader | undefined {
    const v = this.raw(key);
    return v === undefined ? undefined : new Reader(this.ctx, this.at(key), v);
  }

  children(key: string): Reader[] {
    return (this.list(key) ?? []).map((v, i) => new Reader(this.ctx, `${this.at(key)}[${i}]`, v));
  }

  /** An ECS member berth cannot honour: fine when it asks for nothing, refused otherwise. */
  unsupported(key: string, why: string): void {
    if (!isInert(this.raw(key))) this.ctx.refuse(`${this.at(key)} is not supported by berth: ${why}.`);
  }

  /** Call last: members ECS knows were all read; anything else is recorded as ignored. */
  done(): void {
    for (const key of Object.keys(this.obj)) if (!this.seen.has(key)) this.ctx.ignored.push(this.at(key));
  }
}

interface Ctx {
  /** Paths of members outside ECS's model. */
  ignored: string[];
  /** Throws the ClientException ECS answers for a task definition it will not register. */
  refuse(message: string): never;
}

function makeCtx(): Ctx {
  return {
    ignored: [],
    refuse(message) {
      throw new EcsError('ClientException', message);
    },
  };
}

const NAME = /^[a-zA-Z0-9_-]{1,255}$/;

function hostArchitecture(): CpuArchitecture {
  return process.arch === 'arm64' ? 'ARM64' : 'X86_64';
}

// --- the task -------------------------------------------------------------------------------

export function validateTaskDefinitionInput(input: unknown, opts: ValidationOptions = {}): ValidatedInput {
  const ctx = makeCtx();
  const r = new Reader(ctx, '', input);
  const refuse = (m: string): never => ctx.refuse(m);

  const family = r.str('family');
  if (family === undefined) refuse('family is required.');
  if (!NAME.test(family!)) {
    refuse(`family '${family}' is invalid: up to 255 letters, numbers, underscores and hyphens are allowed.`);
  }

  const networkMode = (r.str('networkMode') ?? 'bridge') as string;
  if (networkMode === 'awsvpc') {
    refuse(
      "networkMode 'awsvpc' is not supported by berth: it gives each task an elastic network interface in an AWS VPC; use bridge (with port mappings), host or none.",
    );
  }
  if (!['bridge', 'host', 'none'].includes(networkMode)) {
    refuse(`networkMode '${networkMode}' is invalid: use bridge, host or none.`);
  }

  const spec: TaskDefinitionSpec = {
    family: family!,
    containerDefinitions: [],
    networkMode: networkMode as NetworkMode,
    volumes: [],
    tags: [],
  };

  const taskRoleArn = r.str('taskRoleArn');
  if (taskRoleArn !== undefined) {
    if (!taskRoleArn.trim()) refuse('taskRoleArn must not be empty.');
    spec.taskRoleArn = taskRoleArn;
  }
  const executionRoleArn = r.str('executionRoleArn');
  if (executionRoleArn !== undefined) {
    if (!executionRoleArn.trim()) refuse('executionRoleArn must not be empty.');
    spec.executionRoleArn = executionRoleArn;
  }

  const compat = r.strings('requiresCompatibilities');
  if (compat && compat.length > 0) {
    for (const c of compat) {
      if (c === 'FARGATE' || c === 'MANAGED_INSTANCES') {
        refuse(
          `requiresCompatibilities '${c}' is not supported by berth: berth runs tasks on its own machine, as the EC2 launch type does; use EC2 or EXTERNAL.`,
        );
      }
      if (c !== 'EC2' && c !== 'EXTERNAL')
        refuse(`requiresCompatibilities '${c}' is invalid: use EC2 or EXTERNAL.`);
    }
    spec.requiresCompatibilities = [...new Set(compat)] as ('EC2' | 'EXTERNAL')[];
  }

  const taskCpu = r.raw('cpu');
  if (taskCpu !== undefined) spec.cpu = String(parseTaskCpu(taskCpu, refuse));
  const taskMemory = r.raw('memory');
  if (taskMemory !== undefined) spec.memory = String(parseTaskMemory(taskMemory, refuse));

  const platform = r.child('runtimePlatform');
  if (platform) {
    const os = platform.str('operatingSystemFamily');
    const arch = platform.str('cpuArchitecture');
    const host = opts.hostArchitecture ?? hostArchitecture();
    if (os !== undefined && os !== 'LINUX') {
      refuse(
        `runtimePlatform.operatingSystemFamily '${os}' is not supported by berth: it runs Linux containers only.`,
      );
    }
    if (arch !== undefined && arch !== 'X86_64' && arch !== 'ARM64') {
      refuse(`runtimePlatform.cpuArchitecture '${arch}' is invalid: use X86_64 or ARM64.`);
    }
    if (arch !== undefined && arch !== host) {
      refuse(`runtimePlatform.cpuArchitecture '${arch}' is not supported by berth: this machine is ${host}.`);
    }
    platform.done();
    spec.runtimePlatform = {};
    if (os !== undefined) spec.runtimePlatform.operatingSystemFamily = 'LINUX';
    if (arch !== undefined) spec.runtimePlatform.cpuArchitecture = arch as CpuArchitecture;
  }

  r.unsupported('placementConstraints', 'there is a single machine to place tasks on');
  r.unsupported('proxyConfiguration', 'App Mesh proxy configuration needs AWS App Mesh');
  r.unsupported('inferenceAccelerators', 'Elastic Inference accelerators are AWS hardware');
  r.unsupported('ephemeralStorage', "it sizes Fargate's task storage; berth tasks use this machine's disk");
  r.unsupported('pidMode', 'sharing the host or task PID namespace is not implemented');
  r.unsupported('ipcMode', 'sharing the host or task IPC namespace is not implemented');
  r.unsupported('enableFaultInjection', 'fault injection endpoints are not implemented');

  spec.volumes = readVolumes(r, ctx);
  spec.tags = readTags(r, ctx);

  const containers = r.children('containerDefinitions');
  if (containers.length === 0) refuse('containerDefinitions must have at least one container.');
  if (containers.length > MAX_CONTAINERS_PER_TASK) {
    refuse(
      `containerDefinitions has ${containers.length} containers; a task definition may have at most ${MAX_CONTAINERS_PER_TASK}.`,
    );
  }
  const volumeNames = new Set(spec.volumes.map((v) => v.name));
  spec.containerDefinitions = containers.map((c) => readContainer(c, ctx, spec.networkMode, volumeNames));
  r.done();

  checkContainerSet(spec, refuse);
  return { spec, ignoredMembers: ctx.ignored };
}

/** "256", 256, "1 vCPU", "0.25vcpu" -> CPU units. */
function parseTaskCpu(v: unknown, refuse: (m: string) => never): number {
  let units: number | undefined;
  if (typeof v === 'number') units = v;
  else if (typeof v === 'string') {
    const s = v.trim();
    const vcpu = /^(\d+(?:\.\d+)?)\s*vcpu$/i.exec(s);
    units = /^\d+$/.test(s) ? Number(s) : vcpu ? Number(vcpu[1]) * 1024 : undefined;
  } else wrongType('cpu', 'a string', v);
  if (units === undefined || !Number.isInteger(units)) {
    refuse(`cpu '${v}' is invalid: give CPU units ("256") or vCPUs ("0.25 vCPU").`);
  }
  if (units! < 128 || units! > 196608) {
    refuse(`cpu ${units} is invalid: a task may have between 128 and 196608 CPU units (0.125 to 192 vCPUs).`);
  }
  return units!;
}

/** "512", 512, "1GB", "0.5 GB" -> MiB. */
function parseTaskMemory(v: unknown, refuse: (m: string) => never): number {
  let mib: number | undefined;
  if (typeof v === 'number') mib = v;
  else if (typeof v === 'string') {
    const s = v.trim();
    const gb = /^(\d+(?:\.\d+)?)\s*gb$/i.exec(s);
    mib = /^\d+$/.test(s) ? Number(s) : gb ? Number(gb[1]) * 1024 : undefined;
  } else wrongType('memory', 'a string', v);
  if (mib === undefined || !Number.isInteger(mib)) {
    refuse(`memory '${v}' is invalid: give MiB ("512") or GB ("0.5 GB").`);
  }
  if (mib! < 6) refuse(`memory ${mib} is invalid: a task needs at least 6 MiB.`);
  return mib!;
}

function readVolumes(r: Reader, ctx: Ctx): Volume[] {
  const volumes: Volume[] = [];
  for (const v of r.children('volumes')) {
    const name = v.str('name');
    if (name === undefined || !NAME.test(name)) {
      ctx.refuse(
        `${v.at('name')} is invalid: up to 255 letters, numbers, underscores and hyphens are allowed.`,
      );
    }
    if (volumes.some((o) => o.name === name)) ctx.refuse(`volumes has two volumes named '${name}'.`);
    v.unsupported('efsVolumeConfiguration', 'Amazon EFS is an AWS service');
    v.unsupported(
      'fsxWindowsFileServerVolumeConfiguration',
      'Amazon FSx for Windows File Server is an AWS service',
    );
    v.unsupported('s3filesVolumeConfiguration', 'S3 file systems are an AWS service');
    v.unsupported('configuredAtLaunch', 'Amazon EBS volumes attached at launch are AWS storage');
    const volume: Volume = { name: name! };

    const host = v.child('host');
    if (host) {
      const sourcePath = host.str('sourcePath');
      if (sourcePath !== undefined && !sourcePath.startsWith('/')) {
        ctx.refuse(`${host.at('sourcePath')} '${sourcePath}' is invalid: it must be an absolute path.`);
      }
      host.done();
      volume.host = sourcePath === undefined ? {} : { sourcePath };
    }

    const docker = v.child('dockerVolumeConfiguration');
    if (docker) {
      if (volume.host)
        ctx.refuse(`volume '${name}' has both host and dockerVolumeConfiguration; choose one.`);
      const driver = docker.str('driver') ?? 'local';
      if (driver !== 'local') {
        ctx.refuse(
          `${docker.at('driver')} '${driver}' is not supported by berth: only the local volume driver exists on this machine.`,
        );
      }
      docker.unsupported(
        'driverOpts',
        "options of the local driver mount other filesystems; berth's local volumes are plain directories",
      );
      const scope = docker.str('scope') ?? 'task';
      if (scope !== 'task' && scope !== 'shared')
        ctx.refuse(`${docker.at('scope')} '${scope}' is invalid: use task or shared.`);
      const autoprovision = docker.bool('autoprovision');
      if (autoprovision !== undefined && scope !== 'shared') {
        ctx.refuse(`${docker.at('autoprovision')} is only valid with scope 'shared'.`);
      }
      const labels = docker.stringMap('labels');
      docker.done();
      volume.dockerVolumeConfiguration = { scope, driver: 'local' };
      if (autoprovision !== undefined) volume.dockerVolumeConfiguration.autoprovision = autoprovision;
      if (labels !== undefined) volume.dockerVolumeConfiguration.labels = labels;
    }
    v.done();
    volumes.push(volume);
  }
  return volumes;
}

function readTags(r: Reader, ctx: Ctx): Tag[] {
  const tags: Tag[] = [];
  const list = r.children('tags');
  if (list.length > 50) ctx.refuse(`tags has ${list.length} tags; at most 50 are allowed.`);
  for (const t of list) {
    const key = t.str('key');
    const value = t.str('value') ?? '';
    if (key === undefined || key.length < 1 || key.length > 128) {
      ctx.refuse(`${t.at('key')} is invalid: a tag key has 1 to 128 characters.`);
    }
    if (value.length > 256)
      ctx.refuse(`${t.at('value')} is invalid: a tag value has at most 256 characters.`);
    if (/^aws:/i.test(key!))
      ctx.refuse(`${t.at('key')} '${key}' is invalid: keys beginning with 'aws:' are reserved.`);
    if (tags.some((o) => o.key === key)) ctx.refuse(`tags has the key '${key}' twice.`);
    t.done();
    tags.push({ key: key!, value });
  }
  return tags;
}

// --- one container --------------------------------------------------------------------------

function readContainer(
  c: Reader,
  ctx: Ctx,
  networkMode: NetworkMode,
  volumeNames: ReadonlySet<string>,
): ContainerDefinition {
  const name = c.str('name');
  if (name === undefined) ctx.refuse(`${c.at('name')} is required.`);
  if (!NAME.test(name!)) {
    ctx.refuse(
      `container name '${name}' is invalid: up to 255 letters, numbers, underscores and hyphens are allowed.`,
    );
  }
  // From here on, messages name the container the way ECS does.
  const bad = (field: string, problem: string): never =>
    ctx.refuse(`Invalid setting for container '${name}': ${field} ${problem}.`);
  const no = (field: string, why: string) => {
    if (!isInert(c.raw(field))) bad(field, `is not supported by berth: ${why}`);
  };

  const image = c.str('image');
  if (image === undefined || image.trim() === '') bad('image', 'is required');
  if (image!.length > 255 || /\s/.test(image!)) bad('image', `'${image}' is not a valid image reference`);

  const out: ContainerDefinition = {
    name: name!,
    image: image!,
    cpu: 0,
    portMappings: [],
    essential: c.bool('essential') ?? true,
    environment: [],
    mountPoints: [],
    volumesFrom: [],
  };

  const cpu = c.int('cpu');
  if (cpu !== undefined) {
    if (cpu < 0) bad('cpu', `must be 0 or more CPU units, got ${cpu}`);
    out.cpu = cpu;
  }
  const memory = c.int('memory');
  if (memory !== undefined) {
    if (memory < 6) bad('memory', `must be at least 6 MiB, got ${memory}`);
    out.memory = memory;
  }
  const reservation = c.int('memoryReservation');
  if (reservation !== undefined) {
    if (reservation < 6) bad('memoryReservation', `must be at least 6 MiB, got ${reservation}`);
    if (memory !== undefined && reservation > memory) {
      bad('memoryReservation', `(${reservation} MiB) must not exceed memory (${memory} MiB)`);
    }
    out.memoryReservation = reservation;
  }

  out.portMappings = readPortMappings(c, networkMode, bad);

  const entryPoint = c.strings('entryPoint');
  if (entryPoint !== undefined) out.entryPoint = entryPoint;
  const command = c.strings('command');
  if (command !== undefined) out.command = command;

  const envNames = new Set<string>();
  const envName = (field: string, n: string | undefined) => {
    if (n === undefined || n === '' || n.includes('=') || n.includes('\0')) {
      bad(field, `has an invalid variable name '${n ?? ''}'`);
    }
    if (envNames.has(n!)) bad(field, `sets the variable '${n}' twice (across environment and secrets)`);
    envNames.add(n!);
  };
  c.children('environment').forEach((e, i) => {
    const n = e.str('name');
    envName(`environment[${i}].name`, n);
    const value = e.str('value') ?? '';
    e.done();
    out.environment.push({ name: n!, value });
  });
  const secrets = c.children('secrets');
  if (c.raw('secrets') !== undefined) out.secrets = [];
  secrets.forEach((s, i) => {
    const n = s.str('name');
    envName(`secrets[${i}].name`, n);
    const valueFrom = s.str('valueFrom');
    if (valueFrom === undefined || valueFrom.trim() === '') bad(`secrets[${i}].valueFrom`, 'is required');
    s.done();
    out.secrets!.push({ name: n!, valueFrom: valueFrom! });
  });

  c.children('mountPoints').forEach((m, i) => {
    const sourceVolume = m.str('sourceVolume');
    if (sourceVolume === undefined || !volumeNames.has(sourceVolume)) {
      bad(
        `mountPoints[${i}].sourceVolume`,
        `'${sourceVolume ?? ''}' names no volume of this task definition`,
      );
    }
    const containerPath = m.str('containerPath');
    if (containerPath === undefined || !containerPath.startsWith('/')) {
      bad(`mountPoints[${i}].containerPath`, 'must be an absolute path');
    }
    const readOnly = m.bool('readOnly') ?? false;
    m.done();
    out.mountPoints.push({ sourceVolume: sourceVolume!, containerPath: containerPath!, readOnly });
  });
  c.children('volumesFrom').forEach((v, i) => {
    const sourceContainer = v.str('sourceContainer');
    if (sourceContainer === undefined) bad(`volumesFrom[${i}].sourceContainer`, 'is required');
    if (sourceContainer === name) bad(`volumesFrom[${i}].sourceContainer`, 'cannot be the container itself');
    const readOnly = v.bool('readOnly') ?? false;
    v.done();
    out.volumesFrom.push({ sourceContainer: sourceContainer!, readOnly });
  });

  const linux = c.child('linuxParameters');
  if (linux) {
    const init = linux.bool('initProcessEnabled');
    const unsupported: [string, string][] = [
      ['capabilities', 'adding or dropping kernel capabilities is not implemented'],
      ['devices', 'host devices are not passed to containers'],
      ['sharedMemorySize', 'sizing /dev/shm is not implemented'],
      ['tmpfs', 'tmpfs mounts are not implemented'],
      ['maxSwap', 'swap limits are not implemented'],
      ['swappiness', 'swap limits are not implemented'],
    ];
    for (const [key, why] of unsupported) {
      if (!isInert(linux.raw(key))) bad(`linuxParameters.${key}`, `is not supported by berth: ${why}`);
    }
    linux.done();
    out.linuxParameters = init === undefined ? {} : { initProcessEnabled: init };
  }

  const dependsOn = c.children('dependsOn');
  if (c.raw('dependsOn') !== undefined) out.dependsOn = [];
  dependsOn.forEach((d, i) => {
    const containerName = d.str('containerName');
    if (containerName === undefined) bad(`dependsOn[${i}].containerName`, 'is required');
    const condition = d.str('condition');
    if (!['START', 'COMPLETE', 'SUCCESS', 'HEALTHY'].includes(condition ?? '')) {
      bad(
        `dependsOn[${i}].condition`,
        `'${condition ?? ''}' is invalid: use START, COMPLETE, SUCCESS or HEALTHY`,
      );
    }
    d.done();
    out.dependsOn!.push({ containerName: containerName!, condition: condition as DependencyCondition });
  });

  const startTimeout = c.int('startTimeout');
  if (startTimeout !== undefined) {
    if (startTimeout < 2 || startTimeout > 120)
      bad('startTimeout', `must be between 2 and 120 seconds, got ${startTimeout}`);
    out.startTimeout = startTimeout;
  }
  const stopTimeout = c.int('stopTimeout');
  if (stopTimeout !== undefined) {
    if (stopTimeout < 2 || stopTimeout > 120)
      bad('stopTimeout', `must be between 2 and 120 seconds, got ${stopTimeout}`);
    out.stopTimeout = stopTimeout;
  }

  const user = c.str('user');
  if (user !== undefined) {
    if (!/^[^:\s]+(:[^:\s]+)?$/.test(user))
      bad('user', `'${user}' is invalid: use user, user:group, uid or uid:gid`);
    out.user = user;
  }
  const workingDirectory = c.str('workingDirectory');
  if (workingDirectory !== undefined) {
    if (!workingDirectory.startsWith('/'))
      bad('workingDirectory', `'${workingDirectory}' must be an absolute path`);
    out.workingDirectory = workingDirectory;
  }
  const readonlyRoot = c.bool('readonlyRootFilesystem');
  if (readonlyRoot !== undefined) out.readonlyRootFilesystem = readonlyRoot;

  const ulimits = c.children('ulimits');
  if (c.raw('ulimits') !== undefined) out.ulimits = [];
  ulimits.forEach((u, i) => {
    const n = u.str('name');
    if (!(ulimitNames as readonly string[]).includes(n ?? '')) {
      bad(`ulimits[${i}].name`, `'${n ?? ''}' is invalid: use one of ${ulimitNames.join(', ')}`);
    }
    if (out.ulimits!.some((o) => o.name === n)) bad('ulimits', `sets '${n}' twice`);
    const soft = u.int('softLimit');
    const hard = u.int('hardLimit');
    if (soft === undefined || hard === undefined) bad(`ulimits[${i}]`, 'needs softLimit and hardLimit');
    for (const [k, v] of [
      ['softLimit', soft!],
      ['hardLimit', hard!],
    ] as const) {
      if (v < -1) bad(`ulimits[${i}].${k}`, `must be -1 (unlimited) or more, got ${v}`);
    }
    const lim = (v: number) => (v === -1 ? Number.POSITIVE_INFINITY : v);
    if (lim(soft!) > lim(hard!)) bad(`ulimits[${i}]`, `softLimit ${soft} exceeds hardLimit ${hard}`);
    u.done();
    out.ulimits!.push({ name: n as UlimitName, softLimit: soft!, hardLimit: hard! });
  });

  const log = c.child('logConfiguration');
  if (log) {
    const driver = log.str('logDriver');
    if (driver === undefined) bad('logConfiguration.logDriver', 'is required');
    if (driver !== 'json-file' && driver !== 'awslogs') {
      bad(
        'logConfiguration.logDriver',
        `'${driver}' is not supported by berth: berth captures stdout and stderr on this machine; use json-file (or awslogs, kept locally)`,
      );
    }
    const options = log.stringMap('options');
    if (!isInert(log.raw('secretOptions'))) {
      bad('logConfiguration.secretOptions', 'is not supported by berth: no log driver here takes secrets');
    }
    log.done();
    out.logConfiguration = { logDriver: driver as 'json-file' | 'awslogs' };
    if (options !== undefined) out.logConfiguration.options = options;
  }

  const hc = c.child('healthCheck');
  if (hc) out.healthCheck = readHealthCheck(hc, bad);

  const labels = c.stringMap('dockerLabels');
  if (labels !== undefined) out.dockerLabels = labels;

  const consistency = c.str('versionConsistency');
  if (consistency !== undefined) {
    if (consistency === 'disabled') {
      bad(
        'versionConsistency',
        "'disabled' is not supported by berth: each deployment always pins the image tag to one digest",
      );
    }
    if (consistency !== 'enabled')
      bad('versionConsistency', `'${consistency}' is invalid: use enabled or disabled`);
    out.versionConsistency = 'enabled';
  }

  no('repositoryCredentials', 'berth runs images from its own storage and pulls from no other registry');
  no('links', 'legacy Docker links are not implemented; publish ports, or use host networking');
  no('environmentFiles', 'environment files are read from Amazon S3');
  no('hostname', "setting a container's hostname is not implemented");
  no('disableNetworking', "use networkMode 'none' for a task without network");
  no('privileged', 'privileged containers are not allowed');
  no('dnsServers', 'custom DNS servers are not implemented');
  no('dnsSearchDomains', 'custom DNS search domains are not implemented');
  no('extraHosts', 'extra /etc/hosts entries are not implemented');
  no('dockerSecurityOptions', 'SELinux, AppArmor and seccomp options are not implemented');
  no('interactive', 'tasks run without stdin');
  no('pseudoTerminal', 'tasks run without a terminal');
  no('systemControls', 'namespaced kernel parameters (sysctls) are not implemented');
  no('resourceRequirements', 'GPUs and inference accelerators are not available');
  no(
    'firelensConfiguration',
    'FireLens log routing is not implemented; berth captures stdout and stderr itself',
  );
  no('credentialSpecs', 'Active Directory credential specs are for Windows containers');
  const restart = c.child('restartPolicy');
  if (restart) {
    const enabled = restart.bool('enabled');
    restart.strings('ignoredExitCodes');
    restart.int('restartAttemptPeriod');
    restart.done();
    if (enabled) {
      bad(
        'restartPolicy',
        'is not supported by berth: containers are not restarted in place; a service replaces stopped tasks',
      );
    }
  }

  c.done();
  return out;
}

function readPortMappings(
  c: Reader,
  networkMode: NetworkMode,
  bad: (field: string, problem: string) => never,
): PortMapping[] {
  const out: PortMapping[] = [];
  c.children('portMappings').forEach((p, i) => {
    const at = `portMappings[${i}]`;
    if (networkMode === 'none')
      bad('portMappings', "are not allowed with networkMode 'none', which has no network");
    if (!isInert(p.raw('containerPortRange'))) {
      bad(`${at}.containerPortRange`, 'is not supported by berth: list the ports one by one');
    }
    const containerPort = p.int('containerPort');
    if (containerPort === undefined) bad(`${at}.containerPort`, 'is required');
    if (containerPort! < 1 || containerPort! > 65535)
      bad(`${at}.containerPort`, `must be between 1 and 65535, got ${containerPort}`);
    let hostPort = p.int('hostPort');
    if (hostPort !== undefined && (hostPort < 0 || hostPort > 65535)) {
      bad(`${at}.hostPort`, `must be between 0 and 65535, got ${hostPort}`);
    }
    if (networkMode === 'host') {
      if (hostPort !== undefined && hostPort !== containerPort) {
        bad(
          `${at}.hostPort`,
          `(${hostPort}) must equal containerPort (${containerPort}) or be left out in networkMode 'host'`,
        );
      }
      hostPort = containerPort;
    }
    const protocol = p.str('protocol') ?? 'tcp';
    if (protocol !== 'tcp' && protocol !== 'udp')
      bad(`${at}.protocol`, `'${protocol}' is invalid: use tcp or udp`);
    const mapping: PortMapping = { containerPort: containerPort!, hostPort: hostPort ?? 0, protocol };
    // name and appProtocol only matter to Service Connect; ECS keeps them without it, and so does berth.
    const name = p.str('name');
    if (name !== undefined) {
      if (!/^[a-z0-9_][a-z0-9_-]{0,63}$/.test(name)) {
        bad(
          `${at}.name`,
          `'${name}' is invalid: up to 64 lower-case letters, numbers, underscores and hyphens, not starting with a hyphen`,
        );
      }
      mapping.name = name;
    }
    const appProtocol = p.str('appProtocol');
    if (appProtocol !== undefined) {
      if (!['http', 'http2', 'grpc'].includes(appProtocol))
        bad(`${at}.appProtocol`, `'${appProtocol}' is invalid: use http, http2 or grpc`);
      mapping.appProtocol = appProtocol as PortMapping['appProtocol'];
    }
    p.done();
    if (out.some((o) => o.containerPort === mapping.containerPort && o.protocol === mapping.protocol)) {
      bad(`${at}.containerPort`, `maps ${mapping.containerPort}/${mapping.protocol} twice`);
    }
    out.push(mapping);
  });
  return out;
}

function readHealthCheck(hc: Reader, bad: (field: string, problem: string) => never): HealthCheck {
  const command = hc.strings('command');
  if (command === undefined || command.length < 2 || (command[0] !== 'CMD' && command[0] !== 'CMD-SHELL')) {
    bad('healthCheck.command', 'must start with "CMD" or "CMD-SHELL", followed by the command');
  }
  const ranged = (key: string, min: number, max: number, fallback: number | undefined) => {
    const v = hc.int(key);
    if (v !== undefined && (v < min || v > max))
      bad(`healthCheck.${key}`, `must be between ${min} and ${max}, got ${v}`);
    return v ?? fallback;
  };
  const out: HealthCheck = {
    command: command!,
    interval: ranged('interval', 5, 300, 30)!,
    timeout: ranged('timeout', 2, 60, 5)!,
    retries: ranged('retries', 1, 10, 3)!,
  };
  const startPeriod = ranged('startPeriod', 0, 300, undefined);
  if (startPeriod !== undefined) out.startPeriod = startPeriod;
  hc.done();
  return out;
}

// --- across containers ------------------------------------------------------------------------

function checkContainerSet(spec: TaskDefinitionSpec, refuse: (m: string) => never): void {
  const byName = new Map<string, ContainerDefinition>();
  for (const c of spec.containerDefinitions) {
    if (byName.has(c.name)) refuse(`containerDefinitions has two containers named '${c.name}'.`);
    byName.set(c.name, c);
  }
  if (!spec.containerDefinitions.some((c) => c.essential)) {
    refuse('A task definition must have at least one essential container.');
  }

  const taskMemory = spec.memory === undefined ? undefined : Number(spec.memory);
  let reserved = 0;
  let cpu = 0;
  for (const c of spec.containerDefinitions) {
    if (taskMemory === undefined && c.memory === undefined && c.memoryReservation === undefined) {
      refuse(
        `Invalid setting for container '${c.name}'. At least one of 'memory' or 'memoryReservation' must be specified.`,
      );
    }
    if (taskMemory !== undefined && (c.memory ?? 0) > taskMemory) {
      refuse(
        `Invalid setting for container '${c.name}': memory (${c.memory} MiB) exceeds the task's memory (${taskMemory} MiB).`,
      );
    }
    reserved += c.memoryReservation ?? c.memory ?? 0;
    cpu += c.cpu;
  }
  if (taskMemory !== undefined && reserved > taskMemory) {
    refuse(`The containers reserve ${reserved} MiB in all, more than the task's memory (${taskMemory} MiB).`);
  }
  if (spec.cpu !== undefined && cpu > Number(spec.cpu)) {
    refuse(`The containers' cpu adds up to ${cpu} units, more than the task's cpu (${spec.cpu}).`);
  }

  // A static host port can be bound once per machine, so once per task.
  const hostPorts = new Map<string, string>();
  for (const c of spec.containerDefinitions) {
    for (const p of c.portMappings) {
      if (p.hostPort === 0) continue;
      const key = `${p.hostPort}/${p.protocol}`;
      const other = hostPorts.get(key);
      if (other !== undefined) {
        refuse(
          `Host port ${key} is mapped twice (containers '${other}' and '${c.name}'); a host port can be bound once.`,
        );
      }
      hostPorts.set(key, c.name);
    }
  }
  const names = new Set<string>();
  for (const c of spec.containerDefinitions) {
    for (const p of c.portMappings) {
      if (p.name === undefined) continue;
      if (names.has(p.name))
        refuse(`The port mapping name '${p.name}' is used twice; names must be unique in a task definition.`);
      names.add(p.name);
    }
    for (const v of c.volumesFrom) {
      if (!byName.has(v.sourceContainer)) {
        refuse(
          `Invalid setting for container '${c.name}': volumesFrom names '${v.sourceContainer}', which is not a container of this task definition.`,
        );
      }
    }
  }

  for (const c of spec.containerDefinitions) {
    for (const d of c.dependsOn ?? []) {
      const target = byName.get(d.containerName);
      const bad = (why: string): never =>
        refuse(`Invalid setting for container '${c.name}': dependsOn '${d.containerName}' ${why}.`);
      if (!target) bad('is not a container of this task definition');
      if (target!.name === c.name) bad('is the container itself');
      if ((d.condition === 'COMPLETE' || d.condition === 'SUCCESS') && target!.essential) {
        bad(
          `with condition ${d.condition} needs a non-essential container, since an essential one that exits stops the task`,
        );
      }
      if (d.condition === 'HEALTHY' && !target!.healthCheck)
        bad('with condition HEALTHY needs a healthCheck on that container');
    }
  }
  const cycle = findCycle(spec.containerDefinitions);
  if (cycle) refuse(`dependsOn forms a cycle: ${cycle.join(' -> ')}; no container of it could ever start.`);
}

function findCycle(containers: readonly ContainerDefinition[]): string[] | undefined {
  const edges = new Map(containers.map((c) => [c.name, (c.dependsOn ?? []).map((d) => d.containerName)]));
  const state = new Map<string, 'visiting' | 'done'>();
  const stack: string[] = [];
  const visit = (name: string): string[] | undefined => {
    if (state.get(name) === 'done') return undefined;
    if (state.get(name) === 'visiting') return [...stack.slice(stack.indexOf(name)), name];
    state.set(name, 'visiting');
    stack.push(name);
    for (const next of edges.get(name) ?? []) {
      const found = visit(next);
      if (found) return found;
    }
    stack.pop();
    state.set(name, 'done');
    return undefined;
  };
  for (const c of containers) {
    const found = visit(c.name);
    if (found) return found;
  }
  return undefined;
}
