import { describe, expect, it } from 'vitest';
import { createThrottle, type ThrottleOptions } from './throttle.ts';

const T0 = Date.parse('2025-06-01T00:00:00.000Z');

function setup(opts: ThrottleOptions = {}) {
  const clock = { t: T0 };
  const throttle = createThrottle({ now: () => clock.t, ...opts });
  return { throttle, clock };
}

const ip = 'ip:192.0.2.7';
const acct = 'account:alice';

describe('throttle', () => {
  it('allows until maxFailures failures within the window, then locks for lockoutSeconds', () => {
    const { throttle, clock } = setup({ maxFailures: 3, windowSeconds: 300, lockoutSeconds: 60 });
    expect(throttle.check([ip, acct])).toEqual({ allowed: true });
    throttle.fail([ip, acct]);
    clock.t += 1000;
    throttle.fail([ip, acct]);
    expect(throttle.check([ip, acct])).toEqual({ allowed: true });
    clock.t += 1000;
    throttle.fail([ip, acct]);
    expect(throttle.check([ip, acct])).toEqual({ allowed: false, retryAfterSeconds: 60 });
    expect(throttle.check([acct])).toEqual({ allowed: false, retryAfterSeconds: 60 });
    expect(throttle.check(['account:bob'])).toEqual({ allowed: true });
    clock.t += 59_500;
    expect(throttle.check([ip])).toEqual({ allowed: false, retryAfterSeconds: 1 });
    clock.t += 500;
    expect(throttle.check([ip, acct])).toEqual({ allowed: true });
  });

  it('uses the defaults 10 failures, 300 s window, 60 s lockout', () => {
    const { throttle, clock } = setup();
    for (let i = 0; i < 9; i++) {
      throttle.fail([acct]);
      clock.t += 30_000;
    }
    expect(throttle.check([acct])).toEqual({ allowed: true });
    // The first failure (270 s ago) is still in the window.
    throttle.fail([acct]);
    expect(throttle.check([acct])).toEqual({ allowed: false, retryAfterSeconds: 60 });
  });

  it('slides the window: failures older than it no longer count', () => {
    const { throttle, clock } = setup({ maxFailures: 3, windowSeconds: 100 });
    throttle.fail([acct]);
    clock.t += 50_000;
    throttle.fail([acct]);
    clock.t += 50_000; // the first failure is now exactly windowSeconds old: out
    throttle.fail([acct]);
    expect(throttle.check([acct])).toEqual({ allowed: true });
    throttle.fail([acct]);
    expect(throttle.check([acct]).allowed).toBe(false);
  });

  it('relocks at once on a failure after a lockout while the window still holds the burst', () => {
    const { throttle, clock } = setup({ maxFailures: 3, windowSeconds: 300, lockoutSeconds: 60 });
    for (let i = 0; i < 3; i++) throttle.fail([acct]);
    clock.t += 60_000;
    expect(throttle.check([acct])).toEqual({ allowed: true });
    throttle.fail([acct]);
    expect(throttle.check([acct])).toEqual({ allowed: false, retryAfterSeconds: 60 });
    // Once the burst has left the window, a single failure no longer locks.
    clock.t += 300_000;
    throttle.fail([acct]);
    expect(throttle.check([acct])).toEqual({ allowed: true });
  });

  it('answers the longest wait among the keys', () => {
    const { throttle, clock } = setup({ maxFailures: 1, lockoutSeconds: 60 });
    throttle.fail([ip]);
    clock.t += 20_000;
    throttle.fail([acct]);
    expect(throttle.check([ip, acct])).toEqual({ allowed: false, retryAfterSeconds: 60 });
    expect(throttle.check([ip])).toEqual({ allowed: false, retryAfterSeconds: 40 });
  });

  it('clears account keys on success but keeps ip keys', () => {
    const { throttle } = setup({ maxFailures: 3 });
    throttle.fail([ip, acct]);
    throttle.fail([ip, acct]);
    throttle.succeed([ip, acct]);
    throttle.fail([ip, acct]);
    expect(throttle.check([acct])).toEqual({ allowed: true });
    expect(throttle.check([ip])).toEqual({ allowed: false, retryAfterSeconds: 60 });
    // A success also lifts an account lock.
    throttle.fail([acct]);
    throttle.fail([acct]);
    throttle.fail([acct]);
    expect(throttle.check([acct]).allowed).toBe(false);
    throttle.succeed([acct]);
    expect(throttle.check([acct])).toEqual({ allowed: true });
  });

  it('counts a key named twice in one call once', () => {
    const { throttle } = setup({ maxFailures: 2 });
    throttle.fail([acct, acct]);
    expect(throttle.check([acct])).toEqual({ allowed: true });
  });

  it('forgets keys once nothing of them is left', () => {
    const { throttle, clock } = setup({ maxFailures: 2, windowSeconds: 10, lockoutSeconds: 60 });
    throttle.fail([ip, acct]);
    expect(throttle.size).toBe(2);
    clock.t += 10_000;
    throttle.check([ip, acct]);
    expect(throttle.size).toBe(0);
    throttle.fail([acct]);
    throttle.fail([acct]);
    clock.t += 30_000;
    throttle.check([acct]); // failures left the window, the lock has not ended
    expect(throttle.size).toBe(1);
    clock.t += 30_000;
    throttle.check([acct]);
    expect(throttle.size).toBe(0);
  });

  it('bounds memory by evicting the least recently failed key', () => {
    const { throttle, clock } = setup({ maxFailures: 1, maxKeys: 3 });
    throttle.fail(['ip:a']);
    clock.t += 1;
    throttle.fail(['ip:b']);
    clock.t += 1;
    throttle.fail(['ip:c']);
    clock.t += 1;
    throttle.fail(['ip:a']); // touches a: b is now the oldest
    throttle.fail(['ip:d']);
    expect(throttle.size).toBe(3);
    expect(throttle.check(['ip:b'])).toEqual({ allowed: true });
    for (const k of ['ip:a', 'ip:c', 'ip:d']) expect(throttle.check([k]).allowed).toBe(false);
  });

  it('holds 100 000 keys by default', () => {
    const { throttle } = setup();
    for (let i = 0; i < 100_005; i++) throttle.fail([`ip:${i}`]);
    expect(throttle.size).toBe(100_000);
  });

  it('refuses nonsense options', () => {
    expect(() => createThrottle({ maxFailures: 0 })).toThrow(RangeError);
    expect(() => createThrottle({ windowSeconds: 0 })).toThrow(RangeError);
    expect(() => createThrottle({ lockoutSeconds: -1 })).toThrow(RangeError);
    expect(() => createThrottle({ maxKeys: 0 })).toThrow(RangeError);
  });
});
