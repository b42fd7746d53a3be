// A task's network: the host's own (host), a namespace with only loopback (none), or a namespace
// on a Linux bridge with NATed port mappings (bridge). Bridge mode runs Debian's CNI plugins
// (containernetworking-plugins: bridge + host-local IPAM + portmap) the way the CNI spec says:
// the plugin binary with CNI_* in its environment and the network config on stdin. Each bridge
// task has a persistent namespace at /run/netns/berth-<taskId> that the OCI runtime joins.
//
// With a user namespace mapping (idmap.ts), a bridge task's network namespace is made inside a
// user namespace of the task's own (mapped like every container), which its containers join: a
// network namespace belongs to the user namespace it was made in, and only its owner's root may
// mount sysfs there, and join it after joining the user namespace, as `runc exec` does (health
// checks); runc 1.1 joins the user namespace first. The user namespace is kept by a bind mount
// of its nsfs file at <root>/tasks/<taskId>/userns, like `ip netns` keeps a network namespace.
//
// Everything a teardown needs is written to root/tasks/<taskId>/state.json BEFORE the first
// change to the host (host ports, the exact conflist and runtimeConfig the ADD used), so a crash
// at any point leaves a record that teardown() or sweep() can undo; the host-port reservations
// are the union of those records, so they survive a restart too. CNI DEL must run while the
// namespace still exists: the bridge plugin learns the task's address from the interface inside
// it, and without that address its masquerade chain leaks. When the namespace is already gone
// (a crash, a manual `ip netns del`), the rules that carry this task's CNI comment are scrubbed
// from the nat table directly.
//
// The portmap plugin sets route_localnet=1 on the bridge (so 127.0.0.1:hostPort reaches a task),
// which also lets a task send packets to the host's 127.0.0.0/8: every service bound to the
// loopback would answer it (CVE-2020-8558). berth keeps two iptables chains of its own per bridge,
// as kube-proxy does for that CVE: BERTH-GUARD-<bridge> (filter; jumped to from INPUT and FORWARD
// for packets in from the bridge) drops what arrives for 127.0.0.0/8 unless it belongs to a
// connection the host opened or was DNATed there; BERTH-CREDS-<bridge> (nat, from PREROUTING)
// sends the ECS credentials address 169.254.170.2:80 to berth's credentials-only listener on the
// bridge's own address (runner.ts). The guard is made before the first task joins the bridge
// (and again at every start, when the bridge exists), outlives berth as the containers do, and
// goes with the bridge (removeBridge).
import { execFile, spawn } from 'node:child_process';
import { createHash, randomInt } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { existsSync } from 'node:fs';
import { chown, mkdir, readdir, readFile, readlink, rename, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { Logger } from '../log.ts';
import { ID_MAP_SIZE, type IdMapping, rootOwner } from './idmap.ts';
import { pingGroupRange } from './runtime-spec.ts';

export interface PortRequest {
  containerPort: number;
  /** 0 = a dynamic port from the ephemeral range. */
  hostPort: number;
  protocol: 'tcp' | 'udp';
}

export type NetworkMode = 'host' | 'none' | 'bridge';

export interface PortBinding {
  bindIP: string;
  containerPort: number;
  hostPort: number;
  protocol: 'tcp' | 'udp';
}

export interface TaskNetwork {
  mode: NetworkMode;
  /** bridge and none: the persistent namespace the task's containers join. */
  netnsPath?: string;
  /** bridge, with a mapping: the user namespace that owns netnsPath, which the containers join. */
  usernsPath?: string;
  /** bridge: the task's address on the bridge. */
  ip?: string;
  /** bridge: the bridge's address, the task's default gateway. */
  gateway?: string;
  /** ECS networkBindings. */
  bindings: PortBinding[];
  /** Files to bind-mount into the containers (bridge/none: generated per task; host: the host's). */
  resolvConfPath?: string;
  hostsPath?: string;
  hostnamePath?: string;
}

export interface Networks {
  /** The bridge's own address: the tasks' gateway, where berth's credentials listener binds. */
  readonly gateway: string;
  setup(taskId: string, mode: NetworkMode, ports: PortRequest[], hostname: string): Promise<TaskNetwork>;
  /** Makes (idempotently) the loopback guard and the credentials chain of the bridge. Runs before
   * the first bridge task's CNI ADD; at start when the bridge already exists. */
  guard(): Promise<void>;
  /** Whether the bridge exists (a bridge task ran since it was last removed). */
  bridgeExists(): Promise<boolean>;
  /** Sends 169.254.170.2:80 from the bridge to `port` on the gateway address; undefined: nowhere. */
  routeCredentials(port: number | undefined): Promise<void>;
  /** Idempotent: CNI DEL, delete the namespace, release the ports, delete the files. */
  teardown(taskId: string): Promise<void>;
  /** After a restart: tear down what belongs to no live task (leaked namespaces, CNI state, port
   * reservations). Answers the task ids torn down. */
  sweep(liveTaskIds: ReadonlySet<string>): Promise<string[]>;
}

export interface NetworkOptions {
  /** e.g. DATA/runner/network: per-task state and files, the IPAM store. */
  root: string;
  log: Logger;
  /** The Linux bridge (at most 15 characters); also the CNI network's name. Default 'berth0'. */
  bridgeName?: string;
  /** The bridge's IPv4 range. Default 10.98.0.0/16, clear of podman's cni-podman0 (10.88.0.0/16)
   * and podman's extra networks (10.89.x.0/24). */
  subnet?: string;
  /** The range dynamic host ports come from; default ECS's ephemeral range 49153-65535. */
  dynamicPorts?: [number, number];
  /** Where the CNI plugin binaries are; default Debian's /usr/lib/cni. */
  cniPath?: string;
  /** The bridge's MTU; default the MTU of the host's default-route interface. */
  mtu?: number;
  /** The tasks' user namespace mapping: the generated resolv.conf, hosts and hostname belong to
   * its root (containers may edit them, as under dockerd), and ping's group range is its ids. */
  idMapping?: IdMapping;
}

/** A host port that cannot be given to a task: bound by another process, mapped by another task,
 * or no dynamic port left. ECS reports these as "RESOURCE:PORTS". */
export class PortConflictError extends Error {
  readonly port: number;
  readonly protocol: 'tcp' | 'udp';
  constructor(port: number, protocol: 'tcp' | 'udp', message: string) {
    super(message);
    this.name = 'PortConflictError';
    this.port = port;
    this.protocol = protocol;
  }
}

// --- pure parts (unit tested in network.test.ts) ----------------------------------------------

const taskIdPattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;

/** Task ids become file names, namespace names and CNI container ids (whose grammar this is). */
export function checkTaskId(taskId: string): void {
  if (!taskIdPattern.test(taskId)) {
    throw new Error(
      `task id '${taskId}' cannot name a network namespace: use 1-100 letters, digits, '_', '.', '-', starting with a letter or digit`,
    );
  }
}

export function checkHostname(hostname: string): void {
  const labels = hostname.split('.');
  if (
    hostname.length > 253 ||
    !labels.every((l) => /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(l))
  ) {
    throw new Error(`hostname '${hostname}' is invalid: use dot-separated labels of letters, digits and '-'`);
  }
}

export function netnsName(taskId: string): string {
  return `berth-${taskId}`;
}

export function netnsPathOf(taskId: string): string {
  return `/run/netns/${netnsName(taskId)}`;
}

export interface Subnet {
  /** The network address, e.g. 10.98.0.0 */
  base: string;
  prefix: number;
  /** The first host address, which the bridge takes as the gateway. */
  gateway: string;
}

export function parseSubnet(cidr: string): Subnet {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
  const octets = m ? m.slice(1, 5).map(Number) : [];
  const prefix = m ? Number(m[5]) : -1;
  if (!m || octets.some((o) => o > 255) || prefix < 8 || prefix > 30) {
    throw new Error(`subnet '${cidr}' is invalid: use an IPv4 CIDR with a prefix from /8 to /30`);
  }
  const n = octets.reduce((acc, o) => acc * 256 + o, 0);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  if ((n & ~mask) >>> 0 !== 0) {
    throw new Error(`subnet '${cidr}' has host bits set: did you mean ${toIp((n & mask) >>> 0)}/${prefix}?`);
  }
  return { base: toIp(n), prefix, gateway: toIp(n + 1) };
}

function toIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export interface PluginConf {
  type: string;
  [key: string]: unknown;
}

export interface Conflist {
  cniVersion: string;
  name: string;
  plugins: PluginConf[];
}

export function buildConflist(o: {
  bridgeName: string;
  subnet: string;
  ipamDir: string;
  mtu?: number;
}): Conflist {
  const s = parseSubnet(o.subnet);
  return {
    cniVersion: '1.0.0',
    name: o.bridgeName,
    plugins: [
      {
        type: 'bridge',
        bridge: o.bridgeName,
        isGateway: true,
        ipMasq: true,
        // A task can reach its own published ports through the host's address.
        hairpinMode: true,
        ...(o.mtu ? { mtu: o.mtu } : {}),
        ipam: {
          type: 'host-local',
          dataDir: o.ipamDir,
          ranges: [[{ subnet: `${s.base}/${s.prefix}`, gateway: s.gateway }]],
          routes: [{ dst: '0.0.0.0/0' }],
        },
      },
      // snat (the default) also masquerades 127.0.0.1 -> task and sets route_localnet on the
      // bridge, which is what makes 127.0.0.1:hostPort reach the task.
      { type: 'portmap', capabilities: { portMappings: true }, snat: true },
    ],
  };
}

/** The address ECS serves task credentials at, which every AWS SDK accepts over plain HTTP. */
export const ecsCredentialsAddress = '169.254.170.2';

/** berth's own chains for one bridge (iptables names hold 28 characters; bridges 15). */
export function guardChains(bridgeName: string): { filter: string; nat: string } {
  return { filter: `BERTH-GUARD-${bridgeName}`, nat: `BERTH-CREDS-${bridgeName}` };
}

/** Where the chains are jumped to from: [table, built-in chain, the jump's arguments]. */
export function guardJumps(bridgeName: string): [table: 'filter' | 'nat', from: string, args: string[]][] {
  const { filter, nat } = guardChains(bridgeName);
  return [
    ['filter', 'INPUT', ['-i', bridgeName, '-j', filter]],
    ['filter', 'FORWARD', ['-i', bridgeName, '-j', filter]],
    ['nat', 'PREROUTING', ['-i', bridgeName, '-j', nat]],
  ];
}

/**
 * iptables-restore input that (re)writes the guard chain in one atomic commit (--noflush leaves
 * every other chain alone; declaring the chain empties it first).
 */
export function guardRestore(bridgeName: string): string {
  const { filter } = guardChains(bridgeName);
  return [
    '*filter',
    `:${filter} - [0:0]`,
    // Replies to connections the host opened (a published port on 127.0.0.1) are ESTABLISHED;
    // packets the nat table DNATed to the loopback were sent there on purpose (kube-proxy's rule).
    `-A ${filter} -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment "berth: bridge tasks never reach the host loopback (CVE-2020-8558)" -j DROP`,
    // Without berth's DNAT (berth stopped, or not yet listening) the credentials address must not
    // be routed off the host with a task's token in it.
    `-A ${filter} -d ${ecsCredentialsAddress}/32 -m comment --comment "berth: task credentials only through berth's listener" -j REJECT`,
    'COMMIT',
    '',
  ].join('\n');
}

/** iptables-restore input pointing the credentials address at `target`, or at nothing. */
export function credentialsRestore(bridgeName: string, target?: { address: string; port: number }): string {
  const { nat } = guardChains(bridgeName);
  return [
    '*nat',
    `:${nat} - [0:0]`,
    ...(target
      ? [
          `-A ${nat} -d ${ecsCredentialsAddress}/32 -p tcp -m tcp --dport 80 -m comment --comment "berth: task credentials" -j DNAT --to-destination ${target.address}:${target.port}`,
        ]
      : []),
    'COMMIT',
    '',
  ].join('\n');
}

/** What the runtime hands the plugins that declare a capability (libcni's runtimeConfig). */
export interface RuntimeConfig {
  portMappings: { hostPort: number; containerPort: number; protocol: 'tcp' | 'udp' }[];
}

/** One plugin's stdin, as libcni builds it from a conflist: the plugin's own keys, the list's name
 * and version, the previous plugin's result, and only the runtimeConfig keys it declared. */
export function pluginInput(
  list: Conflist,
  plugin: PluginConf,
  prevResult: unknown,
  runtimeConfig: RuntimeConfig,
): Record<string, unknown> {
  const input: Record<string, unknown> = { ...plugin, cniVersion: list.cniVersion, name: list.name };
  if (prevResult !== undefined) input.prevResult = prevResult;
  const caps = (plugin.capabilities ?? {}) as Record<string, unknown>;
  const rc: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(runtimeConfig)) if (caps[key] === true) rc[key] = value;
  if (Object.keys(rc).length > 0) input.runtimeConfig = rc;
  return input;
}

/** The task's IPv4 address and gateway from a CNI result: the address on the interface inside
 * the namespace. */
export function addressOf(result: unknown): { ip: string; gateway?: string } | undefined {
  const r = result as {
    interfaces?: { sandbox?: string }[];
    ips?: { interface?: number; address?: string; gateway?: string }[];
  };
  for (const entry of r?.ips ?? []) {
    const iface = entry.interface === undefined ? undefined : r.interfaces?.[entry.interface];
    if (iface && !iface.sandbox) continue;
    const ip = entry.address?.split('/')[0];
    if (ip && /^\d+\.\d+\.\d+\.\d+$/.test(ip))
      return { ip, ...(entry.gateway ? { gateway: entry.gateway } : {}) };
  }
  return undefined;
}

/** The nat chains the bridge (masquerade) and portmap (DNAT) plugins name after network + container:
 * "CNI-" / "CNI-DN-" + the sha512 of name+id, cut to iptables' 28 characters. */
export function cniChainNames(network: string, containerId: string): string[] {
  const h = createHash('sha512')
    .update(network + containerId)
    .digest('hex');
  return [`CNI-${h.slice(0, 24)}`, `CNI-DN-${h.slice(0, 21)}`];
}

/** Splits an `iptables -S` line into arguments: whitespace-separated, with "..." quoting and \"
 * escapes (how iptables prints comments). */
export function splitRule(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < line.length) {
    while (line[i] === ' ') i++;
    if (i >= line.length) break;
    let arg = '';
    while (i < line.length && line[i] !== ' ') {
      if (line[i] === '"') {
        i++;
        while (i < line.length && line[i] !== '"') {
          if (line[i] === '\\' && i + 1 < line.length) i++;
          arg += line[i];
          i++;
        }
        i++;
      } else {
        arg += line[i];
        i++;
      }
    }
    out.push(arg);
  }
  return out;
}

/** The CNI comment the bridge and portmap plugins put on every rule they make for a container. */
const commentPattern = /name: "([^"]*)" id: "([^"]*)"/;

export interface NatLeftovers {
  /** Rules to delete, as `-A CHAIN ...` argument lists. */
  rules: string[][];
  /** Per-container chains to flush and delete (rules first, then these). */
  chains: string[];
}

/** What `iptables -t nat -S` still holds for one container of one CNI network. */
export function natLeftovers(saved: string, network: string, containerId: string): NatLeftovers {
  const rules: string[][] = [];
  const existing = new Set<string>();
  const own = new Set(cniChainNames(network, containerId));
  for (const line of saved.split('\n')) {
    const args = splitRule(line.trim());
    if (args[0] === '-N' && args[1]) existing.add(args[1]);
    if (args[0] !== '-A') continue;
    const comment = args[args.indexOf('--comment') + 1];
    const m = args.includes('--comment') && comment ? commentPattern.exec(comment) : null;
    if (m && m[1] === network && m[2] === containerId) rules.push(args);
  }
  return { rules, chains: [...own].filter((c) => existing.has(c)) };
}

/** The container ids of one CNI network that still have nat rules. */
export function natContainerIds(saved: string, network: string): Set<string> {
  const ids = new Set<string>();
  for (const line of saved.split('\n')) {
    const args = splitRule(line.trim());
    if (args[0] !== '-A' || !args.includes('--comment')) continue;
    const m = commentPattern.exec(args[args.indexOf('--comment') + 1] ?? '');
    if (m && m[1] === network && m[2]) ids.add(m[2]);
  }
  return ids;
}

/** Host ports other CNI users (podman, another berth) already DNAT: `--dports` of CNI-HOSTPORT-DNAT. */
export function mappedHostPorts(saved: string): Set<string> {
  const taken = new Set<string>();
  for (const line of saved.split('\n')) {
    const args = splitRule(line.trim());
    if (args[0] !== '-A' || args[1] !== 'CNI-HOSTPORT-DNAT') continue;
    const proto = args[args.indexOf('-p') + 1];
    const ports = args[args.indexOf('--dports') + 1];
    if (!args.includes('--dports') || (proto !== 'tcp' && proto !== 'udp') || !ports) continue;
    for (const p of ports.split(',')) {
      const [lo, hi] = p.split(':').map(Number);
      if (lo === undefined) continue;
      for (let port = lo; port <= (hi ?? lo); port++) taken.add(portKey(port, proto));
    }
  }
  return taken;
}

export function portKey(port: number, protocol: 'tcp' | 'udp'): string {
  return `${port}/${protocol}`;
}

/** The resolv.conf a task in its own namespace gets: the host's, minus loopback nameservers
 * (127.0.0.53 and friends answer only in the host's namespace). */
export function taskResolvConf(hostResolvConf: string): string {
  const kept = hostResolvConf
    .split('\n')
    .filter((l) => !/^\s*nameserver\s+(127\.\S*|::1)\s*$/.test(l))
    .join('\n')
    .trim();
  return `# generated by berth from the host's /etc/resolv.conf\n${kept ? `${kept}\n` : ''}`;
}

export function taskHosts(hostname: string, ip?: string): string {
  const short = hostname.split('.')[0]!;
  const names = short === hostname ? hostname : `${hostname} ${short}`;
  return [
    '127.0.0.1\tlocalhost',
    '::1\tlocalhost ip6-localhost ip6-loopback',
    ip ? `${ip}\t${names}` : `127.0.1.1\t${names}`,
    '',
  ].join('\n');
}

/**
 * Chooses the host port of every request, in order. Fixed ports must be free (not in `taken`, and
 * `isFree` says nobody has them bound); dynamic ones (hostPort 0) are the first free port of
 * `range` at or after `start`, wrapping around. Every chosen port is added to `taken`.
 */
export async function choosePorts(
  requests: readonly PortRequest[],
  mode: NetworkMode,
  taken: Set<string>,
  isFree: (port: number, protocol: 'tcp' | 'udp') => Promise<boolean>,
  range: readonly [number, number],
  start: number,
): Promise<PortBinding[]> {
  const bindings: PortBinding[] = [];
  for (const r of requests) {
    checkPort('containerPort', r.containerPort);
    if (r.hostPort !== 0) checkPort('hostPort', r.hostPort);
    if (r.protocol !== 'tcp' && r.protocol !== 'udp')
      throw new Error(`protocol '${r.protocol}' is not tcp or udp`);
    let hostPort = r.hostPort;
    if (mode === 'none') throw new Error("port mappings are not possible in networkMode 'none'");
    if (mode === 'host') {
      // The container binds the port itself; ECS's rule is hostPort = containerPort.
      if (hostPort !== 0 && hostPort !== r.containerPort) {
        throw new Error(
          `hostPort ${hostPort} must equal containerPort ${r.containerPort} in networkMode 'host'`,
        );
      }
      hostPort = r.containerPort;
    }
    if (hostPort !== 0) {
      const key = portKey(hostPort, r.protocol);
      if (taken.has(key)) {
        throw new PortConflictError(
          hostPort,
          r.protocol,
          `host port ${hostPort}/${r.protocol} is already given to another task`,
        );
      }
      if (!(await isFree(hostPort, r.protocol))) {
        throw new PortConflictError(
          hostPort,
          r.protocol,
          `host port ${hostPort}/${r.protocol} is already bound by another process on this host`,
        );
      }
    } else {
      hostPort = await dynamicPort(r.protocol, taken, isFree, range, start);
    }
    taken.add(portKey(hostPort, r.protocol));
    bindings.push({ bindIP: '0.0.0.0', containerPort: r.containerPort, hostPort, protocol: r.protocol });
  }
  return bindings;
}

async function dynamicPort(
  protocol: 'tcp' | 'udp',
  taken: Set<string>,
  isFree: (port: number, protocol: 'tcp' | 'udp') => Promise<boolean>,
  [lo, hi]: readonly [number, number],
  start: number,
): Promise<number> {
  const size = hi - lo + 1;
  const first = Math.min(Math.max(start, lo), hi) - lo;
  for (let i = 0; i < size; i++) {
    const port = lo + ((first + i) % size);
    if (taken.has(portKey(port, protocol))) continue;
    if (await isFree(port, protocol)) return port;
  }
  throw new PortConflictError(0, protocol, `no free ${protocol} host port left in ${lo}-${hi}`);
}

function checkPort(what: string, port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(`${what} ${port} is not a port number (1-65535)`);
  }
}

// --- the host side ------------------------------------------------------------------------------

/** Everything needed to undo a task's network, written before the first change to the host. */
interface TaskState {
  taskId: string;
  mode: NetworkMode;
  bindings: PortBinding[];
  netns?: string;
  /** bridge with a mapping: the bind-mounted user namespace file to unmount. */
  userns?: string;
  /** bridge: the exact list ADD ran with, so DEL runs with the same one. */
  conflist?: Conflist;
  runtimeConfig?: RuntimeConfig;
  /** bridge: the ADD result, handed to DEL as prevResult (as libcni caches it). */
  cniResult?: unknown;
  ip?: string;
  gateway?: string;
  phase: 'setting-up' | 'ready';
}

// Plugins run iptables and friends; give them a PATH that has the sbin directories.
const toolEnv = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };

interface Ran {
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], hint: string): Promise<Ran> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { env: toolEnv, timeout: 60_000, maxBuffer: 16 << 20, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (!err) return resolve({ stdout, stderr });
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          return reject(new Error(`${file} is not installed (${hint})`, { cause: err }));
        }
        const e = new Error(`${file} ${args.join(' ')}: ${stderr.trim() || err.message}`, { cause: err });
        reject(Object.assign(e, { stderr }));
      },
    );
  });
}

/** Runs `file` with `input` on its stdin. */
function runWithInput(file: string, args: string[], input: string, hint: string): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { env: toolEnv, timeout: 60_000, maxBuffer: 16 << 20, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (!err) return resolve({ stdout, stderr });
        if ((err as NodeJS.ErrnoException).code === 'ENOENT')
          return reject(new Error(`${file} is not installed (${hint})`, { cause: err }));
        reject(new Error(`${file} ${args.join(' ')}: ${stderr.trim() || err.message}`, { cause: err }));
      },
    );
    child.stdin?.on('error', () => {});
    child.stdin?.end(input);
  });
}

/** Adds the jump unless it is there (`-C`), first in its chain so no earlier ACCEPT skips it. */
async function ensureJump(table: string, from: string, args: string[]): Promise<void> {
  try {
    await run('iptables', ['-w', '-t', table, '-C', from, ...args], iptablesHint);
  } catch {
    await run('iptables', ['-w', '-t', table, '-I', from, '1', ...args], iptablesHint);
  }
}

/**
 * Deletes a bridge berth made for its tasks, with berth's chains for it: what an operator (or a
 * test suite) runs when the bridge goes. Idempotent; tasks must be stopped first.
 */
export async function removeBridge(bridgeName: string): Promise<void> {
  for (const [table, from, args] of guardJumps(bridgeName)) {
    // A jump added twice (two berths starting at once) is deleted twice.
    for (let i = 0; i < 8; i++) {
      try {
        await run('iptables', ['-w', '-t', table, '-D', from, ...args], iptablesHint);
      } catch {
        break;
      }
    }
  }
  const { filter, nat } = guardChains(bridgeName);
  for (const [table, chain] of [
    ['filter', filter],
    ['nat', nat],
  ] as const) {
    await run('iptables', ['-w', '-t', table, '-F', chain], iptablesHint).catch(() => {});
    await run('iptables', ['-w', '-t', table, '-X', chain], iptablesHint).catch(() => {});
  }
  await run('ip', ['link', 'delete', bridgeName], ipHint).catch(() => {});
}

const ipHint = 'apt-get install iproute2';
const sysctlHint = 'apt-get install util-linux procps';

/**
 * What a container would set in a network namespace of its own (runtime-spec.ts ownNetnsSysctls),
 * for the bridge namespace the runner makes: that one belongs to the host's user namespace, so
 * the container's root may not write its sysctls; the runner does, from the host side.
 */
export function bridgeNetnsSysctls(idMapping: IdMapping | undefined): string[] {
  return [
    'net.ipv4.ip_unprivileged_port_start=0',
    `net.ipv4.ping_group_range=${idMapping ? pingGroupRange(idMapping) : '0 2147483647'}`,
  ];
}
const iptablesHint = 'apt-get install iptables';

/** Runs one CNI plugin as the spec says: CNI_* in the environment, the config on stdin, the
 * result (or a CNI error object) on stdout. */
function execPlugin(
  cniPath: string,
  command: 'ADD' | 'DEL',
  containerId: string,
  netns: string,
  input: Record<string, unknown>,
): Promise<unknown> {
  const type = String(input.type);
  const file = join(cniPath, type);
  return new Promise((resolve, reject) => {
    const child = spawn(file, [], {
      env: {
        ...toolEnv,
        CNI_COMMAND: command,
        CNI_CONTAINERID: containerId,
        CNI_NETNS: netns,
        CNI_IFNAME: 'eth0',
        CNI_PATH: cniPath,
      },
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: 60_000,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.stdin.on('error', () => {}); // a plugin that fails before reading its stdin
    child.on('error', (e) => {
      const missing = (e as NodeJS.ErrnoException).code === 'ENOENT';
      reject(
        missing
          ? new Error(`CNI plugin ${file} is not installed (apt-get install containernetworking-plugins)`)
          : e,
      );
    });
    child.on('close', (code, signal) => {
      const stdout = Buffer.concat(out).toString('utf8').trim();
      const stderr = Buffer.concat(err).toString('utf8').trim();
      if (code === 0) {
        if (stdout === '') return resolve(undefined);
        try {
          return resolve(JSON.parse(stdout));
        } catch {
          return reject(new Error(`CNI ${type} ${command}: unreadable result: ${stdout.slice(0, 500)}`));
        }
      }
      let detail = stderr || stdout || (signal ? `killed by ${signal}` : `exit ${code}`);
      try {
        const e = JSON.parse(stdout) as { code?: number; msg?: string; details?: string };
        if (e.msg) detail = `${e.msg}${e.details ? `: ${e.details}` : ''} (CNI error ${e.code})`;
      } catch {}
      reject(new Error(`CNI ${type} ${command} for ${containerId} failed: ${detail}`));
    });
    child.stdin.end(JSON.stringify(input));
  });
}

/** True when nobody on this host has the port bound (tcp: listening on any address). */
function portIsFree(port: number, protocol: 'tcp' | 'udp'): Promise<boolean> {
  return new Promise((resolve) => {
    if (protocol === 'tcp') {
      const server = createServer();
      server.once('error', () => resolve(false));
      server.listen({ port, host: '0.0.0.0', exclusive: true }, () => server.close(() => resolve(true)));
    } else {
      const socket = createSocket('udp4');
      socket.once('error', () => {
        socket.close();
        resolve(false);
      });
      socket.bind({ port, address: '0.0.0.0', exclusive: true }, () => socket.close(() => resolve(true)));
    }
  });
}

async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp`;
  await writeFile(tmp, text, { mode: 0o644 });
  await rename(tmp, path);
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export function createNetworks(opts: NetworkOptions): Networks {
  const bridgeName = opts.bridgeName ?? 'berth0';
  if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,14}$/.test(bridgeName)) {
    throw new Error(`bridgeName '${bridgeName}' is invalid: 1-15 letters, digits, '_' or '-'`);
  }
  const subnet = opts.subnet ?? '10.98.0.0/16';
  const { gateway } = parseSubnet(subnet);
  const range = opts.dynamicPorts ?? [49153, 65535];
  if (
    !(
      Number.isInteger(range[0]) &&
      Number.isInteger(range[1]) &&
      range[0] >= 1 &&
      range[0] <= range[1] &&
      range[1] <= 65535
    )
  ) {
    throw new Error(`dynamicPorts ${range.join('-')} is not a port range within 1-65535`);
  }
  const cniPath = opts.cniPath ?? '/usr/lib/cni';
  const tasksDir = join(opts.root, 'tasks');
  const ipamDir = join(opts.root, 'ipam');
  const log = opts.log;

  // One operation at a time per task id, and one port allocation at a time overall.
  const perTask = new Map<string, Promise<unknown>>();
  let allocation: Promise<unknown> = Promise.resolve();

  function serial<T>(taskId: string, fn: () => Promise<T>): Promise<T> {
    const prev = perTask.get(taskId) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const settled = next.catch(() => {});
    perTask.set(taskId, settled);
    void settled.then(() => {
      if (perTask.get(taskId) === settled) perTask.delete(taskId);
    });
    return next;
  }

  function allocating<T>(fn: () => Promise<T>): Promise<T> {
    const next = allocation.then(fn, fn);
    allocation = next.catch(() => {});
    return next;
  }

  const taskDir = (taskId: string) => join(tasksDir, taskId);
  const statePath = (taskId: string) => join(taskDir(taskId), 'state.json');
  const usernsPathOf = (taskId: string) => join(taskDir(taskId), 'userns');

  /**
   * The task's network namespace, inside a user namespace of its own when there is a mapping:
   * `unshare --user --net` makes both at once (so the second belongs to the first), berth writes
   * the id maps (unshare's own --map-users goes through newuidmap and /etc/subuid), and bind
   * mounts keep both once the holder process is gone.
   */
  async function makeNamespaces(taskId: string, map: IdMapping | undefined): Promise<void> {
    const name = netnsName(taskId);
    if (!map) {
      await run('ip', ['netns', 'add', name], ipHint);
      return;
    }
    // The holder needs to live only until the bind mounts hold the namespaces; should berth die
    // first, it ends by itself.
    const holder = spawn('unshare', ['--user', '--net', '--', 'sleep', '300'], {
      stdio: 'ignore',
      env: toolEnv,
    });
    const failed = new Promise<never>((_, reject) => {
      holder.once('error', (e) => reject(new Error(`unshare: ${errorText(e)} (${sysctlHint})`)));
      holder.once('exit', (code) =>
        reject(new Error(`unshare exited (${code}) before its namespaces were kept`)),
      );
    });
    failed.catch(() => {});
    try {
      const pid = holder.pid!;
      const ours = await readlink('/proc/self/ns/user');
      const deadline = Date.now() + 10_000;
      // Until unshare has made the namespaces, the holder is still in ours.
      while ((await Promise.race([readlink(`/proc/${pid}/ns/user`).catch(() => ours), failed])) === ours) {
        if (Date.now() > deadline) throw new Error('unshare did not make its namespaces within 10 s');
        await new Promise((r) => setTimeout(r, 2));
      }
      const line = `0 ${map.hostIdStart} ${ID_MAP_SIZE}\n`;
      await writeFile(`/proc/${pid}/uid_map`, line);
      await writeFile(`/proc/${pid}/gid_map`, line);
      const userns = usernsPathOf(taskId);
      await writeFile(userns, '', { mode: 0o444 });
      await run('mount', ['--bind', `/proc/${pid}/ns/user`, userns], 'apt-get install mount');
      await run('ip', ['netns', 'attach', name, String(pid)], ipHint);
    } finally {
      holder.kill('SIGKILL');
    }
  }

  /** Unmounts and deletes the task's user namespace file, if it has one. */
  async function dropUserns(taskId: string): Promise<void> {
    const userns = usernsPathOf(taskId);
    if (!existsSync(userns)) return;
    try {
      await run('umount', [userns], 'apt-get install mount');
    } catch (e) {
      if (!/not mounted/i.test((e as { stderr?: string }).stderr ?? '')) throw e;
    }
    await rm(userns, { force: true });
  }

  async function readState(taskId: string): Promise<TaskState | undefined> {
    try {
      return JSON.parse(await readFile(statePath(taskId), 'utf8')) as TaskState;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      // A torn or foreign file: teardown still does everything it can without it.
      log.warn({ taskId, err: errorText(e) }, 'network: unreadable task state');
      return undefined;
    }
  }

  async function saveState(state: TaskState): Promise<void> {
    await writeAtomic(statePath(state.taskId), `${JSON.stringify(state, null, 2)}\n`);
  }

  /** The host ports given to tasks: the union of the task records on disk, read afresh for each
   * allocation (a handful of small files), so nothing in memory can drift from them. */
  async function reservedPorts(): Promise<Set<string>> {
    const taken = new Set<string>();
    for (const id of await taskIdsOnDisk()) {
      for (const b of (await readState(id))?.bindings ?? []) taken.add(portKey(b.hostPort, b.protocol));
    }
    return taken;
  }

  async function taskIdsOnDisk(): Promise<string[]> {
    try {
      return (await readdir(tasksDir)).filter((n) => taskIdPattern.test(n));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
  }

  /** One guard at a time; once made, bridge setups skip it (a failure is retried next time). */
  let guarded: Promise<void> | undefined;
  function guard(): Promise<void> {
    guarded ??= (async () => {
      await runWithInput('iptables-restore', ['-w', '--noflush'], guardRestore(bridgeName), iptablesHint);
      // Emptied: a DNAT left by an earlier berth points at a port nobody may be listening on now
      // (or somebody else is). routeCredentials fills it once this berth's listener is up.
      await runWithInput(
        'iptables-restore',
        ['-w', '--noflush'],
        credentialsRestore(bridgeName),
        iptablesHint,
      );
      for (const [table, from, args] of guardJumps(bridgeName)) await ensureJump(table, from, args);
      log.info({ bridge: bridgeName }, 'network: loopback guard in place');
    })();
    guarded.catch(() => {
      guarded = undefined;
    });
    return guarded;
  }

  async function natRules(): Promise<string> {
    return (await run('iptables', ['-w', '-t', 'nat', '-S'], iptablesHint)).stdout;
  }

  let mtu: Promise<number | undefined> | undefined;
  function bridgeMtu(): Promise<number | undefined> {
    mtu ??= (async () => {
      if (opts.mtu) return opts.mtu;
      try {
        // A bridge wider than the uplink would black-hole large packets to the outside.
        const routes = JSON.parse((await run('ip', ['-j', 'route', 'show', 'default'], ipHint)).stdout) as {
          dev?: string;
        }[];
        const dev = routes[0]?.dev;
        if (!dev || !/^[\w.@-]+$/.test(dev)) return undefined;
        const value = Number((await readFile(`/sys/class/net/${dev}/mtu`, 'utf8')).trim());
        return Number.isInteger(value) && value >= 576 ? value : undefined;
      } catch {
        return undefined;
      }
    })();
    return mtu;
  }

  async function cni(
    command: 'ADD' | 'DEL',
    taskId: string,
    netns: string,
    list: Conflist,
    runtimeConfig: RuntimeConfig,
    cached?: unknown,
  ): Promise<unknown> {
    const plugins = command === 'ADD' ? list.plugins : [...list.plugins].reverse();
    let result: unknown = command === 'DEL' ? cached : undefined;
    for (const plugin of plugins) {
      const out = await execPlugin(
        cniPath,
        command,
        taskId,
        netns,
        pluginInput(list, plugin, result, runtimeConfig),
      );
      if (command === 'ADD') result = out;
    }
    return result;
  }

  /** Deletes what the nat table still holds for the task: the rules with its CNI comment and its
   * own chains. What DEL does when the namespace exists; needed when it does not. */
  async function scrubNat(network: string, taskId: string): Promise<number> {
    const { rules, chains } = natLeftovers(await natRules(), network, taskId);
    for (const args of rules) {
      await run('iptables', ['-w', '-t', 'nat', '-D', ...args.slice(1)], iptablesHint);
    }
    for (const chain of chains) {
      await run('iptables', ['-w', '-t', 'nat', '-F', chain], iptablesHint);
      await run('iptables', ['-w', '-t', 'nat', '-X', chain], iptablesHint);
    }
    return rules.length + chains.length;
  }

  /** Generated resolv.conf, hosts and hostname for a task with its own namespace. */
  async function writeTaskFiles(taskId: string, hostname: string, ip?: string) {
    const dir = taskDir(taskId);
    let hostResolv = '';
    try {
      hostResolv = await readFile('/etc/resolv.conf', 'utf8');
    } catch {}
    const paths = {
      resolvConfPath: join(dir, 'resolv.conf'),
      hostsPath: join(dir, 'hosts'),
      hostnamePath: join(dir, 'hostname'),
    };
    await writeAtomic(paths.resolvConfPath, taskResolvConf(hostResolv));
    await writeAtomic(paths.hostsPath, taskHosts(hostname, ip));
    await writeAtomic(paths.hostnamePath, `${hostname}\n`);
    if (opts.idMapping) {
      const owner = rootOwner(opts.idMapping);
      for (const p of Object.values(paths)) await chown(p, owner.uid, owner.gid);
    }
    return paths;
  }

  async function setupLocked(
    taskId: string,
    mode: NetworkMode,
    ports: PortRequest[],
    hostname: string,
  ): Promise<TaskNetwork> {
    const list =
      mode === 'bridge' ? buildConflist({ bridgeName, subnet, ipamDir, mtu: await bridgeMtu() }) : undefined;
    // Never a task on the bridge without the loopback guard: no guard, no bridge task.
    if (mode === 'bridge') {
      try {
        await guard();
      } catch (e) {
        throw new Error(`the bridge ${bridgeName} cannot be guarded, so no task joins it: ${errorText(e)}`);
      }
    }

    // Ports are chosen and recorded under one lock, so two tasks never get the same one.
    const state = await allocating(async () => {
      const taken = await reservedPorts();
      if (mode === 'bridge' && ports.length > 0) {
        // Ports other CNI users (podman, another berth root) map are taken too.
        for (const k of mappedHostPorts(await natRules())) taken.add(k);
      }
      const bindings = await choosePorts(
        ports,
        mode,
        taken,
        portIsFree,
        range,
        randomInt(range[0], range[1] + 1),
      );
      const s: TaskState = { taskId, mode, bindings, phase: 'setting-up' };
      if (mode !== 'host') s.netns = netnsName(taskId);
      if (mode === 'bridge' && opts.idMapping) s.userns = usernsPathOf(taskId);
      if (list) {
        s.conflist = list;
        s.runtimeConfig = {
          portMappings: bindings.map((b) => ({
            hostPort: b.hostPort,
            containerPort: b.containerPort,
            protocol: b.protocol,
          })),
        };
      }
      await mkdir(taskDir(taskId), { recursive: true, mode: 0o755 });
      await saveState(s);
      return s;
    });

    if (mode === 'host') {
      state.phase = 'ready';
      await saveState(state);
      log.info({ taskId, mode, bindings: state.bindings }, 'network: host mode');
      return {
        mode,
        bindings: state.bindings,
        resolvConfPath: '/etc/resolv.conf',
        hostsPath: '/etc/hosts',
        hostnamePath: '/etc/hostname',
      };
    }

    const name = netnsName(taskId);
    await makeNamespaces(taskId, opts.idMapping);
    await run('ip', ['-n', name, 'link', 'set', 'lo', 'up'], ipHint);
    // /proc/sys/net is the writer's network namespace: sysctl run inside this one.
    await run(
      'nsenter',
      [`--net=${netnsPathOf(taskId)}`, '--', 'sysctl', '-q', '-w', ...bridgeNetnsSysctls(opts.idMapping)],
      sysctlHint,
    );
    if (list && state.runtimeConfig) {
      const result = await cni('ADD', taskId, netnsPathOf(taskId), list, state.runtimeConfig);
      state.cniResult = result;
      const address = addressOf(result);
      if (!address)
        throw new Error(`CNI ADD for ${taskId} returned no IPv4 address: ${JSON.stringify(result)}`);
      state.ip = address.ip;
      if (address.gateway) state.gateway = address.gateway;
      await saveState(state);
    }
    const files = await writeTaskFiles(taskId, hostname, state.ip);
    state.phase = 'ready';
    await saveState(state);
    log.info({ taskId, mode, ip: state.ip, bindings: state.bindings }, 'network: ready');
    return {
      mode,
      netnsPath: netnsPathOf(taskId),
      ...(state.userns ? { usernsPath: state.userns } : {}),
      ...(state.ip ? { ip: state.ip } : {}),
      ...(state.gateway ? { gateway: state.gateway } : {}),
      bindings: state.bindings,
      ...files,
    };
  }

  /** Undoes the task's network. Without a record (a teardown repeated, or a sweep that found the
   * id in the IPAM store or the nat table) it infers what is left from the host itself. */
  async function teardownLocked(taskId: string, natKnown = false): Promise<void> {
    const state = await readState(taskId);
    const failures: string[] = [];
    const attempt = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (e) {
        failures.push(`${what}: ${errorText(e)}`);
      }
    };
    const hasNetns = existsSync(netnsPathOf(taskId));
    const bridgeLeft = hasNetns || natKnown || (await ipamOwners(bridgeName)).has(taskId);
    const mode: NetworkMode | undefined = state?.mode ?? (bridgeLeft ? 'bridge' : undefined);

    if (mode === 'bridge') {
      // The list the ADD used; for a task without a record, today's (same name, same IPAM store).
      const list = state?.conflist ?? buildConflist({ bridgeName, subnet, ipamDir });
      const rc = state?.runtimeConfig ?? { portMappings: [] };
      let deleted = false;
      if (hasNetns) {
        try {
          await cni('DEL', taskId, netnsPathOf(taskId), list, rc, state?.cniResult);
          deleted = true;
        } catch (e) {
          log.warn(
            { taskId, err: errorText(e) },
            'network: CNI DEL in the namespace failed; retrying without it',
          );
        }
      }
      // Without the namespace the plugins still release the address and the port maps.
      if (!deleted) await attempt('CNI DEL', () => cni('DEL', taskId, '', list, rc, state?.cniResult));
      await attempt('nat cleanup', async () => {
        const n = await scrubNat(list.name, taskId);
        if (n > 0) log.info({ taskId, removed: n }, 'network: removed leftover nat rules and chains');
      });
    }
    if (hasNetns) {
      await attempt('delete namespace', () => run('ip', ['netns', 'delete', netnsName(taskId)], ipHint));
    }
    await attempt('drop the user namespace', () => dropUserns(taskId));
    if (failures.length > 0) {
      // The record stays, so a later teardown or sweep can finish the job.
      throw new Error(`network teardown of task ${taskId} incomplete: ${failures.join('; ')}`);
    }
    // Removing the record releases the task's host ports.
    await rm(taskDir(taskId), { recursive: true, force: true });
    if (state || hasNetns) log.info({ taskId, mode }, 'network: torn down');
  }

  /** Container ids the IPAM store still holds an address for (host-local: one file per address,
   * holding "id\r\nifname"). */
  async function ipamOwners(network: string): Promise<Set<string>> {
    const ids = new Set<string>();
    const dir = join(ipamDir, network);
    let names: string[] = [];
    try {
      names = await readdir(dir);
    } catch {
      return ids;
    }
    for (const n of names) {
      if (!/^\d+\.\d+\.\d+\.\d+$/.test(n)) continue;
      try {
        const id = (await readFile(join(dir, n), 'utf8')).split(/\r?\n/)[0]?.trim();
        if (id && taskIdPattern.test(id)) ids.add(id);
      } catch {}
    }
    return ids;
  }

  return {
    gateway,
    guard,

    async bridgeExists() {
      return existsSync(`/sys/class/net/${bridgeName}`);
    },

    async routeCredentials(port) {
      await guard();
      await runWithInput(
        'iptables-restore',
        ['-w', '--noflush'],
        credentialsRestore(bridgeName, port === undefined ? undefined : { address: gateway, port }),
        iptablesHint,
      );
    },

    setup(taskId, mode, ports, hostname) {
      checkTaskId(taskId);
      checkHostname(hostname);
      if (!['host', 'none', 'bridge'].includes(mode))
        throw new Error(`networkMode '${mode}' is not supported`);
      if (mode === 'none') {
        // Nothing to set up on the host: the runtime gives each container a fresh network
        // namespace with loopback only (as docker's none does), so no namespace, no record and no
        // files, and a task starts without the ip(8) round trips (bench/RUNNER-RESULTS.md).
        if (ports.length > 0)
          return Promise.reject(new Error("port mappings are not possible in networkMode 'none'"));
        return Promise.resolve({ mode, bindings: [] });
      }
      return serial(taskId, async () => {
        // A task that already has a network keeps it: the failure below must not undo it.
        if (existsSync(statePath(taskId)) || (mode !== 'host' && existsSync(netnsPathOf(taskId)))) {
          throw new Error(`task ${taskId} already has a network: tear it down first`);
        }
        try {
          return await setupLocked(taskId, mode, ports, hostname);
        } catch (e) {
          // Undo whatever half got made: the record was written before the first change.
          try {
            await teardownLocked(taskId);
          } catch (cleanup) {
            log.error({ taskId, err: errorText(cleanup) }, 'network: cleanup after failed setup failed');
          }
          throw e;
        }
      });
    },

    teardown(taskId) {
      checkTaskId(taskId);
      return serial(taskId, () => teardownLocked(taskId));
    },

    async sweep(liveTaskIds) {
      const candidates = new Set(await taskIdsOnDisk());
      for (const id of await ipamOwners(bridgeName)) candidates.add(id);
      let natIds = new Set<string>();
      try {
        natIds = natContainerIds(await natRules(), bridgeName);
      } catch (e) {
        log.warn({ err: errorText(e) }, 'network: sweep cannot read the nat table');
      }
      for (const id of natIds) candidates.add(id);
      const swept: string[] = [];
      const failures: string[] = [];
      for (const id of [...candidates].sort()) {
        if (liveTaskIds.has(id) || perTask.has(id) || !taskIdPattern.test(id)) continue;
        try {
          await serial(id, () => teardownLocked(id, natIds.has(id)));
          swept.push(id);
        } catch (e) {
          failures.push(errorText(e));
        }
      }
      if (swept.length > 0) log.info({ tasks: swept }, 'network: swept leftovers of tasks no longer running');
      if (failures.length > 0) throw new Error(`network sweep incomplete: ${failures.join('; ')}`);
      return swept;
    },
  };
}
