import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EcsError } from './ecs-protocol.ts';
import { createHost } from './host.ts';
import {
  createHostAccess,
  definitionProblem,
  type HostAccessPolicy,
  HostPathError,
  hostPathProblem,
  pinHostPath,
  within,
} from './host-access.ts';
import type { Volume } from './task-definitions.ts';

const root = mkdtempSync(join(tmpdir(), 'berth-host-access-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const allowed = join(root, 'allowed');
const data = join(root, 'data');
mkdirSync(join(allowed, 'sub'), { recursive: true });
mkdirSync(join(data, 'keys'), { recursive: true });
writeFileSync(join(allowed, 'file.txt'), 'hello');
writeFileSync(join(data, 'keys', 'kek.json'), '{}');

const policy: HostAccessPolicy = {
  hostPathAllowList: [allowed],
  allowHostNetwork: false,
  guarded: [
    { path: data, what: "berth's data directory (data)" },
    { path: join(data, 'keys', 'kek.json'), what: "berth's key-encryption keys (encryption.keyFile)" },
  ],
};

const hostVolume = (sourcePath: string): Volume => ({ name: 'v', host: { sourcePath } });
const def = (volumes: Volume[], networkMode: 'bridge' | 'host' | 'none' = 'bridge') => ({
  networkMode,
  volumes,
});

describe('within', () => {
  it('is a path prefix by whole components', () => {
    expect(within('/srv/a', '/srv/a')).toBe(true);
    expect(within('/srv/a/b', '/srv/a')).toBe(true);
    expect(within('/srv/ab', '/srv/a')).toBe(false);
    expect(within('/anything', '/')).toBe(true);
  });
});

describe('hostPathProblem', () => {
  it('refuses every host path when the allow list is empty, naming the config key', () => {
    const p = hostPathProblem('/srv/x', { ...policy, hostPathAllowList: [] });
    expect(p).toContain('runner.hostPathAllowList is empty');
  });

  it.each([
    ['/', "is the host's root directory"],
    ['/proc', "is the host's /proc"],
    ['/proc/1/root', "lies inside the host's /proc"],
    ['/sys/fs/cgroup', "lies inside the host's /sys"],
    ['/dev', "is the host's /dev"],
  ])('never allows %s, whatever the allow list says', (path, why) => {
    const wide = { ...policy, hostPathAllowList: ['/', '/proc', '/sys', '/dev'] };
    expect(hostPathProblem(path, wide)).toContain(why);
  });

  it("never allows berth's own files, nor a directory that contains them", () => {
    const wide = { ...policy, hostPathAllowList: [root] };
    expect(hostPathProblem(data, wide)).toContain("is berth's data directory (data)");
    expect(hostPathProblem(join(data, 'keys'), wide)).toContain("lies inside berth's data directory");
    expect(hostPathProblem(root, wide)).toContain("contains berth's data directory (data)");
    expect(hostPathProblem(root, wide)).toContain('whatever runner.hostPathAllowList says');
  });

  it('allows paths under an allowed directory, and only those', () => {
    expect(hostPathProblem(allowed, policy)).toBeUndefined();
    expect(hostPathProblem(join(allowed, 'sub'), policy)).toBeUndefined();
    expect(hostPathProblem(`${allowed}x`, policy)).toContain(
      `lies under none of runner.hostPathAllowList (${allowed})`,
    );
  });

  it('does not let an allowed entry that now resolves to / widen the list', () => {
    const link = join(root, 'link-to-root');
    symlinkSync('/', link);
    const viaLink = { ...policy, hostPathAllowList: [link] };
    const real = (p: string) => (p === link ? '/' : p);
    expect(hostPathProblem('/etc', viaLink, real)).toContain('lies under none of');
  });
});

describe('definitionProblem', () => {
  it('refuses networkMode host unless runner.allowHostNetwork is set', () => {
    expect(definitionProblem(def([], 'host'), policy)).toMatch(
      /^networkMode 'host' is not allowed on this berth: .*runner\.allowHostNetwork/,
    );
    expect(definitionProblem(def([], 'host'), { ...policy, allowHostNetwork: true })).toBeUndefined();
    expect(definitionProblem(def([], 'bridge'), policy)).toBeUndefined();
  });

  it('names the volume by its index, and the path it resolves to', () => {
    const problem = definitionProblem(
      def([{ name: 'scratch' }, hostVolume(`${allowed}/../data/keys`)]),
      policy,
    );
    expect(problem).toMatch(
      /^volumes\[1\]\.host\.sourcePath '.*\/allowed\/\.\.\/data\/keys' \(resolving to '.*\/data\/keys'\) is not allowed: lies inside berth's data directory/,
    );
  });

  it('resolves symlinks on disk at registration', () => {
    const planted = join(allowed, 'escape-root');
    symlinkSync('/', planted);
    expect(definitionProblem(def([hostVolume(planted)]), policy)).toBeUndefined();
    expect(definitionProblem(def([hostVolume(planted)]), policy, true)).toContain(
      "(resolving to '/') is not allowed: is the host's root directory",
    );
  });

  it('refuses a path with a NUL character', () => {
    expect(definitionProblem(def([hostVolume(`${allowed}/a\0b`)]), policy)).toContain('NUL');
  });

  it('is a ClientException through createHostAccess', () => {
    const access = createHostAccess(policy);
    try {
      access.admit(def([hostVolume('/')]));
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(EcsError);
      expect((e as EcsError).type).toBe('ClientException');
      expect((e as EcsError).message).toContain("volumes[0].host.sourcePath '/' is not allowed");
    }
  });
});

describe('pinHostPath', () => {
  const field = 'volumes[0].host.sourcePath';

  it('answers a mount source naming the open directory, close-on-exec, closed on close()', () => {
    const pinned = pinHostPath(join(allowed, 'sub'), field, policy);
    const fd = Number(/\/fd\/(\d+)$/.exec(pinned.source)![1]);
    expect(pinned.source).toBe(`/proc/${process.pid}/fd/${fd}`);
    expect(readlinkSync(pinned.source)).toBe(join(allowed, 'sub'));
    // O_CLOEXEC (02000000) in the descriptor's flags: no runtime or container inherits it.
    const flags = Number.parseInt(
      /flags:\s+(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!,
      8,
    );
    expect(flags & 0o2000000).toBe(0o2000000);
    pinned.close();
    pinned.close();
    expect(() => readlinkSync(`/proc/self/fd/${fd}`)).toThrow();
  });

  it('pins files as well as directories', () => {
    const pinned = pinHostPath(join(allowed, 'file.txt'), field, policy);
    expect(readFileSync(pinned.source, 'utf8')).toBe('hello');
    pinned.close();
  });

  it('refuses a symlink planted in an allowed directory that points outside it', () => {
    const toData = join(allowed, 'to-data');
    symlinkSync(data, toData);
    expect(() => pinHostPath(toData, field, policy)).toThrow(HostPathError);
    expect(() => pinHostPath(toData, field, policy)).toThrow(
      `${field} '${toData}' (resolving to '${data}') is not allowed: is berth's data directory (data)`,
    );
    const toEtc = join(allowed, 'to-etc');
    symlinkSync('/etc', toEtc);
    expect(() => pinHostPath(toEtc, field, policy)).toThrow(
      /resolving to '\/etc'\) is not allowed: it lies under none of/,
    );
  });

  it('follows symlinks that stay inside the allowed directory', () => {
    const inside = join(allowed, 'to-sub');
    symlinkSync('sub', inside);
    const pinned = pinHostPath(inside, field, policy);
    expect(readlinkSync(pinned.source)).toBe(join(allowed, 'sub'));
    pinned.close();
  });

  it('refuses a path that does not exist, naming the field', () => {
    expect(() => pinHostPath(join(allowed, 'missing'), field, policy)).toThrow(
      `${field} '${join(allowed, 'missing')}' cannot be mounted: it does not exist on this host.`,
    );
  });

  it('keeps naming what it checked when the path is swapped for a symlink afterwards', () => {
    const dir = join(allowed, 'swapped');
    mkdirSync(dir);
    writeFileSync(join(dir, 'marker'), 'checked');
    const pinned = pinHostPath(dir, field, policy);
    // The race a writer of the allowed directory would run between the check and the mount.
    renameSync(dir, join(allowed, 'moved-away'));
    symlinkSync('/', dir);
    expect(readlinkSync(pinned.source)).toBe(join(allowed, 'moved-away'));
    expect(readFileSync(join(pinned.source, 'marker'), 'utf8')).toBe('checked');
    pinned.close();
  });

  // mknod of a block device needs root; CI runs as root, so this runs there.
  it.skipIf(process.getuid?.() !== 0)(
    'refuses a device node planted in an allowed directory (root only)',
    () => {
      const node = join(allowed, 'disk');
      execFileSync('mknod', [node, 'b', '7', '0']);
      expect(() => pinHostPath(node, field, policy)).toThrow(
        `${field} '${node}' is not allowed: it is a device node.`,
      );
    },
  );
});

// Bind mounts need root; CI runs as root, so these run there.
describe.skipIf(process.getuid?.() !== 0)('staging host paths for the runtime (root: bind mounts)', () => {
  const stageRoot = join(root, 'runner', 'host-mounts');
  const access = createHostAccess(policy, { root: stageRoot, host: createHost() });
  const at = { taskId: 'abc123', container: 'main', n: 0 };
  const mounted = () => readFileSync('/proc/self/mountinfo', 'utf8').includes(stageRoot);

  it('mounts what was checked on a point of its own, and releases it', async () => {
    const dir = join(allowed, 'staged');
    mkdirSync(dir);
    writeFileSync(join(dir, 'marker'), 'checked');
    const staged = await access.stage(dir, 'volumes[0].host.sourcePath', at);
    expect(staged.source).toBe(join(stageRoot, 'abc123', 'main', '0'));
    // Swapped after the check: the staging point still holds what was checked.
    renameSync(dir, join(allowed, 'staged-away'));
    symlinkSync('/', dir);
    expect(readFileSync(join(staged.source, 'marker'), 'utf8')).toBe('checked');
    await staged.release();
    expect(mounted()).toBe(false);
    expect(existsSync(join(stageRoot, 'abc123'))).toBe(false);
    expect(readFileSync(join(allowed, 'staged-away', 'marker'), 'utf8')).toBe('checked');
  });

  it('stages a file on a file', async () => {
    const staged = await access.stage(join(allowed, 'file.txt'), 'volumes[0].host.sourcePath', at);
    expect(readFileSync(staged.source, 'utf8')).toBe('hello');
    await staged.release();
    expect(mounted()).toBe(false);
  });

  it('refuses before mounting anything, naming the field', async () => {
    await expect(access.stage('/', 'volumes[2].host.sourcePath', at)).rejects.toThrow(
      "volumes[2].host.sourcePath '/' is not allowed",
    );
    expect(mounted()).toBe(false);
  });

  it("sweeps what a crash left without touching the host directory's files", async () => {
    const dir = join(allowed, 'kept');
    mkdirSync(dir);
    writeFileSync(join(dir, 'precious'), 'still here');
    await access.stage(dir, 'volumes[0].host.sourcePath', { ...at, n: 1 });
    await access.stage(join(allowed, 'file.txt'), 'volumes[1].host.sourcePath', { ...at, n: 2 });
    expect(mounted()).toBe(true);
    await access.sweep();
    expect(mounted()).toBe(false);
    expect(readFileSync(join(dir, 'precious'), 'utf8')).toBe('still here');
    expect(readFileSync(join(allowed, 'file.txt'), 'utf8')).toBe('hello');
    expect(existsSync(join(stageRoot, 'abc123'))).toBe(false);
  });
});
