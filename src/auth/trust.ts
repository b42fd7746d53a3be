// Role trust policies: who may assume a role with an OIDC id token (AWS's
// AssumeRoleWithWebIdentity). Same shape and Condition language as the other policies, but a
// statement names a federated issuer instead of berth principals, and its conditions test the
// verified token's claims as `oidc:<claim>` keys. Pure: the caller verifies the token first.
//
// An Allow must carry a condition every token has to satisfy. Without one it trusts every token
// the issuer ever signs: for a shared CI service that is every job of every customer.
import {
  type ConditionBlock,
  compileCondition,
  policyError as err,
  type NormalizedContext,
  normalizeContext,
  type PolicyError,
  validateCondition,
} from './conditions.ts';
import { deepFreeze, parseDocument, policyVersion, stringList } from './policy-document.ts';

export type { PolicyError } from './conditions.ts';

export const assumeRoleAction = 'sts:AssumeRoleWithWebIdentity';

export type TrustEffect = 'Allow' | 'Deny';

/** A validated statement; list elements are normalized to arrays. */
export interface TrustStatement {
  readonly Sid?: string;
  readonly Effect: TrustEffect;
  /** Issuer URLs or provider ids; a token matches when its issuer or its provider is listed. */
  readonly Principal: { readonly Federated: readonly string[] };
  readonly Action: readonly string[];
  readonly Condition?: ConditionBlock;
}

export interface TrustPolicy {
  readonly Version: typeof policyVersion;
  readonly Id?: string;
  readonly Statement: readonly TrustStatement[];
}

export type TrustValidationResult = { ok: true; policy: TrustPolicy } | { ok: false; errors: PolicyError[] };

export interface TrustRequest {
  /** The verified token's issuer. */
  readonly issuer: string;
  /** The id of the provider that verified the token, for statements naming providers by id. */
  readonly providerId?: string;
  /** The verified token's claims. */
  readonly claims: Readonly<Record<string, unknown>>;
}

export interface TrustMatch {
  readonly index: number;
  readonly sid?: string;
  readonly effect: TrustEffect;
}

export interface TrustDecision {
  readonly allowed: boolean;
  /** Every statement whose principal and conditions matched, Allow and Deny alike. */
  readonly matched: readonly TrustMatch[];
}

// ---- validation ---------------------------------------------------------------------------------

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

const statementKeys = new Set(['Sid', 'Effect', 'Principal', 'Action', 'Condition']);
/** Elements of identity and repository policies that mean nothing in a trust policy. */
const foreignKeys = new Set(['Resource', 'NotResource', 'NotAction', 'NotPrincipal']);

/** Same grammar as a provider id (federation.ts): it is also a storage path component. */
export const providerIdPattern = /^[A-Za-z0-9_~][A-Za-z0-9._~-]{0,127}$/;

function checkFederated(v: string): string | undefined {
  if (/^https?:\/\//i.test(v)) {
    try {
      new URL(v);
      return undefined;
    } catch {
      return `malformed issuer URL ${JSON.stringify(v)}`;
    }
  }
  return providerIdPattern.test(v)
    ? undefined
    : `${JSON.stringify(v)} is neither an issuer URL (https://...) nor a provider id`;
}

function validatePrincipal(raw: unknown, path: string, errors: PolicyError[]): string[] | undefined {
  if (!isObject(raw)) {
    errors.push(err(path, 'must be an object with a "Federated" key naming the OIDC issuer'));
    return undefined;
  }
  const before = errors.length;
  for (const k of Object.keys(raw))
    if (k !== 'Federated')
      errors.push(err(path, `unknown key ${JSON.stringify(k)}; a trust policy can only name "Federated"`));
  if (!Object.hasOwn(raw, 'Federated')) {
    errors.push(err(path, 'missing "Federated" key naming the OIDC issuer'));
    return undefined;
  }
  const list = stringList(raw['Federated'], `${path}.Federated`, errors, checkFederated);
  return errors.length === before ? list : undefined;
}

const positiveBases = new Set([
  'StringEquals',
  'StringEqualsIgnoreCase',
  'StringLike',
  'NumericEquals',
  'NumericLessThan',
  'NumericLessThanEquals',
  'NumericGreaterThan',
  'NumericGreaterThanEquals',
  'DateEquals',
  'DateLessThan',
  'DateLessThanEquals',
  'DateGreaterThan',
  'DateGreaterThanEquals',
  'Bool',
  'IpAddress',
]);

/**
 * Whether an operator and its values exclude some tokens for certain. Negated operators,
 * IfExists, ForAllValues and Null hold for a token that lacks the claim or has any other value,
 * and `StringLike "*"` holds for every value, so none of them narrows whom the issuer vouches for.
 */
function restricts(operator: string, values: readonly string[]): boolean {
  if (operator.startsWith('ForAllValues:') || operator.endsWith('IfExists')) return false;
  const base = operator.replace(/^ForAnyValue:/, '');
  if (!positiveBases.has(base)) return false;
  return !(base === 'StringLike' && values.some((v) => /^\*+$/.test(v)));
}

/** Pushes an error for every key that is not a claim; returns whether some condition restricts. */
function checkCondition(block: ConditionBlock, path: string, errors: PolicyError[]): boolean {
  let restricting = false;
  for (const [operator, keys] of Object.entries(block)) {
    for (const [key, values] of Object.entries(keys)) {
      if (!key.toLowerCase().startsWith('oidc:'))
        errors.push(
          err(
            `${path}.${operator}`,
            `condition key ${JSON.stringify(key)} is not an oidc:<claim> key; a trust policy tests the token's claims only`,
          ),
        );
      else if (restricts(operator, values)) restricting = true;
    }
  }
  return restricting;
}

function validateStatement(raw: unknown, path: string, errors: PolicyError[]): TrustStatement | undefined {
  if (!isObject(raw)) {
    errors.push(err(path, 'must be an object'));
    return undefined;
  }
  const before = errors.length;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(raw)) {
    if (foreignKeys.has(k)) errors.push(err(path, `${k} is not used in a trust policy`));
    else if (!statementKeys.has(k)) errors.push(err(path, `unknown key ${JSON.stringify(k)}`));
  }

  if (Object.hasOwn(raw, 'Sid')) {
    const sid = raw['Sid'];
    if (typeof sid === 'string' && /^[A-Za-z0-9]+$/.test(sid)) out['Sid'] = sid;
    else errors.push(err(`${path}.Sid`, 'must be a non-empty alphanumeric string'));
  }
  const effect = raw['Effect'];
  if (!Object.hasOwn(raw, 'Effect')) errors.push(err(path, 'missing Effect'));
  else if (effect !== 'Allow' && effect !== 'Deny')
    errors.push(err(`${path}.Effect`, 'must be "Allow" or "Deny"'));
  else out['Effect'] = effect;

  if (!Object.hasOwn(raw, 'Principal')) errors.push(err(path, 'missing Principal'));
  else {
    const federated = validatePrincipal(raw['Principal'], `${path}.Principal`, errors);
    if (federated) out['Principal'] = { Federated: federated };
  }

  if (!Object.hasOwn(raw, 'Action')) errors.push(err(path, `missing Action (${assumeRoleAction})`));
  else {
    const list = stringList(raw['Action'], `${path}.Action`, errors, (a) =>
      a.toLowerCase() === assumeRoleAction.toLowerCase()
        ? undefined
        : `unknown action ${JSON.stringify(a)}; a trust policy allows only ${assumeRoleAction}`,
    );
    if (list) out['Action'] = [assumeRoleAction];
  }

  if (Object.hasOwn(raw, 'Condition')) {
    const condPath = `${path}.Condition`;
    const condBefore = errors.length;
    const block = validateCondition(raw['Condition'], condPath, errors);
    if (block) {
      const restricting = checkCondition(block, condPath, errors);
      if (!restricting && effect === 'Allow' && errors.length === condBefore)
        errors.push(
          err(
            condPath,
            'no condition here requires anything of the token (negated, IfExists, ForAllValues, Null and ' +
              'StringLike "*" conditions all hold for any token); the statement would trust every token the ' +
              "issuer signs, including other tenants' CI jobs",
          ),
        );
      out['Condition'] = block;
    }
  } else if (effect === 'Allow') {
    errors.push(
      err(
        path,
        'an Allow statement needs a Condition on the token\'s claims (e.g. StringLike "oidc:sub"); ' +
          "without one it trusts every token the issuer signs, including other tenants' CI jobs",
      ),
    );
  }
  return errors.length === before ? (out as unknown as TrustStatement) : undefined;
}

/**
 * Validates a trust policy (a parsed JSON value or JSON text). The returned policy is frozen and
 * should be kept: evaluation caches its compiled form per policy object.
 */
export function validateTrustPolicy(doc: unknown): TrustValidationResult {
  const parsed = parseDocument(doc, 'trust policy', validateStatement);
  if (!parsed.ok) return parsed;
  if (!parsed.statements.some((s) => s.Effect === 'Allow'))
    return {
      ok: false,
      errors: [err('Statement', 'has no Allow statement, so no token could assume the role')],
    };
  const policy: TrustPolicy = {
    Version: policyVersion,
    ...(parsed.id !== undefined ? { Id: parsed.id } : {}),
    Statement: parsed.statements,
  };
  return { ok: true, policy: deepFreeze(policy) };
}

// ---- evaluation ---------------------------------------------------------------------------------

function scalar(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if ((typeof v === 'number' && Number.isFinite(v)) || typeof v === 'boolean') return String(v);
  return undefined;
}

/**
 * The claims as condition context: `oidc:<claim>` keys. Strings stay as they are, numbers and
 * booleans become their JSON text, arrays of those become multi-valued keys. Objects, null and
 * arrays holding anything else are left out, so a condition on them sees an absent key.
 */
export function claimsContext(claims: Readonly<Record<string, unknown>>): NormalizedContext {
  const ctx: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(claims)) {
    if (Array.isArray(value)) {
      const values = value.map(scalar);
      if (values.every((v) => v !== undefined)) ctx[`oidc:${name}`] = values as string[];
      continue;
    }
    const v = scalar(value);
    if (v !== undefined) ctx[`oidc:${name}`] = v;
  }
  return normalizeContext(ctx);
}

interface CompiledTrustStatement {
  readonly index: number;
  readonly sid: string | undefined;
  readonly effect: TrustEffect;
  readonly federated: ReadonlySet<string>;
  readonly condition: ((ctx: NormalizedContext) => boolean) | undefined;
}

const compiledPolicies = new WeakMap<TrustPolicy, readonly CompiledTrustStatement[]>();

function compiled(policy: TrustPolicy): readonly CompiledTrustStatement[] {
  let c = compiledPolicies.get(policy);
  if (!c) {
    c = policy.Statement.map((s, index) => ({
      index,
      sid: s.Sid,
      effect: s.Effect,
      federated: new Set(s.Principal.Federated),
      condition: s.Condition ? compileCondition(s.Condition) : undefined,
    }));
    compiledPolicies.set(policy, c);
  }
  return c;
}

/**
 * Whether a verified token may assume the role: some Allow statement matches and no Deny does.
 * Issuers are compared exactly, as OIDC compares `iss`.
 */
export function evaluateTrust(policy: TrustPolicy, request: TrustRequest): TrustDecision {
  let ctx: NormalizedContext | undefined;
  const matched: TrustMatch[] = [];
  for (const s of compiled(policy)) {
    const names =
      s.federated.has(request.issuer) ||
      (request.providerId !== undefined && s.federated.has(request.providerId));
    if (!names) continue;
    if (s.condition) {
      ctx ??= claimsContext(request.claims);
      if (!s.condition(ctx)) continue;
    }
    matched.push({ index: s.index, ...(s.sid !== undefined ? { sid: s.sid } : {}), effect: s.effect });
  }
  const allowed = matched.some((m) => m.effect === 'Allow') && !matched.some((m) => m.effect === 'Deny');
  return { allowed, matched };
}
