// The runner's shared vocabulary: clusters, tasks, services and deployments in ECS's own field
// names and states, plus the contracts its parts meet (the task manager the service scheduler and
// the ECS API drive; the service scheduler the ECS API and the hooks drive). Data and interfaces
// only; behaviour lives in tasks.ts, services.ts, hooks.ts.
//
// Timestamps are epoch seconds (numbers), AWS JSON 1.1's wire form, so a record is returned by
// Describe* as stored.
import type { TaskDefinition } from './task-definitions.ts';

// --- tasks -------------------------------------------------------------------------------------

/** ECS's task lifecycle, in order. A task only moves forward through it. */
export const taskStatuses = [
  'PROVISIONING',
  'PENDING',
  'ACTIVATING',
  'RUNNING',
  'DEACTIVATING',
  'STOPPING',
  'DEPROVISIONING',
  'STOPPED',
] as const;
export type TaskStatus = (typeof taskStatuses)[number];
export type DesiredStatus = 'RUNNING' | 'STOPPED';

export type StopCode =
  | 'TaskFailedToStart'
  | 'EssentialContainerExited'
  | 'UserInitiated'
  | 'ServiceSchedulerInitiated'
  | 'TerminationNotice';

export type HealthStatus = 'HEALTHY' | 'UNHEALTHY' | 'UNKNOWN';
export type ContainerStatus = 'PENDING' | 'RUNNING' | 'STOPPED';

export interface NetworkBinding {
  bindIP: string;
  containerPort: number;
  hostPort: number;
  protocol: 'tcp' | 'udp';
}

export interface TaskContainer {
  containerArn: string;
  taskArn: string;
  name: string;
  /** The image as the task definition (or override) names it. */
  image: string;
  /** The manifest digest actually run: what a deployment pins. */
  imageDigest?: string;
  /** The OCI runtime's id for this container. */
  runtimeId: string;
  lastStatus: ContainerStatus;
  exitCode?: number;
  /** Why it stopped or could not start, e.g. "OutOfMemoryError: Container killed due to memory usage". */
  reason?: string;
  healthStatus?: HealthStatus;
  networkBindings: NetworkBinding[];
  essential: boolean;
  cpu: string;
  memory?: string;
  memoryReservation?: string;
}

export interface ContainerOverride {
  name: string;
  command?: string[];
  environment?: { name: string; value: string }[];
  cpu?: number;
  memory?: number;
  memoryReservation?: number;
}

export interface TaskOverride {
  containerOverrides?: ContainerOverride[];
  taskRoleArn?: string;
  cpu?: string;
  memory?: string;
}

export interface Task {
  taskArn: string;
  clusterArn: string;
  taskDefinitionArn: string;
  /** "family:NAME" for RunTask, "service:NAME" for a service's tasks (ECS's convention). */
  group: string;
  startedBy?: string;
  lastStatus: TaskStatus;
  desiredStatus: DesiredStatus;
  healthStatus: HealthStatus;
  stopCode?: StopCode;
  stoppedReason?: string;
  containers: TaskContainer[];
  overrides: TaskOverride;
  cpu?: string;
  memory?: string;
  launchType: 'EC2';
  /** Incremented on every change, as ECS does. */
  version: number;
  createdAt: number;
  pullStartedAt?: number;
  pullStoppedAt?: number;
  startedAt?: number;
  stoppingAt?: number;
  stoppedAt?: number;
  /** Set when a service's deployment started the task. */
  serviceName?: string;
  deploymentId?: string;
  tags?: { key: string; value: string }[];
}

export interface RunTaskRequest {
  clusterArn: string;
  taskDefinition: TaskDefinition;
  /** 1..10, as ECS allows. */
  count: number;
  startedBy?: string;
  group?: string;
  overrides?: TaskOverride;
  /** container name -> "repo@sha256:...": the digests a deployment pinned. Without an entry the
   * container's image reference is resolved now. */
  pinnedImages?: Record<string, string>;
  serviceName?: string;
  deploymentId?: string;
  tags?: { key: string; value: string }[];
  /** RunTask's clientToken: the same token within 24 h answers the same tasks. */
  clientToken?: string;
}

export interface RunTaskFailure {
  arn?: string;
  reason: string;
  detail?: string;
}

export interface ListTasksFilter {
  clusterArn: string;
  family?: string;
  serviceName?: string;
  startedBy?: string;
  desiredStatus?: DesiredStatus;
}

export type TaskListener = (task: Task) => void;

/** What starts, stops and reports tasks (runner/tasks.ts). */
export interface TaskManager {
  run(req: RunTaskRequest): Promise<{ tasks: Task[]; failures: RunTaskFailure[] }>;
  /** Asks the task to stop (SIGTERM, stopTimeout, SIGKILL); answers the task as of the request. */
  stop(taskArn: string, stopCode: StopCode, reason: string): Promise<Task>;
  get(taskArn: string): Task | undefined;
  list(filter: ListTasksFilter): Task[];
  /** Called after every change of any task (status, health, exit codes). */
  subscribe(listener: TaskListener): () => void;
}

// --- services ----------------------------------------------------------------------------------

export interface DeploymentCircuitBreaker {
  enable: boolean;
  rollback: boolean;
}

export interface DeploymentConfiguration {
  /** Default 200. Upper bound of running tasks during a deployment, % of desiredCount, rounded down. */
  maximumPercent: number;
  /** Default 100. Lower bound of healthy tasks during a deployment, % of desiredCount, rounded up. */
  minimumHealthyPercent: number;
  deploymentCircuitBreaker: DeploymentCircuitBreaker;
}

export type DeploymentStatus = 'PRIMARY' | 'ACTIVE' | 'INACTIVE';
export type RolloutState = 'IN_PROGRESS' | 'COMPLETED' | 'FAILED';

export interface Deployment {
  id: string;
  status: DeploymentStatus;
  taskDefinition: string;
  /** container name -> "repo@sha256:...", resolved once when the deployment was created. */
  pinnedImages: Record<string, string>;
  desiredCount: number;
  pendingCount: number;
  runningCount: number;
  failedTasks: number;
  rolloutState: RolloutState;
  rolloutStateReason: string;
  createdAt: number;
  updatedAt: number;
  /** What created it: "CreateService", "UpdateService", "hook:<ruleId>", "rollback:<deploymentId>". */
  reason?: string;
  /**
   * Whose registry:Pull right pinned pinnedImages when the deployment was created (an IAM-style
   * ARN: the caller, the execution role, or a hook rule's role). Every later task of the
   * deployment (replacements, scale-out, a rollback to it) runs those digests on that right,
   * without a caller. Absent on deployments made before pull rights were checked.
   */
  pullPrincipal?: string;
}

export interface ServiceEvent {
  id: string;
  createdAt: number;
  message: string;
}

export type ServiceStatus = 'ACTIVE' | 'DRAINING' | 'INACTIVE';

export interface Service {
  serviceArn: string;
  serviceName: string;
  clusterArn: string;
  taskDefinition: string;
  desiredCount: number;
  runningCount: number;
  pendingCount: number;
  status: ServiceStatus;
  launchType: 'EC2';
  schedulingStrategy: 'REPLICA';
  deploymentConfiguration: DeploymentConfiguration;
  /** Newest first, as ECS lists them: the PRIMARY, then the ACTIVE ones being drained. */
  deployments: Deployment[];
  /** Newest first, at most 100. */
  events: ServiceEvent[];
  healthCheckGracePeriodSeconds?: number;
  createdAt: number;
  createdBy?: string;
  tags?: { key: string; value: string }[];
}

export interface CreateServiceRequest {
  clusterArn: string;
  serviceName: string;
  taskDefinition: TaskDefinition;
  desiredCount: number;
  deploymentConfiguration?: Partial<DeploymentConfiguration>;
  healthCheckGracePeriodSeconds?: number;
  createdBy?: string;
  tags?: { key: string; value: string }[];
  /** Whose pull right was checked for the first deployment's images (Deployment.pullPrincipal). */
  pullPrincipal?: string;
}

export interface UpdateServiceRequest {
  clusterArn: string;
  serviceName: string;
  taskDefinition?: TaskDefinition;
  desiredCount?: number;
  deploymentConfiguration?: Partial<DeploymentConfiguration>;
  forceNewDeployment?: boolean;
  healthCheckGracePeriodSeconds?: number;
  /** Who asked, for the deployment's reason ("UpdateService" when absent). */
  reason?: string;
  /** Whose pull right was checked for a new deployment's images (Deployment.pullPrincipal). */
  pullPrincipal?: string;
}

/** What keeps services at desiredCount and rolls their deployments (runner/services.ts). */
export interface ServiceScheduler {
  create(req: CreateServiceRequest): Promise<Service>;
  update(req: UpdateServiceRequest): Promise<Service>;
  /** force: stop the tasks now instead of requiring desiredCount 0 first (ECS's DeleteService force). */
  delete(clusterArn: string, serviceName: string, force: boolean): Promise<Service>;
  get(clusterArn: string, serviceName: string): Service | undefined;
  list(clusterArn: string): Service[];
  /** Finished deployments too, newest first (ECS drops them; berth keeps the history). */
  history(clusterArn: string, serviceName: string): Deployment[];
}

// --- clusters ----------------------------------------------------------------------------------

export interface Cluster {
  clusterArn: string;
  clusterName: string;
  status: 'ACTIVE' | 'INACTIVE';
  registeredContainerInstancesCount: 1;
  runningTasksCount: number;
  pendingTasksCount: number;
  activeServicesCount: number;
  tags?: { key: string; value: string }[];
}

export const DEFAULT_CLUSTER = 'default';

/**
 * berth is one machine, so every cluster has one container instance: this one. Its id is fixed,
 * so StartTask and ListTasks can name it without a ListContainerInstances.
 */
export const LOCAL_CONTAINER_INSTANCE_ID = 'local';

export function containerInstanceArn(region: string, accountId: string, cluster: string): string {
  return `arn:aws:ecs:${region}:${accountId}:container-instance/${cluster}/${LOCAL_CONTAINER_INSTANCE_ID}`;
}

/** A task cannot start as defined; its message leads with ECS's reason (CannotPullContainerError, ...). */
export class TaskLaunchError extends Error {
  override name = 'TaskLaunchError';
}
