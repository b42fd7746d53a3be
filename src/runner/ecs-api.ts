// The ECS API's operations over berth's runner: each input is read and checked the way ECS checks it
// (a wrong JSON type is a SerializationException, a bad value an InvalidParameterException or
// ClientException), authorized as `ecs:<Operation>` on the resources it names, then carried out by
// the catalog (clusters, task definitions), the task manager or the service scheduler, and answered
// with ECS's field names, so @aws-sdk/client-ecs and the aws CLI read the answers as ECS's.
//
// ECS features one machine cannot provide (capacity providers, Fargate, awsvpc networking, load
// balancers, service discovery, placement, ECS Exec, ...) are refused with InvalidParameterException
// naming the field; a value that asks for nothing (null, false, [] or {}, or the default of an
// enumeration) is accepted, since exports and SDK defaults are full of them. Members ECS does not
// have are ignored, as AWS JSON services do.
//
// Authorization happens after the input is read (that needs no state) and before anything is
// looked up, so a denied caller learns nothing about what exists. Policies name berth's resources:
//   cluster/NAME            CreateCluster, DescribeClusters, ListTasks, ListServices (the cluster
//                           they list: berth has no ecs:cluster condition key, ECS's way to do it)
//   taskdefinition/FAMILY   Register/Describe/DeregisterTaskDefinition, RunTask, StartTask
//   service/CLUSTER/NAME    Create/Update/Describe/DeleteService
//   task/CLUSTER/ID         StopTask, DescribeTasks
//   *                       ListClusters, ListTaskDefinitions, ListTaskDefinitionFamilies
// and AccessDeniedException names the ECS ARN, in ECS's words. What starts tasks (RunTask,
// StartTask, CreateService, and UpdateService when it deploys) is checked further once the task
// definition is read (launch-rights.ts): iam:PassRole on its task and execution roles, and
// registry:Pull on every image, as the execution role when it names one.
import type { Logger } from '../log.ts';
import { type Catalog, CLUSTER_NAME, type ClusterRecord } from './catalog.ts';
import { type EcsAction, EcsError, type EcsOperation, ecsMessages } from './ecs-protocol.ts';
import { type Actor, authorizeLaunch, type DecideAs, type Launch, requireAllowed } from './launch-rights.ts';
import type {
  ContainerOverride,
  DeploymentConfiguration,
  Service,
  ServiceScheduler,
  Task,
  TaskManager,
  TaskOverride,
} from './model.ts';
import { containerInstanceArn, DEFAULT_CLUSTER, LOCAL_CONTAINER_INSTANCE_ID } from './model.ts';
import { parseTaskDefinitionRef, type Tag, type TaskDefinition } from './task-definitions.ts';

/** Who is calling, as the HTTP layer authenticated them (principalArn names it in createdBy and denials). */
export type EcsCaller = Actor;

export interface EcsApiOptions {
  catalog: Catalog;
  tasks: TaskManager;
  services: ServiceScheduler;
  region: string;
  accountId: string;
  log?: Logger;
  /** Decisions for a named role (an execution role pulling images): auth's authorizeAs. */
  decideAs: DecideAs;
  /** Registry host names meaning "this berth" in an image reference. */
  ownHosts: readonly string[];
  /** Milliseconds since the epoch (CreateService client tokens expire after 24 h). */
  now?: () => number;
}

export type EcsOutput = Record<string, unknown>;

export interface EcsApi {
  handle(operation: EcsOperation, input: Record<string, unknown>, caller: EcsCaller): Promise<EcsOutput>;
}

export { containerInstanceArn, LOCAL_CONTAINER_INSTANCE_ID };

// --- reading input --------------------------------------------------------------------------------

type Json = Record<string, unknown>;

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

function wrongType(path: string, expected: string, v: unknown): never {
  throw new EcsError('SerializationException', `${path} must be ${expected}, got ${typeName(v)}.`);
}

function invalid(message: string): never {
  throw new EcsError('InvalidParameterException', message);
}

function isInert(v: unknown): boolean {
  if (v === undefined || v === null || v === false) return true;
  if (Array.isArray(v)) return v.length === 0;
  return typeof v === 'object' && Object.keys(v as object).length === 0;
}

/** Typed access to one JSON object of the input; null reads as absent, as AWS JSON services do. */
class In {
  readonly path: string;
  readonly obj: Json;
  constructor(path: string, value: unknown) {
    if (typeof value !== 'object' || value === null || Array.isArray(value))
      wrongType(path || 'input', 'an object', value);
    this.path = path;
    this.obj = value as Json;
  }
  at(key: string): string {
    return this.path ? `${this.path}.${key}` : key;
  }
  raw(key: string): unknown {
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
    if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v)))
      wrongType(this.at(key), 'an integer', v);
    return v as number | undefined;
  }
  bool(key: string): boolean | undefined {
    const v = this.raw(key);
    if (v !== undefined && typeof v !== 'boolean') wrongType(this.at(key), 'a boolean', v);
    return v as boolean | undefined;
  }
  strings(key: string): string[] | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) wrongType(this.at(key), 'a list', v);
    v.forEach((s, i) => {
      if (typeof s !== 'string') wrongType(`${this.at(key)}[${i}]`, 'a string', s);
    });
    return v as string[];
  }
  child(key: string): In | undefined {
    const v = this.raw(key);
    return v === undefined ? undefined : new In(this.at(key), v);
  }
  children(key: string): In[] {
    const v = this.raw(key);
    if (v === undefined) return [];
    if (!Array.isArray(v)) wrongType(this.at(key), 'a list', v);
    return v.map((x, i) => new In(`${this.at(key)}[${i}]`, x));
  }
  required(key: string): string {
    const v = this.str(key);
    if (v === undefined || v === '') invalid(`${this.at(key)} is required.`);
    return v;
  }
  oneOf<T extends string>(key: string, allowed: readonly T[]): T | undefined {
    const v = this.str(key);
    if (v !== undefined && !(allowed as readonly string[]).includes(v))
      invalid(`${this.at(key)} '${v}' is invalid: use one of ${allowed.join(', ')}.`);
    return v as T | undefined;
  }
  /** An ECS member berth cannot honour: accepted when it asks for nothing, refused otherwise. */
  unsupported(key: string, why: string): void {
    if (!isInert(this.raw(key))) invalid(`${this.at(key)} is not supported by berth: ${why}.`);
  }
}

const NAME = /^[a-zA-Z0-9_-]{1,255}$/;
const TASK_ID = /^[a-zA-Z0-9_-]{1,255}$/;

function readTags(r: In, key = 'tags'): Tag[] {
  const tags = r.children(key).map((t) => {
    const k = t.str('key');
    const value = t.str('value') ?? '';
    if (k === undefined || k.length < 1 || k.length > 128)
      invalid(`${t.at('key')} must be 1 to 128 characters.`);
    if (value.length > 256) invalid(`${t.at('value')} must be at most 256 characters.`);
    return { key: k, value };
  });
  if (tags.length > 50) invalid(`${r.at(key)} may hold at most 50 tags.`);
  return tags;
}

function readMaxResults(r: In, fallback: number): number {
  const n = r.int('maxResults') ?? fallback;
  if (n < 1 || n > 100) invalid('maxResults must be between 1 and 100.');
  return n;
}

function readInclude<T extends string>(r: In, allowed: readonly T[]): Set<T> {
  const include = r.strings('include') ?? [];
  for (const v of include)
    if (!(allowed as readonly string[]).includes(v))
      invalid(`include '${v}' is invalid: use one of ${allowed.join(', ')}.`);
  return new Set(include as T[]);
}

function readLaunchType(r: In): void {
  const launchType = r.oneOf('launchType', ['EC2', 'FARGATE', 'EXTERNAL', 'MANAGED_INSTANCES'] as const);
  if (launchType !== undefined && launchType !== 'EC2') {
    invalid(
      `launchType '${launchType}' is not supported by berth: tasks run on berth's own machine, as the EC2 launch type does; use EC2 or leave launchType out.`,
    );
  }
}

const why = {
  capacityProviderStrategy: 'there are no capacity providers; tasks run on this machine',
  networkConfiguration:
    'awsvpc networking (an elastic network interface per task) does not exist here; use bridge or host networkMode in the task definition',
  placementConstraints: 'there is one machine, so nothing to place',
  placementStrategy: 'there is one machine, so nothing to place',
  platformVersion: 'platform versions are a Fargate feature',
  enableECSManagedTags: 'ECS managed tags are not implemented',
  enableExecuteCommand: 'ECS Exec (through AWS Systems Manager) is not available',
  volumeConfigurations: 'Amazon EBS volumes are not available',
  referenceId: 'it only tracks EBS volume configurations, which are not available',
  loadBalancers: 'there is no Elastic Load Balancing; publish ports with portMappings instead',
  serviceRegistries: 'AWS Cloud Map service discovery is not available',
  serviceConnectConfiguration: 'Service Connect is not available',
  vpcLatticeConfigurations: 'VPC Lattice is not available',
  role: 'it is the IAM role for load balancers, which are not available',
} as const;

function readZoneRebalancing(r: In): void {
  if (r.oneOf('availabilityZoneRebalancing', ['ENABLED', 'DISABLED'] as const) === 'ENABLED')
    invalid(
      "availabilityZoneRebalancing 'ENABLED' is not supported by berth: there is one machine in one place.",
    );
}

function refuse(r: In, ...keys: (keyof typeof why)[]): void {
  for (const k of keys) r.unsupported(k, why[k]);
}

function readOverrides(r: In): TaskOverride | undefined {
  const o = r.child('overrides');
  if (!o) return undefined;
  const out: TaskOverride = {};
  const containerOverrides = o.children('containerOverrides').map((c): ContainerOverride => {
    const name = c.str('name');
    if (name === undefined) invalid(`${c.at('name')} is required.`);
    const co: ContainerOverride = { name };
    const command = c.strings('command');
    if (command !== undefined) co.command = command;
    const env = c.children('environment').map((e) => {
      const n = e.str('name');
      if (n === undefined || n === '') invalid(`${e.at('name')} is required.`);
      return { name: n, value: e.str('value') ?? '' };
    });
    if (env.length > 0) co.environment = env;
    for (const key of ['cpu', 'memory', 'memoryReservation'] as const) {
      const v = c.int(key);
      if (v === undefined) continue;
      if (v < 0) invalid(`${c.at(key)} must not be negative.`);
      co[key] = v;
    }
    c.unsupported('environmentFiles', 'environment files are read from Amazon S3');
    c.unsupported('resourceRequirements', 'GPUs and inference accelerators are not available');
    return co;
  });
  if (containerOverrides.length > 0) out.containerOverrides = containerOverrides;
  const cpu = o.str('cpu');
  if (cpu !== undefined) out.cpu = cpu;
  const memory = o.str('memory');
  if (memory !== undefined) out.memory = memory;
  const taskRoleArn = o.str('taskRoleArn');
  if (taskRoleArn !== undefined) out.taskRoleArn = taskRoleArn;
  o.unsupported(
    'executionRoleArn',
    'overriding the execution role is not implemented; set executionRoleArn in the task definition',
  );
  o.unsupported('inferenceAcceleratorOverrides', 'inference accelerators are not available');
  o.unsupported('ephemeralStorage', 'ephemeral storage sizes are a Fargate feature');
  return out;
}

function readDeploymentConfiguration(r: In): Partial<DeploymentConfiguration> | undefined {
  const d = r.child('deploymentConfiguration');
  if (!d) return undefined;
  const out: Partial<DeploymentConfiguration> = {};
  const max = d.int('maximumPercent');
  const min = d.int('minimumHealthyPercent');
  if (min !== undefined) {
    if (min < 0 || min > 100)
      invalid('deploymentConfiguration.minimumHealthyPercent must be between 0 and 100.');
    out.minimumHealthyPercent = min;
  }
  if (max !== undefined) {
    if (max < 100) invalid('deploymentConfiguration.maximumPercent must be at least 100.');
    out.maximumPercent = max;
  }
  const cb = d.child('deploymentCircuitBreaker');
  if (cb) {
    const enable = cb.bool('enable');
    const rollback = cb.bool('rollback');
    if (enable === undefined || rollback === undefined)
      invalid('deploymentConfiguration.deploymentCircuitBreaker needs both enable and rollback.');
    out.deploymentCircuitBreaker = { enable, rollback };
  }
  const alarms = d.child('alarms');
  if (alarms && (alarms.bool('enable') || (alarms.strings('alarmNames') ?? []).length > 0)) {
    invalid(
      'deploymentConfiguration.alarms is not supported by berth: there are no CloudWatch alarms; use deploymentCircuitBreaker',
    );
  }
  const strategy = d.oneOf('strategy', ['ROLLING', 'BLUE_GREEN', 'LINEAR', 'CANARY'] as const);
  if (strategy !== undefined && strategy !== 'ROLLING') {
    invalid(
      `deploymentConfiguration.strategy '${strategy}' is not supported by berth: deployments are rolling.`,
    );
  }
  d.unsupported('bakeTimeInMinutes', 'it belongs to blue/green deployments');
  d.unsupported('lifecycleHooks', 'deployment lifecycle hooks call AWS Lambda');
  d.unsupported('linearConfiguration', 'deployments are rolling');
  d.unsupported('canaryConfiguration', 'deployments are rolling');
  return out;
}

// --- pagination -------------------------------------------------------------------------------------

type SortKey = (string | number)[];

function compareKeys(a: SortKey, b: SortKey): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    if (x === y) continue;
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    return x < y ? -1 : 1;
  }
  return 0;
}

/**
 * One page of `items` (already in order). The token holds the key of the last item returned, so a
 * page stays right when items come or go between calls.
 */
function paginate<T>(
  items: readonly T[],
  keyOf: (item: T) => SortKey,
  maxResults: number,
  nextToken: string | undefined,
  descending = false,
): { page: T[]; nextToken?: string } {
  let start = 0;
  if (nextToken !== undefined) {
    let after: SortKey;
    try {
      const parsed = JSON.parse(Buffer.from(nextToken, 'base64url').toString('utf8')) as { after?: unknown };
      if (!Array.isArray(parsed.after)) throw new Error('no key');
      after = parsed.after as SortKey;
    } catch {
      invalid('The nextToken is invalid: pass the nextToken of the previous answer as it was.');
    }
    const sign = descending ? -1 : 1;
    start = items.findIndex((it) => sign * compareKeys(keyOf(it), after) > 0);
    if (start < 0) start = items.length;
  }
  const page = items.slice(start, start + maxResults);
  if (start + maxResults >= items.length || page.length === 0) return { page };
  const last = page[page.length - 1]!;
  return { page, nextToken: Buffer.from(JSON.stringify({ after: keyOf(last) })).toString('base64url') };
}

// --- the API -------------------------------------------------------------------------------------

const CLIENT_TOKEN_TTL_MS = 24 * 3600 * 1000;

export function createEcsApi(opts: EcsApiOptions): EcsApi {
  const { catalog, tasks, services, region, accountId } = opts;
  const now = opts.now ?? Date.now;
  const arnPrefix = `arn:aws:ecs:${region}:${accountId}:`;
  const clusterArn = (name: string) => `${arnPrefix}cluster/${name}`;
  const serviceArn = (cluster: string, name: string) => `${arnPrefix}service/${cluster}/${name}`;
  const taskArn = (cluster: string, id: string) => `${arnPrefix}task/${cluster}/${id}`;
  const taskDefinitionArn = (family: string, revision?: number) =>
    `${arnPrefix}task-definition/${family}${revision === undefined ? '' : `:${revision}`}`;
  /** CreateService's clientToken -> the service it created, for retries within 24 h (memory only). */
  const serviceTokens = new Map<string, { serviceArn: string; expires: number }>();

  const authorize = (caller: EcsCaller, action: EcsAction, resource: string, arn: string) =>
    requireAllowed(caller, action, resource, arn);

  /**
   * Starting tasks hands them a role's rights and an image's bytes, so, as on AWS, the caller must
   * be allowed iam:PassRole on the task and execution roles, and the images must be pullable by
   * the execution role (or, without one, the caller): see launch-rights.ts. Answers whose pull
   * right pinned the images, for the deployment to record.
   */
  const mayLaunch = (caller: EcsCaller, launch: Launch) =>
    authorizeLaunch(caller, launch, { decideAs: opts.decideAs, ownHosts: opts.ownHosts });

  /**
   * Describe* over a list of references: every one that parses is authorized first (a denied
   * caller learns nothing about what exists), then the lookup is prepared once and each reference
   * answered, or listed in failures as MISSING under its ARN (or as given, when it does not parse).
   */
  async function describeEach<K, T>(
    refs: readonly string[],
    parse: (ref: string) => K | undefined,
    allow: (key: K) => Promise<void>,
    arnOf: (key: K) => string,
    lookup: () => Promise<(key: K) => T | undefined>,
  ): Promise<{ found: T[]; failures: { arn: string; reason: 'MISSING' }[] }> {
    const named = refs.map((ref) => ({ ref, key: parse(ref) }));
    for (const n of named) if (n.key !== undefined) await allow(n.key);
    const find = await lookup();
    const found: T[] = [];
    const failures: { arn: string; reason: 'MISSING' }[] = [];
    for (const n of named) {
      const hit = n.key !== undefined ? find(n.key) : undefined;
      if (hit !== undefined) found.push(hit);
      else failures.push({ arn: n.key !== undefined ? arnOf(n.key) : n.ref, reason: 'MISSING' });
    }
    return { found, failures };
  }

  /** The cluster name a `cluster` member names (default 'default'), read without looking it up. */
  function clusterNameOf(r: In): string {
    const given = r.str('cluster');
    if (given === undefined || given === '') return DEFAULT_CLUSTER;
    const arn = /^arn:[^:]+:ecs:[^:]*:[^:]*:cluster\/(.*)$/.exec(given);
    const name = arn ? arn[1]! : given;
    // No cluster can have another name, and a policy resource must not carry one.
    if (!CLUSTER_NAME.test(name)) throw new EcsError('ClusterNotFoundException', ecsMessages.clusterNotFound);
    return name;
  }

  async function cluster(r: In): Promise<ClusterRecord> {
    const given = r.str('cluster');
    const found = await catalog.getCluster(given === undefined || given === '' ? DEFAULT_CLUSTER : given);
    if (!found) throw new EcsError('ClusterNotFoundException', ecsMessages.clusterNotFound);
    return found;
  }

  /** An ARN or id of a task to its ARN in `clusterName`; undefined when it names another cluster. */
  function taskRef(ref: string, clusterName: string): { id: string; arn: string } | undefined {
    const arn = /^arn:[^:]+:ecs:[^:]*:[^:]*:task\/([^/]+)\/([^/]+)$/.exec(ref);
    if (arn) {
      if (arn[1] !== clusterName || !TASK_ID.test(arn[2]!)) return undefined;
      return { id: arn[2]!, arn: taskArn(clusterName, arn[2]!) };
    }
    return TASK_ID.test(ref) ? { id: ref, arn: taskArn(clusterName, ref) } : undefined;
  }

  function serviceNameOf(ref: string, clusterName: string): string | undefined {
    const arn = /^arn:[^:]+:ecs:[^:]*:[^:]*:service\/(?:([^/]+)\/)?([^/]+)$/.exec(ref);
    if (arn) return arn[1] === undefined || arn[1] === clusterName ? arn[2] : undefined;
    return NAME.test(ref) ? ref : undefined;
  }

  /** A task definition to run: ACTIVE, as ECS requires for new tasks and deployments. */
  async function runnableTaskDefinition(ref: string): Promise<{ td: TaskDefinition; tags: Tag[] }> {
    const found = await catalog.describeTaskDefinition(ref);
    if (!found) throw new EcsError('ClientException', 'TaskDefinition not found.');
    if (found.taskDefinition.status !== 'ACTIVE')
      throw new EcsError(
        'ClientException',
        `TaskDefinition is inactive: ${found.taskDefinition.taskDefinitionArn}`,
      );
    return { td: found.taskDefinition, tags: found.tags };
  }

  function familyOf(ref: string): { family: string; revision?: number } {
    const parsed = parseTaskDefinitionRef(ref);
    if (!parsed) throw new EcsError('ClientException', 'TaskDefinition not found.');
    return parsed;
  }

  // --- shaping answers ---

  function clusterOut(rec: ClusterRecord, include: Set<string>): EcsOutput {
    const clusterTasks = tasks.list({ clusterArn: rec.clusterArn, desiredStatus: 'RUNNING' });
    const running = clusterTasks.filter((t) => t.lastStatus === 'RUNNING').length;
    const pending = clusterTasks.filter((t) =>
      ['PROVISIONING', 'PENDING', 'ACTIVATING'].includes(t.lastStatus),
    ).length;
    const clusterServices = services.list(rec.clusterArn);
    const active = clusterServices.filter((s) => s.status === 'ACTIVE').length;
    const draining = clusterServices.filter((s) => s.status === 'DRAINING').length;
    const out: EcsOutput = {
      clusterArn: rec.clusterArn,
      clusterName: rec.clusterName,
      status: rec.status,
      registeredContainerInstancesCount: 1,
      runningTasksCount: running,
      pendingTasksCount: pending,
      activeServicesCount: active,
      statistics: include.has('STATISTICS')
        ? [
            { name: 'runningEC2TasksCount', value: String(running) },
            { name: 'pendingEC2TasksCount', value: String(pending) },
            { name: 'activeEC2ServiceCount', value: String(active) },
            { name: 'drainingEC2ServiceCount', value: String(draining) },
          ]
        : [],
      capacityProviders: [],
      defaultCapacityProviderStrategy: [],
    };
    if (include.has('TAGS')) out['tags'] = rec.tags;
    if (include.has('SETTINGS')) out['settings'] = [{ name: 'containerInsights', value: 'disabled' }];
    return out;
  }

  function taskOut(t: Task, withTags: boolean): EcsOutput {
    const clusterName = t.clusterArn.slice(t.clusterArn.lastIndexOf('/') + 1);
    const out: EcsOutput = {
      taskArn: t.taskArn,
      clusterArn: t.clusterArn,
      taskDefinitionArn: t.taskDefinitionArn,
      containerInstanceArn: containerInstanceArn(region, accountId, clusterName),
      overrides: { containerOverrides: [], inferenceAcceleratorOverrides: [], ...t.overrides },
      lastStatus: t.lastStatus,
      desiredStatus: t.desiredStatus,
      healthStatus: t.healthStatus,
      containers: t.containers.map((c) => {
        const { essential: _, ...container } = c;
        return container;
      }),
      group: t.group,
      launchType: t.launchType,
      version: t.version,
      createdAt: t.createdAt,
      attachments: [],
      enableExecuteCommand: false,
    };
    for (const key of [
      'startedBy',
      'stopCode',
      'stoppedReason',
      'cpu',
      'memory',
      'pullStartedAt',
      'pullStoppedAt',
      'startedAt',
      'stoppingAt',
      'stoppedAt',
    ] as const) {
      if (t[key] !== undefined) out[key] = t[key];
    }
    if (withTags) out['tags'] = t.tags ?? [];
    return out;
  }

  function serviceOut(s: Service, withTags: boolean): EcsOutput {
    const out: EcsOutput = {
      serviceArn: s.serviceArn,
      serviceName: s.serviceName,
      clusterArn: s.clusterArn,
      loadBalancers: [],
      serviceRegistries: [],
      status: s.status,
      desiredCount: s.desiredCount,
      runningCount: s.runningCount,
      pendingCount: s.pendingCount,
      launchType: s.launchType,
      taskDefinition: s.taskDefinition,
      deploymentConfiguration: s.deploymentConfiguration,
      deployments: s.deployments.map((d) => ({
        id: d.id,
        status: d.status,
        taskDefinition: d.taskDefinition,
        desiredCount: d.desiredCount,
        pendingCount: d.pendingCount,
        runningCount: d.runningCount,
        failedTasks: d.failedTasks,
        createdAt: d.createdAt,
        updatedAt: d.updatedAt,
        launchType: 'EC2',
        rolloutState: d.rolloutState,
        rolloutStateReason: d.rolloutStateReason,
      })),
      events: s.events,
      createdAt: s.createdAt,
      placementConstraints: [],
      placementStrategy: [],
      schedulingStrategy: s.schedulingStrategy,
      deploymentController: { type: 'ECS' },
      enableECSManagedTags: false,
      propagateTags: 'NONE',
      enableExecuteCommand: false,
    };
    if (s.healthCheckGracePeriodSeconds !== undefined)
      out['healthCheckGracePeriodSeconds'] = s.healthCheckGracePeriodSeconds;
    if (s.createdBy !== undefined) out['createdBy'] = s.createdBy;
    if (withTags) out['tags'] = s.tags ?? [];
    return out;
  }

  // --- tasks, shared by RunTask and StartTask ---

  async function startTasks(r: In, caller: EcsCaller, action: EcsAction, count: number): Promise<EcsOutput> {
    const ref = r.required('taskDefinition');
    const startedBy = r.str('startedBy');
    if (startedBy !== undefined && !/^[a-zA-Z0-9_/-]{1,128}$/.test(startedBy)) {
      invalid('startedBy must be up to 128 letters, numbers, hyphens, forward slashes and underscores.');
    }
    const group = r.str('group');
    if (group !== undefined && (group.length < 1 || group.length > 255))
      invalid('group must be 1 to 255 characters.');
    const overrides = readOverrides(r);
    const tags = readTags(r);
    const propagate = r.oneOf('propagateTags', ['TASK_DEFINITION', 'SERVICE', 'NONE'] as const);
    if (propagate === 'SERVICE')
      invalid("propagateTags 'SERVICE' is only valid for a service's tasks; use TASK_DEFINITION or NONE.");
    const clientToken = r.str('clientToken');
    if (clientToken !== undefined && (clientToken.length < 1 || clientToken.length > 64))
      invalid('clientToken must be 1 to 64 characters.');
    refuse(
      r,
      'networkConfiguration',
      'enableECSManagedTags',
      'enableExecuteCommand',
      'volumeConfigurations',
      'referenceId',
    );

    const { family, revision } = familyOf(ref);
    await authorize(caller, action, `taskdefinition/${family}`, taskDefinitionArn(family, revision));
    const c = await cluster(r);
    const { td, tags: tdTags } = await runnableTaskDefinition(ref);
    for (const o of overrides?.containerOverrides ?? []) {
      if (!td.containerDefinitions.some((d) => d.name === o.name))
        invalid(`Override for container named ${o.name} is not a container in the TaskDefinition.`);
    }
    await mayLaunch(caller, { taskDefinition: td, overrides });
    let taskTags = tags;
    if (propagate === 'TASK_DEFINITION') {
      const own = new Set(tags.map((t) => t.key));
      taskTags = [...tdTags.filter((t) => !own.has(t.key)), ...tags];
    }
    const result = await tasks.run({
      clusterArn: c.clusterArn,
      taskDefinition: td,
      count,
      ...(startedBy !== undefined ? { startedBy } : {}),
      ...(group !== undefined ? { group } : {}),
      ...(overrides !== undefined ? { overrides } : {}),
      ...(taskTags.length > 0 ? { tags: taskTags } : {}),
      ...(clientToken !== undefined ? { clientToken } : {}),
    });
    return {
      tasks: result.tasks.map((t) => taskOut(t, true)),
      failures: result.failures,
    };
  }

  /** Whether a container instance reference names this machine's instance in `clusterName`. */
  function isLocalInstance(ref: string, clusterName: string): boolean {
    return (
      ref === LOCAL_CONTAINER_INSTANCE_ID || ref === containerInstanceArn(region, accountId, clusterName)
    );
  }

  function notLocalInstance(ref: string, clusterName: string): never {
    invalid(
      `Container instance '${ref}' does not exist: berth runs every task on its own machine, which is ` +
        `the one container instance of each cluster, ${containerInstanceArn(region, accountId, clusterName)} ` +
        `(or '${LOCAL_CONTAINER_INSTANCE_ID}' for short).`,
    );
  }

  /** The task definition a service's PRIMARY deployment runs (what forceNewDeployment deploys again). */
  async function primaryTaskDefinition(service: Service): Promise<TaskDefinition | undefined> {
    const arn =
      service.deployments.find((d) => d.status === 'PRIMARY')?.taskDefinition ?? service.taskDefinition;
    return (await catalog.describeTaskDefinition(arn))?.taskDefinition;
  }

  function existingService(clusterRec: ClusterRecord, name: string): Service {
    const s = services.get(clusterRec.clusterArn, name);
    if (!s) throw new EcsError('ServiceNotFoundException', ecsMessages.serviceNotFound);
    return s;
  }

  // --- the operations ---

  const operations: Record<EcsOperation, (r: In, caller: EcsCaller) => Promise<EcsOutput>> = {
    async CreateCluster(r, caller) {
      const name = r.str('clusterName') || DEFAULT_CLUSTER;
      if (!CLUSTER_NAME.test(name)) {
        invalid(
          'Cluster name must be 1 to 255 letters (uppercase and lowercase), numbers, underscores and hyphens.',
        );
      }
      const tags = readTags(r);
      for (const s of r.children('settings')) {
        const settingName = s.str('name');
        const value = s.str('value');
        if (settingName !== 'containerInsights')
          invalid(
            `${s.at('name')} '${settingName}' is invalid: the only cluster setting is containerInsights.`,
          );
        if (value !== undefined && value !== 'disabled') {
          invalid(
            `${s.at('value')} '${value}' is not supported by berth: Container Insights sends metrics to CloudWatch; use disabled.`,
          );
        }
      }
      r.unsupported('configuration', 'ECS Exec and managed storage settings are not available');
      r.unsupported('capacityProviders', 'there are no capacity providers; tasks run on this machine');
      r.unsupported(
        'defaultCapacityProviderStrategy',
        'there are no capacity providers; tasks run on this machine',
      );
      r.unsupported('serviceConnectDefaults', 'Service Connect is not available');
      await authorize(caller, 'ecs:CreateCluster', `cluster/${name}`, clusterArn(name));
      const rec = await catalog.createCluster(name, tags);
      return { cluster: clusterOut(rec, new Set(['TAGS', 'SETTINGS'])) };
    },

    async DescribeClusters(r, caller) {
      const refs = r.strings('clusters') ?? [DEFAULT_CLUSTER];
      if (refs.length > 100) invalid('clusters may name at most 100 clusters.');
      const include = readInclude(r, [
        'ATTACHMENTS',
        'CONFIGURATIONS',
        'SETTINGS',
        'STATISTICS',
        'TAGS',
      ] as const);
      const named = refs.map((ref) => {
        const m = /^arn:[^:]+:ecs:[^:]*:[^:]*:cluster\/(.*)$/.exec(ref);
        const name = m ? m[1]! : ref;
        return { ref, name, valid: CLUSTER_NAME.test(name) };
      });
      for (const n of named)
        if (n.valid) await authorize(caller, 'ecs:DescribeClusters', `cluster/${n.name}`, clusterArn(n.name));
      const clusters: EcsOutput[] = [];
      const failures: { arn: string; reason: string }[] = [];
      for (const n of named) {
        const rec = n.valid ? await catalog.getCluster(n.ref) : undefined;
        if (rec) clusters.push(clusterOut(rec, include));
        else failures.push({ arn: n.ref.startsWith('arn:') ? n.ref : clusterArn(n.name), reason: 'MISSING' });
      }
      return { clusters, failures };
    },

    async ListClusters(r, caller) {
      const max = readMaxResults(r, 100);
      const token = r.str('nextToken');
      await authorize(caller, 'ecs:ListClusters', '*', '*');
      const all = await catalog.listClusters();
      const { page, nextToken } = paginate(all, (c) => [c.clusterName], max, token);
      return { clusterArns: page.map((c) => c.clusterArn), ...(nextToken ? { nextToken } : {}) };
    },

    async RegisterTaskDefinition(r, caller) {
      const family = r.raw('family');
      // An invalid family is refused by the catalog's validation, before any state is read.
      if (typeof family === 'string' && NAME.test(family))
        await authorize(
          caller,
          'ecs:RegisterTaskDefinition',
          `taskdefinition/${family}`,
          taskDefinitionArn(family),
        );
      const stored = await catalog.registerTaskDefinition(r.obj, caller.principalArn);
      if (stored.ignoredMembers.length > 0)
        opts.log?.warn(
          { family: stored.taskDefinition.family, ignored: stored.ignoredMembers },
          'RegisterTaskDefinition: ignored members ECS does not have',
        );
      return { taskDefinition: stored.taskDefinition, tags: stored.tags };
    },

    async DescribeTaskDefinition(r, caller) {
      const ref = r.required('taskDefinition');
      const include = readInclude(r, ['TAGS'] as const);
      const parsed = parseTaskDefinitionRef(ref);
      if (!parsed) throw new EcsError('ClientException', ecsMessages.taskDefinitionNotFound);
      await authorize(
        caller,
        'ecs:DescribeTaskDefinition',
        `taskdefinition/${parsed.family}`,
        taskDefinitionArn(parsed.family, parsed.revision),
      );
      const found = await catalog.describeTaskDefinition(ref);
      if (!found) throw new EcsError('ClientException', ecsMessages.taskDefinitionNotFound);
      return { taskDefinition: found.taskDefinition, ...(include.has('TAGS') ? { tags: found.tags } : {}) };
    },

    async ListTaskDefinitions(r, caller) {
      const family = r.str('familyPrefix');
      const status = r.oneOf('status', ['ACTIVE', 'INACTIVE', 'DELETE_IN_PROGRESS'] as const) ?? 'ACTIVE';
      const sort = r.oneOf('sort', ['ASC', 'DESC'] as const) ?? 'ASC';
      const max = readMaxResults(r, 100);
      const token = r.str('nextToken');
      await authorize(caller, 'ecs:ListTaskDefinitions', '*', '*');
      // berth never deletes a revision, so none is ever being deleted.
      const all =
        status === 'DELETE_IN_PROGRESS'
          ? []
          : await catalog.listTaskDefinitions({ ...(family !== undefined ? { family } : {}), status, sort });
      const { page, nextToken } = paginate(all, (t) => [t.family, t.revision], max, token, sort === 'DESC');
      return {
        taskDefinitionArns: page.map((t) => t.taskDefinitionArn),
        ...(nextToken ? { nextToken } : {}),
      };
    },

    async ListTaskDefinitionFamilies(r, caller) {
      const familyPrefix = r.str('familyPrefix');
      const status = r.oneOf('status', ['ACTIVE', 'INACTIVE', 'ALL'] as const) ?? 'ALL';
      const max = readMaxResults(r, 100);
      const token = r.str('nextToken');
      await authorize(caller, 'ecs:ListTaskDefinitionFamilies', '*', '*');
      const all = await catalog.listTaskDefinitionFamilies({
        ...(familyPrefix !== undefined ? { familyPrefix } : {}),
        status,
      });
      const { page, nextToken } = paginate(all, (f) => [f], max, token);
      return { families: page, ...(nextToken ? { nextToken } : {}) };
    },

    async DeregisterTaskDefinition(r, caller) {
      const ref = r.required('taskDefinition');
      const parsed = parseTaskDefinitionRef(ref);
      if (!parsed) throw new EcsError('ClientException', `Invalid revision number. Task definition: ${ref}`);
      await authorize(
        caller,
        'ecs:DeregisterTaskDefinition',
        `taskdefinition/${parsed.family}`,
        taskDefinitionArn(parsed.family, parsed.revision),
      );
      return { taskDefinition: await catalog.deregisterTaskDefinition(ref) };
    },

    async RunTask(r, caller) {
      const count = r.int('count') ?? 1;
      if (count < 1 || count > 10) invalid('count must be between 1 and 10.');
      readLaunchType(r);
      refuse(r, 'capacityProviderStrategy', 'placementConstraints', 'placementStrategy', 'platformVersion');
      return startTasks(r, caller, 'ecs:RunTask', count);
    },

    async StartTask(r, caller) {
      const clusterName = clusterNameOf(r);
      const instances = r.strings('containerInstances');
      if (instances === undefined || instances.length === 0) invalid('containerInstances is required.');
      if (instances.length > 10) invalid('containerInstances may name at most 10 container instances.');
      for (const ref of instances) if (!isLocalInstance(ref, clusterName)) notLocalInstance(ref, clusterName);
      return startTasks(r, caller, 'ecs:StartTask', instances.length);
    },

    async StopTask(r, caller) {
      const clusterName = clusterNameOf(r);
      const ref = r.required('task');
      const reason = r.str('reason');
      if (reason !== undefined && reason.length > 255) invalid('reason must be at most 255 characters.');
      const task = taskRef(ref, clusterName);
      if (!task) invalid('The referenced task was not found.');
      await authorize(caller, 'ecs:StopTask', `task/${clusterName}/${task.id}`, task.arn);
      const c = await cluster(r);
      const found = tasks.get(task.arn);
      if (!found || found.clusterArn !== c.clusterArn) invalid('The referenced task was not found.');
      const stopped = await tasks.stop(task.arn, 'UserInitiated', reason || 'Task stopped by user');
      return { task: taskOut(stopped, false) };
    },

    async DescribeTasks(r, caller) {
      const clusterName = clusterNameOf(r);
      const refs = r.strings('tasks');
      if (refs === undefined || refs.length === 0) invalid('tasks is required.');
      if (refs.length > 100) invalid('tasks may name at most 100 tasks.');
      const include = readInclude(r, ['TAGS'] as const);
      const { found, failures } = await describeEach(
        refs,
        (ref) => taskRef(ref, clusterName),
        (t) => authorize(caller, 'ecs:DescribeTasks', `task/${clusterName}/${t.id}`, t.arn),
        (t) => t.arn,
        async () => {
          const c = await cluster(r);
          return (t) => {
            const task = tasks.get(t.arn);
            return task && task.clusterArn === c.clusterArn ? task : undefined;
          };
        },
      );
      return { tasks: found.map((t) => taskOut(t, include.has('TAGS'))), failures };
    },

    async ListTasks(r, caller) {
      const clusterName = clusterNameOf(r);
      const instance = r.str('containerInstance');
      const family = r.str('family');
      const startedBy = r.str('startedBy');
      const serviceName = r.str('serviceName');
      const desired = r.oneOf('desiredStatus', ['RUNNING', 'PENDING', 'STOPPED'] as const) ?? 'RUNNING';
      const launchType = r.oneOf('launchType', ['EC2', 'FARGATE', 'EXTERNAL', 'MANAGED_INSTANCES'] as const);
      const max = readMaxResults(r, 100);
      const token = r.str('nextToken');
      if (
        startedBy !== undefined &&
        (family !== undefined || serviceName !== undefined || instance !== undefined)
      )
        invalid('startedBy must be the only filter of ListTasks (with cluster and desiredStatus).');
      if (instance !== undefined && !isLocalInstance(instance, clusterName))
        notLocalInstance(instance, clusterName);
      await authorize(caller, 'ecs:ListTasks', `cluster/${clusterName}`, clusterArn(clusterName));
      const c = await cluster(r);
      // ECS never sets a desired status of PENDING, and berth launches every task as EC2.
      const all =
        desired === 'PENDING' || (launchType !== undefined && launchType !== 'EC2')
          ? []
          : tasks
              .list({
                clusterArn: c.clusterArn,
                desiredStatus: desired,
                ...(family !== undefined ? { family } : {}),
                ...(startedBy !== undefined ? { startedBy } : {}),
                ...(serviceName !== undefined ? { serviceName } : {}),
              })
              .sort((a, b) => (a.taskArn < b.taskArn ? -1 : a.taskArn > b.taskArn ? 1 : 0));
      const { page, nextToken } = paginate(all, (t) => [t.taskArn], max, token);
      return { taskArns: page.map((t) => t.taskArn), ...(nextToken ? { nextToken } : {}) };
    },

    async CreateService(r, caller) {
      const clusterName = clusterNameOf(r);
      const name = r.required('serviceName');
      if (!NAME.test(name))
        invalid(
          'serviceName must be 1 to 255 letters (uppercase and lowercase), numbers, underscores and hyphens.',
        );
      const ref = r.required('taskDefinition');
      const desiredCount = r.int('desiredCount');
      if (desiredCount === undefined)
        invalid('desiredCount is required for the REPLICA scheduling strategy.');
      if (desiredCount < 0) invalid('desiredCount must not be negative.');
      readLaunchType(r);
      const scheduling = r.oneOf('schedulingStrategy', ['REPLICA', 'DAEMON'] as const);
      if (scheduling === 'DAEMON') {
        invalid(
          "schedulingStrategy 'DAEMON' is not supported by berth: there is one container instance; use REPLICA with desiredCount 1.",
        );
      }
      const controller = r
        .child('deploymentController')
        ?.oneOf('type', ['ECS', 'CODE_DEPLOY', 'EXTERNAL'] as const);
      if (controller !== undefined && controller !== 'ECS') {
        invalid(
          `deploymentController.type '${controller}' is not supported by berth: berth deploys services itself (ECS).`,
        );
      }
      const deploymentConfiguration = readDeploymentConfiguration(r);
      const grace = r.int('healthCheckGracePeriodSeconds');
      if (grace !== undefined && grace < 0) invalid('healthCheckGracePeriodSeconds must not be negative.');
      const tags = readTags(r);
      const propagate = r.oneOf('propagateTags', ['TASK_DEFINITION', 'SERVICE', 'NONE'] as const);
      if (propagate !== undefined && propagate !== 'NONE')
        invalid(
          `propagateTags '${propagate}' is not supported by berth for services: tags stay on the service.`,
        );
      const clientToken = r.str('clientToken');
      if (clientToken !== undefined && (clientToken.length < 1 || clientToken.length > 36))
        invalid('clientToken must be 1 to 36 characters.');
      readZoneRebalancing(r);
      refuse(
        r,
        'capacityProviderStrategy',
        'platformVersion',
        'role',
        'placementConstraints',
        'placementStrategy',
        'networkConfiguration',
        'loadBalancers',
        'serviceRegistries',
        'enableECSManagedTags',
        'enableExecuteCommand',
        'serviceConnectConfiguration',
        'volumeConfigurations',
        'vpcLatticeConfigurations',
      );

      const arn = serviceArn(clusterName, name);
      await authorize(caller, 'ecs:CreateService', `service/${clusterName}/${name}`, arn);
      const c = await cluster(r);
      const existing = services.get(c.clusterArn, name);
      if (clientToken !== undefined) {
        const seen = serviceTokens.get(clientToken);
        if (seen && seen.expires > now() && seen.serviceArn === existing?.serviceArn)
          return { service: serviceOut(existing, true) };
      }
      if (existing && existing.status !== 'INACTIVE') invalid('Creation of service was not idempotent.');
      const { td } = await runnableTaskDefinition(ref);
      const { puller } = await mayLaunch(caller, { taskDefinition: td });
      const service = await services.create({
        clusterArn: c.clusterArn,
        serviceName: name,
        taskDefinition: td,
        desiredCount,
        ...(deploymentConfiguration !== undefined ? { deploymentConfiguration } : {}),
        ...(grace !== undefined ? { healthCheckGracePeriodSeconds: grace } : {}),
        createdBy: caller.principalArn,
        pullPrincipal: puller,
        ...(tags.length > 0 ? { tags } : {}),
      });
      if (clientToken !== undefined) {
        for (const [k, v] of serviceTokens) if (v.expires <= now()) serviceTokens.delete(k);
        serviceTokens.set(clientToken, {
          serviceArn: service.serviceArn,
          expires: now() + CLIENT_TOKEN_TTL_MS,
        });
      }
      return { service: serviceOut(service, true) };
    },

    async UpdateService(r, caller) {
      const clusterName = clusterNameOf(r);
      const ref = r.required('service');
      const desiredCount = r.int('desiredCount');
      if (desiredCount !== undefined && desiredCount < 0) invalid('desiredCount must not be negative.');
      const tdRef = r.str('taskDefinition');
      const deploymentConfiguration = readDeploymentConfiguration(r);
      const force = r.bool('forceNewDeployment');
      const grace = r.int('healthCheckGracePeriodSeconds');
      if (grace !== undefined && grace < 0) invalid('healthCheckGracePeriodSeconds must not be negative.');
      const propagate = r.oneOf('propagateTags', ['TASK_DEFINITION', 'SERVICE', 'NONE'] as const);
      if (propagate !== undefined && propagate !== 'NONE')
        invalid(
          `propagateTags '${propagate}' is not supported by berth for services: tags stay on the service.`,
        );
      readZoneRebalancing(r);
      r.unsupported('deploymentController', 'a service keeps the ECS deployment controller');
      refuse(
        r,
        'capacityProviderStrategy',
        'platformVersion',
        'placementConstraints',
        'placementStrategy',
        'networkConfiguration',
        'loadBalancers',
        'serviceRegistries',
        'enableECSManagedTags',
        'enableExecuteCommand',
        'serviceConnectConfiguration',
        'volumeConfigurations',
        'vpcLatticeConfigurations',
      );
      const name = serviceNameOf(ref, clusterName);
      if (!name) throw new EcsError('ServiceNotFoundException', ecsMessages.serviceNotFound);
      await authorize(
        caller,
        'ecs:UpdateService',
        `service/${clusterName}/${name}`,
        serviceArn(clusterName, name),
      );
      const c = await cluster(r);
      const current = existingService(c, name);
      if (current.status !== 'ACTIVE')
        throw new EcsError('ServiceNotActiveException', ecsMessages.serviceNotActive);
      const td = tdRef !== undefined && tdRef !== '' ? (await runnableTaskDefinition(tdRef)).td : undefined;
      // A new deployment (another task definition, or forceNewDeployment re-resolving the tags)
      // is checked as CreateService is; a change of desiredCount alone starts more tasks of the
      // current deployment, on the digests and the pull right it recorded.
      const deploys = td ?? (force ? await primaryTaskDefinition(current) : undefined);
      const launch = deploys ? await mayLaunch(caller, { taskDefinition: deploys }) : undefined;
      const service = await services.update({
        clusterArn: c.clusterArn,
        serviceName: name,
        ...(td !== undefined ? { taskDefinition: td } : {}),
        ...(launch !== undefined ? { pullPrincipal: launch.puller } : {}),
        ...(desiredCount !== undefined ? { desiredCount } : {}),
        ...(deploymentConfiguration !== undefined ? { deploymentConfiguration } : {}),
        ...(force !== undefined ? { forceNewDeployment: force } : {}),
        ...(grace !== undefined ? { healthCheckGracePeriodSeconds: grace } : {}),
      });
      return { service: serviceOut(service, false) };
    },

    async DescribeServices(r, caller) {
      const clusterName = clusterNameOf(r);
      const refs = r.strings('services');
      if (refs === undefined || refs.length === 0) invalid('services is required.');
      if (refs.length > 10) invalid('services may name at most 10 services.');
      const include = readInclude(r, ['TAGS'] as const);
      const { found, failures } = await describeEach(
        refs,
        (ref) => serviceNameOf(ref, clusterName),
        (name) =>
          authorize(
            caller,
            'ecs:DescribeServices',
            `service/${clusterName}/${name}`,
            serviceArn(clusterName, name),
          ),
        (name) => serviceArn(clusterName, name),
        async () => {
          const c = await cluster(r);
          return (name) => services.get(c.clusterArn, name);
        },
      );
      return { services: found.map((svc) => serviceOut(svc, include.has('TAGS'))), failures };
    },

    async ListServices(r, caller) {
      const clusterName = clusterNameOf(r);
      const launchType = r.oneOf('launchType', ['EC2', 'FARGATE', 'EXTERNAL', 'MANAGED_INSTANCES'] as const);
      const scheduling = r.oneOf('schedulingStrategy', ['REPLICA', 'DAEMON'] as const);
      const management = r.oneOf('resourceManagementType', ['CUSTOMER', 'ECS'] as const);
      const max = readMaxResults(r, 10);
      const token = r.str('nextToken');
      await authorize(caller, 'ecs:ListServices', `cluster/${clusterName}`, clusterArn(clusterName));
      const c = await cluster(r);
      // Every berth service is an EC2-launched, REPLICA, customer-managed one.
      const none =
        (launchType !== undefined && launchType !== 'EC2') || scheduling === 'DAEMON' || management === 'ECS';
      const all = none
        ? []
        : services
            .list(c.clusterArn)
            .filter((s) => s.status !== 'INACTIVE')
            .sort((a, b) => (a.serviceArn < b.serviceArn ? -1 : a.serviceArn > b.serviceArn ? 1 : 0));
      const { page, nextToken } = paginate(all, (s) => [s.serviceArn], max, token);
      return { serviceArns: page.map((s) => s.serviceArn), ...(nextToken ? { nextToken } : {}) };
    },

    async DeleteService(r, caller) {
      const clusterName = clusterNameOf(r);
      const ref = r.required('service');
      const force = r.bool('force') ?? false;
      const name = serviceNameOf(ref, clusterName);
      if (!name) throw new EcsError('ServiceNotFoundException', ecsMessages.serviceNotFound);
      await authorize(
        caller,
        'ecs:DeleteService',
        `service/${clusterName}/${name}`,
        serviceArn(clusterName, name),
      );
      const c = await cluster(r);
      const current = existingService(c, name);
      if (current.status === 'INACTIVE')
        throw new EcsError('ServiceNotActiveException', ecsMessages.serviceNotActive);
      if (!force && current.desiredCount > 0) {
        invalid(
          'The service cannot be stopped while it is scaled above 0. Set desiredCount to 0 first, or delete it with force.',
        );
      }
      return { service: serviceOut(await services.delete(c.clusterArn, name, force), false) };
    },
  };

  return {
    async handle(operation, input, caller) {
      const run = operations[operation];
      if (!run) throw new EcsError('UnknownOperationException', `Operation '${operation}' is not supported.`);
      return run(new In('', input), caller);
    },
  };
}
