// Brute-force throttling for sign-ins that stops the attacker, not the user. Locking an account
// outright would hand anyone who knows its name a way to lock its owner out (ten wrong passwords
// for `admin` from anywhere), so failures are counted per source address and per pair of account
// and address, and the account's own count only ever holds back addresses that have failed on it:
//
//   address          every failure from the address, whatever account: one address spraying
//                    guesses over many accounts is stopped.
//   account+address  failures of one address on one account: one address hammering one account
//                    is stopped.
//   account          failures on the account from every address: while it is locked (a guessing
//                    run spread over many addresses), each address that has itself failed on the
//                    account within the window is refused, so each attacking address gets about
//                    one guess per window instead of a burst; an address with no failure on the
//                    account, where the real user is, still signs in.
//
// Each counter is a sliding window of recent failures: `maxFailures` within `windowSeconds` lock
// it for `lockoutSeconds`. The failures stay in the window, so once a lock ends each further
// failure inside the window locks again at once: after the first lockout an attacker gets one
// guess per lockout, not another burst. A lock answers 429 with Retry-After (the longest of the
// locks that apply).
//
// succeed() forgets the account+address count only: a user who finally remembers the password
// starts afresh, but one valid login neither resets an address that is guessing at many accounts
// nor ends an attack on the account from elsewhere.
//
// IPv6 addresses count per /64: one host or site usually holds a whole /64, so counting each of its
// 2^64 addresses apart would give an attacker as many fresh counters as it likes.
//
// Pure and in memory (one process; a restart forgets). At most `maxKeys` counters are kept; past
// that the least recently failed one is forgotten.
import { isIPv4, isIPv6 } from 'node:net';

export interface ThrottleOptions {
  /** Failures within the window that lock a counter; default 10. */
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

/** Who is trying: the source address and, when the attempt names one, the account (user, key id). */
export interface ThrottleSubject {
  readonly address: string;
  readonly account?: string;
}

export type ThrottleCheck = { allowed: true } | { allowed: false; retryAfterSeconds: number };

export interface Throttle {
  /** Whether an attempt may be made now (see the header for which locks apply). */
  check(subject: ThrottleSubject): ThrottleCheck;
  /** Records a failed attempt against the address, the account+address pair and the account. */
  fail(subject: ThrottleSubject): void;
  /** Records a success: forgets the failures of the account+address pair. */
  succeed(subject: ThrottleSubject): void;
  /** Counters currently kept (for metrics and tests). */
  readonly size: number;
}

interface Counter {
  /** Failure times, oldest first, at most maxFailures of them. */
  failures: number[];
  lockedUntil: number;
}

const allowed: ThrottleCheck = Object.freeze({ allowed: true });

/** The unit an address is counted in: IPv4 as is (also when IPv4-mapped), IPv6 by its /64. */
export function addressUnit(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped && isIPv4(mapped[1]!)) return mapped[1]!;
  if (!isIPv6(address)) return address;
  return `${expandIPv6(address).slice(0, 4).join(':')}::/64`;
}

/** The eight 16-bit groups of an IPv6 address, as lower-case hex without leading zeros. */
function expandIPv6(address: string): string[] {
  let text = address.toLowerCase().replace(/%.*$/, '');
  // A dotted IPv4 tail is the last two groups.
  const tail = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (tail) {
    const [a, b, c, d] = tail.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, tail.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', rest] = text.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = rest === undefined || rest === '' ? [] : rest.split(':');
  const zeros = rest === undefined ? [] : Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...zeros, ...right].map((g) => Number.parseInt(g, 16).toString(16));
}

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
  const counters = new Map<string, Counter>();

  // NUL cannot occur in an address, and account names are cut by the caller: the three kinds of
  // key never collide.
  const keysOf = (s: ThrottleSubject): { address: string; account?: { pair: string; all: string } } => {
    const unit = addressUnit(s.address);
    const address = `ip\0${unit}`;
    if (s.account === undefined) return { address };
    return { address, account: { pair: `pair\0${unit}\0${s.account}`, all: `acct\0${s.account}` } };
  };

  /** Drops failures that left the window; forgets the counter once nothing of it is left. */
  function current(key: string, t: number): Counter | undefined {
    const c = counters.get(key);
    if (!c) return undefined;
    const cutoff = t - windowMs;
    let drop = 0;
    while (drop < c.failures.length && (c.failures[drop] as number) <= cutoff) drop++;
    if (drop > 0) c.failures.splice(0, drop);
    if (c.failures.length === 0 && c.lockedUntil <= t) {
      counters.delete(key);
      return undefined;
    }
    return c;
  }

  function failOne(key: string, t: number) {
    const c = current(key, t) ?? { failures: [], lockedUntil: 0 };
    counters.delete(key);
    counters.set(key, c);
    c.failures.push(t);
    if (c.failures.length > maxFailures) c.failures.shift();
    if (c.failures.length >= maxFailures) c.lockedUntil = Math.max(c.lockedUntil, t + lockoutMs);
    while (counters.size > maxKeys) {
      const oldest = counters.keys().next();
      if (oldest.done) break;
      counters.delete(oldest.value);
    }
  }

  return {
    check(subject) {
      const t = now();
      const keys = keysOf(subject);
      const lockedUntil = (c: Counter | undefined) => (c && c.lockedUntil > t ? c.lockedUntil : 0);
      let until = lockedUntil(current(keys.address, t));
      if (keys.account) {
        const pair = current(keys.account.pair, t);
        until = Math.max(until, lockedUntil(pair));
        // The account's lock holds back only addresses that have failed on it themselves.
        if (pair && pair.failures.length > 0)
          until = Math.max(until, lockedUntil(current(keys.account.all, t)));
      }
      return until > t
        ? { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((until - t) / 1000)) }
        : allowed;
    },

    fail(subject) {
      const t = now();
      const keys = keysOf(subject);
      failOne(keys.address, t);
      if (keys.account) {
        failOne(keys.account.pair, t);
        failOne(keys.account.all, t);
      }
    },

    succeed(subject) {
      const { account } = keysOf(subject);
      if (account) counters.delete(account.pair);
    },

    get size() {
      return counters.size;
    },
  };
}
