import { describe, expect, it } from 'vitest';
import {
  type ContainerCredentials,
  CredentialsError,
  sessionTaskId,
  type TaskCredentialsSource,
  taskCredentials,
  taskSessionName,
} from './credentials.ts';

const id = 'a'.repeat(32);
const creds: ContainerCredentials = {
  AccessKeyId: 'BTAAAAAAAAAAAAAAAAAA',
  SecretAccessKey: 's',
  Token: 't',
  Expiration: '2030-01-01T00:00:00.000Z',
  RoleArn: 'arn:aws:iam::000000000000:role/app',
};

describe('task credentials', () => {
  it('names each task’s sessions after it, and reads the task back from the name', () => {
    expect(taskSessionName(id)).toBe(`ecs-task-${id}`);
    expect(sessionTaskId(taskSessionName(id))).toBe(id);
    expect(sessionTaskId('ci-job-1')).toBeUndefined();
  });

  it('mints for a running task with its token, as a session named for the task', async () => {
    const minted: string[] = [];
    const source: TaskCredentialsSource = {
      lookup: () => ({ roleArn: creds.RoleArn, token: 'tok', running: true }),
    };
    const out = await taskCredentials(
      source,
      async (_role, session) => {
        minted.push(session);
        return creds;
      },
      id,
      'tok',
    );
    expect(out).toBe(creds);
    expect(minted).toEqual([`ecs-task-${id}`]);
  });

  it('revokes what it minted when the task stopped meanwhile, and refuses', async () => {
    let running = true;
    const revoked: string[] = [];
    const source: TaskCredentialsSource = {
      lookup: () => ({ roleArn: creds.RoleArn, token: 'tok', running }),
      revoke: async (session) => revoked.push(session),
    };
    const err = await taskCredentials(
      source,
      async () => {
        running = false;
        return creds;
      },
      id,
      'tok',
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CredentialsError);
    expect((err as CredentialsError).status).toBe(403);
    expect(revoked).toEqual([`ecs-task-${id}`]);
  });
});
