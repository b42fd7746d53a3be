// What the runner end-to-end suites share: the prerequisites check, a bridge and subnet of the
// suite's own (vitest runs files in parallel, each in its own process), polling with a useful
// timeout message, busybox images built with buildah and pushed over HTTPS, and an ECS client
// that trusts berth's CA.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { Agent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ECSClient } from '@aws-sdk/client-ecs';
import type { RunningBerth } from './berth.ts';
import type { ContainerTools } from './containers.ts';
import type { httpsClient } from './https.ts';
import { run, tool } from './tools.ts';

/** Why the runner suites cannot run here, or undefined when they can. */
export function runnerPrerequisitesMissing(): string | undefined {
  if (process.getuid?.() !== 0) return 'not running as root (runc, overlayfs and CNI need it)';
  for (const bin of ['/usr/sbin/runc', '/usr/bin/conmon', '/usr/lib/cni/bridge', '/usr/bin/buildah'])
    if (!existsSync(bin)) return `${bin} is missing (run scripts/setup-system.sh)`;
  return undefined;
}

/**
 * A bridge name and /24 subnet unique to this test process: `prefix` (3 letters) keeps suites
 * apart by name, `secondOctet` by address range (10.<secondOctet>.<pid % 200>.0/24).
 */
export function suiteNetwork(prefix: string, secondOctet: number): { bridge: string; subnet: string } {
  if (!/^[a-z]{3}$/.test(prefix)) throw new Error('the bridge prefix is three lowercase letters');
  return {
    // Interface names hold at most 15 characters: 3 + 5 digits fits.
    bridge: `${prefix}${process.pid % 100000}`,
    subnet: `10.${secondOctet}.${process.pid % 200}.0/24`,
  };
}

/**
 * Removes a suite's bridge and every iptables rule berth keeps for it (the jumps with `-i BRIDGE`
 * into its BERTH-* chains, and those chains): what a suite that ran bridge tasks owes the host.
 * Read from the tables rather than from berth's code, so it also cleans what an older berth left.
 */
export async function removeSuiteBridge(bridge: string): Promise<void> {
  const iptables = tool('iptables');
  for (const table of ['filter', 'nat']) {
    const rules = (await run(iptables, ['-w', '-t', table, '-S'])).stdout.split('\n');
    const chains = new Set<string>();
    for (const line of rules) {
      const args = line.trim().split(/\s+/);
      const target = args[args.indexOf('-j') + 1];
      if (args[0] !== '-A' || !target?.startsWith('BERTH-') || args[args.indexOf('-i') + 1] !== bridge)
        continue;
      if (!args.includes('-i')) continue;
      chains.add(target);
      await run(iptables, ['-w', '-t', table, '-D', ...args.slice(1)]).catch(() => undefined);
    }
    for (const chain of chains) {
      await run(iptables, ['-w', '-t', table, '-F', chain]).catch(() => undefined);
      await run(iptables, ['-w', '-t', table, '-X', chain]).catch(() => undefined);
    }
  }
  await run(tool('ip'), ['link', 'delete', bridge]).catch(() => undefined);
}

/** berth's last log lines, request lines left out: what explains a timeout. */
export function berthLogTail(berth: RunningBerth | undefined, lines = 30): string {
  return (berth?.logs() ?? [])
    .filter((l) => !l.includes('"msg":"request"'))
    .slice(-lines)
    .join('\n');
}

/**
 * Polls `probe` every 500 ms until it answers something other than undefined (a throw counts
 * as "not yet"); on timeout the error names `what`, the last throw and `context()`.
 */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  opts: { timeoutMs?: number; context?: () => string } = {},
): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out waiting for ${what}${last ? `: ${String(last)}` : ''}\n${opts.context?.() ?? ''}`,
      );
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** GET http://127.0.0.1:PORT/PATH; answers the body, whatever the status. */
export function httpGet(port: number, path = '/'): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, timeout: 3000 }, (res) => {
      let body = '';
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
}

/**
 * Builds an image of one busybox binary (plus `files`, path -> text, or path -> bytes for an
 * executable) running `cmd`, and pushes it to `registry` (host:port) as REPO:TAG with buildah;
 * answers its manifest digest.
 */
export async function pushImage(
  tools: ContainerTools,
  registry: string,
  repo: string,
  tag: string,
  cmd: string[],
  files: Record<string, string | Buffer> = {},
): Promise<string> {
  const ctr = (await tools.buildah('from', '--arch', 'amd64', 'scratch')).stdout.trim();
  await tools.buildah('copy', ctr, tool('busybox'), '/bin/busybox');
  const dir = mkdtempSync(join(tmpdir(), 'berth-img-'));
  try {
    for (const [p, content] of Object.entries(files)) {
      const local = join(dir, p.replaceAll('/', '_'));
      writeFileSync(local, content, { mode: typeof content === 'string' ? 0o644 : 0o755 });
      await tools.buildah('copy', ctr, local, p);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  await tools.buildah('config', '--os', 'linux', '--arch', 'amd64', '--cmd', JSON.stringify(cmd), ctr);
  const local = `localhost/${repo}:${tag}`;
  await tools.buildah('commit', '-q', '--rm', ctr, local);
  const digestFile = join(tools.certDir, `${repo.replaceAll('/', '_')}-${tag}.digest`);
  await tools.buildah(
    'push',
    '--cert-dir',
    tools.certDir,
    '--digestfile',
    digestFile,
    local,
    `docker://${registry}/${repo}:${tag}`,
  );
  return readFileSync(digestFile, 'utf8').trim();
}

/** An ECS client for berth's /ecs endpoint, signing with an access key, trusting berth's CA. */
export function ecsClient(berth: RunningBerth, key: { id: string; secret: string }): ECSClient {
  return new ECSClient({
    endpoint: `${berth.url}/ecs`,
    region: 'us-east-1',
    credentials: { accessKeyId: key.id, secretAccessKey: key.secret },
    requestHandler: { httpsAgent: new Agent({ ca: readFileSync(berth.caPath) }) },
  });
}

/** A new access key for the admin user, through the admin API. */
export async function adminAccessKey(
  api: ReturnType<typeof httpsClient>,
): Promise<{ id: string; secret: string }> {
  const made = await api('/api/v1/users/admin/access-keys', { method: 'POST' });
  if (made.status !== 201) throw new Error(`creating an access key: ${made.status} ${made.body.toString()}`);
  return JSON.parse(made.body.toString()) as { id: string; secret: string };
}

/**
 * A berth role with one policy of its own (`<name>-policy`) holding `statements`, through the
 * admin API; answers the role's ARN. For task roles and the roles hook rules act as.
 */
export async function roleWithPolicy(
  api: ReturnType<typeof httpsClient>,
  name: string,
  statements: Record<string, unknown>[],
): Promise<string> {
  const json = { 'content-type': 'application/json' };
  const steps: [string, Parameters<ReturnType<typeof httpsClient>>[1] & {}, number][] = [
    [
      `/api/v1/policies/${name}-policy`,
      {
        method: 'PUT',
        headers: json,
        body: JSON.stringify({ document: { Version: '2012-10-17', Statement: statements } }),
      },
      201,
    ],
    ['/api/v1/roles', { method: 'POST', headers: json, body: JSON.stringify({ name }) }, 201],
    [`/api/v1/roles/${name}/policies/${name}-policy`, { method: 'PUT' }, 204],
  ];
  for (const [path, init, want] of steps) {
    const r = await api(path, init);
    if (r.status !== want) throw new Error(`${init.method} ${path}: ${r.status} ${r.body.toString()}`);
  }
  return `arn:aws:iam::000000000000:role/${name}`;
}
