// Key-encryption keys (KEKs) and the wrapping of per-object data keys (DEKs).
//
// A KEK is 32 random bytes with an id. The keyring has one current KEK (new objects) and any
// number of older ones (objects written before a rotation, until they are re-wrapped). Wrapping
// is AES-256-GCM with a random nonce and associated data naming what the key belongs to, so a
// wrapped key copied onto another object does not unwrap.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { StorageError } from './driver.ts';

export interface Kek {
  readonly id: string;
  readonly key: Buffer;
}

export interface Keyring {
  readonly current: Kek;
  get(id: string): Kek | undefined;
  ids(): string[];
}

const keyIdPattern = /^[A-Za-z0-9_.-]{1,64}$/;

export function createKeyring(keys: readonly Kek[], currentId?: string): Keyring {
  if (keys.length === 0) throw new Error('a keyring needs at least one key');
  const byId = new Map<string, Kek>();
  for (const k of keys) {
    if (!keyIdPattern.test(k.id)) throw new Error(`invalid key id ${JSON.stringify(k.id)}`);
    if (k.key.length !== 32) throw new Error(`key ${k.id} must be 32 bytes, not ${k.key.length}`);
    if (byId.has(k.id)) throw new Error(`duplicate key id ${k.id}`);
    byId.set(k.id, k);
  }
  const current = byId.get(currentId ?? keys[keys.length - 1]!.id);
  if (!current) throw new Error(`current key ${currentId} is not in the keyring`);
  return { current, get: (id) => byId.get(id), ids: () => [...byId.keys()] };
}

/** A keyring whose contents can be swapped while drivers hold it (a reloaded key file). */
export function mutableKeyring(initial: Keyring): Keyring & { replace(next: Keyring): void } {
  let ring = initial;
  return {
    get current() {
      return ring.current;
    },
    get: (id) => ring.get(id),
    ids: () => ring.ids(),
    replace(next) {
      ring = next;
    },
  };
}

export function newKek(): Kek {
  const stamp = new Date().toISOString().slice(0, 10).replaceAll('-', '');
  return { id: `k${stamp}-${randomBytes(4).toString('hex')}`, key: randomBytes(32) };
}

interface KeyFile {
  readonly current: string;
  readonly keys: { readonly id: string; readonly key: string }[];
}

/** Reads a key file: JSON {current, keys: [{id, key (base64)}]}. */
export function readKeyFile(path: string): Keyring {
  const parsed = JSON.parse(readFileSync(path, 'utf8')) as KeyFile;
  return createKeyring(
    parsed.keys.map((k) => ({ id: k.id, key: Buffer.from(k.key, 'base64') })),
    parsed.current,
  );
}

/** Writes a key file atomically with mode 0600 (its directory 0700). */
export function writeKeyFile(path: string, ring: Keyring): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const file: KeyFile = {
    current: ring.current.id,
    keys: ring.ids().map((id) => ({ id, key: ring.get(id)!.key.toString('base64') })),
  };
  const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

/** Keys given inline as "id:base64,id:base64" (the last one is current). */
export function parseKeyList(list: readonly string[]): Keyring {
  return createKeyring(
    list.map((entry) => {
      const i = entry.indexOf(':');
      if (i < 1) throw new Error(`key entries are id:base64 (got ${JSON.stringify(entry.slice(0, 20))}...)`);
      return { id: entry.slice(0, i), key: Buffer.from(entry.slice(i + 1), 'base64') };
    }),
  );
}

/** Encrypts a data key under a KEK, bound to `context`: nonce(12) || ciphertext(32) || tag(16). */
export function wrapKey(kek: Kek, dek: Buffer, context: string): Buffer {
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', kek.key, nonce);
  c.setAAD(Buffer.from(`berth-dek-v1\u0000${kek.id}\u0000${context}`));
  return Buffer.concat([nonce, c.update(dek), c.final(), c.getAuthTag()]);
}

export function unwrapKey(kek: Kek, wrapped: Buffer, context: string, where: string): Buffer {
  try {
    if (wrapped.length !== 60) throw new Error('bad length');
    const d = createDecipheriv('aes-256-gcm', kek.key, wrapped.subarray(0, 12));
    d.setAAD(Buffer.from(`berth-dek-v1\u0000${kek.id}\u0000${context}`));
    d.setAuthTag(wrapped.subarray(44));
    return Buffer.concat([d.update(wrapped.subarray(12, 44)), d.final()]);
  } catch (e) {
    throw new StorageError('encrypted', where, `data key does not unwrap: the object was altered or moved`, {
      cause: e,
    });
  }
}
