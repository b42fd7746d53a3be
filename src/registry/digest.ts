// Digests: parsing, and hashing bytes or streams with the algorithms the spec registers.
import { createHash, type Hash } from 'node:crypto';
import { OciError } from '../errors.ts';

export type Algorithm = 'sha256' | 'sha512';

export interface Digest {
  readonly algorithm: Algorithm;
  readonly hex: string;
  /** 'sha256:abc...' */
  readonly value: string;
}

const hexLength: Record<Algorithm, number> = { sha256: 64, sha512: 128 };

export function isAlgorithm(a: string): a is Algorithm {
  return a === 'sha256' || a === 'sha512';
}

/** Parses 'alg:hex'; undefined for anything malformed or an unsupported algorithm. */
export function tryParseDigest(s: string): Digest | undefined {
  const i = s.indexOf(':');
  if (i < 0) return undefined;
  const algorithm = s.slice(0, i);
  const hex = s.slice(i + 1);
  if (!isAlgorithm(algorithm)) return undefined;
  if (hex.length !== hexLength[algorithm] || !/^[a-f0-9]+$/.test(hex)) return undefined;
  return { algorithm, hex, value: s };
}

export function parseDigest(s: string): Digest {
  const d = tryParseDigest(s);
  if (!d)
    throw new OciError('DIGEST_INVALID', `invalid digest: ${s.slice(0, 200)}`, { detail: { digest: s } });
  return d;
}

/** Whether a reference looks like a digest at all (alg:...), as opposed to a tag. */
export function looksLikeDigest(reference: string): boolean {
  return reference.includes(':');
}

export function digestOf(bytes: Uint8Array, algorithm: Algorithm = 'sha256'): Digest {
  const hex = createHash(algorithm).update(bytes).digest('hex');
  return { algorithm, hex, value: `${algorithm}:${hex}` };
}

export function newHash(algorithm: Algorithm): Hash {
  return createHash(algorithm);
}

export function finishHash(hash: Hash, algorithm: Algorithm): Digest {
  const hex = hash.digest('hex');
  return { algorithm, hex, value: `${algorithm}:${hex}` };
}
