// Admin routes for identities: users, groups, roles and service accounts, their access keys and
// the policies attached to them.
import type { Context, Hono } from 'hono';
import {
  type AccessKeyOwner,
  type ActionName,
  type AttachmentTargetType,
  validateTrustPolicy,
} from '../auth/index.ts';
import {
  bool,
  childPath,
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
  nullable,
  oneOf,
  pageParams,
  pathName,
  required,
  sendPage,
  str,
  stringMap,
  strings,
} from './admin-kit.ts';
import type { AppEnv } from './env.ts';

/** The name a create request gives, as a resource segment; the store judges the rest of its grammar. */
function newName(name: string, what: string): string {
  if (!isSegment(name))
    throw invalid(`invalid ${what} name ${JSON.stringify(name)}`, [
      { path: 'name', message: `name: ${JSON.stringify(name)} is not a valid ${what} name` },
    ]);
  return name;
}

const created = (c: Context<AppEnv>, value: { name: string; etag: string }) =>
  json(c, value, 201, {
    Location: childPath(c, value.name),
    ...etagHeader(value.etag),
  });

function trustPolicyErrors(doc: unknown) {
  const result = validateTrustPolicy(doc);
  if (result.ok) return;
  const details = result.errors.map((e) => ({
    path: e.path ? `trustPolicy.${e.path}` : 'trustPolicy',
    message: e.message,
  }));
  throw invalid(`trustPolicy is invalid: ${result.errors.map((e) => e.message).join('; ')}`, details);
}

interface Kind {
  /** Path segment of the collection. */
  readonly path: string;
  readonly type: AttachmentTargetType;
  readonly label: string;
  readonly exists: (name: string) => Promise<boolean>;
  /** The action that reads one of these (also what reading its attached policies needs). */
  readonly read: ActionName;
}

export function identityRoutes(app: Hono<AppEnv>, kit: Kit): void {
  const { deps, op } = kit;
  const ids = deps.identities;

  async function revoke(c: Context<AppEnv>, subject: string) {
    if (!deps.revokeSessions) return;
    try {
      await deps.revokeSessions(subject);
    } catch (err) {
      c.get('log')?.error({ err, subject }, 'admin: could not revoke the sessions of a subject');
    }
  }

  async function must<T>(value: Promise<T | undefined>, what: string, name: string): Promise<T> {
    const v = await value;
    if (v === undefined) throw notFound(`${what} ${JSON.stringify(name)} does not exist`);
    return v;
  }

  // ---- users ----

  const userName = (c: Context<AppEnv>) => pathName(c, 'name', 'user');

  app.get(
    '/users',
    op({ action: 'admin:ListUsers', resource: () => 'user/*' }, async ({ c }) =>
      sendPage(c, await ids.listUsers(pageParams(c))),
    ),
  );

  app.post(
    '/users',
    op(
      {
        action: 'admin:CreateUser',
        change: true,
        body: {
          name: required(str({ max: 64 })),
          password: str(),
          groups: strings(100),
          tags: stringMap(),
          disabled: bool(),
        },
        resource: (_, b) => `user/${newName(b.name, 'user')}`,
      },
      async ({ c, body: b }) => created(c, await ids.createUser(b)),
    ),
  );

  app.get(
    '/users/:name',
    op({ action: 'admin:GetUser', resource: (c) => `user/${userName(c)}` }, async ({ c }) => {
      const user = await must(ids.getUser(userName(c)), 'user', userName(c));
      return json(c, user, 200, etagHeader(user.etag));
    }),
  );

  app.patch(
    '/users/:name',
    op(
      {
        action: 'admin:UpdateUser',
        change: true,
        body: { password: nullable(str()), groups: strings(100), tags: stringMap(), disabled: bool() },
        resource: (c) => `user/${userName(c)}`,
      },
      async ({ c, body: b, note }) => {
        const name = userName(c);
        const etag = ifMatch(c);
        note({ fields: Object.keys(b) });
        const user = await ids.updateUser(name, b, etag !== undefined ? { ifMatch: etag } : {});
        if (b.password !== undefined || b.disabled === true) await revoke(c, `user/${name}`);
        return json(c, user, 200, etagHeader(user.etag));
      },
    ),
  );

  app.delete(
    '/users/:name',
    op(
      { action: 'admin:DeleteUser', change: true, resource: (c) => `user/${userName(c)}` },
      async ({ c }) => {
        const name = userName(c);
        await must(ids.getUser(name), 'user', name);
        // Detached first: a later user of the same name must not inherit these policies, and a
        // deletion that fails halfway leaves the user with fewer rights, not more.
        await deps.policies.detachAll({ type: 'user', name });
        await ids.deleteUser(name);
        await revoke(c, `user/${name}`);
        return noContent(c);
      },
    ),
  );

  // ---- groups ----

  const groupName = (c: Context<AppEnv>) => pathName(c, 'name', 'group');

  app.get(
    '/groups',
    op({ action: 'admin:ListGroups', resource: () => 'group/*' }, async ({ c }) =>
      sendPage(c, await ids.listGroups(pageParams(c))),
    ),
  );

  app.post(
    '/groups',
    op(
      {
        action: 'admin:CreateGroup',
        change: true,
        body: { name: required(str({ max: 64 })), description: str({ max: 1000 }) },
        resource: (_, b) => `group/${newName(b.name, 'group')}`,
      },
      async ({ c, body: b }) => created(c, await ids.createGroup(b)),
    ),
  );

  app.get(
    '/groups/:name',
    op({ action: 'admin:GetGroup', resource: (c) => `group/${groupName(c)}` }, async ({ c }) => {
      const name = groupName(c);
      const group = await must(ids.getGroup(name), 'group', name);
      const members = await ids.groupMembers(name);
      return json(c, { ...group, members }, 200, etagHeader(group.etag));
    }),
  );

  app.patch(
    '/groups/:name',
    op(
      {
        action: 'admin:UpdateGroup',
        change: true,
        body: { description: str({ max: 1000 }) },
        resource: (c) => `group/${groupName(c)}`,
      },
      async ({ c, body: b }) => {
        const etag = ifMatch(c);
        const group = await ids.updateGroup(groupName(c), b, etag !== undefined ? { ifMatch: etag } : {});
        return json(c, group, 200, etagHeader(group.etag));
      },
    ),
  );

  app.delete(
    '/groups/:name',
    op(
      { action: 'admin:DeleteGroup', change: true, resource: (c) => `group/${groupName(c)}` },
      async ({ c }) => {
        const name = groupName(c);
        await must(ids.getGroup(name), 'group', name);
        await deps.policies.detachAll({ type: 'group', name });
        await ids.deleteGroup(name);
        return noContent(c);
      },
    ),
  );

  // ---- roles ----

  const roleName = (c: Context<AppEnv>) => pathName(c, 'name', 'role');

  app.get(
    '/roles',
    op({ action: 'admin:ListRoles', resource: () => 'role/*' }, async ({ c }) =>
      sendPage(c, await ids.listRoles(pageParams(c))),
    ),
  );

  app.post(
    '/roles',
    op(
      {
        action: 'admin:CreateRole',
        change: true,
        body: {
          name: required(str({ max: 64 })),
          description: str({ max: 1000 }),
          trustPolicy: jsonObject(),
          maxSessionSeconds: int(60, 43200),
          tags: stringMap(),
        },
        resource: (_, b) => `role/${newName(b.name, 'role')}`,
      },
      async ({ c, body: b }) => {
        if (b.trustPolicy !== undefined) trustPolicyErrors(b.trustPolicy);
        return created(c, await ids.createRole(b));
      },
    ),
  );

  app.get(
    '/roles/:name',
    op({ action: 'admin:GetRole', resource: (c) => `role/${roleName(c)}` }, async ({ c }) => {
      const role = await must(ids.getRole(roleName(c)), 'role', roleName(c));
      return json(c, role, 200, etagHeader(role.etag));
    }),
  );

  app.patch(
    '/roles/:name',
    op(
      {
        action: 'admin:UpdateRole',
        change: true,
        body: {
          description: str({ max: 1000 }),
          trustPolicy: nullable(jsonObject()),
          maxSessionSeconds: int(60, 43200),
          tags: stringMap(),
        },
        resource: (c) => `role/${roleName(c)}`,
      },
      async ({ c, body: b, note }) => {
        if (b.trustPolicy !== undefined && b.trustPolicy !== null) trustPolicyErrors(b.trustPolicy);
        note({ fields: Object.keys(b) });
        const etag = ifMatch(c);
        const role = await ids.updateRole(roleName(c), b, etag !== undefined ? { ifMatch: etag } : {});
        return json(c, role, 200, etagHeader(role.etag));
      },
    ),
  );

  app.delete(
    '/roles/:name',
    op(
      { action: 'admin:DeleteRole', change: true, resource: (c) => `role/${roleName(c)}` },
      async ({ c }) => {
        const name = roleName(c);
        await must(ids.getRole(name), 'role', name);
        await deps.policies.detachAll({ type: 'role', name });
        await ids.deleteRole(name);
        return noContent(c);
      },
    ),
  );

  // ---- service accounts ----

  const accountName = (c: Context<AppEnv>) => pathName(c, 'name', 'service account');

  app.get(
    '/service-accounts',
    op({ action: 'admin:ListServiceAccounts', resource: () => 'serviceaccount/*' }, async ({ c }) =>
      sendPage(c, await ids.listServiceAccounts(pageParams(c))),
    ),
  );

  app.post(
    '/service-accounts',
    op(
      {
        action: 'admin:CreateServiceAccount',
        change: true,
        body: {
          name: required(str({ max: 64 })),
          description: str({ max: 1000 }),
          groups: strings(100),
          tags: stringMap(),
        },
        resource: (_, b) => `serviceaccount/${newName(b.name, 'service account')}`,
      },
      async ({ c, body: b }) => created(c, await ids.createServiceAccount(b)),
    ),
  );

  app.get(
    '/service-accounts/:name',
    op(
      { action: 'admin:GetServiceAccount', resource: (c) => `serviceaccount/${accountName(c)}` },
      async ({ c }) => {
        const name = accountName(c);
        const account = await must(ids.getServiceAccount(name), 'service account', name);
        return json(c, account, 200, etagHeader(account.etag));
      },
    ),
  );

  app.patch(
    '/service-accounts/:name',
    op(
      {
        action: 'admin:UpdateServiceAccount',
        change: true,
        body: { description: str({ max: 1000 }), groups: strings(100), tags: stringMap() },
        resource: (c) => `serviceaccount/${accountName(c)}`,
      },
      async ({ c, body: b, note }) => {
        note({ fields: Object.keys(b) });
        const etag = ifMatch(c);
        const account = await ids.updateServiceAccount(
          accountName(c),
          b,
          etag !== undefined ? { ifMatch: etag } : {},
        );
        return json(c, account, 200, etagHeader(account.etag));
      },
    ),
  );

  app.delete(
    '/service-accounts/:name',
    op(
      {
        action: 'admin:DeleteServiceAccount',
        change: true,
        resource: (c) => `serviceaccount/${accountName(c)}`,
      },
      async ({ c }) => {
        const name = accountName(c);
        await must(ids.getServiceAccount(name), 'service account', name);
        await deps.policies.detachAll({ type: 'serviceaccount', name });
        await ids.deleteServiceAccount(name);
        await revoke(c, `serviceaccount/${name}`);
        return noContent(c);
      },
    ),
  );

  // ---- access keys (users and service accounts) ----

  const keyOwners = [
    { path: 'users', owner: (c: Context<AppEnv>): AccessKeyOwner => ({ type: 'user', name: userName(c) }) },
    {
      path: 'service-accounts',
      owner: (c: Context<AppEnv>): AccessKeyOwner => ({ type: 'serviceaccount', name: accountName(c) }),
    },
  ];
  const ownerResource = (o: AccessKeyOwner) => `${o.type}/${o.name}`;

  /** The key named in the path, if it belongs to the owner named there. */
  async function ownKey(o: AccessKeyOwner, id: string) {
    const key = /^[A-Z0-9]{1,64}$/.test(id) ? await ids.getAccessKey(id) : undefined;
    if (!key || key.owner.type !== o.type || key.owner.name !== o.name)
      throw notFound(
        `access key ${JSON.stringify(id)} of ${o.type} ${JSON.stringify(o.name)} does not exist`,
      );
    return key;
  }

  for (const { path, owner } of keyOwners) {
    app.get(
      `/${path}/:name/access-keys`,
      op({ action: 'admin:ListAccessKeys', resource: (c) => ownerResource(owner(c)) }, async ({ c }) =>
        json(c, { items: await ids.listAccessKeys(owner(c)) }),
      ),
    );

    app.post(
      `/${path}/:name/access-keys`,
      op(
        { action: 'admin:CreateAccessKey', change: true, resource: (c) => ownerResource(owner(c)) },
        async ({ c, note }) => {
          const o = owner(c);
          const key = await ids.createAccessKey(o);
          note({ accessKeyId: key.id });
          // The secret is in this response only: no API ever shows it again.
          return json(
            c,
            { id: key.id, secret: key.secret, owner: o, status: 'active', createdAt: key.createdAt },
            201,
            { Location: childPath(c, key.id) },
          );
        },
      ),
    );

    app.patch(
      `/${path}/:name/access-keys/:id`,
      op(
        {
          action: 'admin:UpdateAccessKey',
          change: true,
          body: { status: required(oneOf(['active', 'inactive'] as const)) },
          resource: (c) => ownerResource(owner(c)),
        },
        async ({ c, body: b, note }) => {
          const o = owner(c);
          const id = c.req.param('id') ?? '';
          note({ accessKeyId: id.slice(0, 64), status: b.status });
          await ownKey(o, id);
          const key = await ids.updateAccessKey(id, { status: b.status });
          // Sessions the key opened must not outlive it.
          if (key.status === 'inactive') await revoke(c, ownerResource(o));
          return json(c, key);
        },
      ),
    );

    app.delete(
      `/${path}/:name/access-keys/:id`,
      op(
        { action: 'admin:DeleteAccessKey', change: true, resource: (c) => ownerResource(owner(c)) },
        async ({ c, note }) => {
          const o = owner(c);
          const id = c.req.param('id') ?? '';
          note({ accessKeyId: id.slice(0, 64) });
          await ownKey(o, id);
          await ids.deleteAccessKey(id);
          // Sessions the key opened must not outlive it.
          await revoke(c, ownerResource(o));
          return noContent(c);
        },
      ),
    );
  }

  // ---- attached policies ----

  const kinds: Kind[] = [
    {
      path: 'users',
      type: 'user',
      label: 'user',
      read: 'admin:GetUser',
      exists: async (n) => !!(await ids.getUser(n)),
    },
    {
      path: 'groups',
      type: 'group',
      label: 'group',
      read: 'admin:GetGroup',
      exists: async (n) => !!(await ids.getGroup(n)),
    },
    {
      path: 'roles',
      type: 'role',
      label: 'role',
      read: 'admin:GetRole',
      exists: async (n) => !!(await ids.getRole(n)),
    },
    {
      path: 'service-accounts',
      type: 'serviceaccount',
      label: 'service account',
      read: 'admin:GetServiceAccount',
      exists: async (n) => !!(await ids.getServiceAccount(n)),
    },
  ];

  for (const kind of kinds) {
    const target = (c: Context<AppEnv>) => ({ type: kind.type, name: pathName(c, 'name', kind.label) });
    const policyName = (c: Context<AppEnv>) => pathName(c, 'policy', 'policy');
    const existing = async (c: Context<AppEnv>) => {
      const t = target(c);
      if (!(await kind.exists(t.name)))
        throw notFound(`${kind.label} ${JSON.stringify(t.name)} does not exist`);
      return t;
    };
    const both = (c: Context<AppEnv>) => [`${kind.type}/${target(c).name}`, `policy/${policyName(c)}`];

    app.get(
      `/${kind.path}/:name/policies`,
      op({ action: kind.read, resource: (c) => `${kind.type}/${target(c).name}` }, async ({ c }) =>
        json(c, { items: await deps.policies.attachedTo(await existing(c)) }),
      ),
    );

    app.put(
      `/${kind.path}/:name/policies/:policy`,
      op({ action: 'admin:AttachPolicy', change: true, resource: both }, async ({ c, note }) => {
        note({ policy: policyName(c) });
        await deps.policies.attachPolicy(policyName(c), await existing(c));
        return noContent(c);
      }),
    );

    app.delete(
      `/${kind.path}/:name/policies/:policy`,
      op({ action: 'admin:DetachPolicy', change: true, resource: both }, async ({ c, note }) => {
        note({ policy: policyName(c) });
        await deps.policies.detachPolicy(policyName(c), target(c));
        return noContent(c);
      }),
    );
  }
}
