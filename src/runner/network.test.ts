import { describe, expect, it } from 'vitest';
import {
  addressOf,
  buildConflist,
  checkHostname,
  checkTaskId,
  choosePorts,
  cniChainNames,
  credentialsRestore,
  ecsCredentialsAddress,
  guardChains,
  guardJumps,
  guardRestore,
  mappedHostPorts,
  natContainerIds,
  natLeftovers,
  netnsPathOf,
  PortConflictError,
  type PortRequest,
  parseSubnet,
  pluginInput,
  portKey,
  splitRule,
  taskHosts,
  taskResolvConf,
} from './network.ts';

// `iptables -t nat -S` after a real CNI ADD (network "berthtry", container "try1", 18080 -> 8080)
// next to a podman container's rules: the shape natLeftovers and friends must read.
const savedNat = `-P PREROUTING ACCEPT
-P INPUT ACCEPT
-P OUTPUT ACCEPT
-P POSTROUTING ACCEPT
-N CNI-7a4b3c07359bfdc470a91bd4
-N CNI-DN-7a4b3c07359bfdc470a91
-N CNI-HOSTPORT-DNAT
-N CNI-HOSTPORT-MASQ
-N CNI-HOSTPORT-SETMARK
-N CNI-aaaaaaaaaaaaaaaaaaaaaaaa
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A POSTROUTING -s 10.231.0.2/32 -m comment --comment "name: \\"berthtry\\" id: \\"try1\\"" -j CNI-7a4b3c07359bfdc470a91bd4
-A POSTROUTING -s 10.88.0.5/32 -m comment --comment "name: \\"podman\\" id: \\"abc\\"" -j CNI-aaaaaaaaaaaaaaaaaaaaaaaa
-A CNI-7a4b3c07359bfdc470a91bd4 -d 10.231.0.0/24 -m comment --comment "name: \\"berthtry\\" id: \\"try1\\"" -j ACCEPT
-A CNI-7a4b3c07359bfdc470a91bd4 ! -d 224.0.0.0/4 -m comment --comment "name: \\"berthtry\\" id: \\"try1\\"" -j MASQUERADE
-A CNI-DN-7a4b3c07359bfdc470a91 -s 10.231.0.0/24 -p tcp -m tcp --dport 18080 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-7a4b3c07359bfdc470a91 -s 127.0.0.1/32 -p tcp -m tcp --dport 18080 -j CNI-HOSTPORT-SETMARK
-A CNI-DN-7a4b3c07359bfdc470a91 -p tcp -m tcp --dport 18080 -j DNAT --to-destination 10.231.0.2:8080
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"berthtry\\" id: \\"try1\\"" -m multiport --dports 18080 -j CNI-DN-7a4b3c07359bfdc470a91
-A CNI-HOSTPORT-DNAT -p udp -m comment --comment "dnat name: \\"podman\\" id: \\"abc\\"" -m multiport --dports 5353,6000:6002 -j CNI-DN-aaaaaaaaaaaaaaaaaaaaa
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
`;

describe('names', () => {
  it('accepts task ids that make safe file, namespace and CNI container names', () => {
    expect(() => checkTaskId('3f2a9c0d4e5b6a7f8e9d0c1b2a3f4e5d')).not.toThrow();
    expect(() => checkTaskId('svc-web.1_a')).not.toThrow();
    for (const bad of ['', '../x', 'a/b', '-lead', 'a b', 'x'.repeat(101), 'a"b']) {
      expect(() => checkTaskId(bad), bad).toThrow(/cannot name a network namespace/);
    }
    expect(netnsPathOf('abc')).toBe('/run/netns/berth-abc');
  });

  it('accepts RFC 1123 hostnames only', () => {
    expect(() => checkHostname('web')).not.toThrow();
    expect(() => checkHostname('ip-10-98-0-2.berth.local')).not.toThrow();
    for (const bad of ['', 'a_b', '-a', 'a-', 'a..b', 'x\ny', 'a'.repeat(64)]) {
      expect(() => checkHostname(bad), bad).toThrow(/hostname/);
    }
  });
});

describe('parseSubnet', () => {
  it('answers the network and the gateway', () => {
    expect(parseSubnet('10.98.0.0/16')).toEqual({ base: '10.98.0.0', prefix: 16, gateway: '10.98.0.1' });
    expect(parseSubnet('192.168.7.0/24').gateway).toBe('192.168.7.1');
  });

  it('refuses what is not an IPv4 CIDR, and host bits', () => {
    for (const bad of ['10.98.0.0', '10.98.0.0/33', '300.1.1.0/24', 'fd00::/64', '10.0.0.0/31']) {
      expect(() => parseSubnet(bad), bad).toThrow(/invalid/);
    }
    expect(() => parseSubnet('10.98.1.0/16')).toThrow(/did you mean 10.98.0.0\/16/);
  });
});

describe('the CNI configuration', () => {
  const list = buildConflist({ bridgeName: 'berth0', subnet: '10.98.0.0/16', ipamDir: '/d/ipam', mtu: 1400 });

  it('is a bridge with host-local IPAM under root, then portmap', () => {
    expect(list.name).toBe('berth0');
    expect(list.plugins.map((p) => p.type)).toEqual(['bridge', 'portmap']);
    expect(list.plugins[0]).toMatchObject({
      bridge: 'berth0',
      isGateway: true,
      ipMasq: true,
      mtu: 1400,
      ipam: {
        type: 'host-local',
        dataDir: '/d/ipam',
        ranges: [[{ subnet: '10.98.0.0/16', gateway: '10.98.0.1' }]],
      },
    });
    expect(list.plugins[1]).toMatchObject({ capabilities: { portMappings: true }, snat: true });
    expect(
      buildConflist({ bridgeName: 'b', subnet: '10.1.0.0/24', ipamDir: '/x' }).plugins[0],
    ).not.toHaveProperty('mtu');
  });

  it('hands runtimeConfig only to the plugins that declare the capability, as libcni does', () => {
    const rc = { portMappings: [{ hostPort: 49200, containerPort: 80, protocol: 'tcp' as const }] };
    const bridge = pluginInput(list, list.plugins[0]!, undefined, rc);
    expect(bridge).toMatchObject({ type: 'bridge', name: 'berth0', cniVersion: '1.0.0' });
    expect(bridge).not.toHaveProperty('runtimeConfig');
    expect(bridge).not.toHaveProperty('prevResult');
    const prev = { cniVersion: '1.0.0', ips: [] };
    const portmap = pluginInput(list, list.plugins[1]!, prev, rc);
    expect(portmap.runtimeConfig).toEqual(rc);
    expect(portmap.prevResult).toBe(prev);
  });

  it('reads the address inside the namespace from a result', () => {
    const result = {
      interfaces: [{ name: 'berth0' }, { name: 'veth1' }, { name: 'eth0', sandbox: '/run/netns/berth-x' }],
      ips: [{ interface: 2, address: '10.98.0.7/16', gateway: '10.98.0.1' }],
    };
    expect(addressOf(result)).toEqual({ ip: '10.98.0.7', gateway: '10.98.0.1' });
    expect(addressOf({ ips: [{ address: '10.1.0.2/24' }] })).toEqual({ ip: '10.1.0.2' });
    expect(addressOf({ interfaces: [{ name: 'br' }], ips: [{ interface: 0, address: '10.1.0.1/24' }] })).toBe(
      undefined,
    );
    expect(addressOf(undefined)).toBe(undefined);
  });
});

describe('the nat table', () => {
  it('names the per-container chains as the plugins do', () => {
    // Observed: bridge's masquerade chain and portmap's DNAT chain for berthtry/try1.
    expect(cniChainNames('berthtry', 'try1')).toEqual([
      'CNI-7a4b3c07359bfdc470a91bd4',
      'CNI-DN-7a4b3c07359bfdc470a91',
    ]);
  });

  it('splits iptables -S lines, quotes and escapes included', () => {
    expect(splitRule('-A POSTROUTING -m comment --comment "name: \\"n\\" id: \\"i\\"" -j X')).toEqual([
      '-A',
      'POSTROUTING',
      '-m',
      'comment',
      '--comment',
      'name: "n" id: "i"',
      '-j',
      'X',
    ]);
    expect(splitRule('  ')).toEqual([]);
    expect(splitRule('-A C ! -d 224.0.0.0/4')).toEqual(['-A', 'C', '!', '-d', '224.0.0.0/4']);
  });

  it('finds every rule and chain one container left, and nothing of others', () => {
    const left = natLeftovers(savedNat, 'berthtry', 'try1');
    expect(left.rules.map((r) => r[1])).toEqual([
      'POSTROUTING',
      'CNI-7a4b3c07359bfdc470a91bd4',
      'CNI-7a4b3c07359bfdc470a91bd4',
      'CNI-HOSTPORT-DNAT',
    ]);
    expect(left.rules[0]).toContain('10.231.0.2/32');
    expect(left.chains).toEqual(['CNI-7a4b3c07359bfdc470a91bd4', 'CNI-DN-7a4b3c07359bfdc470a91']);
    expect(natLeftovers(savedNat, 'berthtry', 'try2')).toEqual({ rules: [], chains: [] });
    expect(natLeftovers(savedNat, 'other', 'try1')).toEqual({ rules: [], chains: [] });
  });

  it('lists the containers of one network that still have rules', () => {
    expect([...natContainerIds(savedNat, 'berthtry')]).toEqual(['try1']);
    expect([...natContainerIds(savedNat, 'podman')]).toEqual(['abc']);
  });

  it('knows the host ports any CNI user maps, ranges included', () => {
    expect([...mappedHostPorts(savedNat)].sort()).toEqual(
      ['18080/tcp', '5353/udp', '6000/udp', '6001/udp', '6002/udp'].sort(),
    );
  });
});

describe('task files', () => {
  it('drops loopback nameservers, which do not answer inside a namespace', () => {
    const host =
      'search example.org\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver ::1\noptions edns0\n';
    expect(taskResolvConf(host)).toBe(
      "# generated by berth from the host's /etc/resolv.conf\nsearch example.org\nnameserver 10.255.255.53\noptions edns0\n",
    );
    expect(taskResolvConf('')).toBe("# generated by berth from the host's /etc/resolv.conf\n");
  });

  it('names the task after its address, or its loopback without one', () => {
    expect(taskHosts('web', '10.98.0.2')).toContain('10.98.0.2\tweb\n');
    expect(taskHosts('web.svc', '10.98.0.2')).toContain('10.98.0.2\tweb.svc web\n');
    expect(taskHosts('web')).toContain('127.0.1.1\tweb\n');
    expect(taskHosts('web')).toMatch(/^127\.0\.0\.1\tlocalhost\n/);
  });
});

describe('choosePorts', () => {
  const range = [50000, 50009] as const;
  const allFree = async () => true;
  const tcp = (containerPort: number, hostPort = 0): PortRequest => ({
    containerPort,
    hostPort,
    protocol: 'tcp',
  });

  it('gives dynamic ports from the start point on, skipping reserved and bound ones', async () => {
    const taken = new Set([portKey(50003, 'tcp')]);
    const bound = new Set([50004]);
    const out = await choosePorts(
      [tcp(80), tcp(81)],
      'bridge',
      taken,
      async (p) => !bound.has(p),
      range,
      50003,
    );
    expect(out).toEqual([
      { bindIP: '0.0.0.0', containerPort: 80, hostPort: 50005, protocol: 'tcp' },
      { bindIP: '0.0.0.0', containerPort: 81, hostPort: 50006, protocol: 'tcp' },
    ]);
    expect(taken.has(portKey(50005, 'tcp')) && taken.has(portKey(50006, 'tcp'))).toBe(true);
  });

  it('wraps around the range and fails clearly when it is full', async () => {
    const taken = new Set<string>();
    for (let p = 50001; p <= 50009; p++) taken.add(portKey(p, 'tcp'));
    const [b] = await choosePorts([tcp(80)], 'bridge', taken, allFree, range, 50008);
    expect(b?.hostPort).toBe(50000);
    await expect(choosePorts([tcp(80)], 'bridge', taken, allFree, range, 50000)).rejects.toThrow(
      /no free tcp host port left in 50000-50009/,
    );
  });

  it('keeps tcp and udp apart', async () => {
    const taken = new Set([portKey(50000, 'tcp')]);
    const [b] = await choosePorts(
      [{ containerPort: 53, hostPort: 0, protocol: 'udp' }],
      'bridge',
      taken,
      allFree,
      range,
      50000,
    );
    expect(b).toMatchObject({ hostPort: 50000, protocol: 'udp' });
  });

  it('refuses a fixed port another task holds, or another process binds, naming it', async () => {
    const taken = new Set([portKey(8080, 'tcp')]);
    const held = choosePorts([tcp(80, 8080)], 'bridge', taken, allFree, range, 50000);
    await expect(held).rejects.toBeInstanceOf(PortConflictError);
    await expect(held).rejects.toThrow('host port 8080/tcp is already given to another task');
    const bound = choosePorts([tcp(80, 8081)], 'bridge', taken, async () => false, range, 50000);
    await expect(bound).rejects.toThrow(
      'host port 8081/tcp is already bound by another process on this host',
    );
    await expect(bound).rejects.toMatchObject({ port: 8081, protocol: 'tcp' });
  });

  it('maps a fixed port once even within one task', async () => {
    await expect(
      choosePorts([tcp(80, 8080), tcp(81, 8080)], 'bridge', new Set(), allFree, range, 50000),
    ).rejects.toThrow(/8080\/tcp is already given/);
  });

  it('binds host mode ports as themselves', async () => {
    const out = await choosePorts([tcp(8080), tcp(9090, 9090)], 'host', new Set(), allFree, range, 50000);
    expect(out.map((b) => [b.containerPort, b.hostPort])).toEqual([
      [8080, 8080],
      [9090, 9090],
    ]);
    await expect(choosePorts([tcp(8080, 8081)], 'host', new Set(), allFree, range, 50000)).rejects.toThrow(
      /must equal containerPort/,
    );
  });

  it('refuses ports in none mode and numbers that are no ports', async () => {
    await expect(choosePorts([tcp(80)], 'none', new Set(), allFree, range, 50000)).rejects.toThrow(/none/);
    await expect(choosePorts([tcp(0)], 'bridge', new Set(), allFree, range, 50000)).rejects.toThrow(
      /containerPort 0/,
    );
    await expect(choosePorts([tcp(80, 70000)], 'bridge', new Set(), allFree, range, 50000)).rejects.toThrow(
      /hostPort 70000/,
    );
  });
});

describe('the bridge guard', () => {
  it('names chains of its own that fit iptables for the longest bridge name', () => {
    const { filter, nat } = guardChains('abcdefghijklmno');
    expect(filter).toBe('BERTH-GUARD-abcdefghijklmno');
    expect(nat).toBe('BERTH-CREDS-abcdefghijklmno');
    expect(Math.max(filter.length, nat.length)).toBeLessThanOrEqual(28);
  });

  it('is jumped to only for packets in from the bridge', () => {
    expect(guardJumps('berth0')).toEqual([
      ['filter', 'INPUT', ['-i', 'berth0', '-j', 'BERTH-GUARD-berth0']],
      ['filter', 'FORWARD', ['-i', 'berth0', '-j', 'BERTH-GUARD-berth0']],
      ['nat', 'PREROUTING', ['-i', 'berth0', '-j', 'BERTH-CREDS-berth0']],
    ]);
  });

  it('drops what is new for the loopback (not replies, not DNATed), and refuses the unrouted credentials address', () => {
    const lines = guardRestore('berth0').split('\n');
    expect(lines[0]).toBe('*filter');
    expect(lines[1]).toBe(':BERTH-GUARD-berth0 - [0:0]');
    expect(lines[2]).toMatch(
      /^-A BERTH-GUARD-berth0 -d 127\.0\.0\.0\/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT .* -j DROP$/,
    );
    expect(lines[3]).toMatch(/^-A BERTH-GUARD-berth0 -d 169\.254\.170\.2\/32 .* -j REJECT$/);
    expect(lines.at(-2)).toBe('COMMIT');
  });

  it("points ECS's credentials address at the listener, or at nothing", () => {
    expect(ecsCredentialsAddress).toBe('169.254.170.2');
    const routed = credentialsRestore('berth0', { address: '10.98.0.1', port: 41234 }).split('\n');
    expect(routed.slice(0, 2)).toEqual(['*nat', ':BERTH-CREDS-berth0 - [0:0]']);
    expect(routed[2]).toMatch(
      /^-A BERTH-CREDS-berth0 -d 169\.254\.170\.2\/32 -p tcp -m tcp --dport 80 .* -j DNAT --to-destination 10\.98\.0\.1:41234$/,
    );
    expect(credentialsRestore('berth0').split('\n')).toEqual([
      '*nat',
      ':BERTH-CREDS-berth0 - [0:0]',
      'COMMIT',
      '',
    ]);
  });
});
