// berth's IAM-shaped policy language: validation of policy documents and evaluation of requests.
// Identity policies are attached (by callers) to users, groups, roles and service accounts;
// repository policies are attached to a repository or a prefix glob and name their principals.
// Evaluation is IAM's: an explicit Deny anywhere wins, else any Allow allows, else deny.
import { actions, canonicalAction } from './actions.ts';
import {
  type ConditionBlock,
  compileCondition,
  policyError as err,
  globToRegExp,
  type NormalizedContext,
  normalizeContext,
  type PolicyError,
  type RequestContext,
  validateCondition,
} from './conditions.ts';
import { deepFreeze, parseDocument, policyVersion, stringList } from './policy-document.ts';

export type { PolicyError } from './conditions.ts';

export { maxPolicyBytes, maxStatements, policyVersion } from './policy-document.ts';

export type PolicyKind = 'identity' | 'repository';
export type Effect = 'Allow' | 'Deny';
/** `'*'` is everyone, anonymous included. */
export type PrincipalSpec = '*' | { readonly berth: readonly string[] };

/** A validated statement, every list element normalized to an array. */
export interface Statement {
  readonly Sid?: string;
  readonly Effect: Effect;
  readonly Action?: readonly string[];
  readonly NotAction?: readonly string[];
  readonly Resource?: readonly string[];
  readonly NotResource?: readonly string[];
  readonly Principal?: PrincipalSpec;
  readonly NotPrincipal?: PrincipalSpec;
  readonly Condition?: ConditionBlock;
}

export interface Policy {
  readonly Version: typeof policyVersion;
  readonly Id?: string;
  readonly Statement: readonly Statement[];
}

export type ValidationResult = { ok: true; policy: Policy } | { ok: false; errors: PolicyError[] };

// ---- resources ----------------------------------------------------------------------------------

const repoName = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const maxRepoNameLength = 255;
const nameSegment = /^[A-Za-z0-9_.@+=,~*?-]+$/;
/** Resource types other than repositories, with how many `/`-separated name segments each has. */
const namedTypes: Readonly<Record<string, number>> = {
  user: 1,
  group: 1,
  role: 1,
  policy: 1,
  serviceaccount: 1,
  oidc: 1,
  cluster: 1,
  taskdefinition: 1,
  service: 2,
  task: 2,
  hook: 1,
  webhook: 1,
};
/** Types whose names may themselves contain `/` (secret names such as prod/db), up to this many segments. */
const pathTypes: Readonly<Record<string, number>> = { secret: 16 };

/**
 * Whether a resource (or resource pattern) is well formed. A repository pattern must be a valid
 * repository name once each wildcard stands for a letter, so it cannot contain `..`, upper case or
 * separators at the edges, none of which any real repository can match.
 */
export function isValidResource(resource: string): boolean {
  if (resource === '*' || resource === 'audit') return true;
  if (resource.includes('..')) return false;
  const slash = resource.indexOf('/');
  if (slash < 0) return false;
  const type = resource.slice(0, slash);
  const rest = resource.slice(slash + 1);
  if (type === 'repository') {
    const literal = rest.replace(/[*?]/g, 'a');
    return literal.length <= maxRepoNameLength && repoName.test(literal);
  }
  const parts = rest.split('/');
  if (Object.hasOwn(pathTypes, type))
    return (
      parts.length <= (pathTypes[type] as number) && parts.every((p) => nameSegment.test(p) && p !== '.')
    );
  const segments = Object.hasOwn(namedTypes, type) ? namedTypes[type] : undefined;
  if (segments === undefined) return false;
  // `service/*` may stand for every cluster's services; without a `*` the shape must be exact.
  if (parts.length > segments || (parts.length < segments && !rest.includes('*'))) return false;
  return parts.every((p) => nameSegment.test(p) && p !== '.');
}

const isRepositoryResource = (r: string) => r === '*' || (r.startsWith('repository/') && isValidResource(r));

// ---- validation ---------------------------------------------------------------------------------

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

const statementKeys = new Set([
  'Sid',
  'Effect',
  'Action',
  'NotAction',
  'Resource',
  'NotResource',
  'Principal',
  'NotPrincipal',
  'Condition',
]);

function checkAction(a: string): string | undefined {
  if (!/[*?]/.test(a)) return canonicalAction(a) ? undefined : `unknown action ${JSON.stringify(a)}`;
  const re = globToRegExp(a, true);
  // A pattern that matches nothing is almost certainly a typo that would silently grant nothing.
  return actions.some((x) => re.test(x.name))
    ? undefined
    : `action pattern ${JSON.stringify(a)} matches no known action`;
}

const principalEntry = /^(?:\*|anonymous|(?:user|group|role|serviceaccount)\/[A-Za-z0-9_.@+=,~*?-]+)$/;

function validatePrincipal(raw: unknown, path: string, errors: PolicyError[]): PrincipalSpec | undefined {
  if (raw === '*') return '*';
  if (!isObject(raw)) {
    errors.push(err(path, 'must be "*" or an object with a "berth" key'));
    return undefined;
  }
  const before = errors.length;
  for (const k of Object.keys(raw))
    if (k !== 'berth') errors.push(err(path, `unknown key ${JSON.stringify(k)}`));
  if (!Object.hasOwn(raw, 'berth')) errors.push(err(path, 'missing "berth" key'));
  const list = Object.hasOwn(raw, 'berth')
    ? stringList(raw['berth'], `${path}.berth`, errors, (p) =>
        principalEntry.test(p) ? undefined : `malformed principal ${JSON.stringify(p)}`,
      )
    : undefined;
  return errors.length === before && list ? { berth: list } : undefined;
}

/** Exactly one (or, when optional, at most one) of a positive element and its Not form. */
function pickOne(
  s: Record<string, unknown>,
  name: string,
  path: string,
  required: boolean,
  errors: PolicyError[],
) {
  const has = Object.hasOwn(s, name);
  const hasNot = Object.hasOwn(s, `Not${name}`);
  if (has && hasNot) errors.push(err(path, `has both ${name} and Not${name}`));
  else if (required && !has && !hasNot) errors.push(err(path, `needs ${name} or Not${name}`));
  else if (has || hasNot) return { key: has ? name : `Not${name}`, value: s[has ? name : `Not${name}`] };
  return undefined;
}

function validateStatement(
  raw: unknown,
  path: string,
  kind: PolicyKind,
  errors: PolicyError[],
): Statement | undefined {
  if (!isObject(raw)) {
    errors.push(err(path, 'must be an object'));
    return undefined;
  }
  const before = errors.length;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(raw))
    if (!statementKeys.has(k)) errors.push(err(path, `unknown key ${JSON.stringify(k)}`));

  if (Object.hasOwn(raw, 'Sid')) {
    const sid = raw['Sid'];
    if (typeof sid === 'string' && /^[A-Za-z0-9]+$/.test(sid)) out['Sid'] = sid;
    else errors.push(err(`${path}.Sid`, 'must be a non-empty alphanumeric string'));
  }
  if (!Object.hasOwn(raw, 'Effect')) errors.push(err(path, 'missing Effect'));
  else if (raw['Effect'] !== 'Allow' && raw['Effect'] !== 'Deny')
    errors.push(err(`${path}.Effect`, 'must be "Allow" or "Deny"'));
  else out['Effect'] = raw['Effect'];

  const action = pickOne(raw, 'Action', path, true, errors);
  if (action) out[action.key] = stringList(action.value, `${path}.${action.key}`, errors, checkAction);

  const resource = pickOne(raw, 'Resource', path, kind === 'identity', errors);
  if (resource) {
    out[resource.key] = stringList(resource.value, `${path}.${resource.key}`, errors, (r) => {
      if (!isValidResource(r)) return `malformed resource ${JSON.stringify(r)}`;
      if (kind === 'repository' && !isRepositoryResource(r))
        return `a repository policy can only name repository resources, not ${JSON.stringify(r)}`;
      return undefined;
    });
  }

  if (kind === 'identity') {
    for (const k of ['Principal', 'NotPrincipal'])
      if (Object.hasOwn(raw, k)) errors.push(err(path, `${k} is not allowed in an identity policy`));
  } else {
    const principal = pickOne(raw, 'Principal', path, true, errors);
    if (principal)
      out[principal.key] = validatePrincipal(principal.value, `${path}.${principal.key}`, errors);
    // Allow with NotPrincipal grants to everyone not listed, anonymous included: a trap, not a feature.
    if (principal?.key === 'NotPrincipal' && raw['Effect'] === 'Allow')
      errors.push(err(path, 'NotPrincipal can only be used with Effect "Deny"'));
  }

  if (Object.hasOwn(raw, 'Condition'))
    out['Condition'] = validateCondition(raw['Condition'], `${path}.Condition`, errors);
  return errors.length === before ? (out as unknown as Statement) : undefined;
}

/**
 * Validates a policy document (a parsed JSON value or JSON text). The returned policy is frozen and
 * should be kept: evaluation caches its compiled form per policy object.
 */
export function validatePolicy(doc: unknown, kind: PolicyKind): ValidationResult {
  const parsed = parseDocument(doc, 'policy', (raw, path, errors) =>
    validateStatement(raw, path, kind, errors),
  );
  if (!parsed.ok) return parsed;
  const policy: Policy = {
    Version: policyVersion,
    ...(parsed.id !== undefined ? { Id: parsed.id } : {}),
    Statement: parsed.statements,
  };
  return { ok: true, policy: deepFreeze(policy) };
}

// ---- evaluation ---------------------------------------------------------------------------------

export type PrincipalType = 'user' | 'serviceaccount' | 'role' | 'anonymous';

export interface Principal {
  readonly type: PrincipalType;
  readonly name: string;
  readonly groups: readonly string[];
}

export interface AccessRequest {
  readonly principal: Principal;
  readonly action: string;
  /**
   * A concrete resource, or a wildcard one for a collection (the catalog as `repository/*`). Its
   * wildcards are literal characters: only a pattern covering the whole collection matches.
   */
  readonly resource: string;
  readonly context: RequestContext;
}

export interface AttachedPolicy {
  /** e.g. `policy/ci-push`; for a repository policy, the repository resource it is attached to. */
  readonly id: string;
  readonly kind: PolicyKind;
  readonly policy: Policy;
}

export interface MatchedStatement {
  readonly policyId: string;
  readonly sid?: string;
  readonly statementIndex: number;
  readonly effect: Effect;
}

export interface Decision {
  readonly effect: Effect;
  readonly reason: 'explicit-deny' | 'allowed' | 'implicit-deny';
  readonly matched: readonly MatchedStatement[];
}

interface CompiledStatement {
  readonly index: number;
  readonly sid: string | undefined;
  readonly effect: Effect;
  readonly action: RegExp;
  readonly notAction: boolean;
  /** Undefined in a repository policy without Resource: the attachment is the resource. */
  readonly resource: RegExp | undefined;
  readonly notResource: boolean;
  readonly principal: ((p: Principal) => boolean) | undefined;
  readonly notPrincipal: boolean;
  readonly condition: ((ctx: NormalizedContext) => boolean) | undefined;
}

function compilePrincipal(spec: PrincipalSpec): (p: Principal) => boolean {
  const entries = spec === '*' ? ['*'] : spec.berth;
  if (entries.includes('*')) return () => true;
  const anonymous = entries.includes('anonymous');
  const byType = (type: string) => {
    const names = entries.filter((e) => e.startsWith(`${type}/`)).map((e) => e.slice(type.length + 1));
    return names.length > 0 ? globToRegExp(names) : undefined;
  };
  const named: Partial<Record<PrincipalType, RegExp>> = {
    user: byType('user'),
    role: byType('role'),
    serviceaccount: byType('serviceaccount'),
  };
  const groups = byType('group');
  return (p) => {
    if (p.type === 'anonymous') return anonymous;
    return (
      (named[p.type]?.test(p.name) ?? false) || (groups !== undefined && p.groups.some((g) => groups.test(g)))
    );
  };
}

function compileStatement(s: Statement, index: number): CompiledStatement {
  const actionList = s.Action ?? s.NotAction ?? [];
  const resourceList = s.Resource ?? s.NotResource;
  const principal = s.Principal ?? s.NotPrincipal;
  return {
    index,
    sid: s.Sid,
    effect: s.Effect,
    action: globToRegExp(actionList, true),
    notAction: s.NotAction !== undefined,
    resource: resourceList ? globToRegExp(resourceList) : undefined,
    notResource: s.NotResource !== undefined,
    principal: principal ? compilePrincipal(principal) : undefined,
    notPrincipal: s.NotPrincipal !== undefined,
    condition: s.Condition ? compileCondition(s.Condition) : undefined,
  };
}

interface CompiledPolicy {
  /** Validation gives every statement of a repository policy a principal and none of an identity one. */
  readonly kind: PolicyKind;
  readonly statements: readonly CompiledStatement[];
}

const compiledPolicies = new WeakMap<Policy, CompiledPolicy>();
const attachments = new Map<string, RegExp>();

function compiled(policy: Policy): CompiledPolicy {
  let c = compiledPolicies.get(policy);
  if (!c) {
    const statements = policy.Statement.map(compileStatement);
    c = { kind: statements[0]?.principal ? 'repository' : 'identity', statements };
    compiledPolicies.set(policy, c);
  }
  return c;
}

function attachment(id: string): RegExp {
  let re = attachments.get(id);
  if (!re) {
    // Failing loudly beats skipping: a skipped repository policy might have been the one denying.
    if (!id.startsWith('repository/') || !isValidResource(id))
      throw new Error(`repository policy id ${JSON.stringify(id)} is not a repository resource`);
    if (attachments.size >= 10_000) attachments.clear();
    re = globToRegExp(id);
    attachments.set(id, re);
  }
  return re;
}

/** The context with the keys berth derives from the request itself; those cannot be supplied. */
function requestContext(request: AccessRequest): NormalizedContext {
  const ctx = normalizeContext(request.context);
  const { principal, resource } = request;
  ctx.delete('berth:principalname');
  ctx.delete('berth:principalgroups');
  ctx.delete('berth:repository');
  ctx.set('berth:principaltype', [principal.type]);
  if (principal.name !== '') ctx.set('berth:principalname', [principal.name]);
  if (principal.groups.length > 0) ctx.set('berth:principalgroups', principal.groups);
  if (resource.startsWith('repository/')) ctx.set('berth:repository', [resource.slice('repository/'.length)]);
  return ctx;
}

/** No statement allows: the decision for a principal or request nothing speaks for. */
export const implicitDeny: Decision = Object.freeze({
  effect: 'Deny',
  reason: 'implicit-deny',
  matched: Object.freeze([]),
});

/** Everything allowed: development mode's decision (auth.enabled=false). */
export const allowAll: Decision = Object.freeze({
  effect: 'Allow',
  reason: 'allowed',
  matched: Object.freeze([]),
});

/**
 * Decides a request against every policy that applies to it: the caller passes the identity
 * policies of the principal (its own, its groups', its role's) and the repository policies.
 * All matching statements are reported so a simulator can show what decided.
 */
export function evaluate(request: AccessRequest, policies: readonly AttachedPolicy[]): Decision {
  // An unknown action or malformed resource is a caller bug; no policy can speak to it, so deny.
  if (!canonicalAction(request.action) || !isValidResource(request.resource)) return implicitDeny;
  const { principal, action, resource } = request;
  let ctx: NormalizedContext | undefined;
  const matched: MatchedStatement[] = [];
  for (const p of policies) {
    const { kind, statements } = compiled(p.policy);
    // Mixing them up would apply a repository policy to every principal or skip its Principal.
    if (kind !== p.kind)
      throw new Error(`policy ${JSON.stringify(p.id)} has kind ${kind} but was passed as ${p.kind}`);
    const attached = kind === 'repository' ? attachment(p.id) : undefined;
    // A repository policy speaks only for its own repositories, whatever its Resource says.
    if (attached && !attached.test(resource)) continue;
    for (const s of statements) {
      if (s.action.test(action) === s.notAction) continue;
      const resourceRe = s.resource ?? attached;
      if (!resourceRe || resourceRe.test(resource) === s.notResource) continue;
      if (s.principal && s.principal(principal) === s.notPrincipal) continue;
      if (s.condition) {
        ctx ??= requestContext(request);
        if (!s.condition(ctx)) continue;
      }
      matched.push({
        policyId: p.id,
        ...(s.sid !== undefined ? { sid: s.sid } : {}),
        statementIndex: s.index,
        effect: s.effect,
      });
    }
  }
  if (matched.some((m) => m.effect === 'Deny')) return { effect: 'Deny', reason: 'explicit-deny', matched };
  if (matched.length > 0) return { effect: 'Allow', reason: 'allowed', matched };
  return implicitDeny;
}

/**
 * Whether some Allow statement of these policies could allow the principal one of `actionNames`,
 * on some resource, under some conditions: Resource and Condition are not looked at. A coarse
 * question (may this principal use an API at all?) whose every request is decided again.
 */
export function mayAllowAny(
  principal: Principal,
  actionNames: readonly string[],
  policies: readonly AttachedPolicy[],
): boolean {
  for (const p of policies) {
    const { statements } = compiled(p.policy);
    for (const s of statements) {
      if (s.effect !== 'Allow') continue;
      if (s.principal && s.principal(principal) === s.notPrincipal) continue;
      if (actionNames.some((a) => s.action.test(a) !== s.notAction)) return true;
    }
  }
  return false;
}

const reasonCodes = {
  allowed: 'allowed',
  'explicit-deny': 'explicit_deny',
  'implicit-deny': 'no_allow',
} as const;

/** A code safe to show a client: it says why in general terms, never which policy or statement. */
export function reasonCode(decision: Decision): (typeof reasonCodes)[Decision['reason']] {
  return reasonCodes[decision.reason];
}
