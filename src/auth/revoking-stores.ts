// The identity and policy stores as the admin API and the rest of berth see them: each change that
// can narrow someone's rights also revokes (revocation.ts) the tokens issued before it, and the
// credential changes end the sessions refresh tokens and role sessions keep alive. Revoked after
// the change is stored, so a token issued before that moment is older than the revocation.
//
// What narrows, and whose tokens it ends:
//   user / service account   disabled, password changed, groups or tags changed, deleted
//   role                     tags changed, deleted (its temporary sessions end with it)
//   group                    deleted (its members' tokens name it)
//   access key               deactivated or deleted (tokens of sessions begun with it)
//   managed policy           attached with a Deny in it, detached with an Allow in it, or edited
//                            in any way but adding Allows / removing Denies: every target it is on
//   repository policy        edited likewise, or deleted with an Allow in it: every token
// A policy change that can only widen rights revokes nothing: tokens keep working and a new token
// carries the new rights.
import type { AccessKeyOwner, IdentityStore } from './identities.ts';
import { type Policy, type PolicyKind, validatePolicy } from './policy.ts';
import type { AttachmentTarget, PolicyStore } from './policy-store.ts';
import { hasEffect, onlyWidens } from './revocation.ts';

export interface RevokingDeps {
  /** Marks tokens of these subjects (`user/alice`, `group/devs`, `accesskey/BK...`, `*`) stale. */
  revoke(subjects: readonly string[]): Promise<void>;
  /** Ends the refresh tokens of a user or service account (`user/alice`). */
  endRefreshTokens(subject: string): Promise<void>;
  /** Ends the temporary sessions (task credentials) of a role. */
  endRoleSessions(role: string): Promise<void>;
}

const ref = (t: { type: string; name: string }) => `${t.type}/${t.name}`;

const sameSet = (a: readonly string[], b: readonly string[]) =>
  a.length === b.length && a.every((x) => b.includes(x));

const sameTags = (a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>) =>
  JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort());

export function revokingIdentities(base: IdentityStore, deps: RevokingDeps): IdentityStore {
  const endSessions = async (owner: AccessKeyOwner) => {
    await deps.revoke([ref(owner)]);
    await deps.endRefreshTokens(ref(owner));
  };
  return {
    ...base,

    async updateUser(name, patch, o) {
      const before = await base.getUser(name);
      const user = await base.updateUser(name, patch, o);
      const narrowed =
        patch.password !== undefined ||
        (user.disabled && !before?.disabled) ||
        !before ||
        !sameSet(before.groups, user.groups) ||
        !sameTags(before.tags, user.tags);
      if (narrowed) await deps.revoke([`user/${name}`]);
      if (patch.password !== undefined || patch.disabled === true)
        await deps.endRefreshTokens(`user/${name}`);
      return user;
    },

    async deleteUser(name) {
      await base.deleteUser(name);
      // A user created later under the same name must not inherit the old sessions.
      await endSessions({ type: 'user', name });
    },

    async updateServiceAccount(name, patch, o) {
      const before = await base.getServiceAccount(name);
      const account = await base.updateServiceAccount(name, patch, o);
      if (!before || !sameSet(before.groups, account.groups) || !sameTags(before.tags, account.tags))
        await deps.revoke([`serviceaccount/${name}`]);
      return account;
    },

    async deleteServiceAccount(name) {
      await base.deleteServiceAccount(name);
      await endSessions({ type: 'serviceaccount', name });
    },

    async updateRole(name, patch, o) {
      const before = await base.getRole(name);
      const role = await base.updateRole(name, patch, o);
      if (!before || !sameTags(before.tags, role.tags)) await deps.revoke([`role/${name}`]);
      return role;
    },

    async deleteRole(name) {
      await base.deleteRole(name);
      await deps.revoke([`role/${name}`]);
      // A role created later under the same name must not take over the old sessions.
      await deps.endRoleSessions(name);
    },

    async deleteGroup(name) {
      await base.deleteGroup(name);
      await deps.revoke([`group/${name}`]);
    },

    async updateAccessKey(id, patch) {
      const before = await base.getAccessKey(id);
      const key = await base.updateAccessKey(id, patch);
      if (key.status !== 'active' && before?.status !== key.status) await deps.revoke([`accesskey/${id}`]);
      return key;
    },

    async deleteAccessKey(id) {
      await base.deleteAccessKey(id);
      await deps.revoke([`accesskey/${id}`]);
    },
  };
}

/** A stored document as evaluation would see it: undefined when absent, null when it does not validate. */
function validated(
  record: { document: unknown; invalid?: unknown } | undefined,
  kind: PolicyKind,
): Policy | undefined | null {
  if (!record) return undefined;
  const v = validatePolicy(record.document, kind);
  return v.ok ? v.policy : null;
}

export function revokingPolicies(base: PolicyStore, deps: Pick<RevokingDeps, 'revoke'>): PolicyStore {
  const revokeTargets = (targets: readonly AttachmentTarget[]) => deps.revoke(targets.map(ref));
  return {
    ...base,

    async putPolicy(name, document, o) {
      const before = await base.getPolicy(name);
      const record = await base.putPolicy(name, document, o);
      // Another put landing between the read and this one: the change seen is not the one made.
      const raced = record.version !== (before?.version ?? 0) + 1;
      if (raced || !onlyWidens(validated(before, 'identity'), validated(record, 'identity')))
        await revokeTargets(await base.attachmentsOf(name));
      return record;
    },

    async attachPolicy(policyName, target) {
      const policy = validated(await base.getPolicy(policyName), 'identity');
      const before = await base.attachedTo(target).catch((): string[] => []);
      await base.attachPolicy(policyName, target);
      if (!before.includes(policyName) && hasEffect(policy ?? null, 'Deny')) await revokeTargets([target]);
    },

    async detachPolicy(policyName, target) {
      const policy = validated(await base.getPolicy(policyName), 'identity');
      await base.detachPolicy(policyName, target);
      if (hasEffect(policy ?? null, 'Allow')) await revokeTargets([target]);
    },

    async detachAll(target) {
      const before = await base.attachedTo(target);
      await base.detachAll(target);
      if (before.length > 0) await revokeTargets([target]);
    },

    async putRepositoryPolicy(scope, document, o) {
      const before = await base.getRepositoryPolicy(scope);
      const record = await base.putRepositoryPolicy(scope, document, o);
      const raced = record.version !== (before?.version ?? 0) + 1;
      if (raced || !onlyWidens(validated(before, 'repository'), validated(record, 'repository')))
        await deps.revoke(['*']);
      return record;
    },

    async deleteRepositoryPolicy(scope, o) {
      const before = validated(await base.getRepositoryPolicy(scope), 'repository');
      await base.deleteRepositoryPolicy(scope, o);
      if (hasEffect(before ?? null, 'Allow')) await deps.revoke(['*']);
    },
  };
}
