// ECS's berth-managed volumes, as a user meets them: a real berth (its CLI), busybox images pushed
// with buildah, containers under runc in their user namespace, @aws-sdk/client-ecs.
//   - `host: {}` and `dockerVolumeConfiguration` scope task: a directory of the task's own, which
//     its containers (mapped root) can write and which is deleted with the task;
//   - scope shared: one directory per name that outlives its tasks and that every task naming it
//     mounts; autoprovision creates it, and without autoprovision a missing one fails the start;
//   - what an older berth (or another user namespace mapping) left: layer caches and task
//     volumes no task uses are deleted at start.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ECSClient } from '@aws-sdk/client-ecs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keys } from '../../src/config.ts';
import { type RunningBerth, startBerth } from '../support/berth.ts';
import { type ContainerTools, containerTools } from '../support/containers.ts';
import { httpsClient } from '../support/https.ts';
import {
  adminAccessKey,
  berthLogTail,
  ecsClient,
  pushImage,
  removeSuiteBridge,
  runnerPrerequisitesMissing,
  suiteNetwork,
  until as untilWith,
} from '../support/runner-kit.ts';
import { taskIdOf, taskKit } from '../support/task-kit.ts';

const why = runnerPrerequisitesMissing();
if (why) console.warn(`runner volumes e2e SKIPPED: ${why}`);

const { bridge, subnet } = suiteNetwork('vol', 88);
const dataDir = mkdtempSync(join(tmpdir(), 'berth-volumes-'));
const volumes = join(dataDir, 'runner', 'volumes');
/** berth's default: this berth runs with no user namespace setting of its own. */
const HOST_ID_START = keys['runner.userNamespace.hostIdStart'].default;

let berth: RunningBerth;
let tools: ContainerTools;
let ecs: ECSClient;
let api: ReturnType<typeof httpsClient>;

const until = <T>(what: string, probe: () => Promise<T | undefined>) =>
  untilWith(what, probe, { timeoutMs: 120_000, context: () => berthLogTail(berth) });
const { define, runTask, logsUntil, stopped, stopAndWait } = taskKit({
  ecs: () => ecs,
  api: () => api,
  image: 'volumes/probe:1',
  prefix: 'volumes',
  until,
});

const mount = (sourceVolume: string) => ({ mountPoints: [{ sourceVolume, containerPath: '/v' }] });

/** Left by a berth before user namespaces, or one with another mapping: all unused. */
const leftovers = [
  join(dataDir, 'runner', 'layers', 'sha256', 'f'.repeat(64)),
  join(dataDir, 'runner', 'layers', 'userns-100000-65536', 'sha256', 'e'.repeat(64)),
  join(volumes, 'd'.repeat(32), 'data'),
];

describe.skipIf(why)('berth-managed volumes', () => {
  beforeAll(async () => {
    for (const dir of leftovers) {
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'file'), 'old');
    }
    berth = await startBerth({
      dataDir,
      env: { BERTH_RUNNER_BRIDGE_NAME: bridge, BERTH_RUNNER_BRIDGE_SUBNET: subnet },
    });
    tools = containerTools(berth.caPath);
    await tools.login(berth.hostPort, 'admin', berth.admin.password);
    api = httpsClient(berth.url, berth.caPath, berth.adminBasic);
    ecs = ecsClient(berth, await adminAccessKey(api));
    await pushImage(tools, berth.hostPort, 'volumes/probe', '1', ['/bin/busybox', 'true']);
  }, 180_000);

  afterAll(async () => {
    await berth?.stop();
    await tools?.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
    await removeSuiteBridge(bridge);
  }, 120_000);

  it.each([
    ['a bind-less host volume', { name: 'scratch', host: {} }],
    [
      'a task-scoped Docker volume',
      { name: 'scratch', dockerVolumeConfiguration: { scope: 'task' as const } },
    ],
  ])("%s is the task's own, writable by its root, and goes with the task", async (_what, volume) => {
    const td = await define(
      'echo mine > /v/file && ls -n /v && echo written; exec sleep 1000',
      mount('scratch'),
      {
        volumes: [volume],
      },
    );
    const [a, b] = [await runTask(td), await runTask(td)];
    const dirOf = (arn: string) => join(volumes, 'tasks', taskIdOf(arn), 'scratch');
    for (const arn of [a, b]) {
      const lines = await logsUntil(arn, /^written$/);
      // One file each: the other task's volume is another directory.
      expect(lines.filter((l) => l.endsWith(' file'))).toHaveLength(1);
      const st = statSync(join(dirOf(arn), 'file'));
      expect([st.uid, st.gid]).toEqual([HOST_ID_START, HOST_ID_START]);
    }
    for (const arn of [a, b]) {
      await stopAndWait(arn);
      expect(existsSync(join(volumes, 'tasks', taskIdOf(arn)))).toBe(false);
    }
  });

  it('a shared volume outlives its tasks and is the same directory for every task naming it', async () => {
    const shared = {
      name: 'cache',
      dockerVolumeConfiguration: { scope: 'shared' as const, autoprovision: true },
    };
    const writer = await runTask(
      await define('echo from-the-first > /v/note && echo written', mount('cache'), { volumes: [shared] }),
    );
    await logsUntil(writer, /^written$/);
    expect((await stopped(writer)).containers![0]!.exitCode).toBe(0);
    const dir = join(volumes, 'shared', 'cache');
    expect(statSync(join(dir, 'note')).uid).toBe(HOST_ID_START);

    // Another task definition, the same volume name: the same files.
    const reader = await runTask(
      await define('cat /v/note; echo read', mount('cache'), {
        volumes: [{ name: 'cache', dockerVolumeConfiguration: { scope: 'shared' } }],
      }),
    );
    expect(await logsUntil(reader, /^read$/)).toContain('from-the-first');
    await stopped(reader);
    expect(readdirSync(dir)).toEqual(['note']);
  });

  it('deletes the layer caches and task volumes an earlier berth left and no task uses', async () => {
    await until('the leftovers to be deleted', async () =>
      leftovers.every((d) => !existsSync(d)) ? true : undefined,
    );
    expect(readdirSync(join(dataDir, 'runner', 'layers'))).toEqual([`userns-${HOST_ID_START}-65536`]);
  });

  it('a shared volume that does not exist, without autoprovision, fails the start and says why', async () => {
    const arn = await runTask(
      await define('echo ran', mount('absent'), {
        volumes: [{ name: 'absent', dockerVolumeConfiguration: { scope: 'shared', autoprovision: false } }],
      }),
    );
    const t = await stopped(arn);
    expect(t.stopCode).toBe('TaskFailedToStart');
    expect(t.stoppedReason).toMatch(
      /^ResourceInitializationError: the shared volume 'absent' does not exist, .*autoprovision is not true/,
    );
    expect(existsSync(join(volumes, 'shared', 'absent'))).toBe(false);
  });
});
