import { scryptSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  defaultScryptParams,
  dummyVerify,
  hashParams,
  hashSecret,
  randomSecret,
  verifySecret,
} from './passwords.ts';

const cheap = { N: 16, r: 8, p: 1 };

describe('hashSecret', () => {
  it('encodes the default parameters, a 16-byte salt and a 32-byte hash', async () => {
    const encoded = await hashSecret('correct horse');
    const parts = encoded.split('$');
    expect(parts).toHaveLength(6);
    expect(parts.slice(0, 4)).toEqual(['scrypt', '16384', '8', '1']);
    expect(Buffer.from(parts[4] as string, 'base64')).toHaveLength(16);
    expect(Buffer.from(parts[5] as string, 'base64')).toHaveLength(32);
    expect(hashParams(encoded)).toEqual({ N: 16384, r: 8, p: 1 });
    expect(defaultScryptParams).toEqual({ N: 2 ** 14, r: 8, p: 1 });
  });

  it('is scrypt of the secret with the encoded salt', async () => {
    const encoded = await hashSecret('s3cret', cheap);
    const [, , , , salt, hash] = encoded.split('$') as string[];
    const expected = scryptSync('s3cret', Buffer.from(salt as string, 'base64'), 32, cheap);
    expect(hash).toBe(expected.toString('base64'));
  });

  it('salts every hash afresh', async () => {
    const a = await hashSecret('same', cheap);
    const b = await hashSecret('same', cheap);
    expect(a).not.toBe(b);
    expect(await verifySecret('same', a)).toBe(true);
    expect(await verifySecret('same', b)).toBe(true);
  });

  it('refuses bad parameters', async () => {
    await expect(hashSecret('x', { N: 1000, r: 8, p: 1 })).rejects.toThrow(RangeError);
    await expect(hashSecret('x', { N: 2 ** 21, r: 8, p: 1 })).rejects.toThrow(RangeError);
    await expect(hashSecret('x', { N: 16, r: 0, p: 1 })).rejects.toThrow(RangeError);
    await expect(hashSecret(42 as unknown as string, cheap)).rejects.toThrow(TypeError);
  });
});

describe('verifySecret', () => {
  it('accepts the secret and nothing else', async () => {
    const encoded = await hashSecret('hunter22', cheap);
    expect(await verifySecret('hunter22', encoded)).toBe(true);
    expect(await verifySecret('hunter2', encoded)).toBe(false);
    expect(await verifySecret('hunter222', encoded)).toBe(false);
    expect(await verifySecret('', encoded)).toBe(false);
  });

  it('verifies with the parameters in the encoding, so the cost can change later', async () => {
    const old = await hashSecret('pw', { N: 32, r: 4, p: 2 });
    expect(old.startsWith('scrypt$32$4$2$')).toBe(true);
    expect(await verifySecret('pw', old)).toBe(true);
  });

  it('treats equivalent Unicode forms as the same secret', async () => {
    const encoded = await hashSecret('caf\u00e9', cheap);
    expect(await verifySecret('cafe\u0301', encoded)).toBe(true);
  });

  it('verifies nothing against a malformed or hostile encoding', async () => {
    const good = await hashSecret('pw', cheap);
    const [, , , , salt, hash] = good.split('$') as string[];
    const bad = [
      '',
      'pw',
      'bcrypt$16$8$1$x$y',
      `scrypt$16$8$1$${salt}`,
      `scrypt$15$8$1$${salt}$${hash}`,
      `scrypt$${2 ** 24}$8$1$${salt}$${hash}`,
      `scrypt$16$64$1$${salt}$${hash}`,
      `scrypt$16$8$99$${salt}$${hash}`,
      `scrypt$16$8$1$${salt}$!!`,
      `scrypt$16$8$1$$${hash}`,
      `scrypt$16$8$1$${salt}$${hash}$extra`,
      `scrypt$0x10$8$1$${salt}$${hash}`,
    ];
    for (const b of bad) {
      expect(await verifySecret('pw', b)).toBe(false);
      expect(hashParams(b)).toBeUndefined();
    }
    expect(await verifySecret(undefined as unknown as string, good)).toBe(false);
  });
});

describe('randomSecret', () => {
  it('is base64url of the requested number of random bytes', () => {
    const s = randomSecret();
    expect(s).toMatch(/^[A-Za-z0-9_-]{40}$/);
    expect(Buffer.from(s, 'base64url')).toHaveLength(30);
    expect(randomSecret(18)).toMatch(/^[A-Za-z0-9_-]{24}$/);
    expect(new Set(Array.from({ length: 100 }, () => randomSecret())).size).toBe(100);
  });

  it('refuses too few bytes to be a secret', () => {
    expect(() => randomSecret(8)).toThrow(RangeError);
    expect(() => randomSecret(1.5)).toThrow(RangeError);
  });
});

describe('dummyVerify', () => {
  it('always answers false', async () => {
    expect(await dummyVerify(cheap)).toBe(false);
    expect(await dummyVerify(cheap)).toBe(false);
  });

  it('costs about what a real verification costs', async () => {
    const encoded = await hashSecret('pw');
    await dummyVerify(); // the first call also makes the dummy hash
    const time = async (fn: () => Promise<unknown>) => {
      const start = performance.now();
      for (let i = 0; i < 3; i++) await fn();
      return performance.now() - start;
    };
    const real = await time(() => verifySecret('wrong', encoded));
    const dummy = await time(() => dummyVerify());
    expect(dummy).toBeGreaterThan(real * 0.25);
    expect(dummy).toBeLessThan(real * 4);
  });
});
