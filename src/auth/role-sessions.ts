// Temporary credentials for a role, as AWS's STS hands a task its task role: an access key id
// (BT + 18 base32 characters, unlike a long-term key's BK), a secret and a session token, valid
// until they expire. Each session is kept in memory and, when a store is given, written through
// to it (under /auth/role-sessions, encrypted at rest like everything auth stores), so a task
// adopted after a berth restart keeps using the credentials its SDK already holds: SDKs refresh
// only shortly before Expiration. Expired sessions are dropped on sight and by sweep().
//
// A session can also be ended early (revoke: its task stopped, its role was deleted). Its record
// is deleted, and its key id is remembered until it would have expired, so nothing (a record a
// failed delete left behind, a save still in flight) brings it back. sweep() at start loads every
// live session, so from then on the cache holds them all and revoke() finds each by its name.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const sessionKeyPattern = /^BT[A-Z2-7]{18}$/;

export interface RoleSession {
  readonly accessKeyId: string;
  readonly role: string;
  /** Who the session is for, e.g. `ecs-task:<task id>`. */
  readonly sessionName: string;
  /** Seconds since the epoch. */
  readonly expiresAt: number;
}

export interface IssuedRoleSession extends RoleSession {
  readonly secretAccessKey: string;
  readonly sessionToken: string;
}

/** What is stored per session: the secret is needed in clear to check SigV4 signatures. */
export interface StoredRoleSession extends RoleSession {
  readonly secret: string;
  readonly sessionToken: string;
}

export interface RoleSessionStore {
  load(id: string): Promise<StoredRoleSession | undefined>;
  save(s: StoredRoleSession): Promise<void>;
  remove(id: string): Promise<void>;
  list(): Promise<StoredRoleSession[]>;
}

export function isSessionKeyId(id: unknown): id is string {
  return typeof id === 'string' && sessionKeyPattern.test(id);
}

const sha256 = (s: string) => createHash('sha256').update(s).digest();
const same = (a: string, b: string) => timingSafeEqual(sha256(a), sha256(b));

export function createRoleSessions(
  now: () => number = Date.now,
  store?: RoleSessionStore,
  maxCached = 100_000,
) {
  const cache = new Map<string, StoredRoleSession>();
  /** Ended early: key id -> when it would have expired. */
  const revoked = new Map<string, number>();
  const expired = (s: Pick<RoleSession, 'expiresAt'>) => s.expiresAt <= now() / 1000;

  function prune(): void {
    for (const [id, s] of cache) if (expired(s)) cache.delete(id);
    for (const [id, expiresAt] of revoked) if (expired({ expiresAt })) revoked.delete(id);
  }

  async function live(id: string): Promise<StoredRoleSession | undefined> {
    if (revoked.has(id)) return undefined;
    let s = cache.get(id);
    if (!s && store) {
      s = await store.load(id);
      if (s && s.accessKeyId === id && !revoked.has(id)) {
        if (cache.size >= maxCached) prune();
        cache.set(id, s);
      } else s = undefined;
    }
    if (!s) return undefined;
    if (expired(s)) {
      cache.delete(id);
      await store?.remove(id).catch(() => {});
      return undefined;
    }
    return s;
  }

  return {
    async issue(role: string, sessionName: string, seconds: number): Promise<IssuedRoleSession> {
      if (cache.size >= maxCached) prune();
      let id = 'BT';
      for (const b of randomBytes(18)) id += alphabet[b & 31];
      const s: StoredRoleSession = {
        accessKeyId: id,
        role,
        sessionName,
        expiresAt: Math.floor(now() / 1000) + seconds,
        secret: randomBytes(30).toString('base64url'),
        sessionToken: randomBytes(48).toString('base64url'),
      };
      // In the cache before the save, so a revoke() racing the save finds it; stored before it is
      // handed out, since credentials a task holds must outlive a restart.
      cache.set(id, s);
      await store?.save(s);
      if (revoked.has(id)) await store?.remove(id);
      return { ...s, secretAccessKey: s.secret };
    },
    /** The session, when the secret is its own and it has not expired (Basic sign-in). */
    async verify(id: string, secret: string): Promise<RoleSession | undefined> {
      const s = await live(id);
      return s && same(secret, s.secret) ? s : undefined;
    },
    /** The signing secret, when the session token matches (SigV4 with X-Amz-Security-Token). */
    async signing(id: string, sessionToken: string | undefined): Promise<StoredRoleSession | undefined> {
      if (sessionToken === undefined) return undefined;
      const s = await live(id);
      return s && same(sessionToken, s.sessionToken) ? s : undefined;
    },
    /** Whether the session exists, has not expired and was not revoked. */
    async alive(id: string): Promise<boolean> {
      return (await live(id)) !== undefined;
    },
    /**
     * Ends every live session `match` picks, at once: its key stops verifying and signing.
     * Answers how many. Complete once sweep() has loaded the store (start).
     */
    async revoke(match: (s: RoleSession) => boolean): Promise<number> {
      const ended = [...cache.values()].filter((s) => !expired(s) && match(s));
      for (const s of ended) {
        revoked.set(s.accessKeyId, s.expiresAt);
        cache.delete(s.accessKeyId);
      }
      for (const s of ended) await store?.remove(s.accessKeyId);
      return ended.length;
    },
    /** Deletes expired sessions from the store and loads the live ones; answers how many were deleted. */
    async sweep(): Promise<number> {
      prune();
      if (!store) return 0;
      let n = 0;
      for (const s of await store.list())
        if (expired(s)) {
          await store.remove(s.accessKeyId);
          n++;
        } else if (revoked.has(s.accessKeyId)) await store.remove(s.accessKeyId);
        else cache.set(s.accessKeyId, s);
      return n;
    },
  };
}
