// Task role credentials, ECS style: a task whose definition names a taskRoleArn gets
//   AWS_CONTAINER_CREDENTIALS_FULL_URI   https://127.0.0.1:<port>/v1/task-credentials/<task id>
//                                        (host network), http://169.254.170.2/... (bridge: runner.ts)
//   AWS_CONTAINER_AUTHORIZATION_TOKEN    a random token only this task knows
// and the AWS SDKs (or curl) fetch short-lived credentials for the role from there. The token is
// the only proof: it is unguessable, bound to one task id, compared in constant time, and dies
// with the task, so a task can never read another task's credentials. It is kept in the task's
// record (encrypted at rest), so tasks adopted after a restart keep working. The credentials are
// minted per request as role sessions named for the task (`ecs-task-<id>`), and they die with the
// task too: when it reaches STOPPED every session minted for it is revoked, and at start every
// session of a task that no longer runs (one that stopped while berth was down) is.
import { randomBytes, timingSafeEqual } from 'node:crypto';

export const credentialsPathPrefix = '/v1/task-credentials/';

/** What the endpoint answers, in the container credential provider's JSON shape. */
export interface ContainerCredentials {
  AccessKeyId: string;
  SecretAccessKey: string;
  Token: string;
  /** ISO 8601. */
  Expiration: string;
  RoleArn: string;
}

export type MintCredentials = (roleArn: string, sessionName: string) => Promise<ContainerCredentials>;

/** Ends the credentials minted for every session name `stale` picks; answers how many ended. */
export type RevokeCredentials = (stale: (sessionName: string) => boolean) => Promise<number>;

const sessionPrefix = 'ecs-task-';

/** The role session name of a task's credentials. */
export const taskSessionName = (taskId: string) => `${sessionPrefix}${taskId}`;

/** The task id a session name of taskSessionName stands for, or undefined for any other name. */
export function sessionTaskId(sessionName: string): string | undefined {
  return sessionName.startsWith(sessionPrefix) ? sessionName.slice(sessionPrefix.length) : undefined;
}

export class CredentialsError extends Error {
  override name = 'CredentialsError';
  readonly status: 400 | 401 | 403 | 404;
  constructor(status: 400 | 401 | 403 | 404, message: string) {
    super(message);
    this.status = status;
  }
}

export function newTaskToken(): string {
  return randomBytes(32).toString('base64url');
}

export function sameToken(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The variables a container of a task with a role gets. */
export function credentialsEnv(baseUrl: string, taskId: string, token: string): Record<string, string> {
  return {
    AWS_CONTAINER_CREDENTIALS_FULL_URI: `${baseUrl.replace(/\/+$/, '')}${credentialsPathPrefix}${taskId}`,
    AWS_CONTAINER_AUTHORIZATION_TOKEN: token,
  };
}

export interface TaskCredentialsSource {
  /** The role and token of a running task, or undefined when there is no such running task. */
  lookup(taskId: string): { roleArn?: string; token?: string; running: boolean } | undefined;
  /** Ends the credentials minted under a session name. */
  revoke?(sessionName: string): Promise<unknown>;
}

/** Answers one credentials request: the task's token must match, the task must be running. */
export async function taskCredentials(
  source: TaskCredentialsSource,
  mint: MintCredentials,
  taskId: string,
  authorization: string | undefined,
): Promise<ContainerCredentials> {
  if (!/^[a-f0-9]{32}$/.test(taskId)) throw new CredentialsError(404, 'no such task');
  if (!authorization) throw new CredentialsError(401, 'the Authorization header must carry the task token');
  const t = source.lookup(taskId);
  // The same answer for "no such task" and "wrong token": the endpoint confirms nothing to a guesser.
  if (!t?.token || !sameToken(authorization, t.token)) throw new CredentialsError(403, 'invalid task token');
  if (!t.running) throw new CredentialsError(403, 'the task is not running');
  if (!t.roleArn) throw new CredentialsError(404, 'the task has no taskRoleArn');
  const creds = await mint(t.roleArn, taskSessionName(taskId));
  // The task may have stopped while they were minted, after its sessions were revoked.
  if (!source.lookup(taskId)?.running) {
    await source.revoke?.(taskSessionName(taskId));
    throw new CredentialsError(403, 'the task is not running');
  }
  return creds;
}
