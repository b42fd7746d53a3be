// Secret hashing for passwords and access-key secrets: scrypt with a random salt, encoded with its
// parameters (`scrypt$N$r$p$salt$hash`, salt and hash in base64) so the cost can be raised later
// without invalidating what is stored: verification reads the parameters from the encoding.
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

export interface ScryptParams {
  /** CPU/memory cost, a power of two. */
  readonly N: number;
  readonly r: number;
  readonly p: number;
}

export const defaultScryptParams: ScryptParams = Object.freeze({ N: 2 ** 14, r: 8, p: 1 });

const saltBytes = 16;
const keyBytes = 32;
// Bounds on what an encoding may ask for, so a corrupted or planted hash cannot make verification
// allocate gigabytes or spin for minutes.
const maxN = 2 ** 20;
const maxR = 32;
const maxP = 16;

function validParams({ N, r, p }: ScryptParams): boolean {
  return (
    Number.isSafeInteger(N) &&
    N >= 2 &&
    N <= maxN &&
    (N & (N - 1)) === 0 &&
    Number.isSafeInteger(r) &&
    r >= 1 &&
    r <= maxR &&
    Number.isSafeInteger(p) &&
    p >= 1 &&
    p <= maxP
  );
}

function derive(
  secret: string,
  salt: Uint8Array,
  { N, r, p }: ScryptParams,
  length: number,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // Node refuses when 128 * N * r exceeds maxmem (32 MiB by default); leave room for larger N.
    const maxmem = Math.max(32 * 1024 * 1024, 256 * N * r);
    scrypt(secret.normalize('NFC'), salt, length, { N, r, p, maxmem }, (err, key) =>
      err ? reject(err) : resolve(key),
    );
  });
}

/** An encoded scrypt hash of `secret` with a fresh salt. */
export async function hashSecret(
  secret: string,
  params: ScryptParams = defaultScryptParams,
): Promise<string> {
  if (typeof secret !== 'string') throw new TypeError('passwords: secret must be a string');
  if (!validParams(params)) throw new RangeError('passwords: bad scrypt parameters');
  const salt = randomBytes(saltBytes);
  const hash = await derive(secret, salt, params, keyBytes);
  return `scrypt$${params.N}$${params.r}$${params.p}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

const base64 = /^[A-Za-z0-9+/]+={0,2}$/;

function decode(encoded: string): { params: ScryptParams; salt: Buffer; hash: Buffer } | undefined {
  if (typeof encoded !== 'string') return undefined;
  const parts = encoded.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return undefined;
  const [, n, r, p, salt, hash] = parts as [string, string, string, string, string, string];
  const num = (s: string) => (/^[0-9]{1,8}$/.test(s) ? Number(s) : Number.NaN);
  const params = { N: num(n), r: num(r), p: num(p) };
  if (!validParams(params) || !base64.test(salt) || !base64.test(hash)) return undefined;
  const saltBuf = Buffer.from(salt, 'base64');
  const hashBuf = Buffer.from(hash, 'base64');
  if (saltBuf.length < 8 || hashBuf.length < 16 || hashBuf.length > 64) return undefined;
  return { params, salt: saltBuf, hash: hashBuf };
}

/** The parameters an encoded hash was made with, or undefined if it is not one of ours. */
export function hashParams(encoded: string): ScryptParams | undefined {
  return decode(encoded)?.params;
}

/** Whether `secret` is the one `encoded` was made from. A malformed encoding verifies nothing. */
export async function verifySecret(secret: string, encoded: string): Promise<boolean> {
  if (typeof secret !== 'string') return false;
  const d = decode(encoded);
  if (!d) return false;
  const actual = await derive(secret, d.salt, d.params, d.hash.length);
  return timingSafeEqual(actual, d.hash);
}

/** A random secret of `bytes` random bytes, base64url (40 characters for the default 30). */
export function randomSecret(bytes = 30): string {
  if (!Number.isSafeInteger(bytes) || bytes < 16 || bytes > 1024)
    throw new RangeError('passwords: a secret needs 16 to 1024 random bytes');
  return randomBytes(bytes).toString('base64url');
}

const dummies = new Map<string, Promise<string>>();

/**
 * Burns the time of one verification at `params`, for a user or key that does not exist (or
 * cannot log in): without it, answering faster for unknown names tells who exists. Always false.
 */
export async function dummyVerify(params: ScryptParams = defaultScryptParams): Promise<false> {
  const id = `${params.N}$${params.r}$${params.p}`;
  let dummy = dummies.get(id);
  if (!dummy) {
    dummy = hashSecret(randomSecret(), params);
    dummies.set(id, dummy);
    dummy.catch(() => dummies.delete(id));
    // The first call pays for two derivations; every later one for exactly one, like a real check.
  }
  await verifySecret(randomSecret(), await dummy);
  return false;
}
