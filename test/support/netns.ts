// Network namespaces a suite makes of its own, to stand where a task (or a peer off the host)
// stands: on berth's bridge with an address of its subnet, or behind a routed veth pair. And the
// raw-SYN probe (syn-probe.py) run from inside one of them, as root.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { run, tool } from './tools.ts';

export interface Netns {
  readonly name: string;
  /** The interface inside the namespace. */
  readonly iface: string;
  /** Its address (without the prefix length). */
  readonly address: string;
  /** Runs argv inside the namespace (as `ip netns exec`). */
  exec(argv: string[], opts?: { env?: Record<string, string>; timeoutMs?: number }): ReturnType<typeof run>;
  close(): Promise<void>;
}

function netns(name: string, iface: string, address: string): Netns {
  return {
    name,
    iface,
    address,
    exec: (argv, opts = {}) => run(tool('ip'), ['netns', 'exec', name, ...argv], opts),
    async close() {
      // The veth pair goes with the namespace.
      await run(tool('ip'), ['netns', 'delete', name]).catch(() => undefined);
    },
  };
}

/**
 * A namespace attached to `bridge` through a veth pair (host end `hostIface`, at most 15
 * characters), with `cidr` on its eth0 and a default route via `gateway`: what a bridge task's
 * namespace looks like, made without berth.
 */
export async function bridgeNetns(
  name: string,
  hostIface: string,
  bridge: string,
  cidr: string,
  gateway: string,
): Promise<Netns> {
  const ip = tool('ip');
  await run(ip, ['netns', 'add', name]);
  const ns = netns(name, 'eth0', cidr.split('/')[0]!);
  try {
    // A high MAC for the bridge port: a Linux bridge takes the lowest MAC among its ports, and a
    // change of the bridge's MAC would cut every task off its gateway until their ARP caches expire.
    const mac = `fe:ff:ff:${[0, 0, 0]
      .map(() =>
        Math.floor(Math.random() * 256)
          .toString(16)
          .padStart(2, '0'),
      )
      .join(':')}`;
    await run(ip, [
      'link',
      'add',
      hostIface,
      'address',
      mac,
      'type',
      'veth',
      'peer',
      'name',
      'eth0',
      'netns',
      name,
    ]);
    await run(ip, ['link', 'set', hostIface, 'master', bridge, 'up']);
    await run(ip, ['-n', name, 'link', 'set', 'lo', 'up']);
    await run(ip, ['-n', name, 'addr', 'add', cidr, 'dev', 'eth0']);
    await run(ip, ['-n', name, 'link', 'set', 'eth0', 'up']);
    await run(ip, ['-n', name, 'route', 'add', 'default', 'via', gateway]);
  } catch (e) {
    await ns.close();
    throw e;
  }
  return ns;
}

/**
 * A namespace routed from the host over a /30 veth pair (host end `hostCidr` on `hostIface`,
 * the namespace's end `peerCidr`): a peer beyond the host, which bridge tasks reach through
 * the host's forwarding and masquerade.
 */
export async function routedNetns(
  name: string,
  hostIface: string,
  hostCidr: string,
  peerCidr: string,
): Promise<Netns> {
  const ip = tool('ip');
  await run(ip, ['netns', 'add', name]);
  const ns = netns(name, 'eth0', peerCidr.split('/')[0]!);
  try {
    await run(ip, ['link', 'add', hostIface, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', name]);
    await run(ip, ['addr', 'add', hostCidr, 'dev', hostIface]);
    await run(ip, ['link', 'set', hostIface, 'up']);
    await run(ip, ['-n', name, 'link', 'set', 'lo', 'up']);
    await run(ip, ['-n', name, 'addr', 'add', peerCidr, 'dev', 'eth0']);
    await run(ip, ['-n', name, 'link', 'set', 'eth0', 'up']);
  } catch (e) {
    await ns.close();
    throw e;
  }
  return ns;
}

/** The MAC address of a host interface (a bridge's is where its tasks send off-subnet frames). */
export function macOf(iface: string): string {
  return readFileSync(`/sys/class/net/${iface}/address`, 'utf8').trim();
}

const probeScript = join(import.meta.dirname, 'syn-probe.py');

/**
 * Sends a hand-built SYN from `src` (inside the namespace named `netnsName`, out of `iface`) to
 * `dst:port`, framed for `dstMac`; answers what came back.
 */
export async function synProbe(
  netnsName: string,
  iface: string,
  src: string,
  dst: string,
  port: number,
  dstMac: string,
): Promise<'SYN-ACK' | 'RST' | 'NO ANSWER'> {
  const out = await run(tool('ip'), [
    'netns',
    'exec',
    netnsName,
    tool('python3'),
    probeScript,
    iface,
    src,
    dst,
    String(port),
    dstMac,
    '3',
  ]).catch((e: Error) => ({ stdout: /--- stdout\n([^\n]*)/.exec(e.message)?.[1] ?? e.message }));
  const answer = out.stdout.trim();
  if (answer !== 'SYN-ACK' && answer !== 'RST' && answer !== 'NO ANSWER')
    throw new Error(`syn-probe.py failed: ${answer}`);
  return answer;
}
