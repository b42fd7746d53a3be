// Decisions for a principal named by reference, with no request in hand: what the task runner asks
// when something acts on a principal's behalf long after (or apart from) any request of theirs. A
// hook rule acting as its role when a push fires it, a task definition's execution role pulling
// images. The principal is looked up on every call, so its current groups, tags and attached
// policies decide, and a principal that no longer exists (or a disabled user) is denied.
//
// The context holds what is true without a request: the time and the principal's tags. Keys a
// request would bring (berth:SourceIp, berth:SecureTransport, berth:AuthMethod) are absent, so a
// statement conditioned on them does not match (use the `...IfExists` operators to exempt it).
import type { AuditEvent } from './audit.ts';
import type { RequestContext } from './conditions.ts';
import type { IdentityStore } from './identities.ts';
import { allowAll, type Decision, evaluate, implicitDeny, type Principal, reasonCode } from './policy.ts';
import type { PolicyStore } from './policy-store.ts';

export interface PrincipalDecisionDeps {
  readonly identities: IdentityStore;
  readonly policies: PolicyStore;
  /** false in development mode: everything is allowed, as for requests. */
  readonly enabled: boolean;
  readonly now: () => number;
  /** Records a denial (failures to record are the caller's to swallow). */
  readonly audit: (event: AuditEvent) => Promise<void>;
}

/** `role/NAME`, `user/NAME`, `serviceaccount/NAME`: the references tokens and the audit log use. */
export type PrincipalReference = string;

/**
 * decideAs(principal, action, resource): the decision of the principal's current identity policies
 * (and, for `repository/...` resources, the repository policies covering it). Denials are audited
 * (type 'decision', detail.on: 'behalf'), with reason `no_such_principal` when the principal is gone.
 */
export function createPrincipalDecisions(deps: PrincipalDecisionDeps) {
  async function lookup(
    ref: PrincipalReference,
  ): Promise<(Principal & { tags: Record<string, string> }) | undefined> {
    const slash = ref.indexOf('/');
    const type = ref.slice(0, slash);
    const name = ref.slice(slash + 1);
    if (slash < 0 || name === '') return undefined;
    switch (type) {
      case 'role': {
        const r = await deps.identities.getRole(name);
        return r && { type: 'role', name: r.name, groups: [], tags: { ...r.tags } };
      }
      case 'user': {
        const u = await deps.identities.getUser(name);
        return u && !u.disabled
          ? { type: 'user', name: u.name, groups: u.groups, tags: { ...u.tags } }
          : undefined;
      }
      case 'serviceaccount': {
        const a = await deps.identities.getServiceAccount(name);
        return a && { type: 'serviceaccount', name: a.name, groups: a.groups, tags: { ...a.tags } };
      }
      default:
        return undefined;
    }
  }

  return async function decideAs(
    ref: PrincipalReference,
    action: string,
    resource: string,
  ): Promise<Decision> {
    if (!deps.enabled) return allowAll;
    const principal = await lookup(ref);
    let decision = implicitDeny;
    if (principal) {
      const nowMs = deps.now();
      const facts: Record<string, string> = {
        'berth:CurrentTime': new Date(nowMs).toISOString(),
        'berth:EpochTime': String(Math.floor(nowMs / 1000)),
      };
      for (const [k, v] of Object.entries(principal.tags)) facts[`berth:PrincipalTag/${k}`] = v;
      const policies = [
        ...(await deps.policies.policiesFor(principal)),
        ...(resource.startsWith('repository/')
          ? await deps.policies.repositoryPoliciesFor(resource.slice('repository/'.length))
          : []),
      ];
      const context: RequestContext = facts;
      decision = evaluate({ principal, action, resource, context }, policies);
    }
    if (decision.effect === 'Deny')
      await deps.audit({
        type: 'decision',
        actor: ref.slice(0, 256),
        action,
        resource: resource.slice(0, 256),
        decision: 'Deny',
        reason: principal ? reasonCode(decision) : 'no_such_principal',
        detail: { on: 'behalf' },
      });
    return decision;
  };
}
