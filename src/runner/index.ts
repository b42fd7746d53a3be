// What the rest of berth may use of the runner (ARCHITECTURE.md: http/ and main.ts import only this).
export { type Catalog, createCatalog } from './catalog.ts';
export { type ContainerCredentials, CredentialsError, credentialsPathPrefix } from './credentials.ts';
export {
  containerInstanceArn,
  createEcsApi,
  type EcsApi,
  type EcsCaller,
  LOCAL_CONTAINER_INSTANCE_ID,
} from './ecs-api.ts';
export {
  ECS_CONTENT_TYPE,
  EcsError,
  type EcsErrorResponse,
  type EcsOperation,
  ecsError,
  ecsErrorFrom,
  parseEcsRequest,
} from './ecs-protocol.ts';
export { HookError } from './hook-rules.ts';
export type { ImageSource } from './images.ts';
export type { Actor } from './launch-rights.ts';
export type { Deployment } from './model.ts';
export { createRunner, type Runner, RunnerError, type RunnerOptions } from './runner.ts';
export type { LogEntry } from './runtime.ts';
export { SecretError } from './secrets.ts';
export { validateWebhookEndpoints, type WebhookEndpoint, WebhookError } from './webhooks.ts';
