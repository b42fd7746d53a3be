// Who may start what: the checks every way of starting tasks goes through (RunTask and StartTask,
// CreateService and UpdateService, and push hooks acting as their role), so that the right to run
// tasks is never a way into a role's rights or into an image one may not pull.
//
// Starting tasks from a task definition needs, of the one starting them (the actor):
//   - iam:PassRole on the role the tasks will run as (overrides.taskRoleArn, else the
//     definition's taskRoleArn), as on AWS;
//   - iam:PassRole on the definition's executionRoleArn, since its rights pull the images;
//   - registry:Pull on the repository of every container image (after overrides and pins), as the
//     execution role when the definition names one (ECS pulls with it), else as the actor.
// The runner knows nothing of auth's internals: main.ts hands it `decideAs`, a decision for a
// principal named by reference from that principal's current policies.

import type { EcsAction } from './ecs-protocol.ts';
import { EcsError, ecsMessages } from './ecs-protocol.ts';
import { parseImageRef } from './images.ts';
import type { TaskOverride } from './model.ts';
import type { TaskDefinition } from './task-definitions.ts';

/** The actions the runner authorizes. */
export type RunnerAction = EcsAction | 'iam:PassRole' | 'registry:Pull';

/** Someone whose rights are checked: an ECS caller, a hook rule's role, an execution role. */
export interface Actor {
  /** How refusals name it: an IAM-style ARN (`arn:aws:iam::ACCOUNT:role/NAME`), or `user/NAME`. */
  readonly principalArn: string;
  /** The policy's answer for `action` on a berth resource (`repository/NAME`, `role/NAME`, ...). */
  isAllowed(action: RunnerAction, resource: string): Promise<boolean>;
}

/**
 * What main.ts hands the runner (auth's authorizeAs): the decision for a principal named by
 * reference (`role/NAME`) from its current policies; false for a principal that does not exist.
 */
export type DecideAs = (principal: string, action: RunnerAction, resource: string) => Promise<boolean>;

const roleArnPattern = /^arn:[^:]+:iam::[^:]*:role\/(?:.*\/)?([^/]+)$/;

/** The berth role an ARN names (its last path segment); the text itself when it is no role ARN. */
export function roleName(roleArn: string): string {
  return roleArnPattern.exec(roleArn)?.[1] ?? roleArn;
}

/** The role of `roleArn` as an actor, deciding from the role's current policies. */
export function roleActor(decideAs: DecideAs, roleArn: string): Actor {
  const ref = `role/${roleName(roleArn)}`;
  return { principalArn: roleArn, isAllowed: (action, resource) => decideAs(ref, action, resource) };
}

/** AccessDeniedException in ECS's words, naming the actor, the action and the resource. */
export function accessDenied(actor: Actor, action: string, resource: string): EcsError {
  return new EcsError(
    'AccessDeniedException',
    ecsMessages.accessDenied(actor.principalArn, action, resource),
  );
}

/** Throws AccessDeniedException unless `actor` may do `action` on `resource` (`arn` names it in the message). */
export async function requireAllowed(
  actor: Actor,
  action: RunnerAction,
  resource: string,
  arn: string = resource,
): Promise<void> {
  if (!(await actor.isAllowed(action, resource))) throw accessDenied(actor, action, arn);
}

/** iam:PassRole on the role an ARN names; nothing when there is no role. */
export async function requirePassRole(actor: Actor, roleArn: string | undefined): Promise<void> {
  if (roleArn) await requireAllowed(actor, 'iam:PassRole', `role/${roleName(roleArn)}`, roleArn);
}

export interface Launch {
  readonly taskDefinition: Pick<TaskDefinition, 'taskRoleArn' | 'executionRoleArn' | 'containerDefinitions'>;
  readonly overrides?: TaskOverride | undefined;
  /** container name -> `repo@sha256:...`: images that replace the definition's (a hook's push). */
  readonly pinnedImages?: Readonly<Record<string, string>> | undefined;
}

/** The berth repositories a launch reads, each once; images naming another registry are left out. */
export function launchRepositories(launch: Launch, ownHosts: readonly string[]): string[] {
  const repositories = new Set<string>();
  for (const c of launch.taskDefinition.containerDefinitions) {
    const image = launch.pinnedImages?.[c.name] ?? c.image;
    try {
      repositories.add(parseImageRef(image, ownHosts).repository);
    } catch {
      // Not one of berth's images: the launch itself refuses it by name, and no berth
      // repository is read, so there is no pull right to check.
    }
  }
  return [...repositories];
}

/**
 * Checks a launch for `actor` (see the header) and answers whose pull right was used: the
 * execution role's ARN, or the actor's. Throws AccessDeniedException naming the first refusal.
 */
export async function authorizeLaunch(
  actor: Actor,
  launch: Launch,
  deps: { decideAs: DecideAs; ownHosts: readonly string[] },
): Promise<{ puller: string }> {
  const { taskDefinition: td } = launch;
  await requirePassRole(actor, launch.overrides?.taskRoleArn ?? td.taskRoleArn);
  await requirePassRole(actor, td.executionRoleArn);
  const puller = td.executionRoleArn ? roleActor(deps.decideAs, td.executionRoleArn) : actor;
  for (const repository of launchRepositories(launch, deps.ownHosts))
    await requireAllowed(puller, 'registry:Pull', `repository/${repository}`);
  return { puller: puller.principalArn };
}
