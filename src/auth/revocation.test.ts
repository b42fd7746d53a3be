import { describe, expect, it } from 'vitest';
import { silentLogger } from '../log.ts';
import { checked, createMemoryDriver } from '../storage/index.ts';
import { type Policy, validatePolicy } from './policy.ts';
import { createRevocations, hasEffect, onlyWidens, revocationsPath } from './revocation.ts';
import { writeJson } from './store.ts';

const T0 = Date.parse('2025-06-01T00:00:00Z');

function setup() {
  const clock = { t: T0 };
  const storage = checked(createMemoryDriver());
  const make = () =>
    createRevocations({ storage, now: () => clock.t, horizonMs: 3600_000, log: silentLogger });
  return { clock, storage, make };
}

function policy(...Statement: Record<string, unknown>[]): Policy {
  const v = validatePolicy({ Version: '2012-10-17', Statement }, 'identity');
  if (!v.ok) throw new Error(JSON.stringify(v.errors));
  return v.policy;
}

const pull = { Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/team/*' };
const push = { Effect: 'Allow', Action: 'registry:Push', Resource: 'repository/team/*' };
const noProd = { Effect: 'Deny', Action: 'registry:*', Resource: 'repository/prod/*' };

describe('revocations', () => {
  it('makes tokens of a revoked subject stale, and only those issued before', async () => {
    const { make } = setup();
    const r = make();
    const before = r.current();
    await r.revoke(['user/alice']);
    const after = r.current();
    expect(after).toBeGreaterThan(before);
    expect(r.revokedAfter(before, ['*', 'user/alice'])).toBe('user/alice');
    expect(r.revokedAfter(before, ['*', 'user/bob', 'group/devs'])).toBeUndefined();
    expect(r.revokedAfter(after, ['*', 'user/alice'])).toBeUndefined();
  });

  it('orders revocations in the same millisecond, and when the clock steps back', async () => {
    const { make, clock } = setup();
    const r = make();
    await r.revoke(['group/devs']);
    const first = r.current();
    await r.revoke(['user/bob']);
    expect(r.current()).toBe(first + 1);
    clock.t -= 60_000;
    await r.revoke(['user/carol']);
    expect(r.revokedAfter(first + 1, ['user/carol'])).toBe('user/carol');
  });

  it('keeps what was revoked across a restart; revisions after it are later than any before', async () => {
    const { make, clock } = setup();
    const a = make();
    const stamped = a.current();
    await a.revoke(['accesskey/BKAAAAAAAAAAAAAAAAAA']);
    const later = a.current();
    clock.t += 1000;
    const b = make();
    await b.load();
    expect(b.revokedAfter(stamped, ['accesskey/BKAAAAAAAAAAAAAAAAAA'])).toBe(
      'accesskey/BKAAAAAAAAAAAAAAAAAA',
    );
    expect(b.revokedAfter(later, ['accesskey/BKAAAAAAAAAAAAAAAAAA'])).toBeUndefined();
    // A revision a token took before the restart is never equal to or after one taken now.
    expect(b.current()).toBeGreaterThan(later);
  });

  it('drops entries older than the horizon, refusing every token from before them', async () => {
    const { make, clock, storage } = setup();
    const r = make();
    const ancient = r.current();
    await r.revoke(['user/old']);
    const afterOld = r.current();
    clock.t += 2 * 3600_000;
    await r.revoke(['user/new']);
    const doc = JSON.parse(new TextDecoder().decode(await storage.getContent(revocationsPath)));
    expect(Object.keys(doc.subjects)).toEqual(['user/new']);
    // user/old's entry is gone, but a token from before it cannot come back: it is below the floor.
    expect(r.revokedAfter(ancient, ['user/old'])).toBe('*');
    expect(r.revokedAfter(afterOld, ['user/old'])).toBeUndefined();
  });

  it('fails closed on a malformed record: every token issued before the start is stale', async () => {
    const { make, storage, clock } = setup();
    await writeJson(storage, revocationsPath, { subjects: 'nonsense' });
    const r = make();
    const stampedBefore = T0 - 1;
    await r.load();
    expect(r.revokedAfter(stampedBefore, ['user/alice'])).toBe('*');
    clock.t += 5;
    expect(r.revokedAfter(r.current(), ['user/alice'])).toBeUndefined();
  });
});

describe('which policy changes only widen', () => {
  it('adding an Allow or removing a Deny widens', () => {
    expect(onlyWidens(policy(pull), policy(pull, push))).toBe(true);
    expect(onlyWidens(policy(pull, noProd), policy(pull))).toBe(true);
    expect(onlyWidens(undefined, policy(pull))).toBe(true);
    // Key order and list spelling do not matter: statements compare as validated.
    expect(
      onlyWidens(
        policy(pull),
        policy({ Resource: ['repository/team/*'], Action: ['registry:Pull'], Effect: 'Allow' }, push),
      ),
    ).toBe(true);
  });

  it('removing or changing an Allow, or adding a Deny, narrows', () => {
    expect(onlyWidens(policy(pull, push), policy(pull))).toBe(false);
    expect(onlyWidens(policy(pull), policy({ ...pull, Resource: 'repository/team/api' }))).toBe(false);
    expect(onlyWidens(policy(pull), policy(pull, noProd))).toBe(false);
    expect(onlyWidens(policy(pull), undefined)).toBe(false);
    // A policy that does not validate (null) may have said anything.
    expect(onlyWidens(null, policy(pull))).toBe(false);
    expect(onlyWidens(policy(pull), null)).toBe(false);
  });

  it('says whether a policy has statements of an effect', () => {
    expect(hasEffect(policy(pull), 'Allow')).toBe(true);
    expect(hasEffect(policy(pull), 'Deny')).toBe(false);
    expect(hasEffect(null, 'Deny')).toBe(true);
  });
});
