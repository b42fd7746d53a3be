import { describe, expect, it } from 'vitest';
import type { ManifestPushed } from '../events.ts';
import {
  compileRepositoryGlob,
  compileRule,
  compileTagPattern,
  HookError,
  type HookRule,
  ignoredBecause,
  targetsOf,
  validateRuleFields,
} from './hook-rules.ts';

const runTask = { type: 'runTask', taskDefinition: 'web' } as const;
const roleArn = 'arn:aws:iam::000000000000:role/deployer';

function rule(fields: Record<string, unknown>): HookRule {
  const valid = validateRuleFields({
    name: 'r',
    repository: '**',
    tag: '*',
    roleArn,
    action: runTask,
    ...fields,
  });
  return { id: 'hr-000000000001', ...valid, createdAt: '', updatedAt: '' };
}

function error(fn: () => unknown): HookError {
  try {
    fn();
  } catch (err) {
    if (err instanceof HookError) return err;
    throw err;
  }
  throw new Error('expected a HookError');
}

describe('repository globs', () => {
  it.each([
    ['team/api', ['team/api'], ['team/api2', 'team/api/x', 'other/api']],
    ['team/*', ['team/api', 'team/web'], ['team', 'team/a/b', 'teams/api']],
    ['team/**', ['team/api', 'team/a/b/c'], ['team', 'other/api']],
    ['**/api', ['api', 'team/api', 'a/b/api'], ['team/api2', 'team/api/x']],
    ['team/**/api', ['team/api', 'team/x/y/api'], ['team/apix', 'x/team/api']],
    ['**', ['a', 'a/b/c'], []],
    ['web-?', ['web-1'], ['web-12', 'web-']],
    ['lib.x/*', ['lib.x/a'], ['libxx/a']],
  ])('%s', (glob, yes, no) => {
    const re = compileRepositoryGlob(glob);
    for (const name of yes) expect(re.test(name), `${name} matches ${glob}`).toBe(true);
    for (const name of no) expect(re.test(name), `${name} does not match ${glob}`).toBe(false);
  });

  it('refuses globs that could never name a repository, saying why', () => {
    expect(error(() => rule({ repository: 'Team/*' })).message).toMatch(
      /"Team" in "Team\/\*" may only hold lowercase/,
    );
    expect(error(() => rule({ repository: 'team//api' })).message).toMatch(/empty path segment/);
    expect(error(() => rule({ repository: 'team/a**' })).message).toMatch(
      /'\*\*' must be a whole path segment/,
    );
    expect(error(() => rule({ repository: 'team/-api' })).message).toMatch(
      /not a valid repository name component/,
    );
    expect(error(() => rule({ repository: '' })).field).toBe('repository');
  });
});

describe('tag patterns', () => {
  it('tells exact, glob and semver apart by their text', () => {
    expect(compileTagPattern('latest').kind).toBe('exact');
    expect(compileTagPattern('1.x').kind).toBe('exact');
    expect(compileTagPattern('release-*').kind).toBe('glob');
    expect(compileTagPattern('semver:1.x').kind).toBe('semver');
  });

  it('matches', () => {
    expect(compileTagPattern('latest').matches('latest')).toBe(true);
    expect(compileTagPattern('latest').matches('latest2')).toBe(false);
    const glob = compileTagPattern('release-*');
    expect(['release-1', 'release-2024.1'].map(glob.matches)).toEqual([true, true]);
    expect(['release', 'prerelease-1'].map(glob.matches)).toEqual([false, false]);
    const semver = compileTagPattern('semver:^1.2');
    expect(['1.2.0', 'v1.9.3', '1.3.0-rc.1', '2.0.0', 'latest', '1.2'].map(semver.matches)).toEqual([
      true,
      true,
      false,
      false,
      false,
      false,
    ]);
  });

  it('names what is wrong with a pattern', () => {
    expect(error(() => compileTagPattern('semver:')).message).toMatch(/needs a range/);
    expect(error(() => compileTagPattern('semver:^1.2.3.4')).message).toMatch(/not a valid semver range/);
    expect(error(() => compileTagPattern('-bad')).message).toMatch(/neither a tag/);
    expect(error(() => compileTagPattern('a/*')).message).toMatch(/not a valid tag glob/);
  });
});

describe('validateRuleFields', () => {
  it('fills defaults: enabled, cluster, count, and newerOnly for semver patterns only', () => {
    const semver = validateRuleFields({
      name: ' deploy ',
      repository: 'app',
      tag: 'semver:^1',
      roleArn,
      action: runTask,
    });
    expect(semver).toEqual({
      name: 'deploy',
      repository: 'app',
      tag: 'semver:^1',
      newerOnly: true,
      enabled: true,
      roleArn,
      action: { type: 'runTask', cluster: 'default', taskDefinition: 'web', count: 1 },
    });
    expect(
      validateRuleFields({ name: 'x', repository: 'app', tag: 'latest', roleArn, action: runTask }).newerOnly,
    ).toBe(false);
  });

  it('refuses newerOnly where there is no order', () => {
    const err = error(() =>
      validateRuleFields({
        name: 'x',
        repository: 'app',
        tag: 'latest',
        newerOnly: true,
        roleArn,
        action: runTask,
      }),
    );
    expect(err.field).toBe('newerOnly');
    expect(err.message).toMatch(/needs a "semver:" tag pattern/);
  });

  it('names the field at fault', () => {
    const base = { name: 'x', repository: 'app', tag: 'latest', roleArn };
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ ...base, action: { type: 'deploy' } }, 'action.type', /must be "runTask" or "rollService"/],
      [{ ...base, action: { type: 'runTask' } }, 'action.taskDefinition', /is required/],
      [{ ...base, action: { ...runTask, taskDefinition: 'web:0' } }, 'action.taskDefinition', /not a family/],
      [{ ...base, action: { ...runTask, count: 11 } }, 'action.count', /from 1 to 10/],
      [
        { ...base, action: { ...runTask, overrides: { containerOverrides: [{}] } } },
        'action.overrides.containerOverrides[0].name',
        /must name a container/,
      ],
      [
        { ...base, action: { type: 'rollService', cluster: 'a b', service: 's' } },
        'action.cluster',
        /not a cluster name/,
      ],
      [{ ...base, action: { type: 'rollService' } }, 'action.service', /is required/],
      [{ ...base, action: { type: 'rollService', service: 's', extra: 1 } }, 'action.extra', /unknown field/],
      [{ ...base, tags: 'x', action: runTask }, 'tags', /unknown field/],
      [{ ...base, enabled: 'yes', action: runTask }, 'enabled', /true or false/],
      [{ repository: 'app', tag: 'latest', action: runTask }, 'name', /is required/],
      [{ ...base }, 'action', /is required/],
      [{ ...base, roleArn: undefined, action: runTask }, 'roleArn', /is required: the role the rule acts as/],
      [{ ...base, roleArn: 'deployer', action: runTask }, 'roleArn', /is not a role ARN/],
      [{ ...base, roleArn: 'arn:aws:iam::0:role/deployer', action: runTask }, 'roleArn', /is not a role ARN/],
      [
        { ...base, roleArn: 'arn:aws:iam::000000000000:user/admin', action: runTask },
        'roleArn',
        /is not a role ARN/,
      ],
      [
        { ...base, roleArn: 'arn:aws:iam::000000000000:role/Admin', action: runTask },
        'roleArn',
        /is not a role ARN/,
      ],
      [{ ...base, roleArn: 7, action: runTask }, 'roleArn', /is not a role ARN/],
    ];
    for (const [input, field, message] of cases) {
      const err = error(() => validateRuleFields(input));
      expect(err.code).toBe('INVALID');
      expect(err.field, JSON.stringify(input)).toBe(field);
      expect(err.message).toMatch(message);
      expect(err.message.startsWith(`${field}: `)).toBe(true);
    }
  });

  it('accepts a role ARN with a path, and lets a rule without a role be edited only while disabled', () => {
    const withPath = 'arn:aws:iam::123456789012:role/teams/web/deployer';
    expect(
      validateRuleFields({ name: 'x', repository: 'app', tag: 'latest', roleArn: withPath, action: runTask })
        .roleArn,
    ).toBe(withPath);
    // A rule stored before rules had roles: disabling or renaming it works, enabling it needs a role.
    const { roleArn: _none, ...legacy } = validateRuleFields({
      name: 'x',
      repository: 'app',
      tag: 'latest',
      roleArn,
      action: runTask,
    });
    expect(validateRuleFields({ enabled: false, name: 'old' }, legacy)).toMatchObject({ enabled: false });
    expect(error(() => validateRuleFields({ name: 'still on' }, legacy)).field).toBe('roleArn');
    expect(validateRuleFields({ roleArn }, legacy).roleArn).toBe(roleArn);
  });

  it('applies a patch over a rule, re-deriving newerOnly when only the pattern changes', () => {
    const base = validateRuleFields({
      name: 'x',
      repository: 'app',
      tag: 'latest',
      roleArn,
      action: runTask,
    });
    expect(validateRuleFields({ tag: 'semver:^2' }, base).newerOnly).toBe(true);
    expect(validateRuleFields({ tag: 'semver:^2', newerOnly: false }, base).newerOnly).toBe(false);
    expect(validateRuleFields({ enabled: false }, base)).toEqual({ ...base, enabled: false });
    const semver = validateRuleFields({ tag: 'semver:^2', newerOnly: false }, base);
    expect(validateRuleFields({ name: 'y' }, semver).newerOnly).toBe(false);
  });
});

describe('ignoredBecause', () => {
  const push: ManifestPushed = {
    type: 'manifest.pushed',
    repository: 'app',
    digest: `sha256:${'a'.repeat(64)}`,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    size: 100,
    tags: ['latest'],
    artifactType: 'application/vnd.oci.image.config.v1+json',
    at: '2025-01-01T00:00:00.000Z',
  };

  it('lets tagged images and indexes through', () => {
    expect(ignoredBecause(push)).toBeUndefined();
    expect(
      ignoredBecause({
        ...push,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        artifactType: undefined,
      }),
    ).toBeUndefined();
    expect(
      ignoredBecause({
        ...push,
        mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
        artifactType: undefined,
      }),
    ).toBeUndefined();
  });

  it('ignores referrers, artifacts, untagged pushes and artifact tags', () => {
    expect(ignoredBecause({ ...push, subject: `sha256:${'b'.repeat(64)}` })).toMatch(/referrer/);
    expect(
      ignoredBecause({ ...push, artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json' }),
    ).toMatch(/not an image/);
    expect(ignoredBecause({ ...push, artifactType: 'application/vnd.cncf.helm.config.v1+json' })).toMatch(
      /not an image/,
    );
    expect(ignoredBecause({ ...push, mediaType: 'application/vnd.oci.artifact.manifest.v1+json' })).toMatch(
      /not an image/,
    );
    expect(ignoredBecause({ ...push, tags: [] })).toMatch(/without a tag/);
    expect(ignoredBecause({ ...push, tags: [`sha256-${'c'.repeat(64)}.sig`] })).toMatch(/artifact tags/);
    expect(ignoredBecause({ ...push, tags: [`sha256-${'c'.repeat(64)}`] })).toMatch(/artifact tags/);
  });
});

describe('targetsOf', () => {
  const d = (c: string) => `sha256:${c.repeat(64)}`;
  const tags = (entries: [string, string][]) =>
    new Map(entries.map(([tag, digest], order) => [tag, { digest, order }] as const));

  it('makes one target per digest, named after the highest version among its tags', () => {
    const compiled = compileRule(rule({ tag: 'semver:>=1.0.0' }));
    const targets = targetsOf(
      compiled,
      'app',
      tags([
        ['1.4.0', d('a')],
        ['1.4', d('a')],
        ['v1.10.0', d('a')],
        ['latest', d('a')],
      ]),
    );
    expect(targets).toEqual([{ digest: d('a'), tag: 'v1.10.0', tags: ['1.4.0', 'v1.10.0'], order: 2 }]);
  });

  it('keeps distinct digests apart, in push order, and skips what the rule does not name', () => {
    const compiled = compileRule(rule({ tag: 'release-*' }));
    const targets = targetsOf(
      compiled,
      'app',
      tags([
        ['release-2', d('b')],
        ['latest', d('c')],
        ['release-1', d('a')],
      ]),
    );
    expect(targets.map((t) => [t.tag, t.digest])).toEqual([
      ['release-2', d('b')],
      ['release-1', d('a')],
    ]);
    expect(targetsOf(compileRule(rule({ repository: 'other' })), 'app', tags([['x', d('a')]]))).toEqual([]);
    expect(targetsOf(compileRule(rule({ enabled: false })), 'app', tags([['x', d('a')]]))).toEqual([]);
  });
});
