// What push hooks do, and with whose rights. A rule acts as its role (`roleArn`), as an
// EventBridge rule acts with its RoleArn, so a hook can never do more than the role may, and
// writing a rule can never hand its writer more than the roles they may pass.
//
// Writing an enabled rule (authorizeRule) needs:
//   - of the writer: iam:PassRole on the rule's role (besides ecs:ManageHooks, checked by http/);
//   - of the role: the ECS action the rule takes (ecs:RunTask on taskdefinition/FAMILY,
//     ecs:UpdateService on service/CLUSTER/NAME); registry:Pull on the repositories it matches,
//     checked on the glob itself: the glob's text is the resource, so a statement covers it only
//     when its Resource pattern matches that text (`repository/team/*` covers `team/*`,
//     `team/**` and `team/api`; `repository/team/api` covers only `team/api`); iam:PassRole on
//     overrides.taskRoleArn; and, when the task definition or service exists already, what
//     starting its tasks needs (launch-rights.ts: pass its task and execution roles, pull its
//     images).
// Each run (runTask, rollService) is authorized again as the role before anything starts or
// changes, with the concrete repository pushed and the task definition as it is then: the role
// may have lost its rights, been deleted, or the definition may name another role or image now.
// A refusal is a HookDenied, which hooks.ts records on the run.
import type { Catalog } from './catalog.ts';
import { EcsError } from './ecs-protocol.ts';
import {
  HookDenied,
  HookError,
  type HookRuleFields,
  type RollServiceAction,
  type RunTaskAction,
} from './hook-rules.ts';
import type { HookActions } from './hooks.ts';
import { parseImageRef } from './images.ts';
import {
  type Actor,
  authorizeLaunch,
  type DecideAs,
  type Launch,
  requireAllowed,
  roleActor,
  roleName,
} from './launch-rights.ts';
import { DEFAULT_CLUSTER, type ServiceScheduler, type TaskManager } from './model.ts';
import { parseTaskDefinitionRef, type TaskDefinition } from './task-definitions.ts';

export interface HookActionDeps {
  readonly catalog: Catalog;
  readonly tasks: Pick<TaskManager, 'run'>;
  readonly services: Pick<ServiceScheduler, 'get' | 'update'>;
  readonly decideAs: DecideAs;
  /** Registry host names meaning "this berth" in an image reference. */
  readonly ownHosts: readonly string[];
}

/** Tag on the revisions rollService registers: the run's key, so a resumed run reuses its revision. */
const hookKeyTag = 'berth:hook-key';

/** `repo@sha256:...` -> `repo`. */
const repositoryOf = (imageRef: string) => imageRef.slice(0, imageRef.indexOf('@'));

const clusterNameOf = (cluster: string) =>
  /^arn:[^:]+:ecs:[^:]*:[^:]*:cluster\/(.+)$/.exec(cluster)?.[1] ?? cluster;

/** The ECS action a rule takes, on the resource policies name. */
function ecsRight(action: RunTaskAction | RollServiceAction) {
  if (action.type === 'runTask') {
    const family = parseTaskDefinitionRef(action.taskDefinition)?.family ?? action.taskDefinition;
    return {
      action: 'ecs:RunTask' as const,
      resource: `taskdefinition/${family}`,
      field: 'action.taskDefinition',
    };
  }
  return {
    action: 'ecs:UpdateService' as const,
    resource: `service/${clusterNameOf(action.cluster)}/${action.service}`,
    field: 'action.service',
  };
}

/** A refusal while writing a rule: 403, naming the field whose right is missing. */
const forbidden = (field: string, message: string) =>
  new HookError('FORBIDDEN', `${field}: ${message}`, field);

/** Runs `check`; its AccessDeniedException becomes a HookDenied (the run's recorded reason). */
async function asRun<T>(check: () => Promise<T>): Promise<T> {
  try {
    return await check();
  } catch (err) {
    if (err instanceof EcsError && err.type === 'AccessDeniedException')
      throw new HookDenied(`the rule's role may not do this: ${err.message}`);
    throw err;
  }
}

export function createHookActions(deps: HookActionDeps): HookActions {
  const { catalog, tasks, services, decideAs, ownHosts } = deps;
  const launchDeps = { decideAs, ownHosts };

  const clusterArnOf = async (name: string | undefined) => {
    const c = await catalog.getCluster(name ?? DEFAULT_CLUSTER);
    if (!c) throw new Error(`cluster ${name} does not exist`);
    return c.clusterArn;
  };

  /** The containers of def whose image is the pushed repository, pinned to imageRef. */
  function pinnedFor(def: TaskDefinition, imageRef: string): Record<string, string> {
    const repo = repositoryOf(imageRef);
    const out: Record<string, string> = {};
    for (const c of def.containerDefinitions) {
      try {
        if (parseImageRef(c.image, ownHosts).repository === repo) out[c.name] = imageRef;
      } catch {}
    }
    if (Object.keys(out).length === 0)
      throw new Error(`no container of ${def.family}:${def.revision} runs an image of ${repo}`);
    return out;
  }

  /** The role's right to take the rule's action on the pushed repository, checked at every run. */
  async function requireRunRights(role: Actor, action: RunTaskAction | RollServiceAction, imageRef: string) {
    const right = ecsRight(action);
    await requireAllowed(role, right.action, right.resource);
    await requireAllowed(role, 'registry:Pull', `repository/${repositoryOf(imageRef)}`);
  }

  /** What starting the target's tasks would need, when the target exists already. */
  async function existingLaunch(action: RunTaskAction | RollServiceAction): Promise<Launch | undefined> {
    if (action.type === 'runTask') {
      const stored = await catalog.describeTaskDefinition(action.taskDefinition);
      return stored && { taskDefinition: stored.taskDefinition, overrides: action.overrides };
    }
    const cluster = await catalog.getCluster(action.cluster);
    const svc = cluster && services.get(cluster.clusterArn, action.service);
    const stored = svc && (await catalog.describeTaskDefinition(svc.taskDefinition));
    return stored && { taskDefinition: stored.taskDefinition };
  }

  return {
    async authorizeRule(rule: HookRuleFields & { roleArn: string }, author: Actor) {
      const roleRef = `role/${roleName(rule.roleArn)}`;
      if (!(await author.isAllowed('iam:PassRole', roleRef)))
        throw forbidden(
          'roleArn',
          `${author.principalArn} is not allowed iam:PassRole on ${roleRef}: a rule acts with its role's rights, so writing one needs the right to pass that role`,
        );
      const role = roleActor(decideAs, rule.roleArn);
      const who = `the rule's role ${rule.roleArn}`;
      const right = ecsRight(rule.action);
      if (!(await role.isAllowed(right.action, right.resource)))
        throw forbidden(right.field, `${who} is not allowed ${right.action} on ${right.resource}`);
      if (!(await role.isAllowed('registry:Pull', `repository/${rule.repository}`)))
        throw forbidden(
          'repository',
          `${who} is not allowed registry:Pull on every repository "${rule.repository}" matches: a statement's Resource must cover the glob itself (e.g. "repository/team/*" covers "team/*" and "team/**")`,
        );
      const overrideRole = rule.action.type === 'runTask' ? rule.action.overrides?.taskRoleArn : undefined;
      if (overrideRole && !(await role.isAllowed('iam:PassRole', `role/${roleName(overrideRole)}`)))
        throw forbidden(
          'action.overrides.taskRoleArn',
          `${who} is not allowed iam:PassRole on role/${roleName(overrideRole)}`,
        );
      const launch = await existingLaunch(rule.action);
      if (!launch) return; // nothing to start yet: each run checks the target as it is then
      try {
        await authorizeLaunch(role, launch, launchDeps);
      } catch (err) {
        if (err instanceof EcsError && err.type === 'AccessDeniedException')
          throw forbidden(right.field, `${who} may not start its tasks: ${err.message}`);
        throw err;
      }
    },

    async runTask(action, imageRef, key, roleArn) {
      const role = roleActor(decideAs, roleArn);
      await asRun(() => requireRunRights(role, action, imageRef));
      const stored = await catalog.describeTaskDefinition(action.taskDefinition);
      if (!stored) throw new Error(`task definition ${action.taskDefinition} does not exist`);
      const def = stored.taskDefinition;
      const pinnedImages = pinnedFor(def, imageRef);
      await asRun(() =>
        authorizeLaunch(role, { taskDefinition: def, overrides: action.overrides, pinnedImages }, launchDeps),
      );
      const { tasks: started, failures } = await tasks.run({
        clusterArn: await clusterArnOf(action.cluster),
        taskDefinition: def,
        count: action.count ?? 1,
        startedBy: 'berth-hook',
        pinnedImages,
        clientToken: key,
        ...(action.overrides && { overrides: action.overrides }),
      });
      if (started.length === 0)
        throw new Error(failures.map((f) => f.reason).join('; ') || 'no task started');
      return { taskArns: started.map((t) => t.taskArn) };
    },

    async rollService(action, imageRef, key, roleArn) {
      const role = roleActor(decideAs, roleArn);
      await asRun(() => requireRunRights(role, action, imageRef));
      const clusterArn = await clusterArnOf(action.cluster);
      const svc = services.get(clusterArn, action.service);
      if (!svc) throw new Error(`service ${action.service} does not exist in cluster ${action.cluster}`);
      const current = await catalog.describeTaskDefinition(svc.taskDefinition);
      if (!current) throw new Error(`task definition ${svc.taskDefinition} does not exist`);
      const def = current.taskDefinition;
      // Idempotent per key: a revision registered for this key by an earlier (crashed) attempt is reused.
      let target: TaskDefinition | undefined;
      for (const rev of (await catalog.listTaskDefinitions({ family: def.family, sort: 'DESC' })).slice(
        0,
        20,
      )) {
        const s = await catalog.describeTaskDefinition(rev.taskDefinitionArn);
        if (s?.tags.some((t) => t.key === hookKeyTag && t.value === key)) {
          target = s.taskDefinition;
          break;
        }
      }
      // What the new revision will run, checked before it is registered.
      const pins = target ? {} : pinnedFor(def, imageRef);
      const { puller } = await asRun(() =>
        authorizeLaunch(role, { taskDefinition: target ?? def, pinnedImages: pins }, launchDeps),
      );
      if (!target) {
        const {
          taskDefinitionArn: _a,
          revision: _r,
          status: _s,
          compatibilities: _c,
          placementConstraints: _p,
          requiresAttributes: _q,
          registeredAt: _t,
          registeredBy: _b,
          deregisteredAt: _d,
          ...spec
        } = def;
        const input = {
          ...spec,
          containerDefinitions: def.containerDefinitions.map((c) =>
            pins[c.name] ? { ...c, image: pins[c.name] } : c,
          ),
          tags: [...current.tags.filter((t) => t.key !== hookKeyTag), { key: hookKeyTag, value: key }],
        };
        target = (await catalog.registerTaskDefinition(input, roleArn)).taskDefinition;
      }
      const now = services.get(clusterArn, action.service)!;
      const primary = now.deployments.find((d) => d.status === 'PRIMARY');
      if (primary?.taskDefinition === target.taskDefinitionArn)
        return { deploymentId: primary.id, taskDefinitionArn: target.taskDefinitionArn };
      const updated = await services.update({
        clusterArn,
        serviceName: action.service,
        taskDefinition: target,
        reason: `hook:${key}`,
        pullPrincipal: puller,
      });
      const deployment = updated.deployments.find((d) => d.status === 'PRIMARY')!;
      return { deploymentId: deployment.id, taskDefinitionArn: target.taskDefinitionArn };
    },
  };
}
