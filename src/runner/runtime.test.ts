import { describe, expect, it } from 'vitest';
import {
  CONMON_REOPEN_LOGS,
  cgroupV1Writes,
  checkCgroupPath,
  checkContainerId,
  conmonArgs,
  containerCgroupsPath,
  lastRuntimeError,
  normalizeSignal,
  overlayMountArgs,
  parseOomKillCount,
  parseSyncMessage,
  RuntimeError,
  signalFromExitCode,
} from './runtime.ts';

describe('container ids', () => {
  it('accepts runtime-safe ids and refuses the rest', () => {
    for (const id of ['a', 'abc-1', 'A.b_c-9', 'x'.repeat(128)])
      expect(() => checkContainerId(id)).not.toThrow();
    for (const id of ['', '-a', '.a', 'a/b', 'a b', '../x', 'x'.repeat(129), 'a\n'])
      expect(() => checkContainerId(id)).toThrow(RuntimeError);
  });
});

describe('signals', () => {
  it('normalizes names and numbers as runc kill takes them', () => {
    expect(normalizeSignal('TERM')).toBe('SIGTERM');
    expect(normalizeSignal('sigquit')).toBe('SIGQUIT');
    expect(normalizeSignal('9')).toBe('9');
    expect(normalizeSignal('SIGRTMIN+3')).toBe('SIGRTMIN+3');
  });
  it('refuses what could read as an option or is no signal', () => {
    for (const s of ['-9', '--all', '', '0', '65', 'SIG', 'TERM KILL'])
      expect(() => normalizeSignal(s)).toThrow(RuntimeError);
  });
  it('names the signal an exit code reports', () => {
    expect(signalFromExitCode(137)).toBe('SIGKILL');
    expect(signalFromExitCode(143)).toBe('SIGTERM');
    expect(signalFromExitCode(128)).toBeUndefined();
    expect(signalFromExitCode(3)).toBeUndefined();
    expect(signalFromExitCode(255)).toBeUndefined();
  });
});

describe('overlayMountArgs', () => {
  it('puts the top layer first in lowerdir', () => {
    expect(overlayMountArgs(['/l/bottom', '/l/mid', '/l/top'], '/c/upper', '/c/work', '/c/rootfs')).toEqual({
      args: [
        '-t',
        'overlay',
        'overlay',
        '-o',
        'lowerdir=/l/top:/l/mid:/l/bottom,upperdir=/c/upper,workdir=/c/work',
        '/c/rootfs',
      ],
    });
  });
  it('switches to relative lowerdirs when the options outgrow a page', () => {
    const layers = Array.from(
      { length: 60 },
      (_, i) => `/var/lib/berth/runner/layers/sha256/${String(i).padStart(64, 'a')}`,
    );
    const m = overlayMountArgs(layers, '/c/upper', '/c/work', '/c/rootfs');
    expect(m.cwd).toBe('/var/lib/berth/runner/layers/sha256');
    expect(m.args[4]!.startsWith(`lowerdir=${String(59).padStart(64, 'a')}:`)).toBe(true);
    expect(m.args[4]!.length).toBeLessThanOrEqual(4000);
  });
  it('refuses what overlayfs would misread, and no layers at all', () => {
    expect(() => overlayMountArgs([], '/u', '/w', '/r')).toThrow(/at least one layer/);
    expect(() => overlayMountArgs(['/a,b'], '/u', '/w', '/r')).toThrow(RuntimeError);
    expect(() => overlayMountArgs(['/a:b'], '/u', '/w', '/r')).toThrow(RuntimeError);
    expect(() => overlayMountArgs(['relative'], '/u', '/w', '/r')).toThrow(RuntimeError);
    const tooMany = Array.from({ length: 500 }, (_, i) => `/l/${String(i).padStart(64, '0')}`);
    expect(() => overlayMountArgs(tooMany, '/u', '/w', '/r')).toThrow(/too many/);
  });
});

describe('cgroups', () => {
  it('maps task limits to cgroup v1 files, period before quota', () => {
    expect(
      cgroupV1Writes({
        memory: { limit: 1048576, reservation: 524288 },
        cpu: { shares: 256, quota: 25000, period: 100000 },
      }),
    ).toEqual([
      { controller: 'memory', file: 'memory.limit_in_bytes', value: '1048576' },
      { controller: 'memory', file: 'memory.soft_limit_in_bytes', value: '524288' },
      { controller: 'cpu', file: 'cpu.shares', value: '256' },
      { controller: 'cpu', file: 'cpu.cfs_period_us', value: '100000' },
      { controller: 'cpu', file: 'cpu.cfs_quota_us', value: '25000' },
    ]);
    expect(cgroupV1Writes({})).toEqual([]);
  });
  it('checks cgroup paths', () => {
    expect(checkCgroupPath('/berth/t1')).toBe('/berth/t1');
    for (const p of ['berth', '/berth/../x', '/berth//x', '/berth/', '/'])
      expect(() => checkCgroupPath(p)).toThrow(RuntimeError);
  });
  it('places the container under the task cgroup', () => {
    const cg = { path: '/berth/t1', resources: {} };
    expect(containerCgroupsPath('c1', '/berth/t1/web', cg)).toBe('/berth/t1/web');
    expect(containerCgroupsPath('c1', '/elsewhere/web', cg)).toBe('/berth/t1/c1');
    expect(containerCgroupsPath('c1', '/berth/t10/web', cg)).toBe('/berth/t1/c1');
    expect(containerCgroupsPath('c1', '', undefined)).toBe('/berth/c1');
    expect(containerCgroupsPath('c1', '/x/y', undefined)).toBe('/x/y');
  });
  it('reads the OOM kill counter of v1 and v2', () => {
    expect(parseOomKillCount('oom_kill_disable 0\nunder_oom 0\noom_kill 2\n')).toBe(2);
    expect(parseOomKillCount('low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n')).toBe(1);
    expect(parseOomKillCount('oom_kill_disable 0\nunder_oom 0\n')).toBeUndefined();
  });
});

describe('conmon', () => {
  it('builds its command line', () => {
    const args = conmonArgs({
      id: 'c1',
      runtimePath: '/usr/sbin/runc',
      runtimeRoot: '/r/state/runc',
      bundle: '/r/containers/c1',
      exitDir: '/r/exits',
      socketDir: '/r/attach',
      logPath: '/r/logs/c1/container.log',
    });
    const value = (flag: string) => args[args.indexOf(flag) + 1];
    expect(value('--cid')).toBe('c1');
    expect(value('--runtime')).toBe('/usr/sbin/runc');
    expect(value('--bundle')).toBe('/r/containers/c1');
    expect(value('--persist-dir')).toBe('/r/containers/c1');
    expect(value('--exit-dir')).toBe('/r/exits');
    expect(value('--log-path')).toBe('k8s-file:/r/logs/c1/container.log');
    expect(value('--container-pidfile')).toBe('/r/containers/c1/pidfile');
    expect(args.filter((a) => a.startsWith('--runtime-arg='))).toEqual([
      '--runtime-arg=--root',
      '--runtime-arg=/r/state/runc',
      '--runtime-arg=--log',
      '--runtime-arg=/r/containers/c1/runtime.log',
      '--runtime-arg=--log-format',
      '--runtime-arg=json',
    ]);
    expect(args).not.toContain('--log-size-max'); // rotation is berth's
    expect(CONMON_REOPEN_LOGS).toBe('2 0 0\n');
  });
  it('parses its sync-pipe messages', () => {
    expect(parseSyncMessage('{"data": 4242}\n')).toEqual({ pid: 4242 });
    expect(parseSyncMessage('{"data": -1, "message": "runc create failed"}\n')).toEqual({
      error: 'runc create failed',
    });
    expect(parseSyncMessage('')).toMatchObject({ error: expect.stringMatching(/without reporting/) });
    expect(parseSyncMessage('nonsense\n')).toMatchObject({ error: expect.stringMatching(/unreadable/) });
  });
  it('finds the last error in a runtime json log', () => {
    const log = [
      '{"level":"info","msg":"starting"}',
      '{"level":"error","msg":"first"}',
      '{"level":"error","msg":"runc create failed: unable to start container process: exec: \\"/x\\": no such file"}',
      '',
    ].join('\n');
    expect(lastRuntimeError(log)).toMatch(/no such file/);
    expect(lastRuntimeError('')).toBeUndefined();
  });
});
