// The Executor against the real runtime (runc here), conmon, overlayfs and cgroup v1, with a
// rootfs made of Debian's static busybox. Needs root; skipped (with the reason printed) only when
// no runtime can run a container on this machine.
import { spawn } from 'node:child_process';
import {
  copyFile,
  lchown,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.ts';
import type { LogEntry } from '../../src/runner/container-logs.ts';
import { type ContainerLaunch, createExecutor, detectInit, type Executor } from '../../src/runner/runtime.ts';
import {
  buildRuntimeSpec,
  DEFAULT_CAPABILITIES,
  type Isolation,
  type TaskInfo,
} from '../../src/runner/runtime-spec.ts';
import { defaultSeccompProfile } from '../../src/runner/seccomp.ts';
import type { ContainerDefinition } from '../../src/runner/task-definitions.ts';

const BUSYBOX = '/bin/busybox';
const APPLETS = ['sh', 'echo', 'sleep', 'cat', 'touch', 'ls', 'true', 'false', 'dd', 'head', 'seq', 'id'];

let work = '';
let root = '';
let bottom = '';
let top = '';
let executor: Executor | undefined;
let skipReason: string | undefined;
const init = detectInit();
const started: string[] = [];
/** Container root is this host id, as layers.ts would unpack the layers for it. */
const HOST_ID_START = 2013265920;
const isolation: Isolation = {
  idMapping: { hostIdStart: HOST_ID_START },
  pidsLimit: 64,
  seccomp: defaultSeccompProfile({ arch: 'x86_64', kernel: [6, 1], capabilities: DEFAULT_CAPABILITIES }),
};

/** What layers.ts does while unpacking: every owner shifted into the mapping. */
async function shiftOwners(dir: string): Promise<void> {
  await lchown(dir, HOST_ID_START, HOST_ID_START);
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await shiftOwners(p);
    else await lchown(p, HOST_ID_START, HOST_ID_START);
  }
}

async function makeLayers(): Promise<void> {
  bottom = join(work, 'layers', 'bottom');
  top = join(work, 'layers', 'top');
  for (const d of ['bin', 'etc', 'tmp', 'proc', 'sys', 'dev'])
    await mkdir(join(bottom, d), { recursive: true });
  await copyFile(BUSYBOX, join(bottom, 'bin', 'busybox'));
  for (const a of APPLETS) await symlink('busybox', join(bottom, 'bin', a));
  await writeFile(
    join(bottom, 'etc', 'passwd'),
    'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n',
  );
  await writeFile(join(bottom, 'etc', 'group'), 'root:x:0:\nnogroup:x:65534:\n');
  await writeFile(join(bottom, 'etc', 'msg'), 'bottom\n');
  await mkdir(join(top, 'etc'), { recursive: true });
  await writeFile(join(top, 'etc', 'msg'), 'top\n');
  await shiftOwners(bottom);
  await shiftOwners(top);
}

function def(over: Partial<ContainerDefinition>): ContainerDefinition {
  return {
    name: 'app',
    image: 'local/busybox:1',
    cpu: 0,
    portMappings: [],
    essential: true,
    environment: [],
    mountPoints: [],
    volumesFrom: [],
    ...over,
  };
}

let seq = 0;
function launch(
  command: string[],
  over: Partial<ContainerDefinition> = {},
  extra: Partial<ContainerLaunch> & { task?: Partial<TaskInfo> } = {},
): ContainerLaunch {
  seq++;
  const taskId = `t${process.pid}-${seq}`;
  const task: TaskInfo = { taskId, hostname: 'box', networkMode: 'none', ...extra.task };
  const { spec, taskCgroup } = buildRuntimeSpec({
    imageConfig: { config: { Env: ['PATH=/bin'] } },
    container: def({ command, ...over }),
    task,
    rootfsPath: '/replaced-by-the-executor',
    hostLimits: { nofileHard: 1024 },
    isolation,
    passwd: 'root:x:0:0:root:/root:/bin/sh\n',
    ...(init ? { init: { path: init } } : {}),
  });
  const id = `berth-test-${process.pid}-${seq}`;
  started.push(id);
  const { task: _t, ...rest } = extra;
  return { id, spec, layers: [bottom, top], readonlyRootfs: false, cgroup: taskCgroup, ...rest };
}

async function until<T>(what: string, f: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function ex(): Executor {
  if (!executor) throw new Error('no executor');
  return executor;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'berth-executor-'));
  root = join(work, 'runtime');
  await makeLayers();
  try {
    executor = await createExecutor({ root, log: silentLogger, runtime: 'auto', ...(init ? { init } : {}) });
  } catch (err) {
    skipReason = (err as Error).message;
    console.warn(`executor suite skipped: ${skipReason}`);
  }
});

afterAll(async () => {
  if (executor) {
    for (const c of await executor.list()) await executor.remove(c.id).catch(() => {});
    executor.close();
  }
  const mounts = await readFile('/proc/self/mountinfo', 'utf8');
  expect(mounts.includes(work)).toBe(false);
  expect(mounts.includes(`berth-test-${process.pid}-`)).toBe(false);
  await rm(work, { recursive: true, force: true });
});

describe('executor (real runtime)', () => {
  it('has a runtime, or says why not', (ctx) => {
    if (skipReason) ctx.skip();
    expect(['runc', 'crun']).toContain(ex().runtime);
    expect(init).toBeDefined(); // Debian's tini provides tini-static on the machines this runs on
  });

  it('runs to completion with the exit code, stdout and stderr', async (ctx) => {
    if (skipReason) ctx.skip();
    const l = launch(['sh', '-c', 'cat /etc/msg; echo oops >&2; exit 3']);
    const t0 = Date.now();
    const { pid } = await ex().start(l);
    const startedIn = Date.now() - t0;
    expect(pid).toBeGreaterThan(1);
    const status = await ex().wait(l.id);
    expect(status).toMatchObject({ exitCode: 3, oomKilled: false });
    expect(status.signal).toBeUndefined();
    expect(status.finishedAt).toBeInstanceOf(Date);
    const logs = await ex().readLogs(l.id);
    expect(logs.map((e) => [e.stream, e.line])).toEqual([
      ['stdout', 'top'], // the top layer's /etc/msg hides the bottom one
      ['stderr', 'oops'],
    ]);
    for (const e of logs) expect(e.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/);
    const firstOutput = Date.parse(logs[0]!.time) - t0;
    console.log(`timing: start() resolved after ${startedIn} ms; first output at +${firstOutput} ms`);
    // a second wait answers the same
    expect((await ex().wait(l.id)).exitCode).toBe(3);
    const listed = (await ex().list()).find((c) => c.id === l.id);
    expect(listed).toMatchObject({ status: 'stopped', exit: { exitCode: 3 } });
  });

  it('measures start-to-first-output of a busybox echo (warm)', async (ctx) => {
    if (skipReason) ctx.skip();
    const samples: number[] = [];
    for (let i = 0; i < 5; i++) {
      const l = launch(['echo', 'hi']);
      const t0 = Date.now();
      await ex().start(l);
      await ex().wait(l.id);
      const logs = await ex().readLogs(l.id);
      expect(logs.map((e) => e.line)).toEqual(['hi']);
      samples.push(Date.parse(logs[0]!.time) - t0);
      await ex().remove(l.id);
    }
    console.log(`timing: busybox echo start-to-first-output ms: ${samples.join(', ')}`);
  });

  it('stops with SIGTERM through the init', async (ctx) => {
    if (skipReason) ctx.skip();
    const l = launch(['sleep', '1000']);
    await ex().start(l);
    expect((await ex().list()).find((c) => c.id === l.id)?.status).toBe('running');
    const status = await ex().stop(l.id, 'SIGTERM', 30);
    // sleep died of the TERM tini forwarded (143), not of the SIGKILL after the timeout (137)
    expect(status).toMatchObject({ exitCode: 143, signal: 'SIGTERM', oomKilled: false });
  });

  it('kills a container that ignores the stop signal once the timeout passes', async (ctx) => {
    if (skipReason) ctx.skip();
    const l = launch(['sh', '-c', 'trap "" TERM; echo ready; while :; do sleep 1; done']);
    await ex().start(l);
    await until('ready', async () => ((await ex().readLogs(l.id)).length > 0 ? true : undefined));
    const status = await ex().stop(l.id, 'TERM', 1);
    expect(status).toMatchObject({ exitCode: 137, signal: 'SIGKILL', oomKilled: false });
  });

  it('reports an OOM kill by the container memory limit', async (ctx) => {
    if (skipReason) ctx.skip();
    const l = launch(['sh', '-c', 'x=0123456789abcdef; while :; do x=$x$x; done'], { memory: 16 });
    await ex().start(l);
    const status = await ex().wait(l.id);
    expect(status).toMatchObject({ exitCode: 137, oomKilled: true, signal: 'SIGKILL' });
  });

  it('applies the task cgroup: its memory limit OOM-kills, and is removed with the task', async (ctx) => {
    if (skipReason) ctx.skip();
    const l = launch(
      ['sh', '-c', 'echo up; sleep 1; x=0123456789abcdef; while :; do x=$x$x; done'],
      {},
      {
        task: { cpu: '256', memory: '24' },
      },
    );
    expect(l.cgroup?.path).toMatch(/^\/berth\/t/);
    await ex().start(l);
    const dir = join('/sys/fs/cgroup/memory', l.cgroup!.path);
    expect((await readFile(join(dir, 'memory.limit_in_bytes'), 'utf8')).trim()).toBe(
      String(24 * 1024 * 1024),
    );
    const cpu = join('/sys/fs/cgroup/cpu', l.cgroup!.path);
    expect((await readFile(join(cpu, 'cpu.cfs_quota_us'), 'utf8')).trim()).toBe('25000');
    const status = await ex().wait(l.id);
    expect(status).toMatchObject({ exitCode: 137, oomKilled: true });
    await ex().remove(l.id);
    await expect(stat(dir)).rejects.toThrow(/ENOENT/);
    // logs survive remove
    expect((await ex().readLogs(l.id)).map((e) => e.line)).toEqual(['up']);
  });

  it('runs container root as the mapped host id, under seccomp, in a pids-limited task cgroup', async (ctx) => {
    if (skipReason) ctx.skip();
    const l = launch([
      'sh',
      '-c',
      'id -u; touch /made-by-root && echo wrote; grep -E "^(Seccomp|NoNewPrivs):" /proc/self/status; sleep 1000',
    ]);
    const { pid } = await ex().start(l);
    await until('output', async () => ((await ex().readLogs(l.id)).length >= 4 ? true : undefined));
    const lines = (await ex().readLogs(l.id)).map((e) => e.line);
    expect(lines.slice(0, 2)).toEqual(['0', 'wrote']);
    expect(lines.slice(2).map((x) => x.replace(/\s+/g, ' '))).toEqual(['NoNewPrivs: 1', 'Seccomp: 2']);
    // The host sees the container's processes run as the mapped host id.
    expect((await readFile(`/proc/${pid}/uid_map`, 'utf8')).trim().split(/\s+/)).toEqual([
      '0',
      String(HOST_ID_START),
      '65536',
    ]);
    expect((await stat(`/proc/${pid}`)).uid).toBe(HOST_ID_START);
    expect((await readFile(join('/sys/fs/cgroup/pids', l.cgroup!.path, 'pids.max'), 'utf8')).trim()).toBe(
      '64',
    );
    await ex().stop(l.id, 'SIGTERM', 10);
  });

  it('execs health-check commands in the container environment, with a timeout', async (ctx) => {
    if (skipReason) ctx.skip();
    const l = launch(['sleep', '1000'], { environment: [{ name: 'GREETING', value: 'hello' }] });
    await ex().start(l);
    const ok = await ex().exec(l.id, ['sh', '-c', 'echo $GREETING; echo err >&2; exit 4'], 10_000);
    expect(ok.exitCode).toBe(4);
    expect(ok.timedOut).toBe(false);
    expect(ok.output).toContain('hello\n');
    expect(ok.output).toContain('err\n');
    const slow = await ex().exec(l.id, ['sleep', '30'], 300);
    expect(slow).toMatchObject({ exitCode: null, timedOut: true });
    // the timed-out process was killed inside the container, not left behind
    const ps = await ex().exec(l.id, ['sh', '-c', 'cat /proc/[0-9]*/cmdline | tr "\\0" " "'], 10_000);
    expect(ps.output).not.toContain('sleep30');
    const missing = await ex().exec(l.id, ['/no/such/binary'], 10_000);
    expect(missing.exitCode).not.toBe(0);
    await ex().stop(l.id, 'SIGTERM', 10);
  });

  it('keeps a read-only root read-only', async (ctx) => {
    if (skipReason) ctx.skip();
    const l = launch(
      ['sh', '-c', 'touch /newfile && echo wrote; cat /etc/msg'],
      { readonlyRootFilesystem: true },
      {
        readonlyRootfs: true,
      },
    );
    await ex().start(l);
    const status = await ex().wait(l.id);
    expect(status.exitCode).toBe(0);
    const lines = (await ex().readLogs(l.id)).map((e) => e.line);
    expect(lines).not.toContain('wrote');
    expect(lines).toContain('top');
    expect(lines.some((x) => /read-only/i.test(x))).toBe(true);
  });

  it('fails start with the runtime error and leaves nothing mounted', async (ctx) => {
    if (skipReason) ctx.skip();
    // Without an init the runtime itself looks the binary up, at create.
    const l = launch(['/no/such/binary'], { linuxParameters: { initProcessEnabled: false } });
    await expect(ex().start(l)).rejects.toThrow(/no such file|not found|exec/i);
    expect((await ex().list()).some((c) => c.id === l.id)).toBe(false);
    expect(await readFile('/proc/self/mountinfo', 'utf8')).not.toContain(l.id);
    // the id can be used again
    const again = { ...launch(['true']), id: l.id };
    await ex().start(again);
    expect((await ex().wait(l.id)).exitCode).toBe(0);
    await expect(ex().start(again)).rejects.toThrow(/already exists/);
  });

  it('rotates logs keeping one old file, and followLogs sees every line across rotations', async (ctx) => {
    if (skipReason) ctx.skip();
    const n = 80;
    const pad = 'x'.repeat(100);
    const l = launch(
      ['sh', '-c', `i=1; while [ $i -le ${n} ]; do echo "line-$i-${pad}"; i=$((i+1)); sleep 0.05; done`],
      {},
      { logMaxBytes: 2048 },
    );
    await ex().start(l);
    const seen: LogEntry[] = [];
    const unsubscribe = ex().followLogs(l.id, (e) => seen.push(e));
    expect((await ex().wait(l.id)).exitCode).toBe(0);
    await until('the follower to see the last line', async () =>
      seen.some((e) => e.line.startsWith(`line-${n}-`)) ? true : undefined,
    );
    unsubscribe();
    const logDir = join(root, 'logs', l.id);
    expect((await stat(join(logDir, 'container.log.1'))).size).toBeGreaterThan(0);
    expect((await stat(join(logDir, 'container.log'))).size).toBeLessThan(2048 * 4);
    // The follower started after start() resolved, so it may have missed the first lines; what it
    // saw is a gap-free run up to the last line.
    const followed = seen.map((e) => Number(/^line-(\d+)-/.exec(e.line)?.[1]));
    expect(followed.at(-1)).toBe(n);
    for (let i = 1; i < followed.length; i++) expect(followed[i]).toBe(followed[i - 1]! + 1);
    expect(followed.length).toBeGreaterThan(n / 2);
    // readLogs has the rotated file and the current one: a suffix of the output, in order.
    const kept = (await ex().readLogs(l.id)).map((e) => Number(/^line-(\d+)-/.exec(e.line)?.[1]));
    expect(kept.at(-1)).toBe(n);
    expect(kept.length).toBeLessThan(n);
    for (let i = 1; i < kept.length; i++) expect(kept[i]).toBe(kept[i - 1]! + 1);
    expect(await ex().readLogs(l.id, { tail: 3 })).toHaveLength(3);
    const all = await ex().readLogs(l.id);
    const since = await ex().readLogs(l.id, { since: all.at(-2)!.time });
    expect(since.length).toBeGreaterThanOrEqual(2);
    expect(since.at(-1)?.line).toBe(all.at(-1)?.line);
  });

  it('follows a running container and stops at the end of its log', async (ctx) => {
    if (skipReason) ctx.skip();
    const l = launch([
      'sh',
      '-c',
      'sleep 0.5; for i in 1 2 3; do echo out-$i; echo err-$i >&2; sleep 0.1; done',
    ]);
    await ex().start(l);
    const seen: LogEntry[] = [];
    const unsubscribe = ex().followLogs(l.id, (e) => seen.push(e));
    await ex().wait(l.id);
    await until('all lines', async () => (seen.length >= 6 ? true : undefined));
    unsubscribe();
    expect(seen.filter((e) => e.stream === 'stdout').map((e) => e.line)).toEqual(['out-1', 'out-2', 'out-3']);
    expect(seen.filter((e) => e.stream === 'stderr').map((e) => e.line)).toEqual(['err-1', 'err-2', 'err-3']);
  });

  it('keeps containers running when berth is SIGKILLed; a new executor adopts them', async (ctx) => {
    if (skipReason) ctx.skip();
    const l = launch(['sh', '-c', 'echo adopted; sleep 3; exit 7']);
    const launchFile = join(work, `${l.id}.json`);
    await writeFile(launchFile, JSON.stringify(l));
    const script = join(work, 'berth-child.mts');
    const src = join(import.meta.dirname, '..', '..', 'src');
    await writeFile(
      script,
      [
        `import { readFileSync } from 'node:fs';`,
        `import { silentLogger } from ${JSON.stringify(join(src, 'log.ts'))};`,
        `import { createExecutor } from ${JSON.stringify(join(src, 'runner', 'runtime.ts'))};`,
        `const l = JSON.parse(readFileSync(process.argv[2], 'utf8'));`,
        `const ex = await createExecutor({ root: process.argv[3], log: silentLogger, runtime: ${JSON.stringify(ex().runtime)} });`,
        `const { pid } = await ex.start(l);`,
        `process.stdout.write(JSON.stringify({ pid }) + '\\n');`,
        `setInterval(() => {}, 1000);`,
      ].join('\n'),
    );
    const child = spawn(process.execPath, [script, launchFile, root], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const pid = await new Promise<number>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve((JSON.parse(out) as { pid: number }).pid);
      });
      child.on('exit', (code) => reject(new Error(`berth child exited early (${code})`)));
    });
    child.kill('SIGKILL');
    await new Promise((r) => child.once('close', r));

    const fresh = await createExecutor({ root, log: silentLogger, runtime: ex().runtime });
    try {
      const listed = (await fresh.list()).find((c) => c.id === l.id);
      expect(listed).toMatchObject({ id: l.id, status: 'running', pid });
      const status = await fresh.wait(l.id);
      expect(status).toMatchObject({ exitCode: 7, oomKilled: false });
      expect((await fresh.readLogs(l.id)).map((e) => e.line)).toEqual(['adopted']);
      await fresh.remove(l.id);
      expect((await fresh.list()).some((c) => c.id === l.id)).toBe(false);
    } finally {
      fresh.close();
    }
  });

  it('removes a running container: killed, unmounted, bundle gone, logs kept', async (ctx) => {
    if (skipReason) ctx.skip();
    const l = launch(['sh', '-c', 'echo bye; sleep 1000']);
    await ex().start(l);
    await until('output', async () => ((await ex().readLogs(l.id)).length > 0 ? true : undefined));
    await ex().remove(l.id);
    expect(await readFile('/proc/self/mountinfo', 'utf8')).not.toContain(l.id);
    await expect(stat(join(root, 'containers', l.id))).rejects.toThrow(/ENOENT/);
    expect((await ex().readLogs(l.id)).map((e) => e.line)).toEqual(['bye']);
    await expect(ex().wait(l.id)).rejects.toThrow(/does not exist/);
    // Once the task is forgotten its logs go too.
    await ex().removeLogs(l.id);
    await expect(stat(join(root, 'logs', l.id))).rejects.toThrow(/ENOENT/);
  });
});
