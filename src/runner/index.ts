// What the rest of berth may use of the runner (ARCHITECTURE.md: http/ and main.ts import only this).
export { type Catalog, createCatalog } from './catalog.ts';
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
