// Temporary credentials for a role, as AWS's STS hands a task its task role: an access key id
// (BT + 18 base32 characters, unlike a long-term key's BK), a secret and a session token, valid
// until they expire. They live in memory only: a restarted berth forgets them, and a task's SDK
// simply fetches fresh ones from the credentials endpoint (it refreshes well before expiry anyway).
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

interface Stored extends RoleSession {
  readonly secret: string;
  readonly secretHash: Buffer;
  readonly sessionToken: string;
}

export function isSessionKeyId(id: unknown): id is string {
  return typeof id === 'string' && sessionKeyPattern.test(id);
}

const sha256 = (s: string) => createHash('sha256').update(s).digest();

export function createRoleSessions(now: () => number = Date.now, maxSessions = 100_000) {
  const sessions = new Map<string, Stored>();

  function prune(): void {
    const t = now() / 1000;
    for (const [id, s] of sessions) if (s.expiresAt <= t) sessions.delete(id);
  }

  function live(id: string): Stored | undefined {
    const s = sessions.get(id);
    if (!s) return undefined;
    if (s.expiresAt <= now() / 1000) {
      sessions.delete(id);
      return undefined;
    }
    return s;
  }

  return {
    issue(role: string, sessionName: string, seconds: number): IssuedRoleSession {
      if (sessions.size >= maxSessions) prune();
      const bytes = randomBytes(18);
      let id = 'BT';
      for (const b of bytes) id += alphabet[b & 31];
      const secret = randomBytes(30).toString('base64url');
      const sessionToken = randomBytes(48).toString('base64url');
      const expiresAt = Math.floor(now() / 1000) + seconds;
      sessions.set(id, {
        accessKeyId: id,
        role,
        sessionName,
        expiresAt,
        secret,
        secretHash: sha256(secret),
        sessionToken,
      });
      return { accessKeyId: id, role, sessionName, expiresAt, secretAccessKey: secret, sessionToken };
    },
    /** The session, when the secret is its own and it has not expired (Basic sign-in). */
    verify(id: string, secret: string): RoleSession | undefined {
      const s = live(id);
      if (!s || !timingSafeEqual(sha256(secret), s.secretHash)) return undefined;
      return s;
    },
    /** The signing secret, when the session token matches (SigV4 with X-Amz-Security-Token). */
    signing(id: string, sessionToken: string | undefined): (RoleSession & { secret: string }) | undefined {
      const s = live(id);
      if (!s || sessionToken === undefined) return undefined;
      const a = sha256(sessionToken);
      if (!timingSafeEqual(a, sha256(s.sessionToken))) return undefined;
      return s;
    },
  };
}
