// The ECS wire protocol, AWS JSON 1.1: every call is `POST /` with
//   Content-Type: application/x-amz-json-1.1
//   X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Operation>
// and a JSON object as body. Errors come back as JSON `{ "__type": "<ErrorType>", "message": "..." }`
// with the type repeated in the x-amzn-ErrorType header; the SDKs and the aws CLI map __type to their
// exception classes (anything before '#' and after ':' is ignored), so the bare type name is enough.
// Nothing here knows HTTP frameworks: http/ feeds headers and body in and writes EcsErrorResponse out.

export const ECS_TARGET_PREFIX = 'AmazonEC2ContainerServiceV20141113';
export const ECS_CONTENT_TYPE = 'application/x-amz-json-1.1';

/** The operations berth's ECS endpoint serves (issue 5), each authorized as the policy action `ecs:<Operation>`. */
export const ecsOperations = [
  'CreateCluster',
  'DescribeClusters',
  'ListClusters',
  'RegisterTaskDefinition',
  'DescribeTaskDefinition',
  'ListTaskDefinitions',
  'ListTaskDefinitionFamilies',
  'DeregisterTaskDefinition',
  'RunTask',
  'StartTask',
  'StopTask',
  'DescribeTasks',
  'ListTasks',
  'CreateService',
  'UpdateService',
  'DescribeServices',
  'ListServices',
  'DeleteService',
] as const;

export type EcsOperation = (typeof ecsOperations)[number];
export type EcsAction = `ecs:${EcsOperation}`;

/** Operation -> the runner action a policy grants or denies (all present in auth's action catalog). */
export const ecsOperationActions: Readonly<Record<EcsOperation, EcsAction>> = Object.freeze(
  Object.fromEntries(ecsOperations.map((op) => [op, `ecs:${op}`])) as Record<EcsOperation, EcsAction>,
);

export function isEcsOperation(name: string): name is EcsOperation {
  return (ecsOperations as readonly string[]).includes(name);
}

// --- errors -----------------------------------------------------------------------------------

/**
 * Error types with their HTTP status. ECS answers 400 for every client fault, AccessDeniedException
 * included (its Smithy model says 403, the service sends 400 and the SDKs go by __type anyway), and
 * 500 for ServerException. The second group is what the AWS front end itself answers before ECS
 * sees the request: authentication, framing and throttling.
 */
export const ecsErrorStatus = {
  AccessDeniedException: 400,
  AttributeLimitExceededException: 400,
  BlockedException: 400,
  ClientException: 400,
  ClusterContainsContainerInstancesException: 400,
  ClusterContainsServicesException: 400,
  ClusterContainsTasksException: 400,
  ClusterNotFoundException: 400,
  ConflictException: 400,
  InvalidParameterException: 400,
  LimitExceededException: 400,
  MissingVersionException: 400,
  NamespaceNotFoundException: 400,
  NoUpdateAvailableException: 400,
  PlatformTaskDefinitionIncompatibilityException: 400,
  PlatformUnknownException: 400,
  ResourceInUseException: 400,
  ResourceNotFoundException: 400,
  ServerException: 500,
  ServiceNotActiveException: 400,
  ServiceNotFoundException: 400,
  TargetNotConnectedException: 400,
  TargetNotFoundException: 400,
  TaskSetNotFoundException: 400,
  UnsupportedFeatureException: 400,
  UpdateInProgressException: 400,

  IncompleteSignatureException: 400,
  InvalidSignatureException: 400,
  MissingAuthenticationTokenException: 400,
  UnrecognizedClientException: 400,
  ExpiredTokenException: 400,
  SerializationException: 400,
  UnknownOperationException: 400,
  ThrottlingException: 400,
  InternalFailure: 500,
  ServiceUnavailableException: 503,
} as const;

export type EcsErrorType = keyof typeof ecsErrorStatus;

/** Messages ECS itself uses for common failures, so clients matching on text keep working. */
export const ecsMessages = {
  clusterNotFound: 'Cluster not found.',
  serviceNotFound: 'Service not found.',
  serviceNotActive: 'Service was not ACTIVE.',
  taskDefinitionNotFound: 'Unable to describe task definition.',
  /** AWS's wording for a policy denial: `User: <arn> is not authorized to perform: ecs:X on resource: <arn> ...`. */
  accessDenied: (principal: string, action: string, resource: string) =>
    `User: ${principal} is not authorized to perform: ${action} on resource: ${resource} because no identity-based policy allows the ${action} action`,
} as const;

/** What runner code throws for a failure the ECS client should see; http/ answers it with ecsError(). */
export class EcsError extends Error {
  readonly type: EcsErrorType;
  readonly status: number;
  constructor(type: EcsErrorType, message: string, opts: { cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.name = 'EcsError';
    this.type = type;
    this.status = ecsErrorStatus[type];
  }
}

export interface EcsErrorResponse {
  status: number;
  headers: { 'x-amzn-errortype': string; 'content-type': typeof ECS_CONTENT_TYPE };
  body: { __type: string; message: string };
}

/** The response for an error type; `message` is shown to the client as is. */
export function ecsError(type: EcsErrorType, message: string): EcsErrorResponse {
  return {
    status: ecsErrorStatus[type],
    headers: { 'x-amzn-errortype': type, 'content-type': ECS_CONTENT_TYPE },
    body: { __type: type, message },
  };
}

/**
 * Any error to its response: EcsError and errors with an ECS-known `code` (SigV4Error) keep their
 * type and message; anything else becomes a ServerException that leaks nothing of the cause.
 */
export function ecsErrorFrom(err: unknown): EcsErrorResponse {
  if (err instanceof EcsError) return ecsError(err.type, err.message);
  if (err instanceof Error && 'code' in err && typeof err.code === 'string' && err.code in ecsErrorStatus) {
    return ecsError(err.code as EcsErrorType, err.message);
  }
  return ecsError('ServerException', 'An internal error occurred.');
}

// --- requests ---------------------------------------------------------------------------------

export interface EcsRequest {
  operation: EcsOperation;
  action: EcsAction;
  input: Record<string, unknown>;
}

/**
 * Reads the operation from X-Amz-Target and the input from the body. Throws EcsError:
 * UnknownOperationException for a target berth does not serve (or a body that is not JSON 1.1),
 * SerializationException for a body that is not a UTF-8 JSON object.
 */
export function parseEcsRequest(req: {
  headers: Readonly<Record<string, string | undefined>>;
  body: Uint8Array | string;
}): EcsRequest {
  const header = (name: string) => {
    for (const [k, v] of Object.entries(req.headers)) if (k.toLowerCase() === name) return v;
    return undefined;
  };

  const contentType = (header('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  // The CLI and SDKs send application/x-amz-json-1.1; plain application/json is accepted as AWS does.
  if (contentType !== ECS_CONTENT_TYPE && contentType !== 'application/json') {
    throw new EcsError(
      'UnknownOperationException',
      `Unsupported Content-Type '${contentType}': ECS requests are ${ECS_CONTENT_TYPE}.`,
    );
  }

  const target = header('x-amz-target') ?? '';
  const dot = target.lastIndexOf('.');
  const prefix = dot < 0 ? '' : target.slice(0, dot);
  const name = target.slice(dot + 1);
  if (prefix !== ECS_TARGET_PREFIX || !isEcsOperation(name)) {
    throw new EcsError(
      'UnknownOperationException',
      prefix === ECS_TARGET_PREFIX
        ? `Operation '${name}' is not supported by berth's ECS endpoint.`
        : `Unknown X-Amz-Target '${target}': expected ${ECS_TARGET_PREFIX}.<Operation>.`,
    );
  }

  let text: string;
  try {
    text =
      typeof req.body === 'string' ? req.body : new TextDecoder('utf-8', { fatal: true }).decode(req.body);
  } catch {
    throw new EcsError('SerializationException', 'The request body is not valid UTF-8.');
  }
  let input: unknown;
  try {
    input = JSON.parse(text);
  } catch (err) {
    throw new EcsError(
      'SerializationException',
      `The request body is not valid JSON: ${(err as Error).message}`,
    );
  }
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new EcsError('SerializationException', 'The request body must be a JSON object.');
  }
  return { operation: name, action: ecsOperationActions[name], input: input as Record<string, unknown> };
}
