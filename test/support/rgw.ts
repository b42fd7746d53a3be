// A single-node Ceph cluster with its S3 gateway (RADOS Gateway), started from Debian's packages
// for the tests: one monitor, one OSD on memstore (RAM), radosgw on 127.0.0.1. No systemd, no
// manager, no authentication inside the cluster. Every daemon is started and stopped by PID.
// Cold start is about 15-20 s on 2 cores; a suite starts it once in beforeAll.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, tool } from './tools.ts';

export interface Rgw {
  readonly endpoint: string;
  readonly region: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  /** radosgw-admin / ceph against this cluster. */
  admin(...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs: number, logs: () => string) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline)
      throw new Error(`RGW test cluster: ${what} not ready in ${timeoutMs / 1000} s\n${logs()}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

export interface RgwOptions {
  /**
   * Capacity of the RAM-backed OSD (RAM is only taken as data is stored). Near full, Ceph stops
   * taking writes and requests hang rather than fail, so size it for everything a run stores.
   */
  readonly memstoreBytes?: number;
}

export async function startRgw(opts: RgwOptions = {}): Promise<Rgw> {
  for (const t of ['ceph-mon', 'ceph-osd', 'radosgw', 'radosgw-admin', 'ceph', 'monmaptool']) tool(t);
  const dir = mkdtempSync(join(tmpdir(), 'berth-rgw-'));
  for (const d of ['mon/a', 'osd/0', 'run', 'log', 'rgw']) mkdirSync(join(dir, d), { recursive: true });
  const [monPort, rgwPort] = [await freePort(), await freePort()];
  const fsid = randomUUID();
  const conf = join(dir, 'ceph.conf');
  writeFileSync(
    conf,
    `[global]
fsid = ${fsid}
mon host = 127.0.0.1:${monPort}
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 1000
run dir = ${dir}/run
log file = ${dir}/log/$name.log
admin socket = ${dir}/run/$name.asok
pid file = ${dir}/run/$name.pid
keyring = ${dir}/keyring
[mon.a]
mon data = ${dir}/mon/a
[osd.0]
osd data = ${dir}/osd/0
osd objectstore = memstore
memstore device bytes = ${opts.memstoreBytes ?? 4 * 1024 ** 3}
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:${rgwPort} tcp_nodelay=1
rgw data = ${dir}/rgw
`,
  );
  const daemons: ChildProcess[] = [];
  const output: string[] = [];
  const logs = () => output.join('').slice(-4000);
  // -f keeps each daemon in the foreground, so its PID is ours to stop.
  const daemon = (cmd: string, args: string[]) => {
    const p = spawn(tool(cmd), ['-c', conf, '-f', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout!.on('data', (d: Buffer) => output.push(d.toString()));
    p.stderr!.on('data', (d: Buffer) => output.push(d.toString()));
    const reap = () => p.kill('SIGKILL');
    process.once('exit', reap);
    p.once('exit', () => process.off('exit', reap));
    daemons.push(p);
    return p;
  };
  const ceph = (...args: string[]) => run(tool('ceph'), ['-c', conf, ...args], { timeoutMs: 60_000 });
  const stop = async () => {
    for (const p of daemons.reverse()) {
      if (p.exitCode !== null || p.signalCode !== null) continue;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    await run(tool('monmaptool'), [
      '--create',
      '--add',
      'a',
      `127.0.0.1:${monPort}`,
      '--fsid',
      fsid,
      join(dir, 'monmap'),
    ]);
    await run(tool('ceph-mon'), ['-c', conf, '--mkfs', '-i', 'a', '--monmap', join(dir, 'monmap')]);
    daemon('ceph-mon', ['-i', 'a']);
    await until('monitor', async () => (await ceph('-s')).stdout.includes('quorum'), 30_000, logs);
    const id = (await ceph('osd', 'create')).stdout.trim();
    await run(tool('ceph-osd'), ['-c', conf, '-i', id, '--mkfs']);
    daemon('ceph-osd', ['-i', id]);
    await until('OSD', async () => /1 up/.test((await ceph('osd', 'stat')).stdout), 60_000, logs);
    daemon('radosgw', ['-n', 'client.rgw.a']);
    const endpoint = `http://127.0.0.1:${rgwPort}`;
    await until('radosgw', async () => (await fetch(`${endpoint}/`)).ok, 90_000, logs);
    const accessKeyId = 'berth-test';
    const secretAccessKey = randomUUID();
    await run(tool('radosgw-admin'), [
      '-c',
      conf,
      'user',
      'create',
      '--uid=berth-test',
      '--display-name=berth tests',
      `--access-key=${accessKeyId}`,
      `--secret-key=${secretAccessKey}`,
    ]);
    return {
      endpoint,
      region: 'us-east-1',
      accessKeyId,
      secretAccessKey,
      admin: async (...args) => (await run(tool('radosgw-admin'), ['-c', conf, ...args])).stdout,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
