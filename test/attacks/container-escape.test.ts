// Issue 13, attack 6 ("no hardening inside containers") and the part of attack 1 that says
// containers run as host root: what a hostile task author tries from inside a container, against
// a real berth started through its CLI, real tasks under runc, images built with buildah from
// busybox-static (plus a small static ICMP probe compiled here) and driven by @aws-sdk/client-ecs.
//
//   1. container root is host root: `id -u` is 0 inside, and the host sees the container's
//      process (its /proc/PID/uid_map) and the files it writes run as a non-zero host id; root in
//      a host-network container cannot take a privileged host port;
//   6. no hardening: unshare -Urm then mount works, raw sockets open, Seccomp 0, /proc/interrupts
//      readable, a fork bomb runs free, `memory: 99999999` is accepted (RunTask and services), and
//      an nproc ulimit above the host's hard limit fails the task instead of being clamped.
//
// Every case fails against c79f748 (before user namespaces, seccomp, the pids limit, placement
// and the nproc clamp) and passes after.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateServiceCommand,
  DeleteServiceCommand,
  DescribeServicesCommand,
  type ECSClient,
  RunTaskCommand,
} from '@aws-sdk/client-ecs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

const why = runnerPrerequisitesMissing() ?? (hasCompiler() ? undefined : 'no gcc to build the ICMP probe');
if (why) console.warn(`container-escape attacks SKIPPED: ${why}`);

const { bridge, subnet } = suiteNetwork('iso', 90);
const work = mkdtempSync(join(tmpdir(), 'berth-escape-'));
const dataDir = join(work, 'data');
/** A range of its own (not the default), so this berth's tasks are told apart by host uid. */
const HOST_ID_START = 2013265920 + 7 * 65536;
const PIDS_LIMIT = 100;
const cluster = 'default';
const image = 'escape/probe:1';

let berth: RunningBerth;
let tools: ContainerTools;
let ecs: ECSClient;
let api: ReturnType<typeof httpsClient>;

const until = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 120_000) =>
  untilWith(what, probe, { timeoutMs, context: () => berthLogTail(berth) });

function hasCompiler(): boolean {
  try {
    execFileSync('gcc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** One ICMP echo to 127.0.0.1 over an ICMP datagram socket (ping without CAP_NET_RAW), after
 * trying to open a raw socket. */
const ICMP_PROBE = `
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
int main(void) {
  int raw = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
  printf("raw: %s\\n", raw >= 0 ? "opened" : strerror(errno));
  int s = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
  if (s < 0) { printf("icmp-dgram: %s\\n", strerror(errno)); return 1; }
  struct timeval tv = {3, 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct sockaddr_in to = {.sin_family = AF_INET};
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  struct icmphdr req = {.type = ICMP_ECHO};
  if (sendto(s, &req, sizeof req, 0, (struct sockaddr *)&to, sizeof to) < 0) { printf("icmp-dgram: %s\\n", strerror(errno)); return 1; }
  struct icmphdr rep;
  if (recv(s, &rep, sizeof rep, 0) < 0) { printf("icmp-dgram: %s\\n", strerror(errno)); return 1; }
  printf("icmp-dgram: %s\\n", rep.type == ICMP_ECHOREPLY ? "echo reply" : "other reply");
  return 0;
}
`;

function buildIcmpProbe(): Buffer {
  const src = join(work, 'icmp.c');
  const out = join(work, 'icmp');
  execFileSync('sh', ['-c', 'cat > "$1"', 'sh', src], { input: ICMP_PROBE });
  execFileSync('gcc', ['-static', '-Os', '-o', out, src]);
  return readFileSync(out);
}

const { define, runTask, logLines, logsUntil, stopped, stopAndWait } = taskKit({
  ecs: () => ecs,
  api: () => api,
  image,
  prefix: 'escape',
  until,
});

/** The host pid of a task container's first process, from its monitor's pid file. */
function containerPid(arn: string): number {
  const id = `${taskIdOf(arn)}-main`;
  return Number(readFileSync(join(dataDir, 'runner', 'runtime', 'containers', id, 'pidfile'), 'utf8').trim());
}

/** Processes on the host whose real uid is `uid`. */
function processesOf(uid: number): number {
  let n = 0;
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const m = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${name}/status`, 'utf8'));
      if (m && Number(m[1]) === uid) n++;
    } catch {} // gone meanwhile
  }
  return n;
}

function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.setTimeout(2000);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
    s.once('timeout', () => {
      s.destroy();
      resolve(false);
    });
  });
}

describe.skipIf(why)('a task cannot escape its container (issue 13, attacks 1 and 6)', () => {
  beforeAll(async () => {
    const probe = buildIcmpProbe();
    berth = await startBerth({
      dataDir,
      env: {
        BERTH_RUNNER_BRIDGE_NAME: bridge,
        BERTH_RUNNER_BRIDGE_SUBNET: subnet,
        BERTH_RUNNER_USER_NAMESPACE_HOST_ID_START: String(HOST_ID_START),
        BERTH_RUNNER_PIDS_LIMIT: String(PIDS_LIMIT),
        // Host networking is for the operator to allow; this suite's berth allows it.
        BERTH_RUNNER_ALLOW_HOST_NETWORK: 'true',
        BERTH_LOG_LEVEL: 'info',
      },
    });
    tools = containerTools(berth.caPath);
    await tools.login(berth.hostPort, 'admin', berth.admin.password);
    api = httpsClient(berth.url, berth.caPath, berth.adminBasic);
    ecs = ecsClient(berth, await adminAccessKey(api));
    await pushImage(tools, berth.hostPort, 'escape/probe', '1', ['/bin/busybox', 'true'], {
      '/bin/icmp': probe,
    });
  }, 180_000);

  afterAll(async () => {
    await berth?.stop();
    await tools?.cleanup();
    rmSync(work, { recursive: true, force: true });
    // The bridge and berth's guard chains for it (containers outlive berth, so berth leaves them).
    await removeSuiteBridge(bridge);
  }, 120_000);

  it('container root is an unprivileged host user, and so is what it writes', async () => {
    const arn = await runTask(
      await define(
        'id -u; echo mine > /scratch/file; echo written; exec sleep 1000',
        {
          mountPoints: [{ sourceVolume: 'scratch', containerPath: '/scratch' }],
        },
        { volumes: [{ name: 'scratch' }] },
      ),
    );
    try {
      const lines = await logsUntil(arn, /^written$/);
      expect(lines[0]).toBe('0');
      const pid = containerPid(arn);
      // The host's view of the container's user namespace: container 0 is HOST_ID_START.
      const map = readFileSync(`/proc/${pid}/uid_map`, 'utf8').trim().split(/\s+/).map(Number);
      expect(map).toEqual([0, HOST_ID_START, 65536]);
      expect(statSync(`/proc/${pid}`).uid).toBe(HOST_ID_START);
      // The volume file, seen from the host: owned by the mapped uid, not by root.
      const file = statSync(`/proc/${pid}/root/scratch/file`);
      expect([file.uid, file.gid]).toEqual([HOST_ID_START, HOST_ID_START]);
    } finally {
      await stopAndWait(arn);
    }
  }, 180_000);

  it('root in a host-network container cannot take a privileged port of the host', async () => {
    let port = 0;
    for (let p = 700 + (process.pid % 200); p < 1000 && port === 0; p++)
      if (!(await portAnswers(p))) port = p;
    const arn = await runTask(
      await define(
        `echo listening; nc -l -p ${port}; echo "nc exit $?"; exec sleep 1000`,
        { user: '0' },
        {
          networkMode: 'host',
        },
      ),
    );
    try {
      const lines = await logsUntil(arn, /^nc exit|^listening$/);
      // Before: nc listens, and the host's port answers. Now: no CAP_NET_BIND_SERVICE on the host.
      const answered = await until('nc to bind or fail', async () => {
        if (await portAnswers(port)) return 'answered';
        const now = await logLines(arn);
        return now.some((l) => l.startsWith('nc exit')) ? now.join('\n') : undefined;
      });
      expect(answered).not.toBe('answered');
      expect(answered).toMatch(/bind.*Permission denied/);
      expect(lines[0]).toBe('listening');
    } finally {
      await stopAndWait(arn);
    }
  }, 180_000);

  describe('inside one container', () => {
    let lines: string[] = [];
    beforeAll(async () => {
      const arn = await runTask(
        await define(
          [
            'echo "== unshare"; unshare -Urm sh -c "mount -t tmpfs none /dev && echo MOUNTED"; echo "unshare exit $?"',
            'echo "== status"; grep -E "^(Seccomp|NoNewPrivs):" /proc/self/status',
            'echo "== masked"; for f in /proc/interrupts /proc/kcore /proc/keys /proc/timer_list; do echo "$f $(cat $f 2>/dev/null | wc -c)"; done',
            'echo "== icmp"; /bin/icmp',
            'echo "== done"',
          ].join('; '),
        ),
      );
      lines = await logsUntil(arn, /^== done$/);
      await stopped(arn);
    }, 180_000);

    it('cannot make a user namespace and mount in it (seccomp refuses unshare)', () => {
      expect(lines).not.toContain('MOUNTED');
      expect(lines.join('\n')).toMatch(/unshare: unshare\(0x[0-9a-f]+\): Operation not permitted/);
    });

    it('runs under seccomp filter mode with no_new_privileges', () => {
      expect(lines).toContain('Seccomp:\t2');
      expect(lines).toContain('NoNewPrivs:\t1');
    });

    it('reads masked /proc paths as empty', () => {
      for (const f of ['/proc/interrupts', '/proc/kcore', '/proc/keys', '/proc/timer_list'])
        expect(lines).toContain(`${f} 0`);
    });

    it('cannot open a raw socket, yet ping works over an ICMP datagram socket', () => {
      expect(lines).toContain('raw: Operation not permitted');
      expect(lines).toContain('icmp-dgram: echo reply');
    });
  });

  it('ping works in a bridge task too, whose namespace sysctls berth sets from the host', async () => {
    const arn = await runTask(await define('/bin/icmp; echo done', {}, { networkMode: 'bridge' }));
    const lines = await logsUntil(arn, /^done$/);
    expect(lines).toContain('raw: Operation not permitted');
    expect(lines).toContain('icmp-dgram: echo reply');
  }, 180_000);

  it('a fork bomb stops at the pids limit, the host is unharmed, and the task still stops', async () => {
    const before = processesOf(HOST_ID_START);
    const arn = await runTask(
      await define(
        '( n=0; while [ $n -lt 1000 ]; do sleep 1000 & n=$((n+1)); done; echo "forked all $n" ); ' +
          'read pids < /sys/fs/cgroup/pids/pids.current; echo "bomb over at $pids"; exec sleep 1000',
        // Memory enough for all of them: what stops the bomb must be the pids limit.
        { memory: 1024 },
      ),
    );
    try {
      const lines = await logsUntil(arn, /^bomb over|^forked all/);
      expect(lines.join('\n')).toMatch(/can't fork/);
      expect(lines.some((l) => l.startsWith('forked all'))).toBe(false);
      const cgroup = join('/sys/fs/cgroup/pids/berth', taskIdOf(arn));
      expect(Number(readFileSync(join(cgroup, 'pids.max'), 'utf8'))).toBe(PIDS_LIMIT);
      expect(Number(readFileSync(join(cgroup, 'pids.current'), 'utf8'))).toBeLessThanOrEqual(PIDS_LIMIT);
      // The container's own cgroup (the same limit, under the task's) is where the forks were refused.
      expect(readFileSync(join(cgroup, 'main', 'pids.events'), 'utf8')).toMatch(/^max [1-9]/m);
      expect(processesOf(HOST_ID_START) - before).toBeLessThanOrEqual(PIDS_LIMIT);
    } finally {
      const stopped = await stopAndWait(arn);
      expect(stopped.stopCode).toBe('UserInitiated');
    }
    await until('the bomb to be gone', async () => (processesOf(HOST_ID_START) <= before ? true : undefined));
  }, 180_000);

  it('RunTask refuses more memory or CPU than the host has, with ECS reasons', async () => {
    const instance = `arn:aws:ecs:us-east-1:000000000000:container-instance/${cluster}/local`;
    for (const [td, reason] of [
      [await define('true', { memory: 99999999 }), 'RESOURCE:MEMORY'],
      [await define('true', {}, { memory: '99999999' }), 'RESOURCE:MEMORY'],
      [await define('true', { cpu: 99999999 }), 'RESOURCE:CPU'],
    ] as const) {
      const out = await ecs.send(new RunTaskCommand({ cluster, taskDefinition: td }));
      expect(out.tasks).toEqual([]);
      expect(out.failures).toEqual([expect.objectContaining({ arn: instance, reason })]);
    }
  });

  it('a service that asks for more memory than the host has says it cannot place its task', async () => {
    const td = await define('sleep 1000', { memory: 99999999 });
    await ecs.send(
      new CreateServiceCommand({ cluster, serviceName: 'huge', taskDefinition: td, desiredCount: 1 }),
    );
    try {
      const events = await until('the placement event', async () => {
        const s = (await ecs.send(new DescribeServicesCommand({ cluster, services: ['huge'] })))
          .services![0]!;
        const messages = (s.events ?? []).map((e) => e.message ?? '');
        return messages.some((m) => m.includes('unable to place a task')) ? messages : undefined;
      });
      expect(events).toContain(
        '(service huge) was unable to place a task because no container instance met all of its requirements. ' +
          'The closest matching (container-instance local) has insufficient memory available.',
      );
      const s = (await ecs.send(new DescribeServicesCommand({ cluster, services: ['huge'] }))).services![0]!;
      expect(s.runningCount).toBe(0);
    } finally {
      await ecs.send(new DeleteServiceCommand({ cluster, service: 'huge', force: true }));
    }
  }, 180_000);

  it('an nproc ulimit above the host hard limit is clamped, and the task runs', async () => {
    const hard = Number(/^Max processes\s+\S+\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))![1]);
    const arn = await runTask(
      await define('echo "nproc $(ulimit -u)"', {
        ulimits: [{ name: 'nproc', softLimit: hard + 1000, hardLimit: hard + 1000 }],
      }),
    );
    const lines = await logsUntil(arn, /^nproc /);
    expect(lines).toContain(`nproc ${hard}`);
    const t = await stopped(arn);
    expect(t.stopCode).toBe('EssentialContainerExited');
    expect(t.containers![0]!.exitCode).toBe(0);
  }, 180_000);
});
