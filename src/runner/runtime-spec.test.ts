import { describe, expect, it } from 'vitest';
import {
  buildRuntimeSpec,
  cpuShares,
  DEFAULT_CAPABILITIES,
  DEFAULT_MASKED_PATHS,
  DEFAULT_PATH_ENV,
  DEFAULT_READONLY_PATHS,
  DOCKER_DEFAULT_CAPABILITIES,
  type ImageRunConfig,
  type Isolation,
  maskedCpuPaths,
  namespacesFor,
  type OciSpec,
  RLIM_INFINITY,
  RuntimeSpecError,
  type RuntimeSpecInput,
  resolveArgs,
  resolveCwd,
  resolveEnv,
  resolveRlimits,
  resolveStopSignal,
  resolveUser,
  serializeRuntimeSpec,
  taskCgroup,
} from './runtime-spec.ts';
import { defaultSeccompProfile } from './seccomp.ts';
import { type ContainerDefinition, type Ulimit, validateTaskDefinitionInput } from './task-definitions.ts';

const isolation: Isolation = {
  idMapping: { hostIdStart: 2013265920 },
  pidsLimit: 2048,
  seccomp: defaultSeccompProfile({ arch: 'x86_64', kernel: [6, 1], capabilities: DEFAULT_CAPABILITIES }),
};

function def(over: Partial<ContainerDefinition> = {}): ContainerDefinition {
  return {
    name: 'web',
    image: 'berth.local/web:1',
    cpu: 0,
    portMappings: [],
    essential: true,
    environment: [],
    mountPoints: [],
    volumesFrom: [],
    ...over,
  };
}

function input(over: Partial<RuntimeSpecInput> = {}, img: ImageRunConfig = {}): RuntimeSpecInput {
  return {
    imageConfig: { config: { Env: ['PATH=/bin'], Cmd: ['/bin/httpd', '-f'], ...img } },
    container: def(),
    task: { taskId: 'abc123', hostname: 'web-abc123', networkMode: 'none' },
    rootfsPath: '/var/lib/berth/tasks/abc123/web/rootfs',
    hostLimits: { nofileHard: 20000 },
    isolation,
    ...over,
  };
}

const PASSWD = [
  'root:x:0:0:root:/root:/bin/sh',
  '# a comment',
  'daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin',
  'app:x:1000:1000:App:/home/app:/bin/sh',
  'broken line',
  'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin',
].join('\n');
const GROUP = [
  'root:x:0:',
  'daemon:x:1:',
  'wheel:x:10:root,app',
  'app:x:1000:',
  'audio:x:29:app',
  'nogroup:x:65534:',
].join('\n');

/** The fields config.md and config-linux.md require, and what runc needs to start. */
function checkRequired(spec: OciSpec): void {
  expect(spec.ociVersion).toMatch(/^\d+\.\d+\.\d+/);
  expect(spec.root.path).toBeTruthy();
  expect(typeof spec.root.readonly).toBe('boolean');
  expect(Array.isArray(spec.process.args)).toBe(true);
  expect(spec.process.args.length).toBeGreaterThan(0);
  expect(spec.process.cwd.startsWith('/')).toBe(true);
  expect(Number.isInteger(spec.process.user.uid)).toBe(true);
  expect(Number.isInteger(spec.process.user.gid)).toBe(true);
  for (const e of spec.process.env) expect(e).toContain('=');
  expect(Array.isArray(spec.linux.namespaces)).toBe(true);
  const types = spec.linux.namespaces.map((n) => n.type);
  expect(new Set(types).size).toBe(types.length);
  for (const n of spec.linux.namespaces) {
    expect(['pid', 'network', 'mount', 'ipc', 'uts', 'user', 'cgroup']).toContain(n.type);
    if (n.path !== undefined) expect(n.path.startsWith('/')).toBe(true);
  }
  for (const m of spec.mounts) expect(m.destination.startsWith('/')).toBe(true);
  for (const r of spec.process.rlimits) {
    expect(r.type).toMatch(/^RLIMIT_[A-Z]+$/);
    expect(BigInt(r.soft) <= BigInt(r.hard)).toBe(true);
  }
  // with a hostname there must be a UTS namespace of its own
  expect(types).toContain('uts');
}

describe('args', () => {
  const cases: {
    name: string;
    c: Pick<ContainerDefinition, 'entryPoint' | 'command'>;
    img: Pick<ImageRunConfig, 'Entrypoint' | 'Cmd'>;
    want: string[] | RegExp;
  }[] = [
    { name: 'image Entrypoint + Cmd', c: {}, img: { Entrypoint: ['/e'], Cmd: ['a'] }, want: ['/e', 'a'] },
    { name: 'image Cmd only', c: {}, img: { Cmd: ['/bin/sh', '-c', 'x'] }, want: ['/bin/sh', '-c', 'x'] },
    {
      name: 'command replaces Cmd, keeps Entrypoint',
      c: { command: ['b'] },
      img: { Entrypoint: ['/e'], Cmd: ['a'] },
      want: ['/e', 'b'],
    },
    {
      name: 'entryPoint drops the image Cmd',
      c: { entryPoint: ['/x'] },
      img: { Entrypoint: ['/e'], Cmd: ['a'] },
      want: ['/x'],
    },
    {
      name: 'entryPoint + command',
      c: { entryPoint: ['/x'], command: ['y'] },
      img: { Entrypoint: ['/e'], Cmd: ['a'] },
      want: ['/x', 'y'],
    },
    { name: 'command without any Entrypoint', c: { command: ['/bin/true'] }, img: {}, want: ['/bin/true'] },
    { name: 'empty entryPoint counts as absent', c: { entryPoint: [] }, img: { Cmd: ['/c'] }, want: ['/c'] },
    { name: 'null image fields', c: {}, img: { Entrypoint: null, Cmd: ['/c'] }, want: ['/c'] },
    { name: 'nothing at all', c: {}, img: {}, want: /no command to run/ },
    { name: 'empty everything', c: { command: [] }, img: { Entrypoint: [], Cmd: [] }, want: /no command/ },
    { name: 'empty program name', c: { command: [''] }, img: {}, want: /empty string/ },
  ];
  it.each(cases)('$name', ({ c, img, want }) => {
    if (want instanceof RegExp) {
      expect(() => resolveArgs(c, img)).toThrow(RuntimeSpecError);
      expect(() => resolveArgs(c, img)).toThrow(want);
    } else expect(resolveArgs(c, img)).toEqual(want);
  });
});

describe('env', () => {
  const cases: {
    name: string;
    image: string[];
    task: { name: string; value: string }[];
    extra?: string[] | Record<string, string>;
    want: string[];
    warns?: number;
  }[] = [
    { name: 'image only', image: ['PATH=/bin', 'A=1'], task: [], want: ['PATH=/bin', 'A=1'] },
    {
      name: 'task overrides by name in place, appends new',
      image: ['PATH=/bin', 'A=1', 'B=2'],
      task: [
        { name: 'A', value: 'x=y' },
        { name: 'C', value: '' },
      ],
      want: ['PATH=/bin', 'A=x=y', 'B=2', 'C='],
    },
    { name: 'default PATH when none', image: ['A=1'], task: [], want: [DEFAULT_PATH_ENV, 'A=1'] },
    {
      name: 'task PATH counts',
      image: [],
      task: [{ name: 'PATH', value: '/opt/bin' }],
      want: ['PATH=/opt/bin'],
    },
    {
      name: 'extra env appended (map form)',
      image: ['PATH=/bin'],
      task: [],
      extra: {
        ECS_CONTAINER_METADATA_URI: 'http://169.254.170.2/v3/t',
        AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: '/v2/c',
      },
      want: [
        'PATH=/bin',
        'ECS_CONTAINER_METADATA_URI=http://169.254.170.2/v3/t',
        'AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=/v2/c',
      ],
    },
    {
      name: "extra env wins over the task's, with a warning",
      image: ['PATH=/bin'],
      task: [{ name: 'ECS_CONTAINER_METADATA_URI', value: 'mine' }],
      extra: ['ECS_CONTAINER_METADATA_URI=runner'],
      want: ['PATH=/bin', 'ECS_CONTAINER_METADATA_URI=runner'],
      warns: 1,
    },
    {
      name: 'duplicate names in the image collapse to the last',
      image: ['A=1', 'A=2', 'PATH=/bin'],
      task: [],
      want: ['A=2', 'PATH=/bin'],
    },
  ];
  it.each(cases)('$name', ({ image, task, extra, want, warns }) => {
    const w: string[] = [];
    expect(resolveEnv(image, task, extra, w)).toEqual(want);
    expect(w).toHaveLength(warns ?? 0);
  });
  it('refuses a name with =', () => {
    expect(() => resolveEnv([], [{ name: 'A=B', value: '1' }], undefined)).toThrow(RuntimeSpecError);
  });
});

describe('cwd', () => {
  it.each([
    { wd: undefined, img: undefined, want: '/' },
    { wd: undefined, img: '/srv', want: '/srv' },
    { wd: '/app', img: '/srv', want: '/app' },
    { wd: '', img: '', want: '/' },
  ])('$wd / $img -> $want', ({ wd, img, want }) => {
    expect(resolveCwd(wd, img)).toBe(want);
  });
  it('refuses a relative directory', () => {
    expect(() => resolveCwd('app', undefined)).toThrow(/absolute/);
  });
});

describe('user', () => {
  const cases: {
    spec: string;
    passwd?: string;
    group?: string;
    want: { uid: number; gid: number; additionalGids?: number[] } | RegExp;
  }[] = [
    { spec: '', want: { uid: 0, gid: 0, additionalGids: [0] } },
    { spec: 'root', passwd: PASSWD, group: GROUP, want: { uid: 0, gid: 0, additionalGids: [0, 10] } },
    {
      spec: 'app',
      passwd: PASSWD,
      group: GROUP,
      want: { uid: 1000, gid: 1000, additionalGids: [1000, 10, 29] },
    },
    { spec: 'app', passwd: PASSWD, want: { uid: 1000, gid: 1000, additionalGids: [1000] } },
    {
      spec: '1000',
      passwd: PASSWD,
      group: GROUP,
      want: { uid: 1000, gid: 1000, additionalGids: [1000, 10, 29] },
    },
    { spec: '1234', passwd: PASSWD, group: GROUP, want: { uid: 1234, gid: 0, additionalGids: [0] } },
    { spec: '1234', want: { uid: 1234, gid: 0, additionalGids: [0] } },
    { spec: '1234:5678', want: { uid: 1234, gid: 5678, additionalGids: [5678] } },
    { spec: 'app:daemon', passwd: PASSWD, group: GROUP, want: { uid: 1000, gid: 1, additionalGids: [1] } },
    {
      spec: '1000:nogroup',
      passwd: PASSWD,
      group: GROUP,
      want: { uid: 1000, gid: 65534, additionalGids: [65534] },
    },
    { spec: 'nobody:0', passwd: PASSWD, want: { uid: 65534, gid: 0, additionalGids: [0] } },
    { spec: 'ghost', passwd: PASSWD, group: GROUP, want: /user 'ghost' is not in the image's \/etc\/passwd/ },
    { spec: 'app', want: /no \/etc\/passwd/ },
    { spec: 'app:ghosts', passwd: PASSWD, group: GROUP, want: /group 'ghosts' is not in/ },
    { spec: '0:wheel', passwd: PASSWD, want: /no \/etc\/group/ },
    { spec: ':1', want: /invalid/ },
    { spec: '1:', want: /invalid/ },
    { spec: '99999999999', want: /out of range/ },
    { spec: '1:4294967295', want: /out of range/ },
  ];
  it.each(cases)('$spec', ({ spec, passwd, group, want }) => {
    if (want instanceof RegExp) {
      expect(() => resolveUser(spec, passwd, group)).toThrow(RuntimeSpecError);
      expect(() => resolveUser(spec, passwd, group)).toThrow(want);
    } else expect(resolveUser(spec, passwd, group)).toEqual(want);
  });

  it('task user wins over the image User', () => {
    const { spec } = buildRuntimeSpec(
      input({ container: def({ user: 'app' }), passwd: PASSWD, group: GROUP }, { User: 'daemon' }),
    );
    expect(spec.process.user.uid).toBe(1000);
  });
  it('image User applies when the task has none', () => {
    const { spec } = buildRuntimeSpec(input({ passwd: PASSWD, group: GROUP }, { User: 'daemon' }));
    expect(spec.process.user).toEqual({ uid: 1, gid: 1, additionalGids: [1] });
  });
  it('an unknown user fails the whole build', () => {
    expect(() => buildRuntimeSpec(input({ container: def({ user: 'ghost' }), passwd: PASSWD }))).toThrow(
      RuntimeSpecError,
    );
  });
});

describe('rlimits', () => {
  const host = { nofileHard: 20000, nprocHard: 4096 };
  const cases: {
    name: string;
    ulimits: Ulimit[];
    want: [string, number | bigint, number | bigint][];
    warns: number;
  }[] = [
    { name: 'default nofile', ulimits: [], want: [['RLIMIT_NOFILE', 1024, 20000]], warns: 0 },
    {
      name: 'nofile within the host',
      ulimits: [{ name: 'nofile', softLimit: 4096, hardLimit: 8192 }],
      want: [['RLIMIT_NOFILE', 4096, 8192]],
      warns: 0,
    },
    {
      name: 'nofile above the host is clamped',
      ulimits: [{ name: 'nofile', softLimit: 65536, hardLimit: 65536 }],
      want: [['RLIMIT_NOFILE', 20000, 20000]],
      warns: 1,
    },
    {
      name: 'hard above, soft within',
      ulimits: [{ name: 'nofile', softLimit: 1000, hardLimit: 1048576 }],
      want: [['RLIMIT_NOFILE', 1000, 20000]],
      warns: 1,
    },
    {
      name: 'unlimited nofile becomes the host hard limit',
      ulimits: [{ name: 'nofile', softLimit: -1, hardLimit: -1 }],
      want: [['RLIMIT_NOFILE', 20000, 20000]],
      warns: 1,
    },
    {
      name: 'nproc clamped when the host reports it',
      ulimits: [{ name: 'nproc', softLimit: 10000, hardLimit: 10000 }],
      want: [
        ['RLIMIT_NPROC', 4096, 4096],
        ['RLIMIT_NOFILE', 1024, 20000],
      ],
      warns: 1,
    },
    {
      name: 'unlimited core passes through as RLIM_INFINITY',
      ulimits: [{ name: 'core', softLimit: 0, hardLimit: -1 }],
      want: [
        ['RLIMIT_CORE', 0, RLIM_INFINITY],
        ['RLIMIT_NOFILE', 1024, 20000],
      ],
      warns: 0,
    },
    {
      name: 'names map to RLIMIT_*',
      ulimits: [
        { name: 'memlock', softLimit: 65536, hardLimit: 65536 },
        { name: 'sigpending', softLimit: 100, hardLimit: 200 },
      ],
      want: [
        ['RLIMIT_MEMLOCK', 65536, 65536],
        ['RLIMIT_SIGPENDING', 100, 200],
        ['RLIMIT_NOFILE', 1024, 20000],
      ],
      warns: 0,
    },
  ];
  it.each(cases)('$name', ({ ulimits, want, warns }) => {
    const w: string[] = [];
    const got = resolveRlimits(ulimits, host, w).map((r) => [r.type, r.soft, r.hard]);
    expect(got).toEqual(want);
    expect(w).toHaveLength(warns);
    if (warns) expect(w[0]).toMatch(/clamped/);
  });
  it('default soft nofile never exceeds a small host hard limit', () => {
    expect(resolveRlimits([], { nofileHard: 512 })).toEqual([
      { type: 'RLIMIT_NOFILE', soft: 512, hard: 512 },
    ]);
  });
  it('without a host nproc, nproc passes through', () => {
    expect(
      resolveRlimits([{ name: 'nproc', softLimit: -1, hardLimit: -1 }], { nofileHard: 20000 })[0],
    ).toEqual({
      type: 'RLIMIT_NPROC',
      soft: RLIM_INFINITY,
      hard: RLIM_INFINITY,
    });
  });
  it('never puts a limit above the host in the spec, and warns', () => {
    const r = buildRuntimeSpec(
      input({ container: def({ ulimits: [{ name: 'nofile', softLimit: 100000, hardLimit: 100000 }] }) }),
    );
    expect(r.spec.process.rlimits).toEqual([{ type: 'RLIMIT_NOFILE', soft: 20000, hard: 20000 }]);
    expect(r.warnings.some((w) => w.includes('nofile'))).toBe(true);
  });
  it('serializes RLIM_INFINITY as the exact uint64', () => {
    const r = buildRuntimeSpec(
      input({ container: def({ ulimits: [{ name: 'core', softLimit: -1, hardLimit: -1 }] }) }),
    );
    const text = serializeRuntimeSpec(r.spec);
    expect(text).toMatch(/"soft": 18446744073709551615,/);
    expect(text).toMatch(/"hard": 18446744073709551615\n/);
    expect(() => JSON.parse(text)).not.toThrow();
  });
  it('refuses a nonsense host limit', () => {
    expect(() => resolveRlimits([], { nofileHard: 0 })).toThrow(RangeError);
  });
});

describe('cgroups', () => {
  it.each([
    { units: 0, want: 2 },
    { units: 1, want: 2 },
    { units: 2, want: 2 },
    { units: 256, want: 256 },
    { units: 1024, want: 1024 },
    { units: 10_000_000, want: 262144 },
  ])('cpu $units -> shares $want', ({ units, want }) => {
    expect(cpuShares(units)).toBe(want);
  });

  it('memory and reservation in bytes, shares, path under the task parent', () => {
    const { spec } = buildRuntimeSpec(
      input({ container: def({ cpu: 512, memory: 256, memoryReservation: 128 }) }),
    );
    expect(spec.linux.cgroupsPath).toBe('/berth/abc123/web');
    expect(spec.linux.resources.memory).toEqual({ limit: 256 * 1048576, reservation: 128 * 1048576 });
    expect(spec.linux.resources.cpu).toEqual({ shares: 512 });
    expect(spec.linux.resources.devices).toEqual([{ allow: false, access: 'rwm' }]);
  });
  it('reservation only', () => {
    const { spec } = buildRuntimeSpec(input({ container: def({ memoryReservation: 64 }) }));
    expect(spec.linux.resources.memory).toEqual({ reservation: 64 * 1048576 });
  });
  it('no memory settings, no memory section', () => {
    const { spec } = buildRuntimeSpec(input());
    expect(spec.linux.resources.memory).toBeUndefined();
    expect(spec.linux.resources.cpu).toEqual({ shares: 2 });
  });
  it('a reservation above the limit is clamped with a warning', () => {
    const r = buildRuntimeSpec(input({ container: def({ memory: 64, memoryReservation: 128 }) }));
    expect(r.spec.linux.resources.memory).toEqual({ limit: 64 * 1048576, reservation: 64 * 1048576 });
    expect(r.warnings).toHaveLength(1);
  });
  it('task-level limits go on the parent cgroup', () => {
    expect(taskCgroup({ taskId: 't1', cpu: '512', memory: '1024' })).toEqual({
      path: '/berth/t1',
      resources: { cpu: { shares: 512, quota: 50000, period: 100000 }, memory: { limit: 1024 * 1048576 } },
    });
    expect(taskCgroup({ taskId: 't1' })).toEqual({ path: '/berth/t1', resources: {} });
    const r = buildRuntimeSpec(
      input({ task: { taskId: 'abc123', hostname: 'h', networkMode: 'none', cpu: '2048' } }),
    );
    expect(r.taskCgroup.path).toBe('/berth/abc123');
    expect(r.spec.linux.cgroupsPath.startsWith(`${r.taskCgroup.path}/`)).toBe(true);
    expect(r.taskCgroup.resources.cpu).toEqual({ shares: 2048, quota: 200000, period: 100000 });
  });
  it.each(['../x', 'a/b', '', '..'])('refuses task id %j', (taskId) => {
    expect(() => buildRuntimeSpec(input({ task: { taskId, hostname: 'h', networkMode: 'none' } }))).toThrow(
      RuntimeSpecError,
    );
  });
});

describe('namespaces', () => {
  const base = ['pid', 'ipc', 'uts', 'mount', 'cgroup'].map((type) => ({ type }));
  const usernsPath = '/var/lib/berth/runner/network/tasks/abc/userns';
  it.each([
    {
      mode: 'none' as const,
      netnsPath: undefined,
      usernsPath: undefined,
      want: [{ type: 'user' }, ...base, { type: 'network' }],
    },
    {
      mode: 'host' as const,
      netnsPath: undefined,
      usernsPath: undefined,
      want: [{ type: 'user' }, ...base],
    },
    {
      mode: 'bridge' as const,
      netnsPath: '/run/netns/berth-abc',
      usernsPath,
      // The task's own user namespace, which owns its network namespace.
      want: [{ type: 'user', path: usernsPath }, ...base, { type: 'network', path: '/run/netns/berth-abc' }],
    },
  ])('$mode', ({ mode, netnsPath, usernsPath, want }) => {
    expect(namespacesFor({ networkMode: mode, netnsPath, usernsPath })).toEqual(want);
    const { spec } = buildRuntimeSpec(
      input({ task: { taskId: 't', hostname: 'h', networkMode: mode, netnsPath, usernsPath } }),
    );
    expect(spec.linux.namespaces).toEqual(want);
    expect(spec.hostname).toBe('h');
    const sys = spec.mounts.find((m) => m.destination === '/sys');
    // The runtime sets sysctls only in a namespace it makes; ping's range in the container's ids.
    if (mode === 'none')
      expect(spec.linux.sysctl).toEqual({
        'net.ipv4.ip_unprivileged_port_start': '0',
        'net.ipv4.ping_group_range': '0 65535',
      });
    else expect(spec.linux.sysctl).toBeUndefined();
    if (mode !== 'host') {
      expect(sys).toMatchObject({ type: 'sysfs', options: expect.arrayContaining(['ro']) });
    } else {
      // The host's namespace refuses a sysfs mount from a user namespace: the host's /sys, read-only.
      expect(sys).toEqual({
        destination: '/sys',
        type: 'bind',
        source: '/sys',
        options: ['rbind', 'nosuid', 'noexec', 'nodev', 'rro'],
      });
    }
  });
  it('bridge without a namespace path is an error', () => {
    expect(() => namespacesFor({ networkMode: 'bridge', usernsPath })).toThrow(/network namespace/);
    expect(() => namespacesFor({ networkMode: 'bridge', netnsPath: 'rel', usernsPath })).toThrow(
      RuntimeSpecError,
    );
    expect(() => namespacesFor({ networkMode: 'bridge', netnsPath: '/run/netns/x' })).toThrow(
      /task user namespace/,
    );
  });
});

describe('init', () => {
  const init = { path: '/usr/bin/tini-static' };
  it.each([
    { name: 'default: wrapped', lp: undefined, init, wrapped: true, warns: 0 },
    { name: 'initProcessEnabled true', lp: { initProcessEnabled: true }, init, wrapped: true, warns: 0 },
    { name: 'initProcessEnabled false', lp: { initProcessEnabled: false }, init, wrapped: false, warns: 0 },
    { name: 'linuxParameters {} is the default', lp: {}, init, wrapped: true, warns: 0 },
    { name: 'no init on the host', lp: undefined, init: undefined, wrapped: false, warns: 0 },
    {
      name: 'asked for but no init on the host',
      lp: { initProcessEnabled: true },
      init: undefined,
      wrapped: false,
      warns: 1,
    },
  ])('$name', ({ lp, init, wrapped, warns }) => {
    const r = buildRuntimeSpec(input({ container: def({ linuxParameters: lp }), init }));
    const initMount = r.spec.mounts.find((m) => m.destination === '/init');
    if (wrapped) {
      expect(r.spec.process.args).toEqual(['/init', '--', '/bin/httpd', '-f']);
      expect(initMount).toEqual({
        destination: '/init',
        type: 'bind',
        source: '/usr/bin/tini-static',
        options: expect.arrayContaining(['bind', 'ro']),
      });
    } else {
      expect(r.spec.process.args).toEqual(['/bin/httpd', '-f']);
      expect(initMount).toBeUndefined();
    }
    expect(r.warnings).toHaveLength(warns);
  });
});

describe('root filesystem and mounts', () => {
  const files = { resolvConfPath: '/t/resolv.conf', hostsPath: '/t/hosts', hostnamePath: '/t/hostname' };
  it.each([
    { ro: undefined, want: false },
    { ro: false, want: false },
    { ro: true, want: true },
  ])('readonlyRootFilesystem $ro -> root.readonly $want', ({ ro, want }) => {
    const { spec } = buildRuntimeSpec(input({ container: def({ readonlyRootFilesystem: ro }), ...files }));
    expect(spec.root).toEqual({ path: '/var/lib/berth/tasks/abc123/web/rootfs', readonly: want });
    for (const dest of ['/etc/resolv.conf', '/etc/hosts', '/etc/hostname']) {
      const m = spec.mounts.find((x) => x.destination === dest);
      expect(m?.type).toBe('bind');
      expect(m?.options?.includes('ro')).toBe(want);
    }
  });
  it('standard mounts, masked and read-only paths', () => {
    const { spec } = buildRuntimeSpec(input());
    const byDest = new Map(spec.mounts.map((m) => [m.destination, m]));
    expect(byDest.get('/proc')?.type).toBe('proc');
    expect(byDest.get('/dev')?.type).toBe('tmpfs');
    expect(byDest.get('/dev/pts')?.type).toBe('devpts');
    expect(byDest.get('/dev/shm')?.type).toBe('tmpfs');
    expect(byDest.get('/dev/mqueue')?.type).toBe('mqueue');
    expect(byDest.get('/sys')?.options).toContain('ro');
    expect(spec.linux.maskedPaths).toEqual([...DEFAULT_MASKED_PATHS]);
    expect(spec.linux.maskedPaths).toEqual(
      expect.arrayContaining(['/proc/kcore', '/proc/keys', '/proc/interrupts', '/sys/firmware']),
    );
    expect(spec.linux.readonlyPaths).toEqual([...DEFAULT_READONLY_PATHS]);
    expect(spec.mounts.some((m) => m.destination.startsWith('/etc/'))).toBe(false);
  });
  it('volume mounts resolved by the caller', () => {
    const { spec, warnings } = buildRuntimeSpec(
      input({
        container: def({ mountPoints: [{ sourceVolume: 'data', containerPath: '/data', readOnly: true }] }),
        volumeMounts: [{ hostPath: '/v/data', containerPath: '/data', readOnly: true }],
      }),
    );
    expect(spec.mounts.find((m) => m.destination === '/data')).toEqual({
      destination: '/data',
      type: 'bind',
      source: '/v/data',
      options: ['rbind', 'rprivate', 'ro'],
    });
    expect(warnings).toEqual([]);
  });
  it('unresolved mountPoints and image volumes are warned about', () => {
    const { warnings } = buildRuntimeSpec(
      input(
        {
          container: def({
            mountPoints: [{ sourceVolume: 'data', containerPath: '/data', readOnly: false }],
          }),
        },
        { Volumes: { '/var/lib/data': {} } },
      ),
    );
    expect(warnings).toHaveLength(2);
  });
});

describe('process defaults and stop signal', () => {
  it('capabilities, no_new_privileges, terminal', () => {
    const { spec } = buildRuntimeSpec(input());
    expect(spec.process.terminal).toBe(false);
    expect(spec.process.noNewPrivileges).toBe(true);
    expect(spec.process.capabilities.bounding).toEqual([...DEFAULT_CAPABILITIES]);
    expect(spec.process.capabilities.effective).toEqual([...DEFAULT_CAPABILITIES]);
    expect(spec.process.capabilities.permitted).toEqual([...DEFAULT_CAPABILITIES]);
    expect(spec.process.capabilities.bounding).not.toContain('CAP_SYS_ADMIN');
    // dockerd's set but CAP_NET_RAW: no raw or packet sockets.
    expect(spec.process.capabilities.bounding).not.toContain('CAP_NET_RAW');
    expect([...DEFAULT_CAPABILITIES, 'CAP_NET_RAW'].sort()).toEqual([...DOCKER_DEFAULT_CAPABILITIES].sort());
  });
  it.each([
    { sig: undefined, want: 'SIGTERM', warns: 0 },
    { sig: '', want: 'SIGTERM', warns: 0 },
    { sig: 'SIGQUIT', want: 'SIGQUIT', warns: 0 },
    { sig: 'int', want: 'SIGINT', warns: 0 },
    { sig: 'SIGRTMIN+3', want: 'SIGRTMIN+3', warns: 0 },
    { sig: '9', want: '9', warns: 0 },
    { sig: '99', want: 'SIGTERM', warns: 1 },
    { sig: 'SIG TERM', want: 'SIGTERM', warns: 1 },
  ])('StopSignal $sig -> $want', ({ sig, want, warns }) => {
    const w: string[] = [];
    expect(resolveStopSignal(sig, w)).toBe(want);
    expect(w).toHaveLength(warns);
  });
  it('the stop signal is returned beside the spec', () => {
    expect(buildRuntimeSpec(input({}, { StopSignal: 'SIGQUIT' })).stopSignal).toBe('SIGQUIT');
  });
  it('a null image config runs the task command', () => {
    const r = buildRuntimeSpec(
      input({ imageConfig: { config: null }, container: def({ command: ['/bin/true'] }) }),
    );
    expect(r.spec.process.args).toEqual(['/bin/true']);
    expect(r.spec.process.env).toEqual([DEFAULT_PATH_ENV]);
    expect(r.spec.process.cwd).toBe('/');
  });
});

describe('a whole spec', () => {
  it('from a registered task definition, carries the required runtime-spec fields', () => {
    const { spec: td } = validateTaskDefinitionInput({
      family: 'web',
      networkMode: 'bridge',
      containerDefinitions: [
        {
          name: 'web',
          image: 'berth.local/web:1',
          cpu: 256,
          memory: 128,
          environment: [{ name: 'MODE', value: 'prod' }],
          user: 'app',
          workingDirectory: '/srv',
          ulimits: [{ name: 'nofile', softLimit: 65536, hardLimit: 65536 }],
          linuxParameters: { initProcessEnabled: true },
        },
      ],
    });
    const r = buildRuntimeSpec({
      imageConfig: {
        config: {
          Env: ['PATH=/usr/bin:/bin', 'MODE=dev'],
          Entrypoint: ['/bin/httpd'],
          Cmd: ['-f', '-p', '80'],
        },
      },
      container: td.containerDefinitions[0]!,
      task: {
        taskId: 'f00d',
        hostname: 'web-f00d',
        networkMode: 'bridge',
        netnsPath: '/run/netns/berth-f00d',
        usernsPath: '/var/lib/berth/network/tasks/f00d/userns',
      },
      rootfsPath: '/var/lib/berth/tasks/f00d/web/rootfs',
      passwd: PASSWD,
      group: GROUP,
      hostLimits: { nofileHard: 20000 },
      isolation,
      extraEnv: { ECS_CONTAINER_METADATA_URI: 'http://169.254.170.2/v3/f00d' },
      init: { path: '/usr/bin/tini-static' },
      resolvConfPath: '/var/lib/berth/tasks/f00d/resolv.conf',
    });
    checkRequired(r.spec);
    expect(r.spec.process.args).toEqual(['/init', '--', '/bin/httpd', '-f', '-p', '80']);
    expect(r.spec.process.env).toEqual([
      'PATH=/usr/bin:/bin',
      'MODE=prod',
      'ECS_CONTAINER_METADATA_URI=http://169.254.170.2/v3/f00d',
    ]);
    expect(r.spec.process.cwd).toBe('/srv');
    expect(r.spec.process.user).toEqual({ uid: 1000, gid: 1000, additionalGids: [1000, 10, 29] });
    expect(r.spec.linux.resources.cpu).toEqual({ shares: 256 });
    expect(r.warnings).toHaveLength(1); // nofile clamped
    const parsed = JSON.parse(serializeRuntimeSpec(r.spec)) as OciSpec;
    checkRequired(parsed);
    expect(parsed.linux.namespaces).toContainEqual({ type: 'network', path: '/run/netns/berth-f00d' });
  });

  it.each(['host', 'none'] as const)('minimal %s-mode spec validates', (networkMode) => {
    checkRequired(buildRuntimeSpec(input({ task: { taskId: 'x', hostname: 'x', networkMode } })).spec);
  });

  it('is pure: the same input gives the same output and the input is untouched', () => {
    const inp = input({
      container: def({ environment: [{ name: 'A', value: '1' }] }),
      init: { path: '/tini' },
    });
    const before = structuredClone(inp);
    expect(buildRuntimeSpec(inp)).toEqual(buildRuntimeSpec(inp));
    expect(inp).toEqual(before);
  });
});

describe('isolation', () => {
  it('maps ids 0-65535 to the configured host range in a user namespace', () => {
    const { spec } = buildRuntimeSpec(input());
    expect(spec.linux.namespaces[0]).toEqual({ type: 'user' });
    const map = [{ containerID: 0, hostID: 2013265920, size: 65536 }];
    expect(spec.linux.uidMappings).toEqual(map);
    expect(spec.linux.gidMappings).toEqual(map);
  });
  it('carries the seccomp profile, the pids limit and host-specific masked paths', () => {
    const extra = maskedCpuPaths('0-1');
    const { spec, taskCgroup: cg } = buildRuntimeSpec(
      input({ isolation: { ...isolation, pidsLimit: 100, extraMaskedPaths: extra } }),
    );
    expect(spec.linux.seccomp).toBe(isolation.seccomp);
    expect(spec.linux.resources.pids).toEqual({ limit: 100 });
    expect(cg.resources.pids).toEqual({ limit: 100 });
    expect(spec.linux.maskedPaths).toEqual([...DEFAULT_MASKED_PATHS, ...extra]);
  });
  it('refuses a pids limit that is not a positive integer', () => {
    expect(() => buildRuntimeSpec(input({ isolation: { ...isolation, pidsLimit: 0 } }))).toThrow(/pids/);
  });
  it.each([
    ['0-1', ['cpu0', 'cpu1']],
    ['0-2,5', ['cpu0', 'cpu1', 'cpu2', 'cpu5']],
    ['0\n', ['cpu0']],
    ['', []],
  ])('thermal_throttle of possible CPUs %j', (possible, cpus) => {
    expect(maskedCpuPaths(possible)).toEqual(
      cpus.map((c) => `/sys/devices/system/cpu/${c}/thermal_throttle`),
    );
  });
});
