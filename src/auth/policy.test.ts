import { describe, expect, it } from 'vitest';
import { actions, canonicalAction, isKnownAction } from './actions.ts';
import {
  type AccessRequest,
  type AttachedPolicy,
  type Decision,
  evaluate,
  isValidResource,
  maxPolicyBytes,
  mayAllowAny,
  type Policy,
  type PolicyKind,
  type Principal,
  reasonCode,
  validatePolicy,
} from './policy.ts';

function valid(doc: unknown, kind: PolicyKind = 'identity'): Policy {
  const r = validatePolicy(doc, kind);
  if (!r.ok) throw new Error(r.errors.map((e) => e.message).join('\n'));
  return r.policy;
}

function errorsOf(doc: unknown, kind: PolicyKind = 'identity'): string[] {
  const r = validatePolicy(doc, kind);
  if (r.ok) throw new Error('expected validation errors');
  return r.errors.map((e) => e.message);
}

const doc = (...Statement: unknown[]) => ({ Version: '2012-10-17', Statement });
const allow = (Action: unknown, Resource: unknown = '*', extra: object = {}) => ({
  Effect: 'Allow',
  Action,
  Resource,
  ...extra,
});

const alice: Principal = { type: 'user', name: 'alice', groups: ['devs'] };
const anonymous: Principal = { type: 'anonymous', name: '', groups: [] };

function req(action: string, resource: string, principal: Principal = alice, context = {}): AccessRequest {
  return { principal, action, resource, context };
}

const identity = (id: string, ...statements: unknown[]): AttachedPolicy => ({
  id,
  kind: 'identity',
  policy: valid(doc(...statements)),
});
const repository = (id: string, ...statements: unknown[]): AttachedPolicy => ({
  id,
  kind: 'repository',
  policy: valid(doc(...statements), 'repository'),
});

describe('action catalog', () => {
  it('lists every action once with a one-line description', () => {
    expect(actions).toHaveLength(72);
    expect(new Set(actions.map((a) => a.name.toLowerCase())).size).toBe(72);
    expect(actions.filter((a) => a.name.startsWith('registry:'))).toHaveLength(7);
    expect(actions.filter((a) => a.name.startsWith('admin:'))).toHaveLength(40);
    expect(actions.filter((a) => a.name.startsWith('ecs:'))).toHaveLength(24);
    for (const a of actions) {
      expect(a.name).toMatch(/^(registry|admin|ecs|iam):[A-Z][A-Za-z]+$/);
      expect(a.description).toMatch(/^[^\n]{5,120}$/);
    }
  });

  it('matches names case-insensitively and gives the catalog spelling', () => {
    expect(isKnownAction('registry:OverwriteTag')).toBe(true);
    expect(isKnownAction('REGISTRY:overwritetag')).toBe(true);
    expect(isKnownAction('registry:Pul')).toBe(false);
    expect(isKnownAction('registry:*')).toBe(false);
    expect(canonicalAction('ecs:runtask')).toBe('ecs:RunTask');
    expect(canonicalAction('ecs:Run')).toBeUndefined();
  });
});

describe('isValidResource', () => {
  it('accepts every resource type', () => {
    for (const r of [
      '*',
      'audit',
      'repository/app',
      'repository/team-a/api',
      'repository/team-a/*',
      'repository/team-a*',
      'repository/*',
      'repository/a.b_c__d--e/f',
      'repository/team-?/api',
      'user/alice',
      'user/alice@example.com',
      'group/devs',
      'role/ci',
      'policy/ci-push',
      'serviceaccount/builder',
      'oidc/github',
      'cluster/prod',
      'service/prod/web',
      'service/prod/*',
      'service/*',
      'taskdefinition/web',
      'task/prod/0a1b2c',
      'hook/hr-0123456789ab',
      'webhook/*',
      'secret/db-password',
      'secret/prod/db',
      'secret/prod/*',
      'user/*',
    ]) {
      expect(isValidResource(r), r).toBe(true);
    }
  });

  it('refuses malformed resources', () => {
    for (const r of [
      '',
      'repo/x',
      'Repository/x',
      'repository',
      'repository/',
      'repository/Team',
      'repository/team-a/../team-b',
      'repository/team-a/./x',
      'repository/team a',
      'repository/team-a/',
      'repository//x',
      'repository/-x',
      'repository/x-',
      'repository/x.',
      'repository/x\n',
      'secret/a b',
      'secret/x/../y',
      'hook/a/b',
      `repository/${'a'.repeat(256)}`,
      'audit/x',
      'audit*',
      'user/',
      'user/a b',
      'user/a/b',
      'user/..',
      'user/.',
      'user/a..b',
      'service/prod',
      'service/prod/web/x',
      'service//web',
      'task/x',
      'cluster/ä',
      'vault/x',
      '*/x',
      ' *',
    ]) {
      expect(isValidResource(r), JSON.stringify(r)).toBe(false);
    }
  });
});

describe('validatePolicy', () => {
  it('normalizes single values to arrays and freezes the result', () => {
    const p = valid({
      Version: '2012-10-17',
      Id: 'ci',
      Statement: { Sid: 'Push1', Effect: 'Allow', Action: 'registry:Push', Resource: 'repository/app' },
    });
    expect(p).toEqual({
      Version: '2012-10-17',
      Id: 'ci',
      Statement: [{ Sid: 'Push1', Effect: 'Allow', Action: ['registry:Push'], Resource: ['repository/app'] }],
    });
    expect(Object.isFrozen(p)).toBe(true);
    expect(Object.isFrozen(p.Statement[0]?.Action)).toBe(true);
  });

  it('accepts JSON text', () => {
    const p = valid(JSON.stringify(doc(allow(['registry:pull', 'admin:Get*']))));
    expect(p.Statement[0]?.Action).toEqual(['registry:pull', 'admin:Get*']);
    expect(errorsOf('{"Version": ')).toEqual(['policy is not valid JSON']);
  });

  it('reports top-level problems', () => {
    expect(errorsOf([])).toEqual(['policy must be a JSON object']);
    expect(errorsOf(null)).toEqual(['policy must be a JSON object']);
    expect(errorsOf({ Version: '2008-10-17', Statement: [allow('*')], Extra: 1, Id: 5 })).toEqual([
      'unknown top-level key "Extra"',
      'Version: must be "2012-10-17"',
      'Id: must be a string',
    ]);
    expect(errorsOf({ Statement: [allow('*')] })).toEqual(['Version: must be "2012-10-17"']);
    expect(errorsOf({ Version: '2012-10-17' })).toEqual([
      'Statement: must be a statement or a non-empty array of statements',
    ]);
    expect(errorsOf(doc())).toEqual(['Statement: must be a statement or a non-empty array of statements']);
    expect(errorsOf(doc('x'))).toEqual(['Statement[0]: must be an object']);
  });

  it('limits the size and the number of statements', () => {
    const many = Array.from({ length: 101 }, () => allow('registry:Pull'));
    expect(errorsOf(doc(...many))).toEqual(['Statement: has 101 statements, at most 100 are allowed']);
    expect(valid(doc(...many.slice(1))).Statement).toHaveLength(100);
    const big = doc(
      allow(
        'registry:Pull',
        Array.from({ length: 2000 }, (_, i) => `repository/r${i}`),
      ),
    );
    const size = JSON.stringify(big).length;
    expect(size).toBeGreaterThan(maxPolicyBytes);
    expect(errorsOf(big)).toEqual([`policy is ${size} bytes of JSON, more than the 32768 allowed`]);
    // Counted in UTF-8 bytes, not characters.
    const wide = { ...doc(allow('registry:Pull')), Id: 'é'.repeat(16_400) };
    expect(JSON.stringify(wide).length).toBeLessThan(maxPolicyBytes);
    expect(errorsOf(wide)[0]).toMatch(/^policy is \d+ bytes of JSON, more than the 32768 allowed$/);
  });

  it('reports statement keys, Sid and Effect problems', () => {
    expect(
      errorsOf(
        doc(
          { Sid: 'ok1', Effect: 'Allow', Action: '*', Resource: '*', effect: 'Deny' },
          { Sid: 'not ok', Effect: 'allow', Action: '*', Resource: '*' },
          { Action: '*', Resource: '*' },
          { Sid: 'ok1', Effect: 'Deny', Action: '*', Resource: '*' },
        ),
      ),
    ).toEqual([
      'Statement[0]: unknown key "effect"',
      'Statement[1].Sid: must be a non-empty alphanumeric string',
      'Statement[1].Effect: must be "Allow" or "Deny"',
      'Statement[2]: missing Effect',
      'Statement[3].Sid: duplicate Sid "ok1" (also Statement[0])',
    ]);
  });

  it('reports Action problems', () => {
    expect(
      errorsOf(
        doc(
          { Effect: 'Allow', Action: 'registry:Pull', NotAction: 'registry:Push', Resource: '*' },
          { Effect: 'Allow', Resource: '*' },
          allow(['registry:Pull', 'registry:Pushh', 'registry:Pul']),
          allow('registry:Xyz*'),
          allow([]),
          allow(['registry:Pull', 7]),
          allow({ a: 1 }),
          { Effect: 'Deny', NotAction: 'foo:*', Resource: '*' },
        ),
      ),
    ).toEqual([
      'Statement[0]: has both Action and NotAction',
      'Statement[1]: needs Action or NotAction',
      'Statement[2].Action[1]: unknown action "registry:Pushh"',
      'Statement[2].Action[2]: unknown action "registry:Pul"',
      'Statement[3].Action: action pattern "registry:Xyz*" matches no known action',
      'Statement[4].Action: must be a string or a non-empty array of strings',
      'Statement[5].Action[1]: must be a string',
      'Statement[6].Action: must be a string or a non-empty array of strings',
      'Statement[7].NotAction: action pattern "foo:*" matches no known action',
    ]);
  });

  it('accepts action names in any case and with wildcards', () => {
    expect(
      valid(doc(allow(['REGISTRY:PULL', 'registry:*', '*', 'admin:Get*', 'ecs:?unTask', '*:List*'])))
        .Statement,
    ).toHaveLength(1);
  });

  it('reports Resource problems', () => {
    expect(
      errorsOf(
        doc(
          { Effect: 'Allow', Action: '*' },
          { Effect: 'Allow', Action: '*', Resource: '*', NotResource: 'audit' },
          allow('*', 'repo/x'),
          allow('*', ['repository/ok', 'repository/team-a/../team-b', 'repository/Team']),
          allow('*', []),
        ),
      ),
    ).toEqual([
      'Statement[0]: needs Resource or NotResource',
      'Statement[1]: has both Resource and NotResource',
      'Statement[2].Resource: malformed resource "repo/x"',
      'Statement[3].Resource[1]: malformed resource "repository/team-a/../team-b"',
      'Statement[3].Resource[2]: malformed resource "repository/Team"',
      'Statement[4].Resource: must be a string or a non-empty array of strings',
    ]);
  });

  it('refuses Principal in identity policies', () => {
    expect(
      errorsOf(doc(allow('*', '*', { Principal: '*' }), allow('*', '*', { NotPrincipal: '*' }))),
    ).toEqual([
      'Statement[0]: Principal is not allowed in an identity policy',
      'Statement[1]: NotPrincipal is not allowed in an identity policy',
    ]);
  });

  it('requires Principal in repository policies and makes Resource optional', () => {
    const p = valid(
      doc(
        { Effect: 'Allow', Principal: '*', Action: 'registry:Pull' },
        {
          Effect: 'Allow',
          Principal: { berth: 'group/devs' },
          Action: 'registry:Push',
          Resource: 'repository/x/*',
        },
      ),
      'repository',
    );
    expect(p.Statement[0]).toEqual({ Effect: 'Allow', Principal: '*', Action: ['registry:Pull'] });
    expect(p.Statement[1]?.Principal).toEqual({ berth: ['group/devs'] });
  });

  it('reports Principal problems in repository policies', () => {
    const s = (extra: object) => ({ Effect: 'Deny', Action: 'registry:Pull', ...extra });
    expect(
      errorsOf(
        doc(
          s({}),
          s({ Principal: '*', NotPrincipal: '*' }),
          s({ Principal: 'alice' }),
          s({ Principal: { AWS: '*' } }),
          s({ Principal: { berth: ['user/alice', 'bob', 'user/', 'team/x', 'user/a b'] } }),
          s({ Principal: { berth: [] } }),
          { Effect: 'Allow', NotPrincipal: { berth: 'user/alice' }, Action: 'registry:Pull' },
          s({ Principal: '*', Resource: ['user/alice', 'repository/x', '*'] }),
        ),
        'repository',
      ),
    ).toEqual([
      'Statement[0]: needs Principal or NotPrincipal',
      'Statement[1]: has both Principal and NotPrincipal',
      'Statement[2].Principal: must be "*" or an object with a "berth" key',
      'Statement[3].Principal: unknown key "AWS"',
      'Statement[3].Principal: missing "berth" key',
      'Statement[4].Principal.berth[1]: malformed principal "bob"',
      'Statement[4].Principal.berth[2]: malformed principal "user/"',
      'Statement[4].Principal.berth[3]: malformed principal "team/x"',
      'Statement[4].Principal.berth[4]: malformed principal "user/a b"',
      'Statement[5].Principal.berth: must be a string or a non-empty array of strings',
      'Statement[6]: NotPrincipal can only be used with Effect "Deny"',
      'Statement[7].Resource[0]: a repository policy can only name repository resources, not "user/alice"',
    ]);
  });

  it('reports Condition problems with the statement path', () => {
    expect(
      errorsOf(
        doc(
          allow('*', '*'),
          allow('registry:Push', '*', { Condition: { StringEqual: { 'berth:Tag': 'x' } } }),
        ),
      ),
    ).toEqual(['Statement[1].Condition: unknown operator "StringEqual"']);
  });

  it('names the statement without an index when Statement is a single object', () => {
    expect(errorsOf({ Version: '2012-10-17', Statement: allow('registry:Pul') })).toEqual([
      'Statement.Action: unknown action "registry:Pul"',
    ]);
  });

  it('returns the path of each error separately', () => {
    const r = validatePolicy(doc(allow('*'), allow('registry:Pul')), 'identity');
    expect(r).toEqual({
      ok: false,
      errors: [
        { path: 'Statement[1].Action', message: 'Statement[1].Action: unknown action "registry:Pul"' },
      ],
    });
  });
});

describe('evaluate', () => {
  const pullApp = identity('policy/pull', allow('registry:Pull', 'repository/app'));

  it('allows on a matching Allow and reports it', () => {
    expect(evaluate(req('registry:Pull', 'repository/app'), [pullApp])).toEqual({
      effect: 'Allow',
      reason: 'allowed',
      matched: [{ policyId: 'policy/pull', statementIndex: 0, effect: 'Allow' }],
    });
  });

  it('denies implicitly when nothing allows', () => {
    const none: Decision = { effect: 'Deny', reason: 'implicit-deny', matched: [] };
    expect(evaluate(req('registry:Push', 'repository/app'), [pullApp])).toEqual(none);
    expect(evaluate(req('registry:Pull', 'repository/other'), [pullApp])).toEqual(none);
    expect(evaluate(req('registry:Pull', 'repository/app'), [])).toEqual(none);
  });

  it('lets an explicit Deny win over any Allow and lists every matching statement', () => {
    const policies = [
      identity('policy/all', allow('*'), {
        Sid: 'NoDelete',
        Effect: 'Deny',
        Action: 'registry:Delete',
        Resource: '*',
      }),
      identity('policy/more', allow('registry:*', 'repository/*')),
    ];
    expect(evaluate(req('registry:Delete', 'repository/app'), policies)).toEqual({
      effect: 'Deny',
      reason: 'explicit-deny',
      matched: [
        { policyId: 'policy/all', statementIndex: 0, effect: 'Allow' },
        { policyId: 'policy/all', sid: 'NoDelete', statementIndex: 1, effect: 'Deny' },
        { policyId: 'policy/more', statementIndex: 0, effect: 'Allow' },
      ],
    });
    expect(evaluate(req('registry:Push', 'repository/app'), policies).effect).toBe('Allow');
  });

  it('matches actions case-insensitively and by wildcard', () => {
    const p = [identity('policy/p', allow(['REGISTRY:pull', 'admin:Get*', 'ecs:?topTask']))];
    expect(evaluate(req('registry:Pull', '*'), p).effect).toBe('Allow');
    expect(evaluate(req('Registry:PULL', '*'), p).effect).toBe('Allow');
    expect(evaluate(req('admin:GetUser', 'user/bob'), p).effect).toBe('Allow');
    expect(evaluate(req('admin:getrepositorypolicy', 'repository/x'), p).effect).toBe('Allow');
    expect(evaluate(req('admin:ListUsers', '*'), p).effect).toBe('Deny');
    expect(evaluate(req('ecs:StopTask', 'task/prod/1'), p).effect).toBe('Allow');
    expect(evaluate(req('ecs:StartTask', 'task/prod/1'), p).effect).toBe('Deny');
  });

  it('denies an unknown action or a malformed resource whatever the policies say', () => {
    const everything = [identity('policy/admin', allow('*'))];
    expect(evaluate(req('registry:Pul', 'repository/app'), everything).reason).toBe('implicit-deny');
    expect(evaluate(req('registry:Pull', 'repository/team-a/../team-b'), everything).matched).toEqual([]);
    expect(evaluate(req('registry:Pull', 'repository/App'), everything).effect).toBe('Deny');
    expect(evaluate(req('registry:Pull', 'repository/app'), everything).effect).toBe('Allow');
  });

  it('matches resources case-sensitively', () => {
    const p = [identity('policy/p', allow('*', 'user/Alice'))];
    expect(evaluate(req('admin:GetUser', 'user/Alice'), p).effect).toBe('Allow');
    expect(evaluate(req('admin:GetUser', 'user/alice'), p).effect).toBe('Deny');
  });

  it('keeps a prefix glob inside its prefix', () => {
    const p = [identity('policy/team-a', allow('registry:Pull', 'repository/team-a/*'))];
    const pull = (name: string) => evaluate(req('registry:Pull', `repository/${name}`), p).effect;
    expect(pull('team-a/api')).toBe('Allow');
    expect(pull('team-a/x/y')).toBe('Allow');
    expect(pull('team-a')).toBe('Deny');
    expect(pull('team-ab')).toBe('Deny');
    expect(pull('team-ab/api')).toBe('Deny');
    expect(pull('team-b/team-a/api')).toBe('Deny');
    expect(pull('x/team-a/api')).toBe('Deny');
    expect(pull('team-a/../team-b')).toBe('Deny');
    expect(pull('team-a/./api')).toBe('Deny');
    expect(pull('team-a//api')).toBe('Deny');
    expect(pull('team-a/')).toBe('Deny');
    expect(pull('team-a/API')).toBe('Deny');
  });

  it('lets a prefix glob without a slash match longer names, as written', () => {
    const p = [identity('policy/team-a', allow('registry:Pull', 'repository/team-a*'))];
    const pull = (name: string) => evaluate(req('registry:Pull', `repository/${name}`), p).effect;
    expect(pull('team-ab')).toBe('Allow');
    expect(pull('team-a')).toBe('Allow');
    expect(pull('team-a/api')).toBe('Allow');
    expect(pull('team-b')).toBe('Deny');
  });

  it('treats wildcards in a request resource as literal characters', () => {
    const p = [
      identity('policy/a', allow('registry:Catalog', 'repository/team-a/*')),
      identity('policy/b', allow('registry:ListTags', 'repository/*')),
    ];
    expect(evaluate(req('registry:Catalog', 'repository/*'), p).effect).toBe('Deny');
    expect(evaluate(req('registry:ListTags', 'repository/*'), p).effect).toBe('Allow');
  });

  it('applies NotAction and NotResource', () => {
    const p = [
      identity('policy/p', { Effect: 'Allow', NotAction: ['admin:*', 'ecs:*'], Resource: '*' }),
      identity('policy/q', { Effect: 'Deny', Action: 'registry:Pull', NotResource: 'repository/public/*' }),
    ];
    expect(evaluate(req('registry:Pull', 'repository/public/x'), p).effect).toBe('Allow');
    expect(evaluate(req('registry:Push', 'repository/private/x'), p).effect).toBe('Allow');
    expect(evaluate(req('registry:Pull', 'repository/private/x'), p)).toEqual({
      effect: 'Deny',
      reason: 'explicit-deny',
      matched: [
        { policyId: 'policy/p', statementIndex: 0, effect: 'Allow' },
        { policyId: 'policy/q', statementIndex: 0, effect: 'Deny' },
      ],
    });
    expect(evaluate(req('admin:ListUsers', '*'), p).effect).toBe('Deny');
    expect(evaluate(req('ADMIN:ListUsers', '*'), p).reason).toBe('implicit-deny');
  });

  it('makes tags immutable with a Deny on OverwriteTag', () => {
    const p = [
      identity('policy/ci', allow(['registry:Push', 'registry:OverwriteTag'], 'repository/app')),
      identity('policy/immutable', {
        Effect: 'Deny',
        Action: 'registry:OverwriteTag',
        Resource: 'repository/*',
        Condition: { StringLike: { 'berth:Tag': 'v*' } },
      }),
    ];
    expect(
      evaluate(req('registry:OverwriteTag', 'repository/app', alice, { 'berth:Tag': 'latest' }), p).effect,
    ).toBe('Allow');
    expect(
      evaluate(req('registry:OverwriteTag', 'repository/app', alice, { 'berth:Tag': 'v1.2' }), p).effect,
    ).toBe('Deny');
    expect(evaluate(req('registry:Push', 'repository/app', alice, { 'berth:Tag': 'v1.2' }), p).effect).toBe(
      'Allow',
    );
  });

  it('derives principal and repository keys from the request, ignoring supplied ones', () => {
    const p = [
      identity(
        'policy/self',
        allow('registry:*', 'repository/*', {
          Condition: {
            StringEquals: { 'berth:PrincipalType': 'user', 'berth:Repository': 'home/alice' },
            'ForAnyValue:StringEquals': { 'berth:PrincipalGroups': 'devs' },
            StringLike: { 'berth:PrincipalName': 'ali*' },
          },
        }),
      ),
    ];
    expect(evaluate(req('registry:Push', 'repository/home/alice'), p).effect).toBe('Allow');
    const spoof = {
      'berth:PrincipalName': 'alice',
      'berth:PrincipalType': 'user',
      'berth:Repository': 'home/alice',
    };
    const bob: Principal = { type: 'user', name: 'bob', groups: ['devs'] };
    expect(evaluate(req('registry:Push', 'repository/home/alice', bob, spoof), p).effect).toBe('Deny');
    const robot: Principal = { type: 'serviceaccount', name: 'alice', groups: ['devs'] };
    expect(evaluate(req('registry:Push', 'repository/home/alice', robot, spoof), p).effect).toBe('Deny');
    const loner: Principal = { type: 'user', name: 'alice', groups: [] };
    expect(
      evaluate(req('registry:Push', 'repository/home/alice', loner, { 'berth:PrincipalGroups': 'devs' }), p)
        .effect,
    ).toBe('Deny');
    expect(evaluate(req('registry:Push', 'repository/home/bob'), p).effect).toBe('Deny');
    const nameless = [
      identity(
        'policy/anon',
        allow('registry:Pull', '*', { Condition: { Null: { 'berth:PrincipalName': true } } }),
      ),
    ];
    expect(evaluate(req('registry:Pull', 'repository/x', anonymous, spoof), nameless).effect).toBe('Allow');
    expect(evaluate(req('registry:Pull', 'repository/x', alice), nameless).effect).toBe('Deny');
  });

  it('uses the request context for conditions', () => {
    const p = [
      identity(
        'policy/office',
        allow('registry:Push', 'repository/*', {
          Condition: {
            IpAddress: { 'berth:SourceIp': ['10.0.0.0/8', '2001:db8::/32'] },
            Bool: { 'berth:SecureTransport': 'true' },
          },
        }),
      ),
    ];
    const push = (context: Record<string, string>) =>
      evaluate(req('registry:Push', 'repository/x', alice, context), p).effect;
    expect(push({ 'berth:SourceIp': '::ffff:10.2.3.4', 'berth:SecureTransport': 'true' })).toBe('Allow');
    expect(push({ 'berth:SourceIp': '2001:db8::7', 'berth:SecureTransport': 'true' })).toBe('Allow');
    expect(push({ 'berth:SourceIp': '192.0.2.1', 'berth:SecureTransport': 'true' })).toBe('Deny');
    expect(push({ 'berth:SourceIp': '10.2.3.4', 'berth:SecureTransport': 'false' })).toBe('Deny');
    expect(push({ 'berth:SecureTransport': 'true' })).toBe('Deny');
  });
});

describe('evaluate with repository policies', () => {
  const bob: Principal = { type: 'user', name: 'bob', groups: ['qa'] };
  const ci: Principal = { type: 'role', name: 'ci-main', groups: [] };
  const builder: Principal = { type: 'serviceaccount', name: 'builder', groups: ['devs'] };
  const pull = (p: Principal, policies: AttachedPolicy[], name = 'team-a/api') =>
    evaluate(req('registry:Pull', `repository/${name}`, p), policies).effect;

  it('defaults Resource to the repository or prefix the policy is attached to', () => {
    const p = [
      repository('repository/team-a/*', { Effect: 'Allow', Principal: '*', Action: 'registry:Pull' }),
    ];
    expect(evaluate(req('registry:Pull', 'repository/team-a/api', anonymous), p)).toEqual({
      effect: 'Allow',
      reason: 'allowed',
      matched: [{ policyId: 'repository/team-a/*', statementIndex: 0, effect: 'Allow' }],
    });
    expect(pull(anonymous, p, 'team-ab')).toBe('Deny');
    expect(pull(anonymous, p, 'team-a')).toBe('Deny');
    const exact = [
      repository('repository/app', { Effect: 'Allow', Principal: '*', Action: 'registry:Pull' }),
    ];
    expect(pull(alice, exact, 'app')).toBe('Allow');
    expect(pull(alice, exact, 'app/x')).toBe('Deny');
  });

  it('cannot reach beyond its attachment even with a wider Resource', () => {
    const p = [
      repository('repository/team-a/*', {
        Effect: 'Allow',
        Principal: '*',
        Action: 'registry:*',
        Resource: ['*', 'repository/*'],
      }),
    ];
    expect(pull(alice, p, 'team-a/api')).toBe('Allow');
    expect(pull(alice, p, 'team-b/api')).toBe('Deny');
    expect(evaluate(req('registry:Catalog', '*'), p).effect).toBe('Deny');
  });

  it('narrows with Resource and NotResource inside the attachment', () => {
    const p = [
      repository(
        'repository/team-a/*',
        { Effect: 'Allow', Principal: '*', Action: 'registry:Pull', Resource: 'repository/team-a/public/*' },
        {
          Effect: 'Allow',
          Principal: { berth: 'user/alice' },
          Action: 'registry:Pull',
          NotResource: 'repository/team-a/secret',
        },
      ),
    ];
    expect(pull(bob, p, 'team-a/public/x')).toBe('Allow');
    expect(pull(bob, p, 'team-a/api')).toBe('Deny');
    expect(pull(alice, p, 'team-a/api')).toBe('Allow');
    expect(pull(alice, p, 'team-a/secret')).toBe('Deny');
  });

  it('matches each principal form', () => {
    const policy = (...berth: string[]) => [
      repository('repository/team-a/*', { Effect: 'Allow', Principal: { berth }, Action: 'registry:Pull' }),
    ];
    expect(pull(alice, policy('user/alice'))).toBe('Allow');
    expect(pull(bob, policy('user/alice'))).toBe('Deny');
    expect(pull(alice, policy('user/Alice'))).toBe('Deny');
    expect(pull(builder, policy('user/builder'))).toBe('Deny');
    expect(pull(builder, policy('serviceaccount/builder'))).toBe('Allow');
    expect(pull(ci, policy('role/ci-*'))).toBe('Allow');
    expect(pull(ci, policy('user/ci-*'))).toBe('Deny');
    expect(pull(alice, policy('group/devs'))).toBe('Allow');
    expect(pull(builder, policy('group/dev?'))).toBe('Allow');
    expect(pull(bob, policy('group/devs'))).toBe('Deny');
    expect(pull(anonymous, policy('anonymous'))).toBe('Allow');
    expect(pull(alice, policy('anonymous'))).toBe('Deny');
    expect(pull(anonymous, policy('user/*', 'group/*', 'role/*', 'serviceaccount/*'))).toBe('Deny');
    expect(pull(bob, policy('user/*'))).toBe('Allow');
    expect(pull(anonymous, policy('*'))).toBe('Allow');
    expect(pull(bob, policy('group/devs', 'user/bob'))).toBe('Allow');
  });

  it('applies a NotPrincipal Deny to everyone but the listed principals', () => {
    const p = [
      repository(
        'repository/team-a/*',
        { Effect: 'Allow', Principal: '*', Action: 'registry:*' },
        { Effect: 'Deny', NotPrincipal: { berth: ['group/devs', 'role/ci-*'] }, Action: 'registry:Push' },
      ),
    ];
    const push = (who: Principal) => evaluate(req('registry:Push', 'repository/team-a/api', who), p);
    expect(push(alice).effect).toBe('Allow');
    expect(push(ci).effect).toBe('Allow');
    expect(push(bob)).toEqual({
      effect: 'Deny',
      reason: 'explicit-deny',
      matched: [
        { policyId: 'repository/team-a/*', statementIndex: 0, effect: 'Allow' },
        { policyId: 'repository/team-a/*', statementIndex: 1, effect: 'Deny' },
      ],
    });
    expect(push(anonymous).effect).toBe('Deny');
    expect(pull(bob, p)).toBe('Allow');
  });

  it('combines with identity policies: either may allow, a Deny in either wins', () => {
    const idAllow = identity('policy/pull', allow('registry:Pull', 'repository/*'));
    const repoDeny = repository('repository/team-a/*', {
      Effect: 'Deny',
      Principal: { berth: 'user/bob' },
      Action: 'registry:Pull',
    });
    const repoAllow = repository('repository/team-b/*', {
      Effect: 'Allow',
      Principal: { berth: 'user/bob' },
      Action: 'registry:Pull',
    });
    expect(pull(bob, [idAllow, repoDeny], 'team-a/api')).toBe('Deny');
    expect(pull(alice, [idAllow, repoDeny], 'team-a/api')).toBe('Allow');
    expect(pull(bob, [repoAllow], 'team-b/api')).toBe('Allow');
  });

  it('refuses policies used as the wrong kind or attached to a non-repository', () => {
    const repoPolicy = valid(doc({ Effect: 'Deny', Principal: '*', Action: '*' }), 'repository');
    const idPolicy = valid(doc(allow('*')));
    const r = req('registry:Pull', 'repository/app');
    expect(() => evaluate(r, [{ id: 'policy/x', kind: 'identity', policy: repoPolicy }])).toThrow(
      'policy "policy/x" has kind repository but was passed as identity',
    );
    expect(() => evaluate(r, [{ id: 'repository/app', kind: 'repository', policy: idPolicy }])).toThrow(
      'policy "repository/app" has kind identity but was passed as repository',
    );
    expect(() => evaluate(r, [{ id: 'user/app', kind: 'repository', policy: repoPolicy }])).toThrow(
      'repository policy id "user/app" is not a repository resource',
    );
  });
});

describe('mayAllowAny', () => {
  const admin = ['admin:ListUsers', 'admin:CreateUser'];
  it('finds an Allow for one of the actions, whatever its resource or condition', () => {
    const narrow = identity(
      'p',
      allow('admin:ListUsers', 'user/team-*', { Condition: { Bool: { 'berth:SecureTransport': 'true' } } }),
    );
    expect(mayAllowAny(alice, admin, [narrow])).toBe(true);
    expect(mayAllowAny(alice, admin, [identity('p', allow('admin:*'))])).toBe(true);
    expect(
      mayAllowAny(alice, admin, [identity('p', { Effect: 'Allow', NotAction: 'registry:*', Resource: '*' })]),
    ).toBe(true);
  });

  it('finds nothing in Denies, in Allows of other actions, or for principals a statement excludes', () => {
    expect(
      mayAllowAny(alice, admin, [
        identity('p', allow('registry:Pull'), { Effect: 'Deny', Action: 'admin:*', Resource: '*' }),
      ]),
    ).toBe(false);
    expect(
      mayAllowAny(alice, admin, [identity('p', { Effect: 'Allow', NotAction: 'admin:*', Resource: '*' })]),
    ).toBe(false);
    const othersOnly = repository('repository/team/*', {
      Effect: 'Allow',
      Principal: { berth: ['user/bob'] },
      Action: 'registry:Pull',
    });
    expect(mayAllowAny(alice, ['registry:Pull'], [othersOnly])).toBe(false);
    expect(mayAllowAny(alice, admin, [])).toBe(false);
  });
});

describe('reasonCode', () => {
  it('names the reason without policy content', () => {
    expect(reasonCode({ effect: 'Allow', reason: 'allowed', matched: [] })).toBe('allowed');
    expect(
      reasonCode({
        effect: 'Deny',
        reason: 'explicit-deny',
        matched: [{ policyId: 'policy/x', sid: 'Secret', statementIndex: 0, effect: 'Deny' }],
      }),
    ).toBe('explicit_deny');
    expect(reasonCode({ effect: 'Deny', reason: 'implicit-deny', matched: [] })).toBe('no_allow');
  });
});

describe('many requests against many policies', () => {
  it('decides 10k requests against 50 policies correctly', () => {
    // Members of team i may pull and push its prefix; pushes to any prod/ are denied unless from the VPN;
    // every 10th team's repositories are publicly pullable through a repository policy.
    const policies: AttachedPolicy[] = [];
    for (let i = 0; i < 40; i++) {
      policies.push(
        identity(
          `policy/team-${i}`,
          allow(['registry:Pull', 'registry:Push'], `repository/team-${i}/*`, {
            Condition: { 'ForAnyValue:StringEquals': { 'berth:PrincipalGroups': `team-${i}` } },
          }),
        ),
      );
    }
    for (let i = 0; i < 40; i += 10) {
      policies.push(
        repository(`repository/team-${i}/*`, { Effect: 'Allow', Principal: '*', Action: 'registry:Pull' }),
      );
    }
    for (let i = 0; i < 6; i++) {
      policies.push(
        identity(`policy/prod-guard-${i}`, {
          Effect: 'Deny',
          Action: 'registry:Push',
          Resource: `repository/*/prod${i}/*`,
          Condition: { NotIpAddress: { 'berth:SourceIp': '10.8.0.0/16' } },
        }),
      );
    }
    expect(policies).toHaveLength(50);

    const counts = { Allow: 0, Deny: 0 };
    for (let n = 0; n < 10_000; n++) {
      const team = n % 40;
      const target = (n * 7) % 40;
      const prod = n % 9;
      const push = n % 3 === 0;
      const vpn = n % 2 === 0;
      const repo = `team-${target}/${prod < 6 ? `prod${prod}` : 'dev'}/svc-${n % 5}`;
      const d = evaluate(
        {
          principal: { type: 'user', name: `u${n}`, groups: [`team-${team}`, 'staff'] },
          action: push ? 'registry:Push' : 'registry:Pull',
          resource: `repository/${repo}`,
          context: { 'berth:SourceIp': vpn ? '10.8.1.2' : '::ffff:203.0.113.9' },
        },
        policies,
      );
      const own = team === target;
      const expected = push ? own && (prod >= 6 || vpn) : own || target % 10 === 0;
      expect(d.effect, `request ${n}`).toBe(expected ? 'Allow' : 'Deny');
      counts[d.effect]++;
    }
    expect(counts.Allow + counts.Deny).toBe(10_000);
    expect(counts.Allow).toBeGreaterThan(0);
    expect(counts.Deny).toBeGreaterThan(0);
  });
});
