import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  AccessDeniedException,
  ClientException,
  ClusterNotFoundException,
  DescribeClustersCommand,
  ECSClient,
  type ECSServiceException,
  ListClustersCommand,
  RegisterTaskDefinitionCommand,
  ServerException,
  UpdateServiceCommand,
} from '@aws-sdk/client-ecs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ECS_TARGET_PREFIX,
  EcsError,
  type EcsErrorResponse,
  type EcsRequest,
  ecsError,
  ecsErrorFrom,
  ecsErrorStatus,
  ecsMessages,
  ecsOperationActions,
  ecsOperations,
  parseEcsRequest,
} from './ecs-protocol.ts';

// A stand-in ECS endpoint: parses each request with parseEcsRequest and answers with whatever the
// test queued, so the real SDK judges both directions of the framing.
let server: Server;
let ecs: ECSClient;
const parsed: EcsRequest[] = [];
let answer: { status: number; headers: Record<string, string>; body: unknown } = {
  status: 200,
  headers: {},
  body: {},
};

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const headers = Object.fromEntries(
        Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(',') : v]),
      );
      let out = answer;
      try {
        parsed.push(parseEcsRequest({ headers, body: new Uint8Array(Buffer.concat(chunks)) }));
      } catch (err) {
        out = ecsErrorFrom(err);
      }
      res.writeHead(out.status, { 'content-type': 'application/x-amz-json-1.1', ...out.headers });
      res.end(JSON.stringify(out.body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  ecs = new ECSClient({
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    region: 'us-east-1',
    maxAttempts: 1,
    credentials: { accessKeyId: 'AKIDTEST', secretAccessKey: 'secret' },
  });
});

afterAll(async () => {
  ecs.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

function answerWith(
  r: EcsErrorResponse | { status: number; headers?: Record<string, string>; body: unknown },
) {
  answer = { status: r.status, headers: { ...(r.headers ?? {}) }, body: r.body };
}

async function thrown(p: Promise<unknown>): Promise<ECSServiceException> {
  try {
    await p;
  } catch (err) {
    return err as ECSServiceException;
  }
  throw new Error('expected the SDK to throw');
}

describe('parseEcsRequest on what @aws-sdk/client-ecs sends', () => {
  it('reads the operation, its action and the input', async () => {
    answerWith({ status: 200, body: { clusters: [], failures: [] } });
    await ecs.send(new DescribeClustersCommand({ clusters: ['default', 'prod'], include: ['TAGS'] }));
    expect(parsed.at(-1)).toEqual({
      operation: 'DescribeClusters',
      action: 'ecs:DescribeClusters',
      input: { clusters: ['default', 'prod'], include: ['TAGS'] },
    });
  });

  it('an operation without input arrives as {}', async () => {
    answerWith({
      status: 200,
      body: { clusterArns: ['arn:aws:ecs:us-east-1:000000000000:cluster/default'] },
    });
    const out = await ecs.send(new ListClustersCommand({}));
    expect(out.clusterArns).toEqual(['arn:aws:ecs:us-east-1:000000000000:cluster/default']);
    expect(parsed.at(-1)).toMatchObject({ operation: 'ListClusters', input: {} });
  });

  it('keeps unicode in the input', async () => {
    answerWith({ status: 200, body: {} });
    await ecs.send(
      new RegisterTaskDefinitionCommand({
        family: 'web',
        containerDefinitions: [
          { name: 'web', image: 'web:1', environment: [{ name: 'HI', value: 'Grüße 👋' }] },
        ],
      }),
    );
    const input = parsed.at(-1)!.input as { containerDefinitions: { environment: { value: string }[] }[] };
    expect(input.containerDefinitions[0]!.environment[0]!.value).toBe('Grüße 👋');
  });
});

describe('ecsError as the SDK reads it', () => {
  it.each([
    ['ClusterNotFoundException', ClusterNotFoundException, 400, 'client'],
    ['ClientException', ClientException, 400, 'client'],
    ['AccessDeniedException', AccessDeniedException, 400, 'client'],
    ['ServerException', ServerException, 500, 'server'],
  ] as const)('%s', async (type, ErrorClass, status, fault) => {
    answerWith(ecsError(type, `a ${type} happened`));
    const err = await thrown(
      ecs.send(new UpdateServiceCommand({ service: 'web', forceNewDeployment: true })),
    );
    expect(err).toBeInstanceOf(ErrorClass);
    expect(err.name).toBe(type);
    expect(err.message).toBe(`a ${type} happened`);
    expect(err.$fault).toBe(fault);
    expect(err.$metadata.httpStatusCode).toBe(status);
  });

  it('front-end errors (signature, framing) surface under their own names', async () => {
    // The shape auth's SigV4Error has (runner/ may not import auth/): an Error with an ECS `code`.
    const sig = Object.assign(new Error('Signature expired: ...'), { code: 'InvalidSignatureException' });
    answerWith(ecsErrorFrom(sig));
    const err = await thrown(ecs.send(new ListClustersCommand({})));
    expect(err.name).toBe('InvalidSignatureException');
    expect(err.message).toBe('Signature expired: ...');
    expect(err.$metadata.httpStatusCode).toBe(400);
  });
});

describe('parseEcsRequest refusals', () => {
  const headers = (op: string) => ({
    'content-type': 'application/x-amz-json-1.1',
    'x-amz-target': `${ECS_TARGET_PREFIX}.${op}`,
  });
  const refusal = (req: Parameters<typeof parseEcsRequest>[0]) => {
    try {
      parseEcsRequest(req);
    } catch (err) {
      return err as EcsError;
    }
    throw new Error('expected a refusal');
  };

  it('UnknownOperationException for targets berth does not serve', () => {
    for (const target of [
      `${ECS_TARGET_PREFIX}.TagResource`,
      'DynamoDB_20120810.ListTables',
      'ListClusters',
      `${ECS_TARGET_PREFIX}.listclusters`,
    ]) {
      const err = refusal({ headers: { ...headers('x'), 'x-amz-target': target }, body: '{}' });
      expect(err).toBeInstanceOf(EcsError);
      expect([err.type, err.status]).toEqual(['UnknownOperationException', 400]);
    }
    expect(refusal({ headers: { 'content-type': 'application/x-amz-json-1.1' }, body: '{}' }).type).toBe(
      'UnknownOperationException',
    );
  });

  it('UnknownOperationException for a body that is not JSON 1.1', () => {
    const err = refusal({
      headers: { ...headers('ListClusters'), 'content-type': 'text/plain' },
      body: '{}',
    });
    expect(err.type).toBe('UnknownOperationException');
    expect(
      parseEcsRequest({
        headers: { ...headers('ListClusters'), 'content-type': 'application/json; charset=utf-8' },
        body: '{}',
      }).operation,
    ).toBe('ListClusters');
  });

  it('SerializationException for bodies that are not one JSON object', () => {
    for (const body of ['', '{', '[]', 'null', '"x"', new Uint8Array([0x7b, 0xff, 0x7d])]) {
      const err = refusal({ headers: headers('ListClusters'), body });
      expect([err.type, err.status]).toEqual(['SerializationException', 400]);
    }
  });

  it('reads header names in any case', () => {
    expect(
      parseEcsRequest({
        headers: {
          'Content-Type': 'application/x-amz-json-1.1',
          'X-Amz-Target': `${ECS_TARGET_PREFIX}.RunTask`,
        },
        body: '{"taskDefinition":"web:3"}',
      }),
    ).toEqual({ operation: 'RunTask', action: 'ecs:RunTask', input: { taskDefinition: 'web:3' } });
  });
});

describe('the operation table', () => {
  it('has the operations issue 5 names, each mapped to ecs:<Operation>', () => {
    expect([...ecsOperations].sort()).toEqual(
      [
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
      ].sort(),
    );
    for (const op of ecsOperations) expect(ecsOperationActions[op]).toBe(`ecs:${op}`);
  });

  it('answers 400 for client faults and 5xx only for server faults', () => {
    for (const [type, status] of Object.entries(ecsErrorStatus)) {
      expect(status).toBe(
        ['ServerException', 'InternalFailure'].includes(type)
          ? 500
          : type === 'ServiceUnavailableException'
            ? 503
            : 400,
      );
    }
    expect(ecsError('ServiceNotFoundException', ecsMessages.serviceNotFound)).toEqual({
      status: 400,
      headers: {
        'x-amzn-errortype': 'ServiceNotFoundException',
        'content-type': 'application/x-amz-json-1.1',
      },
      body: { __type: 'ServiceNotFoundException', message: 'Service not found.' },
    });
  });

  it('ecsErrorFrom hides unexpected errors behind ServerException', () => {
    const out = ecsErrorFrom(new Error('ENOENT: /var/lib/berth/secret/path'));
    expect(out.status).toBe(500);
    expect(out.body).toEqual({ __type: 'ServerException', message: 'An internal error occurred.' });
  });
});
