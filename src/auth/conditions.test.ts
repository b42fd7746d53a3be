import { describe, expect, it } from 'vitest';
import {
  compileCondition,
  conditionOperators,
  globToRegExp,
  isKnownConditionKey,
  normalizeContext,
  type PolicyError,
  parseCidr,
  parseDate,
  parseIp,
  type RequestContext,
  validateCondition,
} from './conditions.ts';

/** Validates (expecting success) and compiles a Condition; returns a predicate over raw contexts. */
function cond(block: unknown): (ctx: RequestContext) => boolean {
  const errors: PolicyError[] = [];
  const valid = validateCondition(block, 'Condition', errors);
  expect(errors).toEqual([]);
  if (!valid) throw new Error('unreachable');
  const test = compileCondition(valid);
  return (ctx) => test(normalizeContext(ctx));
}

function errorsOf(block: unknown): string[] {
  const errors: PolicyError[] = [];
  const valid = validateCondition(block, 'Statement[0].Condition', errors);
  expect(valid).toBeUndefined();
  return errors.map((e) => e.message);
}

describe('globToRegExp', () => {
  it('treats * as any run including / and the empty run, ? as exactly one character', () => {
    const re = globToRegExp('team-a/*');
    expect(re.test('team-a/api')).toBe(true);
    expect(re.test('team-a/x/y/z')).toBe(true);
    expect(re.test('team-a/')).toBe(true);
    expect(re.test('team-a')).toBe(false);
    expect(re.test('team-ab')).toBe(false);
    const q = globToRegExp('v?');
    expect(q.test('v1')).toBe(true);
    expect(q.test('v')).toBe(false);
    expect(q.test('v12')).toBe(false);
    expect(q.test('v/')).toBe(true);
    // One code point, not one UTF-16 unit.
    expect(q.test('v😀')).toBe(true);
  });

  it('escapes every RegExp metacharacter', () => {
    for (const lit of ['a.b', 'a+b', 'a^b', 'a$b', 'a(b)', 'a[b]', 'a{1}', 'a|b', 'a\\b', 'a/b']) {
      expect(globToRegExp(lit).test(lit)).toBe(true);
    }
    expect(globToRegExp('a.b').test('axb')).toBe(false);
    expect(globToRegExp('a|b').test('a')).toBe(false);
    expect(globToRegExp('a{2}').test('aa')).toBe(false);
    expect(globToRegExp('[ab]').test('a')).toBe(false);
    expect(globToRegExp('a\\d').test('a1')).toBe(false);
  });

  it('agrees with a straightforward matcher on random patterns', () => {
    // Dynamic programming over (pattern, text) positions: obviously right, too slow to ship.
    const reference = (pattern: string, text: string): boolean => {
      const p = [...pattern];
      const t = [...text];
      let row = [true, ...t.map(() => false)];
      for (const c of p) {
        const next = [c === '*' && row[0] === true];
        for (let j = 1; j <= t.length; j++) {
          next[j] =
            c === '*'
              ? row[j] === true || next[j - 1] === true
              : row[j - 1] === true && (c === '?' || c === t[j - 1]);
        }
        row = next;
      }
      return row[t.length] === true;
    };
    let seed = 42;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    const word = (alphabet: string, max: number) =>
      Array.from({ length: rand(max + 1) }, () => alphabet[rand(alphabet.length)]).join('');
    let matches = 0;
    for (let i = 0; i < 3000; i++) {
      const pattern = word('ab*?', 7);
      const text = word('ab', 8);
      const expected = reference(pattern, text);
      expect(globToRegExp(pattern).test(text), `${pattern} ~ ${text}`).toBe(expected);
      if (expected) matches++;
    }
    expect(matches).toBeGreaterThan(300);
  });

  it('matches pathological patterns without catastrophic backtracking', () => {
    const re = globToRegExp(`${'*a'.repeat(30)}*b`);
    expect(re.test('a'.repeat(20_000))).toBe(false);
    expect(re.test(`${'a'.repeat(20_000)}b`)).toBe(true);
    expect(globToRegExp('*1*0*').test('x10y')).toBe(true);
    expect(globToRegExp(['*a*', '*b*c']).test('xbyc')).toBe(true);
  });

  it('is anchored, ORs several patterns and can ignore case', () => {
    const re = globToRegExp(['registry:pull', 'admin:get*']);
    expect(re.test('registry:pull')).toBe(true);
    expect(re.test('admin:getuser')).toBe(true);
    expect(re.test('xregistry:pull')).toBe(false);
    expect(re.test('registry:pullx')).toBe(false);
    expect(re.test('Registry:Pull')).toBe(false);
    expect(globToRegExp(['registry:pull'], true).test('REGISTRY:PULL')).toBe(true);
  });
});

describe('parseIp / parseCidr', () => {
  it('reads IPv4 as IPv4-mapped IPv6', () => {
    expect(parseIp('1.2.3.4')).toBe(0xffff01020304n);
    expect(parseIp('::ffff:1.2.3.4')).toBe(0xffff01020304n);
    expect(parseIp('::ffff:102:304')).toBe(0xffff01020304n);
  });

  it('reads IPv6 forms', () => {
    expect(parseIp('::')).toBe(0n);
    expect(parseIp('::1')).toBe(1n);
    expect(parseIp('2001:db8::1')).toBe(0x20010db8000000000000000000000001n);
    expect(parseIp('1:2:3:4:5:6:7:8')).toBe(0x00010002000300040005000600070008n);
    expect(parseIp('2001:DB8::')).toBe(0x20010db8000000000000000000000000n);
  });

  it('refuses malformed addresses', () => {
    for (const bad of [
      '',
      '1.2.3',
      '1.2.3.4.5',
      '1.2.3.256',
      '01.2.3.4',
      '1.2.3.-1',
      ' 1.2.3.4',
      '1:2:3:4:5:6:7:8:9',
      '1:2:3:4:5:6:7::8',
      '1::2::3',
      ':::',
      '12345::',
      'g::',
      'fe80::1%eth0',
      '[::1]',
      '1.2.3.4::',
      '::ffff:1.2.3',
    ]) {
      expect(parseIp(bad), bad).toBeUndefined();
    }
  });

  it('parses CIDRs, masking host bits', () => {
    expect(parseCidr('10.1.2.3/8')).toEqual({ net: 0xffff0a000000n, mask: ((1n << 104n) - 1n) << 24n });
    expect(parseCidr('::/0')).toEqual({ net: 0n, mask: 0n });
    expect(parseCidr('::1')).toEqual({ net: 1n, mask: (1n << 128n) - 1n });
    for (const bad of [
      '10.0.0.0/33',
      '::/129',
      '10.0.0.0/',
      '10.0.0.0/08',
      '10.0.0.0/8/8',
      '10.0.0.0/-1',
      'x/8',
    ]) {
      expect(parseCidr(bad), bad).toBeUndefined();
    }
  });
});

describe('parseDate', () => {
  it('reads ISO 8601 (UTC without an offset) and epoch seconds', () => {
    expect(parseDate('2026-01-01')).toBe(1767225600000);
    expect(parseDate('2026-01-01T00:00:00Z')).toBe(1767225600000);
    expect(parseDate('2026-01-01T00:00')).toBe(1767225600000);
    expect(parseDate('2026-01-01T01:00:00+01:00')).toBe(1767225600000);
    expect(parseDate('2026-01-01T00:00:00.5Z')).toBe(1767225600500);
    expect(parseDate('1767225600')).toBe(1767225600000);
  });

  it('refuses impossible or non-ISO dates', () => {
    for (const bad of [
      '2026-02-30',
      '2026-13-01',
      '2026-1-1',
      'yesterday',
      '',
      '-5',
      '1.5',
      '2026-01-01T25:00:00Z',
    ]) {
      expect(parseDate(bad), bad).toBeUndefined();
    }
  });
});

describe('condition keys', () => {
  it('knows the fixed keys case-insensitively and the open tag and claim families', () => {
    expect(isKnownConditionKey('berth:SourceIp')).toBe(true);
    expect(isKnownConditionKey('BERTH:SOURCEIP')).toBe(true);
    expect(isKnownConditionKey('berth:PrincipalTag/team')).toBe(true);
    expect(isKnownConditionKey('oidc:repository')).toBe(true);
    expect(isKnownConditionKey('oidc:anything_at/all')).toBe(true);
    expect(isKnownConditionKey('berth:PrincipalTag/')).toBe(false);
    expect(isKnownConditionKey('oidc:')).toBe(false);
    expect(isKnownConditionKey('oidc:a b')).toBe(false);
    expect(isKnownConditionKey('berth:Foo')).toBe(false);
    expect(isKnownConditionKey('aws:SourceIp')).toBe(false);
  });
});

describe('string operators', () => {
  it('StringEquals is exact and case-sensitive, ORs values and ANDs keys', () => {
    const c = cond({ StringEquals: { 'berth:Tag': ['v1', 'v2'], 'berth:Repository': 'app' } });
    expect(c({ 'berth:Tag': 'v1', 'berth:Repository': 'app' })).toBe(true);
    expect(c({ 'berth:Tag': 'v2', 'berth:Repository': 'app' })).toBe(true);
    expect(c({ 'berth:Tag': 'V1', 'berth:Repository': 'app' })).toBe(false);
    expect(c({ 'berth:Tag': 'v3', 'berth:Repository': 'app' })).toBe(false);
    expect(c({ 'berth:Tag': 'v1' })).toBe(false);
    expect(c({})).toBe(false);
  });

  it('ANDs operators', () => {
    const c = cond({ StringEquals: { 'berth:Tag': 'v1' }, Bool: { 'berth:SecureTransport': true } });
    expect(c({ 'berth:Tag': 'v1', 'berth:SecureTransport': 'true' })).toBe(true);
    expect(c({ 'berth:Tag': 'v1', 'berth:SecureTransport': 'false' })).toBe(false);
  });

  it('StringNotEquals is the NOT of the OR and holds for an absent key', () => {
    const c = cond({ StringNotEquals: { 'berth:Tag': ['latest', 'stable'] } });
    expect(c({ 'berth:Tag': 'v1' })).toBe(true);
    expect(c({ 'berth:Tag': 'latest' })).toBe(false);
    expect(c({ 'berth:Tag': 'stable' })).toBe(false);
    expect(c({})).toBe(true);
  });

  it('IgnoreCase variants fold case on both sides', () => {
    const eq = cond({ StringEqualsIgnoreCase: { 'oidc:ref': 'Refs/Heads/Main' } });
    expect(eq({ 'oidc:ref': 'refs/heads/MAIN' })).toBe(true);
    expect(eq({ 'oidc:ref': 'refs/heads/dev' })).toBe(false);
    const ne = cond({ StringNotEqualsIgnoreCase: { 'oidc:ref': 'refs/heads/main' } });
    expect(ne({ 'oidc:ref': 'REFS/HEADS/MAIN' })).toBe(false);
    expect(ne({ 'oidc:ref': 'refs/heads/dev' })).toBe(true);
    expect(ne({})).toBe(true);
  });

  it('StringLike and StringNotLike use case-sensitive globs', () => {
    const like = cond({ StringLike: { 'oidc:sub': ['repo:acme/*:ref:refs/heads/main', 'repo:acme/tool?'] } });
    expect(like({ 'oidc:sub': 'repo:acme/api:ref:refs/heads/main' })).toBe(true);
    expect(like({ 'oidc:sub': 'repo:acme/tool1' })).toBe(true);
    expect(like({ 'oidc:sub': 'repo:acme/tool12' })).toBe(false);
    expect(like({ 'oidc:sub': 'repo:ACME/api:ref:refs/heads/main' })).toBe(false);
    expect(like({})).toBe(false);
    const notLike = cond({ StringNotLike: { 'berth:Tag': 'release-*' } });
    expect(notLike({ 'berth:Tag': 'release-1' })).toBe(false);
    expect(notLike({ 'berth:Tag': 'dev-1' })).toBe(true);
    expect(notLike({})).toBe(true);
  });

  it('treats condition keys case-insensitively in the policy and in the context', () => {
    const c = cond({ StringEquals: { 'BERTH:tag': 'v1' } });
    expect(c({ 'berth:Tag': 'v1' })).toBe(true);
    expect(c({ 'BERTH:TAG': 'v1' })).toBe(true);
    expect(c({ 'berth:Tag': 'v2' })).toBe(false);
  });
});

describe('numeric operators', () => {
  const ctx = { 'oidc:run_attempt': '3' };
  const run = (op: string, v: unknown, c: RequestContext = ctx) =>
    cond({ [op]: { 'oidc:run_attempt': v } })(c);

  it('compare the request value against the policy value', () => {
    expect(run('NumericEquals', 3)).toBe(true);
    expect(run('NumericEquals', '3.0')).toBe(true);
    expect(run('NumericEquals', 4)).toBe(false);
    expect(run('NumericNotEquals', 4)).toBe(true);
    expect(run('NumericNotEquals', 3)).toBe(false);
    expect(run('NumericLessThan', 4)).toBe(true);
    expect(run('NumericLessThan', 3)).toBe(false);
    expect(run('NumericLessThanEquals', 3)).toBe(true);
    expect(run('NumericLessThanEquals', 2)).toBe(false);
    expect(run('NumericGreaterThan', 2)).toBe(true);
    expect(run('NumericGreaterThan', 3)).toBe(false);
    expect(run('NumericGreaterThanEquals', 3)).toBe(true);
    expect(run('NumericGreaterThanEquals', 4)).toBe(false);
    expect(run('NumericLessThan', [1, 10])).toBe(true);
    expect(run('NumericGreaterThan', -1.5)).toBe(true);
  });

  it('never matches a request value that is not a number, so only the negated form holds', () => {
    expect(run('NumericEquals', 3, { 'oidc:run_attempt': 'three' })).toBe(false);
    expect(run('NumericLessThan', 3, { 'oidc:run_attempt': '' })).toBe(false);
    expect(run('NumericNotEquals', 3, { 'oidc:run_attempt': 'three' })).toBe(true);
    expect(run('NumericEquals', 3, {})).toBe(false);
  });
});

describe('date operators', () => {
  const at = { 'berth:CurrentTime': '2026-06-01T12:00:00Z' };
  const run = (op: string, v: unknown, c: RequestContext = at) =>
    cond({ [op]: { 'berth:CurrentTime': v } })(c);

  it('compare instants given as ISO 8601 or epoch seconds', () => {
    expect(run('DateEquals', '2026-06-01T14:00:00+02:00')).toBe(true);
    expect(run('DateEquals', 1780315200)).toBe(true);
    expect(run('DateNotEquals', '2026-06-01T12:00:01Z')).toBe(true);
    expect(run('DateNotEquals', '2026-06-01T12:00:00Z')).toBe(false);
    expect(run('DateLessThan', '2027-01-01')).toBe(true);
    expect(run('DateLessThan', '2026-06-01T12:00:00Z')).toBe(false);
    expect(run('DateLessThanEquals', '2026-06-01T12:00:00Z')).toBe(true);
    expect(run('DateLessThanEquals', '2026-01-01')).toBe(false);
    expect(run('DateGreaterThan', '2026-01-01')).toBe(true);
    expect(run('DateGreaterThan', '2026-06-01T12:00:00Z')).toBe(false);
    expect(run('DateGreaterThanEquals', '2026-06-01T12:00:00Z')).toBe(true);
    expect(run('DateGreaterThanEquals', '2027-01-01')).toBe(false);
  });

  it('reads an epoch-seconds request value too', () => {
    const c = cond({ DateGreaterThan: { 'berth:EpochTime': '2026-01-01T00:00:00Z' } });
    expect(c({ 'berth:EpochTime': '1767225601' })).toBe(true);
    expect(c({ 'berth:EpochTime': '1767225600' })).toBe(false);
    expect(c({ 'berth:EpochTime': 'soon' })).toBe(false);
  });
});

describe('Bool and Null', () => {
  it('Bool accepts JSON or string booleans and matches the request case-insensitively', () => {
    const t = cond({ Bool: { 'berth:SecureTransport': true } });
    expect(t({ 'berth:SecureTransport': 'true' })).toBe(true);
    expect(t({ 'berth:SecureTransport': 'TRUE' })).toBe(true);
    expect(t({ 'berth:SecureTransport': 'false' })).toBe(false);
    expect(t({ 'berth:SecureTransport': 'yes' })).toBe(false);
    expect(t({})).toBe(false);
    const f = cond({ Bool: { 'berth:SecureTransport': 'false' } });
    expect(f({ 'berth:SecureTransport': 'false' })).toBe(true);
    expect(f({ 'berth:SecureTransport': 'true' })).toBe(false);
  });

  it('Null true means absent (undefined or empty), false means present', () => {
    const absent = cond({ Null: { 'berth:Tag': 'true' } });
    expect(absent({})).toBe(true);
    expect(absent({ 'berth:Tag': undefined })).toBe(true);
    expect(absent({ 'berth:Tag': [] })).toBe(true);
    expect(absent({ 'berth:Tag': 'v1' })).toBe(false);
    expect(absent({ 'berth:Tag': '' })).toBe(false);
    const present = cond({ Null: { 'berth:Tag': false } });
    expect(present({ 'berth:Tag': 'v1' })).toBe(true);
    expect(present({})).toBe(false);
  });
});

describe('IP operators', () => {
  const ip = (cidrs: string | string[], addr: string | undefined, op = 'IpAddress') =>
    cond({ [op]: { 'berth:SourceIp': cidrs } })(addr === undefined ? {} : { 'berth:SourceIp': addr });

  it('matches IPv4 CIDRs and single addresses', () => {
    expect(ip('10.0.0.0/8', '10.255.1.2')).toBe(true);
    expect(ip('10.0.0.0/8', '11.0.0.1')).toBe(false);
    expect(ip('192.168.1.7', '192.168.1.7')).toBe(true);
    expect(ip('192.168.1.7', '192.168.1.8')).toBe(false);
    expect(ip(['10.0.0.0/8', '172.16.0.0/12'], '172.31.255.255')).toBe(true);
    expect(ip('172.16.0.0/12', '172.32.0.0')).toBe(false);
    expect(ip('0.0.0.0/0', '8.8.8.8')).toBe(true);
  });

  it('matches an IPv4-mapped IPv6 client against an IPv4 CIDR', () => {
    expect(ip('10.0.0.0/8', '::ffff:10.1.2.3')).toBe(true);
    expect(ip('10.0.0.0/8', '::FFFF:10.1.2.3')).toBe(true);
    expect(ip('10.0.0.0/8', '::ffff:11.1.2.3')).toBe(false);
    expect(ip('::ffff:10.0.0.0/104', '10.9.9.9')).toBe(true);
  });

  it('matches IPv6 CIDRs and single addresses, without confusing them with IPv4', () => {
    expect(ip('2001:db8::/32', '2001:db8:1::5')).toBe(true);
    expect(ip('2001:db8::/32', '2001:db9::5')).toBe(false);
    expect(ip('::1', '::1')).toBe(true);
    expect(ip('::1', '::2')).toBe(false);
    expect(ip('0.0.0.0/0', '2001:db8::1')).toBe(false);
    expect(ip('10.0.0.0/8', '::a00:1')).toBe(false);
  });

  it('never matches a malformed or absent request address', () => {
    expect(ip('0.0.0.0/0', 'localhost')).toBe(false);
    expect(ip('0.0.0.0/0', undefined)).toBe(false);
  });

  it('NotIpAddress is the NOT of the OR and holds for an absent key', () => {
    expect(ip(['10.0.0.0/8', '::1'], '10.1.1.1', 'NotIpAddress')).toBe(false);
    expect(ip(['10.0.0.0/8', '::1'], '::1', 'NotIpAddress')).toBe(false);
    expect(ip(['10.0.0.0/8', '::1'], '::ffff:10.0.0.1', 'NotIpAddress')).toBe(false);
    expect(ip(['10.0.0.0/8', '::1'], '192.0.2.1', 'NotIpAddress')).toBe(true);
    expect(ip('10.0.0.0/8', undefined, 'NotIpAddress')).toBe(true);
  });
});

describe('IfExists', () => {
  it('holds for an absent key and otherwise behaves like the plain operator', () => {
    const cases: [string, unknown, string][] = [
      ['StringEqualsIfExists', 'v1', 'v2'],
      ['StringNotEqualsIfExists', 'v1', 'v1'],
      ['StringLikeIfExists', 'v*', 'x'],
      ['NumericLessThanIfExists', '5', '9'],
      ['DateGreaterThanIfExists', '2026-01-01', '2025-01-01'],
      ['BoolIfExists', true, 'false'],
      ['IpAddressIfExists', '10.0.0.0/8', '11.0.0.1'],
      ['NotIpAddressIfExists', '10.0.0.0/8', '10.0.0.1'],
      ['StringEqualsIgnoreCaseIfExists', 'A', 'b'],
    ];
    for (const [op, value, failing] of cases) {
      const c = cond({ [op]: { 'berth:Tag': value } });
      expect(c({}), `${op} absent`).toBe(true);
      expect(c({ 'berth:Tag': failing }), `${op} failing`).toBe(false);
    }
    const eq = cond({ StringEqualsIfExists: { 'berth:Tag': 'v1' } });
    expect(eq({ 'berth:Tag': 'v1' })).toBe(true);
  });
});

describe('multi-valued keys', () => {
  const groups = (g?: string[]) => (g === undefined ? {} : { 'berth:PrincipalGroups': g });

  it('a plain positive operator holds if any value matches; a negated one if none does', () => {
    const eq = cond({ StringEquals: { 'berth:PrincipalGroups': 'admins' } });
    expect(eq(groups(['devs', 'admins']))).toBe(true);
    expect(eq(groups(['devs']))).toBe(false);
    const ne = cond({ StringNotEquals: { 'berth:PrincipalGroups': 'contractors' } });
    expect(ne(groups(['devs', 'admins']))).toBe(true);
    expect(ne(groups(['devs', 'contractors']))).toBe(false);
  });

  it('ForAnyValue: some request value satisfies; false when absent or empty', () => {
    const any = cond({ 'ForAnyValue:StringEquals': { 'berth:PrincipalGroups': ['admins', 'ops'] } });
    expect(any(groups(['devs', 'ops']))).toBe(true);
    expect(any(groups(['devs']))).toBe(false);
    expect(any(groups([]))).toBe(false);
    expect(any(groups())).toBe(false);
    const anyNot = cond({ 'ForAnyValue:StringNotEquals': { 'berth:PrincipalGroups': 'devs' } });
    expect(anyNot(groups(['devs', 'ops']))).toBe(true);
    expect(anyNot(groups(['devs']))).toBe(false);
    expect(anyNot(groups())).toBe(false);
  });

  it('ForAllValues: every request value satisfies; true when absent or empty', () => {
    const all = cond({ 'ForAllValues:StringLike': { 'berth:PrincipalGroups': ['team-*', 'everyone'] } });
    expect(all(groups(['team-a', 'everyone']))).toBe(true);
    expect(all(groups(['team-a', 'admins']))).toBe(false);
    expect(all(groups([]))).toBe(true);
    expect(all(groups())).toBe(true);
    const allNot = cond({ 'ForAllValues:StringNotEquals': { 'berth:PrincipalGroups': ['admins', 'ops'] } });
    expect(allNot(groups(['devs', 'qa']))).toBe(true);
    expect(allNot(groups(['devs', 'ops']))).toBe(false);
  });

  it('IfExists makes ForAnyValue hold for an absent key', () => {
    const c = cond({ 'ForAnyValue:StringEqualsIfExists': { 'oidc:aud': 'berth' } });
    expect(c({})).toBe(true);
    expect(c({ 'oidc:aud': ['other', 'berth'] })).toBe(true);
    expect(c({ 'oidc:aud': ['other'] })).toBe(false);
    const all = cond({ 'ForAllValues:StringEqualsIfExists': { 'oidc:aud': 'berth' } });
    expect(all({})).toBe(true);
    expect(all({ 'oidc:aud': ['berth', 'other'] })).toBe(false);
  });

  it('merges context keys that differ only in case', () => {
    const c = cond({ 'ForAllValues:StringEquals': { 'oidc:aud': 'berth' } });
    expect(c({ 'oidc:aud': 'berth', 'OIDC:AUD': 'other' })).toBe(false);
  });
});

describe('validateCondition', () => {
  it('normalizes values to string arrays', () => {
    const errors: PolicyError[] = [];
    const block = validateCondition(
      { Bool: { 'berth:SecureTransport': true }, NumericLessThan: { 'oidc:n': [1, '2'] } },
      'C',
      errors,
    );
    expect(errors).toEqual([]);
    expect(block).toEqual({
      Bool: { 'berth:SecureTransport': ['true'] },
      NumericLessThan: { 'oidc:n': ['1', '2'] },
    });
  });

  it('accepts every operator, with IfExists and qualifiers except on Null', () => {
    expect(conditionOperators).toHaveLength(22);
    for (const base of conditionOperators) {
      const value = base.startsWith('Date')
        ? '2026-01-01'
        : base.startsWith('Numeric')
          ? '1'
          : base.includes('Ip')
            ? '10.0.0.0/8'
            : base === 'Bool' || base === 'Null'
              ? 'true'
              : 'x';
      const names =
        base === 'Null'
          ? [base]
          : [base, `${base}IfExists`, `ForAnyValue:${base}`, `ForAllValues:${base}IfExists`];
      for (const name of names) {
        const errors: PolicyError[] = [];
        validateCondition({ [name]: { 'berth:Tag': value } }, 'C', errors);
        expect(errors, name).toEqual([]);
      }
    }
  });

  it('reports unknown operators at the Condition', () => {
    for (const name of [
      'StringEqual',
      'stringequals',
      'NullIfExists',
      'ForAnyValue:Null',
      'ForSomeValues:StringEquals',
      'ForAnyValue:',
      'IfExists',
      'toString',
      '__proto__x',
    ]) {
      expect(errorsOf({ [name]: { 'berth:Tag': 'x' } })).toEqual([
        `Statement[0].Condition: unknown operator ${JSON.stringify(name)}`,
      ]);
    }
  });

  it('reports a Condition or operator body of the wrong shape', () => {
    expect(errorsOf('x')).toEqual([
      'Statement[0].Condition: must be a non-empty object of condition operators',
    ]);
    expect(errorsOf([])).toEqual([
      'Statement[0].Condition: must be a non-empty object of condition operators',
    ]);
    expect(errorsOf({})).toEqual([
      'Statement[0].Condition: must be a non-empty object of condition operators',
    ]);
    expect(errorsOf({ StringEquals: 'x' })).toEqual([
      'Statement[0].Condition.StringEquals: must be a non-empty object of condition keys',
    ]);
    expect(errorsOf({ StringEquals: {} })).toEqual([
      'Statement[0].Condition.StringEquals: must be a non-empty object of condition keys',
    ]);
  });

  it('reports unknown condition keys', () => {
    expect(
      errorsOf({ StringEquals: { 'berth:Foo': 'x', 'berth:PrincipalTag/': 'y', 'oidc:': 'z' } }),
    ).toEqual([
      'Statement[0].Condition.StringEquals: unknown condition key "berth:Foo"',
      'Statement[0].Condition.StringEquals: unknown condition key "berth:PrincipalTag/"',
      'Statement[0].Condition.StringEquals: unknown condition key "oidc:"',
    ]);
  });

  it('reports values of the wrong JSON type', () => {
    const msg = 'must be a string, number, boolean or a non-empty array of them';
    for (const bad of [null, {}, [], [['x']], [null], Number.NaN]) {
      expect(errorsOf({ StringEquals: { 'berth:Tag': bad } })).toEqual([
        `Statement[0].Condition.StringEquals["berth:Tag"]: ${msg}`,
      ]);
    }
  });

  it('reports malformed values for the operator, naming the element', () => {
    expect(errorsOf({ IpAddress: { 'berth:SourceIp': ['10.0.0.0/8', '10.0.0.0/33'] } })).toEqual([
      'Statement[0].Condition.IpAddress["berth:SourceIp"][1]: malformed IP address or CIDR "10.0.0.0/33"',
    ]);
    expect(errorsOf({ NotIpAddressIfExists: { 'berth:SourceIp': 'internal' } })).toEqual([
      'Statement[0].Condition.NotIpAddressIfExists["berth:SourceIp"]: malformed IP address or CIDR "internal"',
    ]);
    expect(errorsOf({ DateLessThan: { 'berth:CurrentTime': 'tomorrow' } })).toEqual([
      'Statement[0].Condition.DateLessThan["berth:CurrentTime"]: malformed date "tomorrow"',
    ]);
    expect(errorsOf({ NumericEquals: { 'oidc:n': '1e3' } })).toEqual([
      'Statement[0].Condition.NumericEquals["oidc:n"]: malformed number "1e3"',
    ]);
    expect(errorsOf({ Bool: { 'berth:SecureTransport': 'yes' } })).toEqual([
      'Statement[0].Condition.Bool["berth:SecureTransport"]: malformed boolean "yes"',
    ]);
    expect(errorsOf({ Null: { 'berth:Tag': 1 } })).toEqual([
      'Statement[0].Condition.Null["berth:Tag"]: malformed boolean "1"',
    ]);
  });

  it('checks values of enumerated keys for exact-match string operators', () => {
    expect(errorsOf({ StringEquals: { 'berth:PrincipalType': ['user', 'serviceAccount'] } })).toEqual([
      'Statement[0].Condition.StringEquals["berth:PrincipalType"][1]: "serviceAccount" is not one of user, serviceaccount, role, anonymous',
    ]);
    expect(errorsOf({ StringNotEquals: { 'berth:AuthMethod': 'basic' } })).toEqual([
      'Statement[0].Condition.StringNotEquals["berth:AuthMethod"]: "basic" is not one of password, accesskey, oidc, token, anonymous',
    ]);
    const errors: PolicyError[] = [];
    validateCondition(
      {
        StringEqualsIgnoreCase: { 'berth:AuthMethod': 'OIDC' },
        StringLike: { 'berth:PrincipalType': 'service*' },
      },
      'C',
      errors,
    );
    expect(errors).toEqual([]);
  });

  it('collects every error, with paths', () => {
    const errors: PolicyError[] = [];
    validateCondition(
      { Nope: {}, Bool: { 'berth:X': true, 'berth:SecureTransport': 'no' } },
      'S.Condition',
      errors,
    );
    expect(errors).toEqual([
      { path: 'S.Condition', message: 'S.Condition: unknown operator "Nope"' },
      { path: 'S.Condition.Bool', message: 'S.Condition.Bool: unknown condition key "berth:X"' },
      {
        path: 'S.Condition.Bool["berth:SecureTransport"]',
        message: 'S.Condition.Bool["berth:SecureTransport"]: malformed boolean "no"',
      },
    ]);
  });
});
