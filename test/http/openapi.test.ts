// Holds the server to openapi.yaml: the routes the app registers (the runner's included) are the
// paths the document declares, and every response of a scripted admin and runner session
// (successes and errors alike) has a status the operation declares and a body that validates
// against its JSON Schema (2020-12): JSON bodies whole, server-sent events one event at a time.
import { createHash, createHmac, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { createAuditLog } from '../../src/auth/audit.ts';
import { createFederation } from '../../src/auth/federation.ts';
import { AuthStoreError, createIdentityStore } from '../../src/auth/identities.ts';
import { evaluate, type Principal } from '../../src/auth/policy.ts';
import { createPolicyStore } from '../../src/auth/policy-store.ts';
import { type AdminDeps, adminApiBase, createAdminApi } from '../../src/http/admin.ts';
import { ecsEndpointPath } from '../../src/http/app.ts';
import type { AppEnv } from '../../src/http/env.ts';
import { healthRoutes } from '../../src/http/health.ts';
import { requestContext } from '../../src/http/middleware.ts';
import { ecsRoutes } from '../../src/http/runner.ts';
import { taskCredentialsRoutes } from '../../src/http/task-credentials.ts';
import { silentLogger } from '../../src/log.ts';
import { createMemoryDriver } from '../../src/storage/index.ts';
import { ACCOUNT, REGION, type RunnerApp, startRunnerApp } from '../support/runner-app.ts';

// ---- the document -------------------------------------------------------------------------------

// biome-ignore lint/suspicious/noExplicitAny: the document is walked generically
type Json = any;
const spec: Json = parse(readFileSync(resolve(import.meta.dirname, '../../openapi.yaml'), 'utf8'));
const methods = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace'] as const;
const specId = 'https://berth.invalid/openapi.yaml';

interface Operation {
  readonly method: string;
  readonly template: string;
  readonly pattern: RegExp;
  readonly op: Json;
}

const operations: Operation[] = Object.entries(spec.paths as Record<string, Json>).flatMap(
  ([template, item]) =>
    methods
      .filter((m) => item[m] !== undefined)
      .map((m) => ({
        method: m.toUpperCase(),
        template,
        // A repository scope and a secret's name may carry raw slashes; other parameters are one segment.
        pattern: new RegExp(
          `^${template.replace(/\{(\w+)\}/g, (_, name: string) =>
            name === 'scope' || (name === 'name' && template.startsWith(`${adminApiBase}/secrets/`))
              ? '(.+)'
              : '([^/]+)',
          )}$`,
        ),
        op: item[m],
      })),
);

/** How many path parameters a template has: a literal segment wins over a parameter (`/hooks/runs`). */
const parameterCount = (template: string) => (template.match(/\{/g) ?? []).length;

const escapePointer = (s: string) => s.replaceAll('~', '~0').replaceAll('/', '~1');

/** The value at a local JSON pointer of the document. */
function at(pointer: string): Json {
  let v: Json = spec;
  for (const raw of pointer.replace(/^#\//, '').split('/'))
    v = v?.[raw.replaceAll('~1', '/').replaceAll('~0', '~')];
  return v;
}

/** Follows an OpenAPI-level $ref (responses are shared through components); keeps the pointer. */
function deref(value: Json, pointer: string): { value: Json; pointer: string } {
  let v = value;
  let p = pointer;
  while (v && typeof v.$ref === 'string') {
    p = v.$ref;
    v = at(p);
    expect(v, `${p} resolves`).toBeDefined();
  }
  return { value: v, pointer: p };
}

const ajv = new Ajv2020({ strict: false, allErrors: true });
ajv.addFormat('date-time', {
  type: 'string',
  validate: (s: string) =>
    /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)$/i.test(s) && !Number.isNaN(Date.parse(s)),
});
ajv.addFormat('uri', { type: 'string', validate: (s: string) => URL.canParse(s) });
ajv.addSchema({ ...spec, $id: specId });
const validators = new Map<string, ValidateFunction>();

function validatorAt(pointer: string): ValidateFunction {
  let v = validators.get(pointer);
  if (!v) {
    v = ajv.compile({ $ref: `${specId}${pointer}` });
    validators.set(pointer, v);
  }
  return v;
}

// ---- the app under test -------------------------------------------------------------------------

function makeDeps(): AdminDeps {
  const storage = createMemoryDriver();
  const policies = createPolicyStore({ storage });
  const identities = createIdentityStore({ storage, scryptCost: 16 });
  return {
    identities,
    policies,
    federation: createFederation({ storage }),
    audit: createAuditLog({ storage }),
    async authenticate(c) {
      if (c.req.header('x-test-throttle'))
        throw Object.assign(new Error('locked'), { retryAfterSeconds: 30 });
      const name = c.req.header('x-test-user');
      return name ? { principal: { type: 'user', name, groups: [] } } : undefined;
    },
    async authorize(_caller, action, _resource, c) {
      return c.req.header('x-test-deny') === action
        ? { effect: 'Deny', reason: 'explicit_deny' }
        : { effect: 'Allow', reason: 'allowed' };
    },
    async simulate({ principal, action, resource, context }) {
      let p: Principal = { type: 'anonymous', name: '', groups: [] };
      if (principal.type === 'user' || principal.type === 'serviceaccount') {
        const info = await identities.resolvePrincipal({ type: principal.type, name: principal.name });
        if (!info) throw new AuthStoreError('NOT_FOUND', `${principal.type} does not exist`);
        p = { type: info.type, name: info.name, groups: info.groups };
      } else if (principal.type === 'role') p = { type: 'role', name: principal.name, groups: [] };
      const repo = resource.startsWith('repository/') ? resource.slice('repository/'.length) : undefined;
      const attached = [
        ...(await policies.policiesFor(p)),
        ...(repo ? await policies.repositoryPoliciesFor(repo) : []),
      ];
      return evaluate({ principal: p, action, resource, context }, attached);
    },
  };
}

const readiness = { check: async () => {}, draining: () => false };

// ---- the runner -----------------------------------------------------------------------------------

/** A registry, a real auth (SigV4 on /ecs, role credentials) and a real runner over one storage. */
let world: RunnerApp | undefined;

beforeAll(async () => {
  world = await startRunnerApp({
    net: 96,
    webhooks: [{ id: 'ci', url: 'http://127.0.0.1:9/events', secret: 'webhook-secret-0123456789' }],
    // Nothing listens on port 9: deliveries fail, and are listed.
    allowHosts: ['127.0.0.1:9'],
  });
});

afterAll(async () => {
  await world?.close();
});

const sha256 = (b: string | Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Pushes a one-layer image (not a runnable one: the layer is no tar) through /v2; answers its digest. */
async function pushImage(app: RunnerApp['app'], repo: string, tag: string): Promise<string> {
  const authorization = `Basic ${Buffer.from('admin:admin-password').toString('base64')}`;
  const layer = Buffer.from(`layer-${randomBytes(8).toString('hex')}`);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: {} }));
  for (const b of [layer, config]) {
    const r = await app.request(`/v2/${repo}/blobs/uploads/?digest=sha256:${sha256(b)}`, {
      method: 'POST',
      headers: { authorization },
      body: b,
    });
    expect(r.status, await r.text()).toBe(201);
  }
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: {
      mediaType: 'application/vnd.oci.image.config.v1+json',
      digest: `sha256:${sha256(config)}`,
      size: config.length,
    },
    layers: [
      {
        mediaType: 'application/vnd.oci.image.layer.v1.tar',
        digest: `sha256:${sha256(layer)}`,
        size: layer.length,
      },
    ],
  });
  const r = await app.request(`/v2/${repo}/manifests/${tag}`, {
    method: 'PUT',
    headers: { authorization, 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
    body: manifest,
  });
  expect(r.status, await r.text()).toBe(201);
  return `sha256:${sha256(manifest)}`;
}

/**
 * The headers of an ECS request signed with AWS Signature Version 4, written out here (not with
 * the server's helpers) so the document's description of /ecs is checked by an outside signer.
 */
function signEcs(operation: string, body: string, key: { id: string; secret: string }) {
  const amzDate = new Date()
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
  const date = amzDate.slice(0, 8);
  const headers: Record<string, string> = {
    // As the SDKs do: each invocation carries its own id.
    'amz-sdk-invocation-id': randomUUID(),
    'content-type': 'application/x-amz-json-1.1',
    host: 'localhost',
    'x-amz-date': amzDate,
    'x-amz-target': `AmazonEC2ContainerServiceV20141113.${operation}`,
  };
  const names = Object.keys(headers).sort();
  const canonical = [
    'POST',
    ecsEndpointPath,
    '',
    ...names.map((n) => `${n}:${headers[n]}`),
    '',
    names.join(';'),
    sha256(body),
  ].join('\n');
  const scope = `${date}/${REGION}/ecs/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n');
  const hmac = (k: string | Buffer, v: string) => createHmac('sha256', k).update(v).digest();
  const signingKey = ['ecs', 'aws4_request'].reduce(hmac, hmac(hmac(`AWS4${key.secret}`, date), REGION));
  const signature = createHmac('sha256', signingKey).update(toSign).digest('hex');
  headers.authorization = `AWS4-HMAC-SHA256 Credential=${key.id}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}`;
  return headers;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Server-sent events as `{ event, data, id }`, in order. */
function parseSse(text: string): { event: string; data: string; id?: string }[] {
  return text
    .split(/\r?\n\r?\n/)
    .filter((block) => block.trim() !== '')
    .map((block) => {
      const out: { event: string; data: string; id?: string } = { event: 'message', data: '' };
      const data: string[] = [];
      for (const line of block.split(/\r?\n/)) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') out.event = value;
        else if (field === 'data') data.push(value);
        else if (field === 'id') out.id = value;
      }
      out.data = data.join('\n');
      return out;
    });
}

/** Hono `:name` and `:scope{.+}` as OpenAPI `{name}`. */
const toTemplate = (path: string) => path.replace(/:(\w+)(?:\{[^}]*\})?/g, '{$1}');

// ---- route parity -------------------------------------------------------------------------------

describe('openapi.yaml', () => {
  it('declares every operation with an operationId, tags and responses', () => {
    expect(spec.openapi).toMatch(/^3\.1\./);
    const ids = operations.map((o) => o.op.operationId);
    expect(ids.every((id) => typeof id === 'string' && id !== '')).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    for (const { op, method, template } of operations) {
      expect(op.tags?.length, `${method} ${template} has tags`).toBeGreaterThan(0);
      expect(Object.keys(op.responses ?? {}).length, `${method} ${template} has responses`).toBeGreaterThan(
        0,
      );
      if (template.startsWith(adminApiBase)) {
        expect(op.responses['401'], `${op.operationId} declares 401`).toBeDefined();
        expect(op.responses['403'], `${op.operationId} declares 403`).toBeDefined();
      }
    }
    expect(spec.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(spec.components.securitySchemes.basic).toMatchObject({ type: 'http', scheme: 'basic' });
  });

  it('has schemas that compile, with every $ref resolving', () => {
    for (const name of Object.keys(spec.components.schemas))
      expect(() => validatorAt(`#/components/schemas/${escapePointer(name)}`), name).not.toThrow();
    for (const { op, method, template } of operations) {
      const base = `#/paths/${escapePointer(template)}/${method.toLowerCase()}`;
      const body = op.requestBody?.content?.['application/json'];
      if (body)
        expect(() => validatorAt(`${base}/requestBody/content/application~1json/schema`)).not.toThrow();
      for (const [status, response] of Object.entries(op.responses as Record<string, Json>)) {
        const r = deref(response, `${base}/responses/${status}`);
        expect(r.value.description, `${op.operationId} ${status} has a description`).toBeTypeOf('string');
        for (const [media, content] of Object.entries((r.value.content ?? {}) as Record<string, Json>)) {
          const at = `${r.pointer}/content/${escapePointer(media)}`;
          expect(() => validatorAt(`${at}/schema`), `${op.operationId} ${status} ${media}`).not.toThrow();
          for (const event of Object.keys(content['x-event-data'] ?? {}))
            expect(() => validatorAt(`${at}/x-event-data/${escapePointer(event)}`)).not.toThrow();
        }
      }
      for (const p of op.parameters ?? []) expect(deref(p, '').value.name).toBeTypeOf('string');
    }
  });

  it('matches the routes the app registers, both ways', () => {
    // The app as main.ts builds it with the runner on; /v2 (the OCI distribution spec) and /token
    // (the registry token protocol) are documented by their own specifications.
    const app = (world as RunnerApp).app;
    const ours = (route: string) => {
      const path = route.slice(route.indexOf(' ') + 1);
      return (
        path.startsWith(`${adminApiBase}/`) ||
        path === '/healthz' ||
        path === '/readyz' ||
        path === ecsEndpointPath ||
        path.startsWith('/v1/task-credentials/')
      );
    };
    const registered = new Set(
      app.routes
        .filter((r) => r.method !== 'ALL')
        .map((r) => `${r.method} ${toTemplate(r.path)}`)
        .filter(ours),
    );
    const declared = new Set(operations.map((o) => `${o.method} ${o.template}`));
    expect(
      [...registered].filter((r) => !declared.has(r)),
      'routes missing from openapi.yaml',
    ).toEqual([]);
    expect(
      [...declared].filter((r) => ours(r) && !registered.has(r)),
      'operations in openapi.yaml the app does not serve',
    ).toEqual([]);
    expect(registered.size).toBeGreaterThan(50);
    for (const runnerRoute of [
      `GET ${adminApiBase}/secrets/{name}`,
      `GET ${adminApiBase}/hooks/runs`,
      `POST ${ecsEndpointPath}`,
      'GET /v1/task-credentials/{task}',
    ])
      expect(registered.has(runnerRoute), runnerRoute).toBe(true);
    // Without a runner the admin API has none of the runner's routes.
    const bare = new Hono<AppEnv>();
    bare.route(adminApiBase, createAdminApi(makeDeps()));
    expect(bare.routes.some((r) => r.path.startsWith(`${adminApiBase}/secrets`))).toBe(false);
  });
});

// ---- a scripted session, every response validated ----------------------------------------------

describe('a scripted admin and runner session', () => {
  const deps = makeDeps();
  /** The admin API with test sign-in (headers), and the runner's routes outside /api/v1. */
  const app = new Hono<AppEnv>();
  app.use(requestContext({ log: silentLogger, trustProxy: false, scheme: 'https' }));
  app.route('/', healthRoutes(readiness));
  let mounted = false;
  function mountRunner(w: RunnerApp) {
    if (mounted) return;
    mounted = true;
    app.route(adminApiBase, createAdminApi(deps, w.runner));
    app.route(
      ecsEndpointPath,
      ecsRoutes({ auth: w.auth, api: w.runner.ecs, region: REGION, accountId: ACCOUNT }),
    );
    app.route('/', taskCredentialsRoutes(w.runner));
  }
  /** operationId -> statuses seen. */
  const seen = new Map<string, Set<string>>();

  function operationFor(method: string, path: string): Operation {
    const candidates = operations.filter((o) => o.method === method && o.pattern.test(path));
    expect(candidates.length, `${method} ${path} matches an operation of openapi.yaml`).toBeGreaterThan(0);
    // `/hooks/runs` also matches `/hooks/{id}`: the template with fewer parameters is the route.
    const fewest = Math.min(...candidates.map((o) => parameterCount(o.template)));
    const best = candidates.filter((o) => parameterCount(o.template) === fewest);
    expect(best.length, `${method} ${path} matches one operation of openapi.yaml`).toBe(1);
    return best[0] as Operation;
  }

  /** Responses whose Content-Type came twice (`a, a`): see the known-bug test below. */
  const doubledContentTypes: string[] = [];

  /** The declared media type a response's Content-Type names. */
  function mediaTypeOf(res: Response, content: Record<string, Json>, what: string): string | undefined {
    let header = res.headers.get('content-type') ?? '';
    const parts = header.split(',').map((p) => p.trim());
    if (parts.length > 1 && parts.every((p) => p === parts[0])) {
      doubledContentTypes.push(`${what}: ${header}`);
      header = parts[0] as string;
    }
    const type = header.split(';')[0]?.trim().toLowerCase();
    return Object.keys(content).find((m) => m.toLowerCase() === type);
  }

  /** Sends a request and checks the response against the operation's declared status and schema. */
  async function call(
    method: string,
    path: string,
    opts: { body?: unknown; user?: string | null; headers?: Record<string, string>; raw?: string } = {},
  ) {
    const headers: Record<string, string> = { ...opts.headers };
    const user = opts.user === undefined ? 'root' : opts.user;
    if (user !== null) headers['x-test-user'] = user;
    const text = opts.body !== undefined ? JSON.stringify(opts.body) : opts.raw;
    if (text !== undefined) headers['content-type'] ??= 'application/json';
    const res = await app.request(path, { method, headers, ...(text !== undefined ? { body: text } : {}) });
    const { op, template } = operationFor(method, new URL(path, 'http://x').pathname);
    const status = String(res.status);
    const declared = op.responses[status];
    const bodyText = await res.text();
    if (!declared)
      expect.fail(`${op.operationId} answered ${status}, which openapi.yaml does not declare: ${bodyText}`);
    const { value: response, pointer } = deref(
      declared,
      `#/paths/${escapePointer(template)}/${method.toLowerCase()}/responses/${status}`,
    );
    // biome-ignore lint/suspicious/noExplicitAny: bodies are read loosely
    let json: any;
    let events: ReturnType<typeof parseSse> | undefined;
    if (response.content) {
      const media = mediaTypeOf(res, response.content, `${op.operationId} ${status}`);
      if (!media)
        expect.fail(
          `${op.operationId} ${status} answered ${res.headers.get('content-type')}, not one of ${Object.keys(response.content).join(', ')}`,
        );
      const at = `${pointer}/content/${escapePointer(media)}`;
      const check = (value: unknown, schemaPointer: string, what: string) => {
        const validate = validatorAt(schemaPointer);
        if (!validate(value))
          expect.fail(
            `${op.operationId} ${status} ${what} does not match its schema: ${ajv.errorsText(validate.errors)}\n${bodyText}`,
          );
      };
      if (media === 'text/event-stream') {
        // Each event's data against the schema the document gives for its event type.
        events = parseSse(bodyText);
        const byType = response.content[media]['x-event-data'] as Record<string, Json>;
        for (const e of events) {
          expect(Object.keys(byType), `${op.operationId} declares event ${e.event}`).toContain(e.event);
          check(JSON.parse(e.data), `${at}/x-event-data/${escapePointer(e.event)}`, `event ${e.event}`);
        }
      } else {
        json = JSON.parse(bodyText);
        check(json, `${at}/schema`, 'body');
      }
    } else {
      expect(bodyText, `${op.operationId} ${status} has no body`).toBe('');
    }
    for (const name of Object.keys(response.headers ?? {}))
      if (['ETag', 'Location', 'WWW-Authenticate', 'Retry-After'].includes(name))
        expect(res.headers.get(name), `${op.operationId} ${status} sends ${name}`).not.toBeNull();
    const statuses = seen.get(op.operationId) ?? new Set<string>();
    statuses.add(status);
    seen.set(op.operationId, statuses);
    return { res, status: res.status, json, events };
  }

  /** A signed ECS request through call(): `POST /ecs`, validated like every other answer. */
  const ecs = (operation: string, input: object, key: { id: string; secret: string }) => {
    const body = JSON.stringify(input);
    return call('POST', ecsEndpointPath, { raw: body, user: null, headers: signEcs(operation, body, key) });
  };

  const pullAll = {
    Version: '2012-10-17',
    Statement: [{ Sid: 'Pull', Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/*' }],
  };
  const publicPull = {
    Version: '2012-10-17',
    Statement: { Effect: 'Allow', Principal: '*', Action: ['registry:Pull', 'registry:ListTags'] },
  };
  const trust = {
    Version: '2012-10-17',
    Statement: [
      {
        Effect: 'Allow',
        Principal: { Federated: 'token.actions.githubusercontent.com' },
        Action: 'sts:AssumeRoleWithWebIdentity',
        Condition: { StringLike: { 'oidc:sub': 'repo:acme/*' } },
      },
    ],
  };
  const v1 = adminApiBase;

  beforeAll(async () => {
    const w = world as RunnerApp;
    mountRunner(w);

    // Health.
    await call('GET', '/healthz', { user: null });
    await call('GET', '/readyz', { user: null });

    // Refusals before anything else: no credentials, throttled, denied by policy.
    expect((await call('GET', `${v1}/users`, { user: null })).status).toBe(401);
    expect(
      (await call('GET', `${v1}/users`, { user: null, headers: { 'x-test-throttle': '1' } })).status,
    ).toBe(429);
    expect(
      (
        await call('POST', `${v1}/groups`, {
          body: { name: 'x' },
          headers: { 'x-test-deny': 'admin:CreateGroup' },
        })
      ).status,
    ).toBe(403);

    // Groups.
    expect(
      (await call('POST', `${v1}/groups`, { body: { name: 'devs', description: 'Developers' } })).status,
    ).toBe(201);
    expect((await call('POST', `${v1}/groups`, { body: { name: 'devs' } })).status).toBe(409);
    await call('POST', `${v1}/groups`, { body: { name: 'ops' } });
    await call('GET', `${v1}/groups`);
    await call('PATCH', `${v1}/groups/ops`, { body: { description: 'Operations' } });

    // Users.
    const alice = await call('POST', `${v1}/users`, {
      body: { name: 'alice', password: 'correct horse battery', groups: ['devs'], tags: { team: 'a' } },
    });
    expect(alice.status).toBe(201);
    expect((await call('POST', `${v1}/users`, { body: { name: 'bob', pw: 'x' } })).status).toBe(400);
    expect((await call('POST', `${v1}/users`, { raw: '{' })).status).toBe(400);
    expect((await call('POST', `${v1}/users`, { body: { name: 'alice' } })).status).toBe(409);
    for (const name of ['bob', 'carol', 'dave']) await call('POST', `${v1}/users`, { body: { name } });
    const page = await call('GET', `${v1}/users?limit=2`);
    expect(page.json.next).toBe('bob');
    expect(page.res.headers.get('link')).toContain('rel="next"');
    await call('GET', `${v1}/users?limit=2&after=bob`);
    expect((await call('GET', `${v1}/users?limit=0`)).status).toBe(400);
    const got = await call('GET', `${v1}/users/alice`);
    expect((await call('GET', `${v1}/users/nobody`)).status).toBe(404);
    expect(
      (
        await call('PATCH', `${v1}/users/alice`, {
          body: { disabled: false },
          headers: { 'if-match': '"stale"' },
        })
      ).status,
    ).toBe(412);
    await call('PATCH', `${v1}/users/alice`, {
      body: { password: null, groups: ['devs', 'ops'] },
      headers: { 'if-match': got.res.headers.get('etag') as string },
    });
    expect((await call('PATCH', `${v1}/users/alice`, { body: { groups: ['nope'] } })).status).toBe(400);
    await call('GET', `${v1}/groups/devs`);

    // Access keys.
    const key = await call('POST', `${v1}/users/alice/access-keys`);
    await call('GET', `${v1}/users/alice/access-keys`);
    const deactivated = await call('PATCH', `${v1}/users/alice/access-keys/${key.json.id}`, {
      body: { status: 'inactive' },
    });
    expect(deactivated.json.status).toBe('inactive');
    expect(
      (await call('PATCH', `${v1}/users/alice/access-keys/${key.json.id}`, { body: { status: 'off' } }))
        .status,
    ).toBe(400);
    await call('DELETE', `${v1}/users/alice/access-keys/${key.json.id}`);
    expect((await call('DELETE', `${v1}/users/alice/access-keys/${key.json.id}`)).status).toBe(404);

    // Service accounts.
    await call('POST', `${v1}/service-accounts`, {
      body: { name: 'ci', description: 'CI', groups: ['devs'] },
    });
    await call('GET', `${v1}/service-accounts`);
    await call('GET', `${v1}/service-accounts/ci`);
    await call('PATCH', `${v1}/service-accounts/ci`, { body: { tags: { env: 'prod' } } });
    const ciKey = await call('POST', `${v1}/service-accounts/ci/access-keys`);
    await call('POST', `${v1}/service-accounts/ci/access-keys`);
    const third = await call('POST', `${v1}/service-accounts/ci/access-keys`);
    expect(third.json.error.code).toBe('LIMIT_EXCEEDED');
    await call('GET', `${v1}/service-accounts/ci/access-keys`);
    await call('PATCH', `${v1}/service-accounts/ci/access-keys/${ciKey.json.id}`, {
      body: { status: 'inactive' },
    });
    expect(
      (
        await call('PATCH', `${v1}/service-accounts/ci/access-keys/BKNOSUCHKEY`, {
          body: { status: 'active' },
        })
      ).status,
    ).toBe(404);
    await call('DELETE', `${v1}/service-accounts/ci/access-keys/${ciKey.json.id}`);

    // Roles.
    const badRole = await call('POST', `${v1}/roles`, {
      body: { name: 'deploy', trustPolicy: { Version: '2012-10-17', Statement: [] } },
    });
    expect(badRole.status).toBe(400);
    await call('POST', `${v1}/roles`, {
      body: { name: 'deploy', trustPolicy: trust, maxSessionSeconds: 900 },
    });
    await call('GET', `${v1}/roles`);
    await call('GET', `${v1}/roles/deploy`);
    await call('PATCH', `${v1}/roles/deploy`, { body: { description: 'Deploys from CI' } });

    // Policies.
    const created = await call('PUT', `${v1}/policies/pull`, { body: { document: pullAll } });
    expect(created.status).toBe(201);
    const bad = await call('PUT', `${v1}/policies/bad`, {
      body: { document: { Version: '2012-10-17', Statement: { Effect: 'Allow', Action: 'nope:Nope' } } },
    });
    expect(bad.status).toBe(400);
    expect(bad.json.error.details.length).toBeGreaterThan(0);
    const replaced = await call('PUT', `${v1}/policies/pull`, {
      body: { document: pullAll },
      headers: { 'if-match': created.res.headers.get('etag') as string },
    });
    expect(replaced.status).toBe(200);
    expect(
      (
        await call('PUT', `${v1}/policies/pull`, {
          body: { document: pullAll },
          headers: { 'if-match': created.res.headers.get('etag') as string },
        })
      ).status,
    ).toBe(412);
    await call('PUT', `${v1}/policies/scratch`, { body: { document: pullAll } });
    await call('GET', `${v1}/policies`);
    await call('GET', `${v1}/actions`);

    // Attachments, for every kind of identity.
    for (const [kind, name] of [
      ['users', 'alice'],
      ['groups', 'devs'],
      ['roles', 'deploy'],
      ['service-accounts', 'ci'],
    ]) {
      expect((await call('PUT', `${v1}/${kind}/${name}/policies/pull`)).status).toBe(204);
      await call('PUT', `${v1}/${kind}/${name}/policies/scratch`);
      await call('GET', `${v1}/${kind}/${name}/policies`);
      expect((await call('DELETE', `${v1}/${kind}/${name}/policies/scratch`)).status).toBe(204);
      expect((await call('DELETE', `${v1}/${kind}/${name}/policies/scratch`)).status).toBe(404);
    }
    await call('GET', `${v1}/policies/pull`);
    const conflict = await call('DELETE', `${v1}/policies/pull`);
    expect(conflict.json.error.code).toBe('CONFLICT');
    expect(conflict.json.error.details.length).toBe(4);
    await call('DELETE', `${v1}/policies/scratch`);
    expect((await call('GET', `${v1}/policies/scratch`)).status).toBe(404);

    // Repository policies, scope encoded and raw.
    expect(
      (await call('PUT', `${v1}/repository-policies/team-a%2F*`, { body: { document: publicPull } })).status,
    ).toBe(201);
    expect(
      (await call('PUT', `${v1}/repository-policies/team-a/*`, { body: { document: publicPull } })).status,
    ).toBe(200);
    expect(
      (await call('PUT', `${v1}/repository-policies/team-b/api`, { body: { document: pullAll } })).status,
    ).toBe(400);
    await call('GET', `${v1}/repository-policies`);
    await call('GET', `${v1}/repository-policies/team-a%2F%2A`);
    await call('DELETE', `${v1}/repository-policies/team-a/*`);
    expect((await call('GET', `${v1}/repository-policies/team-a/*`)).status).toBe(404);

    // OIDC providers.
    const provider = await call('POST', `${v1}/oidc-providers`, {
      body: { id: 'github', issuer: 'https://token.actions.githubusercontent.com', audiences: ['berth'] },
    });
    expect(provider.status).toBe(201);
    expect(
      (
        await call('POST', `${v1}/oidc-providers`, {
          body: { id: 'github', issuer: 'https://token.actions.githubusercontent.com', audiences: ['berth'] },
        })
      ).status,
    ).toBe(409);
    expect(
      (await call('POST', `${v1}/oidc-providers`, { body: { issuer: 'ftp://x', audiences: ['a'] } })).status,
    ).toBe(400);
    await call('GET', `${v1}/oidc-providers`);
    await call('GET', `${v1}/oidc-providers/github`);
    await call('DELETE', `${v1}/oidc-providers/github`);
    expect((await call('GET', `${v1}/oidc-providers/github`)).status).toBe(404);

    // The simulator.
    const sim = await call('POST', `${v1}/simulate`, {
      body: {
        principal: { type: 'user', name: 'alice' },
        action: 'registry:Pull',
        resource: 'repository/app',
      },
    });
    expect(sim.json.decision).toBe('Allow');
    await call('POST', `${v1}/simulate`, {
      body: {
        principal: { type: 'anonymous', name: '' },
        action: 'registry:Push',
        resource: 'repository/app',
        context: { 'aws:SourceIp': ['10.0.0.1'] },
      },
    });
    expect(
      (
        await call('POST', `${v1}/simulate`, {
          body: { principal: { type: 'user' }, action: 'x', resource: 'y' },
        })
      ).status,
    ).toBe(400);
    expect(
      (
        await call('POST', `${v1}/simulate`, {
          body: {
            principal: { type: 'user', name: 'ghost' },
            action: 'registry:Pull',
            resource: 'repository/a',
          },
        })
      ).status,
    ).toBe(404);

    // Deletions.
    for (const [kind, name] of [
      ['users', 'bob'],
      ['groups', 'ops'],
      ['roles', 'deploy'],
      ['service-accounts', 'ci'],
    ]) {
      expect((await call('DELETE', `${v1}/${kind}/${name}`)).status).toBe(204);
      expect((await call('GET', `${v1}/${kind}/${name}`)).status).toBe(404);
    }

    // The audit log saw all of it.
    const audit = await call('GET', `${v1}/audit?type=admin&limit=5`);
    expect(audit.json.items).toHaveLength(5);
    await call('GET', `${v1}/audit?decision=Deny`);
    expect((await call('GET', `${v1}/audit?since=soon`)).status).toBe(400);
    expect((await call('POST', `${v1}/audit/verify`)).json.ok).toBe(true);

    // ---- the runner ----

    // The ECS wire API: signed with a berth access key, and refused unsigned, in ECS's shapes.
    const ecsKey = await w.auth.identities.createAccessKey({ type: 'user', name: 'admin' });
    const unsigned = await call('POST', ecsEndpointPath, {
      raw: '{}',
      user: null,
      headers: {
        'content-type': 'application/x-amz-json-1.1',
        'x-amz-target': 'AmazonEC2ContainerServiceV20141113.ListClusters',
      },
    });
    expect(unsigned.status).toBe(400);
    expect(unsigned.res.headers.get('x-amzn-errortype')).toBe(unsigned.json.__type);
    expect((await ecs('ListClusters', {}, ecsKey)).json.clusterArns).toContain(
      `arn:aws:ecs:${REGION}:${ACCOUNT}:cluster/default`,
    );

    // Secrets, with a slash in a name; the value never comes back.
    const secret = await call('PUT', `${v1}/secrets/team/db`, {
      body: { value: 's3cret-value', description: 'db' },
    });
    expect(secret.status).toBe(201);
    expect(JSON.stringify(secret.json)).not.toContain('s3cret');
    expect((await call('PUT', `${v1}/secrets/team%2Fdb`, { body: { value: 'rotated' } })).status).toBe(200);
    expect((await call('PUT', `${v1}/secrets/plain`, { body: { value: 'v', extra: 1 } })).status).toBe(400);
    expect((await call('PUT', `${v1}/secrets/bad%20name`, { body: { value: 'v' } })).status).toBe(404);
    await call('PUT', `${v1}/secrets/plain`, { body: { value: 'v' } });
    const secretPage = await call('GET', `${v1}/secrets?limit=1`);
    expect(secretPage.json.next).toBe('plain');
    expect(secretPage.res.headers.get('link')).toContain('rel="next"');
    await call('GET', `${v1}/secrets?limit=1&after=plain`);
    expect((await call('GET', `${v1}/secrets/team/db`)).json.name).toBe('team/db');
    expect(
      (await call('DELETE', `${v1}/secrets/plain`, { headers: { 'x-test-deny': 'ecs:ManageSecrets' } }))
        .status,
    ).toBe(403);
    expect((await call('DELETE', `${v1}/secrets/plain`)).status).toBe(204);
    expect((await call('GET', `${v1}/secrets/plain`)).status).toBe(404);

    // Hook rules: created, read, listed, changed, refused with the field named, deleted. They act
    // as a role of the runner's auth, which may do what they do.
    await w.auth.identities.createRole({ name: 'deployer' });
    await w.auth.policies.putPolicy('deploy-anything', {
      Version: '2012-10-17',
      Statement: [
        { Effect: 'Allow', Action: ['ecs:RunTask', 'ecs:UpdateService', 'registry:Pull'], Resource: '*' },
      ],
    });
    await w.auth.policies.attachPolicy('deploy-anything', { type: 'role', name: 'deployer' });
    const roleArn = `arn:aws:iam::${ACCOUNT}:role/deployer`;
    const roll = await call('POST', `${v1}/hooks`, {
      body: {
        rule: {
          name: 'roll web',
          repository: 'team/**',
          tag: 'semver:^1',
          roleArn,
          action: { type: 'rollService', service: 'web' },
        },
      },
    });
    expect(roll.status).toBe(201);
    const invalidRule = await call('POST', `${v1}/hooks`, {
      body: {
        rule: { name: 'x', repository: 'app', tag: 'latest', roleArn, action: { type: 'runTask', count: 1 } },
      },
    });
    expect(invalidRule.json.error.details[0].path).toBe('rule.action.taskDefinition');
    // The writer may not pass the role: a 403 naming the field.
    const unpassable = await call('POST', `${v1}/hooks`, {
      body: { rule: { ...roll.json, id: undefined, createdAt: undefined, updatedAt: undefined } },
      headers: { 'x-test-deny': 'iam:PassRole' },
    });
    expect(unpassable.status, JSON.stringify(unpassable.json)).toBe(403);
    expect(unpassable.json.error.details[0].path).toBe('rule.roleArn');
    await call('GET', `${v1}/hooks/${roll.json.id}`);
    await call('PUT', `${v1}/hooks/${roll.json.id}`, { body: { rule: { enabled: false } } });
    expect((await call('PUT', `${v1}/hooks/${roll.json.id}`, { body: { rule: { tag: '' } } })).status).toBe(
      400,
    );
    const batch = await call('POST', `${v1}/hooks`, {
      body: {
        rule: {
          name: 'batch on push',
          repository: 'app',
          tag: 'latest',
          roleArn,
          action: {
            type: 'runTask',
            taskDefinition: 'no-such-family',
            overrides: { containerOverrides: [{ name: 'main', command: ['run'] }] },
          },
        },
      },
    });
    const rulePage = await call('GET', `${v1}/hooks?limit=1`);
    expect(rulePage.json.items[0].id).toBe(roll.json.id);
    const restOfRules = await call(
      'GET',
      `${v1}/hooks?limit=1&after=${encodeURIComponent(rulePage.json.next)}`,
    );
    expect(restOfRules.json.items[0].id).toBe(batch.json.id);
    expect((await call('DELETE', `${v1}/hooks/${roll.json.id}`)).status).toBe(204);
    expect((await call('GET', `${v1}/hooks/${roll.json.id}`)).status).toBe(404);

    // A push the batch rule matches fails (no such task definition): a run that says why.
    expect((await call('GET', `${v1}/hooks/runs`)).json.items).toEqual([]);
    const digest = await pushImage(w.app, 'app', 'latest');
    const failed = await until('the hook run to fail', async () => {
      const r = await call('GET', `${v1}/hooks/runs?rule=${batch.json.id}&limit=10`);
      return r.json.items[0]?.status === 'failed' ? r.json.items[0] : undefined;
    });
    expect(failed).toMatchObject({
      imageRef: `app@${digest}`,
      reason: expect.stringContaining('no-such-family'),
    });
    expect((await call('GET', `${v1}/hooks/runs?after=not-a-run`)).status).toBe(400);

    // Webhooks, without their secrets, and their deliveries (one, for the push).
    const hooks = await call('GET', `${v1}/webhooks`);
    expect(JSON.stringify(hooks.json)).not.toContain('webhook-secret');
    const deliveries = await until('the push to be queued for the webhook', async () => {
      const r = await call('GET', `${v1}/webhooks/deliveries?webhook=ci&limit=5`);
      return r.json.items.length > 0 ? r.json.items : undefined;
    });
    expect(deliveries[0].event.data).toMatchObject({ type: 'manifest.pushed', repository: 'app' });
    expect((await call('GET', `${v1}/webhooks/deliveries?after=x`)).status).toBe(400);

    // A service with no tasks has a deployment; an unknown one is a 404.
    const containerDefinitions = (image: string) => [{ name: 'main', image, memory: 64, essential: true }];
    await ecs(
      'RegisterTaskDefinition',
      { family: 'web', containerDefinitions: containerDefinitions('app:latest') },
      ecsKey,
    );
    await ecs('CreateService', { serviceName: 'web', taskDefinition: 'web', desiredCount: 0 }, ecsKey);
    const deployments = await call('GET', `${v1}/runner/clusters/default/services/web/deployments`);
    expect(deployments.json.items[0]).toMatchObject({ status: 'PRIMARY', desiredCount: 0 });
    expect((await call('GET', `${v1}/runner/clusters/default/services/nope/deployments`)).status).toBe(404);

    // A task whose image cannot be unpacked stops before any container starts: its (empty) log
    // reads as JSON and follows as a stream that ends at once. No network, so nothing is set up
    // on the host even if this session is cut short.
    await ecs(
      'RegisterTaskDefinition',
      { family: 'broken', networkMode: 'none', containerDefinitions: containerDefinitions('app:latest') },
      ecsKey,
    );
    const ran = await ecs('RunTask', { taskDefinition: 'broken' }, ecsKey);
    const taskArn = ran.json.tasks?.[0]?.taskArn as string;
    expect(taskArn, JSON.stringify(ran.json)).toBeTypeOf('string');
    const taskId = taskArn.slice(taskArn.lastIndexOf('/') + 1);
    await until('the task to stop', async () => {
      const d = await ecs('DescribeTasks', { tasks: [taskArn] }, ecsKey);
      return d.json.tasks[0].lastStatus === 'STOPPED' ? true : undefined;
    });
    const logsPath = `${v1}/runner/clusters/default/tasks/${taskId}/logs`;
    const logs = await call('GET', `${logsPath}?tail=10&since=2020-01-01T00:00:00Z`);
    expect(logs.json).toEqual({ container: 'main', entries: [] });
    const followed = await call('GET', `${logsPath}?follow=true`);
    expect(followed.events?.map((e) => e.event)).toEqual(['end']);
    const accepted = await call('GET', logsPath, { headers: { accept: 'text/event-stream' } });
    expect(accepted.res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect((await call('GET', `${logsPath}?container=other`)).status).toBe(404);
    expect((await call('GET', `${logsPath}?tail=many`)).status).toBe(400);
    expect((await call('GET', `${v1}/runner/clusters/default/tasks/${'0'.repeat(32)}/logs`)).status).toBe(
      404,
    );

    // Task role credentials: the task's own token or nothing.
    const credentials = `/v1/task-credentials/${taskId}`;
    expect((await call('GET', credentials, { user: null })).status).toBe(401);
    expect((await call('GET', credentials, { user: null, headers: { authorization: 'guess' } })).status).toBe(
      403,
    );
    expect(
      (await call('GET', '/v1/task-credentials/nope', { user: null, headers: { authorization: 'x' } }))
        .status,
    ).toBe(404);
  });

  it('exercised every operation', () => {
    const missing = operations.filter((o) => !seen.has(o.op.operationId)).map((o) => o.op.operationId);
    expect(missing).toEqual([]);
  });

  // src/http/runner.ts once built its answers with both 'Content-Type' and ecsError()'s
  // 'content-type', so ECS errors carried the type twice.
  it('sends one Content-Type with each ECS error', () => {
    expect(doubledContentTypes).toEqual([]);
  });

  it('exercised each error status the API answers with', () => {
    const statuses = new Set([...seen.values()].flatMap((s) => [...s]));
    for (const s of ['200', '201', '204', '400', '401', '403', '404', '409', '412', '429'])
      expect(statuses.has(s), `some response had status ${s}`).toBe(true);
  });
});
