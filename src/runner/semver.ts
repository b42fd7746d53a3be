// The part of semantic versioning that push hooks need: parse a tag as a version, compare two
// versions, and test a version against an npm-style range. Written here rather than taken from
// the `semver` package to keep the dependency list short; the range grammar and the prerelease
// rule follow npm's node-semver (https://github.com/npm/node-semver#ranges), so a range means
// here what it means in package.json:
//   - comparators `<`, `<=`, `>`, `>=`, `=`, space-separated (and), sets joined by `||` (or);
//   - `^1.2.3`, `~1.2.3`, X-ranges (`1.x`, `1.2.*`, `1`, `*`) and hyphen ranges (`1.2 - 2.3.4`),
//     desugared into comparators exactly as node-semver does;
//   - a prerelease version (1.3.0-rc.1) satisfies a range only when a comparator of the matching
//     set names a prerelease of the same major.minor.patch, so `^1.2` never picks up an rc by
//     accident but `>=1.3.0-rc.0` does.
// Versions are strict (three numeric parts, as npm parses by default); a leading `v` is allowed
// because tags are written `v1.2.3` at least as often as `1.2.3`.

export interface SemVer {
  readonly major: number;
  readonly minor: number;
  readonly patch: number;
  /** Dot-separated identifiers after `-`; numeric ones as numbers. Empty for a release. */
  readonly prerelease: readonly (string | number)[];
  /** The version without a leading `v` and without build metadata. */
  readonly text: string;
}

export class SemverError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SemverError';
  }
}

const numeric = '0|[1-9]\\d*';
const identifier = `(?:${numeric}|\\d*[A-Za-z-][0-9A-Za-z-]*)`;
const versionPattern = new RegExp(
  `^[vV]?(${numeric})\\.(${numeric})\\.(${numeric})(?:-(${identifier}(?:\\.${identifier})*))?(?:\\+[0-9A-Za-z-]+(?:\\.[0-9A-Za-z-]+)*)?$`,
);

/** The version a tag names, or undefined when the tag is not a (strict) semantic version. */
export function parseVersion(tag: string): SemVer | undefined {
  const m = versionPattern.exec(tag);
  if (!m) return undefined;
  const [major, minor, patch] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (![major, minor, patch].every(Number.isSafeInteger)) return undefined;
  const prerelease = m[4] ? m[4].split('.').map((p) => (/^\d+$/.test(p) ? Number(p) : p)) : [];
  if (prerelease.some((p) => typeof p === 'number' && !Number.isSafeInteger(p))) return undefined;
  const text = `${major}.${minor}.${patch}${m[4] ? `-${m[4]}` : ''}`;
  return { major, minor, patch, prerelease, text };
}

/** Negative, zero or positive as a is lower than, equal to or higher than b (build metadata ignored). */
export function compareVersions(a: SemVer, b: SemVer): number {
  const main = a.major - b.major || a.minor - b.minor || a.patch - b.patch;
  if (main !== 0) return Math.sign(main);
  // A release ranks above any of its prereleases.
  if (a.prerelease.length === 0 || b.prerelease.length === 0) {
    return Math.sign(b.prerelease.length - a.prerelease.length);
  }
  const n = Math.max(a.prerelease.length, b.prerelease.length);
  for (let i = 0; i < n; i++) {
    const x = a.prerelease[i];
    const y = b.prerelease[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    if (x === y) continue;
    // Numeric identifiers rank below alphanumeric ones; like kinds compare naturally.
    if (typeof x === 'number' && typeof y === 'number') return Math.sign(x - y);
    if (typeof x === 'number') return -1;
    if (typeof y === 'number') return 1;
    return x < y ? -1 : 1;
  }
  return 0;
}

type Operator = '<' | '<=' | '>' | '>=' | '=';

interface Comparator {
  readonly op: Operator;
  readonly version: SemVer;
}

/** A parsed range: any one of its sets must hold, and every comparator of that set. */
export interface SemverRange {
  readonly text: string;
  readonly sets: readonly (readonly Comparator[])[];
}

/** A version with possibly missing or wildcard parts, as ranges write them (`1.2`, `1.x`, `*`). */
interface Partial {
  readonly major?: number;
  readonly minor?: number;
  readonly patch?: number;
  readonly prerelease: readonly (string | number)[];
}

const partialPattern = new RegExp(
  `^[vV]?(${numeric}|[xX*])(?:\\.(${numeric}|[xX*])(?:\\.(${numeric}|[xX*])(?:-(${identifier}(?:\\.${identifier})*))?)?)?(?:\\+[0-9A-Za-z-]+(?:\\.[0-9A-Za-z-]+)*)?$`,
);

function parsePartial(text: string, range: string): Partial {
  const m = partialPattern.exec(text);
  if (!m) throw new SemverError(`"${range}" is not a valid semver range: "${text}" is not a version`);
  const part = (s: string | undefined) => (s === undefined || /^[xX*]$/.test(s) ? undefined : Number(s));
  const major = part(m[1]);
  const minor = major === undefined ? undefined : part(m[2]);
  const patch = minor === undefined ? undefined : part(m[3]);
  const prerelease =
    patch !== undefined && m[4] ? m[4].split('.').map((p) => (/^\d+$/.test(p) ? Number(p) : p)) : [];
  return {
    ...(major !== undefined && { major }),
    ...(minor !== undefined && { minor }),
    ...(patch !== undefined && { patch }),
    prerelease,
  };
}

function version(major: number, minor: number, patch: number, prerelease: readonly (string | number)[] = []) {
  const pre = prerelease.length ? `-${prerelease.join('.')}` : '';
  return { major, minor, patch, prerelease, text: `${major}.${minor}.${patch}${pre}` };
}

const cmp = (op: Operator, v: SemVer): Comparator => ({ op, version: v });
/** node-semver's upper bounds end in `-0` so that no prerelease of the excluded version slips in. */
const below = (major: number, minor: number, patch: number) => cmp('<', version(major, minor, patch, [0]));
/** Matches nothing: node-semver's `<0.0.0-0`. */
const nothing = () => [below(0, 0, 0)];

function caret(p: Partial): Comparator[] {
  if (p.major === undefined) return [];
  const { major } = p;
  if (p.minor === undefined) return [cmp('>=', version(major, 0, 0)), below(major + 1, 0, 0)];
  const { minor } = p;
  if (p.patch === undefined) {
    return major > 0 || minor > 0
      ? [cmp('>=', version(major, minor, 0)), major > 0 ? below(major + 1, 0, 0) : below(0, minor + 1, 0)]
      : [cmp('>=', version(0, 0, 0)), below(0, 1, 0)];
  }
  const from = cmp('>=', version(major, minor, p.patch, p.prerelease));
  if (major > 0) return [from, below(major + 1, 0, 0)];
  if (minor > 0) return [from, below(0, minor + 1, 0)];
  return [from, below(0, 0, p.patch + 1)];
}

function tilde(p: Partial): Comparator[] {
  if (p.major === undefined) return [];
  if (p.minor === undefined) return [cmp('>=', version(p.major, 0, 0)), below(p.major + 1, 0, 0)];
  const from = cmp('>=', version(p.major, p.minor, p.patch ?? 0, p.prerelease));
  return [from, below(p.major, p.minor + 1, 0)];
}

/** A bare or `=` partial: an X-range. */
function xRange(p: Partial): Comparator[] {
  if (p.major === undefined) return [];
  if (p.minor === undefined) return [cmp('>=', version(p.major, 0, 0)), below(p.major + 1, 0, 0)];
  if (p.patch === undefined) return [cmp('>=', version(p.major, p.minor, 0)), below(p.major, p.minor + 1, 0)];
  return [cmp('=', version(p.major, p.minor, p.patch, p.prerelease))];
}

/** `<`, `<=`, `>`, `>=` with a partial, as node-semver widens them. */
function inequality(op: Exclude<Operator, '='>, p: Partial): Comparator[] {
  if (p.major === undefined) return op === '<' || op === '>' ? nothing() : [];
  if (p.minor !== undefined && p.patch !== undefined) {
    return [cmp(op, version(p.major, p.minor, p.patch, p.prerelease))];
  }
  const { major } = p;
  const minor = p.minor ?? 0;
  switch (op) {
    case '>=':
      return [cmp('>=', version(major, minor, 0))];
    case '<':
      return [below(major, minor, 0)];
    case '>':
      // >1 means >=2.0.0, >1.2 means >=1.3.0
      return [cmp('>=', p.minor === undefined ? version(major + 1, 0, 0) : version(major, minor + 1, 0))];
    case '<=':
      // <=1 means <2.0.0-0, <=1.2 means <1.3.0-0
      return [p.minor === undefined ? below(major + 1, 0, 0) : below(major, minor + 1, 0)];
  }
}

function hyphen(fromText: string, toText: string, range: string): Comparator[] {
  const from = parsePartial(fromText, range);
  const to = parsePartial(toText, range);
  const lower =
    from.major === undefined
      ? []
      : [cmp('>=', version(from.major, from.minor ?? 0, from.patch ?? 0, from.prerelease))];
  let upper: Comparator[];
  if (to.major === undefined) upper = [];
  else if (to.minor === undefined) upper = [below(to.major + 1, 0, 0)];
  else if (to.patch === undefined) upper = [below(to.major, to.minor + 1, 0)];
  else upper = [cmp('<=', version(to.major, to.minor, to.patch, to.prerelease))];
  return [...lower, ...upper];
}

const comparatorToken = /^(~>?|\^|<=|>=|<|>|=)?\s*(.*)$/s;

function parseSet(text: string, range: string): Comparator[] {
  const trimmed = text.trim();
  const h = /^(\S+)\s+-\s+(\S+)$/.exec(trimmed);
  if (h) return hyphen(h[1]!, h[2]!, range);
  // Glue operators to their version (`>= 1.2` is `>=1.2`), then split on whitespace.
  const tokens = trimmed
    .replace(/(~>?|\^|<=|>=|<|>|=)\s+/g, '$1')
    .split(/\s+/)
    .filter((t) => t !== '');
  if (tokens.length === 0) return []; // '' and '*' alike mean any version
  return tokens.flatMap((token) => {
    const [, op, rest] = comparatorToken.exec(token)!;
    const p = parsePartial(rest ?? '', range);
    switch (op) {
      case '^':
        return caret(p);
      case '~':
      case '~>':
        return tilde(p);
      case '<':
      case '<=':
      case '>':
      case '>=':
        return inequality(op, p);
      default:
        return xRange(p);
    }
  });
}

/** Parses an npm-style range; SemverError with the offending part when it is not one. */
export function parseRange(text: string): SemverRange {
  if (text.length > 256) throw new SemverError('a semver range is at most 256 characters');
  const sets = text.split('||').map((s) => parseSet(s, text));
  return { text, sets };
}

function test(c: Comparator, v: SemVer): boolean {
  const d = compareVersions(v, c.version);
  switch (c.op) {
    case '<':
      return d < 0;
    case '<=':
      return d <= 0;
    case '>':
      return d > 0;
    case '>=':
      return d >= 0;
    case '=':
      return d === 0;
  }
}

function satisfiesSet(set: readonly Comparator[], v: SemVer, includePrerelease: boolean): boolean {
  if (!set.every((c) => test(c, v))) return false;
  if (v.prerelease.length === 0 || includePrerelease) return true;
  return set.some(
    (c) =>
      c.version.prerelease.length > 0 &&
      c.version.major === v.major &&
      c.version.minor === v.minor &&
      c.version.patch === v.patch,
  );
}

export function satisfies(
  v: SemVer,
  range: SemverRange,
  opts: { includePrerelease?: boolean } = {},
): boolean {
  return range.sets.some((set) => satisfiesSet(set, v, opts.includePrerelease ?? false));
}
