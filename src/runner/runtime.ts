// The OCI runtime (runc, or crun where it works) behind the Executor contract the task manager
// drives. Each container gets:
//   - an overlayfs rootfs over its image layers (lowerdir = layers top-first, upper + work dirs
//     of its own), mounted in the host namespace so it outlives berth. The mount point is under
//     /run/berth/rootfs-<hash of root>/<id>, not in the bundle: runc enters the rootfs as the
//     container's root, which in a user namespace is an unprivileged host user, so every directory
//     above it must be searchable by anyone (/run/berth is 0711), whatever the modes of the data
//     directory's parents. The upper dir belongs to the container's mapped root (spec uidMappings);
//   - a conmon (Debian's, 2.1.x) as its monitor: conmon runs `<runtime> create`, reaps the
//     container (it is a subreaper), copies stdout/stderr into a k8s-file log and writes the exit
//     code to a file. It runs in its own session, so containers keep running and their exit codes
//     are recorded when berth is killed; a new Executor over the same root finds them again.
//   - the task's parent cgroup written before the first container starts (cgroup v1), since the
//     runtime only creates parents, never limits them.
//
//   <root>/state/<runtime>/           the runtime's --root (its own state)
//   <root>/containers/<id>/           bundle and conmon's persist dir: config.json, meta.json,
//                                     upper/, work/, pidfile, conmon.pid, ctl (conmon's control
//                                     fifo), exit, oom, status.json (and rootfs/, the mount point
//                                     of containers started before the user namespaces)
//   /run/berth/rootfs-<hash>/<id>     the rootfs mount point
//   <root>/exits/<id>                 conmon --exit-dir: the exit code, written once
//   <root>/attach/                    conmon's attach-socket symlinks (unused, but conmon needs it)
//   <root>/logs/<id>/container.log    stdout/stderr (k8s-file), + .1 after rotation; kept by remove
//
// Every command runs through execFile/spawn with argument arrays; no shell parses anything.
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, constants as fsConstants, rmdirSync, watch } from 'node:fs';
import {
  access,
  chmod,
  chown,
  lstat,
  mkdir,
  open,
  readdir,
  readFile,
  readlink,
  rm,
  rmdir,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import type { Logger } from '../log.ts';
import {
  DEFAULT_LOG_MAX_BYTES,
  followLogFile,
  LOG_FILE,
  type LogEntry,
  type ReadLogsOptions,
  readLogFile,
  rotateLog,
} from './container-logs.ts';
import type { IdMapping } from './idmap.ts';
import type { OciLinuxResources, OciSpec, TaskCgroup } from './runtime-spec.ts';
import { serializeRuntimeSpec } from './runtime-spec.ts';

export type { LogEntry } from './container-logs.ts';

export type RuntimeName = 'runc' | 'crun';

export interface ContainerLaunch {
  /** The runtime's id: /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/, unique within the root. */
  id: string;
  /** From buildRuntimeSpec(); root.path is replaced by the overlay mounted here. */
  spec: OciSpec;
  /** Unpacked layer directories, bottom layer first. */
  layers: string[];
  /** The container sees its root read-only (spec.root.readonly); see mountRootfs for how. */
  readonlyRootfs: boolean;
  /** The task's parent cgroup and its limits (runtime-spec.ts taskCgroup()). */
  cgroup?: TaskCgroup;
  /** Rotation threshold per log file (default 8 MiB); one rotated file is kept. */
  logMaxBytes?: number;
}

export interface ExitStatus {
  /** The container's exit code (128 + n when signal n killed it); -1 when it was lost. */
  exitCode: number;
  oomKilled: boolean;
  /** The signal that ended it, when the exit code says one did (SIGKILL for 137). */
  signal?: string;
  finishedAt: Date;
  /** True when the exit code was lost: the container's conmon was killed before it exited. */
  lost?: boolean;
}

export interface ExecResult {
  /** null when the process was killed on timeout or the runtime could not say. */
  exitCode: number | null;
  /** stdout and stderr interleaved, at most EXEC_OUTPUT_MAX bytes (the start is kept). */
  output: string;
  timedOut: boolean;
}

export interface RuntimeContainer {
  id: string;
  status: 'running' | 'stopped';
  pid?: number;
  exit?: ExitStatus;
  /** The user namespace mapping it runs under (absent: none); its rootfs stacks that mapping's
   * layers until remove(). */
  idMapping?: IdMapping;
}

export interface Executor {
  readonly runtime: RuntimeName;
  /** Mounts the rootfs, applies the task cgroup, starts the container under conmon; resolves
   * once its process runs. On failure everything made for it is removed again (logs stay). */
  start(launch: ContainerLaunch): Promise<{ pid: number }>;
  /** Resolves when the container has exited; also for containers started by an earlier berth. */
  wait(id: string): Promise<ExitStatus>;
  signal(id: string, signal: string): Promise<void>;
  /** Sends signal, waits up to timeoutSeconds for the exit, then SIGKILLs. */
  stop(id: string, signal: string, timeoutSeconds: number): Promise<ExitStatus>;
  /** Runs argv in the running container (its env, user and cwd); kills it after timeoutMs. */
  exec(id: string, argv: string[], timeoutMs: number): Promise<ExecResult>;
  /** Every container under this root, running or not (for reconciliation after a restart). */
  list(): Promise<RuntimeContainer[]>;
  /** Deletes the container from the runtime (killing it if it still runs), unmounts its rootfs
   * and deletes its bundle, upper and work dirs, and the task cgroup once empty. Keeps logs. */
  remove(id: string): Promise<void>;
  /** Deletes the logs remove() kept (when the task they belong to is forgotten). */
  removeLogs(id: string): Promise<void>;
  readLogs(id: string, opts?: ReadLogsOptions): Promise<LogEntry[]>;
  /** Tails new entries (across rotation) until unsubscribed or the container's log has ended;
   * with fromStart, from the top of the current log file (container-logs.ts followLogFile). */
  followLogs(id: string, onEntry: (e: LogEntry) => void, opts?: { fromStart?: boolean }): () => void;
  /** Stops this instance's timers and watchers; containers keep running. */
  close(): void;
}

export interface ExecutorOptions {
  /** e.g. DATA/runner/runtime: bundles, rootfs mounts, exit files, logs. */
  root: string;
  log: Logger;
  /** 'auto' (default) takes crun when it works here, else runc, and logs which. */
  runtime?: RuntimeName | 'auto';
  /** The init binary (tini-static) containers get at /init; buildRuntimeSpec does the mounting,
   * the executor only reports it. */
  init?: string;
  /** Where rootfs mount points go (default /run/berth/rootfs-<hash of root>); it and its parents
   * must be searchable by the containers' mapped root. */
  rootfsDir?: string;
}

export class RuntimeError extends Error {
  override name = 'RuntimeError';
}

export const CONTAINER_ID_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;
export const EXEC_OUTPUT_MAX = 64 * 1024;
/** conmon's control fifo message asking it to reopen its log file (REOPEN_LOGS_EVENT). */
export const CONMON_REOPEN_LOGS = '2 0 0\n';
const HOST_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const CGROUP_ROOT = '/sys/fs/cgroup';
const ROTATE_CHECK_MS = 1000;
const WAIT_POLL_MS = 1000;
/** The kernel's limit on mount data (one page); overlay options longer than this fail. */
const MOUNT_DATA_MAX = 4000;

const INIT_CANDIDATES = ['/usr/bin/tini-static', '/usr/local/bin/tini-static', '/sbin/tini-static'];
const CONMON_CANDIDATES = ['/usr/bin/conmon', '/usr/libexec/podman/conmon', '/usr/local/bin/conmon'];

/** tini-static when installed: a static init that works in any image. */
export function detectInit(): string | undefined {
  return INIT_CANDIDATES.find((p) => existsSync(p));
}

// --- pure helpers (unit-tested) ----------------------------------------------------------------

export function checkContainerId(id: string): void {
  if (!CONTAINER_ID_RE.test(id)) throw new RuntimeError(`container id '${id}' is invalid`);
}

/** A signal as runc/crun kill take it; refuses anything that could read as an option. */
export function normalizeSignal(signal: string): string {
  const s = signal.trim().toUpperCase();
  if (/^\d{1,2}$/.test(s) && Number(s) >= 1 && Number(s) <= 64) return s;
  const name = s.startsWith('SIG') ? s : `SIG${s}`;
  if (/^SIG[A-Z]{2,7}$/.test(name) || /^SIGRT(MIN|MAX)([+-]\d{1,2})?$/.test(name)) return name;
  throw new RuntimeError(`'${signal}' is not a signal`);
}

/** The signal an exit code >= 129 reports (shells' and conmon's 128 + n convention). */
export function signalFromExitCode(code: number): string | undefined {
  if (code <= 128 || code > 128 + 64) return undefined;
  const n = code - 128;
  for (const [name, num] of Object.entries(osConstants.signals)) if (num === n) return name;
  return undefined;
}

export interface OverlayMount {
  /** mount(8) arguments after the program name. */
  args: string[];
  /** Working directory for mount when lowerdirs are given relative to it (long layer lists). */
  cwd?: string;
}

function checkOverlayPath(p: string): void {
  // overlayfs splits its options on ',' and lowerdirs on ':'; escaping is not worth the risk.
  if (!p.startsWith('/') || /[,:\\\n]/.test(p))
    throw new RuntimeError(`path '${p}' cannot be used in an overlay mount`);
}

function commonParent(paths: string[]): string {
  let parent = dirname(paths[0]!);
  while (!paths.every((p) => p.startsWith(parent === '/' ? '/' : `${parent}/`))) parent = dirname(parent);
  return parent;
}

/** The overlay mount for a container: layers bottom-first in, lowerdir top-first out. */
export function overlayMountArgs(
  layers: string[],
  upper: string,
  work: string,
  target: string,
): OverlayMount {
  if (layers.length === 0) throw new RuntimeError('a container needs at least one layer');
  for (const p of [...layers, upper, work]) checkOverlayPath(p);
  const topFirst = [...layers].reverse();
  const options = (lower: string[]) => `lowerdir=${lower.join(':')},upperdir=${upper},workdir=${work}`;
  let data = options(topFirst);
  let cwd: string | undefined;
  if (data.length > MOUNT_DATA_MAX) {
    // containerd's trick: relative lowerdirs, resolved against mount's working directory.
    cwd = commonParent(topFirst);
    data = options(topFirst.map((l) => relative(cwd!, l)));
    if (data.length > MOUNT_DATA_MAX)
      throw new RuntimeError(`${layers.length} layers are too many for one overlay mount`);
  }
  const args = ['-t', 'overlay', 'overlay', '-o', data, target];
  return cwd === undefined ? { args } : { args, cwd };
}

export interface CgroupWrite {
  controller: 'memory' | 'cpu' | 'pids';
  file: string;
  value: string;
}

/** The cgroup v1 files a task cgroup's limits go to, in the order to write them (the CFS period
 * before the quota, which the kernel checks against it). */
export function cgroupV1Writes(resources: OciLinuxResources): CgroupWrite[] {
  const out: CgroupWrite[] = [];
  const mem = resources.memory;
  if (mem?.limit !== undefined)
    out.push({ controller: 'memory', file: 'memory.limit_in_bytes', value: String(mem.limit) });
  if (mem?.reservation !== undefined)
    out.push({ controller: 'memory', file: 'memory.soft_limit_in_bytes', value: String(mem.reservation) });
  const cpu = resources.cpu;
  if (cpu?.shares !== undefined)
    out.push({ controller: 'cpu', file: 'cpu.shares', value: String(cpu.shares) });
  if (cpu?.period !== undefined)
    out.push({ controller: 'cpu', file: 'cpu.cfs_period_us', value: String(cpu.period) });
  if (cpu?.quota !== undefined)
    out.push({ controller: 'cpu', file: 'cpu.cfs_quota_us', value: String(cpu.quota) });
  if (resources.pids !== undefined)
    out.push({ controller: 'pids', file: 'pids.max', value: String(resources.pids.limit) });
  return out;
}

/** The host uid and gid container root maps to (uidMappings/gidMappings of containerID 0), or
 * undefined without a user namespace. */
export function mappedRoot(spec: Pick<OciSpec, 'linux'>): { uid: number; gid: number } | undefined {
  const hostOf = (maps: OciSpec['linux']['uidMappings']) =>
    maps?.find((m) => m.containerID === 0 && m.size > 0)?.hostID;
  const uid = hostOf(spec.linux.uidMappings);
  const gid = hostOf(spec.linux.gidMappings);
  if (uid === undefined && gid === undefined) return undefined;
  if (uid === undefined || gid === undefined)
    throw new RuntimeError('a user namespace needs both uidMappings and gidMappings for container root');
  return { uid, gid };
}

/** A cgroup path relative to a hierarchy, checked: absolute, no '..', no empty segments. */
export function checkCgroupPath(p: string): string {
  if (
    !p.startsWith('/') ||
    p
      .split('/')
      .slice(1)
      .some((s) => s === '' || s === '.' || s === '..')
  )
    throw new RuntimeError(`cgroup path '${p}' is invalid`);
  return p;
}

/** The container's cgroupsPath: the spec's when it lies under the task cgroup, else one under it. */
export function containerCgroupsPath(id: string, specPath: string, cgroup?: TaskCgroup): string {
  if (!cgroup) return checkCgroupPath(specPath || `/berth/${id}`);
  const parent = checkCgroupPath(cgroup.path);
  if (specPath.startsWith(`${parent}/`)) return checkCgroupPath(specPath);
  return `${parent}/${id}`;
}

/** `oom_kill N` from memory.oom_control (v1) or memory.events (v2). */
export function parseOomKillCount(text: string): number | undefined {
  const m = /^oom_kill (\d+)$/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

export interface ConmonArgsInput {
  id: string;
  runtimePath: string;
  runtimeRoot: string;
  bundle: string;
  exitDir: string;
  socketDir: string;
  logPath: string;
}

/** conmon 2.1's command line: it runs `<runtime> --root R --log L --log-format json create` and
 * writes `{"data": pid}` (or -1 and a message) to fd 3 (_OCI_SYNCPIPE) once created. No
 * --log-size-max: berth rotates (see container-logs.ts for why). */
export function conmonArgs(i: ConmonArgsInput): string[] {
  return [
    '--api-version',
    '1',
    '--cid',
    i.id,
    '--cuuid',
    i.id,
    '--name',
    i.id,
    '--runtime',
    i.runtimePath,
    '--bundle',
    i.bundle,
    '--container-pidfile',
    join(i.bundle, 'pidfile'),
    '--conmon-pidfile',
    join(i.bundle, 'conmon.pid'),
    '--persist-dir',
    i.bundle,
    '--exit-dir',
    i.exitDir,
    '--socket-dir-path',
    i.socketDir,
    '--log-path',
    `k8s-file:${i.logPath}`,
    '--log-level',
    'error',
    `--runtime-arg=--root`,
    `--runtime-arg=${i.runtimeRoot}`,
    `--runtime-arg=--log`,
    `--runtime-arg=${join(i.bundle, 'runtime.log')}`,
    `--runtime-arg=--log-format`,
    `--runtime-arg=json`,
  ];
}

/** conmon's sync-pipe message: {"data": pid} or {"data": -1, "message": "..."}. */
export function parseSyncMessage(text: string): { pid: number } | { error: string } {
  const line = text.split('\n').find((l) => l.trim() !== '');
  if (!line) return { error: 'conmon exited without reporting the container' };
  let msg: { data?: unknown; message?: unknown };
  try {
    msg = JSON.parse(line) as typeof msg;
  } catch {
    return { error: `conmon sent an unreadable message: ${line.slice(0, 200)}` };
  }
  if (typeof msg.data === 'number' && Number.isInteger(msg.data) && msg.data > 0) return { pid: msg.data };
  return { error: typeof msg.message === 'string' ? msg.message : `conmon reported ${line.slice(0, 200)}` };
}

/** The last error a runtime logged with --log-format json. */
export function lastRuntimeError(logText: string): string | undefined {
  let last: string | undefined;
  for (const line of logText.split('\n')) {
    if (!line.trim()) continue;
    try {
      const rec = JSON.parse(line) as { level?: string; msg?: string };
      if ((rec.level === 'error' || rec.level === 'fatal') && rec.msg) last = rec.msg;
    } catch {
      last = line.trim();
    }
  }
  return last;
}

// --- processes ---------------------------------------------------------------------------------

interface RunResult {
  stdout: string;
  stderr: string;
}

class CommandError extends Error {
  readonly stderr: string;
  readonly exitCode: number | null;
  constructor(message: string, stderr: string, exitCode: number | null, cause?: unknown) {
    super(message, { cause });
    this.name = 'CommandError';
    this.stderr = stderr;
    this.exitCode = exitCode;
  }
}

function run(
  file: string,
  args: string[],
  opts: { cwd?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    execFile(
      file,
      args,
      {
        cwd: opts.cwd,
        env: { PATH: HOST_PATH },
        maxBuffer: 4 << 20,
        timeout: opts.timeoutMs ?? 60_000,
        killSignal: 'SIGKILL',
      },
      (err, stdout, stderr) => {
        if (!err) return resolvePromise({ stdout, stderr });
        const code = typeof err.code === 'number' ? err.code : null;
        const text = stderr.trim() || stdout.trim() || err.message;
        reject(new CommandError(`${file} ${args.join(' ')}: ${text}`, stderr, code, err));
      },
    );
  });
}

async function findExecutable(candidates: string[]): Promise<string | undefined> {
  for (const p of candidates) {
    try {
      await access(p, fsConstants.X_OK);
      return p;
    } catch {}
  }
  return undefined;
}

function inPath(name: string): string[] {
  return HOST_PATH.split(':').map((d) => join(d, name));
}

async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

async function readText(p: string): Promise<string | undefined> {
  try {
    return await readFile(p, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
}

/** Mount points of this mount namespace, from /proc/self/mountinfo (octal escapes decoded). */
async function mountPoints(): Promise<Set<string>> {
  const text = (await readText('/proc/self/mountinfo')) ?? '';
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    const field = line.split(' ')[4];
    if (field)
      out.add(field.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(Number.parseInt(o, 8))));
  }
  return out;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

// --- the executor ------------------------------------------------------------------------------

interface ContainerMeta {
  id: string;
  runtime: RuntimeName;
  createdAt: string;
  logMaxBytes: number;
  cgroupsPath: string;
  taskCgroup?: string;
  /** The rootfs mount point; absent for containers started when it was <bundle>/rootfs. */
  rootfs?: string;
}

interface Paths {
  bundle: string;
  rootfs: string;
  upper: string;
  work: string;
  meta: string;
  status: string;
  exitFile: string;
  logDir: string;
  log: string;
}

interface Waiter {
  resolve: (s: ExitStatus) => void;
  reject: (e: unknown) => void;
}

export async function createExecutor(opts: ExecutorOptions): Promise<Executor> {
  const root = resolve(opts.root);
  const log = opts.log;
  const dirs = {
    state: join(root, 'state'),
    containers: join(root, 'containers'),
    exits: join(root, 'exits'),
    attach: join(root, 'attach'),
    logs: join(root, 'logs'),
    probe: join(root, 'probe'),
  };
  for (const d of Object.values(dirs)) await mkdir(d, { recursive: true, mode: 0o700 });
  const rootfsDir =
    opts.rootfsDir ??
    join('/run/berth', `rootfs-${createHash('sha256').update(root).digest('hex').slice(0, 16)}`);
  await mkdir(rootfsDir, { recursive: true });
  // Searchable, not listable: the mapped root must reach its rootfs, nobody need list the others.
  for (let d = rootfsDir; d !== dirname(d) && d !== '/run'; d = dirname(d)) await chmod(d, 0o711);

  const conmon = await findExecutable(CONMON_CANDIDATES);
  if (!conmon)
    throw new RuntimeError(
      `conmon is not installed (looked in ${CONMON_CANDIDATES.join(', ')}); it monitors every container: apt-get install conmon`,
    );
  const runtimePaths = new Map<RuntimeName, string>();
  const chosen = await chooseRuntime(opts.runtime ?? 'auto');

  async function chooseRuntime(want: RuntimeName | 'auto'): Promise<RuntimeName> {
    const order: RuntimeName[] = want === 'auto' ? ['crun', 'runc'] : [want];
    const failures: string[] = [];
    for (const name of order) {
      const path = await findExecutable(inPath(name));
      if (!path) {
        failures.push(`${name}: not installed (apt-get install ${name})`);
        continue;
      }
      const problem = await probeRuntime(name, path);
      if (problem === undefined) {
        runtimePaths.set(name, path);
        if (failures.length > 0)
          log.info(
            { runtime: name, path, rejected: failures },
            `using ${name}; rejected ${failures.join('; ')}`,
          );
        else log.info({ runtime: name, path }, `using ${name}`);
        return name;
      }
      failures.push(`${name}: ${problem}`);
    }
    throw new RuntimeError(`no OCI runtime can run containers here: ${failures.join('; ')}`);
  }

  /** Runs a throwaway container made of the host's own /usr (read-only binds): answers why the
   * runtime cannot run containers here, or undefined when it can. */
  async function probeRuntime(name: RuntimeName, path: string): Promise<string | undefined> {
    const id = `berth-probe-${process.pid}-${randomBytes(4).toString('hex')}`;
    const bundle = join(dirs.probe, id);
    const rootfs = join(bundle, 'rootfs');
    const state = join(dirs.state, name);
    await mkdir(rootfs, { recursive: true });
    await mkdir(state, { recursive: true, mode: 0o700 });
    try {
      const mounts: OciSpec['mounts'] = [{ destination: '/proc', type: 'proc', source: 'proc' }];
      for (const d of ['/usr', '/bin', '/sbin', '/lib', '/lib64']) {
        const st = await lstat(d).catch(() => null);
        if (st?.isSymbolicLink()) await symlink(await readlink(d), join(rootfs, d));
        else if (st?.isDirectory())
          mounts.push({ destination: d, type: 'bind', source: d, options: ['rbind', 'ro', 'rprivate'] });
      }
      const spec = {
        ociVersion: '1.0.2',
        process: {
          terminal: false,
          user: { uid: 0, gid: 0 },
          args: ['true'],
          env: [`PATH=${HOST_PATH}`],
          cwd: '/',
          noNewPrivileges: true,
        },
        root: { path: rootfs, readonly: true },
        hostname: 'probe',
        mounts,
        linux: {
          namespaces: [
            { type: 'pid' },
            { type: 'ipc' },
            { type: 'uts' },
            { type: 'mount' },
            { type: 'network' },
          ],
          cgroupsPath: `/berth/${id}`,
          resources: { memory: { limit: 64 * 1024 * 1024 } },
        },
      };
      await writeFile(join(bundle, 'config.json'), JSON.stringify(spec));
      try {
        await run(path, ['--root', state, 'run', '--bundle', bundle, id], { timeoutMs: 30_000 });
        return undefined;
      } catch (err) {
        const e = err as CommandError;
        return (e.stderr || e.message).trim().split('\n').slice(-2).join(' ') || 'failed to run a container';
      } finally {
        await run(path, ['--root', state, 'delete', '--force', id]).catch(() => {});
      }
    } finally {
      await rm(bundle, { recursive: true, force: true });
    }
  }

  const runtime: RuntimeName = chosen;
  const metaCache = new Map<string, ContainerMeta>();
  const statusCache = new Map<string, ExitStatus>();
  const waiters = new Map<string, Waiter[]>();
  const rotating = new Map<string, { log: string; ctl: string; exitFile: string; max: number }>();
  /** Containers between mkdir and `runtime start` here: not lost, just not there yet. */
  const starting = new Set<string>();
  let closed = false;

  function paths(id: string): Paths {
    const bundle = join(dirs.containers, id);
    const logDir = join(dirs.logs, id);
    return {
      bundle,
      rootfs: join(rootfsDir, id),
      upper: join(bundle, 'upper'),
      work: join(bundle, 'work'),
      meta: join(bundle, 'meta.json'),
      status: join(bundle, 'status.json'),
      exitFile: join(dirs.exits, id),
      logDir,
      log: join(logDir, LOG_FILE),
    };
  }

  async function meta(id: string): Promise<ContainerMeta> {
    checkContainerId(id);
    const cached = metaCache.get(id);
    if (cached) return cached;
    const text = await readText(paths(id).meta);
    if (text === undefined) throw new RuntimeError(`container ${id} does not exist`);
    const m = JSON.parse(text) as ContainerMeta;
    metaCache.set(id, m);
    return m;
  }

  async function runtimeCmd(m: ContainerMeta): Promise<{ path: string; root: string }> {
    let path = runtimePaths.get(m.runtime);
    if (!path) {
      path = await findExecutable(inPath(m.runtime));
      if (!path)
        throw new RuntimeError(`container ${m.id} was created by ${m.runtime}, which is not installed`);
      runtimePaths.set(m.runtime, path);
    }
    return { path, root: join(dirs.state, m.runtime) };
  }

  async function runtimeState(m: ContainerMeta): Promise<{ status: string; pid: number } | undefined> {
    const rt = await runtimeCmd(m);
    try {
      const { stdout } = await run(rt.path, ['--root', rt.root, 'state', m.id]);
      const st = JSON.parse(stdout) as { status: string; pid: number };
      return st;
    } catch (err) {
      if (/does not exist|not found|no such/i.test((err as CommandError).stderr ?? '')) return undefined;
      throw err;
    }
  }

  async function conmonAlive(id: string): Promise<boolean> {
    const text = await readText(join(paths(id).bundle, 'conmon.pid'));
    const pid = Number(text?.trim());
    if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return false;
    // The pid may have been reused: it must still be this container's conmon.
    const cmdline = (await readText(`/proc/${pid}/cmdline`)) ?? '';
    const argv = cmdline.split('\0');
    return argv.some((a) => a.endsWith('conmon')) && argv.includes(id);
  }

  async function oomKilled(m: ContainerMeta, exitCode: number): Promise<boolean> {
    // The victim's memory cgroup counts the kill (v1 memory.oom_control, v2 memory.events). conmon's
    // oom file alone is not enough: v1 also signals a container when its task's parent cgroup
    // killed a sibling. Once the runtime deleted the cgroup, the oom file and 137 decide.
    for (const file of [
      join(CGROUP_ROOT, 'memory', m.cgroupsPath, 'memory.oom_control'),
      join(CGROUP_ROOT, m.cgroupsPath, 'memory.events'),
    ]) {
      const text = await readText(file);
      const n = text === undefined ? undefined : parseOomKillCount(text);
      if (n !== undefined) return n > 0;
    }
    return exitCode === 137 && (await exists(join(paths(m.id).bundle, 'oom')));
  }

  /** The container's exit, once conmon has recorded it; undefined while it has not. */
  async function exitStatus(id: string): Promise<ExitStatus | undefined> {
    const cached = statusCache.get(id);
    if (cached) return cached;
    const p = paths(id);
    const saved = await readText(p.status);
    if (saved !== undefined) {
      const s = JSON.parse(saved) as Omit<ExitStatus, 'finishedAt'> & { finishedAt: string };
      const status = { ...s, finishedAt: new Date(s.finishedAt) };
      statusCache.set(id, status);
      return status;
    }
    let file = p.exitFile;
    let text = await readText(file);
    if (text === undefined) {
      file = join(p.bundle, 'exit');
      text = await readText(file);
    }
    if (text === undefined || !/^-?\d+\s*$/.test(text)) return undefined;
    const m = await meta(id);
    const exitCode = Number(text.trim());
    const status: ExitStatus = {
      exitCode,
      oomKilled: await oomKilled(m, exitCode),
      finishedAt: (await stat(file)).mtime,
    };
    const sig = signalFromExitCode(exitCode);
    if (sig) status.signal = sig;
    await persistStatus(id, status);
    return status;
  }

  async function persistStatus(id: string, status: ExitStatus): Promise<void> {
    statusCache.set(id, status);
    rotating.delete(id);
    await writeFile(paths(id).status, JSON.stringify(status)).catch(() => {});
  }

  /** An exit that conmon cannot report any more: it is gone and the container is not running. */
  async function lostExit(id: string): Promise<ExitStatus | undefined> {
    if (starting.has(id) || (await conmonAlive(id))) return undefined;
    const late = await exitStatus(id); // it may have written the file just before exiting
    if (late) return late;
    const m = await meta(id);
    const st = await runtimeState(m);
    if (st && (st.status === 'running' || st.status === 'paused')) return undefined;
    if (st?.status === 'created') {
      // berth died between create and start: nothing ever ran; make sure nothing will.
      const rt = await runtimeCmd(m);
      await run(rt.path, ['--root', rt.root, 'kill', m.id, 'SIGKILL']).catch(() => {});
    }
    const status: ExitStatus = { exitCode: -1, oomKilled: false, finishedAt: new Date(), lost: true };
    log.warn({ container: id }, 'the container stopped while its conmon was gone: its exit code is lost');
    await persistStatus(id, status);
    return status;
  }

  let checking: Promise<void> | null = null;
  let recheck = false;
  async function checkWaiters(withLost: boolean): Promise<void> {
    for (const [id, list] of [...waiters]) {
      try {
        const s = (await exitStatus(id)) ?? (withLost ? await lostExit(id) : undefined);
        if (!s) continue;
        waiters.delete(id);
        for (const w of list) w.resolve(s);
      } catch (err) {
        waiters.delete(id);
        for (const w of list) w.reject(err);
      }
    }
  }
  function poke(withLost = false): void {
    if (checking) {
      recheck = true;
      return;
    }
    checking = checkWaiters(withLost)
      .catch((err) => log.error({ err }, 'checking container exits failed'))
      .finally(() => {
        checking = null;
        if (recheck) {
          recheck = false;
          poke();
        }
      });
  }
  const exitWatcher = watch(dirs.exits, { persistent: false }, () => poke());
  exitWatcher.on('error', (err) => log.warn({ err }, 'watching exit files failed; polling only'));
  const waitTimer = setInterval(() => {
    if (waiters.size > 0) poke(true);
  }, WAIT_POLL_MS);
  waitTimer.unref();

  const rotateTimer = setInterval(() => {
    for (const [id, r] of rotating) {
      // An exited container's log is final: rotating it would only split it.
      exists(r.exitFile)
        .then((exited) => {
          if (exited) {
            rotating.delete(id);
            return false;
          }
          return rotateLog(r.log, r.max, () => reopenLog(r.ctl));
        })
        .then(
          (did) => {
            if (did) log.debug({ container: id }, 'log rotated');
          },
          (err) => log.warn({ err, container: id }, 'log rotation failed'),
        );
    }
  }, ROTATE_CHECK_MS);
  rotateTimer.unref();

  async function reopenLog(ctl: string): Promise<void> {
    // O_NONBLOCK: fails with ENXIO instead of hanging when conmon (the reader) is gone.
    let fh: Awaited<ReturnType<typeof open>> | undefined;
    try {
      fh = await open(ctl, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
      await fh.write(CONMON_REOPEN_LOGS);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENXIO' && code !== 'ENOENT') throw err;
    } finally {
      await fh?.close();
    }
  }

  function track(m: ContainerMeta): void {
    if (statusCache.has(m.id)) return;
    const p = paths(m.id);
    rotating.set(m.id, { log: p.log, ctl: join(p.bundle, 'ctl'), exitFile: p.exitFile, max: m.logMaxBytes });
  }

  async function applyTaskCgroup(cg: TaskCgroup): Promise<void> {
    const parent = checkCgroupPath(cg.path);
    const writes = cgroupV1Writes(cg.resources);
    if (writes.length === 0) return;
    if (await exists(join(CGROUP_ROOT, 'cgroup.controllers'))) {
      // The pids limit is in every container's spec too, which the runtime applies on v2.
      if (writes.some((w) => w.controller !== 'pids'))
        throw new RuntimeError(
          'task-level cpu/memory limits need cgroup v1 here; this host runs cgroup v2 only',
        );
      return;
    }
    for (const w of writes) {
      const dir = join(CGROUP_ROOT, w.controller, parent);
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, w.file), w.value);
    }
  }

  async function removeTaskCgroup(path: string): Promise<void> {
    // Succeeds only once the last container of the task is gone (EBUSY before): that is the point.
    const controllers = await readdir(CGROUP_ROOT).catch(() => [] as string[]);
    for (const c of controllers) {
      await rmdir(join(CGROUP_ROOT, c, checkCgroupPath(path))).catch(() => {});
    }
  }

  async function bundleIdMapping(id: string): Promise<{ idMapping?: IdMapping }> {
    const text = await readText(join(paths(id).bundle, 'config.json'));
    if (text === undefined) return {};
    try {
      const root = mappedRoot(JSON.parse(text) as OciSpec);
      return root ? { idMapping: { hostIdStart: root.uid } } : {};
    } catch {
      return {};
    }
  }

  /** Deletes an unmounted rootfs mount point, and the directory of them once this executor is
   * closed and it is empty (a removal can finish after close(), when berth stops mid-stop). */
  async function dropMountPoint(rootfs: string): Promise<void> {
    await rmdir(rootfs).catch(() => {});
    if (closed) await rmdir(rootfsDir).catch(() => {});
  }

  /** Where a container's rootfs is mounted: recorded in its meta, or the old place in the bundle. */
  function rootfsOf(id: string, m: ContainerMeta | undefined): string {
    return m?.rootfs ?? join(paths(id).bundle, 'rootfs');
  }

  async function mountRootfs(
    p: Paths,
    layers: string[],
    owner: { uid: number; gid: number } | undefined,
  ): Promise<void> {
    // Read-only roots still get an upper dir: the runtime creates mount points (/proc, /init,
    // /etc/resolv.conf, ...) in the rootfs before it remounts it read-only for the container
    // (spec.root.readonly), as dockerd does; a lowerdir-only overlay would refuse those.
    await mkdir(p.upper, { recursive: true });
    await mkdir(p.work, { recursive: true });
    // The merged root takes the upper dir's owner and mode: the container's root must own it.
    if (owner) await chown(p.upper, owner.uid, owner.gid);
    await chmod(p.upper, 0o755);
    await mkdir(p.rootfs, { recursive: true, mode: 0o700 });
    const m = overlayMountArgs(layers, p.upper, p.work, p.rootfs);
    await run('mount', m.args, m.cwd === undefined ? {} : { cwd: m.cwd });
  }

  async function unmountRootfs(rootfs: string): Promise<void> {
    if (!(await mountPoints()).has(rootfs)) return;
    try {
      await run('umount', [rootfs]);
    } catch (err) {
      log.warn({ err, rootfs }, 'umount failed; detaching lazily');
      await run('umount', ['--lazy', rootfs]);
    }
  }

  /** Deletes what start() made, best effort, for a start that failed part way. */
  async function discard(id: string, m: ContainerMeta | undefined): Promise<void> {
    const p = paths(id);
    if (m) {
      const rt = await runtimeCmd(m);
      await run(rt.path, ['--root', rt.root, 'delete', '--force', id]).catch(() => {});
    }
    const rootfs = rootfsOf(id, m);
    await unmountRootfs(rootfs).catch((err) => log.warn({ err }, 'unmounting a failed rootfs failed'));
    if (!(await mountPoints()).has(rootfs)) {
      await rm(p.bundle, { recursive: true, force: true });
      await dropMountPoint(rootfs);
    }
    await rm(p.exitFile, { force: true });
    await rm(join(dirs.attach, id), { force: true });
    if (m?.taskCgroup) await removeTaskCgroup(m.taskCgroup);
    metaCache.delete(id);
  }

  function startConmon(m: ContainerMeta, p: Paths, rt: { path: string; root: string }): Promise<number> {
    const args = conmonArgs({
      id: m.id,
      runtimePath: rt.path,
      runtimeRoot: rt.root,
      bundle: p.bundle,
      exitDir: dirs.exits,
      socketDir: dirs.attach,
      logPath: p.log,
    });
    return new Promise((resolvePid, reject) => {
      // conmon forks: the parent exits at once, the monitor (in a session of its own) keeps fd 3
      // until it reports the created container there. stderr carries the parent's errors only.
      const child = spawn(conmon!, args, {
        stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
        env: { PATH: HOST_PATH, _OCI_SYNCPIPE: '3' },
        detached: true,
        cwd: p.bundle,
      });
      // conmon keeps fd 3 open while the container lives: the first line is the answer; EOF
      // before it means conmon failed. Closing our end after it is what podman does too.
      let sync = '';
      let stderr = '';
      let settled = false;
      const syncPipe = child.stdio[3] as Readable;
      const settle = async () => {
        if (settled) return;
        settled = true;
        syncPipe.destroy();
        const msg = parseSyncMessage(sync);
        if ('pid' in msg) return resolvePid(msg.pid);
        const runtimeLog = (await readText(join(p.bundle, 'runtime.log'))) ?? '';
        const why = lastRuntimeError(runtimeLog) || stderr.trim() || msg.error;
        reject(new RuntimeError(`container ${m.id} could not be created: ${why}`));
      };
      child.stderr?.on('data', (d: Buffer) => {
        if (stderr.length < 8192) stderr += d.toString('utf8');
      });
      child.on('error', (err) => {
        if (!settled) {
          settled = true;
          reject(err);
        }
      });
      syncPipe.on('data', (d: Buffer) => {
        sync += d.toString('utf8');
        if (sync.includes('\n')) void settle();
      });
      syncPipe.on('error', () => {});
      syncPipe.on('close', () => void settle());
      child.unref();
    });
  }

  const executor: Executor = {
    runtime,

    async start(launch) {
      checkContainerId(launch.id);
      if (closed) throw new RuntimeError('the executor is closed');
      const id = launch.id;
      const p = paths(id);
      if (starting.has(id)) throw new RuntimeError(`container ${id} already exists`);
      const maxBytes = launch.logMaxBytes ?? DEFAULT_LOG_MAX_BYTES;
      if (!Number.isInteger(maxBytes) || maxBytes < 1)
        throw new RuntimeError('logMaxBytes must be a positive integer');
      try {
        await mkdir(p.bundle, { mode: 0o700 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST')
          throw new RuntimeError(`container ${id} already exists`);
        throw err;
      }
      starting.add(id);
      let m: ContainerMeta | undefined;
      try {
        const cgroupsPath = containerCgroupsPath(id, launch.spec.linux.cgroupsPath, launch.cgroup);
        m = {
          id,
          runtime,
          createdAt: new Date().toISOString(),
          logMaxBytes: maxBytes,
          cgroupsPath,
          ...(launch.cgroup ? { taskCgroup: launch.cgroup.path } : {}),
          rootfs: p.rootfs,
        };
        await writeFile(p.meta, JSON.stringify(m));
        metaCache.set(id, m);
        await mkdir(p.logDir, { recursive: true, mode: 0o700 });
        await mountRootfs(p, launch.layers, mappedRoot(launch.spec));
        if (launch.cgroup) await applyTaskCgroup(launch.cgroup);
        const spec: OciSpec = {
          ...launch.spec,
          root: { path: p.rootfs, readonly: launch.readonlyRootfs },
          linux: { ...launch.spec.linux, cgroupsPath },
        };
        await writeFile(join(p.bundle, 'config.json'), serializeRuntimeSpec(spec));
        const rt = await runtimeCmd(m);
        const pid = await startConmon(m, p, rt);
        track(m);
        await run(rt.path, ['--root', rt.root, 'start', id]);
        return { pid };
      } catch (err) {
        rotating.delete(id);
        await discard(id, m).catch((e) =>
          log.warn({ err: e, container: id }, 'cleaning up a failed start failed'),
        );
        throw err;
      } finally {
        starting.delete(id);
      }
    },

    async wait(id) {
      await meta(id);
      const now = (await exitStatus(id)) ?? (await lostExit(id));
      if (now) return now;
      return new Promise<ExitStatus>((resolveWait, reject) => {
        const list = waiters.get(id) ?? [];
        list.push({ resolve: resolveWait, reject });
        waiters.set(id, list);
        poke(); // it may have exited between the check and the registration
      });
    },

    async signal(id, signal) {
      const m = await meta(id);
      const sig = normalizeSignal(signal);
      const rt = await runtimeCmd(m);
      await run(rt.path, ['--root', rt.root, 'kill', id, sig]);
    },

    async stop(id, signal, timeoutSeconds) {
      const m = await meta(id);
      const already = await exitStatus(id);
      if (already) return already;
      const done = executor.wait(id);
      const rt = await runtimeCmd(m);
      const kill = async (sig: string) => {
        try {
          await run(rt.path, ['--root', rt.root, 'kill', id, sig]);
        } catch (err) {
          // It exited meanwhile: the runtime says so; the wait below has the answer.
          if (
            !/not running|does not exist|container not|process already finished/i.test(
              (err as CommandError).stderr ?? '',
            )
          )
            throw err;
        }
      };
      await kill(normalizeSignal(signal));
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<undefined>((r) => {
        timer = setTimeout(() => r(undefined), Math.max(0, timeoutSeconds) * 1000);
      });
      const first = await Promise.race([done, timedOut]);
      clearTimeout(timer);
      if (first) return first;
      log.info({ container: id, timeoutSeconds }, `container did not stop after ${signal}; killing it`);
      await kill('SIGKILL');
      return done;
    },

    async exec(id, argv, timeoutMs) {
      const m = await meta(id);
      if (argv.length === 0 || argv[0] === '') throw new RuntimeError('exec needs a command');
      const rt = await runtimeCmd(m);
      const pidFile = join(paths(id).bundle, `exec-${randomBytes(6).toString('hex')}.pid`);
      return new Promise<ExecResult>((resolveExec, reject) => {
        const child = spawn(rt.path, ['--root', rt.root, 'exec', '--pid-file', pidFile, id, ...argv], {
          stdio: ['ignore', 'pipe', 'pipe'],
          env: { PATH: HOST_PATH },
        });
        const chunks: Buffer[] = [];
        let size = 0;
        const collect = (d: Buffer) => {
          if (size >= EXEC_OUTPUT_MAX) return;
          const part = d.subarray(0, EXEC_OUTPUT_MAX - size);
          chunks.push(part);
          size += part.length;
        };
        child.stdout.on('data', collect);
        child.stderr.on('data', collect);
        let timedOut = false;
        const timer = setTimeout(async () => {
          timedOut = true;
          // Killing `runc exec` would leave the process running in the container: kill it.
          const pid = Number((await readText(pidFile))?.trim());
          if (Number.isInteger(pid) && pid > 0) {
            try {
              process.kill(pid, 'SIGKILL');
            } catch {}
          } else child.kill('SIGKILL');
        }, timeoutMs);
        child.on('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
        child.on('close', (code) => {
          clearTimeout(timer);
          void rm(pidFile, { force: true });
          resolveExec({
            exitCode: timedOut ? null : code,
            output: Buffer.concat(chunks).toString('utf8'),
            timedOut,
          });
        });
      });
    },

    async list() {
      const out: RuntimeContainer[] = [];
      const ids = (await readdir(dirs.containers)).filter((d) => CONTAINER_ID_RE.test(d)).sort();
      for (const id of ids) {
        let m: ContainerMeta;
        try {
          m = await meta(id);
        } catch {
          continue; // a start that died before writing meta.json; remove(id) clears it
        }
        const mapping = await bundleIdMapping(id);
        const exit = (await exitStatus(id)) ?? (await lostExit(id));
        if (exit) {
          out.push({ id, status: 'stopped', exit, ...mapping });
          continue;
        }
        const st = await runtimeState(m);
        track(m);
        out.push({ id, status: 'running', ...(st && { pid: st.pid }), ...mapping });
      }
      return out;
    },

    async remove(id) {
      checkContainerId(id);
      const p = paths(id);
      const m = await meta(id).catch(() => undefined);
      if (m) {
        // Record the exit before the cgroup (and its OOM counter) goes away.
        const s = await exitStatus(id).catch(() => undefined);
        const rt = await runtimeCmd(m);
        try {
          await run(rt.path, ['--root', rt.root, 'delete', '--force', id]);
        } catch (err) {
          if (!/does not exist|not found/i.test((err as CommandError).stderr ?? '')) throw err;
        }
        if (!s && (await conmonAlive(id))) {
          // conmon is about to record the kill; let it, so it does not write into a deleted dir.
          await Promise.race([executor.wait(id).catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
        }
      }
      const rootfs = rootfsOf(id, m);
      await unmountRootfs(rootfs);
      if ((await mountPoints()).has(rootfs)) throw new RuntimeError(`the rootfs of ${id} is still mounted`);
      await rm(p.bundle, { recursive: true, force: true });
      await dropMountPoint(rootfs);
      await rm(p.exitFile, { force: true });
      await rm(join(dirs.attach, id), { force: true });
      if (m?.taskCgroup) await removeTaskCgroup(m.taskCgroup);
      metaCache.delete(id);
      statusCache.delete(id);
      rotating.delete(id);
    },

    async removeLogs(id) {
      checkContainerId(id);
      await rm(paths(id).logDir, { recursive: true, force: true });
    },

    async readLogs(id, readOpts) {
      checkContainerId(id);
      return readLogFile(paths(id).log, readOpts);
    },

    followLogs(id, onEntry, followOpts) {
      checkContainerId(id);
      return followLogFile(paths(id).log, onEntry, {
        ...(followOpts?.fromStart && { fromStart: true }),
        // Ended: the exit is recorded (conmon drained the pipes first) or the container is gone.
        ended: async () =>
          (await exitStatus(id).catch(() => undefined)) !== undefined || !(await exists(paths(id).bundle)),
        onError: (err) => log.warn({ err, container: id }, 'following logs failed'),
      });
    },

    close() {
      closed = true;
      clearInterval(waitTimer);
      clearInterval(rotateTimer);
      exitWatcher.close();
      for (const [, list] of waiters)
        for (const w of list) w.reject(new RuntimeError('the executor is closed'));
      waiters.clear();
      // Gone once no container of this root is mounted there (a later executor makes it again).
      try {
        rmdirSync(rootfsDir);
      } catch {}
    },
  };
  log.info({ runtime, root, init: opts.init ?? null, conmon }, 'container executor ready');
  return executor;
}
