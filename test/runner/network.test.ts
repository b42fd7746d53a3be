// Task networking against the real host: iproute2 namespaces, Debian's CNI plugins, iptables.
// Each run uses its own bridge, subnet, root and task ids, and removes all of them afterwards,
// even when a test fails. Needs root (as CI runs); the tools missing fail with the fix.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.ts';
import {
  cniChainNames,
  createNetworks,
  guardChains,
  type NetworkMode,
  type NetworkOptions,
  type Networks,
  PortConflictError,
  type PortRequest,
  removeBridge,
  type TaskNetwork,
} from '../../src/runner/network.ts';
import { run, tool } from '../support/tools.ts';

// Bridges, namespaces and iptables need root: as anyone else the suite is skipped, and says so.
// CI runs as root, so there it always runs.
const isRoot = process.getuid?.() === 0;
if (!isRoot)
  console.warn('task network suite SKIPPED: not running as root (ip netns, CNI and iptables need it)');
const pid = process.pid;
const bridgeName = `bt${pid}`;
const subnet = `10.213.${pid % 256}.0/24`;
const id = (name: string) => `${name}-${pid}`;

let root = '';
let opts: NetworkOptions;
const servers: ChildProcess[] = [];
const created = new Set<string>();

function networks(extra: Partial<NetworkOptions> = {}): Networks {
  return createNetworks({ ...opts, ...extra });
}

/** Networks.setup, remembering the id so that afterAll can check nothing of it is left. */
function setup(n: Networks, taskId: string, mode: NetworkMode, ports: PortRequest[], hostname: string) {
  created.add(taskId);
  return n.setup(taskId, mode, ports, hostname);
}

async function natTable(): Promise<string> {
  return (await run(tool('iptables'), ['-w', '-t', 'nat', '-S'])).stdout;
}

async function ipamHolders(): Promise<string[]> {
  const dir = join(root, 'ipam', bridgeName);
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const name of await readdir(dir)) {
    if (/^\d+\.\d+\.\d+\.\d+$/.test(name))
      out.push((await readFile(join(dir, name), 'utf8')).split(/\r?\n/)[0]!);
  }
  return out;
}

/** Asserts nothing of the task is left on the host: namespace, nat rules and chains, address, files. */
async function expectGone(taskId: string) {
  expect(existsSync(`/run/netns/berth-${taskId}`)).toBe(false);
  const nat = await natTable();
  expect(nat).not.toContain(taskId);
  for (const chain of cniChainNames(bridgeName, taskId)) expect(nat).not.toContain(chain);
  expect(await ipamHolders()).not.toContain(taskId);
  expect(existsSync(join(root, 'tasks', taskId))).toBe(false);
}

/** busybox httpd inside the task's namespace, serving `marker` at /. */
async function serveIn(taskId: string, port: number, marker: string): Promise<void> {
  const dir = join(root, `www-${taskId}`);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'index.html'), marker);
  const child = spawn(
    tool('ip'),
    ['netns', 'exec', `berth-${taskId}`, tool('busybox'), 'httpd', '-f', '-p', String(port), '-h', dir],
    { stdio: 'ignore' },
  );
  servers.push(child);
}

/** GET url, retrying while the server starts; answers the body. */
async function fetchText(url: string): Promise<string> {
  let last: unknown;
  for (let i = 0; i < 60; i++) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
      return await res.text();
    } catch (e) {
      last = e;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  throw new Error(`GET ${url} never answered: ${String(last)}`);
}

function listenOn(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen({ port, host: '127.0.0.1' }, () => resolve(s));
  });
}

/** A port nobody listens on right now (the kernel's choice), for host-mode tests. */
async function someFreePort(): Promise<number> {
  const s = await listenOn(0);
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

describe.skipIf(!isRoot)('task networks on this host (root)', () => {
  beforeAll(async () => {
    for (const t of ['ip', 'iptables', 'busybox']) tool(t);
    for (const p of ['bridge', 'host-local', 'portmap']) {
      if (!existsSync(`/usr/lib/cni/${p}`)) {
        throw new Error(`/usr/lib/cni/${p} is missing: apt-get install containernetworking-plugins`);
      }
    }
    root = await mkdtemp(join(tmpdir(), 'berth-network-'));
    opts = { root, log: silentLogger, bridgeName, subnet };
  });

  afterAll(async () => {
    for (const s of servers) s.kill('SIGKILL');
    await Promise.all(
      servers.map((s) =>
        s.exitCode === null && s.signalCode === null ? new Promise((r) => s.once('exit', r)) : null,
      ),
    );
    const problems: string[] = [];
    if (root) {
      try {
        await networks().sweep(new Set());
      } catch (e) {
        problems.push(String(e));
      }
    }
    for (const taskId of created) {
      if (existsSync(`/run/netns/berth-${taskId}`)) {
        problems.push(`namespace of ${taskId} left`);
        await run(tool('ip'), ['netns', 'delete', `berth-${taskId}`]).catch(() => {});
      }
    }
    await removeBridge(bridgeName);
    const { filter, nat } = guardChains(bridgeName);
    const left = `${(await run(tool('iptables'), ['-w', '-S'])).stdout}${await natTable()}`;
    if (left.includes(filter) || left.includes(nat)) problems.push(`berth's chains for ${bridgeName} left`);
    if (existsSync(`/sys/class/net/${bridgeName}`)) problems.push(`bridge ${bridgeName} left`);
    if (root) await rm(root, { recursive: true, force: true });
    if (problems.length > 0) throw new Error(`cleanup: ${problems.join('; ')}`);
  });

  it('connects a bridge task and publishes a dynamic port at 127.0.0.1 and at the task address', async () => {
    const n = networks();
    const web = id('web1');
    const net = await setup(n, web, 'bridge', [{ containerPort: 8080, hostPort: 0, protocol: 'tcp' }], 'web');
    expect(net.mode).toBe('bridge');
    expect(net.netnsPath).toBe(`/run/netns/berth-${web}`);
    expect(existsSync(net.netnsPath!)).toBe(true);
    expect(net.ip).toMatch(new RegExp(`^10\\.213\\.${pid % 256}\\.\\d+$`));
    expect(net.bindings).toHaveLength(1);
    const [b] = net.bindings;
    expect(b).toMatchObject({ bindIP: '0.0.0.0', containerPort: 8080, protocol: 'tcp' });
    expect(b!.hostPort).toBeGreaterThanOrEqual(49153);
    expect(b!.hostPort).toBeLessThanOrEqual(65535);

    expect(await readFile(net.hostsPath!, 'utf8')).toContain(`${net.ip}\tweb`);
    expect(await readFile(net.hostnamePath!, 'utf8')).toBe('web\n');
    expect(await readFile(net.resolvConfPath!, 'utf8')).not.toMatch(/nameserver 127\./);

    const links = JSON.parse((await run(tool('ip'), ['-n', `berth-${web}`, '-j', 'addr'])).stdout) as {
      ifname: string;
      mtu: number;
      flags: string[];
    }[];
    expect(links.map((l) => l.ifname).sort()).toEqual(['eth0', 'lo']);
    expect(links.find((l) => l.ifname === 'lo')?.flags).toContain('UP');
    // The bridge takes the uplink's MTU (1400 on these VMs), so large packets to the outside pass.
    const uplink = (
      JSON.parse((await run(tool('ip'), ['-j', 'route', 'show', 'default'])).stdout) as { dev: string }[]
    )[0];
    if (uplink) {
      const mtu = Number((await readFile(`/sys/class/net/${uplink.dev}/mtu`, 'utf8')).trim());
      expect(links.find((l) => l.ifname === 'eth0')?.mtu).toBe(mtu);
    }

    await serveIn(web, 8080, 'hello from web1');
    expect(await fetchText(`http://127.0.0.1:${b!.hostPort}/`)).toBe('hello from web1');
    expect(await fetchText(`http://${net.ip}:8080/`)).toBe('hello from web1');
  });

  it('guards the bridge before a task joins it, and routes the credentials address only when told', async () => {
    const n = networks();
    const task = id('guarded');
    await setup(n, task, 'bridge', [], 'guarded');
    expect(await n.bridgeExists()).toBe(true);
    const { filter, nat } = guardChains(bridgeName);
    const rules = (await run(tool('iptables'), ['-w', '-S'])).stdout;
    expect(rules).toContain(`-A INPUT -i ${bridgeName} -j ${filter}`);
    expect(rules).toContain(`-A FORWARD -i ${bridgeName} -j ${filter}`);
    expect(rules).toMatch(new RegExp(`-A ${filter} -d 127\\.0\\.0\\.0/8 .*-j DROP`));
    expect(await natTable()).toContain(`-A PREROUTING -i ${bridgeName} -j ${nat}`);
    expect(await natTable()).not.toContain(`-A ${nat} `);
    await n.routeCredentials(41234);
    // Idempotent: a second guard (another start) adds no second jump.
    await networks().guard();
    const jumps = (await run(tool('iptables'), ['-w', '-S', 'INPUT'])).stdout.split('\n');
    expect(jumps.filter((l) => l.includes(filter))).toHaveLength(1);
    // A new process's guard empties the credentials chain: the port it named is not its own.
    expect(await natTable()).not.toContain(`--to-destination ${n.gateway}:41234`);
    await n.routeCredentials(41234);
    expect(await natTable()).toContain(
      `--dport 80 -m comment --comment "berth: task credentials" -j DNAT --to-destination ${n.gateway}:41234`,
    );
    await n.routeCredentials(undefined);
    expect(await natTable()).not.toContain(`-A ${nat} `);
    await n.teardown(task);
    await expectGone(task);
  });

  it('gives two tasks with the same containerPort different host ports, both reachable', async () => {
    const n = networks();
    const [a, c] = [id('twin-a'), id('twin-b')];
    const ports = [{ containerPort: 8080, hostPort: 0, protocol: 'tcp' as const }];
    const [na, nc] = await Promise.all([
      setup(n, a, 'bridge', ports, 'twin'),
      setup(n, c, 'bridge', ports, 'twin'),
    ]);
    expect(na.bindings[0]!.hostPort).not.toBe(nc.bindings[0]!.hostPort);
    expect(na.ip).not.toBe(nc.ip);
    await serveIn(a, 8080, 'twin a');
    await serveIn(c, 8080, 'twin b');
    expect(await fetchText(`http://127.0.0.1:${na.bindings[0]!.hostPort}/`)).toBe('twin a');
    expect(await fetchText(`http://127.0.0.1:${nc.bindings[0]!.hostPort}/`)).toBe('twin b');
    await n.teardown(a);
    await n.teardown(c);
    await expectGone(a);
    await expectGone(c);
  });

  it('keeps port reservations across a restart and refuses a port another task holds', async () => {
    const first = networks();
    const holder = id('holder');
    const held = await setup(
      first,
      holder,
      'bridge',
      [{ containerPort: 80, hostPort: 0, protocol: 'tcp' }],
      'h',
    );
    const port = held.bindings[0]!.hostPort;

    const restarted = networks(); // a new process reading the same root
    const rival = id('rival');
    const attempt = setup(
      restarted,
      rival,
      'bridge',
      [{ containerPort: 80, hostPort: port, protocol: 'tcp' }],
      'r',
    );
    await expect(attempt).rejects.toBeInstanceOf(PortConflictError);
    await expect(attempt).rejects.toThrow(`host port ${port}/tcp is already given to another task`);
    await expectGone(rival);

    await restarted.teardown(holder);
    await expectGone(holder);
    // Released: the rival gets it now.
    const got = await setup(
      restarted,
      rival,
      'bridge',
      [{ containerPort: 80, hostPort: port, protocol: 'tcp' }],
      'r',
    );
    expect(got.bindings[0]!.hostPort).toBe(port);
    await restarted.teardown(rival);
    await expectGone(rival);
  });

  it('tears a bridge task down completely, and again without complaint', async () => {
    const n = networks();
    const web = id('web1');
    for (const s of servers.splice(0)) {
      s.kill('SIGKILL');
      if (s.exitCode === null && s.signalCode === null) await new Promise((r) => s.once('exit', r));
    }
    expect(await natTable()).toContain(web); // still there from the first test
    await n.teardown(web);
    await expectGone(web);
    await n.teardown(web);
    await expectGone(web);
  });

  it('sweeps what a crashed process left, including a task whose namespace is already gone', async () => {
    const before = networks();
    const live = id('live');
    const [leakA, leakB, leakHost] = [id('leak-a'), id('leak-b'), id('leak-host')];
    const p = (containerPort: number, hostPort = 0) => [
      { containerPort, hostPort, protocol: 'tcp' as const },
    ];
    const liveNet = await setup(before, live, 'bridge', p(8080), 'live');
    const a = await setup(before, leakA, 'bridge', p(80), 'a');
    await setup(before, leakB, 'bridge', p(80), 'b');
    const hostPort = await someFreePort();
    await setup(before, leakHost, 'host', p(hostPort), 'h');
    // The crash: no teardown; and someone removed one namespace by hand, so DEL cannot find the
    // task's address and its masquerade chain would stay.
    await run(tool('ip'), ['netns', 'delete', `berth-${leakB}`]);
    expect(await natTable()).toContain(leakB);

    const after = networks();
    const swept = await after.sweep(new Set([live]));
    expect(swept.sort()).toEqual([leakA, leakB, leakHost].sort());
    for (const t of [leakA, leakB, leakHost]) await expectGone(t);
    expect(await after.sweep(new Set([live]))).toEqual([]);

    // The live task is untouched and still reachable; the swept ports are free again.
    await serveIn(live, 8080, 'still here');
    expect(await fetchText(`http://127.0.0.1:${liveNet.bindings[0]!.hostPort}/`)).toBe('still here');
    const again = id('again');
    const got = await setup(after, again, 'bridge', p(80, a.bindings[0]!.hostPort), 'again');
    expect(got.bindings[0]!.hostPort).toBe(a.bindings[0]!.hostPort);
    await after.teardown(again);
    await expectGone(again);
  });

  it('with a user namespace mapping, makes a bridge namespace its containers own, and removes it all', async () => {
    const hostIdStart = 2013265920;
    const n = networks({ idMapping: { hostIdStart } });
    const task = id('userns');
    const net = await setup(n, task, 'bridge', [], 'mapped');
    const userns = net.usernsPath!;
    expect(userns).toBe(join(root, 'tasks', task, 'userns'));
    // The task's user namespace maps 0-65535 to the range, and owns the network namespace.
    const inUserns = await run('nsenter', [`--user=${userns}`, 'cat', '/proc/self/uid_map']);
    expect(inUserns.stdout.trim().split(/\s+/)).toEqual(['0', String(hostIdStart), '65536']);
    // Only the owner of a network namespace may mount its sysfs: as root of the task's user
    // namespace, in a mount namespace of our own, that works (the host's would refuse it).
    const sysfs = await run('nsenter', [
      `--user=${userns}`,
      `--net=${net.netnsPath}`,
      '--',
      'unshare',
      '-m',
      'sh',
      '-c',
      'mount -t sysfs sysfs /mnt && ls /mnt/class/net',
    ]);
    expect(sysfs.stdout.split('\n')).toContain('eth0');
    // Its sysctls, set from the host: low ports for non-root, ping for the mapped groups.
    const sysctl = (name: string) =>
      run('nsenter', [`--net=${net.netnsPath}`, 'cat', `/proc/sys/net/ipv4/${name}`]).then((r) =>
        r.stdout.trim().split(/\s+/),
      );
    expect(await sysctl('ip_unprivileged_port_start')).toEqual(['0']);
    expect(await sysctl('ping_group_range')).toEqual([String(hostIdStart), String(hostIdStart + 65535)]);
    // The generated files belong to the containers' root, which may edit them.
    for (const f of [net.resolvConfPath!, net.hostsPath!, net.hostnamePath!])
      expect((await stat(f)).uid).toBe(hostIdStart);
    await n.teardown(task);
    await expectGone(task);
    expect(await readFile('/proc/self/mountinfo', 'utf8')).not.toContain(userns);
  });

  it('sets up nothing on the host for a none task (the runtime gives it loopback only)', async () => {
    const n = networks();
    const solo = id('solo');
    const net = await setup(n, solo, 'none', [], 'solo');
    expect(net).toEqual({ mode: 'none', bindings: [] });
    await expectGone(solo);
    await expect(
      setup(n, id('solo-ports'), 'none', [{ containerPort: 80, hostPort: 0, protocol: 'tcp' }], 'x'),
    ).rejects.toThrow(/none/);
    await n.teardown(solo);
    await expectGone(solo);
  });

  it('uses the host network in host mode and refuses a port someone else has bound', async () => {
    const n = networks();
    const port = await someFreePort();
    const h1 = id('host1');
    const net: TaskNetwork = await setup(
      n,
      h1,
      'host',
      [{ containerPort: port, hostPort: 0, protocol: 'tcp' }],
      'h',
    );
    expect(net).toEqual({
      mode: 'host',
      bindings: [{ bindIP: '0.0.0.0', containerPort: port, hostPort: port, protocol: 'tcp' }],
      resolvConfPath: '/etc/resolv.conf',
      hostsPath: '/etc/hosts',
      hostnamePath: '/etc/hostname',
    });
    // A second copy of the same task cannot have the port, though nobody listens on it yet.
    const h2 = id('host2');
    await expect(
      setup(n, h2, 'host', [{ containerPort: port, hostPort: port, protocol: 'tcp' }], 'h'),
    ).rejects.toThrow(`host port ${port}/tcp is already given to another task`);
    await n.teardown(h1);
    await expectGone(h1);

    const busy = await listenOn(await someFreePort());
    const busyPort = (busy.address() as { port: number }).port;
    try {
      for (const mode of ['host', 'bridge'] as const) {
        const attempt = setup(
          n,
          h2,
          mode,
          [{ containerPort: busyPort, hostPort: busyPort, protocol: 'tcp' }],
          'h',
        );
        await expect(attempt).rejects.toThrow(
          `host port ${busyPort}/tcp is already bound by another process`,
        );
        await expectGone(h2);
      }
    } finally {
      await new Promise((r) => busy.close(r));
    }
  });

  it('undoes a setup that failed halfway through the CNI plugins', async () => {
    // The real bridge and host-local, and a portmap that fails after them.
    const cniPath = join(root, 'cni-broken');
    await mkdir(cniPath, { recursive: true });
    await symlink('/usr/lib/cni/bridge', join(cniPath, 'bridge'));
    await symlink('/usr/lib/cni/host-local', join(cniPath, 'host-local'));
    await writeFile(
      join(cniPath, 'portmap'),
      `#!/bin/sh\ncat >/dev/null\nif [ "$CNI_COMMAND" = ADD ]; then echo '{"cniVersion":"1.0.0","code":999,"msg":"injected failure"}'; exit 1; fi\nexit 0\n`,
    );
    await chmod(join(cniPath, 'portmap'), 0o755);
    const n = networks({ cniPath });
    const half = id('half');
    await expect(
      setup(n, half, 'bridge', [{ containerPort: 80, hostPort: 0, protocol: 'tcp' }], 'half'),
    ).rejects.toThrow(/CNI portmap ADD for .* failed: injected failure/);
    await expectGone(half);
  });
});
