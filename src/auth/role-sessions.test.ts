import { describe, expect, it } from 'vitest';
import { createRoleSessions, isSessionKeyId } from './role-sessions.ts';

describe('role sessions', () => {
  it('issues temporary keys that verify with the secret, sign with the session token, and expire', () => {
    let t = 1_000_000_000_000;
    const sessions = createRoleSessions(() => t);
    const s = sessions.issue('deployer', 'ecs-task:abc', 900);
    expect(isSessionKeyId(s.accessKeyId)).toBe(true);
    expect(isSessionKeyId('BKAAAAAAAAAAAAAAAAAA')).toBe(false);
    expect(sessions.verify(s.accessKeyId, s.secretAccessKey)?.role).toBe('deployer');
    expect(sessions.verify(s.accessKeyId, `${s.secretAccessKey}x`)).toBeUndefined();
    expect(sessions.signing(s.accessKeyId, s.sessionToken)?.secret).toBe(s.secretAccessKey);
    expect(sessions.signing(s.accessKeyId, undefined)).toBeUndefined();
    expect(sessions.signing(s.accessKeyId, 'other')).toBeUndefined();
    t += 901_000;
    expect(sessions.verify(s.accessKeyId, s.secretAccessKey)).toBeUndefined();
  });

  it('gives every session its own key', () => {
    const sessions = createRoleSessions();
    const a = sessions.issue('r', 'a', 60);
    const b = sessions.issue('r', 'b', 60);
    expect(a.accessKeyId).not.toBe(b.accessKeyId);
    expect(sessions.verify(a.accessKeyId, b.secretAccessKey)).toBeUndefined();
  });
});
