// Host paths and the host network are the operator's to give, never a task author's to take.
//
// A task definition may bind-mount a host directory (`volumes[i].host.sourcePath`) only when the
// path lies under runner.hostPathAllowList, and may use `networkMode: host` only when
// runner.allowHostNetwork is set. Some paths are never mounted whatever the allow list says:
// /, /proc, /sys, /dev and berth's own files (its data directory, key file, runner root, ...),
// including any directory that contains one of them.
//
// The check runs three times: when a task definition is registered (on the path as written, and
// where it resolves to if it exists), when a task is started (RunTask, services, hooks: a
// definition registered under an older config must not run under a stricter one), and at the
// bind mount itself, which is where it counts:
//
// Between a check on a path and runc's bind mount of that path, a task that can write into an
// allowed directory could swap a checked directory for a symlink to /. So the launch check never
// trusts a path: it opens the source (O_PATH, following symlinks), asks the kernel what it holds
// (/proc/self/fd/N), and checks THAT. runc 1.1 cannot mount from a descriptor (open_tree and
// move_mount came with 1.2), and runc's own mount namespace cannot bind a mount of berth's
// (EINVAL), so berth bind-mounts /proc/self/fd/N (which mount(2) resolves to the very inode that
// was checked) onto a staging point of its own, RUNNER_ROOT/host-mounts/<task>/<container>/<n>,
// and hands runc that: a path only berth can write, whose every component is berth's. Whatever
// the task's path names by the time runc runs, the mount is of what was checked. The descriptor
// is close-on-exec (no runtime or container inherits it); the staging mount is detached once the
// container exists (the container keeps its own copy), and any a crash left are swept at start.
import { closeSync, fstatSync, openSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { mkdir, readdir, rmdir, unlink, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { EcsError } from './ecs-protocol.ts';
import type { Host } from './host.ts';
import type { NetworkMode, Volume } from './task-definitions.ts';

/** A path no task may mount, and what to call it in a refusal (with the config key that sets it). */
export interface GuardedPath {
  readonly path: string;
  readonly what: string;
}

export interface HostAccessPolicy {
  /** runner.hostPathAllowList: absolute directories host.sourcePath volumes may lie under. */
  readonly hostPathAllowList: readonly string[];
  /** runner.allowHostNetwork */
  readonly allowHostNetwork: boolean;
  /** Paths never mounted: berth's own (the system ones are always added). */
  readonly guarded: readonly GuardedPath[];
}

/** Never mounted, on any berth. '/' is refused only as itself (every path lies under it). */
export const systemGuards: readonly GuardedPath[] = [
  { path: '/', what: "the host's root directory" },
  { path: '/proc', what: "the host's /proc" },
  { path: '/sys', what: "the host's /sys" },
  { path: '/dev', what: "the host's /dev" },
];

const ALLOW_KEY = 'runner.hostPathAllowList';
const NETWORK_KEY = 'runner.allowHostNetwork';

/** Linux's O_PATH (x86-64 and arm64): a descriptor that names a file without opening it for I/O,
 * so a FIFO does not block and a device is not touched. Node does not export the constant. */
const O_PATH = 0o10000000;

/** True when `path` is `dir` or lies inside it (both absolute and normalised). */
export function within(path: string, dir: string): boolean {
  if (dir === '/') return true;
  return path === dir || path.startsWith(`${dir}/`);
}

/** Where a path resolves to when it exists (symlinks and '..' followed); as written otherwise. */
function realOrSelf(path: string): string {
  try {
    return realpathSync.native(path);
  } catch {
    return path;
  }
}

/** Which never-mounted path `path` is, lies inside or contains, worded for a refusal. */
function guardProblem(
  path: string,
  policy: HostAccessPolicy,
  resolve: (p: string) => string,
): string | undefined {
  for (const g of [...systemGuards, ...policy.guarded]) {
    for (const guard of new Set([g.path, resolve(g.path)])) {
      const hit = guard === '/' ? path === '/' : within(path, guard) || within(guard, path);
      if (!hit) continue;
      const how = path === guard ? 'is' : within(path, guard) ? 'lies inside' : 'contains';
      return `${how} ${g.what}, which is never mounted into a task, whatever ${ALLOW_KEY} says`;
    }
  }
  return undefined;
}

/**
 * Why `path` (absolute, normalised) may not be mounted under `policy`, or undefined when it may.
 * `resolve` maps a configured path to where it really is (identity for a check on paths alone).
 */
export function hostPathProblem(
  path: string,
  policy: HostAccessPolicy,
  resolve: (p: string) => string = (p) => p,
): string | undefined {
  const guarded = guardProblem(path, policy, resolve);
  if (guarded) return guarded;
  const allowed = policy.hostPathAllowList;
  if (allowed.length === 0)
    return `this berth allows no host paths (${ALLOW_KEY} is empty); use a task volume (a volume without host.sourcePath), or ask the operator to add a directory to ${ALLOW_KEY}`;
  // An allowed directory counts as written and as where it resolves now, unless that is itself
  // guarded (config validation refused such entries; a symlink re-pointed since must not widen it).
  const roots = allowed
    .flatMap((dir) => [dir, resolve(dir)])
    .filter((root) => guardProblem(root, policy, resolve) === undefined);
  if (!roots.some((root) => within(path, root)))
    return `it lies under none of ${ALLOW_KEY} (${allowed.join(', ')}); the operator allows more by adding a directory to ${ALLOW_KEY}`;
  return undefined;
}

function refusal(field: string, given: string, resolved: string, problem: string): string {
  const where = resolved === given ? `'${given}'` : `'${given}' (resolving to '${resolved}')`;
  return `${field} ${where} is not allowed: ${problem}.`;
}

/** Why the definition may not run under `policy` (network first, then each host path), from the
 * definition alone; with `onDisk`, host paths that exist are also checked where they resolve to. */
export function definitionProblem(
  def: { readonly networkMode: NetworkMode; readonly volumes: readonly Volume[] },
  policy: HostAccessPolicy,
  onDisk = false,
): string | undefined {
  if (def.networkMode === 'host' && !policy.allowHostNetwork)
    return `networkMode 'host' is not allowed on this berth: a host-network task shares the host's network stack (every service on its loopback, every port); the operator allows it with ${NETWORK_KEY}.`;
  for (const [i, v] of def.volumes.entries()) {
    const given = v.host?.sourcePath;
    if (given === undefined) continue;
    const field = `volumes[${i}].host.sourcePath`;
    if (given.includes('\0')) return `${field} is not allowed: it contains a NUL character.`;
    const path = posix.resolve('/', given);
    const lexical = hostPathProblem(path, policy);
    if (lexical) return refusal(field, given, path, lexical);
    if (!onDisk) continue;
    const real = realOrSelf(path);
    const problem = hostPathProblem(real, policy, realOrSelf);
    if (problem) return refusal(field, given, real, problem);
  }
  return undefined;
}

/** A checked host path held open: `source` (/proc/PID/fd/N) names that open file, for a bind
 * mount made in berth's own mount namespace. */
export interface PinnedHostPath {
  readonly source: string;
  /** A directory (else a file, socket, fifo: mounted on a file). */
  readonly directory: boolean;
  /** Call once it is mounted (or will not be); idempotent. */
  close(): void;
}

export class HostPathError extends Error {
  override name = 'HostPathError';
}

/**
 * Opens `given` (the field's value), checks what the kernel says was opened, and answers a path
 * that names that open file (see the header). Throws HostPathError naming the field.
 */
export function pinHostPath(given: string, field: string, policy: HostAccessPolicy): PinnedHostPath {
  const path = posix.resolve('/', given);
  const lexical = given.includes('\0') ? 'it contains a NUL character' : hostPathProblem(path, policy);
  if (lexical) throw new HostPathError(refusal(field, given, path, lexical));
  let fd: number;
  try {
    // libuv opens every file close-on-exec: no runtime or container inherits the descriptor.
    fd = openSync(path, O_PATH);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'it does not exist on this host' : `it cannot be opened (${code})`;
    throw new HostPathError(`${field} '${given}' cannot be mounted: ${why}.`);
  }
  let ok = false;
  try {
    const held = readlinkSync(`/proc/self/fd/${fd}`);
    // A path the kernel cannot name from here (deleted, another mount namespace) is not checkable.
    if (!held.startsWith('/') || held.endsWith(' (deleted)'))
      throw new HostPathError(`${field} '${given}' cannot be mounted: it changed while berth checked it.`);
    const problem = hostPathProblem(held, policy, realOrSelf);
    if (problem) throw new HostPathError(refusal(field, given, held, problem));
    const stat = fstatSync(fd);
    if (stat.isBlockDevice() || stat.isCharacterDevice())
      throw new HostPathError(`${field} '${given}' is not allowed: it is a device node.`);
    // The same inode under another name (a bind mount of berth's data elsewhere) is still berth's.
    for (const g of [...systemGuards, ...policy.guarded]) {
      if (g.path === '/') continue;
      let guard: ReturnType<typeof statSync> | undefined;
      try {
        guard = statSync(g.path);
      } catch {}
      if (guard && guard.dev === stat.dev && guard.ino === stat.ino)
        throw new HostPathError(
          refusal(field, given, held, `it is ${g.what}, which is never mounted into a task`),
        );
    }
    ok = true;
  } finally {
    if (!ok) closeSync(fd);
  }
  let open = true;
  return {
    source: `/proc/${process.pid}/fd/${fd}`,
    directory: fstatSync(fd).isDirectory(),
    close() {
      if (!open) return;
      open = false;
      closeSync(fd);
    },
  };
}

/** A host path mounted on berth's staging point, for the runtime to bind into a container. */
export interface StagedHostPath {
  /** What the runtime mounts: the staging point. */
  readonly source: string;
  /** Detaches the staging mount and removes its point; call once the container exists. */
  release(): Promise<void>;
}

/** Where host paths are staged (RUNNER_ROOT/host-mounts), and the mount tools. */
export interface StagingOptions {
  readonly root: string;
  readonly host: Pick<Host, 'bindMount' | 'unmount' | 'mountsUnder'>;
}

/** The runner's use of a policy: admission of definitions, and pinned mounts at launch. */
export interface HostAccess {
  readonly policy: HostAccessPolicy;
  /** Throws ClientException naming the field and the config key when `def` may not run here. */
  admit(def: { readonly networkMode: NetworkMode; readonly volumes: readonly Volume[] }): void;
  /** The same check on the definition alone (no filesystem): for tasks already running. */
  problem(def: {
    readonly networkMode: NetworkMode;
    readonly volumes: readonly Volume[];
  }): string | undefined;
  pin(sourcePath: string, field: string): PinnedHostPath;
  /**
   * Checks and stages `sourcePath` for one mount of one container (the n-th of that container).
   * Throws HostPathError naming the field.
   */
  stage(
    sourcePath: string,
    field: string,
    at: { taskId: string; container: string; n: number },
  ): Promise<StagedHostPath>;
  /** Detaches and removes the staging points a crash left behind; before any task starts. */
  sweep(): Promise<void>;
}

const safeName = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$/;

export function createHostAccess(policy: HostAccessPolicy, staging?: StagingOptions): HostAccess {
  const normalised: HostAccessPolicy = {
    ...policy,
    hostPathAllowList: policy.hostPathAllowList.map((p) => posix.resolve('/', p)),
    guarded: policy.guarded.map((g) => ({ ...g, path: posix.resolve('/', g.path) })),
  };
  return {
    policy: normalised,
    admit(def) {
      const problem = definitionProblem(def, normalised, true);
      if (problem) throw new EcsError('ClientException', problem);
    },
    problem: (def) => definitionProblem(def, normalised),
    pin: (sourcePath, field) => pinHostPath(sourcePath, field, normalised),

    async stage(sourcePath, field, at) {
      const pinned = pinHostPath(sourcePath, field, normalised);
      try {
        if (!staging) throw new Error('this runner has no staging directory for host paths');
        if (!safeName.test(at.taskId) || !safeName.test(at.container) || !Number.isInteger(at.n))
          throw new Error(`bad staging name ${at.taskId}/${at.container}/${at.n}`);
        const dir = join(staging.root, at.taskId, at.container);
        await mkdir(dir, { recursive: true, mode: 0o700 });
        const point = join(dir, String(at.n));
        // A fresh point each time ('wx', plain mkdir): never one a mount already sits on.
        if (pinned.directory) await mkdir(point, { mode: 0o700 });
        else await writeFile(point, '', { flag: 'wx', mode: 0o600 });
        try {
          await staging.host.bindMount(pinned.source, point);
        } catch (err) {
          await removePoint(point);
          throw err;
        }
        return {
          source: point,
          async release() {
            await staging.host.unmount(point).catch(() => {});
            await removePoint(point);
            await rmdir(dir).catch(() => {});
            await rmdir(join(staging.root, at.taskId)).catch(() => {});
          },
        };
      } catch (err) {
        if (err instanceof HostPathError) throw err;
        throw new HostPathError(`${field} '${sourcePath}' cannot be mounted: ${(err as Error).message}.`);
      } finally {
        pinned.close();
      }
    },

    async sweep() {
      if (!staging) return;
      for (const m of await staging.host.mountsUnder(staging.root)) await staging.host.unmount(m);
      // Never a recursive delete: were a mount still there, it would delete the host's files.
      for (const task of await readdir(staging.root).catch(() => [] as string[])) {
        for (const container of await readdir(join(staging.root, task)).catch(() => [] as string[])) {
          const dir = join(staging.root, task, container);
          for (const n of await readdir(dir).catch(() => [] as string[])) await removePoint(join(dir, n));
          await rmdir(dir).catch(() => {});
        }
        await rmdir(join(staging.root, task)).catch(() => {});
      }
    },
  };
}

/** Removes an (unmounted) staging point: an empty directory or an empty file, nothing more. */
async function removePoint(point: string): Promise<void> {
  await rmdir(point).catch(async (err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOTDIR') await unlink(point).catch(() => {});
  });
}

/** What a berth without configuration allows: no host paths, no host network. */
export const denyAllHostAccess: HostAccessPolicy = {
  hostPathAllowList: [],
  allowHostNetwork: false,
  guarded: [],
};
