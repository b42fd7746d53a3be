import { describe, expect, it } from 'vitest';
import { createRoleSessions, isSessionKeyId, type StoredRoleSession } from './role-sessions.ts';

function memoryStore() {
  const m = new Map<string, StoredRoleSession>();
  return {
    m,
    load: async (id: string) => m.get(id),
    save: async (s: StoredRoleSession) => void m.set(s.accessKeyId, s),
    remove: async (id: string) => void m.delete(id),
    list: async () => [...m.values()],
  };
}

describe('role sessions', () => {
  it('issues temporary keys that verify with the secret, sign with the session token, and expire', async () => {
    let t = 1_000_000_000_000;
    const sessions = createRoleSessions(() => t);
    const s = await sessions.issue('deployer', 'ecs-task:abc', 900);
    expect(isSessionKeyId(s.accessKeyId)).toBe(true);
    expect(isSessionKeyId('BKAAAAAAAAAAAAAAAAAA')).toBe(false);
    expect((await sessions.verify(s.accessKeyId, s.secretAccessKey))?.role).toBe('deployer');
    expect(await sessions.verify(s.accessKeyId, `${s.secretAccessKey}x`)).toBeUndefined();
    expect((await sessions.signing(s.accessKeyId, s.sessionToken))?.secret).toBe(s.secretAccessKey);
    expect(await sessions.signing(s.accessKeyId, undefined)).toBeUndefined();
    expect(await sessions.signing(s.accessKeyId, 'other')).toBeUndefined();
    t += 901_000;
    expect(await sessions.verify(s.accessKeyId, s.secretAccessKey)).toBeUndefined();
  });

  it('gives every session its own key', async () => {
    const sessions = createRoleSessions();
    const a = await sessions.issue('r', 'a', 60);
    const b = await sessions.issue('r', 'b', 60);
    expect(a.accessKeyId).not.toBe(b.accessKeyId);
    expect(await sessions.verify(a.accessKeyId, b.secretAccessKey)).toBeUndefined();
  });

  it('survives a restart through its store, and sweeps expired sessions out of it', async () => {
    let t = 2_000_000_000_000;
    const store = memoryStore();
    const before = createRoleSessions(() => t, store);
    const s = await before.issue('web-task', 'ecs-task:1', 600);
    const short = await before.issue('web-task', 'ecs-task:2', 60);
    const after = createRoleSessions(() => t, store);
    expect((await after.verify(s.accessKeyId, s.secretAccessKey))?.sessionName).toBe('ecs-task:1');
    expect((await after.signing(s.accessKeyId, s.sessionToken))?.role).toBe('web-task');
    t += 120_000;
    expect(await after.sweep()).toBe(1);
    expect(store.m.has(short.accessKeyId)).toBe(false);
    expect(store.m.has(s.accessKeyId)).toBe(true);
  });

  it('ends the sessions a revoke picks, for good, even when their record cannot be deleted', async () => {
    const t = 3_000_000_000_000;
    const store = memoryStore();
    const failing = { ...store, remove: async () => {} };
    const sessions = createRoleSessions(() => t, failing);
    const a = await sessions.issue('web-task', 'ecs-task-a', 600);
    const b = await sessions.issue('web-task', 'ecs-task-b', 600);
    expect(await sessions.revoke((s) => s.sessionName === 'ecs-task-a')).toBe(1);
    // The record is still stored (the delete failed), yet the key is dead in this process.
    expect(store.m.has(a.accessKeyId)).toBe(true);
    expect(await sessions.verify(a.accessKeyId, a.secretAccessKey)).toBeUndefined();
    expect(await sessions.signing(a.accessKeyId, a.sessionToken)).toBeUndefined();
    expect(await sessions.alive(a.accessKeyId)).toBe(false);
    expect(await sessions.alive(b.accessKeyId)).toBe(true);
  });

  it('finds sessions of an earlier process to revoke once sweep has loaded them', async () => {
    const t = 4_000_000_000_000;
    const store = memoryStore();
    const before = createRoleSessions(() => t, store);
    const a = await before.issue('deployer', 'ecs-task-a', 600);
    const after = createRoleSessions(() => t, store);
    await after.sweep();
    expect(await after.revoke((s) => s.role === 'deployer')).toBe(1);
    expect(store.m.has(a.accessKeyId)).toBe(false);
    expect(await after.verify(a.accessKeyId, a.secretAccessKey)).toBeUndefined();
  });

  it('revokes a session whose save is still in flight', async () => {
    const t = 5_000_000_000_000;
    const store = memoryStore();
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const slow = { ...store, save: async (s: StoredRoleSession) => gate.then(() => store.save(s)) };
    const sessions = createRoleSessions(() => t, slow);
    const issuing = sessions.issue('web-task', 'ecs-task-a', 600);
    expect(await sessions.revoke((s) => s.sessionName === 'ecs-task-a')).toBe(1);
    release();
    const s = await issuing;
    expect(store.m.has(s.accessKeyId)).toBe(false);
    expect(await sessions.verify(s.accessKeyId, s.secretAccessKey)).toBeUndefined();
  });
});
