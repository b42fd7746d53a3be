import { describe, expect, it } from 'vitest';
import { addressUnit, createThrottle, type ThrottleOptions } from './throttle.ts';

const T0 = Date.parse('2025-06-01T00:00:00.000Z');

function setup(opts: ThrottleOptions = {}) {
  const clock = { t: T0 };
  const throttle = createThrottle({ now: () => clock.t, ...opts });
  return { throttle, clock };
}

const A = '192.0.2.7';
const B = '198.51.100.9';
const alice = { address: A, account: 'alice' };

describe('throttle', () => {
  it('locks an address hammering one account after maxFailures within the window, for lockoutSeconds', () => {
    const { throttle, clock } = setup({ maxFailures: 3, windowSeconds: 300, lockoutSeconds: 60 });
    expect(throttle.check(alice)).toEqual({ allowed: true });
    throttle.fail(alice);
    clock.t += 1000;
    throttle.fail(alice);
    expect(throttle.check(alice)).toEqual({ allowed: true });
    clock.t += 1000;
    throttle.fail(alice);
    expect(throttle.check(alice)).toEqual({ allowed: false, retryAfterSeconds: 60 });
    // The address is locked for every account, and for attempts naming none (refresh, OIDC).
    expect(throttle.check({ address: A, account: 'bob' })).toEqual({ allowed: false, retryAfterSeconds: 60 });
    expect(throttle.check({ address: A })).toEqual({ allowed: false, retryAfterSeconds: 60 });
    clock.t += 59_500;
    expect(throttle.check(alice)).toEqual({ allowed: false, retryAfterSeconds: 1 });
    clock.t += 500;
    expect(throttle.check(alice)).toEqual({ allowed: true });
  });

  it("never locks an account for an address that has not failed on it (attack 8's lockout)", () => {
    const { throttle, clock } = setup();
    for (let i = 0; i < 10; i++) throttle.fail({ address: A, account: 'admin' });
    expect(throttle.check({ address: A, account: 'admin' }).allowed).toBe(false);
    expect(throttle.check({ address: B, account: 'admin' })).toEqual({ allowed: true });
    // And however long the attacker keeps at it, one guess per lockout.
    for (let minute = 0; minute < 60; minute++) {
      clock.t += 60_000;
      if (throttle.check({ address: A, account: 'admin' }).allowed)
        throttle.fail({ address: A, account: 'admin' });
      expect(throttle.check({ address: B, account: 'admin' })).toEqual({ allowed: true });
    }
  });

  it('does not lock anyone over a slow trickle of guesses below the rate', () => {
    const { throttle, clock } = setup();
    // One guess a minute: at most five in any 300 s window.
    for (let minute = 0; minute < 120; minute++) {
      expect(throttle.check({ address: A, account: 'admin' })).toEqual({ allowed: true });
      throttle.fail({ address: A, account: 'admin' });
      expect(throttle.check({ address: B, account: 'admin' })).toEqual({ allowed: true });
      clock.t += 60_000;
    }
  });

  it('locks an address spraying guesses over many accounts', () => {
    const { throttle } = setup({ maxFailures: 5 });
    for (let i = 0; i < 5; i++) throttle.fail({ address: A, account: `user${i}` });
    for (let i = 0; i < 5; i++)
      expect(throttle.check({ address: A, account: `user${i}` }).allowed).toBe(false);
    expect(throttle.check({ address: A, account: 'someone-else' }).allowed).toBe(false);
    expect(throttle.check({ address: B, account: 'user0' })).toEqual({ allowed: true });
  });

  it("holds back every address that failed on an account under a spread-out attack, but not the user's", () => {
    const { throttle, clock } = setup({ maxFailures: 3, windowSeconds: 300, lockoutSeconds: 60 });
    const bots = ['203.0.113.1', '203.0.113.2', '203.0.113.3'];
    for (const address of bots) throttle.fail({ address, account: 'alice' });
    // No address has failed three times, yet each attacking address now waits.
    for (const address of bots)
      expect(throttle.check({ address, account: 'alice' })).toEqual({
        allowed: false,
        retryAfterSeconds: 60,
      });
    // The account's other callers do not.
    expect(throttle.check({ address: B, account: 'alice' })).toEqual({ allowed: true });
    // A fresh address gets its one guess; that failure holds it back as well.
    throttle.fail({ address: '203.0.113.4', account: 'alice' });
    expect(throttle.check({ address: '203.0.113.4', account: 'alice' }).allowed).toBe(false);
    // The account's lock holds back no attempt on another account.
    expect(throttle.check({ address: bots[0]!, account: 'bob' })).toEqual({ allowed: true });
    // Once a bot's failure has left the window, the bot is a stranger to the account again.
    clock.t += 300_000;
    expect(throttle.check({ address: bots[0]!, account: 'alice' })).toEqual({ allowed: true });
  });

  it('uses the defaults 10 failures, 300 s window, 60 s lockout', () => {
    const { throttle, clock } = setup();
    for (let i = 0; i < 9; i++) {
      throttle.fail(alice);
      clock.t += 30_000;
    }
    expect(throttle.check(alice)).toEqual({ allowed: true });
    // The first failure (270 s ago) is still in the window.
    throttle.fail(alice);
    expect(throttle.check(alice)).toEqual({ allowed: false, retryAfterSeconds: 60 });
  });

  it('slides the window: failures older than it no longer count', () => {
    const { throttle, clock } = setup({ maxFailures: 3, windowSeconds: 100 });
    throttle.fail(alice);
    clock.t += 50_000;
    throttle.fail(alice);
    clock.t += 50_000; // the first failure is now exactly windowSeconds old: out
    throttle.fail(alice);
    expect(throttle.check(alice)).toEqual({ allowed: true });
    throttle.fail(alice);
    expect(throttle.check(alice).allowed).toBe(false);
  });

  it('relocks at once on a failure after a lockout while the window still holds the burst', () => {
    const { throttle, clock } = setup({ maxFailures: 3, windowSeconds: 300, lockoutSeconds: 60 });
    for (let i = 0; i < 3; i++) throttle.fail(alice);
    clock.t += 60_000;
    expect(throttle.check(alice)).toEqual({ allowed: true });
    throttle.fail(alice);
    expect(throttle.check(alice)).toEqual({ allowed: false, retryAfterSeconds: 60 });
    // Once the burst has left the window, a single failure no longer locks.
    clock.t += 300_000;
    throttle.fail(alice);
    expect(throttle.check(alice)).toEqual({ allowed: true });
  });

  it('answers the longest wait among the locks that apply', () => {
    const { throttle, clock } = setup({ maxFailures: 1, lockoutSeconds: 60 });
    throttle.fail({ address: A });
    clock.t += 20_000;
    throttle.fail({ address: B, account: 'alice' });
    expect(throttle.check({ address: A })).toEqual({ allowed: false, retryAfterSeconds: 40 });
    // A is locked 40 s more itself; it has not failed on alice, so alice's lock does not apply.
    expect(throttle.check(alice)).toEqual({ allowed: false, retryAfterSeconds: 40 });
    throttle.fail(alice);
    expect(throttle.check(alice)).toEqual({ allowed: false, retryAfterSeconds: 60 });
  });

  it("forgets the pair's failures on success but keeps the address's and the account's", () => {
    const { throttle } = setup({ maxFailures: 3 });
    throttle.fail(alice);
    throttle.fail(alice);
    throttle.succeed(alice);
    throttle.fail({ address: A, account: 'bob' });
    // Three failures from A: the address is locked whatever the account.
    expect(throttle.check({ address: A, account: 'carol' }).allowed).toBe(false);
    // From elsewhere, alice's account lock needs the address to have failed on it.
    throttle.fail({ address: B, account: 'alice' });
    expect(throttle.check({ address: B, account: 'alice' }).allowed).toBe(false);
    throttle.succeed({ address: B, account: 'alice' });
    // The success cleared B's failures on alice, so the account's lock no longer holds B.
    expect(throttle.check({ address: B, account: 'alice' })).toEqual({ allowed: true });
  });

  it('counts IPv6 addresses per /64 and IPv4-mapped ones as IPv4', () => {
    const { throttle } = setup({ maxFailures: 2 });
    throttle.fail({ address: '2001:db8:1:2::1' });
    throttle.fail({ address: '2001:db8:1:2:ffff:ffff:ffff:fffe' });
    expect(throttle.check({ address: '2001:db8:1:2::77' }).allowed).toBe(false);
    expect(throttle.check({ address: '2001:db8:1:3::1' })).toEqual({ allowed: true });
    throttle.fail({ address: '::ffff:192.0.2.7' });
    throttle.fail({ address: A });
    expect(throttle.check({ address: A }).allowed).toBe(false);
  });

  it('forgets counters once nothing of them is left', () => {
    const { throttle, clock } = setup({ maxFailures: 2, windowSeconds: 10, lockoutSeconds: 60 });
    throttle.fail(alice);
    expect(throttle.size).toBe(3); // address, pair, account
    clock.t += 10_000;
    throttle.check(alice);
    // The account's counter is read only through a pair that failed: it goes when it is next
    // touched, or evicted.
    expect(throttle.size).toBe(1);
    throttle.fail({ address: A });
    throttle.fail({ address: A });
    clock.t += 30_000;
    throttle.check({ address: A }); // failures left the window, the lock has not ended
    expect(throttle.size).toBe(2);
    clock.t += 30_000;
    throttle.check({ address: A });
    expect(throttle.size).toBe(1);
    throttle.fail({ address: B, account: 'alice' });
    expect(throttle.size).toBe(3); // B, B on alice, and alice's counter holding only this failure
  });

  it('bounds memory by evicting the least recently failed counter', () => {
    const { throttle, clock } = setup({ maxFailures: 1, maxKeys: 3 });
    throttle.fail({ address: 'a' });
    clock.t += 1;
    throttle.fail({ address: 'b' });
    clock.t += 1;
    throttle.fail({ address: 'c' });
    clock.t += 1;
    throttle.fail({ address: 'a' }); // touches a: b is now the oldest
    throttle.fail({ address: 'd' });
    expect(throttle.size).toBe(3);
    expect(throttle.check({ address: 'b' })).toEqual({ allowed: true });
    for (const k of ['a', 'c', 'd']) expect(throttle.check({ address: k }).allowed).toBe(false);
  });

  it('holds 100 000 counters by default', () => {
    const { throttle } = setup();
    for (let i = 0; i < 100_005; i++) throttle.fail({ address: `10.0.${i >> 8}.${i & 255}-${i}` });
    expect(throttle.size).toBe(100_000);
  });

  it('refuses nonsense options', () => {
    expect(() => createThrottle({ maxFailures: 0 })).toThrow(RangeError);
    expect(() => createThrottle({ windowSeconds: 0 })).toThrow(RangeError);
    expect(() => createThrottle({ lockoutSeconds: -1 })).toThrow(RangeError);
    expect(() => createThrottle({ maxKeys: 0 })).toThrow(RangeError);
  });
});

describe('addressUnit', () => {
  it.each([
    ['192.0.2.7', '192.0.2.7'],
    ['::ffff:192.0.2.7', '192.0.2.7'],
    ['::FFFF:192.0.2.7', '192.0.2.7'],
    ['2001:db8::1', '2001:db8:0:0::/64'],
    ['2001:0DB8:0000:0001:aaaa:bbbb:cccc:dddd', '2001:db8:0:1::/64'],
    ['::1', '0:0:0:0::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['64:ff9b::192.0.2.7', '64:ff9b:0:0::/64'],
    ['', ''],
  ])('%s counts as %s', (address, unit) => {
    expect(addressUnit(address)).toBe(unit);
  });
});
