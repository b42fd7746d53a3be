import { describe, expect, it } from 'vitest';
import { compareVersions, parseRange, parseVersion, SemverError, satisfies } from './semver.ts';

const v = (s: string) => {
  const parsed = parseVersion(s);
  if (!parsed) throw new Error(`not a version: ${s}`);
  return parsed;
};
const sat = (version: string, range: string, includePrerelease = false) =>
  satisfies(v(version), parseRange(range), { includePrerelease });

describe('parseVersion', () => {
  it('parses strict versions, with an optional leading v and build metadata', () => {
    expect(parseVersion('1.2.3')).toEqual({ major: 1, minor: 2, patch: 3, prerelease: [], text: '1.2.3' });
    expect(parseVersion('v10.0.1')?.text).toBe('10.0.1');
    expect(parseVersion('1.2.3-rc.1+build.5')).toMatchObject({ prerelease: ['rc', 1], text: '1.2.3-rc.1' });
  });

  it('refuses what npm refuses by default', () => {
    for (const tag of [
      'latest',
      '1.2',
      '1',
      '01.2.3',
      '1.2.3-01',
      '1.2.3.4',
      'release-1.2.3',
      'vv1.2.3',
      '',
    ]) {
      expect(parseVersion(tag), tag).toBeUndefined();
    }
  });
});

describe('compareVersions', () => {
  it('orders as the semver specification does', () => {
    // The precedence example from semver.org section 11.
    const ordered = [
      '1.0.0-alpha',
      '1.0.0-alpha.1',
      '1.0.0-alpha.beta',
      '1.0.0-beta',
      '1.0.0-beta.2',
      '1.0.0-beta.11',
      '1.0.0-rc.1',
      '1.0.0',
      '1.0.1',
      '1.1.0',
      '1.10.0',
      '2.0.0',
    ];
    const shuffled = [...ordered].reverse();
    shuffled.sort((a, b) => compareVersions(v(a), v(b)));
    expect(shuffled).toEqual(ordered);
    expect(compareVersions(v('v1.2.3'), v('1.2.3+build'))).toBe(0);
  });
});

describe('satisfies', () => {
  it.each([
    ['^1.2', ['1.2.0', '1.9.9', 'v1.2.7'], ['1.1.9', '2.0.0', '2.0.0-rc.1', '1.3.0-rc.1']],
    ['^1.2.3', ['1.2.3', '1.99.0'], ['1.2.2', '2.0.0']],
    ['^0.2.3', ['0.2.3', '0.2.9'], ['0.3.0', '0.2.2']],
    ['^0.0.3', ['0.0.3'], ['0.0.4', '0.0.2']],
    ['^0.0', ['0.0.0', '0.0.9'], ['0.1.0']],
    ['~1.4', ['1.4.0', '1.4.12'], ['1.5.0', '1.3.9']],
    ['~1.2.3', ['1.2.3', '1.2.9'], ['1.3.0', '1.2.2']],
    ['~1', ['1.0.0', '1.9.0'], ['2.0.0']],
    ['1.x', ['1.0.0', '1.5.2'], ['0.9.9', '2.0.0']],
    ['1.2.*', ['1.2.0', '1.2.7'], ['1.3.0']],
    ['1', ['1.0.0', '1.8.0'], ['2.0.0']],
    ['*', ['0.0.1', '7.0.0'], ['7.0.0-rc.1']],
    ['>=1.0.0 <2.0.0', ['1.0.0', '1.99.99'], ['0.9.9', '2.0.0', '2.0.0-rc.1']],
    ['>= 1.0.0 < 2.0.0', ['1.5.0'], ['2.0.0']],
    ['>1', ['2.0.0'], ['1.9.9']],
    ['>1.2', ['1.3.0'], ['1.2.9']],
    ['<=1.2', ['1.2.9', '0.1.0'], ['1.3.0']],
    ['<1.2', ['1.1.9'], ['1.2.0', '1.2.0-rc.1']],
    ['=1.2.3', ['1.2.3', 'v1.2.3'], ['1.2.4']],
    ['1.2.3 - 2.3.4', ['1.2.3', '2.3.4'], ['2.3.5', '1.2.2']],
    ['1.2 - 2.3', ['1.2.0', '2.3.9'], ['2.4.0']],
    ['^1.0.0 || ^3.0.0', ['1.5.0', '3.1.0'], ['2.0.0']],
    ['>=1.3.0-rc.0 <2', ['1.3.0-rc.1', '1.3.0', '1.4.0'], ['1.4.0-rc.1', '1.2.9']],
    ['^1.2.3-beta.2', ['1.2.3-beta.2', '1.2.3-beta.10', '1.2.3', '1.8.0'], ['1.2.3-beta.1', '1.3.0-beta.3']],
  ])('%s', (range, yes, no) => {
    for (const version of yes) expect(sat(version, range), `${version} in ${range}`).toBe(true);
    for (const version of no) expect(sat(version, range), `${version} not in ${range}`).toBe(false);
  });

  it('lets prereleases in everywhere with includePrerelease', () => {
    expect(sat('1.3.0-rc.1', '^1.2')).toBe(false);
    expect(sat('1.3.0-rc.1', '^1.2', true)).toBe(true);
  });

  it('names the bad part of a range', () => {
    expect(() => parseRange('^1.2.3.4')).toThrow(SemverError);
    expect(() => parseRange('>=banana')).toThrow('"banana" is not a version');
    expect(() => parseRange('1.0.0 - ')).toThrow(SemverError);
  });
});
