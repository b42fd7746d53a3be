// Docker token-auth scopes (distribution's docs/content/spec/auth/scope.md):
//   repository:<name>:<action>[,<action>...]   registry:catalog:*
// and one of berth's own, in the same grammar:
//   berth:admin:*                              the admin API (/api/v1): a token without it is
//                                              refused there, whatever else it grants
// A name may carry a registry host with a port ("localhost:5000/app"), so the type ends at the
// first colon and the actions start after the last one. A resource class in the type
// ("repository(plugin)") is accepted and dropped: nothing here grants by class.

export type ScopeAction = 'pull' | 'push' | 'delete' | '*';

export interface Scope {
  readonly type: 'repository' | 'registry' | 'berth';
  readonly name: string;
  /** Deduplicated, in the order pull, push, delete, *. */
  readonly actions: readonly ScopeAction[];
}

/** The scope a token must carry to be accepted by the admin API. */
export const adminScope = Object.freeze({
  type: 'berth',
  name: 'admin',
  actions: Object.freeze(['*']),
} as const);
export const adminScopeText = 'berth:admin:*';

const actionOrder: readonly ScopeAction[] = ['pull', 'push', 'delete', '*'];

const hostComponent = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const pathComponent = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const repositoryName = new RegExp(
  `^(?:${hostComponent}(?:\\.${hostComponent})*(?::[0-9]+)?/)?${pathComponent}(?:/${pathComponent})*$`,
);
const resourceType = /^([a-z0-9]+)(?:\([a-z0-9]+\))?$/;
// Distribution's limit on repository names; the host prefix counts too, as clients send it whole.
const maxNameLength = 255;

function sortActions(actions: Iterable<ScopeAction>): ScopeAction[] {
  const set = new Set(actions);
  return actionOrder.filter((a) => set.has(a));
}

function isAction(a: string): a is ScopeAction {
  return (actionOrder as readonly string[]).includes(a);
}

/** One resource scope, or null if it is not one this registry understands. */
export function parseScope(s: string): Scope | null {
  const first = s.indexOf(':');
  const last = s.lastIndexOf(':');
  if (first < 0 || last === first) return null;
  const type = resourceType.exec(s.slice(0, first))?.[1];
  const name = s.slice(first + 1, last);
  const rawActions = s.slice(last + 1).split(',');
  if (!rawActions.every(isAction)) return null;
  const actions = sortActions(rawActions);

  if (type === 'repository') {
    if (name.length > maxNameLength || !repositoryName.test(name)) return null;
    return { type, name, actions };
  }
  if (type === 'registry') {
    // The catalog is the only registry-wide resource distribution defines, and only as '*'.
    if (name !== 'catalog' || actions.length !== 1 || actions[0] !== '*') return null;
    return { type, name, actions };
  }
  if (type === 'berth') {
    if (name !== adminScope.name || actions.length !== 1 || actions[0] !== '*') return null;
    return { type, name, actions };
  }
  return null;
}

export function formatScope(scope: Scope): string {
  return `${scope.type}:${scope.name}:${sortActions(scope.actions).join(',')}`;
}

/**
 * The scopes of a token request, one per resource with the union of the actions asked for.
 * Each item may hold several space-separated scopes (the OAuth2 form); clients that repeat the
 * `scope` parameter send one per item. Scopes that do not parse are dropped, as the token
 * server grants no access for a resource it cannot name rather than failing the whole request.
 */
export function parseScopes(list: Iterable<string>): Scope[] {
  const merged = new Map<string, Scope>();
  for (const item of list) {
    for (const part of item.split(/\s+/)) {
      if (part === '') continue;
      const scope = parseScope(part);
      if (!scope) continue;
      const key = `${scope.type}:${scope.name}`;
      const seen = merged.get(key);
      merged.set(key, seen ? { ...seen, actions: sortActions([...seen.actions, ...scope.actions]) } : scope);
    }
  }
  return [...merged.values()];
}
