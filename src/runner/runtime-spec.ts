// One container of a task -> the OCI runtime-spec config.json runc (or crun) runs it from.
// Pure: the caller reads the image config, the rootfs's /etc/passwd and /etc/group (without
// following symlinks out of the rootfs) and the host's limits; this module only merges them.
//
// The merge follows the engines ECS runs on (dockerd, and containerd's oci.With* options):
//   - args: entryPoint ?? image Entrypoint, then command ?? image Cmd, except that an entryPoint
//     given in the task definition drops the image Cmd (dockerd's rule, and `nerdctl run
//     --entrypoint`, and Kubernetes' `command`): a new entry point rarely understands the old
//     default arguments. An empty entryPoint ([]) counts as not given, as in dockerd.
//   - env: image Env, then the task's environment replacing by name in place (containerd's
//     replaceOrAppend), then the runner's extra env (metadata and credentials URIs, resolved
//     secrets) replacing both; PATH gets containerd's default when nothing sets it.
//   - cwd: workingDirectory ?? image WorkingDir ?? '/'.
//   - user: task user ?? image User, as name | uid | name:group | uid:gid (any mix), resolved
//     against the rootfs's passwd/group. A numeric uid needs no file; its primary gid comes from
//     passwd when listed there, else 0. additionalGids are the primary gid plus the groups that
//     list the user as a member, only when no group is given (`uid:gid` means exactly that);
//     the primary gid is always included (containerd's fix for CVE-2023-25173).
//   - cgroups: the container's cgroupsPath is /berth/<taskId>/<container name>, so every
//     container of a task sits under one parent /berth/<taskId>. runc creates the parent but
//     cannot limit it: task-level cpu/memory (ECS's task-size hard limits) come back as
//     `taskCgroup` for the executor to write into that parent before the first container starts.
//     Container cpu units become cpu.shares (ECS agent >= 1.2: values under 2, including 0, give
//     2); memory (MiB) is the hard limit, memoryReservation the soft one.
//   - rlimits: the task's ulimits, clamped to the host's hard limits with a warning (a runtime
//     cannot raise RLIMIT_NOFILE past them and the container would fail to start), and
//     RLIMIT_NOFILE defaulting to min(1024, host hard) soft / host hard hard.
//   - init: with linuxParameters.initProcessEnabled, or when the task definition does not say
//     (berth's default, as a shell as PID 1 ignores SIGTERM), the init binary is bind-mounted
//     read-only at /init and the args become ['/init', '--', ...args].
//   - isolation (the same for every container; README "What a task can and cannot do to its
//     host"): a user namespace mapping ids 0-65535 to the host range of idmap.ts, dockerd's default
//     capabilities without CAP_NET_RAW, no_new_privileges, the default seccomp profile
//     (seccomp.ts), a pids limit, and dockerd's masked and read-only /proc and /sys paths.
//   - network namespaces: none gets a new one from the runtime, inside the container's user
//     namespace (so the runtime writes dockerd's net sysctls there); bridge joins the task's, which
//     the runner made inside a user namespace of the task's own (network.ts) that every container
//     of the task joins too, and whose sysctls the runner set; host joins the host's. The host's
//     belongs to the host's user namespace, where a sysfs mount is refused, so host-mode
//     containers get the host's /sys bound recursively read-only instead (what runc 1.2 falls
//     back to).
// Everything else is runc's `runc spec` defaults.

import { ID_MAP_SIZE, type IdMapping, ociMappings } from './idmap.ts';
import type { OciSeccomp } from './seccomp.ts';
import type { ContainerDefinition, NetworkMode, Ulimit, UlimitName } from './task-definitions.ts';

export const OCI_VERSION = '1.0.2';
/** containerd's and dockerd's PATH for an image that sets none. */
export const DEFAULT_PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** RLIM_INFINITY: uint64 max, beyond a JS number; serializeRuntimeSpec writes it exactly. */
export const RLIM_INFINITY = 18446744073709551615n;
export const DEFAULT_STOP_SIGNAL = 'SIGTERM';
export const INIT_PATH = '/init';
/** The kernel's cgroup v1 cpu.shares bounds. */
export const MIN_CPU_SHARES = 2;
export const MAX_CPU_SHARES = 262144;
export const CFS_PERIOD_US = 100000;
const MIB = 1024 * 1024;
const MAX_ID = 4294967294; // (uid_t)-1 is "no change", never a real id

/** dockerd's default capability set. */
export const DOCKER_DEFAULT_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
] as const;

/** What a container gets: dockerd's set without CAP_NET_RAW (no raw or packet sockets, so no forged
 * packets on the task bridge; ping still works through ICMP datagram sockets, see pingGroupRange). */
export const DEFAULT_CAPABILITIES = DOCKER_DEFAULT_CAPABILITIES.filter((c) => c !== 'CAP_NET_RAW');

/** dockerd's masked paths (current moby: /proc/interrupts and powercap were added for advisories
 * GHSA-6fw5-f8r9-fgfm and GHSA-jq35-85cj-fj4p). Per-CPU thermal_throttle dirs come from the host
 * (maskedCpuPaths). */
export const DEFAULT_MASKED_PATHS = [
  '/proc/acpi',
  '/proc/asound',
  '/proc/interrupts',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/sys/devices/virtual/powercap',
  '/sys/firmware',
] as const;

/** The thermal_throttle dirs of the host's possible CPUs (from /sys/devices/system/cpu/possible,
 * e.g. "0-3,6"), which dockerd masks too: their counters leak other tenants' load. */
export function maskedCpuPaths(possible: string): string[] {
  const out: string[] = [];
  for (const part of possible.trim().split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) continue;
    const lo = Number(m[1]);
    const hi = Math.min(m[2] === undefined ? lo : Number(m[2]), lo + 4095);
    for (let cpu = lo; cpu <= hi; cpu++) out.push(`/sys/devices/system/cpu/cpu${cpu}/thermal_throttle`);
  }
  return out;
}

/** dockerd's read-only paths. */
export const DEFAULT_READONLY_PATHS = [
  '/proc/bus',
  '/proc/fs',
  '/proc/irq',
  '/proc/sys',
  '/proc/sysrq-trigger',
] as const;

// --- the OCI runtime-spec subset berth writes --------------------------------------------------

export type RlimitValue = number | bigint;
export interface OciRlimit {
  type: string;
  soft: RlimitValue;
  hard: RlimitValue;
}
export interface OciMount {
  destination: string;
  type?: string;
  source?: string;
  options?: string[];
}
export interface OciNamespace {
  type: 'pid' | 'network' | 'mount' | 'ipc' | 'uts' | 'user' | 'cgroup';
  path?: string;
}
export interface OciUser {
  uid: number;
  gid: number;
  additionalGids?: number[];
}
export interface OciIdMapping {
  containerID: number;
  hostID: number;
  size: number;
}
export interface OciProcess {
  terminal: boolean;
  user: OciUser;
  args: string[];
  env: string[];
  cwd: string;
  capabilities: { bounding: string[]; effective: string[]; permitted: string[] };
  rlimits: OciRlimit[];
  noNewPrivileges: boolean;
}
export interface OciLinuxResources {
  devices?: { allow: boolean; type?: string; major?: number; minor?: number; access?: string }[];
  memory?: { limit?: number; reservation?: number };
  cpu?: { shares?: number; quota?: number; period?: number };
  pids?: { limit: number };
}
export interface OciSpec {
  ociVersion: string;
  process: OciProcess;
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: OciMount[];
  annotations?: Record<string, string>;
  linux: {
    namespaces: OciNamespace[];
    uidMappings?: OciIdMapping[];
    gidMappings?: OciIdMapping[];
    cgroupsPath: string;
    resources: OciLinuxResources;
    sysctl?: Record<string, string>;
    seccomp?: OciSeccomp;
    maskedPaths: string[];
    readonlyPaths: string[];
  };
}

// --- input -------------------------------------------------------------------------------------

/** The `config` member of an OCI image config (image-spec config.md), as images carry it. */
export interface ImageRunConfig {
  User?: string;
  ExposedPorts?: Record<string, object>;
  Env?: string[] | null;
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Volumes?: Record<string, object>;
  WorkingDir?: string;
  Labels?: Record<string, string> | null;
  StopSignal?: string;
}
/** An OCI image config JSON; only `config` matters here. */
export interface ImageConfig {
  config?: ImageRunConfig | null;
}

export interface TaskInfo {
  taskId: string;
  hostname: string;
  networkMode: NetworkMode;
  /** bridge: the task's persistent network namespace (e.g. /run/netns/berth-<taskId>). */
  netnsPath?: string;
  /** bridge: the task's user namespace, which owns netnsPath (network.ts). */
  usernsPath?: string;
  /** Task-level CPU units ("256"), as the task definition reports it. */
  cpu?: string;
  /** Task-level memory in MiB ("512"). */
  memory?: string;
}

export interface HostLimits {
  /** The hard RLIMIT_NOFILE a container may have (what the runtime itself runs with). */
  nofileHard: number;
  /** The hard RLIMIT_NPROC the runtime runs with: a container in a user namespace cannot raise it. */
  nprocHard?: number;
}

/** What confines every container the same way (computed once by the runner). */
export interface Isolation {
  idMapping: IdMapping;
  /** The most processes and threads a task may have (pids.max of the task and of each container). */
  pidsLimit: number;
  /** The default profile for DEFAULT_CAPABILITIES on this host (seccomp.ts). */
  seccomp: OciSeccomp;
  /** Host-specific paths to mask besides DEFAULT_MASKED_PATHS (maskedCpuPaths). */
  extraMaskedPaths?: readonly string[];
}

/** A mountPoint or volumesFrom entry the caller resolved to a host path. */
export interface VolumeMount {
  hostPath: string;
  containerPath: string;
  readOnly: boolean;
}

export interface RuntimeSpecInput {
  imageConfig: ImageConfig;
  container: ContainerDefinition;
  task: TaskInfo;
  rootfsPath: string;
  /** Contents of the rootfs's /etc/passwd and /etc/group, when they exist. */
  passwd?: string;
  group?: string;
  hostLimits: HostLimits;
  isolation: Isolation;
  /** The runner's variables (ECS_CONTAINER_METADATA_URI, AWS_CONTAINER_CREDENTIALS_RELATIVE_URI,
   * resolved secrets), as "NAME=value" strings or a map; they override image and task values. */
  extraEnv?: string[] | Record<string, string>;
  /** An init (tini-static) on the host; undefined when none is available. */
  init?: { path: string };
  resolvConfPath?: string;
  hostsPath?: string;
  hostnamePath?: string;
  /** The container's mountPoints and volumesFrom, resolved to host paths by the caller. */
  volumeMounts?: VolumeMount[];
}

export interface TaskCgroup {
  /** The parent cgroup every container of the task sits in. */
  path: string;
  /** Task-level limits to write into it (undefined members: no limit). */
  resources: OciLinuxResources;
}

export interface RuntimeSpecResult {
  spec: OciSpec;
  /** Things clamped, defaulted or ignored, worded for a task's log. */
  warnings: string[];
  /** The signal that asks the container to stop (image StopSignal, else SIGTERM). */
  stopSignal: string;
  taskCgroup: TaskCgroup;
}

/** The container cannot be run as defined (the ECS analogue: CannotStartContainerError). */
export class RuntimeSpecError extends Error {
  override name = 'RuntimeSpecError';
}

// --- building ----------------------------------------------------------------------------------

export function buildRuntimeSpec(input: RuntimeSpecInput): RuntimeSpecResult {
  const warnings: string[] = [];
  const { container: c, task } = input;
  const img = input.imageConfig.config ?? {};

  if (!/^[A-Za-z0-9_.-]+$/.test(task.taskId) || task.taskId === '.' || task.taskId === '..')
    throw new RuntimeSpecError(`task id '${task.taskId}' cannot name a cgroup`);
  if (!/^[A-Za-z0-9_-]+$/.test(c.name))
    throw new RuntimeSpecError(`container name '${c.name}' cannot name a cgroup`);
  if (!input.rootfsPath) throw new RuntimeSpecError('rootfsPath is required');

  let args = resolveArgs(c, img);
  const env = resolveEnv(img.Env ?? [], c.environment, input.extraEnv, warnings);
  const cwd = resolveCwd(c.workingDirectory, img.WorkingDir);
  const userSpec = c.user ?? img.User ?? '';
  const user = resolveUser(userSpec, input.passwd, input.group);

  const mounts = standardMounts(task.networkMode !== 'host');
  const useInit = c.linuxParameters?.initProcessEnabled ?? true;
  if (useInit && input.init) {
    mounts.push({
      destination: INIT_PATH,
      type: 'bind',
      source: input.init.path,
      options: ['bind', 'ro', 'nosuid', 'nodev'],
    });
    args = [INIT_PATH, '--', ...args];
  } else if (useInit && c.linuxParameters?.initProcessEnabled) {
    warnings.push(
      'initProcessEnabled is set but no init binary is available on this host; running without an init',
    );
  }

  const readonlyRoot = c.readonlyRootFilesystem === true;
  const etcOpts = readonlyRoot ? ['rbind', 'rprivate', 'ro'] : ['rbind', 'rprivate'];
  for (const [dest, src] of [
    ['/etc/resolv.conf', input.resolvConfPath],
    ['/etc/hosts', input.hostsPath],
    ['/etc/hostname', input.hostnamePath],
  ] as const) {
    if (src) mounts.push({ destination: dest, type: 'bind', source: src, options: [...etcOpts] });
  }
  for (const v of input.volumeMounts ?? []) {
    if (!v.containerPath.startsWith('/'))
      throw new RuntimeSpecError(`volume mount path '${v.containerPath}' must be absolute`);
    mounts.push({
      destination: v.containerPath,
      type: 'bind',
      source: v.hostPath,
      options: v.readOnly ? ['rbind', 'rprivate', 'ro'] : ['rbind', 'rprivate'],
    });
  }
  if (!input.volumeMounts?.length && (c.mountPoints.length > 0 || c.volumesFrom.length > 0))
    warnings.push('mountPoints/volumesFrom were not resolved to host paths by the caller; none are mounted');

  const imageVolumes = Object.keys(img.Volumes ?? {});
  if (imageVolumes.length > 0)
    warnings.push(
      `the image declares volumes (${imageVolumes.join(', ')}); berth creates no anonymous volumes, so they stay part of the root filesystem`,
    );

  const iso = input.isolation;
  if (!Number.isInteger(iso.pidsLimit) || iso.pidsLimit < 1)
    throw new RuntimeSpecError('the pids limit must be a positive integer');
  const namespaces = namespacesFor(task);
  // The runtime writes net sysctls only in a network namespace it makes (networkMode none); the
  // runner sets the bridge namespace's, and the host's are the operator's.
  const sysctl: Record<string, string> = {};
  if (task.networkMode === 'none') Object.assign(sysctl, ownNetnsSysctls());

  const caps = [...DEFAULT_CAPABILITIES];
  const spec: OciSpec = {
    ociVersion: OCI_VERSION,
    process: {
      terminal: false,
      user,
      args,
      env,
      cwd,
      capabilities: { bounding: [...caps], effective: [...caps], permitted: [...caps] },
      rlimits: resolveRlimits(c.ulimits ?? [], input.hostLimits, warnings),
      noNewPrivileges: true,
    },
    root: { path: input.rootfsPath, readonly: readonlyRoot },
    hostname: task.hostname,
    mounts,
    annotations: { 'berth.task-id': task.taskId, 'berth.container-name': c.name },
    linux: {
      namespaces,
      uidMappings: ociMappings(iso.idMapping),
      gidMappings: ociMappings(iso.idMapping),
      cgroupsPath: `/berth/${task.taskId}/${c.name}`,
      resources: { ...containerResources(c, warnings), pids: { limit: iso.pidsLimit } },
      seccomp: iso.seccomp,
      maskedPaths: [...DEFAULT_MASKED_PATHS, ...(iso.extraMaskedPaths ?? [])],
      readonlyPaths: [...DEFAULT_READONLY_PATHS],
    },
  };
  if (Object.keys(sysctl).length > 0) spec.linux.sysctl = sysctl;

  return {
    spec,
    warnings,
    stopSignal: resolveStopSignal(img.StopSignal, warnings),
    taskCgroup: taskCgroup(task, iso.pidsLimit),
  };
}

/** config.json text; writes RLIM_INFINITY (a bigint) as the exact uint64 runtimes expect. */
export function serializeRuntimeSpec(spec: OciSpec): string {
  const rawJSON = (JSON as unknown as { rawJSON(text: string): unknown }).rawJSON;
  return JSON.stringify(spec, (_k, v) => (typeof v === 'bigint' ? rawJSON(v.toString()) : v), 2);
}

// --- process -----------------------------------------------------------------------------------

export function resolveArgs(
  c: Pick<ContainerDefinition, 'entryPoint' | 'command'>,
  img: Pick<ImageRunConfig, 'Entrypoint' | 'Cmd'>,
): string[] {
  const taskEntry = c.entryPoint && c.entryPoint.length > 0 ? c.entryPoint : undefined;
  const entry = taskEntry ?? img.Entrypoint ?? [];
  const cmd = c.command && c.command.length > 0 ? c.command : taskEntry ? [] : (img.Cmd ?? []);
  const args = [...entry, ...cmd];
  if (args.length === 0)
    throw new RuntimeSpecError(
      'no command to run: the task definition sets no entryPoint or command, and the image has no Entrypoint or Cmd',
    );
  if (args[0] === '') throw new RuntimeSpecError('the command to run is an empty string');
  return args;
}

function envName(entry: string): string {
  const i = entry.indexOf('=');
  return i < 0 ? entry : entry.slice(0, i);
}

export function resolveEnv(
  imageEnv: string[],
  taskEnv: { name: string; value: string }[],
  extraEnv: string[] | Record<string, string> | undefined,
  warnings: string[] = [],
): string[] {
  const out: string[] = [];
  const index = new Map<string, number>();
  const set = (entry: string) => {
    const name = envName(entry);
    const at = index.get(name);
    if (at === undefined) {
      index.set(name, out.length);
      out.push(entry);
    } else out[at] = entry;
  };
  for (const e of imageEnv) set(e);
  const fromTask = new Set<string>();
  for (const { name, value } of taskEnv) {
    if (!name || name.includes('='))
      throw new RuntimeSpecError(`environment variable name '${name}' is invalid`);
    fromTask.add(name);
    set(`${name}=${value}`);
  }
  const extra = Array.isArray(extraEnv)
    ? extraEnv
    : Object.entries(extraEnv ?? {}).map(([k, v]) => `${k}=${v}`);
  for (const e of extra) {
    const name = envName(e);
    if (fromTask.has(name))
      warnings.push(`environment variable ${name} from the task definition is replaced by the runner's`);
    set(e);
  }
  if (!index.has('PATH')) out.unshift(DEFAULT_PATH_ENV);
  return out;
}

export function resolveCwd(
  workingDirectory: string | undefined,
  imageWorkingDir: string | undefined,
): string {
  const cwd = workingDirectory || imageWorkingDir || '/';
  if (!cwd.startsWith('/'))
    throw new RuntimeSpecError(`working directory '${cwd}' is invalid: it must be an absolute path`);
  return cwd;
}

// --- users -------------------------------------------------------------------------------------

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}
interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

function parseId(s: string): number | undefined {
  if (!/^\d{1,10}$/.test(s)) return undefined;
  const n = Number(s);
  return n <= MAX_ID ? n : undefined;
}

function lines(text: string): string[][] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#') && !l.startsWith('+') && !l.startsWith('-'))
    .map((l) => l.split(':'));
}

export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const f of lines(text)) {
    const uid = parseId(f[2] ?? '');
    const gid = parseId(f[3] ?? '');
    if (f[0] && uid !== undefined && gid !== undefined) out.push({ name: f[0], uid, gid });
  }
  return out;
}

export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const f of lines(text)) {
    const gid = parseId(f[2] ?? '');
    if (!f[0] || gid === undefined) continue;
    const members = (f[3] ?? '')
      .split(',')
      .map((m) => m.trim())
      .filter(Boolean);
    out.push({ name: f[0], gid, members });
  }
  return out;
}

/** `user` as ECS and docker take it: name | uid | name:group | uid:gid, any mix. Empty = root. */
export function resolveUser(userSpec: string, passwd?: string, group?: string): OciUser {
  const spec = userSpec.trim();
  if (spec === '') return { uid: 0, gid: 0, additionalGids: [0] };
  const colon = spec.indexOf(':');
  const userPart = colon < 0 ? spec : spec.slice(0, colon);
  const groupPart = colon < 0 ? undefined : spec.slice(colon + 1);
  if (userPart === '' || groupPart === '')
    throw new RuntimeSpecError(`user '${userSpec}' is invalid: use name, uid, name:group or uid:gid`);

  const users = passwd === undefined ? undefined : parsePasswd(passwd);
  const groups = group === undefined ? undefined : parseGroup(group);

  let uid: number;
  let gid = 0;
  let userName: string | undefined;
  const numericUid = parseId(userPart);
  if (numericUid !== undefined) {
    uid = numericUid;
    const entry = users?.find((u) => u.uid === uid);
    if (entry) {
      gid = entry.gid;
      userName = entry.name;
    }
  } else if (/^\d+$/.test(userPart)) {
    throw new RuntimeSpecError(`user '${userSpec}' is invalid: uid ${userPart} is out of range`);
  } else {
    if (!users)
      throw new RuntimeSpecError(
        `user '${userPart}' cannot be resolved: the image has no /etc/passwd (use a numeric uid)`,
      );
    const entry = users.find((u) => u.name === userPart);
    if (!entry) throw new RuntimeSpecError(`user '${userPart}' is not in the image's /etc/passwd`);
    uid = entry.uid;
    gid = entry.gid;
    userName = entry.name;
  }

  if (groupPart !== undefined) {
    const numericGid = parseId(groupPart);
    if (numericGid !== undefined) gid = numericGid;
    else if (/^\d+$/.test(groupPart))
      throw new RuntimeSpecError(`user '${userSpec}' is invalid: gid ${groupPart} is out of range`);
    else {
      if (!groups)
        throw new RuntimeSpecError(
          `group '${groupPart}' cannot be resolved: the image has no /etc/group (use a numeric gid)`,
        );
      const entry = groups.find((g) => g.name === groupPart);
      if (!entry) throw new RuntimeSpecError(`group '${groupPart}' is not in the image's /etc/group`);
      gid = entry.gid;
    }
    return { uid, gid, additionalGids: [gid] };
  }

  const additionalGids = [gid];
  if (userName !== undefined) {
    for (const g of groups ?? []) {
      if (g.members.includes(userName) && !additionalGids.includes(g.gid)) additionalGids.push(g.gid);
    }
  }
  return { uid, gid, additionalGids };
}

// --- limits ------------------------------------------------------------------------------------

function rlimitType(name: UlimitName): string {
  return `RLIMIT_${name.toUpperCase()}`;
}

export function resolveRlimits(ulimits: Ulimit[], host: HostLimits, warnings: string[] = []): OciRlimit[] {
  if (!Number.isInteger(host.nofileHard) || host.nofileHard < 1)
    throw new RangeError('hostLimits.nofileHard must be a positive integer');
  const hostHard: Partial<Record<UlimitName, number>> = { nofile: host.nofileHard };
  if (host.nprocHard !== undefined) hostHard.nproc = host.nprocHard;

  const out: OciRlimit[] = [];
  for (const u of ulimits) {
    const cap = hostHard[u.name];
    const asked = (v: number) => (v === -1 ? 'unlimited' : String(v));
    if (cap === undefined) {
      const v = (n: number): RlimitValue => (n === -1 ? RLIM_INFINITY : n);
      out.push({ type: rlimitType(u.name), soft: v(u.softLimit), hard: v(u.hardLimit) });
      continue;
    }
    const hard = u.hardLimit === -1 || u.hardLimit > cap ? cap : u.hardLimit;
    const soft = u.softLimit === -1 || u.softLimit > hard ? hard : u.softLimit;
    if (hard !== u.hardLimit || soft !== u.softLimit) {
      warnings.push(
        `ulimit ${u.name} ${asked(u.softLimit)}/${asked(u.hardLimit)} exceeds this host's hard limit ${cap}; clamped to ${soft}/${hard}`,
      );
    }
    out.push({ type: rlimitType(u.name), soft, hard });
  }
  if (!ulimits.some((u) => u.name === 'nofile')) {
    out.push({ type: 'RLIMIT_NOFILE', soft: Math.min(1024, host.nofileHard), hard: host.nofileHard });
  }
  return out;
}

/** ECS cpu units -> cpu.shares: below 2 (0 = not given) becomes 2, as ECS's agent passes it. */
export function cpuShares(units: number, warnings: string[] = []): number {
  if (units > MAX_CPU_SHARES) {
    warnings.push(`cpu ${units} exceeds the kernel's maximum of ${MAX_CPU_SHARES} shares; clamped`);
    return MAX_CPU_SHARES;
  }
  return Math.max(MIN_CPU_SHARES, Math.floor(units));
}

function containerResources(c: ContainerDefinition, warnings: string[]): OciLinuxResources {
  const memory: { limit?: number; reservation?: number } = {};
  if (c.memory !== undefined) memory.limit = c.memory * MIB;
  if (c.memoryReservation !== undefined) {
    if (c.memory !== undefined && c.memoryReservation > c.memory) {
      warnings.push(
        `memoryReservation ${c.memoryReservation} MiB exceeds memory ${c.memory} MiB; using ${c.memory} MiB`,
      );
      memory.reservation = c.memory * MIB;
    } else memory.reservation = c.memoryReservation * MIB;
  }
  const resources: OciLinuxResources = {
    devices: [{ allow: false, access: 'rwm' }],
    cpu: { shares: cpuShares(c.cpu, warnings) },
  };
  if (Object.keys(memory).length > 0) resources.memory = memory;
  return resources;
}

/** The task's parent cgroup: ECS's task size as hard limits (a CFS quota and a memory limit), and
 * the pids limit for all its containers together. */
export function taskCgroup(
  task: Pick<TaskInfo, 'taskId' | 'cpu' | 'memory'>,
  pidsLimit?: number,
): TaskCgroup {
  const resources: OciLinuxResources = {};
  if (pidsLimit !== undefined) resources.pids = { limit: pidsLimit };
  const units = task.cpu === undefined ? undefined : Number(task.cpu);
  if (units !== undefined && Number.isFinite(units) && units > 0) {
    resources.cpu = {
      shares: cpuShares(units),
      quota: Math.max(1000, Math.round((units / 1024) * CFS_PERIOD_US)),
      period: CFS_PERIOD_US,
    };
  }
  const mib = task.memory === undefined ? undefined : Number(task.memory);
  if (mib !== undefined && Number.isFinite(mib) && mib > 0) resources.memory = { limit: mib * MIB };
  return { path: `/berth/${task.taskId}`, resources };
}

// --- namespaces, mounts, signals ---------------------------------------------------------------

export function namespacesFor(
  task: Pick<TaskInfo, 'networkMode' | 'netnsPath' | 'usernsPath'>,
): OciNamespace[] {
  if (task.networkMode === 'bridge' && !task.usernsPath?.startsWith('/'))
    throw new RuntimeSpecError(
      'bridge network mode needs the absolute path of the task user namespace that owns its network namespace',
    );
  const ns: OciNamespace[] = [
    task.networkMode === 'bridge' ? { type: 'user', path: task.usernsPath } : { type: 'user' },
    { type: 'pid' },
    { type: 'ipc' },
    { type: 'uts' },
    { type: 'mount' },
    { type: 'cgroup' },
  ];
  switch (task.networkMode) {
    case 'host':
      break;
    case 'none':
      ns.push({ type: 'network' });
      break;
    case 'bridge':
      if (!task.netnsPath?.startsWith('/'))
        throw new RuntimeSpecError(
          'bridge network mode needs the absolute path of the task network namespace',
        );
      ns.push({ type: 'network', path: task.netnsPath });
      break;
    default:
      throw new RuntimeSpecError(`network mode '${String(task.networkMode)}' is not supported`);
  }
  return ns;
}

/** ping's ICMP datagram sockets for every mapped group; the range is read in the user namespace
 * of whoever writes it: the container's (0-65535), or the host's when the runner sets a bridge
 * namespace's (the mapped host ids). */
export function pingGroupRange(owner: 'container' | IdMapping): string {
  const start = owner === 'container' ? 0 : owner.hostIdStart;
  return `${start} ${start + ID_MAP_SIZE - 1}`;
}

/** dockerd's sysctls for a container's own network namespace: non-root may bind low ports, and
 * ping works without CAP_NET_RAW. */
export function ownNetnsSysctls(): Record<string, string> {
  return {
    'net.ipv4.ip_unprivileged_port_start': '0',
    'net.ipv4.ping_group_range': pingGroupRange('container'),
  };
}

function standardMounts(sysfs: boolean): OciMount[] {
  const sys: OciMount = sysfs
    ? { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] }
    : {
        // A sysfs mount needs the network namespace's owner; rro makes every submount read-only too.
        destination: '/sys',
        type: 'bind',
        source: '/sys',
        options: ['rbind', 'nosuid', 'noexec', 'nodev', 'rro'],
      };
  return [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    {
      destination: '/dev',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
    },
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
    },
    {
      destination: '/dev/shm',
      type: 'tmpfs',
      source: 'shm',
      options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
    },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    sys,
    {
      destination: '/sys/fs/cgroup',
      type: 'cgroup',
      source: 'cgroup',
      options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'],
    },
  ];
}

/** The image's StopSignal as runc kill takes it ("SIGQUIT", "SIGRTMIN+3", "3"); SIGTERM by default. */
export function resolveStopSignal(signal: string | undefined, warnings: string[] = []): string {
  const s = signal?.trim();
  if (!s) return DEFAULT_STOP_SIGNAL;
  if (/^\d+$/.test(s)) {
    const n = Number(s);
    if (n >= 1 && n <= 64) return String(n);
  } else {
    const name = s.toUpperCase().startsWith('SIG') ? s.toUpperCase() : `SIG${s.toUpperCase()}`;
    if (/^SIG(RTMIN|RTMAX)([+-]\d{1,2})?$/.test(name) || /^SIG[A-Z]{2,7}$/.test(name)) return name;
  }
  warnings.push(`image StopSignal '${s}' is not a signal; using ${DEFAULT_STOP_SIGNAL}`);
  return DEFAULT_STOP_SIGNAL;
}
