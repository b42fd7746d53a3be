// A container's volumes, resolved to what runc bind-mounts:
//   - `host.sourcePath`: a host directory the operator allows (host-access.ts), checked again and
//     staged at the mount itself, since the config or the path may have changed since RunTask;
//   - berth-managed volumes (ECS's Docker volumes, local driver): a bind-less `host: {}` and
//     `dockerVolumeConfiguration` with scope task live in tasks/<taskId>/<name> and die with the
//     task; scope shared is shared/<name>, one directory per name for every task naming it.
// Managed directories belong to the containers' mapped root (idmap.ts), so containers can write
// them while their root is an unprivileged host user.
import { chown, lstat, mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../log.ts';
import type { HostAccess, StagedHostPath } from './host-access.ts';
import { type IdMapping, rootOwner } from './idmap.ts';
import { TaskLaunchError } from './model.ts';
import type { VolumeMount } from './runtime-spec.ts';
import type { ContainerDefinition, TaskDefinition, Volume } from './task-definitions.ts';

export interface TaskVolumesOptions {
  /** DATA/runner/volumes. */
  root: string;
  idMapping: IdMapping;
  hostAccess: HostAccess;
  log: Logger;
}

export interface TaskVolumes {
  /**
   * The mounts of one container (its mountPoints, then what volumesFrom brings). Host paths are
   * staged into `held`: the caller releases them once the runtime has made its mounts.
   */
  mounts(
    taskId: string,
    def: TaskDefinition,
    cd: ContainerDefinition,
    held: StagedHostPath[],
  ): Promise<VolumeMount[]>;
  /** Deletes a stopped task's own volumes. */
  removeTask(taskId: string): Promise<void>;
  /** Deletes task volumes of tasks not in `liveIds` (left by a crash between stop and delete). */
  sweep(liveIds: ReadonlySet<string>): Promise<void>;
}

export function createTaskVolumes(opts: TaskVolumesOptions): TaskVolumes {
  const { hostAccess, log } = opts;
  const taskDir = (id: string) => join(opts.root, 'tasks', id);
  const owner = rootOwner(opts.idMapping);

  async function managedDirectory(path: string): Promise<string> {
    await mkdir(path, { recursive: true, mode: 0o755 });
    await chown(path, owner.uid, owner.gid);
    return path;
  }

  async function managedVolume(taskId: string, v: Volume): Promise<string> {
    const docker = v.dockerVolumeConfiguration;
    if (docker?.scope !== 'shared') return managedDirectory(join(taskDir(taskId), v.name));
    const dir = join(opts.root, 'shared', v.name);
    if (docker.autoprovision === true) return managedDirectory(dir);
    const st = await lstat(dir).catch(() => undefined);
    if (!st?.isDirectory())
      throw new TaskLaunchError(
        `ResourceInitializationError: the shared volume '${v.name}' does not exist, and the volume's ` +
          'dockerVolumeConfiguration.autoprovision is not true: set it so the first task creates the volume, ' +
          `or have the operator create volumes/shared/${v.name} under runner.root, owned by ${owner.uid}`,
      );
    return dir;
  }

  async function hostVolume(
    taskId: string,
    def: TaskDefinition,
    v: Volume,
    sourcePath: string,
    container: string,
    held: StagedHostPath[],
  ): Promise<string> {
    try {
      const staged = await hostAccess.stage(
        sourcePath,
        `volumes[${def.volumes.indexOf(v)}].host.sourcePath`,
        {
          taskId,
          container,
          n: held.length,
        },
      );
      held.push(staged);
      return staged.source;
    } catch (err) {
      throw new TaskLaunchError(`CannotStartContainerError: ${(err as Error).message}`, { cause: err });
    }
  }

  async function mounts(
    taskId: string,
    def: TaskDefinition,
    cd: ContainerDefinition,
    held: StagedHostPath[],
    seen = new Set<string>(),
  ): Promise<VolumeMount[]> {
    const out: VolumeMount[] = [];
    for (const mp of cd.mountPoints) {
      const v = def.volumes.find((x) => x.name === mp.sourceVolume);
      if (!v) throw new TaskLaunchError(`container ${cd.name}: no volume named ${mp.sourceVolume}`);
      const sourcePath = v.host?.sourcePath;
      const hostPath =
        sourcePath !== undefined
          ? await hostVolume(taskId, def, v, sourcePath, cd.name, held)
          : await managedVolume(taskId, v);
      out.push({ hostPath, containerPath: mp.containerPath, readOnly: mp.readOnly });
    }
    for (const vf of cd.volumesFrom) {
      if (seen.has(vf.sourceContainer)) continue;
      seen.add(cd.name);
      const src = def.containerDefinitions.find((x) => x.name === vf.sourceContainer);
      if (!src)
        throw new TaskLaunchError(
          `container ${cd.name}: volumesFrom names no container ${vf.sourceContainer}`,
        );
      for (const m of await mounts(taskId, def, src, held, seen))
        out.push({ ...m, readOnly: m.readOnly || vf.readOnly });
    }
    return out;
  }

  return {
    mounts: (taskId, def, cd, held) => mounts(taskId, def, cd, held),
    async removeTask(taskId) {
      await rm(taskDir(taskId), { recursive: true, force: true }).catch((err) => {
        log.warn({ err, task: taskId }, 'cannot delete the task volumes');
      });
    },
    async sweep(liveIds) {
      const gone = async (dir: string, names: (n: string) => boolean) => {
        const entries = await readdir(dir).catch(() => [] as string[]);
        for (const n of entries)
          if (names(n) && !liveIds.has(n)) await rm(join(dir, n), { recursive: true, force: true });
      };
      // Also those of berth before task volumes moved under tasks/ (straight under the root).
      for (const [dir, names] of [
        [join(opts.root, 'tasks'), () => true],
        [opts.root, (n: string) => /^[0-9a-f]{32}$/.test(n)],
      ] as const)
        await gone(dir, names).catch((err) =>
          log.warn({ err }, 'could not delete the volumes of stopped tasks'),
        );
    },
  };
}
