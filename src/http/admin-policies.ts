// Admin routes for policies, repository policies, OIDC providers, the policy simulator, the
// audit log and the action catalog.
import type { Context, Hono } from 'hono';
import { type AddProviderInput, type AuditEventType, actions, isKnownAction } from '../auth/index.ts';
import {
  childPath,
  contextMap,
  etagHeader,
  ifMatch,
  int,
  invalid,
  isSegment,
  json,
  jsonObject,
  type Kit,
  noContent,
  notFound,
  object,
  oneOf,
  pageOf,
  pageParams,
  pathName,
  required,
  sendPage,
  str,
  strings,
  within,
} from './admin-kit.ts';
import type { AppEnv } from './env.ts';

/** The distribution spec's repository name grammar. */
const repositoryName = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;

function isScope(scope: string): boolean {
  if (scope === '*') return true;
  const base = scope.endsWith('/*') ? scope.slice(0, -2) : scope;
  return base.length > 0 && base.length <= 253 && repositoryName.test(base);
}

/** Where a policy is being written: a malformed name is the request's fault (400), not absent. */
function nameToWrite(c: Context<AppEnv>, key: string, what: string, valid: (s: string) => boolean): string {
  const v = c.req.param(key) ?? '';
  if (!valid(v))
    throw invalid(`invalid ${what} ${JSON.stringify(v.slice(0, 300))}`, [
      { path: key, message: `${key}: ${JSON.stringify(v.slice(0, 300))} is not a valid ${what}` },
    ]);
  return v;
}

function scopeToRead(c: Context<AppEnv>): string {
  const v = c.req.param('scope') ?? '';
  if (!isScope(v)) throw notFound(`repository policy ${JSON.stringify(v.slice(0, 300))} does not exist`);
  return v;
}

const documentBody = { document: required(jsonObject()) };
const auditTypes = ['authn', 'token', 'decision', 'admin'] as const satisfies readonly AuditEventType[];

function auditQuery(c: Context<AppEnv>) {
  const q = (k: string) => c.req.query(k);
  const details: { path: string; message: string }[] = [];
  const bad = (path: string, text: string) => details.push({ path, message: `${path}: ${text}` });
  const date = (k: string) => {
    const v = q(k);
    if (v === undefined) return undefined;
    const t = Date.parse(v);
    if (Number.isNaN(t)) bad(k, 'must be an RFC 3339 date-time');
    return new Date(t);
  };
  const since = date('since');
  const until = date('until');
  const actor = q('actor');
  if (actor !== undefined && (actor === '' || actor.length > 512))
    bad('actor', 'must be 1 to 512 characters');
  const type = q('type');
  if (type !== undefined && !(auditTypes as readonly string[]).includes(type))
    bad('type', `must be one of ${auditTypes.join(', ')}`);
  const decision = q('decision');
  if (decision !== undefined && decision !== 'Allow' && decision !== 'Deny')
    bad('decision', 'must be Allow or Deny');
  const rawLimit = q('limit');
  const limit = rawLimit === undefined ? 100 : /^\d{1,4}$/.test(rawLimit) ? Number(rawLimit) : 0;
  if (limit < 1 || limit > 1000) bad('limit', 'must be a whole number from 1 to 1000');
  const rawAfter = q('after');
  const after = rawAfter === undefined ? undefined : /^\d{1,15}$/.test(rawAfter) ? Number(rawAfter) : -1;
  if (after !== undefined && after < 0) bad('after', 'must be the next cursor of a previous page');
  if (details.length > 0)
    throw invalid(`invalid audit query: ${details.map((d) => d.message).join('; ')}`, details);
  return {
    ...(since ? { since } : {}),
    ...(until ? { until } : {}),
    ...(actor !== undefined ? { actor } : {}),
    ...(type !== undefined ? { type: type as AuditEventType } : {}),
    ...(decision !== undefined ? { decision: decision as 'Allow' | 'Deny' } : {}),
    limit,
    ...(after !== undefined ? { after } : {}),
  };
}

export function policyRoutes(app: Hono<AppEnv>, kit: Kit): void {
  const { deps, op } = kit;
  const pols = deps.policies;

  // ---- identity policies ----

  const policyName = (c: Context<AppEnv>) => pathName(c, 'name', 'policy');

  app.get(
    '/policies',
    op({ action: 'admin:ListPolicies', resource: () => 'policy/*' }, async ({ c }) =>
      sendPage(c, await pols.listPolicies(pageParams(c))),
    ),
  );

  app.put(
    '/policies/:name',
    op(
      {
        action: 'admin:PutPolicy',
        change: true,
        body: documentBody,
        resource: (c) => `policy/${nameToWrite(c, 'name', 'policy name', isSegment)}`,
      },
      async ({ c, body: b, note }) => {
        const etag = ifMatch(c);
        const policy = await within(
          'document',
          pols.putPolicy(c.req.param('name') ?? '', b.document, etag !== undefined ? { ifMatch: etag } : {}),
        );
        note({ version: policy.version });
        return policy.version === 1
          ? json(c, policy, 201, { Location: c.req.path, ...etagHeader(policy.etag) })
          : json(c, policy, 200, etagHeader(policy.etag));
      },
    ),
  );

  app.get(
    '/policies/:name',
    op({ action: 'admin:GetPolicy', resource: (c) => `policy/${policyName(c)}` }, async ({ c }) => {
      const name = policyName(c);
      const policy = await pols.getPolicy(name);
      if (!policy) throw notFound(`policy ${JSON.stringify(name)} does not exist`);
      const attachments = await pols.attachmentsOf(name);
      return json(c, { ...policy, attachments }, 200, etagHeader(policy.etag));
    }),
  );

  app.delete(
    '/policies/:name',
    op(
      { action: 'admin:DeletePolicy', change: true, resource: (c) => `policy/${policyName(c)}` },
      async ({ c }) => {
        const etag = ifMatch(c);
        await pols.deletePolicy(policyName(c), etag !== undefined ? { ifMatch: etag } : {});
        return noContent(c);
      },
    ),
  );

  // ---- repository policies ----
  // The scope has slashes: clients may send it %2F-encoded or raw, and both reach `scope`.

  app.get(
    '/repository-policies',
    op({ action: 'admin:GetRepositoryPolicy', resource: () => 'repository/*' }, async ({ c }) =>
      sendPage(
        c,
        pageOf(await pols.listRepositoryPolicies(), (p) => p.scope, pageParams(c)),
      ),
    ),
  );

  app.put(
    '/repository-policies/:scope{.+}',
    op(
      {
        action: 'admin:PutRepositoryPolicy',
        change: true,
        body: documentBody,
        resource: (c) => `repository/${nameToWrite(c, 'scope', 'repository policy scope', isScope)}`,
      },
      async ({ c, body: b, note }) => {
        const etag = ifMatch(c);
        const scope = c.req.param('scope') ?? '';
        const policy = await within(
          'document',
          pols.putRepositoryPolicy(scope, b.document, etag !== undefined ? { ifMatch: etag } : {}),
        );
        note({ version: policy.version });
        return policy.version === 1
          ? json(c, policy, 201, { Location: c.req.path, ...etagHeader(policy.etag) })
          : json(c, policy, 200, etagHeader(policy.etag));
      },
    ),
  );

  app.get(
    '/repository-policies/:scope{.+}',
    op(
      { action: 'admin:GetRepositoryPolicy', resource: (c) => `repository/${scopeToRead(c)}` },
      async ({ c }) => {
        const scope = scopeToRead(c);
        const policy = await pols.getRepositoryPolicy(scope);
        if (!policy) throw notFound(`repository policy ${JSON.stringify(scope)} does not exist`);
        return json(c, policy, 200, etagHeader(policy.etag));
      },
    ),
  );

  app.delete(
    '/repository-policies/:scope{.+}',
    op(
      {
        action: 'admin:DeleteRepositoryPolicy',
        change: true,
        resource: (c) => `repository/${scopeToRead(c)}`,
      },
      async ({ c }) => {
        const etag = ifMatch(c);
        await pols.deleteRepositoryPolicy(scopeToRead(c), etag !== undefined ? { ifMatch: etag } : {});
        return noContent(c);
      },
    ),
  );

  // ---- OIDC providers ----

  const providerId = (c: Context<AppEnv>) => pathName(c, 'id', 'OIDC provider');

  app.get(
    '/oidc-providers',
    op({ action: 'admin:ListOidcProviders', resource: () => 'oidc/*' }, async ({ c }) =>
      sendPage(
        c,
        pageOf(await deps.federation.listProviders(), (p) => p.id, pageParams(c)),
      ),
    ),
  );

  app.post(
    '/oidc-providers',
    op(
      {
        action: 'admin:CreateOidcProvider',
        change: true,
        body: {
          id: str({ max: 128 }),
          issuer: required(str({ max: 2048 })),
          audiences: required(strings(32)),
          jwks: jsonObject(),
          claimsLimit: int(1, 1000),
        },
        // Without an id the provider's is derived from the issuer: authorized as `oidc/*`.
        resource: (_, b) => {
          if (b.id !== undefined && !isSegment(b.id))
            throw invalid(`invalid OIDC provider id ${JSON.stringify(b.id)}`, [
              { path: 'id', message: `id: ${JSON.stringify(b.id)} is not a valid provider id` },
            ]);
          return `oidc/${b.id ?? '*'}`;
        },
      },
      async ({ c, body: b, note }) => {
        const provider = await deps.federation.addProvider(b as AddProviderInput);
        note({ id: provider.id, issuer: provider.issuer });
        return json(c, provider, 201, { Location: childPath(c, provider.id) });
      },
    ),
  );

  app.get(
    '/oidc-providers/:id',
    op({ action: 'admin:GetOidcProvider', resource: (c) => `oidc/${providerId(c)}` }, async ({ c }) => {
      const id = providerId(c);
      const provider = await deps.federation.getProvider(id);
      if (!provider) throw notFound(`OIDC provider ${JSON.stringify(id)} does not exist`);
      return json(c, provider);
    }),
  );

  app.delete(
    '/oidc-providers/:id',
    op(
      { action: 'admin:DeleteOidcProvider', change: true, resource: (c) => `oidc/${providerId(c)}` },
      async ({ c }) => {
        const id = providerId(c);
        if (!(await deps.federation.deleteProvider(id)))
          throw notFound(`OIDC provider ${JSON.stringify(id)} does not exist`);
        return noContent(c);
      },
    ),
  );

  // ---- the simulator ----

  app.post(
    '/simulate',
    op(
      {
        action: 'admin:SimulatePolicy',
        body: {
          principal: required(
            object({
              type: required(oneOf(['user', 'serviceaccount', 'role', 'anonymous'])),
              name: required(str({ max: 128 })),
            }),
          ),
          action: required(str({ max: 256 })),
          resource: required(str({ max: 1024 })),
          context: contextMap(),
        },
        // What a principal may do is read from its policies: simulating is authorized on it.
        resource: (_, b) => {
          const { type, name } = b.principal;
          if (type === 'anonymous') return '*';
          if (!isSegment(name))
            throw invalid(`invalid principal name ${JSON.stringify(name)}`, [
              {
                path: 'principal.name',
                message: `principal.name: ${JSON.stringify(name)} is not a valid name`,
              },
            ]);
          return `${type}/${name}`;
        },
      },
      async ({ c, body: b }) => {
        if (!isKnownAction(b.action))
          throw invalid(`unknown action ${JSON.stringify(b.action)}`, [
            { path: 'action', message: `action: ${JSON.stringify(b.action)} is not in the action catalog` },
          ]);
        const principal = {
          type: b.principal.type,
          name: b.principal.type === 'anonymous' ? '' : b.principal.name,
        };
        const result = await deps.simulate({
          principal,
          action: b.action,
          resource: b.resource,
          context: b.context ?? {},
        });
        return json(c, { decision: result.effect, reason: result.reason, matched: result.matched });
      },
    ),
  );

  // ---- audit ----

  app.get(
    '/audit',
    op({ action: 'admin:ReadAudit', resource: () => 'audit' }, async ({ c }) => {
      const { entries, next } = await deps.audit.query(auditQuery(c));
      return sendPage(c, { items: entries, ...(next !== undefined ? { next: String(next) } : {}) });
    }),
  );

  app.post(
    '/audit/verify',
    op({ action: 'admin:ReadAudit', resource: () => 'audit' }, async ({ c }) =>
      json(c, await deps.audit.verify()),
    ),
  );

  // ---- the action catalog ----

  app.get(
    '/actions',
    op({ action: 'admin:ListActions', resource: () => '*' }, async ({ c }) => json(c, { items: actions })),
  );
}
