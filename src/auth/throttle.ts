// Brute-force throttling for logins: per key (`ip:192.0.2.7`, `account:alice`), a sliding window of
// recent failures. `maxFailures` failures within `windowSeconds` lock the key for `lockoutSeconds`.
// The failures stay in the window, so once a lock ends each further failure inside the window
// locks again at once: after the first lockout an attacker gets one guess per lockout, not
// another burst.
//
// succeed() clears the keys that are not `ip:` keys: a user who finally remembers the password
// starts afresh, but one valid login does not reset an address that is guessing at many accounts.
//
// Pure and in memory (one process; a restart forgets). At most `maxKeys` keys are tracked; past
// that the least recently failed one is forgotten.

export interface ThrottleOptions {
  /** Failures within the window that lock a key; default 10. */
  maxFailures?: number;
  /** Default 300. */
  windowSeconds?: number;
  /** Default 60. */
  lockoutSeconds?: number;
  /** Default 100 000. */
  maxKeys?: number;
  /** Milliseconds since the epoch. */
  now?: () => number;
}

export type ThrottleCheck = { allowed: true } | { allowed: false; retryAfterSeconds: number };

export interface Throttle {
  /** Whether an attempt may be made now: refused while any of the keys is locked. */
  check(keys: readonly string[]): ThrottleCheck;
  /** Records a failed attempt against every key. */
  fail(keys: readonly string[]): void;
  /** Records a success: forgets the failures of every key but the `ip:` ones. */
  succeed(keys: readonly string[]): void;
  /** Keys currently tracked (for metrics and tests). */
  readonly size: number;
}

interface KeyState {
  /** Failure times, oldest first, at most maxFailures of them. */
  failures: number[];
  lockedUntil: number;
}

const allowed: ThrottleCheck = Object.freeze({ allowed: true });

export function createThrottle(opts: ThrottleOptions = {}): Throttle {
  const maxFailures = opts.maxFailures ?? 10;
  const windowMs = (opts.windowSeconds ?? 300) * 1000;
  const lockoutMs = (opts.lockoutSeconds ?? 60) * 1000;
  const maxKeys = opts.maxKeys ?? 100_000;
  const now = opts.now ?? Date.now;
  if (!Number.isSafeInteger(maxFailures) || maxFailures < 1)
    throw new RangeError('throttle: maxFailures must be a positive integer');
  if (!(windowMs > 0) || !(lockoutMs > 0)) throw new RangeError('throttle: durations must be positive');
  if (!Number.isSafeInteger(maxKeys) || maxKeys < 1)
    throw new RangeError('throttle: maxKeys must be a positive integer');

  // Insertion order is recency of the last failure: the first entry is the one to evict.
  const states = new Map<string, KeyState>();

  /** Drops failures that left the window; forgets the key entirely once nothing of it is left. */
  function current(key: string, t: number): KeyState | undefined {
    const s = states.get(key);
    if (!s) return undefined;
    const cutoff = t - windowMs;
    let drop = 0;
    while (drop < s.failures.length && (s.failures[drop] as number) <= cutoff) drop++;
    if (drop > 0) s.failures.splice(0, drop);
    if (s.failures.length === 0 && s.lockedUntil <= t) {
      states.delete(key);
      return undefined;
    }
    return s;
  }

  return {
    check(keys) {
      const t = now();
      let until = 0;
      for (const key of keys) {
        const s = current(key, t);
        if (s && s.lockedUntil > t && s.lockedUntil > until) until = s.lockedUntil;
      }
      return until > t
        ? { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((until - t) / 1000)) }
        : allowed;
    },

    fail(keys) {
      const t = now();
      for (const key of new Set(keys)) {
        const s = current(key, t) ?? { failures: [], lockedUntil: 0 };
        states.delete(key);
        states.set(key, s);
        s.failures.push(t);
        if (s.failures.length > maxFailures) s.failures.shift();
        if (s.failures.length >= maxFailures) s.lockedUntil = Math.max(s.lockedUntil, t + lockoutMs);
        while (states.size > maxKeys) {
          const oldest = states.keys().next();
          if (oldest.done) break;
          states.delete(oldest.value);
        }
      }
    },

    succeed(keys) {
      for (const key of keys) if (!key.startsWith('ip:')) states.delete(key);
    },

    get size() {
      return states.size;
    },
  };
}
