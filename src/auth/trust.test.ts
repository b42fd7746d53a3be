import { describe, expect, it } from 'vitest';
import { claimsContext, evaluateTrust, type TrustPolicy, validateTrustPolicy } from './trust.ts';

const github = 'https://token.actions.githubusercontent.com';
const gitlab = 'https://gitlab.example.com';

const githubClaims = {
  iss: github,
  sub: 'repo:acme/api:ref:refs/heads/main',
  aud: ['berth', 'https://github.com/acme'],
  repository: 'acme/api',
  repository_owner: 'acme',
  repository_id: '123456',
  ref: 'refs/heads/main',
  ref_type: 'branch',
  environment: 'production',
  job_workflow_ref: 'acme/workflows/.github/workflows/deploy.yml@refs/heads/main',
  event_name: 'push',
  run_attempt: '1',
  runner_environment: 'github-hosted',
  iat: 1748736000,
  exp: 1748736300,
};

const gitlabClaims = {
  iss: gitlab,
  sub: 'project_path:acme/api:ref_type:branch:ref:main',
  aud: 'berth',
  namespace_id: '72',
  namespace_path: 'acme',
  project_id: '20',
  project_path: 'acme/api',
  user_login: 'alice',
  pipeline_source: 'push',
  ref: 'main',
  ref_type: 'branch',
  ref_protected: 'true',
  environment: 'production',
  environment_protected: 'true',
  iat: 1748736000,
  exp: 1748736300,
};

function allow(federated: unknown, condition: unknown, extra: Record<string, unknown> = {}) {
  return {
    Effect: 'Allow',
    Principal: { Federated: federated },
    Action: 'sts:AssumeRoleWithWebIdentity',
    Condition: condition,
    ...extra,
  };
}

function valid(doc: unknown): TrustPolicy {
  const r = validateTrustPolicy(doc);
  if (!r.ok) throw new Error(r.errors.map((e) => e.message).join('\n'));
  return r.policy;
}

function errorsOf(doc: unknown): string[] {
  const r = validateTrustPolicy(doc);
  expect(r.ok).toBe(false);
  return r.ok ? [] : r.errors.map((e) => e.message);
}

const policyOf = (...statements: unknown[]) => ({ Version: '2012-10-17', Statement: statements });

describe('validateTrustPolicy', () => {
  it('accepts the documented shape and normalizes lists', () => {
    const policy = valid({
      Version: '2012-10-17',
      Statement: [
        {
          Sid: 'MainOnly',
          Effect: 'Allow',
          Principal: { Federated: github },
          Action: 'sts:AssumeRoleWithWebIdentity',
          Condition: {
            StringEquals: { 'oidc:aud': 'berth' },
            StringLike: { 'oidc:sub': 'repo:acme/*:ref:refs/heads/main' },
          },
        },
      ],
    });
    expect(policy.Statement[0]).toEqual({
      Sid: 'MainOnly',
      Effect: 'Allow',
      Principal: { Federated: [github] },
      Action: ['sts:AssumeRoleWithWebIdentity'],
      Condition: {
        StringEquals: { 'oidc:aud': ['berth'] },
        StringLike: { 'oidc:sub': ['repo:acme/*:ref:refs/heads/main'] },
      },
    });
    expect(Object.isFrozen(policy.Statement[0]?.Principal.Federated)).toBe(true);
  });

  it('accepts JSON text, a single statement object, provider ids and a case-insensitive action', () => {
    const text = JSON.stringify({
      Version: '2012-10-17',
      Statement: allow(
        ['gitlab-ci', gitlab],
        { StringEquals: { 'oidc:project_path': 'acme/api' } },
        {
          Action: ['STS:assumerolewithwebidentity'],
        },
      ),
    });
    const policy = valid(text);
    expect(policy.Statement[0]?.Principal.Federated).toEqual(['gitlab-ci', gitlab]);
    expect(policy.Statement[0]?.Action).toEqual(['sts:AssumeRoleWithWebIdentity']);
  });

  it('refuses an Allow without a Condition, naming the risk', () => {
    const messages = errorsOf(
      policyOf({
        Effect: 'Allow',
        Principal: { Federated: github },
        Action: 'sts:AssumeRoleWithWebIdentity',
      }),
    );
    expect(messages).toHaveLength(1);
    expect(messages[0]).toMatch(/^Statement\[0\]: an Allow statement needs a Condition/);
    expect(messages[0]).toMatch(/trusts every token the issuer signs/);
  });

  it('refuses an Allow whose conditions hold for any token', () => {
    for (const condition of [
      { StringLike: { 'oidc:sub': '*' } },
      { StringNotEquals: { 'oidc:sub': 'repo:evil/x:ref:refs/heads/main' } },
      { StringEqualsIfExists: { 'oidc:environment': 'production' } },
      { 'ForAllValues:StringEquals': { 'oidc:aud': 'berth' } },
      { Null: { 'oidc:sub': 'false' } },
      { 'ForAnyValue:StringLike': { 'oidc:aud': ['berth', '**'] } },
    ]) {
      const messages = errorsOf(policyOf(allow(github, condition)));
      expect(messages).toEqual([
        expect.stringMatching(/^Statement\[0\]\.Condition: no condition here requires/),
      ]);
    }
    // One restricting condition is enough, whatever else accompanies it.
    valid(
      policyOf(
        allow(github, {
          StringLike: { 'oidc:sub': 'repo:acme/*' },
          StringNotEquals: { 'oidc:event_name': 'pull_request' },
        }),
      ),
    );
  });

  it('lets a Deny go without a Condition, but not stand alone', () => {
    valid(
      policyOf(allow(github, { StringEquals: { 'oidc:repository_owner': 'acme' } }), {
        Effect: 'Deny',
        Principal: { Federated: 'https://evil.example' },
        Action: 'sts:AssumeRoleWithWebIdentity',
      }),
    );
    expect(
      errorsOf(
        policyOf({
          Effect: 'Deny',
          Principal: { Federated: github },
          Action: 'sts:AssumeRoleWithWebIdentity',
        }),
      ),
    ).toEqual(['Statement: has no Allow statement, so no token could assume the role']);
  });

  it('reports malformed principals, actions, keys and condition keys by path', () => {
    const messages = errorsOf(
      policyOf(
        {
          Effect: 'Allow',
          Principal: { AWS: 'x' },
          Action: 's3:GetObject',
          Resource: '*',
          Condition: { StringEquals: { 'berth:sourceip': '10.0.0.1', 'oidc:sub': 'x' } },
        },
        allow('not a provider', { StringEquals: { 'oidc:sub': 'x' } }),
        allow(github, { StringEquals: { 'oidc:sub': 'x' } }, { Effect: 'Maybe', Sid: 'a-b' }),
        { Principal: '*', Action: [], Extra: 1 },
      ),
    );
    expect(messages).toEqual([
      'Statement[0]: Resource is not used in a trust policy',
      'Statement[0].Principal: unknown key "AWS"; a trust policy can only name "Federated"',
      'Statement[0].Principal: missing "Federated" key naming the OIDC issuer',
      'Statement[0].Action: unknown action "s3:GetObject"; a trust policy allows only sts:AssumeRoleWithWebIdentity',
      'Statement[0].Condition.StringEquals: condition key "berth:sourceip" is not an oidc:<claim> key; a trust policy tests the token\'s claims only',
      'Statement[1].Principal.Federated: "not a provider" is neither an issuer URL (https://...) nor a provider id',
      'Statement[2].Sid: must be a non-empty alphanumeric string',
      'Statement[2].Effect: must be "Allow" or "Deny"',
      'Statement[3]: unknown key "Extra"',
      'Statement[3]: missing Effect',
      'Statement[3].Principal: must be an object with a "Federated" key naming the OIDC issuer',
      'Statement[3].Action: must be a string or a non-empty array of strings',
    ]);
  });

  it('reports document-level problems', () => {
    expect(validateTrustPolicy('{').ok).toBe(false);
    expect(errorsOf([])).toEqual(['trust policy must be a JSON object']);
    expect(errorsOf({ Version: '2008-10-17', Statement: [], Foo: 1 })).toEqual([
      'unknown top-level key "Foo"',
      'Version: must be "2012-10-17"',
      'Statement: must be a statement or a non-empty array of statements',
    ]);
    const s = allow(github, { StringEquals: { 'oidc:sub': 'x' } }, { Sid: 'A' });
    expect(errorsOf(policyOf(s, s))).toEqual(['Statement[1].Sid: duplicate Sid "A" (also Statement[0])']);
    expect(errorsOf(policyOf(allow(github, { StringEquals: { 'oidc:sub': [] } })))[0]).toMatch(
      /^Statement\[0\]\.Condition\.StringEquals\["oidc:sub"\]: must be/,
    );
    expect(errorsOf(policyOf(allow(github, { StringEquls: { 'oidc:sub': 'x' } })))).toEqual([
      'Statement[0].Condition: unknown operator "StringEquls"',
    ]);
  });
});

describe('claimsContext', () => {
  it('maps scalars, stringifies numbers and booleans, keeps scalar arrays and drops the rest', () => {
    const ctx = claimsContext({
      sub: 's',
      n: 42,
      b: false,
      aud: ['a', 'b'],
      mixed: ['a', 1, true],
      nested: { a: 'b' },
      bad: ['a', { x: 1 }],
      nothing: null,
      empty: [],
      Upper: 'U',
    });
    expect(Object.fromEntries(ctx)).toEqual({
      'oidc:sub': ['s'],
      'oidc:n': ['42'],
      'oidc:b': ['false'],
      'oidc:aud': ['a', 'b'],
      'oidc:mixed': ['a', '1', 'true'],
      'oidc:upper': ['U'],
    });
  });
});

describe('evaluateTrust', () => {
  const deployMain = valid(
    policyOf(
      allow(
        github,
        {
          StringEquals: { 'oidc:aud': 'berth', 'oidc:environment': 'production' },
          StringLike: {
            'oidc:sub': 'repo:acme/*:ref:refs/heads/main',
            'oidc:job_workflow_ref': 'acme/workflows/.github/workflows/deploy.yml@*',
          },
        },
        { Sid: 'GithubMain' },
      ),
      allow(
        gitlab,
        {
          StringEquals: { 'oidc:namespace_path': 'acme', 'oidc:ref_protected': 'true' },
          StringLike: { 'oidc:project_path': 'acme/*' },
        },
        { Sid: 'GitlabProtected' },
      ),
    ),
  );

  it('allows a matching GitHub Actions token, aud as an array', () => {
    expect(evaluateTrust(deployMain, { issuer: github, claims: githubClaims })).toEqual({
      allowed: true,
      matched: [{ index: 0, sid: 'GithubMain', effect: 'Allow' }],
    });
  });

  it('allows a matching GitLab token', () => {
    expect(evaluateTrust(deployMain, { issuer: gitlab, claims: gitlabClaims })).toEqual({
      allowed: true,
      matched: [{ index: 1, sid: 'GitlabProtected', effect: 'Allow' }],
    });
  });

  it('follows StringLike wildcards and nothing else', () => {
    const withSub = (sub: string) => ({ issuer: github, claims: { ...githubClaims, sub } });
    expect(evaluateTrust(deployMain, withSub('repo:acme/web:ref:refs/heads/main')).allowed).toBe(true);
    expect(evaluateTrust(deployMain, withSub('repo:acme/a/b:ref:refs/heads/main')).allowed).toBe(true);
    expect(evaluateTrust(deployMain, withSub('repo:acme/api:ref:refs/heads/feature')).allowed).toBe(false);
    expect(evaluateTrust(deployMain, withSub('repo:acmecorp/api:ref:refs/heads/main')).allowed).toBe(false);
    expect(evaluateTrust(deployMain, withSub('repo:evil/x:ref:refs/heads/main-x')).allowed).toBe(false);
    const forked = {
      ...githubClaims,
      job_workflow_ref: 'evil/w/.github/workflows/deploy.yml@refs/heads/main',
    };
    expect(evaluateTrust(deployMain, { issuer: github, claims: forked }).allowed).toBe(false);
    // The audience array must contain the wanted value, not equal it.
    const aud = { ...githubClaims, aud: ['sts.amazonaws.com'] };
    expect(evaluateTrust(deployMain, { issuer: github, claims: aud }).allowed).toBe(false);
  });

  it('fails a condition on a missing claim', () => {
    const { environment: _, ...noEnv } = githubClaims;
    expect(evaluateTrust(deployMain, { issuer: github, claims: noEnv })).toEqual({
      allowed: false,
      matched: [],
    });
    const nested = { ...githubClaims, environment: { name: 'production' } };
    expect(evaluateTrust(deployMain, { issuer: github, claims: nested }).allowed).toBe(false);
  });

  it('matches statements only for the issuer they name', () => {
    // GitLab's claims under GitHub's issuer, and the other way round.
    expect(
      evaluateTrust(deployMain, { issuer: github, claims: { ...gitlabClaims, iss: github } }).allowed,
    ).toBe(false);
    expect(evaluateTrust(deployMain, { issuer: gitlab, claims: githubClaims }).allowed).toBe(false);
    expect(evaluateTrust(deployMain, { issuer: `${github}/`, claims: githubClaims }).allowed).toBe(false);
    expect(evaluateTrust(deployMain, { issuer: 'https://evil.example', claims: githubClaims }).allowed).toBe(
      false,
    );
  });

  it('matches a provider named by id', () => {
    const policy = valid(policyOf(allow('github', { StringEquals: { 'oidc:repository': 'acme/api' } })));
    expect(evaluateTrust(policy, { issuer: github, claims: githubClaims }).allowed).toBe(false);
    expect(
      evaluateTrust(policy, { issuer: github, providerId: 'github', claims: githubClaims }).allowed,
    ).toBe(true);
    expect(
      evaluateTrust(policy, { issuer: github, providerId: 'gitlab', claims: githubClaims }).allowed,
    ).toBe(false);
  });

  it('lets a Deny override any Allow', () => {
    const policy = valid(
      policyOf(
        allow(github, { StringEquals: { 'oidc:repository_owner': 'acme' } }, { Sid: 'Org' }),
        {
          Sid: 'NoPullRequests',
          Effect: 'Deny',
          Principal: { Federated: github },
          Action: 'sts:AssumeRoleWithWebIdentity',
          Condition: { StringEquals: { 'oidc:event_name': ['pull_request', 'pull_request_target'] } },
        },
        {
          Sid: 'OnlyHosted',
          Effect: 'Deny',
          Principal: { Federated: github },
          Action: 'sts:AssumeRoleWithWebIdentity',
          Condition: { StringNotEquals: { 'oidc:runner_environment': 'github-hosted' } },
        },
      ),
    );
    expect(evaluateTrust(policy, { issuer: github, claims: githubClaims }).allowed).toBe(true);
    const pr = { ...githubClaims, event_name: 'pull_request' };
    expect(evaluateTrust(policy, { issuer: github, claims: pr })).toEqual({
      allowed: false,
      matched: [
        { index: 0, sid: 'Org', effect: 'Allow' },
        { index: 1, sid: 'NoPullRequests', effect: 'Deny' },
      ],
    });
    // A negated Deny condition holds when the claim is missing: fail closed.
    const { runner_environment: _, ...noRunner } = githubClaims;
    expect(evaluateTrust(policy, { issuer: github, claims: noRunner }).allowed).toBe(false);
    // A Deny without a Condition shuts an issuer out whatever the claims.
    const shut = valid(
      policyOf(allow(github, { StringEquals: { 'oidc:repository_owner': 'acme' } }), {
        Effect: 'Deny',
        Principal: { Federated: github },
        Action: 'sts:AssumeRoleWithWebIdentity',
      }),
    );
    expect(evaluateTrust(shut, { issuer: github, claims: githubClaims }).allowed).toBe(false);
  });

  it('compares numeric and boolean claims through their text', () => {
    const policy = valid(
      policyOf(
        allow(gitlab, {
          Bool: { 'oidc:ref_protected': 'true' },
          NumericGreaterThanEquals: { 'oidc:run_number': 10 },
          'ForAnyValue:StringEquals': { 'oidc:groups': 'deployers' },
        }),
      ),
    );
    const claims = { ...gitlabClaims, ref_protected: true, run_number: 42, groups: ['devs', 'deployers'] };
    expect(evaluateTrust(policy, { issuer: gitlab, claims }).allowed).toBe(true);
    expect(
      evaluateTrust(policy, { issuer: gitlab, claims: { ...claims, ref_protected: false } }).allowed,
    ).toBe(false);
    expect(evaluateTrust(policy, { issuer: gitlab, claims: { ...claims, run_number: 9 } }).allowed).toBe(
      false,
    );
    expect(evaluateTrust(policy, { issuer: gitlab, claims: { ...claims, groups: ['devs'] } }).allowed).toBe(
      false,
    );
  });

  it('treats condition keys case-insensitively, as IAM does', () => {
    const policy = valid(policyOf(allow(github, { StringEquals: { 'OIDC:Repository': 'acme/api' } })));
    expect(evaluateTrust(policy, { issuer: github, claims: githubClaims }).allowed).toBe(true);
  });
});
